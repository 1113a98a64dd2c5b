//! The registry file: an Event Grid namespace's resources as JSON (docs/registry.md).
//!
//! [`Registry::parse`] checks everything a connect will rely on — certificates and CRLs
//! decode and verify, names are unique, values have the right type — so a bad file is a
//! startup (or reload) error naming the JSON path, never a surprise at CONNECT. Keys ringmq
//! does not use are ignored with a warning.

mod json;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde_json::Value;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::{AttrValue, Attributes, RegistryError, authz, jwt, x509};
use json::{Fields, index, join, kind};

/// Default tolerance on certificate notBefore/notAfter (clocks of devices drift).
pub const CLOCK_SKEW_DEFAULT: Duration = Duration::from_secs(60);
/// Largest registry file [`Registry::load`] reads.
pub const REGISTRY_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Most entries in `caCertificates`.
pub const CA_CERTIFICATES_MAX: usize = 64;
/// Most CRLs per CA certificate.
pub const CRLS_PER_CA_MAX: usize = 16;
/// Most clients.
pub const CLIENTS_MAX: usize = 1_000_000;
/// Longest client name, authentication name or CA certificate name, in characters.
pub const NAME_CHARS_MAX: usize = 128;
/// Most `allowedThumbprints` per client (Event Grid: 2, for rotation).
pub const THUMBPRINTS_MAX: usize = 2;
/// Most attributes per client, elements per attribute array, bytes per string attribute.
pub const ATTRIBUTES_MAX: usize = 32;
pub const ATTRIBUTE_ARRAY_MAX: usize = 64;
pub const ATTRIBUTE_STRING_BYTES_MAX: usize = 1024;
/// Range of `maxClientSessionsPerAuthenticationName` (Event Grid: 1–100).
pub const SESSIONS_PER_NAME_MAX: u32 = 100;

/// A certificate field the authentication name may come from when the CONNECT has no
/// username (`alternativeAuthenticationNameSources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSource {
    /// The subject's common name (CN).
    ClientCertificateSubject,
    /// The first SAN DNS name.
    ClientCertificateDns,
    /// The first SAN URI.
    ClientCertificateUri,
    /// The first SAN IP address, in textual form.
    ClientCertificateIp,
    /// The first SAN email (rfc822Name).
    ClientCertificateEmail,
}

impl NameSource {
    pub const ALL: [NameSource; 5] = [
        NameSource::ClientCertificateSubject,
        NameSource::ClientCertificateDns,
        NameSource::ClientCertificateUri,
        NameSource::ClientCertificateIp,
        NameSource::ClientCertificateEmail,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NameSource::ClientCertificateSubject => "ClientCertificateSubject",
            NameSource::ClientCertificateDns => "ClientCertificateDns",
            NameSource::ClientCertificateUri => "ClientCertificateUri",
            NameSource::ClientCertificateIp => "ClientCertificateIp",
            NameSource::ClientCertificateEmail => "ClientCertificateEmail",
        }
    }
}

/// How a client's certificate is checked (`clientCertificateAuthentication.validationScheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationScheme {
    /// The subject CN, or the whole subject DN in RFC 4514 form, equals the name.
    SubjectMatchesAuthenticationName,
    /// A SAN DNS name equals the name.
    DnsMatchesAuthenticationName,
    /// A SAN URI equals the name.
    UriMatchesAuthenticationName,
    /// A SAN IP address equals the name (compared as addresses).
    IpMatchesAuthenticationName,
    /// A SAN email equals the name.
    EmailMatchesAuthenticationName,
    /// The SHA-256 of the leaf is one of `allowedThumbprints`; no CA needed.
    ThumbprintMatch,
}

