//! Shared subscriptions `$share/{group}/{filter}`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use ringmq_codec::*;
use ringmq_tests::*;

/// Collects (and acknowledges) the PUBLISH packets of a group's members until `expected` arrived
/// in all (bounded by WAIT), then checks for extras during a quiet period.
fn drain(members: &mut [Client], expected: usize) -> Vec<Vec<String>> {
    let mut got: Vec<Vec<String>> = vec![Vec::new(); members.len()];
    let deadline = std::time::Instant::now() + WAIT;
    let collect =
        |members: &mut [Client], got: &mut Vec<Vec<String>>, poll: std::time::Duration| {
            for (i, m) in members.iter_mut().enumerate() {
                while let Some(packet) = m.recv(poll) {
                    let Packet::Publish(p) = packet else {
                        panic!("[{}] unexpected {packet:?}", m.name)
                    };
                    m.ack(&p);
                    got[i].push(text(&p));
                }
            }
        };
    while got.iter().map(Vec::len).sum::<usize>() < expected && std::time::Instant::now() < deadline
    {
        collect(members, &mut got, std::time::Duration::from_millis(20));
    }
    collect(members, &mut got, QUIET / members.len() as u32);
    got
}

/// (4.8.2) Each message matching a shared subscription goes to exactly one member
/// of the group; with four shards and four members (likely on different shards), every member
/// gets a share of 40 messages.
#[test]
fn shared_subscription_each_message_to_exactly_one_member_across_shards() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut members: Vec<Client> = (0..4).map(|i| b.v5(&format!("sh-m{i}"))).collect();
    for m in &mut members {
        m.subscribe_ok("$share/g1/sh/+", QoS::AtLeastOnce);
    }
    let mut p = b.v5("sh-pub");
    for i in 0..40 {
        p.publish(msg(&format!("sh/{}", i % 3), format!("{i}")).qos(QoS::AtLeastOnce));
    }
    let per_member = drain(&mut members, 40);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for got in &per_member {
        for m in got {
            *seen.entry(m.clone()).or_default() += 1;
        }
    }
    let want: BTreeMap<String, usize> = (0..40).map(|i| (format!("{i}"), 1)).collect();
    assert_eq!(
        seen, want,
        "every message exactly once across the group: {per_member:?}"
    );
    for (i, got) in per_member.iter().enumerate() {
        assert!(
            !got.is_empty(),
            "member {i} got nothing; distribution {:?}",
            per_member.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
}

/// (4.8.2) Two groups on the same filter each get every message once, and an ordinary
/// subscription on the same filter gets its own copy.
#[test]
fn shared_groups_and_plain_subscription_each_get_a_copy() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut ga: Vec<Client> = (0..2).map(|i| b.v5(&format!("sg-a{i}"))).collect();
    let mut gb: Vec<Client> = (0..2).map(|i| b.v3(&format!("sg-b{i}"))).collect();
    for m in &mut ga {
        m.subscribe_ok("$share/ga/sg/t", QoS::AtLeastOnce);
    }
    for m in &mut gb {
        m.subscribe_ok("$share/gb/sg/t", QoS::AtLeastOnce);
    }
    let mut plain = b.v5("sg-plain");
    plain.subscribe_ok("sg/t", QoS::AtLeastOnce);
    let mut p = b.v5("sg-pub");
    for i in 0..10 {
        p.publish(msg("sg/t", format!("{i}")).qos(QoS::AtLeastOnce));
    }
    let want: Vec<String> = (0..10).map(|i| format!("{i}")).collect();
    for group in [&mut ga, &mut gb] {
        let mut all: Vec<String> = drain(group, 10).concat();
        all.sort_by_key(|s| s.parse::<u32>().unwrap());
        assert_eq!(all, want);
    }
    let got: Vec<String> = plain.expect_publishes(10).iter().map(text).collect();
    assert_eq!(got, want);
}

