//! Authentication decided off the shard threads: the webhook and the Mosquitto password file.
//!
//! What it is for: a CONNECT (or an AUTH re-authentication) whose source needs slow work — a
//! webhook call, a PBKDF2 check not in the cache — is parked here. The core emits an
//! [`AuthRequest`] ([`ShardCore::poll_auth_request`]); the runtime runs it on its pool and
//! hands back the [`AuthOutcome`] as [`crate::proto::Input::AuthResult`]. Meanwhile the
//! connection stays in `ConnState::Claiming` (no claim is sent yet): its later packets are held
//! with the bound `Claiming` already has (MQTT 5.0 §3.1.4: a client may send packets before
//! CONNACK; they are not processed if the CONNECT is refused), the connect timeout applies,
//! and a refusal is a CONNACK. A result whose ticket is unknown (the connection closed, its
//! slot was reused, a newer AUTH superseded it) is dropped.
//!
//! Decisions are cached per shard (no locks): a password check that succeeded, keyed by a hash
//! of user name and password, until the password file is reloaded; a webhook decision, keyed
//! by a hash of every request field, until the earlier of its `expiration` and the TTL. A hit
//! is decided at once, on the shard, without a round trip.
//!
//! What it must never do: wait for the pool (nothing here blocks), let the parked CONNECTs
//! grow without a bound (`max_pending`: over it, CONNACK 0x88 at once), or keep a password in
//! the cache (only its hash).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ringmq_auth::{Credentials, Identity, Snapshot};
use ringmq_codec::{Auth, AuthProperties, Connect, Packet, ReasonCode, Str};
use rustc_hash::FxHashMap;
use rustls_pki_types::CertificateDer;
use tracing::{info, warn};

use crate::config::auth_sources::Source;
use crate::ids::ConnId;
use crate::ops::metrics::{AuthFailure, AuthMethod};
use crate::proto::authn::StoredCredentials;
use crate::proto::conn::{ConnAuth, ConnState};
use crate::proto::{Failure, ShardCore, fail, write_connack_refusal, write_packet};
use crate::shard::mesh::ConnToken;

/// What the core needs to know of the off-shard sources (the pool holds the rest).
#[derive(Debug, Clone)]
pub struct ExternalConfig {
    pub order: Vec<Source>,
    /// `[auth.webhook] url` is set (a registry namespace's endpoint is read per snapshot).
    pub webhook: bool,
    pub password_file: bool,
    /// CONNECTs and re-authentications parked on this shard at most.
    pub max_pending: usize,
    /// Decisions kept per shard.
    pub cache_capacity: usize,
    pub webhook_cache_ttl: Duration,
    /// Bumped by each password-file reload: older cached checks are void.
    pub password_generation: Arc<AtomicU64>,
}

/// A source run off the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExternalSource {
    Webhook,
    PasswordFile,
}

/// The credentials of a request, owned (they cross to a pool thread).
#[derive(Debug, Clone)]
pub struct OwnedCredentials {
    pub client_id: Str,
    pub stored: StoredCredentials,
    pub peer_certificates: Vec<CertificateDer<'static>>,
    pub v5: bool,
}

impl OwnedCredentials {
    pub fn credentials(&self) -> Credentials<'_> {
        let s = &self.stored;
        Credentials {
            client_id: self.client_id.as_str(),
            username: s.username.as_ref().map(Str::as_str),
            password: s.password.as_deref(),
            auth_method: s.auth_method.as_ref().map(Str::as_str),
            auth_data: s.auth_data.as_deref(),
            peer_certificates: &self.peer_certificates,
            v5: self.v5,
        }
    }
}

/// Slow work for the runtime's pool.
#[derive(Debug)]
pub struct AuthRequest {
    pub conn: ConnToken,
    /// Names this request; its result carries it back.
    pub ticket: u64,
    pub source: ExternalSource,
    pub credentials: OwnedCredentials,
    pub peer: SocketAddr,
}

/// What the pool decided.
#[derive(Debug, Clone)]
pub enum AuthOutcome {
    /// Authenticated: the identity, its attributes and expiry.
    Allow(Box<Identity>),
    /// The webhook denied: 0x87 Not authorized (3.1.1: 0x05).
    Deny(String),
    /// Unknown user or wrong password: 0x86 (3.1.1: 0x04).
    BadCredentials(String),
    /// No decision (timeout, endpoint down, queue full, malformed answer): 0x88 Server
    /// unavailable (3.1.1: 0x03).
    Unavailable(String),
}

