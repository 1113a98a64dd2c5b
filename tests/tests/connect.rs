//! CONNECT and CONNACK: advertised limits, client identifiers, keep alive, session takeover.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ringmq_codec::*;
use ringmq_tests::*;

/// Bound on the close of a connection idle for 1.5 × a 1 s keep alive: generous, since a broker
/// may check keep alive on a coarse timer.
const KEEP_ALIVE_WAIT: Duration = Duration::from_secs(8);

/// [MQTT-3.2.2-3.2.2.3] A v5 CONNACK carries the server's Receive Maximum, Maximum Packet Size and
/// Topic Alias Maximum, and says retained messages, wildcard and shared subscriptions and
/// subscription identifiers are available.
#[test]
fn connack_v5_advertises_server_limits() {
    let b = Broker::start(
        BrokerOpts::new()
            .limits("receive_maximum = 7\nmax_packet_size = 65536\ntopic_alias_maximum = 5"),
    );
    let c = b.v5("limits");
    let ack = &c.connack;
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert!(
        !ack.session_present,
        "[MQTT-3.2.2-2] clean start gives session present 0"
    );
    let p = &ack.properties;
    assert_eq!(p.receive_maximum, Some(nz16(7)), "Receive Maximum: {ack:?}");
    assert_eq!(
        p.maximum_packet_size,
        Some(nz32(65536)),
        "Maximum Packet Size: {ack:?}"
    );
    assert_eq!(
        p.topic_alias_maximum,
        Some(5),
        "Topic Alias Maximum: {ack:?}"
    );
    // Absent means available; the broker says so explicitly.
    assert_ne!(p.retain_available, Some(false), "Retain Available: {ack:?}");
    assert_ne!(p.wildcard_subscription_available, Some(false), "{ack:?}");
    assert_ne!(p.shared_subscription_available, Some(false), "{ack:?}");
    assert_ne!(p.subscription_ids_available, Some(false), "{ack:?}");
    assert!(
        p.maximum_qos.is_none() || p.maximum_qos == Some(QoS::ExactlyOnce),
        "QoS 2 supported: {ack:?}"
    );
}

/// The CONNACK flags of the defaults documented for the broker: Retain Available = 1,
/// Wildcard/Shared/Subscription Identifier Available = 1 sent explicitly.
#[test]
fn connack_v5_sends_availability_flags_explicitly() {
    let b = Broker::default_start();
    let c = b.v5("flags");
    let p = &c.connack.properties;
    assert_eq!(p.retain_available, Some(true), "{:?}", c.connack);
    assert_eq!(
        p.wildcard_subscription_available,
        Some(true),
        "{:?}",
        c.connack
    );
    assert_eq!(
        p.shared_subscription_available,
        Some(true),
        "{:?}",
        c.connack
    );
    assert_eq!(p.subscription_ids_available, Some(true), "{:?}", c.connack);
}

/// [MQTT-3.2.2-21] If the server's keep alive limit is below the client's, CONNACK carries
/// Server Keep Alive and the client must use it.
#[test]
fn server_keep_alive_caps_client_keep_alive() {
    let b = Broker::start(BrokerOpts::new().limits("max_keep_alive_secs = 30"));
    let c = b.connect(Opts::v5("ka").keep_alive(600));
    assert_eq!(
        c.connack.properties.server_keep_alive_secs,
        Some(30),
        "{:?}",
        c.connack
    );
}

/// [MQTT-3.2.2-3.2.2.3.2] Session Expiry Interval in CONNACK: a server that uses a smaller
/// value than the client asked for says so.
#[test]
fn session_expiry_capped_and_reported_in_connack() {
    let b = Broker::start(BrokerOpts::new().limits("max_session_expiry_secs = 100"));
    let c = b.connect(Opts::v5("se-cap").session_expiry(1000));
    assert_eq!(
        c.connack.properties.session_expiry_secs,
        Some(100),
        "{:?}",
        c.connack
    );
}

