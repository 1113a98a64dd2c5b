//! Persistent sessions (issue 14): publishers and subscribers with Clean Start 0 and a Session
//! Expiry Interval (MQTT 5) or clean session 0 (3.1.1), QoS 1 or 2, and subscribers that go
//! away and come back with the same client id and must receive what was queued meanwhile.
//! Every message carries (publisher, sequence number), so losses and duplicates are counted
//! exactly; publishers measure the acknowledgement latency (PUBACK, or PUBREC for QoS 2: the
//! acknowledgement a persisting broker holds until the message is on disk). With
//! `--metrics HOST:PORT` ringmq's `ringmq_storage_*` counters are scraped before and after:
//! fsyncs per second and records per fsync.
//!
//! [`fill`] builds the large data set of the recovery measurement (many sessions holding many
//! queued messages) and checks, after a restart, that each is delivered once.
//!
//! What it is for: the durability benchmarks and the large-recovery end-to-end test. Clients
//! are threads with blocking sockets (as in `flood`): the point is correctness counts and the
//! broker's acknowledgement latency, not the generator's speed.
//!
//! What it must never do: wait without a bound (every phase has a deadline), count a QoS 2
//! message twice because the broker resent it before PUBREL (the receiver keeps its PUBREC'd
//! packet ids across reconnects, as a client must), or panic on what a broker sends.

pub mod args;
pub mod conn;
pub mod fill;
pub mod report;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringmq_codec::{Packet, ProtocolVersion, Publish, QoS, QosPid};

use crate::blocking::ExchangeError;
use conn::{AckKind, Conn, SessionSpec};
pub use report::{PersistReport, StorageCounters};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    #[error("{what}: {source}")]
    Client { what: String, source: ExchangeError },
    #[error("invalid option: {0}")]
    Invalid(String),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// Bytes of a payload's header: send time (ns since the run's epoch), publisher, sequence.
pub const PAYLOAD_HEADER: usize = 20;

/// The persistent-session scenario's options.
#[derive(Debug, Clone)]
pub struct PersistConfig {
    pub addr: SocketAddr,
    pub sources: Vec<std::net::IpAddr>,
    pub version: ProtocolVersion,
    pub publishers: u32,
    /// Subscribers, one topic each; publisher `i` publishes to topic `i mod subscribers`
    /// (p2p when equal, fan-in when fewer).
    pub subscribers: u32,
    pub qos: QoS,
    /// Unacknowledged messages per publisher.
    pub window: u16,
    pub payload_size: usize,
    pub expiry_secs: u32,
    pub duration: Duration,
    /// Subscribers stay connected this long, then disconnect for `offline`, then reconnect.
    /// Zero `offline`: they never leave.
    pub online: Duration,
    pub offline: Duration,
    /// Bound on the drain after publishing (outstanding acknowledgements, then every subscriber
    /// back online until `quiet` passes without a delivery).
    pub drain: Duration,
    pub quiet: Duration,
    /// Client id and topic prefix (unique per run).
    pub prefix: String,
    pub metrics: Option<SocketAddr>,
    pub broker_pid: Option<u32>,
    pub connect_timeout: Duration,
}

impl PersistConfig {
    fn spec(&self, n: u32) -> SessionSpec {
        SessionSpec {
            addr: self.addr,
            source: source_for(&self.sources, n),
            version: self.version,
            expiry_secs: self.expiry_secs,
            timeout: self.connect_timeout,
        }
    }
}

pub(crate) fn source_for(sources: &[std::net::IpAddr], n: u32) -> Option<std::net::IpAddr> {
    if sources.is_empty() {
        None
    } else {
        sources.get(n as usize % sources.len()).copied()
    }
}

/// Per publisher, how often each sequence number was delivered (saturating at 255).
#[derive(Debug)]
pub struct Tracker {
    per_publisher: Box<[Mutex<Vec<u8>>]>,
    /// Deliveries whose payload was not ours (too short, unknown publisher).
    pub foreign: AtomicU64,
    pub delivered: AtomicU64,
}

