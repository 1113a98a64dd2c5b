//! Identity end to end, through the real binary and mosquitto clients: X.509 client
//! authentication against a registry (Event Grid schemes), topic-space authorization, live
//! reload (a disabled client is disconnected), and JWT enhanced authentication.
//!
//! mosquitto_pub/sub (v5) exit with the CONNACK reason code when refused (134 = 0x86,
//! 135 = 0x87), as they do against Mosquitto itself; 3.1.1 exits with the return code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringmq_tests::pki::{Pki, TlsBroker};
use serde_json::json;

fn registry(pki: &Pki, ca_pem: &str, truck_state: &str, extra: serde_json::Value) -> String {
    let mut r = json!({
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
    if let (Some(obj), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    let _ = pki;
    serde_json::to_string_pretty(&r).unwrap()
}

fn start(pki: &Pki, registry_json: &str) -> TlsBroker {
    fs::write(pki.dir.join("registry.json"), registry_json).unwrap();
    TlsBroker::start(pki, "optional", "[auth]\nregistry = \"registry.json\"\n")
}

fn tls(pki: &Pki, b: &TlsBroker, cert: &str, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "-h",
        "127.0.0.1",
        "-p",
        &b.tls_port.to_string(),
        "--cafile",
        &pki.path("ca.pem"),
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if !cert.is_empty() {
        v.extend([
            "--cert".to_string(),
            pki.path(&format!("{cert}.pem")),
            "--key".to_string(),
            pki.path(&format!("{cert}.key")),
        ]);
    }
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

fn run(program: &str, args: &[String]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (install mosquitto-clients)"))
}

fn spawn(program: &str, args: &[String]) -> Child {
    Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn settle() {
    std::thread::sleep(Duration::from_millis(700));
}

/// X.509 + topic spaces: truck-17 publishes only under its own templated topic; the dashboard
/// subscribes within `fleet/+/+/telemetry/#` but not to `fleet/#`. v5 and 3.1.1.
#[test]
fn certificate_identity_and_topic_space_permissions() {
    let pki = Pki::new();
    pki.leaf("truck", "truck-17", &pki.ca);
    pki.leaf("dashboard", "dashboard", &pki.ca);
    let b = start(&pki, &registry(&pki, &pki.ca_pem(), "Enabled", json!({})));

    // Allowed subscription (a filter within the bound template), v5 and 3.1.1 subscribers.
    let sub5 = spawn(
        "mosquitto_sub",
        &tls(
            &pki,
            &b,
            "dashboard",
            &[
                "-i",
                "dash5",
                "-t",
                "fleet/+/+/telemetry/#",
                "-C",
                "2",
                "-W",
                "10",
                "-V",
                "5",
                "-v",
            ],
        ),
    );
    settle();
    // Allowed publish (v5, then 3.1.1).
    let o = run(
        "mosquitto_pub",
        &tls(
            &pki,
            &b,
            "truck",
            &[
                "-i",
                "t1",
                "-t",
                "fleet/eu/truck-17/telemetry/temp",
                "-m",
                "21.5",
                "-q",
                "1",
                "-V",
                "5",
            ],
        ),
    );
    assert!(o.status.success(), "{}", show(&o));
    let o = run(
        "mosquitto_pub",
        &tls(
            &pki,
            &b,
            "truck",
            &[
                "-i",
                "t2",
                "-t",
                "fleet/eu/truck-17/telemetry/rpm",
                "-m",
                "900",
                "-q",
                "1",
                "-V",
                "311",
            ],
        ),
    );
    assert!(o.status.success(), "{}", show(&o));
    let o = sub5.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "fleet/eu/truck-17/telemetry/temp 21.5\nfleet/eu/truck-17/telemetry/rpm 900\n",
        "{}",
        show(&o)
    );

    // Publishing under another truck's topic: PUBACK 0x87 (v5).
    let o = run(
        "mosquitto_pub",
        &tls(
            &pki,
            &b,
            "truck",
            &[
                "-i",
                "t3",
                "-t",
                "fleet/eu/truck-99/telemetry/temp",
                "-m",
                "x",
                "-q",
                "1",
                "-V",
                "5",
            ],
        ),
    );
    assert!(all_output(&o).contains("Not authorized"), "{}", show(&o));
    // A filter wider than the template: SUBACK 0x87 (v5) / 0x80 (3.1.1).
    for v in ["5", "311"] {
        let o = run(
            "mosquitto_sub",
            &tls(
                &pki,
                &b,
                "dashboard",
                &[
                    "-i",
                    "dash-wide",
                    "-t",
                    "fleet/#",
                    "-C",
                    "1",
                    "-W",
                    "3",
                    "-V",
                    v,
                ],
            ),
        );
        assert!(
            all_output(&o).contains("All subscription requests were denied"),
            "v{v}: {}",
            show(&o)
        );
    }
    assert!(
        b.log().contains("clients[0].description"),
        "unused key warned:\n{}",
        b.log()
    );
}

/// Refusals: a certificate from a CA the registry does not know, and an unregistered name,
/// get 0x86 (3.1.1: 0x04); a disabled client gets 0x87 (3.1.1: 0x05).
#[test]
fn unknown_and_disabled_clients_are_refused() {
    let pki = Pki::new();
    pki.leaf("rogue", "truck-17", &pki.rogue);
    pki.leaf("stranger", "stranger", &pki.ca);
    pki.leaf("truck", "truck-17", &pki.ca);
    let b = start(&pki, &registry(&pki, &pki.ca_pem(), "Disabled", json!({})));
    for (cert, v5_code, v3_code) in [("rogue", 134, 4), ("stranger", 134, 4), ("truck", 135, 5)] {
        let o = run(
            "mosquitto_pub",
            &tls(&pki, &b, cert, &["-t", "t", "-m", "x", "-V", "5"]),
        );
        assert_eq!(o.status.code(), Some(v5_code), "{cert} v5: {}", show(&o));
        let o = run(
            "mosquitto_pub",
            &tls(&pki, &b, cert, &["-t", "t", "-m", "x", "-V", "311"]),
        );
        assert_eq!(o.status.code(), Some(v3_code), "{cert} 3.1.1: {}", show(&o));
    }
    // No certificate and no token on a registry broker: 0x86.
    let o = run(
        "mosquitto_pub",
        &tls(&pki, &b, "", &["-t", "t", "-m", "x", "-V", "5"]),
    );
    assert_eq!(o.status.code(), Some(134), "{}", show(&o));
}

/// Only the intermediate is registered and the client sends its leaf alone: accepted.
#[test]
fn intermediate_registered_leaf_sent_alone() {
    let pki = Pki::new();
    pki.leaf("truck", "truck-17", &pki.intermediate);
    let b = start(
        &pki,
        &registry(&pki, &pki.intermediate_pem(), "Enabled", json!({})),
    );
    let o = run(
        "mosquitto_pub",
        &tls(
            &pki,
            &b,
            "truck",
            &[
                "-t",
                "fleet/eu/truck-17/telemetry/x",
                "-m",
                "x",
                "-q",
                "1",
                "-V",
                "5",
            ],
        ),
    );
    assert!(o.status.success(), "{}", show(&o));
}

/// A registry reload that disables a connected client disconnects it with 0x87; an invalid
/// new registry is refused and the old one stays in force.
#[test]
fn reload_disables_a_live_session() {
    let pki = Pki::new();
    pki.leaf("truck", "truck-17", &pki.ca);
    pki.leaf("dashboard", "dashboard", &pki.ca);
    let b = start(&pki, &registry(&pki, &pki.ca_pem(), "Enabled", json!({})));
    let sub = spawn(
        "mosquitto_sub",
        &tls(
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
                "-d",
                "-W",
                "15",
            ],
        ),
    );
    settle();
    // An invalid registry first: refused, the session stays.
    fs::write(
        pki.dir.join("registry.json"),
        "{ \"clients\": [ { \"name\": 5 } ] }",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(b.log().contains("registry reload refused"), "{}", b.log());
    let o = run(
        "mosquitto_pub",
        &tls(
            &pki,
            &b,
            "dashboard",
            &[
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
            ],
        ),
    );
    assert!(
        o.status.success(),
        "old registry still in force: {}",
        show(&o)
    );
    // Now disable the client.
    fs::write(
        pki.dir.join("registry.json"),
        registry(&pki, &pki.ca_pem(), "Disabled", json!({})),
    )
    .unwrap();
    let o = sub.wait_with_output().unwrap();
    let out = all_output(&o);
    assert!(out.contains("still-here"), "{}", show(&o));
    assert!(
        out.contains("Received DISCONNECT (135)"),
        "disconnected with 0x87: {}",
        show(&o)
    );
}

fn token(sub: &str, extra: serde_json::Value, exp_offset: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = json!({ "sub": sub, "iss": "https://issuer.test", "aud": "ringmq", "iat": now, "exp": now + exp_offset });
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"test-secret-0123456789"),
    )
    .unwrap()
}

/// CUSTOM-JWT enhanced authentication (mosquitto_pub -D connect authentication-method) and
/// the password path (3.1.1 -P token): claims become attributes for group queries; bad,
/// expired or forged tokens are refused with 0x86 / 0x04; an unknown method gets 0x8C.
#[test]
fn custom_jwt_enhanced_auth_and_password_path() {
    let pki = Pki::new();
    let b = start(&pki, &registry(&pki, &pki.ca_pem(), "Enabled", json!({})));
    let port = b.plain_port.to_string();
    let plain = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["-h", "127.0.0.1", "-p", &port]
            .into_iter()
            .map(String::from)
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let good = token("sensor-1", json!({ "role": "sensor" }), 3600);
    // Enhanced authentication, v5: allowed by the `apps` group through the role claim.
    let o = run(
        "mosquitto_pub",
        &plain(&[
            "-V",
            "5",
            "-D",
            "connect",
            "authentication-method",
            "CUSTOM-JWT",
            "-D",
            "connect",
            "authentication-data",
            &good,
            "-t",
            "fleet/eu/s1/telemetry/t",
            "-m",
            "x",
            "-q",
            "1",
        ]),
    );
    assert!(o.status.success(), "{}", show(&o));
    // Outside its permissions: PUBACK 0x87.
    let o = run(
        "mosquitto_pub",
        &plain(&[
            "-V",
            "5",
            "-D",
            "connect",
            "authentication-method",
            "CUSTOM-JWT",
            "-D",
            "connect",
            "authentication-data",
            &good,
            "-t",
            "elsewhere",
            "-m",
            "x",
            "-q",
            "1",
        ]),
    );
    assert!(all_output(&o).contains("Not authorized"), "{}", show(&o));
    // 3.1.1 has no reason codes: a denied QoS 1 publish is acknowledged normally and dropped
    // (mosquitto_pub completes instead of resending forever), and the broker logs it.
    let o = run(
        "mosquitto_pub",
        &plain(&[
            "-V",
            "311",
            "-u",
            "any",
            "-P",
            &good,
            "-t",
            "elsewhere",
            "-m",
            "x",
            "-q",
            "1",
        ]),
    );
    assert!(o.status.success(), "{}", show(&o));
    assert!(b.log().contains("publish denied"), "{}", b.log());
    // Password path, 3.1.1.
    let o = run(
        "mosquitto_pub",
        &plain(&[
            "-V",
            "311",
            "-u",
            "anything",
            "-P",
            &good,
            "-t",
            "fleet/eu/s1/telemetry/t",
            "-m",
            "x",
            "-q",
            "1",
        ]),
    );
    assert!(o.status.success(), "{}", show(&o));
    // Expired, forged (other secret) and garbage tokens.
    let expired = token("sensor-1", json!({ "role": "sensor" }), -3600);
    let forged = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &json!({ "sub": "x", "iss": "https://issuer.test", "aud": "ringmq", "exp": 4_000_000_000u64 }), &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret")).unwrap();
    for bad in [expired.as_str(), forged.as_str(), "not-a-token"] {
        let o = run(
            "mosquitto_pub",
            &plain(&[
                "-V",
                "5",
                "-D",
                "connect",
                "authentication-method",
                "CUSTOM-JWT",
                "-D",
                "connect",
                "authentication-data",
                bad,
                "-t",
                "t",
                "-m",
                "x",
            ]),
        );
        assert_eq!(o.status.code(), Some(134), "{}", show(&o));
        let o = run(
            "mosquitto_pub",
            &plain(&["-V", "311", "-u", "u", "-P", bad, "-t", "t", "-m", "x"]),
        );
        assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    }
    // An authentication method the broker does not know: 0x8C (140).
    let o = run(
        "mosquitto_pub",
        &plain(&[
            "-V",
            "5",
            "-D",
            "connect",
            "authentication-method",
            "SCRAM-SHA-1",
            "-t",
            "t",
            "-m",
            "x",
        ]),
    );
    assert_eq!(o.status.code(), Some(140), "{}", show(&o));
}

/// `maxClientSessionsPerAuthenticationName` (default 1): a second client id with the same
/// certificate identity is refused with 0x97 Quota exceeded (3.1.1: 0x03) while the first
/// session lives; the same client
/// id reconnecting takes its own session over. A session cannot be taken over by another
/// authentication name: refused with 0x87, and the original connection stays up.
#[test]
fn sessions_per_authentication_name_and_foreign_takeover() {
    let pki = Pki::new();
    pki.leaf("truck", "truck-17", &pki.ca);
    pki.leaf("dashboard", "dashboard", &pki.ca);
    let b = start(&pki, &registry(&pki, &pki.ca_pem(), "Enabled", json!({})));
    let first = spawn(
        "mosquitto_sub",
        &tls(
            &pki,
            &b,
            "truck",
            &[
                "-i",
                "truck-a",
                "-t",
                "fleet/eu/truck-17/telemetry/#",
                "-V",
                "5",
                "-d",
                "-W",
                "8",
            ],
        ),
    );
    settle();
    // Another client id, same authentication name: over the limit of 1.
    let o = run(
        "mosquitto_pub",
        &tls(
            &pki,
            &b,
            "truck",
            &[
                "-i",
                "truck-b",
                "-t",
                "fleet/eu/truck-17/telemetry/x",
                "-m",
                "x",
                "-V",
                "5",
            ],
        ),
    );
    assert_eq!(o.status.code(), Some(151), "{}", show(&o));
    let o = run(
        "mosquitto_pub",
        &tls(
            &pki,
            &b,
            "truck",
            &[
                "-i",
                "truck-b",
                "-t",
                "fleet/eu/truck-17/telemetry/x",
                "-m",
                "x",
                "-V",
                "311",
            ],
        ),
    );
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    // Another authentication name trying to take over client id truck-a: refused.
    let o = run(
        "mosquitto_pub",
        &tls(
            &pki,
            &b,
            "dashboard",
            &[
                "-i",
                "truck-a",
                "-t",
                "fleet/eu/x/telemetry/y",
                "-m",
                "x",
                "-V",
                "5",
            ],
        ),
    );
    assert_eq!(o.status.code(), Some(135), "{}", show(&o));
    // The original subscriber is still connected and receives.
    let o = run(
        "mosquitto_pub",
        &tls(
            &pki,
            &b,
            "dashboard",
            &[
                "-i",
                "dash",
                "-t",
                "fleet/eu/truck-17/telemetry/t",
                "-m",
                "still-connected",
                "-q",
                "1",
                "-V",
                "5",
            ],
        ),
    );
    assert!(o.status.success(), "{}", show(&o));
    // The same client id and identity takes its session over (0x8E to the old connection).
    let o = run(
        "mosquitto_pub",
        &tls(
            &pki,
            &b,
            "truck",
            &[
                "-i",
                "truck-a",
                "-t",
                "fleet/eu/truck-17/telemetry/x",
                "-m",
                "x",
                "-V",
                "5",
            ],
        ),
    );
    assert!(o.status.success(), "{}", show(&o));
    let out = all_output(&first.wait_with_output().unwrap());
    assert!(out.contains("still-connected"), "{out}");
    assert!(
        out.contains("Received DISCONNECT (142)"),
        "taken over with 0x8E: {out}"
    );
    // After that session ended (mosquitto_pub disconnected, expiry 0), truck-b may connect.
    let o = run(
        "mosquitto_pub",
        &tls(
            &pki,
            &b,
            "truck",
            &[
                "-i",
                "truck-b",
                "-t",
                "fleet/eu/truck-17/telemetry/x",
                "-m",
                "x",
                "-V",
                "5",
            ],
        ),
    );
    assert!(o.status.success(), "slot released: {}", show(&o));
}

mod reauth {
    use std::net::SocketAddr;
    use std::time::Duration;

    use ringmq_codec::{Auth, AuthProperties, Packet, QoS, ReasonCode, Str};
    use ringmq_tests::client::{Client, Opts};
    use serde_json::json;

    use super::{registry, start, token};
    use ringmq_tests::pki::{Pki, TlsBroker};

    fn broker(pki: &Pki) -> (TlsBroker, SocketAddr) {
        let b = start(pki, &registry(pki, &pki.ca_pem(), "Enabled", json!({})));
        let addr = SocketAddr::from(([127, 0, 0, 1], b.plain_port));
        (b, addr)
    }

    /// A client authenticated as `sensor-{id}` (its own authentication name: one session each).
    fn sensor(id: &str, exp_offset: i64) -> Opts {
        let sub = format!("sensor-{id}");
        Opts::v5(id).auth(
            "CUSTOM-JWT",
            token(&sub, json!({ "role": "sensor" }), exp_offset).as_bytes(),
        )
    }

    fn reauth(c: &mut Client, method: &str, data: &[u8]) {
        c.send(&Packet::Auth(Auth {
            reason_code: ReasonCode::RE_AUTHENTICATE,
            properties: AuthProperties {
                authentication_method: Some(Str::copy_from(method).unwrap()),
                authentication_data: Some(bytes::Bytes::copy_from_slice(data)),
                ..Default::default()
            },
        }));
    }

    /// [MQTT-4.12.1-1] AUTH 0x19 with the same method and a fresh token: AUTH 0x00, the
    /// session continues past the first token's expiry; CONNACK named the method.
    #[test]
    fn reauthentication_extends_the_session() {
        let pki = Pki::new();
        let (_b, addr) = broker(&pki);
        let (mut c, ack) = Client::handshake(addr, sensor("re-ok", 2));
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{ack:?}");
        assert_eq!(
            ack.properties
                .authentication_method
                .as_ref()
                .map(|m| m.as_str()),
            Some("CUSTOM-JWT")
        );
        let fresh = token("sensor-re-ok", json!({ "role": "sensor" }), 3600);
        reauth(&mut c, "CUSTOM-JWT", fresh.as_bytes());
        match c.expect_packet(Duration::from_secs(5)) {
            Packet::Auth(a) => assert_eq!(a.reason_code, ReasonCode::SUCCESS, "{a:?}"),
            p => panic!("expected AUTH 0x00, got {p:?}"),
        }
        // Past the first token's expiry (2 s) the connection is still up.
        std::thread::sleep(Duration::from_secs(4));
        c.ping();
    }

    /// An unrefreshed token's expiry disconnects with 0x87 "token expired"; the will is
    /// published, as for any server-initiated close.
    #[test]
    fn expiry_disconnects_and_publishes_the_will() {
        let pki = Pki::new();
        let (_b, addr) = broker(&pki);
        let (mut watcher, _) = Client::handshake(addr, sensor("watcher", 3600));
        watcher.subscribe_ok("fleet/+/+/telemetry/#", QoS::AtLeastOnce);
        let opts = sensor("expiring", 2).will(
            "fleet/eu/s1/telemetry/status",
            "expired",
            QoS::AtLeastOnce,
            false,
        );
        let (mut c, ack) = Client::handshake(addr, opts);
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{ack:?}");
        let d = c.expect_disconnect(Duration::from_secs(8));
        assert_eq!(d.reason_code, ReasonCode::NOT_AUTHORIZED, "{d:?}");
        assert_eq!(
            d.properties.reason_string.as_ref().map(|s| s.as_str()),
            Some("token expired")
        );
        let m = watcher.expect_publish_acked();
        assert_eq!(&m.payload[..], b"expired");
    }

    /// A failed re-authentication disconnects with 0x87; another method is a protocol error
    /// (0x82).
    #[test]
    fn failed_reauthentication_and_other_method() {
        let pki = Pki::new();
        let (_b, addr) = broker(&pki);
        let (mut c, _) = Client::handshake(addr, sensor("re-bad", 3600));
        reauth(&mut c, "CUSTOM-JWT", b"not-a-token");
        assert_eq!(
            c.expect_disconnect(Duration::from_secs(5)).reason_code,
            ReasonCode::NOT_AUTHORIZED
        );
        let (mut c, _) = Client::handshake(addr, sensor("re-other", 3600));
        reauth(&mut c, "OAUTH2-JWT", b"x");
        assert_eq!(
            c.expect_disconnect(Duration::from_secs(5)).reason_code,
            ReasonCode::PROTOCOL_ERROR
        );
        // A valid token for another identity: not this session's (0x87).
        let (mut c, _) = Client::handshake(addr, sensor("re-switch", 3600));
        let other = token("sensor-someone-else", json!({ "role": "sensor" }), 3600);
        reauth(&mut c, "CUSTOM-JWT", other.as_bytes());
        assert_eq!(
            c.expect_disconnect(Duration::from_secs(5)).reason_code,
            ReasonCode::NOT_AUTHORIZED
        );
    }
}

/// Reload, without a restart: adding a CA admits its clients; removing a CA disconnects the
/// live sessions that chained to it (0x87); a CRL revoking a certificate disconnects its live
/// session (0x87).
#[test]
fn reload_adds_and_removes_cas_and_revokes_certificates() {
    let pki = Pki::new();
    pki.leaf_with_serial("truck", "truck-17", &pki.ca, 4242);
    pki.leaf("dashboard", "dashboard", &pki.rogue);
    let with_cas = |cas: serde_json::Value| -> String {
        let mut r: serde_json::Value =
            serde_json::from_str(&registry(&pki, &pki.ca_pem(), "Enabled", json!({}))).unwrap();
        r["caCertificates"] = cas;
        serde_json::to_string_pretty(&r).unwrap()
    };
    let ca = json!({ "name": "fleet-ca", "encodedCertificate": pki.ca_pem() });
    let rogue = json!({ "name": "second-ca", "encodedCertificate": pki.rogue_pem() });
    let b = start(&pki, &with_cas(json!([ca.clone()])));

    // The dashboard's CA is not registered yet.
    let o = run(
        "mosquitto_pub",
        &tls(
            &pki,
            &b,
            "dashboard",
            &[
                "-i",
                "d0",
                "-t",
                "fleet/eu/x/telemetry/y",
                "-m",
                "x",
                "-V",
                "5",
            ],
        ),
    );
    assert_eq!(o.status.code(), Some(134), "{}", show(&o));
    // Add the CA: admitted.
    fs::write(
        pki.dir.join("registry.json"),
        with_cas(json!([ca.clone(), rogue.clone()])),
    )
    .unwrap();
    let mut admitted = false;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let o = run(
            "mosquitto_pub",
            &tls(
                &pki,
                &b,
                "dashboard",
                &[
                    "-i",
                    "d1",
                    "-t",
                    "fleet/eu/x/telemetry/y",
                    "-m",
                    "x",
                    "-V",
                    "5",
                ],
            ),
        );
        if o.status.success() {
            admitted = true;
            break;
        }
    }
    assert!(admitted, "the added CA was not picked up:\n{}", b.log());

    // Two live sessions, one per CA.
    let truck = spawn(
        "mosquitto_sub",
        &tls(
            &pki,
            &b,
            "truck",
            &[
                "-i",
                "live-truck",
                "-t",
                "fleet/eu/truck-17/telemetry/#",
                "-V",
                "5",
                "-d",
                "-W",
                "12",
            ],
        ),
    );
    let dash = spawn(
        "mosquitto_sub",
        &tls(
            &pki,
            &b,
            "dashboard",
            &[
                "-i",
                "live-dash",
                "-t",
                "fleet/+/+/telemetry/#",
                "-V",
                "5",
                "-d",
                "-W",
                "12",
            ],
        ),
    );
    settle();
    // Remove the second CA and revoke the truck's certificate with a CRL of the first.
    let ca_with_crl = json!({ "name": "fleet-ca", "encodedCertificate": pki.ca_pem(), "crls": [pki.crl(&pki.ca, &[4242])] });
    fs::write(
        pki.dir.join("registry.json"),
        with_cas(json!([ca_with_crl])),
    )
    .unwrap();
    for (name, child) in [("revoked certificate", truck), ("removed CA", dash)] {
        let out = all_output(&child.wait_with_output().unwrap());
        assert!(
            out.contains("Received DISCONNECT (135)"),
            "{name}: disconnected with 0x87:\n{out}\n{}",
            b.log()
        );
    }
}

/// The client type from the token (clientTypeClaims: role = app → APPLICATION) selects the
/// session limits: with max_inflight 5 for devices and 50 for applications, an application
/// receives 20 unacknowledged QoS 1 messages, a device 5.
#[test]
fn application_clients_get_their_own_limits() {
    use ringmq_codec::{Packet, QoS};
    use ringmq_tests::client::{Client, Opts, PublishExt, msg};
    let pki = Pki::new();
    fs::write(
        pki.dir.join("registry.json"),
        registry(&pki, &pki.ca_pem(), "Enabled", json!({})),
    )
    .unwrap();
    let limits = "[limits]\nmax_inflight = 5\n[limits.application]\nmax_inflight = 50\n[auth]\nregistry = \"registry.json\"\n";
    let b = TlsBroker::start(&pki, "optional", limits);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], b.plain_port));
    let connect = |id: &str, role: &str| {
        let t = token(&format!("{id}-name"), json!({ "role": role }), 3600);
        Client::connect(addr, Opts::v5(id).auth("CUSTOM-JWT", t.as_bytes()))
    };
    let mut device = connect("device", "sensor");
    let mut app = connect("app", "app");
    device.subscribe_ok("fleet/+/+/telemetry/#", QoS::AtLeastOnce);
    app.subscribe_ok("fleet/+/+/telemetry/#", QoS::AtLeastOnce);
    let mut publisher = connect("publisher", "sensor");
    for i in 0..20 {
        publisher.publish(msg("fleet/eu/x/telemetry/t", format!("{i}")).qos(QoS::AtLeastOnce));
    }
    let unacked = |c: &mut Client| {
        let mut n = 0;
        while let Some(p) = c.recv(Duration::from_millis(700)) {
            if matches!(p, Packet::Publish(_)) {
                n += 1;
            }
        }
        n
    };
    assert_eq!(unacked(&mut device), 5, "device window");
    assert_eq!(unacked(&mut app), 20, "application window");
}

