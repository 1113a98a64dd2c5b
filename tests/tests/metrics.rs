//! Monitoring through the real binary: the `[metrics]` HTTP endpoint scraped while known
//! traffic flows (counts checked exactly against what the clients sent and received), `/ready`
//! turning 503 while a SIGTERM drain runs, authentication and registry reload counters, `$SYS`
//! topics received by mosquitto_sub, and a metrics address in use refused at startup.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ringmq_codec::*;
use ringmq_tests::tools::mosquitto_sub;
use ringmq_tests::*;
use serde_json::json;

// ---- HTTP and the exposition format ---------------------------------------------------------

/// `GET path` over a plain TCP connection: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT)
        .unwrap_or_else(|e| panic!("connect to the metrics endpoint {addr}: {e}"));
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (status, body.to_owned())
}

/// One scrape: every sample, keyed by name and its labels in order of appearance.
struct Scrape {
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for ((name, labels), value) in &self.samples {
            writeln!(f, "{name}{labels:?} {value}")?;
        }
        Ok(())
    }
}

impl Scrape {
    fn get(addr: SocketAddr) -> Scrape {
        let (status, body) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        Scrape::parse(&body)
    }

    fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), Vec::new()),
                Some((name, rest)) => (name.to_owned(), parse_labels(rest)),
            };
            let dup = samples.insert((name, labels), value);
            assert!(dup.is_none(), "series twice: {line}");
        }
        Scrape { samples }
    }

    /// The sample with exactly these labels; panics if there is none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let key = (
            name.to_owned(),
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        match self.samples.get(&key) {
            Some(v) => *v as u64,
            None => panic!("no sample {name}{labels:?} in:\n{self:?}"),
        }
    }

    /// The sum over every sample of `name`.
    fn total(&self, name: &str) -> u64 {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| *v as u64)
            .sum()
    }

    fn count(&self, name: &str) -> usize {
        self.samples.keys().filter(|(n, _)| n == name).count()
    }
}

/// `k="v",k2="v2"}` with `\\`, `\"` and `\n` escapes.
fn parse_labels(rest: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {key} in {rest:?}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("dangling escape in {rest:?}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key, value));
        match chars.next() {
            Some(',') => continue,
            Some('}') => return labels,
            other => panic!("unexpected {other:?} after a label in {rest:?}"),
        }
    }
}

/// Scrapes until `cond` holds (gauges are sampled on the shards' 250 ms tick, and deliveries
/// to other shards finish after the publisher's acknowledgement); panics with the last scrape.
fn scrape_until(addr: SocketAddr, what: &str, mut cond: impl FnMut(&Scrape) -> bool) -> Scrape {
    let mut last = None;
    let ok = wait_until(WAIT, || {
        let s = Scrape::get(addr);
        let ok = cond(&s);
        last = Some(s);
        ok
    });
    let last = last.unwrap();
    assert!(
        ok,
        "{what}: not reached within {WAIT:?}; last scrape: {last:#?}"
    );
    last
}

