//! The Mosquitto-compatible ACL file (`[auth] acl_file`) through the real binary, with no
//! registry: anonymous clients get the section at the top, `-u NAME` (no password: anonymous
//! access is on and no password source is configured, so the name is taken as given, as
//! Mosquitto does without a `password_file`) selects `user NAME`, and `pattern` lines apply to
//! everyone with `%c` and `%u` substituted. Driven by mosquitto_pub/sub and paho-mqtt, v5 and
//! 3.1.1: a denied SUBSCRIBE gets 0x87 (3.1.1: 0x80), a denied QoS 1 PUBLISH a PUBACK 0x87 (v5)
//! and is not delivered. The file is watched: a broken new file keeps the old one (the log names
//! file and line), a revoked read removes the live subscription.
//!
//! The parser and the precedence rules are unit-tested in auth/src/acl.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringmq_tests::tools::{TOOL_TIMEOUT, mosquitto_pub, mosquitto_sub, python};
use ringmq_tests::{Broker, BrokerOpts, temp_dir};

const ACL: &str = "\
# Anonymous clients: the lines before the first `user`.
topic read public/#
topic deny public/secret
topic readwrite marker/#

user alice
topic readwrite alice/#
topic read devices/#
topic readwrite marker/#

# Everyone, with their client id / user name.
pattern readwrite devices/%c/#
pattern read inbox/%u/#
";

/// A broker with `acl` as its ACL file (written to its own directory); returns the file's
/// path for rewriting.
fn start(acl: &str) -> (Broker, PathBuf) {
    let dir = temp_dir("acl");
    let path = dir.join("acl.conf");
    fs::write(&path, acl).unwrap();
    let config = format!("[auth]\nacl_file = \"{}\"\n", path.display());
    (Broker::start(BrokerOpts::new().config(&config)), path)
}

/// The codes of mosquitto_sub's `Subscribed (mid: 1): a, b` line.
fn suback_codes(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Subscribed (mid: 1): "))
        .unwrap_or_else(|| panic!("no SUBACK line in {stdout}"))
        .to_owned()
}

