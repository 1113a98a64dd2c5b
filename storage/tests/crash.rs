//! kill -9 at random moments: a child process (this test binary, re-run with an environment
//! variable) appends records of random sizes, snapshots when the log asks for it, and prints
//! every "durable through N" it learns; the parent kills it with SIGKILL once N passes a
//! seeded threshold, recovers, and checks that
//! - every record reported durable is replayed, with its exact payload;
//! - replay is gap-free (only the snapshot markers the child printed are missing) and starts at
//!   the start of the log or right after a snapshot begin marker;
//! - appending resumes and a second recovery is clean.
//!
//! Several seeds, both drivers. The kill point is chosen by count, not by time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use ringmq_storage::{IoMode, Store, StoreConfig, run_flusher};

const CHILD_ENV: &str = "RINGMQ_STORAGE_CRASH_CHILD";

fn config(dir: &Path, io: IoMode) -> StoreConfig {
    StoreConfig {
        io,
        segment_bytes: 1 << 20,
        max_disk_bytes: 256 << 20,
        ..StoreConfig::new(dir)
    }
}

/// The payload of record `seq`: its length and bytes both follow from `seq`.
fn payload(seq: u64) -> Vec<u8> {
    let len = (seq.wrapping_mul(2_654_435_761) % 3000) as usize;
    (0..len).map(|i| (seq as usize ^ i) as u8).collect()
}

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The child's workload: runs until killed.
async fn child(dir: &Path, io: IoMode, seed: u64) {
    let store = Store::open(config(dir, io), 1).unwrap();
    let rec = store.recover(0).unwrap();
    let log = Rc::new(RefCell::new(rec.log));
    let out = Rc::new(RefCell::new(std::io::stdout()));
    // The test harness has printed "test crash_child ... " without a newline: end that line,
    // so that the first report starts one of its own.
    writeln!(out.borrow_mut()).unwrap();
    monoio::spawn({
        let (log, out) = (log.clone(), out.clone());
        async move {
            run_flusher(log, move |d| {
                let mut o = out.borrow_mut();
                writeln!(o, "D {}", d.through).unwrap();
                o.flush().unwrap();
            })
            .await
        }
    });
    let mut rng = Rng(seed | 1);
    let mut snapshot_turns = 0;
    loop {
        for _ in 0..rng.below(200) + 1 {
            let mut l = log.borrow_mut();
            let seq = l.next_seq();
            if l.snapshot_in_progress() {
                l.append_reserved(&payload(seq)).unwrap();
            } else {
                l.append(&payload(seq)).unwrap();
            }
        }
        {
            let mut l = log.borrow_mut();
            let marker = |seq: u64| {
                let mut o = out.borrow_mut();
                writeln!(o, "M {seq}").unwrap();
                o.flush().unwrap();
            };
            if l.snapshot_in_progress() {
                snapshot_turns += 1;
                if snapshot_turns > 3 {
                    marker(l.end_snapshot().unwrap());
                }
            } else if l.wants_snapshot() {
                snapshot_turns = 0;
                marker(l.begin_snapshot().unwrap());
            }
        }
        monoio::time::sleep(Duration::ZERO).await;
    }
}

#[test]
fn crash_child() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return; // Only a child run does anything.
    };
    let mut parts = args.splitn(3, ' ');
    let io = match parts.next() {
        Some("uring") => IoMode::IoUring,
        _ => IoMode::Thread,
    };
    let seed: u64 = parts.next().unwrap().parse().unwrap();
    let dir = std::path::PathBuf::from(parts.next().unwrap());
    match io {
        IoMode::IoUring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(child(&dir, io, seed)),
        IoMode::Thread => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(child(&dir, io, seed)),
    }
}

/// Runs the child until it reported `kill_at` durable, kills it; returns the highest durable
/// sequence number it reported and the marker sequence numbers.
fn run_and_kill(dir: &Path, io: IoMode, seed: u64, kill_at: u64) -> (u64, BTreeSet<u64>) {
    let mode = if io == IoMode::IoUring {
        "uring"
    } else {
        "thread"
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, format!("{mode} {seed} {}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut durable = 0;
    let mut markers = BTreeSet::new();
    let mut killed = false;
    // After the kill, what the child wrote before it died is still read (to the end of the
    // pipe): its last markers and durable reports count too.
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("D ") {
            durable = durable.max(n.parse().unwrap());
            if durable >= kill_at && !killed {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        } else if let Some(n) = line.strip_prefix("M ") {
            markers.insert(n.parse().unwrap());
        }
    }
    child.wait().unwrap();
    assert!(durable >= kill_at, "the child stopped early at {durable}");
    (durable, markers)
}

fn check_recovery(dir: &Path, io: IoMode, durable: u64, markers: &BTreeSet<u64>) -> u64 {
    let store = Store::open(config(dir, io), 1).unwrap();
    let mut rec = store.recover(0).unwrap();
    if let Some(t) = &rec.torn_tail {
        eprintln!("seed run: {t}");
    }
    let mut expected: Option<u64> = None;
    let mut last = 0;
    while let Some(r) = rec.replay.next_record().unwrap() {
        match expected {
            // Replay starts at record 1 or right after a begin marker.
            None => assert!(
                r.seq == 1 || markers.contains(&(r.seq - 1)),
                "replay starts at {}; durable {durable}; markers {:?}; torn {:?}",
                r.seq,
                markers
                    .range(r.seq.saturating_sub(300)..r.seq + 50)
                    .collect::<Vec<_>>(),
                rec.torn_tail
            ),
            Some(mut e) => {
                while markers.contains(&e) {
                    e += 1;
                }
                assert_eq!(
                    r.seq,
                    e,
                    "gap in the replay; torn tail {:?}; markers near: {:?}",
                    rec.torn_tail,
                    markers
                        .range(e.saturating_sub(50)..e + 50)
                        .collect::<Vec<_>>()
                );
            }
        }
        assert_eq!(
            r.payload,
            &payload(r.seq)[..],
            "payload of record {}",
            r.seq
        );
        last = r.seq;
        expected = Some(r.seq + 1);
    }
    let mut last_any = last;
    while markers.contains(&(last_any + 1)) {
        last_any += 1;
    }
    assert!(
        last_any >= durable,
        "record {durable} was reported durable, replay ends at {last}"
    );
    assert_eq!(rec.log.next_seq(), rec.log.durable_through() + 1);
    assert!(rec.log.next_seq() > last);
    last
}

fn crash_and_recover(io: IoMode, seeds: &[u64]) {
    for &seed in seeds {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let mut rng = Rng(seed.wrapping_mul(7919) | 1);
        let mut markers = BTreeSet::new();
        // Three crashes in a row on the same directory: recovery after recovery.
        for _ in 0..3 {
            let kill_at = rng.below(20_000) + 500;
            let floor = Store::open(config(&dir, io), 1)
                .unwrap()
                .recover(0)
                .unwrap()
                .log
                .durable_through();
            let (durable, m) = run_and_kill(&dir, io, rng.next(), floor + kill_at);
            markers.extend(m);
            check_recovery(&dir, io, durable, &markers);
        }
    }
}

#[test]
fn kill_9_loses_nothing_durable_io_uring() {
    crash_and_recover(IoMode::IoUring, &[1, 2, 3]);
}

#[test]
fn kill_9_loses_nothing_durable_legacy() {
    crash_and_recover(IoMode::Thread, &[4, 5, 6]);
}