/// [MQTT-3.1.0-1] After a network connection is established, the first packet sent from the
/// client to the server MUST be a CONNECT packet; otherwise the server closes the connection.
#[test]
fn first_packet_not_connect_closes_connection() {
    let b = Broker::default_start();
    let mut c = Client::open(b.addr(), ProtocolVersion::V5);
    c.send(&Packet::PingReq);
    c.expect_closed(WAIT);

    let mut c = Client::open(b.addr(), ProtocolVersion::V3_1_1);
    c.send(&Packet::Publish(msg("a/b", "early")));
    c.expect_closed(WAIT);
}

/// [MQTT-3.1.0-2] A second CONNECT is a Protocol Error: DISCONNECT 0x82 (v5) and close.
/// (The DISCONNECT before the close is a MAY in the specification [MQTT-4.13.1]; ringmq
/// promises it.)
#[test]
fn second_connect_is_protocol_error_v5() {
    let b = Broker::default_start();
    let mut c = b.v5("twice");
    c.send(&Opts::v5("twice").into_packet());
    let d = c.expect_disconnect(WAIT);
    assert_eq!(d.reason_code, ReasonCode::PROTOCOL_ERROR, "{d:?}");
}

/// [MQTT-3.1.0-2] A second CONNECT on a 3.1.1 connection: the server closes the connection.
#[test]
fn second_connect_closes_connection_v311() {
    let b = Broker::default_start();
    let mut c = b.v3("twice3");
    c.send(&Opts::v3("twice3").into_packet());
    c.expect_closed(WAIT);
}

/// [MQTT-3.1.3-6] [MQTT-3.2.2-16] A v5 client with a zero-length client id gets a unique
/// Assigned Client Identifier in CONNACK, and the connection works.
#[test]
fn empty_client_id_gets_assigned_id_v5() {
    let b = Broker::default_start();
    let mut c1 = b.v5("");
    let c2 = b.v5("");
    let id1 = c1
        .connack
        .properties
        .assigned_client_id
        .clone()
        .expect("Assigned Client Identifier in CONNACK");
    let id2 = c2
        .connack
        .properties
        .assigned_client_id
        .clone()
        .expect("Assigned Client Identifier in CONNACK");
    assert!(!id1.is_empty());
    assert_ne!(id1, id2, "assigned ids are unique");
    c1.subscribe_ok("assigned/t", QoS::AtLeastOnce);
    c1.publish(msg("assigned/t", "hi").qos(QoS::AtLeastOnce));
    assert_eq!(text(&c1.expect_publish_acked()), "hi");
}

/// [MQTT-3.1.3-7] A 3.1.1 client may use a zero-length client id with Clean Session = 1.
#[test]
fn empty_client_id_with_clean_session_accepted_v311() {
    let b = Broker::default_start();
    let mut c = b.v3("");
    assert_eq!(c.connack.reason_code, ReasonCode::SUCCESS);
    c.subscribe_ok("anon/t", QoS::AtMostOnce);
    c.publish0("anon/t", "x");
    assert_eq!(text(&c.expect_publish()), "x");
}

/// [MQTT-3.1.3-8] A 3.1.1 client with a zero-length client id and Clean Session = 0 gets
/// CONNACK return code 0x02 (Identifier rejected) and the connection is closed [MQTT-3.2.2-5].
#[test]
fn empty_client_id_without_clean_session_rejected_v311() {
    let b = Broker::default_start();
    let (mut c, ack) = Client::handshake(b.addr(), Opts::v3("").clean(false));
    assert_eq!(
        ack.reason_code,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        "return code 0x02: {ack:?}"
    );
    assert!(
        !ack.session_present,
        "[MQTT-3.2.2-4] session present 0 with a non-zero return code"
    );
    c.expect_closed(WAIT);
}

/// [MQTT-3.1.2-2] An unsupported protocol level: an unknown one (here 6) gets the MQTT 5 CONNACK
/// with reason code 0x84 and no properties, then the connection is closed. (Mosquitto 2.0
/// answers the 3.1.1 `20 02 00 01` instead, so this fails with `RINGMQ_TEST_PEER=mosquitto`.)
#[test]
fn unsupported_protocol_level_gets_v5_connack_0x84_then_close() {
    let b = Broker::default_start();
    let mut c = Client::open(b.addr(), ProtocolVersion::V5);
    // CONNECT, protocol "MQTT" level 6, clean start, keep alive 60, client id "x".
    c.send_raw(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 6, 0x02, 0, 60, 0, 1, b'x',
    ])
    .unwrap();
    let (bytes, closed) = c.read_raw_until_close(WAIT);
    assert_eq!(bytes, [0x20, 0x03, 0x00, 0x84, 0x00], "{bytes:02x?}");
    assert!(closed, "the connection must be closed after the CONNACK");
}

