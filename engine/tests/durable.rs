//! Durable sessions in the sans-IO core: the records it emits, acknowledgements held until
//! those records are durable, and replay + restore after a restart, with an in-memory log per
//! shard standing in for the storage engine (docs/storage.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use ringmq::proto::durable::record::{Record, SessionRecord, StoredMessage, StoredSub, StoredWill};
use ringmq::proto::durable::replay::{Replay, merge};
use ringmq::proto::{Input, directory_shard_of};
use ringmq_codec::*;

/// The logs of a cluster: every record drained from each core, and how many are durable.
#[derive(Default, Clone)]
struct Logs {
    shards: Vec<Vec<Vec<u8>>>,
    /// Records in each log before the current cores started (their numbering starts after).
    base: Vec<usize>,
}

impl Logs {
    fn new(shards: usize) -> Logs {
        Logs {
            shards: vec![Vec::new(); shards],
            base: vec![0; shards],
        }
    }

    /// The same logs, appended to by the cores of a restarted cluster.
    fn continued(&self) -> Logs {
        Logs {
            shards: self.shards.clone(),
            base: self.shards.iter().map(Vec::len).collect(),
        }
    }

    /// Drains every core's records into its log (written, not yet durable).
    fn drain(&mut self, cl: &mut Cluster) {
        for (i, core) in cl.cores.iter_mut().enumerate() {
            let log = &mut self.shards[i];
            let upto = core.drain_records(|r| log.push(r.to_vec()));
            assert_eq!(upto as usize, log.len() - self.base[i], "record numbering");
        }
    }

    /// Drains and makes everything durable (one group commit on every shard).
    fn sync(&mut self, cl: &mut Cluster) {
        for _ in 0..4 {
            self.drain(cl);
            for i in 0..cl.cores.len() {
                let upto = (self.shards[i].len() - self.base[i]) as u64;
                let _ = cl.input(i, Input::Durable { upto });
            }
            cl.pump();
        }
        self.drain(cl);
    }
}

fn durable_cluster(shards: usize) -> Cluster {
    let mut cl = Cluster::new(shards);
    for c in &mut cl.cores {
        c.enable_durable();
    }
    cl
}

/// A new cluster of `shards` cores restored from `logs` (each shard's log as written),
/// `downtime` after `cl`'s clock.
fn restart(cl: &Cluster, logs: &Logs, shards: usize, downtime: Duration) -> Cluster {
    restart_into(durable_cluster(shards), cl, logs, shards, downtime)
}

/// [`restart`] into the (durable, empty) cluster `next`.
fn restart_into(
    mut next: Cluster,
    cl: &Cluster,
    logs: &Logs,
    shards: usize,
    downtime: Duration,
) -> Cluster {
    next.wall = cl.wall + downtime;
    let replays = logs
        .shards
        .iter()
        .enumerate()
        .map(|(i, log)| {
            let mut r = Replay::new(i);
            for rec in log {
                r.apply(rec).expect("records decode");
            }
            r
        })
        .collect();
    let parts = merge(replays, shards, |id| directory_shard_of(id, shards).slot());
    let at = next.at();
    for (i, part) in parts.into_iter().enumerate() {
        let _ = next.cores[i].restore(part, at);
    }
    next.pump();
    for c in &next.cores {
        c.check_invariants();
    }
    next
}

/// CONNECT (Clean Start 0 with `expiry`, or clean), made durable, and its CONNACK.
fn connect_synced(
    cl: &mut Cluster,
    logs: &mut Logs,
    shard: usize,
    id: &str,
    clean: bool,
    expiry: u32,
) -> (Client, ConnAck) {
    let mut c = cl.open(shard);
    let mut connect = connect_packet(id, ProtocolVersion::V5);
    connect.clean_start = clean;
    connect.properties.session_expiry_secs = Some(expiry);
    c.version = ProtocolVersion::V5;
    cl.send(&c, &Packet::Connect(Box::new(connect)));
    logs.sync(cl);
    let mut packets = cl.recv(&mut c);
    assert!(!packets.is_empty(), "no CONNACK");
    let first = packets.remove(0);
    c.pending = packets;
    match first {
        Packet::ConnAck(a) => (c, a),
        p => panic!("expected CONNACK, got {p:?}"),
    }
}

/// SUBSCRIBE, made durable; the SUBACK is taken, what follows it kept in `pending`.
fn subscribe_synced(
    cl: &mut Cluster,
    logs: &mut Logs,
    c: &mut Client,
    filter: &'static str,
    qos: QoS,
) {
    cl.send(c, &subscribe_packet(pid(1), filter, qos));
    logs.sync(cl);
    let mut packets = cl.recv(c);
    assert!(
        matches!(packets.first(), Some(Packet::SubAck(_))),
        "{packets:?}"
    );
    packets.remove(0);
    c.pending.extend(packets);
}

fn publishes(packets: &[Packet]) -> Vec<(Bytes, bool, QosPid)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.payload.clone(), p.dup, p.qos_pid)),
            _ => None,
        })
        .collect()
}

fn publish_retained(topic: &'static str, payload: &'static [u8], qos_pid: QosPid) -> Packet {
    let Packet::Publish(mut p) = publish(topic, payload, qos_pid) else {
        unreachable!()
    };
    p.retain = true;
    Packet::Publish(p)
}

// ---- records ----------------------------------------------------------------------------

fn sample_message() -> StoredMessage {
    StoredMessage {
        topic: Str::from_static("a/b"),
        payload: Bytes::from_static(b"hello"),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: PublishProperties {
            content_type: Some(Str::from_static("text/plain")),
            user_properties: UserProperties::from_pairs([("k", "v")]).unwrap(),
            ..Default::default()
        },
        expires_unix_ms: Some(1_800_000_123_456),
    }
}

fn sample_records() -> Vec<Record> {
    let c = Str::from_static("client-1");
    vec![
        Record::Session(SessionRecord {
            client_id: c.clone(),
            generation: 77,
            expiry_secs: 3600,
            expires_unix_ms: Some(1_800_000_000_000),
            reset: true,
            owner: Some(Str::from_static("alice")),
            subs: vec![StoredSub {
                filter: Bytes::from_static(b"$share/g/x/#"),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
                id: std::num::NonZeroU32::new(9),
            }],
            will: Some(StoredWill {
                message: sample_message(),
                delay_secs: 30,
                publish_unix_ms: None,
            }),
        }),
        Record::SessionRemoved {
            client_id: c.clone(),
            generation: 78,
        },
        Record::Message {
            id: 5,
            message: sample_message(),
        },
        Record::Enqueued {
            client_id: c.clone(),
            message: 5,
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: vec![subid(1), subid(268_435_455)],
        },
        Record::Sent {
            client_id: c.clone(),
            packet_id: pid(65535),
        },
        Record::Dropped {
            client_id: c.clone(),
        },
        Record::ImageEnd {
            client_id: c.clone(),
        },
        Record::Acked {
            client_id: c.clone(),
            packet_id: pid(1),
        },
        Record::Released {
            client_id: c.clone(),
            packet_id: pid(2),
        },
        Record::Inbound {
            client_id: c,
            packet_id: pid(3),
            received: true,
        },
        Record::Retained {
            seq: 42,
            message: StoredMessage {
                payload: Bytes::new(),
                qos: QoS::AtMostOnce,
                expires_unix_ms: None,
                properties: Default::default(),
                ..sample_message()
            },
        },
    ]
}

