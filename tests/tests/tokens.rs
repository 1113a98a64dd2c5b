//! Tokens end to end through the real binary: keys from a JWKS endpoint served by this test
//! on loopback (rotation without a restart), OAUTH2-JWT principals authorized by role
//! assignments at both scopes, CUSTOM-JWT claim rules, and a reload that revokes a live
//! session's subscription. Clients: mosquitto_pub/sub and the harness client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use rcgen::KeyPair;
use ringmq_codec::{QoS, ReasonCode};
use ringmq_tests::client::{Client, Opts, PublishExt};
use ringmq_tests::pki::{Pki, TlsBroker};
use serde_json::{Value, json};

/// An EC P-256 signing key with its `kid`.
struct SigningKey {
    kid: String,
    key: KeyPair,
}

impl SigningKey {
    fn new(kid: &str) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            key: KeyPair::generate().unwrap(),
        }
    }

    fn jwk(&self) -> Value {
        let raw = self.key.public_key_raw(); // 0x04 || x || y
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        json!({ "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
                "x": b64.encode(&raw[1..33]), "y": b64.encode(&raw[33..65]) })
    }

    fn token(&self, claims: Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let key =
            jsonwebtoken::EncodingKey::from_ec_pem(self.key.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

/// Serves the current JWKS document over plain HTTP on 127.0.0.1 until the test ends.
struct JwksServer {
    addr: SocketAddr,
    keys: Arc<Mutex<Vec<Value>>>,
}

impl JwksServer {
    fn start(keys: Vec<Value>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = Arc::new(Mutex::new(keys));
        let served = keys.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let body = json!({ "keys": *served.lock().unwrap() }).to_string();
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        JwksServer { addr, keys }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    fn set(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn registry(jwks_url: &str, extra_bindings: Value, roles: Value) -> String {
    let jwks =
        json!({ "url": jwks_url, "allowInsecureHttp": true, "refreshIntervalSeconds": 3600 });
    let mut bindings = vec![
        json!({ "name": "devices-pub", "clientGroupName": "devices", "topicSpaceName": "devices", "permission": "Publisher" }),
    ];
    if let Some(extra) = extra_bindings.as_array() {
        bindings.extend(extra.iter().cloned());
    }
    serde_json::to_string_pretty(&json!({
        "namespace": { "clientAuthentication": {
            "customJwtAuthentication": {
                "tokenIssuer": "https://issuer.test", "audience": "ringmq", "jwks": jwks,
                "pubRulesClaim": "pub_rules", "subRulesClaim": "sub_rules", "claimRulesMode": "restrict"
            },
            "oauth2JwtAuthentication": { "tokenIssuers": ["https://login.test/tenant/v2.0"], "jwks": jwks }
        }},
        "clientGroups": [ { "name": "devices", "query": "attributes.kind = 'device'" } ],
        "topicSpaces": [
            { "name": "devices", "topicTemplates": ["devices/${client.authenticationName}/#"] },
            { "name": "telemetry", "topicTemplates": ["telemetry/#"] },
            { "name": "commands", "topicTemplates": ["commands/#"] }
        ],
        "permissionBindings": bindings,
        "roleAssignments": roles
    }))
    .unwrap()
}

fn custom(key: &SigningKey, sub: &str, extra: Value) -> String {
    let mut claims = json!({ "iss": "https://issuer.test", "aud": "ringmq", "sub": sub, "exp": now() + 3600, "kind": "device" });
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    key.token(claims)
}

fn entra(key: &SigningKey, oid: &str) -> String {
    key.token(json!({ "iss": "https://login.test/tenant/v2.0", "aud": "https://eventgrid.azure.net/", "oid": oid, "sub": "ignored", "exp": now() + 3600 }))
}

fn pub_args(port: u16, method: &str, token: &str, topic: &str) -> Vec<String> {
    [
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-V",
        "5",
        "-D",
        "connect",
        "authentication-method",
        method,
        "-D",
        "connect",
        "authentication-data",
        token,
        "-t",
        topic,
        "-m",
        "x",
        "-q",
        "1",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

fn run(args: &[String]) -> Output {
    Command::new("mosquitto_pub")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_pub (install mosquitto-clients)")
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn denied(o: &Output) -> bool {
    String::from_utf8_lossy(&o.stderr).contains("Not authorized")
        || String::from_utf8_lossy(&o.stdout).contains("Not authorized")
}

fn start(pki: &Pki, registry_json: &str) -> TlsBroker {
    fs::write(pki.dir.join("registry.json"), registry_json).unwrap();
    TlsBroker::start(pki, "none", "[auth]\nregistry = \"registry.json\"\n")
}

/// JWKS: a token signed with the published key is accepted; after the issuer rotates to a new
/// key, the first token with the new kid triggers an early fetch (refused meanwhile), the next
/// attempt is accepted, and the retired key is refused — no restart.
#[test]
fn jwks_key_rotation_without_restart() {
    let k1 = SigningKey::new("k1");
    let k2 = SigningKey::new("k2");
    let jwks = JwksServer::start(vec![k1.jwk()]);
    let pki = Pki::new();
    let b = start(&pki, &registry(&jwks.url(), json!([]), json!([])));
    let port = b.plain_port;
    let o = run(&pub_args(
        port,
        "CUSTOM-JWT",
        &custom(&k1, "dev-1", json!({})),
        "devices/dev-1/t",
    ));
    assert!(o.status.success(), "k1 accepted: {}", show(&o));

    jwks.set(vec![k2.jwk()]);
    let t2 = custom(&k2, "dev-1", json!({}));
    let mut accepted = false;
    for _ in 0..20 {
        let o = run(&pub_args(port, "CUSTOM-JWT", &t2, "devices/dev-1/t"));
        if o.status.success() {
            accepted = true;
            break;
        }
        assert_eq!(
            o.status.code(),
            Some(134),
            "refused as bad credentials until fetched: {}",
            show(&o)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(accepted, "the new key was never fetched:\n{}", b.log());
    let o = run(&pub_args(
        port,
        "CUSTOM-JWT",
        &custom(&k1, "dev-1", json!({})),
        "devices/dev-1/t",
    ));
    assert_eq!(
        o.status.code(),
        Some(134),
        "retired key refused: {}",
        show(&o)
    );
}

/// OAUTH2-JWT principals (by `oid`) get permissions from role assignments: a Publisher role
/// scoped to one topic space, a Subscriber role at namespace scope; nothing else.
#[test]
fn oauth2_role_assignments_at_both_scopes() {
    let key = SigningKey::new("entra");
    let jwks = JwksServer::start(vec![key.jwk()]);
    let pki = Pki::new();
    let roles = json!([
        { "principalId": "oid-publisher", "roleDefinitionName": "EventGrid TopicSpaces Publisher", "scope": "/topicSpaces/telemetry" },
        { "principalId": "oid-reader", "roleDefinitionName": "EventGrid TopicSpaces Subscriber", "scope": "/" }
    ]);
    let b = start(&pki, &registry(&jwks.url(), json!([]), roles));
    let port = b.plain_port;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // The namespace-scoped subscriber may subscribe to any topic space.
    let (mut reader, ack) = Client::handshake(
        addr,
        Opts::v5("reader").auth("OAUTH2-JWT", entra(&key, "oid-reader").as_bytes()),
    );
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{ack:?}");
    reader.subscribe_ok("telemetry/#", QoS::AtLeastOnce);
    reader.subscribe_ok("commands/#", QoS::AtLeastOnce);

    // The publisher may publish in `telemetry` only.
    let o = run(&pub_args(
        port,
        "OAUTH2-JWT",
        &entra(&key, "oid-publisher"),
        "telemetry/line-1",
    ));
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(&reader.expect_publish_acked().payload[..], b"x");
    let o = run(&pub_args(
        port,
        "OAUTH2-JWT",
        &entra(&key, "oid-publisher"),
        "commands/line-1",
    ));
    assert!(denied(&o), "outside the role's scope: {}", show(&o));
    // A principal without a role assignment gets nothing.
    let o = run(&pub_args(
        port,
        "OAUTH2-JWT",
        &entra(&key, "oid-nobody"),
        "telemetry/x",
    ));
    assert!(denied(&o), "{}", show(&o));
}

/// CUSTOM-JWT claim rules in restrict mode: a publish must be allowed by the bindings AND match
/// a rule of the token's `pub_rules`; the rules alone grant nothing.
#[test]
fn claim_rules_restrict_the_bindings() {
    let key = SigningKey::new("k");
    let jwks = JwksServer::start(vec![key.jwk()]);
    let pki = Pki::new();
    let b = start(&pki, &registry(&jwks.url(), json!([]), json!([])));
    let port = b.plain_port;
    let t = custom(
        &key,
        "dev-7",
        json!({ "pub_rules": ["devices/dev-7/status", "telemetry/.*"] }),
    );
    let o = run(&pub_args(port, "CUSTOM-JWT", &t, "devices/dev-7/status"));
    assert!(o.status.success(), "binding and rule: {}", show(&o));
    let o = run(&pub_args(port, "CUSTOM-JWT", &t, "devices/dev-7/other"));
    assert!(denied(&o), "binding without rule: {}", show(&o));
    let o = run(&pub_args(port, "CUSTOM-JWT", &t, "telemetry/x"));
    assert!(denied(&o), "rule without binding: {}", show(&o));
}

/// A reload that removes a Subscriber binding removes the live session's subscription (no
/// more deliveries) and logs it; the connection itself stays (its identity is still valid).
#[test]
fn reload_revokes_a_live_subscription() {
    let key = SigningKey::new("k");
    let jwks = JwksServer::start(vec![key.jwk()]);
    let pki = Pki::new();
    let sub_binding = json!([{ "name": "devices-read-telemetry", "clientGroupName": "devices", "topicSpaceName": "telemetry", "permission": "Subscriber" },
                              { "name": "devices-write-telemetry", "clientGroupName": "devices", "topicSpaceName": "telemetry", "permission": "Publisher" }]);
    let b = start(&pki, &registry(&jwks.url(), sub_binding, json!([])));
    let addr = SocketAddr::from(([127, 0, 0, 1], b.plain_port));
    let (mut sub, _) = Client::handshake(
        addr,
        Opts::v5("watch").auth("CUSTOM-JWT", custom(&key, "dev-w", json!({})).as_bytes()),
    );
    sub.subscribe_ok("telemetry/#", QoS::AtLeastOnce);
    let (mut publ, _) = Client::handshake(
        addr,
        Opts::v5("pub").auth("CUSTOM-JWT", custom(&key, "dev-p", json!({})).as_bytes()),
    );
    publ.publish(ringmq_tests::client::msg("telemetry/a", "before").qos(QoS::AtLeastOnce));
    assert_eq!(&sub.expect_publish_acked().payload[..], b"before");

    // Keep the Publisher binding, drop the Subscriber one.
    let only_pub = json!([{ "name": "devices-write-telemetry", "clientGroupName": "devices", "topicSpaceName": "telemetry", "permission": "Publisher" }]);
    fs::write(
        pki.dir.join("registry.json"),
        registry(&jwks.url(), only_pub, json!([])),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !b
        .log()
        .contains("subscription removed: no longer authorized")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no revocation logged:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    publ.publish(ringmq_tests::client::msg("telemetry/a", "after").qos(QoS::AtLeastOnce));
    assert!(
        sub.recv(Duration::from_millis(800)).is_none(),
        "no delivery after the revocation"
    );
    sub.ping();
}
