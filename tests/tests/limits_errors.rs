//! Limits (receive maximum, maximum packet size) and protocol errors with their reason codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ringmq_codec::*;
use ringmq_tests::*;

/// (3.3.4) A client that sends more unacknowledged QoS 2 PUBLISH packets than the
/// server's Receive Maximum gets DISCONNECT 0x93 (Receive Maximum exceeded).
#[test]
fn receive_maximum_exceeded_disconnects_0x93() {
    let b = Broker::start(BrokerOpts::new().limits("receive_maximum = 2"));
    let mut c = b.v5("rm-over");
    assert_eq!(c.connack.properties.receive_maximum, Some(nz16(2)));
    // QoS 2 stays in flight until PUBCOMP, which needs our PUBREL: never sent here.
    for id in 1..=2u16 {
        let mut m = msg("rm/t", "x").qos(QoS::ExactlyOnce);
        m.qos_pid = QosPid::ExactlyOnce(nz16(id));
        c.send(&Packet::Publish(m));
        c.wait_for(
            WAIT,
            "PUBREC",
            |p| matches!(p, Packet::PubRec(r) if r.packet_id == nz16(id)),
        );
    }
    let mut m = msg("rm/t", "x").qos(QoS::ExactlyOnce);
    m.qos_pid = QosPid::ExactlyOnce(nz16(3));
    c.send(&Packet::Publish(m));
    let d = c.expect_disconnect(WAIT);
    assert_eq!(d.reason_code, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED, "{d:?}");
}

/// Within the Receive Maximum, completing a QoS 2 flow frees its slot: six sequential QoS 2
/// flows with Receive Maximum 2 all succeed.
#[test]
fn receive_maximum_slot_freed_by_pubcomp() {
    let b = Broker::start(BrokerOpts::new().limits("receive_maximum = 2"));
    let mut c = b.v5("rm-ok");
    for _ in 0..6 {
        let code = c.publish(msg("rm/ok", "x").qos(QoS::ExactlyOnce)).unwrap();
        assert!(
            code == ReasonCode::SUCCESS || code == ReasonCode::NO_MATCHING_SUBSCRIBERS,
            "{code:?}"
        );
    }
    c.ping();
}

/// [MQTT-3.3.4-9] The server does not send more unacknowledged QoS 1/2 PUBLISH packets than the
/// client's Receive Maximum; acknowledging one lets the next through.
#[test]
fn server_respects_client_receive_maximum() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut sub = b.connect(Opts::v5("crm-sub").receive_max(2));
    sub.subscribe_ok("crm/t", QoS::AtLeastOnce);
    let mut p = b.v5("crm-pub");
    for i in 0..5 {
        p.publish(msg("crm/t", format!("{i}")).qos(QoS::AtLeastOnce));
    }
    let first = sub.expect_publish();
    let second = sub.expect_publish();
    sub.expect_nothing(QUIET);
    sub.ack(&first);
    let third = sub.expect_publish();
    sub.expect_nothing(QUIET);
    sub.ack(&second);
    sub.ack(&third);
    let rest = sub.expect_publishes(2);
    let got: Vec<String> = [&first, &second, &third]
        .into_iter()
        .chain(rest.iter())
        .map(text)
        .collect();
    assert_eq!(got, ["0", "1", "2", "3", "4"]);
}

/// (3.2.2.3.6, 4.13) A packet larger than the server's Maximum Packet
/// Size: DISCONNECT 0x95 (Packet too large).
#[test]
fn packet_too_large_from_client_disconnects_0x95() {
    let b = Broker::start(BrokerOpts::new().limits("max_packet_size = 1024"));
    let mut c = b.v5("big");
    assert_eq!(c.connack.properties.maximum_packet_size, Some(nz32(1024)));
    c.send(&Packet::Publish(msg("big/t", vec![b'x'; 2000])));
    c.expect_disconnect_reason(ReasonCode::PACKET_TOO_LARGE, WAIT);
}

/// A packet just under the server's Maximum Packet Size is accepted.
#[test]
fn packet_at_server_maximum_accepted() {
    let b = Broker::start(BrokerOpts::new().limits("max_packet_size = 1024"));
    let mut sub = b.v5("edge-sub");
    sub.subscribe_ok("edge/t", QoS::AtLeastOnce);
    let mut c = b.v5("edge");
    // 1 type + 2 remaining length + 2+6 topic + 2 packet id + 1 properties length + payload.
    c.publish(msg("edge/t", vec![b'y'; 1024 - 14]).qos(QoS::AtLeastOnce));
    assert_eq!(sub.expect_publish_acked().payload.len(), 1024 - 14);
}

