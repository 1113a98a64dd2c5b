//! The plain connection's byte pump (engine/src/plain_pump.rs), through the real binary: one
//! task that waits for readiness, reads without blocking into the shard's read arena (keeping
//! only a frame that arrived in part) and writes without blocking.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ringmq_codec::*;
use ringmq_tests::*;

/// A client that publishes much more to its own subscription than the socket buffers hold
/// before it reads anything. Once the broker's writes to it block, the broker must go on
/// reading its PUBLISHes (the client's writes would otherwise block too, and each side would
/// wait for the other); then everything arrives, in order.
#[test]
fn keeps_reading_while_writes_to_the_same_client_block() {
    const MESSAGES: usize = 3000;
    let b = Broker::default_start();
    let mut c = b.v5("loop-client");
    c.subscribe_ok("loop/t", QoS::AtMostOnce);
    // 12 MiB in all, well above what loopback socket buffers hold in both directions.
    for i in 0..MESSAGES {
        let mut payload = vec![(i % 251) as u8; 4096];
        payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
        c.send(&Packet::Publish(msg("loop/t", payload)));
    }
    c.send(&Packet::PingReq);
    for i in 0..MESSAGES {
        let m = c.expect_publish();
        assert_eq!(m.payload.len(), 4096);
        assert_eq!(
            m.payload[..4],
            (i as u32).to_be_bytes(),
            "message {i} in order"
        );
        assert!(m.payload[4..].iter().all(|&x| x == (i % 251) as u8));
    }
    c.wait_for(WAIT, "PINGRESP", |p| matches!(p, Packet::PingResp));
}

/// Frames cut at every kind of boundary, each piece arriving in a read of its own: inside the
/// fixed header, inside the remaining length, and a PUBLISH larger than the read arena. Each
/// is reassembled from the connection's own buffer and handled once.
#[test]
fn frames_cut_into_pieces_are_reassembled() {
    let b = Broker::default_start();
    let mut sub = b.v5("pieces-sub");
    sub.subscribe_ok("pieces/t", QoS::AtLeastOnce);

    let mut wire = bytes::BytesMut::new();
    encode(
        &Opts::v5("pieces-pub").into_packet(),
        ProtocolVersion::V5,
        &mut wire,
    )
    .unwrap();
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    let mut publish = msg("pieces/t", payload.clone()).qos(QoS::AtLeastOnce);
    publish.qos_pid = QosPid::AtLeastOnce(nz16(1));
    encode(&Packet::Publish(publish), ProtocolVersion::V5, &mut wire).unwrap();
    encode(&Packet::PingReq, ProtocolVersion::V5, &mut wire).unwrap();

    let mut p = Client::open(b.addr(), ProtocolVersion::V5);
    let mut rest = &wire[..];
    for piece in [1, 1, 2, 7, 30, 3, 500, 4000, 5000] {
        let (head, tail) = rest.split_at(piece.min(rest.len()));
        p.send_raw(head).unwrap();
        rest = tail;
        // Lets the broker read this piece on its own (not needed for the outcome).
        std::thread::sleep(Duration::from_millis(20));
    }
    p.send_raw(rest).unwrap();

    assert!(
        matches!(p.expect_packet(WAIT), Packet::ConnAck(a) if a.reason_code == ReasonCode::SUCCESS)
    );
    p.wait_for(
        WAIT,
        "PUBACK",
        |q| matches!(q, Packet::PubAck(a) if a.packet_id == nz16(1)),
    );
    p.wait_for(WAIT, "PINGRESP", |q| matches!(q, Packet::PingResp));
    let m = sub.expect_publish_acked();
    assert!(
        m.payload == payload,
        "payload of {} bytes differs",
        m.payload.len()
    );
    sub.expect_nothing(Duration::from_millis(200));
}

/// Many connections that stay idle after CONNECT, then all publish at once: each is still
/// served (none holds a read buffer while idle; they share the shard's arena).
#[test]
fn idle_connections_all_wake_up() {
    const CLIENTS: usize = 200;
    let b = Broker::default_start();
    let mut sub = b.v5("wake-sub");
    sub.subscribe_ok("wake/+", QoS::AtLeastOnce);
    let mut clients: Vec<Client> = (0..CLIENTS).map(|i| b.v5(&format!("wake-{i}"))).collect();
    std::thread::sleep(Duration::from_millis(300));
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            c.publish(msg(&format!("wake/{i}"), format!("hello {i}")).qos(QoS::AtLeastOnce)),
            Some(ReasonCode::SUCCESS)
        );
    }
    let mut got: Vec<String> = sub
        .expect_publishes(CLIENTS)
        .iter()
        .map(|m| m.topic.to_string())
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..CLIENTS).map(|i| format!("wake/{i}")).collect();
    want.sort();
    assert_eq!(got, want);
}
