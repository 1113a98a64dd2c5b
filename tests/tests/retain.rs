//! Retained messages: store, replace, clear, delivery on subscribe, retain handling,
//! retain-as-published, expiry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ringmq_codec::*;
use ringmq_tests::*;

fn retained(topic: &str, payload: &'static str) -> Publish {
    msg(topic, payload).qos(QoS::AtLeastOnce).retain(true)
}

/// [MQTT-3.3.1-5] [MQTT-3.3.1-6] A retained message is stored and sent to a later subscriber
/// with RETAIN = 1 [MQTT-3.3.1-9 v5: retain flag set on messages sent because of a new
/// subscription].
#[test]
fn retained_message_delivered_on_subscribe() {
    let b = Broker::default_start();
    let mut p = b.v5("ret-pub");
    p.publish(retained("ret/a", "kept"));
    let mut s = b.v5("ret-sub");
    s.subscribe_ok("ret/a", QoS::AtLeastOnce);
    let m = s.expect_publish_acked();
    assert_eq!(
        (m.topic.as_str(), text(&m).as_str(), m.retain),
        ("ret/a", "kept", true)
    );
    s.expect_nothing(QUIET);
}

/// [MQTT-3.3.1-5] A new retained message on a topic replaces the previous one.
#[test]
fn retained_message_replaced() {
    let b = Broker::default_start();
    let mut p = b.v5("rep-pub");
    p.publish(retained("rep/t", "old"));
    p.publish(retained("rep/t", "new"));
    let mut s = b.v3("rep-sub");
    s.subscribe_ok("rep/t", QoS::AtLeastOnce);
    let m = s.expect_publish_acked();
    assert_eq!((text(&m).as_str(), m.retain), ("new", true));
    s.expect_nothing(QUIET);
}

/// [MQTT-3.3.1-6] [MQTT-3.3.1-7] A retained PUBLISH with an empty payload removes the retained
/// message; it is delivered to current subscribers but not stored.
#[test]
fn empty_retained_payload_clears() {
    let b = Broker::default_start();
    let mut live = b.v5("clr-live");
    live.subscribe_ok("clr/t", QoS::AtLeastOnce);
    let mut p = b.v5("clr-pub");
    p.publish(retained("clr/t", "soon gone"));
    p.publish(retained("clr/t", ""));
    assert_eq!(text(&live.expect_publish_acked()), "soon gone");
    let empty = live.expect_publish_acked();
    assert!(
        empty.payload.is_empty(),
        "the clearing message reaches current subscribers"
    );
    let mut s = b.v5("clr-sub");
    s.subscribe_ok("clr/t", QoS::AtLeastOnce);
    s.expect_nothing(QUIET);
}

/// [MQTT-3.3.1-12] Without Retain As Published, a retained message forwarded to an existing
/// subscription has RETAIN = 0; [MQTT-3.3.1-13] with it, RETAIN keeps the published value.
#[test]
fn retain_as_published_controls_live_retain_flag() {
    let b = Broker::default_start();
    let mut plain = b.v5("rap-plain");
    plain.subscribe_with(&[("rap/t", sub_opts(QoS::AtLeastOnce))], None);
    let mut rap = b.v5("rap-on");
    rap.subscribe_with(
        &[(
            "rap/t",
            sub_opts_full(
                QoS::AtLeastOnce,
                false,
                true,
                RetainHandling::SendAtSubscribe,
            ),
        )],
        None,
    );
    let mut p = b.v5("rap-pub");
    p.publish(retained("rap/t", "r1"));
    p.publish(msg("rap/t", "n1").qos(QoS::AtLeastOnce));
    let a = plain.expect_publish_acked();
    assert_eq!((text(&a).as_str(), a.retain), ("r1", false), "RAP = 0");
    assert!(!plain.expect_publish_acked().retain);
    let a = rap.expect_publish_acked();
    assert_eq!((text(&a).as_str(), a.retain), ("r1", true), "RAP = 1");
    assert!(!rap.expect_publish_acked().retain);
}

/// 3.1.1: a retained message forwarded live to an existing subscription has RETAIN = 0
/// [MQTT-3.3.1-9 of 3.1.1].
#[test]
fn live_retained_message_has_retain_0_v311() {
    let b = Broker::default_start();
    let mut s = b.v3("live3");
    s.subscribe_ok("live3/t", QoS::AtMostOnce);
    let mut p = b.v3("live3-pub");
    p.publish(retained("live3/t", "x"));
    let m = s.expect_publish();
    assert!(!m.retain, "{m:?}");
}