/// [MQTT-3.1.2-25] The server does not send a packet larger than the client's Maximum Packet
/// Size: the message is dropped for that client, while later small ones arrive.
#[test]
fn message_larger_than_client_maximum_not_delivered() {
    let b = Broker::default_start();
    let mut small = b.connect(Opts::v5("mps-small").max_packet_size(200));
    small.subscribe_ok("mps/t", QoS::AtLeastOnce);
    let mut big = b.v5("mps-big");
    big.subscribe_ok("mps/t", QoS::AtLeastOnce);
    let mut p = b.v5("mps-pub");
    p.publish(msg("mps/t", vec![b'z'; 500]).qos(QoS::AtLeastOnce));
    p.publish(msg("mps/t", "small").qos(QoS::AtLeastOnce));
    assert_eq!(big.expect_publish_acked().payload.len(), 500);
    assert_eq!(text(&big.expect_publish_acked()), "small");
    assert_eq!(
        text(&small.expect_publish_acked()),
        "small",
        "the 500-byte message must be skipped"
    );
}

/// [MQTT-3.3.2-2] A topic name with a wildcard in PUBLISH: DISCONNECT 0x90 (Topic Name invalid)
/// for v5.
#[test]
fn wildcard_in_publish_topic_disconnects_0x90() {
    let b = Broker::default_start();
    for topic in ["wc/+/x", "wc/#"] {
        let mut c = b.v5("wc5");
        // Sent raw: the encoder need not allow it. PUBLISH QoS 0, no properties, payload "x".
        let mut frame = vec![0x30, (2 + topic.len() + 1 + 1) as u8, 0, topic.len() as u8];
        frame.extend_from_slice(topic.as_bytes());
        frame.extend_from_slice(&[0, b'x']);
        c.send_raw(&frame).unwrap();
        c.expect_disconnect_reason(ReasonCode::TOPIC_NAME_INVALID, WAIT);
    }
}

/// [MQTT-3.3.2-2] 3.1.1: a wildcard in a PUBLISH topic closes the connection.
#[test]
fn wildcard_in_publish_topic_closes_v311() {
    let b = Broker::default_start();
    let mut c = b.v3("wc3");
    let topic = b"wc/+";
    let mut frame = vec![0x30, (2 + topic.len() + 1) as u8, 0, topic.len() as u8];
    frame.extend_from_slice(topic);
    frame.push(b'x');
    c.send_raw(&frame).unwrap();
    c.expect_closed(WAIT);
}

/// [MQTT-3.8.1-1] Reserved fixed-header flags of SUBSCRIBE must be 0010: other flags are a
/// Malformed Packet, DISCONNECT 0x81.
#[test]
fn subscribe_with_wrong_fixed_header_flags_is_malformed_0x81() {
    let b = Broker::default_start();
    let mut c = b.v5("mal-flags");
    // SUBSCRIBE with flags 0000, packet id 1, no properties, filter "a", options QoS 0.
    c.send_raw(&[0x80, 7, 0, 1, 0, 0, 1, b'a', 0]).unwrap();
    c.expect_disconnect_reason(ReasonCode::MALFORMED_PACKET, WAIT);
}

/// [MQTT-3.3.1-4] A PUBLISH with both QoS bits set (QoS 3) is a Malformed Packet: 0x81.
#[test]
fn publish_qos3_is_malformed_0x81() {
    let b = Broker::default_start();
    let mut c = b.v5("mal-qos3");
    c.send_raw(&[0x36, 7, 0, 1, b'a', 0, 1, 0, b'x']).unwrap();
    c.expect_disconnect_reason(ReasonCode::MALFORMED_PACKET, WAIT);
}

/// [MQTT-1.5.4-1] A topic that is not valid UTF-8 is a Malformed Packet: 0x81.
#[test]
fn invalid_utf8_topic_is_malformed_0x81() {
    let b = Broker::default_start();
    let mut c = b.v5("mal-utf8");
    c.send_raw(&[0x30, 6, 0, 2, 0xC3, 0x28, 0, b'x']).unwrap();
    c.expect_disconnect_reason(ReasonCode::MALFORMED_PACKET, WAIT);
}