#[test]
fn every_record_kind_round_trips() {
    for r in sample_records() {
        let bytes = r.to_vec();
        assert_eq!(Record::decode(&bytes).unwrap(), r, "{bytes:02x?}");
    }
}

#[test]
fn hostile_bytes_decode_to_errors_never_panics() {
    let mut rng = Rng::new(7);
    for r in sample_records() {
        let bytes = r.to_vec();
        // Every truncation is an error.
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "{r:?} cut at {cut}");
        }
        // Trailing garbage is an error.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Record::decode(&longer).is_err());
        // Random corruption never panics (and mostly fails).
        for _ in 0..2000 {
            let mut b = bytes.clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(b.len() as u64) as usize;
                b[i] = rng.below(256) as u8;
            }
            let _ = Record::decode(&b);
        }
    }
    // A huge announced length reserves nothing.
    let mut b = vec![1u8, 1];
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(Record::decode(&b).is_err());
    assert!(Record::decode(&[2, 1]).is_err(), "unknown version");
    assert!(Record::decode(&[1, 200]).is_err(), "unknown kind");
}

// ---- held acknowledgements ---------------------------------------------------------------

#[test]
fn puback_suback_and_connack_wait_for_durable() {
    let mut cl = durable_cluster(1);
    let mut logs = Logs::new(1);
    let (mut sub, ack) = connect_synced(&mut cl, &mut logs, 0, "sub", false, 3600);
    assert!(!ack.session_present);
    cl.send(&sub, &subscribe_packet(pid(1), "t", QoS::AtLeastOnce));
    assert!(
        cl.recv(&mut sub).is_empty(),
        "SUBACK held until the session is durable"
    );
    logs.drain(&mut cl);
    assert!(cl.recv(&mut sub).is_empty(), "written is not durable");
    logs.sync(&mut cl);
    assert!(matches!(cl.recv_one(&mut sub), Packet::SubAck(_)));
    cl.drop_conn(&sub);
    logs.sync(&mut cl);

    let (mut publisher, _) = connect_synced(&mut cl, &mut logs, 0, "pub", true, 0);
    cl.send(
        &publisher,
        &publish("t", b"m1", QosPid::new(QoS::AtLeastOnce, pid(1))),
    );
    assert!(cl.recv(&mut publisher).is_empty(), "PUBACK held");
    logs.sync(&mut cl);
    assert!(matches!(cl.recv_one(&mut publisher), Packet::PubAck(_)));

    // A QoS 1 message nobody persistent gets is acknowledged at once.
    cl.send(
        &publisher,
        &publish("other", b"x", QosPid::new(QoS::AtLeastOnce, pid(2))),
    );
    assert!(matches!(cl.recv_one(&mut publisher), Packet::PubAck(_)));

    // Session Present 1 waits for the session's records.
    let mut again = cl.open(0);
    let mut c = connect_packet("sub", ProtocolVersion::V5);
    c.clean_start = false;
    c.properties.session_expiry_secs = Some(3600);
    again.version = ProtocolVersion::V5;
    cl.send(&again, &Packet::Connect(Box::new(c)));
    assert!(cl.recv(&mut again).is_empty(), "CONNACK held");
    logs.sync(&mut cl);
    let packets = cl.recv(&mut again);
    assert!(matches!(&packets[0], Packet::ConnAck(a) if a.session_present));
    assert_eq!(
        publishes(&packets).len(),
        1,
        "the queued message follows the CONNACK"
    );
}

#[test]
fn memory_only_cores_emit_nothing() {
    let mut cl = Cluster::new(1);
    let mut logs = Logs::new(1);
    let (mut sub, _) = connect_synced(&mut cl, &mut logs, 0, "sub", false, 3600);
    subscribe_synced(&mut cl, &mut logs, &mut sub, "t", QoS::AtLeastOnce);
    let (mut p, _) = connect_synced(&mut cl, &mut logs, 0, "pub", true, 0);
    cl.send(
        &p,
        &publish("t", b"m", QosPid::new(QoS::AtLeastOnce, pid(1))),
    );
    assert!(matches!(cl.recv_one(&mut p), Packet::PubAck(_)));
    assert_eq!(cl.cores[0].records_emitted(), 0);
    assert_eq!(cl.cores[0].drain_records(|_| panic!("a record")), 0);
}

// ---- replay ------------------------------------------------------------------------------

#[test]
fn restart_restores_sessions_queues_inflight_and_retained() {
    for shards in [1, 2] {
        let mut cl = durable_cluster(shards);
        let mut logs = Logs::new(shards);
        // A subscriber with one message in flight (unacknowledged) and two queued.
        let (mut sub, _) = connect_synced(&mut cl, &mut logs, 0, "sub", false, 3600);
        subscribe_synced(&mut cl, &mut logs, &mut sub, "t/#", QoS::AtLeastOnce);
        logs.sync(&mut cl);
        let _ = cl.recv(&mut sub);
        let (mut publisher, _) = connect_synced(&mut cl, &mut logs, shards - 1, "pub", true, 0);
        cl.send(
            &publisher,
            &publish("t/1", b"inflight", QosPid::new(QoS::AtLeastOnce, pid(1))),
        );
        logs.sync(&mut cl);
        let got = publishes(&cl.recv(&mut sub));
        assert_eq!(got.len(), 1);
        cl.drop_conn(&sub);
        for (i, payload) in [&b"q1"[..], b"q2"].iter().enumerate() {
            let p = Packet::Publish(Publish {
                dup: false,
                qos_pid: QosPid::new(QoS::AtLeastOnce, pid(2 + i as u16)),
                retain: false,
                topic: Str::from_static("t/2"),
                properties: Default::default(),
                payload: Bytes::copy_from_slice(payload),
            });
            cl.send(&publisher, &p);
        }
        // Retained: one set, one set then cleared.
        cl.send(
            &publisher,
            &publish_retained("r/keep", b"kept", QosPid::AtMostOnce),
        );
        cl.send(
            &publisher,
            &publish_retained("r/gone", b"old", QosPid::AtMostOnce),
        );
        cl.send(
            &publisher,
            &publish_retained("r/gone", b"", QosPid::AtMostOnce),
        );
        logs.sync(&mut cl);
        let acks = cl.recv(&mut publisher);
        assert_eq!(
            acks.iter()
                .filter(|p| matches!(p, Packet::PubAck(_)))
                .count(),
            3
        );
        // Not durable: this one was never acknowledged and may be lost.
        cl.send(
            &publisher,
            &publish("t/3", b"unsynced", QosPid::new(QoS::AtLeastOnce, pid(9))),
        );
        logs.drain(&mut cl);
        let durable_logs = {
            // Only what was synced survives: cut each log to its durable length.
            let mut l = logs.clone();
            for (i, log) in l.shards.iter_mut().enumerate() {
                log.truncate(cl.cores[i].records_durable() as usize);
            }
            l
        };

        let mut next = restart(&cl, &durable_logs, shards, Duration::from_secs(5));

        let mut nlogs = durable_logs.continued();
        let (sessions, _) = next.cores.iter().fold((0, 0), |(s, c), core| {
            let (cs, ss) = core.counts();
            (s + ss, c + cs)
        });
        assert_eq!(
            sessions, 1,
            "the persistent session (not the clean publisher's)"
        );
        let (mut sub, ack) = connect_synced(&mut next, &mut nlogs, 0, "sub", false, 3600);
        assert!(ack.session_present);
        let got = publishes(&sub.pending.drain(..).collect::<Vec<_>>());
        let payloads: Vec<&[u8]> = got.iter().map(|(p, _, _)| &p[..]).collect();
        assert_eq!(
            payloads,
            [&b"inflight"[..], b"q1", b"q2"],
            "shards={shards}"
        );
        assert!(got[0].1, "the in-flight message is resent with DUP");
        assert!(!got[1].1);
        // Acknowledge everything, restart again: nothing comes back.
        for (_, _, qp) in &got {
            if let QosPid::AtLeastOnce(id) = qp {
                next.send(
                    &sub,
                    &Packet::PubAck(PubResp::new(*id, ReasonCode::SUCCESS)),
                );
            }
        }
        nlogs.sync(&mut next);
        // Retained exactly as before.
        let (mut probe, _) = connect_synced(&mut next, &mut nlogs, 0, "probe", true, 0);
        subscribe_synced(&mut next, &mut nlogs, &mut probe, "r/#", QoS::AtMostOnce);
        let retained: Vec<Bytes> = publishes(&probe.pending.drain(..).collect::<Vec<_>>())
            .into_iter()
            .map(|(p, _, _)| p)
            .collect();
        assert_eq!(retained, [Bytes::from_static(b"kept")], "shards={shards}");

        next.drop_conn(&sub);
        nlogs.sync(&mut next);
        let mut third = restart(&next, &nlogs, shards, Duration::from_secs(1));
        let mut nlogs = nlogs.continued();
        let (sub, ack) = connect_synced(&mut third, &mut nlogs, 0, "sub", false, 3600);
        assert!(ack.session_present);
        assert!(
            publishes(&sub.pending).is_empty(),
            "acknowledged stays acknowledged"
        );
    }
}

