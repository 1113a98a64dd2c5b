//! Records per second through one shard's log with `fsync = "always"`, at batch sizes 1, 64
//! and 512 (records per write + `fdatasync`), 256-byte records, on both drivers.
//!
//! `cargo bench -p ringmq-storage --bench group_commit` (set `RINGMQ_BENCH_DIR` to measure
//! another disk; the default is the system's temporary directory). A plain binary rather than
//! criterion: one flush costs milliseconds, and what matters is the rate at each batch size,
//! not a distribution of nanoseconds. The numbers are in docs/storage.md ("Group commit").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use ringmq_storage::{IoMode, Store, StoreConfig};

const RECORD_BYTES: usize = 256;
/// Each run lasts about this long (at least 50 flushes).
const RUN: Duration = Duration::from_secs(2);

async fn run(io: IoMode, batch: usize) -> (f64, f64, f64) {
    let base = std::env::var_os("RINGMQ_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(base).unwrap();
    let config = StoreConfig {
        io,
        segment_bytes: 64 << 20,
        max_disk_bytes: 4 << 30,
        ..StoreConfig::new(tmp.path().join("store"))
    };
    let store = Store::open(config, 1).unwrap();
    let mut log = store.recover(0).unwrap().log;
    let payload = [0x5Au8; RECORD_BYTES];
    // Warm-up: creates the first segment, grows the buffers.
    for _ in 0..batch {
        log.append(&payload).unwrap();
    }
    let f = log.start_flush().unwrap();
    log.finish_flush(f.run().await).unwrap();
    let before = log.stats().read();
    let start = Instant::now();
    let mut flushes = 0u64;
    while start.elapsed() < RUN || flushes < 50 {
        for _ in 0..batch {
            log.append(&payload).unwrap();
        }
        let f = log.start_flush().unwrap();
        log.finish_flush(f.run().await).unwrap();
        flushes += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = log.stats().read();
    let records = (after.records_synced - before.records_synced) as f64;
    let fsyncs = (after.fsyncs - before.fsyncs) as f64;
    let mean_flush_us = (after.flush_nanos - before.flush_nanos) as f64
        / (after.flushes - before.flushes) as f64
        / 1e3;
    (records / elapsed, fsyncs / elapsed, mean_flush_us)
}

/// Writes `records` records of 256 bytes (batches of 4 096), then times a recovery: the check
/// pass (read + CRC of every frame) and the replay (read again, decode).
async fn recovery(records: u64) -> (f64, f64, u64) {
    let base = std::env::var_os("RINGMQ_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(base).unwrap();
    let config = StoreConfig {
        io: IoMode::IoUring,
        ..StoreConfig::new(tmp.path().join("store"))
    };
    {
        let store = Store::open(config.clone(), 1).unwrap();
        let mut log = store.recover(0).unwrap().log;
        let payload = [0x5Au8; RECORD_BYTES];
        for i in 0..records {
            log.append(&payload).unwrap();
            if i % 4096 == 4095 || i + 1 == records {
                let f = log.start_flush().unwrap();
                log.finish_flush(f.run().await).unwrap();
            }
        }
    }
    let store = Store::open(config, 1).unwrap();
    let start = Instant::now();
    let mut rec = store.recover(0).unwrap();
    let checked = start.elapsed().as_secs_f64();
    let mut n = 0;
    while rec.replay.next_record().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, records);
    let bytes = rec.log.log_bytes();
    (checked, start.elapsed().as_secs_f64(), bytes)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would too: run only under bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!("driver    batch  records/s   fsyncs/s  mean flush");
    for (name, io) in [("io_uring", IoMode::IoUring), ("epoll", IoMode::Thread)] {
        for batch in [1, 64, 512] {
            let (rate, fsyncs, flush_us) = match io {
                IoMode::IoUring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .build()
                    .unwrap()
                    .block_on(run(io, batch)),
                IoMode::Thread => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .build()
                    .unwrap()
                    .block_on(run(io, batch)),
            };
            println!("{name:<9} {batch:>5} {rate:>10.0} {fsyncs:>10.0} {flush_us:>8.0} µs");
        }
    }
    let records = 1_000_000;
    let (checked, total, bytes) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .build()
        .unwrap()
        .block_on(recovery(records));
    println!(
        "recovery of {records} records ({} MB, page cache warm): check {checked:.2} s, check + replay {total:.2} s",
        bytes / 1_000_000
    );
}
