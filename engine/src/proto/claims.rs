//! Who owns a client id: the directory (one shard per client id, by hash), claims a shard
//! sends for a new connection and their answers, takeover of a session held elsewhere, the
//! per-authentication-name session limit, and the log of deliveries a session on its way
//! must not miss.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use std::collections::VecDeque;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use crate::ids::ShardId;
use crate::ops::metrics::{DropCause, ShardMetrics};
use crate::proto::message::Message;
use ringmq_codec::{ReasonCode, Str};
use rustc_hash::FxHasher;
use tracing::warn;

use crate::ids::ConnId;
use crate::ops::metrics::Quota;
use crate::proto::conn::ConnState;
use crate::proto::forward::handled_after;
use crate::proto::session::Outgoing;
use crate::proto::{Failure, ShardCore, fail, over_quota, write_connack_refusal};
use crate::shard::mesh::{ConnToken, ShardMsg, Stamp};

/// Messages kept in a shard's claim log (claims normally resolve within microseconds; beyond
/// this, messages are not kept for sessions on their way).
const CLAIM_LOG_MAX: usize = 16_384;

/// A client id's directory entry: the owning shard, the claim that made it the owner, and the
/// authentication name the session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DirEntry {
    pub shard: ShardId,
    pub claim: ConnToken,
    pub owner: Option<std::sync::Arc<str>>,
}

/// A claim in flight: the connection that made it, and a takeover by a newer claim that
/// arrived before the answer (performed once the claim resolves).
#[derive(Debug, Clone)]
pub(super) struct PendingClaim {
    pub token: ConnToken,
    pub deferred: Option<(ShardId, ConnToken, Option<std::sync::Arc<str>>)>,
    /// Later connections on this shard for the same client id, claiming after this one.
    pub queued: Vec<ConnToken>,
    /// Position in the shard's claim log when the claim was sent: the messages delivered on
    /// this shard since then are replayed if the session arrives (`ShardCore::claim_log`).
    pub log_from: u64,
    /// The deliveries this shard had handled when the claim was sent (see `forward.rs`).
    pub watermark: Vec<u64>,
    /// Copies forwarded here for the session while it is on its way (from a shard it left for
    /// an earlier stay here), delivered when it lands.
    pub forwarded: Vec<crate::proto::session::Outgoing>,
}

/// What a shard knows about client-id ownership. Private: only this module reads or changes
/// it, through the handlers below.
#[derive(Debug, Default)]
pub(super) struct Claims {
    /// Directory entries for client ids whose hash selects this shard: the owning shard and
    /// the claim (connection token) that made it the owner, so a late release from an earlier
    /// owner cannot erase a newer claim.
    directory: FxHashMap<Bytes, DirEntry>,
    /// For authentication names whose hash selects this shard: the client ids holding a
    /// session for the name (`maxClientSessionsPerAuthenticationName`).
    name_holders: FxHashMap<Arc<str>, Vec<Bytes>>,
    /// Claims this shard has sent and not yet had answered, by client id.
    pending: FxHashMap<Bytes, PendingClaim>,
    /// Messages delivered on this shard while claims are in flight, shared by all of them (one
    /// push per delivery, whatever their number); `log_base` numbers the front entry.
    log: VecDeque<Message>,
    log_base: u64,
}

impl Claims {
    /// Keeps `message` for the sessions on their way here (claims in flight), replayed when
    /// they land (`replay_for_arrived`). Bounded by [`CLAIM_LOG_MAX`]; what does not fit is
    /// counted as dropped.
    pub fn log_delivery(&mut self, message: &Message, metrics: &ShardMetrics) {
        if self.pending.is_empty() {
            return;
        }
        if self.log.len() < CLAIM_LOG_MAX {
            self.log.push_back(message.clone());
        } else {
            metrics.dropped(DropCause::ClaimLogFull);
        }
    }

