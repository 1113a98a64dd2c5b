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

pub mod acl;
pub mod authz;
mod https;
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
    /// The Mosquitto-style files of `[auth]`: ACL file, client CA.
    pub files: AuthFiles,
}

/// Policy read from `[auth]` files rather than the registry (docs/authorization.md, "ACL
/// file"; docs/authentication.md, "CA-only client certificates").
#[derive(Debug, Default)]
pub struct AuthFiles {
    /// `acl_file`: checked for every client, in addition to the registry's permissions.
    pub acl: Option<acl::AclFile>,
    /// `client_ca`: certificates chaining to these CAs are accepted, named by one field.
    pub client_ca: Option<x509::ClientCa>,
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
            files: AuthFiles::default(),
        }
    }

    /// Whether anything restricts clients (a registry, an ACL file, a client CA): without,
    /// the core keeps no per-connection identity or permissions.
    pub fn restricts_clients(&self) -> bool {
        self.registry.is_some() || self.files.acl.is_some() || self.files.client_ca.is_some()
    }

    /// The user name the ACL file knows a client by (`user NAME`, `%u`): the authentication
    /// name of an authenticated client (certificate, token, password file, webhook); for a
    /// client admitted anonymously, its CONNECT user name, unchecked, only when nothing
    /// checks names (no registry, no client CA: Mosquitto without a password file), so an
    /// anonymous client cannot pick the section of a name another source vouches for;
    /// otherwise none, and the anonymous section applies. A source that checks user names
    /// (a password file) must refuse unknown names rather than admit them anonymously.
    pub fn acl_username<'a>(
        &self,
        identity: &'a Identity,
        connect_username: Option<&'a str>,
    ) -> Option<&'a str> {
        match identity.method {
            Method::Anonymous if self.registry.is_none() && self.files.client_ca.is_none() => {
                connect_username
            }
            Method::Anonymous => None,
            _ => Some(&identity.authentication_name),
        }
    }

    /// What a session may publish and subscribe to: [`Snapshot::permissions`], narrowed by
    /// the ACL file when one is configured (both must allow). `client_id` and
    /// `connect_username` are substituted for `%c` and `%u` once, here.
    pub fn session_permissions(
        &self,
        identity: &Identity,
        client_id: &str,
        connect_username: Option<&str>,
    ) -> authz::Permissions {
        let permissions = self.permissions(identity);
        match &self.files.acl {
            None => permissions,
            Some(acl) => permissions
                .with_acl(acl.session(client_id, self.acl_username(identity, connect_username))),
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
            if !creds.peer_certificates.is_empty() && self.files.client_ca.is_some() {
                return Some(Method::Certificate);
            }
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
            if let Some(ca) = &self.files.client_ca
                && !creds.peer_certificates.is_empty()
            {
                return ca.authenticate(
                    creds.peer_certificates,
                    &mut caches.x509,
                    self.version,
                    now,
                );
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
                let registered =
                    x509::authenticate(reg, creds, &mut caches.x509, self.version, now);
                match (registered, &self.files.client_ca) {
                    // A certificate the registry does not accept may still chain to a client
                    // CA; a registered client's refusal (disabled) stands.
                    (Err(AuthError::BadCredentials(why)), Some(ca)) => ca
                        .authenticate(creds.peer_certificates, &mut caches.x509, self.version, now)
                        .map_err(|e| match e {
                            AuthError::BadCredentials(ca_why) => AuthError::BadCredentials(
                                format!("registry: {why}; client_ca: {ca_why}"),
                            ),
                            other => other,
                        }),
                    (result, _) => result,
                }
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
            files: AuthFiles::default(),
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
    fn acl_user_name_and_both_must_allow() {
        let acl =
            acl::AclFile::parse("user alice\ntopic readwrite a/#\n", &mut Vec::new()).unwrap();
        let mut s = Snapshot {
            files: AuthFiles {
                acl: Some(acl),
                client_ca: None,
            },
            ..Snapshot::allow_all()
        };
        let anon = Identity::anonymous("c");
        // Nothing checks names: the CONNECT user name picks the section.
        let p = s.session_permissions(&anon, "c", Some("alice"));
        assert!(!p.is_allow_all());
        assert!(p.allow_publish(b"a/x") && !p.allow_publish(b"b"));
        assert!(
            !s.session_permissions(&anon, "c", None)
                .allow_publish(b"a/x")
        );
        // With a registry an unchecked name selects nothing; an authenticated one does.
        s.registry = Some(registry::Registry::default());
        assert_eq!(s.acl_username(&anon, Some("alice")), None);
        let mut cert = Identity::anonymous("");
        cert.method = Method::Certificate;
        cert.authentication_name = "alice".into();
        assert_eq!(s.acl_username(&cert, Some("bob")), Some("alice"));
        // Both must allow: the empty registry policy grants nothing.
        assert!(
            !s.session_permissions(&cert, "c", None)
                .allow_publish(b"a/x")
        );
        assert!(s.restricts_clients());
        assert!(!Snapshot::allow_all().restricts_clients());
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
            files: AuthFiles::default(),
        });
        assert_eq!(other.load().version, 2);
        assert!(!other.load().allow_anonymous);
    }
}