impl ValidationScheme {
    pub const ALL: [ValidationScheme; 6] = [
        ValidationScheme::SubjectMatchesAuthenticationName,
        ValidationScheme::DnsMatchesAuthenticationName,
        ValidationScheme::UriMatchesAuthenticationName,
        ValidationScheme::IpMatchesAuthenticationName,
        ValidationScheme::EmailMatchesAuthenticationName,
        ValidationScheme::ThumbprintMatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ValidationScheme::SubjectMatchesAuthenticationName => {
                "SubjectMatchesAuthenticationName"
            }
            ValidationScheme::DnsMatchesAuthenticationName => "DnsMatchesAuthenticationName",
            ValidationScheme::UriMatchesAuthenticationName => "UriMatchesAuthenticationName",
            ValidationScheme::IpMatchesAuthenticationName => "IpMatchesAuthenticationName",
            ValidationScheme::EmailMatchesAuthenticationName => "EmailMatchesAuthenticationName",
            ValidationScheme::ThumbprintMatch => "ThumbprintMatch",
        }
    }
}

/// `clients[].state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientState {
    #[default]
    Enabled,
    Disabled,
}

/// `clients[].clientCertificateAuthentication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateAuthentication {
    pub validation_scheme: ValidationScheme,
    /// SHA-256 thumbprints (at most [`THUMBPRINTS_MAX`]).
    pub allowed_thumbprints: Vec<[u8; 32]>,
}

/// A registered client (Event Grid `clients` resource).
#[derive(Debug, Clone)]
pub struct Client {
    /// The resource name.
    pub name: Arc<str>,
    /// The name it authenticates as (defaults to `name`), in the registered case.
    pub authentication_name: Arc<str>,
    pub state: ClientState,
    /// `None`: the client cannot authenticate with a certificate.
    pub certificate_authentication: Option<CertificateAuthentication>,
    pub attributes: Attributes,
}

/// A registered CA certificate: a trust anchor, root or intermediate.
#[derive(Debug, Clone)]
pub struct CaCertificate {
    pub name: Arc<str>,
    pub certificate: CertificateDer<'static>,
    /// The subject in RFC 4514 form, for logs.
    pub subject: String,
    subject_raw: Vec<u8>,
    /// How many CRLs were registered with it.
    pub crl_count: usize,
}

impl CaCertificate {
    pub(crate) fn subject_raw(&self) -> &[u8] {
        &self.subject_raw
    }
}

/// A parsed, validated registry.
#[derive(Debug)]
pub struct Registry {
    pub custom_jwt: Option<jwt::CustomJwt>,
    pub oauth2_jwt: Option<jwt::OAuth2Jwt>,
    /// `clientAuthentication.webHookAuthentication.endpointUrl` (see `webhook.rs`).
    pub webhook_url: Option<String>,
    pub policy: authz::Policy,
    name_sources: Vec<NameSource>,
    max_client_sessions_per_authentication_name: u32,
    ca_certificates: Vec<CaCertificate>,
    clients: Vec<Client>,
    /// Lowercase authentication name → index in `clients`.
    by_authentication_name: HashMap<String, usize>,
    /// Issuer DN (DER) → revoked serial numbers (DER INTEGER contents).
    revoked: HashMap<Vec<u8>, HashSet<Vec<u8>>>,
    clock_skew: Duration,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            custom_jwt: None,
            oauth2_jwt: None,
            webhook_url: None,
            policy: authz::Policy::default(),
            name_sources: Vec::new(),
            max_client_sessions_per_authentication_name: 1,
            ca_certificates: Vec::new(),
            clients: Vec::new(),
            by_authentication_name: HashMap::new(),
            revoked: HashMap::new(),
            clock_skew: CLOCK_SKEW_DEFAULT,
        }
    }
}

/// Why [`Registry::load`] failed: the file, and the JSON path and problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: larger than {REGISTRY_FILE_BYTES_MAX} bytes")]
    TooLarge { file: String },
    #[error("{file}: {error}")]
    Invalid { file: String, error: RegistryError },
    /// A problem at a line of a line-based file (the ACL file).
    #[error("{file}:{line}: {problem}")]
    Line {
        file: String,
        line: usize,
        problem: String,
    },
    /// A problem with a whole file (too large, a PEM bundle without certificates).
    #[error("{file}: {problem}")]
    File { file: String, problem: String },
}

