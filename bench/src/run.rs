//! Runs one load scenario: thread-per-core load threads, each a monoio runtime owning a slice
//! of the clients, coordinated by the calling thread through [`Shared`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Write as _;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use monoio::{FusionDriver, RuntimeBuilder};

use crate::client;
use crate::clock;
use crate::config::{LoadConfig, Plan, PubSpec, Scenario, SubSpec};
use crate::probe::{Probe, ProbeReport};
use crate::report::{BrokerStats, ConnectStats, Report, si};
use crate::stats::{LatencySummary, Shared, new_histogram, phase};
use crate::sysinfo::{self, ProcSample};
use crate::wire::Credentials;

/// How long one connection attempt (TCP + CONNECT/CONNACK + SUBSCRIBE/SUBACK) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the coordinator looks at the counters while publishing.
const TICK: Duration = Duration::from_millis(20);
/// Time the broker's memory is given to settle after the last connection, before sampling.
const RSS_SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("load thread {thread}: {reason}")]
    Thread { thread: usize, reason: String },
    #[error("{0} clients did not finish connecting in time")]
    ConnectStalled(u64),
    #[error("cannot start the probe thread: {0}")]
    Probe(std::io::Error),
    #[error(
        "none of the {attempted} clients could connect{} (the first errors are printed above)",
        tls_failures(*tls_failed)
    )]
    NothingConnected { attempted: u64, tls_failed: u64 },
}

fn tls_failures(n: u64) -> String {
    match n {
        0 => String::new(),
        n => format!(", {n} of them in TLS"),
    }
}

/// What a load thread connects.
#[derive(Debug, Clone)]
enum Job {
    Idle(u32),
    Sub(SubSpec),
    Pub(PubSpec),
}

impl Job {
    fn ordinal(&self) -> u32 {
        match self {
            Job::Idle(i) => *i,
            Job::Sub(s) => s.index,
            Job::Pub(p) => p.index,
        }
    }

    /// This client's number among all connections of the run, unique: idle clients and
    /// subscribers from 0, then publishers (`%i` in the client id, username, password, auth
    /// data and certificate paths; the source address it binds).
    fn connection_number(&self, shape: &client::RunShape) -> u32 {
        match self {
            Job::Idle(i) => *i,
            Job::Sub(s) => s.index,
            Job::Pub(p) => shape.first_connections + p.index,
        }
    }

    fn client_id(&self, prefix: &str) -> String {
        match self {
            Job::Idle(i) => format!("{prefix}-c{i}"),
            Job::Sub(s) => format!("{prefix}-s{}", s.index),
            Job::Pub(p) => format!("{prefix}-p{}", p.index),
        }
    }
}

struct ThreadCtx {
    cfg: Rc<LoadConfig>,
    shared: Arc<Shared>,
    latencies: Rc<RefCell<Histogram<u64>>>,
    shape: client::RunShape,
}

/// Runs `cfg` to completion and reports.
pub fn run(cfg: &LoadConfig) -> Result<Report, RunError> {
    sysinfo::raise_nofile_limit();
    let plan = Plan::new(cfg);
    let shared = Arc::new(Shared::default());
    let before = cfg.broker_pid.map(ProcSample::take);
    // From before the first connect to after the drain: a broker that stops answering while
    // clients connect, publish or drain is flagged. Dropped (stopped and joined) on every
    // early return.
    let probe = cfg
        .probe
        .clone()
        .map(Probe::start)
        .transpose()
        .map_err(RunError::Probe)?;
    let began = Instant::now();
    let began_ns = clock::monotonic_ns();
    let handles = spawn_threads(cfg, &plan, &shared)?;
    let coord = Coordinator {
        cfg,
        plan: &plan,
        shared: &shared,
        handles: &handles,
        began,
        began_ns,
        last_line: None,
    };
    let outcome = coord.drive(before);
    shared.set_phase(phase::DONE);
    let mut latencies = new_histogram();
    let mut thread_error = None;
    for (thread, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(h)) => {
                let _ = latencies.add(&h);
            }
            Ok(Err(reason)) => thread_error = Some(RunError::Thread { thread, reason }),
            Err(_) => {
                thread_error = Some(RunError::Thread {
                    thread,
                    reason: "panicked".into(),
                })
            }
        }
    }
    if let Some(err) = thread_error {
        return Err(err);
    }
    let measured = outcome?;
    let probe = probe.map(Probe::finish);
    Ok(build_report(
        cfg, &plan, &shared, &measured, &latencies, probe,
    ))
}

