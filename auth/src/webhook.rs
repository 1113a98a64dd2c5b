//! Webhook authentication with Azure Event Grid's contract.
//!
//! What it is for: asking an HTTPS endpoint whether a CONNECT (or an AUTH re-authentication)
//! may proceed. The request is `POST url` with `Authorization: Bearer <token>` and the JSON
//! of [`WebhookRequest`] (absent fields omitted); the answer is `200` with
//! `{"decision": "allow", "clientAuthenticationName", "attributes", "expiration"}` or
//! `{"decision": "deny", "errorReason"}` ([`parse_response`]). An allow becomes an
//! [`Identity`] whose attributes feed client groups, topic spaces, permission bindings and
//! claim rules exactly as registry attributes do.
//!
//! What it must never do: run on a shard thread ([`Webhook::call`] blocks for up to
//! `timeout`: the engine calls it on its authentication pool), panic on what an endpoint
//! answers, or keep hammering an endpoint that fails (the [`Breaker`] refuses fast during a
//! cool-down, then lets one probe through).

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::Serialize;

use crate::identity::{AttrValue, Attributes, ClientType, Identity, Method};

/// The largest response body read.
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// Why a webhook call gave no decision: the client gets 0x88 Server unavailable (3.1.1: 0x03).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    #[error("webhook {url}: {problem}")]
    Request { url: String, problem: String },
    #[error("webhook {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("webhook response: {0}")]
    Response(String),
    #[error("webhook {url}: refused fast, the endpoint failed {failures} times in a row")]
    CircuitOpen { url: String, failures: u32 },
    #[error("webhook bearer token: {0}")]
    Token(String),
}

/// What the endpoint decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow {
        name: String,
        attributes: Attributes,
        /// When the authentication stops being valid.
        expiration: Option<SystemTime>,
        /// Attributes left out because of their type (logged by the caller).
        ignored: Vec<String>,
    },
    Deny {
        reason: String,
    },
}

impl Decision {
    /// The identity of an allow (`None` for a deny).
    pub fn identity(&self, auth_method: Option<&str>) -> Option<Identity> {
        let Decision::Allow {
            name,
            attributes,
            expiration,
            ..
        } = self
        else {
            return None;
        };
        Some(Identity {
            method: Method::Webhook,
            authentication_name: Arc::from(name.as_str()),
            client_name: None,
            attributes: attributes.clone(),
            client_type: ClientType::Device,
            expires_at: *expiration,
            auth_method: auth_method.map(Arc::from),
            pub_rules: None,
            sub_rules: None,
            claim_rules_grant: false,
            principal_id: None,
        })
    }
}

/// The JSON body sent to the endpoint (Event Grid's field names; absent fields omitted).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRequest {
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication_method: Option<String>,
    /// base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication_data: Option<String>,
    /// PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// PEM, the certificates after the leaf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate_chain: Option<String>,
}

impl WebhookRequest {
    /// The request for `creds`.
    pub fn from_credentials(creds: &crate::Credentials<'_>) -> WebhookRequest {
        let b64 = base64::engine::general_purpose::STANDARD;
        let pem = |ders: &[rustls_pki_types::CertificateDer<'static>]| {
            let mut out = String::new();
            for der in ders {
                out.push_str("-----BEGIN CERTIFICATE-----\n");
                let text = b64.encode(der.as_ref());
                for chunk in text.as_bytes().chunks(64) {
                    out.push_str(&String::from_utf8_lossy(chunk));
                    out.push('\n');
                }
                out.push_str("-----END CERTIFICATE-----\n");
            }
            out
        };
        let (leaf, chain) = match creds.peer_certificates.split_first() {
            Some((leaf, rest)) => (
                Some(pem(std::slice::from_ref(leaf))),
                (!rest.is_empty()).then(|| pem(rest)),
            ),
            None => (None, None),
        };
        WebhookRequest {
            client_id: creds.client_id.to_string(),
            user_name: creds.username.map(str::to_string),
            password: creds.password.map(|p| b64.encode(p)),
            authentication_method: creds.auth_method.map(str::to_string),
            authentication_data: creds.auth_data.map(|d| b64.encode(d)),
            client_certificate: leaf,
            client_certificate_chain: chain,
        }
    }
}