impl Registry {
    /// Whether a JWT in the CONNECT password is accepted (`acceptTokenInPassword`).
    pub fn accepts_token_in_password(&self) -> bool {
        self.custom_jwt
            .as_ref()
            .is_some_and(|c| c.accept_token_in_password)
    }

    /// Reads and parses a registry file; returns the warnings (ignored keys, expired CA
    /// certificates) for the caller to log.
    pub fn load(path: &Path) -> Result<(Registry, Vec<String>), LoadError> {
        let file = path.display().to_string();
        let io = |source| LoadError::Io {
            file: file.clone(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > REGISTRY_FILE_BYTES_MAX {
            return Err(LoadError::TooLarge { file });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut warnings = Vec::new();
        let reg = Registry::parse(&text, &mut warnings)
            .map_err(|error| LoadError::Invalid { file, error })?;
        Ok((reg, warnings))
    }

    /// Parses registry JSON; `warnings` collects ignored keys and other non-fatal findings.
    pub fn parse(text: &str, warnings: &mut Vec<String>) -> Result<Registry, RegistryError> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| RegistryError::new("", format!("invalid JSON: {e}")))?;
        let Value::Object(map) = &root else {
            return Err(RegistryError::new(
                "",
                format!("expected an object, got {}", kind(&root)),
            ));
        };
        let mut reg = Registry::default();
        if let Some(ns) = map.get("namespace").filter(|v| !v.is_null()) {
            reg.parse_namespace(ns, warnings)?;
        }
        if let Some(cas) = map.get("caCertificates").filter(|v| !v.is_null()) {
            reg.parse_ca_certificates(cas, warnings)?;
        }
        if let Some(clients) = map.get("clients").filter(|v| !v.is_null()) {
            reg.parse_clients(clients, warnings)?;
        }
        const AUTHZ_KEYS: [&str; 4] = [
            "clientGroups",
            "topicSpaces",
            "permissionBindings",
            "roleAssignments",
        ];
        for key in map.keys() {
            let ours = matches!(key.as_str(), "namespace" | "caCertificates" | "clients");
            if !ours && !AUTHZ_KEYS.contains(&key.as_str()) {
                warnings.push(format!("{key}: ignored (not used by ringmq)"));
            }
        }
        reg.policy = authz::parse_policy(&root, warnings)?;
        Ok(reg)
    }

    /// `namespace`: the settings are read at its top level (the flat form) or, as Azure
    /// Resource Manager exports them, inside `topicSpacesConfiguration` (where the session
    /// limit is spelled `maximumClientSessionsPerAuthenticationName`) — not both.
    fn parse_namespace(
        &mut self,
        ns: &Value,
        warnings: &mut Vec<String>,
    ) -> Result<(), RegistryError> {
        let mut f = Fields::new(ns, "namespace")?;
        let direct = self.parse_namespace_settings(&mut f, warnings)?;
        if let Some((tsc, path)) = f.get_some("topicSpacesConfiguration") {
            let mut t = Fields::new(tsc, &path)?;
            if self.parse_namespace_settings(&mut t, warnings)? && direct {
                return Err(RegistryError::new(
                    path,
                    "client authentication settings are given both here and directly in                      namespace: give them once",
                ));
            }
            t.finish(warnings);
        }
        f.finish(warnings);
        Ok(())
    }

    /// Reads `clientAuthentication` and the session limit from one container; returns
    /// whether it held any of them.
    fn parse_namespace_settings(
        &mut self,
        f: &mut Fields<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<bool, RegistryError> {
        let mut found = false;
        if let Some((auth, path)) = f.get_some("clientAuthentication") {
            found = true;
            let mut a = Fields::new(auth, &path)?;
            if let Some((sources, path)) = a.array("alternativeAuthenticationNameSources")? {
                self.name_sources = parse_name_sources(sources, &path, warnings)?;
            }
            if let Some((v, path)) = a.get_some("customJwtAuthentication") {
                self.custom_jwt = Some(jwt::parse_custom_jwt(v, &path, warnings)?);
            }
            if let Some((v, path)) = a.get_some("oauth2JwtAuthentication") {
                self.oauth2_jwt = Some(jwt::parse_oauth2_jwt(v, &path, warnings)?);
            }
            if let Some((v, path)) = a.get_some("webHookAuthentication") {
                self.webhook_url =
                    Some(crate::webhook::parse_registry_webhook(v, &path, warnings)?);
            }
            a.finish(warnings);
        }
        let mut limit_seen = false;
        for key in [
            "maxClientSessionsPerAuthenticationName",
            "maximumClientSessionsPerAuthenticationName",
        ] {
            let Some((v, path)) = f.get_some(key) else {
                continue;
            };
            if limit_seen {
                return Err(RegistryError::new(path, "the session limit is given twice"));
            }
            limit_seen = true;
            found = true;
            let n = v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=SESSIONS_PER_NAME_MAX).contains(n))
                .ok_or_else(|| {
                    RegistryError::new(
                        path,
                        format!("expected an integer from 1 to {SESSIONS_PER_NAME_MAX}, got {v}"),
                    )
                })?;
            self.max_client_sessions_per_authentication_name = n;
        }
        Ok(found)
    }

