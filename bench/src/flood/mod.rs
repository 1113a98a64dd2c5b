//! The open-loop flood of issue 12, with the clients shaped as a new user would write them:
//! `publishers` publishers, each a thread with a blocking `std::net::TcpStream`, writing
//! batches of `batch` QoS 0 PUBLISH packets (one `write_all` per batch, ~4.8 KB with the
//! defaults) to its own topic `{topic_prefix}/{i}` as fast as TCP lets it — no window, no
//! pacing — and one subscriber per topic, a thread reading into a 1 MiB buffer and counting.
//! The liveness [probe](crate::probe) runs throughout.
//!
//! What it is for: ringmq froze under exactly this load while ringmq-bench's own clients (monoio,
//! closed loop, smaller writes) never showed it. The shape is the point, so it stays std-only:
//! threads and blocking sockets, no runtime. Usable as a library ([`run`]) by the end-to-end
//! tests as well as through `ringmq-bench flood`.
//!
//! What it must never do: run unbounded (publishing stops after `duration`, the drain has a
//! bound, every connect and handshake has a timeout, and the controlling thread shuts the
//! sockets down so no thread stays blocked), set a write timeout on a publisher (a timed-out
//! `write_all` leaves half a packet on the wire and the broker then reads garbage), or assume
//! that a read ends on a packet boundary.

mod report;

#[cfg(test)]
pub(crate) use report::tests as tests_support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_codec::{ProtocolVersion, QosPid};

pub use report::{FloodErrors, FloodReport};

use crate::blocking::{ExchangeError, Session};
use crate::probe::{Probe, ProbeConfig};
use crate::report::si;
use crate::sysinfo::{self, ProcSample};
use ringmq_codec::framing::{FrameCounter, PUBLISH};

/// The default number of publishers (and subscribers), as in issue 12.
pub const DEFAULT_PUBLISHERS: u32 = 10;
/// PUBLISH packets per `write_all`, as in issue 12 (~4.8 KB with 64-byte payloads).
pub const DEFAULT_BATCH: u32 = 64;
/// A subscriber's read buffer, as in issue 12.
pub const DEFAULT_READ_BUFFER_BYTES: usize = 1 << 20;
/// Largest batch accepted: a batch is one buffer, built once per publisher.
const MAX_BATCH_BYTES: usize = 64 << 20;
/// Keep alive in CONNECT. Publishers are never idle; subscribers ping at half of it.
const KEEP_ALIVE_SECS: u16 = 60;
/// How long a subscriber's blocking read waits before it looks at the phase and its keep
/// alive. Reads may time out harmlessly (unlike writes): nothing is half-done.
const SUBSCRIBER_READ_TIMEOUT: Duration = Duration::from_millis(500);
/// How often, in milliseconds, the controlling thread samples the delivery counter (the
/// resolution of `longest_delivery_gap_ms`).
pub const SAMPLE_MS: u64 = 20;
const SAMPLE: Duration = Duration::from_millis(SAMPLE_MS);
/// The drain ends early once deliveries have stood still this long.
const DRAIN_QUIET: Duration = Duration::from_millis(250);
/// Error descriptions kept (counts are always complete).
const KEPT_ERRORS: usize = 5;

/// Run phases; threads only move forward.
mod phase {
    /// Publishers write.
    pub const RUN: u8 = 0;
    /// Publishers stop; subscribers keep counting what is in flight.
    pub const DRAIN: u8 = 1;
    /// Everyone stops; errors from here on are the shutdown, not the broker.
    pub const DONE: u8 = 2;
}

