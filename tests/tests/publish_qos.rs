//! PUBLISH and the QoS 0/1/2 flows in both directions, redelivery, ordering, fan-out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ringmq_codec::*;
use ringmq_tests::*;

/// [MQTT-4.3.1-1] QoS 0 is delivered at most once, between v5 and 3.1.1 clients both ways.
#[test]
fn qos0_delivered_between_v5_and_v311() {
    let b = Broker::default_start();
    let mut s5 = b.v5("q0-s5");
    let mut s3 = b.v3("q0-s3");
    s5.subscribe_ok("q0/t", QoS::AtMostOnce);
    s3.subscribe_ok("q0/t", QoS::AtMostOnce);
    let mut p3 = b.v3("q0-p3");
    p3.publish0("q0/t", "from-v3");
    let mut p5 = b.v5("q0-p5");
    p5.publish0("q0/t", "from-v5");
    for s in [&mut s5, &mut s3] {
        let mut got = vec![text(&s.expect_publish()), text(&s.expect_publish())];
        got.sort();
        assert_eq!(got, ["from-v3", "from-v5"]);
    }
}

/// [MQTT-4.3.2-1] [MQTT-4.3.2-4] QoS 1: the sender gets PUBACK with its packet id; the
/// subscriber gets the message with QoS 1 and a non-zero packet id, and acknowledges it.
#[test]
fn qos1_flow_both_directions() {
    let b = Broker::default_start();
    let mut sub = b.v5("q1-sub");
    sub.subscribe_ok("q1/t", QoS::AtLeastOnce);
    let mut publ = b.v5("q1-pub");
    let code = publ.publish(msg("q1/t", "one").qos(QoS::AtLeastOnce));
    assert_eq!(code, Some(ReasonCode::SUCCESS));
    let m = sub.expect_publish();
    assert_eq!(m.qos_pid.qos(), QoS::AtLeastOnce);
    assert!(!m.dup, "[MQTT-3.3.1-1] first delivery has DUP = 0");
    assert_eq!(text(&m), "one");
    sub.ack(&m);
    sub.ping();
}

/// [MQTT-4.3.3-1..11] QoS 2 both ways: PUBLISH, PUBREC, PUBREL, PUBCOMP from publisher to
/// server and from server to subscriber, with matching packet ids.
#[test]
fn qos2_flow_both_directions() {
    let b = Broker::default_start();
    let mut sub = b.v5("q2-sub");
    sub.subscribe_ok("q2/t", QoS::ExactlyOnce);
    let mut publ = b.v5("q2-pub");
    assert_eq!(
        publ.publish(msg("q2/t", "two").qos(QoS::ExactlyOnce)),
        Some(ReasonCode::SUCCESS)
    );
    let m = sub.expect_publish();
    assert_eq!(m.qos_pid.qos(), QoS::ExactlyOnce);
    assert_eq!(text(&m), "two");
    let id = m.qos_pid.packet_id().unwrap();
    sub.send(&Packet::PubRec(ack(id, ReasonCode::SUCCESS)));
    match sub.expect_packet(WAIT) {
        Packet::PubRel(rel) => {
            assert_eq!((rel.packet_id, rel.reason_code), (id, ReasonCode::SUCCESS))
        }
        other => panic!("[MQTT-4.3.3-4] expected PUBREL, got {other:?}"),
    }
    sub.send(&Packet::PubComp(ack(id, ReasonCode::SUCCESS)));
    sub.expect_nothing(QUIET);
}

/// QoS 2 on 3.1.1 connections both ways.
#[test]
fn qos2_flow_v311() {
    let b = Broker::default_start();
    let mut sub = b.v3("q2-sub3");
    sub.subscribe_ok("q2/v3", QoS::ExactlyOnce);
    let mut publ = b.v3("q2-pub3");
    publ.publish(msg("q2/v3", "two-3").qos(QoS::ExactlyOnce));
    let m = sub.expect_publish_acked();
    assert_eq!(
        (m.qos_pid.qos(), text(&m).as_str()),
        (QoS::ExactlyOnce, "two-3")
    );
}

