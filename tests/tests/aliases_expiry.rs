//! Topic aliases in both directions, and message expiry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use ringmq_codec::*;
use ringmq_tests::*;

fn aliased(topic: &str, alias: u16, payload: &'static str) -> Publish {
    msg(topic, payload)
        .qos(QoS::AtLeastOnce)
        .props(|p| p.topic_alias = Some(nz16(alias)))
}

fn broker_with_aliases() -> Broker {
    Broker::start(BrokerOpts::new().limits("topic_alias_maximum = 10"))
}

/// [MQTT-3.3.2-12] The server accepts topic aliases up to its Topic Alias Maximum: a PUBLISH
/// with topic + alias sets the mapping, a later one with an empty topic uses it, and subscribers
/// get the real topic name [MQTT-3.3.2-11: no alias towards a client that allowed none].
#[test]
fn client_topic_alias_resolved_for_subscribers() {
    let b = broker_with_aliases();
    let mut sub = b.v5("ca-sub");
    sub.subscribe_ok("ca/#", QoS::AtLeastOnce);
    let mut p = b.v5("ca-pub");
    assert_eq!(p.connack.properties.topic_alias_maximum, Some(10));
    assert_eq!(
        p.publish(aliased("ca/first", 1, "1")),
        Some(ReasonCode::SUCCESS)
    );
    assert_eq!(p.publish(aliased("", 1, "2")), Some(ReasonCode::SUCCESS));
    // Remap alias 1 to another topic [MQTT-3.3.2.3.4].
    p.publish(aliased("ca/second", 1, "3"));
    p.publish(aliased("", 1, "4"));
    p.publish(aliased("ca/tenth", 10, "5"));
    p.publish(aliased("", 10, "6"));
    // Order is guaranteed per topic [MQTT-4.6.0-6]: the payloads 1..6 sort the pairs back.
    let mut got: Vec<(String, String)> = sub
        .expect_publishes(6)
        .iter()
        .map(|m| {
            assert_eq!(
                m.properties.topic_alias, None,
                "no alias towards a client with Topic Alias Maximum 0"
            );
            (m.topic.to_string(), text(m))
        })
        .collect();
    got.sort_by(|a, b| a.1.cmp(&b.1));
    let want = [
        ("ca/first", "1"),
        ("ca/first", "2"),
        ("ca/second", "3"),
        ("ca/second", "4"),
        ("ca/tenth", "5"),
        ("ca/tenth", "6"),
    ];
    assert_eq!(got, want.map(|(t, p)| (t.to_owned(), p.to_owned())));
}

/// [MQTT-3.3.2-9 .. 3.3.2.3.4] A Topic Alias greater than the server's Topic Alias Maximum is a
/// Topic Alias invalid error: DISCONNECT 0x94.
#[test]
fn topic_alias_above_maximum_disconnects_0x94() {
    let b = broker_with_aliases();
    let mut p = b.v5("ca-big");
    p.send(&Packet::Publish(
        msg("ca/x", "x").props(|pr| pr.topic_alias = Some(nz16(11))),
    ));
    p.expect_disconnect_reason(ReasonCode::TOPIC_ALIAS_INVALID, WAIT);
}

/// [MQTT-3.3.2-8] A Topic Alias of 0 is not permitted: DISCONNECT 0x94 (Topic Alias invalid), or
/// 0x82/0x81, which the specification does not rule out for this case.
#[test]
fn topic_alias_zero_disconnects_0x94() {
    let b = broker_with_aliases();
    let mut p = b.v5("ca-zero");
    // PUBLISH QoS 0, topic "a", properties { Topic Alias (0x23) = 0 }, payload "x".
    p.send_raw(&[0x30, 8, 0, 1, b'a', 3, 0x23, 0, 0, b'x'])
        .unwrap();
    p.expect_disconnect_one_of(
        &[
            ReasonCode::TOPIC_ALIAS_INVALID,
            ReasonCode::PROTOCOL_ERROR,
            ReasonCode::MALFORMED_PACKET,
        ],
        WAIT,
    );
}