impl Tracker {
    pub fn new(publishers: u32) -> Tracker {
        Tracker {
            per_publisher: (0..publishers).map(|_| Mutex::new(Vec::new())).collect(),
            foreign: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        }
    }

    fn record(&self, payload: &[u8]) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let Some((p, seq)) = decode_ids(payload) else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(slot) = self.per_publisher.get(p as usize) else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Ok(seq) = usize::try_from(seq) else {
            return;
        };
        let mut counts = slot.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() <= seq {
            counts.resize(seq + 1, 0);
        }
        if let Some(c) = counts.get_mut(seq) {
            *c = c.saturating_add(1);
        }
    }

    /// How often publisher `p`'s message `seq` was delivered.
    pub fn count(&self, p: u32, seq: u64) -> u8 {
        let Some(slot) = self.per_publisher.get(p as usize) else {
            return 0;
        };
        let counts = slot.lock().unwrap_or_else(|e| e.into_inner());
        usize::try_from(seq)
            .ok()
            .and_then(|s| counts.get(s).copied())
            .unwrap_or(0)
    }

    /// (lost, duplicates): acknowledged messages never delivered, and deliveries beyond the
    /// first of any message. `acked[p]` lists publisher `p`'s acknowledged sequence numbers.
    pub fn losses_and_duplicates(&self, acked: &[Vec<bool>]) -> (u64, u64) {
        let mut lost = 0;
        let mut dups = 0;
        for (p, slot) in self.per_publisher.iter().enumerate() {
            let counts = slot.lock().unwrap_or_else(|e| e.into_inner());
            let acks = acked.get(p).map(Vec::as_slice).unwrap_or(&[]);
            for (seq, &a) in acks.iter().enumerate() {
                if a && counts.get(seq).copied().unwrap_or(0) == 0 {
                    lost += 1;
                }
            }
            dups += counts
                .iter()
                .map(|&c| u64::from(c.saturating_sub(1)))
                .sum::<u64>();
        }
        (lost, dups)
    }
}

pub fn encode_payload(buf: &mut [u8], epoch: Instant, p: u32, seq: u64) {
    let ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    if let Some(h) = buf.get_mut(..PAYLOAD_HEADER) {
        h[..8].copy_from_slice(&ns.to_le_bytes());
        h[8..12].copy_from_slice(&p.to_le_bytes());
        h[12..20].copy_from_slice(&seq.to_le_bytes());
    }
}

pub fn decode_ids(payload: &[u8]) -> Option<(u32, u64)> {
    let h = payload.get(..PAYLOAD_HEADER)?;
    let p = u32::from_le_bytes(h[8..12].try_into().ok()?);
    let seq = u64::from_le_bytes(h[12..20].try_into().ok()?);
    Some((p, seq))
}

/// The receiving side of one session: acknowledges, records, and remembers the QoS 2 packet
/// ids it sent PUBREC for until their PUBREL (across reconnects, as the spec asks).
#[derive(Debug, Default)]
pub struct Receiver {
    /// QoS 2 packet ids PUBREC'd and not yet released, with the message each carried.
    qos2_pending: HashMap<u16, (u32, u64)>,
    /// The last released QoS 2 messages (packet id, publisher, sequence), to explain a QoS 2
    /// duplicate when one is seen.
    released: VecDeque<(u16, u32, u64)>,
    /// QoS 2 messages delivered again after a first delivery (an exactly-once violation);
    /// the first few are printed to stderr with what is known about them.
    pub qos2_duplicates: u64,
    pub received: u64,
    pub with_dup_flag: u64,
}