#[test]
fn qos2_inbound_state_survives_a_restart_no_duplicate() {
    let mut cl = durable_cluster(1);
    let mut logs = Logs::new(1);
    let (mut sub, _) = connect_synced(&mut cl, &mut logs, 0, "sub", false, 3600);
    subscribe_synced(&mut cl, &mut logs, &mut sub, "t", QoS::ExactlyOnce);
    let (mut publisher, _) = connect_synced(&mut cl, &mut logs, 0, "pub", false, 3600);
    logs.sync(&mut cl);
    let _ = cl.recv(&mut sub);
    let _ = cl.recv(&mut publisher);
    cl.send(
        &publisher,
        &publish("t", b"once", QosPid::new(QoS::ExactlyOnce, pid(7))),
    );
    logs.sync(&mut cl);
    assert!(matches!(cl.recv_one(&mut publisher), Packet::PubRec(_)));
    let first = publishes(&cl.recv(&mut sub));
    assert_eq!(first.len(), 1);
    // The subscriber sends PUBREC: its PUBREL is owed after the restart.
    let QosPid::ExactlyOnce(sub_pid) = first[0].2 else {
        panic!()
    };
    cl.send(
        &sub,
        &Packet::PubRec(PubResp::new(sub_pid, ReasonCode::SUCCESS)),
    );
    logs.sync(&mut cl);
    assert!(matches!(cl.recv_one(&mut sub), Packet::PubRel(_)));

    let mut next = restart(&cl, &logs, 1, Duration::from_secs(1));

    let mut nlogs = logs.continued();
    // The publisher did not see PUBCOMP: it resends PUBLISH (DUP), then PUBREL.
    let (mut publisher, ack) = connect_synced(&mut next, &mut nlogs, 0, "pub", false, 3600);
    assert!(ack.session_present);
    let (mut sub, ack) = connect_synced(&mut next, &mut nlogs, 0, "sub", false, 3600);
    assert!(ack.session_present);
    let resumed = sub.pending.drain(..).collect::<Vec<_>>();
    assert!(
        matches!(resumed.as_slice(), [Packet::PubRel(r)] if r.packet_id == sub_pid),
        "the owed PUBREL, no PUBLISH: {resumed:?}"
    );
    let Packet::Publish(mut again) = publish("t", b"once", QosPid::new(QoS::ExactlyOnce, pid(7)))
    else {
        unreachable!()
    };
    again.dup = true;
    next.send(&publisher, &Packet::Publish(again));
    nlogs.sync(&mut next);
    assert!(matches!(next.recv_one(&mut publisher), Packet::PubRec(_)));
    next.send(
        &publisher,
        &Packet::PubRel(PubResp::new(pid(7), ReasonCode::SUCCESS)),
    );
    nlogs.sync(&mut next);
    assert!(matches!(next.recv_one(&mut publisher), Packet::PubComp(_)));
    assert!(
        publishes(&next.recv(&mut sub)).is_empty(),
        "delivered exactly once"
    );
}

#[test]
fn expiry_counts_the_downtime() {
    let mut cl = durable_cluster(2);
    let mut logs = Logs::new(2);
    let (a, _) = connect_synced(&mut cl, &mut logs, 0, "five", false, 5);
    let (b, _) = connect_synced(&mut cl, &mut logs, 1, "hour", false, 3600);
    cl.drop_conn(&a);
    cl.drop_conn(&b);
    logs.sync(&mut cl);
    // Down for 10 s: the 5 s session is gone, the hour-long one is not.
    let mut next = restart(&cl, &logs, 2, Duration::from_secs(10));
    let mut nlogs = logs.continued();
    let (_, ack) = connect_synced(&mut next, &mut nlogs, 1, "five", false, 5);
    assert!(!ack.session_present, "expired while the broker was down");
    let (_, ack) = connect_synced(&mut next, &mut nlogs, 0, "hour", false, 3600);
    assert!(ack.session_present);
    // Down for 2 s: still there, and it ends 3 s later, not 5.
    let mut next = restart(&cl, &logs, 2, Duration::from_secs(2));
    let mut nlogs = logs.continued();
    next.advance(Duration::from_secs(4));
    let (_, ack) = connect_synced(&mut next, &mut nlogs, 0, "five", false, 5);
    assert!(!ack.session_present, "its deadline is absolute");
}