    fn parse_ca_certificates(
        &mut self,
        cas: &Value,
        warnings: &mut Vec<String>,
    ) -> Result<(), RegistryError> {
        let list = as_array(cas, "caCertificates", CA_CERTIFICATES_MAX)?;
        let mut names = HashSet::new();
        for (i, v) in list.iter().enumerate() {
            let path = index("caCertificates", i);
            let mut f = Fields::new(v, &path)?;
            let (name, name_path) = required_name(&mut f, "name")?;
            if !names.insert(name.to_lowercase()) {
                return Err(RegistryError::new(
                    name_path,
                    format!("duplicate CA certificate name {name:?}"),
                ));
            }
            let Some((pem, pem_path)) = f.string("encodedCertificate")? else {
                return Err(RegistryError::new(
                    join(f.path(), "encodedCertificate"),
                    "missing",
                ));
            };
            let der = x509::pem::certificate(pem).map_err(|e| RegistryError::new(&pem_path, e))?;
            let mut ca = ca_certificate(name, der, &pem_path, warnings)?;
            if let Some((crls, crls_path)) = f.array("crls")? {
                if crls.len() > CRLS_PER_CA_MAX {
                    return Err(RegistryError::new(
                        crls_path,
                        format!("more than {CRLS_PER_CA_MAX} CRLs"),
                    ));
                }
                for (j, crl) in crls.iter().enumerate() {
                    let crl_path = index(&crls_path, j);
                    let Value::String(text) = crl else {
                        return Err(RegistryError::new(
                            crl_path,
                            format!("expected a string, got {}", kind(crl)),
                        ));
                    };
                    let serials =
                        crl_serials(&ca, text).map_err(|e| RegistryError::new(&crl_path, e))?;
                    self.revoked
                        .entry(ca.subject_raw.clone())
                        .or_default()
                        .extend(serials);
                }
                ca.crl_count = crls.len();
            }
            f.finish(warnings);
            self.ca_certificates.push(ca);
        }
        Ok(())
    }