/// A load thread: its latency histogram, or why it could not run.
type LoadThread = JoinHandle<Result<Histogram<u64>, String>>;

fn spawn_threads(
    cfg: &LoadConfig,
    plan: &Plan,
    shared: &Arc<Shared>,
) -> Result<Vec<LoadThread>, RunError> {
    let cores = if cfg.pin {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let shape = client::RunShape {
        publishers: plan.publishers.len() as u32,
        fanout: plan.fanout,
        first_connections: plan.idle + plan.subscribers.len() as u32,
    };
    (0..cfg.threads)
        .map(|t| {
            let slice = plan.slice(t, cfg.threads);
            let cfg = cfg.clone();
            let shared = shared.clone();
            let core = cores.get(t % cores.len().max(1)).copied();
            std::thread::Builder::new()
                .name(format!("bench-{t}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    let mut runtime = RuntimeBuilder::<FusionDriver>::new()
                        .with_entries(4096)
                        .enable_timer()
                        .build()
                        .map_err(|e| format!("cannot build the monoio runtime: {e}"))?;
                    Ok(runtime.block_on(thread_main(cfg, slice, shared, shape, t)))
                })
                .map_err(|e| RunError::Thread {
                    thread: t,
                    reason: e.to_string(),
                })
        })
        .collect()
}

async fn thread_main(
    cfg: LoadConfig,
    plan: Plan,
    shared: Arc<Shared>,
    shape: client::RunShape,
    thread: usize,
) -> Histogram<u64> {
    let threads = cfg.threads as u32;
    let ctx = Rc::new(ThreadCtx {
        cfg: Rc::new(cfg),
        shared,
        latencies: Rc::new(RefCell::new(new_histogram())),
        shape,
    });
    let first: VecDeque<Job> = (0..plan.idle)
        .map(|k| Job::Idle(thread as u32 + k * threads))
        .chain(plan.subscribers.into_iter().map(Job::Sub))
        .collect();
    connect_all(&ctx, first).await;
    client::wait_phase(&ctx.shared, phase::PUBLISHERS).await;
    connect_all(&ctx, plan.publishers.into_iter().map(Job::Pub).collect()).await;
    client::wait_phase(&ctx.shared, phase::DONE).await;
    close_all().await;
    ctx.latencies.borrow().clone()
}

/// Shuts down this thread's sockets and waits (at most 3 s) for the tasks owning them to end,
/// so the descriptors are closed before the thread exits (see [`crate::sockets`]).
async fn close_all() {
    crate::sockets::shutdown_all();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while crate::sockets::live_tasks() > 0 && std::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    let left = crate::sockets::live_tasks();
    if left > 0 {
        eprintln!("warning: {left} connection tasks did not end; their sockets stay open");
    }
}

/// Connects `jobs` with at most `connect_concurrency` attempts in flight.
async fn connect_all(ctx: &Rc<ThreadCtx>, jobs: VecDeque<Job>) {
    let queue = Rc::new(RefCell::new(jobs));
    let started = clock::monotonic_ns();
    let workers: Vec<_> = (0..ctx.cfg.connect_concurrency)
        .map(|_| monoio::spawn(connect_worker(ctx.clone(), queue.clone(), started)))
        .collect();
    for worker in workers {
        worker.await;
    }
}

async fn connect_worker(ctx: Rc<ThreadCtx>, queue: Rc<RefCell<VecDeque<Job>>>, started_ns: u64) {
    loop {
        let Some(job) = queue.borrow_mut().pop_front() else {
            return;
        };
        if ctx.cfg.interval_ms > 0 {
            let due = started_ns + u64::from(job.ordinal()) * ctx.cfg.interval_ms * 1_000_000;
            let wait = due.saturating_sub(clock::monotonic_ns());
            if wait > 0 {
                monoio::time::sleep(Duration::from_nanos(wait)).await;
            }
        }
        let settled = match job {
            Job::Pub(_) => &ctx.shared.publishers_settled,
            _ => &ctx.shared.subscribers_settled,
        };
        match open(&ctx, &job).await {
            Ok(()) => Shared::add(&ctx.shared.connected, 1),
            Err(err) => {
                if err.is_tls() {
                    Shared::add(&ctx.shared.tls_failed, 1);
                }
                if ctx.shared.connect_failed.fetch_add(1, Ordering::Relaxed) < 5 {
                    let cfg = &ctx.cfg;
                    let connection = job.connection_number(&ctx.shape);
                    let id =
                        Credentials::new(cfg, connection, || job.client_id(&cfg.client_id_prefix))
                            .client_id;
                    eprintln!("{id}: {err}");
                }
            }
        }
        ctx.shared
            .last_settled_ns
            .fetch_max(clock::monotonic_ns(), Ordering::Relaxed);
        Shared::add(settled, 1);
    }
}

async fn open(ctx: &Rc<ThreadCtx>, job: &Job) -> Result<(), client::ClientError> {
    let cfg = &ctx.cfg;
    let connection = job.connection_number(&ctx.shape);
    let creds = Credentials::new(cfg, connection, || job.client_id(&cfg.client_id_prefix));
    let route = client::Route {
        target: cfg.routes.target_for(job.ordinal()),
        source: cfg.routes.source_for(connection),
    };
    let mut conn = client::connect(cfg, route, &creds, connection, CONNECT_TIMEOUT).await?;
    match job {
        Job::Idle(_) => {
            let keep_alive_secs = conn.keep_alive_secs;
            crate::sockets::spawn_io(crate::outbox::hold_idle(
                conn,
                cfg.protocol,
                keep_alive_secs,
            ));
        }
        Job::Sub(spec) => {
            monoio::time::timeout(
                CONNECT_TIMEOUT,
                client::subscribe(cfg, &mut conn, &spec.filter),
            )
            .await
            .map_err(|_| client::ClientError::Timeout)??;
            crate::sockets::spawn_io(client::run_subscriber(
                conn,
                cfg.clone(),
                ctx.shared.clone(),
                ctx.latencies.clone(),
            ));
        }
        Job::Pub(spec) => client::spawn_publisher(
            conn,
            spec.clone(),
            cfg.clone(),
            ctx.shared.clone(),
            ctx.shape,
        ),
    }
    Ok(())
}

/// Measurements taken by the coordinator.
#[derive(Debug, Default)]
struct Measured {
    connect_secs: f64,
    duration_secs: f64,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    cpu_secs: Option<f64>,
    cpu_wall_secs: f64,
    bench_cpu_secs: Option<f64>,
}

/// CPU time of this process (all load threads).
fn own_cpu_secs() -> Option<f64> {
    sysinfo::cpu_secs(std::process::id())
}

struct Coordinator<'a> {
    cfg: &'a LoadConfig,
    plan: &'a Plan,
    shared: &'a Shared,
    handles: &'a [LoadThread],
    began: Instant,
    began_ns: u64,
    /// (time, published, delivered) at the last progress line.
    last_line: Option<(Instant, u64, u64)>,
}

