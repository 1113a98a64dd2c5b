//! X.509 client authentication against a registry: every validation scheme with its positive
//! case and the ways it fails, chains through registered roots and intermediates, CRLs,
//! thumbprints, name sources, the per-shard cache and the re-validation after a reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "x509_support/mod.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType, date_time_ymd,
};
use ringmq_auth::registry::Registry;
use ringmq_auth::x509::{self, X509Cache};
use ringmq_auth::{AttrValue, AuthError, ClientType, Credentials, Method};
use ringmq_codec::ReasonCode;
use rustls_pki_types::CertificateDer;
use serde_json::json;
use support::*;

fn creds<'a>(username: Option<&'a str>, chain: &'a [CertificateDer<'static>]) -> Credentials<'a> {
    Credentials {
        client_id: "c1",
        username,
        password: None,
        auth_method: None,
        auth_data: None,
        peer_certificates: chain,
        v5: true,
    }
}

fn auth_at(
    reg: &Registry,
    user: Option<&str>,
    chain: &[CertificateDer<'static>],
    at: SystemTime,
) -> Result<ringmq_auth::Identity, AuthError> {
    x509::authenticate(reg, &creds(user, chain), &mut X509Cache::default(), 1, at)
}

fn auth(
    reg: &Registry,
    user: Option<&str>,
    chain: &[CertificateDer<'static>],
) -> Result<ringmq_auth::Identity, AuthError> {
    auth_at(reg, user, chain, now())
}

fn refusal(r: Result<ringmq_auth::Identity, AuthError>) -> String {
    match r {
        Ok(id) => panic!("accepted as {:?}", id.authentication_name),
        Err(AuthError::BadCredentials(m)) => m,
        Err(other) => panic!("unexpected refusal kind: {other:?}"),
    }
}

/// Root → intermediate, both registered as one CA ("fleet-root"), the client under `scheme`.
struct Fleet {
    root: Ca,
    inter: Ca,
}

fn fleet() -> Fleet {
    let root = root("Fleet Root");
    let inter = intermediate("Fleet Intermediate", &root);
    Fleet { root, inter }
}

fn reg_root(f: &Fleet, clients: Vec<serde_json::Value>) -> Registry {
    registry(vec![ca_entry("fleet-root", &f.root, &[])], clients, &[])
}

#[test]
fn subject_scheme_accepts_common_name_with_stored_case_and_attributes() {
    let f = fleet();
    let reg = reg_root(
        &f,
        vec![client("Truck-17", "SubjectMatchesAuthenticationName")],
    );
    let chain = [leaf("truck-17", &f.inter), f.inter.der().clone()];
    let id = auth(&reg, Some("TRUCK-17"), &chain).unwrap();
    assert_eq!(id.method, Method::Certificate);
    assert_eq!(&*id.authentication_name, "Truck-17");
    assert_eq!(id.client_name.as_deref(), Some("Truck-17"));
    assert_eq!(id.client_type, ClientType::Device);
    assert_eq!(id.attributes.get("year"), Some(&AttrValue::Integer(2024)));
    assert_eq!(
        id.attributes.get("zones"),
        Some(&AttrValue::Array(vec![
            AttrValue::String("eu".into()),
            AttrValue::String("us".into())
        ]))
    );
}

#[test]
fn subject_scheme_accepts_whole_dn_in_rfc4514_form() {
    let f = fleet();
    let name = "CN=truck-17,O=Acme IoT";
    let reg = reg_root(&f, vec![client(name, "SubjectMatchesAuthenticationName")]);
    let chain = [leaf("truck-17", &f.inter), f.inter.der().clone()];
    assert!(auth(&reg, Some(name), &chain).is_ok());
    // Certificate order (O first) is not RFC 4514.
    assert!(auth(&reg, Some("O=Acme IoT,CN=truck-17"), &chain).is_err());
}

#[test]
fn subject_scheme_refuses_other_name() {
    let f = fleet();
    let reg = reg_root(
        &f,
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
    );
    let chain = [leaf("truck-18", &f.inter), f.inter.der().clone()];
    let m = refusal(auth(&reg, Some("truck-17"), &chain));
    assert_eq!(m, "subject does not match authentication name");
}

fn san_case(scheme: &str, name: &str, good: SanType, bad: SanType, reason: &str) {
    let f = fleet();
    let reg = reg_root(&f, vec![client(name, scheme)]);
    let ok = leaf_with(with_sans(leaf_params("x"), vec![good]), &f.inter);
    assert!(
        auth(&reg, Some(name), &[ok, f.inter.der().clone()]).is_ok(),
        "{scheme}"
    );
    let wrong = leaf_with(with_sans(leaf_params(name), vec![bad]), &f.inter);
    assert_eq!(
        refusal(auth(&reg, Some(name), &[wrong, f.inter.der().clone()])),
        reason
    );
}

fn ia5(s: &str) -> rcgen::string::Ia5String {
    s.try_into().unwrap()
}

#[test]
fn dns_scheme() {
    san_case(
        "DnsMatchesAuthenticationName",
        "truck-17.fleet.example",
        SanType::DnsName(ia5("TRUCK-17.fleet.example")),
        SanType::DnsName(ia5("truck-18.fleet.example")),
        "no SAN DNS name matches authentication name",
    );
}

#[test]
fn uri_scheme() {
    san_case(
        "UriMatchesAuthenticationName",
        "spiffe://fleet/truck-17",
        SanType::URI(ia5("spiffe://fleet/truck-17")),
        SanType::URI(ia5("spiffe://fleet/truck-18")),
        "no SAN URI matches authentication name",
    );
}

#[test]
fn ip_scheme_compares_addresses() {
    let f = fleet();
    let reg = reg_root(
        &f,
        vec![client("2001:db8::1", "IpMatchesAuthenticationName")],
    );
    let v6: IpAddr = "2001:db8:0:0::1".parse().unwrap();
    let ok = leaf_with(
        with_sans(leaf_params("x"), vec![SanType::IpAddress(v6)]),
        &f.inter,
    );
    assert!(auth(&reg, Some("2001:DB8::1"), &[ok, f.inter.der().clone()]).is_ok());
    san_case(
        "IpMatchesAuthenticationName",
        "10.0.0.17",
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 17))),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 18))),
        "no SAN IP address matches authentication name",
    );
}

