//! ringmq's durable store: one write-ahead log per shard, written with group commit.
//!
//! # What it is for
//! The shard core (sans-IO, `engine/src/proto/`) emits records: opaque byte strings it encodes
//! itself. The runtime appends them here and learns, after each completed flush, "durable up to
//! sequence N"; acknowledgements wait for that. At startup each shard recovers its log on its own
//! thread and replays the records into its core before any listener opens.
//!
//! # What it must never do
//! - Block a shard thread in steady state: `append` copies into a buffer and returns; the write
//!   and the `fdatasync` go through io_uring ([`IoMode::IoUring`]) or run on a helper thread
//!   ([`IoMode::Thread`], for the epoll driver). Only [`Store::open`], [`Store::recover`],
//!   [`Store::recover_previous`] and [`Store::commit_reshard`] (startup) block.
//! - Allocate per record in steady state: the batch buffers are reused (double buffering).
//! - Report a record durable before its bytes were written and (with [`FsyncPolicy::Always`])
//!   `fdatasync`ed, or corrupt the log at a size limit (`append` refuses with
//!   [`AppendError::Full`] instead), or panic on anything read from disk: a bad record is a torn
//!   tail, cut off and reported.
//!
//! # Design (docs/storage.md has the full text and the reasons)
//! - **Directory.** `dir/LOCK` (an exclusive `flock` held for the life of the [`Store`]),
//!   `dir/META` (format version, shard count and layout), and one folder per shard,
//!   `dir/shard-NNN/` (`dir/shard-NNN.gK/` once the shard count changed K times), holding segment files `SSSSSSSSSSSSSSSSSSSS.log` (the segment number,
//!   20 digits, so names sort in log order).
//! - **Segments** are preallocated to `segment_bytes` (`fallocate`) when created and start with a
//!   40-byte header (magic, CRC32C, version, shard, segment number, first sequence number). A
//!   record never spans two segments: one that does not fit goes to a new segment.
//! - **Records** are framed as `crc32c u32 | len u32 | seq u64 | kind u8 | 3 zero bytes |
//!   payload` (little endian, 20-byte header); the CRC covers everything after itself. `seq`
//!   numbers every record of a shard from 1, across restarts; kinds are data, snapshot begin
//!   and snapshot end.
//! - **Group commit.** Appends go to the pending buffer. At most one flush (write + `fdatasync`)
//!   is in flight per shard; whatever is appended meanwhile waits in the other buffer and forms
//!   the next batch. [`run_flusher`] is the loop a shard spawns; [`ShardLog::start_flush`] /
//!   [`Flush::run`] / [`ShardLog::finish_flush`] are its parts.
//! - **Recovery** reads the segments in order, checks every frame (length, CRC, sequence),
//!   stops at the first bad one, truncates there (and drops later segments) and reports it as a
//!   [`TornTail`]. Replay starts at the begin marker of the latest snapshot whose end marker is
//!   present, or at the start of the log.
//! - **Snapshots and compaction** ([`ShardLog::begin_snapshot`] / [`ShardLog::end_snapshot`]):
//!   the begin marker opens a fresh segment; the core then appends its live state, interleaved
//!   with ordinary records; once the end marker is durable every segment before the begin
//!   marker's is deleted. [`ShardLog::wants_snapshot`] says when one is worth it.
//! - **A changed shard count** (`META` records N, the store is opened for M): the N old logs
//!   are read ([`Store::recover_previous`]), the new shards write their whole state into fresh
//!   folders of the next layout, and [`Store::commit_reshard`] switches `META` (an atomic
//!   rename) and deletes the old folders. A crash before the switch leaves the old state, one
//!   after it the new; the folders of no layout in use are deleted at the next open.
//! - **Limits.** `max_disk_bytes` is shared equally by the shards. Ordinary appends
//!   ([`ShardLog::append`]) may fill half of a shard's share; the other half is kept for
//!   records that shrink state or compact it ([`ShardLog::append_reserved`], snapshots), so a
//!   full log can always be compacted.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod dir;
mod flush;
mod frame;
mod log;
mod recover;
mod stats;

