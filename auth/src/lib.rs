//! ringmq-auth: who a client is and what it may touch.
//!
//! What it is for: deciding CONNECT, PUBLISH and SUBSCRIBE permissions from an immutable
//! registry [`Snapshot`], the Event Grid way: X.509 client certificates ([`x509`]), JWTs
//! ([`jwt`]), and client groups → topic spaces → permission bindings, RBAC roles and claim
//! rules ([`authz`]). The registry file is parsed by [`registry`].
//!
//! What it must never do: block a shard (no I/O on the connect path: JWKS keys are fetched by
//! a background thread), panic on client input or registry content, or take a lock on the hot
//! path — the snapshot is read through `arc-swap`, and verification caches are owned by each
//! shard ([`Caches`]), so nothing is shared mutably.

#![forbid(unsafe_code)]

pub mod authz;
pub mod identity;
pub mod jwt;
pub mod passwd;
pub mod registry;
pub mod webhook;
pub mod x509;

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

pub use identity::{AttrValue, Attributes, AuthError, ClientType, Credentials, Identity, Method};

/// A problem in the registry, located by its JSON path (`clients[3].state`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}`: {problem}")]
pub struct RegistryError {
    pub path: String,
    pub problem: String,
}

impl RegistryError {
    pub fn new(path: impl Into<String>, problem: impl Into<String>) -> RegistryError {
        RegistryError {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

/// The policy in force. Immutable: a reload builds a new one and swaps it in.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Incremented by every reload; caches keyed by it are invalidated.
    pub version: u64,
    /// Whether a client with no credentials may connect (the embedded default).
    pub allow_anonymous: bool,
    /// The registry; `None` in the embedded default (no authentication, everything allowed).
    pub registry: Option<registry::Registry>,
}

/// Per-shard verification caches (certificate chains, tokens): owned by one shard, so a
/// reconnect storm spread over the shards needs no locks.
#[derive(Debug, Default)]
pub struct Caches {
    pub x509: x509::X509Cache,
    pub jwt: jwt::JwtCache,
}

/// The supported enhanced-authentication methods.
pub const CUSTOM_JWT: &str = "CUSTOM-JWT";
pub const OAUTH2_JWT: &str = "OAUTH2-JWT";

impl Snapshot {
    /// The embedded default: anonymous access, everything permitted.
    pub fn allow_all() -> Snapshot {
        Snapshot {
            version: 1,
            allow_anonymous: true,
            registry: None,
        }
    }

    /// The method [`Snapshot::authenticate`] uses for `creds`, in its order: enhanced
    /// authentication (Authentication Method), then a client certificate, then a token in the
    /// password, then anonymous access. `None`: an Authentication Method ringmq does not
    /// support. For labelling refusals; the method of a success is in the [`Identity`].
    pub fn attempted_method(&self, creds: &Credentials<'_>) -> Option<Method> {
        if let Some(method) = creds.auth_method {
            return match method {
                CUSTOM_JWT => Some(Method::CustomJwt),
                OAUTH2_JWT => Some(Method::OAuth2Jwt),
                _ => None,
            };
        }
        let Some(reg) = &self.registry else {
            return Some(Method::Anonymous);
        };
        if !creds.peer_certificates.is_empty() {
            Some(Method::Certificate)
        } else if creds.password.is_some() && reg.accepts_token_in_password() {
            Some(Method::PasswordJwt)
        } else {
            Some(Method::Anonymous)
        }
    }

    /// Authenticates a CONNECT with the method [`Snapshot::attempted_method`] names.
    pub fn authenticate(
        &self,
        creds: &Credentials<'_>,
        caches: &mut Caches,
        now: SystemTime,
    ) -> Result<Identity, AuthError> {
        let Some(reg) = &self.registry else {
            if let Some(method) = creds.auth_method {
                return Err(AuthError::BadMethod(format!(
                    "authentication method {method:?} is not configured"
                )));
            }
            return if self.allow_anonymous {
                Ok(Identity::anonymous(creds.client_id))
            } else {
                Err(AuthError::NotAuthorized(
                    "anonymous access is disabled".into(),
                ))
            };
        };
        let jwt = |kind, token: Option<&[u8]>, caches: &mut Caches| {
            let token = token.unwrap_or_default();
            jwt::authenticate(reg, kind, token, creds, &mut caches.jwt, now)
        };
        match self.attempted_method(creds) {
            Some(Method::CustomJwt) => jwt(jwt::TokenSource::CustomJwt, creds.auth_data, caches),
            Some(Method::OAuth2Jwt) => jwt(jwt::TokenSource::OAuth2Jwt, creds.auth_data, caches),
            None => Err(AuthError::BadMethod(format!(
                "authentication method {:?} is not supported",
                creds.auth_method.unwrap_or_default()
            ))),
            Some(Method::Certificate) => {
                x509::authenticate(reg, creds, &mut caches.x509, self.version, now)
            }
            Some(Method::PasswordJwt) => jwt(jwt::TokenSource::Password, creds.password, caches),
            Some(Method::Anonymous) if self.allow_anonymous => {
                Ok(Identity::anonymous(creds.client_id))
            }
            // Decided off the shard (the engine's authentication pool), never here.
            Some(Method::Webhook | Method::PasswordFile) => Err(AuthError::NotAuthorized(
                "this source is decided off the shard".into(),
            )),
            Some(Method::Anonymous) => Err(AuthError::BadCredentials(
                "no client certificate, token or supported authentication method".into(),
            )),
        }
    }

    /// What `identity` may publish and subscribe to.
    pub fn permissions(&self, identity: &Identity) -> authz::Permissions {
        match &self.registry {
            None => authz::Permissions::allow_all(),
            Some(reg) => reg.policy.permissions(identity),
        }
    }
}

/// Shared handle to the current snapshot: cheap to clone, lock-free to read.
#[derive(Debug, Clone)]
pub struct SharedSnapshot(Arc<ArcSwap<Snapshot>>);

impl SharedSnapshot {
    pub fn new(snapshot: Snapshot) -> SharedSnapshot {
        SharedSnapshot(Arc::new(ArcSwap::from_pointee(snapshot)))
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    pub fn store(&self, snapshot: Snapshot) {
        self.0.store(Arc::new(snapshot));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn creds<'a>(client_id: &'a str, method: Option<&'a str>) -> Credentials<'a> {
        Credentials {
            client_id,
            username: None,
            password: None,
            auth_method: method,
            auth_data: None,
            peer_certificates: &[],
            v5: true,
        }
    }

    #[test]
    fn embedded_default_admits_anonymous_and_refuses_methods() {
        let s = Snapshot::allow_all();
        let mut caches = Caches::default();
        let id = s
            .authenticate(&creds("c1", None), &mut caches, SystemTime::now())
            .unwrap();
        assert_eq!(&*id.authentication_name, "c1");
        assert_eq!(id.method, Method::Anonymous);
        let e = s
            .authenticate(
                &creds("c1", Some("CUSTOM-JWT")),
                &mut caches,
                SystemTime::now(),
            )
            .unwrap_err();
        assert_eq!(
            e.reason_code(),
            ringmq_codec::ReasonCode::BAD_AUTHENTICATION_METHOD
        );
    }

    #[test]
    fn attempted_method_follows_the_authentication_order() {
        let s = Snapshot::allow_all();
        assert_eq!(
            s.attempted_method(&creds("c", Some(CUSTOM_JWT))),
            Some(Method::CustomJwt)
        );
        assert_eq!(
            s.attempted_method(&creds("c", Some(OAUTH2_JWT))),
            Some(Method::OAuth2Jwt)
        );
        assert_eq!(s.attempted_method(&creds("c", Some("SCRAM-SHA-1"))), None);
        assert_eq!(
            s.attempted_method(&creds("c", None)),
            Some(Method::Anonymous)
        );
    }

    #[test]
    fn anonymous_disabled_is_not_authorized() {
        let s = Snapshot {
            version: 1,
            allow_anonymous: false,
            registry: None,
        };
        let e = s
            .authenticate(
                &creds("c1", None),
                &mut Caches::default(),
                SystemTime::now(),
            )
            .unwrap_err();
        assert_eq!(e.reason_code(), ringmq_codec::ReasonCode::NOT_AUTHORIZED);
    }

    #[test]
    fn store_replaces_snapshot_seen_by_existing_handles() {
        let registry = SharedSnapshot::new(Snapshot::allow_all());
        let other = registry.clone();
        assert!(other.load().allow_anonymous);
        registry.store(Snapshot {
            version: 2,
            allow_anonymous: false,
            registry: None,
        });
        assert_eq!(other.load().version, 2);
        assert!(!other.load().allow_anonymous);
    }
}