/// (4.8.2, 3.8.3.1) Retained messages are not sent when a shared subscription is made.
#[test]
fn shared_subscription_gets_no_retained_messages() {
    let b = Broker::default_start();
    let mut p = b.v5("sr-pub");
    p.publish(msg("sr/t", "retained").qos(QoS::AtLeastOnce).retain(true));
    let mut m = b.v5("sr-member");
    m.subscribe_ok("$share/g/sr/t", QoS::AtLeastOnce);
    m.expect_nothing(QUIET);
    p.publish(msg("sr/t", "live").qos(QoS::AtLeastOnce));
    assert_eq!(text(&m.expect_publish_acked()), "live");
}

/// [MQTT-3.8.3-4] It is a Protocol Error to set No Local on a shared subscription: DISCONNECT
/// 0x82.
#[test]
fn no_local_on_shared_subscription_is_protocol_error() {
    let b = Broker::default_start();
    let mut c = b.v5("sh-nolocal");
    let id = c.next_packet_id();
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: id,
        subscription_id: None,
        user_properties: UserProperties::default(),
        filters: vec![SubscribeFilter {
            filter: s("$share/g/nl/t"),
            options: sub_opts_full(
                QoS::AtLeastOnce,
                true,
                false,
                RetainHandling::SendAtSubscribe,
            ),
        }],
    }));
    let d = c.expect_disconnect(WAIT);
    assert_eq!(d.reason_code, ReasonCode::PROTOCOL_ERROR, "{d:?}");
}

/// (4.8.2) A member that unsubscribes gets no more messages; the remaining member gets them all.
#[test]
fn unsubscribed_member_leaves_the_group() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut stay = b.v5("su-stay");
    let mut leave = b.v5("su-leave");
    stay.subscribe_ok("$share/g/su/t", QoS::AtLeastOnce);
    leave.subscribe_ok("$share/g/su/t", QoS::AtLeastOnce);
    assert_eq!(leave.unsubscribe(&["$share/g/su/t"]), [ReasonCode::SUCCESS]);
    let mut p = b.v5("su-pub");
    for i in 0..6 {
        p.publish(msg("su/t", format!("{i}")).qos(QoS::AtLeastOnce));
    }
    let got: Vec<String> = stay.expect_publishes(6).iter().map(text).collect();
    assert_eq!(got.len(), 6);
    leave.expect_nothing(QUIET);
}

/// (4.8.2) A shared subscription of a 3.1.1 client works too (ringmq accepts `$share` from 3.1.1
/// clients, as most brokers do).
#[test]
fn shared_subscription_from_v311_members() {
    let b = Broker::default_start();
    let mut members: Vec<Client> = (0..2).map(|i| b.v3(&format!("sv3-{i}"))).collect();
    for m in &mut members {
        m.subscribe_ok("$share/g3/sv3/t", QoS::AtMostOnce);
    }
    let mut p = b.v3("sv3-pub");
    for i in 0..10 {
        p.publish(msg("sv3/t", format!("{i}")).qos(QoS::AtLeastOnce));
    }
    let total: usize = drain(&mut members, 10).iter().map(Vec::len).sum();
    assert_eq!(total, 10);
}

/// [MQTT-4.8.2-3] The server respects the granted QoS of each member: a QoS 0 member gets QoS 1
/// messages at QoS 0, a QoS 1 member at QoS 1.
#[test]
fn shared_members_get_their_granted_qos() {
    let b = Broker::default_start();
    let mut m0 = b.v5("sq-0");
    let mut m1 = b.v5("sq-1");
    m0.subscribe_ok("$share/gq/sq/t", QoS::AtMostOnce);
    m1.subscribe_ok("$share/gq/sq/t", QoS::AtLeastOnce);
    let mut p = b.v5("sq-pub");
    for i in 0..10 {
        p.publish(msg("sq/t", format!("{i}")).qos(QoS::ExactlyOnce));
    }
    let mut total = 0;
    let deadline = std::time::Instant::now() + WAIT;
    while total < 10 && std::time::Instant::now() < deadline {
        for (m, granted) in [(&mut m0, QoS::AtMostOnce), (&mut m1, QoS::AtLeastOnce)] {
            while let Some(packet) = m.recv(std::time::Duration::from_millis(20)) {
                let Packet::Publish(p) = packet else {
                    panic!("unexpected {packet:?}")
                };
                assert_eq!(p.qos_pid.qos(), granted, "[{}] {p:?}", m.name);
                m.ack(&p);
                total += 1;
            }
        }
    }
    assert_eq!(total, 10);
    m0.expect_nothing(QUIET);
    m1.expect_nothing(QUIET);
}