    fn parse_clients(
        &mut self,
        clients: &Value,
        warnings: &mut Vec<String>,
    ) -> Result<(), RegistryError> {
        let list = as_array(clients, "clients", CLIENTS_MAX)?;
        let mut names = HashSet::with_capacity(list.len());
        self.clients.reserve(list.len());
        for (i, v) in list.iter().enumerate() {
            let path = index("clients", i);
            let mut f = Fields::new(v, &path)?;
            let (name, name_path) = required_name(&mut f, "name")?;
            if !names.insert(name.to_lowercase()) {
                return Err(RegistryError::new(
                    name_path,
                    format!("duplicate client name {name:?}"),
                ));
            }
            let (auth_name, auth_path) = match f.string("authenticationName")? {
                Some((s, p)) => (check_name(s, &p)?, p),
                None => (name, name_path),
            };
            let key = auth_name.to_lowercase();
            if let Some(other) = self.by_authentication_name.get(&key) {
                return Err(RegistryError::new(
                    auth_path,
                    format!(
                        "authentication name {auth_name:?} is already used by clients[{other}]"
                    ),
                ));
            }
            let client = parse_client(&mut f, name, auth_name, warnings)?;
            f.finish(warnings);
            self.by_authentication_name.insert(key, self.clients.len());
            self.clients.push(client);
        }
        Ok(())
    }

    /// The registered clients, in file order.
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// The client with this authentication name, ignoring case.
    pub fn client_by_authentication_name(&self, name: &str) -> Option<&Client> {
        let i = self.by_authentication_name.get(&name.to_lowercase())?;
        self.clients.get(*i)
    }

    /// The registered CA certificates, in file order.
    pub fn ca_certificates(&self) -> &[CaCertificate] {
        &self.ca_certificates
    }

    /// `alternativeAuthenticationNameSources`, in order.
    pub fn name_sources(&self) -> &[NameSource] {
        &self.name_sources
    }

    /// `maxClientSessionsPerAuthenticationName` (default 1), for the engine's session limit.
    pub fn max_client_sessions_per_authentication_name(&self) -> u32 {
        self.max_client_sessions_per_authentication_name
    }

    /// Tolerance on certificate notBefore/notAfter (default [`CLOCK_SKEW_DEFAULT`]). A
    /// broker setting, not part of the registry file: the engine sets it after loading.
    pub fn clock_skew(&self) -> Duration {
        self.clock_skew
    }

    pub fn set_clock_skew(&mut self, skew: Duration) {
        self.clock_skew = skew;
    }

    pub(crate) fn clock_skew_secs(&self) -> i64 {
        i64::try_from(self.clock_skew.as_secs()).unwrap_or(i64::MAX)
    }

    /// Whether a registered CRL of `issuer` lists `serial`.
    pub(crate) fn is_revoked(&self, issuer: &[u8], serial: &[u8]) -> bool {
        self.revoked.get(issuer).is_some_and(|s| s.contains(serial))
    }
}

fn as_array<'v>(v: &'v Value, path: &str, max: usize) -> Result<&'v Vec<Value>, RegistryError> {
    let Value::Array(list) = v else {
        return Err(RegistryError::new(
            path,
            format!("expected an array, got {}", kind(v)),
        ));
    };
    if list.len() > max {
        return Err(RegistryError::new(path, format!("more than {max} entries")));
    }
    Ok(list)
}

