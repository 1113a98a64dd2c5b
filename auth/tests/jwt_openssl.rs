//! The token recipes of docs/authentication.md, run with the real `openssl` CLI: an HS256
//! token with a shared secret and an RS256 token with the issuer's key pair, both accepted
//! through `Snapshot::authenticate` as CUSTOM-JWT and as a password token. Skipped (with a
//! note) where no `openssl` binary exists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::SystemTime;

use ringmq_auth::registry::Registry;
use ringmq_auth::{Caches, Credentials, Method, Snapshot};
use serde_json::json;

/// The shell recipe, as in the docs.
const RECIPE: &str = r#"
set -e
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
SECRET='change-me-to-32-or-more-random-bytes'
payload=$(printf '{"iss":"https://issuer.example","aud":"ringmq","sub":"truck-17","exp":%d}' \
  "$(( $(date +%s) + 3600 ))" | b64url)

header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -hmac "$SECRET" -binary | b64url)
printf '%s.%s.%s' "$header" "$payload" "$sig" > truck-17.hs256.jwt

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out issuer.key 2>/dev/null
openssl pkey -in issuer.key -pubout -out issuer.pub.pem
header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign issuer.key -binary | b64url)
printf '%s.%s.%s' "$header" "$payload" "$sig" > truck-17.rs256.jwt
"#;

#[test]
fn tokens_made_with_openssl_as_in_the_docs_are_accepted() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: no openssl binary");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ringmq-jwt-openssl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(RECIPE)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let text = json!({"namespace": {"clientAuthentication": {"customJwtAuthentication": {
        "tokenIssuer": "https://issuer.example",
        "audience": "ringmq",
        "issuerCertificates": [read("issuer.pub.pem")],
        "hmacSecrets": ["change-me-to-32-or-more-random-bytes"],
        "acceptTokenInPassword": true
    }}}})
    .to_string();
    let mut warnings = Vec::new();
    let s = Snapshot {
        version: 1,
        allow_anonymous: false,
        registry: Some(Registry::parse(&text, &mut warnings).unwrap()),
        files: Default::default(),
    };
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut caches = Caches::default();
    for file in ["truck-17.hs256.jwt", "truck-17.rs256.jwt"] {
        let token = read(file);
        // mosquitto_pub -V 5 -D connect authentication-method CUSTOM-JWT -D connect authentication-data <token>
        let v5 = Credentials {
            client_id: "truck-17",
            username: None,
            password: None,
            auth_method: Some("CUSTOM-JWT"),
            auth_data: Some(token.as_bytes()),
            peer_certificates: &[],
            v5: true,
        };
        let id = s.authenticate(&v5, &mut caches, SystemTime::now()).unwrap();
        assert_eq!(
            (&*id.authentication_name, id.method),
            ("truck-17", Method::CustomJwt)
        );
        // mosquitto_pub -V 311 -u truck-17 -P <token>
        let v311 = Credentials {
            username: Some("truck-17"),
            password: Some(token.as_bytes()),
            auth_method: None,
            auth_data: None,
            v5: false,
            ..v5
        };
        let id = s
            .authenticate(&v311, &mut caches, SystemTime::now())
            .unwrap();
        assert_eq!(
            (&*id.authentication_name, id.method),
            ("truck-17", Method::PasswordJwt)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