/// [MQTT-3.8.4-8] The QoS of a delivered message is the minimum of the published QoS and the
/// granted QoS.
#[test]
fn delivered_qos_is_minimum_of_published_and_granted() {
    let b = Broker::default_start();
    let mut s0 = b.v5("min-s0");
    let mut s1 = b.v5("min-s1");
    let mut s2 = b.v5("min-s2");
    s0.subscribe_ok("min/t", QoS::AtMostOnce);
    s1.subscribe_ok("min/t", QoS::AtLeastOnce);
    s2.subscribe_ok("min/t", QoS::ExactlyOnce);
    let mut publ = b.v5("min-pub");
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publ.publish(msg("min/t", format!("{qos:?}")).qos(qos));
    }
    for (sub, granted) in [
        (&mut s0, QoS::AtMostOnce),
        (&mut s1, QoS::AtLeastOnce),
        (&mut s2, QoS::ExactlyOnce),
    ] {
        // Three QoS levels: no order between them is guaranteed [MQTT-4.6.0-6]; match by payload.
        let mut got: Vec<(String, QoS)> = sub
            .expect_publishes(3)
            .iter()
            .map(|m| (text(m), m.qos_pid.qos()))
            .collect();
        got.sort();
        let mut want: Vec<(String, QoS)> = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .map(|published| (format!("{published:?}"), published.min(granted)))
            .collect();
        want.sort();
        assert_eq!(got, want, "granted {granted:?}");
    }
}

/// [MQTT-4.3.3-10] Until PUBREL, a repeated QoS 2 PUBLISH with the same packet id is answered
/// with PUBREC and MUST NOT be delivered twice.
#[test]
fn qos2_duplicate_before_pubrel_delivered_once() {
    let b = Broker::default_start();
    let mut sub = b.v5("dup2-sub");
    sub.subscribe_ok("dup2/t", QoS::AtLeastOnce);
    let mut publ = b.v5("dup2-pub");
    let id = nz16(7);
    let mut m = msg("dup2/t", "once").qos(QoS::ExactlyOnce);
    m.qos_pid = QosPid::ExactlyOnce(id);
    publ.send(&Packet::Publish(m.clone()));
    let is_rec = |p: &Packet| matches!(p, Packet::PubRec(r) if r.packet_id == nz16(7));
    publ.wait_for(WAIT, "PUBREC", is_rec);
    m.dup = true;
    publ.send(&Packet::Publish(m));
    publ.wait_for(WAIT, "second PUBREC", is_rec);
    publ.send(&Packet::PubRel(ack(id, ReasonCode::SUCCESS)));
    let comp = publ.wait_for(WAIT, "PUBCOMP", |p| matches!(p, Packet::PubComp(_)));
    let Packet::PubComp(comp) = comp else {
        unreachable!()
    };
    assert_eq!(
        (comp.packet_id, comp.reason_code),
        (id, ReasonCode::SUCCESS)
    );
    // A marker from the same publisher on the same topic and QoS: ordered after the duplicate.
    publ.publish(msg("dup2/t", "marker").qos(QoS::ExactlyOnce));
    assert_eq!(text(&sub.expect_publish_acked()), "once");
    assert_eq!(
        text(&sub.expect_publish_acked()),
        "marker",
        "the duplicate was delivered twice"
    );
}

