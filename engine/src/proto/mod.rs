//! The shard core: sans-IO broker logic for one shard.
//!
//! Inputs: bytes read from a connection ([`ShardCore::on_read`]), a closed connection
//! ([`ShardCore::on_closed`]), a message from another shard ([`ShardCore::on_mesh`]) and the
//! clock ([`ShardCore::on_tick`]). Outputs: bytes in each connection's `out` buffer (its writer
//! is woken), connections marked closing, and messages pushed to other shards
//! ([`ShardCore::flush_mesh`]). Nothing here touches a socket, so protocol tests drive a core
//! with bytes and a fake clock.
//!
//! Routing and delivery live in `route.rs`; this file holds connections, CONNECT, sessions,
//! takeover, acknowledgements and timers.

pub mod authn;
pub mod conn;
mod connect;
mod conns;
mod input;
pub mod message;
mod quotas;
pub mod route;
pub mod session;
mod subscribe;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use ringmq_codec::{
    AckProperties, ConnAck, ConnAckProperties, DecodeError, Disconnect, DisconnectProperties,
    Packet, PubResp, QoS, ReasonCode, Str,
};
use rustc_hash::FxHashMap;
use tracing::{debug, warn};

use crate::config::Limits;

use crate::ops::metrics::{Quota, ShardHandle, ShardMetrics};
use crate::proto::conn::{Conn, ConnState};
use crate::proto::conns::Conns;
use crate::proto::route::{Interest, LocalSubs, Scratch};
use crate::proto::session::Sessions;
use crate::proto::session::{InflightState, PendingWill};
use crate::shard::mesh::{ConnToken, Mesh, ShardMsg};
use crate::shard::retain::MemoryRetainStore;
use crate::shard::trie::FilterTrie;

pub use crate::ids::{ConnId, SessionId, ShardId};
pub use input::{Handled, Input, Now};

/// Data-lane messages handled before each piece of client input (see
/// [`ShardCore::poll_mesh`]): enough to keep the lane moving, few enough that a read stays
/// cheap whatever other shards send.
pub const MESH_PER_INPUT: usize = 128;

/// Deliveries the data-lane messages of one batch ([`ShardCore::poll_mesh`]) may cause before
/// the batch ends: with a topic of a thousand subscribers, 1 024 messages were a million
/// deliveries and one turn of the inbox task took tens of milliseconds.
pub const MESH_DELIVERIES_PER_BATCH: u64 = 8192;

/// Internal counters of session moves, for tests and debugging; what an operator needs is in
/// [`ShardCore::metrics`].
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Messages forwarded to a session's new shard after it moved.
    pub forwarded_after_move: u64,
    /// Forwarded messages that found no session (or no matching subscription) on arrival.
    pub dropped_no_session: u64,
}

/// Everything one shard owns.
pub struct ShardCore {
    pub id: usize,
    pub(crate) shards: usize,
    pub(crate) limits: Limits,
    pub(crate) codec_limits: ringmq_codec::Limits,
    /// The authentication and authorization policy (shared snapshot, swapped on reload).
    pub(crate) auth: ringmq_auth::SharedSnapshot,
    /// The snapshot version the connected sessions were last checked against.
    pub(crate) auth_version: u64,
    /// This shard's verification caches (no sharing, no locks).
    pub(crate) auth_caches: ringmq_auth::Caches,
    pub(crate) conns: Conns,
    pub(crate) next_serial: u64,
    pub(crate) sessions: Sessions,
    pub(crate) by_client_id: FxHashMap<Bytes, SessionId>,
    pub(crate) subs: FilterTrie<LocalSubs>,
    pub(crate) interest: FilterTrie<Interest>,
    pub(crate) retained: MemoryRetainStore<crate::proto::route::Retained>,
    /// Directory entries for client ids whose hash selects this shard: the owning shard.
    /// The owning shard and the claim (connection token) that made it the owner, so a late
    /// release from an earlier owner cannot erase a newer claim.
    pub(crate) directory: FxHashMap<Bytes, DirEntry>,
    /// For authentication names whose hash selects this shard: the client ids holding a
    /// session for the name (`maxClientSessionsPerAuthenticationName`).
    pub(crate) name_holders: FxHashMap<std::sync::Arc<str>, Vec<Bytes>>,
    /// Sessions that moved to another shard recently: their subscriptions, so a message routed
    /// here before the move was known is forwarded (see `route::forward_moved`).
    pub(crate) forwarders: Vec<crate::proto::route::Forwarder>,
    /// Set while a moving session's subscriptions are removed: their interests are withdrawn
    /// only after the forwarding grace (`deferred_withdrawals`).
    pub(crate) moving_until: Option<Instant>,
    pub(crate) deferred_withdrawals: Vec<(Bytes, Option<Bytes>, Instant)>,
    /// Claims this shard has sent and not yet had answered, by client id.
    pub(crate) pending_claims: FxHashMap<Bytes, PendingClaim>,
    /// Messages delivered on this shard while claims are in flight, shared by all of them (one
    /// push per delivery, whatever their number); `claim_log_base` numbers the front entry.
    pub(crate) claim_log: VecDeque<crate::proto::message::Message>,
    pub(crate) claim_log_base: u64,
    pub(crate) mesh: Option<Mesh>,
    /// Per destination: data-lane messages not yet accepted by its inbox.
    pub(crate) outbox: Vec<VecDeque<ShardMsg>>,
    /// Per destination: priority-lane messages (see `mesh.rs`) not yet accepted by its inbox.
    outbox_priority: Vec<VecDeque<ShardMsg>>,
    pub(crate) wake_mask: u64,
    /// Messages to this shard itself, handled before the current call returns.
    pub(crate) local_inbox: VecDeque<ShardMsg>,
    /// The connection whose input is being handled ([`ShardCore::on_read`]): a message it
    /// routes into a congested outbox throttles that connection, and no other.
    reading: Option<ConnId>,
    /// Connections whose input fed a congested outbox, by slot: the destination shards (a bit
    /// each). The runtime stops reading them until those outboxes drain
    /// ([`ShardCore::conn_throttled`]); every other connection is read as usual.
    throttled: FxHashMap<ConnId, u64>,
    /// Wall time of the input being handled (token and certificate expiry).
    wall: SystemTime,
    pub(crate) scratch: Scratch,
    pub(crate) assigned_ids: u64,
    /// Retained-update sequence without a mesh (a lone core in tests).
    local_retain_seq: u64,
    /// When a graceful shutdown began.
    shutdown_since: Option<Instant>,
    /// Connection counts shared with the other shards (in all, per IP).
    pub(crate) conn_quotas: std::sync::Arc<crate::shard::quota::ConnQuotas>,
    pub(crate) ip_limits: crate::shard::quota::IpLimits,
    pub(crate) publish_rate: crate::shard::quota::Rate,
    pub(crate) publish_bandwidth: crate::shard::quota::Rate,
    /// Either publish quota is configured (otherwise PUBLISH skips the check).
    publish_quotas_on: bool,
    /// Connections open only to refuse their CONNECT (`Conn::refusal`), at most
    /// this shard's share of `limits.max_pending_refusals`.
    pending_refusals: usize,
    pub stats: Stats,
    /// This shard's metrics (written here only; read by the exporter and `$SYS`).
    pub(crate) metrics: ShardHandle,
    /// Retained messages in this replica, clears (tombstones) and `$` topics left out.
    pub(crate) retained_live: u64,
    /// `$SYS` publication period (shard 0 only) and the next one due.
    sys_interval: Option<Duration>,
    next_sys_at: Option<Instant>,
}

