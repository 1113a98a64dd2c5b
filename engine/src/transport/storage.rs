//! The runtime's side of persistence (docs/storage.md): the store opened before the shards
//! start, every shard's log recovered on its own thread and replayed, the replays merged and
//! each shard's part restored before any listener accepts, then per shard: the records the
//! core emits appended to its log after every input ([`Persist::drain`], in `Host::handle`),
//! a flusher task that writes and syncs one batch at a time and feeds the core "durable up to
//! N" (`Input::Durable`), and snapshots when the log asks for one.
//!
//! What it must never do: tell the core a record is durable before the log said so (the core
//! numbers records from 1 each run, the log across runs: [`Persist`] maps one to the other),
//! or let an append that failed be followed by a release (from then on nothing is released
//! and the error is logged: clients see no acknowledgement rather than a false one).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::Poll;
use std::time::Instant;

use ringmq_storage::{AppendError, ShardLog, Store};
use tracing::{error, info, warn};

use crate::config::{Config, Driver};
use crate::proto::durable::replay::{Replay, ShardRestore, merge};
use crate::proto::{ShardCore, directory_shard_of};
use crate::transport::runtime::{Core, StartError};

/// What a shard thread needs to recover and persist.
pub(crate) struct ShardStorage {
    store: Arc<Store>,
    to_main: mpsc::Sender<(usize, Result<Replay, String>)>,
    from_main: mpsc::Receiver<ShardRestore>,
    /// Re-sharding: "my whole state is durable in my new log" to the main thread, and its
    /// "the store switched" back (see [`Exchange::coordinate`]).
    written: mpsc::Sender<(usize, Result<(), String>)>,
    switched: mpsc::Receiver<()>,
    /// How many shards have restored their part: no shard opens its listeners before all
    /// have, or a client accepted early could claim a session still being restored.
    restored: Arc<Restored>,
}

/// The startup barrier of [`ShardStorage::recover`].
#[derive(Debug)]
struct Restored {
    count: AtomicUsize,
    shards: usize,
    /// A shard failed its recovery: the others stop waiting (startup fails anyway).
    failed: AtomicBool,
}

/// Marks a shard's recovery failed unless it arrived at the barrier.
struct Arrival<'a> {
    restored: &'a Restored,
    arrived: bool,
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        if !self.arrived {
            self.restored.failed.store(true, Ordering::Release);
        }
    }
}

/// The main thread's end of the startup exchange.
pub(crate) struct Exchange {
    store: Arc<Store>,
    replays: mpsc::Receiver<(usize, Result<Replay, String>)>,
    parts: Vec<mpsc::Sender<ShardRestore>>,
    written: mpsc::Receiver<(usize, Result<(), String>)>,
    switched: Vec<mpsc::Sender<()>>,
    shards: usize,
}

/// What [`ShardStorage::recover`] hands the shard: its log, and the core records already
/// appended to it (and durable) during recovery.
pub(crate) struct RecoveredLog {
    pub log: ShardLog,
    pub drained: u64,
}

/// Opens the store (none without `[storage] dir`) and prepares one [`ShardStorage`] per
/// shard. Blocking; before the shards start.
pub(crate) fn open(
    config: &Config,
    shards: usize,
    driver: Driver,
    metrics: &crate::ops::metrics::Metrics,
) -> Result<Option<(Exchange, Vec<ShardStorage>)>, StartError> {
    let Some(store_config) = config.storage.store_config(driver) else {
        return Ok(None);
    };
    let dir = store_config.dir.clone();
    let store =
        Store::open(store_config, shards).map_err(|e| StartError::Storage(e.to_string()))?;
    info!(dir = %dir.display(), shards, fsync = ?config.storage.fsync, "storage opened");
    if let Some(previous) = store.previous_shard_count() {
        info!(
            from = previous,
            to = shards,
            "storage: the shard count changed: re-homing the sessions of {previous} shards into {shards}"
        );
    }
    let store = Arc::new(store);
    let stats: Box<[_]> = (0..shards).filter_map(|i| store.stats(i)).collect();
    let _ = metrics.storage.set(stats);
    let (to_main, replays) = mpsc::channel();
    let (written_tx, written) = mpsc::channel();
    let mut parts = Vec::with_capacity(shards);
    let mut switched = Vec::with_capacity(shards);
    let mut per_shard = Vec::with_capacity(shards);
    let restored = Arc::new(Restored {
        count: AtomicUsize::new(0),
        shards,
        failed: AtomicBool::new(false),
    });
    for _ in 0..shards {
        let (tx, rx) = mpsc::channel();
        let (switched_tx, switched_rx) = mpsc::channel();
        parts.push(tx);
        switched.push(switched_tx);
        per_shard.push(ShardStorage {
            store: store.clone(),
            to_main: to_main.clone(),
            from_main: rx,
            written: written_tx.clone(),
            switched: switched_rx,
            restored: restored.clone(),
        });
    }
    Ok(Some((
        Exchange {
            store,
            replays,
            parts,
            written,
            switched,
            shards,
        },
        per_shard,
    )))
}

