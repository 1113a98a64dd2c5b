//! The store through its public API, on both monoio drivers: every test body runs once on
//! io_uring (`IoMode::IoUring`) and once on the epoll driver (`IoMode::Thread`).
//!
//! Assertions count (records, fsyncs, segments, offsets); none is timed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use ringmq_storage::{
    AppendError, FsyncPolicy, IoMode, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, ShardLog,
    StorageError, Store, StoreConfig, TornReason, run_flusher,
};

const MIB: u64 = 1 << 20;

/// Runs `body` on an io_uring runtime and on an epoll runtime, each with a fresh directory.
fn on_both_drivers<F, Fut>(body: F)
where
    F: Fn(IoMode, PathBuf) -> Fut,
    Fut: Future<Output = ()>,
{
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("uring");
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
        .expect("io_uring runtime")
        .block_on(body(IoMode::IoUring, dir));
    let dir = tmp.path().join("legacy");
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("epoll runtime")
        .block_on(body(IoMode::Thread, dir));
}

fn config(dir: &Path, io: IoMode) -> StoreConfig {
    StoreConfig {
        io,
        segment_bytes: MIB,
        max_disk_bytes: 64 * MIB,
        ..StoreConfig::new(dir)
    }
}

/// Writes out everything pending, one flush at a time; returns the flushes run.
async fn flush_all(log: &mut ShardLog) -> u64 {
    let mut n = 0;
    while let Some(f) = log.start_flush() {
        let done = f.run().await;
        log.finish_flush(done).unwrap();
        n += 1;
    }
    n
}

/// All replayed records of shard 0 as (seq, payload).
fn replay_all(store: &Store) -> (Vec<(u64, Vec<u8>)>, ringmq_storage::Recovered) {
    let mut rec = store.recover(0).unwrap();
    let mut out = Vec::new();
    while let Some(r) = rec.replay.next_record().unwrap() {
        out.push((r.seq, r.payload.to_vec()));
    }
    assert_eq!(rec.replay.remaining(), 0);
    (out, rec)
}

fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("shard-000"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn records_round_trip_across_a_restart() {
    on_both_drivers(|io, dir| async move {
        let store = Store::open(config(&dir, io), 1).unwrap();
        let (records, mut rec) = replay_all(&store);
        assert!(records.is_empty());
        assert!(rec.torn_tail.is_none());
        for i in 1..=100u64 {
            assert_eq!(
                rec.log.append(&payload(i, (i as usize * 7) % 300)).unwrap(),
                i
            );
        }
        assert_eq!(
            rec.log.append(&[]).unwrap(),
            101,
            "an empty payload is a record"
        );
        assert_eq!(rec.log.durable_through(), 0);
        assert_eq!(flush_all(&mut rec.log).await, 1);
        assert_eq!(rec.log.durable_through(), 101);
        drop(rec);
        drop(store);

        let store = Store::open(config(&dir, io), 1).unwrap();
        let (records, mut rec) = replay_all(&store);
        assert!(rec.torn_tail.is_none());
        assert_eq!(records.len(), 101);
        for (i, (seq, p)) in records.iter().enumerate().take(100) {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(*p, payload(*seq, (*seq as usize * 7) % 300));
        }
        assert_eq!(records[100], (101, vec![]));
        // Sequence numbers continue across the restart.
        assert_eq!(rec.log.next_seq(), 102);
        assert_eq!(rec.log.durable_through(), 101);
        assert_eq!(rec.log.append(b"after").unwrap(), 102);
        flush_all(&mut rec.log).await;
        drop(rec);
        drop(store);
        let store = Store::open(config(&dir, io), 1).unwrap();
        let (records, _) = replay_all(&store);
        assert_eq!(records.last().unwrap(), &(102, b"after".to_vec()));
    });
}

/// Writes records 1..=5 of 100 bytes each; returns the offset of record `n` in the segment.
async fn five_records(dir: &Path, io: IoMode) -> impl Fn(u64) -> u64 {
    let store = Store::open(config(dir, io), 1).unwrap();
    let mut rec = store.recover(0).unwrap();
    for i in 1..=5 {
        rec.log.append(&payload(i, 100)).unwrap();
    }
    flush_all(&mut rec.log).await;
    |n| (SEGMENT_HEADER_BYTES + (n as usize - 1) * (RECORD_HEADER_BYTES + 100)) as u64
}

fn last_segment(dir: &Path) -> std::fs::File {
    let path = segment_files(dir).pop().unwrap();
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

/// Recovers after damage: the torn tail's offset and reason, and the sequence numbers replayed.
fn recover_damaged(dir: &Path, io: IoMode) -> (Option<(u64, TornReason)>, Vec<u64>) {
    let store = Store::open(config(dir, io), 1).unwrap();
    let (records, rec) = replay_all(&store);
    let torn = rec.torn_tail.map(|t| {
        assert!(t.segment.ends_with("00000000000000000001.log"), "{t}");
        assert!(t.to_string().contains("truncated"), "{t}");
        (t.offset, t.reason)
    });
    (torn, records.into_iter().map(|(s, _)| s).collect())
}

/// After a torn tail was cut: appending continues at the cut, and the next recovery is clean.
async fn appends_resume(dir: &Path, io: IoMode, expect_next: u64) {
    let store = Store::open(config(dir, io), 1).unwrap();
    let (_, mut rec) = replay_all(&store);
    assert!(rec.torn_tail.is_none(), "cut once, clean after");
    assert_eq!(rec.log.append(b"new").unwrap(), expect_next);
    flush_all(&mut rec.log).await;
    drop(rec);
    drop(store);
    let store = Store::open(config(dir, io), 1).unwrap();
    let (records, rec) = replay_all(&store);
    assert!(rec.torn_tail.is_none());
    assert_eq!(records.last().unwrap(), &(expect_next, b"new".to_vec()));
    assert_eq!(records.len() as u64, expect_next);
}

#[test]
fn torn_tail_truncated_last_record() {
    on_both_drivers(|io, dir| async move {
        let at = five_records(&dir, io).await;
        // The file ends in the middle of record 5 (a crash before the preallocation).
        last_segment(&dir).set_len(at(5) + 30).unwrap();
        let (torn, seqs) = recover_damaged(&dir, io);
        assert_eq!(torn, Some((at(5), TornReason::BadLength { len: 100 })));
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        // Preallocated again after the cut.
        assert_eq!(last_segment(&dir).metadata().unwrap().len(), MIB);
        appends_resume(&dir, io, 5).await;
    });
}

#[test]
fn torn_tail_corrupted_byte_in_last_record() {
    on_both_drivers(|io, dir| async move {
        let at = five_records(&dir, io).await;
        last_segment(&dir)
            .write_all_at(&[0xFF], at(5) + RECORD_HEADER_BYTES as u64 + 50)
            .unwrap();
        let (torn, seqs) = recover_damaged(&dir, io);
        assert_eq!(torn, Some((at(5), TornReason::BadCrc)));
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        appends_resume(&dir, io, 5).await;
    });
}

#[test]
fn torn_tail_garbage_after_the_end() {
    on_both_drivers(|io, dir| async move {
        let at = five_records(&dir, io).await;
        // Garbage right after record 5, and further out in the preallocated space.
        let f = last_segment(&dir);
        f.write_all_at(b"garbage", at(6)).unwrap();
        let (torn, seqs) = recover_damaged(&dir, io);
        assert_eq!(torn.as_ref().map(|t| t.0), Some(at(6)));
        assert!(
            matches!(
                torn.unwrap().1,
                TornReason::ShortHeader | TornReason::BadLength { .. } | TornReason::BadCrc
            ),
            "garbage header"
        );
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        f.write_all_at(b"more garbage", at(6) + 4096).unwrap();
        let (torn, seqs) = recover_damaged(&dir, io);
        assert_eq!(torn, Some((at(6), TornReason::DataAfterEnd)));
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        appends_resume(&dir, io, 6).await;
    });
}

#[test]
fn torn_tail_zero_filled() {
    on_both_drivers(|io, dir| async move {
        let at = five_records(&dir, io).await;
        // Record 5's payload never reached the disk (preallocated blocks read as zeros).
        let f = last_segment(&dir);
        f.write_all_at(&[0; 100], at(5) + RECORD_HEADER_BYTES as u64)
            .unwrap();
        let (torn, seqs) = recover_damaged(&dir, io);
        assert_eq!(torn, Some((at(5), TornReason::BadCrc)));
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        // Record 4 entirely zero, but record 5 (now gone) replaced by a stale copy of a
        // later write: the zeros end the log, what follows is cut.
        let f = last_segment(&dir);
        f.write_all_at(&[0; RECORD_HEADER_BYTES + 100], at(4))
            .unwrap();
        f.write_all_at(&[7; 10], at(5)).unwrap();
        let (torn, seqs) = recover_damaged(&dir, io);
        assert_eq!(torn, Some((at(4), TornReason::DataAfterEnd)));
        assert_eq!(seqs, vec![1, 2, 3]);
        // Plain zeros after the last record: the normal end, nothing reported.
        let (torn, seqs) = recover_damaged(&dir, io);
        assert_eq!(torn, None);
        assert_eq!(seqs, vec![1, 2, 3]);
        appends_resume(&dir, io, 4).await;
    });
}

#[test]
fn a_record_that_does_not_fit_opens_a_new_segment() {
    on_both_drivers(|io, dir| async move {
        let store = Store::open(config(&dir, io), 1).unwrap();
        let mut rec = store.recover(0).unwrap();
        // 10 frames of 100 020 bytes fit in 1 MiB after the header; the 11th does not.
        for i in 1..=11 {
            rec.log.append(&payload(i, 100_000)).unwrap();
        }
        assert_eq!(rec.log.segment_count(), 2);
        // One flush writes both segments (two chunks) and syncs both.
        assert_eq!(flush_all(&mut rec.log).await, 1);
        let files = segment_files(&dir);
        assert_eq!(files.len(), 2);
        let first = std::fs::read(&files[0]).unwrap();
        let end = SEGMENT_HEADER_BYTES + 10 * (RECORD_HEADER_BYTES + 100_000);
        assert!(
            first[end..].iter().all(|&b| b == 0),
            "segment 1 ends after 10 records"
        );
        let stats = rec.log.stats().read();
        assert_eq!((stats.segments, stats.disk_bytes), (2, 2 * MIB));
        let too_big = vec![0u8; MIB as usize];
        assert!(matches!(
            rec.log.append(&too_big),
            Err(AppendError::TooLarge { .. })
        ));
        drop(rec);
        drop(store);
        let store = Store::open(config(&dir, io), 1).unwrap();
        let (records, rec) = replay_all(&store);
        assert!(rec.torn_tail.is_none());
        assert_eq!(records.len(), 11);
        assert_eq!(records[10], (11, payload(11, 100_000)));
    });
}

#[test]
fn the_lock_keeps_a_second_store_out() {
    on_both_drivers(|io, dir| async move {
        let store = Store::open(config(&dir, io), 1).unwrap();
        let e = Store::open(config(&dir, io), 1).unwrap_err();
        assert!(matches!(e, StorageError::Locked { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("storage.dir") && text.contains("locked"),
            "{text}"
        );
        // A recovered log keeps the lock after the Store is dropped.
        let rec = store.recover(0).unwrap();
        drop(store);
        assert!(Store::open(config(&dir, io), 1).is_err());
        drop(rec);
        Store::open(config(&dir, io), 1).unwrap();
    });
}

/// Every shard's records (payloads), by shard, of a store opened for `shards`.
fn records_of(store: &Store, shards: usize) -> Vec<Vec<Vec<u8>>> {
    (0..shards)
        .map(|i| {
            let mut rec = store.recover(i).unwrap();
            let mut out = Vec::new();
            while let Some(r) = rec.replay.next_record().unwrap() {
                out.push(r.payload.to_vec());
            }
            out
        })
        .collect()
}

/// Re-shards the store at `dir` to `to` shards: reads the old logs, writes each new shard one
/// record naming every old record (as the engine writes each shard's whole state), makes them
/// durable and, with `commit`, switches. Returns the old records, by old shard.
async fn reshard(dir: &Path, io: IoMode, to: usize, commit: bool) -> Vec<Vec<Vec<u8>>> {
    let store = Store::open(config(dir, io), to).unwrap();
    let from = store.previous_shard_count().expect("a re-sharding");
    let mut old = Vec::new();
    for i in 0..from {
        let (mut replay, torn) = store.recover_previous(i).unwrap();
        assert!(torn.is_none());
        let mut records = Vec::new();
        while let Some(r) = replay.next_record().unwrap() {
            records.push(r.payload.to_vec());
        }
        old.push(records);
    }
    assert!(matches!(
        store.recover_previous(from),
        Err(StorageError::ShardUnavailable { .. })
    ));
    let all: Vec<u8> = old.iter().flatten().flatten().copied().collect();
    for i in 0..to {
        let mut rec = store.recover(i).unwrap();
        assert!(
            rec.replay.next_record().unwrap().is_none(),
            "a new log starts empty"
        );
        rec.log.append(&all).unwrap();
        flush_all(&mut rec.log).await;
    }
    if commit {
        store.commit_reshard().unwrap();
    }
    old
}

#[test]
fn a_changed_shard_count_is_rehomed_crash_safely() {
    on_both_drivers(|io, dir| async move {
        {
            let store = Store::open(config(&dir, io), 2).unwrap();
            assert_eq!(store.previous_shard_count(), None);
            for i in 0..2 {
                let mut rec = store.recover(i).unwrap();
                for j in 0..3u64 {
                    rec.log.append(&payload(10 * i as u64 + j, 50)).unwrap();
                }
                flush_all(&mut rec.log).await;
            }
        }
        let expected_old: Vec<Vec<Vec<u8>>> = (0..2u64)
            .map(|i| (0..3).map(|j| payload(10 * i + j, 50)).collect())
            .collect();
        // A crash after the new logs were written and synced, before the switch: the next
        // open still finds the two old logs, whole (and re-shards again from them).
        // Twice: the second attempt starts its new logs empty again.
        for _ in 0..2 {
            let old = reshard(&dir, io, 4, false).await;
            assert_eq!(old, expected_old);
        }
        assert!(dir.join("shard-000.g1").is_dir(), "the staged layout");
        let meta = std::fs::read_to_string(dir.join("META")).unwrap();
        assert!(
            meta.contains("shards 2") && !meta.contains("layout"),
            "{meta}"
        );
        // Or opened again with the old count: the old state, the staged folders gone.
        {
            let store = Store::open(config(&dir, io), 2).unwrap();
            assert_eq!(store.previous_shard_count(), None);
            assert_eq!(records_of(&store, 2), expected_old);
            assert!(
                !dir.join("shard-000.g1").exists(),
                "staged folders are deleted"
            );
        }
        // Now to 4, committed: META names the new layout, the old folders are gone.
        let old = reshard(&dir, io, 4, true).await;
        assert_eq!(old, expected_old);
        let meta = std::fs::read_to_string(dir.join("META")).unwrap();
        assert!(
            meta.contains("shards 4") && meta.contains("layout 1"),
            "{meta}"
        );
        assert!(!dir.join("shard-000").exists() && !dir.join("shard-001").exists());
        let all: Vec<u8> = expected_old.iter().flatten().flatten().copied().collect();
        {
            let store = Store::open(config(&dir, io), 4).unwrap();
            assert_eq!(store.previous_shard_count(), None);
            assert_eq!(records_of(&store, 4), vec![vec![all.clone()]; 4]);
        }
        // And down to 1 (layout 2).
        let old = reshard(&dir, io, 1, true).await;
        assert_eq!(old, vec![vec![all.clone()]; 4]);
        let store = Store::open(config(&dir, io), 1).unwrap();
        assert_eq!(records_of(&store, 1).len(), 1);
        assert!(dir.join("shard-000.g2").is_dir() && !dir.join("shard-000.g1").exists());
        // Each shard once.
        assert!(matches!(
            store.recover(0),
            Err(StorageError::ShardUnavailable { shard: 0 })
        ));
        assert!(matches!(
            store.recover(1),
            Err(StorageError::ShardUnavailable { shard: 1 })
        ));
    });
}

#[test]
fn unusable_directories_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no/such/parent");
    let e = Store::open(config(&missing, IoMode::Thread), 1).unwrap_err();
    assert!(matches!(e, StorageError::ParentMissing { .. }), "{e}");
    assert!(e.to_string().contains("storage.dir"), "{e}");
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = Store::open(config(&file, IoMode::Thread), 1).unwrap_err();
    assert!(matches!(e, StorageError::NotADirectory { .. }), "{e}");
    let e = Store::open(config(&file.join("sub"), IoMode::Thread), 1).unwrap_err();
    let text = e.to_string().to_lowercase();
    assert!(
        text.contains("storage.dir") && text.contains("not a directory"),
        "{e}"
    );
    let small = StoreConfig {
        max_disk_bytes: 3 * MIB,
        ..config(&tmp.path().join("s"), IoMode::Thread)
    };
    let e = Store::open(small, 1).unwrap_err();
    assert!(e.to_string().contains("storage.max_disk_bytes"), "{e}");
}

#[test]
fn full_at_the_limit_and_the_log_still_readable() {
    on_both_drivers(|io, dir| async move {
        // 4 segments per shard: ordinary records may fill 2, the other 2 are the reserve.
        let cfg = StoreConfig {
            max_disk_bytes: 4 * MIB,
            ..config(&dir, io)
        };
        let store = Store::open(cfg.clone(), 1).unwrap();
        let mut rec = store.recover(0).unwrap();
        let mut accepted = 0;
        let e = loop {
            let room = rec.log.room_for(100_000);
            let appended = rec.log.append(&payload(accepted, 100_000));
            assert_eq!(room, appended.is_ok(), "room_for agrees with append");
            match appended {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
            if accepted % 4 == 0 {
                flush_all(&mut rec.log).await;
            }
        };
        assert_eq!(e, AppendError::Full);
        assert_eq!(accepted, 20, "two segments of 10 records");
        // What still fits in the last segment is taken; what needs a new one is refused.
        assert!(rec.log.room_for(5) && !rec.log.room_for(100_000));
        assert_eq!(rec.log.append(b"small").unwrap(), 21);
        assert_eq!(
            rec.log.append(&payload(0, 100_000)).unwrap_err(),
            AppendError::Full
        );
        assert_eq!(rec.log.stats().read().full_refusals, 2);
        // The reserve takes records that let the state shrink.
        let seq = rec.log.append_reserved(&payload(99, 100_000)).unwrap();
        assert_eq!(seq, 22);
        // Ordinary records stay out of the reserve, even where its segment has room.
        assert!(!rec.log.room_for(5));
        assert_eq!(rec.log.append(b"small").unwrap_err(), AppendError::Full);
        assert_eq!(rec.log.stats().read().full_refusals, 3);
        assert!(rec.log.wants_snapshot());
        flush_all(&mut rec.log).await;
        drop(rec);
        drop(store);
        let store = Store::open(cfg, 1).unwrap();
        let (records, rec) = replay_all(&store);
        assert!(rec.torn_tail.is_none());
        assert_eq!(records.len(), 22);
        assert_eq!(records[20], (21, b"small".to_vec()));
        assert_eq!(records[21], (22, payload(99, 100_000)));
    });
}

#[test]
fn snapshot_compacts_and_recovery_replays_from_it() {
    on_both_drivers(|io, dir| async move {
        let store = Store::open(config(&dir, io), 1).unwrap();
        let mut rec = store.recover(0).unwrap();
        // 2.5 segments of history.
        for i in 0..25 {
            rec.log.append(&payload(i, 100_000)).unwrap();
        }
        flush_all(&mut rec.log).await;
        assert_eq!(segment_files(&dir).len(), 3);
        assert!(rec.log.wants_snapshot());
        let begin = rec.log.begin_snapshot().unwrap();
        assert_eq!(begin, 26);
        assert_eq!(
            rec.log.segment_count(),
            4,
            "the begin marker opens a segment"
        );
        assert_eq!(
            rec.log.begin_snapshot(),
            Err(AppendError::SnapshotInProgress)
        );
        assert!(!rec.log.wants_snapshot());
        rec.log.append_reserved(b"live 1").unwrap();
        flush_all(&mut rec.log).await; // over several flushes, interleaved
        rec.log.append(b"ordinary during snapshot").unwrap();
        rec.log.append_reserved(b"live 2").unwrap();
        let end = rec.log.end_snapshot().unwrap();
        assert_eq!(end, 30);
        assert_eq!(rec.log.end_snapshot(), Err(AppendError::NoSnapshot));
        rec.log.append(b"after").unwrap();
        // The end marker's flush, then the deletion.
        assert_eq!(flush_all(&mut rec.log).await, 2);
        let stats = rec.log.stats().read();
        assert_eq!(
            (stats.snapshots, stats.segments_deleted, stats.segments),
            (1, 3, 1)
        );
        assert_eq!(segment_files(&dir).len(), 1);
        assert_eq!(stats.disk_bytes, MIB);
        assert!(!rec.log.wants_snapshot(), "the log is small again");
        // A snapshot begun and never ended does not count.
        rec.log.begin_snapshot().unwrap();
        rec.log.append_reserved(b"half a snapshot").unwrap();
        flush_all(&mut rec.log).await;
        drop(rec);
        drop(store);
        let store = Store::open(config(&dir, io), 1).unwrap();
        let (records, rec) = replay_all(&store);
        let got: Vec<(u64, &[u8])> = records.iter().map(|(s, p)| (*s, &p[..])).collect();
        assert_eq!(
            got,
            vec![
                (27, &b"live 1"[..]),
                (28, b"ordinary during snapshot"),
                (29, b"live 2"),
                (31, b"after"),
                (33, b"half a snapshot"),
            ]
        );
        assert_eq!(rec.log.next_seq(), 34);
    });
}

#[test]
fn group_commit_one_flush_in_flight_batches_the_rest() {
    on_both_drivers(|io, dir| async move {
        let store = Store::open(config(&dir, io), 1).unwrap();
        let mut rec = store.recover(0).unwrap();
        rec.log.append(b"first").unwrap();
        let first = rec.log.start_flush().unwrap();
        assert!(rec.log.flush_in_flight());
        assert!(rec.log.start_flush().is_none(), "one flush in flight");
        for i in 0..1000 {
            rec.log.append(&payload(i, 64)).unwrap();
        }
        let d = rec.log.finish_flush(first.run().await).unwrap();
        assert_eq!((d.through, d.records), (1, 1));
        let second = rec.log.start_flush().unwrap();
        assert_eq!(second.records(), 1000);
        let d = rec.log.finish_flush(second.run().await).unwrap();
        assert_eq!((d.through, d.synced_through, d.records), (1001, 1001, 1000));
        assert!(rec.log.start_flush().is_none());
        let s = rec.log.stats().read();
        assert_eq!(
            (s.fsyncs, s.records_synced, s.writes, s.records),
            (2, 1001, 2, 1001)
        );
    });
}

#[test]
fn group_commit_through_the_flusher_task() {
    on_both_drivers(|io, dir| async move {
        let store = Store::open(config(&dir, io), 1).unwrap();
        let rec = store.recover(0).unwrap();
        let log = Rc::new(RefCell::new(rec.log));
        let reports = Rc::new(RefCell::new(Vec::new()));
        let flusher = monoio::spawn({
            let (log, reports) = (log.clone(), reports.clone());
            async move { run_flusher(log, move |d| reports.borrow_mut().push(d)).await }
        });
        // One record per turn until a flush is seen in flight (a fast disk may finish some
        // flushes between two looks; the counts below hold whatever happened before).
        let mut before = 0u64;
        while !log.borrow().flush_in_flight() {
            log.borrow_mut().append(b"before").unwrap();
            before += 1;
            monoio::time::sleep(Duration::ZERO).await;
            assert!(before < 100_000, "the flusher never started");
        }
        // 1000 appends while it is in flight: the next batch, whole.
        for i in 0..1000 {
            log.borrow_mut().append(&payload(i, 64)).unwrap();
        }
        log.borrow_mut().close();
        flusher.await.unwrap();
        let reports = reports.borrow();
        let batches: Vec<u64> = reports.iter().map(|d| d.records).collect();
        assert_eq!(batches.last(), Some(&1000), "{batches:?}");
        assert_eq!(batches.iter().sum::<u64>(), before + 1000);
        assert_eq!(reports.last().unwrap().through, before + 1000);
        let s = log.borrow().stats().read();
        assert_eq!(
            (s.fsyncs, s.records_synced),
            (batches.len() as u64, before + 1000),
            "one fsync per batch"
        );
    });
}

#[test]
fn interval_writes_now_and_syncs_later() {
    on_both_drivers(|io, dir| async move {
        let cfg = StoreConfig {
            fsync: FsyncPolicy::Interval(Duration::from_secs(60)),
            ..config(&dir, io)
        };
        let store = Store::open(cfg.clone(), 1).unwrap();
        let rec = store.recover(0).unwrap();
        let log = Rc::new(RefCell::new(rec.log));
        // A batch that opens a segment syncs the one it leaves, and itself.
        log.borrow_mut().append(b"opens segment 1").unwrap();
        let f = log.borrow_mut().start_flush().unwrap();
        assert!(f.syncs());
        let done = f.run().await;
        log.borrow_mut().finish_flush(done).unwrap();
        for i in 1..10 {
            log.borrow_mut().append(&payload(i, 10)).unwrap();
        }
        let f = log.borrow_mut().start_flush().unwrap();
        assert!(!f.syncs(), "the interval has not passed");
        let done = f.run().await;
        let d = log.borrow_mut().finish_flush(done).unwrap();
        assert_eq!((d.through, d.synced_through), (10, 1));
        assert!(log.borrow().sync_deadline().is_some());
        assert!(log.borrow_mut().start_flush().is_none(), "no sync owed yet");
        assert_eq!(log.borrow().stats().read().fsyncs, 1);
        // Closing syncs what is owed.
        log.borrow_mut().close();
        run_flusher(log.clone(), |_| {}).await.unwrap();
        assert_eq!(log.borrow().synced_through(), 10);
        assert_eq!(log.borrow().stats().read().fsyncs, 2);
        drop(log);
        drop(store);
        let store = Store::open(cfg, 1).unwrap();
        assert_eq!(replay_all(&store).0.len(), 10);
    });
}

#[test]
fn the_store_is_shared_and_a_recovered_log_can_move_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Store>();
    send::<ringmq_storage::Recovered>();
    // Recovered on one thread, run on another (a shard's).
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(config(tmp.path(), IoMode::IoUring), 2).unwrap();
    let recovered: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                s.spawn({
                    let store = &store;
                    move || store.recover(i).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for mut rec in recovered {
        std::thread::spawn(move || {
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .build()
                .unwrap()
                .block_on(async move {
                    rec.log.append(b"x").unwrap();
                    assert_eq!(flush_all(&mut rec.log).await, 1);
                    assert_eq!(rec.log.durable_through(), 1);
                });
        })
        .join()
        .unwrap();
    }
}

/// Three segments of records 1..=25 (10 per segment).
async fn three_segments(dir: &Path, io: IoMode) {
    let store = Store::open(config(dir, io), 1).unwrap();
    let mut rec = store.recover(0).unwrap();
    for i in 1..=25 {
        rec.log.append(&payload(i, 100_000)).unwrap();
    }
    flush_all(&mut rec.log).await;
    assert_eq!(segment_files(dir).len(), 3);
}

#[test]
fn a_segment_whose_header_never_reached_the_disk_is_dropped() {
    on_both_drivers(|io, dir| async move {
        three_segments(&dir, io).await;
        // The newest segment was created and preallocated, its first write lost.
        let last = segment_files(&dir).pop().unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&last)
            .unwrap()
            .write_all_at(&[0; 4096], 0)
            .unwrap();
        let store = Store::open(config(&dir, io), 1).unwrap();
        let (records, mut rec) = replay_all(&store);
        let torn = rec.torn_tail.clone().unwrap();
        assert_eq!((torn.segment.clone(), torn.offset), (last.clone(), 0));
        assert!(
            matches!(torn.reason, TornReason::BadSegmentHeader { .. }),
            "{torn}"
        );
        assert_eq!(records.len(), 20);
        assert!(!last.exists());
        // Appending resumes: a new segment 3, continuing the sequence.
        assert_eq!(rec.log.append(&payload(21, 100_000)).unwrap(), 21);
        flush_all(&mut rec.log).await;
        drop(rec);
        drop(store);
        let store = Store::open(config(&dir, io), 1).unwrap();
        let (records, rec) = replay_all(&store);
        assert!(rec.torn_tail.is_none());
        assert_eq!(records.len(), 21);
        assert!(last.exists());
    });
}

#[test]
fn a_missing_segment_is_refused_naming_it() {
    on_both_drivers(|io, dir| async move {
        three_segments(&dir, io).await;
        std::fs::remove_file(&segment_files(&dir)[1]).unwrap();
        let store = Store::open(config(&dir, io), 1).unwrap();
        let e = store.recover(0).unwrap_err().to_string();
        assert!(e.contains("segment 2 is missing"), "{e}");
        drop(store);
        // The first segment missing: the log does not start at record 1.
        let dir2 = dir.with_extension("2");
        three_segments(&dir2, io).await;
        std::fs::remove_file(&segment_files(&dir2)[0]).unwrap();
        let store = Store::open(config(&dir2, io), 1).unwrap();
        let e = store.recover(0).unwrap_err().to_string();
        assert!(e.contains("starts at record 11"), "{e}");
    });
}

#[test]
fn segments_left_by_an_interrupted_compaction_go_at_recovery() {
    on_both_drivers(|io, dir| async move {
        three_segments(&dir, io).await;
        let store = Store::open(config(&dir, io), 1).unwrap();
        let (_, mut rec) = replay_all(&store);
        rec.log.begin_snapshot().unwrap();
        rec.log.append_reserved(b"live").unwrap();
        rec.log.end_snapshot().unwrap();
        // Written and synced, but the deletion never ran (a crash right after).
        let f = rec.log.start_flush().unwrap();
        let d = rec.log.finish_flush(f.run().await).unwrap();
        assert_eq!(d.synced_through, 28);
        assert_eq!(segment_files(&dir).len(), 4);
        drop(rec);
        drop(store);
        // And one of them already gone: a gap before the snapshot is fine.
        std::fs::remove_file(&segment_files(&dir)[1]).unwrap();
        let store = Store::open(config(&dir, io), 1).unwrap();
        let (records, rec) = replay_all(&store);
        assert_eq!(records, vec![(27, b"live".to_vec())]);
        assert_eq!(segment_files(&dir).len(), 1);
        assert_eq!(rec.log.stats().read().segments, 1);
    });
}

#[test]
fn wants_snapshot_follows_the_log_size() {
    on_both_drivers(|io, dir| async move {
        let store = Store::open(config(&dir, io), 1).unwrap();
        let mut rec = store.recover(0).unwrap();
        // Never snapshotted: wanted once the log exceeds one segment.
        for i in 0..10 {
            rec.log.append(&payload(i, 100_000)).unwrap();
        }
        assert!(!rec.log.wants_snapshot());
        rec.log.append(&payload(10, 100_000)).unwrap();
        assert!(rec.log.wants_snapshot());
        // A snapshot of ~300 KB of live state.
        rec.log.begin_snapshot().unwrap();
        for i in 0..3 {
            rec.log.append_reserved(&payload(i, 100_000)).unwrap();
        }
        rec.log.end_snapshot().unwrap();
        assert!(!rec.log.wants_snapshot(), "waiting for its deletion");
        flush_all(&mut rec.log).await;
        assert_eq!(rec.log.segment_count(), 1);
        // Wanted again when the log exceeds a segment and twice the snapshot.
        let mut appended = 0;
        while !rec.log.wants_snapshot() {
            rec.log.append(&payload(appended, 100_000)).unwrap();
            appended += 1;
        }
        assert!(rec.log.log_bytes() > MIB, "{}", rec.log.log_bytes());
        assert_eq!(
            appended, 8,
            "one segment: 3 snapshot records + 7 more, then the next"
        );
    });
}
