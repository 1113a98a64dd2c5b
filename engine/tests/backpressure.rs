//! Backpressure and liveness of the shard cores under open-loop floods (issue 12), on the fake
//! clock: no sockets, no sleeps, deterministic.
//!
//! The runtime around a core reads a connection only while `conn_throttled` says no, hands
//! each core `MESH_PER_INPUT` data messages before each input, and moves mesh messages with
//! `flush_mesh`. These tests play that runtime by hand and check the properties the freeze of
//! issue 12 broke: a publisher feeding a shard that cannot keep up is slowed and nobody else
//! is; a new CONNECT and a PINGREQ are answered whatever floods; interest updates overtake a
//! backlog of deliveries; every connection's input is eventually read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::*;
use ringmq::config::Limits;
use ringmq::proto::{Input, MESH_PER_INPUT};
use ringmq_codec::*;

const CAPACITY: usize = 64;

fn limits() -> Limits {
    Limits {
        shard_queue_capacity: CAPACITY,
        ..Limits::default()
    }
}

/// `n` QoS 0 PUBLISH packets to `topic`, encoded back to back (one read's worth).
fn burst(topic: &'static str, n: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for _ in 0..n {
        encode(
            &publish(topic, &[b'x'; 64], QosPid::AtMostOnce),
            ProtocolVersion::V5,
            &mut buf,
        )
        .unwrap();
    }
    buf
}

/// What the runtime does with a piece of client input: the data lane in a bounded batch (the
/// priority lane in full), then the bytes, then the outboxes.
fn input(cl: &mut Cluster, c: &Client, mut bytes: BytesMut) {
    let _ = cl.input(
        c.shard,
        Input::Read {
            conn: c.index,
            bytes: &mut bytes,
        },
    );
    assert!(bytes.is_empty(), "whole packets only");
}

fn ping(cl: &mut Cluster, c: &mut Client) -> bool {
    let mut buf = BytesMut::new();
    encode(&Packet::PingReq, c.version, &mut buf).unwrap();
    input(cl, c, buf);
    cl.recv(c).iter().any(|p| matches!(p, Packet::PingResp))
}

#[test]
fn only_the_publisher_feeding_a_full_shard_is_throttled() {
    let mut cl = Cluster::with_limits(2, limits());
    let (mut sub, _) = cl.connect(1, "sub", true, 0);
    cl.subscribe(&mut sub, "flood/a", QoS::AtMostOnce);
    let (publ, _) = cl.connect(0, "pub", true, 0);
    let (mut idle, _) = cl.connect(0, "idle", true, 0);
    let (other, _) = cl.connect(0, "other", true, 0);

    // Shard 1 takes nothing meanwhile: its inbox fills, then shard 0's outbox grows past the
    // bound, within one read of the publisher.
    input(&mut cl, &publ, burst("flood/a", 3 * CAPACITY));
    let now = cl.now;
    assert!(cl.cores[0].outbox_len(1) > CAPACITY);
    assert!(
        cl.cores[0].conn_throttled(publ.index, now),
        "the cause is throttled"
    );
    assert!(!cl.cores[0].conn_throttled(idle.index, now));
    assert!(!cl.cores[0].conn_throttled(other.index, now));
    assert_eq!(cl.cores[0].throttled_conns(), 1);

    // Everyone else is still served: a PINGREQ, a publish to a topic nobody else holds, and a
    // new connection's CONNECT.
    assert!(
        ping(&mut cl, &mut idle),
        "PINGRESP while another connection floods"
    );
    input(&mut cl, &other, burst("elsewhere", 1));
    assert!(!cl.cores[0].conn_throttled(other.index, now));
    let mut fresh = cl.open(0);
    let mut buf = BytesMut::new();
    let connect = connect_packet("fresh", ProtocolVersion::V5);
    encode(
        &Packet::Connect(Box::new(connect)),
        ProtocolVersion::V5,
        &mut buf,
    )
    .unwrap();
    input(&mut cl, &fresh, buf);
    // The claim of a client id goes through the mesh (its directory may be on either shard).
    cl.pump();
    let answered = cl.recv(&mut fresh);
    assert!(
        matches!(answered.first(), Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::SUCCESS),
        "CONNACK while the mesh is congested: {answered:?}"
    );

    // Keep alive does not count the time the server left the publisher unread.
    cl.pump();
    cl.advance(Duration::from_secs(200));
    assert!(!cl.is_closing(&publ), "throttled is not idle");
    let now = cl.now;
    assert!(
        !cl.cores[0].conn_throttled(publ.index, now),
        "drained: read again"
    );
    let got = cl.recv(&mut sub);
    let delivered = got
        .iter()
        .filter(|p| matches!(p, Packet::Publish(p) if p.topic.as_str() == "flood/a"))
        .count();
    assert_eq!(
        delivered,
        3 * CAPACITY,
        "every message of the burst delivered"
    );
}

