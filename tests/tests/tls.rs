//! `mqtts` listeners through the real binary, driven by mosquitto_pub/mosquitto_sub with
//! certificates made in the test (rcgen): server authentication, optional and required client
//! certificates, v5 and 3.1.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use ringmq_tests::pki::{Pki, TlsBroker};
use ringmq_tests::{broker_binary, free_port, temp_dir};

fn tls_args(pki: &Pki, port: u16, with_client_cert: bool) -> Vec<String> {
    let mut args = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "--cafile".into(),
        pki.path("ca.pem"),
    ];
    if with_client_cert {
        args.extend([
            "--cert".into(),
            pki.path("client.pem"),
            "--key".into(),
            pki.path("client.key"),
        ]);
    }
    args
}

fn run(program: &str, args: &[String]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (install mosquitto-clients)"))
}

/// mosquitto_sub over TLS, waiting until it is subscribed; returns the child.
fn spawn_sub(args: Vec<String>) -> Child {
    Command::new("mosquitto_sub")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (install mosquitto-clients)")
}

fn wait_output(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Server-authenticated TLS, no client certificate: v5 and 3.1.1 publishers reach a v5
/// subscriber, QoS 0, 1 and 2.
#[test]
fn mosquitto_over_tls_v5_and_v311() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, "none", "");
    let mut sub_args = tls_args(&pki, b.tls_port, false);
    sub_args.extend(
        [
            "-t", "tls/#", "-C", "3", "-W", "10", "-V", "5", "-v", "-q", "2",
        ]
        .map(String::from),
    );
    let sub = spawn_sub(sub_args);
    std::thread::sleep(Duration::from_millis(700));
    for (q, v) in [("0", "5"), ("1", "311"), ("2", "5")] {
        let mut a = tls_args(&pki, b.tls_port, false);
        a.extend([
            "-t".into(),
            format!("tls/q{q}"),
            "-m".into(),
            format!("hello-{q}"),
            "-q".into(),
            q.into(),
            "-V".into(),
            v.into(),
        ]);
        let o = run("mosquitto_pub", &a);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = wait_output(sub);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "tls/q0 hello-0\ntls/q1 hello-1\ntls/q2 hello-2\n",
        "{}",
        text(&o)
    );
}

/// `client_certificate = "required"`: a client without a certificate fails the handshake; one
/// with a certificate connects and its messages flow.
#[test]
fn required_client_certificate() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, "required", "");
    let mut a = tls_args(&pki, b.tls_port, false);
    a.extend(["-t", "x", "-m", "no-cert", "-V", "5"].map(String::from));
    let o = run("mosquitto_pub", &a);
    assert!(
        !o.status.success(),
        "a client without a certificate must be refused:\n{}",
        text(&o)
    );

    let mut sub_args = tls_args(&pki, b.tls_port, true);
    sub_args.extend(["-t", "req/#", "-C", "1", "-W", "10", "-V", "311"].map(String::from));
    let sub = spawn_sub(sub_args);
    std::thread::sleep(Duration::from_millis(700));
    let mut a = tls_args(&pki, b.tls_port, true);
    a.extend(["-t", "req/a", "-m", "with-cert", "-q", "1", "-V", "5"].map(String::from));
    let o = run("mosquitto_pub", &a);
    assert!(o.status.success(), "{}", text(&o));
    let o = wait_output(sub);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "with-cert\n",
        "{}",
        text(&o)
    );
}

/// `client_certificate = "optional"`: clients with and without certificates are served.
#[test]
fn optional_client_certificate() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, "optional", "");
    for with_cert in [false, true] {
        let mut a = tls_args(&pki, b.tls_port, with_cert);
        a.extend(["-t", "opt", "-m", "x", "-q", "1", "-V", "5"].map(String::from));
        let o = run("mosquitto_pub", &a);
        assert!(o.status.success(), "with_cert={with_cert}: {}", text(&o));
    }
}

/// A large message crosses TLS records intact (records are at most 16 KiB).
#[test]
fn large_payload_over_tls() {
    let pki = Pki::new();
    let b = TlsBroker::start(&pki, "none", "");
    let payload: String = (0..100_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let file = pki.dir.join("big.txt");
    fs::write(&file, &payload).unwrap();
    let mut sub_args = tls_args(&pki, b.tls_port, false);
    sub_args.extend(["-t", "big", "-C", "1", "-W", "10", "-V", "5"].map(String::from));
    let sub = spawn_sub(sub_args);
    std::thread::sleep(Duration::from_millis(700));
    let mut a = tls_args(&pki, b.tls_port, false);
    a.extend([
        "-t".into(),
        "big".into(),
        "-f".into(),
        file.display().to_string(),
        "-q".into(),
        "1".into(),
        "-V".into(),
        "5".into(),
    ]);
    let o = run("mosquitto_pub", &a);
    assert!(o.status.success(), "{}", text(&o));
    let o = wait_output(sub);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim_end(),
        payload,
        "payload differs"
    );
}

/// A missing certificate file stops startup with a message naming it.
#[test]
fn missing_certificate_file_is_a_startup_error() {
    let dir = temp_dir("tls-bad");
    let port = free_port();
    let config = format!(
        "[[listener]]\nbind = \"127.0.0.1:{port}\"\nprotocol = \"mqtts\"\ncert = \"nope.pem\"\nkey = \"nope.key\"\n"
    );
    let path = dir.join("ringmq.toml");
    fs::write(&path, config).unwrap();
    let o = Command::new(broker_binary())
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nope.pem"), "{err}");
}
