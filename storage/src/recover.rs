//! Recovery: check a shard's segments, cut off a torn tail, find where replay starts.
//! Blocking (startup only). Nothing read from disk can make it panic: a bad frame is the end
//! of the log.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::StorageError;
use crate::dir::{Shared, parse_segment_name, segment_name, shard_dir, sync_dir};
use crate::flush::{Io, preallocate};
use crate::frame::{self, Bad, Kind};
use crate::log::{Position, Segment, ShardLog};
use crate::stats::LogStats;

/// What [`crate::Store::recover`] returns.
#[derive(Debug)]
pub struct Recovered {
    /// The records to replay, in log order.
    pub replay: Replay,
    /// The log, positioned after the last valid record, ready for appending.
    pub log: ShardLog,
    /// The torn tail cut off, if any; the caller logs it.
    pub torn_tail: Option<TornTail>,
}

/// A torn tail found and cut off at recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file where the first bad frame is.
    pub segment: PathBuf,
    /// Its offset in that file; the file was truncated there (and preallocated again).
    pub offset: u64,
    pub reason: TornReason,
    /// Later segment files deleted with it.
    pub segments_dropped: usize,
}

/// Why recovery stopped where it did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TornReason {
    /// Fewer bytes than a record header before the end of the file.
    ShortHeader,
    /// The length runs past the end of the segment.
    BadLength { len: u64 },
    /// The checksum does not match.
    BadCrc,
    /// Unknown record kind.
    BadKind { kind: u8 },
    /// A valid frame with the wrong sequence number.
    BadSequence { expected: u64, found: u64 },
    /// The segment header is missing or invalid.
    BadSegmentHeader { problem: &'static str },
    /// Non-zero bytes after the end of the records in the last segment (a later write of
    /// the crashed batch reached the disk, an earlier one did not).
    DataAfterEnd,
}

impl std::fmt::Display for TornTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "torn tail in `{}` at offset {}: {}; truncated there",
            self.segment.display(),
            self.offset,
            self.reason
        )?;
        if self.segments_dropped > 0 {
            write!(f, ", {} later segment(s) deleted", self.segments_dropped)?;
        }
        Ok(())
    }
}

impl std::fmt::Display for TornReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TornReason::ShortHeader => write!(f, "incomplete record header"),
            TornReason::BadLength { len } => {
                write!(f, "record length {len} runs past the end of the segment")
            }
            TornReason::BadCrc => write!(f, "record checksum (CRC32C) mismatch"),
            TornReason::BadKind { kind } => write!(f, "unknown record kind {kind}"),
            TornReason::BadSequence { expected, found } => write!(
                f,
                "record sequence number {found} where {expected} was expected"
            ),
            TornReason::BadSegmentHeader { problem } => write!(f, "{problem}"),
            TornReason::DataAfterEnd => write!(f, "data after the end of the records"),
        }
    }
}

/// One replayed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
}

/// The records to replay: the data records from the begin marker of the latest complete
/// snapshot (or from the start of the log) to the end, snapshot markers left out. Reads one
/// segment at a time (memory: one segment). The files stay open, so compaction by the log
/// meanwhile does not disturb it.
#[derive(Debug)]
pub struct Replay {
    /// Segments still to read: file, path, byte range.
    segments: VecDeque<(File, PathBuf, u64, u64)>,
    buf: Vec<u8>,
    pos: usize,
    path: PathBuf,
    expected_seq: u64,
    remaining: u64,
}

impl Replay {
    /// The next record, or none at the end.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, StorageError> {
        let (seq, range) = loop {
            if self.pos >= self.buf.len() {
                let Some((file, path, start, end)) = self.segments.pop_front() else {
                    return Ok(None);
                };
                self.buf.resize((end - start) as usize, 0);
                file.read_exact_at(&mut self.buf, start)
                    .map_err(|e| StorageError::io("read", &path, e))?;
                self.pos = 0;
                self.path = path;
                continue;
            }
            let d =
                frame::decode_record(&self.buf[self.pos..], self.expected_seq).map_err(|bad| {
                    StorageError::BadDirectory {
                        dir: self
                            .path
                            .parent()
                            .map(Path::to_path_buf)
                            .unwrap_or_default(),
                        file: self.path.clone(),
                        problem: format!(
                            "changed during recovery ({bad:?} at record {})",
                            self.expected_seq
                        ),
                    }
                })?;
            let start = self.pos + frame::RECORD_HEADER_BYTES;
            let (seq, kind, end) = (d.seq, d.kind, self.pos + d.frame_len);
            self.pos = end;
            self.expected_seq += 1;
            if kind == Kind::Data {
                break (seq, start..end);
            }
        };
        self.remaining = self.remaining.saturating_sub(1);
        Ok(Some(Record {
            seq,
            payload: &self.buf[range],
        }))
    }

    /// Records left to replay (counted by the check pass).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

