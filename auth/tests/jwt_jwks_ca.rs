//! JWKS behind a private CA: an HTTPS endpoint on 127.0.0.1 whose certificate is issued by a CA
//! made here (as an on-premises Keycloak or ADFS behind an internal CA would be). Without a CA
//! setting the fetch fails (only the public web roots are trusted); with the issuer's `caPem`
//! or the shared `[auth] jwks_ca_file` (`Jwks::use_shared_ca`) it succeeds and tokens verify;
//! an issuer's own `caPem` wins over the shared file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod jwt_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use jsonwebtoken::Algorithm;
use jwt_support::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use ringmq_auth::jwt::{self, JwtCache};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;

type Ca = CertifiedIssuer<'static, KeyPair>;

fn private_ca(cn: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// An HTTPS server on 127.0.0.1 serving `doc` at any path with a certificate from `ca`;
/// returns the URL of `/keys`. Serves until the test process ends.
fn https_jwks(ca: &Ca, doc: String) -> String {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = p.signed_by(&key, ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/keys", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(tcp) = stream else { continue };
            let Ok(conn) = rustls::ServerConnection::new(Arc::clone(&config)) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            // Read the request head; a client that refused our certificate ends here.
            while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                match tls.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            if !head.ends_with(b"\r\n\r\n") {
                continue;
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{doc}",
                doc.len()
            );
            let _ = tls.write_all(response.as_bytes());
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    url
}

#[test]
fn issuer_ca_pem_trusts_a_private_ca() {
    let ca = private_ca("Corp Root");
    let key = TestKey::generate(Algorithm::ES256);
    let url = https_jwks(&ca, jwks_doc(&[key.jwk("k1")]));

    // The public web roots do not know the private CA.
    let public = custom(custom_config(json!({"jwks": {"url": url}})));
    let e = public.jwks().unwrap().refresh_blocking().unwrap_err();
    assert!(matches!(e, jwt::JwksError::Request { .. }), "{e}");

    let private = custom(custom_config(
        json!({"jwks": {"url": url, "caPem": ca.pem()}}),
    ));
    let set = private.jwks().unwrap().refresh_blocking().unwrap();
    assert_eq!(set.len(), 1);
    auth(
        &private,
        &key.sign(Some("k1"), &claims()),
        &mut JwtCache::default(),
        now(),
    )
    .unwrap();
}

#[test]
fn shared_ca_file_applies_unless_the_issuer_has_its_own() {
    let (ca, other) = (private_ca("Corp Root"), private_ca("Other Root"));
    let key = TestKey::generate(Algorithm::RS256);
    let url = https_jwks(&ca, jwks_doc(&[key.jwk("k")]));
    let shared = jwt::parse_ca_pem(&ca.pem()).unwrap();

    let c = custom(custom_config(json!({"jwks": {"url": url}})));
    let jwks = c.jwks().unwrap();
    jwks.use_shared_ca(Arc::clone(&shared));
    jwks.refresh_blocking().unwrap();

    // An issuer's own caPem (of another CA) is what it trusts: the shared file does not add.
    let own = custom(custom_config(
        json!({"jwks": {"url": url, "caPem": other.pem()}}),
    ));
    let jwks = own.jwks().unwrap();
    jwks.use_shared_ca(shared);
    assert!(jwks.refresh_blocking().is_err());
}

#[test]
fn a_bad_ca_pem_is_a_registry_error() {
    for bad in [
        "",
        "not pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        let e = jwt::parse_custom_jwt(
            &custom_config(json!({"jwks": {"url": "https://idp.example/keys", "caPem": bad}})),
            "p",
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(e.path, "p.jwks.caPem", "{bad:?}");
    }
}