    pub fn check_invariants(&self) {
        assert!(self.log.len() <= CLAIM_LOG_MAX, "claim log over its bound");
        assert!(
            self.pending
                .values()
                .all(|p| p.forwarded.len() <= CLAIM_LOG_MAX),
            "forwarded copies over their bound"
        );
        if self.pending.is_empty() {
            assert!(
                self.log.is_empty(),
                "claim log kept without a claim in flight"
            );
        }
        let end = self.log_base + self.log.len() as u64;
        for p in self.pending.values() {
            assert!(p.log_from <= end, "a claim starts after the end of the log");
        }
    }
}

/// The directory shard of `client_id` among `shards` shards.
pub fn directory_shard_of(client_id: &[u8], shards: usize) -> ShardId {
    let mut h = FxHasher::default();
    client_id.hash(&mut h);
    ShardId::from_slot((h.finish() % shards.max(1) as u64) as usize)
}

impl ShardCore {
    /// Claims the session of the connection's client id at its directory shard.
    pub(super) fn send_claim(&mut self, index: ConnId) {
        let Some(conn) = self.conns.get(index) else {
            return;
        };
        let token = ConnToken {
            conn: index,
            serial: conn.serial,
        };
        let (client_id, owner) = (conn.client_id.clone(), conn.owner.clone());
        // One claim per client id in flight from this shard: a second local connection for
        // the same id waits for the first claim to resolve (then its own claim takes over).
        if let Some(pending) = self.claims.pending.get_mut(client_id.as_bytes()) {
            pending.queued.push(token);
            return;
        }
        self.claims.pending.insert(
            client_id.as_bytes_shared().clone(),
            PendingClaim {
                token,
                deferred: None,
                queued: Vec::new(),
                log_from: self.claims.log_base + self.claims.log.len() as u64,
                watermark: self.forwarding.watermark(),
                forwarded: Vec::new(),
            },
        );
        let dir = self.directory_shard(client_id.as_bytes());
        self.send(
            dir,
            ShardMsg::Claim {
                client_id,
                shard: self.id,
                token,
                owner,
            },
        );
    }

    /// On the authentication name's shard: at most `limit` client ids hold a session for
    /// `name`; a client id already holding one (a reconnect) always may.
    pub(crate) fn handle_name_acquire(
        &mut self,
        name: Arc<str>,
        client_id: Str,
        shard: ShardId,
        token: ConnToken,
        limit: u32,
    ) {
        let holders = self.claims.name_holders.entry(name).or_default();
        let held = holders.iter().any(|c| c == client_id.as_bytes_shared());
        let granted = held || holders.len() < limit as usize;
        if granted && !held {
            holders.push(client_id.into_bytes());
        }
        self.send(shard, ShardMsg::NameAnswer { token, granted });
    }

    pub(crate) fn handle_name_release(&mut self, name: &Arc<str>, client_id: &Str) {
        if let Some(holders) = self.claims.name_holders.get_mut(name) {
            holders.retain(|c| c != client_id.as_bytes_shared());
            if holders.is_empty() {
                self.claims.name_holders.remove(name);
            }
        }
    }

    pub(crate) fn handle_name_answer(&mut self, token: ConnToken, granted: bool, now: Instant) {
        if !self.claiming(token) {
            // The connection went away: give the slot back.
            return;
        }
        let index = token.conn;
        if granted {
            self.send_claim(index);
        } else {
            self.metrics.quota_rejected(Quota::SessionsPerName);
            let f = over_quota(
                Quota::SessionsPerName,
                ReasonCode::QUOTA_EXCEEDED,
                "too many sessions for this authentication name (maxClientSessionsPerAuthenticationName)",
            );
            self.refuse_claiming(index, f, now);
        }
    }

    /// The client id's session belongs to another authentication name.
    pub(crate) fn handle_claim_refused(&mut self, client_id: Str, token: ConnToken, now: Instant) {
        let resolved = self.resolve_pending_claim(&client_id, token);
        // Copies forwarded for a session that will not come here.
        if let Some(r) = &resolved {
            self.stats.dropped_no_session += r.forwarded.len() as u64;
        }
        if self.claiming(token) {
            let index = token.conn;
            self.release_name(index);
            let f = fail(
                ReasonCode::NOT_AUTHORIZED,
                "the session of this client id belongs to another authentication name",
            );
            self.refuse_claiming(index, f, now);
        }
        self.after_claim(client_id, resolved, now);
    }

