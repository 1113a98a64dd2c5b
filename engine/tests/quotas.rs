//! Quotas in the sans-IO core: connections in all and per IP (counted across shards),
//! connection rate per IP, publish rate and bandwidth per connection. A fake clock, no
//! sockets: every refusal and every token is deterministic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use ringmq::config::Limits;
use ringmq::ops::metrics::Quota;
use ringmq_codec::*;

fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = Limits::default();
    f(&mut l);
    l
}

fn rejections(cl: &Cluster, quota: Quota) -> u64 {
    cl.cores
        .iter()
        .map(|c| c.metrics().quota_rejections[quota as usize].get())
        .sum()
}

fn protocol_errors(cl: &Cluster) -> u64 {
    cl.cores
        .iter()
        .map(|c| c.metrics().protocol_errors.get())
        .sum()
}

fn expect_disconnect(cl: &mut Cluster, c: &mut Client, reason: ReasonCode) {
    let packets = cl.recv(c);
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason_code == reason),
        "expected DISCONNECT {reason:?}, got {packets:?}"
    );
    assert!(cl.is_closing(c));
}

/// Per-IP connections are counted over all shards; the next one gets CONNACK 0x97 (3.1.1:
/// 0x03), other IPs are not affected, and a closed connection gives its count back.
#[test]
fn connections_per_ip_across_shards() {
    let mut cl = Cluster::with_limits(2, limits(|l| l.max_connections_per_ip = 2));
    let mut a = cl.open_from(0, "10.0.0.1:1000");
    assert_eq!(cl.connect_on(&mut a, "a").reason_code, ReasonCode::SUCCESS);
    let mut b = cl.open_from(1, "10.0.0.1:1001");
    assert_eq!(cl.connect_on(&mut b, "b").reason_code, ReasonCode::SUCCESS);

    let mut over = cl.open_from(0, "10.0.0.1:1002");
    let ack = cl.connect_on(&mut over, "c");
    assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED);
    assert!(ack.properties.reason_string.is_some());
    assert!(cl.is_closing(&over));
    let mut over3 = cl.open_from(1, "10.0.0.1:1003");
    over3.version = ProtocolVersion::V3_1_1;
    let ack = cl.connect_on(&mut over3, "c3");
    assert_eq!(ack.reason_code.to_v3_connack(), 0x03);
    // IPv4-mapped IPv6 is the same client IP.
    let mut mapped = cl.open_from(1, "[::ffff:10.0.0.1]:1004");
    let ack = cl.connect_on(&mut mapped, "c4");
    assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED);
    assert_eq!(rejections(&cl, Quota::ConnectionsPerIp), 3);
    assert_eq!(protocol_errors(&cl), 0);

    let mut other = cl.open_from(0, "10.0.0.2:1000");
    assert_eq!(
        cl.connect_on(&mut other, "d").reason_code,
        ReasonCode::SUCCESS
    );
    // Refused connections held no count: releasing them frees nothing, and one open
    // connection closing lets the IP connect again.
    for c in [&over, &over3, &mapped] {
        cl.drop_conn(c);
    }
    let mut again = cl.open_from(1, "10.0.0.1:1005");
    assert_eq!(
        cl.connect_on(&mut again, "e").reason_code,
        ReasonCode::QUOTA_EXCEEDED
    );
    cl.drop_conn(&again);
    cl.drop_conn(&a);
    let mut again = cl.open_from(1, "10.0.0.1:1006");
    assert_eq!(
        cl.connect_on(&mut again, "f").reason_code,
        ReasonCode::SUCCESS
    );
}

/// `max_connections` is one count over all shards (not a per-shard share): two connections
/// on shard 0 fill a limit of 2 on a 2-shard server, and shard 1 refuses with 0x97.
#[test]
fn max_connections_is_global_and_refused_with_connack() {
    let mut cl = Cluster::with_limits(2, limits(|l| l.max_connections = 2));
    let (a, _) = cl.connect(0, "a", true, 0);
    let (_b, _) = cl.connect(0, "b", true, 0);
    let mut c = cl.open_from(1, "10.0.0.9:1");
    let ack = cl.connect_on(&mut c, "c");
    assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED);
    assert_eq!(rejections(&cl, Quota::Connections), 1);
    cl.drop_conn(&c);
    cl.drop_conn(&a);
    let (_c, ack) = cl.connect(1, "c", true, 0);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
}