impl Exchange {
    /// Waits for every shard's replay, merges them and hands each shard its part. Recovery
    /// runs on the shard threads in parallel; this is the one step that sees all of them
    /// (retained messages are merged by stamp, sessions go to their directory shard).
    pub(crate) fn coordinate(self) -> Result<(), StartError> {
        let started = Instant::now();
        let mut replays: Vec<Option<Replay>> = (0..self.shards).map(|_| None).collect();
        for _ in 0..self.shards {
            let (shard, replay) = self
                .replays
                .recv()
                .map_err(|_| StartError::Storage("a shard stopped during recovery".into()))?;
            let replay = replay.map_err(|e| StartError::Storage(format!("shard {shard}: {e}")))?;
            if let Some(slot) = replays.get_mut(shard) {
                *slot = Some(replay);
            }
        }
        let mut replays: Vec<Replay> = replays.into_iter().flatten().collect();
        let previous = self.store.previous_shard_count();
        if let Some(previous) = previous {
            // Re-sharding: the state is in the old logs (the new ones are empty).
            for old in 0..previous {
                replays.push(replay_previous(&self.store, old)?);
            }
        }
        let records: u64 = replays.iter().map(|r| r.records).sum();
        let skipped: u64 = replays.iter().map(|r| r.skipped).sum();
        let shards = self.shards;
        let parts = merge(replays, shards, |id| directory_shard_of(id, shards).slot());
        let sessions: usize = parts.iter().map(|p| p.sessions.len()).sum();
        for (tx, part) in self.parts.iter().zip(parts) {
            tx.send(part)
                .map_err(|_| StartError::Storage("a shard stopped during recovery".into()))?;
        }
        info!(
            records,
            skipped,
            sessions,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "storage recovered"
        );
        if let Some(previous) = previous {
            self.switch(previous, sessions)?;
        }
        Ok(())
    }

    /// Re-sharding, once every shard restored its part: waits until each has its whole state
    /// durable in its new log, switches the store to the new shard count (one atomic rename;
    /// a crash before it leaves the old logs as they were), then lets the shards go on to
    /// open their listeners.
    fn switch(self, previous: usize, sessions: usize) -> Result<(), StartError> {
        for _ in 0..self.shards {
            let (shard, result) = self
                .written
                .recv()
                .map_err(|_| StartError::Storage("a shard stopped during re-sharding".into()))?;
            result.map_err(|e| StartError::Storage(format!("shard {shard}: {e}")))?;
        }
        self.store
            .commit_reshard()
            .map_err(|e| StartError::Storage(e.to_string()))?;
        info!(
            from = previous,
            to = self.shards,
            sessions,
            "storage: re-homed sessions from {previous} to {} shards",
            self.shards
        );
        for tx in &self.switched {
            tx.send(())
                .map_err(|_| StartError::Storage("a shard stopped during re-sharding".into()))?;
        }
        Ok(())
    }
}

/// Re-sharding: one old shard's log replayed (on the main thread, before the new shards
/// serve anyone).
fn replay_previous(store: &Store, old: usize) -> Result<Replay, StartError> {
    let fail = |e: String| StartError::Storage(format!("old shard {old}: {e}"));
    let (mut stream, torn) = store
        .recover_previous(old)
        .map_err(|e| fail(e.to_string()))?;
    if let Some(torn) = &torn {
        warn!(old_shard = old, "storage: {torn}");
    }
    let mut replay = Replay::new(old);
    while let Some(record) = stream.next_record().map_err(|e| fail(e.to_string()))? {
        if let Err(e) = replay.apply(record.payload) {
            warn!(
                old_shard = old,
                seq = record.seq,
                "storage: record skipped: {e}"
            );
        }
    }
    Ok(replay)
}