pub use crate::dir::{Inspection, inspect};
pub use crate::flush::{Durable, Flush, Flushed, run_flusher};
pub use crate::log::ShardLog;
pub use crate::recover::{Record, Recovered, Replay, TornReason, TornTail};
pub use crate::stats::{LogStats, StatsSnapshot};

/// Smallest `segment_bytes` accepted (1 MiB).
pub const MIN_SEGMENT_BYTES: u64 = 1 << 20;
/// Largest `segment_bytes` accepted (1 GiB): a record never spans segments, so this also bounds
/// the largest record.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Segments a shard's share of `max_disk_bytes` must hold at least: two for ordinary records,
/// two for the reserve (a snapshot needs a fresh segment).
pub const MIN_SEGMENTS_PER_SHARD: u64 = 4;
/// Bytes of a record's frame before its payload.
pub const RECORD_HEADER_BYTES: usize = frame::RECORD_HEADER_BYTES;
/// Bytes of a segment's header.
pub const SEGMENT_HEADER_BYTES: usize = frame::SEGMENT_HEADER_BYTES;

/// When written batches are `fdatasync`ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every batch: a record is reported durable only once it is on disk.
    Always,
    /// Batches are written (reported durable once the kernel has them: they survive a crash of
    /// the process, not of the machine) and `fdatasync`ed at most once per interval. A power
    /// loss or kernel crash can lose the records of the last interval.
    Interval(Duration),
}

/// How a shard's log does its file I/O; it must match the monoio driver of the shard thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// monoio's file operations (`write_all_at`, `sync_data`): submitted to io_uring, the
    /// kernel runs them on its own workers.
    IoUring,
    /// A helper thread per shard does the blocking calls (the epoll driver has no file I/O
    /// that does not block) and hands the result back to the shard's runtime.
    Thread,
}

/// What [`Store::open`] needs; the engine builds it from the `[storage]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The directory; created if its parent exists.
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// Size of each preallocated segment file.
    pub segment_bytes: u64,
    /// Disk the logs of all shards may use together (segments are counted whole).
    pub max_disk_bytes: u64,
    pub io: IoMode,
}

impl StoreConfig {
    /// The defaults of the `[storage]` section for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            dir: dir.into(),
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 << 20,
            max_disk_bytes: 16 << 30,
            io: IoMode::IoUring,
        }
    }

    /// Range checks; the error names the `[storage]` key.
    pub fn validate(&self, shard_count: usize) -> Result<(), StorageError> {
        let invalid =
            |key: &'static str, problem: String| Err(StorageError::InvalidConfig { key, problem });
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return invalid(
                "storage.segment_bytes",
                format!(
                    "{} is outside {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}",
                    self.segment_bytes
                ),
            );
        }
        if let FsyncPolicy::Interval(d) = self.fsync
            && (d.is_zero() || d > Duration::from_secs(60))
        {
            return invalid(
                "storage.fsync_interval_ms",
                format!("{} ms is outside 1..=60000", d.as_millis()),
            );
        }
        if shard_count == 0 {
            return invalid("server.shards", "the store needs at least one shard".into());
        }
        let need = self
            .segment_bytes
            .saturating_mul(MIN_SEGMENTS_PER_SHARD)
            .saturating_mul(shard_count as u64);
        if self.max_disk_bytes < need {
            return invalid(
                "storage.max_disk_bytes",
                format!(
                    "{} is below {need}: each of the {shard_count} shards needs room for \
                     {MIN_SEGMENTS_PER_SHARD} segments of storage.segment_bytes = {}",
                    self.max_disk_bytes, self.segment_bytes
                ),
            );
        }
        Ok(())
    }
}

