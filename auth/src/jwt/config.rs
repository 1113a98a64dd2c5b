//! The registry's `customJwtAuthentication` and `oauth2JwtAuthentication` sections, compiled
//! into a [`Verifier`]. Errors name the JSON path; unknown keys become warnings.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::jwks::{Jwks, JwksConfig};
use super::keys::{self, VerifyKey};
use super::{CustomJwt, DEFAULT_OAUTH2_AUDIENCE, OAuth2Jwt};
use crate::{ClientType, RegistryError};

pub(crate) const MAX_ISSUER_CERTIFICATES: usize = 2;
pub(crate) const MAX_HMAC_SECRETS: usize = 8;
pub(crate) const MIN_HMAC_SECRET_BYTES: usize = 32;
pub(crate) const MAX_ISSUERS: usize = 16;
pub(crate) const MAX_CLAIM_CHECKS: usize = 32;
pub(crate) const MAX_RULES: usize = 64;
pub(crate) const MAX_RULE_BYTES: usize = 1024;
pub(crate) const MAX_JWKS_HEADERS: usize = 16;
pub(crate) const MAX_CLOCK_SKEW_SECS: u64 = 3600;
pub(crate) const DEFAULT_CLOCK_SKEW_SECS: u64 = 60;
pub(crate) const DEFAULT_REFRESH_SECS: u64 = 600;
pub(crate) const REFRESH_SECS_RANGE: (u64, u64) = (10, 86_400);
/// Compiled size limit of one rule's regular expression.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Every algorithm that can be allowed (`none` never can).
pub(crate) const SUPPORTED_ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Unique per compiled section and per key set: cache entries remember the generations they
/// were verified under, so a reload or a new key set invalidates them.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// `claimRulesMode`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RulesMode {
    #[default]
    Restrict,
    Grant,
}

/// Claim-based authorization rules (TBMQ `pub_rules`/`sub_rules`).
#[derive(Debug, Default)]
pub(crate) struct ClaimRules {
    pub(crate) pub_claim: Option<String>,
    pub(crate) sub_claim: Option<String>,
    pub(crate) mode: RulesMode,
    pub(crate) default_pub: Option<Arc<[String]>>,
    pub(crate) default_sub: Option<Arc<[String]>>,
}

/// What one JWT section checks, compiled.
#[derive(Debug, Default)]
pub(crate) struct Verifier {
    /// Accepted `iss` values (one for CUSTOM-JWT, `tokenIssuers` for OAUTH2-JWT).
    pub(crate) issuers: Vec<String>,
    /// Required `aud` member, when set.
    pub(crate) audience: Option<String>,
    /// Issuer certificates / public keys and HMAC secrets, for tokens without `kid`.
    pub(crate) static_keys: Vec<VerifyKey>,
    pub(crate) jwks: Option<Arc<Jwks>>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) clock_skew_secs: u64,
    /// `authClaims`: claim → expected value (strings may hold `${clientId}`/`${username}`).
    pub(crate) auth_claims: Vec<(String, Value)>,
    pub(crate) default_client_type: ClientType,
    pub(crate) client_type_claims: Vec<(String, Value)>,
    pub(crate) rules: ClaimRules,
    /// Unique per compiled section (see [`next_generation`]).
    pub(crate) generation: u64,
    /// `oid` names the client (OAUTH2-JWT) instead of `sub`.
    pub(crate) name_from_oid: bool,
}