/// Refused connections are kept open only while `max_pending_refusals` lasts; beyond it they
/// are closed at accept (still counted), and a released refusal frees its slot.
#[test]
fn pending_refusals_are_bounded() {
    let mut cl = Cluster::with_limits(
        1,
        limits(|l| {
            l.max_connections_per_ip = 1;
            l.max_pending_refusals = 2;
        }),
    );
    let _ok = cl.open_from(0, "10.0.0.1:1");
    let r1 = cl.open_from(0, "10.0.0.1:2");
    let r2 = cl.open_from(0, "10.0.0.1:3");
    assert!(cl.try_open_from(0, "10.0.0.1:4").is_none());
    assert!(cl.try_open_from(0, "10.0.0.1:5").is_none());
    assert_eq!(rejections(&cl, Quota::ConnectionsPerIp), 4);
    assert_eq!(cl.cores[0].counts().0, 3);
    cl.drop_conn(&r1);
    let mut r3 = cl.open_from(0, "10.0.0.1:6");
    assert_eq!(
        cl.connect_on(&mut r3, "x").reason_code,
        ReasonCode::QUOTA_EXCEEDED
    );
    // A refused connection that never sends CONNECT is closed at the connect timeout.
    cl.advance(Duration::from_secs(11));
    assert!(cl.is_closing(&r3) && cl.is_closing(&r2));

    // With no slots, over-quota connections are simply closed.
    let mut cl = Cluster::with_limits(
        1,
        limits(|l| {
            l.max_connections = 1;
            l.max_pending_refusals = 0;
        }),
    );
    let _ok = cl.open_from(0, "10.0.0.1:1");
    assert!(cl.try_open_from(0, "10.0.0.2:1").is_none());
    assert_eq!(rejections(&cl, Quota::Connections), 1);
}

/// Connection rate per IP: a burst, then one per 1/rate seconds; 0x9F (Connection rate
/// exceeded) beyond it. Refused attempts do not use up tokens, and other IPs are unaffected.
#[test]
fn connection_rate_per_ip() {
    let mut cl = Cluster::with_limits(
        2,
        limits(|l| {
            l.max_connection_rate_per_ip = 2;
            l.connection_rate_burst_per_ip = 3;
        }),
    );
    for i in 0..3 {
        let mut c = cl.open_from(i % 2, &format!("10.0.0.1:{}", 100 + i));
        let ack = cl.connect_on(&mut c, &format!("ok{i}"));
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        // Closing does not give a token back: the rate counts connections made.
        cl.drop_conn(&c);
    }
    for i in 0..4 {
        let mut c = cl.open_from(i % 2, &format!("10.0.0.1:{}", 200 + i));
        let ack = cl.connect_on(&mut c, "over");
        assert_eq!(ack.reason_code, ReasonCode::CONNECTION_RATE_EXCEEDED);
        cl.drop_conn(&c);
    }
    assert_eq!(rejections(&cl, Quota::ConnectionRate), 4);
    let mut other = cl.open_from(1, "10.0.0.2:1");
    assert_eq!(
        cl.connect_on(&mut other, "other").reason_code,
        ReasonCode::SUCCESS
    );
    // 2/s: one token every 500 ms.
    cl.advance(Duration::from_millis(500));
    let mut c = cl.open_from(0, "10.0.0.1:300");
    assert_eq!(
        cl.connect_on(&mut c, "later").reason_code,
        ReasonCode::SUCCESS
    );
    let mut c = cl.open_from(0, "10.0.0.1:301");
    assert_eq!(
        cl.connect_on(&mut c, "later2").reason_code,
        ReasonCode::CONNECTION_RATE_EXCEEDED
    );
}

