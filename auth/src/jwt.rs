//! JWT authentication: `CUSTOM-JWT` and `OAUTH2-JWT` enhanced authentication, and a token in
//! the CONNECT password (`acceptTokenInPassword`).
//!
//! What it is for: turning a signed token into an [`Identity`] — signature (HMAC secrets,
//! issuer certificates / public keys, JWKS keys), `iss`, `aud`, `exp`, `nbf`, configured claims —
//! and compiling the registry's `customJwtAuthentication` / `oauth2JwtAuthentication` sections.
//!
//! What it must never do: block a shard. JWKS documents are fetched by [`JwksFetcher`], a
//! background thread that publishes each key set through `arc-swap`; a shard that meets an
//! unknown `kid` only *asks* for an early refetch (rate-limited) and refuses the token now.
//! Verified tokens are cached per shard ([`JwtCache`]), so a reconnect with the same token skips
//! the signature check.
//!
//! Claim checks (`exp`, `nbf`, `iss`, `aud`) are done here, not by `jsonwebtoken`'s
//! `Validation`, because that one reads the system clock: here the caller's `now` decides, which
//! keeps the tests deterministic and the reason strings precise.

mod cache;
mod config;
mod jwks;
mod keys;
mod verify;

use std::sync::Arc;
use std::time::SystemTime;

use crate::registry::Registry;
use crate::{AuthError, Credentials, Identity, RegistryError};

pub use cache::{JwtCache, JwtCacheStats};
pub use jwks::{
    Jwks, JwksCa, JwksConfig, JwksError, JwksFetcher, MAX_JWKS_CA_CERTIFICATES, parse_ca_pem,
};
pub use keys::KeySet;

/// Largest token accepted, in bytes (in Authentication Data or the password).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// At most one early JWKS refetch per endpoint in this many seconds (unknown `kid`).
pub const EARLY_REFETCH_INTERVAL_SECS: u64 = 10;
/// The audience OAUTH2-JWT tokens must carry unless `audience` says otherwise.
pub const DEFAULT_OAUTH2_AUDIENCE: &str = "https://eventgrid.azure.net/";

/// Where the token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenSource {
    CustomJwt,
    OAuth2Jwt,
    Password,
}

/// `namespace.clientAuthentication.customJwtAuthentication`, compiled.
#[derive(Debug, Default)]
pub struct CustomJwt {
    pub accept_token_in_password: bool,
    pub(crate) verifier: config::Verifier,
}

impl CustomJwt {
    /// The JWKS endpoint, when `jwks` is configured.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.verifier.jwks.as_ref()
    }
}

/// `namespace.clientAuthentication.oauth2JwtAuthentication`, compiled.
#[derive(Debug, Default)]
pub struct OAuth2Jwt {
    pub(crate) verifier: config::Verifier,
}

impl OAuth2Jwt {
    /// The JWKS endpoint (the identity provider's signing keys).
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.verifier.jwks.as_ref()
    }
}

/// Parses `customJwtAuthentication` (`path` names it in errors and warnings).
pub fn parse_custom_jwt(
    v: &serde_json::Value,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<CustomJwt, RegistryError> {
    config::parse_custom(v, path, warnings)
}

/// Parses `oauth2JwtAuthentication` (`path` names it in errors and warnings).
pub fn parse_oauth2_jwt(
    v: &serde_json::Value,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<OAuth2Jwt, RegistryError> {
    config::parse_oauth2(v, path, warnings)
}

/// The JWKS endpoints of a registry, for [`JwksFetcher::start`].
pub fn jwks_endpoints(reg: &Registry) -> Vec<Arc<Jwks>> {
    jwks_endpoints_of(reg.custom_jwt.as_ref(), reg.oauth2_jwt.as_ref())
}

/// The JWKS endpoints of the two JWT sections.
pub fn jwks_endpoints_of(custom: Option<&CustomJwt>, oauth2: Option<&OAuth2Jwt>) -> Vec<Arc<Jwks>> {
    custom
        .and_then(CustomJwt::jwks)
        .into_iter()
        .chain(oauth2.and_then(OAuth2Jwt::jwks))
        .cloned()
        .collect()
}

/// On a registry reload: gives each JWKS endpoint of `new` the key set last fetched for the
/// same endpoint (same URL, headers and credentials) in `old`, so tokens keep verifying while
/// the new fetcher makes its first request. Returns how many endpoints were carried over.
pub fn carry_over_keys(old: &Registry, new: &Registry) -> usize {
    let old = jwks_endpoints(old);
    let mut n = 0;
    for endpoint in jwks_endpoints(new) {
        if let Some(prev) = old.iter().find(|o| o.config() == endpoint.config()) {
            endpoint.install(prev.keys());
            n += 1;
        }
    }
    n
}

/// Authenticates a token from `source` against the registry's JWT configuration.
///
/// The CONNECT user name is not used for authentication: it is only read by `${username}`
/// placeholders in `authClaims`.
pub fn authenticate(
    reg: &Registry,
    source: TokenSource,
    token: &[u8],
    creds: &Credentials<'_>,
    cache: &mut JwtCache,
    now: SystemTime,
) -> Result<Identity, AuthError> {
    authenticate_with(
        reg.custom_jwt.as_ref(),
        reg.oauth2_jwt.as_ref(),
        source,
        token,
        creds,
        cache,
        now,
    )
}

/// [`authenticate`] with the two JWT sections given directly (tests, tools).
pub fn authenticate_with(
    custom: Option<&CustomJwt>,
    oauth2: Option<&OAuth2Jwt>,
    source: TokenSource,
    token: &[u8],
    creds: &Credentials<'_>,
    cache: &mut JwtCache,
    now: SystemTime,
) -> Result<Identity, AuthError> {
    let verifier = match source {
        TokenSource::CustomJwt => custom.map(|c| &c.verifier).ok_or_else(|| {
            AuthError::BadMethod("CUSTOM-JWT is not configured (customJwtAuthentication)".into())
        })?,
        TokenSource::OAuth2Jwt => oauth2.map(|c| &c.verifier).ok_or_else(|| {
            AuthError::BadMethod("OAUTH2-JWT is not configured (oauth2JwtAuthentication)".into())
        })?,
        TokenSource::Password => custom
            .filter(|c| c.accept_token_in_password)
            .map(|c| &c.verifier)
            .ok_or_else(|| {
                AuthError::BadCredentials("a token in the password is not accepted".into())
            })?,
    };
    verify::authenticate(verifier, source, token, creds, cache, now)
}
