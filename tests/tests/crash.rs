//! Durable sessions across crashes (docs/storage.md): the real binary with `[storage] dir`,
//! killed with SIGKILL at a random moment while third-party clients (mosquitto_pub,
//! mosquitto_sub with persistent sessions, paho-mqtt) and the harness's own client publish
//! QoS 1 and QoS 2, then restarted on the same directory. Checked: no acknowledged message is
//! lost (a QoS 1 message whose PUBACK, a QoS 2 message whose PUBREC the publisher received),
//! no QoS 2 message is delivered twice, retained messages are exactly as they were (a cleared
//! one stays cleared), sessions are present; a torn tail (the last segment truncated or
//! corrupted) is cut and reported; a graceful restart keeps everything.
//!
//! `RINGMQ_CRASH_SEEDS` (default `1,2`): the seeds of the random kill moments, comma
//! separated. `RINGMQ_TEST_DRIVER` picks the I/O driver as for every test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ringmq_codec::*;
use ringmq_tests::tools::*;
use ringmq_tests::*;

fn seeds() -> Vec<u64> {
    std::env::var("RINGMQ_CRASH_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<u64>| !v.is_empty())
        .unwrap_or_else(|| vec![1, 2])
}

/// A broker persisting into `store`, with queues large enough to keep everything published.
fn opts(store: &Path) -> BrokerOpts {
    BrokerOpts::new()
        .storage(store, "")
        .limits("max_queued_messages = 100000\nmax_queued_bytes = 100000000")
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Persistent subscriber sessions made by mosquitto_sub: it subscribes and exits (-E), and the
/// session keeps everything published meanwhile.
const SUBSCRIBERS: &[(&str, &str, &str, &str)] = &[
    // (client id, protocol, QoS, filter)
    ("crash-s1", "mqttv5", "1", "crash/q1/#"),
    ("crash-s2", "mqttv5", "2", "crash/q2/#"),
    ("crash-s3", "mqttv311", "1", "crash/q1/#"),
];

fn sub_args<'a>(id: &'a str, version: &'a str, qos: &'a str, filter: &'a str) -> Vec<&'a str> {
    let mut args = vec!["-c", "-i", id, "-q", qos, "-t", filter, "-V", version];
    if version == "mqttv5" {
        args.extend(["-x", "3600"]);
    }
    args
}

fn make_subscribers(b: &Broker) {
    for &(id, version, qos, filter) in SUBSCRIBERS {
        let mut args = sub_args(id, version, qos, filter);
        args.push("-E");
        mosquitto_sub(b, &args).wait(TOOL_TIMEOUT).assert_success();
    }
}

/// Resumes each subscriber's session and collects what it gets up to an end marker published
/// after the restart (queued messages come before it): payloads by client id, in order.
fn drain_subscribers(b: &Broker) -> BTreeMap<&'static str, Vec<String>> {
    let mut out = BTreeMap::new();
    for &(id, version, qos, filter) in SUBSCRIBERS {
        let tool = mosquitto_sub_spawn(b, &sub_args(id, version, qos, filter));
        let marker_topic = format!("{}end", filter.trim_end_matches('#'));
        // Published until the subscriber prints it: its SUBACK may come after the first try.
        let mut seen = false;
        for _ in 0..50 {
            mosquitto_pub(b, &["-q", "1", "-t", &marker_topic, "-m", "END"]).assert_success();
            std::thread::sleep(Duration::from_millis(100));
            if tool.stdout_so_far().contains(&marker_topic) {
                seen = true;
                break;
            }
        }
        let output = tool.wait(Duration::from_millis(200));
        assert!(seen, "{id}: no end marker\n{output}");
        let payloads = output
            .messages()
            .into_iter()
            .filter(|m| m.topic != marker_topic)
            .map(|m| m.payload)
            .collect();
        out.insert(id, payloads);
    }
    out
}

/// What the publishers had acknowledged when the broker died.
#[derive(Debug, Default)]
struct Acked {
    qos1: BTreeSet<String>,
    qos2: BTreeSet<String>,
}

/// The harness client publishing one message at a time until the broker is gone; returns the
/// payloads acknowledged (QoS 2: PUBREC received).
fn own_publisher(addr: std::net::SocketAddr, qos: QoS, stop: Arc<AtomicBool>) -> Vec<String> {
    let topic = if qos == QoS::ExactlyOnce {
        "crash/q2/own"
    } else {
        "crash/q1/own"
    };
    let mut c = Client::connect(addr, Opts::v5(&format!("crash-own-{}", qos as u8)));
    let mut acked = Vec::new();
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let payload = format!("own{}-{i}", qos as u8);
        let mut p = msg(topic, payload.clone()).qos(qos);
        let id = c.next_packet_id();
        p.qos_pid = QosPid::new(qos, id);
        if c.try_send(&Packet::Publish(p)).is_err() {
            break;
        }
        let mut done = false;
        while !done {
            match c.try_recv(Duration::from_secs(5)) {
                Ok(Some(Packet::PubAck(a))) if a.packet_id == id => {
                    acked.push(payload.clone());
                    done = true;
                }
                Ok(Some(Packet::PubRec(a))) if a.packet_id == id => {
                    acked.push(payload.clone());
                    if c.try_send(&Packet::PubRel(PubResp::new(id, ReasonCode::SUCCESS)))
                        .is_err()
                    {
                        return acked;
                    }
                }
                Ok(Some(Packet::PubComp(a))) if a.packet_id == id => done = true,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return acked,
            }
        }
    }
    acked
}

