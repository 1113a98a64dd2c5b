//! SUBSCRIBE / UNSUBSCRIBE: acknowledgements, wildcard matching, overlapping subscriptions,
//! subscription identifiers, no-local, limits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ringmq_codec::*;
use ringmq_tests::*;

/// [MQTT-3.8.4-1] [MQTT-3.9.3-1] SUBACK has the SUBSCRIBE's packet id and one reason code per
/// filter, in order, granting the requested QoS.
#[test]
fn suback_has_one_code_per_filter_in_order() {
    let b = Broker::default_start();
    for mut c in [b.v5("suback5"), b.v3("suback3")] {
        let codes = c.subscribe_with(
            &[
                ("sa/2", sub_opts(QoS::ExactlyOnce)),
                ("sa/0", sub_opts(QoS::AtMostOnce)),
                ("sa/+/1", sub_opts(QoS::AtLeastOnce)),
            ],
            None,
        );
        assert_eq!(
            codes,
            [
                ReasonCode::GRANTED_QOS_2,
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GRANTED_QOS_1
            ]
        );
    }
}

/// [MQTT-4.7.1-1] [MQTT-4.7.1-2] `#` matches the parent level and any number of child levels,
/// `+` exactly one level.
#[test]
fn wildcard_matching() {
    let b = Broker::default_start();
    let mut hash = b.v5("wm-hash");
    hash.subscribe_ok("sport/#", QoS::AtMostOnce);
    let mut plus = b.v5("wm-plus");
    plus.subscribe_ok("sport/+/player", QoS::AtMostOnce);
    let mut p = b.v5("wm-pub");
    for t in [
        "sport",
        "sport/tennis/player",
        "sport/tennis/player/ranking",
        "sports/x",
        "sport/x/player",
    ] {
        p.publish(msg(t, t.to_owned()).qos(QoS::AtLeastOnce));
    }
    // Sorted: order is guaranteed per topic [MQTT-4.6.0-6], not across topics.
    let mut got: Vec<String> = (0..4).map(|_| text(&hash.expect_publish())).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "sport",
            "sport/tennis/player",
            "sport/tennis/player/ranking",
            "sport/x/player"
        ]
    );
    let mut got: Vec<String> = (0..2).map(|_| text(&plus.expect_publish())).collect();
    got.sort();
    assert_eq!(got, ["sport/tennis/player", "sport/x/player"]);
    hash.expect_nothing(QUIET);
    plus.expect_nothing(QUIET);
}

/// [MQTT-4.7.2-1] Topics starting with `$` are not matched by filters starting with a wildcard,
/// but are matched by a filter naming the `$` level.
#[test]
fn dollar_topics_not_matched_by_leading_wildcards() {
    let b = Broker::default_start();
    let mut all = b.v5("dl-all");
    all.subscribe_ok("#", QoS::AtMostOnce);
    let mut plus = b.v5("dl-plus");
    plus.subscribe_ok("+/info", QoS::AtMostOnce);
    let mut named = b.v5("dl-named");
    named.subscribe_ok("$ringtest/#", QoS::AtMostOnce);
    let mut p = b.v5("dl-pub");
    p.publish(msg("$ringtest/info", "dollar").qos(QoS::AtLeastOnce));
    p.publish(msg("plain/info", "plain").qos(QoS::AtLeastOnce));
    assert_eq!(text(&named.expect_publish()), "dollar");
    assert_eq!(
        text(&all.expect_publish()),
        "plain",
        "`#` must not match $ringtest/info"
    );
    assert_eq!(
        text(&plus.expect_publish()),
        "plain",
        "`+/info` must not match $ringtest/info"
    );
}

/// [MQTT-3.3.4-2] [MQTT-3.3.4-3] [MQTT-3.3.4-4] Overlapping subscriptions of one client: the
/// message is delivered once (ringmq sends a single copy), with the maximum QoS of the matching
/// subscriptions and every matching subscription identifier.
#[test]
fn overlapping_subscriptions_single_delivery_max_qos_all_ids() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut c = b.v5("overlap");
    c.subscribe_with(&[("ov/#", sub_opts(QoS::AtMostOnce))], Some(11));
    c.subscribe_with(&[("ov/+/x", sub_opts(QoS::ExactlyOnce))], Some(22));
    c.subscribe_with(&[("ov/a/x", sub_opts(QoS::AtLeastOnce))], None);
    let mut p = b.v5("overlap-pub");
    p.publish(msg("ov/a/x", "both").qos(QoS::ExactlyOnce));
    p.publish(msg("ov/a/x", "marker").qos(QoS::ExactlyOnce));
    let m = c.expect_publish_acked();
    assert_eq!(text(&m), "both");
    assert_eq!(
        m.qos_pid.qos(),
        QoS::ExactlyOnce,
        "maximum QoS of the matching subscriptions"
    );
    let mut ids: Vec<u32> = m
        .properties
        .subscription_ids
        .iter()
        .map(|i| i.get())
        .collect();
    ids.sort();
    assert_eq!(ids, [11, 22], "all matching subscription identifiers");
    assert_eq!(text(&c.expect_publish_acked()), "marker", "delivered once");
}