fn metrics_config(port: u16, extra: &str) -> String {
    format!("[metrics]\nbind = \"127.0.0.1:{port}\"\n{extra}\n")
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

// ---- the tests ----------------------------------------------------------------------------

/// Known traffic — 50 QoS 0 and 20 QoS 1 messages to a subscriber, one retained message, one
/// refused login, one refused `$SYS` publish — shows up exactly in `/metrics`: messages by QoS,
/// bytes both ways (compared with what the clients' sockets carried), connections, sessions,
/// subscriptions, drops, authentications.
#[test]
fn metrics_count_known_traffic_exactly() {
    let port = free_port();
    let b = Broker::start(BrokerOpts::new().config(&metrics_config(port, "sys_interval_secs = 0")));
    let http = local(port);
    assert_eq!(http_get(http, "/health"), (200, "ok\n".to_owned()));
    // Readiness is set right after the shards listen, which the harness has just seen.
    assert!(wait_until(WAIT, || http_get(http, "/ready").0 == 200));
    assert_eq!(http_get(http, "/ready").1, "ready\n");
    assert_eq!(http_get(http, "/nothing").0, 404);

    let mut sub = b.v5("m-sub");
    sub.subscribe_ok("t/#", QoS::AtLeastOnce);
    let mut publisher = b.v5("m-pub");
    for i in 0..50 {
        publisher.publish(msg("t/zero", format!("q0-{i}")));
    }
    for i in 0..20 {
        let reason = publisher.publish(msg("t/one", format!("q1-{i}")).qos(QoS::AtLeastOnce));
        assert_eq!(reason, Some(ReasonCode::SUCCESS));
    }
    let got = sub.expect_publishes(70);
    assert_eq!(
        got.iter()
            .filter(|p| p.qos_pid.qos() == QoS::AtLeastOnce)
            .count(),
        20
    );
    let retained = msg("r/kept", "value").qos(QoS::AtLeastOnce).retain(true);
    assert_eq!(publisher.publish(retained), Some(ReasonCode::SUCCESS));
    // Clients may not publish to $SYS: 0x87, counted as a drop, not as a received message.
    let sys = msg("$SYS/broker/fake", "x").qos(QoS::AtLeastOnce);
    assert_eq!(publisher.publish(sys), Some(ReasonCode::NOT_AUTHORIZED));
    // A login with an Authentication Method no registry configures: CONNACK 0x8C.
    let (mut refused, connack) =
        Client::handshake(b.addr(), Opts::v5("m-bad").auth("CUSTOM-JWT", b"token"));
    assert_eq!(connack.reason_code, ReasonCode::BAD_AUTHENTICATION_METHOD);
    refused.expect_closed(WAIT);

    let listener = [
        ("listener", format!("127.0.0.1:{}", b.port())),
        ("protocol", "mqtt".to_owned()),
    ];
    let listener: Vec<(&str, &str)> = listener.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let clients_sent = sub.bytes_sent + publisher.bytes_sent + refused.bytes_sent;
    let clients_received = sub.bytes_received + publisher.bytes_received + refused.bytes_received;
    let m = scrape_until(http, "two sessions online, bytes settled", |m| {
        m.value("ringmq_sessions", &[("state", "online")]) == 2
            && m.value("ringmq_connections", &listener) == 2
            && m.value("ringmq_received_bytes_total", &[]) == clients_sent
            && m.value("ringmq_sent_bytes_total", &[]) == clients_received
    });
    let received = |q| m.value("ringmq_messages_received_total", &[("qos", q)]);
    let sent = |q| m.value("ringmq_messages_sent_total", &[("qos", q)]);
    assert_eq!((received("0"), received("1"), received("2")), (50, 21, 0));
    assert_eq!((sent("0"), sent("1"), sent("2")), (50, 20, 0));
    // Three clients and the harness's readiness probe (a TCP connect before the test starts).
    assert_eq!(m.value("ringmq_connections_total", &listener), 4);
    assert_eq!(m.value("ringmq_sessions", &[("state", "offline")]), 0);
    assert_eq!(m.value("ringmq_subscriptions", &[]), 1);
    assert_eq!(m.value("ringmq_retained_messages", &[]), 1);
    let dropped = |c| m.value("ringmq_messages_dropped_total", &[("cause", c)]);
    assert_eq!(dropped("not_authorized"), 1);
    assert_eq!(m.total("ringmq_messages_dropped_total"), 1);
    assert_eq!(
        m.value("ringmq_auth_successes_total", &[("method", "anonymous")]),
        2
    );
    assert_eq!(m.total("ringmq_auth_successes_total"), 2);
    assert_eq!(
        m.value(
            "ringmq_auth_failures_total",
            &[("method", "custom_jwt"), ("reason", "bad_method")]
        ),
        1
    );
    assert_eq!(m.total("ringmq_auth_failures_total"), 1);
    assert_eq!(m.value("ringmq_protocol_errors_total", &[]), 0);
    assert_eq!(m.value("ringmq_subscribe_denied_total", &[]), 0);
    assert_eq!(m.value("ringmq_registry_version", &[]), 1);
    assert_eq!(m.total("ringmq_registry_reloads_total"), 0);
    let shards = m.value("ringmq_shards", &[]) as usize;
    assert!(shards >= 1);
    assert_eq!(m.count("ringmq_mesh_inbox_depth"), shards);
    assert_eq!(m.count("ringmq_mesh_overflow_total"), shards);

    // A protocol violation is counted as one: a second CONNECT.
    let mut rude = b.v5("m-rude");
    rude.send(&Opts::v5("m-rude").into_packet());
    rude.expect_disconnect_reason(ReasonCode::PROTOCOL_ERROR, WAIT);
    let m = scrape_until(http, "the protocol error counted", |m| {
        m.value("ringmq_protocol_errors_total", &[]) == 1
    });
    assert_eq!(
        m.value("ringmq_auth_successes_total", &[("method", "anonymous")]),
        3
    );
}

/// `/ready` answers 200 while serving and 503 `draining` from SIGTERM until the process exits,
/// while `/health` stays 200. The drain is held open by a subscriber that reads nothing while
/// far more than the loopback socket buffers hold waits for it.
#[test]
fn ready_turns_503_while_draining() {
    let port = free_port();
    // Room for the whole flood in the slow reader's queue: nothing is dropped.
    let config = metrics_config(port, "sys_interval_secs = 0")
        + "[limits]\nshutdown_timeout_secs = 20\nmax_queued_bytes = 268435456\n";
    let mut b = Broker::start(BrokerOpts::new().config(&config));
    let http = local(port);
    assert!(wait_until(WAIT, || http_get(http, "/ready")
        == (200, "ready\n".to_owned())));

    let mut slow = b.v5("d-slow");
    slow.subscribe_ok("big/#", QoS::AtMostOnce);
    let mut publisher = b.v5("d-pub");
    let chunk = Bytes::from(vec![b'x'; 256 * 1024]);
    let count = flood_count(chunk.len());
    for _ in 0..count {
        publisher.publish(msg("big/x", chunk.clone()));
    }
    // Every message is in the slow subscriber's output (none dropped): more than the socket
    // buffers take, so its writer waits and the drain cannot finish by itself.
    scrape_until(http, "all messages queued for the slow reader", |m| {
        m.value("ringmq_messages_sent_total", &[("qos", "0")]) == count as u64
    });

    b.begin_terminate();
    assert!(
        wait_until(WAIT, || http_get(http, "/ready")
            == (503, "draining\n".to_owned())),
        "/ready did not turn 503 after SIGTERM"
    );
    assert_eq!(http_get(http, "/health"), (200, "ok\n".to_owned()));
    // Still draining: the slow subscriber is still owed its messages.
    assert!(b.is_running());
    assert_eq!(http_get(http, "/ready").0, 503);

    // Reading everything lets the drain finish: DISCONNECT 0x8B, close, clean exit.
    let (bytes, closed) = slow.read_raw_until_close(Duration::from_secs(30));
    assert!(closed, "the broker did not close the slow subscriber");
    assert!(bytes.len() > count * chunk.len(), "{} bytes", bytes.len());
    let status = b.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}");
}

