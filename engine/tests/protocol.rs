//! Protocol tests of the sans-IO shard core: no sockets, no threads, a fake clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::num::NonZeroU16;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ringmq::proto::Input;
use ringmq::proto::message::Message;
use ringmq::shard::mesh::ShardMsg;
use ringmq_codec::*;

fn payloads(packets: &[Packet]) -> Vec<Bytes> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.payload.clone()),
            _ => None,
        })
        .collect()
}

/// CONNACK advertises (MQTT 5.0 section 3.2.2.3) the server's limits and capabilities.
#[test]
fn connack_advertises_limits() {
    let mut cl = Cluster::new(1);
    let (_, ack) = cl.connect(0, "c1", true, 0);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert!(!ack.session_present);
    let p = ack.properties;
    assert_eq!(p.receive_maximum.map(|r| r.get()), Some(1024));
    assert_eq!(p.maximum_packet_size.map(|r| r.get()), Some(1024 * 1024));
    assert_eq!(p.retain_available, Some(true));
    assert_eq!(p.shared_subscription_available, Some(true));
    assert_eq!(p.topic_alias_maximum, Some(64));
}

/// [MQTT-3.1.0-1] the first packet must be CONNECT.
#[test]
fn first_packet_not_connect_closes() {
    let mut cl = Cluster::new(1);
    let mut c = cl.open(0);
    cl.send(&c, &Packet::PingReq);
    assert!(cl.is_closing(&c));
    assert!(
        cl.recv(&mut c).is_empty(),
        "no CONNACK for a non-CONNECT first packet"
    );
}

/// [MQTT-3.1.0-2] a second CONNECT is a protocol error.
#[test]
fn second_connect_is_protocol_error() {
    let mut cl = Cluster::new(1);
    let (mut c, _) = cl.connect(0, "c1", true, 0);
    cl.send(
        &c,
        &Packet::Connect(Box::new(connect_packet("c1", ProtocolVersion::V5))),
    );
    match cl.recv_one(&mut c) {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::PROTOCOL_ERROR),
        p => panic!("{p:?}"),
    }
    assert!(cl.is_closing(&c));
}

/// [MQTT-3.1.3-6] an empty client id gets an assigned one (v5).
#[test]
fn empty_client_id_is_assigned() {
    let mut cl = Cluster::new(2);
    let (_, ack) = cl.connect(1, "", true, 0);
    let id = ack.properties.assigned_client_id.expect("assigned id");
    assert!(id.as_str().starts_with("ringmq-"), "{id}");
}

/// [MQTT-3.1.3-8] 3.1.1: an empty client id with CleanSession=0 is refused with 0x02.
#[test]
fn v311_empty_client_id_without_clean_session_refused() {
    let mut cl = Cluster::new(1);
    let mut c = cl.open(0);
    c.version = ProtocolVersion::V3_1_1;
    let mut connect = connect_packet("", ProtocolVersion::V3_1_1);
    connect.clean_start = false;
    cl.send(&c, &Packet::Connect(Box::new(connect)));
    match cl.recv_one(&mut c) {
        Packet::ConnAck(a) => assert_eq!(a.reason_code.to_v3_connack(), 0x02),
        p => panic!("{p:?}"),
    }
    assert!(cl.is_closing(&c));
}

/// QoS 0, 1 and 2 from a publisher on one shard to a subscriber on another.
#[test]
fn cross_shard_delivery_all_qos() {
    let mut cl = Cluster::new(3);
    let (mut sub, _) = cl.connect(2, "sub", true, 0);
    let ack = cl.subscribe(&mut sub, "a/+", QoS::ExactlyOnce);
    assert_eq!(ack.reason_codes, vec![ReasonCode::GRANTED_QOS_2]);
    let (mut publ, _) = cl.connect(0, "pub", true, 0);

    cl.send(&publ, &publish("a/b", b"zero", QosPid::AtMostOnce));
    cl.send(&publ, &publish("a/b", b"one", QosPid::AtLeastOnce(pid(7))));
    assert!(matches!(cl.recv_one(&mut publ), Packet::PubAck(a) if a.packet_id == pid(7)));
    cl.send(&publ, &publish("a/b", b"two", QosPid::ExactlyOnce(pid(8))));
    assert!(matches!(cl.recv_one(&mut publ), Packet::PubRec(a) if a.packet_id == pid(8)));
    cl.send(
        &publ,
        &Packet::PubRel(PubResp::new(pid(8), ReasonCode::SUCCESS)),
    );
    assert!(matches!(cl.recv_one(&mut publ), Packet::PubComp(a) if a.packet_id == pid(8)));

    let got = cl.recv(&mut sub);
    assert_eq!(
        payloads(&got),
        vec![
            Bytes::from_static(b"zero"),
            Bytes::from_static(b"one"),
            Bytes::from_static(b"two")
        ]
    );
    let Packet::Publish(p1) = &got[1] else {
        panic!()
    };
    assert_eq!(p1.qos_pid.qos(), QoS::AtLeastOnce);
    let Packet::Publish(p2) = &got[2] else {
        panic!()
    };
    let QosPid::ExactlyOnce(id2) = p2.qos_pid else {
        panic!("{p2:?}")
    };
    // Complete the outbound QoS 2 exchange: PUBREC → PUBREL → PUBCOMP.
    cl.send(
        &sub,
        &Packet::PubRec(PubResp::new(id2, ReasonCode::SUCCESS)),
    );
    assert!(matches!(cl.recv_one(&mut sub), Packet::PubRel(a) if a.packet_id == id2));
    cl.send(
        &sub,
        &Packet::PubComp(PubResp::new(id2, ReasonCode::SUCCESS)),
    );
    assert!(cl.recv(&mut sub).is_empty());
}

/// [MQTT-4.3.3-10] a resent QoS 2 PUBLISH (same packet id, before PUBREL) is not delivered twice.
#[test]
fn qos2_duplicate_not_delivered_twice() {
    let mut cl = Cluster::new(1);
    let (mut sub, _) = cl.connect(0, "sub", true, 0);
    cl.subscribe(&mut sub, "t", QoS::AtMostOnce);
    let (mut publ, _) = cl.connect(0, "pub", true, 0);
    cl.send(&publ, &publish("t", b"x", QosPid::ExactlyOnce(pid(3))));
    cl.send(&publ, &publish("t", b"x", QosPid::ExactlyOnce(pid(3))));
    assert_eq!(cl.recv(&mut publ).len(), 2, "two PUBRECs");
    assert_eq!(payloads(&cl.recv(&mut sub)).len(), 1);
}