/// (4.8.2) Publishers on several shards publishing at once to a shared subscription: each of
/// their 100 messages goes to exactly one member.
#[test]
fn concurrent_publishers_to_shared_group_each_message_once() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut members: Vec<Client> = (0..4).map(|i| b.v5(&format!("csg-m{i}"))).collect();
    for m in &mut members {
        m.subscribe_ok("$share/cg/csg/t", QoS::AtLeastOnce);
    }
    let mut pubs: Vec<Client> = (0..4).map(|i| b.v3(&format!("csg-p{i}"))).collect();
    std::thread::scope(|scope| {
        for (i, p) in pubs.iter_mut().enumerate() {
            scope.spawn(move || {
                for n in 0..25 {
                    p.publish(msg("csg/t", format!("{i}-{n}")).qos(QoS::AtLeastOnce));
                }
            });
        }
    });
    let per_member = drain(&mut members, 100);
    let all: Vec<String> = per_member.concat();
    let unique: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        (all.len(), unique.len()),
        (100, 100),
        "each message exactly once; per member: {:?}",
        per_member.iter().map(Vec::len).collect::<Vec<_>>()
    );
}

/// (4.8.2) A member whose (non-persistent) session ends by DISCONNECT leaves the group: the
/// messages published afterwards all go to the remaining members.
#[test]
fn disconnected_member_leaves_the_group() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let mut stay: Vec<Client> = (0..2).map(|i| b.v5(&format!("dm-stay-{i}"))).collect();
    for m in &mut stay {
        m.subscribe_ok("$share/dm/dm/t", QoS::AtLeastOnce);
    }
    let mut gone: Vec<Client> = (0..2).map(|i| b.v3(&format!("dm-gone-{i}"))).collect();
    for m in &mut gone {
        m.subscribe_ok("$share/dm/dm/t", QoS::AtLeastOnce);
    }
    for m in gone {
        m.disconnect();
    }
    let mut p = b.v5("dm-pub");
    for i in 0..20 {
        p.publish(msg("dm/t", format!("{i}")).qos(QoS::AtLeastOnce));
    }
    let total: usize = drain(&mut stay, 20).iter().map(Vec::len).sum();
    assert_eq!(total, 20, "messages to departed members are lost");
}

/// (4.8.2) A shared-subscription member's persistent session keeps its group membership when it
/// moves between connections (and shards) by takeover: as the only member, it gets every message.
#[test]
fn shared_membership_moves_with_session_takeover() {
    let b = Broker::start(BrokerOpts::new().shards(4));
    let opts = || Opts::v5("sm-member").clean(false).session_expiry(60);
    let mut member = b.connect(opts());
    member.subscribe_ok("$share/sm/sm/t", QoS::AtLeastOnce);
    let mut p = b.v5("sm-pub");
    for round in 0..5 {
        let next = b.connect(opts());
        assert!(next.session_present());
        member.expect_disconnect_or_close(WAIT);
        member = next;
        for i in 0..4 {
            p.publish(msg("sm/t", format!("{round}-{i}")).qos(QoS::AtLeastOnce));
        }
        let mut got: Vec<String> = member.expect_publishes(4).iter().map(text).collect();
        got.sort();
        let want: Vec<String> = (0..4).map(|i| format!("{round}-{i}")).collect();
        assert_eq!(got, want, "round {round}");
        member.ping();
    }
}
