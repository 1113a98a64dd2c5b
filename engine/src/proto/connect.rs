//! CONNECT, sessions and takeover: the client id directory, claims, session moves between
//! shards, CONNACK and resumption. Claims and the directory are `claims.rs`.

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_codec::{
    ConnAck, ConnAckProperties, Connect, Disconnect, Packet, ProtocolVersion, ReasonCode, Str,
};
use tracing::{debug, info, warn};

use crate::ids::{ConnId, SessionId};
use crate::ops::metrics::Quota;
use crate::proto::authn_external::Authenticated;
use crate::proto::conn::{Conn, ConnState};
use crate::proto::session::{PendingWill, Session};
use crate::proto::{Failure, ShardCore, fail, over_quota, write_connack_refusal, write_packet};
use crate::shard::mesh::{ConnToken, ShardMsg};

impl ShardCore {
    // ---- CONNECT ----------------------------------------------------------------------------

    pub(crate) fn handle_connect(
        &mut self,
        index: ConnId,
        connect: Box<Connect>,
        now: Instant,
    ) -> Result<(), Failure> {
        if let Some(conn) = self.conns.get_mut(index)
            && let Some(quota) = conn.refusal
        {
            note_client_limits(conn, &connect);
            let f = connection_quota_refusal(quota);
            warn!(client_id = %connect.client_id, peer = %conn.peer, reason = %f.reason, quota = quota.label(), "CONNECT refused: {}", f.message);
            write_connack_refusal(conn, &f, &self.metrics);
            self.close_conn(index, false, now);
            return Ok(());
        }
        if let Err(f) = self.accept_connect(index, connect, now) {
            let Some(conn) = self.conns.get_mut(index) else {
                return Ok(());
            };
            warn!(client_id = %conn.client_id, peer = %conn.peer, reason = %f.reason, "CONNECT refused: {}", f.message);
            write_connack_refusal(conn, &f, &self.metrics);
            self.close_conn(index, false, now);
        }
        Ok(())
    }

    pub(crate) fn accept_connect(
        &mut self,
        index: ConnId,
        mut connect: Box<Connect>,
        now: Instant,
    ) -> Result<(), Failure> {
        let limits = self.limits.clone();
        let Some(conn) = self.conns.get_mut(index) else {
            return Ok(());
        };
        note_client_limits(conn, &connect);
        let v5 = connect.protocol.is_v5();

        if connect.client_id.len() > limits.max_client_id_len {
            return Err(fail(
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                "client identifier too long",
            ));
        }
        let mut assigned_id = false;
        if connect.client_id.is_empty() {
            if connect.protocol == ProtocolVersion::V3_1 || (!v5 && !connect.clean_start) {
                // [MQTT-3.1.3-8]: 3.1.1 empty id with CleanSession=0 is rejected with 0x02.
                return Err(fail(
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    "[MQTT-3.1.3-8] empty client identifier requires a clean session",
                ));
            }
            assigned_id = true;
        }
        if assigned_id {
            // Assigned before authentication, so the ACL file's `%c` is the id the session has.
            self.assigned_ids += 1;
            let serial = self.conns.get(index).map_or(0, |c| c.serial);
            let id = format!("ringmq-{}-{}-{}", self.id, serial, self.assigned_ids);
            connect.client_id =
                Str::copy_from(&id).map_err(|_| fail(ReasonCode::UNSPECIFIED_ERROR, "id"))?;
        }
        if self.authenticate_connect(index, &connect)? == Authenticated::Pending {
            // Parked until the pool answers (`authn_external.rs`): `Claiming` holds later
            // packets and keeps the connect timeout; no claim is sent yet.
            if let Some(conn) = self.conns.get_mut(index) {
                conn.state = ConnState::Claiming {
                    connect,
                    assigned_id,
                    since: now,
                };
            }
            return Ok(());
        }
        self.claim_after_authentication(index, connect, assigned_id, now)
    }

