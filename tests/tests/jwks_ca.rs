//! `[auth] jwks_ca_file` through the real binary: the registry's JWT issuer publishes its keys
//! on an HTTPS endpoint (Python's `http.server` + `ssl` on 127.0.0.1) whose certificate comes
//! from the test's private CA. With `jwks_ca_file` naming that CA the broker fetches the keys
//! and a token in the password is accepted (mosquitto_pub exits 0); without it the fetch fails
//! (public web roots only) and the same token is refused with 0x86 (exit 134).
//!
//! The per-issuer `caPem` and the fetch itself are tested in auth/tests/jwt_jwks_ca.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use rcgen::KeyPair;
use ringmq_tests::pki::{Pki, TlsBroker};
use ringmq_tests::tools::{TOOL_TIMEOUT, Tool, ToolOutput, python};
use serde_json::json;

const ISSUER: &str = "https://idp.corp.example";

/// Starts the HTTPS JWKS endpoint serving the public half of `key` as `kid` `k1`; returns it
/// (killed on drop) and its URL.
fn jwks_endpoint(pki: &Pki, key: &KeyPair) -> (Tool, String) {
    // An uncompressed P-256 point: 0x04 || x || y.
    let raw = key.public_key_raw();
    assert_eq!(raw.len(), 65);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let doc = json!({ "keys": [ { "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
        "use": "sig", "x": b64(&raw[1..33]), "y": b64(&raw[33..]) } ] });
    let path = pki.dir.join("jwks.json");
    fs::write(&path, doc.to_string()).unwrap();
    let mut server = python(
        "https_jwks.py",
        &[
            &pki.path("server.pem"),
            &pki.path("server.key"),
            &path.display().to_string(),
        ],
    );
    server.wait_for_stdout("PORT ", TOOL_TIMEOUT);
    let out = server.stdout_so_far();
    let port = out
        .lines()
        .find_map(|l| l.strip_prefix("PORT "))
        .unwrap()
        .trim()
        .to_owned();
    (server, format!("https://127.0.0.1:{port}/keys"))
}

fn start(pki: &Pki, jwks_url: &str, ca_file: bool) -> TlsBroker {
    let registry = json!({ "namespace": { "clientAuthentication": { "customJwtAuthentication": {
        "tokenIssuer": ISSUER, "audience": "ringmq", "acceptTokenInPassword": true,
        "jwks": { "url": jwks_url } } } } });
    fs::write(pki.dir.join("registry.json"), registry.to_string()).unwrap();
    let ca = if ca_file {
        "jwks_ca_file = \"ca.pem\"\n"
    } else {
        ""
    };
    TlsBroker::start(
        pki,
        "none",
        &format!("[auth]\nregistry = \"registry.json\"\n{ca}"),
    )
}

fn token(key: &KeyPair) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims =
        json!({ "sub": "sensor-1", "iss": ISSUER, "aud": "ringmq", "iat": now, "exp": now + 3600 });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &enc).unwrap()
}

fn publish_with_token(b: &TlsBroker, token: &str) -> ToolOutput {
    let args: Vec<String> = [
        "-h",
        "127.0.0.1",
        "-p",
        &b.plain_port.to_string(),
        "-V",
        "5",
        "-u",
        "sensor-1",
        "-P",
        token,
        "-t",
        "t",
        "-m",
        "x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Tool::spawn(
        "mosquitto_pub",
        &args,
        "apt-get install -y mosquitto-clients",
    )
    .wait(TOOL_TIMEOUT)
}

fn wait_for_log(b: &TlsBroker, needle: &str) {
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

#[test]
fn jwks_ca_file_trusts_a_private_ca() {
    let pki = Pki::new();
    let key = KeyPair::generate().unwrap();
    let (_server, url) = jwks_endpoint(&pki, &key);
    let token = token(&key);

    let without = start(&pki, &url, false);
    wait_for_log(&without, "JWKS fetch failed");
    let refused = publish_with_token(&without, &token);
    assert_eq!(
        refused.status.and_then(|s| s.code()),
        Some(134),
        "{refused}\n{}",
        without.log()
    );

    let with = start(&pki, &url, true);
    wait_for_log(&with, "JWKS fetched");
    publish_with_token(&with, &token).assert_success();
}
