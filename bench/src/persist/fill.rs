//! The large data set of the recovery measurement: `sessions` persistent sessions, each
//! subscribed (QoS 1) to its own topic and then disconnected, holding `messages` queued QoS 1
//! messages between them; and the check, usually after a restart, that every one is delivered
//! exactly once.
//!
//! Message `k` (0 ≤ k < messages) is publisher `k mod P`'s sequence number `k div P` and goes
//! to session `k mod sessions`, so each phase knows what the others did without sharing state
//! (they usually run in different processes, with a broker restart between them).
//!
//! Sessions connect in waves: each of `threads` workers opens one connection at a time and
//! closes it before the next, so descriptors stay at `threads` however many sessions there are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringmq_codec::{ProtocolVersion, QoS};
use serde::Serialize;

use super::conn::{Conn, SessionSpec};
use super::report::Percentiles;
use super::{PersistError, Publisher, Receiver, Tracker, source_for};

#[derive(Debug, Clone)]
pub struct FillConfig {
    pub addr: std::net::SocketAddr,
    pub sources: Vec<std::net::IpAddr>,
    pub version: ProtocolVersion,
    pub sessions: u32,
    pub messages: u64,
    pub publishers: u32,
    /// Concurrent connections while creating and verifying sessions.
    pub threads: u32,
    pub window: u16,
    pub payload_size: usize,
    pub expiry_secs: u32,
    pub prefix: String,
    pub connect_timeout: Duration,
    /// Verify: a session still missing messages gives up after this long without a delivery.
    pub quiet: Duration,
}

impl FillConfig {
    fn spec(&self, n: u32) -> SessionSpec {
        SessionSpec {
            addr: self.addr,
            source: source_for(&self.sources, n),
            version: self.version,
            expiry_secs: self.expiry_secs,
            timeout: self.connect_timeout,
        }
    }

    fn session_id(&self, i: u32) -> String {
        format!("{}-s{i}", self.prefix)
    }

    fn topic(&self, i: u32) -> String {
        format!("{}/{i}", self.prefix)
    }

