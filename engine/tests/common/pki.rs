//! A test PKI for the in-process identity tests: CAs, client certificates and CRLs made with
//! rcgen. A certificate chain is handed to a connection as the TLS layer does (leaf first,
//! [`super::Cluster::set_peer_certificates`]). Dates are fixed around the harness's wall clock
//! (2027-01-15), so nothing depends on when the tests run.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SanType, SerialNumber, date_time_ymd,
};
use rustls_pki_types::CertificateDer;

pub type Ca = CertifiedIssuer<'static, KeyPair>;

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2040, 1, 1);
    p
}

/// A self-signed root CA.
pub fn root(cn: &str) -> Ca {
    CertifiedIssuer::self_signed(ca_params(cn), KeyPair::generate().unwrap()).unwrap()
}

/// A CA signed by `parent`.
pub fn intermediate(cn: &str, parent: &Ca) -> Ca {
    CertifiedIssuer::signed_by(ca_params(cn), KeyPair::generate().unwrap(), parent).unwrap()
}

/// A client certificate: subject CN `cn`, clientAuth, valid 2026-01-01 .. 2028-01-01.
pub fn leaf_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = date_time_ymd(2026, 1, 1);
    p.not_after = date_time_ymd(2028, 1, 1);
    p
}

pub fn leaf_with(params: CertificateParams, issuer: &Ca) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    params.signed_by(&key, issuer).unwrap().der().clone()
}

pub fn leaf(cn: &str, issuer: &Ca) -> CertificateDer<'static> {
    leaf_with(leaf_params(cn), issuer)
}

/// A client certificate with serial number `serial` (for revocation).
pub fn leaf_with_serial(cn: &str, issuer: &Ca, serial: u64) -> CertificateDer<'static> {
    let mut p = leaf_params(cn);
    p.serial_number = Some(SerialNumber::from(serial));
    leaf_with(p, issuer)
}

/// A client certificate with a SAN DNS name besides its subject.
pub fn leaf_with_dns(cn: &str, dns: &str, issuer: &Ca) -> CertificateDer<'static> {
    let mut p = leaf_params(cn);
    p.subject_alt_names = vec![SanType::DnsName(dns.try_into().unwrap())];
    leaf_with(p, issuer)
}

/// A CRL of `issuer` revoking `serials` (PEM), current at the harness's wall clock.
pub fn crl(issuer: &Ca, serials: &[u64]) -> String {
    let params = CertificateRevocationListParams {
        this_update: date_time_ymd(2027, 1, 1),
        next_update: date_time_ymd(2027, 6, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|&s| RevokedCertParams {
                serial_number: SerialNumber::from(s),
                revocation_time: date_time_ymd(2027, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params.signed_by(issuer).unwrap().pem().unwrap()
}
