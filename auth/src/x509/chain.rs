//! Chain validation: validity periods with clock skew, basic constraints, key usages,
//! signatures (aws-lc-rs), revocation (registered CRLs), and the search for a path from the
//! leaf to a registered CA certificate.
//!
//! Why not webpki: its single verification time leaves no room for a clock skew on
//! notBefore/notAfter, it treats a trust anchor as a bare name + key (a registered
//! intermediate's own validity and CA bit would go unchecked), and it refuses certificates
//! Event Grid accepts. The checks here are few and explicit; signatures are verified by
//! aws-lc-rs, the same primitives rustls uses.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry as oids;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use crate::AuthError;
use crate::registry::Registry;

use super::names::rfc4514;

/// Most certificates a client may present (leaf + intermediates).
pub(crate) const CHAIN_LEN_MAX: usize = 8;
/// Most signature verifications one path search may spend (a hostile chain full of
/// look-alike issuers cannot make it loop).
const SIGNATURE_BUDGET: u32 = 16;

/// A parsed certificate with its validity in Unix seconds.
#[derive(Debug)]
pub(crate) struct Cert<'a> {
    pub x: X509Certificate<'a>,
    pub not_before: i64,
    pub not_after: i64,
}

pub(crate) fn parse(der: &[u8]) -> Result<Cert<'_>, String> {
    check_outer_der(der)?;
    let (rest, x) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err("trailing data after the certificate".into());
    }
    if x.signature_value.unused_bits != 0 {
        return Err("signature BIT STRING has unused bits".into());
    }
    let not_before = x.validity().not_before.timestamp();
    let not_after = x.validity().not_after.timestamp();
    Ok(Cert {
        x,
        not_before,
        not_after,
    })
}

/// One DER TLV: (tag, whole encoding, contents, rest). Definite lengths only.
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, after_tag) = input.split_first()?;
    let (&first, mut after_len) = after_tag.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || after_len.len() < n {
            return None;
        }
        let (bytes, rest) = after_len.split_at(n);
        after_len = rest;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if after_len.len() < len {
        return None;
    }
    let header = input.len() - after_len.len();
    let (contents, rest) = after_len.split_at(len);
    Some((tag, &input[..header + len], contents, rest))
}

/// The outer structure x509-parser is lenient about: `Certificate ::= SEQUENCE { tbs
/// SEQUENCE, signatureAlgorithm SEQUENCE, signature BIT STRING }` with exactly those tags,
/// and the outer signatureAlgorithm byte-identical to the one inside the signed part
/// (RFC 5280 section 4.1.1.2). Without this, flipping tag bits outside the signed part
/// would make a different byte string that still verifies.
fn check_outer_der(der: &[u8]) -> Result<(), String> {
    let bad = || "malformed certificate structure".to_owned();
    let (tag, _, body, rest) = tlv(der).ok_or_else(bad)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(bad());
    }
    let (tbs_tag, _, tbs, body) = tlv(body).ok_or_else(bad)?;
    let (alg_tag, alg, _, body) = tlv(body).ok_or_else(bad)?;
    let (sig_tag, _, _, body) = tlv(body).ok_or_else(bad)?;
    if tbs_tag != 0x30 || alg_tag != 0x30 || sig_tag != 0x03 || !body.is_empty() {
        return Err(bad());
    }
    // tbsCertificate: [0] version (optional), serialNumber, signature AlgorithmIdentifier.
    let (mut t, _, _, mut rest) = tlv(tbs).ok_or_else(bad)?;
    if t == 0xa0 {
        (t, _, _, rest) = tlv(rest).ok_or_else(bad)?;
    }
    if t != 0x02 {
        return Err(bad());
    }
    let (_, inner_alg, _, _) = tlv(rest).ok_or_else(bad)?;
    if inner_alg != alg {
        return Err("signature algorithm differs from the one in the signed part".into());
    }
    Ok(())
}

/// The extensions the checks use.
#[derive(Debug, Default)]
pub(crate) struct Extensions {
    /// basicConstraints: (cA, pathLenConstraint).
    pub basic: Option<(bool, Option<u32>)>,
    /// keyUsage: (digitalSignature, keyCertSign, cRLSign).
    pub key_usage: Option<(bool, bool, bool)>,
    /// extendedKeyUsage: whether clientAuth is listed.
    pub client_auth: Option<bool>,
}