fn wait_for_log(b: &Broker, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// mosquitto_sub, v5 and 3.1.1: each filter gets its own code in one SUBACK, 0x87 / 0x80 where
/// the ACL does not let the client read every topic of the filter (a `deny` line inside it
/// included), for the anonymous section, a user section and `%u` patterns.
#[test]
fn subscribe_codes_follow_sections_and_patterns() {
    let (b, _) = start(ACL);
    for (version, denied) in [("5", "135"), ("311", "128")] {
        let sub = mosquitto_sub(
            &b,
            &[
                "-V",
                version,
                "-W",
                "1",
                "-t",
                "public/news/#",
                "-t",
                "public/#",
                "-t",
                "secret/x",
                "-t",
                "inbox/anyone/#",
            ],
        );
        let out = sub.wait(TOOL_TIMEOUT);
        assert_eq!(
            suback_codes(&out.stdout),
            format!("0, {denied}, {denied}, {denied}"),
            "anonymous, v{version}: {out}"
        );
        let sub = mosquitto_sub(
            &b,
            &[
                "-V",
                version,
                "-W",
                "1",
                "-u",
                "alice",
                "-t",
                "alice/#",
                "-t",
                "public/news",
                "-t",
                "inbox/alice/#",
                "-t",
                "inbox/bob/#",
                "-t",
                "$share/g/devices/+/t",
            ],
        );
        let out = sub.wait(TOOL_TIMEOUT);
        assert_eq!(
            suback_codes(&out.stdout),
            format!("0, {denied}, 0, {denied}, 0"),
            "alice, v{version}: {out}"
        );
    }
}

/// Publishing: `%c` lets client `dev1` write under `devices/dev1/` only; alice (user section)
/// reads `devices/#`. A denied QoS 1 PUBLISH gets PUBACK 0x87 from a v5 client and is not
/// delivered; the marker published after it shows the subscriber got everything it would get.
#[test]
fn publish_is_checked_with_client_id_patterns() {
    let (b, _) = start(ACL);
    let sub = mosquitto_sub(
        &b,
        &[
            "-V",
            "5",
            "-u",
            "alice",
            "-i",
            "alice-sub",
            "-t",
            "devices/#",
            "-t",
            "marker/#",
            "-C",
            "2",
            "-W",
            "10",
        ],
    );
    let ok = mosquitto_pub(
        &b,
        &[
            "-V",
            "5",
            "-i",
            "dev1",
            "-t",
            "devices/dev1/temp",
            "-m",
            "21",
            "-q",
            "1",
            "-d",
        ],
    );
    ok.assert_success();
    assert!(ok.stdout.contains("received PUBACK (Mid: 1, RC:0)"), "{ok}");
    let denied = mosquitto_pub(
        &b,
        &[
            "-V",
            "5",
            "-i",
            "dev1",
            "-t",
            "devices/dev2/temp",
            "-m",
            "x",
            "-q",
            "1",
            "-d",
        ],
    );
    assert!(
        denied.stdout.contains("received PUBACK (Mid: 1, RC:135)"),
        "{denied}"
    );
    // 3.1.1 has no negative PUBACK: acknowledged, dropped.
    mosquitto_pub(
        &b,
        &[
            "-V",
            "311",
            "-i",
            "dev1",
            "-t",
            "devices/dev3/temp",
            "-m",
            "x",
            "-q",
            "1",
        ],
    )
    .assert_success();
    mosquitto_pub(
        &b,
        &[
            "-V",
            "5",
            "-i",
            "dev1",
            "-t",
            "marker/end",
            "-m",
            "end",
            "-q",
            "1",
        ],
    )
    .assert_success();
    let out = sub.wait(TOOL_TIMEOUT);
    out.assert_success();
    let topics: Vec<String> = out.messages().into_iter().map(|m| m.topic).collect();
    assert_eq!(topics, ["devices/dev1/temp", "marker/end"], "{out}");
}

/// paho-mqtt, v5 and 3.1.1, as a user with no section but a `%u` pattern, and as alice.
#[test]
fn paho_clients_get_the_same_answers() {
    let (b, _) = start(ACL);
    let port = b.port().to_string();
    for (version, denied_sub, denied_pub) in [("5", "135", "135"), ("311", "128", "0")] {
        let o = python(
            "paho_acl.py",
            &[
                "--port",
                &port,
                "--version",
                version,
                "--id",
                "p1",
                "--user",
                "carol",
                "--sub",
                "inbox/carol/#",
                "--sub",
                "inbox/alice/#",
                "--sub",
                "devices/p1/#",
                "--pub",
                "devices/p1/x",
                "--pub",
                "alice/x",
            ],
        )
        .wait(TOOL_TIMEOUT);
        o.assert_success();
        for line in [
            "SUBACK inbox/carol/# 1".to_owned(),
            format!("SUBACK inbox/alice/# {denied_sub}"),
            "SUBACK devices/p1/# 1".to_owned(),
            "PUBACK devices/p1/x 0".to_owned(),
            format!("PUBACK alice/x {denied_pub}"),
        ] {
            assert!(
                o.stdout.lines().any(|l| l == line),
                "v{version}: {line:?} in {o}"
            );
        }
        let o = python(
            "paho_acl.py",
            &[
                "--port",
                &port,
                "--version",
                version,
                "--id",
                "p2",
                "--user",
                "alice",
                "--pub",
                "alice/x",
                "--sub",
                "public/news",
            ],
        )
        .wait(TOOL_TIMEOUT);
        o.assert_success();
        assert!(o.stdout.contains("PUBACK alice/x 0"), "{o}");
        assert!(
            o.stdout
                .contains(&format!("SUBACK public/news {denied_sub}")),
            "{o}"
        );
    }
}

/// The ACL file is watched: a broken file is refused with its line named and the old rules
/// stay; a file that no longer lets the subscriber read removes its live subscription (logged),
/// so a later message is not delivered while the marker, still readable, is.
#[test]
fn reload_keeps_a_broken_file_out_and_revokes_subscriptions() {
    let acl = "topic readwrite news/#\ntopic readwrite marker/#\n";
    let (b, path) = start(acl);
    let sub = mosquitto_sub(
        &b,
        &[
            "-V", "5", "-i", "reader", "-t", "news/#", "-t", "marker/#", "-C", "2", "-W", "15",
        ],
    );
    fs::write(&path, format!("{acl}topic maybe news/#\n")).unwrap();
    wait_for_log(&b, "acl.conf:3: invalid access type \"maybe\"");
    mosquitto_pub(&b, &["-V", "5", "-t", "news/1", "-m", "1", "-q", "1"]).assert_success();

    fs::write(&path, "topic write news/#\ntopic readwrite marker/#\n").unwrap();
    wait_for_log(&b, "subscription removed: no longer authorized");
    mosquitto_pub(&b, &["-V", "5", "-t", "news/2", "-m", "2", "-q", "1"]).assert_success();
    mosquitto_pub(&b, &["-V", "5", "-t", "marker/end", "-m", "end", "-q", "1"]).assert_success();
    let out = sub.wait(TOOL_TIMEOUT);
    out.assert_success();
    let topics: Vec<String> = out.messages().into_iter().map(|m| m.topic).collect();
    assert_eq!(topics, ["news/1", "marker/end"], "{out}");
}

/// A broken ACL file stops startup with the file and line named.
#[test]
fn broken_file_stops_startup() {
    let dir = temp_dir("acl-bad");
    let path = dir.join("acl.conf");
    fs::write(&path, "user alice\ntopic read a/#/b\n").unwrap();
    let (_, out) = ringmq_tests::run_broker_with_bad_config(
        &format!("[auth]\nacl_file = \"{}\"\n", path.display()),
        Duration::from_secs(10),
    );
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("acl.conf:2: invalid topic filter"), "{text}");
}