impl AuthOutcome {
    fn failure(&self) -> Option<Failure> {
        match self {
            AuthOutcome::Allow(_) => None,
            AuthOutcome::Deny(why) => Some(fail(
                ReasonCode::NOT_AUTHORIZED,
                format!("webhook denied: {why}"),
            )),
            AuthOutcome::BadCredentials(why) => {
                Some(fail(ReasonCode::BAD_USER_NAME_OR_PASSWORD, why.clone()))
            }
            AuthOutcome::Unavailable(why) => {
                Some(fail(ReasonCode::SERVER_UNAVAILABLE, why.clone()))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Connect,
    Reauth,
}

#[derive(Debug)]
struct Pending {
    token: ConnToken,
    purpose: Purpose,
    source: ExternalSource,
    key: [u8; 32],
    /// Re-authentication: the credentials to keep once it succeeds.
    stored: Option<StoredCredentials>,
}

#[derive(Debug)]
struct Cached {
    outcome: AuthOutcome,
    valid_until: SystemTime,
    /// Password checks: the password-file generation they were made against.
    generation: u64,
}

/// The core's side of off-shard authentication. Private fields: only this file changes it.
#[derive(Debug, Default)]
pub(crate) struct External {
    config: Option<Arc<ExternalConfig>>,
    pending: FxHashMap<u64, Pending>,
    next_ticket: u64,
    requests: VecDeque<AuthRequest>,
    cache: FxHashMap<[u8; 32], Cached>,
    /// Decisions taken from the cache, and requests sent to the pool (tests, benches).
    pub hits: u64,
    pub misses: u64,
}

/// Whether authentication finished on the shard or waits for the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Authenticated {
    Done,
    Pending,
}

/// The off-shard source that decides `creds` in `order`, or `None`: the registry (or the
/// embedded default) decides on the shard.
pub fn route(
    cfg: &ExternalConfig,
    snapshot: &Snapshot,
    creds: &Credentials<'_>,
) -> Option<ExternalSource> {
    let registry_webhook = snapshot
        .registry
        .as_ref()
        .is_some_and(|r| r.webhook_url.is_some());
    for source in &cfg.order {
        match source {
            Source::Certificate => {
                if !creds.peer_certificates.is_empty() && snapshot.registry.is_some() {
                    return None;
                }
            }
            Source::Jwt => {
                if let Some(reg) = &snapshot.registry {
                    let method = matches!(
                        creds.auth_method,
                        Some(ringmq_auth::CUSTOM_JWT | ringmq_auth::OAUTH2_JWT)
                    );
                    if method || (creds.password.is_some() && reg.accepts_token_in_password()) {
                        return None;
                    }
                }
            }
            Source::Webhook => {
                if cfg.webhook || registry_webhook {
                    return Some(ExternalSource::Webhook);
                }
            }
            Source::PasswordFile => {
                if cfg.password_file && creds.username.is_some() {
                    return Some(ExternalSource::PasswordFile);
                }
            }
            Source::Anonymous => {
                if creds.username.is_none()
                    && creds.password.is_none()
                    && creds.auth_method.is_none()
                {
                    return None;
                }
            }
        }
    }
    None
}

/// The cache key of `creds` for `source`: SHA-256 of the fields the source decides on, each
/// prefixed by its length (the password never stays in memory, only this hash).
pub fn cache_key(source: ExternalSource, creds: &Credentials<'_>) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut field = |bytes: Option<&[u8]>| match bytes {
        None => ctx.update(&[0]),
        Some(b) => {
            ctx.update(&[1]);
            ctx.update(&(b.len() as u64).to_le_bytes());
            ctx.update(b);
        }
    };
    match source {
        ExternalSource::PasswordFile => {
            field(Some(b"password-file"));
            field(creds.username.map(str::as_bytes));
            field(creds.password);
        }
        ExternalSource::Webhook => {
            field(Some(b"webhook"));
            field(Some(creds.client_id.as_bytes()));
            field(creds.username.map(str::as_bytes));
            field(creds.password);
            field(creds.auth_method.map(str::as_bytes));
            field(creds.auth_data);
            for c in creds.peer_certificates {
                field(Some(c.as_ref()));
            }
        }
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

impl External {
    /// Authentications parked until the pool answers.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The cached decision for `key`, if still valid at `wall`.
    fn cached(
        &mut self,
        key: &[u8; 32],
        source: ExternalSource,
        wall: SystemTime,
    ) -> Option<AuthOutcome> {
        let cfg = self.config.as_ref()?;
        let generation = cfg.password_generation.load(Ordering::Acquire);
        let entry = self.cache.get(key)?;
        let valid = wall < entry.valid_until
            && (source == ExternalSource::Webhook || entry.generation == generation);
        if !valid {
            self.cache.remove(key);
            return None;
        }
        Some(entry.outcome.clone())
    }

    fn remember(
        &mut self,
        key: [u8; 32],
        source: ExternalSource,
        outcome: &AuthOutcome,
        wall: SystemTime,
    ) {
        let Some(cfg) = self.config.clone() else {
            return;
        };
        let valid_until = match (source, outcome) {
            // Only successful password checks are kept (a wrong password is checked again).
            (ExternalSource::PasswordFile, AuthOutcome::Allow(_)) => {
                wall + Duration::from_secs(24 * 3600)
            }
            (ExternalSource::Webhook, AuthOutcome::Allow(id)) => {
                let ttl = wall + cfg.webhook_cache_ttl;
                id.expires_at.map_or(ttl, |exp| exp.min(ttl))
            }
            (ExternalSource::Webhook, AuthOutcome::Deny(_)) => wall + cfg.webhook_cache_ttl,
            _ => return,
        };
        if valid_until <= wall || cfg.cache_capacity == 0 {
            return;
        }
        if self.cache.len() >= cfg.cache_capacity {
            self.cache.retain(|_, c| c.valid_until > wall);
            if self.cache.len() >= cfg.cache_capacity {
                // Bounded: beyond the capacity the cache starts over.
                self.cache.clear();
            }
        }
        let generation = cfg.password_generation.load(Ordering::Acquire);
        self.cache.insert(
            key,
            Cached {
                outcome: outcome.clone(),
                valid_until,
                generation,
            },
        );
    }
}

impl ShardCore {
    /// Enables the off-shard sources (the runtime does, when it runs a pool).
    pub fn set_external_auth(&mut self, config: Arc<ExternalConfig>) {
        self.external.config = Some(config);
    }

    /// The next request for the pool. The runtime submits it, or answers it at once with
    /// [`AuthOutcome::Unavailable`] when the pool's queue is full.
    pub fn poll_auth_request(&mut self) -> Option<AuthRequest> {
        self.external.requests.pop_front()
    }

    /// Parked CONNECTs and re-authentications, and cache hits and misses (tests, metrics).
    pub fn external_auth_counts(&self) -> (usize, u64, u64) {
        (
            self.external.pending.len(),
            self.external.hits,
            self.external.misses,
        )
    }

    /// CONNECT: when an off-shard source decides these credentials, decides from the cache
    /// or parks the CONNECT and emits a request; `None`: the registry path decides.
    pub(crate) fn authenticate_external(
        &mut self,
        index: ConnId,
        connect: &Connect,
    ) -> Option<Result<Authenticated, Failure>> {
        let cfg = self.external.config.clone()?;
        let snapshot = self.auth.load();
        let conn = self.conns.get(index)?;
        // Borrowed until an off-shard source is known to decide: the registry's path stays
        // free of the copies below.
        let creds = Credentials {
            client_id: connect.client_id.as_str(),
            username: connect.username.as_ref().map(Str::as_str),
            password: connect.password.as_deref(),
            auth_method: connect
                .properties
                .authentication_method
                .as_ref()
                .map(Str::as_str),
            auth_data: connect.properties.authentication_data.as_deref(),
            peer_certificates: &conn.peer_certificates,
            v5: connect.protocol.is_v5(),
        };
        let source = route(&cfg, &snapshot, &creds)?;
        let key = cache_key(source, &creds);
        let wall = self.wall_clock();
        if let Some(outcome) = self.external.cached(&key, source, wall) {
            self.external.hits += 1;
            let stored = StoredCredentials::from_connect(connect);
            return Some(
                self.accept_identity(index, connect, &snapshot, outcome, stored, source)
                    .map(|()| Authenticated::Done),
            );
        }
        let owned = OwnedCredentials {
            client_id: crate::proto::message::compact_str(&connect.client_id),
            stored: StoredCredentials::from_connect(connect),
            peer_certificates: conn.peer_certificates.clone(),
            v5: connect.protocol.is_v5(),
        };
        self.external.misses += 1;
        if self.external.pending.len() >= cfg.max_pending {
            return Some(Err(fail(
                ReasonCode::SERVER_UNAVAILABLE,
                "too many authentications in progress on this shard (auth.pool.max_pending_per_shard)",
            )));
        }
        let token = ConnToken {
            conn: index,
            serial: conn.serial,
        };
        let peer = conn.peer;
        self.submit(token, Purpose::Connect, source, key, owned, None, peer);
        Some(Ok(Authenticated::Pending))
    }

    #[allow(clippy::too_many_arguments)]
    fn submit(
        &mut self,
        token: ConnToken,
        purpose: Purpose,
        source: ExternalSource,
        key: [u8; 32],
        credentials: OwnedCredentials,
        stored: Option<StoredCredentials>,
        peer: SocketAddr,
    ) {
        self.external.next_ticket += 1;
        let ticket = self.external.next_ticket;
        self.external.pending.insert(
            ticket,
            Pending {
                token,
                purpose,
                source,
                key,
                stored,
            },
        );
        self.external.requests.push_back(AuthRequest {
            conn: token,
            ticket,
            source,
            credentials,
            peer,
        });
    }

    /// Sets the connection's identity and permissions from an outcome, checking the will.
    fn accept_identity(
        &mut self,
        index: ConnId,
        connect: &Connect,
        snapshot: &Snapshot,
        outcome: AuthOutcome,
        stored: StoredCredentials,
        source: ExternalSource,
    ) -> Result<(), Failure> {
        let method = match source {
            ExternalSource::Webhook => AuthMethod::Webhook,
            ExternalSource::PasswordFile => AuthMethod::PasswordFile,
        };
        let identity = match outcome {
            AuthOutcome::Allow(identity) => *identity,
            other => {
                let f = other
                    .failure()
                    .unwrap_or_else(|| fail(ReasonCode::UNSPECIFIED_ERROR, "?"));
                let why = if f.reason == ReasonCode::SERVER_UNAVAILABLE {
                    AuthFailure::Other
                } else if f.reason == ReasonCode::NOT_AUTHORIZED {
                    AuthFailure::NotAuthorized
                } else {
                    AuthFailure::BadCredentials
                };
                self.metrics.auth_failed(method, why);
                return Err(f);
            }
        };
        let permissions = snapshot.permissions(&identity);
        if let Some(will) = &connect.will
            && !permissions.allow_publish(will.topic.as_bytes())
        {
            return Err(fail(
                ReasonCode::NOT_AUTHORIZED,
                format!("will topic {:?} is not authorized", will.topic.as_str()),
            ));
        }
        self.metrics.auth_succeeded(method);
        info!(client_id = %connect.client_id, authentication_name = %identity.authentication_name, method = ?identity.method, "client authenticated");
        if let Some(conn) = self.conns.get_mut(index) {
            conn.auth = Some(Box::new(ConnAuth {
                identity,
                permissions,
                credentials: stored,
            }));
        }
        Ok(())
    }

    /// AUTH 0x19 of a connection the webhook authenticated: the webhook decides again (from
    /// the cache, or off the shard). `None`: not a webhook identity.
    pub(crate) fn reauthenticate_external(
        &mut self,
        index: ConnId,
        stored: &StoredCredentials,
        now: Instant,
    ) -> Option<Result<(), Failure>> {
        let cfg = self.external.config.clone()?;
        let conn = self.conns.get(index)?;
        let a = conn.auth.as_ref()?;
        if a.identity.method != ringmq_auth::Method::Webhook {
            return None;
        }
        let stored = stored.clone();
        let owned = OwnedCredentials {
            client_id: conn.client_id.clone(),
            stored: stored.clone(),
            peer_certificates: conn.peer_certificates.clone(),
            v5: conn.version.is_v5(),
        };
        let token = ConnToken {
            conn: index,
            serial: conn.serial,
        };
        let peer = conn.peer;
        let key = cache_key(ExternalSource::Webhook, &owned.credentials());
        if let Some(outcome) =
            self.external
                .cached(&key, ExternalSource::Webhook, self.wall_clock())
        {
            self.external.hits += 1;
            return Some(self.finish_reauth(index, outcome, stored, now));
        }
        self.external.misses += 1;
        // A newer AUTH supersedes one still waiting: its result will be dropped.
        self.external
            .pending
            .retain(|_, p| !(p.token == token && p.purpose == Purpose::Reauth));
        if self.external.pending.len() >= cfg.max_pending {
            return Some(Err(fail(
                ReasonCode::SERVER_UNAVAILABLE,
                "too many authentications in progress on this shard",
            )));
        }
        self.submit(
            token,
            Purpose::Reauth,
            ExternalSource::Webhook,
            key,
            owned,
            Some(stored),
            peer,
        );
        Some(Ok(()))
    }

    fn finish_reauth(
        &mut self,
        index: ConnId,
        outcome: AuthOutcome,
        stored: StoredCredentials,
        now: Instant,
    ) -> Result<(), Failure> {
        let snapshot = self.auth.load();
        let identity = match outcome {
            AuthOutcome::Allow(identity) => *identity,
            other => {
                let f = other
                    .failure()
                    .unwrap_or_else(|| fail(ReasonCode::UNSPECIFIED_ERROR, "?"));
                self.metrics
                    .auth_failed(AuthMethod::Webhook, AuthFailure::NotAuthorized);
                return Err(fail(
                    f.reason,
                    format!("re-authentication failed: {}", f.message),
                ));
            }
        };
        let Some(conn) = self.conns.get_mut(index) else {
            return Ok(());
        };
        if let Some(owner) = &conn.owner
            && identity.authentication_name.to_lowercase() != **owner
        {
            return Err(fail(
                ReasonCode::NOT_AUTHORIZED,
                "re-authentication names another identity",
            ));
        }
        self.metrics.auth_succeeded(AuthMethod::Webhook);
        info!(client_id = %conn.client_id, authentication_name = %identity.authentication_name, "client re-authenticated");
        let method = stored.auth_method.clone();
        let permissions = snapshot.permissions(&identity);
        conn.auth = Some(Box::new(ConnAuth {
            identity,
            permissions,
            credentials: stored,
        }));
        let reply = Auth {
            reason_code: ReasonCode::SUCCESS,
            properties: AuthProperties {
                authentication_method: method,
                ..Default::default()
            },
        };
        write_packet(conn, &Packet::Auth(reply), &self.metrics);
        self.drop_unpermitted_subscriptions(index, now);
        Ok(())
    }

    /// A result from the pool (see the module header).
    pub(super) fn handle_auth_result(&mut self, ticket: u64, outcome: AuthOutcome, now: Instant) {
        let Some(pending) = self.external.pending.remove(&ticket) else {
            return;
        };
        let wall = self.wall_clock();
        if let AuthOutcome::Allow(id) = &outcome
            && let Some(exp) = id.expires_at
            && exp <= wall
        {
            // Already expired: refused rather than let in until the next tick.
            let outcome = AuthOutcome::Deny("the webhook's expiration has passed".into());
            return self.apply_result(pending, outcome, now);
        }
        self.external
            .remember(pending.key, pending.source, &outcome, wall);
        self.apply_result(pending, outcome, now);
    }

    fn apply_result(&mut self, pending: Pending, outcome: AuthOutcome, now: Instant) {
        let index = pending.token.conn;
        if !self.conn_live(pending.token) {
            return;
        }
        match pending.purpose {
            Purpose::Reauth => {
                if !self.conns.get(index).is_some_and(|c| c.is_connected()) {
                    return;
                }
                let stored = pending.stored.unwrap_or_default();
                if let Err(f) = self.finish_reauth(index, outcome, stored, now) {
                    self.fail_conn(index, f, now);
                }
            }
            Purpose::Connect => self.resume_connect(index, pending.source, outcome, now),
        }
    }

    /// The parked CONNECT continues: authenticated, it claims its session; refused, it gets
    /// its CONNACK.
    fn resume_connect(
        &mut self,
        index: ConnId,
        source: ExternalSource,
        outcome: AuthOutcome,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        if !matches!(conn.state, ConnState::Claiming { .. }) || conn.session.is_some() {
            return;
        }
        let state = std::mem::replace(&mut conn.state, ConnState::AwaitConnect { since: now });
        let ConnState::Claiming {
            connect,
            assigned_id,
            since,
        } = state
        else {
            conn.state = state;
            return;
        };
        let snapshot = self.auth.load();
        let stored = StoredCredentials::from_connect(&connect);
        let client_id = connect.client_id.clone();
        let result = self
            .accept_identity(index, &connect, &snapshot, outcome, stored, source)
            .and_then(|()| self.claim_after_authentication(index, connect, assigned_id, since));
        if let Err(f) = result {
            let Some(conn) = self.conns.get_mut(index) else {
                return;
            };
            warn!(client_id = %client_id, peer = %conn.peer, reason = %f.reason, "CONNECT refused: {}", f.message);
            write_connack_refusal(conn, &f, &self.metrics);
            self.close_conn(index, false, now);
        }
    }

    /// A registry reload re-checks sessions: an identity from an off-shard source keeps its
    /// authentication (the pool decided it) and gets the new policy's permissions. `false`:
    /// not such an identity.
    pub(crate) fn refresh_external_identity(
        &mut self,
        index: ConnId,
        snapshot: &Snapshot,
        now: Instant,
    ) -> bool {
        let Some(a) = self.conns.get_mut(index).and_then(|c| c.auth.as_mut()) else {
            return false;
        };
        if !matches!(
            a.identity.method,
            ringmq_auth::Method::Webhook | ringmq_auth::Method::PasswordFile
        ) {
            return false;
        }
        a.permissions = snapshot.permissions(&a.identity);
        self.drop_unpermitted_subscriptions(index, now);
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn cfg(order: Vec<Source>) -> ExternalConfig {
        ExternalConfig {
            order,
            webhook: true,
            password_file: true,
            max_pending: 4,
            cache_capacity: 8,
            webhook_cache_ttl: Duration::from_secs(60),
            password_generation: Arc::default(),
        }
    }

    fn creds<'a>(user: Option<&'a str>, pw: Option<&'a [u8]>) -> Credentials<'a> {
        Credentials {
            client_id: "c",
            username: user,
            password: pw,
            auth_method: None,
            auth_data: None,
            peer_certificates: &[],
            v5: true,
        }
    }

    #[test]
    fn the_order_decides_which_source_goes_first() {
        let snapshot = Snapshot::allow_all();
        let default = cfg(crate::config::auth_sources::DEFAULT_ORDER.to_vec());
        let c = creds(Some("u"), Some(b"p"));
        assert_eq!(
            route(&default, &snapshot, &c),
            Some(ExternalSource::Webhook)
        );
        let pw_first = cfg(vec![Source::PasswordFile, Source::Webhook]);
        assert_eq!(
            route(&pw_first, &snapshot, &c),
            Some(ExternalSource::PasswordFile)
        );
        // Without a user name the password file does not apply.
        assert_eq!(
            route(&pw_first, &snapshot, &creds(None, None)),
            Some(ExternalSource::Webhook)
        );
        let anon_first = cfg(vec![Source::Anonymous, Source::PasswordFile]);
        assert_eq!(route(&anon_first, &snapshot, &creds(None, None)), None);
    }

    #[test]
    fn cache_keys_separate_sources_and_fields() {
        let a = cache_key(ExternalSource::PasswordFile, &creds(Some("u"), Some(b"p")));
        let b = cache_key(ExternalSource::PasswordFile, &creds(Some("u"), Some(b"q")));
        let c = cache_key(ExternalSource::Webhook, &creds(Some("u"), Some(b"p")));
        // Length prefixes: ("ab", "c") and ("a", "bc") differ.
        let d = cache_key(ExternalSource::PasswordFile, &creds(Some("up"), Some(b"")));
        assert!(a != b && a != c && a != d);
        assert_eq!(
            a,
            cache_key(ExternalSource::PasswordFile, &creds(Some("u"), Some(b"p")))
        );
    }
}