impl std::fmt::Debug for ShardCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardCore")
            .field("id", &self.id)
            .field("conns", &self.conns.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// A client id's directory entry: the owning shard, the claim that made it the owner, and the
/// authentication name the session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirEntry {
    pub shard: u16,
    pub claim: ConnToken,
    pub owner: Option<std::sync::Arc<str>>,
}

/// A claim in flight: the connection that made it, and a takeover by a newer claim that
/// arrived before the answer (performed once the claim resolves).
#[derive(Debug, Clone)]
pub(crate) struct PendingClaim {
    pub token: ConnToken,
    pub deferred: Option<(u16, ConnToken, Option<std::sync::Arc<str>>)>,
    /// Later connections on this shard for the same client id, claiming after this one.
    pub queued: Vec<ConnToken>,
    /// Position in the shard's claim log when the claim was sent: the messages delivered on
    /// this shard since then are replayed if the session arrives (`ShardCore::claim_log`).
    pub log_from: u64,
}

/// Why a connection is being closed by the server.
pub(crate) struct Failure {
    pub reason: ReasonCode,
    pub message: String,
    /// A quota, not a protocol error, closed the connection (counted as such).
    pub quota: Option<Quota>,
}

impl From<DecodeError> for Failure {
    fn from(e: DecodeError) -> Failure {
        fail(e.reason_code(), e.to_string())
    }
}

pub(crate) fn fail(reason: ReasonCode, message: impl Into<String>) -> Failure {
    Failure {
        reason,
        message: message.into(),
        quota: None,
    }
}

/// A refusal or disconnect because of `quota`.
pub(crate) fn over_quota(quota: Quota, reason: ReasonCode, message: impl Into<String>) -> Failure {
    Failure {
        quota: Some(quota),
        ..fail(reason, message)
    }
}

impl ShardCore {
    /// A core counting into metrics of its own (protocol tests, benches).
    pub fn new(
        id: usize,
        mesh: Option<Mesh>,
        limits: Limits,
        auth: ringmq_auth::SharedSnapshot,
    ) -> ShardCore {
        let shards = mesh.as_ref().map_or(1, Mesh::shards);
        ShardCore::with_metrics(id, mesh, limits, auth, ShardHandle::standalone(id, shards))
    }

    /// A core counting into the server's metrics.
    pub fn with_metrics(
        id: usize,
        mesh: Option<Mesh>,
        limits: Limits,
        auth: ringmq_auth::SharedSnapshot,
        metrics: ShardHandle,
    ) -> ShardCore {
        let shards = mesh.as_ref().map_or(1, Mesh::shards);
        let conn_quotas = mesh
            .as_ref()
            .map_or_else(Default::default, |m| m.conn_quotas().clone());
        ShardCore {
            conn_quotas,
            ip_limits: limits.ip_limits(),
            publish_rate: limits.publish_rate(),
            publish_bandwidth: limits.publish_bandwidth(),
            publish_quotas_on: !limits.publish_rate().is_unlimited()
                || !limits.publish_bandwidth().is_unlimited(),
            pending_refusals: 0,
            id,
            shards,
            codec_limits: ringmq_codec::Limits {
                max_packet_size: limits.max_packet_size,
            },
            retained: MemoryRetainStore::new(limits.max_retained_messages),
            limits,
            auth_version: auth.load().version,
            auth,
            auth_caches: ringmq_auth::Caches::default(),
            conns: Conns::new(),
            next_serial: 0,
            sessions: Sessions::default(),
            by_client_id: FxHashMap::default(),
            subs: FilterTrie::new(),
            interest: FilterTrie::new(),
            directory: FxHashMap::default(),
            mesh,
            outbox: (0..shards).map(|_| VecDeque::new()).collect(),
            outbox_priority: (0..shards).map(|_| VecDeque::new()).collect(),
            wake_mask: 0,
            local_inbox: VecDeque::new(),
            reading: None,
            throttled: FxHashMap::default(),
            wall: SystemTime::UNIX_EPOCH,
            scratch: Scratch::default(),
            assigned_ids: 0,
            shutdown_since: None,
            local_retain_seq: 0,
            name_holders: FxHashMap::default(),
            pending_claims: FxHashMap::default(),
            claim_log: VecDeque::new(),
            claim_log_base: 0,
            forwarders: Vec::new(),
            moving_until: None,
            deferred_withdrawals: Vec::new(),
            stats: Stats::default(),
            metrics,
            retained_live: 0,
            sys_interval: None,
            next_sys_at: None,
        }
    }

