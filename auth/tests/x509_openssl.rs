//! The certificate recipes of docs/authentication.md, run with the real `openssl` CLI: a
//! root → intermediate → leaf chain with clientAuth, a self-signed certificate pinned by the
//! thumbprint `openssl x509 -fingerprint -sha256` prints, and a CRL from `openssl ca`.
//! Skipped (with a note) where no `openssl` binary exists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use ringmq_auth::registry::Registry;
use ringmq_auth::x509::{self, X509Cache};
use ringmq_auth::{AuthError, Credentials};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;

/// The shell recipe, as in the docs.
const RECIPE: &str = r#"
set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout root.key -out root.pem -days 3650 -subj "/O=Acme IoT/CN=Fleet Root" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout intermediate.key -out intermediate.csr -subj "/O=Acme IoT/CN=Fleet Intermediate"
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' > intermediate.ext
openssl x509 -req -in intermediate.csr -CA root.pem -CAkey root.key -CAcreateserial \
  -days 1825 -extfile intermediate.ext -out intermediate.pem
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout truck-17.key -out truck-17.csr -subj "/O=Acme IoT/CN=truck-17"
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=DNS:truck-17.fleet.example\n' > truck-17.ext
openssl x509 -req -in truck-17.csr -CA intermediate.pem -CAkey intermediate.key -CAcreateserial \
  -days 365 -extfile truck-17.ext -out truck-17.pem
cat truck-17.pem intermediate.pem > truck-17-chain.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout sensor-9.key -out sensor-9.pem -days 365 -subj "/CN=sensor-9" \
  -addext "extendedKeyUsage=clientAuth"
openssl x509 -in sensor-9.pem -noout -fingerprint -sha256 > sensor-9.fingerprint
printf '[ ca ]\ndefault_ca = intermediate\n[ intermediate ]\ndatabase = index.txt\ncertificate = intermediate.pem\nprivate_key = intermediate.key\ndefault_md = sha256\ndefault_crl_days = 30\n' > intermediate-ca.cnf
touch index.txt
openssl ca -config intermediate-ca.cnf -revoke truck-17.pem
openssl ca -config intermediate-ca.cnf -gencrl -out intermediate.crl.pem
"#;

fn run_recipe() -> Option<PathBuf> {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("openssl not found: skipping the openssl recipe test");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("ringmq-openssl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(RECIPE)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "recipe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(dir)
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn chain(dir: &Path, name: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(dir.join(name))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn auth(
    reg: &Registry,
    user: Option<&str>,
    chain: &[CertificateDer<'static>],
) -> Result<(), AuthError> {
    let creds = Credentials {
        client_id: "c",
        username: user,
        password: None,
        auth_method: None,
        auth_data: None,
        peer_certificates: chain,
        v5: true,
    };
    x509::authenticate(reg, &creds, &mut X509Cache::default(), 1, SystemTime::now()).map(|_| ())
}

#[test]
fn openssl_recipes_authenticate() {
    let Some(dir) = run_recipe() else { return };
    let fingerprint = read(&dir, "sensor-9.fingerprint");
    let print = fingerprint.trim().rsplit('=').next().unwrap().to_owned();
    let clients = json!([
        { "name": "truck-17", "clientCertificateAuthentication": { "validationScheme": "SubjectMatchesAuthenticationName" } },
        { "name": "sensor-9", "clientCertificateAuthentication": { "validationScheme": "ThumbprintMatch", "allowedThumbprints": [print] } }
    ]);
    let doc = json!({
        "namespace": { "clientAuthentication": { "alternativeAuthenticationNameSources": ["ClientCertificateSubject"] } },
        "caCertificates": [{ "name": "fleet-root", "encodedCertificate": read(&dir, "root.pem") }],
        "clients": clients,
    });
    let reg = Registry::parse(&doc.to_string(), &mut Vec::new()).unwrap();
    let truck = chain(&dir, "truck-17-chain.pem");
    assert_eq!(truck.len(), 2);
    auth(&reg, None, &truck).unwrap();
    auth(&reg, Some("truck-17"), &truck).unwrap();
    auth(&reg, None, &chain(&dir, "sensor-9.pem")).unwrap();
    // The leaf alone does not reach the registered root.
    assert!(auth(&reg, None, &truck[..1]).is_err());

    // Registering the intermediate with the CRL `openssl ca -gencrl` made revokes truck-17.
    let doc = json!({
        "caCertificates": [
            { "name": "fleet-root", "encodedCertificate": read(&dir, "root.pem") },
            { "name": "fleet-intermediate", "encodedCertificate": read(&dir, "intermediate.pem"),
              "crls": [read(&dir, "intermediate.crl.pem")] }
        ],
        "clients": clients,
    });
    let reg = Registry::parse(&doc.to_string(), &mut Vec::new()).unwrap();
    let e = auth(&reg, Some("truck-17"), &truck).unwrap_err();
    assert_eq!(e, AuthError::BadCredentials("certificate revoked".into()));
    std::fs::remove_dir_all(&dir).unwrap();
}
