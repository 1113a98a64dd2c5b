//! A shard's log on the append side: the pending batch, sequence numbers, segment rotation,
//! limits and snapshots. Non-blocking; the I/O is in `flush.rs`.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::flush::{Durable, Flush, Flushed};
use crate::stats::LogStats;
use crate::{AppendError, StorageError};

/// One shard's log, positioned for appending. `!Send` once flushing started (it holds the
/// shard runtime's file handles); owned by the shard.
#[derive(Debug)]
pub struct ShardLog {
    shard: usize,
    stats: Arc<LogStats>,
}

impl ShardLog {
    /// Appends a data record; returns its sequence number. Copies `payload` into the pending
    /// batch and returns at once (the flusher is woken). Refused with [`AppendError::Full`] when
    /// the records that only grow the state would take more than half the shard's disk share.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, AppendError> {
        let _ = payload;
        Err(AppendError::Failed)
    }

    /// Like [`ShardLog::append`], but may use the reserved half of the disk share: for records
    /// that shrink the state (acknowledged, removed, cleared) and for a snapshot's records, so
    /// that a full log can still drain and compact. `Full` only at the hard limit.
    pub fn append_reserved(&mut self, payload: &[u8]) -> Result<u64, AppendError> {
        let _ = payload;
        Err(AppendError::Failed)
    }

    /// Starts a snapshot: rotates to a fresh segment and writes a begin marker there; returns
    /// the marker's sequence number. The core then appends its live state (with
    /// `append_reserved`, over as many turns as it likes, interleaved with ordinary records)
    /// and calls [`ShardLog::end_snapshot`].
    pub fn begin_snapshot(&mut self) -> Result<u64, AppendError> {
        Err(AppendError::Failed)
    }

    /// Ends the snapshot with an end marker; returns its sequence number. Once it is durable,
    /// the segments before the begin marker's are deleted.
    pub fn end_snapshot(&mut self) -> Result<u64, AppendError> {
        Err(AppendError::NoSnapshot)
    }

    /// Abandons a snapshot in progress (e.g. after `Full` on one of its records): no end
    /// marker is written, nothing is deleted; a later snapshot starts over.
    pub fn abort_snapshot(&mut self) {}

    pub fn snapshot_in_progress(&self) -> bool {
        false
    }

    /// Whether a snapshot is due: the log holds more than twice the last snapshot (and more
    /// than two segments), or is nearing the limit for ordinary records.
    pub fn wants_snapshot(&self) -> bool {
        false
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        1
    }

    /// Every record with a sequence number up to this one is durable (0: none yet).
    pub fn durable_through(&self) -> u64 {
        0
    }

    /// Whether a flush is in flight.
    pub fn flush_in_flight(&self) -> bool {
        false
    }

    /// Takes the pending batch for writing, if there is work (records to write, a sync owed
    /// under `fsync = "interval"` whose time has come, segments to delete) and no flush is in
    /// flight. Run the returned [`Flush`] on the shard's runtime and hand its result to
    /// [`ShardLog::finish_flush`].
    pub fn start_flush(&mut self) -> Option<Flush> {
        None
    }

    /// Completes a flush: takes the buffer back, updates the counters, and returns how far the
    /// log is durable. An I/O error is returned once and fails the log for good (after a failed
    /// `fdatasync` the file's state is unknown; the broker must stop and recover from disk).
    pub fn finish_flush(&mut self, done: Flushed) -> Result<Durable, StorageError> {
        let _ = done;
        Err(StorageError::Failed { shard: self.shard })
    }

    /// Ready when [`ShardLog::start_flush`] would return a flush; otherwise stores the waker,
    /// woken by the next append.
    pub fn poll_flush_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Pending
    }

    /// Under `fsync = "interval"`: when the next sync falls due, if one is owed.
    pub fn sync_deadline(&self) -> Option<Instant> {
        None
    }

    /// Asks [`crate::run_flusher`] to return once everything appended is durable (and synced).
    pub fn close(&mut self) {}

    pub fn is_closed(&self) -> bool {
        false
    }

    pub fn shard(&self) -> usize {
        self.shard
    }

    pub fn stats(&self) -> &Arc<LogStats> {
        &self.stats
    }
}
