//! Authentication and authorization in the shard core: CONNECT credentials, the will,
//! re-authentication (AUTH 0x19), token expiry, and re-checking live sessions when the
//! registry is reloaded. The policy itself is `ringmq_auth`; this is the protocol around it.

use std::time::{Instant, SystemTime};

use bytes::Bytes;
use ringmq_auth::{Credentials, Snapshot};
use ringmq_codec::{Auth, AuthProperties, Connect, Packet, ReasonCode, Str};
use tracing::{info, warn};

use crate::ids::ConnId;
use crate::ops::metrics::{AuthCache, AuthFailure, AuthMethod, ShardMetrics};
use crate::proto::authn_external::Authenticated;
use crate::proto::conn::ConnAuth;
use crate::proto::message::{compact_bytes, compact_str};
use crate::proto::{Failure, ShardCore, fail, write_packet};

/// The credentials a connection authenticated with, kept (compact) so a reload can check the
/// session again and a re-authentication can name the same method.
#[derive(Debug, Clone, Default)]
pub struct StoredCredentials {
    pub username: Option<Str>,
    pub password: Option<Bytes>,
    pub auth_method: Option<Str>,
    pub auth_data: Option<Bytes>,
}

impl StoredCredentials {
    pub(crate) fn from_connect(c: &Connect) -> StoredCredentials {
        StoredCredentials {
            username: c.username.as_ref().map(compact_str),
            password: c.password.as_ref().map(compact_bytes),
            auth_method: c.properties.authentication_method.as_ref().map(compact_str),
            auth_data: c.properties.authentication_data.as_ref().map(compact_bytes),
        }
    }
}

impl ShardCore {
    /// Authenticates CONNECT, compiles the client's permissions and authorizes its will
    /// [MQTT-3.1.2-?]: refusals carry the reason code of `AuthError`.
    pub(crate) fn authenticate_connect(
        &mut self,
        index: ConnId,
        connect: &Connect,
    ) -> Result<Authenticated, Failure> {
        if let Some(result) = self.authenticate_external(index, connect) {
            return result;
        }
        let snapshot = self.auth.load();
        let stored = StoredCredentials::from_connect(connect);
        let Some(conn) = self.conns.get_mut(index) else {
            bug!(
                self.metrics,
                "authenticate_connect: connection {index} is gone"
            );
            return Ok(Authenticated::Done);
        };
        let identity = authenticate(
            &snapshot,
            connect.client_id.as_str(),
            &stored,
            &conn.peer_certificates,
            connect.protocol.is_v5(),
            &mut self.auth_caches,
            true,
            &self.metrics,
            self.timers.wall(),
        )?;
        if !snapshot.restricts_clients() {
            // The embedded default: nothing restricts this client.
            conn.auth = None;
            return Ok(Authenticated::Done);
        }
        let permissions = snapshot.session_permissions(
            &identity,
            connect.client_id.as_str(),
            stored.username.as_ref().map(Str::as_str),
        );
        if let Some(will) = &connect.will
            && !permissions.allow_publish(will.topic.as_bytes())
        {
            return Err(fail(
                ReasonCode::NOT_AUTHORIZED,
                format!("will topic {:?} is not authorized", will.topic.as_str()),
            ));
        }
        info!(client_id = %connect.client_id, authentication_name = %identity.authentication_name, method = ?identity.method, "client authenticated");
        conn.auth = Some(Box::new(ConnAuth {
            identity,
            permissions,
            credentials: stored,
        }));
        Ok(Authenticated::Done)
    }