/// [MQTT-3.3.1-9] Retain Handling 0: retained messages are sent at every subscribe, including a
/// re-subscribe to an existing subscription [MQTT-3.8.4-3].
#[test]
fn retain_handling_0_sends_at_every_subscribe() {
    let b = Broker::default_start();
    let mut p = b.v5("rh0-pub");
    p.publish(retained("rh0/t", "v"));
    let mut s = b.v5("rh0-sub");
    let o = sub_opts_full(
        QoS::AtLeastOnce,
        false,
        false,
        RetainHandling::SendAtSubscribe,
    );
    s.subscribe_with(&[("rh0/t", o)], None);
    assert!(s.expect_publish_acked().retain);
    s.subscribe_with(&[("rh0/t", o)], None);
    assert!(
        s.expect_publish_acked().retain,
        "sent again on re-subscribe"
    );
}

/// [MQTT-3.3.1-10] Retain Handling 1: retained messages are sent only if the subscription did
/// not exist.
#[test]
fn retain_handling_1_sends_only_for_new_subscription() {
    let b = Broker::default_start();
    let mut p = b.v5("rh1-pub");
    p.publish(retained("rh1/t", "v"));
    let mut s = b.v5("rh1-sub");
    let o = sub_opts_full(
        QoS::AtLeastOnce,
        false,
        false,
        RetainHandling::SendAtSubscribeIfNew,
    );
    s.subscribe_with(&[("rh1/t", o)], None);
    assert_eq!(text(&s.expect_publish_acked()), "v");
    s.subscribe_with(&[("rh1/t", o)], None);
    s.expect_nothing(QUIET);
}

/// [MQTT-3.3.1-11] Retain Handling 2: retained messages are not sent at subscribe.
#[test]
fn retain_handling_2_never_sends() {
    let b = Broker::default_start();
    let mut p = b.v5("rh2-pub");
    p.publish(retained("rh2/t", "v"));
    let mut s = b.v5("rh2-sub");
    let o = sub_opts_full(QoS::AtLeastOnce, false, false, RetainHandling::DoNotSend);
    s.subscribe_with(&[("rh2/t", o)], None);
    s.expect_nothing(QUIET);
    // Live messages still flow.
    p.publish(msg("rh2/t", "live").qos(QoS::AtLeastOnce));
    assert_eq!(text(&s.expect_publish_acked()), "live");
}

/// [MQTT-3.3.1-6] A wildcard subscription gets every matching retained message, each once.
#[test]
fn wildcard_subscription_gets_all_matching_retained() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut publishers: Vec<Client> = (0..4).map(|i| b.v5(&format!("wret-pub-{i}"))).collect();
    for (i, p) in publishers.iter_mut().enumerate() {
        p.publish(
            msg(&format!("wret/{i}/x"), format!("v{i}"))
                .qos(QoS::AtLeastOnce)
                .retain(true),
        );
    }
    publishers[0].publish(retained("wret/other", "not matched"));
    let mut s = b.v5("wret-sub");
    s.subscribe_ok("wret/+/x", QoS::AtLeastOnce);
    let mut got: Vec<(String, String)> = (0..4)
        .map(|_| s.expect_publish_acked())
        .map(|m| (m.topic.to_string(), text(&m)))
        .collect();
    got.sort();
    let want: Vec<(String, String)> = (0..4)
        .map(|i| (format!("wret/{i}/x"), format!("v{i}")))
        .collect();
    assert_eq!(got, want);
    s.expect_nothing(QUIET);
}

/// [MQTT-3.3.1-8] The stored QoS of a retained message is delivered as the minimum of it and
/// the subscription's QoS.
#[test]
fn retained_qos_is_minimum_of_stored_and_granted() {
    let b = Broker::default_start();
    let mut p = b.v5("rq-pub");
    p.publish(msg("rq/t", "q2").qos(QoS::ExactlyOnce).retain(true));
    let mut s0 = b.v5("rq-s0");
    s0.subscribe_ok("rq/t", QoS::AtMostOnce);
    assert_eq!(s0.expect_publish_acked().qos_pid.qos(), QoS::AtMostOnce);
    let mut s2 = b.v5("rq-s2");
    s2.subscribe_ok("rq/t", QoS::ExactlyOnce);
    assert_eq!(s2.expect_publish_acked().qos_pid.qos(), QoS::ExactlyOnce);
}

/// [MQTT-3.3.2-5] A retained message whose Message Expiry Interval has passed is not delivered
/// to a new subscriber.
#[test]
fn expired_retained_message_not_delivered() {
    let b = Broker::default_start();
    let mut p = b.v5("rexp-pub");
    p.publish(retained("rexp/t", "short").props(|pr| pr.message_expiry_secs = Some(1)));
    p.publish(retained("rexp/keep", "long").props(|pr| pr.message_expiry_secs = Some(600)));
    std::thread::sleep(Duration::from_millis(2200));
    let mut s = b.v5("rexp-sub");
    s.subscribe_ok("rexp/#", QoS::AtLeastOnce);
    let m = s.expect_publish_acked();
    assert_eq!(text(&m), "long");
    let left = m
        .properties
        .message_expiry_secs
        .expect("[MQTT-3.3.2-6] expiry forwarded");
    assert!(
        (590..600).contains(&left),
        "[MQTT-3.3.2-6] decremented by the time waited: {left}"
    );
    s.expect_nothing(QUIET);
}