#[test]
fn interest_overtakes_a_backlog_of_deliveries() {
    let backlog = 3 * MESH_PER_INPUT;
    let limits = Limits {
        shard_queue_capacity: backlog,
        ..Limits::default()
    };
    let mut cl = Cluster::with_limits(2, limits);
    let (mut far, _) = cl.connect(1, "far", true, 0);
    cl.subscribe(&mut far, "busy", QoS::AtMostOnce);
    let (publ, _) = cl.connect(0, "pub", true, 0);
    let (mut late, _) = cl.connect(0, "late", true, 0);
    let (p1, _) = cl.connect(1, "p1", true, 0);
    // Shard 1's data lane fills with deliveries it has not handled yet.
    input(&mut cl, &publ, burst("busy", backlog));
    assert_eq!(cl.mesh.data_len(1), backlog);

    // A client on shard 0 subscribes and gets its SUBACK; then a publisher on shard 1 — its
    // input comes after a bounded batch of the backlog only — publishes to that topic.
    let mut buf = BytesMut::new();
    let s = subscribe_packet(pid(1), "quiet", QoS::AtMostOnce);
    encode(&s, ProtocolVersion::V5, &mut buf).unwrap();
    input(&mut cl, &late, buf);
    assert!(matches!(
        cl.recv(&mut late).first(),
        Some(Packet::SubAck(_))
    ));

    input(&mut cl, &p1, burst("quiet", 1));
    assert!(
        cl.mesh.data_len(1) > 0,
        "the backlog is not drained before the input (bounded batch)"
    );
    cl.pump();
    let got = cl.recv(&mut late);
    assert_eq!(got.len(), 1, "routed with the interest applied: {got:?}");
}

#[test]
fn a_data_batch_before_input_is_bounded() {
    let limits = Limits {
        shard_queue_capacity: 4 * MESH_PER_INPUT,
        ..Limits::default()
    };
    let mut cl = Cluster::with_limits(2, limits);
    let (mut far, _) = cl.connect(1, "far", true, 0);
    cl.subscribe(&mut far, "t", QoS::AtMostOnce);
    let (publ, _) = cl.connect(0, "pub", true, 0);
    input(&mut cl, &publ, burst("t", 3 * MESH_PER_INPUT));
    assert_eq!(cl.mesh.data_len(1), 3 * MESH_PER_INPUT);
    let _ = cl.input(
        1,
        Input::Inbox {
            max: MESH_PER_INPUT,
        },
    );
    assert_eq!(cl.mesh.data_len(1), 2 * MESH_PER_INPUT);
}

/// Several cores under an open-loop flood: publishers always have more to send (a fresh burst
/// each time they are read), subscribers read fast, slowly or not at all, a probe connects and
/// pings on every shard now and then. The simulated runtime reads every connection that is not
/// throttled once per round, in random order, and moves the mesh. Checked every round: a
/// probe's CONNECT and PINGREQ are answered within a few rounds, no connection stays throttled
/// for long, and outboxes stay bounded.
#[test]
fn open_loop_flood_keeps_every_shard_live() {
    for seed in [1u64, 7, 42, 1234] {
        flood_round(seed);
    }
}