/// (3.8.2.1.2) [MQTT-3.3.4-3] A subscription identifier is sent with every message
/// the subscription matches, and only with those.
#[test]
fn subscription_identifier_sent_with_matching_messages() {
    let b = Broker::default_start();
    let mut c = b.v5("subid");
    c.subscribe_with(&[("sid/a", sub_opts(QoS::AtLeastOnce))], Some(268_435_455));
    c.subscribe_with(&[("sid/b", sub_opts(QoS::AtLeastOnce))], None);
    let mut p = b.v5("subid-pub");
    p.publish(msg("sid/a", "a").qos(QoS::AtLeastOnce));
    p.publish(msg("sid/b", "b").qos(QoS::AtLeastOnce));
    let mut got: Vec<Publish> = c.expect_publishes(2);
    got.sort_by_key(text);
    let ids = |m: &Publish| {
        m.properties
            .subscription_ids
            .iter()
            .map(|i| i.get())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&got[0]), [268_435_455]);
    assert_eq!(ids(&got[1]), Vec::<u32>::new());
}

/// [MQTT-3.8.3-3] No Local: messages are not forwarded to a connection with the publisher's own
/// client id, while other clients' messages are.
#[test]
fn no_local_suppresses_own_messages() {
    let b = Broker::default_start();
    let mut c = b.v5("nolocal");
    c.subscribe_with(
        &[(
            "nl/t",
            sub_opts_full(
                QoS::AtLeastOnce,
                true,
                false,
                RetainHandling::SendAtSubscribe,
            ),
        )],
        None,
    );
    let mut other = b.v5("nolocal-other");
    other.subscribe_ok("nl/t", QoS::AtLeastOnce);
    c.publish(msg("nl/t", "mine").qos(QoS::AtLeastOnce));
    assert_eq!(
        text(&other.expect_publish_acked()),
        "mine",
        "other subscribers still get it"
    );
    other.publish(msg("nl/t", "theirs").qos(QoS::AtLeastOnce));
    assert_eq!(
        text(&c.expect_publish_acked()),
        "theirs",
        "own message must not be delivered"
    );
}

/// [MQTT-3.8.4-3] A SUBSCRIBE for a filter the session already has replaces the subscription
/// (new QoS), and messages are then delivered once.
#[test]
fn resubscribe_replaces_subscription() {
    let b = Broker::default_start();
    let mut c = b.v5("resub");
    c.subscribe_ok("resub/t", QoS::AtMostOnce);
    c.subscribe_ok("resub/t", QoS::AtLeastOnce);
    let mut p = b.v5("resub-pub");
    p.publish(msg("resub/t", "x").qos(QoS::ExactlyOnce));
    p.publish(msg("resub/t", "marker").qos(QoS::ExactlyOnce));
    let m = c.expect_publish_acked();
    assert_eq!(
        (text(&m).as_str(), m.qos_pid.qos()),
        ("x", QoS::AtLeastOnce)
    );
    assert_eq!(
        text(&c.expect_publish_acked()),
        "marker",
        "one subscription, one delivery"
    );
}

/// [MQTT-3.10.4-1] [MQTT-3.10.4-4] [MQTT-3.11.3-1] After UNSUBSCRIBE (UNSUBACK 0x00) no more
/// messages are delivered; unsubscribing a filter that has no subscription gets 0x11.
#[test]
fn unsubscribe_stops_delivery_and_reports_0x11_for_none() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut c = b.v5("unsub");
    c.subscribe_ok("unsub/a", QoS::AtLeastOnce);
    c.subscribe_ok("unsub/b", QoS::AtLeastOnce);
    let codes = c.unsubscribe(&["unsub/a", "unsub/none"]);
    assert_eq!(
        codes,
        [ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
    );
    let mut p = b.v5("unsub-pub");
    p.publish(msg("unsub/a", "gone").qos(QoS::AtLeastOnce));
    p.publish(msg("unsub/b", "still").qos(QoS::AtLeastOnce));
    assert_eq!(text(&c.expect_publish_acked()), "still");
    c.expect_nothing(QUIET);
}

