//! X.509 client-certificate authentication, the Event Grid way.
//!
//! The TLS layer has already checked that the client holds the leaf's private key; here the
//! presented chain is checked against the registry: the authentication name (the CONNECT
//! username, else the certificate fields listed in `alternativeAuthenticationNameSources`),
//! the registered client it names, and that client's validation scheme — a name in the
//! certificate that equals the authentication name and a chain to a registered CA
//! certificate, or a pinned SHA-256 thumbprint.
//!
//! Results are cached per shard ([`X509Cache`]) keyed by the chain, the snapshot version and
//! the username, so a reconnect storm costs one signature check per distinct device and
//! snapshot. Nothing here panics on a certificate or blocks.

mod chain;
mod client_ca;
mod names;
pub(crate) mod pem;

use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use rustls_pki_types::CertificateDer;

use crate::registry::{Client, ClientState, Registry, ValidationScheme};
use crate::{AuthError, ClientType, Credentials, Identity, Method};

pub use client_ca::{CertificateIdentity, ClientCa};

pub(crate) use chain::{Cert, check_validity, extensions, parse, verify_signature};
pub(crate) use names::{parse_thumbprint, rfc4514};

/// Default number of entries of a per-shard [`X509Cache`].
pub const CACHE_ENTRIES_DEFAULT: usize = 10_000;
/// How long a refusal stays cached (it is keyed by the snapshot version too, so a registry
/// change is seen at once).
const REFUSAL_CACHE_SECS: i64 = 300;

/// Per-shard cache of validation results (accepted identities and refusals).
#[derive(Debug)]
pub struct X509Cache {
    entries: HashMap<[u8; 32], Entry>,
    /// Insertion order, for FIFO eviction; may hold keys already gone.
    order: VecDeque<[u8; 32]>,
    capacity: usize,
    verifications: u64,
    hits: u64,
}

#[derive(Debug)]
struct Entry {
    result: Result<Identity, AuthError>,
    /// Unix seconds; the entry is not used at or after it.
    expires_at: i64,
}

impl Default for X509Cache {
    fn default() -> X509Cache {
        X509Cache::with_capacity(CACHE_ENTRIES_DEFAULT)
    }
}

impl X509Cache {
    /// A cache of at most `capacity` entries; 0 disables caching.
    pub fn with_capacity(capacity: usize) -> X509Cache {
        X509Cache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            verifications: 0,
            hits: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many validations ran (cache misses): each parses the chain and checks signatures.
    pub fn verifications(&self) -> u64 {
        self.verifications
    }

    /// How many authentications were answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    fn get(&mut self, key: &[u8; 32], now: i64) -> Option<Result<Identity, AuthError>> {
        let entry = self.entries.get(key)?;
        if entry.expires_at <= now {
            self.entries.remove(key);
            return None;
        }
        self.hits += 1;
        Some(entry.result.clone())
    }

    fn insert(
        &mut self,
        key: [u8; 32],
        result: Result<Identity, AuthError>,
        expires_at: i64,
        now: i64,
    ) {
        if self.capacity == 0 || expires_at <= now {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, e| e.expires_at > now);
        }
        while self.entries.len() >= self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&old);
        }
        if self.order.len() >= self.capacity.saturating_mul(2) {
            // Drop keys of entries already gone (expired, replaced) so `order` stays bounded.
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
        self.entries.insert(key, Entry { result, expires_at });
        self.order.push_back(key);
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

fn username<'a>(creds: &Credentials<'a>) -> Option<&'a str> {
    creds.username.filter(|u| !u.is_empty())
}

/// SHA-256 over the snapshot version, the username (it changes the authentication name) and
/// each presented certificate, length-prefixed.
fn cache_key(
    chain: &[CertificateDer<'_>],
    snapshot_version: u64,
    username: Option<&str>,
) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&snapshot_version.to_be_bytes());
    match username {
        Some(u) => {
            ctx.update(&[1]);
            ctx.update(&(u.len() as u64).to_be_bytes());
            ctx.update(u.as_bytes());
        }
        None => ctx.update(&[0]),
    }
    for cert in chain {
        ctx.update(&(cert.len() as u64).to_be_bytes());
        ctx.update(cert.as_ref());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// SHA-256 of a certificate's DER: the thumbprint `ThumbprintMatch` compares.
pub fn thumbprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, cert.as_ref()).as_ref());
    out
}

/// Authenticates `creds.peer_certificates` (leaf first) against the registry.
pub fn authenticate(
    reg: &Registry,
    creds: &Credentials<'_>,
    cache: &mut X509Cache,
    snapshot_version: u64,
    now: SystemTime,
) -> Result<Identity, AuthError> {
    let chain = creds.peer_certificates;
    let now = unix_secs(now);
    let user = username(creds);
    let key = cache_key(chain, snapshot_version, user);
    if let Some(hit) = cache.get(&key, now) {
        return hit;
    }
    cache.verifications += 1;
    let (result, expires_at) = validate(reg, chain, user, now);
    cache.insert(key, result.clone(), expires_at, now);
    result
}