fn flood_round(seed: u64) {
    const SHARDS: usize = 3;
    const PUBLISHERS: usize = 9;
    const ROUNDS: usize = 300;
    const BURST: usize = 96;
    const SLOW_BATCH: usize = 32;
    /// A claim crosses the mesh twice (to the client id's directory shard and back), each
    /// time behind at most a full inbox and a full outbox (the bound plus one burst per
    /// publisher) drained at the slow shard's batch: the bound on a CONNACK, plus slack.
    const PROBE_ROUNDS: usize = 2 * (2 * CAPACITY + PUBLISHERS * BURST).div_ceil(SLOW_BATCH) + 4;
    /// A publisher throttled this many rounds in a row fails the test: input is read
    /// eventually, whoever else feeds the same slow shard.
    const MAX_UNREAD_ROUNDS: usize = 100;
    let mut rng = Rng::new(seed);
    let mut cl = Cluster::with_limits(SHARDS, limits());
    let topics: [&'static str; PUBLISHERS] = [
        "f/0", "f/1", "f/2", "f/3", "f/4", "f/5", "f/6", "f/7", "f/8",
    ];
    // Subscribers: one per topic, spread over the shards; every third reads nothing (its QoS 0
    // backlog is bounded by max_queued_bytes and then dropped), every other one is slow.
    let mut subs = Vec::new();
    for (i, topic) in topics.iter().enumerate() {
        let shard = i % SHARDS;
        let (mut s, _) = cl.connect(shard, &format!("s{i}"), true, 0);
        cl.subscribe(&mut s, topic, QoS::AtMostOnce);
        subs.push((s, i % 3));
    }
    let mut pubs = Vec::new();
    // Publishers on shards 1.. only: shard 0 reads no flood input of its own, so it drains
    // its inbox only in its (slow) batches and the mesh towards it congests.
    for i in 0..PUBLISHERS {
        let shard = 1 + rng.below(SHARDS as u64 - 1) as usize;
        let (p, _) = cl.connect(shard, &format!("p{i}"), true, 0);
        pubs.push((p, i, 0usize));
    }
    let mut probes = 0;
    let mut throttled_reads = 0;
    let mut probe: Option<(Client, usize)> = None;
    let mut probe_slot: Option<(Client, usize)> = None;
    for round in 0..ROUNDS {
        // The publishers not throttled are read once, in random order.
        let mut order: Vec<usize> = (0..PUBLISHERS).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for &k in &order {
            let (p, topic, unread) = &mut pubs[k];
            let now = cl.now;
            if cl.cores[p.shard].conn_throttled(p.index, now) {
                throttled_reads += 1;
                *unread += 1;
                assert!(
                    *unread < MAX_UNREAD_ROUNDS,
                    "seed {seed}: publisher {k} left unread for {MAX_UNREAD_ROUNDS} rounds"
                );
                continue;
            }
            *unread = 0;
            let n = 1 + rng.below(BURST as u64) as usize;
            let p = p.handle();
            input(&mut cl, &p, burst(topics[*topic], n));
        }
        // Each shard handles a bounded batch of its inbox (its inbox task), then everyone
        // flushes. Shard 0 is slow (a quarter of the others' batch): its inbox fills and
        // the publishers feeding it must be throttled.
        for shard in 0..SHARDS {
            let batch = if shard == 0 {
                SLOW_BATCH
            } else {
                4 * SLOW_BATCH
            };
            let _ = cl.input(shard, Input::Inbox { max: batch });
        }
        for shard in 0..SHARDS {
            for to in 0..SHARDS {
                assert!(
                    cl.cores[shard].outbox_len(to) <= CAPACITY + PUBLISHERS * BURST,
                    "seed {seed}: outbox {shard} -> {to} beyond its bound"
                );
            }
        }
        // Fast subscribers read everything, slow ones now and then, the rest never.
        for (s, kind) in &mut subs {
            if *kind == 1 || (*kind == 2 && round % 10 == 0) {
                cl.recv(s);
            }
        }
        // A probe: a new client on a random shard connects while the flood goes on; its
        // CONNACK must come within a few rounds of the simulated runtime (the claim crosses
        // the mesh, behind deliveries), then its PINGREQ is answered at once.
        if let Some((mut probe, since)) = probe.take() {
            let connack = cl
                .recv(&mut probe)
                .into_iter()
                .find(|p| matches!(p, Packet::ConnAck(_)));
            match connack {
                Some(Packet::ConnAck(a)) => {
                    assert_eq!(a.reason_code, ReasonCode::SUCCESS, "seed {seed}");
                    assert!(ping(&mut cl, &mut probe), "seed {seed}: no PINGRESP");
                    let _ = cl.input(probe.shard, Input::Closed(probe.index));
                    let _ = cl.input(probe.shard, Input::Release(probe.index));
                    probes += 1;
                }
                _ => {
                    if round - since >= PROBE_ROUNDS {
                        for sh in 0..SHARDS {
                            eprintln!(
                                "shard {sh}: inbox {} outboxes {:?} throttled {}",
                                cl.mesh.data_len(sh),
                                (0..SHARDS)
                                    .map(|t| cl.cores[sh].outbox_len(t))
                                    .collect::<Vec<_>>(),
                                cl.cores[sh].throttled_conns()
                            );
                        }
                        eprintln!(
                            "probe on shard {} state {:?} pending {}",
                            probe.shard,
                            cl.cores[probe.shard]
                                .conn(probe.index)
                                .map(|c| format!("{:?}", c.state)),
                            cl.cores[probe.shard]
                                .conn(probe.index)
                                .map_or(0, |c| c.pending_bytes())
                        );
                    }
                    assert!(
                        round - since < PROBE_ROUNDS,
                        "seed {seed} round {round}: no CONNACK within {PROBE_ROUNDS} rounds"
                    );
                    probe_slot = Some((probe, since));
                }
            }
        }
        probe = probe_slot.take();
        if probe.is_none() && round % 10 == 0 && round + PROBE_ROUNDS < ROUNDS {
            let shard = rng.below(SHARDS as u64) as usize;
            let c = cl.open(shard);
            let mut buf = BytesMut::new();
            let connect = connect_packet(&format!("probe{round}"), ProtocolVersion::V5);
            encode(
                &Packet::Connect(Box::new(connect)),
                ProtocolVersion::V5,
                &mut buf,
            )
            .unwrap();
            input(&mut cl, &c, buf);
            probe = Some((c, round));
        }
        cl.now += Duration::from_millis(1);
    }
    assert!(probes >= 10, "seed {seed}: only {probes} probes answered");
    assert!(
        throttled_reads > 0,
        "seed {seed}: the flood never congested the mesh (the test would prove nothing)"
    );
    // The flood ends: everything drains, nobody stays throttled, every fast subscriber got
    // every message its publisher sent (QoS 0 is dropped only for the slow and the stalled).
    cl.pump();
    for (p, _, _) in &pubs {
        let now = cl.now;
        assert!(!cl.cores[p.shard].conn_throttled(p.index, now));
    }
}