fn will_connect(id: &str, version: ProtocolVersion) -> Packet {
    let mut c = connect_packet(id, version);
    c.will = Some(Will {
        qos: QoS::AtMostOnce,
        retain: false,
        topic: Str::from_static("wills"),
        payload: Bytes::from_static(b"gone"),
        properties: Default::default(),
    });
    Packet::Connect(Box::new(c))
}

fn payloads(packets: &[Packet]) -> Vec<Bytes> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.payload.clone()),
            _ => None,
        })
        .collect()
}

/// Publish rate: the burst passes, the next PUBLISH gets DISCONNECT 0x96 and is not routed,
/// and the will is published (a server-side close with a reason).
#[test]
fn publish_rate_disconnects_with_0x96_and_publishes_the_will() {
    let mut cl = Cluster::with_limits(2, limits(|l| l.max_publish_rate = 5));
    let (mut sub, _) = cl.connect(1, "sub", true, 0);
    cl.subscribe(&mut sub, "#", QoS::AtMostOnce);
    let mut publ = cl.open(0);
    cl.send(&publ, &will_connect("pub", ProtocolVersion::V5));
    assert!(
        matches!(cl.recv_one(&mut publ), Packet::ConnAck(a) if a.reason_code == ReasonCode::SUCCESS)
    );

    for _ in 0..5 {
        cl.send(&publ, &publish("t", b"in", QosPid::AtMostOnce));
    }
    cl.send(&publ, &publish("t", b"over", QosPid::AtLeastOnce(pid(1))));
    let packets = cl.recv(&mut publ);
    assert_eq!(
        packets.len(),
        1,
        "no PUBACK for the refused message: {packets:?}"
    );
    match &packets[0] {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::MESSAGE_RATE_TOO_HIGH),
        p => panic!("{p:?}"),
    }
    assert!(cl.is_closing(&publ));
    let got = payloads(&cl.recv(&mut sub));
    assert_eq!(
        got,
        vec![
            Bytes::from_static(b"in"),
            Bytes::from_static(b"in"),
            Bytes::from_static(b"in"),
            Bytes::from_static(b"in"),
            Bytes::from_static(b"in"),
            Bytes::from_static(b"gone"),
        ],
        "five messages, not the sixth, then the will"
    );
    assert_eq!(rejections(&cl, Quota::MessageRate), 1);
    assert_eq!(protocol_errors(&cl), 0, "a quota is not a protocol error");
}

/// Traffic within the rate is never refused, however long it runs: 5/s with one message
/// every 200 ms.
#[test]
fn publishing_at_the_rate_is_unaffected() {
    let mut cl = Cluster::with_limits(
        1,
        limits(|l| {
            l.max_publish_rate = 5;
            l.publish_rate_burst = 1;
        }),
    );
    let (mut sub, _) = cl.connect(0, "sub", true, 0);
    cl.subscribe(&mut sub, "t", QoS::AtMostOnce);
    let (mut publ, _) = cl.connect(0, "pub", true, 0);
    for _ in 0..100 {
        cl.send(&publ, &publish("t", b"x", QosPid::AtLeastOnce(pid(1))));
        assert!(matches!(cl.recv_one(&mut publ), Packet::PubAck(_)));
        cl.now += Duration::from_millis(200);
    }
    assert_eq!(payloads(&cl.recv(&mut sub)).len(), 100);
    // Burst 1: two at the same instant are too many.
    cl.send(&publ, &publish("t", b"x", QosPid::AtMostOnce));
    cl.send(&publ, &publish("t", b"x", QosPid::AtMostOnce));
    expect_disconnect(&mut cl, &mut publ, ReasonCode::MESSAGE_RATE_TOO_HIGH);
    assert_eq!(rejections(&cl, Quota::MessageRate), 1);
}

/// A v5 QoS 0 PUBLISH to `t` of `size` bytes in all (fixed header included).
fn publish_of_size(size: usize) -> Packet {
    // 1 type byte, 2 length bytes (128..16383), topic 2+1, properties length 1.
    let packet = Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: Str::from_static("t"),
        properties: PublishProperties::default(),
        payload: Bytes::from(vec![1u8; size - 7]),
    });
    let mut frame = bytes::BytesMut::new();
    encode(&packet, ProtocolVersion::V5, &mut frame).unwrap();
    assert_eq!(frame.len(), size);
    packet
}