/// [MQTT-3.1.2-2] (3.1.1) Level 4 under the MQTT 3.1 name "MQIsdp" is a 3.1.x client with a
/// level the server does not accept under that name: the 3.1.1 CONNACK with return code 0x01
/// "unacceptable protocol version", then the close.
#[test]
fn mismatched_v3_protocol_level_gets_v311_connack_0x01_then_close() {
    let b = Broker::default_start();
    let mut c = Client::open(b.addr(), ProtocolVersion::V3_1_1);
    // CONNECT, protocol "MQIsdp" level 4, clean session, keep alive 60, client id "x".
    c.send_raw(&[
        0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 4, 0x02, 0, 60, 0, 1, b'x',
    ])
    .unwrap();
    let (bytes, closed) = c.read_raw_until_close(WAIT);
    assert_eq!(bytes, [0x20, 0x02, 0x00, 0x01], "{bytes:02x?}");
    assert!(closed, "the connection must be closed after the CONNACK");
}

/// [MQTT-3.2.2-19] A refusing CONNACK leaves out its Reason String when it would exceed the
/// Maximum Packet Size of the CONNECT (the test client also checks every packet against it
/// [MQTT-3.1.2-25]); with room, the Reason String comes.
#[test]
fn connack_refusal_fits_the_clients_maximum_packet_size() {
    let b = Broker::start(BrokerOpts::new().limits("max_client_id_len = 23"));
    let long = "x".repeat(24);
    let (mut c, ack) = Client::handshake(b.addr(), Opts::v5(&long).max_packet_size(16));
    assert_eq!(
        ack.reason_code,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        "{ack:?}"
    );
    assert_eq!(ack.properties.reason_string, None, "{ack:?}");
    c.expect_closed(WAIT);
    let (mut c, ack) = Client::handshake(b.addr(), Opts::v5(&long).max_packet_size(1024));
    assert_eq!(
        ack.reason_code,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        "{ack:?}"
    );
    assert!(ack.properties.reason_string.is_some(), "{ack:?}");
    c.expect_closed(WAIT);
}

/// [MQTT-3.1.2-3] The reserved flag of CONNECT must be 0, else it is a Malformed Packet: the
/// server may send CONNACK 0x81 and closes the connection.
#[test]
fn connect_reserved_flag_set_is_malformed() {
    let b = Broker::default_start();
    let mut c = Client::open(b.addr(), ProtocolVersion::V5);
    // v5 CONNECT with flags 0x03 (clean start + reserved), no properties, client id "x".
    c.send_raw(&[
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x03, 0, 60, 0, 0, 1, b'x',
    ])
    .unwrap();
    let (bytes, closed) = c.read_raw_until_close(WAIT);
    assert!(closed, "connection must be closed; received {bytes:02x?}");
    if !bytes.is_empty() {
        assert_eq!(bytes[0], 0x20, "only a CONNACK may come back: {bytes:02x?}");
        assert!(
            bytes.len() >= 4 && bytes[3] == 0x81,
            "CONNACK 0x81: {bytes:02x?}"
        );
    }
}

