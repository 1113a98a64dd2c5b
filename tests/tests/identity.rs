//! Identity end to end: the wiring around the core's authentication, through the real binary,
//! TLS and third-party clients. Client certificates reach the registry check through rustls
//! (mosquitto over mqtts); a CUSTOM-JWT token reaches it in the CONNECT properties (mosquitto
//! `-D`, paho) and in the 3.1.1 password; the registry file is loaded at startup (unused keys
//! warned about) and watched (an invalid file refused, a disabled client disconnected).
//!
//! The cases themselves run in-process on an injected clock, in engine/tests/identity.rs:
//! certificate chains, validation schemes and expiry, refusal codes per protocol version,
//! topic spaces, token expiry and re-authentication, the application client type's limits,
//! sessions per authentication name, and reloads of CAs, CRLs and permissions.
//!
//! mosquitto_pub/sub (v5) exit with the CONNACK reason code when refused (134 = 0x86,
//! 135 = 0x87), as they do against Mosquitto itself; 3.1.1 exits with the return code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringmq_tests::pki::{Pki, TlsBroker};
use ringmq_tests::tools::{SUB_FORMAT, TOOL_TIMEOUT, Tool, ToolOutput, python};
use serde_json::json;

const MOSQUITTO_INSTALL: &str = "apt-get install -y mosquitto-clients";

fn registry(ca_pem: &str, truck_state: &str) -> String {
    let r = json!({
        "namespace": { "clientAuthentication": {
            "alternativeAuthenticationNameSources": ["ClientCertificateSubject"],
            "customJwtAuthentication": {
                "tokenIssuer": "https://issuer.test",
                "audience": "ringmq",
                "hmacSecrets": ["test-secret-0123456789"],
                "acceptTokenInPassword": true,
                "clientTypeClaims": { "role": "app" }
            }
        }},
        // One registered CA: the single-line form Event Grid's guide uploads.
        "caCertificates": [ { "name": "test-ca", "encodedCertificate": ca_pem.replace('\n', "") } ],
        "clients": [
            { "name": "truck-17", "authenticationName": "truck-17", "state": truck_state,
              "clientCertificateAuthentication": { "validationScheme": "SubjectMatchesAuthenticationName" },
              "attributes": { "type": "truck", "zone": "eu" },
              "description": "ignored with a warning" },
            { "name": "dashboard", "authenticationName": "dashboard",
              "clientCertificateAuthentication": { "validationScheme": "SubjectMatchesAuthenticationName" },
              "attributes": { "type": "app" } }
        ],
        "clientGroups": [
            { "name": "trucks", "query": "attributes.type = 'truck'" },
            { "name": "apps", "query": "attributes.type = 'app' OR attributes.role IN ['sensor', 'app']" }
        ],
        "topicSpaces": [
            { "name": "own-telemetry", "topicTemplates": ["fleet/${client.attributes.zone}/${client.authenticationName}/telemetry/#"] },
            { "name": "all-telemetry", "topicTemplates": ["fleet/+/+/telemetry/#"] }
        ],
        "permissionBindings": [
            { "name": "trucks-pub", "clientGroupName": "trucks", "topicSpaceName": "own-telemetry", "permission": "Publisher" },
            { "name": "trucks-sub", "clientGroupName": "trucks", "topicSpaceName": "own-telemetry", "permission": "Subscriber" },
            { "name": "apps-sub", "clientGroupName": "apps", "topicSpaceName": "all-telemetry", "permission": "Subscriber" },
            { "name": "apps-pub", "clientGroupName": "apps", "topicSpaceName": "all-telemetry", "permission": "Publisher" }
        ]
    });
    serde_json::to_string_pretty(&r).unwrap()
}

fn start(pki: &Pki, registry_json: &str) -> TlsBroker {
    fs::write(pki.dir.join("registry.json"), registry_json).unwrap();
    TlsBroker::start(pki, "optional", "[auth]\nregistry = \"registry.json\"\n")
}

/// Arguments for the TLS listener, presenting `{cert}.pem` (none when empty).
fn tls(pki: &Pki, b: &TlsBroker, cert: &str, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        b.tls_port.to_string(),
        "--cafile".into(),
        pki.path("ca.pem"),
    ];
    if !cert.is_empty() {
        v.extend([
            "--cert".into(),
            pki.path(&format!("{cert}.pem")),
            "--key".into(),
            pki.path(&format!("{cert}.key")),
        ]);
    }
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// Arguments for the plain listener.
fn plain(b: &TlsBroker, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        b.plain_port.to_string(),
    ];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