/// [MQTT-3.10.4-4] [MQTT-3.11.2-1] 3.1.1 UNSUBSCRIBE: UNSUBACK with the packet id, delivery stops.
#[test]
fn unsubscribe_stops_delivery_v311() {
    let b = Broker::default_start();
    let mut c = b.v3("unsub3");
    c.subscribe_ok("unsub3/t", QoS::AtMostOnce);
    assert!(
        c.unsubscribe(&["unsub3/t"]).is_empty(),
        "3.1.1 UNSUBACK has no payload"
    );
    let mut p = b.v3("unsub3-pub");
    p.publish(msg("unsub3/t", "gone").qos(QoS::AtLeastOnce));
    c.expect_nothing(QUIET);
}

/// [MQTT-4.7.1-1] A filter with `#` not in last position is invalid: the broker answers SUBACK
/// 0x8F (Topic Filter invalid) or, treating it as a malformed packet, DISCONNECT 0x81/0x8F/0x82.
#[test]
fn invalid_topic_filter_rejected() {
    let b = Broker::default_start();
    let mut c = b.v5("badfilter");
    let id = c.next_packet_id();
    // SUBSCRIBE by hand, so the test does not depend on whether the encoder checks filters.
    let filter = b"bad/#/x";
    let mut body = vec![(id.get() >> 8) as u8, id.get() as u8, 0];
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter);
    body.push(0x01);
    let mut frame = vec![0x82, body.len() as u8];
    frame.extend_from_slice(&body);
    c.send_raw(&frame).unwrap();
    match c.try_recv(WAIT) {
        Ok(Some(Packet::SubAck(ack))) => {
            assert_eq!(ack.reason_codes, [ReasonCode::TOPIC_FILTER_INVALID])
        }
        Ok(Some(Packet::Disconnect(d))) => assert!(
            [
                ReasonCode::MALFORMED_PACKET,
                ReasonCode::TOPIC_FILTER_INVALID,
                ReasonCode::PROTOCOL_ERROR
            ]
            .contains(&d.reason_code),
            "{d:?}"
        ),
        other => panic!("expected SUBACK 0x8F or DISCONNECT, got {other:?}"),
    }
}

/// Limit max_subscriptions_per_client = 2: a third subscription is refused with a failure reason
/// code in SUBACK (0x97 Quota exceeded expected), the first two keep working.
#[test]
fn subscriptions_per_client_limited() {
    let b = Broker::start(BrokerOpts::new().limits("max_subscriptions_per_client = 2"));
    let mut c = b.v5("sublim");
    c.subscribe_ok("sl/1", QoS::AtLeastOnce);
    c.subscribe_ok("sl/2", QoS::AtLeastOnce);
    let code = c.subscribe("sl/3", QoS::AtLeastOnce);
    assert!(
        code.is_error(),
        "third subscription must be refused: {code:?}"
    );
    assert_eq!(code, ReasonCode::QUOTA_EXCEEDED, "expected 0x97");
    let mut p = b.v5("sublim-pub");
    p.publish(msg("sl/3", "no").qos(QoS::AtLeastOnce));
    p.publish(msg("sl/2", "yes").qos(QoS::AtLeastOnce));
    assert_eq!(text(&c.expect_publish_acked()), "yes");
}

/// A subscription made on one shard receives messages published from every shard, and stops
/// receiving from every shard after UNSUBSCRIBE.
#[test]
fn subscriptions_route_across_shards() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut sub = b.v5("xs-sub");
    sub.subscribe_ok("xs/+", QoS::AtLeastOnce);
    let mut pubs: Vec<Client> = (0..6).map(|i| b.v5(&format!("xs-pub-{i}"))).collect();
    for (i, p) in pubs.iter_mut().enumerate() {
        p.publish(msg(&format!("xs/{i}"), format!("{i}")).qos(QoS::AtLeastOnce));
    }
    let mut got: Vec<String> = sub.expect_publishes(6).iter().map(text).collect();
    got.sort();
    assert_eq!(got, ["0", "1", "2", "3", "4", "5"]);
    sub.unsubscribe(&["xs/+"]);
    for (i, p) in pubs.iter_mut().enumerate() {
        p.publish(msg(&format!("xs/{i}"), "late").qos(QoS::AtLeastOnce));
    }
    sub.expect_nothing(QUIET);
}