/// Parses a `200` body. An allow without a name, a decision that is neither, or JSON that
/// is not an object is an error (0x88). Attributes of a type Event Grid does not accept
/// (anything but int32, string, array of strings) are left out and named in `ignored`.
pub fn parse_response(body: &[u8]) -> Result<Decision, WebhookError> {
    let bad = |p: &str| WebhookError::Response(p.to_string());
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Response(e.to_string()))?;
    let obj = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
    let decision = obj
        .get("decision")
        .and_then(|d| d.as_str())
        .ok_or_else(|| bad("no \"decision\" string"))?;
    if decision.eq_ignore_ascii_case("deny") {
        let reason = obj
            .get("errorReason")
            .and_then(|r| r.as_str())
            .unwrap_or("")
            .chars()
            .take(512)
            .collect();
        return Ok(Decision::Deny { reason });
    }
    if !decision.eq_ignore_ascii_case("allow") {
        return Err(WebhookError::Response(format!(
            "decision {decision:?} is neither allow nor deny"
        )));
    }
    let name = obj
        .get("clientAuthenticationName")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("allow without a clientAuthenticationName"))?;
    if name.len() > 256 {
        return Err(bad("clientAuthenticationName longer than 256 bytes"));
    }
    let mut attributes = Attributes::new();
    let mut ignored = Vec::new();
    match obj.get("attributes") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            for (k, v) in map {
                match attribute(v) {
                    Some(a) => {
                        attributes.insert(k.clone(), a);
                    }
                    None => ignored.push(k.clone()),
                }
            }
        }
        Some(_) => return Err(bad("\"attributes\" is not an object")),
    }
    let expiration = match obj.get("expiration") {
        None | Some(serde_json::Value::Null) => None,
        Some(e) => {
            let secs = e
                .as_u64()
                .ok_or_else(|| bad("\"expiration\" is not unix seconds"))?;
            Some(UNIX_EPOCH + Duration::from_secs(secs.min(u64::from(u32::MAX) * 4)))
        }
    };
    Ok(Decision::Allow {
        name: name.to_string(),
        attributes,
        expiration,
        ignored,
    })
}

/// An Event Grid attribute value: int32, string, or an array of strings.
fn attribute(v: &serde_json::Value) -> Option<AttrValue> {
    match v {
        serde_json::Value::String(s) => Some(AttrValue::String(s.clone())),
        serde_json::Value::Number(n) => n
            .as_i64()
            .filter(|i| i32::try_from(*i).is_ok())
            .map(AttrValue::Integer),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(|s| AttrValue::String(s.to_string())))
            .collect::<Option<Vec<_>>>()
            .map(AttrValue::Array),
        _ => None,
    }
}

/// `clientAuthentication.webHookAuthentication` of a registry namespace: its `endpointUrl`
/// (Azure's `identity` and Entra ID settings have no meaning here and are ignored with a
/// warning: the bearer token is configured in `[auth.webhook]`).
pub(crate) fn parse_registry_webhook(
    v: &serde_json::Value,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<String, crate::RegistryError> {
    let obj = v
        .as_object()
        .ok_or_else(|| crate::RegistryError::new(path, "expected an object"))?;
    let url = obj
        .get("endpointUrl")
        .and_then(|u| u.as_str())
        .ok_or_else(|| {
            crate::RegistryError::new(format!("{path}.endpointUrl"), "expected a URL string")
        })?;
    check_url(url).map_err(|p| crate::RegistryError::new(format!("{path}.endpointUrl"), p))?;
    for key in obj.keys().filter(|k| k.as_str() != "endpointUrl") {
        warnings.push(format!(
            "{path}.{key} is ignored: ringmq authenticates to the webhook with [auth.webhook] bearer_token_file or a minted token"
        ));
    }
    Ok(url.to_string())
}

/// Where the bearer token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    None,
    /// A file holding the token, re-read when it changes.
    File(PathBuf),
    /// A JWT the broker mints and signs itself.
    Minted {
        key_file: PathBuf,
        audience: String,
        issuer: String,
        lifetime: Duration,
    },
}

/// What a webhook needs besides its URL.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub token: TokenSource,
    /// PEM bundle of the CAs trusted for the endpoint (instead of the public web roots).
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    /// Failures in a row that open the breaker, and how long it stays open.
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

