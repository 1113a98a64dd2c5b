//! A shard's log on the append side: the pending batch, sequence numbers, segment rotation,
//! limits and snapshots. Non-blocking and allocation-free in steady state (the buffers are
//! reused); the I/O is in `flush.rs`.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::dir::Shared;
use crate::flush::{Batch, Chunk, Durable, Flush, Flushed, Io};
use crate::frame::{self, Kind, SegmentHeader};
use crate::stats::LogStats;
use crate::{AppendError, FsyncPolicy, StorageError};

/// A segment the log keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub number: u64,
    /// Bytes appended to it (header and frames), flushed or not.
    pub used: u64,
    /// Its size: records must end within it.
    pub capacity: u64,
}

/// The snapshot being written.
#[derive(Debug, Clone, Copy)]
struct SnapshotInProgress {
    begin_seq: u64,
    begin_segment: u64,
    /// `appended_bytes` at the begin marker.
    begin_bytes: u64,
}

/// A completed snapshot whose older segments go once its end marker is synced.
#[derive(Debug, Clone, Copy)]
struct Compaction {
    end_seq: u64,
    begin_segment: u64,
}

/// Where recovery left the log: what [`ShardLog::new`] starts from.
#[derive(Debug)]
pub(crate) struct Position {
    pub shard: usize,
    /// Kept segments, oldest first; the last is the one appended to.
    pub segments: VecDeque<Segment>,
    /// Sequence number of the last valid record (0: none).
    pub last_seq: u64,
    /// Size of the latest complete snapshot, bytes.
    pub last_snapshot_bytes: u64,
    /// Segments before this number are to be deleted (a complete snapshot starts there).
    pub delete_below: u64,
}

/// One shard's log, positioned for appending. `Send` (it may be recovered on one thread and
/// handed to the shard's), but used by one thread at a time: the shard's, whose runtime runs
/// its flushes.
#[derive(Debug)]
pub struct ShardLog {
    shard: usize,
    /// Keeps the directory lock held while the log lives.
    _shared: Arc<Shared>,
    /// The shard's folder (shared with the flushes without copying).
    dir: Arc<Path>,
    stats: Arc<LogStats>,
    fsync: FsyncPolicy,
    segment_bytes: u64,
    /// Segments ordinary appends may fill / all appends may fill.
    soft_segments: u64,
    hard_segments: u64,
    segments: VecDeque<Segment>,
    next_segment: u64,
    next_seq: u64,
    /// Records up to here are written (and synced with `Always`).
    durable_through: u64,
    synced_through: u64,
    /// Records up to here were written in the last flush, not synced yet (interval mode).
    written_through: u64,
    last_sync: Instant,
    /// A sync was asked for ([`ShardLog::request_sync`]): the next flush syncs.
    sync_requested: bool,
    /// Bytes appended since the log was opened (for snapshot sizes).
    appended_bytes: u64,
    last_snapshot_bytes: u64,
    pending: Batch,
    /// The other buffer; `None` while it is in flight.
    spare: Option<Batch>,
    /// The file I/O; `None` while a flush holds it.
    io: Option<Io>,
    snapshot: Option<SnapshotInProgress>,
    compaction: Option<Compaction>,
    /// Segments before this number are deleted by the next flush.
    delete_below: u64,
    waker: Option<Waker>,
    closed: bool,
    failed: bool,
}

impl ShardLog {
    pub(crate) fn new(shared: Arc<Shared>, position: Position, io: Io) -> ShardLog {
        let config = &shared.config;
        let per_shard = config.max_disk_bytes / shared.shard_count.max(1) as u64;
        let hard_segments = (per_shard / config.segment_bytes).max(crate::MIN_SEGMENTS_PER_SHARD);
        let stats = shared.stats[position.shard].clone();
        let next_segment = position.segments.back().map_or(1, |s| s.number + 1);
        let log = ShardLog {
            shard: position.shard,
            stats,
            fsync: config.fsync,
            segment_bytes: config.segment_bytes,
            soft_segments: hard_segments / 2,
            hard_segments,
            segments: position.segments,
            next_segment,
            next_seq: position.last_seq + 1,
            durable_through: position.last_seq,
            synced_through: position.last_seq,
            written_through: position.last_seq,
            last_sync: Instant::now(),
            sync_requested: false,
            appended_bytes: 0,
            last_snapshot_bytes: position.last_snapshot_bytes,
            pending: Batch::default(),
            spare: Some(Batch::default()),
            io: Some(io),
            snapshot: None,
            compaction: None,
            delete_below: position.delete_below,
            waker: None,
            closed: false,
            failed: false,
            dir: crate::dir::shard_dir(&config.dir, shared.layout, position.shard).into(),
            _shared: shared,
        };
        log.update_disk_stats();
        log
    }