/// mosquitto_pub (QoS 1) or paho-mqtt (QoS 2), one process per message, until one fails: a
/// successful exit means the flow completed.
fn tool_publisher(port: u16, qos: u8, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut acked = Vec::new();
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let payload = format!("tool{qos}-{i}");
        let status = if qos == 1 {
            Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
                .args(["-t", "crash/q1/tool", "-m", &payload, "-i", "crash-mp"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        } else {
            let script = workspace_root().join("tests/py/paho_pub.py");
            Command::new("python3")
                .arg(script)
                .args(["--port", &port.to_string(), "--version", "5", "--qos", "2"])
                .args(["--topic", "crash/q2/paho", "--message", &payload])
                .args(["--id", "crash-paho"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        };
        match status {
            Ok(s) if s.success() => acked.push(payload),
            _ => break,
        }
    }
    acked
}

fn retained_now(b: &Broker) -> BTreeMap<String, String> {
    let mut c = b.v5("crash-retained-probe");
    c.subscribe_ok("crash/r/#", QoS::AtMostOnce);
    let mut found = BTreeMap::new();
    while let Some(Packet::Publish(p)) = c.recv(QUIET) {
        found.insert(
            p.topic.as_str().to_owned(),
            String::from_utf8_lossy(&p.payload).into_owned(),
        );
    }
    found
}

fn set_retained(b: &Broker) -> BTreeMap<String, String> {
    let mut expected = BTreeMap::new();
    for i in 1..=4 {
        let topic = format!("crash/r/{i}");
        let payload = format!("kept-{i}");
        mosquitto_pub(b, &["-q", "1", "-r", "-t", &topic, "-m", &payload]).assert_success();
        expected.insert(topic, payload);
    }
    // Cleared: must stay cleared after the restart.
    mosquitto_pub(b, &["-q", "1", "-r", "-t", "crash/r/2", "-n"]).assert_success();
    expected.remove("crash/r/2");
    expected
}

fn check_delivered(acked: &Acked, got: &BTreeMap<&'static str, Vec<String>>) {
    for id in ["crash-s1", "crash-s3"] {
        let have: BTreeSet<&String> = got[id].iter().collect();
        let lost: Vec<&String> = acked.qos1.iter().filter(|p| !have.contains(p)).collect();
        assert!(
            lost.is_empty(),
            "{id}: {} acknowledged QoS 1 messages lost, the first: {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
    }
    let s2 = &got["crash-s2"];
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for p in s2 {
        *counts.entry(p).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} QoS 2 messages delivered more than once, the first: {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    let lost: Vec<&String> = acked
        .qos2
        .iter()
        .filter(|p| !counts.contains_key(p))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged QoS 2 messages lost, the first: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

/// Starts the publishers; returns their threads and the flag that stops them.
#[allow(clippy::type_complexity)]
fn start_publishers(b: &Broker) -> (Arc<AtomicBool>, Vec<(u8, JoinHandle<Vec<String>>)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, port) = (b.addr(), b.port());
    let mut threads = Vec::new();
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let stop = stop.clone();
        threads.push((
            qos as u8,
            std::thread::spawn(move || own_publisher(addr, qos, stop)),
        ));
    }
    for qos in [1u8, 2] {
        let stop = stop.clone();
        threads.push((
            qos,
            std::thread::spawn(move || tool_publisher(port, qos, stop)),
        ));
    }
    (stop, threads)
}

fn collect(stop: Arc<AtomicBool>, threads: Vec<(u8, JoinHandle<Vec<String>>)>) -> Acked {
    stop.store(true, Ordering::Relaxed);
    let mut acked = Acked::default();
    for (qos, t) in threads {
        let payloads = t.join().expect("publisher thread");
        if qos == 1 {
            acked.qos1.extend(payloads);
        } else {
            acked.qos2.extend(payloads);
        }
    }
    acked
}

fn probe_session(b: &Broker) {
    let mut c = b.connect(Opts::v5("crash-probe").clean(false).session_expiry(3600));
    c.subscribe_ok("crash/probe", QoS::AtLeastOnce);
    c.disconnect();
}

fn assert_probe_present(b: &Broker) {
    let c = b.connect(Opts::v5("crash-probe").clean(false).session_expiry(3600));
    assert!(c.session_present(), "session lost: {:?}", c.connack);
}

#[test]
fn kill9_at_random_moments_loses_no_acknowledged_message() {
    for seed in seeds() {
        let store = temp_dir("crash-store");
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut b = Broker::start(opts(&store));
        make_subscribers(&b);
        probe_session(&b);
        let retained = set_retained(&b);
        let (stop, threads) = start_publishers(&b);
        std::thread::sleep(Duration::from_millis(300 + rng.below(1200)));
        b.kill();
        let acked = collect(stop, threads);
        assert!(
            !acked.qos1.is_empty() && !acked.qos2.is_empty(),
            "seed {seed}: nothing was acknowledged: {acked:?}"
        );

        let b = Broker::start(opts(&store));
        assert_probe_present(&b);
        assert_eq!(retained_now(&b), retained, "seed {seed}: retained messages");
        let got = drain_subscribers(&b);
        check_delivered(&acked, &got);
        eprintln!(
            "seed {seed}: {} QoS 1 and {} QoS 2 acknowledged, all delivered ({} / {} received)",
            acked.qos1.len(),
            acked.qos2.len(),
            got["crash-s1"].len(),
            got["crash-s2"].len()
        );
        drop(b);
        let _ = std::fs::remove_dir_all(&store);
    }
}

#[test]
fn graceful_restart_keeps_everything() {
    let store = temp_dir("crash-store");
    let mut b = Broker::start(opts(&store));
    make_subscribers(&b);
    probe_session(&b);
    let retained = set_retained(&b);
    let mut acked = Acked::default();
    for i in 0..20 {
        let p = format!("graceful-{i}");
        mosquitto_pub(&b, &["-q", "1", "-t", "crash/q1/g", "-m", &p]).assert_success();
        acked.qos1.insert(p);
        let p = format!("graceful2-{i}");
        mosquitto_pub(&b, &["-q", "2", "-t", "crash/q2/g", "-m", &p]).assert_success();
        acked.qos2.insert(p);
    }
    b.terminate(Duration::from_secs(10));
    let b = Broker::start(opts(&store));
    assert_probe_present(&b);
    assert_eq!(retained_now(&b), retained);
    let got = drain_subscribers(&b);
    check_delivered(&acked, &got);
    assert_eq!(
        got["crash-s1"].len(),
        20,
        "exactly what was published: {got:?}"
    );
    assert_eq!(
        got["crash-s2"].len(),
        20,
        "exactly what was published: {got:?}"
    );
    drop(b);
    let _ = std::fs::remove_dir_all(&store);
}

#[test]
fn inflight_qos1_is_redelivered_with_dup_after_kill9() {
    let store = temp_dir("crash-store");
    let mut b = Broker::start(opts(&store));
    let mut sub = b.connect(Opts::v5("crash-inflight").clean(false).session_expiry(3600));
    sub.subscribe_ok("crash/inflight", QoS::AtLeastOnce);
    let mut publisher = b.v5("crash-inflight-pub");
    // Acknowledged to the publisher: its records are on disk.
    publisher.publish(msg("crash/inflight", "not-acked-by-subscriber").qos(QoS::AtLeastOnce));
    let first = sub.expect_publish();
    assert!(!first.dup);
    // The subscriber never acknowledges it; the broker dies.
    b.kill();
    drop(sub);
    let b = Broker::start(opts(&store));
    let mut sub = b.connect(Opts::v5("crash-inflight").clean(false).session_expiry(3600));
    assert!(sub.session_present());
    let again = sub.expect_publish();
    assert_eq!(&again.payload[..], b"not-acked-by-subscriber");
    assert!(again.dup, "resent with DUP [MQTT-3.3.1-1]: {again:?}");
    sub.ack(&again);
    drop(b);
    let _ = std::fs::remove_dir_all(&store);
}

/// The last segment file of every shard's log.
fn last_segments(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(store).unwrap().flatten() {
        if !shard.path().is_dir() {
            continue;
        }
        let mut segs: Vec<PathBuf> = std::fs::read_dir(shard.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        segs.sort();
        if let Some(last) = segs.pop() {
            out.push(last);
        }
    }
    out
}

/// Offset just past the last non-zero byte (segments are preallocated with zeros).
fn written_end(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}

#[test]
fn torn_tail_truncated_or_corrupted_is_cut_and_reported() {
    for corrupt in [false, true] {
        let store = temp_dir("crash-store");
        let mut b = Broker::start(opts(&store));
        make_subscribers(&b);
        probe_session(&b);
        let retained = set_retained(&b);
        // Records to tear on every shard, after everything checked below: persistent
        // sessions made last (connections land on shards at random; 20 miss one shard with
        // probability 2^-19).
        for i in 0..20 {
            let c = b.connect(
                Opts::v5(&format!("crash-filler-{i}"))
                    .clean(false)
                    .session_expiry(60),
            );
            c.disconnect();
        }
        b.kill();
        let mut torn = 0;
        for seg in last_segments(&store) {
            let end = written_end(&seg);
            if end < 64 {
                continue;
            }
            torn += 1;
            if corrupt {
                let mut bytes = std::fs::read(&seg).unwrap();
                for b in &mut bytes[end as usize - 6..end as usize] {
                    *b ^= 0x5A;
                }
                std::fs::write(&seg, bytes).unwrap();
            } else {
                let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
                f.set_len(end - 3).unwrap();
            }
        }
        assert!(torn > 0, "no segment with records in {}", store.display());
        let b = Broker::start(opts(&store));
        assert!(
            wait_until(WAIT, || b.log().contains("torn tail")),
            "the torn tail is reported:\n{}",
            b.log()
        );
        // What came before the tail is all there.
        assert_probe_present(&b);
        assert_eq!(retained_now(&b), retained, "corrupt={corrupt}");
        let _ = drain_subscribers(&b);
        drop(b);
        let _ = std::fs::remove_dir_all(&store);
    }
}

/// Compaction in the real binary: small segments fill, the log asks for a snapshot, the core
/// writes its live state, the old segments go — and a kill -9 afterwards restores the same
/// state from the snapshot (an offline session's queue made before it all, retained messages).
#[test]
fn snapshot_compaction_keeps_the_state() {
    let store = temp_dir("crash-store");
    let small = || {
        BrokerOpts::new()
            .shards(1)
            .storage(&store, "segment_bytes = 1048576\nmax_disk_bytes = 67108864")
    };
    let mut b = Broker::start(small());
    make_subscribers(&b);
    let retained = set_retained(&b);
    mosquitto_pub(&b, &["-q", "1", "-t", "crash/q1/early", "-m", "early"]).assert_success();
    // Records enough for several segments: a connected persistent subscriber acknowledging
    // 10 KB messages (each written as Message, Enqueued, Sent, Acked).
    let mut sub = b.connect(Opts::v5("crash-busy").clean(false).session_expiry(3600));
    sub.subscribe_ok("crash/busy", QoS::AtLeastOnce);
    let mut publisher = b.v5("crash-busy-pub");
    let payload = "x".repeat(10_000);
    for _ in 0..400 {
        publisher.publish(msg("crash/busy", payload.clone()).qos(QoS::AtLeastOnce));
        let p = sub.expect_publish();
        sub.ack(&p);
    }
    let first = store.join("shard-000").join("00000000000000000001.log");
    assert!(
        wait_until(WAIT, || !first.exists()),
        "the first segment was never compacted away:\n{}",
        b.log()
    );
    b.kill();
    let b = Broker::start(small());
    assert_eq!(retained_now(&b), retained);
    let got = drain_subscribers(&b);
    assert_eq!(got["crash-s1"], ["early"], "{got:?}");
    assert_eq!(got["crash-s3"], ["early"], "{got:?}");
    let c = b.connect(Opts::v5("crash-busy").clean(false).session_expiry(3600));
    assert!(c.session_present());
    drop(b);
    let _ = std::fs::remove_dir_all(&store);
}

/// Publishes `n` QoS 1 and `n` QoS 2 messages with mosquitto_pub (each acknowledged).
fn publish_batch(b: &Broker, tag: &str, n: usize) -> Acked {
    let mut acked = Acked::default();
    for i in 0..n {
        let p = format!("{tag}-{i}");
        mosquitto_pub(b, &["-q", "1", "-t", "crash/q1/r", "-m", &p]).assert_success();
        acked.qos1.insert(p);
        let p = format!("{tag}2-{i}");
        mosquitto_pub(b, &["-q", "2", "-t", "crash/q2/r", "-m", &p]).assert_success();
        acked.qos2.insert(p);
    }
    acked
}

/// A changed `server.shards` between runs re-homes every session (docs/storage.md): 2 shards
/// holding persistent sessions with queued messages and retained messages, killed, restarted
/// with 4, then with 1 — sessions present, queues and retained messages exact each time.
#[test]
fn a_changed_shard_count_rehomes_sessions_queues_and_retained() {
    let store = temp_dir("crash-store");
    let with = |shards: usize| opts(&store).shards(shards);
    let mut b = Broker::start(with(2));
    make_subscribers(&b);
    probe_session(&b);
    let retained = set_retained(&b);
    let first = publish_batch(&b, "two", 10);
    b.kill();

    let mut b = Broker::start(with(4));
    assert!(
        b.log().contains("re-homed sessions from 2 to 4 shards"),
        "{}",
        b.log()
    );
    assert!(store.join("shard-003.g1").is_dir() && !store.join("shard-000").exists());
    assert_probe_present(&b);
    assert_eq!(retained_now(&b), retained);
    let got = drain_subscribers(&b);
    check_delivered(&first, &got);
    for id in ["crash-s1", "crash-s2", "crash-s3"] {
        assert_eq!(got[id].len(), 10, "{id}: exactly what was queued: {got:?}");
    }
    let second = publish_batch(&b, "four", 7);
    b.kill();

    let b = Broker::start(with(1));
    assert!(
        b.log().contains("re-homed sessions from 4 to 1 shards"),
        "{}",
        b.log()
    );
    assert_probe_present(&b);
    assert_eq!(retained_now(&b), retained);
    let got = drain_subscribers(&b);
    check_delivered(&second, &got);
    for id in ["crash-s1", "crash-s2", "crash-s3"] {
        assert_eq!(got[id].len(), 7, "{id}: exactly what was queued: {got:?}");
    }
    drop(b);
    let _ = std::fs::remove_dir_all(&store);
}