/// One endpoint: its HTTP agent (connections kept alive), token and breaker. Shared by the
/// pool's workers.
pub struct Webhook {
    url: String,
    settings: WebhookSettings,
    agent: ureq::Agent,
    token: Mutex<CachedToken>,
    breaker: Breaker,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("url", &self.url).finish()
    }
}

#[derive(Default)]
struct CachedToken {
    value: Option<String>,
    /// File: its modification time when read; minted: when to mint again.
    file_modified: Option<SystemTime>,
    renew_at: Option<SystemTime>,
}

/// Whether `url` may be used: `https://`, or `http://` to a loopback host only.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!("{url:?} is neither https:// nor http://"));
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "{url:?}: plain http:// is allowed only to a loopback address; use https://"
        ))
    }
}

impl Webhook {
    pub fn new(url: &str, settings: WebhookSettings) -> Result<Webhook, String> {
        check_url(url)?;
        let roots = match &settings.ca_file {
            None => ureq::tls::RootCerts::WebPki,
            Some(path) => {
                let pem =
                    std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err(format!("ca_file {}: no certificate", path.display()));
                }
                ureq::tls::RootCerts::Specific(Arc::new(certs))
            }
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(crate::https::tls_config(roots))
            .https_only(false)
            .http_status_as_error(false)
            .timeout_global(Some(settings.timeout))
            .max_redirects(0)
            .build()
            .into();
        if let TokenSource::Minted { key_file, .. } = &settings.token {
            signing_key(key_file)?;
        }
        Ok(Webhook {
            url: url.to_string(),
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_cooldown),
            settings,
            agent,
            token: Mutex::new(CachedToken::default()),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Asks the endpoint (blocking, up to the timeout). A call the breaker refuses returns
    /// [`WebhookError::CircuitOpen`] at once.
    pub fn call(
        &self,
        request: &WebhookRequest,
        now: SystemTime,
    ) -> Result<Decision, WebhookError> {
        if let Err(failures) = self.breaker.admit(now) {
            return Err(WebhookError::CircuitOpen {
                url: self.url.clone(),
                failures,
            });
        }
        let result = self.call_endpoint(request, now);
        // A deny is an answer: only a call that gave none counts as a failure.
        self.breaker.record(result.is_ok(), now);
        result
    }

    fn call_endpoint(
        &self,
        request: &WebhookRequest,
        now: SystemTime,
    ) -> Result<Decision, WebhookError> {
        let url = &self.url;
        let req_err = |problem: String| WebhookError::Request {
            url: url.clone(),
            problem,
        };
        let body = serde_json::to_vec(request).map_err(|e| req_err(e.to_string()))?;
        let mut req = self
            .agent
            .post(url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json");
        if let Some(token) = self.bearer_token(now)? {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let mut resp = req.send(&body[..]).map_err(|e| req_err(e.to_string()))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(WebhookError::Status {
                url: url.clone(),
                status,
            });
        }
        let mut body = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(MAX_RESPONSE_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| req_err(e.to_string()))?;
        if body.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(WebhookError::Response(format!(
                "larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        parse_response(&body)
    }

    /// The bearer token: the file's content (re-read when the file changes), or a JWT minted
    /// again at half its lifetime.
    fn bearer_token(&self, now: SystemTime) -> Result<Option<String>, WebhookError> {
        let mut cached = self
            .token
            .lock()
            .map_err(|_| WebhookError::Token("token cache poisoned".into()))?;
        match &self.settings.token {
            TokenSource::None => Ok(None),
            TokenSource::File(path) => {
                let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                if cached.value.is_none() || modified != cached.file_modified {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| WebhookError::Token(format!("{}: {e}", path.display())))?;
                    let token = text.trim().to_string();
                    if token.is_empty() {
                        return Err(WebhookError::Token(format!("{} is empty", path.display())));
                    }
                    cached.value = Some(token);
                    cached.file_modified = modified;
                }
                Ok(cached.value.clone())
            }
            TokenSource::Minted {
                key_file,
                audience,
                issuer,
                lifetime,
            } => {
                if cached.value.is_none() || cached.renew_at.is_none_or(|at| now >= at) {
                    let token = mint(key_file, audience, issuer, *lifetime, now)
                        .map_err(WebhookError::Token)?;
                    cached.value = Some(token);
                    cached.renew_at = Some(now + *lifetime / 2);
                }
                Ok(cached.value.clone())
            }
        }
    }
}

/// The key of a minted token and its algorithm, from a PEM private key (RSA → RS256,
/// EC P-256 → ES256, Ed25519 → EdDSA).
fn signing_key(
    path: &std::path::Path,
) -> Result<(jsonwebtoken::EncodingKey, jsonwebtoken::Algorithm), String> {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let pem = std::fs::read(path).map_err(|e| format!("key_file {}: {e}", path.display()))?;
    if let Ok(k) = EncodingKey::from_rsa_pem(&pem) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = EncodingKey::from_ec_pem(&pem) {
        return Ok((k, Algorithm::ES256));
    }
    if let Ok(k) = EncodingKey::from_ed_pem(&pem) {
        return Ok((k, Algorithm::EdDSA));
    }
    Err(format!(
        "key_file {}: not an RSA, EC P-256 or Ed25519 private key in PEM",
        path.display()
    ))
}

fn mint(
    key_file: &std::path::Path,
    audience: &str,
    issuer: &str,
    lifetime: Duration,
    now: SystemTime,
) -> Result<String, String> {
    let (key, alg) = signing_key(key_file)?;
    let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({
        "aud": audience,
        "iss": issuer,
        "iat": iat,
        "nbf": iat,
        "exp": iat + lifetime.as_secs(),
    });
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key)
        .map_err(|e| format!("cannot sign the webhook token: {e}"))
}

/// A circuit breaker: after `threshold` failures in a row, calls are refused for `cooldown`;
/// then one probe goes through, and its outcome closes the breaker or opens it again.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: AtomicU32,
    /// Milliseconds since the epoch until which calls are refused (0: closed).
    open_until_ms: AtomicU64,
    probing: AtomicBool,
    /// Calls refused while open, for metrics and tests.
    pub refused: AtomicU64,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        }
    }

    fn ms(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// `Err(failures)`: refuse without calling.
    pub fn admit(&self, now: SystemTime) -> Result<(), u32> {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Ok(());
        }
        let failures = self.failures.load(Ordering::Relaxed);
        if Self::ms(now) < until {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(failures);
        }
        // Cool-down over: one probe; the others wait for its outcome.
        if self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            Ok(())
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Err(failures)
        }
    }

