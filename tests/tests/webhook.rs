//! Webhook authentication with Event Grid's contract, against a webhook the tests start
//! (tests/py/webhook_server.py: HTTPS with a test CA, a bearer token it checks, an answer per
//! user name). Allow with attributes selecting a client group, deny, expiry then
//! re-authentication (AUTH 0x19), slow beyond the timeout, 500, malformed JSON, no name,
//! connection refused, the circuit breaker, the decision cache — and a slow webhook delaying
//! no other client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use ringmq_codec::*;
use ringmq_tests::pki::Pki;
use ringmq_tests::tools::*;
use ringmq_tests::*;

const TOKEN: &str = "test-bearer-token-1";

/// The webhook server, killed on drop.
struct Hook {
    tool: Tool,
    port: u16,
}

impl Hook {
    fn start(pki: &Pki, slow_secs: &str) -> Hook {
        let cert = pki.path("server.pem");
        let key = pki.path("server.key");
        let mut tool = python(
            "webhook_server.py",
            &[
                "--cert",
                &cert,
                "--key",
                &key,
                "--token",
                TOKEN,
                "--slow-secs",
                slow_secs,
                "--short-secs",
                "2",
            ],
        );
        tool.wait_for_stdout("READY ", WAIT);
        let out = tool.stdout_so_far();
        let port = out
            .lines()
            .find_map(|l| l.strip_prefix("READY "))
            .and_then(|p| p.trim().parse().ok())
            .expect("READY <port>");
        Hook { tool, port }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/auth", self.port)
    }

    /// Requests the webhook got for `key`.
    fn requests(&self, key: &str) -> usize {
        let line = format!("REQ {key}");
        self.tool
            .stdout_so_far()
            .lines()
            .filter(|l| *l == line)
            .count()
    }
}

/// Files the broker config names: the bearer token and the test CA.
fn files(pki: &Pki) -> (PathBuf, String) {
    let token = pki.dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    (token, pki.path("ca.pem"))
}

fn webhook_config(pki: &Pki, url: Option<&str>, extra: &str) -> String {
    let (token, ca) = files(pki);
    let url = url.map(|u| format!("url = {u:?}\n")).unwrap_or_default();
    format!(
        "[auth.webhook]\n{url}bearer_token_file = {:?}\nca_file = {ca:?}\n{extra}\n",
        token.to_str().unwrap()
    )
}

fn connack(b: &Broker, version: ProtocolVersion, id: &str, user: &str) -> ReasonCode {
    let (_c, ack) = Client::handshake(b.addr(), Opts::new(version, id).login(user, b"pw"));
    ack.reason_code
}

