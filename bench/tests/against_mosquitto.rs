//! End-to-end: the real `ringmq-bench` binary against a mosquitto started by the test.
//!
//! CI installs mosquitto; without /usr/sbin/mosquitto these tests fail with a message saying
//! so rather than passing vacuously.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

struct Mosquitto {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} not found: these tests need mosquitto (apt-get install -y mosquitto)"
        );
        let dir = TempDir::new("mosq");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.0.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let broker = Mosquitto {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("rb-test-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `ringmq-bench args… --json file` and returns the parsed report.
fn bench(args: &[&str]) -> serde_json::Value {
    let dir = TempDir::new("json");
    let json = dir.0.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args(args)
        .arg("--quiet")
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ringmq-bench {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("published") && text.contains("delivered"),
        "{text}"
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn assert_all_delivered(report: &serde_json::Value, messages: u64) {
    assert_eq!(report["published"], messages, "{report:#}");
    assert_eq!(report["delivered"], messages, "{report:#}");
    assert_eq!(report["expected"], messages, "{report:#}");
    assert_eq!(report["delivery_ratio"], 1.0, "{report:#}");
    assert_eq!(report["connections"]["ok"], 4, "{report:#}");
    assert_eq!(report["connections"]["failed"], 0, "{report:#}");
    assert_eq!(report["disconnected"], 0, "{report:#}");
    assert_eq!(report["decode_errors"], 0, "{report:#}");
    assert_eq!(report["latency"]["count"], messages, "{report:#}");
}

#[test]
fn p2p_two_pairs_hundred_messages_v5_qos0() {
    let broker = Mosquitto::start();
    let port = broker.port.to_string();
    // The duration only bounds the run; the message limit ends it.
    let report = bench(&[
        "p2p",
        "-p",
        &port,
        "-c",
        "2",
        "-L",
        "100",
        "--duration",
        "30",
    ]);
    assert_all_delivered(&report, 100);
    assert_eq!(report["protocol_level"], 5);
}

#[test]
fn p2p_v311_qos1_is_acknowledged() {
    let broker = Mosquitto::start();
    let port = broker.port.to_string();
    let report = bench(&[
        "p2p",
        "-p",
        &port,
        "-c",
        "2",
        "-L",
        "100",
        "-q",
        "1",
        "-V",
        "4",
        "--duration",
        "30",
    ]);
    assert_all_delivered(&report, 100);
    assert_eq!(report["acked"], 100, "{report:#}");
    assert_eq!(report["protocol_level"], 4);
}

#[test]
fn fan_out_delivers_to_every_subscriber() {
    let broker = Mosquitto::start();
    let port = broker.port.to_string();
    let report = bench(&[
        "fan-out",
        "-p",
        &port,
        "-c",
        "3",
        "-L",
        "10",
        "--duration",
        "30",
    ]);
    assert_eq!(report["published"], 10, "{report:#}");
    assert_eq!(report["delivered"], 30, "{report:#}");
    assert_eq!(report["delivery_ratio"], 1.0, "{report:#}");
}

#[test]
fn fan_in_through_a_shared_group_delivers_each_message_once() {
    let broker = Mosquitto::start();
    let port = broker.port.to_string();
    let report = bench(&[
        "fan-in",
        "-p",
        &port,
        "-c",
        "4",
        "--shared",
        "2",
        "-L",
        "40",
        "--duration",
        "30",
    ]);
    assert_eq!(report["subscribers"], 2, "{report:#}");
    assert_eq!(report["published"], 40, "{report:#}");
    assert_eq!(report["delivered"], 40, "{report:#}");
}

#[test]
fn compare_writes_the_broker_section_and_keeps_the_codec_section() {
    assert!(
        Path::new(MOSQUITTO).exists(),
        "{MOSQUITTO} not found: this test needs mosquitto"
    );
    let dir = TempDir::new("cmp");
    let doc = dir.0.join("benchmarks.md");
    let codec =
        "## Codec micro-benchmarks (criterion)\n\n| bench | time |\n|---|---|\n| decode | 1 ns |\n";
    std::fs::write(&doc, format!("# ringmq benchmarks\n\n{codec}")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args([
            "compare",
            "--broker",
            &format!("mosquitto={MOSQUITTO} -c {{config}}"),
        ])
        .args(["--scenarios", "quick", "--quiet", "--out"])
        .arg(&doc)
        .arg("--work-dir")
        .arg(dir.0.join("work"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compare failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&doc).unwrap();
    assert!(
        text.ends_with(codec),
        "codec section must be kept at the end:\n{text}"
    );
    assert!(text.contains("## Broker comparison"), "{text}");
    assert!(text.contains("| p2p-qos0 | delivered msg/s |"), "{text}");
    assert!(!text.contains("failed:"), "{text}");
    let svg = std::fs::read_to_string(dir.0.join("benchmarks.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
}
