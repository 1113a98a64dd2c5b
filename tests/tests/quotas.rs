//! Quotas end to end, through the real binary: connections per IP and in all, connection rate
//! per IP, publish rate and bandwidth per connection, sessions per authentication name.
//! Clients: the harness client bound to distinct loopback addresses (127.0.0.x: every 127/8
//! address is loopback on Linux, so each test is several client IPs, and the harness's own
//! readiness probe from 127.0.0.1 never counts against them), paho-mqtt (tests/py/
//! paho_quota.py) and mosquitto_pub.
//!
//! mosquitto_pub exits with the CONNACK code when refused (v5: 151 = 0x97; 3.1.1: 3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;

use ringmq_codec::{Packet, QoS, ReasonCode};
use ringmq_tests::tools::{TOOL_TIMEOUT, ToolOutput, mosquitto_pub, python};
use ringmq_tests::{
    Broker, BrokerOpts, Client, Opts, PublishExt, WAIT, msg, temp_dir, text, wait_until,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn paho_quota(b: &Broker, bind: &str, id: &str, extra: &[&str]) -> ToolOutput {
    let port = b.port().to_string();
    let mut args = vec!["--port", &port, "--bind", bind, "--id", id];
    args.extend_from_slice(extra);
    python("paho_quota.py", &args).wait(TOOL_TIMEOUT)
}

/// The `key=value` of `prefix` line printed by paho_quota.py.
fn paho_value(o: &ToolOutput, prefix: &str, key: &str) -> u32 {
    let line = o
        .stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line: {o}"));
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Sends `n` QoS 0 PUBLISH packets without waiting; stops when the broker has closed.
fn flood(c: &mut Client, topic: &str, payload: &str, n: usize) {
    for _ in 0..n {
        if c.try_send(&Packet::Publish(msg(topic, payload.to_owned())))
            .is_err()
        {
            return;
        }
    }
}

/// A connection that must be accepted once the broker has released earlier ones (closing is
/// asynchronous): retried while refused with `reason`, within WAIT.
fn connect_when_released(b: &Broker, source: IpAddr, opts: &Opts, reason: ReasonCode) -> Client {
    let mut last = None;
    let ok = wait_until(WAIT, || {
        let (c, ack) = Client::handshake_from(b.addr(), source, opts.clone());
        if ack.reason_code == ReasonCode::SUCCESS {
            last = Some(c);
            return true;
        }
        assert_eq!(ack.reason_code, reason, "{ack:?}");
        false
    });
    assert!(ok, "still refused after {WAIT:?}:\n{}", b.log());
    last.unwrap()
}

/// `max_connections_per_ip`: counted over every shard; the next connection from that IP gets
/// CONNACK 0x97 (v5, our client and paho) or 0x03 (3.1.1, mosquitto_pub), with a log line
/// naming peer and quota. Other IPs are unaffected, and a closed connection makes room.
#[test]
fn connections_per_ip_refused_with_0x97() {
    let b = Broker::start(BrokerOpts::new().limits("max_connections_per_ip = 3"));
    let a = ip("127.0.0.2");
    // Spread over the shards by the kernel (SO_REUSEPORT): the count is still one.
    let mut held: Vec<Client> = (0..3)
        .map(|i| Client::connect_from(b.addr(), a, Opts::v5(&format!("held-{i}"))))
        .collect();
    let (mut over, ack) = Client::handshake_from(b.addr(), a, Opts::v5("over"));
    assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED, "{ack:?}");
    assert!(
        ack.properties
            .reason_string
            .is_some_and(|r| r.to_string().contains("max_connections_per_ip"))
    );
    over.expect_closed(WAIT);
    let (mut over3, ack) = Client::handshake_from(b.addr(), a, Opts::v3("over3"));
    assert_eq!(
        ack.reason_code,
        ReasonCode::SERVER_UNAVAILABLE,
        "3.1.1 return code 0x03"
    );
    over3.expect_closed(WAIT);
    // Third-party clients see the same.
    let o = paho_quota(&b, "127.0.0.2", "paho-over", &[]);
    assert_eq!(paho_value(&o, "CONNACK", "rc"), 0x97, "{o}");
    let o = mosquitto_pub(&b, &["-A", "127.0.0.2", "-V", "311", "-t", "t", "-m", "x"]);
    assert_eq!(o.status.and_then(|s| s.code()), Some(3), "{o}");
    let o = mosquitto_pub(&b, &["-A", "127.0.0.2", "-V", "5", "-t", "t", "-m", "x"]);
    assert_eq!(o.status.and_then(|s| s.code()), Some(151), "{o}");
    let log = b.log();
    assert!(
        log.lines().any(|l| l.contains("CONNECT refused")
            && l.contains("127.0.0.2")
            && l.contains("connections_per_ip")),
        "{log}"
    );

    // Another IP connects and works; the held connections still work.
    let mut other = Client::connect_from(b.addr(), ip("127.0.0.3"), Opts::v5("other"));
    other.subscribe_ok("q/#", QoS::AtLeastOnce);
    held[0].publish(msg("q/1", "still up").qos(QoS::AtLeastOnce));
    assert_eq!(text(&other.expect_publish_acked()), "still up");

    // One leaves: the IP may connect again.
    held.pop().unwrap().disconnect();
    connect_when_released(&b, a, &Opts::v5("back"), ReasonCode::QUOTA_EXCEEDED);
}

/// `max_connections` counts every connection over all shards; the next one gets 0x97.
#[test]
fn max_connections_refused_with_0x97() {
    let b = Broker::start(BrokerOpts::new().limits("max_connections = 3"));
    let src = ip("127.0.0.4");
    // The harness's readiness probe may still hold a count for a moment.
    let mut held = vec![connect_when_released(
        &b,
        src,
        &Opts::v5("m0"),
        ReasonCode::QUOTA_EXCEEDED,
    )];
    for i in 1..3 {
        held.push(connect_when_released(
            &b,
            src,
            &Opts::v5(&format!("m{i}")),
            ReasonCode::QUOTA_EXCEEDED,
        ));
    }
    // Three held: full, from any IP.
    for source in ["127.0.0.4", "127.0.0.5"] {
        let (mut c, ack) = Client::handshake_from(b.addr(), ip(source), Opts::v5("full"));
        assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED, "{ack:?}");
        c.expect_closed(WAIT);
    }
    let o = mosquitto_pub(&b, &["-A", "127.0.0.5", "-V", "311", "-t", "t", "-m", "x"]);
    assert_eq!(o.status.and_then(|s| s.code()), Some(3), "{o}");
    assert!(b.log().contains("limits.max_connections"), "{}", b.log());
    held.pop().unwrap().disconnect();
    connect_when_released(
        &b,
        ip("127.0.0.5"),
        &Opts::v5("room"),
        ReasonCode::QUOTA_EXCEEDED,
    );
}