impl ShardStorage {
    /// On the shard's thread, before its listeners open: recovers the log, replays it, waits
    /// for this shard's part of the merged state and restores it into `core`. Re-sharding:
    /// then writes the whole state into the new log, makes it durable and waits for the
    /// store's switch.
    pub(crate) async fn recover(
        self,
        shard: usize,
        core: &mut ShardCore,
    ) -> Result<RecoveredLog, StartError> {
        let fail = |e: String| StartError::Storage(format!("shard {shard}: {e}"));
        let ShardStorage {
            store,
            to_main,
            from_main,
            written,
            switched,
            restored,
        } = self;
        let mut arrival = Arrival {
            restored: &restored,
            arrived: false,
        };
        let recovered = match store.recover(shard) {
            Ok(r) => r,
            Err(e) => {
                let _ = to_main.send((shard, Err(e.to_string())));
                return Err(fail(e.to_string()));
            }
        };
        let mut log_stream = recovered.replay;
        if let Some(torn) = &recovered.torn_tail {
            warn!(shard, "storage: {torn}");
        }
        let mut replay = Replay::new(shard);
        loop {
            match log_stream.next_record() {
                Ok(Some(record)) => {
                    if let Err(e) = replay.apply(record.payload) {
                        warn!(shard, seq = record.seq, "storage: record skipped: {e}");
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = to_main.send((shard, Err(e.to_string())));
                    return Err(fail(e.to_string()));
                }
            }
        }
        let _ = to_main.send((shard, Ok(replay)));
        // Dropped before waiting: if a shard dies before it reports, the main thread's wait
        // ends (every sender gone) instead of lasting for ever.
        drop(to_main);
        let part = from_main
            .recv()
            .map_err(|_| fail("recovery was abandoned".into()))?;
        core.enable_durable();
        let _ = core.restore(part, crate::transport::host::now());
        let mut log = recovered.log;
        let mut drained = 0;
        if store.previous_shard_count().is_some() {
            let result = write_whole_state(core, &mut log).await;
            if let Ok(n) = result {
                drained = n;
            }
            let _ = written.send((shard, result.clone().map(|_| ())));
            drop(written);
            result.map_err(fail)?;
            switched
                .recv()
                .map_err(|_| fail("re-sharding was abandoned".into()))?;
        }
        // The barrier: every shard restored before any listener opens. The wait is short
        // (the shards restore in parallel) and bounded by the slowest shard's restore.
        arrival.arrived = true;
        restored.count.fetch_add(1, Ordering::AcqRel);
        while restored.count.load(Ordering::Acquire) < restored.shards {
            if restored.failed.load(Ordering::Acquire) {
                return Err(fail("another shard failed its recovery".into()));
            }
            monoio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(RecoveredLog { log, drained })
    }
}

/// Re-sharding: the core's whole state (what restore emitted, then a snapshot) appended to
/// its new, empty log and made durable (synced whatever `fsync` says). Returns the core
/// records appended.
async fn write_whole_state(core: &mut ShardCore, log: &mut ShardLog) -> Result<u64, String> {
    core.snapshot_records();
    let mut failed = None;
    let drained = core.drain_records(|record| {
        if failed.is_some() {
            return;
        }
        let appended = match log.append(record) {
            Err(AppendError::Full) => log.append_reserved(record),
            r => r,
        };
        if let Err(e) = appended {
            failed = Some(e.to_string());
        }
    });
    if let Some(e) = failed {
        return Err(format!("writing the re-homed state: {e}"));
    }
    log.request_sync();
    // Bounded: each flush takes the whole pending batch, so two suffice; the bound only
    // guards against a log that keeps reporting work.
    for _ in 0..16 {
        let Some(flush) = log.start_flush() else {
            break;
        };
        let done = flush.run().await;
        log.finish_flush(done).map_err(|e| e.to_string())?;
    }
    if log.durable_through() + 1 < log.next_seq() || log.synced_through() < log.durable_through() {
        return Err("the re-homed state did not reach the disk".into());
    }
    let _ = core.handle(
        crate::proto::Input::Durable { upto: drained },
        crate::transport::host::now(),
    );
    Ok(drained)
}

/// Drained batches waiting for a flush to cover them, at most (see [`Persist::marks`]).
const MAX_MARKS: usize = 1 << 16;

/// A shard's log as the host uses it: appends after every input, and the map from the core's
/// record numbers to the log's sequence numbers.
pub(crate) struct Persist {
    log: Rc<RefCell<ShardLog>>,
    /// (last core record, its log sequence number) of each drained batch, oldest first.
    marks: VecDeque<(u64, u64)>,
    /// Core records drained so far.
    drained: u64,
    /// An append failed: nothing from this core record on is ever reported durable.
    failed_at: Option<u64>,
}

impl Persist {
    /// `drained`: core records already in the log (and durable) when it starts.
    pub(crate) fn new(log: ShardLog, drained: u64) -> Persist {
        Persist {
            log: Rc::new(RefCell::new(log)),
            marks: VecDeque::new(),
            drained,
            failed_at: None,
        }
    }

    pub(crate) fn log(&self) -> Rc<RefCell<ShardLog>> {
        self.log.clone()
    }

    /// Appends what the core emitted; starts a snapshot when the log wants one, and writes
    /// the next chunk of the one in progress (each chunk's flush is an input that brings the
    /// next, so an idle shard's snapshot also runs to its end).
    pub(crate) fn drain(&mut self, core: &mut ShardCore) {
        self.append_all(core, false);
        if self.failed_at.is_some() {
            return;
        }
        let (wants, in_progress) = {
            let log = self.log.borrow();
            (log.wants_snapshot(), log.snapshot_in_progress())
        };
        match (in_progress, core.snapshot_in_progress()) {
            (true, true) => self.snapshot_step(core),
            // One side lost track (cannot happen; if it did, a later snapshot starts over).
            (true, false) => self.log.borrow_mut().abort_snapshot(),
            (false, true) => core.cancel_snapshot(),
            (false, false) if wants => self.snapshot(core),
            (false, false) => {}
        }
    }

    fn append_all(&mut self, core: &mut ShardCore, reserved: bool) {
        let mut log = self.log.borrow_mut();
        let mut n = self.drained;
        let mut last = None;
        let failed_at = &mut self.failed_at;
        let shard = log.shard();
        // `Some(true)`: an ordinary append was refused for want of room; `Some(false)`: one
        // was taken (room again).
        let mut full = None;
        core.drain_records(|record| {
            n += 1;
            let appended = if reserved {
                log.append_reserved(record)
            } else {
                // Past the limit for ordinary records, the reserve takes it rather than lose a
                // record the core already counts on (`AppendError::Full` is then the hard
                // limit), and the core refuses new messages until there is room again.
                match log.append(record) {
                    Err(AppendError::Full) => {
                        full = Some(true);
                        log.append_reserved(record)
                    }
                    r => {
                        if r.is_ok() && full.is_none() {
                            full = Some(false);
                        }
                        r
                    }
                }
            };
            match appended {
                Ok(seq) if failed_at.is_none() => last = Some((n, seq)),
                Ok(_) => {}
                Err(e) => {
                    if failed_at.is_none() {
                        error!(shard, "storage: append failed: {e}; acknowledgements that need the log are held from now on");
                        *failed_at = Some(n);
                    }
                }
            }
        });
        self.drained = n;
        if let Some(mark) = last {
            let full = self.marks.len() >= MAX_MARKS;
            match self.marks.back_mut() {
                // Bounded: at the bound (flushes stalled) the last mark covers more, which
                // only delays the release of what it covers.
                Some(back) if full => *back = mark,
                _ => self.marks.push_back(mark),
            }
        }
        if let Some(full) = full
            && full != core.storage_full()
        {
            if full {
                warn!(
                    shard,
                    "storage full (storage.max_disk_bytes): new QoS 1/2 messages are refused with 0x97 until compaction makes room"
                );
            } else {
                info!(
                    shard,
                    "storage has room again: QoS 1/2 messages are accepted"
                );
            }
            core.set_storage_full(full);
        }
    }

    /// Compaction: a begin marker, the core's live state in chunks over the following inputs
    /// (`proto/durable/snapshot.rs`), an end marker (the log deletes the segments before the
    /// begin marker once the end marker is durable).
    fn snapshot(&mut self, core: &mut ShardCore) {
        if let Err(e) = self.log.borrow_mut().begin_snapshot() {
            warn!("storage: cannot begin a snapshot: {e}");
            return;
        }
        core.start_snapshot();
        self.snapshot_step(core);
    }

    /// One chunk of the snapshot in progress; the end marker after the last.
    fn snapshot_step(&mut self, core: &mut ShardCore) {
        // A step that wrote nothing (it passed over empty slots only) would leave no flush to
        // bring the next one: step again (bounded by the slots left).
        let mut progress = core.snapshot_step();
        while !progress.done && progress.sessions == 0 && progress.retained == 0 {
            progress = core.snapshot_step();
        }
        self.append_all(core, true);
        let mut log = self.log.borrow_mut();
        if self.failed_at.is_some() {
            log.abort_snapshot();
            core.cancel_snapshot();
            return;
        }
        if !progress.done {
            return;
        }
        if let Err(e) = log.end_snapshot() {
            warn!("storage: cannot end a snapshot: {e}");
            log.abort_snapshot();
        }
    }

    /// The log is durable through sequence number `through`: the core records that covers.
    pub(crate) fn durable(&mut self, through: u64) -> Option<u64> {
        let mut upto = None;
        while let Some(&(n, seq)) = self.marks.front() {
            if seq > through {
                break;
            }
            upto = Some(n);
            self.marks.pop_front();
        }
        upto
    }
}

/// The flusher of one shard: one batch in flight at a time (group commit: whatever is
/// appended meanwhile forms the next batch); after each, the core learns how far the log is
/// durable. Ends when the log fails (logged) or is closed and drained.
pub(crate) async fn flusher(core: Core, log: Rc<RefCell<ShardLog>>) {
    loop {
        wait_for_work(&log).await;
        let flush = log.borrow_mut().start_flush();
        let Some(flush) = flush else {
            if log.borrow().is_closed() && !log.borrow().flush_in_flight() {
                return;
            }
            continue;
        };
        let done = flush.run().await;
        let result = log.borrow_mut().finish_flush(done);
        match result {
            Ok(durable) => core.borrow_mut().log_durable(durable.through),
            Err(e) => {
                error!(
                    "storage: flush failed: {e}; acknowledgements that need the log are held from now on (restart to recover)"
                );
                return;
            }
        }
    }
}

/// Until the log has a batch to flush, or a sync falls due (`fsync = "interval"`).
async fn wait_for_work(log: &Rc<RefCell<ShardLog>>) {
    let deadline = log.borrow().sync_deadline();
    let mut sleep = deadline.map(|at| {
        Box::pin(monoio::time::sleep(
            at.saturating_duration_since(Instant::now()),
        ))
    });
    std::future::poll_fn(|cx| {
        if log.borrow_mut().poll_flush_ready(cx).is_ready() {
            return Poll::Ready(());
        }
        if let Some(s) = sleep.as_mut()
            && s.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;
}

/// At the end of a graceful shutdown: everything appended is written and synced before the
/// shard reports it has stopped.
pub(crate) async fn flush_all(core: &Core, log: &Rc<RefCell<ShardLog>>) {
    // What the last inputs emitted.
    core.borrow_mut().drain_to_log();
    log.borrow_mut().close();
    // Bounded (10 s of 1 ms waits for a flush the flusher task has in flight); the shutdown
    // timeout bounds the whole stop anyway.
    for _ in 0..10_000 {
        let flush = log.borrow_mut().start_flush();
        let Some(flush) = flush else {
            if !log.borrow().flush_in_flight() {
                return;
            }
            monoio::time::sleep(std::time::Duration::from_millis(1)).await;
            continue;
        };
        let done = flush.run().await;
        if let Err(e) = log.borrow_mut().finish_flush(done) {
            error!("storage: final flush failed: {e}");
            return;
        }
    }
}
