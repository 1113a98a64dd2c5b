//! Liveness under an open-loop flood (issue 12), through the real binary: while the flood of
//! [`ringmq_tests::flood`] runs (8 publishers writing 64-packet batches of QoS 0 PUBLISH as
//! fast as TCP lets them, one subscriber per topic), third-party clients and our own get their
//! answers: mosquitto_pub's QoS 1 publish is acknowledged, mosquitto_sub receives a message
//! mosquitto_pub publishes, our client's CONNECT and PINGREQs are answered. Meanwhile every
//! subscriber keeps receiving and every publisher keeps being read.
//!
//! Before the fix (6580ea9) the broker froze within seconds under this load: deliveries
//! stopped and a new client got no CONNACK for as long as the flood lasted.
//!
//! One and two shards explicitly; the driver is `RINGMQ_TEST_DRIVER`'s (the README's test
//! command runs both). Nothing here is timed: every wait is a bound ([`WAIT`]), and the flood's
//! counters only have to grow. Speed under this load is bench/'s business
//! (`ringmq-bench flood`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ringmq_tests::flood::Flood;
use ringmq_tests::tools::{TOOL_TIMEOUT, mosquitto_pub, mosquitto_sub_spawn};
use ringmq_tests::{Broker, BrokerOpts, WAIT, wait_until};

/// Publishers, and as many subscribers. Issue 12 froze with 10; 8 leave the two cores of CI
/// some room for the probes' processes (the broker still runs flat out).
const PUBLISHERS: usize = 8;
/// Probe rounds during the flood, each followed by a delivery checkpoint.
const ROUNDS: usize = 5;

/// Waits (bounded) until every subscriber has received more than at the last checkpoint and
/// every publisher has written more; `seen` becomes the new checkpoint.
fn checkpoint(b: &mut Broker, flood: &Flood, seen: &mut (Vec<u64>, Vec<u64>), when: &str) {
    let grew = |now: &[u64], before: &[u64]| now.iter().zip(before).all(|(n, b)| n > b);
    let moved = wait_until(WAIT, || {
        grew(&flood.delivered(), &seen.0) && grew(&flood.batches(), &seen.1)
    });
    assert!(
        moved,
        "{when}: the flood stood still for {WAIT:?}\n\
         delivered per subscriber {:?} (at the last checkpoint {:?})\n\
         batches per publisher {:?} (at the last checkpoint {:?})\n\
         flood errors {:?}, broker running: {}",
        flood.delivered(),
        seen.0,
        flood.batches(),
        seen.1,
        flood.errors(),
        b.is_running()
    );
    *seen = (flood.delivered(), flood.batches());
}

/// One round of probes: our client connects and pings; mosquitto_pub publishes at QoS 1 (it
/// exits 0 only after CONNACK and PUBACK); mosquitto_sub receives what mosquitto_pub publishes.
fn probe(b: &Broker, round: usize) {
    let mut ours = b.v5(&format!("probe-{round}"));
    ours.ping();
    ours.ping();
    ours.disconnect();

    mosquitto_pub(b, &["-t", "probe/x", "-m", "hi", "-q", "1", "-V", "5"]).assert_success();

    let topic = format!("probe/sub/{round}");
    let payload = format!("during the flood {round}");
    let mut sub = mosquitto_sub_spawn(
        b,
        &["-t", &topic, "-q", "1", "-V", "5", "-C", "1", "-W", "5"],
    );
    sub.wait_for_stdout("received SUBACK", WAIT);
    mosquitto_pub(b, &["-t", &topic, "-m", &payload, "-q", "1", "-V", "5"]).assert_success();
    let out = sub.wait(TOOL_TIMEOUT);
    out.assert_success();
    let payloads: Vec<String> = out.messages().into_iter().map(|m| m.payload).collect();
    assert_eq!(payloads, [payload], "{out}");
}

fn flood_keeps_serving(shards: usize) {
    let mut b = Broker::start(BrokerOpts::new().shards(shards));
    let flood = Flood::start(b.addr(), PUBLISHERS);
    let mut seen = (flood.delivered(), flood.batches());
    checkpoint(&mut b, &flood, &mut seen, "flood started");
    for round in 0..ROUNDS {
        probe(&b, round);
        checkpoint(
            &mut b,
            &flood,
            &mut seen,
            &format!("after probe round {round}"),
        );
    }
    // For the reader of a run's output (`--nocapture`), not asserted: rates are bench/'s.
    let (delivered, batches) = (flood.delivered(), flood.batches());
    eprintln!(
        "{shards} shard(s): {} messages delivered, {} published, per subscriber {delivered:?}",
        delivered.iter().sum::<u64>(),
        batches.iter().sum::<u64>() * ringmq_tests::flood::BATCH as u64,
    );
    let errors = flood.errors();
    assert!(errors.is_empty(), "flood clients failed: {errors:?}");
    drop(flood);
    assert!(b.is_running(), "the broker died under the flood");
}

/// Issue 12: on one shard, every client shares the thread the flood keeps busy.
#[test]
fn one_shard_answers_and_delivers_under_a_flood() {
    flood_keeps_serving(1);
}

/// Issue 12: on two shards, where the flood's messages also cross the mesh when a publisher
/// and its subscriber landed on different shards (the kernel spreads connections).
#[test]
fn two_shards_answer_and_deliver_under_a_flood() {
    flood_keeps_serving(2);
}