#[test]
fn email_scheme() {
    san_case(
        "EmailMatchesAuthenticationName",
        "truck-17@fleet.example",
        SanType::Rfc822Name(ia5("truck-17@fleet.example")),
        SanType::Rfc822Name(ia5("truck-18@fleet.example")),
        "no SAN email matches authentication name",
    );
}

#[test]
fn dns_san_that_is_not_a_host_name_is_accepted() {
    let f = fleet();
    let reg = reg_root(
        &f,
        vec![client("sample_client", "DnsMatchesAuthenticationName")],
    );
    let cert = leaf_with(
        with_sans(
            leaf_params("sample_client"),
            vec![SanType::DnsName(ia5("sample_client"))],
        ),
        &f.inter,
    );
    assert!(auth(&reg, Some("sample_client"), &[cert, f.inter.der().clone()]).is_ok());
}

#[test]
fn validity_with_skew() {
    let f = fleet();
    let reg = reg_root(
        &f,
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
    );
    let mut p = leaf_params("truck-17");
    p.not_before = date_time_ymd(2026, 6, 1); // made "now", as step CLI does
    p.not_after = date_time_ymd(2026, 6, 2);
    let chain = [leaf_with(p, &f.inter), f.inter.der().clone()];
    let start = now();
    let day = Duration::from_secs(86_400);
    assert!(
        auth_at(
            &reg,
            Some("truck-17"),
            &chain,
            start - Duration::from_secs(30)
        )
        .is_ok()
    );
    let m = refusal(auth_at(
        &reg,
        Some("truck-17"),
        &chain,
        start - Duration::from_secs(120),
    ));
    assert!(m.starts_with("certificate not yet valid"), "{m}");
    assert!(
        auth_at(
            &reg,
            Some("truck-17"),
            &chain,
            start + day + Duration::from_secs(30)
        )
        .is_ok()
    );
    let m = refusal(auth_at(
        &reg,
        Some("truck-17"),
        &chain,
        start + day + Duration::from_secs(120),
    ));
    assert!(m.starts_with("certificate expired"), "{m}");
    // A registry with no skew refuses at the first second past notAfter.
    let mut strict = reg_root(
        &f,
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
    );
    strict.set_clock_skew(Duration::ZERO);
    assert!(
        auth_at(
            &strict,
            Some("truck-17"),
            &chain,
            start + day + Duration::from_secs(1)
        )
        .is_err()
    );
}

