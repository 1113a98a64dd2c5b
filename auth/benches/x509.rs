//! X.509 client authentication: a cold validation (chain parse + two ECDSA P-256 signature
//! checks, root → intermediate → leaf) against a per-shard cache hit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::SystemTime;

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use criterion::{Criterion, criterion_group, criterion_main};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use ringmq_auth::Credentials;
use ringmq_auth::registry::Registry;
use ringmq_auth::x509::{self, X509Cache};
use x509_parser::prelude::{FromDer, X509Certificate};

fn params(cn: &str, ca: bool) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    } else {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    p
}

fn bench(c: &mut Criterion) {
    // KeyPair::generate() is ECDSA P-256 with SHA-256.
    let root =
        CertifiedIssuer::self_signed(params("Bench Root", true), KeyPair::generate().unwrap())
            .unwrap();
    let inter = CertifiedIssuer::signed_by(
        params("Bench Intermediate", true),
        KeyPair::generate().unwrap(),
        &root,
    )
    .unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = params("truck-17", false)
        .signed_by(&leaf_key, &inter)
        .unwrap();
    let json = serde_json::json!({
        "caCertificates": [{ "name": "root", "encodedCertificate": root.pem() }],
        "clients": [{
            "name": "truck-17",
            "clientCertificateAuthentication": { "validationScheme": "SubjectMatchesAuthenticationName" }
        }]
    });
    let reg = Registry::parse(&json.to_string(), &mut Vec::new()).unwrap();
    let chain = [leaf.der().clone(), inter.der().clone()];
    let creds = Credentials {
        client_id: "truck-17",
        username: Some("truck-17"),
        password: None,
        auth_method: None,
        auth_data: None,
        peer_certificates: &chain,
        v5: true,
    };
    let now = SystemTime::now();

    let mut g = c.benchmark_group("x509_authenticate");
    g.bench_function("cold_p256_root_intermediate_leaf", |b| {
        let mut cache = X509Cache::with_capacity(0);
        b.iter(|| {
            black_box(x509::authenticate(
                &reg,
                black_box(&creds),
                &mut cache,
                1,
                now,
            ))
            .unwrap()
        })
    });
    g.bench_function("cached", |b| {
        let mut cache = X509Cache::default();
        x509::authenticate(&reg, &creds, &mut cache, 1, now).unwrap();
        b.iter(|| {
            black_box(x509::authenticate(
                &reg,
                black_box(&creds),
                &mut cache,
                1,
                now,
            ))
            .unwrap()
        })
    });
    // The floor: the two ECDSA P-256 verifications alone (leaf by intermediate, intermediate
    // by root), without parsing or any other check.
    let (_, leaf_x) = X509Certificate::from_der(leaf.der()).unwrap();
    let (_, inter_x) = X509Certificate::from_der(inter.der()).unwrap();
    let (_, root_x) = X509Certificate::from_der(root.der()).unwrap();
    let pairs = [(&leaf_x, &inter_x), (&inter_x, &root_x)];
    g.bench_function("two_p256_signature_checks_only", |b| {
        b.iter(|| {
            for (child, parent) in pairs {
                let key = UnparsedPublicKey::new(
                    &signature::ECDSA_P256_SHA256_ASN1,
                    &parent.public_key().subject_public_key.data,
                );
                key.verify(child.tbs_certificate.as_ref(), &child.signature_value.data)
                    .unwrap();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