    fn set_wall_clock(&mut self, wall: SystemTime) {
        self.wall = wall;
    }

    /// Wall time as of the input being handled.
    pub(crate) fn wall_clock(&self) -> SystemTime {
        self.wall
    }

    /// This shard's metrics.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    /// Publishes `$SYS/broker/...` every `interval` from the next tick on (one shard does).
    pub fn publish_sys_every(&mut self, interval: Duration) {
        self.sys_interval = Some(interval);
        self.next_sys_at = None;
    }

    // ---- connection lifecycle -------------------------------------------------------------

    /// A new network connection on listener number `listener` (config order), counted
    /// there until [`ShardCore::release`]; `None`: close it at once.
    ///
    /// A connection over a connection quota (`max_connections`, `max_connections_per_ip`,
    /// `max_connection_rate_per_ip`) is still accepted while this shard's share of
    /// `max_pending_refusals` lasts, only to answer its CONNECT with CONNACK 0x97 / 0x9F
    /// (3.1.1: 0x03) so the client learns why; beyond that it is closed without a word, which
    /// bounds what a flood of refused connections costs.
    fn accept_on(&mut self, listener: usize, peer: SocketAddr, now: Instant) -> Option<ConnToken> {
        let ip = peer.ip().to_canonical();
        let max = self.limits.max_connections;
        let (refusal, ip_counted) = match self.conn_quotas.admit(ip, max, &self.ip_limits, now) {
            Ok(ip_counted) => (None, ip_counted),
            Err(quota) => {
                self.metrics.quota_rejected(quota);
                let slots = self
                    .limits
                    .max_pending_refusals
                    .div_ceil(self.shards.max(1));
                if self.pending_refusals >= slots {
                    debug!(%peer, quota = quota.label(), "connection closed at accept: over quota, no refusal slot left");
                    return None;
                }
                self.pending_refusals += 1;
                (Some(quota), false)
            }
        };
        self.next_serial += 1;
        self.metrics.connection_opened(listener);
        let mut conn = Conn::new(self.next_serial, peer, now);
        conn.listener = listener;
        conn.refusal = refusal;
        conn.ip_counted = ip_counted;
        let index = self.conns.insert(conn);
        Some(ConnToken {
            conn: index,
            serial: self.next_serial,
        })
    }

    /// Gives back what an accepted connection held: its connection counts, or its refusal slot.
    fn release_quotas(&mut self, conn: &Conn, now: Instant) {
        if conn.refusal.is_some() {
            self.pending_refusals = self.pending_refusals.saturating_sub(1);
        } else {
            let ip = conn.ip_counted.then(|| conn.peer.ip().to_canonical());
            self.conn_quotas.release(ip, self.ip_limits.rate, now);
        }
    }

    pub(crate) fn conn_live(&self, token: ConnToken) -> bool {
        self.conns
            .get(token.conn)
            .is_some_and(|c| c.serial == token.serial)
    }

    pub fn conn(&self, index: ConnId) -> Option<&Conn> {
        self.conns.get(index)
    }

    /// The connection, for the runtime to take its output (which wakes no writer).
    pub fn conn_mut(&mut self, index: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut_quiet(index)
    }

    /// Bytes arrived on a connection: decode and handle every complete packet. A frame that
    /// is not complete stays in `buf` for the caller to continue.
    fn handle_read(&mut self, index: ConnId, buf: &mut BytesMut, now: Instant) {
        // Nested when a claim resolved here releases another connection's held input
        // (`complete_connect`): that input is attributed to its own connection meanwhile.
        let previous = self.reading.replace(index);
        // Input held while the session was claimed may end with a frame in part (see
        // `complete_connect`): these bytes continue it.
        if let Some(conn) = self.conns.get_mut(index)
            && !matches!(conn.state, ConnState::Claiming { .. })
            && let Some(extra) = conn.extra_mut_if_any()
            && !extra.held_input.is_empty()
        {
            let mut held = std::mem::take(&mut extra.held_input);
            held.extend_from_slice(buf);
            buf.clear();
            self.decode_input(index, &mut held, now);
            self.keep_partial_input(index, held);
        } else {
            self.decode_input(index, buf, now);
        }
        self.drain_local(now);
        self.reading = previous;
    }

    /// What remains of held input after decoding (a frame in part) waits for the next read.
    pub(crate) fn keep_partial_input(&mut self, index: ConnId, rest: BytesMut) {
        if rest.is_empty() {
            return;
        }
        if let Some(conn) = self.conns.get_mut(index)
            && !conn.is_closing()
        {
            let held = &mut conn.extra_mut().held_input;
            if held.is_empty() {
                *held = rest;
            } else {
                // Claiming again meanwhile: the newer bytes are already behind these.
                let mut rest = rest;
                rest.extend_from_slice(held);
                *held = rest;
            }
        }
    }

    fn decode_input(&mut self, index: ConnId, buf: &mut BytesMut, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(index) else {
                return;
            };
            if conn.is_closing() {
                buf.clear();
                break;
            }
            if matches!(conn.state, ConnState::Claiming { .. }) {
                // Packets pipelined after CONNECT wait until the session is ready (it may be
                // coming from another shard); complete_connect processes them.
                let held = conn.extra().map_or(0, |e| e.held_input.len());
                if held + buf.len() > self.codec_limits.max_packet_size as usize {
                    let f = fail(
                        ReasonCode::QUOTA_EXCEEDED,
                        "too much data sent before CONNACK",
                    );
                    self.fail_conn(index, f, now);
                    buf.clear();
                    break;
                }
                if !buf.is_empty() {
                    conn.extra_mut().held_input.extend_from_slice(buf);
                }
                buf.clear();
                break;
            }
            let version = conn.version;
            let conn = if self.publish_quotas_on {
                if let Err(f) = self.check_publish_frame(index, buf, now) {
                    // The message is not routed; the will is published (close by the server,
                    // not a normal DISCONNECT [MQTT-3.1.2-8]).
                    self.fail_conn(index, f, now);
                    continue;
                }
                match self.conns.get_mut(index) {
                    Some(conn) => conn,
                    None => return,
                }
            } else {
                conn
            };
            match ringmq_codec::decode(buf, &self.codec_limits, version) {
                Ok(Some(packet)) => {
                    conn.last_rx = now;
                    if let Err(f) = self.handle_packet(index, packet, now) {
                        self.fail_conn(index, f, now);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if let Some(version) = e.connack_version()
                        && matches!(conn.state, ConnState::AwaitConnect { .. })
                    {
                        // The CONNACK refusing the level is written in the format the level
                        // implies (see fail_conn).
                        conn.version = version;
                    }
                    self.fail_conn(index, e.into(), now);
                    buf.clear();
                    break;
                }
            }
        }
    }