/// [MQTT-1.5.5-1] (2.1.4) A Remaining Length longer than four bytes is malformed: 0x81 (or a
/// close), and the broker keeps serving others.
#[test]
fn malformed_remaining_length_closes() {
    let mut b = Broker::default_start();
    let mut c = b.v5("mal-len");
    c.send_raw(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).unwrap();
    if let Some(d) = c.expect_disconnect_or_close(WAIT) {
        assert!(
            d.reason_code == ReasonCode::MALFORMED_PACKET
                || d.reason_code == ReasonCode::PACKET_TOO_LARGE,
            "{d:?}"
        );
    }
    assert!(b.is_running());
    b.v5("after-malformed").ping();
}

/// (2.1.2: packet type 0 is reserved) An unknown packet type closes a 3.1.1 connection and gets
/// DISCONNECT 0x81 (or 0x82) on v5.
#[test]
fn reserved_packet_type_is_malformed() {
    let b = Broker::default_start();
    let mut c5 = b.v5("mal-type5");
    c5.send_raw(&[0x00, 0x00]).unwrap();
    c5.expect_disconnect_one_of(
        &[ReasonCode::MALFORMED_PACKET, ReasonCode::PROTOCOL_ERROR],
        WAIT,
    );
    let mut c3 = b.v3("mal-type3");
    c3.send_raw(&[0xF0, 0x00]).unwrap();
    c3.expect_closed(WAIT);
}

/// [MQTT-3.3.4-6] A PUBLISH from a client must not contain a Subscription Identifier: Protocol
/// Error 0x82 (or Malformed Packet 0x81).
#[test]
fn subscription_identifier_from_client_is_protocol_error() {
    let b = Broker::default_start();
    let mut c = b.v5("sid-client");
    // PUBLISH QoS 0, topic "a", properties { Subscription Identifier (0x0B) = 1 }, payload "x".
    c.send_raw(&[0x30, 7, 0, 1, b'a', 2, 0x0B, 1, b'x'])
        .unwrap();
    c.expect_disconnect_one_of(
        &[ReasonCode::PROTOCOL_ERROR, ReasonCode::MALFORMED_PACKET],
        WAIT,
    );
}

/// [MQTT-2.2.1-2 / 3.3.2.2] A QoS 1 PUBLISH with packet id 0 is malformed (0x81) or a protocol
/// error (0x82).
#[test]
fn qos1_publish_with_packet_id_zero_rejected() {
    let b = Broker::default_start();
    let mut c = b.v5("pid0");
    c.send_raw(&[0x32, 7, 0, 1, b'a', 0, 0, 0, b'x']).unwrap();
    let d = c.expect_disconnect(WAIT);
    assert!(
        d.reason_code == ReasonCode::MALFORMED_PACKET
            || d.reason_code == ReasonCode::PROTOCOL_ERROR,
        "{d:?}"
    );
}

/// The broker survives a burst of broken connections (garbage, half frames, abrupt closes) and
/// keeps routing between well-behaved clients on all shards.
#[test]
fn broker_survives_garbage_connections() {
    let mut b = Broker::start(BrokerOpts::new().shards(4));
    let garbage: [&[u8]; 6] = [
        b"GET / HTTP/1.1\r\n\r\n",
        &[0x10, 0x80],
        &[0x10, 0x05, 0, 4, b'M'],
        &[0xE0, 0x01],
        &[0x30],
        &[0xFF; 64],
    ];
    for g in garbage.iter().cycle().take(24) {
        let mut c = Client::open(b.addr(), ProtocolVersion::V5);
        let _ = c.send_raw(g);
        c.drop_connection();
    }
    assert!(b.is_running());
    let mut sub = b.v5("survivor-sub");
    sub.subscribe_ok("survive/t", QoS::AtLeastOnce);
    let mut p = b.v3("survivor-pub");
    p.publish(msg("survive/t", "alive").qos(QoS::AtLeastOnce));
    assert_eq!(text(&sub.expect_publish_acked()), "alive");
}

/// [MQTT-3.3.4-9] A QoS 2 message counts against the client's Receive Maximum until PUBCOMP (not
/// PUBREC): with Receive Maximum 1 the second message waits for the first's PUBCOMP.
#[test]
fn client_receive_maximum_counts_qos2_until_pubcomp() {
    let b = Broker::default_start();
    let mut sub = b.connect(Opts::v5("rm2-sub").receive_max(1));
    sub.subscribe_ok("rm2/t", QoS::ExactlyOnce);
    let mut p = b.v5("rm2-pub");
    p.publish(msg("rm2/t", "a").qos(QoS::ExactlyOnce));
    p.publish(msg("rm2/t", "b").qos(QoS::ExactlyOnce));
    let first = sub.expect_publish();
    assert_eq!(text(&first), "a");
    let id = first.qos_pid.packet_id().unwrap();
    sub.send(&Packet::PubRec(ack(id, ReasonCode::SUCCESS)));
    match sub.expect_packet(WAIT) {
        Packet::PubRel(r) => assert_eq!(r.packet_id, id),
        other => panic!("expected PUBREL before anything else, got {other:?}"),
    }
    sub.expect_nothing(QUIET);
    sub.send(&Packet::PubComp(ack(id, ReasonCode::SUCCESS)));
    assert_eq!(text(&sub.expect_publish_acked()), "b");
}