/// (3.8.4) Once the SUBACK is received, the subscription is in force on every shard: a message
/// published right after it by clients already connected to other shards is delivered. Twenty
/// rounds with fresh topics, eight publishers spread over four shards.
#[test]
fn subscription_in_force_on_all_shards_once_acknowledged() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut pubs: Vec<Client> = (0..8).map(|i| b.v5(&format!("race-pub-{i}"))).collect();
    let mut sub = b.v5("race-sub");
    for round in 0..20 {
        let topic = format!("race/{round}");
        sub.subscribe_ok(&topic, QoS::AtLeastOnce);
        // Send from every publisher first, then collect the PUBACKs: the publishes leave within
        // microseconds of the SUBACK, which is the window this test is about.
        let ids: Vec<_> = pubs
            .iter_mut()
            .enumerate()
            .map(|(i, p)| {
                p.publish_nowait(&mut msg(&topic, format!("{round}-{i}")).qos(QoS::AtLeastOnce))
                    .unwrap()
            })
            .collect();
        for (p, id) in pubs.iter_mut().zip(ids) {
            p.wait_for(
                WAIT,
                "PUBACK",
                |q| matches!(q, Packet::PubAck(a) if a.packet_id == id),
            );
        }
        let mut got: Vec<String> = Vec::new();
        while got.len() < pubs.len() {
            match sub.recv(WAIT) {
                Some(Packet::Publish(m)) => {
                    sub.ack(&m);
                    got.push(text(&m));
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => break,
            }
        }
        got.sort();
        let mut want: Vec<String> = (0..pubs.len()).map(|i| format!("{round}-{i}")).collect();
        want.sort();
        assert_eq!(
            got, want,
            "round {round}: messages published after the SUBACK were lost"
        );
    }
}

/// [MQTT-3.3.4-3] A retained message sent because of a new subscription carries that
/// subscription's identifier.
#[test]
fn subscription_identifier_on_retained_messages() {
    let b = Broker::default_start();
    let mut p = b.v5("sidr-pub");
    p.publish(msg("sidr/t", "r").qos(QoS::AtLeastOnce).retain(true));
    let mut c = b.v5("sidr-sub");
    c.subscribe_with(&[("sidr/#", sub_opts(QoS::AtLeastOnce))], Some(77));
    let m = c.expect_publish_acked();
    assert!(m.retain);
    assert_eq!(
        m.properties
            .subscription_ids
            .iter()
            .map(|i| i.get())
            .collect::<Vec<_>>(),
        [77]
    );
}

/// (3.8.3.1) No Local on 3.1.1 does not exist: a 3.1.1 client that subscribes to a
/// topic it publishes to gets its own messages back.
#[test]
fn v311_client_receives_own_messages() {
    let b = Broker::default_start();
    let mut c = b.v3("own3");
    c.subscribe_ok("own3/t", QoS::AtLeastOnce);
    c.publish(msg("own3/t", "echo").qos(QoS::AtLeastOnce));
    assert_eq!(text(&c.expect_publish_acked()), "echo");
}

/// (4.7.1.2, 4.7.1.3) Wildcards and empty levels: `sport/+` matches `sport/` but not `sport`;
/// `+/+` and `/+` match `/finance`; `+` does not match `/finance`.
#[test]
fn wildcards_and_empty_levels() {
    let b = Broker::default_start();
    let filters = ["sport/+", "+/+", "/+", "+"];
    let mut subs: Vec<Client> = filters
        .iter()
        .map(|f| {
            let mut c = b.v5(&format!("el-{}", f.replace('/', "_").replace('+', "p")));
            c.subscribe_ok(f, QoS::AtLeastOnce);
            c
        })
        .collect();
    let mut p = b.v5("el-pub");
    for t in ["sport", "sport/", "/finance"] {
        p.publish(msg(t, t.to_owned()).qos(QoS::AtLeastOnce));
    }
    p.publish(msg("end", "end").qos(QoS::AtLeastOnce)); // matched by `+` only
    // Sorted: order is guaranteed per topic [MQTT-4.6.0-6], not across topics.
    let want: [&[&str]; 4] = [
        &["sport/"],
        &["/finance", "sport/"],
        &["/finance"],
        &["end", "sport"],
    ];
    for ((sub, f), want) in subs.iter_mut().zip(filters).zip(want) {
        let mut got: Vec<String> = sub.expect_publishes(want.len()).iter().map(text).collect();
        got.sort();
        assert_eq!(got, want, "filter {f:?}");
    }
    for s in &mut subs[..3] {
        s.expect_nothing(QUIET);
    }
}