    /// The peer closed the connection or the socket failed.
    fn handle_closed(&mut self, index: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        if !conn.is_closing() {
            debug!(client_id = %conn.client_id, peer = %conn.peer, "connection lost");
            self.close_conn(index, true, now);
        }
        self.drain_local(now);
    }

    /// The runtime finished with the connection (socket closed, tasks ended).
    fn release(&mut self, index: ConnId, now: Instant) {
        if let Some(conn) = self.conns.get(index) {
            if !conn.is_closing() {
                self.close_conn(index, true, now);
            }
            self.throttled.remove(&index);
            if let Some(conn) = self.conns.try_remove(index) {
                self.metrics.connection_closed(conn.listener);
                self.release_quotas(&conn, now);
            }
        }
        self.drain_local(now);
    }

    /// Sends DISCONNECT (v5, when connected) or CONNACK (before CONNACK) with `f.reason` and
    /// closes the connection; the will is published [MQTT-3.1.2-8].
    pub(crate) fn fail_conn(&mut self, index: ConnId, f: Failure, now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        if conn.is_closing() {
            return;
        }
        if let Some(quota) = f.quota {
            self.metrics.quota_rejected(quota);
        } else if is_protocol_error(f.reason) {
            self.metrics.protocol_errors.inc();
        }
        warn!(client_id = %conn.client_id, peer = %conn.peer, reason = %f.reason, quota = f.quota.map(Quota::label), "closing connection: {}", f.message);
        match conn.state {
            ConnState::AwaitConnect { .. }
                if f.reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION =>
            {
                // In the format of the level the client sent (`decode_input` set it from
                // `DecodeError::connack_version`): 3.1.1 return code 0x01 for levels 3 and 4,
                // else MQTT 5 reason code 0x84 without properties [MQTT-3.1.2-2].
                write_packet(
                    conn,
                    &Packet::ConnAck(ConnAck {
                        reason_code: f.reason,
                        ..Default::default()
                    }),
                );
            }
            ConnState::AwaitConnect { .. } => {
                // A CONNECT that did not decode: close without CONNACK [MQTT-3.1.4-1], since
                // the client's protocol version is not known.
            }
            ConnState::Claiming { .. } => write_connack_refusal(conn, &f),
            ConnState::Connected => {
                if conn.version.is_v5() {
                    let d = Disconnect {
                        reason_code: f.reason,
                        properties: DisconnectProperties {
                            reason_string: reason_string(&f.message),
                            ..Default::default()
                        },
                    };
                    write_packet(conn, &Packet::Disconnect(d));
                }
            }
            ConnState::Closing => {}
        }
        self.close_conn(index, true, now);
    }

    /// Marks the connection closing and detaches its session. `publish_will`: the close was
    /// not a normal DISCONNECT, so the will is published (after its delay).
    pub(crate) fn close_conn(&mut self, index: ConnId, publish_will: bool, now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        if conn.is_closing() {
            return;
        }
        let was_connected = conn.is_connected();
        conn.state = ConnState::Closing;
        let will = if publish_will { conn.will.take() } else { None };
        conn.will = None;
        let Some(sidx) = conn.session.take() else {
            return;
        };
        if !was_connected {
            return;
        }
        let Some(session) = self.sessions.get_mut(sidx) else {
            return;
        };
        let ends_now = session.expiry_secs == 0;
        if !ends_now {
            session.expires_at = Some(now + Duration::from_secs(u64::from(session.expiry_secs)));
        }
        if let Some(will) = will {
            let delay = will.properties.will_delay_secs.unwrap_or(0);
            if delay == 0 || ends_now {
                self.publish_will(*will, now);
            } else {
                let delay = delay.min(session.expiry_secs);
                session.pending_will = Some(PendingWill {
                    will,
                    publish_at: now + Duration::from_secs(u64::from(delay)),
                });
            }
        }
        self.detach_session(sidx);
        if ends_now {
            self.end_session(sidx, now);
        }
    }

    pub(crate) fn detach_session(&mut self, sidx: SessionId) {
        if let Some(s) = self.sessions.get_mut(sidx) {
            s.conn = None;
        }
    }

    // ---- packets ----------------------------------------------------------------------------

    fn handle_packet(
        &mut self,
        index: ConnId,
        packet: Packet,
        now: Instant,
    ) -> Result<(), Failure> {
        let Some(conn) = self.conns.get_mut(index) else {
            return Ok(());
        };
        match (&conn.state, packet) {
            (ConnState::AwaitConnect { .. }, Packet::Connect(connect)) => {
                self.on_connect(index, connect, now)
            }
            (ConnState::AwaitConnect { .. }, p) => Err(fail(
                ReasonCode::PROTOCOL_ERROR,
                format!(
                    "[MQTT-3.1.0-1] first packet must be CONNECT, got {}",
                    p.name()
                ),
            )),
            (ConnState::Claiming { .. }, Packet::Connect(_))
            | (ConnState::Connected, Packet::Connect(_)) => Err(fail(
                ReasonCode::PROTOCOL_ERROR,
                "[MQTT-3.1.0-2] second CONNECT",
            )),
            // on_read holds input back while claiming; nothing is decoded in this state.
            (ConnState::Claiming { .. }, _) => Ok(()),
            (ConnState::Closing, _) => Ok(()),
            (ConnState::Connected, p) => self.on_session_packet(index, p, now),
        }
    }