/// (3.3.2.3.4) An empty topic with an alias that has no mapping on this connection is an error
/// (Protocol Error 0x82, or Topic Alias invalid 0x94).
#[test]
fn unmapped_topic_alias_disconnects() {
    let b = broker_with_aliases();
    let mut p = b.v5("ca-unmapped");
    p.send(&Packet::Publish(aliased("", 3, "x")));
    let d = p.expect_disconnect(WAIT);
    assert!(
        d.reason_code == ReasonCode::PROTOCOL_ERROR
            || d.reason_code == ReasonCode::TOPIC_ALIAS_INVALID,
        "{d:?}"
    );
}

/// (3.3.2.1) A zero-length topic without a Topic Alias is a Protocol Error: DISCONNECT 0x82.
#[test]
fn empty_topic_without_alias_is_protocol_error() {
    let b = broker_with_aliases();
    let mut p = b.v5("ca-empty");
    // PUBLISH QoS 0, topic "", no properties, payload "x".
    p.send_raw(&[0x30, 4, 0, 0, 0, b'x']).unwrap();
    let d = p.expect_disconnect(WAIT);
    assert!(
        d.reason_code == ReasonCode::PROTOCOL_ERROR
            || d.reason_code == ReasonCode::TOPIC_NAME_INVALID,
        "{d:?}"
    );
}

/// [MQTT-3.3.2-7] Topic alias mappings do not carry over to a new connection, even of the same
/// persistent session.
#[test]
fn topic_aliases_not_carried_to_new_connection() {
    let b = Broker::start(
        BrokerOpts::new()
            .shards(4)
            .limits("topic_alias_maximum = 10"),
    );
    let opts = || Opts::v5("ca-carry").clean(false).session_expiry(60);
    let mut p = b.connect(opts());
    p.publish(aliased("ca/carry", 2, "set"));
    p.disconnect();
    let mut p = b.connect(opts());
    p.send(&Packet::Publish(aliased("", 2, "use")));
    let d = p.expect_disconnect(WAIT);
    assert!(
        d.reason_code == ReasonCode::PROTOCOL_ERROR
            || d.reason_code == ReasonCode::TOPIC_ALIAS_INVALID,
        "{d:?}"
    );
}

/// Resolves server → client aliases like a v5 client must, checking [MQTT-3.3.2-11] (alias ≤ the
/// client's maximum) and that an empty topic only uses a known alias.
fn resolve(m: &Publish, max: u16, map: &mut HashMap<u16, String>) -> String {
    match m.properties.topic_alias {
        Some(alias) => {
            assert!(
                alias.get() <= max,
                "[MQTT-3.3.2-11] alias {alias} above the client's maximum {max}"
            );
            if m.topic.is_empty() {
                map.get(&alias.get())
                    .cloned()
                    .unwrap_or_else(|| panic!("alias {alias} used before being set: {m:?}"))
            } else {
                map.insert(alias.get(), m.topic.to_string());
                m.topic.to_string()
            }
        }
        None => {
            assert!(!m.topic.is_empty(), "empty topic without alias: {m:?}");
            m.topic.to_string()
        }
    }
}

/// [MQTT-3.3.2-10] [MQTT-3.3.2-11] Server → client topic aliases: every alias the server uses is
/// within the client's Topic Alias Maximum and resolves to the right topic; ringmq uses them for
/// repeated topics (an empty topic name appears).
#[test]
fn server_topic_aliases_within_client_maximum() {
    let b = Broker::default_start();
    let mut sub = b.connect(Opts::v5("sa-sub").topic_alias_max(2));
    sub.subscribe_ok("sa/#", QoS::AtLeastOnce);
    let mut p = b.v5("sa-pub");
    let topics = [
        "sa/a", "sa/b", "sa/a", "sa/c", "sa/b", "sa/a", "sa/a", "sa/c", "sa/d", "sa/a",
    ];
    for (i, t) in topics.iter().enumerate() {
        p.publish(msg(t, format!("{i}")).qos(QoS::AtLeastOnce));
    }
    let mut map = HashMap::new();
    let mut used_alias = false;
    // Aliases resolve in arrival order; results compare by payload, since order is guaranteed
    // per topic [MQTT-4.6.0-6], not across topics.
    let mut got: Vec<(usize, String)> = (0..topics.len())
        .map(|_| {
            let m = sub.expect_publish_acked();
            used_alias |= m.topic.is_empty();
            (text(&m).parse().unwrap(), resolve(&m, 2, &mut map))
        })
        .collect();
    got.sort();
    let want: Vec<(usize, String)> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| (i, (*t).to_owned()))
        .collect();
    assert_eq!(got, want);
    assert!(
        used_alias,
        "ringmq should send repeated topics as alias only"
    );
}

