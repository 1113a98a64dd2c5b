//! PUBLISH properties forwarded unchanged: user properties, content type, response topic,
//! correlation data, payload format indicator; request/response across shards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use ringmq_codec::*;
use ringmq_tests::*;

/// [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18]
/// [MQTT-3.3.2-20] The server forwards Payload Format Indicator, Response Topic, Correlation
/// Data, User Properties (same order, duplicates kept) and Content Type unchanged.
#[test]
fn publish_properties_forwarded_unchanged() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut subs: Vec<Client> = (0..3).map(|i| b.v5(&format!("pf-sub-{i}"))).collect();
    for (i, s) in subs.iter_mut().enumerate() {
        let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][i];
        s.subscribe_ok("pf/t", qos);
    }
    let mut p = b.v5("pf-pub");
    let props = |pr: &mut PublishProperties| {
        pr.payload_format_utf8 = Some(true);
        pr.response_topic = Some(s("pf/reply/42"));
        pr.correlation_data = Some(Bytes::from_static(&[0, 1, 2, 0xFF]));
        pr.user_properties = user_props(&[
            ("z", "last"),
            ("a", "first"),
            ("a", "again"),
            ("ünï", "cödé"),
        ]);
        pr.content_type = Some(s("application/json; charset=utf-8"));
    };
    p.publish(msg("pf/t", "{\"v\":1}").qos(QoS::ExactlyOnce).props(props));
    for sub in &mut subs {
        let m = sub.expect_publish_acked();
        let pr = &m.properties;
        assert_eq!(pr.payload_format_utf8, Some(true));
        assert_eq!(
            pr.response_topic.as_ref().map(Str::as_str),
            Some("pf/reply/42")
        );
        assert_eq!(pr.correlation_data.as_deref(), Some(&[0u8, 1, 2, 0xFF][..]));
        let want: Vec<(String, String)> = [
            ("z", "last"),
            ("a", "first"),
            ("a", "again"),
            ("ünï", "cödé"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(
            pairs(&pr.user_properties),
            want,
            "[MQTT-3.3.2-18] order kept"
        );
        assert_eq!(
            pr.content_type.as_ref().map(Str::as_str),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(text(&m), "{\"v\":1}");
    }
}

/// Properties of a retained message are kept with it and delivered to a later subscriber.
#[test]
fn retained_message_keeps_properties() {
    let b = Broker::default_start();
    let mut p = b.v5("rp-pub");
    p.publish(
        msg("rp/t", "r")
            .qos(QoS::AtLeastOnce)
            .retain(true)
            .props(|pr| {
                pr.user_properties = user_props(&[("k", "v")]);
                pr.content_type = Some(s("text/plain"));
                pr.response_topic = Some(s("rp/reply"));
                pr.correlation_data = Some(Bytes::from_static(b"cd"));
            }),
    );
    let mut sub = b.v5("rp-sub");
    sub.subscribe_ok("rp/t", QoS::AtLeastOnce);
    let m = sub.expect_publish_acked();
    assert!(m.retain);
    assert_eq!(
        pairs(&m.properties.user_properties),
        [("k".to_owned(), "v".to_owned())]
    );
    assert_eq!(
        m.properties.content_type.as_ref().map(Str::as_str),
        Some("text/plain")
    );
    assert_eq!(
        m.properties.response_topic.as_ref().map(Str::as_str),
        Some("rp/reply")
    );
    assert_eq!(m.properties.correlation_data.as_deref(), Some(&b"cd"[..]));
}

/// (4.10) Request / response: a requester subscribes to its response topic, a responder on
/// another shard answers on the Response Topic with the Correlation Data; the requester gets the
/// answer with the same correlation data.
#[test]
fn request_response_round_trip_across_shards() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut responder = b.v5("rr-responder");
    responder.subscribe_ok("rr/requests", QoS::AtLeastOnce);
    let mut requester = b.v5("rr-requester");
    requester.subscribe_ok("rr/responses/requester", QoS::AtLeastOnce);
    for i in 0..4u8 {
        requester.publish(
            msg("rr/requests", format!("q{i}"))
                .qos(QoS::AtLeastOnce)
                .props(|pr| {
                    pr.response_topic = Some(s("rr/responses/requester"));
                    pr.correlation_data = Some(Bytes::from(vec![i, 0xAB]));
                }),
        );
        let req = responder.expect_publish_acked();
        let reply_to = req
            .properties
            .response_topic
            .clone()
            .expect("response topic forwarded");
        let corr = req
            .properties
            .correlation_data
            .clone()
            .expect("correlation data forwarded");
        responder.publish(
            msg(reply_to.as_str(), format!("a{i}"))
                .qos(QoS::AtLeastOnce)
                .props(|pr| pr.correlation_data = Some(corr)),
        );
        let resp = requester.expect_publish_acked();
        assert_eq!(text(&resp), format!("a{i}"));
        assert_eq!(
            resp.properties.correlation_data.as_deref(),
            Some(&[i, 0xAB][..])
        );
    }
}

/// [MQTT-3.3.2-17] User properties on QoS 0 messages too, and messages without properties get
/// none added.
#[test]
fn user_properties_on_qos0_and_none_added() {
    let b = Broker::default_start();
    let mut sub = b.v5("up0-sub");
    sub.subscribe_ok("up0/t", QoS::AtMostOnce);
    let mut p = b.v5("up0-pub");
    p.publish(msg("up0/t", "with").props(|pr| pr.user_properties = user_props(&[("x", "1")])));
    p.publish(msg("up0/t", "without"));
    let m = sub.expect_publish();
    assert_eq!(
        pairs(&m.properties.user_properties),
        [("x".to_owned(), "1".to_owned())]
    );
    let m = sub.expect_publish();
    assert_eq!(text(&m), "without");
    assert!(m.properties.user_properties.is_empty());
    assert_eq!(m.properties.content_type, None);
    assert_eq!(m.properties.response_topic, None);
    assert_eq!(m.properties.correlation_data, None);
    assert_eq!(m.properties.payload_format_utf8, None);
}