/// A snapshot marker seen by the scan.
#[derive(Debug, Clone, Copy)]
struct Marker {
    seq: u64,
    /// Index in the scanned segments, and offset in that file.
    segment: usize,
    offset: u64,
    /// Data records before it, and log bytes before it.
    data_before: u64,
    bytes_before: u64,
}

/// A segment that passed the check.
#[derive(Debug)]
struct Scanned {
    number: u64,
    path: PathBuf,
    file: File,
    /// End of its valid records.
    end: u64,
    capacity: u64,
    first_seq: u64,
}

/// What the check pass found.
#[derive(Debug, Default)]
struct Scan {
    segments: Vec<Scanned>,
    expected_seq: u64,
    data: u64,
    bytes: u64,
    open_begin: Option<Marker>,
    /// The latest complete snapshot: its begin marker, and the log bytes at its end marker.
    complete: Option<(Marker, u64)>,
    torn: Option<TornTail>,
}

pub(crate) fn recover(shared: &Arc<Shared>, shard: usize) -> Result<Recovered, StorageError> {
    let claimed = shared
        .claimed
        .get(shard)
        .is_some_and(|c| !c.swap(true, Ordering::AcqRel));
    if !claimed {
        return Err(StorageError::ShardUnavailable { shard });
    }
    let dir = shard_dir(&shared.config.dir, shared.layout, shard);
    let (scan, first_kept) = check(shared, &dir, shard, Some(&shared.stats[shard]))?;
    finish(shared, shard, scan, first_kept)
}

/// Re-sharding: the records of old shard `shard` (see [`crate::Store::recover_previous`]).
pub(crate) fn recover_previous(
    shared: &Arc<Shared>,
    shard: usize,
) -> Result<(Replay, Option<TornTail>), StorageError> {
    let claimed = shared
        .previous_claimed
        .get(shard)
        .is_some_and(|c| !c.swap(true, Ordering::AcqRel));
    let Some(previous) = shared.previous.filter(|_| claimed) else {
        return Err(StorageError::ShardUnavailable { shard });
    };
    let dir = shard_dir(&shared.config.dir, previous.layout, shard);
    let (scan, _) = check(shared, &dir, shard, None)?;
    let torn = scan.torn.clone();
    Ok((replay_of(&scan)?, torn))
}

/// Checks a shard's segments: cuts off a torn tail, deletes obsolete segments; returns the
/// scan and the first segment kept.
fn check(
    shared: &Arc<Shared>,
    dir: &Path,
    shard: usize,
    stats: Option<&Arc<LogStats>>,
) -> Result<(Scan, u64), StorageError> {
    let dir = dir.to_path_buf();
    let numbers = list_segments(&dir)?;
    // Only a contiguous run of segments is a log; a gap can only be left by an interrupted
    // compaction, and then a complete snapshot after it makes the older ones obsolete.
    let run_start = (1..numbers.len())
        .rev()
        .find(|&i| numbers[i - 1] + 1 != numbers[i])
        .unwrap_or(0);
    let (stale, run) = numbers.split_at(run_start);
    let mut scan = Scan::default();
    let mut buf = Vec::new();
    for (i, &number) in run.iter().enumerate() {
        let last = i + 1 == run.len();
        if !scan_segment(
            &mut scan,
            &dir,
            shard,
            number,
            last,
            shared.config.segment_bytes,
            &mut buf,
        )? {
            // Torn: everything after it goes.
            let dropped = &run[i + 1..];
            for &n in dropped {
                let path = dir.join(segment_name(n));
                std::fs::remove_file(&path)
                    .map_err(|e| StorageError::io("delete segment", &path, e))?;
            }
            if let Some(t) = scan.torn.as_mut() {
                t.segments_dropped = dropped.len();
            }
            sync_dir(&dir)?;
            if let Some(stats) = stats {
                LogStats::add(&stats.torn_tails, 1);
            }
            break;
        }
    }
    let first_kept = match scan.complete {
        Some((begin, _)) => scan.segments[begin.segment].number,
        None => {
            if let Some(&missing) = stale.last() {
                return Err(bad_log(
                    &dir,
                    format!(
                        "segment {} is missing after segment {missing}, and no complete snapshot follows the gap",
                        missing + 1
                    ),
                ));
            }
            match scan.segments.first() {
                Some(s) if s.first_seq != 1 => {
                    return Err(bad_log(
                        &dir,
                        format!(
                            "the log starts at record {} and holds no complete snapshot: its first segments are missing",
                            s.first_seq
                        ),
                    ));
                }
                _ => scan.segments.first().map_or(1, |s| s.number),
            }
        }
    };
    // Synced before anything is deleted: the snapshot that makes older segments obsolete
    // might so far be in the page cache only (a crash of the process under `interval`).
    for s in &scan.segments {
        s.file
            .sync_data()
            .map_err(|e| StorageError::io("fdatasync", &s.path, e))?;
    }
    let obsolete: Vec<u64> = stale
        .iter()
        .copied()
        .chain(
            scan.segments
                .iter()
                .map(|s| s.number)
                .filter(|&n| n < first_kept),
        )
        .collect();
    for &n in &obsolete {
        let path = dir.join(segment_name(n));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("delete segment", &path, e)),
        }
    }
    if !obsolete.is_empty() {
        sync_dir(&dir)?;
    }
    Ok((scan, first_kept))
}

