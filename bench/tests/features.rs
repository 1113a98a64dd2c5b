//! End-to-end: the real `ringmq-bench` binary against the real `ringmq` binary (and Mosquitto)
//! for issue 16's bench features: `%i` in usernames, passwords and client ids, source
//! addresses (`--ifaddr`), several targets, the WebSocket transport (`ws://`, `wss://`), and
//! compare over TLS.
//!
//! Honours `RINGMQ_TEST_SHARDS` and `RINGMQ_TEST_DRIVER` like the tests in tests/.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ringmq_tests::pki::{Pki, TlsBroker};
use ringmq_tests::{broker_binary, free_port, temp_dir};

/// What one `ringmq-bench` run printed, and its JSON report when it wrote one.
struct Run {
    out: Output,
    report: Option<serde_json::Value>,
}

impl Run {
    fn text(&self) -> String {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            self.out.status,
            String::from_utf8_lossy(&self.out.stdout),
            String::from_utf8_lossy(&self.out.stderr)
        )
    }

    /// The report of a run that must have succeeded.
    fn report(&self) -> &serde_json::Value {
        assert!(self.out.status.success(), "{}", self.text());
        self.report
            .as_ref()
            .expect("a successful run writes its report")
    }
}

/// `ringmq-bench SCENARIO ARGS… --threads 2 --quiet --json FILE`; bounded by the run's own
/// --duration and connect timeouts.
fn bench(dir: &Path, scenario: &str, args: &[&str]) -> Run {
    let json = dir.join(format!("report-{}.json", free_port()));
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .arg(scenario)
        .args(args)
        .args(["--threads", "2", "--quiet", "--json"])
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report = fs::read_to_string(&json)
        .ok()
        .map(|text| serde_json::from_str(&text).unwrap());
    Run { out, report }
}

/// A process killed on drop, with its output in a log file.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(mut cmd: Command, log: PathBuf, port: u16) -> Process {
        let out = fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let process = Process { child, log };
        wait_accepting(port, &process);
        process
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} :\n{}", self.log.display(), self.log());
        }
    }
}

fn wait_accepting(port: u16, process: &Process) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing accepts on {port}:\n{}",
            process.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// ringmq on a plain listener, logging at debug level (every connection's peer address).
fn ringmq_debug(dir: &Path, tag: &str) -> (Process, u16) {
    let port = free_port();
    let mut cmd = Command::new(broker_binary());
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--log-level", "debug", "--shards"])
        .arg(std::env::var("RINGMQ_TEST_SHARDS").unwrap_or_else(|_| "2".to_owned()));
    if let Ok(driver) = std::env::var("RINGMQ_TEST_DRIVER") {
        cmd.arg("--driver").arg(driver);
    }
    (
        Process::start(cmd, dir.join(format!("ringmq-{tag}.log")), port),
        port,
    )
}

/// Lines of `log` (ANSI colours or not) naming `needle`.
fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// `--ifaddr 127.0.0.2,127.0.0.3`: the broker sees the connections come from both addresses,
/// in equal shares, and from nowhere else; the report lists them; messages flow.
#[test]
fn source_addresses_reach_the_broker() {
    let dir = temp_dir("bench-ifaddr");
    let (broker, port) = ringmq_debug(&dir, "ifaddr");
    let run = bench(
        &dir,
        "p2p",
        &[
            "-p",
            &port.to_string(),
            "--ifaddr",
            "127.0.0.2,127.0.0.3",
            "-c",
            "4",
            "-q",
            "1",
            "-L",
            "400",
            "--duration",
            "30",
            "--client-id",
            "ifaddr-%i",
        ],
    );
    let r = run.report();
    assert_eq!(r["connections"]["ok"], 8, "{r:#}");
    assert_eq!(r["delivered"], 400, "{r:#}");
    assert_eq!(
        r["source_addresses"],
        serde_json::json!(["127.0.0.2", "127.0.0.3"]),
        "{r:#}"
    );
    drop(run);
    // Connection n binds source n mod 2: ifaddr-0, -2, -4, -6 from 127.0.0.2, the odd ones
    // from 127.0.0.3 (the broker logs each lost connection with its client id and peer).
    let deadline = Instant::now() + Duration::from_secs(10);
    let lost = |log: &str| {
        log.lines()
            .filter(|l| l.contains("connection lost") && l.contains("ifaddr-"))
            .count()
    };
    while lost(&broker.log()) < 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = broker.log();
    for n in 0..8 {
        let source = if n % 2 == 0 {
            "127.0.0.2:"
        } else {
            "127.0.0.3:"
        };
        let line = log
            .lines()
            .find(|l| l.contains("connection lost") && l.contains(&format!("ifaddr-{n}")))
            .unwrap_or_else(|| panic!("no line for ifaddr-{n}:\n{log}"));
        assert!(
            line.contains(source),
            "ifaddr-{n} should come from {source}: {line}"
        );
    }
    // (The only 127.0.0.1 peer is the test's own readiness check, before the run.)
    assert!(
        !log.lines()
            .any(|l| l.contains("ifaddr-") && l.contains("127.0.0.1:")),
        "{log}"
    );
}