/// How many messages of `size` bytes overfill the loopback path to one reader: its receive
/// buffer and the broker's send buffer at their autotuning maximums, and a quarter more.
fn flood_count(size: usize) -> usize {
    let max = |path: &str| {
        fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().nth(2)?.parse::<usize>().ok())
            .unwrap_or(8 << 20)
    };
    let buffers = max("/proc/sys/net/ipv4/tcp_rmem") + max("/proc/sys/net/ipv4/tcp_wmem");
    (buffers + buffers / 4).div_ceil(size).max(16)
}

/// Authentication by JWT and registry reloads: a good token, a forged one, no credentials, the
/// token cache answering a second login, a valid reload and a refused one.
#[test]
fn auth_and_registry_metrics() {
    const SECRET: &[u8] = b"metrics-test-secret-0123456789ab";
    let dir = temp_dir("metrics-registry");
    let registry_path = dir.join("registry.json");
    let registry = |audience: &str| {
        json!({ "namespace": { "clientAuthentication": { "customJwtAuthentication": {
            "tokenIssuer": "https://issuer.test", "audience": audience,
            "hmacSecrets": [String::from_utf8(SECRET.to_vec()).unwrap()]
        }}}})
        .to_string()
    };
    fs::write(&registry_path, registry("ringmq")).unwrap();
    let port = free_port();
    let config = format!(
        "allow_anonymous = false\n[auth]\nregistry = \"{}\"\n{}",
        registry_path.display(),
        metrics_config(port, "sys_interval_secs = 0")
    );
    let b = Broker::start(BrokerOpts::new().config(&config));
    let http = local(port);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims =
        json!({ "sub": "dev-1", "iss": "https://issuer.test", "aud": "ringmq", "exp": now + 3600 });
    let sign = |secret: &[u8]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let good = sign(SECRET);
    let forged = sign(b"not-the-secret-not-the-secret-00");

    let c = b.connect(Opts::v5("dev-1").auth("CUSTOM-JWT", good.as_bytes()));
    c.disconnect();
    let (_, ack) = Client::handshake(
        b.addr(),
        Opts::v5("dev-1").auth("CUSTOM-JWT", forged.as_bytes()),
    );
    assert_eq!(ack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let (_, ack) = Client::handshake(b.addr(), Opts::v5("nobody"));
    assert_eq!(ack.reason_code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    // The same token again, on whatever shard: counted as a success; the per-shard cache
    // answers it when the connection lands on the shard that verified it first.
    let c = b.connect(Opts::v5("dev-1").auth("CUSTOM-JWT", good.as_bytes()));
    c.disconnect();

    let m = Scrape::get(http);
    assert_eq!(
        m.value("ringmq_auth_successes_total", &[("method", "custom_jwt")]),
        2
    );
    let failed = |method, reason| {
        m.value(
            "ringmq_auth_failures_total",
            &[("method", method), ("reason", reason)],
        )
    };
    assert_eq!(failed("custom_jwt", "bad_credentials"), 1);
    assert_eq!(failed("anonymous", "bad_credentials"), 1);
    assert_eq!(m.total("ringmq_auth_failures_total"), 2);
    let jwt = |result| {
        m.value(
            "ringmq_auth_cache_lookups_total",
            &[("cache", "jwt"), ("result", result)],
        )
    };
    // Three token verifications; each is a hit or a miss, and the first is a miss.
    assert_eq!(jwt("hit") + jwt("miss"), 3, "{m:#?}");
    assert!(jwt("miss") >= 2, "{m:#?}");
    assert_eq!(m.value("ringmq_registry_version", &[]), 1);

    // A valid change is a reload; an invalid file is refused and counted as an error.
    fs::write(&registry_path, registry("ringmq-2")).unwrap();
    scrape_until(http, "the reload counted", |m| {
        m.value("ringmq_registry_reloads_total", &[("result", "ok")]) == 1
            && m.value("ringmq_registry_version", &[]) == 2
    });
    fs::write(&registry_path, "{ not json").unwrap();
    let m = scrape_until(http, "the refused reload counted", |m| {
        m.value("ringmq_registry_reloads_total", &[("result", "error")]) == 1
    });
    assert_eq!(m.value("ringmq_registry_version", &[]), 2);
    assert_eq!(
        m.value("ringmq_registry_reloads_total", &[("result", "ok")]),
        1
    );
}

/// `$SYS/broker/...` topics published every `sys_interval_secs` as retained messages reach
/// mosquitto_sub with the current counts; `#` does not match them; clients cannot publish there.
#[test]
fn sys_topics_reach_mosquitto_sub() {
    let b = Broker::start(BrokerOpts::new().config("[metrics]\nsys_interval_secs = 1\n"));
    let mut all = b.v5("s-all");
    all.subscribe_ok("#", QoS::AtMostOnce);
    let mut publisher = b.v5("s-pub");
    for i in 0..3 {
        let reason = publisher.publish(msg("s/x", format!("m{i}")).qos(QoS::AtLeastOnce));
        assert_eq!(reason, Some(ReasonCode::SUCCESS));
    }
    for _ in 0..3 {
        all.expect_publish();
    }
    // Not accepted from a client: v5 QoS 1 gets 0x87, QoS 0 is dropped.
    let fake = msg("$SYS/broker/clients/connected", "999").retain(true);
    publisher.publish(fake.clone());
    let refused = publisher.publish(fake.qos(QoS::AtLeastOnce));
    assert_eq!(refused, Some(ReasonCode::NOT_AUTHORIZED));

    // The first publication (on shard 0's first tick) has happened once a subscriber to a
    // `$SYS` topic gets a value, retained or live.
    let mut watch = b.v5("s-watch");
    watch.subscribe_ok("$SYS/broker/version", QoS::AtMostOnce);
    let version = watch.expect_publish();
    assert!(
        text(&version).starts_with("ringmq version "),
        "{}",
        text(&version)
    );

    // Retained values first (2), then two publications (4 more).
    let sub = mosquitto_sub(
        &b,
        &[
            "-V",
            "5",
            "-t",
            "$SYS/broker/clients/connected",
            "-t",
            "$SYS/broker/messages/received",
            "-C",
            "6",
            "-W",
            "15",
        ],
    );
    let out = sub.wait(Duration::from_secs(20));
    out.assert_success();
    let lines = out.messages();
    assert_eq!(lines.len(), 6, "{out}");
    assert!(lines[0].retain && lines[1].retain, "{out}");
    assert!(lines[2..].iter().all(|l| !l.retain), "{out}");
    let values = |topic: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.topic == topic)
            .map(|l| l.payload.clone())
            .collect()
    };
    let connected = values("$SYS/broker/clients/connected");
    let received = values("$SYS/broker/messages/received");
    assert_eq!((connected.len(), received.len()), (3, 3), "{out}");
    // The last publication came a whole interval after mosquitto_sub subscribed: s-all, s-pub,
    // s-watch and mosquitto_sub itself; the three accepted messages.
    assert_eq!(connected.last().unwrap(), "4", "{out}");
    assert_eq!(received.last().unwrap(), "3", "{out}");
    assert!(!connected.contains(&"999".to_owned()), "{out}");

    // `#` matched none of them [MQTT-4.7.2-1]: the next thing it gets is this marker.
    publisher.publish(msg("s/marker", "end"));
    let next = all.expect_publish();
    assert_eq!(next.topic.as_str(), "s/marker");

    // A subscriber to `$SYS/#` gets every retained value at once.
    let mut late = b.v5("s-late");
    late.subscribe_ok("$SYS/#", QoS::AtMostOnce);
    let first = late.expect_publish();
    assert!(first.retain && first.topic.as_str().starts_with("$SYS/broker/"));
}