    /// An authenticated CONNECT claims its session: the client id (assigned if empty), the
    /// owner name, then the claim (or the name's session quota first).
    pub(crate) fn claim_after_authentication(
        &mut self,
        index: ConnId,
        connect: Box<Connect>,
        assigned_id: bool,
        now: Instant,
    ) -> Result<(), Failure> {
        let conn = self
            .conns
            .get_mut(index)
            .ok_or_else(|| fail(ReasonCode::UNSPECIFIED_ERROR, "gone"))?;
        let client_id = crate::proto::message::compact_str(&connect.client_id);
        conn.client_id = client_id.clone();
        conn.state = ConnState::Claiming {
            connect,
            assigned_id,
            since: now,
        };
        let token = ConnToken {
            conn: index,
            serial: conn.serial,
        };
        // The session belongs to the authentication name (compared without case).
        conn.owner = conn
            .auth
            .as_ref()
            .map(|a| Arc::from(a.identity.authentication_name.to_lowercase()));
        let owner = conn.owner.clone();
        let limit = self
            .auth
            .load()
            .registry
            .as_ref()
            .map(|r| r.max_client_sessions_per_authentication_name());
        match (owner, limit) {
            (Some(name), Some(limit)) => {
                let to = self.directory_shard(name.as_bytes());
                let shard = self.id;
                self.send(
                    to,
                    ShardMsg::NameAcquire {
                        name,
                        client_id,
                        shard,
                        token,
                        limit,
                    },
                );
            }
            _ => self.send_claim(index),
        }
        Ok(())
    }

    /// Takes the session of `client_id` off this shard: closes its connection with 0x8E and
    /// removes its subscriptions here.
    pub(crate) fn take_session(&mut self, client_id: &Str, now: Instant) -> Option<Box<Session>> {
        let sidx = *self.by_client_id.get(client_id.as_bytes())?;
        self.kick_session_conn(sidx, now);
        // Its interests stay advertised while this shard forwards for it.
        self.forwarding
            .begin_move(now + crate::proto::forward::FORWARD_GRACE);
        let session = self.remove_session(sidx);
        self.forwarding.end_move();
        let mut session = session?;
        session.expires_at = None;
        session.conn = None;
        session.moved_from = Some(self.id);
        Some(Box::new(session))
    }

    /// Session taken over [MQTT-3.1.4-3]: DISCONNECT 0x8E to the old connection (v5).
    pub(crate) fn kick_session_conn(&mut self, sidx: SessionId, now: Instant) {
        let Some(cidx) = self.sessions.get(sidx).and_then(|s| s.conn) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(cidx) else {
            return;
        };
        info!(client_id = %conn.client_id, "session taken over");
        if conn.version.is_v5() {
            let d = Disconnect {
                reason_code: ReasonCode::SESSION_TAKEN_OVER,
                properties: Default::default(),
            };
            write_packet(conn, &Packet::Disconnect(d), &self.metrics);
        }
        // The session does not end: it passes to the new connection. Detach it first so
        // closing the old connection neither expires nor releases it.
        conn.session = None;
        let will = conn.will.take();
        self.close_conn(cidx, false, now);
        let Some(session) = self.sessions.get_mut(sidx) else {
            return;
        };
        session.conn = None;
        // The old connection's will: published now, or after its delay unless the new
        // connection cancels it [MQTT-3.1.3-9]; a clean start ends the session and publishes
        // it (complete_connect).
        if let Some(will) = will {
            match will.properties.will_delay_secs.unwrap_or(0) {
                0 => self.publish_will(*will, now),
                delay => {
                    let publish_at = now + Duration::from_secs(u64::from(delay));
                    session.pending_will = Some(PendingWill { will, publish_at });
                }
            }
        }
    }

    /// Removes a session and its subscriptions from this shard (not from the directory).
    pub(crate) fn remove_session(&mut self, sidx: SessionId) -> Option<Session> {
        let filters: Vec<Bytes> = self
            .sessions
            .get(sidx)?
            .subscriptions
            .keys()
            .cloned()
            .collect();
        for f in filters {
            self.remove_local_sub(&f, sidx);
        }
        let session = self.sessions.try_remove(sidx)?;
        self.by_client_id.remove(session.client_id.as_bytes());
        Some(session)
    }

    /// The session ends: its pending will is published [MQTT-3.1.3-9], state dropped, the
    /// directory told.
    pub(crate) fn end_session(&mut self, sidx: SessionId, now: Instant) {
        let Some(mut session) = self.remove_session(sidx) else {
            return;
        };
        self.durable_session_removed(&session);
        self.forwarding.session_gone(&session.client_id);
        if let Some(p) = session.pending_will.take() {
            self.publish_will(*p.will, now);
        }
        let claim = session.claim;
        let owner = session.owner.clone();
        self.release_all(session.client_id, claim, owner);
    }