#[test]
fn expired_intermediate_is_refused() {
    let root = root("Fleet Root");
    let mut p = ca_params("Old Intermediate");
    p.not_after = date_time_ymd(2025, 1, 1);
    let inter = intermediate_with(p, &root);
    let reg = registry(
        vec![ca_entry("root", &root, &[])],
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
        &[],
    );
    let m = refusal(auth(
        &reg,
        Some("truck-17"),
        &[leaf("truck-17", &inter), inter.der().clone()],
    ));
    assert!(
        m.contains("intermediate certificate") && m.contains("expired"),
        "{m}"
    );
}

#[test]
fn unknown_ca_and_impostor_ca_are_refused() {
    let f = fleet();
    let other = root("Other Root");
    let reg = reg_root(
        &f,
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
    );
    let m = refusal(auth(&reg, Some("truck-17"), &[leaf("truck-17", &other)]));
    assert!(m.starts_with("unknown CA"), "{m}");
    // Same subject as the registered root, different key.
    let impostor = root("Fleet Root");
    let m = refusal(auth(&reg, Some("truck-17"), &[leaf("truck-17", &impostor)]));
    assert!(m.starts_with("bad signature"), "{m}");
}

#[test]
fn extended_and_plain_key_usage() {
    let f = fleet();
    let reg = reg_root(
        &f,
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
    );
    let inter = f.inter.der().clone();
    let mut p = leaf_params("truck-17");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let m = refusal(auth(
        &reg,
        Some("truck-17"),
        &[leaf_with(p, &f.inter), inter.clone()],
    ));
    assert_eq!(m, "missing clientAuth extended key usage");
    let mut p = leaf_params("truck-17");
    p.extended_key_usages = vec![];
    assert!(
        auth(
            &reg,
            Some("truck-17"),
            &[leaf_with(p, &f.inter), inter.clone()]
        )
        .is_ok()
    );
    let mut p = leaf_params("truck-17");
    p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let m = refusal(auth(
        &reg,
        Some("truck-17"),
        &[leaf_with(p, &f.inter), inter.clone()],
    ));
    assert_eq!(m, "certificate key usage lacks digitalSignature");
    let mut p = leaf_params("truck-17");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let m = refusal(auth(
        &reg,
        Some("truck-17"),
        &[leaf_with(p, &f.inter), inter],
    ));
    assert!(m.starts_with("leaf certificate is a CA"), "{m}");
}

#[test]
fn issuer_without_ca_bit_or_beyond_path_length_is_refused() {
    let strict = root_with({
        let mut p = ca_params("Strict Root");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p
    });
    let inter = intermediate("Fleet Intermediate", &strict);
    let reg = registry(
        vec![ca_entry("root", &strict, &[])],
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
        &[],
    );
    let m = refusal(auth(
        &reg,
        Some("truck-17"),
        &[leaf("truck-17", &inter), inter.der().clone()],
    ));
    assert!(m.contains("path length constraint 0 exceeded"), "{m}");

    let root = root("Fleet Root");
    let mut p = ca_params("Not A CA");
    p.is_ca = IsCa::ExplicitNoCa;
    let not_ca = intermediate_with(p, &root);
    let reg = registry(
        vec![ca_entry("root", &root, &[])],
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
        &[],
    );
    let m = refusal(auth(
        &reg,
        Some("truck-17"),
        &[leaf("truck-17", &not_ca), not_ca.der().clone()],
    ));
    assert!(m.contains("is not a CA certificate"), "{m}");
}

#[test]
fn registered_intermediate_is_a_trust_anchor_by_itself() {
    let f = fleet();
    let reg = registry(
        vec![ca_entry("fleet-intermediate", &f.inter, &[])],
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
        &[],
    );
    let leaf = leaf("truck-17", &f.inter);
    assert!(auth(&reg, Some("truck-17"), std::slice::from_ref(&leaf)).is_ok());
    // Sending the intermediate along changes nothing.
    assert!(auth(&reg, Some("truck-17"), &[leaf, f.inter.der().clone()]).is_ok());
}

#[test]
fn root_registered_needs_the_intermediate_in_the_chain() {
    let f = fleet();
    let reg = reg_root(
        &f,
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
    );
    let leaf = leaf("truck-17", &f.inter);
    assert!(
        auth(
            &reg,
            Some("truck-17"),
            &[leaf.clone(), f.inter.der().clone()]
        )
        .is_ok()
    );
    let m = refusal(auth(&reg, Some("truck-17"), &[leaf]));
    assert!(m.starts_with("unknown CA"), "{m}");
    assert!(m.contains("CN=Fleet Intermediate"), "{m}");
}

