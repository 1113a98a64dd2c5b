//! Arbitrary DER (and PEM) → client-certificate authentication: `Snapshot::authenticate` with
//! the bytes as the TLS peer chain, against a registry made from `fixtures/x509_registry.json`
//! (a root CA with a CRL; clients for each validation scheme, one disabled), and optionally
//! with a fuzzed certificate registered as an extra CA. Nothing may panic; the cached answer
//! must equal the computed one; an acceptance must name an enabled client (the username's,
//! when one is given) and pass `x509::still_valid`.
//!
//! Input layout: byte 0 is a control byte (bits 0–2: the CONNECT username, 0 = none, see
//! `USERNAMES`; bit 3: register the first certificate as an extra CA; bit 4: the rest is PEM
//! text for an extra CA, and the chain is the fixture leaf; bits 5–6: the clock, see `NOWS`).
//! Otherwise the rest is certificates, each preceded by its length (2 bytes, big-endian; the
//! last one takes what is left).

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use libfuzzer_sys::fuzz_target;
use ringmq_auth::registry::Registry;
use ringmq_auth::{Caches, Credentials, Method, Snapshot, x509};
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};

const REGISTRY_JSON: &str = include_str!("../fixtures/x509_registry.json");
/// `O=Acme IoT, CN=truck-17`, issued by the intermediate, with DNS, URI, IP and email SANs.
const LEAF: &[u8] = include_bytes!("../fixtures/leaf.der");

/// The authentication names of the fixture's clients (index 0: no username).
const USERNAMES: [Option<&str>; 8] = [
    None,
    Some("truck-17"),
    Some("truck-17.fleet"),
    Some("urn:dev:truck-17"),
    Some("10.0.0.17"),
    Some("truck-17@fleet.example"),
    Some("sensor-9"),
    Some("dashboard"),
];
/// 2026-06-01 (all valid), 2023-06-01 (nothing valid yet), 2039-06-01 (leaves expired),
/// 2041-06-01 (everything expired).
const NOWS: [u64; 4] = [1_780_272_000, 1_685_577_600, 2_190_672_000, 2_253_830_400];
/// Most certificates taken from one input: one more than a chain may have.
const CERTS_MAX: usize = 9;

fn snapshot(registry: Registry) -> Snapshot {
    Snapshot {
        version: 7,
        allow_anonymous: false,
        registry: Some(registry),
        files: Default::default(),
    }
}

/// The fixture, parsed once.
fn fixture() -> &'static Snapshot {
    static FIXTURE: OnceLock<Snapshot> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        snapshot(Registry::parse(REGISTRY_JSON, &mut Vec::new()).expect("the fixture loads"))
    })
}

/// The fixture without its CRL (whose signature check would cost every input) plus `pem` as
/// one more CA certificate; `None` when the registry refuses it.
fn registry_with_ca(pem: &str) -> Option<Registry> {
    static BASE: OnceLock<Value> = OnceLock::new();
    let mut doc = BASE
        .get_or_init(|| {
            let mut doc: Value = serde_json::from_str(REGISTRY_JSON).expect("fixture is JSON");
            doc["caCertificates"][0]
                .as_object_mut()
                .expect("a CA entry")
                .remove("crls");
            doc
        })
        .clone();
    doc["caCertificates"]
        .as_array_mut()
        .expect("a CA list")
        .push(json!({ "name": "fuzzed", "encodedCertificate": pem }));
    match Registry::parse(&doc.to_string(), &mut Vec::new()) {
        Ok(reg) => {
            assert_eq!(reg.ca_certificates().len(), 2);
            Some(reg)
        }
        Err(e) => {
            assert!(!e.problem.is_empty());
            None
        }
    }
}

/// Splits length-prefixed certificates.
fn split_certs(mut data: &[u8]) -> Vec<CertificateDer<'static>> {
    let mut certs = Vec::new();
    while !data.is_empty() && certs.len() < CERTS_MAX {
        let (len, rest) = match data {
            [hi, lo, rest @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), rest),
            _ => (data.len(), &[][..]),
        };
        let (cert, rest) = rest.split_at(len.min(rest.len()));
        certs.push(CertificateDer::from(cert.to_vec()));
        data = rest;
    }
    certs
}

fn check(
    snapshot: &Snapshot,
    chain: &[CertificateDer<'static>],
    username: Option<&str>,
    now: SystemTime,
) {
    let creds = Credentials {
        client_id: "fuzz",
        username,
        password: None,
        auth_method: None,
        auth_data: None,
        peer_certificates: chain,
        v5: true,
    };
    let mut caches = Caches::default();
    let first = snapshot.authenticate(&creds, &mut caches, now);
    let hits = caches.x509.hits();
    let again = snapshot.authenticate(&creds, &mut caches, now);
    // A refusal cached until a certificate becomes valid may expire at once: only compare a hit.
    if caches.x509.hits() > hits {
        match (&first, &again) {
            (Ok(a), Ok(b)) => assert_eq!(a.authentication_name, b.authentication_name),
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("the cache changed the answer: {first:?} then {again:?}"),
        }
    }
    let Some(reg) = &snapshot.registry else {
        return;
    };
    match first {
        Ok(identity) => {
            assert_eq!(identity.method, Method::Certificate);
            assert!(!chain.is_empty());
            let client = reg
                .client_by_authentication_name(&identity.authentication_name)
                .expect("an accepted certificate names a registered client");
            assert_eq!(client.state, ringmq_auth::registry::ClientState::Enabled);
            if let Some(user) = username.filter(|u| !u.is_empty()) {
                assert!(user.eq_ignore_ascii_case(&identity.authentication_name));
            }
            if let Err(e) = x509::still_valid(reg, chain, &identity.authentication_name, now) {
                panic!("accepted, then still_valid refuses: {e}");
            }
        }
        Err(e) => assert!(e.to_string().len() > "bad credentials: ".len()),
    }
}

fn pem(der: &[u8]) -> String {
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        BASE64.encode(der)
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let username = USERNAMES[usize::from(ctl & 7)];
    let now = UNIX_EPOCH + Duration::from_secs(NOWS[usize::from((ctl >> 5) & 3)]);
    if ctl & 0x10 != 0 {
        // PEM text of an extra CA; the leaf alone must then chain to it.
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        if let Some(reg) = registry_with_ca(text) {
            let leaf = [CertificateDer::from(LEAF.to_vec())];
            check(&snapshot(reg), &leaf, username, now);
        }
        return;
    }
    let mut chain = split_certs(rest);
    if ctl & 0x08 != 0 && !chain.is_empty() {
        let anchor = chain.remove(0);
        let Some(reg) = registry_with_ca(&pem(&anchor)) else {
            return;
        };
        if chain.is_empty() {
            chain.push(CertificateDer::from(LEAF.to_vec()));
        }
        check(&snapshot(reg), &chain, username, now);
        return;
    }
    check(fixture(), &chain, username, now);
});