/// Reads the extensions; a critical extension we do not process refuses the certificate
/// (RFC 5280 section 4.2). Name constraints are among those: they are not enforced.
pub(crate) fn extensions(cert: &Cert<'_>) -> Result<Extensions, String> {
    let mut out = Extensions::default();
    for ext in cert.x.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => {
                out.basic = Some((bc.ca, bc.path_len_constraint));
            }
            ParsedExtension::KeyUsage(ku) => {
                out.key_usage = Some((ku.digital_signature(), ku.key_cert_sign(), ku.crl_sign()));
            }
            ParsedExtension::ExtendedKeyUsage(eku) => out.client_auth = Some(eku.client_auth),
            ParsedExtension::SubjectAlternativeName(_)
            | ParsedExtension::SubjectKeyIdentifier(_)
            | ParsedExtension::AuthorityKeyIdentifier(_) => {}
            _ if ext.critical => {
                return Err(format!(
                    "unsupported critical extension {}",
                    ext.oid.to_id_string()
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Checks notBefore/notAfter against `now` with `skew_secs` of tolerance on both ends.
pub(crate) fn check_validity(
    cert: &Cert<'_>,
    now: i64,
    skew_secs: i64,
    what: &str,
) -> Result<(), String> {
    if now.saturating_add(skew_secs) < cert.not_before {
        return Err(format!(
            "{what} not yet valid (notBefore {})",
            cert.x.validity().not_before
        ));
    }
    if now.saturating_sub(skew_secs) > cert.not_after {
        return Err(format!(
            "{what} expired (notAfter {})",
            cert.x.validity().not_after
        ));
    }
    Ok(())
}

/// The leaf checks of the chain-based schemes: validity, not a CA, digitalSignature when a
/// key usage is present, clientAuth when an extended key usage is present.
pub(crate) fn check_leaf(cert: &Cert<'_>, now: i64, skew_secs: i64) -> Result<(), AuthError> {
    check_validity(cert, now, skew_secs, "certificate").map_err(AuthError::BadCredentials)?;
    let ext = extensions(cert).map_err(AuthError::BadCredentials)?;
    if matches!(ext.basic, Some((true, _))) {
        return Err(AuthError::BadCredentials(
            "leaf certificate is a CA certificate (basicConstraints cA)".into(),
        ));
    }
    if matches!(ext.key_usage, Some((false, _, _))) {
        return Err(AuthError::BadCredentials(
            "certificate key usage lacks digitalSignature".into(),
        ));
    }
    check_client_auth(&ext)
}

pub(crate) fn check_client_auth(ext: &Extensions) -> Result<(), AuthError> {
    if ext.client_auth == Some(false) {
        return Err(AuthError::BadCredentials(
            "missing clientAuth extended key usage".into(),
        ));
    }
    Ok(())
}

/// The checks of a certificate that signs another: validity, cA, keyCertSign when a key
/// usage is present, path length (`below` = CA certificates between it and the leaf).
/// `what` names it in a refusal (only formatted when there is one).
fn check_issuer(
    cert: &Cert<'_>,
    below: usize,
    now: i64,
    skew_secs: i64,
    what: &dyn Fn() -> String,
) -> Result<(), String> {
    check_validity(cert, now, skew_secs, "").map_err(|e| format!("{}{e}", what()))?;
    let ext = extensions(cert).map_err(|e| format!("{}: {e}", what()))?;
    match ext.basic {
        Some((true, path_len)) => {
            if let Some(max) = path_len.filter(|max| usize::try_from(*max).is_ok_and(|m| below > m))
            {
                return Err(format!("{}: path length constraint {max} exceeded", what()));
            }
        }
        _ => {
            return Err(format!(
                "{} is not a CA certificate (basicConstraints cA)",
                what()
            ));
        }
    }
    if matches!(ext.key_usage, Some((_, false, _))) {
        return Err(format!("{} key usage lacks keyCertSign", what()));
    }
    Ok(())
}

/// The aws-lc-rs algorithm for a signature algorithm and the signer's key. SHA-1 is refused.
fn algorithm(
    sig_alg: &AlgorithmIdentifier<'_>,
    signer: &SubjectPublicKeyInfo<'_>,
) -> Result<&'static dyn VerificationAlgorithm, String> {
    let oid = &sig_alg.algorithm;
    let curve = signer
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let ec = |p256: &'static dyn VerificationAlgorithm,
              p384: &'static dyn VerificationAlgorithm,
              p521: Option<&'static dyn VerificationAlgorithm>|
     -> Result<&'static dyn VerificationAlgorithm, String> {
        match &curve {
            Some(c) if *c == oids::OID_EC_P256 => Ok(p256),
            Some(c) if *c == oids::OID_NIST_EC_P384 => Ok(p384),
            Some(c) if *c == oids::OID_NIST_EC_P521 => {
                p521.ok_or_else(|| "unsupported ECDSA curve/hash combination".to_owned())
            }
            _ => Err("unsupported ECDSA curve".into()),
        }
    };
    if *oid == oids::OID_SIG_ECDSA_WITH_SHA256 {
        ec(
            &signature::ECDSA_P256_SHA256_ASN1,
            &signature::ECDSA_P384_SHA256_ASN1,
            None,
        )
    } else if *oid == oids::OID_SIG_ECDSA_WITH_SHA384 {
        ec(
            &signature::ECDSA_P256_SHA384_ASN1,
            &signature::ECDSA_P384_SHA384_ASN1,
            None,
        )
    } else if *oid == oids::OID_SIG_ECDSA_WITH_SHA512 {
        ec(
            &signature::ECDSA_P256_SHA512_ASN1,
            &signature::ECDSA_P384_SHA512_ASN1,
            Some(&signature::ECDSA_P521_SHA512_ASN1),
        )
    } else if *oid == oids::OID_PKCS1_SHA256WITHRSA {
        Ok(&signature::RSA_PKCS1_2048_8192_SHA256)
    } else if *oid == oids::OID_PKCS1_SHA384WITHRSA {
        Ok(&signature::RSA_PKCS1_2048_8192_SHA384)
    } else if *oid == oids::OID_PKCS1_SHA512WITHRSA {
        Ok(&signature::RSA_PKCS1_2048_8192_SHA512)
    } else if *oid == oids::OID_PKCS1_RSASSAPSS {
        let params = sig_alg
            .parameters
            .as_ref()
            .and_then(|p| RsaSsaPssParams::try_from(p).ok())
            .ok_or_else(|| "invalid RSASSA-PSS parameters".to_owned())?;
        let hash = params.hash_algorithm_oid();
        if *hash == oids::OID_NIST_HASH_SHA256 {
            Ok(&signature::RSA_PSS_2048_8192_SHA256)
        } else if *hash == oids::OID_NIST_HASH_SHA384 {
            Ok(&signature::RSA_PSS_2048_8192_SHA384)
        } else if *hash == oids::OID_NIST_HASH_SHA512 {
            Ok(&signature::RSA_PSS_2048_8192_SHA512)
        } else {
            Err("unsupported RSASSA-PSS hash".into())
        }
    } else if *oid == oids::OID_SIG_ED25519 {
        Ok(&signature::ED25519)
    } else if *oid == oids::OID_PKCS1_SHA1WITHRSA || *oid == oids::OID_SHA1_WITH_RSA {
        Err("SHA-1 signatures are not accepted".into())
    } else {
        Err(format!(
            "unsupported signature algorithm {}",
            oid.to_id_string()
        ))
    }
}

/// Verifies a signature over `signed` by `signer`'s key.
pub(crate) fn verify_signature(
    signer: &SubjectPublicKeyInfo<'_>,
    sig_alg: &AlgorithmIdentifier<'_>,
    sig: &[u8],
    signed: &[u8],
) -> Result<(), String> {
    let alg = algorithm(sig_alg, signer)?;
    UnparsedPublicKey::new(alg, &signer.subject_public_key.data)
        .verify(signed, sig)
        .map_err(|_| "bad signature".to_owned())
}

/// Verifies that `issuer` signed `cert`.
fn signed_by(cert: &Cert<'_>, issuer: &Cert<'_>) -> Result<(), String> {
    if cert.x.signature_algorithm.algorithm != cert.x.tbs_certificate.signature.algorithm {
        return Err("signature algorithm differs from the one in the signed part".into());
    }
    verify_signature(
        issuer.x.public_key(),
        &cert.x.signature_algorithm,
        &cert.x.signature_value.data,
        cert.x.tbs_certificate.as_ref(),
    )
}

fn revoked(reg: &Registry, cert: &Cert<'_>) -> bool {
    reg.is_revoked(cert.x.issuer().as_raw(), cert.x.raw_serial())
}

/// Depth-first search for a path from the leaf through presented intermediates to a
/// registered CA certificate. The first complete path wins; when none completes, the most
/// specific problem met on the way is reported.
struct Search<'r, 'c, 'a> {
    reg: &'r Registry,
    presented: &'c [Cert<'a>],
    now: i64,
    skew: i64,
    budget: u32,
    problem: Option<String>,
    /// The first issuer name that matched neither a registered nor a presented certificate.
    unknown_issuer: Option<String>,
}