/// [MQTT-4.3.3-11] A PUBREL is answered with PUBCOMP with the same packet id; for an unknown
/// id the v5 reason code is 0x92 (Packet Identifier not found).
#[test]
fn pubrel_for_unknown_packet_id_gets_pubcomp_0x92() {
    let b = Broker::default_start();
    let mut c = b.v5("pubrel-unknown");
    c.send(&Packet::PubRel(ack(nz16(99), ReasonCode::SUCCESS)));
    match c.expect_packet(WAIT) {
        Packet::PubComp(comp) => {
            assert_eq!(comp.packet_id, nz16(99));
            assert_eq!(comp.reason_code, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
}

/// [MQTT-4.4.0-1] [MQTT-3.3.1-1] When a client reconnects to a persistent session, unacknowledged
/// QoS 1 PUBLISH packets are re-sent with DUP = 1 and the original packet id.
#[test]
fn unacked_qos1_redelivered_with_dup_after_reconnect() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let opts = || Opts::v5("redeliver1").clean(false).session_expiry(60);
    let mut sub = b.connect(opts());
    sub.subscribe_ok("redeliver/1", QoS::AtLeastOnce);
    let mut publ = b.v5("redeliver1-pub");
    publ.publish(msg("redeliver/1", "again").qos(QoS::AtLeastOnce));
    let first = sub.expect_publish();
    assert!(!first.dup);
    sub.drop_connection();
    for _round in 0..3 {
        let mut sub = b.connect(opts());
        assert!(sub.session_present(), "{:?}", sub.connack);
        let again = sub.expect_publish();
        assert!(again.dup, "re-sent PUBLISH has DUP = 1: {again:?}");
        assert_eq!(again.qos_pid, first.qos_pid, "same packet id");
        assert_eq!(text(&again), "again");
        sub.drop_connection();
    }
    let mut sub = b.connect(opts());
    let again = sub.expect_publish();
    sub.ack(&again);
    sub.disconnect();
    let mut sub = b.connect(opts());
    sub.expect_nothing(QUIET);
}

/// [MQTT-4.4.0-1] On reconnect the server re-sends an unacknowledged QoS 2 PUBLISH with DUP = 1,
/// and once PUBREC was received, the PUBREL (not the PUBLISH).
#[test]
fn unacked_qos2_publish_and_pubrel_resent_after_reconnect() {
    let b = Broker::default_start();
    let opts = || Opts::v5("redeliver2").clean(false).session_expiry(60);
    let mut sub = b.connect(opts());
    sub.subscribe_ok("redeliver/2", QoS::ExactlyOnce);
    let mut publ = b.v5("redeliver2-pub");
    publ.publish(msg("redeliver/2", "exactly").qos(QoS::ExactlyOnce));
    let first = sub.expect_publish();
    let id = first.qos_pid.packet_id().unwrap();
    sub.drop_connection();

    let mut sub = b.connect(opts());
    let again = sub.expect_publish();
    assert!(again.dup, "{again:?}");
    assert_eq!(again.qos_pid, QosPid::ExactlyOnce(id));
    sub.send(&Packet::PubRec(ack(id, ReasonCode::SUCCESS)));
    sub.wait_for(
        WAIT,
        "PUBREL",
        |p| matches!(p, Packet::PubRel(r) if r.packet_id == id),
    );
    sub.drop_connection();

    let mut sub = b.connect(opts());
    match sub.expect_packet(WAIT) {
        Packet::PubRel(rel) => assert_eq!(rel.packet_id, id),
        other => panic!("[MQTT-4.4.0-1] expected the PUBREL to be re-sent, got {other:?}"),
    }
    sub.send(&Packet::PubComp(ack(id, ReasonCode::SUCCESS)));
    sub.expect_nothing(QUIET);
}

/// [MQTT-4.4.0-1] 3.1.1 persistent session: unacknowledged QoS 1 is re-sent with DUP = 1.
#[test]
fn unacked_qos1_redelivered_with_dup_v311() {
    let b = Broker::default_start();
    let mut sub = b.connect(Opts::v3("redeliver3").clean(false));
    sub.subscribe_ok("redeliver/3", QoS::AtLeastOnce);
    let mut publ = b.v3("redeliver3-pub");
    publ.publish(msg("redeliver/3", "v3-again").qos(QoS::AtLeastOnce));
    let first = sub.expect_publish();
    sub.drop_connection();
    let mut sub = b.connect(Opts::v3("redeliver3").clean(false));
    assert!(sub.session_present());
    let again = sub.expect_publish_acked();
    assert!(
        again.dup && again.qos_pid == first.qos_pid,
        "{again:?} vs {first:?}"
    );
}

/// [MQTT-4.6.0-5] [MQTT-4.6.0-6] Messages from one publisher on one topic are delivered in the
/// order they were published.
#[test]
fn messages_delivered_in_publish_order() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut sub = b.v5("order-sub");
    sub.subscribe_ok("order/t", QoS::AtLeastOnce);
    let mut publ = b.v5("order-pub");
    for i in 0..50 {
        publ.publish(msg("order/t", format!("{i}")).qos(QoS::AtLeastOnce));
    }
    for i in 0..50 {
        assert_eq!(text(&sub.expect_publish_acked()), format!("{i}"));
    }
}

/// [MQTT-2.2.1-3] The server uses a packet id that is not in use for each new QoS 1 PUBLISH:
/// unacknowledged messages in flight to one client carry distinct ids.
#[test]
fn in_flight_packet_ids_are_distinct() {
    let b = Broker::default_start();
    let mut sub = b.v5("ids-sub");
    sub.subscribe_ok("ids/t", QoS::AtLeastOnce);
    let mut publ = b.v5("ids-pub");
    for i in 0..10 {
        publ.publish(msg("ids/t", format!("{i}")).qos(QoS::AtLeastOnce));
    }
    let got: Vec<Publish> = (0..10).map(|_| sub.expect_publish()).collect();
    let mut ids: Vec<u16> = got
        .iter()
        .map(|m| m.qos_pid.packet_id().unwrap().get())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "ids in flight must be distinct: {got:?}");
    for m in &got {
        sub.ack(m);
    }
}

