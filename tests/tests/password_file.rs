//! `[auth] password_file`: files made by Debian's real `mosquitto_passwd` (2.0, `$7$` lines)
//! and by `ringmq passwd`, checked off the shard threads; mosquitto_pub, paho-mqtt and our own
//! client with right and wrong passwords, MQTT 5 and 3.1.1; reload on change, and a broken
//! file keeping the previous one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ringmq_codec::*;
use ringmq_tests::tools::*;
use ringmq_tests::*;

/// `mosquitto_passwd ARGS` (the real one, from Debian's `mosquitto` package).
fn mosquitto_passwd(args: &[&str]) {
    let out = Command::new("mosquitto_passwd")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("mosquitto_passwd is not installed ({e}): apt-get install -y mosquitto")
        });
    assert!(out.status.success(), "mosquitto_passwd {args:?}: {out:?}");
}

/// `ringmq passwd ARGS`.
fn ringmq_passwd(args: &[&str]) -> std::process::Output {
    Command::new(broker_binary())
        .arg("passwd")
        .args(args)
        .output()
        .expect("run ringmq passwd")
}

/// alice/secret by mosquitto_passwd, bob/hunter2 added by `ringmq passwd`.
fn password_file() -> PathBuf {
    let dir = temp_dir("passwd");
    let file = dir.join("passwd");
    let f = file.to_str().unwrap();
    mosquitto_passwd(&["-c", "-b", f, "alice", "secret"]);
    let out = ringmq_passwd(&["-b", f, "bob", "hunter2"]);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("alice:$7$101$"), "{text}");
    assert!(text.contains("\nbob:$7$101$"), "{text}");
    file
}

fn broker(file: &Path) -> Broker {
    Broker::start(BrokerOpts::new().config(&format!(
        "[auth]\npassword_file = {:?}\n",
        file.to_str().unwrap()
    )))
}

fn connack(b: &Broker, version: ProtocolVersion, id: &str, user: &str, pw: &str) -> ReasonCode {
    let opts = Opts::new(version, id).login(user, pw.as_bytes());
    let (_client, ack) = Client::handshake(b.addr(), opts);
    ack.reason_code
}

#[test]
fn mosquitto_passwd_and_ringmq_passwd_users_are_checked() {
    let file = password_file();
    let b = broker(&file);
    for version in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        assert_eq!(
            connack(&b, version, "a1", "alice", "secret"),
            ReasonCode::SUCCESS
        );
        assert_eq!(
            connack(&b, version, "b1", "bob", "hunter2"),
            ReasonCode::SUCCESS
        );
        // Wrong password and unknown user: 0x86 (3.1.1: 0x04, which the codec reads back
        // as the same reason).
        assert_eq!(
            connack(&b, version, "a2", "alice", "Secret"),
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
        assert_eq!(
            connack(&b, version, "c1", "carol", "secret"),
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
        // No user name: anonymous access is off once a password file is configured.
        let (_c, ack) = Client::handshake(b.addr(), Opts::new(version, "anon"));
        assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED);
    }
    // Again, from the cache this time: the same answers.
    assert_eq!(
        connack(&b, ProtocolVersion::V5, "a3", "alice", "secret"),
        ReasonCode::SUCCESS
    );
    assert_eq!(
        connack(&b, ProtocolVersion::V5, "a4", "alice", "wrong"),
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
}

#[test]
fn packets_pipelined_after_connect_wait_for_the_password_check() {
    let file = password_file();
    let b = broker(&file);
    let mut sub = Client::connect(b.addr(), Opts::v5("pipe-sub").login("alice", b"secret"));
    sub.subscribe_ok("pipe/#", QoS::AtLeastOnce);
    // CONNECT and a PUBLISH in one write: the PUBLISH is held while the password is checked
    // off the shard, then handled after CONNACK (MQTT 5.0 §3.1.4).
    let mut raw = bytes::BytesMut::new();
    let connect = Opts::v5("pipe-pub").login("bob", b"hunter2").into_packet();
    ringmq_codec::encode(&connect, ProtocolVersion::V5, &mut raw).unwrap();
    let publish = Packet::Publish(msg("pipe/x", "early"));
    ringmq_codec::encode(&publish, ProtocolVersion::V5, &mut raw).unwrap();
    let mut pubc = Client::open(b.addr(), ProtocolVersion::V5);
    pubc.send_raw(&raw).unwrap();
    match pubc.recv(WAIT) {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let got = sub.expect_publish();
    assert_eq!(&got.payload[..], b"early");
}

#[test]
fn third_party_clients_log_in() {
    let file = password_file();
    let b = broker(&file);
    for version in ["5", "311"] {
        let ok = mosquitto_pub(
            &b,
            &[
                "-V", version, "-u", "alice", "-P", "secret", "-t", "t", "-m", "m",
            ],
        );
        ok.assert_success();
        let bad = mosquitto_pub(
            &b,
            &[
                "-V", version, "-u", "alice", "-P", "nope", "-t", "t", "-m", "m",
            ],
        );
        assert!(!bad.status.is_some_and(|s| s.success()), "{bad}");
        let text = format!("{}{}", bad.stdout, bad.stderr).to_lowercase();
        assert!(
            text.contains("bad user name or password"),
            "mosquitto_pub -V {version}: {bad}"
        );
        let port = b.port().to_string();
        let paho = |user: &str, pw: &str| {
            let out = python(
                "paho_login.py",
                &[
                    "--port",
                    &port,
                    "--version",
                    version,
                    "--id",
                    "paho-login",
                    "--user",
                    user,
                    "--password",
                    pw,
                    "--publish",
                    "t/paho",
                ],
            )
            .wait(TOOL_TIMEOUT);
            out.assert_success();
            out.stdout
        };
        let good = paho("bob", "hunter2");
        assert!(
            good.contains("CONNACK rc=0 ") && good.contains("PUBLISHED"),
            "{good}"
        );
        let wrong = paho("bob", "hunter3");
        // paho reports 3.1.1's 0x04 as MQTT 5's 0x86 too.
        assert!(wrong.contains("CONNACK rc=134 "), "{wrong}");
    }
}

#[test]
fn the_file_reloads_on_change_and_a_broken_file_keeps_the_last_one() {
    let file = password_file();
    let b = broker(&file);
    let f = file.to_str().unwrap();
    assert_eq!(
        connack(&b, ProtocolVersion::V5, "d0", "dave", "pw1"),
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    let out = ringmq_passwd(&["-b", f, "dave", "pw1"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            connack(&b, ProtocolVersion::V5, "d1", "dave", "pw1") == ReasonCode::SUCCESS
        }),
        "dave was not picked up:\n{}",
        b.log()
    );
    // A password changed: the cached success of the old one is void after the reload.
    let out = ringmq_passwd(&["-b", f, "alice", "new-secret"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            connack(&b, ProtocolVersion::V5, "a5", "alice", "secret")
                == ReasonCode::BAD_USER_NAME_OR_PASSWORD
        }),
        "the old password still works:\n{}",
        b.log()
    );
    assert_eq!(
        connack(&b, ProtocolVersion::V5, "a6", "alice", "new-secret"),
        ReasonCode::SUCCESS
    );
    // A broken file: refused with a log line, the previous users stay.
    std::fs::write(&file, "alice:plaintext\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || b
            .log()
            .contains("password file reload refused")),
        "{}",
        b.log()
    );
    assert_eq!(
        connack(&b, ProtocolVersion::V5, "d2", "dave", "pw1"),
        ReasonCode::SUCCESS
    );
}

