//! Metrics: the Prometheus rendering parsed back line by line, the HTTP endpoint over real
//! loopback sockets, `$SYS` values, and the deploy/ example configuration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

mod common;

use ringmq::config::{ClientCertificateMode, Config, ListenerProtocol};
use ringmq::ops::metrics::*;
use ringmq_codec::QoS;

fn two_listeners() -> Vec<ListenerLabel> {
    vec![
        ListenerLabel {
            name: "0.0.0.0:1883".into(),
            protocol: "mqtt",
        },
        ListenerLabel {
            name: "0.0.0.0:8883".into(),
            protocol: "mqtts",
        },
    ]
}

/// Two shards with some of everything counted.
fn busy_metrics() -> Metrics {
    let m = Metrics::new(2, two_listeners());
    let (a, b) = (m.shard(0), m.shard(1));
    a.connection_opened(0);
    a.connection_opened(0);
    a.connection_opened(1);
    a.connection_closed(0);
    b.connection_opened(1);
    for _ in 0..5 {
        a.message_in(QoS::AtLeastOnce);
    }
    b.message_in(QoS::AtLeastOnce);
    b.message_in(QoS::AtMostOnce);
    a.message_out(QoS::ExactlyOnce);
    b.message_out(QoS::AtMostOnce);
    b.message_out(QoS::AtMostOnce);
    a.bytes_in.add(100);
    b.bytes_in.add(23);
    a.bytes_out.add(7);
    a.dropped(DropCause::QueueFull);
    b.dropped(DropCause::QueueFull);
    b.dropped(DropCause::NotAuthorized);
    a.retained_messages.set(10);
    b.retained_messages.set(9);
    a.sessions_online.set(2);
    b.sessions_online.set(1);
    b.sessions_offline.set(4);
    a.subscriptions.add(3);
    b.subscriptions.add(2);
    a.mesh_inbox_depth.set(17);
    b.mesh_overflow.add(5);
    a.protocol_errors.inc();
    b.subscribe_denied.inc();
    a.auth_succeeded(AuthMethod::Certificate);
    b.auth_succeeded(AuthMethod::Certificate);
    a.auth_failed(AuthMethod::CustomJwt, AuthFailure::BadCredentials);
    a.auth_cache_lookup(AuthCache::X509, true);
    a.auth_cache_lookup(AuthCache::X509, false);
    b.auth_cache_lookup(AuthCache::X509, true);
    b.auth_cache_totals(AuthCache::Jwt, 5, 2);
    b.auth_cache_totals(AuthCache::Jwt, 6, 2);
    a.auth_failed(AuthMethod::Unknown, AuthFailure::BadMethod);
    b.quota_rejected(Quota::ConnectionsPerIp);
    a.packet_sent(PacketType::Connack);
    b.packet_sent(PacketType::Connack);
    b.packet_sent(PacketType::Pubrel);
    a.delivery_latency.observe(Duration::ZERO);
    a.delivery_latency.observe(Duration::from_micros(10));
    b.delivery_latency.observe(Duration::from_millis(3));
    b.delivery_latency.observe(Duration::from_secs(60));
    b.proxy_failed(ProxyFailure::Timeout);
    m.auth.registry_reloaded(3);
    m.auth.registry_reload_failed();
    m
}