/// A QoS 1 PUBLISH with no subscriber is acknowledged with 0x00 or 0x10 (No matching
/// subscribers) [MQTT-3.4.2.1].
#[test]
fn qos1_without_subscribers_acknowledged() {
    let b = Broker::default_start();
    let mut c = b.v5("nobody");
    let code = c
        .publish(msg("nobody/listens", "x").qos(QoS::AtLeastOnce))
        .unwrap();
    assert!(
        code == ReasonCode::SUCCESS || code == ReasonCode::NO_MATCHING_SUBSCRIBERS,
        "{code:?}"
    );
}

/// One message reaches every matching subscriber exactly once, whichever of four shards each
/// connection landed on, for v5 and 3.1.1 subscribers at every QoS.
#[test]
fn fanout_reaches_every_subscriber_across_shards() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    let mut subs: Vec<Client> = (0..9)
        .map(|i| {
            if i % 2 == 0 {
                b.v5(&format!("fan-{i}"))
            } else {
                b.v3(&format!("fan-{i}"))
            }
        })
        .collect();
    for (i, s) in subs.iter_mut().enumerate() {
        s.subscribe_ok("fan/+/x", qos[i % 3]);
    }
    let mut publ = b.v5("fan-pub");
    publ.publish(msg("fan/a/x", "all").qos(QoS::ExactlyOnce));
    publ.publish(msg("fan/a/x", "end").qos(QoS::ExactlyOnce));
    for s in &mut subs {
        assert_eq!(text(&s.expect_publish_acked()), "all");
        assert_eq!(
            text(&s.expect_publish_acked()),
            "end",
            "delivered exactly once"
        );
    }
}