impl Coordinator<'_> {
    fn drive(mut self, before: Option<ProcSample>) -> Result<Measured, RunError> {
        let mut m = Measured {
            rss_before: before.and_then(|s| s.rss_bytes),
            ..Measured::default()
        };
        let first = u64::from(self.plan.idle) + self.plan.subscribers.len() as u64;
        self.wait_settled(first, |s| Shared::get(&s.subscribers_settled), "connect")?;
        if first > 0 && Shared::get(&self.shared.connected) == 0 {
            return Err(self.nothing_connected(first));
        }
        if self.cfg.scenario == Scenario::Conn {
            m.connect_secs = self.connect_secs();
            self.sleep_with_progress(RSS_SETTLE, "settle");
            let cpu_start = (self.cfg.broker_pid.map(ProcSample::take), own_cpu_secs());
            let hold_start = Instant::now();
            m.rss_after = self.cfg.broker_pid.and_then(sysinfo::rss_bytes);
            self.sleep_with_progress(self.cfg.duration, "hold");
            m.duration_secs = hold_start.elapsed().as_secs_f64();
            self.finish_cpu(&mut m, cpu_start, hold_start);
            return Ok(m);
        }
        self.shared.set_phase(phase::PUBLISHERS);
        let pubs = self.plan.publishers.len() as u64;
        self.wait_settled(pubs, |s| Shared::get(&s.publishers_settled), "connect")?;
        if Shared::get(&self.shared.connected) == 0 {
            return Err(self.nothing_connected(first + pubs));
        }
        m.connect_secs = self.connect_secs();
        let cpu_start = (self.cfg.broker_pid.map(ProcSample::take), own_cpu_secs());
        let run_start = Instant::now();
        self.shared
            .start_ns
            .store(clock::monotonic_ns(), Ordering::Release);
        self.shared.set_phase(phase::RUN);
        while run_start.elapsed() < self.cfg.duration
            && Shared::get(&self.shared.publishers_done) < pubs
        {
            self.tick("run", TICK);
            if self.thread_ended() {
                break;
            }
        }
        m.duration_secs = run_start.elapsed().as_secs_f64();
        self.shared.set_phase(phase::DRAIN);
        // With a message limit the publishers may finish between two ticks: their last write
        // is the end of publishing.
        let start_ns = self.shared.start_ns.load(Ordering::Acquire);
        let last_publish_ns = self.shared.last_publish_ns.load(Ordering::Relaxed);
        if Shared::get(&self.shared.publishers_done) == pubs && last_publish_ns > start_ns {
            m.duration_secs = (last_publish_ns - start_ns) as f64 / 1e9;
        }
        let drain_start = Instant::now();
        while drain_start.elapsed() < self.cfg.drain && !self.all_delivered() {
            self.tick("drain", Duration::from_millis(5));
        }
        m.rss_after = self.cfg.broker_pid.and_then(sysinfo::rss_bytes);
        self.finish_cpu(&mut m, cpu_start, run_start);
        Ok(m)
    }

    fn nothing_connected(&self, attempted: u64) -> RunError {
        RunError::NothingConnected {
            attempted,
            tls_failed: Shared::get(&self.shared.tls_failed),
        }
    }

    /// From the start of the run to the last connect attempt settled.
    fn connect_secs(&self) -> f64 {
        let last = self.shared.last_settled_ns.load(Ordering::Relaxed);
        last.saturating_sub(self.began_ns) as f64 / 1e9
    }

    fn finish_cpu(
        &self,
        m: &mut Measured,
        start: (Option<ProcSample>, Option<f64>),
        since: Instant,
    ) {
        m.cpu_wall_secs = since.elapsed().as_secs_f64();
        let end = self.cfg.broker_pid.and_then(sysinfo::cpu_secs);
        if let (Some(a), Some(b)) = (start.0.and_then(|s| s.cpu_secs), end) {
            m.cpu_secs = Some((b - a).max(0.0));
        }
        if let (Some(a), Some(b)) = (start.1, own_cpu_secs()) {
            m.bench_cpu_secs = Some((b - a).max(0.0));
        }
    }

    fn all_delivered(&self) -> bool {
        if self.shared.writing.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let published = Shared::get(&self.shared.published);
        let delivered_all = Shared::get(&self.shared.delivered) >= published * self.plan.fanout;
        let acked_all = self.cfg.qos == ringmq_codec::QoS::AtMostOnce
            || Shared::get(&self.shared.acked) >= published;
        delivered_all && acked_all
    }

    fn thread_ended(&self) -> bool {
        self.handles.iter().any(|h| h.is_finished())
    }

    /// Waits until `settled` reaches `target`; fails when no client settles for a whole
    /// connect timeout (plus the configured spacing), or a load thread ended.
    fn wait_settled(
        &mut self,
        target: u64,
        settled: impl Fn(&Shared) -> u64,
        what: &str,
    ) -> Result<(), RunError> {
        let patience = CONNECT_TIMEOUT * 2
            + Duration::from_millis(
                self.cfg
                    .interval_ms
                    .saturating_mul(u64::from(self.cfg.clients)),
            );
        let mut last = (settled(self.shared), Instant::now());
        while settled(self.shared) < target {
            // Short sleeps: the next phase starts as soon as the last client settles.
            self.tick(what, Duration::from_millis(1));
            let now = settled(self.shared);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > patience || self.thread_ended() {
                return Err(RunError::ConnectStalled(target - now));
            }
        }
        Ok(())
    }

    fn sleep_with_progress(&mut self, d: Duration, what: &str) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.tick(
                what,
                TICK.min(end.saturating_duration_since(Instant::now())),
            );
        }
    }

    /// Sleeps `nap` and prints a progress line once a second.
    fn tick(&mut self, what: &str, nap: Duration) {
        std::thread::sleep(nap);
        let now = Instant::now();
        let published = Shared::get(&self.shared.published);
        let delivered = Shared::get(&self.shared.delivered);
        let (t0, p0, d0) = *self.last_line.get_or_insert((now, published, delivered));
        let dt = now.duration_since(t0).as_secs_f64();
        if dt < 1.0 || self.cfg.quiet {
            return;
        }
        let s = self.shared;
        let line = format!(
            "[{:>6.1}s] {what:<7} conn {}/{} (failed {})  pub {} ({}/s)  recv {} ({}/s)  ack {}  err {}",
            self.began.elapsed().as_secs_f64(),
            Shared::get(&s.connected),
            u64::from(self.plan.idle)
                + (self.plan.subscribers.len() + self.plan.publishers.len()) as u64,
            Shared::get(&s.connect_failed),
            published,
            si((published - p0) as f64 / dt),
            delivered,
            si((delivered - d0) as f64 / dt),
            Shared::get(&s.acked),
            Shared::get(&s.disconnected) + Shared::get(&s.decode_errors) + Shared::get(&s.refused),
        );
        let _ = writeln!(std::io::stderr(), "{line}");
        self.last_line = Some((now, published, delivered));
    }
}