#[test]
fn snapshot_alone_restores_the_same_state() {
    let mut cl = durable_cluster(2);
    let mut logs = Logs::new(2);
    let (mut sub, _) = connect_synced(&mut cl, &mut logs, 0, "sub", false, 3600);
    subscribe_synced(&mut cl, &mut logs, &mut sub, "t", QoS::AtLeastOnce);
    cl.drop_conn(&sub);
    let (mut publisher, _) = connect_synced(&mut cl, &mut logs, 1, "pub", true, 0);
    for i in 1..=3u16 {
        cl.send(
            &publisher,
            &publish("t", b"m", QosPid::new(QoS::AtLeastOnce, pid(i))),
        );
    }
    cl.send(
        &publisher,
        &publish_retained("r", b"kept", QosPid::AtMostOnce),
    );
    logs.sync(&mut cl);
    let _ = cl.recv(&mut publisher);
    // Compaction: each shard's log starts again with a snapshot of its live state.
    let mut compacted = Logs::new(2);
    for i in 0..2 {
        cl.cores[i].snapshot_records();
        let log = &mut compacted.shards[i];
        let _ = cl.cores[i].drain_records(|r| log.push(r.to_vec()));
    }
    let mut next = restart(&cl, &compacted, 2, Duration::from_secs(1));
    let mut nlogs = compacted.continued();
    let (sub, ack) = connect_synced(&mut next, &mut nlogs, 0, "sub", false, 3600);
    assert!(ack.session_present);
    assert_eq!(publishes(&sub.pending).len(), 3);
    let (mut probe, _) = connect_synced(&mut next, &mut nlogs, 1, "probe", true, 0);
    subscribe_synced(&mut next, &mut nlogs, &mut probe, "r", QoS::AtMostOnce);
    assert_eq!(publishes(&probe.pending).len(), 1);
}