impl Receiver {
    /// Handles one packet from the broker; returns whether it was a new delivery.
    pub fn handle(
        &mut self,
        conn: &mut Conn,
        packet: Packet,
        tracker: &Tracker,
    ) -> Result<bool, ExchangeError> {
        match packet {
            Packet::Publish(p) => self.publish(conn, p, tracker),
            Packet::PubRel(r) => {
                if let Some((p, seq)) = self.qos2_pending.remove(&r.packet_id.get()) {
                    if self.released.len() >= 4096 {
                        self.released.pop_front();
                    }
                    self.released.push_back((r.packet_id.get(), p, seq));
                }
                conn.ack(AckKind::PubComp, r.packet_id)?;
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    fn publish(
        &mut self,
        conn: &mut Conn,
        p: Publish,
        tracker: &Tracker,
    ) -> Result<bool, ExchangeError> {
        if p.dup {
            self.with_dup_flag += 1;
        }
        let new = match p.qos_pid {
            QosPid::AtMostOnce => true,
            QosPid::AtLeastOnce(id) => {
                conn.ack(AckKind::PubAck, id)?;
                true
            }
            QosPid::ExactlyOnce(id) => {
                conn.ack(AckKind::PubRec, id)?;
                let ids = decode_ids(&p.payload).unwrap_or((u32::MAX, u64::MAX));
                let new = !self.qos2_pending.contains_key(&id.get());
                if new {
                    self.qos2_pending.insert(id.get(), ids);
                    if tracker.count(ids.0, ids.1) > 0 {
                        self.qos2_duplicates += 1;
                        if self.qos2_duplicates <= 3 {
                            let before = self.released.iter().find(|r| (r.1, r.2) == ids);
                            eprintln!(
                                "QoS 2 duplicate: publisher {} seq {} packet id {} dup flag {}; released before as {:?} (packet id, publisher, seq)",
                                ids.0, ids.1, id, p.dup, before
                            );
                        }
                    }
                }
                new
            }
        };
        if new {
            self.received += 1;
            tracker.record(&p.payload);
        }
        Ok(new)
    }
}

/// One publisher: a window of unacknowledged messages, acknowledgement latency, and which
/// sequence numbers were acknowledged.
#[derive(Debug)]
pub struct Publisher {
    pub conn: Conn,
    pub index: u32,
    qos: QoS,
    window: usize,
    slots: Vec<Option<(u64, Instant)>>,
    next_pid: u16,
    pub inflight: usize,
    pub next_seq: u64,
    pub acked: Vec<bool>,
    pub acked_count: u64,
    pub refused: u64,
    pub latency: Histogram<u64>,
    payload: Vec<u8>,
    epoch: Instant,
}

impl Publisher {
    pub fn new(
        conn: Conn,
        index: u32,
        qos: QoS,
        window: u16,
        payload_size: usize,
        epoch: Instant,
    ) -> Publisher {
        Publisher {
            conn,
            index,
            qos,
            window: usize::from(window.max(1)),
            slots: vec![None; 65536],
            next_pid: 0,
            inflight: 0,
            next_seq: 0,
            acked: Vec::new(),
            acked_count: 0,
            refused: 0,
            // 1 µs .. 100 s, 3 significant digits; the bounds are constants that are valid.
            latency: Histogram::new_with_bounds(1, 100_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_hist())),
            payload: vec![0u8; payload_size.max(PAYLOAD_HEADER)],
            epoch,
        }
    }

    /// Whether the window has room.
    pub fn can_send(&self) -> bool {
        self.inflight < self.window
    }

    /// Queues the next message to `topic` (written by the next read or flush).
    pub fn send(&mut self, topic: &str) -> Result<(), ExchangeError> {
        let pid = self.take_pid();
        let seq = self.next_seq;
        self.next_seq += 1;
        encode_payload(&mut self.payload, self.epoch, self.index, seq);
        let qos_pid = match self.qos {
            QoS::AtMostOnce => QosPid::AtMostOnce,
            QoS::AtLeastOnce => QosPid::AtLeastOnce(pid),
            QoS::ExactlyOnce => QosPid::ExactlyOnce(pid),
        };
        self.conn.publish(topic, qos_pid, &self.payload)?;
        if self.acked.len() <= seq as usize {
            self.acked.resize(seq as usize + 1, false);
        }
        if self.qos == QoS::AtMostOnce {
            return Ok(());
        }
        if let Some(s) = self.slots.get_mut(usize::from(pid.get())) {
            *s = Some((seq, Instant::now()));
        }
        self.inflight += 1;
        Ok(())
    }

    fn take_pid(&mut self) -> NonZeroU16 {
        // Bounded: at most 65535 steps, and the window (≤ 65535) leaves a free id.
        for _ in 0..65535 {
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            if self
                .slots
                .get(usize::from(self.next_pid))
                .is_some_and(Option::is_none)
            {
                break;
            }
        }
        NonZeroU16::new(self.next_pid).unwrap_or(NonZeroU16::MIN)
    }

    /// Reads (at most one socket read) and handles what came; returns how many messages
    /// completed (their window slot freed).
    pub fn poll(&mut self) -> Result<usize, ExchangeError> {
        let mut done = 0;
        let mut first = true;
        loop {
            let packet = if first {
                first = false;
                self.conn.next_packet()?
            } else {
                self.conn.next_buffered()?
            };
            let Some(packet) = packet else {
                return Ok(done);
            };
            match packet {
                Packet::PubAck(r) => {
                    self.acknowledged(r.packet_id, r.reason_code.is_error());
                    self.free(r.packet_id);
                    done += 1;
                }
                Packet::PubRec(r) => {
                    let refused = r.reason_code.is_error();
                    self.acknowledged(r.packet_id, refused);
                    if refused {
                        self.free(r.packet_id);
                        done += 1;
                    } else {
                        self.conn.ack(AckKind::PubRel, r.packet_id)?;
                    }
                }
                Packet::PubComp(r) => {
                    self.free(r.packet_id);
                    done += 1;
                }
                _ => {}
            }
        }
    }

    fn acknowledged(&mut self, pid: NonZeroU16, refused: bool) {
        let Some(&Some((seq, sent))) = self.slots.get(usize::from(pid.get())) else {
            return;
        };
        if refused {
            self.refused += 1;
            return;
        }
        let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        let _ = self.latency.record(us.max(1));
        if let Some(a) = self.acked.get_mut(seq as usize) {
            *a = true;
        }
        self.acked_count += 1;
    }

    fn free(&mut self, pid: NonZeroU16) {
        if let Some(s) = self.slots.get_mut(usize::from(pid.get()))
            && s.take().is_some()
        {
            self.inflight = self.inflight.saturating_sub(1);
        }
    }

    /// Waits (bounded by `deadline`) for every outstanding acknowledgement.
    pub fn settle(&mut self, deadline: Instant) -> Result<(), ExchangeError> {
        self.conn.flush()?;
        while self.inflight > 0 && Instant::now() < deadline {
            self.poll()?;
        }
        Ok(())
    }
}

#[allow(clippy::panic)]
fn unreachable_hist() -> Histogram<u64> {
    panic!("hdrhistogram rejects 3 significant digits")
}

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const DONE: u8 = 2;

/// Runs the persistent-session scenario.
pub fn run(cfg: &PersistConfig) -> Result<PersistReport, PersistError> {
    if cfg.publishers == 0 || cfg.subscribers == 0 {
        return Err(PersistError::Invalid(
            "publishers and subscribers must be at least 1".into(),
        ));
    }
    if cfg.payload_size < PAYLOAD_HEADER {
        return Err(PersistError::Invalid(format!(
            "payload size must be at least {PAYLOAD_HEADER} bytes"
        )));
    }
    let epoch = Instant::now();
    let tracker = Arc::new(Tracker::new(cfg.publishers));
    let phase = Arc::new(AtomicU8::new(RUNNING));
    let reconnects = Arc::new(AtomicU64::new(0));
    let absent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let quiet_subscribers = Arc::new(AtomicU64::new(0));

    // Subscribers first: connect, subscribe, then they cycle on their own threads.
    let mut sub_threads = Vec::new();
    for i in 0..cfg.subscribers {
        let id = format!("{}-s{i}", cfg.prefix);
        let topic = format!("{}/{i}", cfg.prefix);
        let spec = cfg.spec(i);
        let (mut conn, _) = Conn::connect(&spec, &id).map_err(|source| PersistError::Client {
            what: format!("subscriber {id}"),
            source,
        })?;
        conn.subscribe(&topic, cfg.qos, cfg.connect_timeout, |_, _| Ok(()))
            .map_err(|source| PersistError::Client {
                what: format!("subscribe {id}"),
                source,
            })?;
        let (tracker, phase, reconnects, absent, errors, quiet_subscribers) = (
            tracker.clone(),
            phase.clone(),
            reconnects.clone(),
            absent.clone(),
            errors.clone(),
            quiet_subscribers.clone(),
        );
        let (online, offline, quiet) = (cfg.online, cfg.offline, cfg.quiet);
        let t = std::thread::Builder::new()
            .name(format!("persist-sub-{i}"))
            .spawn(move || {
                let mut s = SubscriberLoop {
                    spec,
                    id,
                    conn: Some(conn),
                    receiver: Receiver::default(),
                    online,
                    offline,
                    quiet,
                };
                if let Err(e) = s.run(&tracker, &phase, &reconnects, &absent) {
                    errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{}: {e}", s.id));
                }
                quiet_subscribers.fetch_add(1, Ordering::Relaxed);
                s.receiver
            })
            .map_err(PersistError::Thread)?;
        sub_threads.push(t);
    }

    let before = cfg.metrics.and_then(|m| report::scrape(m).ok());
    let cpu_before = cfg.broker_pid.and_then(crate::sysinfo::cpu_secs);
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut pub_threads = Vec::new();
    for i in 0..cfg.publishers {
        let id = format!("{}-p{i}", cfg.prefix);
        let topic = format!("{}/{}", cfg.prefix, i % cfg.subscribers);
        let spec = cfg.spec(cfg.subscribers + i);
        let (conn, _) = Conn::connect(&spec, &id).map_err(|source| PersistError::Client {
            what: format!("publisher {id}"),
            source,
        })?;
        let mut p = Publisher::new(conn, i, cfg.qos, cfg.window, cfg.payload_size, epoch);
        let (stop, drain) = (stop.clone(), cfg.drain);
        let t = std::thread::Builder::new()
            .name(format!("persist-pub-{i}"))
            .spawn(move || -> (Publisher, Option<ExchangeError>) {
                let r = (|| {
                    while !stop.load(Ordering::Relaxed) {
                        while p.can_send() {
                            p.send(&topic)?;
                        }
                        p.poll()?;
                    }
                    p.settle(Instant::now() + drain)
                })();
                (p, r.err())
            })
            .map_err(PersistError::Thread)?;
        pub_threads.push(t);
    }
    std::thread::sleep(cfg.duration);
    stop.store(true, Ordering::Relaxed);
    let publish_elapsed = start.elapsed();
    let mut publishers = Vec::new();
    for t in pub_threads {
        match t.join() {
            Ok((p, err)) => {
                if let Some(e) = err {
                    errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("publisher {}: {e}", p.index));
                }
                publishers.push(p);
            }
            Err(_) => errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push("a publisher thread panicked".into()),
        }
    }
    let acked_elapsed = start.elapsed();
    let after = cfg.metrics.and_then(|m| report::scrape(m).ok());
    let cpu_after = cfg.broker_pid.and_then(crate::sysinfo::cpu_secs);
    // Everyone back online until deliveries stop.
    phase.store(DRAINING, Ordering::Relaxed);
    let drain_deadline = Instant::now() + cfg.drain;
    while quiet_subscribers.load(Ordering::Relaxed) < u64::from(cfg.subscribers)
        && Instant::now() < drain_deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    phase.store(DONE, Ordering::Relaxed);
    let mut receivers = Vec::new();
    for t in sub_threads {
        if let Ok(r) = t.join() {
            receivers.push(r);
        }
    }

    let acked: Vec<Vec<bool>> = publishers.iter().map(|p| p.acked.clone()).collect();
    let (lost, duplicates) = tracker.losses_and_duplicates(&acked);
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 100_000_000, 3).unwrap_or_else(|_| unreachable_hist());
    for p in &publishers {
        let _ = latency.add(&p.latency);
    }
    let published: u64 = publishers.iter().map(|p| p.next_seq).sum();
    let acked_count: u64 = publishers.iter().map(|p| p.acked_count).sum();
    let refused: u64 = publishers.iter().map(|p| p.refused).sum();
    let storage = match (before, after) {
        (Some(b), Some(a)) => Some(a.since(&b, acked_elapsed)),
        _ => None,
    };
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(PersistReport {
        broker: cfg.addr.to_string(),
        protocol: match cfg.version {
            ProtocolVersion::V5 => "5".into(),
            ProtocolVersion::V3_1_1 => "3.1.1".into(),
            ProtocolVersion::V3_1 => "3.1".into(),
        },
        qos: cfg.qos as u8,
        publishers: cfg.publishers,
        subscribers: cfg.subscribers,
        window: cfg.window,
        payload_size: cfg.payload_size,
        publish_secs: publish_elapsed.as_secs_f64(),
        published,
        acked: acked_count,
        refused,
        acked_per_sec: acked_count as f64 / acked_elapsed.as_secs_f64().max(1e-9),
        delivered: tracker.delivered.load(Ordering::Relaxed),
        foreign: tracker.foreign.load(Ordering::Relaxed),
        lost,
        duplicates,
        with_dup_flag: receivers.iter().map(|r| r.with_dup_flag).sum(),
        reconnects: reconnects.load(Ordering::Relaxed),
        sessions_absent: absent.load(Ordering::Relaxed),
        ack_latency_us: report::Percentiles::of(&latency),
        storage,
        broker_cpu_secs: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) => Some(a - b),
            _ => None,
        },
        errors,
    })
}