/// [MQTT-3.3.4-2..5] overlapping subscriptions: one delivery, highest QoS, all identifiers.
#[test]
fn overlapping_subscriptions_deliver_once_with_all_ids() {
    let mut cl = Cluster::new(2);
    let (mut sub, _) = cl.connect(1, "sub", true, 0);
    for (i, (f, q)) in [("a/#", QoS::AtMostOnce), ("a/+", QoS::AtLeastOnce)]
        .into_iter()
        .enumerate()
    {
        let s = Subscribe {
            packet_id: pid(1),
            subscription_id: Some(subid(10 + i as u32)),
            user_properties: UserProperties::new(),
            filters: vec![SubscribeFilter {
                filter: Str::from_static(f),
                options: SubscriptionOptions {
                    qos: q,
                    ..Default::default()
                },
            }],
        };
        cl.send(&sub, &Packet::Subscribe(s));
        cl.recv(&mut sub);
    }
    let (publ, _) = cl.connect(0, "pub", true, 0);
    cl.send(&publ, &publish("a/b", b"p", QosPid::ExactlyOnce(pid(1))));
    let got = cl.recv(&mut sub);
    assert_eq!(got.len(), 1, "{got:?}");
    let Packet::Publish(p) = &got[0] else {
        panic!()
    };
    assert_eq!(p.qos_pid.qos(), QoS::AtLeastOnce);
    let mut ids: Vec<u32> = p
        .properties
        .subscription_ids
        .iter()
        .map(|i| i.get())
        .collect();
    ids.sort();
    assert_eq!(ids, vec![10, 11]);
}

/// [MQTT-3.8.3-3] No Local: not delivered back to the publisher.
#[test]
fn no_local_is_honoured() {
    let mut cl = Cluster::new(1);
    let (mut c, _) = cl.connect(0, "me", true, 0);
    let s = Subscribe {
        packet_id: pid(1),
        subscription_id: None,
        user_properties: UserProperties::new(),
        filters: vec![SubscribeFilter {
            filter: Str::from_static("t"),
            options: SubscriptionOptions {
                no_local: true,
                ..Default::default()
            },
        }],
    };
    cl.send(&c, &Packet::Subscribe(s));
    cl.recv(&mut c);
    cl.send(&c, &publish("t", b"x", QosPid::AtMostOnce));
    assert!(cl.recv(&mut c).is_empty());
}

/// [MQTT-3.1.4-3] takeover across shards: the old connection gets 0x8E; the session and its
/// subscriptions move to the new shard.
#[test]
fn takeover_across_shards_moves_session() {
    let mut cl = Cluster::new(3);
    let (mut old, _) = cl.connect(0, "dev", false, 3600);
    cl.subscribe(&mut old, "cmd/dev", QoS::AtLeastOnce);
    let (mut new, ack) = cl.connect(2, "dev", false, 3600);
    assert!(ack.session_present);
    match cl.recv_one(&mut old) {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::SESSION_TAKEN_OVER),
        p => panic!("{p:?}"),
    }
    assert!(cl.is_closing(&old));
    cl.drop_conn(&old);
    let (publ, _) = cl.connect(1, "pub", true, 0);
    cl.send(
        &publ,
        &publish("cmd/dev", b"go", QosPid::AtLeastOnce(pid(1))),
    );
    assert_eq!(
        payloads(&cl.recv(&mut new)),
        vec![Bytes::from_static(b"go")]
    );
    assert_eq!(
        cl.cores[0].counts().1,
        0,
        "no session left on the old shard"
    );
}

/// Offline QoS 1 messages are queued and delivered on resume; unacknowledged ones are resent
/// with DUP [MQTT-4.4.0-1].
#[test]
fn offline_queue_and_dup_redelivery() {
    let mut cl = Cluster::new(2);
    let (mut sub, _) = cl.connect(1, "s", false, 600);
    cl.subscribe(&mut sub, "q", QoS::AtLeastOnce);
    let (publ, _) = cl.connect(0, "p", true, 0);
    cl.send(&publ, &publish("q", b"m1", QosPid::AtLeastOnce(pid(1))));
    let got = cl.recv(&mut sub);
    assert_eq!(payloads(&got), vec![Bytes::from_static(b"m1")]);
    // Not acknowledged; connection lost; m2 arrives while offline.
    cl.drop_conn(&sub);
    cl.send(&publ, &publish("q", b"m2", QosPid::AtLeastOnce(pid(2))));
    let (mut sub2, ack) = cl.connect(0, "s", false, 600);
    assert!(ack.session_present);
    let got = cl.recv(&mut sub2);
    assert_eq!(
        payloads(&got),
        vec![Bytes::from_static(b"m1"), Bytes::from_static(b"m2")]
    );
    let Packet::Publish(first) = &got[0] else {
        panic!()
    };
    assert!(first.dup, "resent PUBLISH carries DUP");
}

/// Session expiry: an offline session disappears after its interval.
#[test]
fn session_expires() {
    let mut cl = Cluster::new(1);
    let (c, _) = cl.connect(0, "s", false, 5);
    cl.drop_conn(&c);
    assert_eq!(cl.cores[0].counts().1, 1);
    cl.advance(Duration::from_secs(6));
    assert_eq!(cl.cores[0].counts().1, 0);
    let (_, ack) = cl.connect(0, "s", false, 5);
    assert!(!ack.session_present);
}

/// [MQTT-3.1.2-22] keep alive: no packet for 1.5 × keep alive closes with 0x8D and the will is
/// published.
#[test]
fn keep_alive_timeout_publishes_will() {
    let mut cl = Cluster::new(2);
    let (mut watcher, _) = cl.connect(1, "w", true, 0);
    cl.subscribe(&mut watcher, "wills/#", QoS::AtMostOnce);
    let mut c = cl.open(0);
    let mut connect = connect_packet("dying", ProtocolVersion::V5);
    connect.keep_alive_secs = 2;
    connect.will = Some(Will {
        qos: QoS::AtMostOnce,
        retain: false,
        topic: Str::from_static("wills/dying"),
        payload: Bytes::from_static(b"gone"),
        properties: WillProperties::default(),
    });
    cl.send(&c, &Packet::Connect(Box::new(connect)));
    cl.recv(&mut c);
    cl.advance(Duration::from_secs(2));
    assert!(!cl.is_closing(&c));
    cl.advance(Duration::from_millis(1100));
    match cl.recv_one(&mut c) {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::KEEP_ALIVE_TIMEOUT),
        p => panic!("{p:?}"),
    }
    assert_eq!(
        payloads(&cl.recv(&mut watcher)),
        vec![Bytes::from_static(b"gone")]
    );
}

