//! Sessions: clean start, session present, persistence, offline queueing, expiry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ringmq_codec::*;
use ringmq_tests::*;

/// [MQTT-3.1.2-4] [MQTT-3.2.2-2] Clean Start = 1 discards an existing session: session present
/// is 0 and the old subscriptions are gone.
#[test]
fn clean_start_discards_existing_session() {
    let b = Broker::default_start();
    let mut c = b.connect(Opts::v5("cs").clean(false).session_expiry(60));
    c.subscribe_ok("cs/t", QoS::AtLeastOnce);
    c.disconnect();
    let mut c = b.connect(Opts::v5("cs").clean(true).session_expiry(60));
    assert!(!c.session_present(), "{:?}", c.connack);
    let mut p = b.v5("cs-pub");
    p.publish(msg("cs/t", "x").qos(QoS::AtLeastOnce));
    c.expect_nothing(QUIET);
}

/// [MQTT-3.1.2-5] [MQTT-3.2.2-3] Clean Start = 0 with an existing session resumes it: session
/// present = 1 and its subscriptions still deliver.
#[test]
fn persistent_session_resumed_with_subscriptions() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut c = b.connect(Opts::v5("ps").clean(false).session_expiry(60));
    assert!(!c.session_present());
    c.subscribe_ok("ps/t", QoS::AtLeastOnce);
    c.disconnect();
    for round in 0..4 {
        let mut c = b.connect(Opts::v5("ps").clean(false).session_expiry(60));
        assert!(c.session_present(), "round {round}: {:?}", c.connack);
        let mut p = b.v5(&format!("ps-pub-{round}"));
        p.publish(msg("ps/t", format!("r{round}")).qos(QoS::AtLeastOnce));
        assert_eq!(text(&c.expect_publish_acked()), format!("r{round}"));
        c.disconnect();
    }
}

/// [MQTT-3.1.2-5] [MQTT-4.1.0-1] QoS 1 and 2 messages published while a persistent-session
/// client is offline are queued and delivered, in order, when it reconnects; on four shards so
/// publisher and subscriber likely differ in shard.
#[test]
fn offline_messages_queued_and_delivered_on_reconnect() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut c = b.connect(Opts::v5("off").clean(false).session_expiry(60));
    c.subscribe_ok("off/t", QoS::ExactlyOnce);
    c.disconnect();
    let mut p = b.v5("off-pub");
    for i in 0..10 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        p.publish(msg("off/t", format!("m{i}")).qos(qos));
    }
    let mut c = b.connect(Opts::v5("off").clean(false).session_expiry(60));
    assert!(c.session_present());
    // Order is guaranteed per topic and QoS [MQTT-4.6.0-6]: check each QoS's sequence.
    let got = c.expect_publishes(10);
    for (qos, first) in [(QoS::AtLeastOnce, 0), (QoS::ExactlyOnce, 1)] {
        let seq: Vec<String> = got
            .iter()
            .filter(|m| m.qos_pid.qos() == qos)
            .map(text)
            .collect();
        let want: Vec<String> = (first..10).step_by(2).map(|i| format!("m{i}")).collect();
        assert_eq!(seq, want, "{qos:?}");
    }
    c.expect_nothing(QUIET);
}

/// 3.1.1 Clean Session = 0: messages are queued while offline and the session is present.
#[test]
fn offline_messages_queued_v311() {
    let b = Broker::default_start();
    let mut c = b.connect(Opts::v3("off3").clean(false));
    c.subscribe_ok("off3/t", QoS::AtLeastOnce);
    c.disconnect();
    let mut p = b.v3("off3-pub");
    p.publish(msg("off3/t", "while-away").qos(QoS::AtLeastOnce));
    let mut c = b.connect(Opts::v3("off3").clean(false));
    assert!(c.session_present());
    assert_eq!(text(&c.expect_publish_acked()), "while-away");
}

/// [MQTT-3.1.2-23] Session Expiry Interval 0 (or absent): the session ends when the connection
/// closes; a reconnection with Clean Start = 0 finds no session and no queued messages.
#[test]
fn session_expiry_zero_drops_state() {
    let b = Broker::default_start();
    let mut c = b.connect(Opts::v5("se0").clean(false));
    c.subscribe_ok("se0/t", QoS::AtLeastOnce);
    c.disconnect();
    let mut p = b.v5("se0-pub");
    p.publish(msg("se0/t", "lost").qos(QoS::AtLeastOnce));
    let mut c = b.connect(Opts::v5("se0").clean(false));
    assert!(!c.session_present(), "{:?}", c.connack);
    c.expect_nothing(QUIET);
}