/// How a flood runs. [`FloodConfig::new`] gives the shape of issue 12.
#[derive(Debug, Clone)]
pub struct FloodConfig {
    pub addr: SocketAddr,
    /// Publishers, and as many subscribers (one per topic).
    pub publishers: u32,
    /// How long publishers write.
    pub duration: Duration,
    pub payload_size: usize,
    /// PUBLISH packets per `write_all`.
    pub batch: u32,
    pub read_buffer_bytes: usize,
    pub protocol: ProtocolVersion,
    /// Publisher `i` publishes to `{topic_prefix}/{i}`. The default is unique per run
    /// (`bench/flood/{run id}`): messages a broker still holds from an earlier run against
    /// the same broker must not be counted as this run's deliveries.
    pub topic_prefix: String,
    pub client_id_prefix: String,
    /// Bound on each client's TCP connect plus CONNECT/CONNACK (and SUBSCRIBE/SUBACK).
    pub connect_timeout: Duration,
    /// Longest wait for in-flight deliveries after publishing stops.
    pub drain: Duration,
    /// The liveness probe that runs during the flood (its `addr` and `protocol` are the
    /// flood's; set by [`FloodConfig::new`]).
    pub probe: ProbeConfig,
    /// Broker process whose CPU time and RSS are read from /proc.
    pub broker_pid: Option<u32>,
    /// Broker name shown in the report.
    pub label: Option<String>,
    /// No progress line on stderr.
    pub quiet: bool,
    /// `--ifaddr`: source addresses bound before connecting, round-robin over the connection
    /// numbers (subscribers 0…n-1, publishers n…2n-1); empty: the kernel picks.
    pub sources: Vec<std::net::IpAddr>,
}

impl FloodConfig {
    /// Issue 12's flood against `addr`: 10 publishers and 10 subscribers, 64-byte payloads,
    /// batches of 64, MQTT 5, 10 s, the default probe.
    pub fn new(addr: SocketAddr) -> FloodConfig {
        let run = run_id();
        let client_id_prefix = format!("rbflood{run}");
        let probe = ProbeConfig {
            client_id_prefix: format!("{client_id_prefix}-probe"),
            ..ProbeConfig::new(addr)
        };
        FloodConfig {
            addr,
            publishers: DEFAULT_PUBLISHERS,
            duration: Duration::from_secs(10),
            payload_size: 64,
            batch: DEFAULT_BATCH,
            read_buffer_bytes: DEFAULT_READ_BUFFER_BYTES,
            protocol: ProtocolVersion::V5,
            topic_prefix: format!("bench/flood/{run}"),
            client_id_prefix,
            connect_timeout: Duration::from_secs(5),
            drain: Duration::from_secs(2),
            probe,
            broker_pid: None,
            label: None,
            quiet: true,
            sources: Vec::new(),
        }
    }

    /// The source address of connection number `connection`, if any.
    fn source_for(&self, connection: u32) -> Option<std::net::IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[connection as usize % self.sources.len()])
    }

    /// The PUBLISH packet publisher `i` sends.
    fn publish_packet(&self, i: u32) -> Result<BytesMut, FloodError> {
        let mut out = BytesMut::new();
        crate::wire::publish(
            self.protocol,
            &self.topic(i),
            QosPid::AtMostOnce,
            &vec![b'x'; self.payload_size],
            &mut out,
        )
        .map_err(|e| FloodError::Config(format!("cannot build a PUBLISH: {e}")))?;
        Ok(out)
    }

    fn topic(&self, i: u32) -> String {
        format!("{}/{i}", self.topic_prefix)
    }

    fn validate(&self) -> Result<(), FloodError> {
        let bad = |why: &str| Err(FloodError::Config(why.to_string()));
        if self.publishers == 0 {
            return bad("publishers must be at least 1");
        }
        if self.batch == 0 {
            return bad("batch must be at least 1");
        }
        if self.duration.is_zero() {
            return bad("duration must be > 0");
        }
        if self.read_buffer_bytes == 0 {
            return bad("read_buffer_bytes must be at least 1");
        }
        if self.connect_timeout.is_zero() || self.probe.timeout.is_zero() {
            return bad("timeouts must be > 0");
        }
        let packet = self.publish_packet(0)?.len();
        if packet.saturating_mul(self.batch as usize) > MAX_BATCH_BYTES {
            return bad(&format!(
                "a batch of {} × {packet} bytes exceeds {} MiB",
                self.batch,
                MAX_BATCH_BYTES >> 20
            ));
        }
        Ok(())
    }
}

/// An id unique to this run among the runs of this process (a counter) and among the
/// processes running now (the pid): `{pid in hex}-{n}`. Short, so the topic adds little to a
/// packet and a batch keeps issue 12's size (~5.6 KiB with 64-byte payloads).
fn run_id() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    format!("{:x}-{n}", std::process::id())
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FloodError {
    #[error("flood configuration: {0}")]
    Config(String),
    /// A subscriber could not connect or subscribe before any load started: the broker is not
    /// reachable or refuses these clients, and a flood would measure nothing.
    #[error("subscriber {index} ({topic}): {source}")]
    Setup {
        index: u32,
        topic: String,
        source: ExchangeError,
    },
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
}

