//! The registry file: an Event Grid namespace's resources as JSON (docs/registry.md).
//! STUB — the X.509/registry helper replaces this file.

use crate::{RegistryError, authz, jwt};

/// A parsed, validated registry.
#[derive(Debug, Default)]
pub struct Registry {
    pub custom_jwt: Option<jwt::CustomJwt>,
    pub oauth2_jwt: Option<jwt::OAuth2Jwt>,
    pub policy: authz::Policy,
}

impl Registry {
    /// Whether a JWT in the CONNECT password is accepted (`acceptTokenInPassword`).
    pub fn accepts_token_in_password(&self) -> bool {
        self.custom_jwt
            .as_ref()
            .is_some_and(|c| c.accept_token_in_password)
    }

    /// Parses registry JSON; `warnings` collects ignored keys.
    pub fn parse(text: &str, warnings: &mut Vec<String>) -> Result<Registry, RegistryError> {
        let _ = (text, warnings);
        Err(RegistryError::new(
            "",
            "registry parsing is not implemented yet",
        ))
    }
}