/// A `[metrics] bind` address already in use stops startup with an error naming the key and
/// the address.
#[test]
fn metrics_bind_in_use_is_a_startup_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (_, out) = run_broker_with_bad_config(
        &format!("[metrics]\nbind = \"{addr}\"\n"),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out}");
    assert!(
        out.stderr.contains(&format!("metrics.bind {addr}")) && out.stderr.contains("in use"),
        "{out}"
    );
}

/// JWKS fetches are counted per endpoint URL: one endpoint that serves a key set (up, with an
/// age) and one where nothing listens (failures, down, no age).
#[test]
fn jwks_fetch_metrics() {
    let good = TcpListener::bind("127.0.0.1:0").unwrap();
    let good_url = format!("http://{}/jwks", good.local_addr().unwrap());
    let key = rcgen::KeyPair::generate().unwrap();
    let raw = key.public_key_raw(); // 0x04 || x || y
    let b64 = |b: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    let jwks = json!({ "keys": [{ "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
        "kid": "k1", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]) }] })
    .to_string();
    std::thread::spawn(move || {
        for stream in good.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read(&mut [0u8; 4096]);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{jwks}",
                jwks.len()
            );
        }
    });
    // Nothing listens there: every fetch fails at connect.
    let bad_url = format!("http://127.0.0.1:{}/jwks", free_port());
    let endpoint = |url: &str| json!({ "url": url, "allowInsecureHttp": true, "refreshIntervalSeconds": 3600 });
    let registry = json!({ "namespace": { "clientAuthentication": {
        "customJwtAuthentication": { "tokenIssuer": "https://issuer.test", "jwks": endpoint(&good_url) },
        "oauth2JwtAuthentication": { "tokenIssuers": ["https://login.test/v2.0"], "jwks": endpoint(&bad_url) }
    }}});
    let dir = temp_dir("metrics-jwks");
    let path = dir.join("registry.json");
    fs::write(&path, registry.to_string()).unwrap();
    let port = free_port();
    let config = format!(
        "[auth]\nregistry = \"{}\"\n{}",
        path.display(),
        metrics_config(port, "sys_interval_secs = 0")
    );
    let _b = Broker::start(BrokerOpts::new().config(&config));
    let fetches = |m: &Scrape, url: &str, result: &str| {
        m.value(
            "ringmq_jwks_fetches_total",
            &[("issuer", url), ("result", result)],
        )
    };
    let m = scrape_until(local(port), "both endpoints fetched once", |m| {
        fetches(m, &good_url, "ok") >= 1 && fetches(m, &bad_url, "error") >= 1
    });
    assert_eq!(fetches(&m, &good_url, "error"), 0);
    assert_eq!(fetches(&m, &bad_url, "ok"), 0);
    assert_eq!(m.value("ringmq_jwks_up", &[("issuer", &good_url)]), 1);
    assert_eq!(m.value("ringmq_jwks_up", &[("issuer", &bad_url)]), 0);
    let age = m.value("ringmq_jwks_age_seconds", &[("issuer", &good_url)]);
    assert!(age < 60, "{age}");
    assert_eq!(m.count("ringmq_jwks_age_seconds"), 1, "{m:?}");
}