/// [MQTT-3.1.3-9] a delayed will is cancelled by a reconnect within the delay.
#[test]
fn will_delay_cancelled_by_reconnect() {
    let mut cl = Cluster::new(1);
    let (mut watcher, _) = cl.connect(0, "w", true, 0);
    cl.subscribe(&mut watcher, "wills/#", QoS::AtMostOnce);
    let mut c = cl.open(0);
    let mut connect = connect_packet("d", ProtocolVersion::V5);
    connect.clean_start = false;
    connect.properties.session_expiry_secs = Some(100);
    connect.will = Some(Will {
        qos: QoS::AtMostOnce,
        retain: false,
        topic: Str::from_static("wills/d"),
        payload: Bytes::from_static(b"gone"),
        properties: WillProperties {
            will_delay_secs: Some(10),
            ..Default::default()
        },
    });
    cl.send(&c, &Packet::Connect(Box::new(connect)));
    cl.recv(&mut c);
    cl.drop_conn(&c);
    cl.advance(Duration::from_secs(5));
    cl.connect(0, "d", false, 100);
    cl.advance(Duration::from_secs(10));
    assert!(cl.recv(&mut watcher).is_empty(), "will cancelled");
}

/// Shared subscription with members on different shards: each message to exactly one member.
#[test]
fn shared_subscription_across_shards() {
    let mut cl = Cluster::new(3);
    let (mut a, _) = cl.connect(1, "a", true, 0);
    cl.subscribe(&mut a, "$share/g/jobs/#", QoS::AtLeastOnce);
    let (mut b, _) = cl.connect(2, "b", true, 0);
    cl.subscribe(&mut b, "$share/g/jobs/#", QoS::AtLeastOnce);
    let (publ, _) = cl.connect(0, "p", true, 0);
    for i in 1..=10u16 {
        cl.send(&publ, &publish("jobs/x", b"j", QosPid::AtLeastOnce(pid(i))));
    }
    let na = payloads(&cl.recv(&mut a)).len();
    let nb = payloads(&cl.recv(&mut b)).len();
    assert_eq!(na + nb, 10);
    assert!(na >= 3 && nb >= 3, "balanced: {na} / {nb}");
}

/// Retained: delivered on subscribe with RETAIN=1 on every shard, cleared by an empty payload.
#[test]
fn retained_messages_replicated_and_cleared() {
    let mut cl = Cluster::new(2);
    let (publ, _) = cl.connect(0, "p", true, 0);
    let mut p = publish("r/1", b"keep", QosPid::AtMostOnce);
    if let Packet::Publish(x) = &mut p {
        x.retain = true;
    }
    cl.send(&publ, &p);
    let (mut s, _) = cl.connect(1, "s", true, 0);
    cl.subscribe(&mut s, "r/#", QoS::AtMostOnce);
    let got = cl.recv(&mut s);
    let Packet::Publish(r) = &got[0] else {
        panic!("{got:?}")
    };
    assert!(r.retain);
    assert_eq!(r.payload, Bytes::from_static(b"keep"));
    let mut clear = publish("r/1", b"", QosPid::AtMostOnce);
    if let Packet::Publish(x) = &mut clear {
        x.retain = true;
    }
    cl.send(&publ, &clear);
    cl.recv(&mut s);
    let (mut s2, _) = cl.connect(1, "s2", true, 0);
    cl.subscribe(&mut s2, "r/#", QoS::AtMostOnce);
    assert!(cl.recv(&mut s2).is_empty());
}

/// [MQTT-3.3.2-9] a topic alias above the maximum is a protocol error with 0x94.
#[test]
fn invalid_topic_alias_disconnects() {
    let mut cl = Cluster::new(1);
    let (mut c, _) = cl.connect(0, "c", true, 0);
    let mut p = publish("t", b"x", QosPid::AtMostOnce);
    if let Packet::Publish(x) = &mut p {
        x.properties.topic_alias = Some(pid(65));
    }
    cl.send(&c, &p);
    match cl.recv_one(&mut c) {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::TOPIC_ALIAS_INVALID),
        p => panic!("{p:?}"),
    }
}

/// [MQTT-3.1.2-25] a message larger than the client's Maximum Packet Size is not sent to it.
#[test]
fn message_over_client_max_packet_size_is_dropped() {
    let mut cl = Cluster::new(1);
    let mut s = cl.open(0);
    let mut connect = connect_packet("small", ProtocolVersion::V5);
    connect.properties.maximum_packet_size = std::num::NonZeroU32::new(64);
    cl.send(&s, &Packet::Connect(Box::new(connect)));
    cl.recv(&mut s);
    cl.subscribe(&mut s, "t", QoS::AtMostOnce);
    let (publ, _) = cl.connect(0, "p", true, 0);
    cl.send(&publ, &publish("t", &[b'x'; 100], QosPid::AtMostOnce));
    cl.send(&publ, &publish("t", b"fits", QosPid::AtMostOnce));
    assert_eq!(
        payloads(&cl.recv(&mut s)),
        vec![Bytes::from_static(b"fits")]
    );
}

/// Packets sent right behind CONNECT (before CONNACK) are processed once the session is
/// ready, even when the session's directory lives on another shard.
#[test]
fn packets_pipelined_after_connect_are_processed() {
    let mut cl = Cluster::new(3);
    for n in 0..6 {
        let id = format!("pipelined-{n}");
        let mut c = cl.open(1);
        let mut bytes = bytes::BytesMut::new();
        encode(
            &Packet::Connect(Box::new(connect_packet(&id, ProtocolVersion::V5))),
            ProtocolVersion::V5,
            &mut bytes,
        )
        .unwrap();
        let sub = Subscribe {
            packet_id: pid(9),
            subscription_id: None,
            user_properties: UserProperties::new(),
            filters: vec![SubscribeFilter {
                filter: Str::from_static("pipe"),
                options: Default::default(),
            }],
        };
        encode(&Packet::Subscribe(sub), ProtocolVersion::V5, &mut bytes).unwrap();
        encode(&Packet::PingReq, ProtocolVersion::V5, &mut bytes).unwrap();
        cl.send_bytes(&c, &bytes);
        let got = cl.recv(&mut c);
        assert!(
            matches!(
                got.as_slice(),
                [Packet::ConnAck(_), Packet::SubAck(_), Packet::PingResp]
            ),
            "{id}: {got:?}"
        );
    }
}