struct SubscriberLoop {
    spec: SessionSpec,
    id: String,
    conn: Option<Conn>,
    receiver: Receiver,
    online: Duration,
    offline: Duration,
    quiet: Duration,
}

impl SubscriberLoop {
    fn run(
        &mut self,
        tracker: &Tracker,
        phase: &AtomicU8,
        reconnects: &AtomicU64,
        absent: &AtomicU64,
    ) -> Result<(), ExchangeError> {
        let mut online_since = Instant::now();
        let mut offline_until = Instant::now();
        let mut last_rx = Instant::now();
        // Bounded by the phase: the controller sets DONE at the drain's deadline.
        loop {
            let ph = phase.load(Ordering::Relaxed);
            if ph == DONE {
                break;
            }
            if ph == RUNNING
                && !self.offline.is_zero()
                && self.conn.is_some()
                && online_since.elapsed() >= self.online
                && let Some(c) = self.conn.take()
            {
                c.disconnect();
                offline_until = Instant::now() + self.offline;
            }
            let Some(conn) = self.conn.as_mut() else {
                if ph == RUNNING && Instant::now() < offline_until {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let (c, present) = Conn::connect(&self.spec, &self.id)?;
                reconnects.fetch_add(1, Ordering::Relaxed);
                if !present {
                    absent.fetch_add(1, Ordering::Relaxed);
                }
                self.conn = Some(c);
                online_since = Instant::now();
                last_rx = Instant::now();
                continue;
            };
            match conn.next_packet()? {
                Some(p) => {
                    self.receiver.handle(conn, p, tracker)?;
                    last_rx = Instant::now();
                }
                None => {
                    if ph == DRAINING && last_rx.elapsed() >= self.quiet {
                        break;
                    }
                }
            }
        }
        if let Some(mut c) = self.conn.take() {
            let _ = c.flush();
            c.disconnect();
        }
        Ok(())
    }
}