fn build_report(
    cfg: &LoadConfig,
    plan: &Plan,
    shared: &Shared,
    m: &Measured,
    latencies: &Histogram<u64>,
    probe: Option<ProbeReport>,
) -> Report {
    let attempted = u64::from(plan.idle) + (plan.subscribers.len() + plan.publishers.len()) as u64;
    let ok = Shared::get(&shared.connected);
    let published = Shared::get(&shared.published);
    let delivered = Shared::get(&shared.delivered);
    let expected = published * plan.fanout;
    let start_ns = shared.start_ns.load(Ordering::Acquire);
    let last_ns = shared.last_delivery_ns.load(Ordering::Relaxed);
    let delivery_secs = if last_ns > start_ns {
        (last_ns - start_ns) as f64 / 1e9
    } else {
        0.0
    };
    let per_sec = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let broker_process = cfg.broker_pid.map(|_| BrokerStats {
        rss_before_bytes: m.rss_before,
        rss_after_bytes: m.rss_after,
        rss_per_connection_bytes: match (cfg.scenario, m.rss_before, m.rss_after) {
            (Scenario::Conn, Some(a), Some(b)) if ok > 0 => Some((b as f64 - a as f64) / ok as f64),
            _ => None,
        },
        cpu_secs: m.cpu_secs,
        cpu_percent: m
            .cpu_secs
            .filter(|_| m.cpu_wall_secs > 0.0)
            .map(|c| c / m.cpu_wall_secs * 100.0),
    });
    Report {
        scenario: cfg.scenario.name().to_string(),
        label: cfg.label.clone(),
        broker: cfg.routes.describe(),
        source_addresses: cfg
            .routes
            .sources()
            .iter()
            .map(ToString::to_string)
            .collect(),
        protocol_level: cfg.protocol.level(),
        qos: cfg.qos as u8,
        payload_bytes: cfg.payload_size,
        publishers: plan.publishers.len() as u32,
        subscribers: plan.subscribers.len() as u32,
        idle_clients: plan.idle,
        threads: cfg.threads,
        rate_per_publisher: cfg.rate,
        window: cfg.window,
        tls: cfg.routes.any_tls(),
        connections: ConnectStats {
            attempted,
            ok,
            failed: Shared::get(&shared.connect_failed),
            tls_failed: Shared::get(&shared.tls_failed),
            elapsed_secs: m.connect_secs,
            per_sec: per_sec(ok, m.connect_secs),
        },
        duration_secs: m.duration_secs,
        published,
        publish_rate: per_sec(published, m.duration_secs),
        acked: Shared::get(&shared.acked),
        delivered,
        expected,
        delivery_rate: per_sec(delivered, delivery_secs),
        delivery_ratio: if expected > 0 {
            delivered as f64 / expected as f64
        } else {
            1.0
        },
        bench_cpu_percent: m
            .bench_cpu_secs
            .filter(|_| m.cpu_wall_secs > 0.0)
            .map(|c| c / m.cpu_wall_secs * 100.0),
        written_off: Shared::get(&shared.written_off),
        stale: Shared::get(&shared.stale),
        latency: LatencySummary::from_histogram(latencies),
        broker_process,
        disconnected: Shared::get(&shared.disconnected),
        decode_errors: Shared::get(&shared.decode_errors),
        refused: Shared::get(&shared.refused),
        probe,
        longest_delivery_gap_ms: None,
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn plan(argv: &[&str]) -> Plan {
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
        let Ok((scenario, args)) = cli.command.into_load() else {
            panic!("not a load command")
        };
        Plan::new(&LoadConfig::from_args(scenario, &args).unwrap_or_else(|e| panic!("{e}")))
    }

    /// `%i` in certificate paths: every connection of a run has its own number, 0 … n-1.
    #[test]
    fn connection_numbers_are_unique_and_dense() {
        for argv in [
            &["b", "conn", "-c", "5"][..],
            &["b", "p2p", "-c", "3"],
            &["b", "fan-in", "-c", "4", "--shared", "2"],
            &["b", "fan-out", "-c", "3"],
        ] {
            let plan = plan(argv);
            let shape = client::RunShape {
                publishers: plan.publishers.len() as u32,
                fanout: plan.fanout,
                first_connections: plan.idle + plan.subscribers.len() as u32,
            };
            let jobs: Vec<Job> = (0..plan.idle)
                .map(Job::Idle)
                .chain(plan.subscribers.iter().cloned().map(Job::Sub))
                .chain(plan.publishers.iter().cloned().map(Job::Pub))
                .collect();
            let mut numbers: Vec<u32> = jobs.iter().map(|j| j.connection_number(&shape)).collect();
            numbers.sort_unstable();
            let expected: Vec<u32> = (0..jobs.len() as u32).collect();
            assert_eq!(numbers, expected, "{argv:?}");
        }
    }
}