/// Regression: repeated takeovers with session expiry 0, landing on the same shard and on
/// others. A takeover transfers the session; it must not release the directory entry the new
/// claim just made (a late release used to erase it, and the next takeover then missed the
/// live connection).
#[test]
fn repeated_takeover_same_and_other_shards() {
    let mut cl = Cluster::new(3);
    let (mut current, _) = cl.connect(0, "taken", true, 0);
    for (round, shard) in [0, 0, 1, 1, 2, 0, 2, 2].into_iter().enumerate() {
        let (next, _) = cl.connect(shard, "taken", true, 0);
        match cl.recv(&mut current).as_slice() {
            [Packet::Disconnect(d)] => assert_eq!(
                d.reason_code,
                ReasonCode::SESSION_TAKEN_OVER,
                "round {round}"
            ),
            other => panic!("round {round}: {other:?}"),
        }
        cl.drop_conn(&current);
        current = next;
    }
    let total: usize = cl.cores.iter().map(|c| c.counts().1).sum();
    assert_eq!(total, 1, "exactly one session remains");
}

/// A large payload goes to every subscriber as the same shared `Bytes` (no copy per
/// subscriber), across shards, and arrives intact after the per-subscriber header.
#[test]
fn large_payload_shared_not_copied_per_subscriber() {
    let mut cl = Cluster::new(2);
    let mut subs = Vec::new();
    for (i, shard) in [0, 1, 1].into_iter().enumerate() {
        let (mut s, _) = cl.connect(shard, &format!("big{i}"), true, 0);
        cl.subscribe(&mut s, "big", QoS::AtMostOnce);
        subs.push(s);
    }
    let (publ, _) = cl.connect(0, "p", true, 0);
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut frame = bytes::BytesMut::new();
    let p = Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: Str::from_static("big"),
        properties: PublishProperties::default(),
        payload: Bytes::from(payload.clone()),
    });
    encode(&p, ProtocolVersion::V5, &mut frame).unwrap();
    cl.send_bytes(&publ, &frame);
    let ptrs: Vec<*const u8> = subs
        .iter()
        .map(|s| {
            let conn = cl.cores[s.shard].conn(s.index).unwrap();
            let big = conn
                .extra()
                .expect("frames queued")
                .out_chunks
                .iter()
                .find(|c| c.len() == payload.len())
                .expect("payload queued by reference");
            big.as_ptr()
        })
        .collect();
    assert!(
        ptrs.windows(2).all(|w| w[0] == w[1]),
        "one payload buffer shared by all subscribers"
    );
    for s in &mut subs {
        let got = cl.recv(s);
        assert_eq!(payloads(&got), vec![Bytes::from(payload.clone())]);
    }
}

/// A retained PUBLISH of `payload` to `conv` (empty: a clear), encoded.
fn retained_frame(payload: &'static [u8]) -> bytes::BytesMut {
    let mut p = publish("conv", payload, QosPid::AtMostOnce);
    if let Packet::Publish(x) = &mut p {
        x.retain = true;
    }
    let mut b = bytes::BytesMut::new();
    encode(&p, ProtocolVersion::V5, &mut b).unwrap();
    b
}

/// Hands `c`'s retained PUBLISH of `payload` to its shard, with no pump: the replication to
/// the other shards waits in their inboxes.
fn publish_retained_unpumped(cl: &mut Cluster, c: &Client, payload: &'static [u8]) {
    let _ = cl.input(
        c.shard,
        Input::Read {
            conn: c.index,
            bytes: &mut retained_frame(payload),
        },
    );
}

/// Takes the retained updates waiting in `shard`'s inbox, to deliver them late.
fn hold_retain_updates(cl: &Cluster, shard: usize) -> Vec<ShardMsg> {
    let held: Vec<ShardMsg> = std::iter::from_fn(|| cl.mesh.pop_priority(shard)).collect();
    assert!(!held.is_empty(), "an update on its way to shard {shard}");
    assert!(
        held.iter().all(|m| matches!(m, ShardMsg::Retain { .. })),
        "only retained updates held: {held:?}"
    );
    held
}

/// Delivers `msgs` to `to` (sent by `from`) and lets every shard handle them.
fn deliver_late(cl: &mut Cluster, from: usize, to: usize, msgs: Vec<ShardMsg>) {
    for m in msgs {
        cl.mesh.push(from, to, m).unwrap();
    }
    cl.pump();
}

/// A retained update for `conv` sequenced at `seq`, as a shard replicates it.
fn retain_update(payload: &'static [u8], seq: u64) -> ShardMsg {
    ShardMsg::Retain {
        message: Message {
            topic: Str::from_static("conv"),
            payload: Bytes::from_static(payload),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at: None,
            origin: Bytes::new(),
            published_at: None,
        },
        seq,
    }
}

/// What a new subscriber to `conv` on each shard is sent as retained.
fn retained_seen(cl: &mut Cluster, prefix: &str) -> Vec<Vec<Bytes>> {
    (0..cl.cores.len())
        .map(|shard| {
            let (mut s, _) = cl.connect(shard, &format!("{prefix}{shard}"), true, 0);
            cl.subscribe(&mut s, "conv", QoS::AtMostOnce);
            payloads(&cl.recv(&mut s))
        })
        .collect()
}