/// Counters shared by the client threads and the controlling thread. Threads add once per
/// read or per batch, not per message.
#[derive(Debug, Default)]
struct Shared {
    phase: AtomicU8,
    /// Messages in batches whose `write_all` completed.
    published: AtomicU64,
    /// PUBLISH frames the subscribers counted.
    delivered: AtomicU64,
    /// Errors are rare (at most one per client), so a lock is fine here.
    errors: std::sync::Mutex<FloodErrors>,
}

impl Shared {
    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    fn set_phase(&self, phase: u8) {
        self.phase.fetch_max(phase, Ordering::AcqRel);
    }

    /// Records an error of a client, unless it is the shutdown's doing.
    fn error(&self, count: fn(&mut FloodErrors) -> &mut u64, what: String, stopping: u8) {
        if self.phase() >= stopping {
            return;
        }
        // A poisoned lock only means another thread panicked while counting; the counts are
        // still the best there is.
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *count(&mut errors) += 1;
        if errors.messages.len() < KEPT_ERRORS {
            errors.messages.push(what);
        }
    }
}

/// The client threads and their sockets, stopped and joined on every path out of [`run`].
#[derive(Debug, Default)]
struct Crew {
    shared: Arc<Shared>,
    /// Clones of every client socket, for the shutdown that unblocks their threads.
    publisher_sockets: Vec<TcpStream>,
    subscriber_sockets: Vec<TcpStream>,
    publishers: Vec<JoinHandle<()>>,
    subscribers: Vec<JoinHandle<()>>,
}

impl Crew {
    /// Stops the publishers: a publisher blocked in `write_all` (the broker stopped reading)
    /// gets an error from the shutdown; no write timeout is needed, so none cuts a packet.
    fn stop_publishers(&mut self) {
        self.shared.set_phase(phase::DRAIN);
        for s in &self.publisher_sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
        for h in self.publishers.drain(..) {
            let _ = h.join();
        }
    }

    fn stop_subscribers(&mut self) {
        self.shared.set_phase(phase::DONE);
        for s in &self.subscriber_sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
        for h in self.subscribers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        self.stop_publishers();
        self.stop_subscribers();
    }
}

/// Runs the flood and reports. Errors only when the run cannot start (bad configuration, a
/// subscriber that cannot connect to an idle broker, no threads); everything that goes wrong
/// under load — publishers that get no CONNACK, connections the broker closes, probes without
/// an answer — is counted in the report.
pub fn run(cfg: &FloodConfig) -> Result<FloodReport, FloodError> {
    cfg.validate()?;
    sysinfo::raise_nofile_limit();
    let mut crew = Crew::default();
    let rss_before = cfg.broker_pid.and_then(sysinfo::rss_bytes);
    for i in 0..cfg.publishers {
        start_subscriber(cfg, &mut crew, i)?;
    }
    let mut probe_cfg = cfg.probe.clone();
    probe_cfg.addr = cfg.addr;
    probe_cfg.protocol = cfg.protocol;
    let probe = Probe::start(probe_cfg).map_err(FloodError::Thread)?;
    let cpu_start = (
        cfg.broker_pid.map(ProcSample::take),
        sysinfo::cpu_secs(std::process::id()),
    );
    let started = Instant::now();
    for i in 0..cfg.publishers {
        start_publisher(cfg, &mut crew, i)?;
    }
    let run = watch(cfg, &crew.shared, started);
    let delivered_in_run = crew.shared.delivered.load(Ordering::Relaxed);
    crew.stop_publishers();
    drain(cfg, &crew.shared);
    crew.stop_subscribers();
    let probe = probe.finish();
    let cpu_wall = started.elapsed().as_secs_f64();
    let broker_cpu = match (cpu_start.0.and_then(|s| s.cpu_secs), cfg.broker_pid) {
        (Some(a), Some(pid)) => sysinfo::cpu_secs(pid).map(|b| (b - a).max(0.0)),
        _ => None,
    };
    let bench_cpu = match (cpu_start.1, sysinfo::cpu_secs(std::process::id())) {
        (Some(a), Some(b)) => Some((b - a).max(0.0)),
        _ => None,
    };
    let shared = &crew.shared;
    let errors = shared
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(FloodReport::build(report::Measured {
        cfg,
        packet_bytes: cfg.publish_packet(0)?.len(),
        duration_secs: run.duration.as_secs_f64(),
        published: shared.published.load(Ordering::Relaxed),
        delivered_in_run,
        delivered: shared.delivered.load(Ordering::Relaxed),
        longest_gap: run.longest_gap,
        rss: (rss_before, cfg.broker_pid.and_then(sysinfo::rss_bytes)),
        broker_cpu_secs: broker_cpu,
        bench_cpu_secs: bench_cpu,
        cpu_wall_secs: cpu_wall,
        errors,
        probe,
    }))
}

