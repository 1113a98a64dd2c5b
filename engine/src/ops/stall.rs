//! The stall detector: a shard that has ready work but makes no progress for
//! `server.stall_threshold_ms` is logged, once per stall, with what it is waiting on, and
//! counted in `ringmq_shard_stalls_total{shard}`.
//!
//! Why: the freeze of issue 12 (a shard reading publishers while its timers, accepts and
//! subscribers' writes starved) was invisible from inside — metrics kept moving. A stalled
//! shard cannot report itself, so a separate thread watches each shard's *pulse*:
//! - `progress`, bumped by the shard at every turn of its [`TurnGate`](crate::transport::turn) (after
//!   each driver turn that resumed parked work) and at every tick of its timer task;
//! - `parked`, the tasks waiting for the next driver turn (work that is ready);
//! - the shard's mesh inbox depth (messages that are ready).
//!
//! Ready work (parked tasks or inbox messages) seen with an unchanged `progress` for the whole
//! threshold is a stall. An idle shard has no ready work and is never reported; a busy shard
//! turns many times a second. The decision is a pure function of samples and time
//! ([`Detector::observe`]), tested with a fake clock below.
//!
//! What it must never do: touch a shard's state (it reads atomics only) or block a shard.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::ops::metrics::Metrics;
use crate::shard::mesh::Mesh;

/// One shard's pulse, written only by that shard's thread.
#[derive(Debug, Default)]
pub(crate) struct Pulse {
    progress: AtomicU64,
    parked: AtomicU64,
}

/// A shard's handle on its own pulse.
#[derive(Debug, Clone)]
pub(crate) struct PulseHandle {
    all: Arc<[Pulse]>,
    id: usize,
}

impl PulseHandle {
    fn pulse(&self) -> &Pulse {
        // `id` was checked against `all` when the handle was made.
        &self.all[self.id]
    }

    /// The shard moved on (a gate turn, a tick).
    pub(crate) fn progressed(&self) {
        let p = &self.pulse().progress;
        // Single writer (this shard): load + store is exact.
        p.store(p.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// Tasks parked for the next driver turn now.
    pub(crate) fn set_parked(&self, n: usize) {
        self.pulse().parked.store(n as u64, Relaxed);
    }
}

/// The pulses of every shard.
#[derive(Debug, Clone)]
pub(crate) struct Pulses(Arc<[Pulse]>);

impl Pulses {
    pub(crate) fn new(shards: usize) -> Pulses {
        Pulses((0..shards).map(|_| Pulse::default()).collect())
    }

    /// Each shard's progress count, in shard order (for the systemd watchdog, ops/notify.rs).
    pub(crate) fn progress(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().map(|p| p.progress.load(Relaxed))
    }

    /// Shard `id`'s handle; `id` must be below the number of shards.
    pub(crate) fn handle(&self, id: usize) -> PulseHandle {
        assert!(id < self.0.len(), "shard {id} has no pulse");
        PulseHandle {
            all: self.0.clone(),
            id,
        }
    }
}

/// What the watchdog reads of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub progress: u64,
    pub parked: u64,
    pub inbox: u64,
}

impl Sample {
    fn has_ready_work(self) -> bool {
        self.parked > 0 || self.inbox > 0
    }
}

/// What a check found for a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Ready work and no progress for `waited` (≥ the threshold): report it.
    Stalled { waited: Duration, sample: Sample },
    /// A reported stall ended after `lasted`.
    Resumed { lasted: Duration },
}

/// Per shard: the progress last seen, since when ready work has waited, whether reported.
#[derive(Debug, Clone, Default)]
struct Watch {
    progress: u64,
    waiting_since: Option<Instant>,
    reported: bool,
}

/// The decision, a pure function of samples and time.
#[derive(Debug)]
pub(crate) struct Detector {
    threshold: Duration,
    shards: Vec<Watch>,
}

impl Detector {
    pub(crate) fn new(shards: usize, threshold: Duration) -> Detector {
        assert!(!threshold.is_zero(), "a zero threshold means no detector");
        Detector {
            threshold,
            shards: vec![Watch::default(); shards],
        }
    }

    /// Takes shard `shard`'s sample at `now`; returns what to report, if anything.
    pub(crate) fn observe(&mut self, shard: usize, sample: Sample, now: Instant) -> Option<Event> {
        let threshold = self.threshold;
        let w = self.shards.get_mut(shard)?;
        if sample.progress != w.progress {
            w.progress = sample.progress;
            let since = w.waiting_since.take();
            if std::mem::take(&mut w.reported) {
                let lasted = since.map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
                return Some(Event::Resumed { lasted });
            }
            return None;
        }
        if !sample.has_ready_work() {
            // Idle: nothing waits, nothing to report (a stall reported before ends here too).
            w.waiting_since = None;
            w.reported = false;
            return None;
        }
        let since = *w.waiting_since.get_or_insert(now);
        let waited = now.saturating_duration_since(since);
        if waited >= threshold && !w.reported {
            w.reported = true;
            return Some(Event::Stalled { waited, sample });
        }
        None
    }
}

