//! The broker's log through the real binary: plain text (no ANSI escape codes) when standard
//! error is a file, and the filter's precedence: `--log-level` over `RUST_LOG` over
//! `server.log_level` (docs/configuration.md, "Logs").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::time::Duration;

use ringmq_tests::process::{RawBroker, broker_command};
use ringmq_tests::*;

const START: Duration = Duration::from_secs(10);

/// Starts a broker with `args` and `rust_log`, waits until it accepts, connects a client (so
/// connection events are logged) and returns its log.
fn log_of(args: &[&str], rust_log: Option<&str>) -> (RawBroker, String) {
    let (mut cmd, port) = broker_command();
    cmd.args(args);
    if let Some(v) = rust_log {
        cmd.env("RUST_LOG", v);
    }
    let mut b = RawBroker::spawn(cmd, port);
    b.wait_accepting(START);
    Client::connect(b.addr(), Opts::v5("log-probe")).ping();
    let log = b.log();
    (b, log)
}

/// Standard error is a file here: not one escape byte, at any level and in either format.
#[test]
fn no_escape_codes_when_stderr_is_a_file() {
    let (mut b, _) = log_of(&["--log-level", "debug"], None);
    b.wait_for_log("ringmq listening", START);
    let bytes = b.log_bytes();
    assert!(bytes.len() > 100, "{}", b.log());
    assert!(
        !bytes.contains(&0x1b),
        "ESC in a log written to a file:\n{}",
        b.log()
    );
    // The level is still there, as a plain word.
    assert!(b.log().contains(" INFO "), "{}", b.log());
}

/// `RUST_LOG=debug` with no `--log-level`: debug lines appear (the default level is info).
#[test]
fn rust_log_is_honoured_when_set() {
    let (_b, log) = log_of(&[], Some("debug"));
    assert!(log.contains(" DEBUG "), "no debug line:\n{log}");
    let (_b, log) = log_of(&[], None);
    assert!(
        !log.contains(" DEBUG "),
        "debug line at the default level:\n{log}"
    );
    assert!(log.contains("ringmq listening"), "{log}");
}

/// `--log-level` wins over `RUST_LOG`, which wins over the configuration file.
#[test]
fn command_line_over_rust_log_over_config_file() {
    // --log-level warn, RUST_LOG=debug: neither debug nor info lines.
    let (_b, log) = log_of(&["--log-level", "warn"], Some("debug"));
    assert!(!log.contains(" DEBUG ") && !log.contains(" INFO "), "{log}");
    // server.log_level = "debug" in the file, RUST_LOG=warn: the environment wins.
    let dir = temp_dir("log-precedence");
    let config = dir.join("ringmq.toml");
    fs::write(&config, "[server]\nlog_level = \"debug\"\n").unwrap();
    let config = config.to_string_lossy().into_owned();
    let (_b, log) = log_of(&["--config", &config], Some("warn"));
    assert!(!log.contains(" DEBUG ") && !log.contains(" INFO "), "{log}");
    // The file alone: its level applies.
    let (_b, log) = log_of(&["--config", &config], None);
    assert!(log.contains(" DEBUG "), "{log}");
}

/// A bad `RUST_LOG` stops startup naming the variable (exit 2, a configuration error).
#[test]
fn bad_rust_log_is_a_configuration_error_naming_it() {
    let (mut cmd, port) = broker_command();
    cmd.env("RUST_LOG", "ringmq=notalevel");
    let mut b = RawBroker::spawn(cmd, port);
    let status = b.wait_exit(START).expect("the broker must refuse to start");
    assert_eq!(status.code(), Some(2), "{}", b.log());
    assert!(b.log().contains("RUST_LOG"), "{}", b.log());
}