#[test]
fn a_broken_file_stops_startup_naming_the_line() {
    let dir = temp_dir("passwd-bad");
    let file = dir.join("passwd");
    std::fs::write(&file, "# users\nalice:$7$101$AAAA$AAAA\n").unwrap();
    let (_path, out) = run_broker_with_bad_config(
        &format!("[auth]\npassword_file = {:?}\n", file.to_str().unwrap()),
        Duration::from_secs(10),
    );
    assert!(!out.status.is_some_and(|s| s.success()), "{out}");
    assert!(
        out.stderr.contains("line 2") && out.stderr.contains("password_file"),
        "{out}"
    );
}

#[test]
fn ringmq_passwd_refuses_bad_input_and_deletes() {
    let dir = temp_dir("passwd-cli");
    let file = dir.join("p");
    let f = file.to_str().unwrap();
    let out = ringmq_passwd(&["-b", f, "u", "p"]);
    assert!(!out.status.success(), "a missing file needs -c: {out:?}");
    let out = ringmq_passwd(&["-c", "-b", f, "a:b", "p"]);
    assert!(!out.status.success(), "':' in a user name: {out:?}");
    assert!(ringmq_passwd(&["-c", "-b", f, "u1", "p1"]).status.success());
    assert!(ringmq_passwd(&["-b", f, "u2", "p2"]).status.success());
    assert!(ringmq_passwd(&["-D", f, "u1"]).status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("u1:") && text.contains("u2:$7$"), "{text}");
    let text_mode = std::fs::metadata(&file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        text_mode.permissions().mode() & 0o077,
        0,
        "readable by others"
    );
}

/// The other way round: Mosquitto itself reads what `ringmq passwd` writes.
#[test]
fn mosquitto_accepts_a_file_written_by_ringmq_passwd() {
    let dir = temp_dir("passwd-mosq");
    let file = dir.join("passwd");
    let f = file.to_str().unwrap();
    assert!(
        ringmq_passwd(&["-c", "-b", f, "erin", "pw-erin"])
            .status
            .success()
    );
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    // `user root`: Mosquitto started as root otherwise drops to `mosquitto`, who cannot read
    // a 0600 file of root's.
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {f}\nuser root\n"),
    )
    .unwrap();
    let mosq = Tool::spawn(
        "mosquitto",
        &["-c".to_owned(), conf.to_str().unwrap().to_owned()],
        "apt-get install -y mosquitto",
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_until(WAIT, || std::net::TcpStream::connect(addr).is_ok()),
        "mosquitto did not start: {}",
        mosq.stderr_so_far()
    );
    let publish = |pw: &str| {
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-u",
                "erin",
                "-P",
                pw,
            ])
            .args(["-t", "t", "-m", "m"])
            .output()
            .expect("mosquitto_pub")
    };
    let ok = publish("pw-erin");
    assert!(ok.status.success(), "{ok:?}");
    let bad = publish("nope");
    assert!(!bad.status.success(), "{bad:?}");
    drop(mosq);
}