/// Starts the watchdog thread (for the life of the process), sampling every quarter of
/// `threshold`.
pub(crate) fn spawn_watchdog(
    pulses: Pulses,
    mesh: Mesh,
    metrics: Arc<Metrics>,
    threshold: Duration,
    shutdown: crate::transport::runtime::Shutdown,
) -> std::io::Result<()> {
    let shards = pulses.0.len();
    let mut detector = Detector::new(shards, threshold);
    std::thread::Builder::new()
        .name("ringmq-stall".into())
        .spawn(move || {
            loop {
                std::thread::sleep(threshold / 4);
                if shutdown.requested() {
                    // Shards stop serving their inboxes as they finish: not a stall.
                    return;
                }
                let now = Instant::now();
                for (shard, pulse) in pulses.0.iter().enumerate() {
                    let sample = Sample {
                        progress: pulse.progress.load(Relaxed),
                        parked: pulse.parked.load(Relaxed),
                        inbox: mesh.len(shard) as u64,
                    };
                    match detector.observe(shard, sample, now) {
                        Some(Event::Stalled { waited, sample }) => {
                            metrics.stalled(shard);
                            warn!(
                                shard,
                                waited_ms = waited.as_millis() as u64,
                                parked_tasks = sample.parked,
                                mesh_inbox = sample.inbox,
                                "shard stalled: ready work but no progress (tasks parked for \
                                 the next driver turn, messages in its inbox)"
                            );
                        }
                        Some(Event::Resumed { lasted }) => {
                            info!(
                                shard,
                                lasted_ms = lasted.as_millis() as u64,
                                "shard resumed"
                            );
                        }
                        None => {}
                    }
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(100);

    fn sample(progress: u64, parked: u64, inbox: u64) -> Sample {
        Sample {
            progress,
            parked,
            inbox,
        }
    }

    #[test]
    fn ready_work_without_progress_is_one_stall_until_progress() {
        let mut d = Detector::new(1, T);
        let t0 = Instant::now();
        assert_eq!(d.observe(0, sample(0, 3, 0), t0), None);
        assert_eq!(d.observe(0, sample(0, 3, 0), t0 + T / 2), None);
        let e = d.observe(0, sample(0, 3, 0), t0 + T);
        assert!(matches!(e, Some(Event::Stalled { waited, .. }) if waited == T));
        // Reported once per stall.
        assert_eq!(d.observe(0, sample(0, 3, 0), t0 + 3 * T), None);
        let e = d.observe(0, sample(1, 3, 0), t0 + 4 * T);
        assert_eq!(e, Some(Event::Resumed { lasted: 4 * T }));
        // A new stall is reported again.
        assert_eq!(d.observe(0, sample(1, 0, 7), t0 + 5 * T), None);
        assert!(matches!(
            d.observe(0, sample(1, 0, 7), t0 + 6 * T),
            Some(Event::Stalled { .. })
        ));
    }

    #[test]
    fn an_idle_shard_is_never_stalled() {
        let mut d = Detector::new(2, T);
        let t0 = Instant::now();
        for i in 0..100 {
            assert_eq!(d.observe(1, sample(5, 0, 0), t0 + i * T), None);
        }
    }

    #[test]
    fn a_busy_shard_that_progresses_is_never_stalled() {
        let mut d = Detector::new(1, T);
        let t0 = Instant::now();
        for i in 0..100u32 {
            let e = d.observe(0, sample(u64::from(i), 10, 500), t0 + i * T);
            assert_eq!(e, None);
        }
    }

    #[test]
    fn ready_work_that_comes_and_goes_between_samples_is_not_a_stall() {
        let mut d = Detector::new(1, T);
        let t0 = Instant::now();
        assert_eq!(d.observe(0, sample(0, 1, 0), t0), None);
        assert_eq!(d.observe(0, sample(0, 0, 0), t0 + T / 2), None);
        assert_eq!(d.observe(0, sample(0, 1, 0), t0 + T), None);
        assert_eq!(d.observe(0, sample(0, 1, 0), t0 + T + T / 2), None);
    }

    #[test]
    fn an_unknown_shard_is_ignored() {
        let mut d = Detector::new(1, T);
        assert_eq!(d.observe(3, sample(0, 1, 1), Instant::now()), None);
    }
}