#[test]
fn a_changed_shard_count_rehomes_sessions() {
    let mut cl = durable_cluster(2);
    let mut logs = Logs::new(2);
    let ids: Vec<String> = (0..12).map(|i| format!("dev-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let (mut c, _) = connect_synced(&mut cl, &mut logs, i % 2, id, false, 3600);
        subscribe_synced(&mut cl, &mut logs, &mut c, "all", QoS::AtLeastOnce);
        cl.drop_conn(&c);
    }
    let (_p, _) = connect_synced(&mut cl, &mut logs, 0, "pub", true, 0);
    cl.send(
        &_p,
        &publish("all", b"to-all", QosPid::new(QoS::AtLeastOnce, pid(1))),
    );
    logs.sync(&mut cl);
    let mut next = restart(&cl, &logs, 3, Duration::from_secs(1));
    let mut nlogs = Logs::new(3);
    for (i, id) in ids.iter().enumerate() {
        let (c, ack) = connect_synced(&mut next, &mut nlogs, i % 3, id, false, 3600);
        assert!(ack.session_present, "{id}");
        assert_eq!(publishes(&c.pending).len(), 1, "{id}");
    }
    // And a message published now reaches a re-homed session's subscription on every shard.
    let (mut p, _) = connect_synced(&mut next, &mut nlogs, 2, "pub2", true, 0);
    next.send(
        &p,
        &publish("all", b"x", QosPid::new(QoS::AtLeastOnce, pid(1))),
    );
    nlogs.sync(&mut next);
    assert!(matches!(next.recv_one(&mut p), Packet::PubAck(_)));
}

#[test]
fn puback_waits_for_the_subscribers_shard_too() {
    // An ordinary and a shared subscription on the other shard.
    for filter in ["t", "$share/g/t"] {
        let mut cl = durable_cluster(2);
        let mut logs = Logs::new(2);
        let (mut sub, _) = connect_synced(&mut cl, &mut logs, 0, "sub", false, 3600);
        subscribe_synced(&mut cl, &mut logs, &mut sub, filter, QoS::AtLeastOnce);
        cl.drop_conn(&sub);
        // A clean publisher on the other shard: its own shard writes nothing for the message.
        let (mut publisher, _) = connect_synced(&mut cl, &mut logs, 1, "pub", true, 0);
        logs.sync(&mut cl);
        cl.send(
            &publisher,
            &publish("t", b"m", QosPid::new(QoS::AtLeastOnce, pid(1))),
        );
        logs.drain(&mut cl);
        assert!(
            cl.cores[0].records_emitted() > cl.cores[0].records_durable(),
            "{filter}: the subscriber's shard queued it"
        );
        // Only the publisher's shard is durable: the PUBACK waits for the subscriber's shard.
        let upto = (logs.shards[1].len() - logs.base[1]) as u64;
        let _ = cl.input(1, Input::Durable { upto });
        cl.pump();
        assert!(
            cl.recv(&mut publisher).is_empty(),
            "{filter}: PUBACK before the subscriber's shard is durable"
        );
        let upto = (logs.shards[0].len() - logs.base[0]) as u64;
        let _ = cl.input(0, Input::Durable { upto });
        cl.pump();
        assert!(
            matches!(cl.recv_one(&mut publisher), Packet::PubAck(_)),
            "{filter}"
        );
    }
}

#[test]
fn will_of_a_session_connected_at_the_crash_is_published_after_its_delay() {
    let mut cl = durable_cluster(2);
    let mut logs = Logs::new(2);
    let (watcher, _) = connect_synced(&mut cl, &mut logs, 0, "watcher", false, 3600);
    let mut watcher = watcher;
    subscribe_synced(&mut cl, &mut logs, &mut watcher, "will/#", QoS::AtLeastOnce);
    cl.drop_conn(&watcher);
    // Connected (never disconnected) when the broker dies, with a will delayed 30 s.
    let mut dev = cl.open(1);
    let mut c = connect_packet("dev", ProtocolVersion::V5);
    c.clean_start = false;
    c.properties.session_expiry_secs = Some(3600);
    c.will = Some(Will {
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: Str::from_static("will/dev"),
        payload: Bytes::from_static(b"gone"),
        properties: WillProperties {
            will_delay_secs: Some(30),
            ..Default::default()
        },
    });
    dev.version = ProtocolVersion::V5;
    cl.send(&dev, &Packet::Connect(Box::new(c)));
    logs.sync(&mut cl);

    let mut next = restart(&cl, &logs, 2, Duration::from_secs(5));
    let mut nlogs = logs.continued();
    next.advance(Duration::from_secs(20));
    let (w, ack) = connect_synced(&mut next, &mut nlogs, 0, "watcher", false, 3600);
    assert!(ack.session_present);
    assert!(
        publishes(&w.pending).is_empty(),
        "the delay counts from the restart"
    );
    next.drop_conn(&w);
    next.advance(Duration::from_secs(15));
    let (w, _) = connect_synced(&mut next, &mut nlogs, 0, "watcher", false, 3600);
    let got = publishes(&w.pending);
    assert_eq!(got.len(), 1, "the will, once: {got:?}");
    assert_eq!(&got[0].0[..], b"gone");
}

#[test]
fn a_full_log_refuses_new_qos1_and_qos2_messages_with_0x97() {
    let mut cl = durable_cluster(1);
    let mut logs = Logs::new(1);
    let (mut publisher, _) = connect_synced(&mut cl, &mut logs, 0, "pub", true, 0);
    cl.cores[0].set_storage_full(true);
    for (i, qos) in [(1, QoS::AtLeastOnce), (2, QoS::ExactlyOnce)] {
        cl.send(&publisher, &publish("t", b"m", QosPid::new(qos, pid(i))));
        logs.sync(&mut cl);
        match cl.recv_one(&mut publisher) {
            Packet::PubAck(a) | Packet::PubRec(a) => {
                assert_eq!(a.reason_code, ReasonCode::QUOTA_EXCEEDED)
            }
            p => panic!("{p:?}"),
        }
    }
    cl.cores[0].set_storage_full(false);
    cl.send(
        &publisher,
        &publish("t", b"m", QosPid::new(QoS::AtLeastOnce, pid(3))),
    );
    logs.sync(&mut cl);
    assert!(
        matches!(cl.recv_one(&mut publisher), Packet::PubAck(a) if a.reason_code == ReasonCode::SUCCESS)
    );
}

#[test]
fn a_session_that_moved_is_restored_from_its_newest_copy() {
    let mut cl = durable_cluster(2);
    let mut logs = Logs::new(2);
    let (mut dev, _) = connect_synced(&mut cl, &mut logs, 0, "dev", false, 3600);
    subscribe_synced(&mut cl, &mut logs, &mut dev, "t", QoS::AtLeastOnce);
    cl.drop_conn(&dev);
    // It moves to shard 1 (a copy stays in shard 0's log), then gets a message there.
    let (dev, ack) = connect_synced(&mut cl, &mut logs, 1, "dev", false, 3600);
    assert!(ack.session_present);
    cl.drop_conn(&dev);
    let (publisher, _) = connect_synced(&mut cl, &mut logs, 0, "pub", true, 0);
    cl.send(
        &publisher,
        &publish("t", b"after-move", QosPid::new(QoS::AtLeastOnce, pid(1))),
    );
    logs.sync(&mut cl);
    let mut next = restart(&cl, &logs, 2, Duration::from_secs(1));
    let mut nlogs = logs.continued();
    let (dev, ack) = connect_synced(&mut next, &mut nlogs, 0, "dev", false, 3600);
    assert!(ack.session_present);
    let got = publishes(&dev.pending);
    assert_eq!(got.len(), 1, "the copy that moved, with its queue: {got:?}");
    // Ended there (clean start): the older copy in the other shard's log stays gone.
    next.drop_conn(&dev);
    let (dev, _) = connect_synced(&mut next, &mut nlogs, 1, "dev", true, 0);
    next.drop_conn(&dev);
    nlogs.sync(&mut next);
    let mut third = restart(&next, &nlogs, 2, Duration::from_secs(1));
    let mut tlogs = nlogs.continued();
    let (_, ack) = connect_synced(&mut third, &mut tlogs, 0, "dev", false, 3600);
    assert!(
        !ack.session_present,
        "a removed session does not come back from an old copy"
    );
}

#[test]
fn a_session_removed_after_it_moved_stays_removed_when_its_shard_compacts() {
    let mut cl = durable_cluster(2);
    let mut logs = Logs::new(2);
    let (mut dev, _) = connect_synced(&mut cl, &mut logs, 0, "dev", false, 3600);
    subscribe_synced(&mut cl, &mut logs, &mut dev, "t", QoS::AtLeastOnce);
    cl.drop_conn(&dev);
    let (dev, _) = connect_synced(&mut cl, &mut logs, 1, "dev", false, 3600);
    cl.drop_conn(&dev);
    // Ended on shard 1 (clean start, expiry 0).
    let (dev, _) = connect_synced(&mut cl, &mut logs, 1, "dev", true, 0);
    cl.drop_conn(&dev);
    logs.sync(&mut cl);
    // Shard 1 compacts (its log is now its snapshot alone, which holds no removals); shard 0,
    // which the session left, keeps its whole log.
    cl.cores[1].snapshot_records();
    let mut compacted = logs.clone();
    compacted.shards[1].clear();
    let _ = cl.cores[1].drain_records(|r| compacted.shards[1].push(r.to_vec()));
    let mut next = restart(&cl, &compacted, 2, Duration::from_secs(1));
    let mut nlogs = Logs::new(2);
    let (_, ack) = connect_synced(&mut next, &mut nlogs, 0, "dev", false, 3600);
    assert!(!ack.session_present, "the copy left on shard 0 came back");
}

// ---- incremental snapshots -----------------------------------------------------------------

const TOPICS: [&str; 10] = [
    "t/0", "t/1", "t/2", "t/3", "t/4", "t/5", "t/6", "t/7", "t/8", "t/9",
];

/// Replays `records` (one shard's log) into its merged state, with the session generations
/// zeroed (a snapshot writes a session's image under a new generation) and sorted, so two
/// logs that describe the same state compare equal.
fn replayed_state(
    records: &[Vec<u8>],
) -> (
    Vec<ringmq::proto::durable::replay::ReplayedSession>,
    Vec<(Bytes, Bytes)>,
) {
    let mut r = Replay::new(0);
    for rec in records {
        r.apply(rec).expect("records decode");
    }
    let mut part = merge(vec![r], 1, |_| 0).remove(0);
    for s in &mut part.sessions {
        s.meta.generation = 0;
    }
    part.sessions
        .sort_by(|a, b| a.meta.client_id.as_bytes().cmp(b.meta.client_id.as_bytes()));
    let mut retained: Vec<(Bytes, Bytes)> = part
        .retained
        .iter()
        .map(|(_, m)| (m.topic.as_bytes_shared().clone(), m.payload.clone()))
        .collect();
    retained.sort();
    (part.sessions, retained)
}

/// Ends the session `id` (Clean Start 1, expiry 0, then gone).
fn end_session(cl: &mut Cluster, logs: &mut Logs, id: &str) {
    let (c, _) = connect_synced(cl, logs, 0, id, true, 0);
    cl.drop_conn(&c);
    logs.sync(cl);
}

/// One snapshot step; returns what it did and how many records it emitted (drained and made
/// durable, as the runtime does).
fn step(cl: &mut Cluster, logs: &mut Logs) -> (ringmq::proto::durable::SnapshotProgress, usize) {
    logs.sync(cl);
    let before = logs.shards[0].len();
    let progress = cl.cores[0].snapshot_step();
    logs.sync(cl);
    (progress, logs.shards[0].len() - before)
}

#[test]
fn an_incremental_snapshot_interleaved_with_changes_replays_to_the_live_state() {
    use ringmq::proto::durable::{SNAPSHOT_RETAINED_PER_STEP, SNAPSHOT_SESSIONS_PER_STEP};
    let n = 2 * SNAPSHOT_SESSIONS_PER_STEP + 50;
    let mut cl = durable_cluster(1);
    let mut logs = Logs::new(1);
    for i in 0..n {
        let (mut c, _) = connect_synced(&mut cl, &mut logs, 0, &format!("s-{i}"), false, 3600);
        subscribe_synced(&mut cl, &mut logs, &mut c, TOPICS[i % 10], QoS::AtLeastOnce);
        cl.drop_conn(&c);
    }
    let (mut publisher, _) = connect_synced(&mut cl, &mut logs, 0, "pub", true, 0);
    let mut next_pid = 1u16;
    let send = |cl: &mut Cluster, logs: &mut Logs, p: Packet, publisher: &mut Client| {
        cl.send(publisher, &p);
        logs.sync(cl);
        let _ = cl.recv(publisher);
    };
    let mut qos1 = |topic: &'static str, payload: &'static [u8]| {
        next_pid += 1;
        publish(topic, payload, QosPid::new(QoS::AtLeastOnce, pid(next_pid)))
    };
    send(&mut cl, &mut logs, qos1("t/0", b"before"), &mut publisher);
    send(&mut cl, &mut logs, qos1("t/1", b"before"), &mut publisher);
    for topic in ["r/a", "r/b"] {
        let p = publish_retained(topic, b"old", QosPid::AtMostOnce);
        send(&mut cl, &mut logs, p, &mut publisher);
    }

    // The log as compaction leaves it: from the begin marker on.
    let begin = logs.shards[0].len();
    cl.cores[0].start_snapshot();
    assert!(cl.cores[0].snapshot_in_progress());
    let (first, records) = step(&mut cl, &mut logs);
    assert_eq!(first.sessions, SNAPSHOT_SESSIONS_PER_STEP);
    assert!(!first.done);
    // Sessions have at most a few queued messages: an image is at most 4 records here.
    assert!(
        records <= 4 * SNAPSHOT_SESSIONS_PER_STEP,
        "{records} records in one step"
    );

    // Between chunks: one imaged session ends, one not yet reached ends, a new one starts, a
    // message is queued for imaged and not-yet-imaged sessions, an imaged session takes and
    // acknowledges one, a not-yet-imaged one changes its subscriptions, retained changes.
    end_session(&mut cl, &mut logs, "s-0");
    end_session(&mut cl, &mut logs, &format!("s-{}", n - 1));
    let (mut fresh, _) = connect_synced(&mut cl, &mut logs, 0, "new-1", false, 3600);
    subscribe_synced(&mut cl, &mut logs, &mut fresh, "t/0", QoS::AtLeastOnce);
    cl.drop_conn(&fresh);
    send(&mut cl, &mut logs, qos1("t/0", b"during"), &mut publisher);
    let (mut taker, ack) = connect_synced(&mut cl, &mut logs, 0, "s-10", false, 3600);
    assert!(ack.session_present);
    let got = publishes(&std::mem::take(&mut taker.pending));
    assert_eq!(got.len(), 2, "{got:?}");
    if let QosPid::AtLeastOnce(id) = got[0].2 {
        cl.send(
            &taker,
            &Packet::PubAck(PubResp::new(id, ReasonCode::SUCCESS)),
        );
    }
    logs.sync(&mut cl);
    let (mut changer, _) =
        connect_synced(&mut cl, &mut logs, 0, &format!("s-{}", n - 3), false, 3600);
    subscribe_synced(&mut cl, &mut logs, &mut changer, "extra", QoS::ExactlyOnce);
    cl.drop_conn(&changer);
    let p = publish_retained("r/a", b"", QosPid::AtMostOnce);
    send(&mut cl, &mut logs, p, &mut publisher);
    let p = publish_retained("r/c", b"new", QosPid::AtMostOnce);
    send(&mut cl, &mut logs, p, &mut publisher);

    let mut steps = 1;
    let mut late = 0;
    loop {
        let (progress, records) = step(&mut cl, &mut logs);
        steps += 1;
        assert!(progress.sessions <= SNAPSHOT_SESSIONS_PER_STEP);
        assert!(progress.retained <= SNAPSHOT_RETAINED_PER_STEP);
        assert!(
            records <= 4 * SNAPSHOT_SESSIONS_PER_STEP + SNAPSHOT_RETAINED_PER_STEP,
            "{records} records in one step"
        );
        if progress.done {
            break;
        }
        // More changes between later chunks.
        end_session(&mut cl, &mut logs, "s-1");
        send(&mut cl, &mut logs, qos1("t/1", b"late"), &mut publisher);
        late += 1;
        assert!(steps < 100, "the walk does not end");
    }
    assert!(steps >= 3, "spread over several inputs: {steps}");
    assert!(!cl.cores[0].snapshot_in_progress());
    // Changes after the end marker are ordinary records of the new log.
    send(&mut cl, &mut logs, qos1("t/2", b"after"), &mut publisher);
    end_session(&mut cl, &mut logs, "s-2");

    let (sessions, retained) = replayed_state(&logs.shards[0][begin..]);
    let (expected, expected_retained) = replayed_state(&logs.shards[0]);
    assert_eq!(sessions.len(), expected.len());
    assert_eq!(
        sessions, expected,
        "the compacted log replays to another state"
    );
    assert_eq!(retained, expected_retained);
    let names: Vec<&[u8]> = sessions
        .iter()
        .map(|s| s.meta.client_id.as_bytes())
        .collect();
    for gone in [
        "s-0".to_string(),
        "s-1".into(),
        "s-2".into(),
        format!("s-{}", n - 1),
    ] {
        assert!(!names.contains(&gone.as_bytes()), "{gone} came back");
    }
    assert_eq!(names.len(), n - 4 + 1, "every other session, and new-1");
    let find = |id: &str| {
        sessions
            .iter()
            .find(|s| s.meta.client_id.as_bytes() == id.as_bytes())
            .unwrap_or_else(|| panic!("{id} missing"))
    };
    assert_eq!(
        find("new-1").queue.len(),
        1,
        "new-1 got the message sent during the walk"
    );
    let s10 = find("s-10");
    assert_eq!(
        (s10.inflight.len(), s10.queue.len()),
        (1, 0),
        "s-10: one acknowledged, one in flight"
    );
    assert_eq!(find(&format!("s-{}", n - 3)).meta.subs.len(), 2);
    assert_eq!(
        find("s-11").queue.len(),
        1 + late,
        "before, then every late one"
    );
    let topics: Vec<&[u8]> = retained
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(t, _)| &t[..])
        .collect();
    assert_eq!(topics, [&b"r/b"[..], b"r/c"]);

    // And a broker restarted from the compacted log alone serves it.
    let mut compacted = Logs::new(1);
    compacted.shards[0] = logs.shards[0][begin..].to_vec();
    let mut next = restart(&cl, &compacted, 1, Duration::from_secs(1));
    let mut nlogs = compacted.continued();
    let (c, ack) = connect_synced(&mut next, &mut nlogs, 0, "s-20", false, 3600);
    assert!(ack.session_present);
    let payloads: Vec<Bytes> = publishes(&c.pending)
        .into_iter()
        .map(|(p, _, _)| p)
        .collect();
    assert_eq!(
        payloads,
        [Bytes::from_static(b"before"), Bytes::from_static(b"during")]
    );
    let (_, ack) = connect_synced(&mut next, &mut nlogs, 0, "s-0", false, 3600);
    assert!(!ack.session_present, "s-0 was removed after its image");
}