/// [MQTT-3.3.2-11] A client that sent no Topic Alias Maximum (0) never gets a Topic Alias.
#[test]
fn no_server_topic_alias_without_client_maximum() {
    let b = Broker::default_start();
    let mut sub = b.v5("sa-none");
    sub.subscribe_ok("sn/t", QoS::AtMostOnce);
    let mut p = b.v5("sa-none-pub");
    for _ in 0..5 {
        p.publish(msg("sn/t", "x").qos(QoS::AtLeastOnce));
    }
    for _ in 0..5 {
        let m = sub.expect_publish();
        assert_eq!((m.topic.as_str(), m.properties.topic_alias), ("sn/t", None));
    }
}

/// [MQTT-3.3.2-6] The Message Expiry Interval forwarded to a subscriber is the received value
/// minus the time the message waited in the server: here a queued message for an offline
/// session.
#[test]
fn message_expiry_decremented_while_queued() {
    let b = Broker::default_start();
    let opts = || Opts::v5("me-sub").clean(false).session_expiry(60);
    let mut sub = b.connect(opts());
    sub.subscribe_ok("me/t", QoS::AtLeastOnce);
    sub.disconnect();
    let mut p = b.v5("me-pub");
    p.publish(
        msg("me/t", "x")
            .qos(QoS::AtLeastOnce)
            .props(|pr| pr.message_expiry_secs = Some(30)),
    );
    std::thread::sleep(Duration::from_millis(2100));
    let mut sub = b.connect(opts());
    let m = sub.expect_publish_acked();
    let left = m
        .properties
        .message_expiry_secs
        .expect("Message Expiry Interval forwarded");
    assert!((20..=28).contains(&left), "30 s minus ≥ 2 s waited: {left}");
}

/// [MQTT-3.3.2-5] A message whose expiry interval passed while queued for an offline session is
/// not delivered; a later message without expiry is.
#[test]
fn expired_message_not_delivered() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let opts = || Opts::v5("mx-sub").clean(false).session_expiry(60);
    let mut sub = b.connect(opts());
    sub.subscribe_ok("mx/t", QoS::AtLeastOnce);
    sub.disconnect();
    let mut p = b.v5("mx-pub");
    p.publish(
        msg("mx/t", "expires")
            .qos(QoS::AtLeastOnce)
            .props(|pr| pr.message_expiry_secs = Some(1)),
    );
    p.publish(msg("mx/t", "stays").qos(QoS::AtLeastOnce));
    std::thread::sleep(Duration::from_millis(2200));
    let mut sub = b.connect(opts());
    assert_eq!(text(&sub.expect_publish_acked()), "stays");
    sub.expect_nothing(QUIET);
}

/// [MQTT-3.3.2-6] A message delivered at once carries its expiry (at most the published value);
/// a message published without expiry gets none.
#[test]
fn message_expiry_forwarded_live() {
    let b = Broker::default_start();
    let mut sub = b.v5("ml-sub");
    sub.subscribe_ok("ml/t", QoS::AtLeastOnce);
    let mut p = b.v5("ml-pub");
    p.publish(
        msg("ml/t", "with")
            .qos(QoS::AtLeastOnce)
            .props(|pr| pr.message_expiry_secs = Some(100)),
    );
    p.publish(msg("ml/t", "without").qos(QoS::AtLeastOnce));
    let m = sub.expect_publish_acked();
    let left = m.properties.message_expiry_secs.expect("expiry forwarded");
    assert!((90..=100).contains(&left), "{left}");
    assert_eq!(
        sub.expect_publish_acked().properties.message_expiry_secs,
        None
    );
}