/// Several targets: clients spread over two brokers round-robin (client i to target i mod 2).
#[test]
fn clients_spread_over_several_targets() {
    let dir = temp_dir("bench-targets");
    let (a, port_a) = ringmq_debug(&dir, "a");
    let (b, port_b) = ringmq_debug(&dir, "b");
    let run = bench(
        &dir,
        "conn",
        &[
            "--target",
            &format!("mqtt://127.0.0.1:{port_a}"),
            "--target",
            &format!("127.0.0.1:{port_b}"),
            "-c",
            "6",
            "--duration",
            "0.3",
            "--client-id",
            "spread-%i",
        ],
    );
    let r = run.report();
    assert_eq!(r["connections"]["ok"], 6, "{r:#}");
    assert_eq!(
        r["broker"],
        format!("mqtt://127.0.0.1:{port_a},mqtt://127.0.0.1:{port_b}"),
        "{r:#}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = |p: &Process| lines_with(&p.log(), "spread-");
    while (seen(&a) < 3 || seen(&b) < 3) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (log_a, log_b) = (a.log(), b.log());
    for i in 0..6 {
        let id = format!("spread-{i}");
        let (mine, other) = if i % 2 == 0 {
            (&log_a, &log_b)
        } else {
            (&log_b, &log_a)
        };
        assert!(lines_with(mine, &id) > 0, "{id} missing:\n{mine}");
        assert_eq!(
            lines_with(other, &id),
            0,
            "{id} at the wrong broker:\n{other}"
        );
    }
}

/// A Mosquitto with a password file (made by the real mosquitto_passwd) of per-device users
/// `device-0` … `device-3` with passwords `secret-0` … `secret-3`, anonymous access off.
fn mosquitto_with_passwords(dir: &Path) -> (Process, u16) {
    let passwd = device_passwords(dir);
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\nlog_dest stderr\n",
            passwd.display()
        ),
    )
    .unwrap();
    let program = std::env::var("MOSQUITTO").unwrap_or_else(|_| "/usr/sbin/mosquitto".into());
    let mut cmd = Command::new(program);
    cmd.arg("-c").arg(&conf);
    (Process::start(cmd, dir.join("mosquitto.log"), port), port)
}

/// The password file of users `device-0` … `device-3` (password `secret-<i>`), written by
/// the real `mosquitto_passwd`.
fn device_passwords(dir: &Path) -> std::path::PathBuf {
    let passwd = dir.join("passwd");
    for i in 0..4 {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd
            .arg("-b")
            .arg(&passwd)
            .arg(format!("device-{i}"))
            .arg(format!("secret-{i}"))
            .output()
            .expect("mosquitto_passwd (Debian package mosquitto)");
        assert!(out.status.success(), "{out:?}");
    }
    passwd
}