/// [MQTT-3.1.2-22] If the server receives nothing from a client for 1.5 × keep alive it closes
/// the connection (v5: optionally after DISCONNECT 0x8D) [MQTT-3.1.2-8] and publishes the will.
#[test]
fn keep_alive_expiry_closes_and_publishes_will() {
    let b = Broker::default_start();
    let mut watcher = b.v5("ka-watch");
    watcher.subscribe_ok("ka/will", QoS::AtLeastOnce);
    let mut quiet = b.connect(Opts::v5("ka-quiet").keep_alive(1).will(
        "ka/will",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    if let Some(d) = quiet.expect_disconnect_or_close(KEEP_ALIVE_WAIT) {
        assert_eq!(d.reason_code, ReasonCode::KEEP_ALIVE_TIMEOUT, "{d:?}");
    }
    let will = watcher.expect_publish_acked();
    assert_eq!(
        (will.topic.as_str(), text(&will).as_str()),
        ("ka/will", "gone")
    );
}

/// [MQTT-3.1.2-22] Keep alive on a 3.1.1 connection: closed after 1.5 × keep alive of silence.
#[test]
fn keep_alive_expiry_closes_v311() {
    let b = Broker::default_start();
    let mut quiet = b.connect(Opts::v3("ka3").keep_alive(1));
    quiet.expect_closed(KEEP_ALIVE_WAIT);
}

/// [MQTT-3.1.2-20] [MQTT-3.12.4-1] PINGREQ keeps a connection alive and the server answers
/// PINGRESP.
#[test]
fn pingreq_keeps_connection_alive() {
    let b = Broker::default_start();
    let mut c = b.connect(Opts::v5("pinger").keep_alive(1));
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(500));
        c.ping();
    }
    c.subscribe_ok("still/here", QoS::AtMostOnce);
}

/// [MQTT-3.1.4-3] Session takeover (v5): the existing connection gets DISCONNECT 0x8E and is
/// closed. Repeated five times on four shards so the connections cross shards.
#[test]
fn takeover_disconnects_old_connection_with_0x8e_across_shards() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut current = b.v5("taken");
    for round in 0..5 {
        let next = b.v5("taken");
        let d = current.expect_disconnect(WAIT);
        assert_eq!(
            d.reason_code,
            ReasonCode::SESSION_TAKEN_OVER,
            "round {round}: {d:?}"
        );
        current = next;
    }
    current.subscribe_ok("taken/t", QoS::AtLeastOnce);
    let mut p = b.v5("taken-pub");
    p.publish(msg("taken/t", "last").qos(QoS::AtLeastOnce));
    assert_eq!(text(&current.expect_publish_acked()), "last");
}

/// [MQTT-3.1.4-3] Takeover on 3.1.1: the existing connection is closed.
#[test]
fn takeover_closes_old_connection_v311() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut current = b.v3("taken3");
    for _ in 0..4 {
        let next = b.v3("taken3");
        current.expect_closed(WAIT);
        current = next;
    }
    current.ping();
}

/// [MQTT-3.1.4-3] [MQTT-3.2.2-3] A takeover with Clean Start = 0 resumes the session on the
/// new connection, whichever shard it lands on: subscriptions are kept and session present = 1.
#[test]
fn takeover_resumes_persistent_session_across_shards() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut current = b.connect(Opts::v5("resume-me").clean(false).session_expiry(60));
    current.subscribe_ok("resume/t", QoS::AtLeastOnce);
    let mut publisher = b.v5("resume-pub");
    for round in 0..5 {
        let mut next = b.connect(Opts::v5("resume-me").clean(false).session_expiry(60));
        assert!(
            next.session_present(),
            "round {round}: session present: {:?}",
            next.connack
        );
        let d = current.expect_disconnect(WAIT);
        assert_eq!(d.reason_code, ReasonCode::SESSION_TAKEN_OVER);
        let payload = format!("round-{round}");
        publisher.publish(msg("resume/t", payload.clone()).qos(QoS::AtLeastOnce));
        assert_eq!(text(&next.expect_publish_acked()), payload);
        // The PINGRESP proves the PUBACK was processed: otherwise the next takeover may find the
        // message unacknowledged and rightly re-send it (DUP = 1) to the new connection.
        next.ping();
        current = next;
    }
}

/// [MQTT-4.12.0-1] A CONNECT with an Authentication Method the server does not support gets
/// CONNACK 0x8C (Bad authentication method) or 0x87 (Not authorized) and the connection closes.
#[test]
fn unknown_authentication_method_refused() {
    let b = Broker::default_start();
    let (mut c, ack) =
        Client::handshake(b.addr(), Opts::v5("auth").auth("NO-SUCH-METHOD", b"data"));
    assert!(
        ack.reason_code == ReasonCode::BAD_AUTHENTICATION_METHOD
            || ack.reason_code == ReasonCode::NOT_AUTHORIZED,
        "{ack:?}"
    );
    c.expect_closed(WAIT);
}

