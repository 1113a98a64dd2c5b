//! Will messages: when they are published, when not, delay, properties, retain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ringmq_codec::*;
use ringmq_tests::*;

fn watcher(b: &Broker, id: &str, filter: &str) -> Client {
    let mut w = b.v5(id);
    w.subscribe_ok(filter, QoS::AtLeastOnce);
    w
}

/// [MQTT-3.1.2-8] The will is published when the network connection closes without DISCONNECT.
#[test]
fn will_published_on_network_drop() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut w = watcher(&b, "wd-watch", "wd/+");
    let c = b.connect(Opts::v5("wd-client").will("wd/status", "offline", QoS::AtLeastOnce, false));
    c.drop_connection();
    let m = w.expect_publish_acked();
    assert_eq!(
        (m.topic.as_str(), text(&m).as_str(), m.qos_pid.qos()),
        ("wd/status", "offline", QoS::AtLeastOnce)
    );
}

/// [MQTT-3.1.2-8] 3.1.1 client: will published on network drop.
#[test]
fn will_published_on_network_drop_v311() {
    let b = Broker::default_start();
    let mut w = watcher(&b, "wd3-watch", "wd3/status");
    let c =
        b.connect(Opts::v3("wd3-client").will("wd3/status", "offline3", QoS::AtMostOnce, false));
    c.drop_connection();
    assert_eq!(text(&w.expect_publish()), "offline3");
}

/// [MQTT-3.1.2-10] [MQTT-3.14.4-3] A DISCONNECT with reason 0x00 discards the will.
#[test]
fn will_not_published_on_normal_disconnect() {
    let b = Broker::default_start();
    let mut w = watcher(&b, "wn-watch", "wn/status");
    let c = b.connect(Opts::v5("wn-client").will("wn/status", "offline", QoS::AtLeastOnce, false));
    c.disconnect();
    let mut marker = b.v5("wn-marker");
    marker.publish(msg("wn/status", "marker").qos(QoS::AtLeastOnce));
    assert_eq!(
        text(&w.expect_publish_acked()),
        "marker",
        "the will must not be published"
    );
    w.expect_nothing(QUIET);
}

/// [MQTT-3.1.2-10] 3.1.1: DISCONNECT discards the will.
#[test]
fn will_not_published_on_disconnect_v311() {
    let b = Broker::default_start();
    let mut w = watcher(&b, "wn3-watch", "wn3/status");
    let c =
        b.connect(Opts::v3("wn3-client").will("wn3/status", "offline", QoS::AtLeastOnce, false));
    c.disconnect();
    w.expect_nothing(QUIET);
}

/// [MQTT-3.14.2-1 table 3-10] DISCONNECT with reason 0x04 (Disconnect with Will Message)
/// publishes the will.
#[test]
fn will_published_on_disconnect_with_will_0x04() {
    let b = Broker::default_start();
    let mut w = watcher(&b, "w4-watch", "w4/status");
    let c = b.connect(Opts::v5("w4-client").will(
        "w4/status",
        "bye-with-will",
        QoS::AtLeastOnce,
        false,
    ));
    c.disconnect_with(
        ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        DisconnectProperties::default(),
    );
    assert_eq!(text(&w.expect_publish_acked()), "bye-with-will");
}

/// [MQTT-3.1.2-8] A server-initiated close for a protocol violation publishes the will.
#[test]
fn will_published_when_server_closes_on_protocol_error() {
    let b = Broker::default_start();
    let mut w = watcher(&b, "wp-watch", "wp/status");
    let mut c =
        b.connect(Opts::v5("wp-client").will("wp/status", "violated", QoS::AtLeastOnce, false));
    c.send(&Opts::v5("wp-client").into_packet()); // a second CONNECT [MQTT-3.1.0-2]
    c.expect_disconnect_or_close(WAIT);
    assert_eq!(text(&w.expect_publish_acked()), "violated");
}

/// [MQTT-3.1.2-17] A will with Will Retain = 1 is published as a retained message.
#[test]
fn will_retain_flag_stores_retained_message() {
    let b = Broker::default_start();
    let c =
        b.connect(Opts::v5("wr-client").will("wr/status", "retained-will", QoS::AtLeastOnce, true));
    let mut w = watcher(&b, "wr-watch", "wr/status");
    c.drop_connection();
    assert_eq!(text(&w.expect_publish_acked()), "retained-will");
    let mut late = b.v5("wr-late");
    late.subscribe_ok("wr/status", QoS::AtLeastOnce);
    let m = late.expect_publish_acked();
    assert_eq!((text(&m).as_str(), m.retain), ("retained-will", true));
}

/// [MQTT-3.1.3-9] With a Will Delay Interval, a reconnection of the session before the delay
/// ends cancels the will.
#[test]
fn will_delay_cancelled_by_reconnect() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut w = watcher(&b, "wdl-watch", "wdl/status");
    let opts = || {
        Opts::v5("wdl-client")
            .clean(false)
            .session_expiry(60)
            .will("wdl/status", "late", QoS::AtLeastOnce, false)
            .will_delay(2)
    };
    let c = b.connect(opts());
    c.drop_connection();
    std::thread::sleep(Duration::from_millis(300));
    let c = b.connect(opts());
    assert!(c.session_present());
    // Wait past the delay: the will must not come.
    w.expect_nothing(Duration::from_millis(3000));
    c.disconnect();
}