/// The replay of a checked scan (read only: for an old log of a re-sharding).
fn replay_of(scan: &Scan) -> Result<Replay, StorageError> {
    let (replay_from, replay_seq, remaining) = match scan.complete {
        Some((begin, _)) => (
            (begin.segment, begin.offset),
            begin.seq,
            scan.data - begin.data_before,
        ),
        None => (
            (0, frame::SEGMENT_HEADER_BYTES as u64),
            scan.segments.first().map_or(1, |s| s.first_seq),
            scan.data,
        ),
    };
    let mut replay = Replay {
        segments: VecDeque::new(),
        buf: Vec::new(),
        pos: 0,
        path: PathBuf::new(),
        expected_seq: replay_seq,
        remaining,
    };
    for (i, s) in scan.segments.iter().enumerate().skip(replay_from.0) {
        let start = if i == replay_from.0 {
            replay_from.1
        } else {
            frame::SEGMENT_HEADER_BYTES as u64
        };
        if s.end > start {
            let file = s
                .file
                .try_clone()
                .map_err(|e| StorageError::io("open", &s.path, e))?;
            replay
                .segments
                .push_back((file, s.path.clone(), start, s.end));
        }
    }
    Ok(replay)
}

/// Builds the replay and the log from a finished scan.
fn finish(
    shared: &Arc<Shared>,
    shard: usize,
    scan: Scan,
    first_kept: u64,
) -> Result<Recovered, StorageError> {
    let replay = replay_of(&scan)?;
    let last_snapshot_bytes = scan
        .complete
        .map_or(0, |(begin, end_bytes)| end_bytes - begin.bytes_before);
    let mut segments = VecDeque::new();
    let mut active = None;
    let last_index = scan.segments.len().checked_sub(1);
    for (i, s) in scan.segments.into_iter().enumerate() {
        if s.number < first_kept {
            continue;
        }
        segments.push_back(Segment {
            number: s.number,
            used: s.end,
            capacity: s.capacity,
        });
        if Some(i) == last_index {
            active = Some((s.number, s.file));
        }
    }
    let position = Position {
        shard,
        segments,
        last_seq: scan.expected_seq.saturating_sub(1),
        last_snapshot_bytes,
        delete_below: first_kept,
    };
    let io = Io::new(shared.config.io, shard, active)?;
    Ok(Recovered {
        replay,
        log: ShardLog::new(shared.clone(), position, io),
        torn_tail: scan.torn,
    })
}

fn bad_log(dir: &Path, problem: String) -> StorageError {
    StorageError::BadDirectory {
        dir: dir.parent().map(Path::to_path_buf).unwrap_or_default(),
        file: dir.to_owned(),
        problem,
    }
}