/// A failure to open, recover or write the store. Messages name the `[storage]` key or the
/// file and the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("storage key `{key}`: {problem}")]
    InvalidConfig { key: &'static str, problem: String },
    #[error(
        "storage.dir `{dir}`: the parent directory does not exist (create it, or choose another storage.dir)"
    )]
    ParentMissing { dir: PathBuf },
    #[error("storage.dir `{dir}`: exists and is not a directory")]
    NotADirectory { dir: PathBuf },
    #[error("storage.dir `{dir}`: not writable: {source}")]
    NotWritable {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "storage.dir `{dir}`: locked by another process (another ringmq using this directory? lock file `{lock}`)"
    )]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error("storage.dir `{dir}`: `{file}`: {problem}")]
    BadDirectory {
        dir: PathBuf,
        file: PathBuf,
        problem: String,
    },
    #[error("storage: shard {shard} is out of range or was already recovered")]
    ShardUnavailable { shard: usize },
    #[error("storage: {op} `{path}`: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storage: shard {shard}: the log failed earlier and accepts no more writes")]
    Failed { shard: usize },
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> StorageError {
        StorageError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// Why an append was refused; the log is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The shard's share of `max_disk_bytes` is used up (for ordinary records: half of it).
    /// The core refuses new persistent messages (reason code 0x97 Quota exceeded) until a
    /// snapshot has compacted the log.
    #[error("storage full: the shard's log reached storage.max_disk_bytes")]
    Full,
    /// The record does not fit in one segment.
    #[error(
        "record of {len} bytes exceeds the largest record, {max} bytes (storage.segment_bytes)"
    )]
    TooLarge { len: usize, max: usize },
    /// `begin_snapshot` while a snapshot is in progress.
    #[error("a snapshot is already in progress")]
    SnapshotInProgress,
    /// `end_snapshot` without `begin_snapshot`.
    #[error("no snapshot is in progress")]
    NoSnapshot,
    /// A flush failed earlier (the error was reported then): nothing more is accepted.
    #[error("the log failed earlier and accepts no more writes")]
    Failed,
}

/// The open store: holds the directory lock until dropped (and until every [`ShardLog`]
/// recovered from it is dropped). `Sync`: each shard thread calls [`Store::recover`] for its
/// own shard, in parallel.
#[derive(Debug)]
pub struct Store {
    shared: Arc<dir::Shared>,
}

impl Store {
    /// Opens (creating if need be) the directory, takes its lock and checks the recorded shard
    /// count. Blocking: call it at startup, before the shards start.
    pub fn open(config: StoreConfig, shard_count: usize) -> Result<Store, StorageError> {
        config.validate(shard_count)?;
        let shared = dir::Shared::open(config, shard_count)?;
        Ok(Store {
            shared: Arc::new(shared),
        })
    }

    /// Recovers shard `shard`'s log: checks it, cuts off a torn tail, and returns the records to
    /// replay and the log positioned for appending. Blocking (reads the whole log once, and the
    /// replayed part a second time through [`Replay`]); each shard calls it on its own thread.
    /// A shard can be recovered once per `Store`.
    pub fn recover(&self, shard: usize) -> Result<Recovered, StorageError> {
        recover::recover(&self.shared, shard)
    }

    /// Re-sharding: `META` records this other shard count. Recover each of those logs with
    /// [`Store::recover_previous`], give every new shard its part, have each write its whole
    /// state into its (new, empty) log and make it durable, then [`Store::commit_reshard`].
    /// Until then the old logs are the store's state: a crash before the commit leaves them
    /// as they were.
    pub fn previous_shard_count(&self) -> Option<usize> {
        self.shared.previous.map(|p| p.shard_count)
    }

    /// Re-sharding: the records of old shard `shard`'s log (read only; a torn tail is cut off
    /// as at any recovery). Each old shard once.
    pub fn recover_previous(
        &self,
        shard: usize,
    ) -> Result<(Replay, Option<TornTail>), StorageError> {
        recover::recover_previous(&self.shared, shard)
    }

    /// Re-sharding: every new shard's log holds its whole state and is durable; switches
    /// `META` to the new shard count (atomically) and deletes the old logs.
    pub fn commit_reshard(&self) -> Result<(), StorageError> {
        self.shared.commit_reshard()
    }

    pub fn shard_count(&self) -> usize {
        self.shared.shard_count
    }

    pub fn dir(&self) -> &Path {
        &self.shared.config.dir
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// Counters of shard `shard` (readable from any thread), or none if out of range.
    pub fn stats(&self, shard: usize) -> Option<Arc<LogStats>> {
        self.shared.stats.get(shard).cloned()
    }
}