    pub(super) fn claiming(&self, token: ConnToken) -> bool {
        self.conn_live(token)
            && matches!(
                self.conns.get(token.conn).map(|c| &c.state),
                Some(ConnState::Claiming { .. })
            )
    }

    /// Refuses a CONNECT whose session could not be obtained: CONNACK with `f.reason` (0x87
    /// for another name's session, 0x97 over the sessions-per-name quota).
    pub(super) fn refuse_claiming(&mut self, index: ConnId, f: Failure, now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        warn!(client_id = %conn.client_id, peer = %conn.peer, reason = %f.reason, quota = f.quota.map(Quota::label), "CONNECT refused: {}", f.message);
        write_connack_refusal(conn, &f, &self.metrics);
        self.close_conn(index, false, now);
    }

    /// Gives back the connection's name slot (its session will not exist).
    pub(super) fn release_name(&mut self, index: ConnId) {
        let Some(conn) = self.conns.get(index) else {
            return;
        };
        if let Some(name) = conn.owner.clone() {
            let client_id = conn.client_id.clone();
            let to = self.directory_shard(name.as_bytes());
            self.send(to, ShardMsg::NameRelease { name, client_id });
        }
    }

    /// The shard whose directory orders the claims of `client_id` (public for tests).
    pub fn directory_shard(&self, client_id: &[u8]) -> ShardId {
        directory_shard_of(client_id, self.shards)
    }

    /// A session restored from the log on this shard, its client id's directory shard:
    /// this shard owns it under `claim`.
    pub(super) fn restore_directory_entry(
        &mut self,
        client_id: Str,
        claim: ConnToken,
        owner: Option<Arc<str>>,
    ) {
        debug_assert_eq!(self.directory_shard(client_id.as_bytes()), self.id);
        let entry = DirEntry {
            shard: self.id,
            claim,
            owner,
        };
        self.claims.directory.insert(client_id.into_bytes(), entry);
    }

    pub(crate) fn handle_claim(
        &mut self,
        client_id: Str,
        shard: ShardId,
        token: ConnToken,
        owner: Option<Arc<str>>,
    ) {
        // A session cannot be taken over by another authentication name: refused here, before
        // anything is kicked, since this shard orders every claim of the client id.
        if let Some(existing) = self.claims.directory.get(client_id.as_bytes())
            && existing.owner.is_some()
            && existing.owner != owner
        {
            self.send(shard, ShardMsg::ClaimRefused { client_id, token });
            return;
        }
        let entry = DirEntry {
            shard,
            claim: token,
            owner: owner.clone(),
        };
        let prev = self
            .claims
            .directory
            .insert(client_id.as_bytes_shared().clone(), entry)
            .map(|e| e.shard);
        match prev {
            None => self.send(
                shard,
                ShardMsg::SessionMoved {
                    client_id,
                    token,
                    session: None,
                    owner,
                },
            ),
            Some(p) if p == shard => self.send(
                shard,
                ShardMsg::ClaimedLocal {
                    client_id,
                    token,
                    owner,
                },
            ),
            Some(p) => self.send(
                p,
                ShardMsg::Takeover {
                    client_id,
                    to: shard,
                    token,
                    owner,
                },
            ),
        }
    }

    pub(crate) fn handle_release(&mut self, client_id: Str, shard: ShardId, claim: ConnToken) {
        if self
            .claims
            .directory
            .get(client_id.as_bytes())
            .is_some_and(|e| e.shard == shard && e.claim == claim)
        {
            self.claims.directory.remove(client_id.as_bytes());
        }
    }

    /// No session will exist for `client_id` here: tell the client-id directory and give back
    /// the authentication name's slot.
    pub(super) fn release_all(
        &mut self,
        client_id: Str,
        claim: ConnToken,
        owner: Option<Arc<str>>,
    ) {
        if let Some(name) = owner {
            let to = self.directory_shard(name.as_bytes());
            self.send(
                to,
                ShardMsg::NameRelease {
                    name,
                    client_id: client_id.clone(),
                },
            );
        }
        self.release_ownership(client_id, claim);
    }

