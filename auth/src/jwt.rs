//! JWT authentication. STUB — the JWT helper replaces this file.

use std::time::SystemTime;

use crate::registry::Registry;
use crate::{AuthError, Credentials, Identity, RegistryError};

/// Where the token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    CustomJwt,
    OAuth2Jwt,
    Password,
}

/// `namespace.clientAuthentication.customJwtAuthentication`, compiled.
#[derive(Debug, Default)]
pub struct CustomJwt {
    pub accept_token_in_password: bool,
}

/// `namespace.clientAuthentication.oauth2JwtAuthentication`, compiled.
#[derive(Debug, Default)]
pub struct OAuth2Jwt {}

pub fn parse_custom_jwt(
    v: &serde_json::Value,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<CustomJwt, RegistryError> {
    let _ = (v, warnings);
    Err(RegistryError::new(
        path,
        "customJwtAuthentication is not implemented yet",
    ))
}

pub fn parse_oauth2_jwt(
    v: &serde_json::Value,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<OAuth2Jwt, RegistryError> {
    let _ = (v, warnings);
    Err(RegistryError::new(
        path,
        "oauth2JwtAuthentication is not implemented yet",
    ))
}

/// Per-shard cache of verified tokens.
#[derive(Debug, Default)]
pub struct JwtCache {}

pub fn authenticate(
    reg: &Registry,
    source: TokenSource,
    token: &[u8],
    creds: &Credentials<'_>,
    cache: &mut JwtCache,
    now: SystemTime,
) -> Result<Identity, AuthError> {
    let _ = (reg, source, token, creds, cache, now);
    Err(AuthError::BadCredentials(
        "JWT authentication is not implemented yet".into(),
    ))
}