/// ringmq with `[auth] password_file` = [`device_passwords`].
fn ringmq_with_passwords(dir: &Path) -> (Process, u16) {
    let passwd = device_passwords(dir);
    let port = free_port();
    let conf = dir.join("ringmq.toml");
    fs::write(
        &conf,
        format!(
            "[[listener]]\nbind = \"127.0.0.1:{port}\"\n[auth]\npassword_file = {:?}\n",
            passwd.display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(broker_binary());
    cmd.arg("--config").arg(&conf).arg("--shards").arg("2");
    if let Ok(driver) = std::env::var("RINGMQ_TEST_DRIVER") {
        cmd.arg("--driver").arg(driver);
    }
    (Process::start(cmd, dir.join("ringmq.log"), port), port)
}

/// `-u device-%i -P secret-%i`: every connection logs in as its own user; with a fixed
/// password only device-0's is right and the three others are refused.
fn per_device_logins(dir: &Path, port: u16) {
    let port = port.to_string();
    let common = [
        "-p",
        &port,
        "-c",
        "4",
        "--duration",
        "0.3",
        "-u",
        "device-%i",
    ];
    let mut args = common.to_vec();
    args.extend(["-P", "secret-%i"]);
    let r = bench(dir, "conn", &args).report().clone();
    assert_eq!(r["connections"]["ok"], 4, "{r:#}");
    assert_eq!(r["connections"]["failed"], 0, "{r:#}");

    let mut args = common.to_vec();
    args.extend(["-P", "secret-0"]);
    let run = bench(dir, "conn", &args);
    let r = run.report();
    assert_eq!(r["connections"]["ok"], 1, "{r:#}");
    assert_eq!(r["connections"]["failed"], 3, "{r:#}");
    assert!(run.text().contains("broker refused"), "{}", run.text());

    // p2p with per-device users: subscribers are devices 0-1, publishers 2-3.
    let r = bench(
        dir,
        "p2p",
        &[
            "-p",
            &port,
            "-c",
            "2",
            "-q",
            "1",
            "-L",
            "200",
            "--duration",
            "30",
            "-u",
            "device-%i",
            "-P",
            "secret-%i",
        ],
    )
    .report()
    .clone();
    assert_eq!(r["delivered"], 200, "{r:#}");
}

#[test]
fn per_device_usernames_and_passwords_against_mosquitto() {
    let dir = temp_dir("bench-passwords");
    let (_mosquitto, port) = mosquitto_with_passwords(&dir);
    per_device_logins(&dir, port);
}

/// The same against ringmq's Mosquitto-compatible password file.
#[test]
fn per_device_usernames_and_passwords_against_ringmq() {
    let dir = temp_dir("bench-passwords-ringmq");
    let (_ringmq, port) = ringmq_with_passwords(&dir);
    per_device_logins(&dir, port);
}

/// A registry whose clients `device-0` … `device-3` authenticate with a certificate whose CN
/// is their authentication name (the CONNECT username when there is one).
fn device_registry(pki: &Pki) -> String {
    let ca = fs::read_to_string(pki.dir.join("ca.pem")).unwrap();
    let clients: Vec<_> = (0..4)
        .map(|i| {
            serde_json::json!({ "name": format!("device-{i}"), "authenticationName": format!("device-{i}"),
                "clientCertificateAuthentication": { "validationScheme": "SubjectMatchesAuthenticationName" } })
        })
        .collect();
    serde_json::json!({
        "namespace": { "clientAuthentication": {
            "alternativeAuthenticationNameSources": ["ClientCertificateSubject"] } },
        "caCertificates": [ { "name": "bench-ca", "encodedCertificate": ca.replace('\n', "") } ],
        "clients": clients,
    })
    .to_string()
}

/// Against ringmq's registry: `-u device-%i` with `--certfile dev-%i.pem` names each device by
/// its own certificate; a fixed username matches only device 0's certificate.
#[test]
fn per_device_usernames_against_a_registry() {
    let pki = Pki::new();
    for i in 0..4 {
        pki.leaf(&format!("dev-{i}"), &format!("device-{i}"), &pki.ca);
    }
    fs::write(pki.dir.join("registry.json"), device_registry(&pki)).unwrap();
    let broker = TlsBroker::start(&pki, "required", "[auth]\nregistry = \"registry.json\"\n");
    let port = broker.tls_port.to_string();
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("dev-%i.pem"),
        pki.path("dev-%i.key"),
    );
    let common = [
        "-p",
        &port,
        "-S",
        "--cacertfile",
        &ca,
        "--certfile",
        &cert,
        "--keyfile",
        &key,
        "-c",
        "4",
        "--duration",
        "0.3",
        "--client-id",
        "device-%i",
    ];
    let mut args = common.to_vec();
    args.extend(["-u", "device-%i"]);
    let r = bench(&pki.dir, "conn", &args).report().clone();
    assert_eq!(r["connections"]["ok"], 4, "{r:#}");

    let mut args = common.to_vec();
    args.extend(["-u", "device-0"]);
    let r = bench(&pki.dir, "conn", &args).report().clone();
    assert_eq!(r["connections"]["ok"], 1, "{r:#}");
    assert_eq!(r["connections"]["failed"], 3, "{r:#}");
    assert_eq!(r["connections"]["tls_failed"], 0, "{r:#}");
}

/// ws:// and wss://: p2p QoS 0 and 1 deliver every message, messages larger than 64 KiB (the
/// broker's frames then carry a 64-bit length) arrive intact, and idle connections hold.
#[test]
fn websocket_and_secure_websocket_deliver() {
    let pki = Pki::new();
    let ws_port = free_port();
    let extra = format!("[[listener]]\nbind = \"127.0.0.1:{ws_port}\"\nprotocol = \"ws\"\n");
    let broker = TlsBroker::start_listeners(&pki, &extra, &[("wss", "none")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", ws_port)).is_err() {
        assert!(Instant::now() < deadline, "{}", broker.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let ca = pki.path("ca.pem");
    let ws = format!("ws://127.0.0.1:{ws_port}/mqtt");
    let wss = format!("wss://localhost:{}", broker.tls_port);
    for (url, tls) in [(&ws, false), (&wss, true)] {
        let mut tls_args = vec![];
        if tls {
            tls_args.extend(["--cacertfile", ca.as_str()]);
        }
        for (qos, version, size, limit) in [("0", "5", "64", "400"), ("1", "4", "70000", "40")] {
            let mut args = vec![
                "--target",
                url,
                "-c",
                "2",
                "-q",
                qos,
                "-V",
                version,
                "-s",
                size,
                "-L",
                limit,
                "--duration",
                "30",
            ];
            args.extend(&tls_args);
            let r = bench(&pki.dir, "p2p", &args).report().clone();
            assert_eq!(r["delivered"].to_string(), limit, "{url} QoS {qos}: {r:#}");
            assert_eq!(r["decode_errors"], 0, "{url}: {r:#}");
            assert_eq!(r["disconnected"], 0, "{url}: {r:#}");
            assert_eq!(r["tls"], tls, "{url}: {r:#}");
            assert!(
                r["broker"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(&url[..3]),
                "{r:#}"
            );
        }
        let mut args = vec!["--target", url, "-c", "20", "--duration", "0.3"];
        args.extend(&tls_args);
        let r = bench(&pki.dir, "conn", &args).report().clone();
        assert_eq!(r["connections"]["ok"], 20, "{url}: {r:#}");
    }
    // A wrong path is refused in the handshake (404), and said so.
    let run = bench(
        &pki.dir,
        "conn",
        &[
            "--target",
            &format!("ws://127.0.0.1:{ws_port}/nope"),
            "-c",
            "1",
        ],
    );
    assert!(!run.out.status.success(), "{}", run.text());
    assert!(run.text().contains("404"), "{}", run.text());
}

/// compare over TLS: ringmq's mqtts listener and Mosquitto's TLS listener, side by side in the
/// report (quick size).
#[test]
fn compare_over_tls_writes_a_report() {
    let dir = temp_dir("bench-compare-tls");
    let out_md = dir.join("benchmarks.md");
    let json = dir.join("compare.json");
    let mosquitto = std::env::var("MOSQUITTO").unwrap_or_else(|_| "/usr/sbin/mosquitto".into());
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .arg("compare")
        .arg("--broker")
        .arg(format!(
            "ringmq={} --config {{config}} --shards 2 --log-level warn",
            broker_binary().display()
        ))
        .arg("--broker")
        .arg(format!("mosquitto={mosquitto} -c {{config}}"))
        .args(["--scenarios", "quick:p2p-tls", "--threads", "1", "--quiet"])
        .arg("--out")
        .arg(&out_md)
        .arg("--json")
        .arg(&json)
        .arg("--work-dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let cmp: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let outcomes = cmp["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 2, "{cmp:#}");
    for o in outcomes {
        assert!(o["problem"].is_null(), "{o:#}");
        let r = &o["report"];
        assert_eq!(r["tls"], true, "{o:#}");
        assert!(r["delivered"].as_u64().unwrap_or(0) > 0, "{o:#}");
        assert_eq!(r["connections"]["failed"], 0, "{o:#}");
    }
    let md = fs::read_to_string(&out_md).unwrap();
    assert!(md.contains("### p2p-tls"), "{md}");
    assert!(
        md.contains("| p2p-tls | delivered msg/s over TLS |"),
        "{md}"
    );
    // The brokers' generated configs carry their TLS listeners.
    let conf: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
        .collect();
    assert!(conf.iter().any(|c| c.contains("protocol = \"mqtts\"")));
    assert!(conf.iter().any(|c| c.contains("certfile ")));
}

/// The flood's blocking clients bind `--ifaddr` too: subscribers (connections 0, 1) and
/// publishers (2, 3) alternate between the two addresses; the probe keeps the kernel's choice.
#[test]
fn flood_binds_source_addresses() {
    let dir = temp_dir("bench-flood-ifaddr");
    let (broker, port) = ringmq_debug(&dir, "flood");
    let json = dir.join("flood.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .args([
            "flood",
            "-p",
            &port.to_string(),
            "-c",
            "2",
            "--duration",
            "0.5",
        ])
        .args([
            "--ifaddr",
            "127.0.0.2,127.0.0.3",
            "--client-id-prefix",
            "fl",
        ])
        .args(["--quiet", "--json"])
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        r["source_addresses"],
        serde_json::json!(["127.0.0.2", "127.0.0.3"]),
        "{r:#}"
    );
    let expect = [
        ("fl-s0", "127.0.0.2:"),
        ("fl-s1", "127.0.0.3:"),
        ("fl-p0", "127.0.0.2:"),
        ("fl-p1", "127.0.0.3:"),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let lost = |log: &str, id: &str| {
        log.lines()
            .find(|l| l.contains("connection lost") && l.contains(&format!("{id} ")))
            .map(str::to_string)
    };
    while expect
        .iter()
        .any(|(id, _)| lost(&broker.log(), id).is_none())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = broker.log();
    for (id, source) in expect {
        let line = lost(&log, id).unwrap_or_else(|| panic!("no line for {id}:\n{log}"));
        assert!(
            line.contains(source),
            "{id} should come from {source}: {line}"
        );
    }
}