/// [MQTT-3.1.3-9] [MQTT-3.1.2-8] A delayed will is published once the delay passes without a
/// reconnection, and not before (delay 3 s, nothing within the first second).
#[test]
fn will_delay_publishes_after_delay() {
    let b = Broker::default_start();
    let mut w = watcher(&b, "wdp-watch", "wdp/status");
    let c = b.connect(
        Opts::v5("wdp-client")
            .session_expiry(60)
            .will("wdp/status", "delayed", QoS::AtLeastOnce, false)
            .will_delay(3),
    );
    c.drop_connection();
    w.expect_nothing(Duration::from_millis(1000));
    let m = match w.recv(Duration::from_secs(8)) {
        Some(Packet::Publish(m)) => m,
        other => panic!("expected the delayed will, got {other:?}"),
    };
    w.ack(&m);
    assert_eq!(text(&m), "delayed");
}

/// [MQTT-3.1.3-9 / 3.1.2.5] The will is published when the session ends, even if the will
/// delay is longer than the session expiry.
#[test]
fn will_published_when_session_ends_before_delay() {
    let b = Broker::default_start();
    let mut w = watcher(&b, "wse-watch", "wse/status");
    let c = b.connect(
        Opts::v5("wse-client")
            .session_expiry(0)
            .will("wse/status", "session-ended", QoS::AtLeastOnce, false)
            .will_delay(3600),
    );
    c.drop_connection();
    assert_eq!(text(&w.expect_publish_acked()), "session-ended");
}

/// [MQTT-3.1.3-10 .. 3.1.3.2] Will properties (content type, response topic, correlation data,
/// user properties, payload format) are forwarded with the will.
#[test]
fn will_properties_forwarded() {
    let b = Broker::default_start();
    let mut w = watcher(&b, "wpr-watch", "wpr/status");
    let c = b.connect(
        Opts::v5("wpr-client")
            .will("wpr/status", "{}", QoS::AtLeastOnce, false)
            .will_props(|p| {
                p.content_type = Some(s("application/json"));
                p.response_topic = Some(s("wpr/reply"));
                p.correlation_data = Some(bytes::Bytes::from_static(b"\x01\x02"));
                p.user_properties = user_props(&[("a", "1"), ("b", "2")]);
                p.payload_format_utf8 = Some(true);
            }),
    );
    c.drop_connection();
    let m = w.expect_publish_acked();
    let p = &m.properties;
    assert_eq!(
        p.content_type.as_ref().map(Str::as_str),
        Some("application/json")
    );
    assert_eq!(
        p.response_topic.as_ref().map(Str::as_str),
        Some("wpr/reply")
    );
    assert_eq!(p.correlation_data.as_deref(), Some(&b"\x01\x02"[..]));
    assert_eq!(
        pairs(&p.user_properties),
        [("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    assert_eq!(p.payload_format_utf8, Some(true));
}

/// [MQTT-3.1.4-3] A takeover closes the old connection without DISCONNECT from its client:
/// with no will delay its will is published.
#[test]
fn will_published_on_takeover() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut w = watcher(&b, "wt-watch", "wt/status");
    let mut old =
        b.connect(Opts::v5("wt-client").will("wt/status", "taken-over", QoS::AtLeastOnce, false));
    let _new = b.v5("wt-client");
    old.expect_disconnect_or_close(WAIT);
    assert_eq!(text(&w.expect_publish_acked()), "taken-over");
}

/// [MQTT-3.1.2-8] The will reaches a subscription made after its client connected, whichever
/// shards the two connections are on (ten rounds on four shards, retained and not).
#[test]
fn will_reaches_subscription_made_after_client_connected() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    for round in 0..10 {
        let topic = format!("wl/{round}");
        let retain = round % 2 == 0;
        let c = b.connect(Opts::v5(&format!("wl-client-{round}")).will(
            &topic,
            "gone",
            QoS::AtLeastOnce,
            retain,
        ));
        let mut w = watcher(&b, &format!("wl-watch-{round}"), &topic);
        c.drop_connection();
        match w.recv(WAIT) {
            Some(Packet::Publish(m)) => {
                w.ack(&m);
                assert_eq!(text(&m), "gone");
            }
            other => panic!("round {round} (will retain {retain}): will not delivered: {other:?}"),
        }
    }
}

/// [MQTT-3.1.3-9] A takeover of a persistent session (Clean Start = 0) before the Will Delay
/// Interval passed is a new connection to the session: the old connection's will is not sent.
#[test]
fn will_delay_cancelled_by_takeover() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut w = watcher(&b, "wdt-watch", "wdt/status");
    let opts = || {
        Opts::v5("wdt-client")
            .clean(false)
            .session_expiry(60)
            .will("wdt/status", "should-not-appear", QoS::AtLeastOnce, false)
            .will_delay(2)
    };
    let mut old = b.connect(opts());
    let new = b.connect(opts());
    assert!(new.session_present());
    let d = old.expect_disconnect(WAIT);
    assert_eq!(d.reason_code, ReasonCode::SESSION_TAKEN_OVER);
    w.expect_nothing(Duration::from_millis(3000));
    new.disconnect();
}