/// Regression: concurrent retained updates from two shards converge (highest sequence wins
/// on every replica), whatever order each shard hears of them; a clear is a tombstone that a
/// late older update cannot undo.
#[test]
fn concurrent_retained_updates_converge() {
    let mut cl = Cluster::new(2);
    let (p0, _) = cl.connect(0, "p0", true, 0);
    let (p1, _) = cl.connect(1, "p1", true, 0);
    // An update sequenced before everything below and delivered only at the end (a shard
    // that was slow to forward it).
    let stale_seq = cl.mesh.next_retain_seq();

    // Both shards apply their own update before the other's arrives: shard 0's goes first,
    // but reaches shard 1 only after shard 1 applied its own, later one.
    publish_retained_unpumped(&mut cl, &p0, b"from-0");
    let from_0 = hold_retain_updates(&cl, 1);
    publish_retained_unpumped(&mut cl, &p1, b"from-1");
    cl.pump();
    deliver_late(&mut cl, 0, 1, from_0);
    let from_1 = vec![Bytes::from_static(b"from-1")];
    assert_eq!(
        retained_seen(&mut cl, "s"),
        [from_1.clone(), from_1.clone()],
        "the later update wins on every replica"
    );
    // The stale update, to every shard: ignored everywhere.
    deliver_late(&mut cl, 1, 0, vec![retain_update(b"stale", stale_seq)]);
    deliver_late(&mut cl, 0, 1, vec![retain_update(b"stale", stale_seq)]);
    assert_eq!(
        retained_seen(&mut cl, "t"),
        [from_1.clone(), from_1],
        "an older update is ignored"
    );

    // A tombstone: shard 1 retains "late", which reaches shard 0 only after shard 0's clear.
    let stale_seq = cl.mesh.next_retain_seq();
    publish_retained_unpumped(&mut cl, &p1, b"late");
    let late = hold_retain_updates(&cl, 0);
    publish_retained_unpumped(&mut cl, &p0, b"");
    cl.pump();
    deliver_late(&mut cl, 1, 0, late);
    deliver_late(&mut cl, 1, 0, vec![retain_update(b"stale", stale_seq)]);
    deliver_late(&mut cl, 0, 1, vec![retain_update(b"stale", stale_seq)]);
    assert_eq!(
        retained_seen(&mut cl, "u"),
        [Vec::<Bytes>::new(), Vec::new()],
        "cleared on every shard, and not brought back"
    );
    for core in &cl.cores {
        assert_eq!(
            core.metrics().retained_messages.get(),
            0,
            "nothing retained"
        );
    }
}

/// Regression: CONNECTs for one client id racing on several shards (and twice on one shard)
/// leave exactly one live connection, every other one taken over, and every CONNACK of a
/// persistent session says session present.
#[test]
fn racing_connects_leave_one_connection() {
    let mut cl = Cluster::new(3);
    let (mut first, _) = cl.connect(0, "storm", false, 60);
    cl.subscribe(&mut first, "storm/t", QoS::AtLeastOnce);
    cl.drop_conn(&first);
    // Eight CONNECTs sent before any claim is answered.
    let mut clients = Vec::new();
    for shard in [1, 2, 0, 1, 2, 0, 1, 1] {
        let c = cl.open(shard);
        let mut connect = connect_packet("storm", ProtocolVersion::V5);
        connect.clean_start = false;
        connect.properties.session_expiry_secs = Some(60);
        let mut buf = bytes::BytesMut::new();
        encode(
            &Packet::Connect(Box::new(connect)),
            ProtocolVersion::V5,
            &mut buf,
        )
        .unwrap();
        let _ = cl.input(
            shard,
            Input::Read {
                conn: c.index,
                bytes: &mut buf,
            },
        );
        clients.push(c);
    }
    cl.pump();
    let mut open = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let got = cl.recv(c);
        let Some(Packet::ConnAck(ack)) = got.first() else {
            panic!("client {i}: {got:?}")
        };
        assert!(ack.session_present, "client {i}: {ack:?}");
        if !cl.is_closing(c) {
            open.push(i);
        }
    }
    assert_eq!(open.len(), 1, "exactly one connection stays: {open:?}");
    let total: usize = cl.cores.iter().map(|c| c.counts().1).sum();
    assert_eq!(total, 1, "exactly one session");
    // The survivor still gets messages for the subscription made by the first connection.
    let (publ, _) = cl.connect(2, "p", true, 0);
    cl.send(
        &publ,
        &publish("storm/t", b"still-here", QosPid::AtLeastOnce(pid(1))),
    );
    let survivor = open[0];
    assert!(
        payloads(&cl.recv(&mut clients[survivor])).contains(&Bytes::from_static(b"still-here"))
    );
}

/// `$SYS` values: shard 0 publishes them on its tick as retained QoS 0 messages, so a
/// subscriber on another shard gets the latest values on SUBSCRIBE and live ones after; `#`
/// matches none of them [MQTT-4.7.2-1]; clients cannot publish there.
#[test]
fn sys_topics_published_retained_and_not_matched_by_hash() {
    let mut cl = Cluster::new(2);
    cl.cores[0].publish_sys_every(Duration::from_secs(1));
    let (mut all, _) = cl.connect(1, "all", true, 0);
    cl.subscribe(&mut all, "#", QoS::AtMostOnce);
    cl.advance(Duration::from_millis(250));
    assert!(cl.recv(&mut all).is_empty(), "`#` matched a $SYS topic");

    let (mut sys, _) = cl.connect(1, "sys", true, 0);
    cl.subscribe(&mut sys, "$SYS/broker/clients/connected", QoS::AtMostOnce);
    let retained = match cl.recv_one(&mut sys) {
        Packet::Publish(p) => p,
        p => panic!("expected the retained value, got {p:?}"),
    };
    assert!(retained.retain);
    // Gauges are sampled on each shard's tick; core 0 published on the first tick, before
    // core 1 (which holds `all`) had sampled anything.
    assert_eq!(&retained.payload[..], b"0");

    // Not due yet after 250 ms more; due after a whole interval, with the new count.
    cl.advance(Duration::from_millis(250));
    assert!(cl.recv(&mut sys).is_empty());
    cl.advance(Duration::from_millis(750));
    let live = cl.recv(&mut sys);
    assert_eq!(payloads(&live), vec![Bytes::from_static(b"2")]);
    assert!(cl.recv(&mut all).is_empty(), "`#` matched a $SYS topic");

    // A client's PUBLISH to $SYS is refused (QoS 1: PUBACK 0x87) and reaches nobody.
    let p = Publish {
        dup: false,
        qos_pid: QosPid::AtLeastOnce(pid(7)),
        retain: true,
        topic: Str::from_static("$SYS/broker/clients/connected"),
        properties: PublishProperties::default(),
        payload: Bytes::from_static(b"9"),
    };
    cl.send(&all, &Packet::Publish(p));
    match cl.recv_one(&mut all) {
        Packet::PubAck(a) => assert_eq!(a.reason_code, ReasonCode::NOT_AUTHORIZED),
        p => panic!("expected PUBACK 0x87, got {p:?}"),
    }
    assert!(cl.recv(&mut sys).is_empty());
}

/// Sum of one counter over the cluster's shards.
fn total(cl: &Cluster, f: impl Fn(&ringmq::ops::metrics::ShardMetrics) -> u64) -> u64 {
    cl.metrics.shards().iter().map(f).sum()
}