/// A parsed exposition: family → (HELP, TYPE), and (name, sorted labels) → value.
#[derive(Debug, Default)]
struct Exposition {
    help: BTreeMap<String, String>,
    kind: BTreeMap<String, String>,
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Exposition {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut l: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        *self
            .samples
            .get(&(name.to_owned(), l))
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `{k="v",...}` with the format's escapes; returns the labels and the rest.
fn parse_labels(s: &str) -> (Vec<(String, String)>, &str) {
    let Some(body) = s.strip_prefix('{') else {
        return (Vec::new(), s);
    };
    let mut labels = Vec::new();
    let mut rest = body;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            labels.sort();
            return (labels, r);
        }
        let eq = rest.find("=\"").expect("label name followed by =\"");
        let name = &rest[..eq];
        assert!(
            is_metric_name(name) && !name.contains(':'),
            "label name {name:?}"
        );
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let end = loop {
            match chars.next().expect("unterminated label value") {
                (_, '\\') => match chars.next().expect("dangling escape").1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => panic!("bad escape \\{c}"),
                },
                (i, '"') => break eq + 2 + i + 1,
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &rest[end..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parses text exposition format 0.0.4 strictly: every line is HELP, TYPE or a sample; every
/// sample's family was declared (HELP and TYPE) before it; no family or sample twice.
fn parse_exposition(text: &str) -> Exposition {
    assert!(text.ends_with('\n'), "the last line ends with a newline");
    let mut e = Exposition::default();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(is_metric_name(name), "{line}");
            assert!(
                name.starts_with("ringmq_") || name.starts_with("process_"),
                "{line}"
            );
            assert!(!help.is_empty(), "{line}");
            assert!(
                e.help.insert(name.into(), help.into()).is_none(),
                "family twice: {line}"
            );
            current = Some(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert_eq!(
                current.as_deref(),
                Some(name),
                "TYPE follows its HELP: {line}"
            );
            assert!(matches!(kind, "counter" | "gauge" | "histogram"), "{line}");
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "counters and only counters end in _total: {line}"
            );
            if kind == "histogram" {
                assert!(name.ends_with("_seconds"), "histograms in seconds: {line}");
            }
            assert!(e.kind.insert(name.into(), kind.into()).is_none(), "{line}");
        } else {
            assert!(!line.starts_with('#'), "unknown comment: {line}");
            let name_end = line.find(['{', ' ']).expect("sample has a value");
            let name = &line[..name_end];
            assert!(is_metric_name(name), "{line}");
            // A histogram's samples are its name with _bucket, _sum or _count.
            let family = current.as_deref().filter(|f| {
                *f == name
                    || (e.kind.get(*f).is_some_and(|k| k == "histogram")
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name.strip_suffix(s) == Some(*f)))
            });
            assert!(
                family.is_some(),
                "sample belongs to the family declared above it: {line}"
            );
            assert!(
                family.is_some_and(|f| e.kind.contains_key(f)),
                "sample before TYPE: {line}"
            );
            let (labels, rest) = parse_labels(&line[name_end..]);
            let value = rest.strip_prefix(' ').expect("one space before the value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            let key = (name.to_owned(), labels);
            assert!(
                e.samples.insert(key, value).is_none(),
                "sample twice: {line}"
            );
        }
    }
    assert_eq!(e.help.len(), e.kind.len(), "every HELP has a TYPE");
    e
}

#[test]
fn rendering_parses_back_with_the_counted_values() {
    let m = busy_metrics();
    let mut text = String::new();
    m.render_prometheus(&mut text);
    let e = parse_exposition(&text);

    let plain = [("listener", "0.0.0.0:1883"), ("protocol", "mqtt")];
    let tls = [("listener", "0.0.0.0:8883"), ("protocol", "mqtts")];
    assert_eq!(e.value("ringmq_connections", &plain), 1.0);
    assert_eq!(e.value("ringmq_connections", &tls), 2.0);
    assert_eq!(e.value("ringmq_connections_total", &plain), 2.0);
    assert_eq!(e.value("ringmq_connections_total", &tls), 2.0);
    assert_eq!(e.value("ringmq_shards", &[]), 2.0);
    let received = |q| e.value("ringmq_messages_received_total", &[("qos", q)]);
    assert_eq!(
        (received("0"), received("1"), received("2")),
        (1.0, 6.0, 0.0)
    );
    let sent = |q| e.value("ringmq_messages_sent_total", &[("qos", q)]);
    assert_eq!((sent("0"), sent("1"), sent("2")), (2.0, 0.0, 1.0));
    assert_eq!(e.value("ringmq_received_bytes_total", &[]), 123.0);
    assert_eq!(e.value("ringmq_sent_bytes_total", &[]), 7.0);
    let dropped = |c| e.value("ringmq_messages_dropped_total", &[("cause", c)]);
    assert_eq!(dropped("queue_full"), 2.0);
    assert_eq!(dropped("not_authorized"), 1.0);
    assert_eq!(dropped("qos0_slow_consumer"), 0.0);
    assert_eq!(dropped("too_large"), 0.0);
    assert_eq!(dropped("expired"), 0.0);
    // A replica per shard: the largest, not the sum.
    assert_eq!(e.value("ringmq_retained_messages", &[]), 10.0);
    assert_eq!(e.value("ringmq_sessions", &[("state", "online")]), 3.0);
    assert_eq!(e.value("ringmq_sessions", &[("state", "offline")]), 4.0);
    assert_eq!(e.value("ringmq_subscriptions", &[]), 5.0);
    // Queue metrics stay per shard.
    assert_eq!(e.value("ringmq_mesh_inbox_depth", &[("shard", "0")]), 17.0);
    assert_eq!(e.value("ringmq_mesh_inbox_depth", &[("shard", "1")]), 0.0);
    assert_eq!(
        e.value("ringmq_mesh_overflow_total", &[("shard", "1")]),
        5.0
    );
    assert_eq!(e.value("ringmq_protocol_errors_total", &[]), 1.0);
    assert_eq!(e.value("ringmq_subscribe_denied_total", &[]), 1.0);
    assert_eq!(
        e.value(
            "ringmq_quota_rejections_total",
            &[("quota", "connections_per_ip")]
        ),
        1.0
    );
    assert_eq!(
        e.value("ringmq_auth_successes_total", &[("method", "certificate")]),
        2.0
    );
    assert_eq!(
        e.value(
            "ringmq_auth_failures_total",
            &[("method", "custom_jwt"), ("reason", "bad_credentials")]
        ),
        1.0
    );
    assert_eq!(
        e.value(
            "ringmq_auth_failures_total",
            &[("method", "anonymous"), ("reason", "not_authorized")]
        ),
        0.0
    );
    let cache = |c, r| {
        e.value(
            "ringmq_auth_cache_lookups_total",
            &[("cache", c), ("result", r)],
        )
    };
    assert_eq!((cache("x509", "hit"), cache("x509", "miss")), (2.0, 1.0));
    assert_eq!((cache("jwt", "hit"), cache("jwt", "miss")), (6.0, 2.0));
    assert_eq!(
        e.value(
            "ringmq_auth_failures_total",
            &[("method", "unknown"), ("reason", "bad_method")]
        ),
        1.0
    );
    assert_eq!(e.value("ringmq_registry_version", &[]), 3.0);
    assert_eq!(
        e.value("ringmq_registry_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        e.value("ringmq_registry_reloads_total", &[("result", "error")]),
        1.0
    );

    let sent = |t| e.value("ringmq_packets_sent_total", &[("type", t)]);
    assert_eq!(
        (sent("connack"), sent("pubrel"), sent("auth")),
        (2.0, 1.0, 0.0)
    );
    assert_eq!(
        e.value("ringmq_packets_received_total", &[("type", "publish")]),
        0.0
    );
    // Buckets are cumulative; 10 µs is in the first (le is inclusive), 60 s only in +Inf.
    let le = |b| e.value("ringmq_delivery_latency_seconds_bucket", &[("le", b)]);
    assert_eq!((le("0.00001"), le("0.0025"), le("0.005")), (2.0, 2.0, 3.0));
    assert_eq!((le("10"), le("+Inf")), (3.0, 4.0));
    assert_eq!(e.value("ringmq_delivery_latency_seconds_count", &[]), 4.0);
    let sum = e.value("ringmq_delivery_latency_seconds_sum", &[]);
    assert!((sum - 60.00301).abs() < 1e-9, "{sum}");
    assert_eq!(
        e.value(
            "ringmq_proxy_protocol_failures_total",
            &[("reason", "timeout")]
        ),
        1.0
    );
    let build = e
        .samples
        .iter()
        .find(|((n, _), _)| n == "ringmq_build_info")
        .expect("ringmq_build_info");
    assert_eq!(*build.1, 1.0);
    let labels: Vec<&str> = build.0.1.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(labels, ["commit", "version"]);
    assert_eq!(build.0.1[1].1, env!("CARGO_PKG_VERSION"));
    assert!(!build.0.1[0].1.is_empty());
    // The process families, read from /proc.
    assert!(e.value("process_open_fds", &[]) >= 3.0);
    assert!(e.value("process_max_fds", &[]) >= e.value("process_open_fds", &[]));
    assert!(e.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(
        e.value("process_virtual_memory_bytes", &[])
            >= e.value("process_resident_memory_bytes", &[])
    );
    assert!(e.value("process_cpu_seconds_total", &[]) >= 0.0);
    assert!(e.value("process_start_time_seconds", &[]) > 1_577_836_800.0);

    // Every fixed label value is present even at zero (absent series break rate()).
    let families: BTreeSet<&str> = e.samples.keys().map(|(n, _)| n.as_str()).collect();
    for (f, kind) in &e.kind {
        let sample = match kind.as_str() {
            "histogram" => format!("{f}_count"),
            _ => f.clone(),
        };
        if !f.starts_with("ringmq_jwks_") {
            assert!(
                families.contains(sample.as_str()),
                "family {f} has no sample"
            );
        }
    }
    assert_eq!(
        e.samples
            .keys()
            .filter(|(n, _)| n == "ringmq_auth_failures_total")
            .count(),
        AuthMethod::COUNT * AuthFailure::COUNT
    );
}

#[test]
fn jwks_issuers_render_escaped_and_keep_state_across_reloads() {
    let m = Metrics::new(1, two_listeners());
    let odd = "https://idp.example/\"quoted\"\\path";
    m.auth
        .set_jwks_issuers(&["https://login.example/tenant", odd]);
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    m.auth
        .jwks_fetched("https://login.example/tenant", true, t0);
    m.auth
        .jwks_fetched("https://login.example/tenant", false, t0);
    m.auth.jwks_fetched(odd, true, SystemTime::now());
    m.auth
        .jwks_fetched("https://unknown.example", true, SystemTime::now());
    // A reload that keeps one issuer keeps its counts and drops the other.
    m.auth.set_jwks_issuers(&["https://login.example/tenant"]);
    m.auth
        .set_jwks_issuers(&["https://login.example/tenant", odd]);

    let mut text = String::new();
    m.render_prometheus(&mut text);
    let e = parse_exposition(&text);
    let tenant = "https://login.example/tenant";
    let fetches = |i, r| e.value("ringmq_jwks_fetches_total", &[("issuer", i), ("result", r)]);
    assert_eq!(
        (fetches(tenant, "ok"), fetches(tenant, "error")),
        (1.0, 1.0)
    );
    assert_eq!((fetches(odd, "ok"), fetches(odd, "error")), (0.0, 0.0));
    assert_eq!(e.value("ringmq_jwks_up", &[("issuer", tenant)]), 0.0);
    let age = e.value("ringmq_jwks_age_seconds", &[("issuer", tenant)]);
    assert!(age >= 3600.0, "age {age}");
    // Never fetched since it came back: no age sample rather than a made-up one.
    assert!(
        !e.samples
            .keys()
            .any(|(n, l)| n == "ringmq_jwks_age_seconds" && l.iter().any(|(_, v)| v == odd))
    );
    assert!(
        text.contains(r#"issuer="https://idp.example/\"quoted\"\\path""#),
        "{text}"
    );
}

#[test]
fn sys_topics_follow_the_counters() {
    let m = busy_metrics();
    let topics: BTreeMap<String, String> = m.sys_topics("1.2.3").into_iter().collect();
    let get = |t: &str| topics.get(t).unwrap_or_else(|| panic!("no {t}")).as_str();
    assert_eq!(get("$SYS/broker/version"), "ringmq version 1.2.3");
    let uptime = get("$SYS/broker/uptime");
    let secs = uptime.strip_suffix(" seconds").expect("N seconds");
    secs.parse::<u64>().unwrap();
    assert_eq!(get("$SYS/broker/clients/connected"), "3");
    assert_eq!(get("$SYS/broker/clients/disconnected"), "4");
    assert_eq!(get("$SYS/broker/clients/total"), "7");
    assert_eq!(get("$SYS/broker/messages/received"), "7");
    assert_eq!(get("$SYS/broker/messages/sent"), "3");
    assert_eq!(get("$SYS/broker/publish/messages/received"), "7");
    assert_eq!(get("$SYS/broker/publish/messages/sent"), "3");
    assert_eq!(get("$SYS/broker/publish/messages/dropped"), "3");
    assert_eq!(get("$SYS/broker/retained messages/count"), "10");
    assert_eq!(get("$SYS/broker/subscriptions/count"), "5");
    assert_eq!(get("$SYS/broker/bytes/received"), "123");
    assert_eq!(get("$SYS/broker/bytes/sent"), "7");
    // Topic names are valid MQTT topic names: no wildcards, no empty name.
    for t in topics.keys() {
        assert!(
            !t.contains(['+', '#']) && t.starts_with("$SYS/broker/"),
            "{t}"
        );
    }

    // Counting more shows up in the next snapshot.
    m.shard(1).message_in(QoS::ExactlyOnce);
    m.shard(0).bytes_out.add(1000);
    m.shard(0).sessions_online.sub(1);
    let topics: BTreeMap<String, String> = m.sys_topics("1.2.3").into_iter().collect();
    assert_eq!(topics["$SYS/broker/messages/received"], "8");
    assert_eq!(topics["$SYS/broker/bytes/sent"], "1007");
    assert_eq!(topics["$SYS/broker/clients/connected"], "2");
}

#[test]
fn metrics_from_config_label_listeners_in_order() {
    let c = Config::from_toml(
        "[[listener]]\nbind = \"127.0.0.1:1883\"\n[[listener]]\nbind = \"[::]:8883\"\nprotocol = \"mqtts\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
        Path::new("/etc/ringmq/ringmq.toml"),
    )
    .unwrap();
    let m = Metrics::for_config(3, &c.listeners);
    assert_eq!(m.shards().len(), 3);
    m.shard(2).connection_opened(1);
    let mut text = String::new();
    m.render_prometheus(&mut text);
    assert!(
        text.contains("ringmq_connections{listener=\"[::]:8883\",protocol=\"mqtts\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("ringmq_connections{listener=\"127.0.0.1:1883\",protocol=\"mqtt\"} 0\n"),
        "{text}"
    );
}

// ---- the HTTP endpoint --------------------------------------------------------------------

struct TestServer {
    addr: std::net::SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

fn start_server() -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(busy_metrics());
    let health = Arc::new(Health::default());
    serve_http(listener, metrics.clone(), health.clone()).unwrap();
    TestServer {
        addr,
        health,
        metrics,
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a whole response (the server closes the connection after it).
fn read_response(stream: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts.next().unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").expect("header");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let r = Response {
        status,
        headers,
        body: body.to_owned(),
    };
    let len: usize = r.header("content-length").unwrap().parse().unwrap();
    assert_eq!(len, r.body.len(), "Content-Length matches the body");
    assert_eq!(r.header("connection"), Some("close"));
    r
}

fn request(server: &TestServer, raw: &[u8]) -> Response {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(raw).unwrap();
    read_response(&mut s)
}

fn get(server: &TestServer, path: &str) -> Response {
    request(
        server,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n").as_bytes(),
    )
}

#[test]
fn http_serves_metrics_health_and_404() {
    let server = start_server();
    let r = get(&server, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let e = parse_exposition(&r.body);
    assert_eq!(e.value("ringmq_received_bytes_total", &[]), 123.0);
    // Served live: a counter bumped now is in the next scrape.
    server.metrics.shard(1).bytes_in.add(1);
    let r = get(&server, "/metrics?name[]=x");
    assert_eq!(
        parse_exposition(&r.body).value("ringmq_received_bytes_total", &[]),
        124.0
    );

    let r = get(&server, "/health");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    assert_eq!(get(&server, "/").status, 404);
    assert_eq!(get(&server, "/metrics/").status, 404);
    // The absolute form is accepted.
    let r = request(
        &server,
        b"GET http://localhost:9100/health HTTP/1.1\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    // HTTP/1.0 and bare-LF line ends are accepted too.
    let r = request(&server, b"GET /health HTTP/1.0\n\n");
    assert_eq!(r.status, 200);
}

#[test]
fn readiness_follows_health() {
    let server = start_server();
    let r = get(&server, "/ready");
    assert_eq!((r.status, r.body.as_str()), (503, "starting\n"));
    server.health.ready.store(true, Relaxed);
    let r = get(&server, "/ready");
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
    server.health.draining.store(true, Relaxed);
    let r = get(&server, "/ready");
    assert_eq!((r.status, r.body.as_str()), (503, "draining\n"));
    // Draining is not dead: liveness stays 200 so the supervisor does not kill the drain.
    assert_eq!(get(&server, "/health").status, 200);
}

#[test]
fn http_refuses_other_methods_and_malformed_requests() {
    let server = start_server();
    for method in ["POST", "HEAD", "PUT", "DELETE"] {
        let r = request(
            &server,
            format!("{method} /metrics HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET"));
    }
    for raw in [
        &b"GET /metrics\r\n\r\n"[..],
        b"GET /metrics HTTP/1.1 extra\r\n\r\n",
        b"GET ftp://x/metrics HTTP/1.1\r\n\r\n",
        b"GET * HTTP/1.1\r\n\r\n",
        b"GET /metrics SPDY/3\r\n\r\n",
        b"\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno-colon-here\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
        b"G3T /metrics HTTP/1.1\r\n\r\n",
    ] {
        let r = request(&server, raw);
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(raw));
    }
    // A request cut off before the blank line.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_response(&mut s).status, 400);
    // A connection closed without a byte gets nothing, and the server goes on.
    drop(TcpStream::connect(server.addr).unwrap());
    assert_eq!(get(&server, "/health").status, 200);
}

#[test]
fn oversize_head_is_431() {
    let server = start_server();
    // Exactly the limit without the terminating blank line: all of it is read, then refused.
    let mut raw = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    raw.resize(MAX_REQUEST_HEAD, b'a');
    let r = request(&server, &raw);
    assert_eq!(r.status, 431);
    // A head that just fits is served.
    let mut raw = b"GET /health HTTP/1.1\r\nX-Filler: ".to_vec();
    raw.resize(MAX_REQUEST_HEAD - 4, b'a');
    raw.extend_from_slice(b"\r\n\r\n");
    assert_eq!(request(&server, &raw).status, 200);
}

#[test]
fn silent_clients_time_out_without_blocking_others_and_excess_is_503() {
    let server = start_server();
    // Fill every worker with a client that sends half a request and stops.
    let mut silent: Vec<TcpStream> = (0..MAX_HTTP_WORKERS)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(b"GET /metr").unwrap();
            s
        })
        .collect();
    // The next one is turned away at once instead of queueing behind them. (It sends nothing:
    // the server answers without reading, and unread request bytes would make its close a
    // reset that could discard the answer.)
    let mut s = TcpStream::connect(server.addr).unwrap();
    let r = read_response(&mut s);
    assert_eq!((r.status, r.body.as_str()), (503, "busy\n"));
    // Each silent client gets 408 once its time is up, and the workers are free again.
    for s in &mut silent {
        assert_eq!(read_response(s).status, 408);
    }
    // Workers are released right after their response is written; retry until that happened
    // (the bound is a count, not a time).
    let mut status = 0;
    for _ in 0..1000 {
        status = get(&server, "/health").status;
        if status == 200 {
            break;
        }
        std::thread::yield_now();
    }
    assert_eq!(status, 200);
}

#[test]
fn spawn_http_reports_bind_errors() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = spawn_http(
        addr,
        Arc::new(Metrics::new(1, Vec::new())),
        Arc::new(Health::default()),
    )
    .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
}

// ---- deploy/ ------------------------------------------------------------------------------

/// deploy/ringmq.toml parses with today's configuration (planned keys are commented out).
#[test]
fn deploy_config_parses() {
    let text = include_str!("../../deploy/ringmq.toml");
    let c = Config::from_toml(text, Path::new("/etc/ringmq/ringmq.toml")).unwrap();
    assert!(!c.anonymous_allowed());
    assert_eq!(c.limits.shutdown_timeout_secs, 20);
    assert_eq!(c.listeners.len(), 2);
    let tls = &c.listeners[0];
    assert_eq!(tls.protocol, ListenerProtocol::Mqtts);
    assert_eq!(tls.bind.port(), 8883);
    assert_eq!(
        tls.cert.as_deref(),
        Some(Path::new("/etc/ringmq/tls/server.crt"))
    );
    assert_eq!(
        tls.key.as_deref(),
        Some(Path::new("/etc/ringmq/tls/server.key"))
    );
    assert_eq!(tls.client_certificate, ClientCertificateMode::Optional);
    assert!(c.listeners[1].bind.ip().is_loopback());
    assert_eq!(
        c.auth.registry.as_deref(),
        Some(Path::new("/etc/ringmq/registry.json"))
    );
    let metrics = c.metrics.bind.unwrap();
    assert!(metrics.ip().is_loopback(), "{metrics}");
    assert_eq!(c.metrics.sys_interval_secs, 10);
    // Production persists (issue 14): the unit's StateDirectory, fsync before acknowledging.
    assert_eq!(c.storage.dir.as_deref(), Some(Path::new("/var/lib/ringmq")));
    assert_eq!(c.storage.fsync, ringmq::config::FsyncMode::Always);
    let unit = include_str!("../../deploy/ringmq.service");
    assert!(unit.contains("StateDirectory=ringmq"), "{unit}");
    // Every commented-out section is marked as planned.
    for line in text.lines().filter(|l| l.starts_with("# [")) {
        let i = text.find(line).unwrap();
        let section = &text[i..text[i..].find("\n\n").map_or(text.len(), |e| i + e)];
        assert!(section.contains("planned"), "{section}");
    }
}

/// The cores count packets by type in both directions and time each delivery of a live
/// PUBLISH on the fake clock: five QoS 1 messages read on shard 0 at t, delivered on shard 1 at
/// t + 3 ms, land in the 5 ms bucket, and at 0 to a subscriber on shard 0 (delivered within
/// the publisher's input); a retained copy replayed on SUBSCRIBE is a delivery
/// (a PUBLISH sent) but not a latency observation.
#[test]
fn cores_count_packets_by_type_and_time_deliveries() {
    use common::*;
    use ringmq::proto::Input;
    use ringmq_codec::{Packet, QosPid};

    let mut c = Cluster::new(2);
    let (mut sub, _) = c.connect(1, "sub", true, 0);
    c.subscribe(&mut sub, "t/#", QoS::AtMostOnce);
    // On the publisher's shard: delivered within the publisher's input, latency 0.
    let (mut near, _) = c.connect(0, "near", true, 0);
    c.subscribe(&mut near, "t/#", QoS::AtMostOnce);
    let (publisher, _) = c.connect(0, "pub", true, 0);
    for i in 1..=5 {
        let mut buf = bytes::BytesMut::new();
        let p = publish("t/a", b"x", QosPid::AtLeastOnce(pid(i)));
        ringmq_codec::encode(&p, publisher.version, &mut buf).unwrap();
        // Read on the publisher's shard, not pumped yet.
        let _ = c.input(
            0,
            Input::Read {
                conn: publisher.index,
                bytes: &mut buf,
            },
        );
    }
    c.now += Duration::from_millis(3);
    c.pump();
    let got = c.recv(&mut sub);
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(c.recv(&mut near).len(), 5);
    // A retained message, then a second subscriber that gets it on SUBSCRIBE.
    let retained = Packet::Publish(ringmq_codec::Publish {
        retain: true,
        ..match publish("r/x", b"kept", QosPid::AtMostOnce) {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    });
    c.send(&publisher, &retained);
    let (mut late, _) = c.connect(1, "late", true, 0);
    c.subscribe(&mut late, "r/#", QoS::AtMostOnce);
    assert_eq!(c.recv(&mut late).len(), 1);

    let m = &c.metrics;
    let sum = |f: fn(&ShardMetrics) -> &[Counter; PacketType::COUNT], t: PacketType| {
        m.shards()
            .iter()
            .map(|s| f(s)[t as usize].get())
            .sum::<u64>()
    };
    let rx = |t| sum(|s| &s.packets_received, t);
    let tx = |t| sum(|s| &s.packets_sent, t);
    assert_eq!(rx(PacketType::Connect), 4);
    assert_eq!(rx(PacketType::Subscribe), 3);
    assert_eq!(rx(PacketType::Publish), 6);
    assert_eq!(tx(PacketType::Connack), 4);
    assert_eq!(tx(PacketType::Suback), 3);
    assert_eq!(tx(PacketType::Puback), 5);
    assert_eq!(tx(PacketType::Publish), 11);
    assert_eq!(tx(PacketType::Pingresp), 0);
    let h = &m.shard(1).delivery_latency;
    assert_eq!(h.count(), 5, "the retained replay is not timed");
    let near = &m.shard(0).delivery_latency;
    assert_eq!((near.count(), near.sum_nanos()), (5, 0));
    assert_eq!(near.bucket_counts().next(), Some(5));
    assert_eq!(h.sum_nanos(), 15_000_000);
    let buckets: Vec<u64> = h.bucket_counts().collect();
    let five_ms = LATENCY_BOUNDS_NANOS
        .iter()
        .position(|&b| b == 5_000_000)
        .unwrap();
    assert_eq!(buckets[five_ms], 5, "{buckets:?}");
    assert_eq!(buckets.iter().sum::<u64>(), 5);
}
