//! Certificate factory for the X.509 and registry tests (a module of those test crates): a root,
//! intermediates and leaves made with rcgen, CRLs, and registry JSON around them. Fixed
//! dates and an explicit `now`, so no test depends on the clock.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber, date_time_ymd,
};
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};

/// "Now" of the tests: 2026-06-01T00:00:00Z.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_272_000)
}

/// Leaves are valid 2024-01-01 .. 2028-01-01 unless a test says otherwise.
pub fn leaf_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Acme IoT");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.not_before = date_time_ymd(2024, 1, 1);
    p.not_after = date_time_ymd(2028, 1, 1);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p
}

pub fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Acme IoT");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2040, 1, 1);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

pub type Ca = CertifiedIssuer<'static, KeyPair>;

pub fn root(cn: &str) -> Ca {
    root_with(ca_params(cn))
}

pub fn root_with(params: CertificateParams) -> Ca {
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

pub fn intermediate(cn: &str, parent: &Ca) -> Ca {
    intermediate_with(ca_params(cn), parent)
}

pub fn intermediate_with(params: CertificateParams, parent: &Ca) -> Ca {
    CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), parent).unwrap()
}

pub fn leaf_with(params: CertificateParams, parent: &Ca) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    params.signed_by(&key, parent).unwrap().der().clone()
}

pub fn leaf(cn: &str, parent: &Ca) -> CertificateDer<'static> {
    leaf_with(leaf_params(cn), parent)
}

pub fn with_sans(mut params: CertificateParams, sans: Vec<SanType>) -> CertificateParams {
    params.subject_alt_names = sans;
    params
}

pub fn self_signed(params: CertificateParams) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().clone()
}

pub fn serial(n: u64) -> SerialNumber {
    SerialNumber::from(n)
}

/// A CRL by `ca` listing `serials`.
pub fn crl(ca: &Ca, serials: &[u64]) -> String {
    let params = CertificateRevocationListParams {
        this_update: date_time_ymd(2026, 1, 1),
        next_update: date_time_ymd(2027, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: date_time_ymd(2025, 6, 1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params.signed_by(ca).unwrap().pem().unwrap()
}

/// A `caCertificates` entry.
pub fn ca_entry(name: &str, ca: &Ca, crls: &[String]) -> Value {
    json!({ "name": name, "encodedCertificate": ca.pem(), "crls": crls })
}

/// A client with a certificate validation scheme.
pub fn client(name: &str, scheme: &str) -> Value {
    json!({
        "name": name,
        "authenticationName": name,
        "clientCertificateAuthentication": { "validationScheme": scheme },
        "attributes": { "type": "truck", "year": 2024, "zones": ["eu", "us"] }
    })
}

pub fn registry_json(cas: Vec<Value>, clients: Vec<Value>, sources: &[&str]) -> String {
    json!({
        "namespace": { "clientAuthentication": { "alternativeAuthenticationNameSources": sources } },
        "caCertificates": cas,
        "clients": clients,
    })
    .to_string()
}

pub fn registry(
    cas: Vec<Value>,
    clients: Vec<Value>,
    sources: &[&str],
) -> ringmq_auth::registry::Registry {
    let mut warnings = Vec::new();
    let text = registry_json(cas, clients, sources);
    ringmq_auth::registry::Registry::parse(&text, &mut warnings)
        .unwrap_or_else(|e| panic!("registry does not parse: {e}"))
}