/// Re-validates an existing session's certificate against a (new) registry, for the live
/// check after a reload: the client must still exist, be enabled, and its certificate pass
/// its validation scheme. Not cached.
pub fn still_valid(
    reg: &Registry,
    chain: &[CertificateDer<'_>],
    authentication_name: &str,
    now: SystemTime,
) -> Result<(), AuthError> {
    let now = unix_secs(now);
    let certs = parse_chain(chain)?;
    let client = find_client(reg, authentication_name)?;
    check_certificate(reg, client, &certs, now).map(|_| ())
}

/// Parses the presented chain; the leaf's problems are reported as such.
fn parse_chain<'a>(chain: &'a [CertificateDer<'_>]) -> Result<Vec<Cert<'a>>, AuthError> {
    if chain.is_empty() {
        return Err(AuthError::BadCredentials("no client certificate".into()));
    }
    if chain.len() > chain::CHAIN_LEN_MAX {
        return Err(AuthError::BadCredentials(format!(
            "certificate chain longer than {} certificates",
            chain::CHAIN_LEN_MAX
        )));
    }
    chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            parse(der.as_ref()).map_err(|e| {
                AuthError::BadCredentials(match i {
                    0 => format!("unparseable client certificate: {e}"),
                    _ => format!("unparseable certificate #{i} of the chain: {e}"),
                })
            })
        })
        .collect()
}

fn find_client<'r>(reg: &'r Registry, name: &str) -> Result<&'r Client, AuthError> {
    let client = lookup_client(reg, name)?;
    ensure_enabled(client)?;
    Ok(client)
}

fn lookup_client<'r>(reg: &'r Registry, name: &str) -> Result<&'r Client, AuthError> {
    reg.client_by_authentication_name(name)
        .ok_or_else(|| AuthError::BadCredentials(format!("unknown client {name:?}")))
}

/// A `Disabled` client is refused with 0x87 (valid credentials, not permitted).
fn ensure_enabled(client: &Client) -> Result<(), AuthError> {
    if client.state == ClientState::Disabled {
        return Err(AuthError::NotAuthorized(format!(
            "client {:?} is disabled",
            &*client.name
        )));
    }
    Ok(())
}

/// Validation without the cache: the result and until when it may be cached.
fn validate(
    reg: &Registry,
    chain: &[CertificateDer<'_>],
    user: Option<&str>,
    now: i64,
) -> (Result<Identity, AuthError>, i64) {
    let certs = match parse_chain(chain) {
        Ok(certs) => certs,
        Err(e) => return (Err(e), now.saturating_add(REFUSAL_CACHE_SECS)),
    };
    match identify(reg, &certs, user, now) {
        Ok((identity, valid_until)) => (Ok(identity), valid_until),
        Err(e) => {
            // A refusal may turn into an acceptance when a certificate becomes valid.
            let skew = reg.clock_skew_secs();
            let soonest_valid = certs
                .iter()
                .map(|c| c.not_before.saturating_sub(skew))
                .filter(|t| *t > now)
                .min()
                .unwrap_or(i64::MAX);
            (
                Err(e),
                now.saturating_add(REFUSAL_CACHE_SECS).min(soonest_valid),
            )
        }
    }
}

fn identify(
    reg: &Registry,
    certs: &[Cert<'_>],
    user: Option<&str>,
    now: i64,
) -> Result<(Identity, i64), AuthError> {
    let Some(leaf) = certs.first() else {
        return Err(AuthError::BadCredentials("no client certificate".into()));
    };
    let name = match user {
        Some(u) => u.to_owned(),
        None => names::name_from_sources(reg.name_sources(), &leaf.x).ok_or_else(|| {
            AuthError::BadCredentials(if reg.name_sources().is_empty() {
                "no authentication name: no username and no alternativeAuthenticationNameSources \
                 configured"
                    .into()
            } else {
                "no authentication name: no username, and no certificate field listed in \
                 alternativeAuthenticationNameSources has a value"
                    .into()
            })
        })?,
    };
    // Credentials first, state second: a certificate that does not verify is refused as bad
    // credentials (0x86) whatever the state of the client it names, so an unverified
    // certificate learns nothing about the registry (such as a client being disabled).
    let client = lookup_client(reg, &name)?;
    let valid_until = check_certificate(reg, client, certs, now)?;
    ensure_enabled(client)?;
    let identity = Identity {
        method: Method::Certificate,
        authentication_name: client.authentication_name.clone(),
        client_name: Some(client.name.clone()),
        attributes: client.attributes.clone(),
        client_type: ClientType::Device,
        ..Identity::anonymous("")
    };
    Ok((identity, valid_until))
}

/// Checks the certificate against the client's validation scheme; returns the earliest
/// notAfter that the acceptance depends on.
fn check_certificate(
    reg: &Registry,
    client: &Client,
    certs: &[Cert<'_>],
    now: i64,
) -> Result<i64, AuthError> {
    let Some(leaf) = certs.first() else {
        return Err(AuthError::BadCredentials("no client certificate".into()));
    };
    let Some(cca) = &client.certificate_authentication else {
        return Err(AuthError::BadCredentials(format!(
            "client {:?} has no clientCertificateAuthentication",
            &*client.name
        )));
    };
    let skew = reg.clock_skew_secs();
    if cca.validation_scheme == ValidationScheme::ThumbprintMatch {
        // A pinned certificate is trusted by itself: no chain, CA bit or key usage checks
        // (`openssl req -x509` makes self-signed CA:TRUE certificates), only its validity
        // and, when present, the clientAuth extended key usage.
        let print = thumbprint(&CertificateDer::from(leaf.x.as_raw()));
        if !cca.allowed_thumbprints.contains(&print) {
            return Err(AuthError::BadCredentials("thumbprint mismatch".into()));
        }
        check_validity(leaf, now, skew, "certificate").map_err(AuthError::BadCredentials)?;
        let ext = extensions(leaf).map_err(AuthError::BadCredentials)?;
        chain::check_client_auth(&ext)?;
        return Ok(leaf.not_after);
    }
    chain::check_leaf(leaf, now, skew)?;
    if !names::scheme_matches(cca.validation_scheme, &leaf.x, &client.authentication_name) {
        return Err(AuthError::BadCredentials(
            names::mismatch_reason(cca.validation_scheme).into(),
        ));
    }
    chain::validate_path(reg, certs, now, skew)
}