    /// Messages session `i` holds.
    pub fn expected(&self, i: u32) -> u64 {
        let n = u64::from(self.sessions.max(1));
        let i = u64::from(i);
        if i >= self.messages {
            0
        } else {
            (self.messages - i).div_ceil(n)
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseReport {
    pub secs: f64,
    /// Sessions created / messages acknowledged / messages delivered, by phase.
    pub done: u64,
    pub failed: u64,
    pub refused: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub sessions_absent: u64,
    pub ack_latency_us: Option<Percentiles>,
    pub errors: Vec<String>,
}

impl PhaseReport {
    pub fn render(&self, phase: &str) -> String {
        let mut s = format!(
            "{phase}: {} done, {} failed in {:.2} s ({:.0}/s)",
            self.done,
            self.failed,
            self.secs,
            self.done as f64 / self.secs.max(1e-9)
        );
        if phase == "publish" {
            s.push_str(&format!(", {} refused", self.refused));
        }
        if let Some(l) = &self.ack_latency_us {
            s.push_str(&format!(
                ", PUBACK µs p50 {} p99 {} max {}",
                l.p50, l.p99, l.max
            ));
        }
        if phase == "verify" {
            s.push_str(&format!(
                ", lost {}, duplicates {}, sessions absent {}",
                self.lost, self.duplicates, self.sessions_absent
            ));
        }
        for e in self.errors.iter().take(5) {
            s.push_str(&format!("\n  error: {e}"));
        }
        s.push('\n');
        s
    }
}

/// Runs `work(i)` for every session `i` on `threads` workers; collects failures.
fn over_sessions(
    cfg: &FillConfig,
    work: impl Fn(u32) -> Result<(), String> + Sync,
) -> (u64, u64, Vec<String>) {
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let errors = Mutex::new(Vec::new());
    let failed = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..cfg.threads.max(1) {
            scope.spawn(|| {
                // Bounded: each turn takes a new session index until all are taken.
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Ok(i) = u32::try_from(i) else { break };
                    if i >= cfg.sessions {
                        break;
                    }
                    match work(i) {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            let mut errs = errors.lock().unwrap_or_else(|e| e.into_inner());
                            if errs.len() < 20 {
                                errs.push(e);
                            }
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
    });
    (
        done.into_inner(),
        failed.into_inner(),
        errors.into_inner().unwrap_or_else(|e| e.into_inner()),
    )
}

/// Creates every session: connect (Clean Start 0), subscribe QoS 1 to its topic, disconnect.
pub fn create_sessions(cfg: &FillConfig) -> PhaseReport {
    let start = Instant::now();
    let (done, failed, errors) = over_sessions(cfg, |i| {
        let id = cfg.session_id(i);
        let (mut c, _) = Conn::connect(&cfg.spec(i), &id).map_err(|e| format!("{id}: {e}"))?;
        c.subscribe(
            &cfg.topic(i),
            QoS::AtLeastOnce,
            cfg.connect_timeout,
            |_, _| Ok(()),
        )
        .map_err(|e| format!("{id} subscribe: {e}"))?;
        c.disconnect();
        Ok(())
    });
    PhaseReport {
        secs: start.elapsed().as_secs_f64(),
        done,
        failed,
        errors,
        ..PhaseReport::default()
    }
}

/// Publishes the messages (QoS 1, persistent publisher sessions) and waits for every PUBACK.
pub fn publish(cfg: &FillConfig) -> Result<PhaseReport, PersistError> {
    let start = Instant::now();
    let epoch = start;
    let p_count = cfg.publishers.max(1);
    let results = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for p in 0..p_count {
            let (results, errors) = (&results, &errors);
            scope.spawn(move || {
                let id = format!("{}-p{p}", cfg.prefix);
                let r = (|| -> Result<Publisher, crate::blocking::ExchangeError> {
                    let (conn, _) = Conn::connect(&cfg.spec(cfg.sessions + p), &id)?;
                    let mut pubr = Publisher::new(
                        conn,
                        p,
                        QoS::AtLeastOnce,
                        cfg.window,
                        cfg.payload_size,
                        epoch,
                    );
                    // Bounded: next_seq grows every send until k reaches `messages`.
                    loop {
                        let k = pubr.next_seq * u64::from(p_count) + u64::from(p);
                        if k >= cfg.messages {
                            break;
                        }
                        if pubr.can_send() {
                            let session = (k % u64::from(cfg.sessions.max(1))) as u32;
                            pubr.send(&cfg.topic(session))?;
                        } else {
                            pubr.poll()?;
                        }
                    }
                    pubr.settle(Instant::now() + Duration::from_secs(60))?;
                    Ok(pubr)
                })();
                match r {
                    Ok(pubr) => results.lock().unwrap_or_else(|e| e.into_inner()).push(pubr),
                    Err(e) => errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{id}: {e}")),
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 100_000_000, 3)
        .map_err(|e| PersistError::Invalid(e.to_string()))?;
    let mut acked = 0;
    let mut refused = 0;
    for p in &results {
        let _ = hist.add(&p.latency);
        acked += p.acked_count;
        refused += p.refused;
    }
    for p in results {
        p.conn.disconnect();
    }
    Ok(PhaseReport {
        secs: start.elapsed().as_secs_f64(),
        done: acked,
        failed: cfg.messages.saturating_sub(acked + refused),
        refused,
        ack_latency_us: Some(Percentiles::of(&hist)),
        errors,
        ..PhaseReport::default()
    })
}

/// Resumes every session and receives what it holds; counts losses and duplicates against
/// the full set (every message is expected: run it after a `publish` with nothing refused).
pub fn verify(cfg: &FillConfig) -> PhaseReport {
    let start = Instant::now();
    let tracker = Arc::new(Tracker::new(cfg.publishers.max(1)));
    let absent = AtomicU64::new(0);
    let (_, failed, errors) = over_sessions(cfg, |i| {
        let id = cfg.session_id(i);
        let (mut c, present) =
            Conn::connect(&cfg.spec(i), &id).map_err(|e| format!("{id}: {e}"))?;
        if !present {
            absent.fetch_add(1, Ordering::Relaxed);
        }
        let want = cfg.expected(i);
        let mut r = Receiver::default();
        let mut last = Instant::now();
        // Bounded: ends when everything arrived or after `quiet` without a delivery.
        while r.received < want && last.elapsed() < cfg.quiet {
            match c.next_packet() {
                Ok(Some(p)) => {
                    r.handle(&mut c, p, &tracker)
                        .map_err(|e| format!("{id}: {e}"))?;
                    last = Instant::now();
                }
                Ok(None) => {}
                Err(e) => return Err(format!("{id}: {e}")),
            }
        }
        // A short look for extra (duplicate) deliveries, then the last PUBACKs go out.
        let extra_until = Instant::now() + Duration::from_millis(20);
        while Instant::now() < extra_until {
            match c.next_packet() {
                Ok(Some(p)) => {
                    let _ = r.handle(&mut c, p, &tracker);
                }
                _ => break,
            }
        }
        let _ = c.flush();
        c.disconnect();
        if r.received < want {
            return Err(format!("{id}: {} of {want} messages", r.received));
        }
        Ok(())
    });
    let p_count = u64::from(cfg.publishers.max(1));
    let acked: Vec<Vec<bool>> = (0..p_count)
        .map(|p| {
            let n = if p >= cfg.messages {
                0
            } else {
                (cfg.messages - p).div_ceil(p_count)
            };
            vec![true; n as usize]
        })
        .collect();
    let (lost, duplicates) = tracker.losses_and_duplicates(&acked);
    PhaseReport {
        secs: start.elapsed().as_secs_f64(),
        done: tracker.delivered.load(Ordering::Relaxed),
        failed,
        lost,
        duplicates,
        sessions_absent: absent.into_inner(),
        errors,
        ..PhaseReport::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_counts_add_up() {
        let mut cfg = FillConfig {
            addr: "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!()),
            sources: vec![],
            version: ProtocolVersion::V5,
            sessions: 7,
            messages: 100,
            publishers: 3,
            threads: 1,
            window: 1,
            payload_size: 32,
            expiry_secs: 60,
            prefix: "x".into(),
            connect_timeout: Duration::from_secs(1),
            quiet: Duration::from_secs(1),
        };
        assert_eq!((0..7).map(|i| cfg.expected(i)).sum::<u64>(), 100);
        cfg.messages = 3;
        assert_eq!((0..7).map(|i| cfg.expected(i)).sum::<u64>(), 3);
    }
}
