//! End-to-end: the flood of issue 12 (blocking-socket publishers writing 64-PUBLISH batches,
//! subscribers reading 1 MiB at a time) against the real `ringmq` binary, called as a library
//! the way the end-to-end tests in tests/ may call it.
//!
//! It asserts counts, not speed: messages were delivered while the publishers wrote, no client
//! failed, and every probe got its CONNACK and PINGRESP. Honours `RINGMQ_TEST_SHARDS`,
//! `RINGMQ_TEST_DRIVER` and `RINGMQ_BIN` like the tests in tests/.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ringmq_bench::flood::{self, FloodConfig};
use ringmq_tests::{Broker, BrokerOpts};

#[test]
fn flood_is_delivered_and_every_probe_is_answered() {
    let broker = Broker::start(BrokerOpts::new());
    let mut cfg = FloodConfig::new(broker.addr());
    // The probe's timeout (2 s) is shorter than the flood, so a probe made at the start must be
    // answered while the publishers still write: a broker that only recovers once the load
    // stops (issue 12's freeze did) fails here. The timeout is generous for a debug build on a
    // busy machine; this asserts an answer, not its speed.
    cfg.duration = Duration::from_secs(3);
    cfg.drain = Duration::from_secs(1);
    assert!(cfg.probe.timeout < cfg.duration);
    let report = flood::run(&cfg).unwrap_or_else(|e| panic!("the flood could not start: {e}"));
    let text = report.render();
    eprintln!("{text}");
    assert!(report.published > 0, "{text}");
    assert!(
        report.delivered_in_run > 0,
        "nothing delivered during the flood:\n{text}"
    );
    assert!(report.delivered > 0, "{text}");
    assert_eq!(report.errors.total(), 0, "client errors:\n{text}");
    // The probe runs at once and then every 250 ms through the flood: several probes.
    assert!(report.probe.probes >= 2, "{text}");
    assert_eq!(
        report.probe.failed, 0,
        "a probe got no CONNACK or PINGRESP during the flood:\n{text}"
    );
}