    /// Tells the directory this shard no longer owns `client_id` (as of `claim`).
    pub(crate) fn release_ownership(&mut self, client_id: Str, claim: ConnToken) {
        let dir = self.directory_shard(client_id.as_bytes());
        self.send(
            dir,
            ShardMsg::Release {
                client_id,
                shard: self.id,
                claim,
            },
        );
    }

    pub(crate) fn handle_takeover(
        &mut self,
        client_id: Str,
        to: ShardId,
        token: ConnToken,
        owner: Option<Arc<str>>,
        now: Instant,
    ) {
        // This shard's own claim of the client id is still in flight and the session is not
        // here (it may be on its way): hand over once that claim resolves, or two connections
        // would live. A shard holding the session hands it over at once, so chains of racing
        // claims always end.
        if !self.by_client_id.contains_key(client_id.as_bytes())
            && let Some(pending) = self.claims.pending.get_mut(client_id.as_bytes())
        {
            pending.deferred = Some((to, token, owner));
            return;
        }
        let session = self.take_session(&client_id, now);
        if let Some(moved) = &session {
            self.remember_move(moved, to, now);
        }
        self.send(
            to,
            ShardMsg::SessionMoved {
                client_id,
                token,
                session,
                owner,
            },
        );
    }

    /// A forwarded copy for `client_id`'s session, which is not here: kept for it if this
    /// shard's claim is bringing it (the copy is dropped if this shard handled the message
    /// after the claim started: the claim log has it). Gives it back when there is no claim.
    pub(super) fn keep_forwarded_for_claim(
        &mut self,
        client_id: &Str,
        out: Outgoing,
        targets: u64,
        stamp: Stamp,
    ) -> Option<Outgoing> {
        let me = self.id;
        let Some(pending) = self.claims.pending.get_mut(client_id.as_bytes()) else {
            return Some(out);
        };
        if handled_after(me, targets, stamp, &pending.watermark) {
            self.stats.forwarded_duplicates += 1;
        } else if pending.forwarded.len() < CLAIM_LOG_MAX {
            pending.forwarded.push(out);
        } else {
            self.metrics.dropped(DropCause::ClaimLogFull);
        }
        None
    }

    /// Forgets this shard's pending claim of `client_id` if `token` is it; returns what waited
    /// for it (a takeover by a newer claim, local connections for the same id).
    pub(super) fn resolve_pending_claim(
        &mut self,
        client_id: &Str,
        token: ConnToken,
    ) -> Option<PendingClaim> {
        match self.claims.pending.get(client_id.as_bytes()) {
            Some(p) if p.token == token => self.claims.pending.remove(client_id.as_bytes()),
            _ => None,
        }
    }

    /// Performs what waited for a claim to resolve.
    pub(super) fn after_claim(
        &mut self,
        client_id: Str,
        resolved: Option<PendingClaim>,
        now: Instant,
    ) {
        self.trim_claim_log();
        let Some(resolved) = resolved else { return };
        if let Some((to, next, owner)) = resolved.deferred {
            self.handle_takeover(client_id, to, next, owner, now);
        }
        for queued in resolved.queued {
            if self.claiming(queued) {
                self.send_claim(queued.conn);
            }
        }
    }

    /// The messages of the claim log from position `from` on.
    pub(crate) fn claim_log_since(&self, from: u64) -> Vec<Message> {
        let skip = from.saturating_sub(self.claims.log_base) as usize;
        self.claims.log.iter().skip(skip).cloned().collect()
    }

    /// Drops the claim log's entries no pending claim can still need.
    pub(crate) fn trim_claim_log(&mut self) {
        let keep_from = self.claims.pending.values().map(|p| p.log_from).min();
        let end = self.claims.log_base + self.claims.log.len() as u64;
        let keep_from = keep_from.unwrap_or(end).min(end);
        while self.claims.log_base < keep_from {
            self.claims.log.pop_front();
            self.claims.log_base += 1;
        }
    }
}