/// The shard cores count into the shared metrics: messages by QoS on the shard that received
/// or delivered them, drops by cause (a full offline queue, a message above the client's
/// Maximum Packet Size), sessions and subscriptions sampled on the tick, protocol errors.
#[test]
fn metrics_count_deliveries_and_drops() {
    let limits = ringmq::config::Limits {
        max_queued_messages: 2,
        ..Default::default()
    };
    let mut cl = Cluster::with_limits(2, limits);
    let (mut sub, _) = cl.connect(1, "sub", true, 0);
    cl.subscribe(&mut sub, "m/#", QoS::AtLeastOnce);
    let (mut away, _) = cl.connect(0, "away", true, 3600);
    cl.subscribe(&mut away, "m/#", QoS::AtLeastOnce);
    cl.drop_conn(&away);
    let mut small = cl.open(1);
    let mut connect = connect_packet("small", ProtocolVersion::V5);
    connect.properties.maximum_packet_size = std::num::NonZeroU32::new(64);
    cl.send(&small, &Packet::Connect(Box::new(connect)));
    cl.recv(&mut small);
    cl.subscribe(&mut small, "m/#", QoS::AtMostOnce);

    let (mut publ, _) = cl.connect(0, "pub", true, 0);
    for n in 1..=3 {
        let p = publish("m/a", b"one", QosPid::AtLeastOnce(pid(n)));
        cl.send(&publ, &p);
    }
    cl.send(&publ, &publish("m/b", &[b'x'; 100], QosPid::AtMostOnce));
    assert_eq!(cl.recv(&mut publ).len(), 3, "three PUBACKs");
    assert_eq!(payloads(&cl.recv(&mut sub)).len(), 4);
    assert_eq!(payloads(&cl.recv(&mut small)).len(), 3);
    cl.advance(Duration::from_millis(250));

    use ringmq::ops::metrics::DropCause;
    assert_eq!(total(&cl, |s| s.messages_in[1].get()), 3);
    assert_eq!(total(&cl, |s| s.messages_in[0].get()), 1);
    // sub: 3 at QoS 1 and 1 at QoS 0; small: 3 downgraded to QoS 0.
    assert_eq!(total(&cl, |s| s.messages_out[1].get()), 3);
    assert_eq!(total(&cl, |s| s.messages_out[0].get()), 4);
    let dropped = |c: DropCause| total(&cl, |s| s.dropped[c as usize].get());
    // away's queue holds 2 of the 3 QoS 1 messages; QoS 0 is not queued for it.
    assert_eq!(dropped(DropCause::QueueFull), 1);
    assert_eq!(dropped(DropCause::TooLarge), 1);
    assert_eq!(total(&cl, |s| s.sessions_online.get()), 3);
    assert_eq!(total(&cl, |s| s.sessions_offline.get()), 1);
    assert_eq!(total(&cl, |s| s.subscriptions.get()), 3);
    let anonymous = ringmq::ops::metrics::AuthMethod::Anonymous as usize;
    assert_eq!(total(&cl, |s| s.auth_successes[anonymous].get()), 4);

    // A protocol violation (a second CONNECT) is counted.
    cl.send(
        &publ,
        &Packet::Connect(Box::new(connect_packet("pub", ProtocolVersion::V5))),
    );
    assert_eq!(total(&cl, |s| s.protocol_errors.get()), 1);
}

/// A frame cut right after CONNECT (CONNECT and the first part of a PUBLISH in one read) is
/// kept while the session is claimed and completed by the next read, on the client id's own
/// shard and when the claim goes through another shard.
#[test]
fn frame_cut_after_connect_is_completed_by_the_next_read() {
    for (shards, id) in [(1, "cut-1"), (2, "cut-a"), (2, "cut-b"), (2, "cut-c")] {
        let mut cl = Cluster::new(shards);
        let (mut sub, _) = cl.connect(0, "cut-sub", true, 0);
        cl.subscribe(&mut sub, "cut/t", QoS::AtLeastOnce);
        let mut wire = bytes::BytesMut::new();
        let connect = Packet::Connect(Box::new(connect_packet(id, ProtocolVersion::V5)));
        encode(&connect, ProtocolVersion::V5, &mut wire).unwrap();
        let connect_len = wire.len();
        let payload = [0x5au8; 300];
        let p = Packet::Publish(Publish {
            dup: false,
            qos_pid: QosPid::AtLeastOnce(pid(9)),
            retain: false,
            topic: Str::from_static("cut/t"),
            properties: PublishProperties::default(),
            payload: Bytes::copy_from_slice(&payload),
        });
        encode(&p, ProtocolVersion::V5, &mut wire).unwrap();
        let mut c = cl.open(shards - 1);
        // CONNECT and 100 bytes of the PUBLISH, then the rest.
        let mut first = bytes::BytesMut::from(&wire[..connect_len + 100]);
        let _ = cl.input(
            c.shard,
            Input::Read {
                conn: c.index,
                bytes: &mut first,
            },
        );
        cl.pump();
        let mut rest = bytes::BytesMut::from(&wire[connect_len + 100..]);
        // What the runtime does with what handle_read leaves: continues it with the next read.
        first.extend_from_slice(&rest);
        rest = first;
        let _ = cl.input(
            c.shard,
            Input::Read {
                conn: c.index,
                bytes: &mut rest,
            },
        );
        cl.pump();
        assert!(rest.is_empty(), "{id}: everything handled");
        let got = cl.recv(&mut c);
        assert!(
            matches!(got.as_slice(), [Packet::ConnAck(_), Packet::PubAck(a)] if a.packet_id == pid(9)),
            "{id}: CONNACK then PUBACK, got {got:?}"
        );
        let got = cl.recv(&mut sub);
        assert_eq!(
            payloads(&got),
            vec![Bytes::copy_from_slice(&payload)],
            "{id}"
        );
    }
}

/// Every byte the core has written to `c` so far, undecoded.
fn raw_output(cl: &mut Cluster, c: &Client) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(conn) = cl.cores[c.shard].conn_mut(c.index) {
        let mut spare = bytes::BytesMut::new();
        while let Some(output) = conn.take_output(&mut spare) {
            match output {
                ringmq::proto::conn::Output::Frame(frame) => bytes.extend_from_slice(&frame),
                ringmq::proto::conn::Output::Buffer(buf) => bytes.extend_from_slice(&buf),
            }
        }
    }
    bytes
}

/// A CONNECT with protocol name `name` and level `level`, clean start, keep alive 60, client
/// id "x" (and an empty property block at level 5).
fn raw_connect(name: &[u8], level: u8) -> Vec<u8> {
    let mut body = vec![0, name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, 0x02, 0, 60]);
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(&[0, 1, b'x']);
    let mut frame = vec![0x10, body.len() as u8];
    frame.extend_from_slice(&body);
    frame
}

