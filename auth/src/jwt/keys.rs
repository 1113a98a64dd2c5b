//! Verification keys: issuer certificates / public keys (PEM), HMAC secrets, and JWKS key
//! sets indexed by `kid`. Keys are parsed once, when the registry is compiled or a JWKS
//! document is fetched, and shared read-only by every shard.

use std::collections::HashMap;
use std::time::SystemTime;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use super::config::{algorithm_from_name, next_generation};

/// Most keys kept from one JWKS document.
pub(crate) const MAX_JWKS_KEYS: usize = 64;

/// One key a token may be verified with.
#[derive(Debug, Clone)]
pub(crate) struct VerifyKey {
    pub(crate) key: DecodingKey,
    pub(crate) family: AlgorithmFamily,
    /// The only algorithm this key may verify (a JWK's `alg`), when it says.
    pub(crate) alg: Option<Algorithm>,
    /// Where the key came from, for logs (`issuerCertificates[0]`, `kid abc`).
    pub(crate) label: String,
}

impl VerifyKey {
    pub(crate) fn hmac(secret: &[u8], label: String) -> VerifyKey {
        VerifyKey {
            key: DecodingKey::from_secret(secret),
            family: AlgorithmFamily::Hmac,
            alg: None,
            label,
        }
    }

    /// Whether a token signed with `alg` may be checked with this key: the algorithm's family
    /// must be the key's (no HMAC with a public key) and match the JWK's `alg` if present.
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        alg.family() == self.family && self.alg.is_none_or(|a| a == alg)
    }
}

/// Parses an issuer certificate or public key in PEM, with or without line breaks.
pub(crate) fn parse_pem_key(text: &str, label: &str) -> Result<VerifyKey, String> {
    let pem = normalize_pem(text)?;
    let bytes = pem.as_bytes();
    let parsed = [
        (AlgorithmFamily::Rsa, DecodingKey::from_rsa_pem(bytes)),
        (AlgorithmFamily::Ec, DecodingKey::from_ec_pem(bytes)),
        (AlgorithmFamily::Ed, DecodingKey::from_ed_pem(bytes)),
    ];
    for (family, key) in parsed {
        if let Ok(key) = key {
            return Ok(VerifyKey {
                key,
                family,
                alg: None,
                label: label.to_owned(),
            });
        }
    }
    Err("not a certificate or public key of a supported type (RSA, EC P-256/P-384, Ed25519)".into())
}