/// Connects and subscribes subscriber `i` (before any load: a failure here is a setup
/// failure) and starts its reading thread.
fn start_subscriber(cfg: &FloodConfig, crew: &mut Crew, i: u32) -> Result<(), FloodError> {
    let setup = |source| FloodError::Setup {
        index: i,
        topic: cfg.topic(i),
        source,
    };
    let (mut session, _) = Session::connect_from(
        cfg.source_for(i),
        cfg.addr,
        cfg.protocol,
        &format!("{}-s{i}", cfg.client_id_prefix),
        KEEP_ALIVE_SECS,
        cfg.connect_timeout,
    )
    .map_err(setup)?;
    session
        .subscribe(&cfg.topic(i), cfg.connect_timeout)
        .map_err(setup)?;
    let clone = session
        .stream
        .try_clone()
        .map_err(|e| setup(ExchangeError::Io(e)))?;
    crew.subscriber_sockets.push(clone);
    let shared = crew.shared.clone();
    let buffer = cfg.read_buffer_bytes;
    let handle = std::thread::Builder::new()
        .name(format!("flood-sub-{i}"))
        .spawn(move || subscribe_loop(session, i, buffer, &shared))
        .map_err(FloodError::Thread)?;
    crew.subscribers.push(handle);
    Ok(())
}