// ---- sessions per authentication name -------------------------------------------------------

/// Two durable shards enforcing a registry with one certificate client, `truck-17`, whose
/// authentication name may hold one session (`maxClientSessionsPerAuthenticationName`'s
/// default).
fn name_limited_cluster(ca: &common::pki::Ca) -> Cluster {
    let registry = serde_json::json!({
        "namespace": { "clientAuthentication": {
            "alternativeAuthenticationNameSources": ["ClientCertificateSubject"]
        }},
        "caCertificates": [{ "name": "fleet-ca", "encodedCertificate": ca.pem() }],
        "clients": [
            { "name": "truck-17", "authenticationName": "truck-17",
              "clientCertificateAuthentication": { "validationScheme": "SubjectMatchesAuthenticationName" } }
        ]
    });
    let mut warnings = Vec::new();
    let registry =
        ringmq_auth::registry::Registry::parse(&registry.to_string(), &mut warnings).unwrap();
    let policy = ringmq_auth::Snapshot {
        version: 1,
        allow_anonymous: false,
        registry: Some(registry),
        files: Default::default(),
    };
    let mut cl = Cluster::with_policy(2, ringmq::config::Limits::default(), policy);
    for c in &mut cl.cores {
        c.enable_durable();
    }
    cl
}

/// A persistent CONNECT as `id` with the certificate `cert`, made durable.
fn connect_cert(
    cl: &mut Cluster,
    logs: &mut Logs,
    shard: usize,
    id: &str,
    cert: &rustls_pki_types::CertificateDer<'static>,
) -> (Client, ConnAck) {
    let mut c = cl.open(shard);
    cl.set_peer_certificates(&c, vec![cert.clone()]);
    let mut connect = connect_packet(id, ProtocolVersion::V5);
    connect.clean_start = false;
    connect.properties.session_expiry_secs = Some(3600);
    c.version = ProtocolVersion::V5;
    cl.send(&c, &Packet::Connect(Box::new(connect)));
    logs.sync(cl);
    match cl.recv_one(&mut c) {
        Packet::ConnAck(a) => (c, a),
        p => panic!("expected CONNACK, got {p:?}"),
    }
}