/// `max_connection_rate_per_ip`: after the burst, connecting faster than the rate gets 0x9F
/// (Connection rate exceeded); another IP is unaffected.
#[test]
fn connection_rate_per_ip_refused() {
    let b = Broker::start(
        BrokerOpts::new()
            .limits("max_connection_rate_per_ip = 1\nconnection_rate_burst_per_ip = 3"),
    );
    let src = ip("127.0.0.6");
    // At 1/s, a refusal comes within a handful of quick attempts, and never before the burst
    // of 3 is used (tokens only accumulate).
    let mut accepted = 0;
    let mut refused = None;
    for i in 0..50 {
        let (mut c, ack) = Client::handshake_from(b.addr(), src, Opts::v5(&format!("r{i}")));
        if ack.reason_code == ReasonCode::SUCCESS {
            accepted += 1;
            c.disconnect();
        } else {
            refused = Some(ack.reason_code);
            c.expect_closed(WAIT);
            break;
        }
    }
    assert_eq!(
        refused,
        Some(ReasonCode::CONNECTION_RATE_EXCEEDED),
        "{}",
        b.log()
    );
    assert!(accepted >= 3, "the burst of 3 was allowed, got {accepted}");
    // paho, from a fresh IP: the same, whatever the time its interpreter takes to start.
    let o = paho_quota(&b, "127.0.0.16", "paho-rate", &["--attempts", "50"]);
    let codes: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| l.starts_with("CONNACK"))
        .collect();
    assert_eq!(codes.last(), Some(&"CONNACK rc=159"), "{o}");
    assert!(codes.len() > 3, "{o}");
    Client::connect_from(b.addr(), ip("127.0.0.7"), Opts::v5("other")).disconnect();
    assert!(b.log().contains("connection_rate"), "{}", b.log());
}