/// [MQTT-3.1.2-23] A session expires once its Session Expiry Interval passes after the
/// connection closed.
#[test]
fn session_expires_after_interval() {
    let b = Broker::default_start();
    let mut c = b.connect(Opts::v5("se1").clean(false).session_expiry(1));
    c.subscribe_ok("se1/t", QoS::AtLeastOnce);
    c.disconnect();
    std::thread::sleep(Duration::from_millis(2500));
    let c = b.connect(Opts::v5("se1").clean(false).session_expiry(1));
    assert!(
        !c.session_present(),
        "expired session must be gone: {:?}",
        c.connack
    );
}

/// (3.14.2.2.2) The client can change the Session Expiry Interval in DISCONNECT: set to 0, the
/// session ends at disconnect.
#[test]
fn disconnect_can_set_session_expiry_to_zero() {
    let b = Broker::default_start();
    let mut c = b.connect(Opts::v5("sed").clean(false).session_expiry(60));
    c.subscribe_ok("sed/t", QoS::AtLeastOnce);
    c.disconnect_with(
        ReasonCode::NORMAL_DISCONNECTION,
        DisconnectProperties {
            session_expiry_secs: Some(0),
            ..DisconnectProperties::default()
        },
    );
    let c = b.connect(Opts::v5("sed").clean(false).session_expiry(60));
    assert!(!c.session_present(), "{:?}", c.connack);
}

/// (3.14.2.2.2) Setting a non-zero Session Expiry Interval in DISCONNECT when CONNECT had 0 is
/// a Protocol Error: the session must not be kept (the server may answer DISCONNECT 0x82).
#[test]
fn disconnect_cannot_raise_session_expiry_from_zero() {
    let b = Broker::default_start();
    let mut c = b.connect(Opts::v5("sez").clean(false));
    c.subscribe_ok("sez/t", QoS::AtLeastOnce);
    c.send(&Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::NORMAL_DISCONNECTION,
        properties: DisconnectProperties {
            session_expiry_secs: Some(60),
            ..DisconnectProperties::default()
        },
    }));
    if let Some(d) = c.expect_disconnect_or_close(WAIT) {
        assert_eq!(d.reason_code, ReasonCode::PROTOCOL_ERROR);
    }
    let c = b.connect(Opts::v5("sez").clean(false));
    assert!(!c.session_present(), "{:?}", c.connack);
}

/// ringmq limit (STYLE.md: a limit on everything): the per-session queue is bounded (max_queued_messages = 5): of 20
/// messages published while offline, at most 5 are delivered, and the broker stays healthy.
#[test]
fn offline_queue_bounded_by_max_queued_messages() {
    let b = Broker::start(BrokerOpts::new().limits("max_queued_messages = 5"));
    let mut c = b.connect(Opts::v5("qlim").clean(false).session_expiry(60));
    c.subscribe_ok("qlim/t", QoS::AtLeastOnce);
    c.disconnect();
    let mut p = b.v5("qlim-pub");
    for i in 0..20 {
        p.publish(msg("qlim/t", format!("{i}")).qos(QoS::AtLeastOnce));
    }
    let mut c = b.connect(Opts::v5("qlim").clean(false).session_expiry(60));
    let mut n = 0;
    while let Some(packet) = c.recv(QUIET) {
        let Packet::Publish(m) = packet else {
            panic!("unexpected {packet:?}")
        };
        c.ack(&m);
        n += 1;
    }
    assert!(
        (1..=5).contains(&n),
        "delivered {n} queued messages, limit 5"
    );
    p.publish(msg("qlim/t", "after").qos(QoS::AtLeastOnce));
    assert_eq!(text(&c.expect_publish_acked()), "after");
}