#[test]
fn revoked_by_crl() {
    let f = fleet();
    let mut p = leaf_params("truck-17");
    p.serial_number = Some(serial(0x1717));
    let revoked_leaf = leaf_with(p, &f.inter);
    let mut p = leaf_params("truck-17");
    p.serial_number = Some(serial(0x1718));
    let good_leaf = leaf_with(p, &f.inter);
    let reg = registry(
        vec![ca_entry(
            "fleet-intermediate",
            &f.inter,
            &[crl(&f.inter, &[0x1717])],
        )],
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
        &[],
    );
    assert_eq!(
        refusal(auth(&reg, Some("truck-17"), &[revoked_leaf])),
        "certificate revoked"
    );
    assert!(auth(&reg, Some("truck-17"), &[good_leaf]).is_ok());

    // The intermediate revoked by the root's CRL.
    let root = root("Fleet Root 2");
    let mut p = ca_params("Fleet Intermediate 2");
    p.serial_number = Some(serial(0x99));
    let inter = intermediate_with(p, &root);
    let reg = registry(
        vec![ca_entry("root", &root, &[crl(&root, &[0x99])])],
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
        &[],
    );
    let m = refusal(auth(
        &reg,
        Some("truck-17"),
        &[leaf("truck-17", &inter), inter.der().clone()],
    ));
    assert!(m.contains("revoked"), "{m}");
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn thumbprint_scheme_pins_self_signed_leaves() {
    let mut p = leaf_params("sensor-9");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained); // as `openssl req -x509` makes them
    p.extended_key_usages = vec![];
    p.key_usages = vec![];
    let cert = self_signed(p);
    let other = self_signed(leaf_params("sensor-9"));
    let print = colon_hex(&x509::thumbprint(&cert));
    let mut c = client("sensor-9", "ThumbprintMatch");
    c["clientCertificateAuthentication"]["allowedThumbprints"] = json!([print, "00".repeat(32)]);
    let reg = registry(vec![], vec![c], &[]);
    let id = auth(&reg, Some("sensor-9"), std::slice::from_ref(&cert)).unwrap();
    assert_eq!(&*id.authentication_name, "sensor-9");
    assert_eq!(
        refusal(auth(&reg, Some("sensor-9"), &[other])),
        "thumbprint mismatch"
    );
    let later = now() + Duration::from_secs(3 * 365 * 86_400);
    let m = refusal(auth_at(&reg, Some("sensor-9"), &[cert], later));
    assert!(m.starts_with("certificate expired"), "{m}");
}