/// [MQTT-3.1.2-2] An unsupported protocol level is refused with a CONNACK in the format of the
/// level, then the connection is closed: an unknown level gets the MQTT 5 CONNACK 0x84 (5.0),
/// level 3 or 4 under the other protocol name the 3.1.1 return code 0x01 (3.1.1); levels 3
/// ("MQIsdp"), 4 and 5 ("MQTT") connect as before.
#[test]
fn unsupported_protocol_level_is_refused_in_the_format_of_its_level() {
    let v5_refusal: &[u8] = &[0x20, 0x03, 0x00, 0x84, 0x00];
    let v3_refusal: &[u8] = &[0x20, 0x02, 0x00, 0x01];
    let cases: [(&[u8], u8, &[u8], bool); 10] = [
        (b"MQTT", 6, v5_refusal, true),
        (b"MQTT", 7, v5_refusal, true),
        (b"MQTT", 255, v5_refusal, true),
        (b"MQTT", 0, v5_refusal, true),
        (b"MQTT", 2, v5_refusal, true),
        (b"MQIsdp", 5, v5_refusal, true),
        (b"MQTT", 3, v3_refusal, true),
        (b"MQIsdp", 4, v3_refusal, true),
        (b"MQIsdp", 3, &[0x20, 0x02, 0x00, 0x00], false),
        (b"MQTT", 4, &[0x20, 0x02, 0x00, 0x00], false),
    ];
    for (name, level, answer, closes) in cases {
        let what = format!("{} level {level}", String::from_utf8_lossy(name));
        let mut cl = Cluster::new(1);
        let c = cl.open(0);
        cl.send_bytes(&c, &raw_connect(name, level));
        assert_eq!(raw_output(&mut cl, &c), answer, "{what}");
        assert_eq!(cl.is_closing(&c), closes, "{what}");
    }
    // Level 5 connects with the MQTT 5 CONNACK (success, with the server's properties).
    let mut cl = Cluster::new(1);
    let c = cl.open(0);
    cl.send_bytes(&c, &raw_connect(b"MQTT", 5));
    assert_eq!(raw_output(&mut cl, &c)[..4], [0x20, 0x16, 0x00, 0x00]);
    assert!(!cl.is_closing(&c));
}

/// CONNECT with `id` and a Maximum Packet Size of `max` (absent when `None`).
fn connect_with_max(id: &str, max: Option<u32>) -> Packet {
    let mut connect = connect_packet(id, ProtocolVersion::V5);
    connect.properties.maximum_packet_size = max.and_then(std::num::NonZeroU32::new);
    Packet::Connect(Box::new(connect))
}

/// [MQTT-3.2.2-19] A refusing CONNACK leaves out its Reason String when it would exceed the
/// Maximum Packet Size of the CONNECT it answers; with room, the Reason String is sent.
#[test]
fn connack_refusal_reason_string_fits_the_clients_maximum_packet_size() {
    let limits = ringmq::config::Limits {
        max_client_id_len: 23,
        ..Default::default()
    };
    for (max, reason) in [
        (None, true),
        (Some(64), true),
        (Some(16), false),
        (Some(5), false),
    ] {
        let mut cl = Cluster::with_limits(1, limits.clone());
        let mut c = cl.open(0);
        cl.send(&c, &connect_with_max(&"x".repeat(24), max));
        let bytes = raw_output(&mut cl, &c);
        if let Some(max) = max {
            assert!(bytes.len() <= max as usize, "{max}: {bytes:02x?}");
        }
        if !reason {
            // The bare refusal: flags, reason code 0x85, no properties.
            assert_eq!(bytes, [0x20, 0x03, 0x00, 0x85, 0x00], "{max:?}");
        }
        c.rx.extend_from_slice(&bytes);
        let Packet::ConnAck(ack) = cl.recv_one(&mut c) else {
            panic!("{max:?}: not a CONNACK: {bytes:02x?}");
        };
        assert_eq!(ack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        assert_eq!(
            ack.properties.reason_string.as_ref().map(Str::as_str),
            reason.then_some("client identifier too long"),
            "{max:?}"
        );
        assert!(cl.is_closing(&c));
    }
}

/// [MQTT-3.4.2-2] A PUBACK refusing a publish (0x87 for a `$SYS` topic) leaves out its Reason
/// String when it would exceed the client's Maximum Packet Size, and keeps it otherwise.
#[test]
fn puback_reason_string_fits_the_clients_maximum_packet_size() {
    for (max, reason) in [
        (None, true),
        (Some(47), true),
        (Some(46), false),
        (Some(32), false),
    ] {
        let mut cl = Cluster::new(1);
        let mut c = cl.open(0);
        cl.send(&c, &connect_with_max("small", max));
        assert!(
            matches!(cl.recv_one(&mut c), Packet::ConnAck(a) if a.reason_code == ReasonCode::SUCCESS)
        );
        cl.send(&c, &publish("$SYS/x", b"1", QosPid::AtLeastOnce(pid(9))));
        let bytes = raw_output(&mut cl, &c);
        if let Some(max) = max {
            assert!(bytes.len() <= max as usize, "{max}: {bytes:02x?}");
        }
        if !reason {
            // The shortest form: packet id 9, reason code, no Property Length (3.4.2.1).
            assert_eq!(bytes, [0x40, 0x03, 0x00, 0x09, 0x87], "{max:?}");
        }
        c.rx.extend_from_slice(&bytes);
        let Packet::PubAck(ack) = cl.recv_one(&mut c) else {
            panic!("{max:?}: not a PUBACK: {bytes:02x?}");
        };
        assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED);
        assert_eq!(
            ack.properties.reason_string.as_ref().map(Str::as_str),
            reason.then_some("clients may not publish to $SYS topics"),
            "{max:?}"
        );
        assert!(!cl.is_closing(&c), "a refused publish keeps the connection");
    }
}

/// [MQTT-3.14.2-3] A DISCONNECT for a protocol error leaves out its Reason String when it
/// would exceed the client's Maximum Packet Size.
#[test]
fn disconnect_reason_string_fits_the_clients_maximum_packet_size() {
    for (max, reason) in [(None, true), (Some(32), false)] {
        let mut cl = Cluster::new(1);
        let mut c = cl.open(0);
        cl.send(&c, &connect_with_max("twice", max));
        assert!(matches!(cl.recv_one(&mut c), Packet::ConnAck(_)));
        cl.send(&c, &connect_with_max("twice", max));
        let bytes = raw_output(&mut cl, &c);
        if !reason {
            assert_eq!(bytes, [0xE0, 0x01, 0x82], "{max:?}");
        }
        c.rx.extend_from_slice(&bytes);
        let Packet::Disconnect(d) = cl.recv_one(&mut c) else {
            panic!("{max:?}: not a DISCONNECT: {bytes:02x?}");
        };
        assert_eq!(d.reason_code, ReasonCode::PROTOCOL_ERROR);
        assert_eq!(d.properties.reason_string.is_some(), reason, "{max:?}");
        assert!(cl.is_closing(&c));
    }
}