/// [MQTT-3.2.0-2] The server sends one CONNACK only; [MQTT-3.2.2-2] a clean start on an
/// unknown client id reports session present 0, in 3.1.1 as well.
#[test]
fn clean_session_reports_no_session_v311() {
    let b = Broker::default_start();
    let c = b.connect(Opts::v3("fresh3").clean(false));
    assert!(!c.session_present());
    c.disconnect();
    let c = b.connect(Opts::v3("fresh3").clean(true));
    assert!(
        !c.session_present(),
        "clean session discards: {:?}",
        c.connack
    );
}

/// Many connections spread over four shards all complete CONNECT and exchange messages: every
/// client subscribes to its own topic and gets what another client publishes there.
#[test]
fn many_clients_across_shards_exchange_messages() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut subs: Vec<Client> = (0..12).map(|i| b.v5(&format!("many-{i}"))).collect();
    for (i, c) in subs.iter_mut().enumerate() {
        c.subscribe_ok(&format!("many/{i}"), QoS::AtLeastOnce);
    }
    let mut publishers: Vec<Client> = (0..4).map(|i| b.v3(&format!("many-pub-{i}"))).collect();
    for i in 0..subs.len() {
        let p = &mut publishers[i % 4];
        p.publish(msg(&format!("many/{i}"), format!("to-{i}")).qos(QoS::AtLeastOnce));
    }
    for (i, c) in subs.iter_mut().enumerate() {
        let m = c.expect_publish_acked();
        assert_eq!(
            (m.topic.as_str(), text(&m)),
            (format!("many/{i}").as_str(), format!("to-{i}"))
        );
    }
}

/// MQTT 3.1 (protocol name "MQIsdp", level 3) clients connect and exchange messages.
#[test]
fn mqtt_3_1_client_connects() {
    let b = Broker::default_start();
    let mut c = b.connect(Opts::new(ProtocolVersion::V3_1, "old-client"));
    c.subscribe_ok("v31/t", QoS::AtLeastOnce);
    c.publish(msg("v31/t", "mqisdp").qos(QoS::AtLeastOnce));
    assert_eq!(text(&c.expect_publish_acked()), "mqisdp");
}

/// (3.15, 4.12) An AUTH packet on a connection whose CONNECT had no Authentication Method is a
/// Protocol Error: DISCONNECT 0x82.
#[test]
fn auth_without_authentication_method_is_protocol_error() {
    let b = Broker::default_start();
    let mut c = b.v5("auth-none");
    c.send(&Packet::Auth(Auth {
        reason_code: ReasonCode::RE_AUTHENTICATE,
        properties: AuthProperties {
            authentication_method: Some(s("SCRAM-SHA-1")),
            ..AuthProperties::default()
        },
    }));
    c.expect_disconnect_reason(ReasonCode::PROTOCOL_ERROR, WAIT);
}

/// [MQTT-3.1.2-20] Keep alive is checked on any packet, not only PINGREQ: a client that publishes
/// every half second with keep alive 1 stays connected.
#[test]
fn any_packet_resets_keep_alive() {
    let b = Broker::default_start();
    let mut c = b.connect(Opts::v5("ka-busy").keep_alive(1));
    c.subscribe_ok("ka-busy/t", QoS::AtMostOnce);
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(500));
        c.publish(msg("ka-busy/t", format!("{i}")));
        assert_eq!(text(&c.expect_publish()), format!("{i}"));
    }
}

