//! Command line and configuration file: a bad configuration stops startup with a message naming
//! the file, the key and the problem; configured limits reach clients.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ringmq_codec::*;
use ringmq_tests::*;

const EXIT_WAIT: Duration = Duration::from_secs(10);

fn assert_refused(config: &str, key: &str) {
    let (path, out) = run_broker_with_bad_config(config, EXIT_WAIT);
    let status = out
        .status
        .unwrap_or_else(|| panic!("the broker started with an invalid config:\n{out}"));
    assert!(!status.success(), "exit status must be non-zero:\n{out}");
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        out.stderr.contains(&file),
        "stderr names the file {file}:\n{out}"
    );
    assert!(
        out.stderr.contains(key),
        "stderr names the key {key}:\n{out}"
    );
}

/// An out-of-range value (receive_maximum = 0, [MQTT-3.2.2.3.3]) is refused at startup.
#[test]
fn invalid_limit_value_refused_naming_file_and_key() {
    assert_refused("[limits]\nreceive_maximum = 0\n", "receive_maximum");
}

/// An unknown key (a typo) is refused, not silently ignored.
#[test]
fn unknown_key_refused_naming_file_and_key() {
    assert_refused("[limits]\nmax_pakcet_size = 1024\n", "max_pakcet_size");
}

/// A value of the wrong type is refused.
#[test]
fn wrong_value_type_refused() {
    assert_refused("[limits]\nmax_packet_size = \"big\"\n", "max_packet_size");
}

/// A file that is not TOML is refused.
#[test]
fn unparsable_file_refused() {
    let (_, out) = run_broker_with_bad_config("[limits\nthis is not toml", EXIT_WAIT);
    let status = out
        .status
        .unwrap_or_else(|| panic!("the broker started with an unparsable config:\n{out}"));
    assert!(!status.success(), "{out}");
    assert!(out.stderr.contains("bad-ringmq.toml"), "{out}");
}

/// An empty config file is the embedded default: the broker starts and serves.
#[test]
fn empty_config_file_starts() {
    let b = Broker::start(BrokerOpts::new().config(""));
    b.v5("empty-config").ping();
}

/// allow_anonymous = false without authentication configured: every CONNECT is refused with
/// 0x87 (3.1.1: 0x05 Not authorized) and the connection closed [MQTT-3.2.2-5 / 3.2.2-7].
#[test]
fn anonymous_refused_when_disallowed() {
    let b = Broker::start(BrokerOpts::new().config("allow_anonymous = false\n"));
    let (mut c, ack) = Client::handshake(b.addr(), Opts::v5("anon5"));
    assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED, "{ack:?}");
    c.expect_closed(WAIT);
    let (mut c, ack) = Client::handshake(b.addr(), Opts::v3("anon3"));
    assert_eq!(
        ack.reason_code,
        ReasonCode::NOT_AUTHORIZED,
        "3.1.1 return code 0x05: {ack:?}"
    );
    c.expect_closed(WAIT);
}

/// limits.connect_timeout_secs: a connection that sends no CONNECT is closed.
#[test]
fn connection_without_connect_closed_after_timeout() {
    let b = Broker::start(BrokerOpts::new().limits("connect_timeout_secs = 1"));
    let mut c = Client::open(b.addr(), ProtocolVersion::V5);
    c.expect_closed(Duration::from_secs(8));
}

/// limits.max_client_id_len: a longer client id is refused with CONNACK 0x85 (3.1.1: 0x02)
/// [MQTT-3.1.3-5: the server may refuse ids longer than 23 bytes].
#[test]
fn client_id_longer_than_limit_refused() {
    let b = Broker::start(BrokerOpts::new().limits("max_client_id_len = 32"));
    let long = "x".repeat(33);
    let (mut c, ack) = Client::handshake(b.addr(), Opts::v5(&long));
    assert_eq!(
        ack.reason_code,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        "{ack:?}"
    );
    c.expect_closed(WAIT);
    let (mut c, ack) = Client::handshake(b.addr(), Opts::v3(&long));
    assert_eq!(
        ack.reason_code,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        "{ack:?}"
    );
    c.expect_closed(WAIT);
    b.v5(&"y".repeat(32)).ping();
}

/// limits.max_keep_alive_secs: a client keep alive of 0 (none) is replaced by the maximum and
/// sent as Server Keep Alive [MQTT-3.2.2-21].
#[test]
fn zero_keep_alive_replaced_by_server_maximum() {
    let b = Broker::start(BrokerOpts::new().limits("max_keep_alive_secs = 40"));
    let c = b.connect(Opts::v5("ka0").keep_alive(0));
    assert_eq!(
        c.connack.properties.server_keep_alive_secs,
        Some(40),
        "{:?}",
        c.connack
    );
}