/// A v5 message with properties reaches a 3.1.1 subscriber as a plain 3.1.1 PUBLISH (no
/// properties on the wire: the 3.1.1 decoder would reject them), payload unchanged.
#[test]
fn v5_message_with_properties_reaches_v311_subscriber() {
    let b = Broker::default_start();
    let mut s3 = b.v3("props-to-v3");
    s3.subscribe_ok("p3/t", QoS::AtLeastOnce);
    let mut p5 = b.v5("props-from-v5");
    p5.publish(msg("p3/t", "payload").qos(QoS::AtLeastOnce).props(|p| {
        p.user_properties = user_props(&[("k", "v")]);
        p.content_type = Some(s("text/plain"));
        p.message_expiry_secs = Some(100);
    }));
    let m = s3.expect_publish_acked();
    assert_eq!((m.topic.as_str(), text(&m).as_str()), ("p3/t", "payload"));
}

/// A large payload (512 KiB, below the default maximum packet size) goes through intact.
#[test]
fn large_payload_delivered_intact() {
    let b = Broker::default_start();
    let mut sub = b.v5("large-sub");
    sub.subscribe_ok("large/t", QoS::AtLeastOnce);
    let payload: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    let mut publ = b.v5("large-pub");
    publ.publish(msg("large/t", payload.clone()).qos(QoS::AtLeastOnce));
    let m = sub.expect_publish_acked();
    assert!(
        m.payload == payload,
        "payload of {} bytes differs",
        m.payload.len()
    );
}

/// (2.2.1, 4.3.3) Once PUBCOMP was sent, the packet id is free: a new QoS 2 PUBLISH with
/// the same id (DUP = 0) is a new message and is delivered, not dropped as a duplicate.
#[test]
fn qos2_packet_id_reusable_after_pubcomp() {
    let b = Broker::default_start();
    let mut sub = b.v5("reuse-sub");
    sub.subscribe_ok("reuse/t", QoS::AtLeastOnce);
    let mut p = b.v5("reuse-pub");
    for payload in ["first", "second", "third"] {
        let mut m = msg("reuse/t", payload).qos(QoS::ExactlyOnce);
        m.qos_pid = QosPid::ExactlyOnce(nz16(5));
        p.send(&Packet::Publish(m));
        p.wait_for(
            WAIT,
            "PUBREC",
            |q| matches!(q, Packet::PubRec(r) if r.packet_id == nz16(5)),
        );
        p.send(&Packet::PubRel(ack(nz16(5), ReasonCode::SUCCESS)));
        p.wait_for(
            WAIT,
            "PUBCOMP",
            |q| matches!(q, Packet::PubComp(r) if r.packet_id == nz16(5)),
        );
    }
    let got: Vec<String> = sub.expect_publishes(3).iter().map(text).collect();
    assert_eq!(got, ["first", "second", "third"]);
}

/// (3.14.4) A PUBLISH followed at once by DISCONNECT, in one TCP write, is still delivered: the
/// server handles a connection's packets in order, the DISCONNECT only after the PUBLISH.
#[test]
fn publish_then_immediate_disconnect_is_delivered() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut sub = b.v5("pd-sub");
    sub.subscribe_ok("pd/#", QoS::AtLeastOnce);
    for i in 0..8 {
        let mut p = if i % 2 == 0 {
            b.v5(&format!("pd-pub-{i}"))
        } else {
            b.v3(&format!("pd-pub-{i}"))
        };
        let mut out = bytes::BytesMut::new();
        let version = p.version();
        encode(
            &Packet::Publish(msg(&format!("pd/{i}"), format!("{i}"))),
            version,
            &mut out,
        )
        .unwrap();
        encode(
            &Packet::Disconnect(Disconnect::default()),
            version,
            &mut out,
        )
        .unwrap();
        p.send_raw(&out).unwrap(); // one write: both packets arrive together
        p.expect_closed(WAIT);
    }
    let mut got: Vec<String> = sub.expect_publishes(8).iter().map(text).collect();
    got.sort();
    assert_eq!(got, ["0", "1", "2", "3", "4", "5", "6", "7"]);
}