/// The endpoint named in the registry's namespace, Event Grid's way; the attributes the
/// webhook returns select client groups, and so the topics a client may use.
#[test]
fn allow_with_attributes_selects_client_groups_and_deny_is_not_authorized() {
    let pki = Pki::new();
    let hook = Hook::start(&pki, "3");
    let registry = serde_json::json!({
        "namespace": { "properties": { "topicSpacesConfiguration": {
            "maximumClientSessionsPerAuthenticationName": 10,
            "clientAuthentication": { "webHookAuthentication": { "endpointUrl": hook.url() } }
        } } },
        "clientGroups": [
            { "name": "group-a", "query": "attributes.group = 'a' AND attributes.floor = 3" }
        ],
        "topicSpaces": [
            { "name": "a-space", "topicTemplates": ["a/#"] },
            { "name": "mine", "topicTemplates": ["own/${client.authenticationName}/#"] }
        ],
        "permissionBindings": [
            { "name": "a-pub", "clientGroupName": "group-a", "topicSpaceName": "a-space", "permission": "Publisher" },
            { "name": "a-sub", "clientGroupName": "group-a", "topicSpaceName": "a-space", "permission": "Subscriber" },
            { "name": "own-sub", "clientGroupName": "$all", "topicSpaceName": "mine", "permission": "Subscriber" }
        ]
    });
    std::fs::write(pki.dir.join("registry.json"), registry.to_string()).unwrap();
    let config = format!(
        "[auth]\nregistry = {:?}\n{}",
        pki.path("registry.json"),
        webhook_config(&pki, None, "")
    );
    // One shard: the decision cache is per shard (a second shard would ask again once).
    let b = Broker::start(BrokerOpts::new().shards(1).config(&config));

    let mut a = Client::connect(b.addr(), Opts::v5("wa").login("allow-a", b"pw"));
    assert_eq!(
        a.subscribe("a/#", QoS::AtLeastOnce),
        ReasonCode::GRANTED_QOS_1
    );
    // The authentication name from the webhook fills the topic template.
    assert_eq!(
        a.subscribe("own/dev-a/x", QoS::AtMostOnce),
        ReasonCode::GRANTED_QOS_0
    );
    let mut bb = Client::connect(b.addr(), Opts::v5("wb").login("allow-b", b"pw"));
    assert_eq!(
        bb.subscribe("a/#", QoS::AtLeastOnce),
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(
        bb.subscribe("own/dev-b/x", QoS::AtMostOnce),
        ReasonCode::GRANTED_QOS_0
    );
    // The attribute of a type Event Grid does not take is left out, with a log line.
    assert!(
        wait_until(WAIT, || b.log().contains("unsupported type ignored")),
        "{}",
        b.log()
    );
    // Deny: 0x87, 3.1.1 0x05; the errorReason is logged.
    assert_eq!(
        connack(&b, ProtocolVersion::V5, "wd", "deny"),
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(
        connack(&b, ProtocolVersion::V3_1_1, "wd3", "deny"),
        ReasonCode::NOT_AUTHORIZED
    );
    assert!(b.log().contains("revoked by test"), "{}", b.log());
    // The same credentials again: decided from the cache, the webhook is not asked.
    let before = hook.requests("allow-a");
    assert_eq!(before, 1);
    let _again = Client::connect(b.addr(), Opts::v5("wa").login("allow-a", b"pw"));
    assert_eq!(hook.requests("allow-a"), before);
    // Another password is other credentials: asked, and denied by the webhook.
    let (_c, ack) = Client::handshake(b.addr(), Opts::v5("wa").login("allow-a", b"wrong"));
    assert_eq!(ack.reason_code, ReasonCode::NOT_AUTHORIZED);
    assert_eq!(hook.requests("allow-a"), before + 1);
    // paho and mosquitto_pub too.
    let port = b.port().to_string();
    for version in ["5", "311"] {
        let out = python(
            "paho_login.py",
            &[
                "--port",
                &port,
                "--version",
                version,
                "--id",
                "paho-w",
                "--user",
                "allow-a",
                "--password",
                "pw",
            ],
        )
        .wait(TOOL_TIMEOUT);
        out.assert_success();
        assert!(out.stdout.contains("CONNACK rc=0 "), "{out}");
        let bad = mosquitto_pub(
            &b,
            &["-V", version, "-u", "deny", "-P", "x", "-t", "t", "-m", "m"],
        );
        assert!(!bad.status.is_some_and(|s| s.success()), "{bad}");
        let text = format!("{}{}", bad.stdout, bad.stderr).to_lowercase();
        assert!(text.contains("not authori"), "{bad}");
    }
}

/// Every way of getting no decision is 0x88 Server unavailable (3.1.1: 0x03).
#[test]
fn no_decision_is_server_unavailable() {
    let pki = Pki::new();
    let hook = Hook::start(&pki, "3");
    let extra = "timeout_ms = 1000\nbreaker_failures = 1000\n";
    let config = webhook_config(&pki, Some(&hook.url()), extra);
    let b = Broker::start(BrokerOpts::new().config(&config));
    for user in ["status500", "malformed", "noname", "slow"] {
        for (version, id) in [(ProtocolVersion::V5, "e5"), (ProtocolVersion::V3_1_1, "e3")] {
            assert_eq!(
                connack(&b, version, id, user),
                ReasonCode::SERVER_UNAVAILABLE,
                "{user} {version:?}"
            );
        }
    }
    assert!(b.log().contains("webhook gave no decision"), "{}", b.log());
    // The bearer token file is re-read when it changes: a wrong token → 401 → 0x88; back.
    let token = pki.dir.join("token");
    std::fs::write(&token, "wrong-token\n").unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        connack(&b, ProtocolVersion::V5, "t1", "allow-b") == ReasonCode::SERVER_UNAVAILABLE
    }));
    assert!(hook.requests("unauthorized") >= 1);
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        connack(&b, ProtocolVersion::V5, "t2", "allow-b") == ReasonCode::SUCCESS
    }));
}

