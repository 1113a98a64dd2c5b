//! Verifying one token: decode, pick keys, check the signature, the claims, build the identity.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::cache::{CacheKey, CachedToken, JwtCache, JwtCacheStats};
use super::config::{MAX_RULES, RulesMode, Verifier, algorithm_from_name, check_rule};
use super::keys::{KeySet, VerifyKey};
use super::{MAX_TOKEN_BYTES, TokenSource};
use crate::{
    AttrValue, Attributes, AuthError, CUSTOM_JWT, ClientType, Credentials, Identity, Method,
    OAUTH2_JWT,
};

/// Most claims turned into attributes.
pub(crate) const MAX_ATTRIBUTES: usize = 64;
/// Longest string (claim value, array element) kept as an attribute, in bytes.
pub(crate) const MAX_ATTRIBUTE_BYTES: usize = 1024;
/// Most elements of an array claim kept as an attribute.
pub(crate) const MAX_ATTRIBUTE_ARRAY: usize = 64;

const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn bad(reason: impl Into<String>) -> AuthError {
    AuthError::BadCredentials(reason.into())
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn authenticate(
    v: &Verifier,
    source: TokenSource,
    token: &[u8],
    creds: &Credentials<'_>,
    cache: &mut JwtCache,
    now: SystemTime,
) -> Result<Identity, AuthError> {
    if token.is_empty() {
        return Err(bad("malformed token: empty"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(bad(format!(
            "malformed token: longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    let cache_key: CacheKey = (hash, source);

    let jwks_keys = v.jwks.as_ref().map(|j| j.keys_guard());
    let jwks_generation = jwks_keys.as_ref().map(|k| k.generation());
    let hit = cache
        .lookup(&cache_key, v.generation, jwks_generation)
        .map(|e| {
            check_dynamic(v, e.exp, e.nbf, &e.claims, creds, now).map(|()| e.identity.clone())
        });
    if let Some(result) = hit {
        cache.stats.hits += 1;
        if let Err(AuthError::BadCredentials(reason)) = &result
            && reason.starts_with("expired")
        {
            cache.remove(&cache_key);
        }
        return result;
    }
    cache.stats.misses += 1;

    let token = std::str::from_utf8(token).map_err(|_| bad("malformed token: not UTF-8"))?;
    let decoded = Decoded::parse(token)?;
    if !v.algorithms.contains(&decoded.alg) {
        return Err(bad(format!("algorithm: {:?} is not allowed", decoded.alg)));
    }
    let key_generation = check_signature(
        v,
        &decoded,
        jwks_keys.as_deref().map(|k| &**k),
        &mut cache.stats,
        now,
    )?;
    let claims = decoded.claims;
    check_static(v, &claims)?;
    let exp = claims
        .get("exp")
        .and_then(numeric_date)
        .ok_or_else(|| bad("claim exp: required (a NumericDate)"))?;
    let nbf = match claims.get("nbf") {
        None => None,
        Some(n) => Some(numeric_date(n).ok_or_else(|| bad("claim nbf: not a NumericDate"))?),
    };
    check_dynamic(v, exp, nbf, &claims, creds, now)?;
    let identity = build_identity(v, source, &claims, exp)?;
    cache.insert(
        cache_key,
        CachedToken {
            verifier_generation: v.generation,
            key_generation,
            exp,
            nbf,
            claims,
            identity: identity.clone(),
        },
        now,
    );
    Ok(identity)
}

/// A token split and decoded, not yet verified.
struct Decoded<'t> {
    alg: Algorithm,
    kid: Option<String>,
    /// `header.payload`, what the signature covers.
    message: &'t str,
    signature: &'t str,
    claims: Map<String, Value>,
}

impl<'t> Decoded<'t> {
    fn parse(token: &'t str) -> Result<Decoded<'t>, AuthError> {
        let (message, signature) = token
            .rsplit_once('.')
            .ok_or_else(|| bad("malformed token: not header.payload.signature"))?;
        let (header, payload) = message
            .split_once('.')
            .ok_or_else(|| bad("malformed token: not header.payload.signature"))?;
        if payload.contains('.') {
            return Err(bad("malformed token: not header.payload.signature"));
        }
        let header = json_part(header, "header")?;
        if header.contains_key("crit") {
            return Err(bad(
                "malformed token: critical header extensions are not supported",
            ));
        }
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("malformed token: no alg"))?;
        if alg_name.eq_ignore_ascii_case("none") {
            return Err(bad("algorithm: none is not allowed"));
        }
        let alg = algorithm_from_name(alg_name)
            .ok_or_else(|| bad(format!("algorithm: {alg_name:?} is not supported")))?;
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(bad("malformed token: kid is not a string")),
        };
        Ok(Decoded {
            alg,
            kid,
            message,
            signature,
            claims: json_part(payload, "payload")?,
        })
    }
}

fn json_part(b64: &str, what: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = B64URL
        .decode(b64)
        .map_err(|_| bad(format!("malformed token: {what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(bad(format!("malformed token: {what} is not a JSON object"))),
    }
}

fn verify_with(key: &VerifyKey, d: &Decoded<'_>, stats: &mut JwtCacheStats) -> bool {
    stats.signature_verifications += 1;
    let ok = jsonwebtoken::crypto::verify(d.signature, d.message.as_bytes(), &key.key, d.alg)
        .unwrap_or(false);
    tracing::trace!(key = %key.label, alg = ?d.alg, ok, "JWT signature check");
    ok
}

/// Checks the signature; returns the JWKS key set generation used, or 0 for a static key.
///
/// A `kid` the JWKS knows selects those keys only. Otherwise the issuer certificates / public
/// keys and HMAC secrets whose type fits `alg` are tried. An unknown `kid` asks the fetcher for
/// an early refetch (rate-limited) and is refused now: the shard never waits for the network.
fn check_signature(
    v: &Verifier,
    d: &Decoded<'_>,
    jwks_keys: Option<&KeySet>,
    stats: &mut JwtCacheStats,
    now: SystemTime,
) -> Result<u64, AuthError> {
    if let (Some(kid), Some(set)) = (d.kid.as_deref(), jwks_keys) {
        let keys = set.keys_for(kid);
        if !keys.is_empty() {
            let mut fitting = keys.iter().filter(|k| k.fits(d.alg)).peekable();
            if fitting.peek().is_none() {
                return Err(bad(format!(
                    "algorithm: {:?} does not fit the key {kid:?}",
                    d.alg
                )));
            }
            for key in fitting {
                if verify_with(key, d, stats) {
                    return Ok(set.generation());
                }
            }
            return Err(bad("signature: the token's signature does not verify"));
        }
    }
    let mut any_fit = false;
    for key in v.static_keys.iter().filter(|k| k.fits(d.alg)) {
        any_fit = true;
        if verify_with(key, d, stats) {
            return Ok(0);
        }
    }
    if let (Some(kid), Some(jwks)) = (d.kid.as_deref(), &v.jwks) {
        let asked = jwks.request_refetch(now);
        tracing::debug!(kid, url = %jwks.config().url, refetch_requested = asked, "JWT with an unknown kid");
        return Err(bad(format!("unknown key: kid {kid:?}")));
    }
    if any_fit {
        Err(bad("signature: the token's signature does not verify"))
    } else {
        Err(bad(format!(
            "unknown key: no configured key for {:?}",
            d.alg
        )))
    }
}

/// Checks that depend only on the token: `iss`, `aud`.
fn check_static(v: &Verifier, claims: &Map<String, Value>) -> Result<(), AuthError> {
    let iss = claims.get("iss").and_then(Value::as_str);
    if !iss.is_some_and(|iss| v.issuers.iter().any(|i| i == iss)) {
        return Err(bad("issuer: iss is not an accepted token issuer"));
    }
    if let Some(aud) = &v.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(s)) => s == aud,
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(aud)),
            _ => false,
        };
        if !ok {
            return Err(bad(format!("audience: aud does not contain {aud:?}")));
        }
    }
    Ok(())
}

/// Checks that depend on the time and the CONNECT, made on every use, cached or not.
fn check_dynamic(
    v: &Verifier,
    exp: u64,
    nbf: Option<u64>,
    claims: &Map<String, Value>,
    creds: &Credentials<'_>,
    now: SystemTime,
) -> Result<(), AuthError> {
    let now_secs = unix_secs(now);
    if now_secs > exp.saturating_add(v.clock_skew_secs) {
        return Err(bad("expired: the token's exp is past"));
    }
    if let Some(nbf) = nbf
        && now_secs.saturating_add(v.clock_skew_secs) < nbf
    {
        return Err(bad("not yet valid: the token's nbf is in the future"));
    }
    for (claim, expected) in &v.auth_claims {
        let ok = match expand(expected, creds) {
            Some(expected) => claims
                .get(claim)
                .is_some_and(|actual| claim_matches(actual, &expected)),
            None => false,
        };
        if !ok {
            return Err(bad(format!("claim {claim}")));
        }
    }
    Ok(())
}

/// An `authClaims` value with `${clientId}` / `${username}` replaced; `None` when it names the
/// user name and the CONNECT has none.
fn expand(expected: &Value, creds: &Credentials<'_>) -> Option<Value> {
    let Value::String(s) = expected else {
        return Some(expected.clone());
    };
    if !s.contains("${") {
        return Some(expected.clone());
    }
    let mut out = s.replace("${clientId}", creds.client_id);
    if out.contains("${username}") {
        out = out.replace("${username}", creds.username?);
    }
    Some(Value::String(out))
}

/// A claim matches an expected value when equal to it, or when it is an array holding it.
pub(crate) fn claim_matches(actual: &Value, expected: &Value) -> bool {
    actual == expected
        || matches!(actual, Value::Array(items) if items.iter().any(|i| i == expected))
}

/// A NumericDate: seconds since the epoch, an integer or (as some issuers write) a decimal.
fn numeric_date(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}

fn build_identity(
    v: &Verifier,
    source: TokenSource,
    claims: &Map<String, Value>,
    exp: u64,
) -> Result<Identity, AuthError> {
    let name_claim = if v.name_from_oid { "oid" } else { "sub" };
    let name = claims
        .get(name_claim)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= MAX_ATTRIBUTE_BYTES)
        .ok_or_else(|| bad(format!("claim {name_claim}: required")))?;
    let name: Arc<str> = Arc::from(name);
    let client_type = if !v.client_type_claims.is_empty()
        && v.client_type_claims
            .iter()
            .all(|(c, e)| claims.get(c).is_some_and(|a| claim_matches(a, e)))
    {
        ClientType::Application
    } else {
        v.default_client_type
    };
    let mut attributes = attributes_of(claims);
    let type_name = match client_type {
        ClientType::Device => "DEVICE",
        ClientType::Application => "APPLICATION",
    };
    attributes.insert("clientType".into(), AttrValue::String(type_name.into()));
    let r = &v.rules;
    let pub_rules = rules_for(
        claims,
        r.pub_claim.as_deref(),
        r.default_pub.as_ref(),
        r.mode,
    )?;
    let sub_rules = rules_for(
        claims,
        r.sub_claim.as_deref(),
        r.default_sub.as_ref(),
        r.mode,
    )?;
    let (method, auth_method) = match source {
        TokenSource::CustomJwt => (Method::CustomJwt, Some(Arc::from(CUSTOM_JWT))),
        TokenSource::OAuth2Jwt => (Method::OAuth2Jwt, Some(Arc::from(OAUTH2_JWT))),
        TokenSource::Password => (Method::PasswordJwt, None),
    };
    Ok(Identity {
        method,
        principal_id: v.name_from_oid.then(|| Arc::clone(&name)),
        authentication_name: name,
        client_name: None,
        attributes,
        client_type,
        expires_at: SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp)),
        auth_method,
        pub_rules,
        sub_rules,
        claim_rules_grant: r.mode == RulesMode::Grant,
    })
}