fn mosquitto_pub(args: Vec<String>) -> ToolOutput {
    Tool::spawn("mosquitto_pub", &args, MOSQUITTO_INSTALL).wait(TOOL_TIMEOUT)
}

/// mosquitto_sub with `args` plus `-d -F SUB_FORMAT`, once it has its SUBACK (a wait on its
/// output, not a sleep). Line-buffered through `stdbuf`, as `tools::mosquitto_sub` explains.
fn mosquitto_sub(args: Vec<String>) -> Tool {
    let mut all = vec!["-oL".to_owned(), "mosquitto_sub".to_owned()];
    all.extend(args);
    all.extend(["-d".to_owned(), "-F".to_owned(), SUB_FORMAT.to_owned()]);
    let mut tool = Tool::spawn("stdbuf", &all, MOSQUITTO_INSTALL);
    tool.wait_for_stdout("received SUBACK", TOOL_TIMEOUT);
    tool
}

fn all_output(o: &ToolOutput) -> String {
    format!("{}{}", o.stdout, o.stderr)
}

/// Waits (bounded) until the broker's log contains `needle`: the registry file is checked
/// every 0.5 s.
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

/// A token for `sub`, signed with the registry's secret (or `secret`), valid for an hour by
/// the real clock: the broker process reads the system time.
fn token(sub: &str, secret: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({ "sub": sub, "iss": "https://issuer.test", "aud": "ringmq", "iat": now, "exp": now + 3600, "role": "sensor" });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

const SECRET: &str = "test-secret-0123456789";

/// X.509 over mqtts: the client certificate rustls received is the identity the registry
/// checks, and its topic space applies (v5 and 3.1.1 publishers, a v5 subscriber; PUBACK
/// 0x87 outside it). A certificate of an unknown CA passes the TLS handshake (policy is the
/// registry's) and gets CONNACK 0x86. The registry's unused keys are warned about at load.
#[test]
fn certificate_identity_over_tls() {
    let pki = Pki::new();
    pki.leaf("truck", "truck-17", &pki.ca);
    pki.leaf("dashboard", "dashboard", &pki.ca);
    pki.leaf("rogue", "truck-17", &pki.rogue);
    let b = start(&pki, &registry(&pki.ca_pem(), "Enabled"));
    assert!(
        b.log().contains("clients[0].description"),
        "unused key warned:\n{}",
        b.log()
    );

    let sub = mosquitto_sub(tls(
        &pki,
        &b,
        "dashboard",
        &[
            "-i",
            "dash",
            "-t",
            "fleet/+/+/telemetry/#",
            "-C",
            "2",
            "-W",
            "10",
            "-V",
            "5",
        ],
    ));
    // One client id for every truck connection: a reconnect of the same id never races the
    // end of its previous session for the one session its authentication name may hold.
    for (topic, payload, version) in [
        ("fleet/eu/truck-17/telemetry/temp", "21.5", "5"),
        ("fleet/eu/truck-17/telemetry/rpm", "900", "311"),
    ] {
        let args = [
            "-i", "truck", "-t", topic, "-m", payload, "-q", "1", "-V", version,
        ];
        mosquitto_pub(tls(&pki, &b, "truck", &args)).assert_success();
    }
    let o = sub.wait(TOOL_TIMEOUT);
    let got: Vec<(String, String)> = o
        .assert_success()
        .messages()
        .into_iter()
        .map(|m| (m.topic, m.payload))
        .collect();
    assert_eq!(
        got,
        [
            ("fleet/eu/truck-17/telemetry/temp".into(), "21.5".into()),
            ("fleet/eu/truck-17/telemetry/rpm".into(), "900".into())
        ],
        "{o}"
    );

    let args = [
        "-i",
        "truck",
        "-t",
        "fleet/eu/truck-99/telemetry/temp",
        "-m",
        "x",
        "-q",
        "1",
        "-V",
        "5",
    ];
    let o = mosquitto_pub(tls(&pki, &b, "truck", &args));
    assert!(all_output(&o).contains("Not authorized"), "{o}");

    let o = mosquitto_pub(tls(&pki, &b, "rogue", &["-t", "t", "-m", "x", "-V", "5"]));
    assert_eq!(o.status.and_then(|s| s.code()), Some(134), "{o}");
}

/// CUSTOM-JWT in the CONNECT properties (mosquitto_pub `-D connect authentication-*`, paho)
/// and as the 3.1.1 password (mosquitto_pub `-P`): accepted, with the permissions the token's
/// claims give (PUBACK 0x87 outside them); a forged token gets CONNACK 0x86 (3.1.1: 0x04).
#[test]
fn custom_jwt_over_mosquitto_and_paho() {
    let pki = Pki::new();
    let b = start(&pki, &registry(&pki.ca_pem(), "Enabled"));
    let enhanced = |token: &str| -> Vec<String> {
        plain(
            &b,
            &[
                "-V",
                "5",
                "-D",
                "connect",
                "authentication-method",
                "CUSTOM-JWT",
                "-D",
                "connect",
                "authentication-data",
                token,
                "-t",
                "fleet/eu/s1/telemetry/t",
                "-m",
                "x",
                "-q",
                "1",
            ],
        )
    };
    // A token (so an authentication name) per client: each may hold one session, and the
    // previous tool's session may still be ending when the next one connects.
    mosquitto_pub(enhanced(&token("sensor-m5", SECRET))).assert_success();
    let password = |token: &str| -> Vec<String> {
        plain(
            &b,
            &[
                "-V",
                "311",
                "-u",
                "any",
                "-P",
                token,
                "-t",
                "fleet/eu/s1/telemetry/t",
                "-m",
                "x",
                "-q",
                "1",
            ],
        )
    };
    mosquitto_pub(password(&token("sensor-m3", SECRET))).assert_success();
    let forged = token("sensor-forged", "not-the-secret");
    let o = mosquitto_pub(enhanced(&forged));
    assert_eq!(o.status.and_then(|s| s.code()), Some(134), "{o}");
    let o = mosquitto_pub(password(&forged));
    assert_eq!(o.status.and_then(|s| s.code()), Some(4), "{o}");

    let port = b.plain_port.to_string();
    let good = token("sensor-paho", SECRET);
    let args = [
        port.as_str(),
        "CUSTOM-JWT",
        &good,
        "fleet/eu/p/telemetry/t",
        "not/allowed",
    ];
    let o = python("paho_jwt.py", &args).wait(TOOL_TIMEOUT);
    let out = all_output(&o);
    assert!(out.contains("CONNACK 0"), "{o}");
    assert!(out.contains("PUBACK fleet/eu/p/telemetry/t 0"), "{o}");
    assert!(out.contains("PUBACK not/allowed 135"), "{o}");
    let o = python("paho_jwt.py", &[port.as_str(), "CUSTOM-JWT", &forged]).wait(TOOL_TIMEOUT);
    assert!(all_output(&o).contains("CONNACK 134"), "{o}");
}

/// The registry file is watched: an invalid new file is refused and the old registry stays
/// in force; a file that disables a connected client disconnects it with 0x87.
#[test]
fn registry_reload_disables_a_live_session() {
    let pki = Pki::new();
    pki.leaf("truck", "truck-17", &pki.ca);
    pki.leaf("dashboard", "dashboard", &pki.ca);
    let b = start(&pki, &registry(&pki.ca_pem(), "Enabled"));
    let sub = mosquitto_sub(tls(
        &pki,
        &b,
        "truck",
        &[
            "-i",
            "live",
            "-t",
            "fleet/eu/truck-17/telemetry/#",
            "-V",
            "5",
            "-W",
            "15",
        ],
    ));

    fs::write(
        pki.dir.join("registry.json"),
        "{ \"clients\": [ { \"name\": 5 } ] }",
    )
    .unwrap();
    wait_for_log(&b, "registry reload refused");
    let args = [
        "-i",
        "p",
        "-t",
        "fleet/eu/truck-17/telemetry/x",
        "-m",
        "still-here",
        "-q",
        "1",
        "-V",
        "5",
    ];
    mosquitto_pub(tls(&pki, &b, "dashboard", &args)).assert_success();

    fs::write(
        pki.dir.join("registry.json"),
        registry(&pki.ca_pem(), "Disabled"),
    )
    .unwrap();
    let o = sub.wait(TOOL_TIMEOUT);
    let payloads: Vec<String> = o.messages().into_iter().map(|m| m.payload).collect();
    assert_eq!(payloads, ["still-here"], "old registry in force: {o}");
    assert!(
        all_output(&o).contains("DISCONNECT (135)"),
        "disconnected with 0x87: {o}\n{}",
        b.log()
    );
}