/// Bandwidth counts whole PUBLISH packets in bytes; a packet larger than the burst passes
/// from a full bucket and the debt is paid back before the next one.
#[test]
fn publish_bandwidth_disconnects_with_0x96() {
    let mut cl = Cluster::with_limits(1, limits(|l| l.max_publish_bandwidth = 1000));
    let (mut sub, _) = cl.connect(0, "sub", true, 0);
    cl.subscribe(&mut sub, "t", QoS::AtMostOnce);
    let (mut publ, _) = cl.connect(0, "pub", true, 0);
    let p300 = publish_of_size(300);
    for _ in 0..3 {
        cl.send(&publ, &p300);
    }
    assert_eq!(payloads(&cl.recv(&mut sub)).len(), 3);
    cl.send(&publ, &p300); // 1200 bytes in one instant
    expect_disconnect(&mut cl, &mut publ, ReasonCode::MESSAGE_RATE_TOO_HIGH);
    assert!(payloads(&cl.recv(&mut sub)).is_empty(), "not routed");
    assert_eq!(rejections(&cl, Quota::Bandwidth), 1);
    assert_eq!(rejections(&cl, Quota::MessageRate), 0);

    // A 3000-byte packet passes a full 1000-byte bucket; 2 s of debt follow.
    let (mut big, _) = cl.connect(0, "big", true, 0);
    cl.send(&big, &publish_of_size(3000));
    assert_eq!(payloads(&cl.recv(&mut sub)).len(), 1);
    cl.now += Duration::from_millis(2500);
    cl.send(&big, &p300);
    assert_eq!(payloads(&cl.recv(&mut sub)).len(), 1);
    cl.send(&big, &p300);
    expect_disconnect(&mut cl, &mut big, ReasonCode::MESSAGE_RATE_TOO_HIGH);
}

/// 3.1.1 has no DISCONNECT from the server: over the rate the connection is closed, and the
/// will is still published.
#[test]
fn publish_rate_closes_a_v311_connection() {
    let mut cl = Cluster::with_limits(1, limits(|l| l.max_publish_rate = 1));
    let (mut sub, _) = cl.connect(0, "sub", true, 0);
    cl.subscribe(&mut sub, "#", QoS::AtMostOnce);
    let mut publ = cl.open(0);
    publ.version = ProtocolVersion::V3_1_1;
    cl.send(&publ, &will_connect("pub", ProtocolVersion::V3_1_1));
    assert!(matches!(cl.recv_one(&mut publ), Packet::ConnAck(_)));
    cl.send(&publ, &publish("t", b"one", QosPid::AtMostOnce));
    cl.send(&publ, &publish("t", b"two", QosPid::AtMostOnce));
    assert!(
        cl.recv(&mut publ).is_empty(),
        "nothing sent to a 3.1.1 client"
    );
    assert!(cl.is_closing(&publ));
    assert_eq!(
        payloads(&cl.recv(&mut sub)),
        vec![Bytes::from_static(b"one"), Bytes::from_static(b"gone")]
    );
}

/// Packets pipelined behind CONNECT are checked too.
#[test]
fn pipelined_publishes_are_counted() {
    let mut cl = Cluster::with_limits(2, limits(|l| l.max_publish_rate = 2));
    let mut publ = cl.open(1);
    let mut bytes = bytes::BytesMut::new();
    encode(
        &Packet::Connect(Box::new(connect_packet("p", ProtocolVersion::V5))),
        ProtocolVersion::V5,
        &mut bytes,
    )
    .unwrap();
    for _ in 0..3 {
        encode(
            &publish("t", b"x", QosPid::AtMostOnce),
            ProtocolVersion::V5,
            &mut bytes,
        )
        .unwrap();
    }
    cl.send_bytes(&publ, &bytes);
    let packets = cl.recv(&mut publ);
    assert!(
        matches!(packets.first(), Some(Packet::ConnAck(_))),
        "{packets:?}"
    );
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::MESSAGE_RATE_TOO_HIGH),
        "{packets:?}"
    );
}