/// Reads one JSON object, remembering which keys were looked at so the rest can be warned about.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
    known: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, path: &'a str) -> Result<Obj<'a>, RegistryError> {
        match v {
            Value::Object(map) => Ok(Obj {
                map,
                path,
                known: Vec::new(),
            }),
            _ => Err(RegistryError::new(path, "must be an object")),
        }
    }

    fn at(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn str(&mut self, key: &'static str) -> Result<Option<&'a str>, RegistryError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(RegistryError::new(self.at(key), "must be a string")),
        }
    }

    fn bool(&mut self, key: &'static str) -> Result<Option<bool>, RegistryError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(RegistryError::new(self.at(key), "must be true or false")),
        }
    }

    fn u64(&mut self, key: &'static str, range: (u64, u64)) -> Result<Option<u64>, RegistryError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (range.0..=range.1).contains(&n) => Ok(Some(n)),
                _ => Err(RegistryError::new(
                    self.at(key),
                    format!("must be an integer from {} to {}", range.0, range.1),
                )),
            },
        }
    }

    fn array(&mut self, key: &'static str, max: usize) -> Result<&'a [Value], RegistryError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(a)) if a.len() <= max => Ok(a),
            Some(Value::Array(_)) => Err(RegistryError::new(
                self.at(key),
                format!("at most {max} entries"),
            )),
            Some(_) => Err(RegistryError::new(self.at(key), "must be a list")),
        }
    }

    fn strings(&mut self, key: &'static str, max: usize) -> Result<Vec<String>, RegistryError> {
        let at = self.at(key);
        self.array(key, max)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(RegistryError::new(
                    format!("{at}[{i}]"),
                    "must be a non-empty string",
                )),
            })
            .collect()
    }

    fn warn_unknown(&self, warnings: &mut Vec<String>) {
        for key in self.map.keys() {
            if !self.known.contains(&key.as_str()) {
                warnings.push(format!("`{}`: unknown key ignored", self.at(key)));
            }
        }
    }
}

pub(crate) fn parse_custom(
    v: &Value,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<CustomJwt, RegistryError> {
    let mut o = Obj::new(v, path)?;
    let issuer = o
        .str("tokenIssuer")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| RegistryError::new(o.at("tokenIssuer"), "required"))?;
    let mut verifier = parse_common(&mut o, warnings)?;
    verifier.issuers = vec![issuer.to_owned()];
    verifier.audience = o.str("audience")?.map(str::to_owned);
    verifier.static_keys = parse_static_keys(&mut o, warnings)?;
    if verifier.static_keys.is_empty() && verifier.jwks.is_none() {
        return Err(RegistryError::new(
            path,
            "no key: set issuerCertificates, hmacSecrets or jwks",
        ));
    }
    let accept_token_in_password = o.bool("acceptTokenInPassword")?.unwrap_or(false);
    o.warn_unknown(warnings);
    Ok(CustomJwt {
        accept_token_in_password,
        verifier,
    })
}

pub(crate) fn parse_oauth2(
    v: &Value,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<OAuth2Jwt, RegistryError> {
    let mut o = Obj::new(v, path)?;
    let issuers = o.strings("tokenIssuers", MAX_ISSUERS)?;
    if issuers.is_empty() {
        return Err(RegistryError::new(o.at("tokenIssuers"), "required"));
    }
    let mut verifier = parse_common(&mut o, warnings)?;
    verifier.issuers = issuers;
    verifier.audience = Some(
        o.str("audience")?
            .unwrap_or(DEFAULT_OAUTH2_AUDIENCE)
            .to_owned(),
    );
    if verifier.jwks.is_none() {
        return Err(RegistryError::new(o.at("jwks"), "required"));
    }
    verifier.name_from_oid = true;
    o.warn_unknown(warnings);
    Ok(OAuth2Jwt { verifier })
}

/// The keys both sections share.
fn parse_common(o: &mut Obj<'_>, warnings: &mut Vec<String>) -> Result<Verifier, RegistryError> {
    let jwks = match o.get("jwks") {
        None => None,
        Some(v) => Some(Arc::new(Jwks::new(parse_jwks(v, &o.at("jwks"), warnings)?))),
    };
    let algorithms = parse_algorithms(o)?;
    let clock_skew_secs = o
        .u64("clockSkewSeconds", (0, MAX_CLOCK_SKEW_SECS))?
        .unwrap_or(DEFAULT_CLOCK_SKEW_SECS);
    let auth_claims = parse_claim_map(o, "authClaims")?;
    let client_type_claims = parse_claim_map(o, "clientTypeClaims")?;
    let default_client_type = match o.str("defaultClientType")? {
        None | Some("DEVICE") => ClientType::Device,
        Some("APPLICATION") => ClientType::Application,
        Some(other) => {
            return Err(RegistryError::new(
                o.at("defaultClientType"),
                format!("{other:?}: must be \"DEVICE\" or \"APPLICATION\""),
            ));
        }
    };
    let rules = parse_rules(o, warnings)?;
    Ok(Verifier {
        jwks,
        algorithms,
        clock_skew_secs,
        auth_claims,
        default_client_type,
        client_type_claims,
        rules,
        generation: next_generation(),
        ..Verifier::default()
    })
}

fn parse_algorithms(o: &mut Obj<'_>) -> Result<Vec<Algorithm>, RegistryError> {
    if o.get("allowedAlgorithms").is_none() {
        return Ok(SUPPORTED_ALGORITHMS.to_vec());
    }
    let at = o.at("allowedAlgorithms");
    let names = o.strings("allowedAlgorithms", SUPPORTED_ALGORITHMS.len())?;
    let mut algorithms = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let alg = algorithm_from_name(name).ok_or_else(|| {
            RegistryError::new(
                format!("{at}[{i}]"),
                format!("{name:?} is not a supported algorithm (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)"),
            )
        })?;
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    if algorithms.is_empty() {
        return Err(RegistryError::new(at, "must name at least one algorithm"));
    }
    Ok(algorithms)
}

/// The supported algorithm named `name` (`none` is not one).
pub(crate) fn algorithm_from_name(name: &str) -> Option<Algorithm> {
    let alg: Algorithm = name.parse().ok()?;
    SUPPORTED_ALGORITHMS.contains(&alg).then_some(alg)
}

fn parse_claim_map(
    o: &mut Obj<'_>,
    key: &'static str,
) -> Result<Vec<(String, Value)>, RegistryError> {
    let at = o.at(key);
    match o.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Object(map)) if map.len() <= MAX_CLAIM_CHECKS => map
            .iter()
            .map(|(claim, expected)| match expected {
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    Ok((claim.clone(), expected.clone()))
                }
                _ => Err(RegistryError::new(
                    format!("{at}.{claim}"),
                    "must be a string, a number or true/false",
                )),
            })
            .collect(),
        Some(Value::Object(_)) => Err(RegistryError::new(
            at,
            format!("at most {MAX_CLAIM_CHECKS} claims"),
        )),
        Some(_) => Err(RegistryError::new(
            at,
            "must be an object of claim names to expected values",
        )),
    }
}