/// [MQTT-3.1.4-3] Eight connections with one client id racing on four shards: each CONNECT
/// succeeds and takes over the session, and in the end exactly one connection remains, which gets
/// the session's messages.
#[test]
fn concurrent_connects_with_one_client_id_leave_exactly_one() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let opts = || Opts::v5("storm").clean(false).session_expiry(60);
    let mut c = b.connect(opts());
    c.subscribe_ok("storm/t", QoS::AtLeastOnce);
    c.disconnect();
    let addr = b.addr();
    let (mut clients, acks): (Vec<Client>, Vec<ConnAck>) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(move || Client::handshake(addr, opts())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("connect thread"))
            .unzip()
    });
    for ack in &acks {
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{ack:?}");
    }
    let present: Vec<bool> = acks.iter().map(|a| a.session_present).collect();
    // Give the takeovers time to finish, then see who is still connected.
    std::thread::sleep(Duration::from_secs(1));
    let mut alive = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        match c.try_recv(Duration::from_millis(50)) {
            Ok(None) => alive.push(i),
            Ok(Some(Packet::Disconnect(d))) => {
                assert_eq!(d.reason_code, ReasonCode::SESSION_TAKEN_OVER, "{d:?}")
            }
            Ok(Some(other)) => panic!("connection {i}: unexpected {other:?}"),
            Err(_) => {}
        }
    }
    assert_eq!(
        alive.len(),
        1,
        "connections with client id \"storm\" still open after the race: {alive:?} \
         (CONNACK session present per connection: {present:?})"
    );
    assert!(
        present.iter().all(|p| *p),
        "[MQTT-3.2.2-3] the session existed for every CONNECT (Clean Start 0), yet session \
         present per connection: {present:?}"
    );
    let survivor = &mut clients[alive[0]];
    survivor.ping();
    let mut p = b.v5("storm-pub");
    p.publish(msg("storm/t", "to-survivor").qos(QoS::AtLeastOnce));
    assert_eq!(text(&survivor.expect_publish_acked()), "to-survivor");
}

/// Forty clients connecting at once from forty threads on four shards: every CONNECT succeeds and
/// every client gets the message its neighbour publishes to it.
#[test]
fn parallel_clients_connect_and_exchange() {
    const N: usize = 40;
    let b = Broker::start(BrokerOpts::new().shards(4));
    let addr = b.addr();
    let barrier = BoundedBarrier::new(N);
    std::thread::scope(|scope| {
        for i in 0..N {
            let barrier = &barrier;
            scope.spawn(move || {
                let opts = if i % 3 == 0 {
                    Opts::v3(&format!("par-{i}"))
                } else {
                    Opts::v5(&format!("par-{i}"))
                };
                let mut c = Client::connect(addr, opts);
                c.subscribe_ok(&format!("par/{i}"), QoS::AtLeastOnce);
                barrier.wait(); // everyone subscribed
                let to = (i + 1) % N;
                c.publish(msg(&format!("par/{to}"), format!("from-{i}")).qos(QoS::AtLeastOnce));
                let m = c.expect_publish_acked();
                assert_eq!(text(&m), format!("from-{}", (i + N - 1) % N));
            });
        }
    });
}

/// [MQTT-3.2.2-21] [MQTT-3.1.2-22] When CONNACK carries a Server Keep Alive, that is the keep alive
/// in force: a client that asked for 60 s but got 1 s is disconnected after 1.5 s of silence.
#[test]
fn server_keep_alive_is_enforced() {
    let b = Broker::start(BrokerOpts::new().limits("max_keep_alive_secs = 1"));
    let mut c = b.connect(Opts::v5("ska").keep_alive(60));
    assert_eq!(c.connack.properties.server_keep_alive_secs, Some(1));
    if let Some(d) = c.expect_disconnect_or_close(KEEP_ALIVE_WAIT) {
        assert_eq!(d.reason_code, ReasonCode::KEEP_ALIVE_TIMEOUT, "{d:?}");
    }
}

/// Graceful shutdown on SIGTERM: v5 clients get DISCONNECT 0x8B (Server shutting down), 3.1.1
/// connections are closed, the process exits with status 0.
#[test]
fn sigterm_disconnects_clients_with_0x8b() {
    let mut b = Broker::start(BrokerOpts::new().shards(4));
    let mut v5: Vec<Client> = (0..4).map(|i| b.v5(&format!("term5-{i}"))).collect();
    let mut v3 = b.v3("term3");
    let status = b.terminate(WAIT);
    for c in &mut v5 {
        let d = c.expect_disconnect(WAIT);
        assert_eq!(d.reason_code, ReasonCode::SERVER_SHUTTING_DOWN, "{d:?}");
    }
    v3.expect_closed(WAIT);
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