    fn on_session_packet(
        &mut self,
        index: ConnId,
        packet: Packet,
        now: Instant,
    ) -> Result<(), Failure> {
        match packet {
            Packet::Publish(p) => self.on_publish(index, p, now),
            Packet::PubAck(a) => {
                self.on_puback(index, a.packet_id, now);
                Ok(())
            }
            Packet::PubRec(a) => {
                self.on_pubrec(index, a, now);
                Ok(())
            }
            Packet::PubRel(a) => {
                self.on_pubrel(index, a.packet_id);
                Ok(())
            }
            Packet::PubComp(a) => {
                self.on_pubcomp(index, a.packet_id, now);
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(index, s, now),
            Packet::Unsubscribe(u) => self.on_unsubscribe(index, u),
            Packet::PingReq => {
                if let Some(conn) = self.conns.get_mut(index) {
                    write_packet(conn, &Packet::PingResp);
                }
                Ok(())
            }
            Packet::Disconnect(d) => self.on_disconnect(index, d, now),
            Packet::Auth(a) => self.on_auth(index, a, now),
            p => Err(fail(
                ReasonCode::PROTOCOL_ERROR,
                format!("{} is not sent by clients", p.name()),
            )),
        }
    }

    fn on_disconnect(&mut self, index: ConnId, d: Disconnect, now: Instant) -> Result<(), Failure> {
        let Some(conn) = self.conns.get_mut(index) else {
            return Ok(());
        };
        if let Some(expiry) = d.properties.session_expiry_secs {
            if conn.connect_expiry_zero && expiry != 0 {
                return Err(fail(
                    ReasonCode::PROTOCOL_ERROR,
                    "[MQTT-3.14.2-2] session expiry set in DISCONNECT after zero in CONNECT",
                ));
            }
            if let Some(s) = conn.session.and_then(|s| self.sessions.get_mut(s)) {
                s.expiry_secs = expiry.min(self.limits.max_session_expiry_secs);
            }
        }
        let with_will = d.reason_code == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE;
        debug!(client_id = %conn.client_id, reason = %d.reason_code, "client disconnected");
        // [MQTT-3.14.4-3]: a normal DISCONNECT deletes the will.
        self.close_conn(index, with_will, now);
        Ok(())
    }

    // ---- acknowledgements ------------------------------------------------------------------

    fn on_puback(&mut self, index: ConnId, id: NonZeroU16, now: Instant) {
        let Some(sidx) = self.conns.get(index).and_then(|c| c.session) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sidx) else {
            return;
        };
        match s.inflight_position(id) {
            Some(pos) if s.inflight[pos].out.qos == QoS::AtLeastOnce => {
                s.inflight.remove(pos);
            }
            _ => debug!(client_id = %s.client_id, id, "PUBACK for unknown packet id"),
        }
        self.fill_window(sidx, now);
    }

    fn on_pubrec(&mut self, index: ConnId, ack: PubResp, now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        let Some(sidx) = conn.session else { return };
        let Some(s) = self.sessions.get_mut(sidx) else {
            return;
        };
        let id = ack.packet_id;
        match s.inflight_position(id) {
            Some(pos) if s.inflight[pos].out.qos == QoS::ExactlyOnce => {
                if ack.reason_code.is_error() {
                    // A PUBREC with an error code ends the exchange: no PUBREL [MQTT-4.3.3-4].
                    s.inflight.remove(pos);
                    self.fill_window(sidx, now);
                    return;
                }
                s.inflight[pos].state = InflightState::Released;
                write_packet(conn, &Packet::PubRel(PubResp::new(id, ReasonCode::SUCCESS)));
            }
            _ => {
                // Unknown id: PUBREL with 0x92 (MQTT 5.0 section 3.6.2.1).
                let rc = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                write_packet(conn, &Packet::PubRel(PubResp::new(id, rc)));
            }
        }
    }