/// [MQTT-3.3.2-12] A retained message published with a topic alias only (empty topic) is stored
/// under the topic the alias stands for.
#[test]
fn retained_message_published_through_alias_stored_under_topic() {
    let b = broker_with_aliases();
    let mut p = b.v5("ra-pub");
    p.publish(aliased("ra/real/topic", 4, "first").retain(true));
    p.publish(aliased("", 4, "through-alias").retain(true));
    let mut s = b.v5("ra-sub");
    s.subscribe_ok("ra/#", QoS::AtLeastOnce);
    let m = s.expect_publish_acked();
    assert_eq!(
        (m.topic.as_str(), text(&m).as_str(), m.retain),
        ("ra/real/topic", "through-alias", true)
    );
    s.expect_nothing(QUIET);
}

/// [MQTT-3.3.2-10] [MQTT-3.3.2-11] Server → client aliases stay consistent between retained
/// messages sent at subscribe and live messages that follow.
#[test]
fn server_topic_aliases_consistent_for_retained_and_live() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut p = b.v5("sar-pub");
    for t in ["sar/a", "sar/b", "sar/c"] {
        p.publish(
            msg(t, format!("retained {t}"))
                .qos(QoS::AtLeastOnce)
                .retain(true),
        );
    }
    let mut sub = b.connect(Opts::v5("sar-sub").topic_alias_max(2));
    sub.subscribe_ok("sar/+", QoS::AtLeastOnce);
    let mut map = HashMap::new();
    let mut got: Vec<(String, String)> = (0..3)
        .map(|_| {
            let m = sub.expect_publish_acked();
            (resolve(&m, 2, &mut map), text(&m))
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("sar/a", "retained sar/a"),
            ("sar/b", "retained sar/b"),
            ("sar/c", "retained sar/c")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let live = ["sar/c", "sar/a", "sar/a", "sar/b", "sar/c", "sar/b"];
    for (i, t) in live.iter().enumerate() {
        p.publish(msg(t, format!("{i}")).qos(QoS::AtLeastOnce));
    }
    let mut got: Vec<(usize, String)> = (0..live.len())
        .map(|_| {
            let m = sub.expect_publish_acked();
            (text(&m).parse().unwrap(), resolve(&m, 2, &mut map))
        })
        .collect();
    got.sort();
    let want: Vec<(usize, String)> = live
        .iter()
        .enumerate()
        .map(|(i, t)| (i, (*t).to_owned()))
        .collect();
    assert_eq!(got, want);
}

/// [MQTT-3.3.2-5] A message that expires while it waits behind a full Receive Maximum window of a
/// connected client is not delivered once the window opens.
#[test]
fn message_expiring_in_window_queue_not_delivered() {
    let b = Broker::default_start();
    let mut sub = b.connect(Opts::v5("mw-sub").receive_max(1));
    sub.subscribe_ok("mw/t", QoS::AtLeastOnce);
    let mut p = b.v5("mw-pub");
    p.publish(msg("mw/t", "holds-the-window").qos(QoS::AtLeastOnce));
    p.publish(
        msg("mw/t", "expires-waiting")
            .qos(QoS::AtLeastOnce)
            .props(|pr| pr.message_expiry_secs = Some(1)),
    );
    p.publish(msg("mw/t", "no-expiry").qos(QoS::AtLeastOnce));
    let first = sub.expect_publish();
    assert_eq!(text(&first), "holds-the-window");
    std::thread::sleep(Duration::from_millis(2200));
    sub.ack(&first);
    assert_eq!(text(&sub.expect_publish_acked()), "no-expiry");
    sub.expect_nothing(QUIET);
}
