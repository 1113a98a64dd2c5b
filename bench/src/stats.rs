//! Counters shared by the load threads and the coordinating thread, and latency summaries.
//!
//! Load threads add to the counters once per batch (a read or a write of many packets), not once
//! per message, so the shared cache lines stay cold. Latencies go to a per-thread HDR histogram
//! that is merged at the end.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Run phases, in order. Threads only move forward.
pub mod phase {
    /// Connect (and subscribe) the subscribers and idle clients.
    pub const SUBSCRIBERS: u8 = 0;
    /// Connect the publishers.
    pub const PUBLISHERS: u8 = 1;
    /// Publish.
    pub const RUN: u8 = 2;
    /// Stop publishing; subscribers keep counting.
    pub const DRAIN: u8 = 3;
    /// Everything stops.
    pub const DONE: u8 = 4;
}

#[derive(Debug, Default)]
pub struct Shared {
    phase: AtomicU8,
    /// CLOCK_MONOTONIC ns at which publishing started (set with `phase::RUN`).
    pub start_ns: AtomicU64,
    pub connected: AtomicU64,
    pub connect_failed: AtomicU64,
    /// Of `connect_failed`: the TLS handshake failed or the client's certificate did not load.
    pub tls_failed: AtomicU64,
    /// Clients (of the current phase) whose connect attempt finished, successful or not.
    pub subscribers_settled: AtomicU64,
    pub publishers_settled: AtomicU64,
    /// CLOCK_MONOTONIC ns at which the latest connect attempt settled.
    pub last_settled_ns: AtomicU64,
    /// CLOCK_MONOTONIC ns of the latest publish write.
    pub last_publish_ns: AtomicU64,
    /// Publishers that reached their message limit.
    pub publishers_done: AtomicU64,
    pub published: AtomicU64,
    /// Publisher writes in progress. A write that began before the drain adds to
    /// `published` when it completes; until then the drain cannot tell all was delivered.
    pub writing: AtomicU64,
    /// QoS 1 PUBACKs received by publishers.
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
    /// Deliveries stamped before this run started (left over from an earlier run).
    pub stale: AtomicU64,
    /// Messages the end-to-end window gave up waiting for (see `--window`).
    pub written_off: AtomicU64,
    /// CLOCK_MONOTONIC ns of the latest delivery.
    pub last_delivery_ns: AtomicU64,
    /// Connections the broker closed or that failed after being established.
    pub disconnected: AtomicU64,
    /// Frames from the broker that did not decode.
    pub decode_errors: AtomicU64,
    /// Subscriptions refused in SUBACK, or PUBACKs with an error reason code.
    pub refused: AtomicU64,
}

impl Shared {
    pub fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    pub fn set_phase(&self, phase: u8) {
        self.phase.fetch_max(phase, Ordering::AcqRel);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A new latency histogram in nanoseconds, 1 ns to 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 100_000_000_000, 3) {
        Ok(h) => h,
        // The bounds are constants that hdrhistogram accepts; this is unreachable.
        Err(err) => unreachable!("constant histogram bounds rejected: {err}"),
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    /// `None` for an empty histogram (nothing delivered, or payloads too short for a stamp).
    pub fn from_histogram(h: &Histogram<u64>) -> Option<LatencySummary> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(LatencySummary {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        })
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn empty_histogram_has_no_summary() {
        assert_eq!(LatencySummary::from_histogram(&new_histogram()), None);
    }

    #[test]
    fn summary_of_uniform_values() {
        let mut h = new_histogram();
        // 1..=1000 µs, one sample each.
        for us in 1..=1000u64 {
            h.saturating_record(us * 1000);
        }
        let Some(s) = LatencySummary::from_histogram(&h) else {
            panic!("non-empty")
        };
        assert_eq!(s.count, 1000);
        // 3 significant digits: values are exact to within 0.1 %.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(s.p50_us, 500.0), "p50 {}", s.p50_us);
        assert!(close(s.p90_us, 900.0), "p90 {}", s.p90_us);
        assert!(close(s.p99_us, 990.0), "p99 {}", s.p99_us);
        assert!(close(s.p999_us, 999.0), "p99.9 {}", s.p999_us);
        assert!(close(s.max_us, 1000.0), "max {}", s.max_us);
        assert!(close(s.mean_us, 500.5), "mean {}", s.mean_us);
    }

    #[test]
    fn merged_histograms_count_everything() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        a.saturating_record(10_000);
        b.saturating_record(20_000);
        b.saturating_record(30_000);
        a.add(&b)
            .unwrap_or_else(|e| panic!("same bounds must merge: {e}"));
        let Some(s) = LatencySummary::from_histogram(&a) else {
            panic!("non-empty")
        };
        assert_eq!(s.count, 3);
        assert!((s.max_us - 30.0).abs() < 0.05);
    }

    #[test]
    fn phases_only_move_forward() {
        let shared = Shared::default();
        assert_eq!(shared.phase(), phase::SUBSCRIBERS);
        shared.set_phase(phase::RUN);
        shared.set_phase(phase::PUBLISHERS);
        assert_eq!(shared.phase(), phase::RUN);
    }
}