/// [MQTT-4.1.0-1] A resumed session restores every subscription of a multi-filter SUBSCRIBE
/// with its own granted QoS.
#[test]
fn session_restores_multiple_subscriptions() {
    let b = Broker::default_start();
    let mut c = b.connect(Opts::v5("multi").clean(false).session_expiry(60));
    c.subscribe_with(
        &[
            ("multi/a", sub_opts(QoS::AtMostOnce)),
            ("multi/b/#", sub_opts(QoS::AtLeastOnce)),
        ],
        None,
    );
    c.disconnect();
    let mut c = b.connect(Opts::v5("multi").clean(false).session_expiry(60));
    assert!(c.session_present());
    let mut p = b.v5("multi-pub");
    p.publish(msg("multi/a", "a").qos(QoS::AtLeastOnce));
    assert_eq!(text(&c.expect_publish_acked()), "a");
    p.publish(msg("multi/b/c", "bc").qos(QoS::AtLeastOnce));
    let m = c.expect_publish_acked();
    assert_eq!(
        (text(&m).as_str(), m.qos_pid.qos()),
        ("bc", QoS::AtLeastOnce)
    );
}

/// (3.10.4) An UNSUBSCRIBE is part of the session state: after reconnecting to
/// the persistent session the removed subscription stays removed, the other one stays.
#[test]
fn unsubscribe_persists_in_session() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let opts = || Opts::v5("unsub-ps").clean(false).session_expiry(60);
    let mut c = b.connect(opts());
    c.subscribe_ok("ups/keep", QoS::AtLeastOnce);
    c.subscribe_ok("ups/drop", QoS::AtLeastOnce);
    c.unsubscribe(&["ups/drop"]);
    c.disconnect();
    let mut c = b.connect(opts());
    assert!(c.session_present());
    let mut p = b.v5("unsub-ps-pub");
    p.publish(msg("ups/drop", "no").qos(QoS::AtLeastOnce));
    p.publish(msg("ups/keep", "yes").qos(QoS::AtLeastOnce));
    assert_eq!(text(&c.expect_publish_acked()), "yes");
    c.expect_nothing(QUIET);
}

/// [MQTT-4.1.0-1] Queued messages are delivered before newer ones after reconnect: the session's
/// queue keeps publish order across the offline period.
#[test]
fn queued_messages_precede_new_ones_after_reconnect() {
    let b = Broker::default_start();
    let opts = || Opts::v5("qorder").clean(false).session_expiry(60);
    let mut c = b.connect(opts());
    c.subscribe_ok("qorder/t", QoS::AtLeastOnce);
    c.disconnect();
    let mut p = b.v5("qorder-pub");
    for i in 0..3 {
        p.publish(msg("qorder/t", format!("old{i}")).qos(QoS::AtLeastOnce));
    }
    let mut c = b.connect(opts());
    for i in 0..3 {
        p.publish(msg("qorder/t", format!("new{i}")).qos(QoS::AtLeastOnce));
    }
    let got: Vec<String> = c.expect_publishes(6).iter().map(text).collect();
    assert_eq!(got, ["old0", "old1", "old2", "new0", "new1", "new2"]);
}