/// Retained messages are visible to subscribers on every shard, and a replacement published on
/// one shard is what subscribers on the others get.
#[test]
fn retained_store_shared_across_shards() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    for round in 0..4 {
        let mut p = b.v5(&format!("xret-pub-{round}"));
        let payload = format!("round-{round}");
        p.publish(
            msg("xret/t", payload.clone())
                .qos(QoS::AtLeastOnce)
                .retain(true),
        );
        for k in 0..3 {
            let mut s = b.v3(&format!("xret-sub-{round}-{k}"));
            s.subscribe_ok("xret/t", QoS::AtLeastOnce);
            let m = s.expect_publish_acked();
            assert_eq!((text(&m), m.retain), (payload.clone(), true));
        }
    }
}

/// [MQTT-3.3.1-6] [MQTT-3.3.1-5] A retained QoS 0 message is stored too (v3.1.1 publisher).
#[test]
fn retained_qos0_from_v311_stored() {
    let b = Broker::default_start();
    let mut p = b.v3("r0-pub");
    p.publish(msg("r0/t", "zero").retain(true));
    p.ping();
    let mut s = b.v5("r0-sub");
    s.subscribe_ok("r0/t", QoS::AtLeastOnce);
    let m = s.expect_publish_acked();
    assert_eq!(
        (text(&m).as_str(), m.retain, m.qos_pid.qos()),
        ("zero", true, QoS::AtMostOnce)
    );
}

/// [MQTT-3.3.1-5] [MQTT-3.3.1-9] Once the publisher has its PUBACK, the retained message is stored
/// for every shard: clients already connected to other shards that subscribe right away get it.
/// Twenty rounds, eight subscribers spread over four shards.
#[test]
fn retained_message_visible_on_all_shards_once_acknowledged() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut subs: Vec<Client> = (0..8).map(|i| b.v5(&format!("rrace-sub-{i}"))).collect();
    let mut p = b.v5("rrace-pub");
    for round in 0..20 {
        let topic = format!("rrace/{round}");
        p.publish(
            msg(&topic, format!("r{round}"))
                .qos(QoS::AtLeastOnce)
                .retain(true),
        );
        for (i, s) in subs.iter_mut().enumerate() {
            s.subscribe_ok(&topic, QoS::AtLeastOnce);
            match s.recv(WAIT) {
                Some(Packet::Publish(m)) => {
                    s.ack(&m);
                    assert_eq!((text(&m), m.retain), (format!("r{round}"), true));
                }
                other => {
                    panic!("round {round}, subscriber {i}: retained message missing: {other:?}")
                }
            }
        }
    }
}

/// [MQTT-3.3.1-5] There is one retained message per topic: when publishers on different shards
/// replace it at the same moment, every subscriber, whatever its shard, ends up seeing the same
/// one (the shards' replicas of the store must not diverge). 30 topics, four publishers released
/// together by a barrier for each.
#[test]
fn concurrent_retained_updates_converge_across_shards() {
    const TOPICS: usize = 30;
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut pubs: Vec<Client> = (0..4).map(|i| b.v5(&format!("conv-pub-{i}"))).collect();
    let barrier = BoundedBarrier::new(pubs.len());
    std::thread::scope(|scope| {
        for (i, p) in pubs.iter_mut().enumerate() {
            let barrier = &barrier;
            scope.spawn(move || {
                for t in 0..TOPICS {
                    barrier.wait();
                    let m = msg(&format!("conv/{t}"), format!("p{i}"));
                    p.publish(m.qos(QoS::AtLeastOnce).retain(true));
                }
            });
        }
    });
    // Every update is acknowledged; replicas may still be catching up, so look again until WAIT.
    let deadline = std::time::Instant::now() + WAIT;
    for round in 0.. {
        let mut views: Vec<Vec<String>> = Vec::new();
        for k in 0..8 {
            let mut s = b.v5(&format!("conv-sub-{round}-{k}"));
            s.subscribe_ok("conv/+", QoS::AtLeastOnce);
            let mut view: Vec<String> = s
                .expect_publishes(TOPICS)
                .iter()
                .map(|m| format!("{}={}", m.topic, text(m)))
                .collect();
            view.sort();
            views.push(view);
        }
        let differing: Vec<usize> = (1..views.len()).filter(|k| views[*k] != views[0]).collect();
        if differing.is_empty() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let diff: Vec<(String, String)> = views[0]
                .iter()
                .zip(&views[differing[0]])
                .filter(|(a, b)| a != b)
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect();
            panic!("subscribers see different retained messages for the same topics: {diff:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