fn parse_rules(o: &mut Obj<'_>, warnings: &mut Vec<String>) -> Result<ClaimRules, RegistryError> {
    let pub_claim = o.str("pubRulesClaim")?.map(str::to_owned);
    let sub_claim = o.str("subRulesClaim")?.map(str::to_owned);
    let mode = match o.str("claimRulesMode")? {
        None | Some("restrict") => RulesMode::Restrict,
        Some("grant") => RulesMode::Grant,
        Some(other) => {
            return Err(RegistryError::new(
                o.at("claimRulesMode"),
                format!("{other:?}: must be \"restrict\" or \"grant\""),
            ));
        }
    };
    let (mut default_pub, mut default_sub) = (None, None);
    if let Some(v) = o.get("defaultAuthRules") {
        let at = o.at("defaultAuthRules");
        let mut d = Obj::new(v, &at)?;
        default_pub = Some(rule_list(&mut d, "pubRules")?);
        default_sub = Some(rule_list(&mut d, "subRules")?);
        d.warn_unknown(warnings);
    }
    if mode == RulesMode::Grant
        && pub_claim.is_none()
        && sub_claim.is_none()
        && default_pub.is_none()
    {
        return Err(RegistryError::new(
            o.at("claimRulesMode"),
            "\"grant\" needs pubRulesClaim, subRulesClaim or defaultAuthRules",
        ));
    }
    Ok(ClaimRules {
        pub_claim,
        sub_claim,
        mode,
        default_pub,
        default_sub,
    })
}

fn rule_list(o: &mut Obj<'_>, key: &'static str) -> Result<Arc<[String]>, RegistryError> {
    let at = o.at(key);
    let rules = o.strings(key, MAX_RULES)?;
    for (i, rule) in rules.iter().enumerate() {
        check_rule(rule).map_err(|e| RegistryError::new(format!("{at}[{i}]"), e))?;
    }
    Ok(rules.into())
}