/// paho-mqtt 2.x with CUSTOM-JWT enhanced authentication: CONNACK 0, PUBACK 0 inside the
/// permissions and 0x87 (135) outside them; a forged token gets CONNACK 0x86 (134).
#[test]
fn paho_custom_jwt() {
    let pki = Pki::new();
    let b = start(&pki, &registry(&pki, &pki.ca_pem(), "Enabled", json!({})));
    let script = ringmq_tests::workspace_root().join("tests/py/paho_jwt.py");
    let run_paho = |token: &str, topics: &[&str]| -> String {
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg(b.plain_port.to_string())
            .arg("CUSTOM-JWT")
            .arg(token)
            .args(topics);
        let o = cmd
            .stdin(Stdio::null())
            .output()
            .expect("python3 with paho-mqtt (pip install 'paho-mqtt>=2')");
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    };
    let good = token("paho-sensor", json!({ "role": "sensor" }), 3600);
    let out = run_paho(&good, &["fleet/eu/p/telemetry/t", "not/allowed"]);
    assert!(out.contains("CONNACK 0"), "{out}");
    assert!(out.contains("PUBACK fleet/eu/p/telemetry/t 0"), "{out}");
    assert!(out.contains("PUBACK not/allowed 135"), "{out}");
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "x", "iss": "https://issuer.test", "aud": "ringmq", "exp": 4_000_000_000u64 }),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    let out = run_paho(&forged, &[]);
    assert!(out.contains("CONNACK 134"), "{out}");
}
