//! `wss` listeners (MQTT over WebSockets over TLS) and TLS certificate reload, through the
//! real binary. Clients: paho-mqtt 2.x with transport="websockets" and `tls_set`
//! (tests/py/paho_wss.py; mosquitto_pub/sub do not speak WebSockets) and Python's `ssl` to
//! read the certificate a listener presents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use ringmq_tests::pki::{Pki, TlsBroker};
use ringmq_tests::{WAIT, wait_until, workspace_root};
use serde_json::json;

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

/// The certificate (DER) a TLS listener presents to a new connection, verified against the
/// test CA for 127.0.0.1.
fn served_certificate(pki: &Pki, port: u16) -> Option<Vec<u8>> {
    let out = paho(&["peer", &port.to_string(), &pki.path("ca.pem")]);
    let hex = out.lines().find_map(|l| l.strip_prefix("PEER "))?;
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
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

/// A server certificate for 127.0.0.1 issued by the test CA, with its own CN and serial.
fn server_certificate(pki: &Pki, cn: &str, serial: u64) -> (String, String, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params.distinguished_name.push(DnType::CommonName, cn);
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    let cert = params.signed_by(&key, &pki.ca).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// Replaces `path` with a file holding `content` and `path`'s modification time (written
/// aside, then renamed over it), so only SIGHUP, not the file watch, can notice the change.
fn replace_keeping_mtime(path: &Path, content: &str) {
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    let aside = path.with_extension("new");
    fs::write(&aside, content).unwrap();
    fs::File::options()
        .write(true)
        .open(&aside)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fs::rename(&aside, path).unwrap();
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A paho client over `wss` that stays connected until told to publish (paho_wss.py hold).
struct Held {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Held {
    fn start(pki: &Pki, port: u16, topic: &str) -> Held {
        let mut child = Command::new("python3")
            .arg(script())
            .args(["hold", &port.to_string(), &pki.path("ca.pem"), topic])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut held = Held {
            child,
            stdin,
            lines,
        };
        held.expect("READY");
        held
    }

    fn expect(&mut self, what: &str) {
        let line = self.lines.recv_timeout(2 * WAIT);
        assert_eq!(line.as_deref(), Ok(what), "held client");
    }

    /// Publishes through the held connection and waits for the message to come back.
    fn echo(&mut self) {
        writeln!(self.stdin, "go").unwrap();
        self.stdin.flush().unwrap();
        self.expect("ECHO still-here");
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGHUP reloads every TLS listener's certificate and key: a broker serving certificate A on
/// `mqtts` and `wss` gets B after the files are replaced and SIGHUP is sent (the files keep
/// their old modification time, so the reload is SIGHUP's); a `wss` client connected before
/// stays connected and its messages still flow. A broken certificate file on the next SIGHUP
/// is refused with a log line naming it, and B keeps serving. Writing the files again
/// (without SIGHUP) is noticed by the file watch.
#[test]
fn sighup_reloads_tls_certificates() {
    let pki = Pki::new();
    let (cert_path, key_path) = (pki.dir.join("server.pem"), pki.dir.join("server.key"));
    let (a_pem, a_key, a_der) = server_certificate(&pki, "ringmq cert A", 0xA1);
    fs::write(&cert_path, &a_pem).unwrap();
    fs::write(&key_path, &a_key).unwrap();
    let b = TlsBroker::start_listeners(&pki, "", &[("mqtts", "none"), ("wss", "optional")]);
    for port in &b.tls_ports {
        assert_eq!(served_certificate(&pki, *port).as_ref(), Some(&a_der));
    }
    let mut held = Held::start(&pki, b.tls_ports[1], "reload/held");

    let (b_pem, b_key, b_der) = server_certificate(&pki, "ringmq cert B", 0xB2);
    assert_ne!(a_der, b_der);
    replace_keeping_mtime(&key_path, &b_key);
    replace_keeping_mtime(&cert_path, &b_pem);
    signal(b.pid(), "HUP");
    for port in &b.tls_ports {
        assert!(
            wait_until(WAIT, || served_certificate(&pki, *port).as_ref()
                == Some(&b_der)),
            "port {port} still serves the old certificate:\n{}",
            b.log()
        );
    }
    assert!(b.log().contains("TLS certificate reloaded"), "{}", b.log());
    held.echo();

    replace_keeping_mtime(
        &cert_path,
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    signal(b.pid(), "HUP");
    let named = format!("{}: cannot read certificate chain", cert_path.display());
    assert!(
        wait_until(WAIT, || b.log().matches(&named).count() == 2),
        "both listeners log the refused file:\n{}",
        b.log()
    );
    for port in &b.tls_ports {
        assert_eq!(served_certificate(&pki, *port).as_ref(), Some(&b_der));
    }

    // The file watch: writing A's files again is enough.
    fs::write(&key_path, &a_key).unwrap();
    fs::write(&cert_path, &a_pem).unwrap();
    for port in &b.tls_ports {
        assert!(
            wait_until(WAIT, || served_certificate(&pki, *port).as_ref()
                == Some(&a_der)),
            "port {port}: the changed files were not picked up:\n{}",
            b.log()
        );
    }
    held.echo();
}