/// Claims that are strings, integers or arrays of strings, as attributes (bounded).
fn attributes_of(claims: &Map<String, Value>) -> Attributes {
    let mut out = Attributes::new();
    for (name, value) in claims {
        if out.len() >= MAX_ATTRIBUTES {
            break;
        }
        if name.len() > MAX_ATTRIBUTE_BYTES {
            continue;
        }
        let attr = match value {
            Value::String(s) if s.len() <= MAX_ATTRIBUTE_BYTES => AttrValue::String(s.clone()),
            Value::Number(n) => match n.as_i64() {
                Some(i) => AttrValue::Integer(i),
                None => continue,
            },
            Value::Array(items) if items.len() <= MAX_ATTRIBUTE_ARRAY => {
                let strings: Option<Vec<AttrValue>> = items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) if s.len() <= MAX_ATTRIBUTE_BYTES => {
                            Some(AttrValue::String(s.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                match strings {
                    Some(s) => AttrValue::Array(s),
                    None => continue,
                }
            }
            _ => continue,
        };
        out.insert(name.clone(), attr);
    }
    out
}

fn rules_for(
    claims: &Map<String, Value>,
    claim: Option<&str>,
    default: Option<&Arc<[String]>>,
    mode: RulesMode,
) -> Result<Option<Arc<[String]>>, AuthError> {
    if let Some((name, value)) = claim.and_then(|c| claims.get(c).map(|v| (c, v))) {
        let rules: Vec<String> = match value {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) if items.len() <= MAX_RULES => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    bad(format!(
                        "claim {name}: must be a list of regular expressions"
                    ))
                })?,
            _ => {
                return Err(bad(format!(
                    "claim {name}: must be a list of at most {MAX_RULES} regular expressions"
                )));
            }
        };
        for rule in &rules {
            check_rule(rule).map_err(|e| bad(format!("claim {name}: {e}")))?;
        }
        return Ok(Some(rules.into()));
    }
    Ok(match mode {
        RulesMode::Grant => Some(default.cloned().unwrap_or_else(|| Arc::from(Vec::new()))),
        RulesMode::Restrict => None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claim_matching_and_placeholders() {
        assert!(claim_matches(&json!("a"), &json!("a")));
        assert!(claim_matches(&json!(["x", "a"]), &json!("a")));
        assert!(!claim_matches(&json!("ab"), &json!("a")));
        assert!(claim_matches(&json!(7), &json!(7)));
        let creds = Credentials {
            client_id: "dev-1",
            username: None,
            password: None,
            auth_method: None,
            auth_data: None,
            peer_certificates: &[],
            v5: true,
        };
        assert_eq!(expand(&json!("${clientId}"), &creds), Some(json!("dev-1")));
        assert_eq!(
            expand(&json!("d/${clientId}/x"), &creds),
            Some(json!("d/dev-1/x"))
        );
        assert_eq!(expand(&json!("${username}"), &creds), None);
        let with_user = Credentials {
            username: Some("u"),
            ..creds
        };
        assert_eq!(expand(&json!("${username}"), &with_user), Some(json!("u")));
    }

    #[test]
    fn numeric_dates() {
        assert_eq!(numeric_date(&json!(5)), Some(5));
        assert_eq!(numeric_date(&json!(5.9)), Some(5));
        assert_eq!(numeric_date(&json!(-1)), None);
        assert_eq!(numeric_date(&json!("5")), None);
    }

    #[test]
    fn malformed_tokens_are_refused_with_a_reason() {
        for t in ["", "a.b", "a.b.c.d", "!!.e30.x"] {
            let r = Decoded::parse(t);
            assert!(
                matches!(r, Err(AuthError::BadCredentials(ref s)) if s.starts_with("malformed")),
                "{t}"
            );
        }
        // {"alg":"none"}
        let none = format!("{}.e30.", B64URL.encode(br#"{"alg":"none"}"#));
        assert!(
            matches!(Decoded::parse(&none), Err(AuthError::BadCredentials(s)) if s.starts_with("algorithm"))
        );
    }
}