#[test]
fn sessions_per_authentication_name_are_counted_again_after_a_restart() {
    let ca = common::pki::root("fleet root");
    let truck = common::pki::leaf("truck-17", &ca);
    let mut cl = name_limited_cluster(&ca);
    let mut logs = Logs::new(2);
    let (c, ack) = connect_cert(&mut cl, &mut logs, 0, "truck-a", &truck);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    cl.drop_conn(&c);
    logs.sync(&mut cl);
    let (c, ack) = connect_cert(&mut cl, &mut logs, 1, "truck-b", &truck);
    assert_eq!(
        ack.reason_code,
        ReasonCode::QUOTA_EXCEEDED,
        "before the restart"
    );
    cl.drop_conn(&c);
    logs.sync(&mut cl);

    let next = name_limited_cluster(&ca);
    let mut next = restart_into(next, &cl, &logs, 2, Duration::from_secs(1));
    let mut nlogs = logs.continued();
    let (c, ack) = connect_cert(&mut next, &mut nlogs, 1, "truck-b", &truck);
    assert_eq!(
        ack.reason_code,
        ReasonCode::QUOTA_EXCEEDED,
        "the restored session of truck-a holds the name's one slot"
    );
    next.drop_conn(&c);
    let (c, ack) = connect_cert(&mut next, &mut nlogs, 1, "truck-a", &truck);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "its own session");
    assert!(ack.session_present);
    // Ended (Clean Start 1, expiry 0): the slot is free again.
    next.drop_conn(&c);
    let mut c = next.open(0);
    next.set_peer_certificates(&c, vec![truck.clone()]);
    let ack = next.connect_with(&mut c, connect_packet("truck-a", ProtocolVersion::V5));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    next.drop_conn(&c);
    nlogs.sync(&mut next);
    let (_, ack) = connect_cert(&mut next, &mut nlogs, 1, "truck-b", &truck);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "slot released");
}

// ---- forwarded copies ------------------------------------------------------------------------

/// `p` from `c`, handled by its shard alone (`Cluster::send` pumps every shard after it).
fn send_unpumped(cl: &mut Cluster, c: &Client, p: &Packet) {
    let mut buf = bytes::BytesMut::new();
    encode(p, c.version, &mut buf).unwrap();
    let _ = cl.input(
        c.shard,
        Input::Read {
            conn: c.index,
            bytes: &mut buf,
        },
    );
}

/// A client id whose directory shard (of 3) is not `avoid`.
fn id_not_directed_to(avoid: usize) -> String {
    (0..)
        .map(|i| format!("mover-{i}"))
        .find(|id| directory_shard_of(id.as_bytes(), 3).slot() != avoid)
        .unwrap()
}

/// A session moves from shard 0 to shard 1 while the publisher's shard 2 still routes its
/// topic to shard 0 only (shard 1's interest has not reached it): shard 0 forwards the copy
/// (`forward.rs`), and the PUBACK waits until shard 1 has it on disk, not only shards 0 and 2.
#[test]
fn puback_waits_for_a_copy_forwarded_to_a_session_that_moved() {
    let id = id_not_directed_to(2);
    let mut cl = durable_cluster(3);
    let mut logs = Logs::new(3);
    let (mut s, _) = connect_synced(&mut cl, &mut logs, 0, &id, false, 3600);
    subscribe_synced(&mut cl, &mut logs, &mut s, "t", QoS::AtLeastOnce);
    cl.drop_conn(&s);
    let (mut publisher, _) = connect_synced(&mut cl, &mut logs, 2, "pub", true, 0);
    logs.sync(&mut cl);

    // The session moves to shard 1: shard 1 claims it, shard 0 (the directory's answer
    // handled there) gives it up and sends it on — and before shard 1 has it (so before its
    // interest exists), the publisher's shard routes a message to shard 0 only.
    let mut moved = cl.open(1);
    let mut connect = connect_packet(&id, ProtocolVersion::V5);
    connect.clean_start = false;
    connect.properties.session_expiry_secs = Some(3600);
    send_unpumped(&mut cl, &moved, &Packet::Connect(Box::new(connect)));
    let _ = cl.input(0, Input::Inbox { max: usize::MAX });
    assert_eq!(cl.cores[0].counts().1, 0, "shard 0 gave the session up");
    let p = publish("t", b"moved", QosPid::new(QoS::AtLeastOnce, pid(7)));
    send_unpumped(&mut cl, &publisher, &p);
    // Shard 0 gets it after the session left: it forwards a copy to shard 1.
    let _ = cl.input(0, Input::Inbox { max: usize::MAX });
    assert_eq!(
        cl.cores[0].stats.forwarded_after_move, 1,
        "shard 0 forwarded a copy"
    );
    cl.pump();
    logs.drain(&mut cl);
    assert!(
        cl.cores[1].records_emitted() > cl.cores[1].records_durable(),
        "shard 1 wrote the forwarded copy"
    );
    // Shards 0 and 2 durable, shard 1 not: no PUBACK.
    for shard in [0, 2] {
        let upto = (logs.shards[shard].len() - logs.base[shard]) as u64;
        let _ = cl.input(shard, Input::Durable { upto });
    }
    cl.pump();
    let early = cl.recv(&mut publisher);
    assert!(
        early.is_empty(),
        "PUBACK before the forwarded copy is durable: {early:?}"
    );
    logs.sync(&mut cl);
    let acks = cl.recv(&mut publisher);
    assert!(
        acks.iter()
            .any(|p| matches!(p, Packet::PubAck(a) if a.packet_id == pid(7))),
        "{acks:?}"
    );
    // And the session has the message, once.
    let got = publishes(&cl.recv(&mut moved));
    assert_eq!(
        got.iter().filter(|(p, _, _)| &p[..] == b"moved").count(),
        1,
        "{got:?}"
    );
}