    fn on_pubcomp(&mut self, index: ConnId, id: NonZeroU16, now: Instant) {
        let Some(sidx) = self.conns.get(index).and_then(|c| c.session) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sidx) else {
            return;
        };
        if let Some(pos) = s.inflight_position(id)
            && s.inflight[pos].state == InflightState::Released
        {
            s.inflight.remove(pos);
        }
        self.fill_window(sidx, now);
    }

    fn on_pubrel(&mut self, index: ConnId, id: NonZeroU16) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        let Some(s) = conn.session.and_then(|s| self.sessions.get_mut(s)) else {
            return;
        };
        let rc = if s.incoming_qos2.remove(&id.get()) {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        write_packet(conn, &Packet::PubComp(PubResp::new(id, rc)));
    }

    // ---- timers -----------------------------------------------------------------------------

    /// Keep alive [MQTT-3.1.2-22], CONNECT timeout, session expiry, delayed wills.
    fn handle_timeout(&mut self, now: Instant) {
        self.check_auth(now);
        self.withdraw_deferred_interests(now);
        let connect_timeout = Duration::from_secs(u64::from(self.limits.connect_timeout_secs));
        let mut expired_conns = Vec::new();
        for (index, conn) in self.conns.iter() {
            match &conn.state {
                ConnState::AwaitConnect { since } | ConnState::Claiming { since, .. }
                    if now.saturating_duration_since(*since) > connect_timeout =>
                {
                    expired_conns.push((index, false));
                }
                // A throttled connection is unread by the server's choice, not idle.
                ConnState::Connected
                    if conn.keep_alive_secs > 0 && !self.throttled.contains_key(&index) =>
                {
                    let limit = Duration::from_millis(u64::from(conn.keep_alive_secs) * 1500);
                    if now.saturating_duration_since(conn.last_rx) > limit {
                        expired_conns.push((index, true));
                    }
                }
                _ => {}
            }
        }
        for (index, keep_alive) in expired_conns {
            if keep_alive {
                self.fail_conn(
                    index,
                    fail(ReasonCode::KEEP_ALIVE_TIMEOUT, "keep alive timeout"),
                    now,
                );
            } else if let Some(conn) = self.conns.get_mut(index) {
                warn!(peer = %conn.peer, "no CONNECT within connect_timeout_secs");
                self.close_conn(index, false, now);
            }
        }
        let mut ended = Vec::new();
        let mut wills = Vec::new();
        // Gauges are sampled here, in the pass over the sessions that expiry makes anyway.
        let (mut online, mut subscriptions) = (0u64, 0u64);
        for (sidx, s) in self.sessions.iter_mut() {
            subscriptions += s.subscriptions.len() as u64;
            if s.conn.is_some() {
                online += 1;
                continue;
            }
            if s.pending_will.as_ref().is_some_and(|p| p.publish_at <= now) {
                wills.push(sidx);
            }
            if s.expires_at.is_some_and(|at| at <= now) {
                ended.push(sidx);
            }
        }
        for sidx in wills {
            if let Some(p) = self
                .sessions
                .get_mut(sidx)
                .and_then(|s| s.pending_will.take())
            {
                self.publish_will(*p.will, now);
            }
        }
        for sidx in ended {
            debug!(sidx = sidx.raw(), "session expired");
            self.end_session(sidx, now);
        }
        self.sample_gauges(online, subscriptions);
        if let Some(interval) = self.sys_interval
            && self.next_sys_at.is_none_or(|at| now >= at)
        {
            self.next_sys_at = Some(now + interval);
            self.publish_sys(now);
        }
        self.drain_local(now);
    }

    /// Session and mesh gauges, sampled each tick (`online` and `subscriptions` counted by
    /// the caller before sessions expired; the difference lasts one tick).
    fn sample_gauges(&mut self, online: u64, subscriptions: u64) {
        let total = self.sessions.len() as u64;
        self.metrics.sessions_online.set(online.min(total));
        self.metrics
            .sessions_offline
            .set(total.saturating_sub(online));
        self.metrics.subscriptions.set(subscriptions);
        let depth = self.mesh.as_ref().map_or(0, |m| m.len(self.id));
        self.metrics.mesh_inbox_depth.set(depth as u64);
    }

    /// Publishes the `$SYS/broker/...` values as retained QoS 0 messages through the normal
    /// routing path, like Mosquitto. Periodic, so it may allocate.
    fn publish_sys(&mut self, now: Instant) {
        let topics = self.metrics.all().sys_topics(env!("CARGO_PKG_VERSION"));
        for (topic, value) in topics {
            let Ok(topic) = Str::copy_from(&topic) else {
                continue;
            };
            let message = crate::proto::message::Message {
                topic,
                payload: Bytes::from(value.into_bytes()),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Default::default(),
                expires_at: None,
                origin: Bytes::new(),
            };
            self.retain_everywhere(&message);
            self.route(message, now);
        }
    }

    // ---- mesh -------------------------------------------------------------------------------

    /// Handles what other shards have sent so far. Called before client bytes are processed:
    /// whatever another shard enqueued before a client could observe its effect (an interest
    /// or retained update pushed before the SUBACK or PUBACK went out) is applied before that
    /// client's next packets — shards stay causally consistent from the clients' point of
    /// view. Those updates travel in the priority lane (`mesh.rs`), applied in full here.
    ///
    /// Of the data lane, at most `max` messages and at most what it held on entry: other
    /// shards keep pushing while this one pops, and a shard that drained "until empty" on
    /// every read stayed here for seconds under a flood while its own connections, accepts
    /// and timers waited (seen: a claim answered after 3 s). Callers that handle client input
    /// pass [`MESH_PER_INPUT`]; the shard's inbox task takes the rest in batches between
    /// driver turns.
    fn poll_mesh(&mut self, now: Instant, max: usize) -> usize {
        let Some(mesh) = self.mesh.clone() else {
            return 0;
        };
        // The priority lane in full (what it held on entry): interest and retained updates
        // are few and cheap, and a client may already act on them.
        let mut n = 0;
        for _ in 0..mesh.priority_len(self.id) {
            let Some(msg) = mesh.pop_priority(self.id) else {
                break;
            };
            self.handle_mesh(msg, now);
            n += 1;
        }
        // Deliveries bound the batch as well as messages: one message to a topic with a
        // thousand subscribers on this shard is a thousand deliveries.
        let max = max.min(mesh.data_len(self.id));
        let delivered_before = self.delivered();
        for _ in 0..max {
            let Some(msg) = mesh.pop(self.id) else { break };
            self.handle_mesh(msg, now);
            n += 1;
            if self.delivered().wrapping_sub(delivered_before) > MESH_DELIVERIES_PER_BATCH {
                break;
            }
        }
        self.drain_local(now);
        n
    }

    /// PUBLISH packets this shard has queued to clients so far.
    pub fn delivered(&self) -> u64 {
        self.metrics.messages_out.iter().map(|q| q.get()).sum()
    }

    fn handle_mesh(&mut self, msg: ShardMsg, now: Instant) {
        match msg {
            ShardMsg::Deliver { message, targets } => {
                if !self.forwarders.is_empty() {
                    self.forward_moved(&message, targets, now);
                }
                self.deliver_local(&message, now)
            }
            ShardMsg::DeliverTo {
                client_id,
                out,
                hops,
            } => self.on_deliver_to(client_id, out, hops, now),
            ShardMsg::DeliverShared {
                message,
                filter,
                group,
            } => self.deliver_shared_local(&message, &filter, &group, now),
            ShardMsg::Retain { message, seq } => self.apply_retain(message, seq),
            ShardMsg::Interest {
                filter,
                group,
                shard,
                add,
            } => self.apply_interest(filter, group, shard, add),
            ShardMsg::Claim {
                client_id,
                shard,
                token,
                owner,
            } => self.on_claim(client_id, shard, token, owner),
            ShardMsg::ClaimRefused { client_id, token } => {
                self.on_claim_refused(client_id, token, now)
            }
            ShardMsg::Takeover {
                client_id,
                to,
                token,
                owner,
            } => self.on_takeover(client_id, to, token, owner, now),
            ShardMsg::SessionMoved {
                client_id,
                token,
                session,
                owner,
            } => self.on_session_ready(client_id, token, session, false, owner, now),
            ShardMsg::ClaimedLocal {
                client_id,
                token,
                owner,
            } => self.on_session_ready(client_id, token, None, true, owner, now),
            ShardMsg::Release {
                client_id,
                shard,
                claim,
            } => self.on_release(client_id, shard, claim),
            ShardMsg::NameAcquire {
                name,
                client_id,
                shard,
                token,
                limit,
            } => self.on_name_acquire(name, client_id, shard, token, limit),
            ShardMsg::NameAnswer { token, granted } => self.on_name_answer(token, granted, now),
            ShardMsg::NameRelease { name, client_id } => self.on_name_release(&name, &client_id),
        }
    }

    /// Sends to a shard (to this one: handled before the current call returns).
    pub(crate) fn send(&mut self, to: usize, msg: ShardMsg) {
        if to == self.id || self.mesh.is_none() {
            self.local_inbox.push_back(msg);
            return;
        }
        let lanes = if msg.is_priority() {
            &mut self.outbox_priority
        } else {
            &mut self.outbox
        };
        let Some(outbox) = lanes.get_mut(to) else {
            return;
        };
        outbox.push_back(msg);
        self.wake_mask |= 1 << to;
        // Both lanes count: a flood of retained publishes fills the priority lane.
        if self.outbox_len(to) > self.limits.shard_queue_capacity
            && let Some(index) = self.reading
        {
            // Backpressure on the cause only: the connection whose input this is.
            *self.throttled.entry(index).or_default() |= 1 << to;
        }
    }

    pub(crate) fn drain_local(&mut self, now: Instant) {
        // Bounded by the work the messages cause; each handled message can only add a few.
        while let Some(msg) = self.local_inbox.pop_front() {
            self.handle_mesh(msg, now);
        }
    }

    /// Moves outgoing mesh messages into the destination inboxes and wakes each destination
    /// once. Messages an inbox cannot take stay queued for the next call.
    fn flush_mesh(&mut self) {
        let Some(mesh) = &self.mesh else { return };
        let mut mask = self.wake_mask;
        self.wake_mask = 0;
        while mask != 0 {
            let to = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let mut pushed = false;
            let mut left = false;
            // The priority lane first: it must not wait behind a backlog of deliveries.
            for outbox in [self.outbox_priority.get_mut(to), self.outbox.get_mut(to)]
                .into_iter()
                .flatten()
            {
                while let Some(msg) = outbox.pop_front() {
                    match mesh.push(self.id, to, msg) {
                        Ok(()) => pushed = true,
                        Err(msg) => {
                            outbox.push_front(msg);
                            self.metrics.mesh_overflow.inc();
                            break;
                        }
                    }
                }
                left |= !outbox.is_empty();
            }
            if left {
                self.wake_mask |= 1 << to;
            }
            if pushed {
                mesh.wake(to);
            }
        }
    }

    /// Whether the runtime should leave connection `index` unread for now: its input routed
    /// messages into an outbox that still holds more than `shard_queue_capacity` messages
    /// (the destination shard cannot keep up). A publisher faster than the shards it feeds is
    /// thus slowed by TCP flow control instead of growing memory, while every other
    /// connection — subscribers' acknowledgements and PINGREQs, new CONNECTs, publishers to
    /// other shards — is read as usual.
    ///
    /// The outbox drains as the destination takes messages; the runtime retries
    /// ([`ShardCore::flush_mesh`]) at least every millisecond while it is backlogged
    /// (`mesh_backlog`) and calls this again then. Each throttled connection adds at most one
    /// read's worth of messages beyond the bound before it is stopped.
    pub fn conn_throttled(&mut self, index: ConnId, now: Instant) -> bool {
        let Some(&mask) = self.throttled.get(&index) else {
            return false;
        };
        if self.wake_mask != 0 {
            self.flush_mesh();
        }
        let mut still = 0u64;
        let mut bits = mask;
        while bits != 0 {
            let to = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if self.outbox_len(to) > self.limits.shard_queue_capacity {
                still |= 1 << to;
            }
        }
        if still == 0 {
            self.throttled.remove(&index);
            // Unread by the server's choice: keep alive counts from now.
            if let Some(conn) = self.conns.get_mut(index) {
                conn.last_rx = conn.last_rx.max(now);
            }
            return false;
        }
        self.throttled.insert(index, still);
        true
    }

    /// Connections throttled now (for tests and the stall detector).
    pub fn throttled_conns(&self) -> usize {
        self.throttled.len()
    }

    /// Graceful shutdown: DISCONNECT 0x8B (Server shutting down) to v5 clients, 3.1.1
    /// connections closed; output is flushed by the writers. Wills are not published: the
    /// server, not the client, ends these connections. Idempotent.
    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown_since.is_some() {
            return;
        }
        self.shutdown_since = Some(now);
        let open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.is_closing())
            .map(|(i, _)| i)
            .collect();
        tracing::info!(shard = self.id, connections = open.len(), "shutting down");
        for index in open {
            if let Some(conn) = self.conns.get_mut(index)
                && conn.is_connected()
                && conn.version.is_v5()
            {
                let d = Disconnect {
                    reason_code: ReasonCode::SERVER_SHUTTING_DOWN,
                    properties: Default::default(),
                };
                write_packet(conn, &Packet::Disconnect(d));
            }
            self.close_conn(index, false, now);
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown_since.is_some()
    }

    /// Whether a shutdown has finished: every connection released, or the bound passed.
    pub fn shutdown_complete(&self, now: Instant) -> bool {
        let Some(since) = self.shutdown_since else {
            return false;
        };
        let bound = Duration::from_secs(u64::from(self.limits.shutdown_timeout_secs));
        self.conns.is_empty() || now.saturating_duration_since(since) >= bound
    }

    /// The next retained-update sequence number: one counter for all shards (in the mesh).
    pub(crate) fn next_retain_seq(&mut self) -> u64 {
        match &self.mesh {
            Some(mesh) => mesh.next_retain_seq(),
            None => {
                self.local_retain_seq += 1;
                self.local_retain_seq
            }
        }
    }

    /// Whether messages are waiting for a full inbox (the runtime retries soon).
    pub fn mesh_backlog(&self) -> bool {
        self.wake_mask != 0
    }

    /// Messages (both lanes) waiting for `to`'s inbox.
    pub fn outbox_len(&self, to: usize) -> usize {
        self.outbox.get(to).map_or(0, VecDeque::len)
            + self.outbox_priority.get(to).map_or(0, VecDeque::len)
    }

    /// Assigned client ids start with this; exposed for tests.
    pub fn assigned_prefix(&self) -> String {
        format!("ringmq-{}-", self.id)
    }

    /// Session and connection counts, for tests and metrics.
    pub fn counts(&self) -> (usize, usize) {
        (self.conns.len(), self.sessions.len())
    }

    /// Checks the core's invariants, panicking with the first one broken: for tests and the
    /// fuzzer, after every input (a full pass over connections and sessions).
    pub fn check_invariants(&self) {
        for (id, conn) in self.conns.iter() {
            if let Some(sidx) = conn.session {
                let session = self.sessions.get(sidx);
                assert!(session.is_some(), "{id}: session {sidx} is gone");
                if conn.is_connected() {
                    assert_eq!(
                        session.and_then(|s| s.conn),
                        Some(id),
                        "{id}: its session points elsewhere"
                    );
                }
            }
        }
        for (sidx, session) in self.sessions.iter() {
            if let Some(id) = session.conn {
                let conn = self.conns.get(id);
                assert!(conn.is_some(), "session {sidx}: connection {id} is gone");
                assert_eq!(
                    conn.and_then(|c| c.session),
                    Some(sidx),
                    "session {sidx}: its connection points elsewhere"
                );
            }
            assert_eq!(
                self.by_client_id.get(session.client_id.as_bytes()),
                Some(&sidx),
                "session {sidx}: not found by its client id"
            );
            let window = self
                .limits
                .max_inflight
                .max(self.limits.application.max_inflight);
            session.check_invariants(window);
        }
        assert_eq!(
            self.by_client_id.len(),
            self.sessions.len(),
            "client-id index and sessions differ"
        );
    }

    pub(crate) fn ack_properties(&self, index: ConnId, reason: &str) -> AckProperties {
        let wants = self
            .conns
            .get(index)
            .is_some_and(|c| c.request_problem_info);
        AckProperties {
            reason_string: if wants { reason_string(reason) } else { None },
            ..Default::default()
        }
    }
}