/// Whether a claim rule is a usable regular expression (matched whole: `^(?:rule)$`).
pub(crate) fn check_rule(rule: &str) -> Result<(), String> {
    if rule.len() > MAX_RULE_BYTES {
        return Err(format!("longer than {MAX_RULE_BYTES} bytes"));
    }
    regex::RegexBuilder::new(&format!("^(?:{rule})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(drop)
        .map_err(|e| format!("not a valid regular expression: {e}"))
}

fn parse_static_keys(
    o: &mut Obj<'_>,
    warnings: &mut Vec<String>,
) -> Result<Vec<VerifyKey>, RegistryError> {
    let mut out = Vec::new();
    let at = o.at("issuerCertificates");
    for (i, v) in o
        .array("issuerCertificates", MAX_ISSUER_CERTIFICATES)?
        .iter()
        .enumerate()
    {
        let at = format!("{at}[{i}]");
        let pem = match v {
            Value::String(s) => s.as_str(),
            Value::Object(map) => match map.get("encodedCertificate") {
                Some(Value::String(s)) => s.as_str(),
                _ => {
                    return Err(RegistryError::new(
                        format!("{at}.encodedCertificate"),
                        "required: a PEM certificate or public key",
                    ));
                }
            },
            _ => {
                return Err(RegistryError::new(
                    at,
                    "must be a PEM string or { \"encodedCertificate\": \"<PEM>\" }",
                ));
            }
        };
        let key = keys::parse_pem_key(pem, &at).map_err(|e| RegistryError::new(&at, e))?;
        out.push(key);
    }
    let at = o.at("hmacSecrets");
    for (i, secret) in o
        .strings("hmacSecrets", MAX_HMAC_SECRETS)?
        .iter()
        .enumerate()
    {
        if secret.len() < MIN_HMAC_SECRET_BYTES {
            // RFC 7518 §3.2: a key at least as long as the hash output (HS256: 32 bytes).
            warnings.push(format!(
                "`{at}[{i}]`: shorter than {MIN_HMAC_SECRET_BYTES} bytes; such a secret can be guessed offline from one token"
            ));
        }
        out.push(VerifyKey::hmac(secret.as_bytes(), format!("{at}[{i}]")));
    }
    Ok(out)
}

fn parse_jwks(
    v: &Value,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<JwksConfig, RegistryError> {
    let mut o = Obj::new(v, path)?;
    let url = o
        .str("url")?
        .ok_or_else(|| RegistryError::new(o.at("url"), "required"))?
        .to_owned();
    let allow_insecure_http = o.bool("allowInsecureHttp")?.unwrap_or(false);
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") {
        if !allow_insecure_http {
            return Err(RegistryError::new(
                o.at("url"),
                "plain http is refused: use https, or set allowInsecureHttp: true",
            ));
        }
    } else if !lower.starts_with("https://") {
        return Err(RegistryError::new(o.at("url"), "must be an https:// URL"));
    }
    let refresh_secs = o
        .u64("refreshIntervalSeconds", REFRESH_SECS_RANGE)?
        .unwrap_or(DEFAULT_REFRESH_SECS);
    let mut headers = Vec::new();
    if let Some(h) = o.get("headers") {
        let at = o.at("headers");
        let Value::Object(map) = h else {
            return Err(RegistryError::new(
                at,
                "must be an object of header names to values",
            ));
        };
        if map.len() > MAX_JWKS_HEADERS {
            return Err(RegistryError::new(
                at,
                format!("at most {MAX_JWKS_HEADERS} headers"),
            ));
        }
        for (name, value) in map {
            let ok_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b));
            let value = match value {
                Value::String(s) if !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) => s,
                _ => {
                    return Err(RegistryError::new(
                        format!("{at}.{name}"),
                        "must be a string without line breaks",
                    ));
                }
            };
            if !ok_name {
                return Err(RegistryError::new(
                    format!("{at}.{name}"),
                    "not a valid header name",
                ));
            }
            headers.push((name.clone(), value.clone()));
        }
    }
    let username = o.str("username")?;
    let password = o.str("password")?;
    let basic_auth = match (username, password) {
        (None, None) => None,
        (Some(u), p) => Some((u.to_owned(), p.unwrap_or_default().to_owned())),
        (None, Some(_)) => {
            return Err(RegistryError::new(
                o.at("username"),
                "required with password",
            ));
        }
    };
    let ca_certificates = match o.str("caPem")? {
        None => None,
        Some(pem) => {
            Some(super::jwks::parse_ca_pem(pem).map_err(|e| RegistryError::new(o.at("caPem"), e))?)
        }
    };
    o.warn_unknown(warnings);
    Ok(JwksConfig {
        url,
        refresh_interval: Duration::from_secs(refresh_secs),
        headers,
        basic_auth,
        allow_insecure_http,
        ca_certificates,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn custom(v: Value) -> Result<CustomJwt, RegistryError> {
        parse_custom(&v, "ns.customJwtAuthentication", &mut Vec::new())
    }

    #[test]
    fn minimal_hmac_section_has_defaults() {
        let c = custom(json!({"tokenIssuer": "iss", "hmacSecrets": ["s3cret"]})).unwrap();
        assert_eq!(c.verifier.algorithms.len(), SUPPORTED_ALGORITHMS.len());
        assert_eq!(c.verifier.clock_skew_secs, 60);
        assert_eq!(c.verifier.default_client_type, ClientType::Device);
        assert!(!c.accept_token_in_password);
        assert_eq!(c.verifier.rules.mode, RulesMode::Restrict);
    }

    #[test]
    fn errors_name_the_path() {
        let e = custom(json!({"hmacSecrets": ["s"]})).unwrap_err();
        assert_eq!(e.path, "ns.customJwtAuthentication.tokenIssuer");
        let e = custom(json!({"tokenIssuer": "i"})).unwrap_err();
        assert!(e.problem.contains("no key"), "{e}");
        let e = custom(json!({"tokenIssuer": "i", "hmacSecrets": ["s"], "allowedAlgorithms": ["HS256", "none"]}))
            .unwrap_err();
        assert_eq!(e.path, "ns.customJwtAuthentication.allowedAlgorithms[1]");
        let e = custom(json!({"tokenIssuer": "i", "hmacSecrets": ["s"],
            "defaultAuthRules": {"pubRules": ["ok/.*", "bad("]}}))
        .unwrap_err();
        assert_eq!(
            e.path,
            "ns.customJwtAuthentication.defaultAuthRules.pubRules[1]"
        );
        let e = custom(json!({"tokenIssuer": "i", "jwks": {"url": "http://127.0.0.1/keys"}}))
            .unwrap_err();
        assert_eq!(e.path, "ns.customJwtAuthentication.jwks.url");
        let e =
            custom(json!({"tokenIssuer": "i", "issuerCertificates": ["a", "b", "c"]})).unwrap_err();
        assert_eq!(e.path, "ns.customJwtAuthentication.issuerCertificates");
        let e = custom(json!({"tokenIssuer": "i", "issuerCertificates": ["not pem"]})).unwrap_err();
        assert_eq!(e.path, "ns.customJwtAuthentication.issuerCertificates[0]");
        let e =
            custom(json!({"tokenIssuer": "i", "hmacSecrets": ["s"], "clockSkewSeconds": 100000}))
                .unwrap_err();
        assert_eq!(e.path, "ns.customJwtAuthentication.clockSkewSeconds");
        let e = custom(json!({"tokenIssuer": "i", "hmacSecrets": ["s"],
            "jwks": {"url": "https://x/k", "headers": {"X-A": "a\r\nb"}}}))
        .unwrap_err();
        assert_eq!(e.path, "ns.customJwtAuthentication.jwks.headers.X-A");
    }

    #[test]
    fn a_short_hmac_secret_is_a_warning() {
        let mut w = Vec::new();
        parse_custom(
            &json!({"tokenIssuer": "i", "hmacSecrets": ["short", "x".repeat(32)]}),
            "p",
            &mut w,
        )
        .unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("`p.hmacSecrets[0]`"));
    }

    #[test]
    fn unknown_keys_are_warnings() {
        let mut w = Vec::new();
        parse_custom(
            &json!({"tokenIssuer": "i", "hmacSecrets": ["0123456789abcdef0123456789abcdef"], "colour": 1,
                "jwks": {"url": "https://idp.example/keys", "extra": true}}),
            "p",
            &mut w,
        )
        .unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w.iter().any(|s| s.contains("`p.colour`")));
        assert!(w.iter().any(|s| s.contains("`p.jwks.extra`")));
    }

    #[test]
    fn oauth2_defaults_audience_and_requires_jwks() {
        let o = parse_oauth2(
            &json!({"tokenIssuers": ["https://login.example/t/v2.0"], "jwks": {"url": "https://login.example/keys"}}),
            "p",
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(
            o.verifier.audience.as_deref(),
            Some(DEFAULT_OAUTH2_AUDIENCE)
        );
        let e = parse_oauth2(&json!({"tokenIssuers": ["i"]}), "p", &mut Vec::new()).unwrap_err();
        assert_eq!(e.path, "p.jwks");
        let e = parse_oauth2(
            &json!({"jwks": {"url": "https://x/k"}}),
            "p",
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(e.path, "p.tokenIssuers");
    }
}