    pub fn record(&self, ok: bool, now: SystemTime) {
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            self.open_until_ms.store(0, Ordering::Release);
        } else {
            let n = self
                .failures
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if n >= self.threshold {
                let until = Self::ms(now)
                    .saturating_add(u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX));
                self.open_until_ms.store(until.max(1), Ordering::Release);
            }
        }
        self.probing.store(false, Ordering::Release);
    }

    pub fn is_open(&self, now: SystemTime) -> bool {
        Self::ms(now) < self.open_until_ms.load(Ordering::Acquire)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn allow_with_attributes_of_every_type() {
        let d = parse_response(
            br#"{"decision":"allow","clientAuthenticationName":"dev-1",
                "attributes":{"floor":3,"kind":"sensor","tags":["a","b"],
                              "big":4294967296,"f":1.5,"b":true,"mixed":["a",1],"o":{}},
                "expiration":1700000000}"#,
        )
        .unwrap();
        let Decision::Allow {
            name,
            attributes,
            expiration,
            mut ignored,
        } = d
        else {
            panic!()
        };
        assert_eq!(name, "dev-1");
        assert_eq!(attributes.get("floor"), Some(&AttrValue::Integer(3)));
        assert_eq!(
            attributes.get("kind"),
            Some(&AttrValue::String("sensor".into()))
        );
        assert_eq!(
            attributes.get("tags"),
            Some(&AttrValue::Array(vec![
                AttrValue::String("a".into()),
                AttrValue::String("b".into())
            ]))
        );
        ignored.sort();
        assert_eq!(ignored, ["b", "big", "f", "mixed", "o"]);
        assert_eq!(
            expiration,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }

    #[test]
    fn deny_and_malformed_answers() {
        assert_eq!(
            parse_response(br#"{"decision":"deny","errorReason":"revoked"}"#).unwrap(),
            Decision::Deny {
                reason: "revoked".into()
            }
        );
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"decision":"maybe"}"#,
            br#"{"decision":"allow"}"#,
            br#"{"decision":"allow","clientAuthenticationName":""}"#,
            br#"{"decision":"allow","clientAuthenticationName":7}"#,
            br#"{"decision":"allow","clientAuthenticationName":"x","attributes":[1]}"#,
            br#"{"decision":"allow","clientAuthenticationName":"x","expiration":"soon"}"#,
            br#"{"decision":"allow","clientAuthenticationName":"x","expiration":-5}"#,
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn request_json_omits_absent_fields_and_encodes_bytes() {
        let creds = crate::Credentials {
            client_id: "c1",
            username: Some("u"),
            password: Some(b"p\x00w"),
            auth_method: None,
            auth_data: None,
            peer_certificates: &[],
            v5: true,
        };
        let json = serde_json::to_string(&WebhookRequest::from_credentials(&creds)).unwrap();
        assert_eq!(
            json,
            r#"{"clientId":"c1","userName":"u","password":"cAB3"}"#
        );
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_url("https://auth.example.com/x").is_ok());
        assert!(check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_url("http://localhost/x").is_ok());
        assert!(check_url("http://[::1]:80/x").is_ok());
        assert!(check_url("http://10.0.0.1/x").is_err());
        assert!(check_url("http://example.com/x").is_err());
        assert!(check_url("ftp://127.0.0.1/").is_err());
    }

    #[test]
    fn a_minted_token_is_signed_with_the_key_and_renewed_at_half_its_lifetime() {
        let key = rcgen::KeyPair::generate().unwrap();
        let dir = std::env::temp_dir().join(format!("ringmq-webhook-mint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("signer.key");
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let hook = Webhook::new(
            "http://127.0.0.1:9/auth",
            WebhookSettings {
                token: TokenSource::Minted {
                    key_file,
                    audience: "https://hook.example".into(),
                    issuer: "ringmq-test".into(),
                    lifetime: Duration::from_secs(600),
                },
                ca_file: None,
                timeout: Duration::from_secs(1),
                breaker_failures: 5,
                breaker_cooldown: Duration::from_secs(1),
            },
        )
        .unwrap();
        let t0 = SystemTime::now();
        let token = hook.bearer_token(t0).unwrap().unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_audience(&["https://hook.example"]);
        v.set_issuer(&["ringmq-test"]);
        let dk = jsonwebtoken::DecodingKey::from_ec_pem(key.public_key_pem().as_bytes()).unwrap();
        let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &dk, &v)
            .unwrap()
            .claims;
        assert_eq!(
            claims["exp"].as_u64(),
            claims["iat"].as_u64().map(|i| i + 600)
        );
        // The same token until half its lifetime, then a new one.
        assert_eq!(
            hook.bearer_token(t0 + Duration::from_secs(200))
                .unwrap()
                .unwrap(),
            token
        );
        let later = hook
            .bearer_token(t0 + Duration::from_secs(301))
            .unwrap()
            .unwrap();
        assert_ne!(later, token);
        // A key file that is no key is refused when the webhook is made.
        let bad = dir.join("bad.key");
        std::fs::write(&bad, "not a key").unwrap();
        let err = Webhook::new(
            "http://127.0.0.1:9/auth",
            WebhookSettings {
                token: TokenSource::Minted {
                    key_file: bad,
                    audience: "a".into(),
                    issuer: "i".into(),
                    lifetime: Duration::from_secs(60),
                },
                ca_file: None,
                timeout: Duration::from_secs(1),
                breaker_failures: 5,
                breaker_cooldown: Duration::from_secs(1),
            },
        )
        .unwrap_err();
        assert!(err.contains("not an RSA, EC P-256 or Ed25519"), "{err}");
    }

    #[test]
    fn breaker_opens_after_failures_then_probes() {
        let b = Breaker::new(3, Duration::from_secs(10));
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        for _ in 0..3 {
            assert!(b.admit(t0).is_ok());
            b.record(false, t0);
        }
        assert_eq!(b.admit(t0 + Duration::from_secs(5)), Err(3));
        let later = t0 + Duration::from_secs(11);
        assert!(b.admit(later).is_ok(), "the probe");
        assert!(b.admit(later).is_err(), "only one probe at a time");
        b.record(false, later);
        assert!(
            b.admit(later + Duration::from_secs(1)).is_err(),
            "open again"
        );
        let much_later = later + Duration::from_secs(20);
        assert!(b.admit(much_later).is_ok());
        b.record(true, much_later);
        assert!(b.admit(much_later).is_ok() && b.admit(much_later).is_ok());
    }
}