/// Whether closing a connection with `reason` counts as a protocol error (the peer broke the
/// protocol), as opposed to keep alive, authorization or the server's own limits.
fn is_protocol_error(reason: ReasonCode) -> bool {
    matches!(
        reason,
        ReasonCode::MALFORMED_PACKET
            | ReasonCode::PROTOCOL_ERROR
            | ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            | ReasonCode::TOPIC_FILTER_INVALID
            | ReasonCode::TOPIC_NAME_INVALID
            | ReasonCode::RECEIVE_MAXIMUM_EXCEEDED
            | ReasonCode::TOPIC_ALIAS_INVALID
            | ReasonCode::PACKET_TOO_LARGE
            | ReasonCode::PAYLOAD_FORMAT_INVALID
    )
}

/// Encodes a control packet into the connection's output and wakes its writer.
///
/// Every control packet goes through here, so here the client's Maximum Packet Size is kept
/// [MQTT-3.1.2-25]: a Reason String, then User Properties, that would take the packet past it
/// are left out (CONNACK [MQTT-3.2.2-19] [MQTT-3.2.2-20], and the same rule on every
/// acknowledgement, DISCONNECT and AUTH), and a packet too large even without them is not
/// sent. Before CONNECT is read no limit is known (`client_max_packet` is the protocol's).
pub(crate) fn write_packet(conn: &mut Conn, packet: &Packet) {
    let max = conn.client_max_packet;
    match ringmq_codec::encode_within(packet, conn.version, max, &mut conn.out) {
        Ok(omitted) if omitted.any() => {
            debug!(client_id = %conn.client_id, packet = packet.name(), max, ?omitted, "optional properties left out to fit the client's Maximum Packet Size");
        }
        Ok(_) => {}
        Err(e) => {
            warn!(client_id = %conn.client_id, "{} not sent: {e}", packet.name());
            return;
        }
    }
}

/// CONNECT was understood: the refusal goes in CONNACK [MQTT-3.2.2-6]. 3.1.1 has return codes
/// for only a few causes [MQTT-3.2.2-5]; for the rest the connection is just closed.
pub(crate) fn write_connack_refusal(conn: &mut Conn, f: &Failure) {
    let v3_code = f.reason.to_v3_connack();
    if conn.version.is_v5() || v3_code != 0x05 || f.reason == ReasonCode::NOT_AUTHORIZED {
        let properties = ConnAckProperties {
            reason_string: reason_string(&f.message),
            ..Default::default()
        };
        let ack = ConnAck {
            session_present: false,
            reason_code: f.reason,
            properties,
        };
        write_packet(conn, &Packet::ConnAck(ack));
    }
}

pub(crate) fn reason_string(s: &str) -> Option<Str> {
    // At most 256 bytes, cut on a character boundary.
    let mut end = s.len().min(256);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Str::copy_from(&s[..end]).ok()
}