    /// The claim is answered: `moved` is the previous session (from another shard), or the
    /// session is already here (`local`).
    pub(crate) fn handle_session_ready(
        &mut self,
        client_id: Str,
        token: ConnToken,
        moved: Option<Box<Session>>,
        local: bool,
        owner: Option<Arc<str>>,
        now: Instant,
    ) {
        let mut resolved = self.resolve_pending_claim(&client_id, token);
        let arrived = moved.is_some();
        // The session is here now: a forwarder left by an earlier stay points away from it.
        // Kept, it made a cycle with the forwarder the session's last shard left for here,
        // and a late message bounced between the two until the grace ran out. A session that
        // moved here keeps its claim's watermark for the forwarded copies to come.
        // (Without the claim's own watermark, today's: forwarded copies it would have dropped
        // are delivered — a duplicate at worst, never a loss.)
        let watermark = arrived.then(|| {
            resolved
                .as_ref()
                .map_or_else(|| self.forwarding.watermark(), |r| r.watermark.clone())
        });
        self.install_claimed_session(client_id.clone(), token, moved, local, owner, now);
        // (A moved session whose new connection went away and that had no expiry ends here.)
        let here = self.by_client_id.contains_key(client_id.as_bytes());
        self.forwarding
            .session_arrived(&client_id, watermark.filter(|_| here));
        if arrived {
            let buffered = resolved
                .as_ref()
                .map(|r| self.claim_log_since(r.log_from))
                .unwrap_or_default();
            if let Some(&sidx) = self.by_client_id.get(client_id.as_bytes())
                && !buffered.is_empty()
            {
                self.replay_for_arrived(sidx, buffered, now);
            }
        }
        // Copies forwarded here while the session was on its way.
        let forwarded = resolved
            .as_mut()
            .map(|r| std::mem::take(&mut r.forwarded))
            .unwrap_or_default();
        if !forwarded.is_empty() {
            match self.by_client_id.get(client_id.as_bytes()).copied() {
                Some(sidx) => {
                    for out in forwarded {
                        self.deliver_forwarded(sidx, out, now);
                    }
                }
                None => self.stats.dropped_no_session += forwarded.len() as u64,
            }
        }
        // A newer claim arrived while this one was in flight: this connection is taken over
        // right after it was established (DISCONNECT 0x8E), and the session moves on.
        self.after_claim(client_id, resolved, now);
    }

    pub(super) fn install_claimed_session(
        &mut self,
        client_id: Str,
        token: ConnToken,
        moved: Option<Box<Session>>,
        local: bool,
        owner: Option<Arc<str>>,
        now: Instant,
    ) {
        if local && let Some(&sidx) = self.by_client_id.get(client_id.as_bytes()) {
            self.kick_session_conn(sidx, now);
        }
        let claiming = self.conn_live(token)
            && matches!(
                self.conns.get(token.conn).map(|c| &c.state),
                Some(ConnState::Claiming { .. })
            );
        if !claiming {
            // The new connection went away meanwhile: keep a moved session as offline state.
            if let Some(mut session) = moved {
                if session.expiry_secs == 0 {
                    self.release_all(client_id, token, owner.clone());
                } else {
                    session.expires_at =
                        Some(now + Duration::from_secs(u64::from(session.expiry_secs)));
                    session.claim = token;
                    self.insert_session(*session);
                }
            } else if local {
                // The directory now names this claim; the session stays here, offline.
                match self.by_client_id.get(client_id.as_bytes()).copied() {
                    Some(sidx) => {
                        if let Some(s) = self.sessions.get_mut(sidx) {
                            s.claim = token;
                            if s.conn.is_none() && s.expires_at.is_none() {
                                s.expires_at =
                                    Some(now + Duration::from_secs(u64::from(s.expiry_secs)));
                            }
                        }
                    }
                    None => self.release_all(client_id, token, owner.clone()),
                }
            } else {
                self.release_all(client_id, token, owner.clone());
            }
            return;
        }
        let index = token.conn;
        if let Some(session) = moved {
            self.insert_session(*session);
        }
        self.complete_connect(index, now);
    }

