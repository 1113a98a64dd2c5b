//! `wss` listeners (MQTT over WebSockets over TLS), through the real binary. Clients: paho-mqtt 2.x with transport="websockets" and `tls_set`
//! (tests/py/paho_wss.py; mosquitto_pub/sub do not speak WebSockets) and Python's `ssl` to
//! read the certificate a listener presents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use ringmq_tests::{WAIT, wait_until, workspace_root};
use serde_json::json;
use support::{Pki, TlsBroker};

/// The registry of the identity tests, reduced: truck-17 authenticates by certificate and
/// may use `fleet/eu/truck-17/telemetry/#`; JWT clients with role `sensor` may use
/// `fleet/+/+/telemetry/#`.
fn registry(pki: &Pki) -> String {
    let r = json!({
        "namespace": { "clientAuthentication": {
            "alternativeAuthenticationNameSources": ["ClientCertificateSubject"],
            "customJwtAuthentication": {
                "tokenIssuer": "https://issuer.test",
                "audience": "ringmq",
                "hmacSecrets": ["test-secret-0123456789"],
                "acceptTokenInPassword": true
            }
        }},
        "caCertificates": [ { "name": "test-ca", "encodedCertificate": pki.ca_pem().replace('\n', "") } ],
        "clients": [
            { "name": "truck-17", "authenticationName": "truck-17",
              "clientCertificateAuthentication": { "validationScheme": "SubjectMatchesAuthenticationName" },
              "attributes": { "type": "truck", "zone": "eu" } }
        ],
        "clientGroups": [
            { "name": "trucks", "query": "attributes.type = 'truck'" },
            { "name": "sensors", "query": "attributes.role IN ['sensor']" }
        ],
        "topicSpaces": [
            { "name": "own-telemetry", "topicTemplates": ["fleet/${client.attributes.zone}/${client.authenticationName}/telemetry/#"] },
            { "name": "all-telemetry", "topicTemplates": ["fleet/+/+/telemetry/#"] }
        ],
        "permissionBindings": [
            { "name": "trucks-pub", "clientGroupName": "trucks", "topicSpaceName": "own-telemetry", "permission": "Publisher" },
            { "name": "trucks-sub", "clientGroupName": "trucks", "topicSpaceName": "own-telemetry", "permission": "Subscriber" },
            { "name": "sensors-pub", "clientGroupName": "sensors", "topicSpaceName": "all-telemetry", "permission": "Publisher" },
            { "name": "sensors-sub", "clientGroupName": "sensors", "topicSpaceName": "all-telemetry", "permission": "Subscriber" }
        ]
    });
    serde_json::to_string_pretty(&r).unwrap()
}

/// A broker with the registry and two `wss` listeners: client certificate required (port 0)
/// and optional (port 1).
fn registry_broker(pki: &Pki) -> TlsBroker {
    fs::write(pki.dir.join("registry.json"), registry(pki)).unwrap();
    TlsBroker::start_listeners(
        pki,
        "[auth]\nregistry = \"registry.json\"\n",
        &[("wss", "required"), ("wss", "optional")],
    )
}

fn script() -> std::path::PathBuf {
    workspace_root().join("tests/py/paho_wss.py")
}

