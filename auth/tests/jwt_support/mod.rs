//! Shared by the JWT integration tests: test keys generated in-process, token minting, a
//! fixed clock, and a tiny JWKS HTTP server on 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ringmq_auth::jwt::{self, CustomJwt, JwtCache, OAuth2Jwt, TokenSource};
use ringmq_auth::{AuthError, Credentials, Identity};
use serde_json::{Value, json};

pub const ISS: &str = "https://issuer.test";
pub const AUD: &str = "ringmq-test";
/// The tests' clock: 2027-01-15T08:00:00Z.
pub const NOW_SECS: u64 = 1_800_000_000;

pub fn now() -> SystemTime {
    at(0)
}

/// `NOW_SECS + offset` seconds.
pub fn at(offset: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS.saturating_add_signed(offset))
}

/// A signing key and what a verifier needs to know about it.
pub struct TestKey {
    pub alg: Algorithm,
    pub enc: EncodingKey,
    /// SubjectPublicKeyInfo PEM.
    pub public_pem: String,
    /// A self-signed certificate holding the public key.
    pub cert_pem: String,
    /// The raw public key (Ed25519: 32 bytes).
    pub public_raw: Vec<u8>,
}

impl TestKey {
    pub fn generate(alg: Algorithm) -> TestKey {
        let kp = match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
            Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
            Algorithm::ES256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            Algorithm::ES384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            Algorithm::EdDSA => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
            other => panic!("no key pair for {other:?}"),
        }
        .unwrap();
        let private_pem = kp.serialize_pem();
        let enc = match alg.family() {
            jsonwebtoken::AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
            jsonwebtoken::AlgorithmFamily::Ec => EncodingKey::from_ec_pem(private_pem.as_bytes()),
            jsonwebtoken::AlgorithmFamily::Ed => EncodingKey::from_ed_pem(private_pem.as_bytes()),
            jsonwebtoken::AlgorithmFamily::Hmac => unreachable!(),
        }
        .unwrap();
        let cert = rcgen::CertificateParams::new(vec!["issuer.test".to_string()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        TestKey {
            alg,
            enc,
            public_pem: kp.public_key_pem(),
            cert_pem: cert.pem(),
            public_raw: kp.public_key_raw().to_vec(),
        }
    }

    /// This key as a JWK with `kid`.
    pub fn jwk(&self, kid: &str) -> Jwk {
        if self.alg == Algorithm::EdDSA {
            // jsonwebtoken derives Ed25519 JWKs from PKCS#8 v1 only; rcgen writes v2.
            use base64::Engine as _;
            let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.public_raw);
            return serde_json::from_value(
                json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA"}),
            )
            .unwrap();
        }
        let mut jwk = Jwk::from_encoding_key(&self.enc, self.alg).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        jwk
    }

    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        sign_with(self.alg, &self.enc, kid, claims)
    }
}

pub fn sign_with(alg: Algorithm, enc: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, enc).unwrap()
}

pub fn hs(alg: Algorithm, secret: &str, kid: Option<&str>, claims: &Value) -> String {
    sign_with(
        alg,
        &EncodingKey::from_secret(secret.as_bytes()),
        kid,
        claims,
    )
}

pub fn jwks_doc(keys: &[Jwk]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.to_vec(),
    })
    .unwrap()
}

/// Claims that pass a default test configuration: exp in 10 minutes.
pub fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "device-1", "exp": NOW_SECS + 600})
}

/// `claims()` with `extra` merged in (a `null` removes a claim).
pub fn claims_with(extra: Value) -> Value {
    let mut c = claims();
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

pub fn creds<'a>(client_id: &'a str, username: Option<&'a str>) -> Credentials<'a> {
    Credentials {
        client_id,
        username,
        password: None,
        auth_method: None,
        auth_data: None,
        peer_certificates: &[],
        v5: true,
    }
}

pub fn custom(config: Value) -> CustomJwt {
    let mut warnings = Vec::new();
    let c = jwt::parse_custom_jwt(
        &config,
        "namespace.clientAuthentication.customJwtAuthentication",
        &mut warnings,
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    c
}

pub fn oauth2(config: Value) -> OAuth2Jwt {
    jwt::parse_oauth2_jwt(
        &config,
        "namespace.clientAuthentication.oauth2JwtAuthentication",
        &mut Vec::new(),
    )
    .unwrap()
}

/// The default test configuration around some keys.
pub fn custom_config(keys: Value) -> Value {
    let mut c = json!({"tokenIssuer": ISS, "audience": AUD});
    for (k, v) in keys.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

pub fn auth(
    c: &CustomJwt,
    token: &str,
    cache: &mut JwtCache,
    now: SystemTime,
) -> Result<Identity, AuthError> {
    auth_as(c, token, &creds("device-1", None), cache, now)
}

pub fn auth_as(
    c: &CustomJwt,
    token: &str,
    creds: &Credentials<'_>,
    cache: &mut JwtCache,
    now: SystemTime,
) -> Result<Identity, AuthError> {
    jwt::authenticate_with(
        Some(c),
        None,
        TokenSource::CustomJwt,
        token.as_bytes(),
        creds,
        cache,
        now,
    )
}

/// The reason of a `BadCredentials` refusal (panics on anything else).
pub fn refused(r: Result<Identity, AuthError>) -> String {
    match r {
        Err(AuthError::BadCredentials(reason)) => reason,
        other => panic!("expected BadCredentials, got {other:?}"),
    }
}

/// A JWKS endpoint on 127.0.0.1: serves `doc` with `status`, counts requests, keeps the last
/// request head. Runs until the test process ends.
pub struct JwksServer {
    pub url: String,
    pub doc: Arc<Mutex<String>>,
    pub status: Arc<AtomicU16>,
    pub hits: Arc<AtomicUsize>,
    pub last_request: Arc<Mutex<String>>,
}

impl JwksServer {
    pub fn start(doc: String) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/keys", listener.local_addr().unwrap());
        let server = JwksServer {
            url,
            doc: Arc::new(Mutex::new(doc)),
            status: Arc::new(AtomicU16::new(200)),
            hits: Arc::new(AtomicUsize::new(0)),
            last_request: Arc::new(Mutex::new(String::new())),
        };
        let (doc, status, hits, last) = (
            Arc::clone(&server.doc),
            Arc::clone(&server.status),
            Arc::clone(&server.hits),
            Arc::clone(&server.last_request),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                *last.lock().unwrap() = String::from_utf8_lossy(&head).into_owned();
                let body = doc.lock().unwrap().clone();
                let code = status.load(Ordering::SeqCst);
                let resp = format!(
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                // Counted before answering, so a client that saw the answer sees the count.
                hits.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(resp.as_bytes());
            }
        });
        server
    }

    pub fn serve(&self, doc: String) {
        *self.doc.lock().unwrap() = doc;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn jwks_config(&self) -> Value {
        json!({"url": self.url, "allowInsecureHttp": true, "refreshIntervalSeconds": 3600})
    }
}

/// Waits (bounded: 20 s) until `cond` holds; for the background fetcher. Not a timing
/// assertion: the test asserts what happened, this only waits for it.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