    /// AUTH from a client: re-authentication with the same method [MQTT-4.12.1-1].
    pub(crate) fn handle_auth(
        &mut self,
        index: ConnId,
        auth: Auth,
        now: Instant,
    ) -> Result<(), Failure> {
        let snapshot = self.auth.load();
        let Some(conn) = self.conns.get_mut(index) else {
            bug!(self.metrics, "handle_auth: connection {index} is gone");
            return Ok(());
        };
        let Some(current) = conn
            .auth
            .as_ref()
            .and_then(|a| a.credentials.auth_method.clone())
        else {
            return Err(fail(
                ReasonCode::PROTOCOL_ERROR,
                "[MQTT-4.12.0-7] AUTH without an Authentication Method in CONNECT",
            ));
        };
        if auth.reason_code != ReasonCode::RE_AUTHENTICATE {
            return Err(fail(
                ReasonCode::PROTOCOL_ERROR,
                format!(
                    "AUTH with reason {} is not expected: authentication is single-step",
                    auth.reason_code
                ),
            ));
        }
        if auth.properties.authentication_method.as_ref() != Some(&current) {
            return Err(fail(
                ReasonCode::PROTOCOL_ERROR,
                "[MQTT-4.12.1-1] re-authentication must use the Authentication Method of CONNECT",
            ));
        }
        let mut stored = conn
            .auth
            .as_ref()
            .map(|a| a.credentials.clone())
            .unwrap_or_default();
        stored.auth_data = auth
            .properties
            .authentication_data
            .as_ref()
            .map(compact_bytes);
        if let Some(result) = self.reauthenticate_external(index, &stored, now) {
            return result;
        }
        let Some(conn) = self.conns.get_mut(index) else {
            return Ok(());
        };
        let v5 = conn.version.is_v5();
        let client_id = conn.client_id.clone();
        let identity = match authenticate(
            &snapshot,
            client_id.as_str(),
            &stored,
            &conn.peer_certificates,
            v5,
            &mut self.auth_caches,
            true,
            &self.metrics,
            self.timers.wall(),
        ) {
            Ok(identity) => identity,
            Err(f) => {
                return Err(fail(
                    ReasonCode::NOT_AUTHORIZED,
                    format!("re-authentication failed: {}", f.message),
                ));
            }
        };
        // The session belongs to one authentication name: a token for another is refused.
        if let Some(owner) = &conn.owner
            && identity.authentication_name.to_lowercase() != **owner
        {
            return Err(fail(
                ReasonCode::NOT_AUTHORIZED,
                "re-authentication names another identity",
            ));
        }
        let permissions = snapshot.session_permissions(
            &identity,
            client_id.as_str(),
            stored.username.as_ref().map(Str::as_str),
        );
        info!(client_id = %client_id, authentication_name = %identity.authentication_name, "client re-authenticated");
        conn.auth = Some(Box::new(ConnAuth {
            identity,
            permissions,
            credentials: stored,
        }));
        let reply = Auth {
            reason_code: ReasonCode::SUCCESS,
            properties: AuthProperties {
                authentication_method: Some(current),
                ..Default::default()
            },
        };
        write_packet(conn, &Packet::Auth(reply), &self.metrics);
        self.drop_unpermitted_subscriptions(index, now);
        Ok(())
    }

    /// Disconnects clients whose token expired without re-authentication, and re-checks
    /// every connection when the registry changed (revoked certificates, removed or disabled
    /// clients, removed CAs, changed permissions).
    pub(crate) fn check_auth(&mut self, now: Instant) {
        let snapshot = self.auth.load();
        let reloaded = snapshot.version != self.auth_version;
        self.auth_version = snapshot.version;
        let wall = self.wall_clock();
        let mut expired = Vec::new();
        let mut recheck = Vec::new();
        for (index, conn) in self.conns.iter() {
            let Some(a) = &conn.auth else { continue };
            if !conn.is_connected() {
                continue;
            }
            if a.identity.expires_at.is_some_and(|at| at <= wall) {
                expired.push(index);
            } else if reloaded {
                recheck.push(index);
            }
        }
        for index in expired {
            self.fail_conn(
                index,
                fail(ReasonCode::NOT_AUTHORIZED, "token expired"),
                now,
            );
        }
        for index in recheck {
            if self.refresh_external_identity(index, &snapshot, now) {
                continue;
            }
            let Some(conn) = self.conns.get_mut(index) else {
                continue;
            };
            let Some(a) = conn.auth.as_ref() else {
                continue;
            };
            let stored = a.credentials.clone();
            let v5 = conn.version.is_v5();
            let client_id = conn.client_id.clone();
            match authenticate(
                &snapshot,
                client_id.as_str(),
                &stored,
                &conn.peer_certificates,
                v5,
                &mut self.auth_caches,
                // A re-check after a reload is not a login: only the caches are mirrored.
                false,
                &self.metrics,
                self.timers.wall(),
            ) {
                Ok(identity) => {
                    let permissions = snapshot.session_permissions(
                        &identity,
                        client_id.as_str(),
                        stored.username.as_ref().map(Str::as_str),
                    );
                    conn.auth = Some(Box::new(ConnAuth {
                        identity,
                        permissions,
                        credentials: stored,
                    }));
                    self.drop_unpermitted_subscriptions(index, now);
                }
                Err(f) => {
                    warn!(client_id = %client_id, "registry reload: session no longer authenticated: {}", f.message);
                    self.fail_conn(index, fail(ReasonCode::NOT_AUTHORIZED, f.message), now);
                }
            }
        }
    }