fn check_name<'s>(s: &'s str, path: &str) -> Result<&'s str, RegistryError> {
    if s.is_empty() {
        return Err(RegistryError::new(path, "must not be empty"));
    }
    if s.chars().count() > NAME_CHARS_MAX {
        return Err(RegistryError::new(
            path,
            format!("longer than {NAME_CHARS_MAX} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(RegistryError::new(path, "contains a control character"));
    }
    Ok(s)
}

fn required_name<'v>(
    f: &mut Fields<'v>,
    key: &'static str,
) -> Result<(&'v str, String), RegistryError> {
    match f.string(key)? {
        Some((s, path)) => Ok((check_name(s, &path)?, path)),
        None => Err(RegistryError::new(join(f.path(), key), "missing")),
    }
}

fn parse_name_sources(
    list: &[Value],
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<NameSource>, RegistryError> {
    let mut out = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let p = index(path, i);
        let Value::String(s) = v else {
            return Err(RegistryError::new(
                p,
                format!("expected a string, got {}", kind(v)),
            ));
        };
        let Some(source) = NameSource::ALL.into_iter().find(|n| n.as_str() == s) else {
            let names: Vec<_> = NameSource::ALL.iter().map(|n| n.as_str()).collect();
            return Err(RegistryError::new(
                p,
                format!("expected one of {}, got {s:?}", names.join(", ")),
            ));
        };
        if out.contains(&source) {
            warnings.push(format!("{p}: {s} is listed twice"));
            continue;
        }
        out.push(source);
    }
    Ok(out)
}

fn parse_client(
    f: &mut Fields<'_>,
    name: &str,
    auth_name: &str,
    warnings: &mut Vec<String>,
) -> Result<Client, RegistryError> {
    let state = match f.string("state")? {
        None => ClientState::Enabled,
        Some(("Enabled", _)) => ClientState::Enabled,
        Some(("Disabled", _)) => ClientState::Disabled,
        Some((other, path)) => {
            return Err(RegistryError::new(
                path,
                format!("expected \"Enabled\" or \"Disabled\", got {other:?}"),
            ));
        }
    };
    let certificate_authentication = match f.get_some("clientCertificateAuthentication") {
        None => None,
        Some((v, path)) => Some(parse_cert_auth(v, &path, warnings)?),
    };
    let attributes = match f.get_some("attributes") {
        None => Attributes::new(),
        Some((v, path)) => parse_attributes(v, &path)?,
    };
    Ok(Client {
        name: Arc::from(name),
        authentication_name: Arc::from(auth_name),
        state,
        certificate_authentication,
        attributes,
    })
}

fn parse_cert_auth(
    v: &Value,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<CertificateAuthentication, RegistryError> {
    let mut f = Fields::new(v, path)?;
    let Some((scheme, scheme_path)) = f.string("validationScheme")? else {
        return Err(RegistryError::new(
            join(path, "validationScheme"),
            "missing",
        ));
    };
    let Some(validation_scheme) = ValidationScheme::ALL
        .into_iter()
        .find(|s| s.as_str() == scheme)
    else {
        let names: Vec<_> = ValidationScheme::ALL.iter().map(|s| s.as_str()).collect();
        return Err(RegistryError::new(
            scheme_path,
            format!("expected one of {}, got {scheme:?}", names.join(", ")),
        ));
    };
    let mut allowed_thumbprints = Vec::new();
    if let Some((list, list_path)) = f.array("allowedThumbprints")? {
        if list.len() > THUMBPRINTS_MAX {
            return Err(RegistryError::new(
                list_path,
                format!("at most {THUMBPRINTS_MAX} thumbprints"),
            ));
        }
        for (i, t) in list.iter().enumerate() {
            let p = index(&list_path, i);
            let Value::String(s) = t else {
                return Err(RegistryError::new(
                    p,
                    format!("expected a string, got {}", kind(t)),
                ));
            };
            allowed_thumbprints
                .push(x509::parse_thumbprint(s).map_err(|e| RegistryError::new(&p, e))?);
        }
        if validation_scheme != ValidationScheme::ThumbprintMatch && !list.is_empty() {
            warnings.push(format!(
                "{list_path}: ignored (the validation scheme is {scheme})"
            ));
        }
    }
    if validation_scheme == ValidationScheme::ThumbprintMatch && allowed_thumbprints.is_empty() {
        return Err(RegistryError::new(
            join(path, "allowedThumbprints"),
            "ThumbprintMatch needs at least one thumbprint",
        ));
    }
    f.finish(warnings);
    Ok(CertificateAuthentication {
        validation_scheme,
        allowed_thumbprints,
    })
}

fn attr_scalar(v: &Value, path: &str) -> Result<AttrValue, RegistryError> {
    match v {
        Value::String(s) if s.len() > ATTRIBUTE_STRING_BYTES_MAX => Err(RegistryError::new(
            path,
            format!("longer than {ATTRIBUTE_STRING_BYTES_MAX} bytes"),
        )),
        Value::String(s) => Ok(AttrValue::String(s.clone())),
        Value::Bool(b) => Ok(AttrValue::Bool(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(AttrValue::Integer)
            .ok_or_else(|| RegistryError::new(path, format!("expected an integer, got {n}"))),
        other => Err(RegistryError::new(
            path,
            format!(
                "expected a string, integer, boolean or an array of those, got {}",
                kind(other)
            ),
        )),
    }
}

fn parse_attributes(v: &Value, path: &str) -> Result<Attributes, RegistryError> {
    let Value::Object(map) = v else {
        return Err(RegistryError::new(
            path,
            format!("expected an object, got {}", kind(v)),
        ));
    };
    if map.len() > ATTRIBUTES_MAX {
        return Err(RegistryError::new(
            path,
            format!("more than {ATTRIBUTES_MAX} attributes"),
        ));
    }
    let mut out = Attributes::new();
    for (key, value) in map {
        let p = join(path, key);
        let parsed = match value {
            Value::Array(items) => {
                if items.len() > ATTRIBUTE_ARRAY_MAX {
                    return Err(RegistryError::new(
                        p,
                        format!("more than {ATTRIBUTE_ARRAY_MAX} elements"),
                    ));
                }
                let mut list = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let ip = index(&p, i);
                    if item.is_array() {
                        return Err(RegistryError::new(
                            ip,
                            "nested arrays are not attribute values",
                        ));
                    }
                    list.push(attr_scalar(item, &ip)?);
                }
                AttrValue::Array(list)
            }
            scalar => attr_scalar(scalar, &p)?,
        };
        out.insert(key.clone(), parsed);
    }
    Ok(out)
}

/// Checks a CA certificate and indexes its subject.
fn ca_certificate(
    name: &str,
    der: CertificateDer<'static>,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<CaCertificate, RegistryError> {
    let cert = x509::parse(der.as_ref())
        .map_err(|e| RegistryError::new(path, format!("unparseable certificate: {e}")))?;
    let ext = x509::extensions(&cert).map_err(|e| RegistryError::new(path, e))?;
    if !matches!(ext.basic, Some((true, _))) {
        return Err(RegistryError::new(
            path,
            "not a CA certificate (basicConstraints cA is not set)",
        ));
    }
    if matches!(ext.key_usage, Some((_, false, _))) {
        return Err(RegistryError::new(path, "key usage lacks keyCertSign"));
    }
    let subject = x509::rfc4514(cert.x.subject());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if let Err(e) = x509::check_validity(&cert, now, 0, "CA certificate") {
        warnings.push(format!("{path}: {e} ({subject})"));
    }
    Ok(CaCertificate {
        name: Arc::from(name),
        subject_raw: cert.x.subject().as_raw().to_vec(),
        subject,
        certificate: der.clone(),
        crl_count: 0,
    })
}

/// Decodes a CRL of `ca`, checks it is `ca`'s and signed by it, and returns its serials.
fn crl_serials(ca: &CaCertificate, text: &str) -> Result<Vec<Vec<u8>>, String> {
    let der = x509::pem::crl(text)?;
    let (rest, crl) = CertificateRevocationList::from_der(der.as_ref())
        .map_err(|e| format!("unparseable CRL: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing data after the CRL".into());
    }
    if crl.issuer().as_raw() != ca.subject_raw() {
        return Err(format!(
            "CRL issuer {} is not this CA certificate ({})",
            x509::rfc4514(crl.issuer()),
            ca.subject
        ));
    }
    let ca_cert = x509::parse(ca.certificate.as_ref())?;
    let ext = x509::extensions(&ca_cert)?;
    if matches!(ext.key_usage, Some((_, _, false))) {
        return Err("the CA certificate's key usage lacks cRLSign".into());
    }
    x509::verify_signature(
        ca_cert.x.public_key(),
        &crl.signature_algorithm,
        &crl.signature_value.data,
        crl.tbs_cert_list.as_ref(),
    )
    .map_err(|e| format!("CRL signature does not verify with this CA certificate: {e}"))?;
    Ok(crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect())
}
