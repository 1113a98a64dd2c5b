//! End-to-end: the real `ringmq-bench` binary over TLS against the real `ringmq` binary with an
//! `mqtts` listener that requires client certificates. Certificates come from the shared test PKI (`ringmq_tests::pki`, rcgen).
//!
//! Honours `RINGMQ_TEST_SHARDS` and `RINGMQ_TEST_DRIVER` like the tests in tests/.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ringmq_tests::free_port;
use ringmq_tests::pki::{Pki, TlsBroker};

/// The shared test PKI (a CA, the broker's certificate for 127.0.0.1 / localhost) plus a client
/// certificate (`client.pem`/`client.key`), per-client ones (`dev-{i}.pem`/`dev-{i}.key`) and a
/// CA that did not sign the broker's certificate (`rogue.pem`).
fn pki(per_client: u32) -> Pki {
    let pki = Pki::new();
    pki.leaf("client", "bench-client", &pki.ca);
    for i in 0..per_client {
        pki.leaf(&format!("dev-{i}"), &format!("device-{i}"), &pki.ca);
    }
    fs::write(pki.dir.join("rogue.pem"), pki.rogue_pem()).unwrap();
    pki
}

/// ringmq with an `mqtts` listener requiring client certificates and no registry: any
/// certificate whose key the client holds is accepted.
fn broker(pki: &Pki) -> TlsBroker {
    TlsBroker::start(pki, "required", "")
}

/// What one `ringmq-bench` run printed, and its JSON report when it wrote one.
struct Run {
    out: Output,
    report: Option<serde_json::Value>,
}

impl Run {
    fn text(&self) -> String {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            self.out.status,
            String::from_utf8_lossy(&self.out.stdout),
            String::from_utf8_lossy(&self.out.stderr)
        )
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// The report of a run that must have succeeded.
    fn report(&self) -> &serde_json::Value {
        assert!(self.out.status.success(), "{}", self.text());
        self.report
            .as_ref()
            .expect("a successful run writes its report")
    }
}

/// `ringmq-bench SCENARIO -p PORT -S ARGS… --quiet --json FILE`; bounded by the run's own
/// --duration and connect timeouts.
fn bench(dir: &Path, scenario: &str, port: u16, args: &[&str]) -> Run {
    let json = dir.join(format!("report-{}.json", free_port()));
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
        .arg(scenario)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--threads", "2"])
        .args(args)
        .arg("--quiet")
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report = fs::read_to_string(&json)
        .ok()
        .map(|text| serde_json::from_str(&text).unwrap());
    Run { out, report }
}