/// Runs paho_wss.py to completion; returns stdout and stderr.
fn paho(args: &[&str]) -> String {
    let o = Command::new("python3")
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python3 with paho-mqtt 2.x (pip install 'paho-mqtt>=2,<3')");
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// paho v5 over `wss` with the test CA and a client certificate: CONNACK 0, the certificate
/// maps to truck-17 (its own topics are allowed, another is refused with 0x87), and its
/// messages come back through its subscription. A certificate from an unknown CA gets 0x86.
#[test]
fn paho_wss_authenticates_by_client_certificate() {
    let pki = Pki::new();
    pki.leaf("rogue", "truck-17", &pki.rogue);
    let b = registry_broker(&pki);
    for port in &b.tls_ports {
        let port = port.to_string();
        let out = paho(&[
            "roundtrip",
            &port,
            &pki.path("ca.pem"),
            "--cert",
            &pki.path("client.pem"),
            "--key",
            &pki.path("client.key"),
            "--sub",
            "fleet/eu/truck-17/telemetry/#",
            "--pub",
            "fleet/eu/truck-17/telemetry/temp",
            "--pub",
            "fleet/eu/truck-99/telemetry/temp",
        ]);
        assert!(out.contains("CONNACK 0"), "port {port}: {out}");
        assert!(out.contains("SUBACK 1"), "port {port}: {out}");
        assert!(
            out.contains("PUBACK fleet/eu/truck-17/telemetry/temp 0"),
            "port {port}: {out}"
        );
        assert!(
            out.contains("PUBACK fleet/eu/truck-99/telemetry/temp 135"),
            "another truck's topic is refused: {out}"
        );
        assert!(
            out.contains("MSG fleet/eu/truck-17/telemetry/temp wss-0"),
            "port {port}: {out}"
        );
        assert!(!out.contains("truck-99/telemetry/temp wss"), "{out}");

        let out = paho(&[
            "roundtrip",
            &port,
            &pki.path("ca.pem"),
            "--cert",
            &pki.path("rogue.pem"),
            "--key",
            &pki.path("rogue.key"),
        ]);
        assert!(out.contains("CONNACK 134"), "port {port}: {out}");
    }
}

/// A listener with `client_certificate = "required"` refuses a client without one in the
/// TLS handshake: no CONNACK, and the broker logs why.
#[test]
fn wss_required_certificate_refuses_a_client_without_one() {
    let pki = Pki::new();
    let b = registry_broker(&pki);
    let out = paho(&[
        "roundtrip",
        &b.tls_ports[0].to_string(),
        &pki.path("ca.pem"),
        "--pub",
        "fleet/eu/x/telemetry/t",
    ]);
    assert!(out.contains("REFUSED"), "{out}");
    assert!(!out.contains("CONNACK"), "{out}");
    assert!(
        wait_until(WAIT, || b.log().contains("TLS: peer sent no certificates")),
        "{}",
        b.log()
    );
}

fn token(sub: &str, secret: &[u8]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({ "sub": sub, "iss": "https://issuer.test", "aud": "ringmq",
        "iat": now, "exp": now + 3600, "role": "sensor" });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// JWT over `wss` (CUSTOM-JWT enhanced authentication in CONNECT, no client certificate on
/// the optional listener): the token's role grants `fleet/+/+/telemetry/#`, so the publish
/// comes back and another topic gets 0x87; a forged token gets CONNACK 0x86.
#[test]
fn paho_wss_jwt_enhanced_authentication() {
    let pki = Pki::new();
    let b = registry_broker(&pki);
    let port = b.tls_ports[1].to_string();
    let good = token("wss-sensor", b"test-secret-0123456789");
    let out = paho(&[
        "roundtrip",
        &port,
        &pki.path("ca.pem"),
        "--jwt",
        "CUSTOM-JWT",
        &good,
        "--sub",
        "fleet/+/+/telemetry/#",
        "--pub",
        "fleet/eu/s1/telemetry/t",
        "--pub",
        "not/allowed",
    ]);
    assert!(out.contains("CONNACK 0"), "{out}");
    assert!(out.contains("PUBACK fleet/eu/s1/telemetry/t 0"), "{out}");
    assert!(out.contains("PUBACK not/allowed 135"), "{out}");
    assert!(out.contains("MSG fleet/eu/s1/telemetry/t wss-0"), "{out}");
    let forged = token("wss-sensor", b"not-the-secret");
    let out = paho(&[
        "roundtrip",
        &port,
        &pki.path("ca.pem"),
        "--jwt",
        "CUSTOM-JWT",
        &forged,
    ]);
    assert!(out.contains("CONNACK 134"), "{out}");
}