/// (4.7.3) Topic names are case sensitive, may contain spaces and any UTF-8 character.
#[test]
fn topic_names_case_sensitive_with_spaces_and_utf8() {
    let b = Broker::default_start();
    let mut c = b.v5("case");
    c.subscribe_ok("Accounts payable/ünïcødé/日本", QoS::AtLeastOnce);
    let mut p = b.v5("case-pub");
    p.publish(msg("ACCOUNTS PAYABLE/ünïcødé/日本", "upper").qos(QoS::AtLeastOnce));
    p.publish(msg("Accounts payable/ünïcødé/日本", "exact").qos(QoS::AtLeastOnce));
    let m = c.expect_publish_acked();
    assert_eq!(
        (m.topic.as_str(), text(&m).as_str()),
        ("Accounts payable/ünïcødé/日本", "exact")
    );
    c.expect_nothing(QUIET);
}

/// [MQTT-3.8.4-3] (3.8.2.1.2) Re-subscribing replaces the subscription's identifier (a new one,
/// or none), and a resumed session keeps the identifiers.
#[test]
fn resubscribe_replaces_subscription_identifier_and_session_keeps_it() {
    let b = Broker::default_start();
    let opts = || Opts::v5("sid-re").clean(false).session_expiry(60);
    let mut c = b.connect(opts());
    let ids = |m: &Publish| {
        m.properties
            .subscription_ids
            .iter()
            .map(|i| i.get())
            .collect::<Vec<_>>()
    };
    c.subscribe_with(&[("sidre/t", sub_opts(QoS::AtLeastOnce))], Some(5));
    c.subscribe_with(&[("sidre/t", sub_opts(QoS::AtLeastOnce))], Some(6));
    let mut p = b.v5("sid-re-pub");
    p.publish(msg("sidre/t", "a").qos(QoS::AtLeastOnce));
    assert_eq!(ids(&c.expect_publish_acked()), [6]);
    c.disconnect();
    let mut c = b.connect(opts());
    assert!(c.session_present());
    p.publish(msg("sidre/t", "b").qos(QoS::AtLeastOnce));
    assert_eq!(
        ids(&c.expect_publish_acked()),
        [6],
        "identifier kept in the session"
    );
    c.subscribe_with(&[("sidre/t", sub_opts(QoS::AtLeastOnce))], None);
    p.publish(msg("sidre/t", "c").qos(QoS::AtLeastOnce));
    assert_eq!(
        ids(&c.expect_publish_acked()),
        Vec::<u32>::new(),
        "re-subscribed without identifier"
    );
}

/// [MQTT-3.10.4-1] Unsubscribing removes only the unsubscribing session's subscription: when 7 of
/// 8 subscribers of a filter (likely sharing shards) unsubscribe, the last one still gets
/// messages published from every shard.
#[test]
fn unsubscribe_keeps_other_subscribers() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut subs: Vec<Client> = (0..8).map(|i| b.v5(&format!("ks-{i}"))).collect();
    for (i, s) in subs.iter_mut().enumerate() {
        let filter = if i % 2 == 0 { "ks/t" } else { "ks/+" };
        s.subscribe_ok(filter, QoS::AtLeastOnce);
    }
    for (i, s) in subs.iter_mut().enumerate().skip(1) {
        let filter = if i % 2 == 0 { "ks/t" } else { "ks/+" };
        assert_eq!(s.unsubscribe(&[filter]), [ReasonCode::SUCCESS]);
    }
    let mut pubs: Vec<Client> = (0..4).map(|i| b.v5(&format!("ks-pub-{i}"))).collect();
    for (i, p) in pubs.iter_mut().enumerate() {
        p.publish(msg("ks/t", format!("{i}")).qos(QoS::AtLeastOnce));
    }
    let mut got: Vec<String> = subs[0].expect_publishes(4).iter().map(text).collect();
    got.sort();
    assert_eq!(got, ["0", "1", "2", "3"]);
    // The 4 messages reached subs[0]: copies for the others would have arrived by now too.
    for s in &mut subs[1..] {
        s.expect_nothing(QUIET / 5);
    }
}

/// Limit max_subscriptions_per_client: an UNSUBSCRIBE frees the slot for a new subscription.
#[test]
fn unsubscribe_frees_subscription_quota() {
    let b = Broker::start(BrokerOpts::new().limits("max_subscriptions_per_client = 1"));
    let mut c = b.v5("quota");
    c.subscribe_ok("quota/1", QoS::AtLeastOnce);
    assert!(c.subscribe("quota/2", QoS::AtLeastOnce).is_error());
    c.unsubscribe(&["quota/1"]);
    c.subscribe_ok("quota/2", QoS::AtLeastOnce);
    let mut p = b.v5("quota-pub");
    p.publish(msg("quota/2", "ok").qos(QoS::AtLeastOnce));
    assert_eq!(text(&c.expect_publish_acked()), "ok");
}
