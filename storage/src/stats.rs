//! Per-shard counters, written by the shard (relaxed atomics, no locks) and read by the
//! metrics code from any thread.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One shard's log counters. Totals since the store was opened, except the gauges
/// (`disk_bytes`, `segments`).
#[derive(Debug, Default)]
pub struct LogStats {
    pub(crate) disk_bytes: AtomicU64,
    pub(crate) segments: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) records_synced: AtomicU64,
    pub(crate) flush_nanos: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) torn_tails: AtomicU64,
    pub(crate) full_refusals: AtomicU64,
    pub(crate) snapshots: AtomicU64,
    pub(crate) segments_deleted: AtomicU64,
}

/// The counters read at one moment, as plain numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Bytes of segment files on disk (preallocated size).
    pub disk_bytes: u64,
    /// Segment files on disk.
    pub segments: u64,
    /// Records appended (data, snapshot markers included).
    pub records: u64,
    /// Bytes written to segment files (frames and segment headers).
    pub bytes_written: u64,
    /// Batches written (one or two `pwrite`s each, two when a batch opens a new segment).
    pub writes: u64,
    /// `fdatasync` calls completed (one per batch with `fsync = "always"`).
    pub fsyncs: u64,
    /// Records made durable by those `fdatasync`s: `records_synced / fsyncs` is the mean
    /// number of records per fsync.
    pub records_synced: u64,
    /// Sum of flush durations (start of the write to completion of the sync), nanoseconds;
    /// divide by `flushes` for the mean.
    pub flush_nanos: u64,
    /// Flushes completed.
    pub flushes: u64,
    /// Torn tails cut off at recovery.
    pub torn_tails: u64,
    /// Appends refused with `Full`.
    pub full_refusals: u64,
    /// Snapshots completed (end marker durable).
    pub snapshots: u64,
    /// Segment files deleted by compaction.
    pub segments_deleted: u64,
}

impl LogStats {
    pub fn read(&self) -> StatsSnapshot {
        StatsSnapshot {
            disk_bytes: self.disk_bytes.load(Relaxed),
            segments: self.segments.load(Relaxed),
            records: self.records.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            writes: self.writes.load(Relaxed),
            fsyncs: self.fsyncs.load(Relaxed),
            records_synced: self.records_synced.load(Relaxed),
            flush_nanos: self.flush_nanos.load(Relaxed),
            flushes: self.flushes.load(Relaxed),
            torn_tails: self.torn_tails.load(Relaxed),
            full_refusals: self.full_refusals.load(Relaxed),
            snapshots: self.snapshots.load(Relaxed),
            segments_deleted: self.segments_deleted.load(Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Relaxed);
    }
}