/// limits.max_inflight = 2: the server keeps at most 2 unacknowledged QoS 1 messages in flight to a
/// client that asked for more (min of the two), the rest wait in the session queue.
#[test]
fn server_max_inflight_window() {
    let b = Broker::start(BrokerOpts::new().limits("max_inflight = 2"));
    let mut sub = b.v5("mi-sub");
    sub.subscribe_ok("mi/t", QoS::AtLeastOnce);
    let mut p = b.v5("mi-pub");
    for i in 0..4 {
        p.publish(msg("mi/t", format!("{i}")).qos(QoS::AtLeastOnce));
    }
    let a = sub.expect_publish();
    let c = sub.expect_publish();
    sub.expect_nothing(QUIET);
    sub.ack(&a);
    sub.ack(&c);
    let rest: Vec<String> = sub.expect_publishes(2).iter().map(text).collect();
    assert_eq!(rest, ["2", "3"]);
}

/// [MQTT-3.1.2-29] With Request Problem Information = 0 the server sends no Reason String or
/// User Property on packets other than PUBLISH, CONNACK and DISCONNECT: a refused subscription's
/// SUBACK carries neither.
#[test]
fn no_reason_string_when_problem_information_not_requested() {
    let b = Broker::start(
        BrokerOpts::new().limits("max_subscriptions_per_client = 1\nmax_topic_levels = 3"),
    );
    let mut c =
        b.connect(Opts::v5("rpi").with(|c| c.properties.request_problem_information = Some(false)));
    c.subscribe_ok("rpi/1", QoS::AtLeastOnce);
    let id = c.next_packet_id();
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: id,
        subscription_id: None,
        user_properties: UserProperties::default(),
        filters: vec![SubscribeFilter {
            filter: s("rpi/2"),
            options: sub_opts(QoS::AtLeastOnce),
        }],
    }));
    let Packet::SubAck(ack) = c.wait_for(WAIT, "SUBACK", |p| matches!(p, Packet::SubAck(_))) else {
        unreachable!()
    };
    assert!(ack.reason_codes[0].is_error(), "{ack:?}");
    assert_eq!(
        ack.properties.reason_string, None,
        "[MQTT-3.1.2-29] {ack:?}"
    );
    assert!(
        ack.properties.user_properties.is_empty(),
        "[MQTT-3.1.2-29] {ack:?}"
    );
    let mut deep = msg("rpi/a/b/c", "deep").qos(QoS::AtLeastOnce);
    let id = c.publish_nowait(&mut deep).unwrap();
    let Packet::PubAck(puback) = c.wait_for(
        WAIT,
        "PUBACK",
        |p| matches!(p, Packet::PubAck(a) if a.packet_id == id),
    ) else {
        unreachable!()
    };
    assert_eq!(
        puback.reason_code,
        ReasonCode::TOPIC_NAME_INVALID,
        "{puback:?}"
    );
    assert_eq!(
        puback.properties.reason_string, None,
        "[MQTT-3.1.2-29] {puback:?}"
    );
}

/// [MQTT-3.1.2-25] A retained message larger than the subscriber's Maximum Packet Size is not
/// sent at subscribe either; a small one on another topic is.
#[test]
fn retained_message_larger_than_client_maximum_not_sent() {
    let b = Broker::default_start();
    let mut p = b.v5("rmps-pub");
    p.publish(
        msg("rmps/big", vec![b'r'; 500])
            .qos(QoS::AtLeastOnce)
            .retain(true),
    );
    p.publish(
        msg("rmps/small", "small")
            .qos(QoS::AtLeastOnce)
            .retain(true),
    );
    let mut s = b.connect(Opts::v5("rmps-sub").max_packet_size(200));
    s.subscribe_ok("rmps/+", QoS::AtLeastOnce);
    let m = s.expect_publish_acked();
    assert_eq!(
        (m.topic.as_str(), text(&m).as_str()),
        ("rmps/small", "small")
    );
    s.expect_nothing(QUIET);
}