#[test]
fn connection_refused_is_server_unavailable() {
    let pki = Pki::new();
    let url = format!("https://127.0.0.1:{}/auth", free_port());
    let b = Broker::start(BrokerOpts::new().config(&webhook_config(&pki, Some(&url), "")));
    assert_eq!(
        connack(&b, ProtocolVersion::V5, "r5", "allow-b"),
        ReasonCode::SERVER_UNAVAILABLE
    );
    assert_eq!(
        connack(&b, ProtocolVersion::V3_1_1, "r3", "allow-b"),
        ReasonCode::SERVER_UNAVAILABLE
    );
}

/// After `breaker_failures` failures in a row the endpoint is not called during the
/// cool-down (0x88 at once), then one probe closes the breaker again.
#[test]
fn the_circuit_breaker_refuses_fast_then_probes() {
    let pki = Pki::new();
    let hook = Hook::start(&pki, "3");
    let extra = "breaker_failures = 2\nbreaker_cooldown_secs = 2\n";
    let b =
        Broker::start(BrokerOpts::new().config(&webhook_config(&pki, Some(&hook.url()), extra)));
    for id in ["f1", "f2"] {
        assert_eq!(
            connack(&b, ProtocolVersion::V5, id, "status500"),
            ReasonCode::SERVER_UNAVAILABLE
        );
    }
    assert_eq!(hook.requests("status500"), 2);
    // Open: refused without a call.
    assert_eq!(
        connack(&b, ProtocolVersion::V5, "f3", "allow-b"),
        ReasonCode::SERVER_UNAVAILABLE
    );
    assert!(b.log().contains("refused fast"), "{}", b.log());
    assert_eq!(hook.requests("allow-b"), 0);
    // After the cool-down the probe goes through and succeeds.
    assert!(wait_until(Duration::from_secs(10), || {
        connack(&b, ProtocolVersion::V5, "f4", "allow-b") == ReasonCode::SUCCESS
    }));
    assert_eq!(hook.requests("allow-b"), 1);
}