#[test]
fn disabled_unknown_and_certificate_less_clients() {
    let f = fleet();
    let mut disabled = client("truck-17", "SubjectMatchesAuthenticationName");
    disabled["state"] = json!("Disabled");
    let plain = json!({ "name": "app-1" });
    let reg = reg_root(&f, vec![disabled, plain]);
    let chain = [leaf("truck-17", &f.inter), f.inter.der().clone()];
    let e = auth(&reg, Some("truck-17"), &chain).unwrap_err();
    assert_eq!(e.reason_code(), ReasonCode::NOT_AUTHORIZED);
    assert!(e.to_string().contains("disabled"));
    let e = auth(&reg, Some("truck-99"), &chain).unwrap_err();
    assert_eq!(e.reason_code(), ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    assert!(e.to_string().contains("unknown client"));
    let m = refusal(auth(&reg, Some("app-1"), &chain));
    assert!(m.contains("no clientCertificateAuthentication"), "{m}");
}

#[test]
fn name_sources_in_configured_order() {
    let f = fleet();
    let sans = vec![
        SanType::DnsName(ia5("truck-17.fleet.example")),
        SanType::URI(ia5("spiffe://fleet/truck-17")),
    ];
    let cert = leaf_with(with_sans(leaf_params("truck-17"), sans), &f.inter);
    let chain = [cert, f.inter.der().clone()];
    let clients = || {
        vec![
            client("truck-17", "SubjectMatchesAuthenticationName"),
            client("spiffe://fleet/truck-17", "UriMatchesAuthenticationName"),
        ]
    };
    let cas = || vec![ca_entry("root", &f.root, &[])];
    let reg = registry(
        cas(),
        clients(),
        &[
            "ClientCertificateEmail",
            "ClientCertificateUri",
            "ClientCertificateSubject",
        ],
    );
    assert_eq!(
        &*auth(&reg, None, &chain).unwrap().authentication_name,
        "spiffe://fleet/truck-17"
    );
    let reg = registry(
        cas(),
        clients(),
        &["ClientCertificateSubject", "ClientCertificateUri"],
    );
    assert_eq!(
        &*auth(&reg, None, &chain).unwrap().authentication_name,
        "truck-17"
    );
    // An empty username counts as none.
    assert_eq!(
        &*auth(&reg, Some(""), &chain).unwrap().authentication_name,
        "truck-17"
    );

    let reg = registry(cas(), clients(), &[]);
    let m = refusal(auth(&reg, None, &chain));
    assert!(m.starts_with("no authentication name"), "{m}");
    let reg = registry(
        cas(),
        clients(),
        &["ClientCertificateIp", "ClientCertificateEmail"],
    );
    let m = refusal(auth(&reg, None, &chain));
    assert!(m.starts_with("no authentication name"), "{m}");
}

#[test]
fn garbage_and_oversized_chains_are_refused() {
    let f = fleet();
    let reg = reg_root(
        &f,
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
    );
    let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    let m = refusal(auth(&reg, Some("truck-17"), &[junk]));
    assert!(m.starts_with("unparseable client certificate"), "{m}");
    let chain: Vec<_> = std::iter::repeat_n(f.inter.der().clone(), 9).collect();
    assert!(refusal(auth(&reg, Some("truck-17"), &chain)).contains("longer than"));
    assert!(refusal(auth(&reg, Some("truck-17"), &[])).contains("no client certificate"));
}

#[test]
fn cache_skips_verification_and_is_keyed_by_version_and_username() {
    let f = fleet();
    let reg = reg_root(
        &f,
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
    );
    let chain = [leaf("truck-17", &f.inter), f.inter.der().clone()];
    let mut cache = X509Cache::default();
    let c = creds(Some("truck-17"), &chain);
    assert!(x509::authenticate(&reg, &c, &mut cache, 7, now()).is_ok());
    assert!(x509::authenticate(&reg, &c, &mut cache, 7, now()).is_ok());
    assert_eq!(
        (cache.verifications(), cache.hits(), cache.len()),
        (1, 1, 1)
    );
    assert!(x509::authenticate(&reg, &c, &mut cache, 8, now()).is_ok());
    assert_eq!(cache.verifications(), 2);
    // Refusals are cached too, per username.
    let wrong = creds(Some("truck-18"), &chain);
    assert!(x509::authenticate(&reg, &wrong, &mut cache, 8, now()).is_err());
    assert!(x509::authenticate(&reg, &wrong, &mut cache, 8, now()).is_err());
    assert_eq!((cache.verifications(), cache.hits()), (3, 2));
    // An entry is not used past the certificate's notAfter.
    let late = SystemTime::UNIX_EPOCH + Duration::from_secs(1_830_297_600 + 30); // 2028-01-01 + 30 s
    assert!(x509::authenticate(&reg, &c, &mut cache, 8, late).is_ok());
    assert_eq!(cache.verifications(), 4);
}

#[test]
fn cache_is_bounded() {
    let f = fleet();
    let reg = reg_root(
        &f,
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
    );
    let mut cache = X509Cache::with_capacity(2);
    for i in 0..5 {
        let chain = [leaf("truck-17", &f.inter), f.inter.der().clone()];
        assert!(
            x509::authenticate(&reg, &creds(Some("truck-17"), &chain), &mut cache, i, now())
                .is_ok()
        );
        assert!(cache.len() <= 2);
    }
    let mut off = X509Cache::with_capacity(0);
    let chain = [leaf("truck-17", &f.inter), f.inter.der().clone()];
    for _ in 0..2 {
        assert!(
            x509::authenticate(&reg, &creds(Some("truck-17"), &chain), &mut off, 1, now()).is_ok()
        );
    }
    assert_eq!((off.verifications(), off.len()), (2, 0));
}

#[test]
fn still_valid_after_reload() {
    let f = fleet();
    let mut p = leaf_params("truck-17");
    p.serial_number = Some(serial(42));
    let chain = [leaf_with(p, &f.inter), f.inter.der().clone()];
    let reg = reg_root(
        &f,
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
    );
    assert!(x509::still_valid(&reg, &chain, "truck-17", now()).is_ok());

    let mut disabled = client("truck-17", "SubjectMatchesAuthenticationName");
    disabled["state"] = json!("Disabled");
    let reg = reg_root(&f, vec![disabled]);
    let e = x509::still_valid(&reg, &chain, "truck-17", now()).unwrap_err();
    assert_eq!(e.reason_code(), ReasonCode::NOT_AUTHORIZED);

    let reg = registry(
        vec![
            ca_entry("root", &f.root, &[]),
            ca_entry("inter", &f.inter, &[crl(&f.inter, &[42])]),
        ],
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
        &[],
    );
    let e = x509::still_valid(&reg, &chain, "truck-17", now()).unwrap_err();
    assert!(e.to_string().contains("revoked"), "{e}");

    let reg = registry(
        vec![],
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
        &[],
    );
    assert!(x509::still_valid(&reg, &chain, "truck-17", now()).is_err());
}

#[test]
fn snapshot_dispatches_certificates_to_x509() {
    let f = fleet();
    let reg = reg_root(
        &f,
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
    );
    let snapshot = ringmq_auth::Snapshot {
        version: 3,
        allow_anonymous: false,
        registry: Some(reg),
        files: Default::default(),
    };
    let chain = [leaf("truck-17", &f.inter), f.inter.der().clone()];
    let mut caches = ringmq_auth::Caches::default();
    let id = snapshot
        .authenticate(&creds(Some("truck-17"), &chain), &mut caches, now())
        .unwrap();
    assert_eq!(id.method, Method::Certificate);
    assert_eq!(caches.x509.verifications(), 1);
}

#[test]
fn signature_algorithms() {
    use rcgen::{CertifiedIssuer, KeyPair, RsaKeySize};
    let rsa = || KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
    type MakeKey = Box<dyn Fn() -> KeyPair>;
    let keys: Vec<(&str, MakeKey)> = vec![
        (
            "p384",
            Box::new(|| KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap()),
        ),
        (
            "p521",
            Box::new(|| KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap()),
        ),
        (
            "ed25519",
            Box::new(|| KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap()),
        ),
        ("rsa", Box::new(rsa)),
    ];
    for (label, key) in keys {
        // Root and intermediate with the algorithm under test, the leaf P-256 (signed by it).
        let root =
            CertifiedIssuer::self_signed(ca_params(&format!("{label} root")), key()).unwrap();
        let inter =
            CertifiedIssuer::signed_by(ca_params(&format!("{label} inter")), key(), &root).unwrap();
        let reg = registry(
            vec![ca_entry("root", &root, &[])],
            vec![client("truck-17", "SubjectMatchesAuthenticationName")],
            &[],
        );
        let chain = [leaf("truck-17", &inter), inter.der().clone()];
        assert!(auth(&reg, Some("truck-17"), &chain).is_ok(), "{label}");
    }
}

#[test]
fn unprocessed_critical_extensions_are_refused() {
    let f = fleet();
    let reg = reg_root(
        &f,
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
    );
    let mut p = leaf_params("truck-17");
    let mut ext =
        rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
    ext.set_criticality(true);
    p.custom_extensions = vec![ext];
    let m = refusal(auth(
        &reg,
        Some("truck-17"),
        &[leaf_with(p, &f.inter), f.inter.der().clone()],
    ));
    assert_eq!(m, "unsupported critical extension 1.3.6.1.4.1.99999.1");

    // Name constraints (always critical from rcgen) on the intermediate: not enforced, so refused.
    let mut p = ca_params("Constrained Intermediate");
    p.name_constraints = Some(rcgen::NameConstraints {
        permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("fleet.example".into())],
        excluded_subtrees: vec![],
    });
    let constrained = intermediate_with(p, &f.root);
    let chain = [leaf("truck-17", &constrained), constrained.der().clone()];
    let m = refusal(auth(&reg, Some("truck-17"), &chain));
    assert!(
        m.contains("unsupported critical extension 2.5.29.30"),
        "{m}"
    );
}

#[test]
fn every_bit_flip_of_the_leaf_is_refused_without_panic() {
    let f = fleet();
    let reg = reg_root(
        &f,
        vec![client("truck-17", "SubjectMatchesAuthenticationName")],
    );
    let good = leaf("truck-17", &f.inter);
    let mut accepted = Vec::new();
    for i in 0..good.len() {
        for bit in [0x01u8, 0x80] {
            let mut bytes = good.to_vec();
            bytes[i] ^= bit;
            let chain = [CertificateDer::from(bytes), f.inter.der().clone()];
            if auth(&reg, Some("truck-17"), &chain).is_ok() {
                accepted.push((i, bit));
            }
        }
    }
    assert!(
        accepted.is_empty(),
        "accepted after flipping (byte, bit): {accepted:?}"
    );
    // Truncations too.
    for len in 0..good.len() {
        let chain = [CertificateDer::from(good[..len].to_vec())];
        assert!(auth(&reg, Some("truck-17"), &chain).is_err());
    }
}