    /// Appends a data record; returns its sequence number. Copies `payload` into the pending
    /// batch and returns at once (the flusher is woken). Refused with [`AppendError::Full`] when
    /// it needs a segment beyond half the shard's disk share, or the log already reaches into
    /// the other half, the reserve (see [`ShardLog::append_reserved`]).
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, AppendError> {
        self.append_kind(Kind::Data, payload, false)
    }

    /// Like [`ShardLog::append`], but may use the reserved half of the disk share: for records
    /// that shrink the state (acknowledged, removed, cleared) and for a snapshot's records, so
    /// that a full log can still drain and compact. `Full` only at the hard limit.
    pub fn append_reserved(&mut self, payload: &[u8]) -> Result<u64, AppendError> {
        self.append_kind(Kind::Data, payload, true)
    }

    /// Starts a snapshot: rotates to a fresh segment and writes a begin marker there; returns
    /// the marker's sequence number. The core then appends its live state (with
    /// `append_reserved`, over as many turns as it likes, interleaved with ordinary records)
    /// and calls [`ShardLog::end_snapshot`].
    pub fn begin_snapshot(&mut self) -> Result<u64, AppendError> {
        if self.failed {
            return Err(AppendError::Failed);
        }
        if self.snapshot.is_some() {
            return Err(AppendError::SnapshotInProgress);
        }
        // The begin marker is the first record of its segment, so that compaction can delete
        // every segment before it whole.
        let fresh = self
            .segments
            .back()
            .is_some_and(|s| s.used == frame::SEGMENT_HEADER_BYTES as u64);
        if !fresh {
            self.rotate(true)?;
        }
        let begin_bytes = self.appended_bytes;
        let seq = self.append_kind(Kind::SnapshotBegin, &[], true)?;
        let begin_segment = self.segments.back().map_or(0, |s| s.number);
        self.snapshot = Some(SnapshotInProgress {
            begin_seq: seq,
            begin_segment,
            begin_bytes,
        });
        Ok(seq)
    }

    /// Ends the snapshot with an end marker; returns its sequence number. Once it is synced,
    /// the segments before the begin marker's are deleted.
    pub fn end_snapshot(&mut self) -> Result<u64, AppendError> {
        let Some(snapshot) = self.snapshot else {
            return Err(AppendError::NoSnapshot);
        };
        let seq = self.append_kind(Kind::SnapshotEnd, &snapshot.begin_seq.to_le_bytes(), true)?;
        self.snapshot = None;
        self.last_snapshot_bytes = self.appended_bytes - snapshot.begin_bytes;
        self.compaction = Some(Compaction {
            end_seq: seq,
            begin_segment: snapshot.begin_segment,
        });
        Ok(seq)
    }

    /// Abandons a snapshot in progress (e.g. after `Full` on one of its records): no end
    /// marker is written, nothing is deleted; a later snapshot starts over.
    pub fn abort_snapshot(&mut self) {
        self.snapshot = None;
    }

    /// Whether [`ShardLog::append`] would take a record of `payload_len` bytes now (not
    /// `Full`, not `TooLarge`, not failed): lets the core refuse a new persistent message
    /// (0x97) before it emits the records for it.
    pub fn room_for(&self, payload_len: usize) -> bool {
        if self.failed || payload_len > self.max_payload() {
            return false;
        }
        let count = self.segments.len() as u64;
        if count > self.soft_segments {
            return false;
        }
        let frame_len = (frame::RECORD_HEADER_BYTES + payload_len) as u64;
        let fits = self
            .segments
            .back()
            .is_some_and(|s| s.used + frame_len <= s.capacity);
        fits || count < self.soft_segments
    }

    /// The largest payload a record can have (`storage.segment_bytes` less the headers).
    pub fn max_payload(&self) -> usize {
        self.segment_bytes as usize - frame::SEGMENT_HEADER_BYTES - frame::RECORD_HEADER_BYTES
    }

    /// Makes the next flush `fdatasync` whatever is written, whatever the policy (under
    /// `fsync = "interval"` too): a re-sharding switches `META` only once the new logs are on
    /// disk.
    pub fn request_sync(&mut self) {
        self.sync_requested = true;
    }

    pub fn snapshot_in_progress(&self) -> bool {
        self.snapshot.is_some()
    }