/// Issue 12 ("packets that never come"): a SUBSCRIBE and a PUBLISH to a filter it matches, in
/// one read (a client that publishes without waiting for its SUBACK, or two writes the broker
/// reads together). The subscription is in force from its SUBACK on, and the SUBACK is written
/// before the PUBREC, so the message must reach the subscriber — here the publisher itself.
/// The shard's own interest in the filter used to be queued in its local inbox and applied
/// only after every packet of the read was handled: the PUBLISH was routed past it and lost,
/// while the publisher saw PUBREC and PUBCOMP. On one shard and on two (either shard).
#[test]
fn subscribe_then_publish_in_one_read_delivers() {
    for (shards, shard) in [(1, 0), (2, 0), (2, 1)] {
        let mut cl = Cluster::new(shards);
        let id = format!("sub-pub-{shards}-{shard}");
        let mut c = cl.open(shard);
        cl.connect_on(&mut c, &id);
        let mut wire = bytes::BytesMut::new();
        let sub = Subscribe {
            packet_id: pid(1),
            subscription_id: None,
            user_properties: UserProperties::new(),
            filters: vec![SubscribeFilter {
                filter: Str::from_static("one/read"),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    ..Default::default()
                },
            }],
        };
        encode(&Packet::Subscribe(sub), ProtocolVersion::V5, &mut wire).unwrap();
        let p = publish("one/read", b"m", QosPid::ExactlyOnce(pid(2)));
        encode(&p, ProtocolVersion::V5, &mut wire).unwrap();
        cl.send_bytes(&c, &wire);
        let got = cl.recv(&mut c);
        assert!(
            matches!(got.first(), Some(Packet::SubAck(a)) if a.packet_id == pid(1)),
            "{id}: SUBACK first, got {got:?}"
        );
        assert!(
            got.iter()
                .any(|p| matches!(p, Packet::PubRec(r) if r.packet_id == pid(2))),
            "{id}: PUBREC, got {got:?}"
        );
        assert_eq!(
            payloads(&got),
            vec![Bytes::from_static(b"m")],
            "{id}: {got:?}"
        );
        // The ordinary path is unchanged: another client of the shard subscribes and gets the
        // next message.
        let mut other = cl.open(shard);
        cl.connect_on(&mut other, &format!("{id}-other"));
        cl.subscribe(&mut other, "one/read", QoS::ExactlyOnce);
        cl.send(&c, &publish("one/read", b"n", QosPid::AtMostOnce));
        assert_eq!(
            payloads(&cl.recv(&mut other)),
            vec![Bytes::from_static(b"n")]
        );
    }
}

/// A Maximum Packet Size too small for even a bare success CONNACK: the server must not send
/// it [MQTT-3.1.2-25], and a client left without CONNACK would wait for ever, so the
/// connection is closed.
#[test]
fn connack_that_cannot_fit_closes_the_connection() {
    let mut cl = Cluster::new(1);
    let mut c = cl.open(0);
    let mut connect = connect_packet("tiny", ProtocolVersion::V5);
    connect.properties.maximum_packet_size = std::num::NonZeroU32::new(8);
    cl.send(&c, &Packet::Connect(Box::new(connect)));
    assert!(
        cl.recv(&mut c).is_empty(),
        "nothing larger than 8 bytes is sent"
    );
    assert!(cl.is_closing(&c));
}

/// [MQTT-3.3.4-9] with [MQTT-4.4.0-1]: a session resumed with a smaller Receive Maximum gets its
/// unacknowledged messages resent (DUP) only as the new window allows, in order, the rest as
/// acknowledgements free the window. Found by the `cores` fuzz target: every in-flight PUBLISH
/// was resent at once.
#[test]
fn resume_resends_within_the_new_receive_maximum() {
    let mut cl = Cluster::new(2);
    let (mut sub, _) = cl.connect(1, "small", false, 600);
    cl.subscribe(&mut sub, "rm", QoS::AtLeastOnce);
    let (publ, _) = cl.connect(0, "p", true, 0);
    for i in 1..=6u16 {
        cl.send(&publ, &publish("rm", b"m", QosPid::AtLeastOnce(pid(i))));
    }
    let first: Vec<_> = cl
        .recv(&mut sub)
        .into_iter()
        .filter(|p| matches!(p, Packet::Publish(_)))
        .collect();
    assert_eq!(first.len(), 6, "six in flight, none acknowledged");
    cl.drop_conn(&sub);

    let mut again = cl.open(1);
    let mut connect = connect_packet("small", ProtocolVersion::V5);
    connect.clean_start = false;
    connect.properties.session_expiry_secs = Some(600);
    connect.properties.receive_maximum = NonZeroU16::new(2);
    let ack = cl.connect_with(&mut again, connect);
    assert!(ack.session_present);
    let ids = |packets: Vec<Packet>| -> Vec<u16> {
        packets
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => {
                    assert!(p.dup, "a resend carries DUP");
                    p.qos_pid.packet_id().map(NonZeroU16::get)
                }
                _ => None,
            })
            .collect()
    };
    let mut outstanding = ids(cl.recv(&mut again));
    assert_eq!(
        outstanding.len(),
        2,
        "no more than the Receive Maximum: {outstanding:?}"
    );
    let mut seen = outstanding.clone();
    while let Some(front) = outstanding.first().copied() {
        outstanding.remove(0);
        let id = NonZeroU16::new(front).unwrap();
        cl.send(
            &again,
            &Packet::PubAck(PubResp::new(id, ReasonCode::SUCCESS)),
        );
        let next = ids(cl.recv(&mut again));
        assert!(
            next.len() <= 1,
            "one acknowledgement frees one slot: {next:?}"
        );
        assert!(outstanding.len() + next.len() <= 2);
        seen.extend(&next);
        outstanding.extend(next);
    }
    let original: Vec<u16> = first
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => p.qos_pid.packet_id().map(NonZeroU16::get),
            _ => None,
        })
        .collect();
    assert_eq!(
        seen, original,
        "every message resent once, in order, under its packet id"
    );
}
