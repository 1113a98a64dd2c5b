//! The `ringmq` subcommands through the real binary: `check` (a good configuration, broken
//! ones — missing files, a bad key, a key that does not fit its certificate, a registry error
//! located by its JSON path — and the exit status), `thumbprint` (what openssl prints, and
//! accepted by the broker for `ThumbprintMatch`), `token` (HMAC, EC and RSA keys; the tokens
//! accepted by a broker whose registry holds the key, refused when they should be).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use ringmq_codec::ReasonCode;
use ringmq_tests::pki::{Pki, TlsBroker};
use ringmq_tests::tools::{TOOL_TIMEOUT, Tool, ToolOutput};
use ringmq_tests::*;
use serde_json::{Value, json};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `ringmq ARGS` to completion (bounded).
fn ringmq(args: &[&str]) -> ToolOutput {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    Tool::spawn(
        &broker_binary().to_string_lossy(),
        &args,
        "cargo build -p ringmq",
    )
    .wait(RUN_TIMEOUT)
}

fn exit_code(out: &ToolOutput) -> i32 {
    out.status
        .and_then(|s| s.code())
        .unwrap_or_else(|| panic!("ringmq did not exit by itself:\n{out}"))
}

fn write_private(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// A registry with one `ThumbprintMatch` client pinned to `thumbprint`.
fn thumbprint_registry(thumbprint: &str) -> String {
    json!({
        "clients": [
            { "name": "truck-17",
              "clientCertificateAuthentication": {
                  "validationScheme": "ThumbprintMatch", "allowedThumbprints": [thumbprint] } }
        ],
        "clientGroups": [], "topicSpaces": [], "permissionBindings": []
    })
    .to_string()
}

fn tls_listener(bind: &str, cert: &str, key: &str) -> String {
    format!(
        "\n[[listener]]\nbind = \"{bind}\"\nprotocol = \"mqtts\"\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_certificate = \"optional\"\n"
    )
}

// ---- check --------------------------------------------------------------------------------

/// A TLS listener with its certificate and key, and a registry that pins a thumbprint: no
/// error, no warning, exit 0 — while another socket listens on the listener's port (the broker
/// itself would refuse to start there: `check` binds nothing).
#[test]
fn check_accepts_a_valid_configuration_without_binding() {
    let pki = Pki::new();
    fs::set_permissions(
        pki.dir.join("server.key"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let thumb = ringmq(&["thumbprint", &pki.path("client.pem")]);
    thumb.assert_success();
    fs::write(
        pki.dir.join("registry.json"),
        thumbprint_registry(thumb.stdout.trim()),
    )
    .unwrap();
    let config = pki.dir.join("ringmq.toml");
    fs::write(
        &config,
        format!(
            "allow_anonymous = false\n[auth]\nregistry = \"registry.json\"\n{}",
            tls_listener(&bind, "server.pem", "server.key")
        ),
    )
    .unwrap();
    let out = ringmq(&["check", "-c", &config.to_string_lossy()]);
    assert_eq!(exit_code(&out), 0, "{out}");
    assert!(out.stdout.contains("OK (0 warnings)"), "{out}");
    assert!(!out.stdout.contains("error:"), "{out}");
    // The same configuration, run: the taken port stops the broker (so check really did not
    // bind it, and really checked the configuration the broker runs).
    let run = Tool::spawn(
        &broker_binary().to_string_lossy(),
        &["--config".to_owned(), config.to_string_lossy().into_owned()],
        "cargo build -p ringmq",
    )
    .wait(RUN_TIMEOUT);
    assert_ne!(exit_code(&run), 0, "{run}");
    assert!(run.stderr.contains("in use"), "{run}");
    drop(taken);
}

/// Every missing or unreadable file is reported with the key that names it, in one run: a
/// missing certificate, a key that is not a key, a missing registry. Exit 1.
#[test]
fn check_reports_each_broken_file_with_its_key() {
    let pki = Pki::new();
    write_private(&pki.dir.join("garbage.key"), "this is not a private key\n");
    let missing_cert = pki.dir.join("nope/server.pem");
    let config = pki.dir.join("broken.toml");
    fs::write(
        &config,
        format!(
            "[auth]\nregistry = \"no-registry.json\"\n{}{}",
            tls_listener(
                "127.0.0.1:18883",
                &missing_cert.to_string_lossy(),
                "server.key"
            ),
            tls_listener("127.0.0.1:18884", "server.pem", "garbage.key"),
        ),
    )
    .unwrap();
    let out = ringmq(&["check", "-c", &config.to_string_lossy()]);
    assert_eq!(exit_code(&out), 1, "{out}");
    let file = config.to_string_lossy();
    let expect = [
        format!(
            "error: {file}: listener[0].cert: {}: No such file or directory",
            missing_cert.display()
        ),
        format!(
            "error: {file}: listener[1].key: {}: not a PEM private key",
            pki.path("garbage.key")
        ),
        format!(
            "error: {file}: auth.registry: {}: No such file or directory",
            pki.path("no-registry.json")
        ),
    ];
    for line in &expect {
        assert!(
            out.stdout.contains(line.as_str()),
            "missing {line:?}:\n{out}"
        );
    }
    assert!(out.stdout.contains("3 errors"), "{out}");
}

/// A key that is not the certificate's (another valid key): the pair is refused, naming the
/// listener; a world-readable key is a warning.
#[test]
fn check_refuses_a_key_that_does_not_fit_the_certificate() {
    let pki = Pki::new();
    fs::set_permissions(
        pki.dir.join("client.key"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let config = pki.dir.join("mismatch.toml");
    fs::write(
        &config,
        tls_listener("127.0.0.1:18885", "server.pem", "client.key"),
    )
    .unwrap();
    let out = ringmq(&["check", "-c", &config.to_string_lossy()]);
    assert_eq!(exit_code(&out), 1, "{out}");
    let file = config.to_string_lossy();
    assert!(
        out.stdout.contains(&format!(
            "error: {file}: listener[0]: certificate {} and key {} do not form a usable TLS configuration",
            pki.path("server.pem"),
            pki.path("client.key")
        )),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("warning: {file}: listener[0].key: "))
            && out.stdout.contains("readable by every user (mode 644)"),
        "{out}"
    );
}

/// A registry error is located by its JSON path in the registry file; the registry's warnings
/// (an unknown key) are printed the same way.
#[test]
fn check_locates_registry_errors_by_json_path() {
    let dir = temp_dir("check-registry");
    let registry = dir.join("registry.json");
    fs::write(
        &registry,
        json!({
            "clients": [
                { "name": "ok-client" },
                { "name": "bad-print", "clientCertificateAuthentication": {
                    "validationScheme": "ThumbprintMatch", "allowedThumbprints": ["zz:12"] } }
            ],
            "extraKey": true
        })
        .to_string(),
    )
    .unwrap();
    let config = dir.join("ringmq.toml");
    fs::write(&config, "[auth]\nregistry = \"registry.json\"\n").unwrap();
    let out = ringmq(&["check", "-c", &config.to_string_lossy()]);
    assert_eq!(exit_code(&out), 1, "{out}");
    let reg = registry.to_string_lossy();
    assert!(
        out.stdout.contains(&format!(
            "error: {reg}: $.clients[1].clientCertificateAuthentication.allowedThumbprints[0]: expected a SHA-256 thumbprint"
        )),
        "{out}"
    );
    // Without the bad client: valid, with the warning for the ignored key.
    fs::write(
        &registry,
        json!({ "clients": [ { "name": "ok-client" } ], "extraKey": true }).to_string(),
    )
    .unwrap();
    let out = ringmq(&["check", "-c", &config.to_string_lossy()]);
    assert_eq!(exit_code(&out), 0, "{out}");
    assert!(
        out.stdout
            .contains(&format!("warning: {reg}: $.extraKey: ignored")),
        "{out}"
    );
    // Not JSON at all.
    fs::write(&registry, "{ \"clients\": [ ").unwrap();
    let out = ringmq(&["check", "-c", &config.to_string_lossy()]);
    assert_eq!(exit_code(&out), 1, "{out}");
    assert!(
        out.stdout
            .contains(&format!("error: {reg}: $: invalid JSON")),
        "{out}"
    );
}

/// Valid but risky: plain MQTT on every interface with anonymous access is two warnings and
/// exit 0; `--deny-warnings` makes it exit 1.
#[test]
fn check_warns_about_exposed_plain_anonymous_listeners() {
    let dir = temp_dir("check-exposed");
    let config = dir.join("open.toml");
    fs::write(&config, "[[listener]]\nbind = \"0.0.0.0:18886\"\n").unwrap();
    let path = config.to_string_lossy().into_owned();
    let out = ringmq(&["check", "-c", &path]);
    assert_eq!(exit_code(&out), 0, "{out}");
    assert!(
        out.stdout.contains(&format!(
            "warning: {path}: listener[0].protocol: plain mqtt on 0.0.0.0:18886"
        )),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("warning: {path}: allow_anonymous: ")),
        "{out}"
    );
    assert!(out.stdout.contains("OK (2 warnings)"), "{out}");
    let out = ringmq(&["check", "--deny-warnings", "-c", &path]);
    assert_eq!(exit_code(&out), 1, "{out}");
}

/// A configuration the broker refuses is refused by `check` with the same key; a missing
/// configuration file is an error too.
#[test]
fn check_refuses_an_invalid_or_missing_configuration() {
    let dir = temp_dir("check-invalid");
    let config = dir.join("bad.toml");
    fs::write(&config, "[limits]\nreceive_maximum = 0\n").unwrap();
    let out = ringmq(&["check", "-c", &config.to_string_lossy()]);
    assert_eq!(exit_code(&out), 1, "{out}");
    assert!(
        out.stdout.contains(&format!(
            "error: {}: limits.receive_maximum: must be at least 1",
            config.display()
        )),
        "{out}"
    );
    fs::write(&config, "[limits]\nmax_pakcet_size = 5\n").unwrap();
    let out = ringmq(&["check", "-c", &config.to_string_lossy()]);
    assert_eq!(exit_code(&out), 1, "{out}");
    assert!(out.stdout.contains("max_pakcet_size"), "{out}");
    let missing = dir.join("missing.toml");
    let out = ringmq(&["check", "-c", &missing.to_string_lossy()]);
    assert_eq!(exit_code(&out), 1, "{out}");
    assert!(
        out.stdout.contains(&format!(
            "error: {}: cannot read: No such file or directory",
            missing.display()
        )),
        "{out}"
    );
    // The embedded default is fine.
    let out = ringmq(&["check"]);
    assert_eq!(exit_code(&out), 0, "{out}");
}

// ---- thumbprint ---------------------------------------------------------------------------

/// `ringmq thumbprint` prints what `openssl x509 -fingerprint -sha256` prints after the `=`.
#[test]
fn thumbprint_is_what_openssl_prints() {
    let pki = Pki::new();
    let out = ringmq(&["thumbprint", &pki.path("client.pem")]);
    out.assert_success();
    let openssl = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pki.path("client.pem"))
        .output()
        .expect("openssl is installed (apt-get install -y openssl)");
    assert!(openssl.status.success());
    let openssl = String::from_utf8_lossy(&openssl.stdout);
    let expected = openssl.trim().split_once('=').unwrap().1;
    assert_eq!(out.stdout.trim(), expected);
    let plain = ringmq(&["thumbprint", "--no-colons", &pki.path("client.pem")]);
    plain.assert_success();
    assert_eq!(plain.stdout.trim(), expected.replace(':', ""));
    // Not a certificate, no file: exit 1 with the file named.
    let out = ringmq(&["thumbprint", &pki.path("client.key")]);
    assert_eq!(exit_code(&out), 1, "{out}");
    assert!(out.stderr.contains("client.key"), "{out}");
    let out = ringmq(&["thumbprint", &pki.path("absent.pem")]);
    assert_eq!(exit_code(&out), 1, "{out}");
}

/// The printed thumbprint, pinned in the registry, lets the certificate's holder in over
/// mqtts (mosquitto_pub with the client certificate).
#[test]
fn thumbprint_pinned_in_the_registry_is_accepted_by_the_broker() {
    let pki = Pki::new();
    let thumb = ringmq(&["thumbprint", &pki.path("client.pem")]);
    thumb.assert_success();
    fs::write(
        pki.dir.join("registry.json"),
        thumbprint_registry(thumb.stdout.trim()),
    )
    .unwrap();
    let b = TlsBroker::start(&pki, "optional", "[auth]\nregistry = \"registry.json\"\n");
    let pub_with = |cert: &str| {
        let args: Vec<String> = [
            "-h",
            "127.0.0.1",
            "-p",
            &b.tls_port.to_string(),
            "--cafile",
            &pki.path("ca.pem"),
            "--cert",
            &pki.path(&format!("{cert}.pem")),
            "--key",
            &pki.path(&format!("{cert}.key")),
            "-i",
            "truck-17",
            "-u",
            "truck-17",
            "-V",
            "5",
            "-t",
            "t",
            "-m",
            "x",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        Tool::spawn(
            "mosquitto_pub",
            &args,
            "apt-get install -y mosquitto-clients",
        )
        .wait(TOOL_TIMEOUT)
    };
    pub_with("client").assert_success();
    // Another certificate (the server's) is not the pinned one.
    let out = pub_with("server");
    assert!(!out.status.is_some_and(|s| s.success()), "{out}");
}

// ---- token --------------------------------------------------------------------------------

const ISSUER: &str = "https://issuer.test";

/// A registry accepting CUSTOM-JWT tokens of `ISSUER` for audience `ringmq`, verified with
/// `keys` (HMAC secrets) and `public_keys` (PEM).
fn token_registry(secrets: &[&str], public_keys: &[String]) -> String {
    let mut jwt =
        json!({ "tokenIssuer": ISSUER, "audience": "ringmq", "acceptTokenInPassword": true });
    if !secrets.is_empty() {
        jwt["hmacSecrets"] = json!(secrets);
    }
    if !public_keys.is_empty() {
        jwt["issuerCertificates"] = json!(public_keys);
    }
    json!({ "namespace": { "clientAuthentication": { "customJwtAuthentication": jwt } } })
        .to_string()
}

fn start_with_registry(registry: &str) -> Broker {
    let dir = temp_dir("token-registry");
    let path = dir.join("registry.json");
    fs::write(&path, registry).unwrap();
    Broker::start(BrokerOpts::new().config(&format!("[auth]\nregistry = \"{}\"\n", path.display())))
}

fn mint(args: &[&str]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let out = ringmq(&all);
    out.assert_success();
    let token = out.stdout.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{out}");
    token
}

fn claims_of(token: &str) -> (Value, Value) {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let header = serde_json::from_slice(&b64.decode(parts.next().unwrap()).unwrap()).unwrap();
    let claims = serde_json::from_slice(&b64.decode(parts.next().unwrap()).unwrap()).unwrap();
    (header, claims)
}

fn connack_with_token(b: &Broker, client_id: &str, token: &str) -> ReasonCode {
    let (_c, ack) = Client::handshake(
        b.addr(),
        Opts::v5(client_id).auth("CUSTOM-JWT", token.as_bytes()),
    );
    ack.reason_code
}

/// An HMAC secret file: the token carries the asked-for claims and is accepted as CUSTOM-JWT;
/// one from another issuer, or already expired, is refused (0x86).
#[test]
fn token_from_an_hmac_secret_is_accepted_by_the_broker() {
    let dir = temp_dir("token-hmac");
    let secret = "a-test-secret-of-32-or-more-bytes-0123456789";
    let key = dir.join("secret.txt");
    write_private(&key, &format!("{secret}\n"));
    let key = key.to_string_lossy().into_owned();
    let b = start_with_registry(&token_registry(&[secret], &[]));
    let token = mint(&[
        "--key",
        &key,
        "--issuer",
        ISSUER,
        "--audience",
        "ringmq",
        "--subject",
        "truck-17",
        "--lifetime",
        "15m",
        "--claim",
        "zone=eu",
        "--claim",
        "level=3",
    ]);
    let (header, claims) = claims_of(&token);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], "ringmq");
    assert_eq!(claims["sub"], "truck-17");
    assert_eq!(claims["zone"], "eu");
    assert_eq!(claims["level"], 3);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        900
    );
    assert_eq!(
        connack_with_token(&b, "truck-17", &token),
        ReasonCode::SUCCESS
    );
    let other_issuer = mint(&[
        "--key",
        &key,
        "--issuer",
        "https://other.test",
        "--audience",
        "ringmq",
        "--subject",
        "truck-18",
    ]);
    assert_eq!(
        connack_with_token(&b, "truck-18", &other_issuer),
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    let expired = mint(&[
        "--key",
        &key,
        "--issuer",
        ISSUER,
        "--audience",
        "ringmq",
        "--subject",
        "truck-19",
        "--claim",
        "exp=1000",
    ]);
    assert_eq!(
        connack_with_token(&b, "truck-19", &expired),
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// PEM keys made by openssl: an EC P-256 key in SEC1 form (`openssl ecparam -genkey`) and an
/// RSA key in PKCS#8 form (`openssl genpkey`); their public keys in `issuerCertificates`. Each
/// key's token names its algorithm and is accepted.
#[test]
fn tokens_from_ec_and_rsa_pem_keys_are_accepted_by_the_broker() {
    let dir = temp_dir("token-pem");
    let ec = dir.join("ec.key").to_string_lossy().into_owned();
    let rsa = dir.join("rsa.key").to_string_lossy().into_owned();
    openssl(&[
        "ecparam",
        "-genkey",
        "-name",
        "prime256v1",
        "-noout",
        "-out",
        &ec,
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &rsa,
    ]);
    let ec_pub = openssl(&["pkey", "-in", &ec, "-pubout"]);
    let rsa_pub = openssl(&["pkey", "-in", &rsa, "-pubout"]);
    let b = start_with_registry(&token_registry(&[], &[ec_pub, rsa_pub]));
    for (key, alg, client) in [(&ec, "ES256", "sensor-ec"), (&rsa, "RS256", "sensor-rsa")] {
        let token = mint(&[
            "--key",
            key,
            "--issuer",
            ISSUER,
            "--audience",
            "ringmq",
            "--subject",
            client,
        ]);
        assert_eq!(claims_of(&token).0["alg"], alg);
        assert_eq!(
            connack_with_token(&b, client, &token),
            ReasonCode::SUCCESS,
            "{alg}"
        );
    }
    // PS256 from the RSA key: another algorithm, same key, accepted too.
    let token = mint(&[
        "--key",
        &rsa,
        "--alg",
        "PS256",
        "--issuer",
        ISSUER,
        "--audience",
        "ringmq",
        "--subject",
        "sensor-ps",
    ]);
    assert_eq!(claims_of(&token).0["alg"], "PS256");
    assert_eq!(
        connack_with_token(&b, "sensor-ps", &token),
        ReasonCode::SUCCESS
    );
}

/// Mistakes are refused with the reason and exit 1: a missing key file, an algorithm the key
/// cannot sign, a claim without `=`, a bad lifetime.
#[test]
fn token_refuses_bad_arguments() {
    let dir = temp_dir("token-bad");
    let key = dir.join("secret.txt");
    write_private(&key, "a-test-secret-of-32-or-more-bytes-0123456789");
    let key = key.to_string_lossy().into_owned();
    let cases: [(&[&str], &str); 4] = [
        (&["--key", "/nonexistent/key.pem"], "/nonexistent/key.pem"),
        (&["--key", &key, "--alg", "RS256"], "cannot sign RS256"),
        (&["--key", &key, "--claim", "novalue"], "NAME=VALUE"),
        (&["--key", &key, "--lifetime", "3 weeks"], "--lifetime"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["token", "--issuer", ISSUER];
        all.extend_from_slice(args);
        let out = ringmq(&all);
        assert_eq!(exit_code(&out), 1, "{out}");
        assert!(out.stderr.contains(expected), "{expected:?}:\n{out}");
        assert!(out.stdout.is_empty(), "{out}");
    }
}

/// `--fetch-jwks` fetches each JWKS endpoint once: one that answers 404 is an error naming the
/// URL; without the option nothing is fetched and the same configuration passes.
#[test]
fn check_fetches_jwks_endpoints_only_when_asked() {
    use std::io::{Read, Write};
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", server.local_addr().unwrap());
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in server.incoming() {
            let Ok(mut s) = stream else { continue };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let dir = temp_dir("check-jwks");
    fs::write(
        dir.join("registry.json"),
        json!({ "namespace": { "clientAuthentication": { "customJwtAuthentication": {
            "tokenIssuer": ISSUER,
            "jwks": { "url": url, "allowInsecureHttp": true } } } } })
        .to_string(),
    )
    .unwrap();
    let config = dir.join("ringmq.toml");
    fs::write(&config, "[auth]\nregistry = \"registry.json\"\n").unwrap();
    let config = config.to_string_lossy().into_owned();
    let out = ringmq(&["check", "-c", &config]);
    assert_eq!(exit_code(&out), 0, "{out}");
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 0);
    let out = ringmq(&["check", "--fetch-jwks", "-c", &config]);
    assert_eq!(exit_code(&out), 1, "{out}");
    assert!(
        out.stdout.contains(&format!("jwks {url}: ")) && out.stdout.contains("404"),
        "{out}"
    );
    assert!(served.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}