/// Rebuilds a PEM block with 64-column lines: registries often hold PEM pasted on one line
/// (`-----BEGIN CERTIFICATE----- MIIB... -----END CERTIFICATE-----`) or with `\n` lost.
fn normalize_pem(text: &str) -> Result<String, String> {
    const BEGIN: &str = "-----BEGIN ";
    let text = text.trim();
    let start = text.find(BEGIN).ok_or("not PEM: no -----BEGIN line")?;
    let rest = &text[start + BEGIN.len()..];
    let label_end = rest
        .find("-----")
        .ok_or("not PEM: unterminated BEGIN line")?;
    let label = &rest[..label_end];
    match label {
        "CERTIFICATE" | "PUBLIC KEY" | "RSA PUBLIC KEY" => {}
        l if l.contains("PRIVATE") => {
            return Err("a private key: give the issuer's certificate or public key".into());
        }
        l => {
            return Err(format!(
                "unsupported PEM block {l:?} (want CERTIFICATE or PUBLIC KEY)"
            ));
        }
    }
    let body_and_end = &rest[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let body_end = body_and_end
        .find(&end_marker)
        .ok_or_else(|| format!("not PEM: no {end_marker} line"))?;
    let body: String = body_and_end[..body_end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if body.is_empty()
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    {
        return Err("not PEM: the body is not base64".into());
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&end_marker);
    out.push('\n');
    Ok(out)
}

/// The keys of one JWKS document, indexed by `kid`. Immutable: each fetch publishes a new one.
#[derive(Debug)]
pub struct KeySet {
    generation: u64,
    by_kid: HashMap<String, Vec<VerifyKey>>,
    fetched_at: Option<SystemTime>,
    skipped: Vec<String>,
}

impl KeySet {
    /// No keys (before the first fetch).
    pub fn empty() -> KeySet {
        KeySet {
            generation: next_generation(),
            by_kid: HashMap::new(),
            fetched_at: None,
            skipped: Vec::new(),
        }
    }

    /// Parses a JWKS document (`{"keys": [...]}`). Keys that cannot verify signatures (no
    /// `kid`, `"use": "enc"`, symmetric or unsupported types) are skipped and listed in
    /// [`KeySet::skipped`]; a document with no usable key is an error.
    pub fn from_jwks_json(body: &[u8], fetched_at: SystemTime) -> Result<KeySet, String> {
        let doc: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let Some(keys) = doc.get("keys").and_then(|k| k.as_array()) else {
            return Err("no \"keys\" list".into());
        };
        let mut set = KeySet::empty();
        set.fetched_at = Some(fetched_at);
        for (i, raw) in keys.iter().enumerate() {
            if set.len() >= MAX_JWKS_KEYS {
                set.skipped
                    .push(format!("keys[{i}..]: more than {MAX_JWKS_KEYS} keys"));
                break;
            }
            match jwk_to_key(raw) {
                Ok((kid, key)) => set.by_kid.entry(kid).or_default().push(key),
                Err(why) => set.skipped.push(format!("keys[{i}]: {why}")),
            }
        }
        if set.by_kid.is_empty() {
            return Err(format!("no usable key ({})", set.skipped.join("; ")));
        }
        Ok(set)
    }

    /// Unique per key set: a new fetch gets a new generation even with the same keys.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many keys (all `kid`s together).
    pub fn len(&self) -> usize {
        self.by_kid.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// When the document was fetched (`None` before the first fetch).
    pub fn fetched_at(&self) -> Option<SystemTime> {
        self.fetched_at
    }

    /// Keys of the document that were not usable, and why.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    pub(crate) fn keys_for(&self, kid: &str) -> &[VerifyKey] {
        self.by_kid.get(kid).map(Vec::as_slice).unwrap_or_default()
    }
}

fn jwk_to_key(raw: &serde_json::Value) -> Result<(String, VerifyKey), String> {
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    let kid = jwk
        .common
        .key_id
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or("no kid")?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err(format!("kid {kid:?}: an encryption key"));
    }
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return Err(format!(
            "kid {kid:?}: a symmetric key is not accepted from a JWKS"
        ));
    }
    let alg = match raw.get("alg").and_then(|a| a.as_str()) {
        None => None,
        Some(name) => Some(
            algorithm_from_name(name)
                .ok_or_else(|| format!("kid {kid:?}: unsupported alg {name:?}"))?,
        ),
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("kid {kid:?}: {e}"))?;
    let family = key.family();
    if family == AlgorithmFamily::Hmac {
        return Err(format!(
            "kid {kid:?}: a symmetric key is not accepted from a JWKS"
        ));
    }
    if let Some(a) = alg
        && a.family() != family
    {
        return Err(format!("kid {kid:?}: alg {a:?} does not fit the key type"));
    }
    let label = format!("kid {kid}");
    Ok((
        kid,
        VerifyKey {
            key,
            family,
            alg,
            label,
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn pem_on_one_line_is_rewrapped() {
        let one_line = "-----BEGIN PUBLIC KEY----- AAAA BBBB -----END PUBLIC KEY-----";
        let pem = normalize_pem(one_line).unwrap();
        assert_eq!(
            pem,
            "-----BEGIN PUBLIC KEY-----\nAAAABBBB\n-----END PUBLIC KEY-----\n"
        );
        assert!(
            normalize_pem("-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----")
                .unwrap_err()
                .contains("private key")
        );
        assert!(normalize_pem("hello").is_err());
        assert!(
            normalize_pem("-----BEGIN CERTIFICATE-----\n***\n-----END CERTIFICATE-----").is_err()
        );
    }

    #[test]
    fn jwks_skips_unusable_keys() {
        let doc = br#"{"keys": [
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "use": "sig", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        let set = KeySet::from_jwks_json(doc, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.contains_kid("ed"));
        assert_eq!(set.skipped().len(), 3, "{:?}", set.skipped());
        assert!(KeySet::from_jwks_json(b"{\"keys\": []}", SystemTime::UNIX_EPOCH).is_err());
        assert!(KeySet::from_jwks_json(b"nope", SystemTime::UNIX_EPOCH).is_err());
        let a = KeySet::empty();
        let b = KeySet::empty();
        assert_ne!(a.generation(), b.generation());
    }
}