impl Search<'_, '_, '_> {
    fn note(&mut self, problem: String) {
        if self.problem.is_none() {
            self.problem = Some(problem);
        }
    }

    fn spend(&mut self) -> bool {
        if self.budget == 0 {
            self.note("certificate chain too complex".into());
            return false;
        }
        self.budget -= 1;
        true
    }

    /// Extends a path ending at `current` (`below` CA certificates under it so far, `used`
    /// a bit per presented certificate already in the path). Returns the earliest notAfter
    /// of the completed path.
    fn extend(
        &mut self,
        current: &Cert<'_>,
        below: usize,
        used: u32,
        min_after: i64,
    ) -> Option<i64> {
        let issuer = current.x.issuer().as_raw();
        let mut named = false;
        for ca in self.reg.ca_certificates() {
            if ca.subject_raw() != issuer {
                continue;
            }
            let Ok(anchor) = parse(ca.certificate.as_ref()) else {
                continue; // checked when the registry was loaded
            };
            named = true;
            if !self.spend() {
                return None;
            }
            if let Err(e) = signed_by(current, &anchor) {
                self.note(format!("{e} (issuer: CA certificate {:?})", &*ca.name));
                continue;
            }
            let what = || format!("CA certificate {:?}", &*ca.name);
            if let Err(e) = check_issuer(&anchor, below, self.now, self.skew, &what) {
                self.note(e);
                continue;
            }
            return Some(min_after.min(anchor.not_after));
        }
        if below + 1 >= CHAIN_LEN_MAX {
            self.note("certificate chain too long".into());
            return None;
        }
        // `take` keeps the bit index in range whatever the caller passed.
        for (i, cand) in self
            .presented
            .iter()
            .enumerate()
            .take(CHAIN_LEN_MAX)
            .skip(1)
        {
            let bit = 1u32 << i;
            if used & bit != 0 || cand.x.subject().as_raw() != issuer {
                continue;
            }
            named = true;
            if !self.spend() {
                return None;
            }
            let what = || format!("intermediate certificate {}", rfc4514(cand.x.subject()));
            if let Err(e) = signed_by(current, cand) {
                self.note(format!("{e} (issuer: {})", what()));
                continue;
            }
            if let Err(e) = check_issuer(cand, below, self.now, self.skew, &what) {
                self.note(e);
                continue;
            }
            if revoked(self.reg, cand) {
                self.note(format!("{} revoked", what()));
                continue;
            }
            let after = min_after.min(cand.not_after);
            if let Some(t) = self.extend(cand, below + 1, used | bit, after) {
                return Some(t);
            }
        }
        if !named && self.unknown_issuer.is_none() {
            self.unknown_issuer = Some(rfc4514(current.x.issuer()));
        }
        None
    }
}

/// Validates the presented chain (leaf first, already checked by [`check_leaf`]) up to a
/// registered CA certificate. Returns the earliest notAfter along the path.
pub(crate) fn validate_path(
    reg: &Registry,
    presented: &[Cert<'_>],
    now: i64,
    skew_secs: i64,
) -> Result<i64, AuthError> {
    let Some(leaf) = presented.first() else {
        return Err(AuthError::BadCredentials("no client certificate".into()));
    };
    if revoked(reg, leaf) {
        return Err(AuthError::BadCredentials("certificate revoked".into()));
    }
    let mut search = Search {
        reg,
        presented,
        now,
        skew: skew_secs,
        budget: SIGNATURE_BUDGET,
        problem: None,
        unknown_issuer: None,
    };
    match search.extend(leaf, 0, 1, leaf.not_after) {
        Some(t) => Ok(t),
        None => Err(AuthError::BadCredentials(
            match (search.problem, search.unknown_issuer) {
                (Some(problem), _) => problem,
                (None, issuer) => format!(
                    "unknown CA: issuer {} is not a registered CA certificate",
                    issuer.unwrap_or_else(|| rfc4514(leaf.x.issuer()))
                ),
            },
        )),
    }
}