    /// Whether a snapshot is due: no snapshot in progress or waiting to compact (its end
    /// marker not synced yet, or its old segments not deleted yet), and the log
    /// holds more than one segment and more than twice the last snapshot, or three quarters
    /// of what ordinary records may fill.
    pub fn wants_snapshot(&self) -> bool {
        let deleting = self
            .segments
            .front()
            .is_some_and(|s| s.number < self.delete_below);
        if self.failed || self.snapshot.is_some() || self.compaction.is_some() || deleting {
            return false;
        }
        let used = self.log_bytes();
        let soft_bytes = self.soft_segments * self.segment_bytes;
        used >= soft_bytes / 4 * 3
            || (used > self.segment_bytes && used > 2 * self.last_snapshot_bytes)
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Every record with a sequence number up to this one is durable (0: none yet).
    pub fn durable_through(&self) -> u64 {
        self.durable_through
    }

    /// Every record up to this one is `fdatasync`ed.
    pub fn synced_through(&self) -> u64 {
        self.synced_through
    }

    /// Whether a flush is in flight.
    pub fn flush_in_flight(&self) -> bool {
        self.io.is_none()
    }

    /// Bytes of the segments the log keeps (headers and frames appended, flushed or not).
    pub fn log_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.used).sum()
    }

    /// Segment files the log keeps (some perhaps still to be created by the next flush).
    pub fn segment_count(&self) -> u64 {
        self.segments.len() as u64
    }

    /// Takes the pending batch for writing, if there is work (records to write, a sync owed
    /// under `fsync = "interval"` whose time has come, segments to delete) and no flush is in
    /// flight. Run the returned [`Flush`] on the shard's runtime and hand its result to
    /// [`ShardLog::finish_flush`].
    pub fn start_flush(&mut self) -> Option<Flush> {
        if self.failed || self.io.is_none() {
            return None;
        }
        let now = Instant::now();
        if !self.has_work(now) {
            return None;
        }
        let io = self.io.take()?;
        let Some(mut batch) = self.spare.take() else {
            debug_assert!(false, "the spare buffer is here when no flush is in flight");
            self.io = Some(io);
            return None;
        };
        std::mem::swap(&mut batch, &mut self.pending);
        let has_records = batch.records > 0;
        let rotates = batch.chunks.iter().any(|c| c.new_segment);
        let sync = match self.fsync {
            FsyncPolicy::Always => has_records,
            // A rotation syncs the segment it leaves: only the active one is ever unsynced.
            FsyncPolicy::Interval(_) => {
                rotates
                    || ((has_records || self.written_through > self.synced_through)
                        && (self.closed || self.sync_due(now)))
            }
        };
        let first = self
            .segments
            .front()
            .map_or(self.delete_below, |s| s.number);
        let delete = first..self.delete_below.max(first);
        Some(Flush::new(
            io,
            batch,
            sync,
            delete,
            self.segment_bytes,
            self.dir.clone(),
        ))
    }

    /// Completes a flush: takes the buffer back, updates the counters, and returns how far the
    /// log is durable. An I/O error is returned once and fails the log for good (after a failed
    /// `fdatasync` the file's state is unknown; the broker must stop and recover from disk).
    pub fn finish_flush(&mut self, done: Flushed) -> Result<Durable, StorageError> {
        let Flushed {
            io,
            mut batch,
            result,
            synced,
            deleted,
            elapsed,
        } = done;
        self.io = Some(io);
        let records = batch.records;
        let last_seq = batch.last_seq;
        let bytes = batch.buf.len() as u64;
        batch.clear();
        self.spare = Some(batch);
        if let Err(e) = result {
            self.failed = true;
            return Err(e);
        }
        let stats = &self.stats;
        LogStats::add(&stats.flushes, 1);
        LogStats::add(&stats.flush_nanos, elapsed.as_nanos() as u64);
        if records > 0 {
            LogStats::add(&stats.writes, 1);
            LogStats::add(&stats.bytes_written, bytes);
            self.written_through = last_seq;
        }
        if synced {
            LogStats::add(&stats.fsyncs, 1);
            LogStats::add(
                &stats.records_synced,
                self.written_through - self.synced_through,
            );
            self.synced_through = self.written_through;
            self.last_sync = Instant::now();
            self.sync_requested = false;
        }
        self.durable_through = match self.fsync {
            FsyncPolicy::Always => self.synced_through,
            FsyncPolicy::Interval(_) => self.written_through,
        };
        if deleted.end > deleted.start {
            while self
                .segments
                .front()
                .is_some_and(|s| s.number < deleted.end)
            {
                self.segments.pop_front();
            }
            LogStats::add(&self.stats.segments_deleted, deleted.end - deleted.start);
            self.update_disk_stats();
        }
        if let Some(c) = self.compaction
            && self.synced_through >= c.end_seq
        {
            self.compaction = None;
            self.delete_below = self.delete_below.max(c.begin_segment);
            LogStats::add(&self.stats.snapshots, 1);
        }
        Ok(Durable {
            through: self.durable_through,
            synced_through: self.synced_through,
            records,
        })
    }

    /// Ready when [`ShardLog::start_flush`] would return a flush (or the log is closed and has
    /// nothing left to do); otherwise stores the waker, woken by the next append.
    pub fn poll_flush_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.io.is_some() && (self.has_work(Instant::now()) || self.is_done()) {
            return Poll::Ready(());
        }
        match &mut self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Under `fsync = "interval"`: when the next sync falls due, if one is owed.
    pub fn sync_deadline(&self) -> Option<Instant> {
        match self.fsync {
            FsyncPolicy::Interval(d) if self.written_through > self.synced_through => {
                Some(self.last_sync + d)
            }
            _ => None,
        }
    }

    /// Asks [`crate::run_flusher`] to return once everything appended is durable and synced.
    /// Appends are still accepted (and flushed before it returns).
    pub fn close(&mut self) {
        self.closed = true;
        self.wake();
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Closed, and everything appended is flushed and synced (or the log failed).
    pub fn is_done(&self) -> bool {
        self.failed
            || (self.closed
                && self.io.is_some()
                && self.pending.records == 0
                && self.synced_through + 1 == self.next_seq)
    }

    /// A flush failed: the log accepts nothing more.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    pub fn shard(&self) -> usize {
        self.shard
    }

    pub fn stats(&self) -> &Arc<LogStats> {
        &self.stats
    }

    fn sync_due(&self, now: Instant) -> bool {
        if self.sync_requested {
            return true;
        }
        match self.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(d) => now >= self.last_sync + d,
        }
    }

    fn has_work(&self, now: Instant) -> bool {
        let deletions = self
            .segments
            .front()
            .is_some_and(|s| s.number < self.delete_below);
        let unsynced =
            self.written_through > self.synced_through && (self.closed || self.sync_due(now));
        self.pending.records > 0 || deletions || unsynced
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn update_disk_stats(&self) {
        LogStats::set(&self.stats.segments, self.segments.len() as u64);
        let disk = self.segments.iter().map(|s| s.capacity).sum();
        LogStats::set(&self.stats.disk_bytes, disk);
    }

    /// Opens a new segment (created by the next flush): its header goes into the batch.
    fn rotate(&mut self, reserved: bool) -> Result<(), AppendError> {
        let limit = if reserved {
            self.hard_segments
        } else {
            self.soft_segments
        };
        if self.segments.len() as u64 + 1 > limit {
            LogStats::add(&self.stats.full_refusals, 1);
            return Err(AppendError::Full);
        }
        let number = self.next_segment;
        self.next_segment += 1;
        let start = self.pending.buf.len();
        frame::encode_segment_header(
            &mut self.pending.buf,
            SegmentHeader {
                shard: self.shard as u32,
                segment: number,
                first_seq: self.next_seq,
            },
        );
        self.pending.chunks.push(Chunk {
            segment: number,
            new_segment: true,
            offset: 0,
            range: start..self.pending.buf.len(),
        });
        let header = frame::SEGMENT_HEADER_BYTES as u64;
        self.segments.push_back(Segment {
            number,
            used: header,
            capacity: self.segment_bytes,
        });
        self.appended_bytes += header;
        self.update_disk_stats();
        Ok(())
    }

    fn append_kind(
        &mut self,
        kind: Kind,
        payload: &[u8],
        reserved: bool,
    ) -> Result<u64, AppendError> {
        if self.failed {
            return Err(AppendError::Failed);
        }
        let max = self.max_payload();
        if payload.len() > max {
            return Err(AppendError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        // Once the reserve is in use (a snapshot, records that shrink the state), ordinary
        // records stay out of it even where the current segment has room.
        if !reserved && self.segments.len() as u64 > self.soft_segments {
            LogStats::add(&self.stats.full_refusals, 1);
            return Err(AppendError::Full);
        }
        let frame_len = (frame::RECORD_HEADER_BYTES + payload.len()) as u64;
        let fits = self
            .segments
            .back()
            .is_some_and(|s| s.used + frame_len <= s.capacity);
        if !fits {
            self.rotate(reserved)?;
        }
        let Some(segment) = self.segments.back_mut() else {
            debug_assert!(false, "rotate leaves an active segment");
            return Err(AppendError::Failed);
        };
        let start = self.pending.buf.len();
        match self.pending.chunks.last_mut() {
            Some(c) if c.segment == segment.number && c.range.end == start => {}
            _ => self.pending.chunks.push(Chunk {
                segment: segment.number,
                new_segment: false,
                offset: segment.used,
                range: start..start,
            }),
        }
        let seq = self.next_seq;
        frame::encode_record(&mut self.pending.buf, seq, kind, payload);
        if let Some(c) = self.pending.chunks.last_mut() {
            c.range.end = self.pending.buf.len();
        }
        segment.used += frame_len;
        self.appended_bytes += frame_len;
        self.next_seq += 1;
        self.pending.records += 1;
        self.pending.last_seq = seq;
        LogStats::add(&self.stats.records, 1);
        self.wake();
        Ok(seq)
    }
}