    pub(crate) fn insert_session(&mut self, session: Session) -> SessionId {
        let subs: Vec<(Bytes, crate::proto::session::SubRecord)> = session
            .subscriptions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let key = session.client_id.as_bytes_shared().clone();
        let moved_durable = session.durable;
        let moved_from = session.moved_from;
        let sidx = self.sessions.insert(session);
        self.by_client_id.insert(key, sidx);
        for (filter, rec) in subs {
            self.add_local_sub(&filter, sidx, rec.options, rec.id);
        }
        if let Some(s) = self.sessions.get_mut(sidx) {
            s.moved_from = None;
        }
        if moved_durable && self.is_durable() {
            // A persistent session that moved here: its image in this shard's log, with a
            // newer generation than the copy in the log of the shard it left, which removes
            // its copy once this one is durable.
            self.durable_session_changed(sidx, true);
            if let Some(from) = moved_from {
                self.durable_settle_after_move(sidx, from);
            }
        }
        sidx
    }

    /// Finishes CONNECT once the session is on this shard: CONNACK, then in-flight
    /// redelivery and queued messages [MQTT-4.4.0-1].
    pub(crate) fn complete_connect(&mut self, index: ConnId, now: Instant) {
        let limits = self.limits.clone();
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        let state = std::mem::replace(&mut conn.state, ConnState::Connected);
        let ConnState::Claiming {
            connect,
            assigned_id,
            ..
        } = state
        else {
            conn.state = state;
            return;
        };
        let connect = *connect;
        let v5 = connect.protocol.is_v5();
        let props = &connect.properties;
        let requested_expiry = if v5 {
            props.session_expiry_secs.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            u32::MAX
        };
        let expiry = requested_expiry.min(limits.max_session_expiry_secs);
        conn.connect_expiry_zero = requested_expiry == 0;
        conn.keep_alive_secs = connect.keep_alive_secs;
        let server_keep_alive = (connect.keep_alive_secs > limits.max_keep_alive_secs
            || (connect.keep_alive_secs == 0 && limits.max_keep_alive_secs < u16::MAX))
            .then_some(limits.max_keep_alive_secs);
        if let Some(ka) = server_keep_alive {
            conn.keep_alive_secs = ka;
        }
        let client_rm = props.receive_maximum.map_or(u16::MAX, |m| m.get());
        // APPLICATION clients (a token's client type) get the larger window and queues.
        let application = conn
            .auth
            .as_ref()
            .is_some_and(|a| a.identity.client_type == ringmq_auth::ClientType::Application);
        let (max_inflight, max_queued_messages, max_queued_bytes) = if application {
            let a = &limits.application;
            (a.max_inflight, a.max_queued_messages, a.max_queued_bytes)
        } else {
            (
                limits.max_inflight,
                limits.max_queued_messages,
                limits.max_queued_bytes,
            )
        };
        conn.window = client_rm.min(max_inflight);
        conn.client_alias_max = props
            .topic_alias_maximum
            .unwrap_or(0)
            .min(limits.topic_alias_maximum.max(16));
        conn.request_problem_info = props.request_problem_information.unwrap_or(true);
        conn.will = connect
            .will
            .as_ref()
            .map(|w| Box::new(crate::proto::message::compact_will(w)));
        let client_id = conn.client_id.clone();

        // Resume or create the session.
        let existing = self.by_client_id.get(client_id.as_bytes()).copied();
        let mut session_present = false;
        let sidx = match existing {
            Some(sidx) if !connect.clean_start => {
                session_present = true;
                if let Some(s) = self.sessions.get_mut(sidx) {
                    // A new connection cancels a will still waiting out its delay.
                    s.pending_will = None;
                    s.expires_at = None;
                    s.expiry_secs = expiry;
                }
                sidx
            }
            Some(sidx) => {
                // Clean start: the old session ends (its delayed will is published).
                if let Some(mut old) = self.remove_session(sidx) {
                    self.durable_session_removed(&old);
                    if let Some(p) = old.pending_will.take() {
                        self.publish_will(*p.will, now);
                    }
                }
                self.forwarding.session_gone(&client_id);
                self.insert_session(Session::new(client_id.clone(), expiry))
            }
            None => {
                self.forwarding.session_gone(&client_id);
                self.insert_session(Session::new(client_id.clone(), expiry))
            }
        };
        let claim = ConnToken {
            conn: index,
            serial: self.conns.get(index).map_or(0, |c| c.serial),
        };
        let owner = self.conns.get(index).and_then(|c| c.owner.clone());
        if let Some(s) = self.sessions.get_mut(sidx) {
            s.conn = Some(index);
            s.claim = claim;
            s.owner = owner.clone();
            s.max_queued_messages = max_queued_messages;
            s.max_queued_bytes = max_queued_bytes;
        }
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        conn.session = Some(sidx);
        // Persistent or not from now on; a persistent session's record says it is connected
        // (with its connection's will).
        let was_durable = self.sessions.get(sidx).is_some_and(|s| s.durable);
        self.durable_session_mode(sidx);
        if was_durable && self.sessions.get(sidx).is_some_and(|s| s.durable) {
            self.durable_session_changed(sidx, false);
        }
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };

        let mut ack = ConnAck {
            session_present,
            reason_code: ReasonCode::SUCCESS,
            properties: ConnAckProperties::default(),
        };
        if v5 {
            let p = &mut ack.properties;
            p.receive_maximum = NonZeroU16::new(limits.receive_maximum);
            p.maximum_packet_size = NonZeroU32::new(limits.max_packet_size);
            p.topic_alias_maximum = Some(limits.topic_alias_maximum);
            p.retain_available = Some(true);
            p.wildcard_subscription_available = Some(true);
            p.subscription_ids_available = Some(true);
            p.shared_subscription_available = Some(true);
            if requested_expiry != expiry {
                p.session_expiry_secs = Some(expiry);
            }
            if assigned_id {
                p.assigned_client_id = Some(client_id.clone());
            }
            p.server_keep_alive_secs = server_keep_alive;
            // Enhanced authentication succeeded: CONNACK names the method (MQTT 5.0 4.12).
            p.authentication_method = props.authentication_method.clone();
            if props.request_response_information == Some(true) {
                // Response Information: a topic prefix the client may use for responses.
                p.response_information = Str::copy_from(&format!("response/{client_id}")).ok();
            }
        }
        let before = conn.pending_bytes();
        write_packet(conn, &Packet::ConnAck(ack), &self.metrics);
        if conn.pending_bytes() == before {
            // Even without its optional properties the CONNACK exceeds the client's Maximum
            // Packet Size, which the server must not exceed [MQTT-3.1.2-25]: without a CONNACK
            // the client would wait for ever, so the connection is closed (logged above).
            warn!(client_id = %client_id, max = conn.client_max_packet, "closing: the CONNACK does not fit the client's Maximum Packet Size");
            self.close_conn(index, false, now);
            return;
        }
        if session_present {
            // Session Present 1 is a promise the session survives a crash from now on.
            self.gate_output(index);
        }
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        let mut held = conn
            .extra_mut_if_any()
            .map(|e| std::mem::take(&mut e.held_input))
            .unwrap_or_default();
        debug!(client_id = %client_id, session_present, version = ?connect.protocol, "client connected");
        self.resume_delivery(sidx, now);
        if !held.is_empty() {
            self.handle_read(index, &mut held, now);
            // A frame that arrived in part waits for the rest.
            self.keep_partial_input(index, held);
        }
    }
}

/// What the CONNECT says about writing to the client, needed before any answer to it, a
/// refusal included: its protocol version and its Maximum Packet Size. `write_packet` keeps
/// every packet within that size [MQTT-3.1.2-25], leaving out the Reason String of a
/// refusing CONNACK if it would not fit [MQTT-3.2.2-19].
fn note_client_limits(conn: &mut Conn, connect: &Connect) {
    conn.version = connect.protocol;
    conn.client_max_packet = connect
        .properties
        .maximum_packet_size
        .map_or(u32::MAX, NonZeroU32::get);
}

/// The CONNACK refusal for a connection accepted over a connection quota: 0x97 Quota
/// exceeded, or 0x9F Connection rate exceeded, the code MQTT 5 has for exactly that (3.1.1:
/// both 0x03 Server unavailable).
fn connection_quota_refusal(quota: Quota) -> Failure {
    let (reason, why) = match quota {
        Quota::ConnectionsPerIp => (
            ReasonCode::QUOTA_EXCEEDED,
            "too many connections from this IP address (limits.max_connections_per_ip)",
        ),
        Quota::ConnectionRate => (
            ReasonCode::CONNECTION_RATE_EXCEEDED,
            "connecting too often from this IP address (limits.max_connection_rate_per_ip)",
        ),
        _ => (
            ReasonCode::QUOTA_EXCEEDED,
            "the server has its maximum of connections (limits.max_connections)",
        ),
    };
    over_quota(quota, reason, why)
}