/// A webhook answering after 3 s delays nobody else: a message round trip between two other
/// clients of the same (single) shard completes while the slow CONNECT waits, which the
/// webhook has not answered yet at that point (it prints `DONE slow` only after answering).
#[test]
fn a_slow_webhook_delays_no_other_client() {
    let pki = Pki::new();
    let hook = Hook::start(&pki, "3");
    let b = Broker::start(BrokerOpts::new().shards(1).config(&webhook_config(
        &pki,
        Some(&hook.url()),
        "",
    )));
    let mut sub = Client::connect(b.addr(), Opts::v5("s-sub").login("allow-b", b"pw"));
    sub.subscribe_ok("rt/#", QoS::AtLeastOnce);
    let mut publ = Client::connect(b.addr(), Opts::v5("s-pub").login("allow-a", b"pw"));
    let mut slow = Client::open(b.addr(), ProtocolVersion::V5);
    slow.send(&Opts::v5("s-slow").login("slow", b"pw").into_packet());
    assert!(wait_until(WAIT, || hook.requests("slow") == 1));
    for i in 0..10 {
        assert_eq!(
            publ.publish(msg("rt/x", format!("m{i}")).qos(QoS::AtLeastOnce)),
            Some(ReasonCode::SUCCESS)
        );
        assert_eq!(
            sub.expect_publish_acked().payload,
            Bytes::from(format!("m{i}"))
        );
    }
    assert!(
        !hook.tool.stdout_so_far().contains("DONE slow"),
        "the round trips should have finished while the webhook was still thinking"
    );
    match slow.recv(Duration::from_secs(10)) {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert!(hook.tool.stdout_so_far().contains("DONE slow"));
}

/// `expiration` disconnects the client (0x87) unless it re-authenticated first: AUTH 0x19
/// goes to the webhook again with the new authentication data.
#[test]
fn expiration_disconnects_unless_reauthenticated() {
    let pki = Pki::new();
    let hook = Hook::start(&pki, "3");
    let b = Broker::start(BrokerOpts::new().config(&webhook_config(&pki, Some(&hook.url()), "")));
    let opts = |id: &str| Opts::v5(id).auth("WEBHOOK-TOKEN", b"tok-short");
    let mut renewing = Client::connect(b.addr(), opts("x-renew"));
    let mut lapsing = Client::connect(b.addr(), opts("x-lapse"));
    renewing.send(&Packet::Auth(Auth {
        reason_code: ReasonCode::RE_AUTHENTICATE,
        properties: AuthProperties {
            authentication_method: Some(s("WEBHOOK-TOKEN")),
            authentication_data: Some(Bytes::from_static(b"tok-long")),
            ..AuthProperties::default()
        },
    }));
    match renewing.recv(WAIT) {
        Some(Packet::Auth(a)) => assert_eq!(a.reason_code, ReasonCode::SUCCESS),
        other => panic!("expected AUTH success, got {other:?}"),
    }
    assert_eq!(hook.requests("tok-long"), 1);
    // The other one's token expires: DISCONNECT 0x87.
    lapsing.expect_disconnect_reason(ReasonCode::NOT_AUTHORIZED, Duration::from_secs(10));
    // By then the first token of the renewed connection has expired too: it is still here.
    renewing.subscribe_ok("renewed/t", QoS::AtMostOnce);
    renewing.publish0("renewed/t", "still here");
    assert_eq!(renewing.expect_publish().payload, Bytes::from("still here"));
    // A re-authentication the webhook denies ends the connection.
    renewing.send(&Packet::Auth(Auth {
        reason_code: ReasonCode::RE_AUTHENTICATE,
        properties: AuthProperties {
            authentication_method: Some(s("WEBHOOK-TOKEN")),
            authentication_data: Some(Bytes::from_static(b"deny")),
            ..AuthProperties::default()
        },
    }));
    renewing.expect_disconnect_reason(ReasonCode::NOT_AUTHORIZED, WAIT);
}

/// Plain http:// to anything but loopback is a configuration error naming the key.
#[test]
fn plain_http_to_a_remote_endpoint_stops_startup() {
    let (_path, out) = run_broker_with_bad_config(
        "[auth.webhook]\nurl = \"http://10.1.2.3/auth\"\n",
        Duration::from_secs(10),
    );
    assert!(!out.status.is_some_and(|s| s.success()), "{out}");
    assert!(
        out.stderr.contains("auth.webhook.url") && out.stderr.contains("loopback"),
        "{out}"
    );
}

/// `GET /metrics` from the broker's metrics listener on `port` (the body).
fn metrics_text(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The pool shows in /metrics: a CONNECT waiting for the webhook is counted as pending on its
/// shard while it waits; decisions are counted; the queue and the breaker are reported.
#[test]
fn pending_authentications_and_the_pool_are_in_metrics() {
    let pki = Pki::new();
    // The slow answer comes after 60 s: the CONNECT stays pending for the whole test.
    let hook = Hook::start(&pki, "60");
    let port = free_port();
    let config = format!(
        "{}[metrics]\nbind = \"127.0.0.1:{port}\"\n",
        webhook_config(&pki, Some(&hook.url()), "timeout_ms = 120000\n")
    );
    let b = Broker::start(BrokerOpts::new().shards(1).config(&config));
    assert_eq!(
        connack(&b, ProtocolVersion::V5, "m-ok", "allow-a"),
        ReasonCode::SUCCESS
    );
    let mut slow = Client::open(b.addr(), ProtocolVersion::V5);
    slow.send(&Opts::v5("m-slow").login("slow", b"pw").into_packet());
    assert!(wait_until(WAIT, || hook.requests("slow") == 1));
    let mut text = String::new();
    assert!(
        wait_until(WAIT, || {
            text = metrics_text(port);
            text.contains("ringmq_auth_pending{shard=\"0\"} 1")
        }),
        "{text}"
    );
    assert!(
        text.contains("ringmq_auth_pool_decided_total 1\n"),
        "{text}"
    );
    assert!(text.contains("ringmq_auth_pool_queued 0\n"), "{text}");
    assert!(text.contains("ringmq_webhook_breaker_open 0\n"), "{text}");
    assert!(!hook.tool.stdout_so_far().contains("DONE slow"));
}