/// [MQTT-4.3.2] [MQTT-4.4.0-1] No QoS 1 message is lost while a persistent session moves between
/// connections (and shards): a publisher streams 300 QoS 1 messages while the subscriber's session
/// is taken over five times; every message reaches one of its connections at least once.
#[test]
fn no_qos1_loss_across_repeated_takeovers() {
    const N: usize = 300;
    let b = Broker::start(BrokerOpts::new().shards(4));
    let opts = || Opts::v5("mover").clean(false).session_expiry(60);
    let mut sub = b.connect(opts());
    sub.subscribe_ok("mover/t", QoS::AtLeastOnce);
    let mut publisher = b.v5("mover-pub");
    let mut seen = std::collections::BTreeSet::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..N {
                publisher.publish(msg("mover/t", format!("{i}")).qos(QoS::AtLeastOnce));
                if i % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        for _ in 0..5 {
            // Read a few, then hand the session to a new connection.
            for _ in 0..20 {
                match sub.try_recv(Duration::from_millis(200)) {
                    Ok(Some(Packet::Publish(m))) => {
                        sub.ack(&m);
                        seen.insert(text(&m).parse::<usize>().unwrap());
                    }
                    Ok(Some(other)) => panic!("unexpected {other:?}"),
                    Ok(None) => break,
                    Err(e) => panic!("connection failed before its takeover: {e:?}"),
                }
            }
            let next = b.connect(opts());
            assert!(next.session_present(), "{:?}", next.connack);
            // What the old connection still gets before its DISCONNECT counts too (not acked).
            loop {
                match sub.try_recv(WAIT) {
                    Ok(Some(Packet::Publish(m))) => {
                        seen.insert(text(&m).parse::<usize>().unwrap());
                    }
                    Ok(Some(Packet::Disconnect(d))) => {
                        assert_eq!(d.reason_code, ReasonCode::SESSION_TAKEN_OVER);
                    }
                    Ok(Some(other)) => panic!("unexpected {other:?}"),
                    Ok(None) => panic!("old connection not closed after takeover"),
                    Err(RecvError::Closed) => break,
                    Err(e) => panic!("old connection failed: {e:?}"),
                }
            }
            sub = next;
        }
    });
    let deadline = std::time::Instant::now() + WAIT;
    while seen.len() < N && std::time::Instant::now() < deadline {
        if let Some(packet) = sub.recv(Duration::from_millis(200)) {
            let Packet::Publish(m) = packet else {
                panic!("unexpected {packet:?}")
            };
            sub.ack(&m);
            seen.insert(text(&m).parse::<usize>().unwrap());
        }
    }
    let missing: Vec<usize> = (0..N).filter(|i| !seen.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "QoS 1 messages lost across takeovers: {missing:?}"
    );
}

/// [MQTT-3.2.2-2] [MQTT-3.2.2-3] Reconnecting right around the moment a session expires: whatever
/// the broker decides, CONNACK and state agree: session present = 1 means the subscription still
/// delivers, 0 means it is gone (six rounds around a 1 s expiry, on four shards).
#[test]
fn session_present_agrees_with_state_at_expiry_boundary() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut p = b.v5("edge-pub");
    for (round, wait_ms) in [900u64, 960, 1000, 1040, 1100, 980].into_iter().enumerate() {
        let id = format!("edge-{round}");
        let topic = format!("edge/{round}");
        let mut c = b.connect(Opts::v5(&id).clean(false).session_expiry(1));
        c.subscribe_ok(&topic, QoS::AtLeastOnce);
        c.disconnect();
        std::thread::sleep(Duration::from_millis(wait_ms));
        let mut c = b.connect(Opts::v5(&id).clean(false).session_expiry(60));
        let present = c.session_present();
        p.publish(msg(&topic, "probe").qos(QoS::AtLeastOnce));
        if present {
            match c.recv(WAIT) {
                Some(Packet::Publish(m)) => c.ack(&m),
                other => panic!(
                    "round {round} ({wait_ms} ms): session present = 1 but its subscription \
                     does not deliver: {other:?}"
                ),
            }
        } else if let Some(other) = c.recv(QUIET) {
            panic!(
                "round {round} ({wait_ms} ms): session present = 0 but the old subscription \
                 delivered: {other:?}"
            );
        }
    }
}

/// Limit max_queued_bytes = 1000 (payload + topic bytes per session): of ten 300-byte messages
/// published while offline, at most three are kept, and the session works afterwards.
#[test]
fn offline_queue_bounded_by_max_queued_bytes() {
    let b = Broker::start(BrokerOpts::new().limits("max_queued_bytes = 1000"));
    let opts = || Opts::v5("qbytes").clean(false).session_expiry(60);
    let mut c = b.connect(opts());
    c.subscribe_ok("qb/t", QoS::AtLeastOnce);
    c.disconnect();
    let mut p = b.v5("qbytes-pub");
    for i in 0..10u8 {
        p.publish(msg("qb/t", vec![b'0' + i; 300]).qos(QoS::AtLeastOnce));
    }
    let mut c = b.connect(opts());
    let mut n = 0;
    while let Some(packet) = c.recv(QUIET) {
        let Packet::Publish(m) = packet else {
            panic!("unexpected {packet:?}")
        };
        c.ack(&m);
        n += 1;
    }
    assert!(
        (1..=3).contains(&n),
        "{n} messages of 300 bytes kept, limit 1000 bytes"
    );
    p.publish(msg("qb/t", "after").qos(QoS::AtLeastOnce));
    assert_eq!(text(&c.expect_publish_acked()), "after");
}
