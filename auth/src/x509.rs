//! X.509 client-certificate authentication. STUB — the X.509 helper replaces this file.

use std::time::SystemTime;

use crate::registry::Registry;
use crate::{AuthError, Credentials, Identity};

/// Per-shard cache of chain + name validation results.
#[derive(Debug, Default)]
pub struct X509Cache {}

/// Authenticates `creds.peer_certificates` against the registry.
pub fn authenticate(
    reg: &Registry,
    creds: &Credentials<'_>,
    cache: &mut X509Cache,
    snapshot_version: u64,
    now: SystemTime,
) -> Result<Identity, AuthError> {
    let _ = (reg, creds, cache, snapshot_version, now);
    Err(AuthError::BadCredentials(
        "certificate authentication is not implemented yet".into(),
    ))
}