/// No loss and no duplicate under back-pressure: four publishers on four shards send 50 QoS 1
/// messages each to one subscriber with Receive Maximum 5 that acknowledges as it reads; every
/// message arrives once and each publisher's messages stay in order [MQTT-4.6.0-5].
#[test]
fn fan_in_with_small_receive_maximum_loses_nothing() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut sub = b.connect(Opts::v5("fanin-sub").receive_max(5));
    sub.subscribe_ok("fanin/+", QoS::AtLeastOnce);
    let mut pubs: Vec<Client> = (0..4).map(|i| b.v5(&format!("fanin-pub-{i}"))).collect();
    let mut got: Vec<String> = Vec::new();
    for n in 0..50 {
        for (i, p) in pubs.iter_mut().enumerate() {
            p.publish(msg(&format!("fanin/{i}"), format!("{i}:{n}")).qos(QoS::AtLeastOnce));
        }
        // Read what has arrived so far, so the window keeps moving while publishing.
        while let Some(packet) = sub.recv(std::time::Duration::from_millis(1)) {
            let Packet::Publish(m) = packet else {
                panic!("unexpected {packet:?}")
            };
            sub.ack(&m);
            got.push(text(&m));
        }
    }
    while got.len() < 200 {
        got.push(text(&sub.expect_publish_acked()));
    }
    let mut next = [0u32; 4];
    for g in &got {
        let (i, n) = g.split_once(':').unwrap();
        let (i, n): (usize, u32) = (i.parse().unwrap(), n.parse().unwrap());
        assert_eq!(
            n, next[i],
            "publisher {i}: out of order or duplicated in {got:?}"
        );
        next[i] += 1;
    }
    assert_eq!(next, [50; 4]);
    sub.expect_nothing(QUIET);
}

/// (4.3.3, 3.5.2.1) A subscriber that answers a QoS 2 PUBLISH with a failing PUBREC (0x80) ends the
/// flow: the server sends no PUBREL for it, and the next message flows normally.
#[test]
fn failing_pubrec_from_subscriber_ends_qos2_flow() {
    let b = Broker::default_start();
    let mut sub = b.v5("prf-sub");
    sub.subscribe_ok("prf/t", QoS::ExactlyOnce);
    let mut p = b.v5("prf-pub");
    p.publish(msg("prf/t", "refused").qos(QoS::ExactlyOnce));
    let m = sub.expect_publish();
    let id = m.qos_pid.packet_id().unwrap();
    sub.send(&Packet::PubRec(ack(id, ReasonCode::UNSPECIFIED_ERROR)));
    p.publish(msg("prf/t", "next").qos(QoS::ExactlyOnce));
    match sub.expect_packet(WAIT) {
        Packet::Publish(n) => {
            assert_eq!(text(&n), "next");
            sub.ack(&n);
        }
        other => panic!("expected the next PUBLISH, got {other:?}"),
    }
    sub.expect_nothing(QUIET);
}