/// `max_publish_rate`: a client publishing faster gets DISCONNECT 0x96 (paho's on_disconnect
/// and our client), its will is published, and a 3.1.1 client is closed.
#[test]
fn publish_rate_disconnects_with_0x96() {
    let b = Broker::start(BrokerOpts::new().limits("max_publish_rate = 20"));
    let mut watcher = Client::connect_from(b.addr(), ip("127.0.0.8"), Opts::v5("watcher"));
    watcher.subscribe_ok("will/#", QoS::AtLeastOnce);

    let mut c = Client::connect_from(
        b.addr(),
        ip("127.0.0.9"),
        Opts::v5("fast").will("will/fast", "fast is gone", QoS::AtLeastOnce, false),
    );
    // 200 at once: 20/s with a burst of 20 cannot take them.
    flood(&mut c, "quota/fast", "m", 200);
    c.expect_disconnect_reason(ReasonCode::MESSAGE_RATE_TOO_HIGH, WAIT);
    let will = watcher.expect_publish_acked();
    assert_eq!(text(&will), "fast is gone");

    let o = paho_quota(&b, "127.0.0.10", "paho-fast", &["--flood", "500"]);
    assert_eq!(paho_value(&o, "CONNACK", "rc"), 0);
    assert_eq!(paho_value(&o, "DISCONNECT", "rc"), 0x96, "{o}");

    let mut c3 = Client::connect_from(b.addr(), ip("127.0.0.11"), Opts::v3("fast3"));
    flood(&mut c3, "quota/fast", "m", 200);
    c3.expect_closed(WAIT);
    let log = b.log();
    assert!(
        log.lines()
            .any(|l| l.contains("Message rate too high") && l.contains("message_rate")),
        "{log}"
    );
}

/// `max_publish_bandwidth`: bytes per second of whole PUBLISH packets.
#[test]
fn publish_bandwidth_disconnects_with_0x96() {
    let b = Broker::start(BrokerOpts::new().limits("max_publish_bandwidth = 20000"));
    let mut c = Client::connect_from(b.addr(), ip("127.0.0.12"), Opts::v5("heavy"));
    // 100 kB at once against 20 kB/s with a 20 kB burst.
    flood(&mut c, "quota/heavy", &"x".repeat(1000), 100);
    c.expect_disconnect_reason(ReasonCode::MESSAGE_RATE_TOO_HIGH, WAIT);
    let o = paho_quota(
        &b,
        "127.0.0.13",
        "paho-heavy",
        &["--flood", "200", "--size", "1000"],
    );
    assert_eq!(paho_value(&o, "DISCONNECT", "rc"), 0x96, "{o}");
    assert!(b.log().contains("max_publish_bandwidth"), "{}", b.log());
}

/// With every quota configured, traffic within them is untouched: several connections per IP,
/// QoS 0/1/2 messages well under the rate and bandwidth, all delivered, nobody disconnected.
#[test]
fn under_quota_traffic_is_unaffected() {
    let b = Broker::start(BrokerOpts::new().limits(
        "max_connections = 100\nmax_connections_per_ip = 10\nmax_connection_rate_per_ip = 50\nmax_publish_rate = 1000\nmax_publish_bandwidth = 1000000",
    ));
    let src = ip("127.0.0.14");
    let mut sub = Client::connect_from(b.addr(), src, Opts::v5("sub"));
    sub.subscribe_ok("ok/#", QoS::ExactlyOnce);
    let mut publ = Client::connect_from(b.addr(), src, Opts::v3("pub"));
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .cycle()
        .take(60)
        .enumerate()
    {
        publ.publish(msg(&format!("ok/{i}"), format!("m{i}")).qos(qos));
    }
    let got: Vec<String> = sub.expect_publishes(60).iter().map(text).collect();
    assert_eq!(got, (0..60).map(|i| format!("m{i}")).collect::<Vec<_>>());
    let o = mosquitto_pub(
        &b,
        &[
            "-A",
            "127.0.0.14",
            "-t",
            "ok/m",
            "-m",
            "third party",
            "-q",
            "1",
        ],
    );
    o.assert_success();
    sub.expect_publish_acked();
    publ.ping();
    sub.ping();
    assert!(!b.log().contains("refused"), "{}", b.log());
}

fn hs256_token(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({ "sub": sub, "iss": "https://issuer.test", "iat": now, "exp": now + 3600 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"quota-test-secret-0123456789abcdef"),
    )
    .unwrap()
}