/// limits.max_topic_levels: a PUBLISH topic with more levels gets PUBACK 0x90, a filter with more
/// levels SUBACK 0x8F; within the limit both work.
#[test]
fn topic_levels_limited() {
    let b = Broker::start(BrokerOpts::new().limits("max_topic_levels = 4"));
    let mut c = b.v5("levels");
    assert_eq!(
        c.subscribe("a/b/c/d/e", QoS::AtLeastOnce),
        ReasonCode::TOPIC_FILTER_INVALID
    );
    c.subscribe_ok("a/b/c/d", QoS::AtLeastOnce);
    assert_eq!(
        c.publish(msg("a/b/c/d/e", "deep").qos(QoS::AtLeastOnce)),
        Some(ReasonCode::TOPIC_NAME_INVALID)
    );
    assert_eq!(
        c.publish(msg("a/b/c/d", "ok").qos(QoS::AtLeastOnce)),
        Some(ReasonCode::SUCCESS)
    );
    assert_eq!(text(&c.expect_publish_acked()), "ok");
}

/// (3.2.2.3.15) A client that sets Request Response Information = 1 gets Response Information
/// in CONNACK (ringmq: `response/{client id}`); without the request, none.
#[test]
fn response_information_when_requested() {
    let b = Broker::default_start();
    let c =
        b.connect(Opts::v5("rri").with(|c| c.properties.request_response_information = Some(true)));
    assert_eq!(
        c.connack
            .properties
            .response_information
            .as_ref()
            .map(Str::as_str),
        Some("response/rri"),
        "{:?}",
        c.connack
    );
    let c = b.v5("no-rri");
    assert_eq!(c.connack.properties.response_information, None);
}

/// `--shards 1` and `--driver legacy` (epoll) both serve: the same exchange works on each.
#[test]
fn legacy_driver_and_single_shard_serve() {
    let b = Broker::start(
        BrokerOpts::new()
            .shards(1)
            .config("[server]\ndriver = \"legacy\"\n"),
    );
    let mut s = b.v5("legacy-sub");
    s.subscribe_ok("legacy/t", QoS::ExactlyOnce);
    let mut p = b.v3("legacy-pub");
    p.publish(msg("legacy/t", "epoll").qos(QoS::ExactlyOnce));
    assert_eq!(text(&s.expect_publish_acked()), "epoll");
}

/// server.log_format = "json": every log line is one JSON object with the level, timestamp,
/// target and message, and an event's own fields beside them (flattened).
#[test]
fn json_log_format_writes_one_object_per_line() {
    let b = Broker::start(BrokerOpts::new().config("[server]\nlog_format = \"json\"\n"));
    b.v5("json-log").ping();
    let log = b.log();
    let mut lines = 0;
    let mut listening = None;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(value.get(key).is_some(), "no {key} in {line}");
        }
        if value["message"] == "ringmq listening" {
            listening = Some(value);
        }
        lines += 1;
    }
    assert!(lines > 0, "no log lines:\n{log}");
    let listening = listening.expect("the startup line");
    assert_eq!(listening["level"], "INFO");
    // Flattened: the event's `shards` field is a top-level key.
    assert!(
        listening["shards"].as_u64().is_some_and(|n| n >= 1),
        "{listening}"
    );
}

/// An unknown log format is a startup error naming the value.
#[test]
fn unknown_log_format_refused() {
    assert_refused("[server]\nlog_format = \"xml\"\n", "log_format");
}

/// A second broker on an address another one listens on refuses to start, naming the address:
/// the shards bind with SO_REUSEPORT, which alone would let the two share the port silently
/// and split the clients between them.
#[test]
fn address_in_use_by_another_broker_is_a_startup_error() {
    let first = Broker::start(BrokerOpts::new());
    let addr = first.addr();
    let args = vec![
        "--listen".to_owned(),
        addr.to_string(),
        "--shards".to_owned(),
        "1".to_owned(),
    ];
    let bin = broker_binary();
    let out =
        ringmq_tests::tools::Tool::spawn(&bin.to_string_lossy(), &args, "cargo build -p ringmq")
            .wait(Duration::from_secs(20));
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out}");
    assert!(
        out.stderr.contains(&addr.to_string()) && out.stderr.contains("in use"),
        "{out}"
    );
    // The first broker is untouched.
    let mut c = first.v5("still-here");
    c.ping();
}