/// A flood of retained publishes fills the priority lane (every shard keeps a replica): the
/// publisher is throttled like any other, and every retained message still reaches every
/// replica once the lane drains.
#[test]
fn a_retained_flood_is_throttled_too() {
    let mut cl = Cluster::with_limits(2, limits());
    let (publ, _) = cl.connect(0, "retainer", true, 0);
    let mut buf = BytesMut::new();
    let n = 3 * CAPACITY;
    for i in 0..n {
        let p = Packet::Publish(Publish {
            dup: false,
            qos_pid: QosPid::AtMostOnce,
            retain: true,
            topic: Str::copy_from(&format!("r/{i}")).unwrap(),
            properties: PublishProperties::default(),
            payload: bytes::Bytes::from_static(b"kept"),
        });
        encode(&p, ProtocolVersion::V5, &mut buf).unwrap();
    }
    input(&mut cl, &publ, buf);
    let now = cl.now;
    assert!(
        cl.cores[0].outbox_len(1) > CAPACITY,
        "the replica's lane is full"
    );
    assert!(cl.cores[0].conn_throttled(publ.index, now));
    cl.pump();
    let now = cl.now;
    assert!(!cl.cores[0].conn_throttled(publ.index, now));
    let (mut late, _) = cl.connect(1, "late", true, 0);
    cl.subscribe(&mut late, "r/#", QoS::AtMostOnce);
    let got = cl.recv(&mut late);
    let retained = got
        .iter()
        .filter(|p| matches!(p, Packet::Publish(p) if p.retain))
        .count();
    assert_eq!(retained, n, "every retained message in shard 1's replica");
}

/// Two publishers on shard 0 feed a destination that takes less than they send. The
/// simulated runtime checks them in the same order every round, as the real one may (their
/// 1 ms retry timers fire in a fixed order). When an outbox released each connection as soon
/// as it dipped under the bound, the first publisher refilled it every time and the second
/// was never read again (the two-shard liveness flood saw publishers stand still for 5 s);
/// a drained outbox now releases everyone throttled on it at once.
#[test]
fn throttled_publishers_take_turns() {
    const PER_READ: usize = 48;
    const TAKEN_PER_ROUND: usize = 40;
    let mut cl = Cluster::with_limits(2, limits());
    let (mut sub, _) = cl.connect(1, "sub", true, 0);
    cl.subscribe(&mut sub, "turns", QoS::AtMostOnce);
    let (first, _) = cl.connect(0, "first", true, 0);
    let (second, _) = cl.connect(0, "second", true, 0);
    let mut reads = [0usize; 2];
    for _ in 0..400 {
        for (i, p) in [&first, &second].into_iter().enumerate() {
            let now = cl.now;
            if !cl.cores[0].conn_throttled(p.index, now) {
                input(&mut cl, p, burst("turns", PER_READ));
                reads[i] += 1;
            }
        }
        let _ = cl.input(
            1,
            Input::Inbox {
                max: TAKEN_PER_ROUND,
            },
        );
        let _ = cl.input(0, Input::Inbox { max: 0 });
        cl.recv(&mut sub);
    }
    assert!(
        reads[0] > 20 && reads[1] > 20,
        "both publishers are read while the destination is congested: {reads:?}"
    );
    let (low, high) = (reads[0].min(reads[1]), reads[0].max(reads[1]));
    assert!(high <= 2 * low + 2, "neither starves the other: {reads:?}");
}