/// The families operators expect of any Prometheus target, and the per-packet-type and latency
/// ones: `process_*` read from the broker's /proc, `ringmq_build_info` with the commit it was
/// built from, packets counted exactly by type both ways after known traffic, and the delivery
/// latency histogram's count equal to the deliveries.
#[test]
fn process_build_packet_and_latency_families() {
    let port = free_port();
    let b = Broker::start(BrokerOpts::new().config(&metrics_config(port, "sys_interval_secs = 0")));
    let http = local(port);
    let m = Scrape::get(http);
    assert!(m.value("process_open_fds", &[]) > 0);
    assert!(m.value("process_max_fds", &[]) >= m.value("process_open_fds", &[]));
    assert!(m.value("process_resident_memory_bytes", &[]) > 0);
    assert!(
        m.value("process_virtual_memory_bytes", &[])
            >= m.value("process_resident_memory_bytes", &[])
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let started = m.value("process_start_time_seconds", &[]);
    assert!(started <= now && started + 600 > now, "{started} vs {now}");
    assert_eq!(m.count("process_cpu_seconds_total"), 1);
    let (labels, one) = m
        .samples
        .iter()
        .find(|((n, _), _)| n == "ringmq_build_info")
        .map(|((_, l), v)| (l.clone(), *v))
        .expect("ringmq_build_info");
    assert_eq!(one, 1.0);
    assert_eq!(
        labels[0],
        ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())
    );
    assert_eq!(labels[1].0, "commit");
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    // build.rs: RINGMQ_BUILD_COMMIT when set at build time, else git's HEAD, else "unknown".
    let expected = std::env::var("RINGMQ_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or(head);
    match expected {
        Some(commit) if std::env::var_os("RINGMQ_BIN").is_none() => {
            assert_eq!(labels[1].1, commit)
        }
        _ => assert!(!labels[1].1.is_empty()),
    }

    let mut sub = b.v5("p-sub");
    sub.subscribe_ok("p/#", QoS::AtLeastOnce);
    let mut publisher = b.v5("p-pub");
    for i in 0..30 {
        publisher.publish(msg("p/zero", format!("{i}")));
    }
    for i in 0..10 {
        let one = msg("p/one", format!("{i}")).qos(QoS::AtLeastOnce);
        assert_eq!(publisher.publish(one), Some(ReasonCode::SUCCESS));
    }
    // The test client acknowledges QoS 1 itself.
    assert_eq!(sub.expect_publishes(40).len(), 40);
    publisher.send(&Packet::PingReq);
    assert!(matches!(publisher.expect_packet(WAIT), Packet::PingResp));
    let m = scrape_until(http, "the acknowledgements and the ping counted", |m| {
        m.value("ringmq_packets_received_total", &[("type", "puback")]) == 10
            && m.value("ringmq_packets_received_total", &[("type", "pingreq")]) == 1
    });
    let rx = |t| m.value("ringmq_packets_received_total", &[("type", t)]);
    let tx = |t| m.value("ringmq_packets_sent_total", &[("type", t)]);
    assert_eq!((rx("connect"), rx("subscribe"), rx("publish")), (2, 1, 40));
    assert_eq!((rx("pubrec"), rx("disconnect"), rx("auth")), (0, 0, 0));
    assert_eq!((tx("connack"), tx("suback"), tx("publish")), (2, 1, 40));
    assert_eq!((tx("puback"), tx("pingresp"), tx("disconnect")), (10, 1, 0));
    assert_eq!(m.count("ringmq_packets_sent_total"), 15);
    // One observation per delivery; cumulative buckets ending at the count.
    let count = m.value("ringmq_delivery_latency_seconds_count", &[]);
    assert_eq!(count, 40);
    assert_eq!(count, m.total("ringmq_messages_sent_total"));
    let buckets: Vec<u64> = m
        .samples
        .iter()
        .filter(|((n, _), _)| n == "ringmq_delivery_latency_seconds_bucket")
        .map(|(_, v)| *v as u64)
        .collect();
    assert_eq!(buckets.len(), 20);
    assert_eq!(
        m.value("ringmq_delivery_latency_seconds_bucket", &[("le", "+Inf")]),
        40
    );
    assert!(m.value("ringmq_delivery_latency_seconds_bucket", &[("le", "10")]) <= 40);
}

/// deploy/grafana-dashboard.json cannot silently rot: it is a JSON model with a Prometheus
/// data source variable that every panel uses, and every metric name its queries use (panels
/// and template variables) is a family or sample name of a live scrape.
#[test]
fn grafana_dashboard_queries_existing_families() {
    let path = workspace_root().join("deploy/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&read_text(&path))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus data source variable"
    );
    let mut exprs = Vec::new();
    for v in vars {
        if let Some(q) = v["query"]["query"].as_str() {
            exprs.push(q.to_owned());
        }
    }
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut titles = std::collections::BTreeSet::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().expect("panel title");
        assert!(titles.insert(title), "two panels titled {title}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} queries nothing");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {title}");
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    let used: std::collections::BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|w| w.starts_with("ringmq_") || w.starts_with("process_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    // What the dashboard is for: these must be on it.
    for needed in [
        "ringmq_connections",
        "ringmq_messages_received_total",
        "ringmq_messages_sent_total",
        "ringmq_messages_dropped_total",
        "ringmq_delivery_latency_seconds_bucket",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
        "ringmq_shard_stalls_total",
        "ringmq_auth_failures_total",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }

    let port = free_port();
    let _b =
        Broker::start(BrokerOpts::new().config(&metrics_config(port, "sys_interval_secs = 0")));
    let (status, text) = http_get(local(port), "/metrics");
    assert_eq!(status, 200);
    let mut exported = std::collections::BTreeSet::new();
    for line in text.lines() {
        let name = match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        };
        exported.extend(name.map(str::to_owned));
    }
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which /metrics does not export"
    );
}