/// [MQTT-4.3.3-10] [MQTT-4.4.0-1] The server keeps the state of an incoming QoS 2 message in the
/// session: a publisher that got PUBREC, lost its connection and resumes the session (maybe on
/// another shard) re-sends PUBREL and gets PUBCOMP 0x00; the message is delivered once.
#[test]
fn incoming_qos2_state_survives_publisher_reconnect() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut sub = b.v5("in2-sub");
    sub.subscribe_ok("in2/t", QoS::ExactlyOnce);
    let opts = || Opts::v5("in2-pub").clean(false).session_expiry(60);
    for round in 0..4u16 {
        let id = nz16(100 + round);
        let mut p = b.connect(opts());
        let mut m = msg("in2/t", format!("r{round}")).qos(QoS::ExactlyOnce);
        m.qos_pid = QosPid::ExactlyOnce(id);
        p.send(&Packet::Publish(m.clone()));
        p.wait_for(
            WAIT,
            "PUBREC",
            |q| matches!(q, Packet::PubRec(r) if r.packet_id == id),
        );
        p.drop_connection();
        let mut p = b.connect(opts());
        assert!(p.session_present());
        if round % 2 == 1 {
            // A client may also re-send the PUBLISH (DUP = 1): still one delivery [MQTT-4.3.3-10].
            m.dup = true;
            p.send(&Packet::Publish(m));
            p.wait_for(
                WAIT,
                "PUBREC",
                |q| matches!(q, Packet::PubRec(r) if r.packet_id == id),
            );
        }
        p.send(&Packet::PubRel(ack(id, ReasonCode::SUCCESS)));
        let Packet::PubComp(comp) = p.wait_for(
            WAIT,
            "PUBCOMP",
            |q| matches!(q, Packet::PubComp(r) if r.packet_id == id),
        ) else {
            unreachable!()
        };
        assert_eq!(
            comp.reason_code,
            ReasonCode::SUCCESS,
            "PUBREL after reconnect: {comp:?}"
        );
        p.disconnect();
    }
    let mut got: Vec<String> = sub.expect_publishes(4).iter().map(text).collect();
    got.sort();
    assert_eq!(got, ["r0", "r1", "r2", "r3"], "each message exactly once");
    sub.expect_nothing(QUIET);
}

/// Issue 12: SUBSCRIBE and a QoS 2 PUBLISH to the same topic written together (one TCP
/// segment, as a client sends them when it does not wait for the SUBACK): the broker reads
/// them in one read, answers SUBACK, then PUBREC and PUBCOMP — and the message reaches the
/// subscription the SUBACK confirmed (here the client's own). It used to be lost every time.
#[test]
fn subscribe_and_qos2_publish_in_one_write_delivers() {
    for shards in [1, 2] {
        let b = Broker::start(BrokerOpts::new().shards(shards));
        for n in 0..4 {
            let id = format!("one-write-{shards}-{n}");
            let topic = format!("one/write/{shards}/{n}");
            let mut c = b.v5(&id);
            let mut wire = bytes::BytesMut::new();
            let sub = Subscribe {
                packet_id: nz16(1),
                subscription_id: None,
                user_properties: UserProperties::new(),
                filters: vec![SubscribeFilter {
                    filter: s(&topic),
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        ..Default::default()
                    },
                }],
            };
            encode(&Packet::Subscribe(sub), ProtocolVersion::V5, &mut wire).unwrap();
            let mut p = msg(&topic, "self").qos(QoS::ExactlyOnce);
            p.qos_pid = QosPid::ExactlyOnce(nz16(2));
            encode(&Packet::Publish(p), ProtocolVersion::V5, &mut wire).unwrap();
            c.send_raw(&wire).unwrap();
            let (mut suback, mut pubcomp, mut delivered) = (false, false, None);
            while !(suback && pubcomp && delivered.is_some()) {
                match c.recv(WAIT) {
                    Some(Packet::SubAck(a)) => suback = a.packet_id == nz16(1),
                    Some(Packet::PubRec(r)) if r.packet_id == nz16(2) => {
                        c.send(&Packet::PubRel(PubResp::new(nz16(2), ReasonCode::SUCCESS)))
                    }
                    Some(Packet::PubComp(r)) => pubcomp = r.packet_id == nz16(2),
                    Some(Packet::Publish(m)) => {
                        c.ack(&m);
                        delivered = Some(m);
                    }
                    Some(other) => panic!("[{id}] unexpected {other:?}"),
                    None => panic!(
                        "[{id}] SUBACK {suback}, PUBCOMP {pubcomp}, delivered {}: \
                         nothing more within {WAIT:?}",
                        delivered.is_some()
                    ),
                }
            }
            let m = delivered.unwrap();
            assert_eq!(
                (m.topic.as_str(), text(&m)),
                (topic.as_str(), "self".to_owned())
            );
            assert_eq!(m.qos_pid.qos(), QoS::ExactlyOnce);
            c.disconnect();
        }
    }
}