/// The full-log rule across shards: a QoS 1/2 message is refused with 0x97 when the log of
/// any shard it would be written on is full — here the subscriber's shard, not the
/// publisher's; a message that shard would not receive is taken.
#[test]
fn a_full_log_on_a_subscribers_shard_refuses_messages_for_it_with_0x97() {
    let mut cl = durable_cluster(2);
    let mut logs = Logs::new(2);
    let (mut sub, _) = connect_synced(&mut cl, &mut logs, 0, "sub", false, 3600);
    subscribe_synced(&mut cl, &mut logs, &mut sub, "to-full", QoS::AtLeastOnce);
    cl.drop_conn(&sub);
    let (mut publisher, _) = connect_synced(&mut cl, &mut logs, 1, "pub", true, 0);
    cl.cores[0].set_storage_full(true);
    assert!(
        !cl.cores[1].storage_full(),
        "the publisher's own log has room"
    );
    let code = |cl: &mut Cluster, logs: &mut Logs, publisher: &mut Client, topic, id| {
        cl.send(
            publisher,
            &publish(topic, b"m", QosPid::new(QoS::AtLeastOnce, pid(id))),
        );
        logs.sync(cl);
        match cl.recv_one(publisher) {
            Packet::PubAck(a) => a.reason_code,
            p => panic!("{p:?}"),
        }
    };
    assert_eq!(
        code(&mut cl, &mut logs, &mut publisher, "to-full", 1),
        ReasonCode::QUOTA_EXCEEDED,
        "the subscriber's shard cannot take it"
    );
    assert_eq!(
        code(&mut cl, &mut logs, &mut publisher, "elsewhere", 2),
        ReasonCode::SUCCESS,
        "no full log is needed"
    );
    cl.cores[0].set_storage_full(false);
    assert_eq!(
        code(&mut cl, &mut logs, &mut publisher, "to-full", 3),
        ReasonCode::SUCCESS,
        "room again"
    );
}

/// The same on two shards, the publisher on the shard the session left: that shard forwards
/// its own message, and the PUBACK waits for the session's new shard.
#[test]
fn puback_waits_for_a_copy_the_publishers_own_shard_forwarded() {
    let mut cl = durable_cluster(2);
    let mut logs = Logs::new(2);
    let (mut s, _) = connect_synced(&mut cl, &mut logs, 0, "mover", false, 3600);
    subscribe_synced(&mut cl, &mut logs, &mut s, "t", QoS::AtLeastOnce);
    cl.drop_conn(&s);
    let (mut publisher, _) = connect_synced(&mut cl, &mut logs, 0, "pub", true, 0);
    logs.sync(&mut cl);
    let moved = cl.open(1);
    let mut connect = connect_packet("mover", ProtocolVersion::V5);
    connect.clean_start = false;
    connect.properties.session_expiry_secs = Some(3600);
    send_unpumped(&mut cl, &moved, &Packet::Connect(Box::new(connect)));
    let _ = cl.input(0, Input::Inbox { max: usize::MAX });
    assert_eq!(
        cl.cores[0].counts().1,
        1,
        "only the publisher's session is left"
    );
    let p = publish("t", b"moved", QosPid::new(QoS::AtLeastOnce, pid(3)));
    send_unpumped(&mut cl, &publisher, &p);
    assert_eq!(
        cl.cores[0].stats.forwarded_after_move, 1,
        "shard 0 forwarded it"
    );
    cl.pump();
    logs.drain(&mut cl);
    let upto = (logs.shards[0].len() - logs.base[0]) as u64;
    let _ = cl.input(0, Input::Durable { upto });
    cl.pump();
    let early = cl.recv(&mut publisher);
    assert!(
        early.is_empty(),
        "PUBACK before shard 1 is durable: {early:?}"
    );
    logs.sync(&mut cl);
    assert!(matches!(cl.recv_one(&mut publisher), Packet::PubAck(a) if a.packet_id == pid(3)));
}

/// The queue of session `id` in the merged replay of `log` (one shard).
fn replayed_queue(log: &[Record], id: &str) -> Option<Vec<Bytes>> {
    let mut r = Replay::new(0);
    for rec in log {
        r.apply(&rec.to_vec()).expect("records decode");
    }
    let parts = merge(vec![r], 1, |_| 0);
    parts[0]
        .sessions
        .iter()
        .find(|s| s.meta.client_id.as_str() == id)
        .map(|s| s.queue.iter().map(|o| o.message.payload.clone()).collect())
}

/// A session's image: `Session` with `reset`, its queued messages, `ImageEnd`.
fn image(id: &'static str, generation: u64, payloads: &[&'static [u8]]) -> Vec<Record> {
    let c = Str::from_static(id);
    let mut out = vec![Record::Session(SessionRecord {
        client_id: c.clone(),
        generation,
        expiry_secs: 3600,
        expires_unix_ms: None,
        reset: true,
        owner: None,
        subs: Vec::new(),
        will: None,
    })];
    for (i, p) in payloads.iter().enumerate() {
        let id = generation * 100 + i as u64;
        out.push(Record::Message {
            id,
            message: StoredMessage {
                payload: Bytes::from_static(p),
                qos: QoS::AtLeastOnce,
                retain: false,
                expires_unix_ms: None,
                properties: Default::default(),
                ..sample_message()
            },
        });
        out.push(Record::Enqueued {
            client_id: c.clone(),
            message: id,
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: Vec::new(),
        });
    }
    out.push(Record::ImageEnd { client_id: c });
    out
}

/// Found by the 100 000-session recovery benchmark: a crash in the middle of writing a
/// session's image (a snapshot after a restart) lost the queued messages the image had not
/// reached yet, because the image's `reset` emptied the queue that the older records had
/// rebuilt. An image now counts only once its `ImageEnd` is read; one cut short is undone,
/// whether the log ends there or the next run's records follow it.
#[test]
fn a_session_image_cut_short_by_a_crash_keeps_the_state_it_would_replace() {
    let full = image("s", 1, &[b"m1", b"m2", b"m3"]);
    let expect = Some(vec![
        Bytes::from_static(b"m1"),
        Bytes::from_static(b"m2"),
        Bytes::from_static(b"m3"),
    ]);
    assert_eq!(replayed_queue(&full, "s"), expect);
    // The next image, cut after its first message (no ImageEnd).
    let second = image("s", 2, &[b"m1", b"m2", b"m3"]);
    for cut in 1..second.len() {
        let mut log = full.clone();
        log.extend_from_slice(&second[..cut]);
        assert_eq!(
            replayed_queue(&log, "s"),
            expect,
            "image cut after {cut} records"
        );
        // After a restart the next run's records follow the cut image.
        log.extend(image("t", 3, &[b"x"]));
        assert_eq!(
            replayed_queue(&log, "s"),
            expect,
            "cut after {cut}, then more"
        );
        assert_eq!(
            replayed_queue(&log, "t"),
            Some(vec![Bytes::from_static(b"x")])
        );
    }
    // A complete image still replaces the state (what a snapshot relies on).
    let mut log = full.clone();
    log.extend(image("s", 2, &[b"m3"]));
    assert_eq!(
        replayed_queue(&log, "s"),
        Some(vec![Bytes::from_static(b"m3")])
    );
}