/// A subscriber: reads whatever arrives into one large buffer and counts PUBLISH frames,
/// whose boundaries fall anywhere in a read.
fn subscribe_loop(mut session: Session, i: u32, buffer: usize, shared: &Shared) {
    let mut buf = vec![0u8; buffer];
    let mut frames = FrameCounter::new();
    let mut last_write = Instant::now();
    let ping_every = Duration::from_secs(u64::from(KEEP_ALIVE_SECS) / 2);
    let pingreq = [0xC0, 0x00];
    if let Err(e) = session
        .stream
        .set_read_timeout(Some(SUBSCRIBER_READ_TIMEOUT))
    {
        shared.error(
            |e| &mut e.subscribers,
            format!("subscriber {i}: {e}"),
            phase::DONE,
        );
        return;
    }
    // Bounded by the phase: the controlling thread moves to DONE and shuts the socket down,
    // which ends a blocked read at once; a read times out at least every 500 ms.
    while shared.phase() < phase::DONE {
        match session.stream.read(&mut buf) {
            Ok(0) => {
                let why = format!("subscriber {i}: the broker closed the connection");
                shared.error(|e| &mut e.subscribers, why, phase::DONE);
                return;
            }
            Ok(n) => {
                let before = frames.frames(PUBLISH);
                if let Err(err) = frames.feed(&buf[..n]) {
                    let why = format!("subscriber {i}: {err}");
                    shared.error(|e| &mut e.decode_errors, why, phase::DONE);
                    return;
                }
                let n = frames.frames(PUBLISH) - before;
                if n > 0 {
                    shared.delivered.fetch_add(n, Ordering::Relaxed);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(err) => {
                let why = format!("subscriber {i}: {err}");
                shared.error(|e| &mut e.subscribers, why, phase::DONE);
                return;
            }
        }
        // A subscriber only reads, so it pings to keep its keep alive; the write is 2 bytes
        // and the socket is never write-blocked by this client's own traffic.
        if last_write.elapsed() >= ping_every {
            last_write = Instant::now();
            if let Err(err) = session.stream.write_all(&pingreq) {
                let why = format!("subscriber {i}: PINGREQ: {err}");
                shared.error(|e| &mut e.subscribers, why, phase::DONE);
                return;
            }
        }
    }
}

/// Opens publisher `i`'s TCP connection here, so its socket can be shut down from here, and
/// starts its thread (handshake, then flood). A publisher that cannot connect is counted, not
/// an error: under a flood that is what a frozen broker looks like.
fn start_publisher(cfg: &FloodConfig, crew: &mut Crew, i: u32) -> Result<(), FloodError> {
    let started = Instant::now();
    let source = cfg.source_for(cfg.publishers + i);
    let stream = match crate::target::connect_blocking(source, cfg.addr, cfg.connect_timeout)
        .and_then(|s| s.try_clone().map(|clone| (s, clone)))
    {
        Ok((stream, clone)) => {
            crew.publisher_sockets.push(clone);
            stream
        }
        Err(e) => {
            crew.shared.error(
                |e| &mut e.publishers_not_connected,
                format!("publisher {i}: TCP connect: {e}"),
                phase::DRAIN,
            );
            return Ok(());
        }
    };
    let batch = batch_bytes(&cfg.publish_packet(i)?, cfg.batch);
    let shared = crew.shared.clone();
    let (version, timeout) = (cfg.protocol, cfg.connect_timeout);
    let client_id = format!("{}-p{i}", cfg.client_id_prefix);
    let batch_messages = u64::from(cfg.batch);
    let handle = std::thread::Builder::new()
        .name(format!("flood-pub-{i}"))
        .spawn(move || {
            let handshake = Session::handshake(
                stream,
                version,
                &client_id,
                KEEP_ALIVE_SECS,
                started,
                timeout,
            );
            match handshake {
                Ok((session, _)) => publish_loop(session, i, &batch, batch_messages, &shared),
                Err(err) => shared.error(
                    |e| &mut e.publishers_not_connected,
                    format!("publisher {i}: {err}"),
                    phase::DRAIN,
                ),
            }
        })
        .map_err(FloodError::Thread)?;
    crew.publishers.push(handle);
    Ok(())
}

/// `packet` repeated `count` times: one buffer, one `write_all`.
fn batch_bytes(packet: &[u8], count: u32) -> Vec<u8> {
    packet.repeat(count as usize)
}

/// A publisher: the same batch written again and again, one `write_all` each, until the run
/// moves on.
fn publish_loop(session: Session, i: u32, batch: &[u8], messages: u64, shared: &Shared) {
    let mut stream = session.stream;
    // No write timeout: a write_all that times out has written part of a packet, and the
    // broker would read the next batch as garbage. Blocking forever is safe because the
    // controlling thread shuts the socket down at the end, which fails the write.
    if let Err(err) = stream.set_write_timeout(None) {
        shared.error(
            |e| &mut e.publishers,
            format!("publisher {i}: {err}"),
            phase::DRAIN,
        );
        return;
    }
    let packet_bytes = batch.len() / messages.max(1) as usize;
    // Bounded by the phase: the controlling thread moves to DRAIN after `duration` and shuts
    // the socket down, which ends a blocked write.
    while shared.phase() == phase::RUN {
        match write_all(&mut stream, batch) {
            Ok(()) => {
                shared.published.fetch_add(messages, Ordering::Relaxed);
            }
            Err((written, err)) => {
                // The packets of a batch cut short by the shutdown that made it out are
                // published too: subscribers may count them.
                let whole = written / packet_bytes.max(1);
                shared.published.fetch_add(whole as u64, Ordering::Relaxed);
                let why = format!("publisher {i}: write: {err}");
                shared.error(|e| &mut e.publishers, why, phase::DRAIN);
                return;
            }
        }
    }
}

/// `Write::write_all` (the same `write` calls) that also says how much was written when it
/// fails.
fn write_all(stream: &mut TcpStream, buf: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut at = 0;
    // Each turn writes at least one byte or returns; `Interrupted` retries like write_all.
    while at < buf.len() {
        match stream.write(&buf[at..]) {
            Ok(0) => return Err((at, io::ErrorKind::WriteZero.into())),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((at, e)),
        }
    }
    Ok(())
}

/// What the controlling thread saw while the publishers wrote.
#[derive(Debug)]
struct Watched {
    duration: Duration,
    /// Longest time the delivery counter stood still.
    longest_gap: Duration,
}

/// Sleeps through the run, sampling the delivery counter and printing a progress line a
/// second (unless quiet).
fn watch(cfg: &FloodConfig, shared: &Shared, started: Instant) -> Watched {
    let mut last_change = (shared.delivered.load(Ordering::Relaxed), started);
    let mut longest_gap = Duration::ZERO;
    let mut line = (started, 0u64, 0u64);
    // Bounded by `duration`.
    while started.elapsed() < cfg.duration {
        std::thread::sleep(SAMPLE.min(cfg.duration.saturating_sub(started.elapsed())));
        let now = Instant::now();
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if delivered != last_change.0 {
            last_change = (delivered, now);
        }
        longest_gap = longest_gap.max(now.duration_since(last_change.1));
        let dt = now.duration_since(line.0).as_secs_f64();
        if !cfg.quiet && dt >= 1.0 {
            let published = shared.published.load(Ordering::Relaxed);
            eprintln!(
                "[{:>6.1}s] flood   pub {} ({}/s)  recv {} ({}/s)",
                started.elapsed().as_secs_f64(),
                published,
                si((published - line.1) as f64 / dt),
                delivered,
                si((delivered - line.2) as f64 / dt),
            );
            line = (now, published, delivered);
        }
    }
    Watched {
        duration: started.elapsed(),
        longest_gap,
    }
}

/// Waits for what is in flight to arrive: until deliveries stand still for `DRAIN_QUIET`, at
/// most `cfg.drain`.
fn drain(cfg: &FloodConfig, shared: &Shared) {
    let began = Instant::now();
    let mut last = (shared.delivered.load(Ordering::Relaxed), Instant::now());
    while began.elapsed() < cfg.drain && last.1.elapsed() < DRAIN_QUIET {
        std::thread::sleep(SAMPLE);
        let now = shared.delivered.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    fn cfg() -> FloodConfig {
        FloodConfig::new(SocketAddr::from(([127, 0, 0, 1], 1883)))
    }

    #[test]
    fn defaults_are_the_shape_of_issue_12() {
        let mut c = cfg();
        assert_eq!(c.publishers, 10);
        assert_eq!(c.batch, 64);
        assert_eq!(c.payload_size, 64);
        assert_eq!(c.read_buffer_bytes, 1 << 20);
        assert_eq!(c.protocol, ProtocolVersion::V5);
        c.topic_prefix = "bench/flood".into();
        let packet = c.publish_packet(3).unwrap_or_else(|e| panic!("{e}"));
        // 0x30, length, topic "bench/flood/3" (2 + 13), no properties (1), 64 bytes.
        assert_eq!(packet.len(), 2 + 2 + 13 + 1 + 64);
        let batch = batch_bytes(&packet, c.batch);
        assert_eq!(batch.len(), 82 * 64);
        let mut frames = FrameCounter::new();
        assert_eq!(frames.feed(&batch), Ok(64));
        assert_eq!(frames.frames(PUBLISH), 64);
    }

    #[test]
    fn every_run_has_its_own_topics_and_client_ids() {
        let (a, b) = (cfg(), cfg());
        assert_ne!(a.topic_prefix, b.topic_prefix);
        assert!(a.topic_prefix.starts_with("bench/flood/"));
        assert_ne!(a.client_id_prefix, b.client_id_prefix);
        assert_eq!(
            a.probe.client_id_prefix,
            format!("{}-probe", a.client_id_prefix)
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        let refused = |f: fn(&mut FloodConfig)| {
            let mut c = cfg();
            f(&mut c);
            matches!(run(&c), Err(FloodError::Config(_)))
        };
        assert!(refused(|c| c.publishers = 0));
        assert!(refused(|c| c.batch = 0));
        assert!(refused(|c| c.duration = Duration::ZERO));
        assert!(refused(|c| c.read_buffer_bytes = 0));
        assert!(refused(|c| c.payload_size = 2 << 20));
    }

    #[test]
    fn an_unreachable_broker_is_a_setup_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        drop(l);
        let mut c = FloodConfig::new(addr);
        c.connect_timeout = Duration::from_millis(200);
        c.topic_prefix = "t".into();
        match run(&c) {
            Err(e @ FloodError::Setup { index: 0, .. }) => {
                assert!(
                    e.to_string().starts_with("subscriber 0 (t/0): TCP connect"),
                    "{e}"
                );
            }
            other => panic!("expected a setup error, got {other:?}"),
        }
    }
}