    /// Removes the session's subscriptions its permissions no longer allow, with a log line.
    pub(crate) fn drop_unpermitted_subscriptions(&mut self, index: ConnId, _now: Instant) {
        let Some(conn) = self.conns.get(index) else {
            bug!(
                self.metrics,
                "drop_unpermitted_subscriptions: connection {index} is gone"
            );
            return;
        };
        let client_id = conn.client_id.clone();
        let Some(sidx) = conn.session else { return };
        let Some(session) = self.sessions.get(sidx) else {
            bug!(
                self.metrics,
                "drop_unpermitted_subscriptions: session {sidx} is gone"
            );
            return;
        };
        let revoked: Vec<Bytes> = session
            .subscriptions
            .keys()
            .filter(|f| !conn.may_subscribe(crate::proto::route::inner_filter(f)))
            .cloned()
            .collect();
        for filter in revoked {
            warn!(client_id = %client_id, filter = %String::from_utf8_lossy(&filter), "subscription removed: no longer authorized");
            if let Some(s) = self.sessions.get_mut(sidx) {
                s.subscriptions.remove(&filter);
            }
            self.remove_local_sub(&filter, sidx);
        }
    }
}

/// Authenticates stored credentials; a `login` (CONNECT, re-authentication) is counted in
/// `metrics` by method and reason. The caches' hit and miss totals are mirrored either way.
#[allow(clippy::too_many_arguments)]
fn authenticate(
    snapshot: &Snapshot,
    client_id: &str,
    stored: &StoredCredentials,
    peer_certificates: &[rustls_pki_types::CertificateDer<'static>],
    v5: bool,
    caches: &mut ringmq_auth::Caches,
    login: bool,
    metrics: &ShardMetrics,
    wall: SystemTime,
) -> Result<ringmq_auth::Identity, Failure> {
    let creds = Credentials {
        client_id,
        username: stored.username.as_ref().map(Str::as_str),
        password: stored.password.as_deref(),
        auth_method: stored.auth_method.as_ref().map(Str::as_str),
        auth_data: stored.auth_data.as_deref(),
        peer_certificates,
        v5,
    };
    let result = snapshot.authenticate(&creds, caches, wall);
    metrics.auth_cache_totals(
        AuthCache::X509,
        caches.x509.hits(),
        caches.x509.verifications(),
    );
    let jwt = caches.jwt.stats();
    metrics.auth_cache_totals(AuthCache::Jwt, jwt.hits, jwt.misses);
    if login {
        match &result {
            Ok(identity) => metrics.auth_succeeded(identity.method.into()),
            Err(e) => {
                let method = snapshot
                    .attempted_method(&creds)
                    .map_or(AuthMethod::Unknown, AuthMethod::from);
                metrics.auth_failed(method, AuthFailure::from(e));
            }
        }
    }
    result.map_err(|e| fail(e.reason_code(), e.to_string()))
}