fn with_ca<'a>(pki: &'a Pki, ca: &'a str, rest: &[&'a str]) -> Vec<String> {
    let mut args = vec!["-S".to_string(), "--cacertfile".into(), pki.path(ca)];
    args.extend(rest.iter().map(|s| s.to_string()));
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn client_cert(pki: &Pki) -> Vec<String> {
    vec![
        "--certfile".into(),
        pki.path("client.pem"),
        "--keyfile".into(),
        pki.path("client.key"),
    ]
}

/// conn and p2p (QoS 0 and 1, MQTT 5 and 3.1.1) over mutual TLS: every client connects and
/// every message arrives.
#[test]
fn conn_and_p2p_over_mutual_tls() {
    let pki = pki(0);
    let broker = broker(&pki);
    let mut args = with_ca(&pki, "ca.pem", &["-c", "40", "--duration", "0.5"]);
    args.extend(client_cert(&pki));
    let run = bench(&pki.dir, "conn", broker.tls_port, &strs(&args));
    let r = run.report();
    assert_eq!(r["tls"], true, "{r:#}");
    assert_eq!(r["connections"]["ok"], 40, "{r:#}");
    assert_eq!(r["connections"]["failed"], 0, "{r:#}");
    assert!(run.text().contains("over TLS"), "{}", run.text());

    for (qos, version) in [("0", "5"), ("1", "4")] {
        let mut args = with_ca(
            &pki,
            "ca.pem",
            &[
                "-c",
                "3",
                "-L",
                "600",
                "-q",
                qos,
                "-V",
                version,
                "--duration",
                "30",
            ],
        );
        args.extend(client_cert(&pki));
        let run = bench(&pki.dir, "p2p", broker.tls_port, &strs(&args));
        let r = run.report();
        assert_eq!(r["published"], 600, "QoS {qos}: {r:#}");
        assert_eq!(r["delivered"], 600, "QoS {qos}: {r:#}");
        assert_eq!(r["expected"], 600, "QoS {qos}: {r:#}");
        assert_eq!(r["connections"]["ok"], 6, "QoS {qos}: {r:#}");
        assert_eq!(r["disconnected"], 0, "QoS {qos}: {r:#}");
        assert_eq!(r["decode_errors"], 0, "QoS {qos}: {r:#}");
        if qos == "1" {
            assert_eq!(r["acked"], 600, "{r:#}");
        }
    }
}

/// Payloads larger than a TLS record (16 KiB) cross intact: the subscribers decode every
/// message and its stamp.
#[test]
fn messages_larger_than_a_tls_record() {
    let pki = pki(0);
    let broker = broker(&pki);
    let mut args = with_ca(
        &pki,
        "ca.pem",
        &["-c", "2", "-s", "40000", "-L", "50", "--duration", "30"],
    );
    args.extend(client_cert(&pki));
    let run = bench(&pki.dir, "p2p", broker.tls_port, &strs(&args));
    let r = run.report();
    assert_eq!(r["delivered"], 50, "{r:#}");
    assert_eq!(r["latency"]["count"], 50, "{r:#}");
    assert_eq!(r["decode_errors"], 0, "{r:#}");
}

/// `%i` in --certfile/--keyfile: each connection presents its own certificate (p2p -c 3:
/// subscribers 0-2, publishers 3-5); a client whose files are missing fails alone and is
/// counted as a TLS failure.
#[test]
fn per_client_certificates() {
    let pki = pki(6);
    let broker = broker(&pki);
    let per_client = [
        "--certfile",
        &pki.path("dev-%i.pem"),
        "--keyfile",
        &pki.path("dev-%i.key"),
    ]
    .map(String::from);
    let mut args = with_ca(
        &pki,
        "ca.pem",
        &["-c", "3", "-L", "300", "--duration", "30"],
    );
    args.extend(per_client.iter().cloned());
    let r = bench(&pki.dir, "p2p", broker.tls_port, &strs(&args))
        .report()
        .clone();
    assert_eq!(r["connections"]["ok"], 6, "{r:#}");
    assert_eq!(r["delivered"], 300, "{r:#}");

    // Seven clients, certificates for six: client 6 fails, the others hold.
    let mut args = with_ca(&pki, "ca.pem", &["-c", "7", "--duration", "0.2"]);
    args.extend(per_client.iter().cloned());
    let run = bench(&pki.dir, "conn", broker.tls_port, &strs(&args));
    let r = run.report();
    assert_eq!(r["connections"]["ok"], 6, "{r:#}");
    assert_eq!(r["connections"]["failed"], 1, "{r:#}");
    assert_eq!(r["connections"]["tls_failed"], 1, "{r:#}");
    let stderr = run.stderr();
    assert!(
        stderr.contains("cannot read client certificate") && stderr.contains("dev-6.pem"),
        "{stderr}"
    );
    assert!(run.text().contains("1 failed (1 in TLS)"), "{}", run.text());
}

/// A listener that requires a client certificate refuses a client without one: every attempt
/// fails in TLS, the run says so and exits non-zero. A CA that did not sign the broker's
/// certificate fails the handshake the same way; --insecure skips that check.
#[test]
fn tls_failures_are_reported() {
    let pki = pki(0);
    let broker = broker(&pki);
    let run = bench(
        &pki.dir,
        "conn",
        broker.tls_port,
        &strs(&with_ca(&pki, "ca.pem", &["-c", "5", "--duration", "0.2"])),
    );
    assert!(!run.out.status.success(), "{}", run.text());
    let stderr = run.stderr();
    assert!(
        stderr.contains("none of the 5 clients could connect, 5 of them in TLS"),
        "{stderr}"
    );
    assert!(stderr.contains("TLS: received fatal alert"), "{stderr}");

    let mut args = with_ca(&pki, "rogue.pem", &["-c", "3", "--duration", "0.2"]);
    args.extend(client_cert(&pki));
    let run = bench(&pki.dir, "conn", broker.tls_port, &strs(&args));
    assert!(!run.out.status.success(), "{}", run.text());
    let stderr = run.stderr();
    assert!(
        stderr.contains("none of the 3 clients could connect, 3 of them in TLS"),
        "{stderr}"
    );
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");

    let mut args = vec!["-S", "--insecure", "-c", "3", "--duration", "0.2"];
    let cert = client_cert(&pki);
    args.extend(strs(&cert));
    let r = bench(&pki.dir, "conn", broker.tls_port, &args)
        .report()
        .clone();
    assert_eq!(r["connections"]["ok"], 3, "{r:#}");

    // Verification checks the name too: the certificate is for 127.0.0.1 and localhost.
    let mut args = with_ca(&pki, "ca.pem", &["-c", "2", "--sni", "other.example"]);
    args.extend(client_cert(&pki));
    let run = bench(&pki.dir, "conn", broker.tls_port, &strs(&args));
    assert!(!run.out.status.success(), "{}", run.text());
    assert!(
        run.stderr().contains("invalid peer certificate"),
        "{}",
        run.text()
    );
}

/// Bad files stop the run before it connects, naming the file and the problem.
#[test]
fn bad_certificate_files_are_startup_errors() {
    let pki = pki(1);
    let port = free_port().to_string();
    let startup_error = |args: &[&str]| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_ringmq-bench"))
            .args(["conn", "-p", &port, "-c", "1", "--quiet"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} must be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let ca = pki.path("ca.pem");
    let missing = pki.path("missing.pem");
    let err = startup_error(&["-S", "--cacertfile", &missing]);
    assert!(
        err.contains("cannot read CA file") && err.contains("missing.pem"),
        "{err}"
    );
    // A key file given as the CA file.
    let key = pki.path("client.key");
    let err = startup_error(&["-S", "--cacertfile", &key]);
    assert!(err.contains("no CERTIFICATE block"), "{err}");
    // A certificate with another client's key.
    let (cert, other_key) = (pki.path("client.pem"), pki.path("dev-0.key"));
    let err = startup_error(&[
        "-S",
        "--cacertfile",
        &ca,
        "--certfile",
        &cert,
        "--keyfile",
        &other_key,
    ]);
    assert!(
        err.contains("client certificate") && err.contains("dev-0.key"),
        "{err}"
    );
    // A certificate file as the key.
    let err = startup_error(&[
        "-S",
        "--cacertfile",
        &ca,
        "--certfile",
        &cert,
        "--keyfile",
        &cert,
    ]);
    assert!(err.contains("no PRIVATE KEY"), "{err}");
    let err = startup_error(&["-S"]);
    assert!(err.contains("--ssl needs --cacertfile"), "{err}");
    let err = startup_error(&["--cacertfile", &ca]);
    assert!(err.contains("--cacertfile needs --ssl"), "{err}");
}

/// A registry that knows the CA, clients `device-0` and `device-1` (authenticated by their
/// certificate's CN) and CUSTOM-JWT tokens signed with a test secret; both may publish and
/// subscribe under `bench/#`. Two sessions per authentication name: a p2p pair with one token.
fn registry(pki: &Pki) -> String {
    let ca = fs::read_to_string(pki.dir.join("ca.pem")).unwrap();
    let client = |name: &str| {
        serde_json::json!({ "name": name, "authenticationName": name,
            "clientCertificateAuthentication": { "validationScheme": "SubjectMatchesAuthenticationName" },
            "attributes": { "type": "bench" } })
    };
    serde_json::json!({
        "namespace": { "clientAuthentication": {
            "alternativeAuthenticationNameSources": ["ClientCertificateSubject"],
            "customJwtAuthentication": {
                "tokenIssuer": "https://issuer.test",
                "audience": "ringmq",
                "hmacSecrets": ["bench-secret-0123456789-0123456789-0123456789"]
            }
        },
        "maxClientSessionsPerAuthenticationName": 2 },
        "caCertificates": [ { "name": "bench-ca", "encodedCertificate": ca.replace('\n', "") } ],
        "clients": [ client("device-0"), client("device-1") ],
        "clientGroups": [
            { "name": "bench", "query": "attributes.type = 'bench' OR attributes.role = 'bench'" }
        ],
        "topicSpaces": [ { "name": "bench", "topicTemplates": ["bench/#"] } ],
        "permissionBindings": [
            { "name": "bench-pub", "clientGroupName": "bench", "topicSpaceName": "bench", "permission": "Publisher" },
            { "name": "bench-sub", "clientGroupName": "bench", "topicSpaceName": "bench", "permission": "Subscriber" }
        ]
    })
    .to_string()
}

fn jwt(secret: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({ "sub": "bench-app", "iss": "https://issuer.test",
        "aud": "ringmq", "iat": now, "exp": now + 3600, "role": "bench" });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// Against a registry, which allows one session per identity: `%i` certificates are distinct
/// identities (devices 0 and 1 are registered, device 2 is not and is refused at CONNECT, not
/// in TLS; in p2p -c 1 the subscriber is device 0 and the publisher device 1), and a CUSTOM-JWT
/// token sent as MQTT 5 authentication data over TLS authenticates a p2p run; a forged one is
/// refused.
#[test]
fn per_client_identities_and_jwt_against_a_registry() {
    let pki = pki(3);
    fs::write(pki.dir.join("registry.json"), registry(&pki)).unwrap();
    let broker = TlsBroker::start(&pki, "optional", "[auth]\nregistry = \"registry.json\"\n");
    let per_client = [
        "--certfile".to_string(),
        pki.path("dev-%i.pem"),
        "--keyfile".into(),
        pki.path("dev-%i.key"),
    ];
    let mut args = with_ca(&pki, "ca.pem", &["-c", "3", "--duration", "0.2"]);
    args.extend(per_client.iter().cloned());
    let run = bench(&pki.dir, "conn", broker.tls_port, &strs(&args));
    let r = run.report();
    assert_eq!(r["connections"]["ok"], 2, "{r:#}");
    assert_eq!(r["connections"]["failed"], 1, "{r:#}");
    assert_eq!(r["connections"]["tls_failed"], 0, "{r:#}");
    assert!(
        run.stderr().contains("c2: broker refused"),
        "{}",
        run.text()
    );

    let mut args = with_ca(
        &pki,
        "ca.pem",
        &["-c", "1", "-L", "200", "--duration", "30"],
    );
    args.extend(per_client.iter().cloned());
    let r = bench(&pki.dir, "p2p", broker.tls_port, &strs(&args))
        .report()
        .clone();
    assert_eq!(r["connections"]["ok"], 2, "{r:#}");
    assert_eq!(r["delivered"], 200, "{r:#}");
    assert_eq!(r["refused"], 0, "{r:#}");

    // No client certificate: the token is the identity (the listener's certificate is
    // optional).
    let token = jwt(b"bench-secret-0123456789-0123456789-0123456789");
    let args = with_ca(
        &pki,
        "ca.pem",
        &[
            "-c",
            "1",
            "-L",
            "200",
            "--duration",
            "30",
            "--auth-method",
            "CUSTOM-JWT",
            "--auth-data",
            &token,
        ],
    );
    let r = bench(&pki.dir, "p2p", broker.tls_port, &strs(&args))
        .report()
        .clone();
    assert_eq!(r["connections"]["ok"], 2, "{r:#}");
    assert_eq!(r["delivered"], 200, "{r:#}");
    // The broker logs the authentication name, the token's `sub`.
    assert!(broker.log().contains("bench-app"), "{}", broker.log());

    let forged = jwt(b"not-the-secret-0123456789");
    let args = with_ca(
        &pki,
        "ca.pem",
        &[
            "-c",
            "1",
            "--auth-method",
            "CUSTOM-JWT",
            "--auth-data",
            &forged,
        ],
    );
    let run = bench(&pki.dir, "p2p", broker.tls_port, &strs(&args));
    assert!(!run.out.status.success(), "{}", run.text());
    let stderr = run.stderr();
    assert!(stderr.contains("broker refused"), "{stderr}");
    assert!(
        stderr.contains("none of the 1 clients could connect"),
        "{stderr}"
    );
}