/// The segment numbers in `dir`, sorted; other files are left alone.
fn list_segments(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)
        .map_err(|e| StorageError::io("read directory", dir, e))?
        .filter_map(Result::ok)
        .filter_map(|e| parse_segment_name(&e.file_name().to_string_lossy()))
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// Checks one segment and adds it to the scan; `false` if it held the torn tail (then cut off,
/// and the scan ends).
fn scan_segment(
    scan: &mut Scan,
    dir: &Path,
    shard: usize,
    number: u64,
    last: bool,
    segment_bytes: u64,
    buf: &mut Vec<u8>,
) -> Result<bool, StorageError> {
    let path = dir.join(segment_name(number));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io("open", &path, e))?;
    buf.clear();
    file.read_to_end(buf)
        .map_err(|e| StorageError::io("read", &path, e))?;
    // A file shorter than a segment (cut by hand, or made with a smaller `segment_bytes`)
    // is preallocated to the full size again if appends resume in it.
    let capacity = (buf.len() as u64).max(segment_bytes);
    let first = scan.segments.is_empty();
    let header = frame::decode_segment_header(buf).and_then(|h| {
        if h.segment != number || h.shard as usize != shard {
            Err("segment header names another segment or shard")
        } else if !first && h.first_seq != scan.expected_seq {
            Err("segment does not continue the sequence of the previous one")
        } else {
            Ok(h)
        }
    });
    let header = match header {
        Ok(h) => h,
        Err(problem) => {
            // Nothing of this segment is usable: it goes.
            std::fs::remove_file(&path)
                .map_err(|e| StorageError::io("delete segment", &path, e))?;
            scan.torn = Some(TornTail {
                segment: path,
                offset: 0,
                reason: TornReason::BadSegmentHeader { problem },
                segments_dropped: 0,
            });
            return Ok(false);
        }
    };
    if first {
        scan.expected_seq = header.first_seq;
    }
    let index = scan.segments.len();
    let mut offset = frame::SEGMENT_HEADER_BYTES;
    scan.bytes += offset as u64;
    let torn = loop {
        match frame::decode_record(&buf[offset..], scan.expected_seq) {
            Ok(d) => {
                match d.kind {
                    Kind::Data => scan.data += 1,
                    Kind::SnapshotBegin => {
                        scan.open_begin = Some(Marker {
                            seq: d.seq,
                            segment: index,
                            offset: offset as u64,
                            data_before: scan.data,
                            bytes_before: scan.bytes,
                        });
                    }
                    Kind::SnapshotEnd => {
                        let begin = <[u8; 8]>::try_from(d.payload).ok().map(u64::from_le_bytes);
                        if let Some(open) = scan.open_begin
                            && Some(open.seq) == begin
                        {
                            scan.complete = Some((open, scan.bytes + d.frame_len as u64));
                            scan.open_begin = None;
                        }
                    }
                }
                scan.expected_seq += 1;
                offset += d.frame_len;
                scan.bytes += d.frame_len as u64;
            }
            Err(Bad::Zero | Bad::ShortHeader { zero: true }) => {
                // The preallocated, never written rest. In the last segment, where appends
                // resume, it must really be all zeros.
                if last && buf[offset..].iter().any(|&b| b != 0) {
                    break Some(TornReason::DataAfterEnd);
                }
                break None;
            }
            Err(Bad::ShortHeader { zero: false }) => break Some(TornReason::ShortHeader),
            Err(Bad::Length { len }) => break Some(TornReason::BadLength { len }),
            Err(Bad::Crc) => break Some(TornReason::BadCrc),
            Err(Bad::Kind { kind }) => break Some(TornReason::BadKind { kind }),
            Err(Bad::Sequence { found }) => {
                break Some(TornReason::BadSequence {
                    expected: scan.expected_seq,
                    found,
                });
            }
        }
    };
    if let Some(reason) = &torn {
        // Cut at the first bad frame and preallocate again: the rest reads as zeros, so no
        // stale frame can follow the records appended from here.
        file.set_len(offset as u64)
            .and_then(|()| preallocate(&file, capacity))
            .and_then(|()| file.sync_all())
            .map_err(|e| StorageError::io("truncate torn tail of", &path, e))?;
        scan.torn = Some(TornTail {
            segment: path.clone(),
            offset: offset as u64,
            reason: reason.clone(),
            segments_dropped: 0,
        });
    }
    scan.segments.push(Scanned {
        number,
        path,
        file,
        end: offset as u64,
        capacity,
        first_seq: header.first_seq,
    });
    Ok(torn.is_none())
}