/// The registry's `maxClientSessionsPerAuthenticationName` (here 2): a third client id under
/// one authentication name gets CONNACK 0x97 (3.1.1: 0x03); another name is unaffected, and a
/// session that ends frees its slot.
#[test]
fn sessions_per_authentication_name_refused_with_0x97() {
    let dir = temp_dir("quota-registry");
    let registry = dir.join("registry.json");
    let json = serde_json::json!({
        "namespace": {
            "clientAuthentication": { "customJwtAuthentication": {
                "tokenIssuer": "https://issuer.test",
                "hmacSecrets": ["quota-test-secret-0123456789abcdef"],
                "acceptTokenInPassword": true
            }},
            "maxClientSessionsPerAuthenticationName": 2
        }
    });
    std::fs::write(&registry, json.to_string()).unwrap();
    let b = Broker::start(
        BrokerOpts::new().config(&format!("[auth]\nregistry = \"{}\"\n", registry.display())),
    );
    let token = hs256_token("dev-1");
    let login = |opts: Opts| opts.login("dev-1", token.as_bytes());
    let src = ip("127.0.0.15");
    let first = Client::connect_from(b.addr(), src, login(Opts::v5("dev-1-a")));
    let _second = Client::connect_from(b.addr(), src, login(Opts::v5("dev-1-b")));
    let (mut third, ack) = Client::handshake_from(b.addr(), src, login(Opts::v5("dev-1-c")));
    assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED, "{ack:?}");
    third.expect_closed(WAIT);
    let (_, ack) = Client::handshake_from(b.addr(), src, login(Opts::v3("dev-1-d")));
    assert_eq!(
        ack.reason_code,
        ReasonCode::SERVER_UNAVAILABLE,
        "3.1.1: 0x03"
    );
    // A client id holding a slot connecting again (taking its session over) is not one more.
    let mut old = first;
    let first = Client::connect_from(b.addr(), src, login(Opts::v5("dev-1-a")));
    old.expect_disconnect_reason(ReasonCode::SESSION_TAKEN_OVER, WAIT);
    // Another authentication name has its own slots.
    let other = hs256_token("dev-2");
    Client::connect_from(
        b.addr(),
        src,
        Opts::v5("dev-2-a").login("dev-2", other.as_bytes()),
    )
    .disconnect();
    assert!(
        b.log().contains("maxClientSessionsPerAuthenticationName"),
        "{}",
        b.log()
    );
    // The first session ends (clean start, expiry 0): its slot is free again.
    first.disconnect();
    connect_when_released(
        &b,
        src,
        &login(Opts::v5("dev-1-c")),
        ReasonCode::QUOTA_EXCEEDED,
    );
}

/// Bad quota values stop startup with a message naming the file and the key.
#[test]
fn bad_quota_config_names_the_key() {
    for (config, key) in [
        ("[limits]\nmax_publish_rate = -5\n", "max_publish_rate"),
        (
            "[limits]\nmax_connections_per_ip = 99999999999\n",
            "max_connections_per_ip",
        ),
        (
            "[limits]\nconnection_rate_burst_per_ip = 10\n",
            "limits.connection_rate_burst_per_ip",
        ),
    ] {
        let (path, out) =
            ringmq_tests::run_broker_with_bad_config(config, std::time::Duration::from_secs(10));
        let status = out
            .status
            .unwrap_or_else(|| panic!("the broker started with {config:?}:\n{out}"));
        assert!(!status.success(), "{out}");
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(out.stderr.contains(&file), "names the file {file}:\n{out}");
        assert!(out.stderr.contains(key), "names the key {key}:\n{out}");
    }
}

/// The value of `ringmq_quota_rejections_total{quota="<quota>"}` on the metrics endpoint.
fn quota_metric(metrics: std::net::SocketAddr, quota: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&metrics, WAIT).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {metrics}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let prefix = format!("ringmq_quota_rejections_total{{quota=\"{quota}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Every refusal is counted in `ringmq_quota_rejections_total` by quota.
#[test]
fn rejections_are_counted_in_metrics() {
    let port = ringmq_tests::free_port();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let b = Broker::start(
        BrokerOpts::new()
            .config(&format!("[metrics]\nbind = \"127.0.0.1:{port}\"\n"))
            .limits("max_connections_per_ip = 1\nmax_publish_rate = 5"),
    );
    let src = ip("127.0.0.17");
    let mut c = Client::connect_from(b.addr(), src, Opts::v5("counted"));
    for _ in 0..2 {
        let (mut over, ack) = Client::handshake_from(b.addr(), src, Opts::v5("over"));
        assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED);
        over.expect_closed(WAIT);
    }
    flood(&mut c, "quota/m", "m", 50);
    c.expect_disconnect_reason(ReasonCode::MESSAGE_RATE_TOO_HIGH, WAIT);
    let counted = wait_until(WAIT, || {
        quota_metric(metrics, "connections_per_ip") == Some(2)
            && quota_metric(metrics, "message_rate") == Some(1)
    });
    assert!(
        counted,
        "connections_per_ip {:?}, message_rate {:?}",
        quota_metric(metrics, "connections_per_ip"),
        quota_metric(metrics, "message_rate")
    );
    assert_eq!(quota_metric(metrics, "bandwidth"), Some(0));
}
