//! Publish → route → deliver, and SUBSCRIBE/UNSUBSCRIBE.
//!
//! Each shard keeps two tries:
//! - `subs`: its own sessions' subscriptions (filter → sessions, and shared groups → members);
//! - `interest`: for every filter any shard subscribes to, which shards have subscribers
//!   (a bit per shard), per shared group too. Kept in step by `ShardMsg::Interest`, sent when a
//!   shard's first subscriber to a filter arrives or its last one leaves.
//!
//! A PUBLISH is matched against `interest` once; every shard with a matching subscriber gets
//! the message once (the payload `Bytes` shared by reference count) and matches its own
//! `subs`. For each matching shared group the publishing shard picks one shard round-robin,
//! and that shard picks one of its members.

use std::cell::Cell;
use std::num::{NonZeroU16, NonZeroU32};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_codec::{
    Packet, PubResp, Publish, PublishHeader, QoS, QosPid, ReasonCode, Str, SubscriptionOptions,
    Will, topic,
};
use tracing::{debug, info, warn};

use crate::ids::{ConnId, SessionId};
use crate::ops::metrics::{DropCause, ShardMetrics};
use crate::proto::message::Message;
use crate::proto::session::{Inflight, InflightState, Outgoing, SubIds};
use crate::proto::{Failure, ShardCore, fail, write_packet};
use crate::shard::mesh::ShardMsg;
use crate::shard::retain::RetainStore;

/// How long a shard forwards messages for a session that moved away: longer than a message
/// can take to cross the mesh, short enough that few forwarders are ever scanned.
pub(crate) const FORWARD_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Messages kept in a shard's claim log (claims normally resolve within microseconds; beyond
/// this, messages are not kept for sessions on their way).
const CLAIM_LOG_MAX: usize = 16_384;

/// The subscriptions of a session that moved to shard `to`, kept for [`FORWARD_GRACE`].
#[derive(Debug)]
pub struct Forwarder {
    pub client_id: Str,
    pub to: usize,
    pub subs: Vec<(Bytes, crate::proto::session::SubRecord)>,
    pub until: Instant,
}

/// A retained message in a shard's replica; an empty payload is a tombstone (a clear).
#[derive(Debug, Clone)]
pub struct Retained {
    pub seq: u64,
    pub message: Message,
}

/// A subscription of a local session, as stored in the trie.
#[derive(Debug, Clone)]
pub struct LocalSub {
    pub session: SessionId,
    pub options: SubscriptionOptions,
    pub id: Option<NonZeroU32>,
}

#[derive(Debug)]
pub struct SharedGroup {
    pub group: Bytes,
    pub members: Vec<LocalSub>,
    next: usize,
}

/// Local subscribers of one filter.
#[derive(Debug, Default)]
pub struct LocalSubs {
    pub normal: Vec<LocalSub>,
    pub shared: Vec<SharedGroup>,
}

impl LocalSubs {
    fn is_empty(&self) -> bool {
        self.normal.is_empty() && self.shared.is_empty()
    }
}

#[derive(Debug)]
pub struct SharedInterest {
    pub group: Bytes,
    pub shards: u64,
    next: Cell<u32>,
}

/// Which shards have subscribers to one filter.
#[derive(Debug, Default)]
pub struct Interest {
    /// Full filter bytes, kept to name the filter in `DeliverShared`.
    pub filter: Bytes,
    pub shards: u64,
    pub shared: Vec<SharedInterest>,
}

/// One matching subscription while a message is delivered on a shard.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Match {
    session: SessionId,
    qos: QoS,
    retain_as_published: bool,
    id: Option<NonZeroU32>,
}

/// Buffers reused for every message, so routing allocates nothing in steady state.
#[derive(Debug, Default)]
pub struct Scratch {
    matches: Vec<Match>,
    picks: Vec<(Bytes, Bytes, usize)>,
}

pub(crate) fn qos_min(a: QoS, b: QoS) -> QoS {
    a.min(b)
}

impl ShardCore {
    // ---- subscriptions in the tries --------------------------------------------------------

    /// Adds (or updates) `sidx`'s subscription to `full_filter` (maybe `$share/g/f`).
    pub(crate) fn add_local_sub(
        &mut self,
        full_filter: &Bytes,
        sidx: SessionId,
        options: SubscriptionOptions,
        id: Option<NonZeroU32>,
    ) {
        let (group, filter) = split_shared(full_filter);
        let entry = self.subs.get_or_insert_with(&filter, LocalSubs::default);
        let sub = LocalSub {
            session: sidx,
            options,
            id,
        };
        let first = match &group {
            None => match entry.normal.iter_mut().find(|s| s.session == sidx) {
                Some(existing) => {
                    *existing = sub;
                    false
                }
                None => {
                    entry.normal.push(sub);
                    entry.normal.len() == 1
                }
            },
            Some(g) => {
                let pos = match entry.shared.iter().position(|x| x.group == g) {
                    Some(p) => p,
                    None => {
                        entry.shared.push(SharedGroup {
                            group: g.clone(),
                            members: Vec::new(),
                            next: 0,
                        });
                        entry.shared.len() - 1
                    }
                };
                let members = &mut entry.shared[pos].members;
                match members.iter_mut().find(|s| s.session == sidx) {
                    Some(existing) => {
                        *existing = sub;
                        false
                    }
                    None => {
                        members.push(sub);
                        members.len() == 1
                    }
                }
            }
        };
        if first {
            self.broadcast_interest(filter, group, true);
        }
    }

    pub(crate) fn remove_local_sub(&mut self, full_filter: &Bytes, sidx: SessionId) {
        let (group, filter) = split_shared(full_filter);
        let Some(entry) = self.subs.get_mut(&filter) else {
            return;
        };
        let last = match &group {
            None => {
                let before = entry.normal.len();
                entry.normal.retain(|s| s.session != sidx);
                before != entry.normal.len() && entry.normal.is_empty()
            }
            Some(g) => match entry.shared.iter().position(|x| x.group == g) {
                Some(pos) => {
                    let members = &mut entry.shared[pos].members;
                    let before = members.len();
                    members.retain(|s| s.session != sidx);
                    let emptied = before != members.len() && members.is_empty();
                    if members.is_empty() {
                        entry.shared.remove(pos);
                    }
                    emptied
                }
                None => false,
            },
        };
        if entry.is_empty() {
            self.subs.remove(&filter);
        }
        if last {
            match (self.moving_until, &group) {
                // The session is moving to another shard: keep advertising an ordinary
                // subscription's interest while this shard forwards (see `forward_moved`);
                // `on_tick` withdraws it later. A shared group's interest goes at once, or
                // publishers would keep picking this shard for a member that left.
                (Some(until), None) => self.deferred_withdrawals.push((filter, group, until)),
                _ => self.broadcast_interest(filter, group, false),
            }
        }
    }

    /// Tells every shard that this one has (or no longer has) subscribers to `filter`.
    ///
    /// This shard's own entry changes at once, not through its local inbox: that inbox is
    /// drained only after every packet of a read was handled, so a PUBLISH right behind the
    /// SUBSCRIBE in the same read (or in input held while the session was claimed) was routed
    /// past the new subscription and lost, although its SUBACK went out first (issue 12).
    /// Only this shard writes its own bit, so applying it early reorders nothing. The other
    /// shards still learn it through the mesh (flushed after the read, before its output is
    /// written: `plain_pump::handle_input`).
    fn broadcast_interest(&mut self, filter: Bytes, group: Option<Bytes>, add: bool) {
        let (shards, own) = (self.shards, self.id);
        let me = own as u16;
        for to in (0..shards).filter(|&to| to != own) {
            self.send(
                to,
                ShardMsg::Interest {
                    filter: filter.clone(),
                    group: group.clone(),
                    shard: me,
                    add,
                },
            );
        }
        self.apply_interest(filter, group, me, add);
    }

    pub(crate) fn apply_interest(
        &mut self,
        filter: Bytes,
        group: Option<Bytes>,
        shard: u16,
        add: bool,
    ) {
        let bit = 1u64 << shard;
        let entry = self.interest.get_or_insert_with(&filter, || Interest {
            filter: filter.clone(),
            ..Default::default()
        });
        match group {
            None if add => entry.shards |= bit,
            None => entry.shards &= !bit,
            Some(g) => {
                let pos = entry.shared.iter().position(|s| s.group == g);
                match (pos, add) {
                    (Some(p), true) => entry.shared[p].shards |= bit,
                    (None, true) => entry.shared.push(SharedInterest {
                        group: g,
                        shards: bit,
                        next: Cell::new(0),
                    }),
                    (Some(p), false) => {
                        entry.shared[p].shards &= !bit;
                        if entry.shared[p].shards == 0 {
                            entry.shared.remove(p);
                        }
                    }
                    (None, false) => {}
                }
            }
        }
        if entry.shards == 0 && entry.shared.is_empty() {
            self.interest.remove(&filter);
        }
    }

    // ---- PUBLISH from a client -------------------------------------------------------------

    pub(crate) fn on_publish(
        &mut self,
        index: ConnId,
        p: Publish,
        now: Instant,
    ) -> Result<(), Failure> {
        let max_levels = self.limits.max_topic_levels;
        let max_len = self.limits.max_topic_length;
        let receive_maximum = self.limits.receive_maximum;
        let max_alias = self.limits.topic_alias_maximum;
        let Some(conn) = self.conns.get_mut(index) else {
            return Ok(());
        };
        if !p.properties.subscription_ids.is_empty() {
            return Err(fail(
                ReasonCode::PROTOCOL_ERROR,
                "[MQTT-3.3.4-6] PUBLISH from a client carries a Subscription Identifier",
            ));
        }
        // Topic alias [MQTT-3.3.2-7..12].
        let topic = match p.properties.topic_alias {
            Some(alias) => {
                let slot = usize::from(alias.get()) - 1;
                if slot >= usize::from(max_alias) {
                    return Err(fail(
                        ReasonCode::TOPIC_ALIAS_INVALID,
                        "[MQTT-3.3.2-9] topic alias above Topic Alias Maximum",
                    ));
                }
                if p.topic.is_empty() {
                    match conn
                        .extra()
                        .and_then(|e| e.aliases_in.get(slot))
                        .and_then(Option::as_ref)
                    {
                        Some(t) => t.clone(),
                        None => {
                            return Err(fail(
                                ReasonCode::PROTOCOL_ERROR,
                                "[MQTT-3.3.4] topic alias not mapped and topic name empty",
                            ));
                        }
                    }
                } else {
                    // The table grows on first use: idle connections carry none.
                    let aliases = &mut conn.extra_mut().aliases_in;
                    if aliases.len() <= slot {
                        aliases.resize(slot + 1, None);
                    }
                    aliases[slot] = Some(p.topic.clone());
                    p.topic.clone()
                }
            }
            None => p.topic.clone(),
        };
        let qos = p.qos_pid.qos();
        let client_id = conn.client_id.clone();
        let Some(sidx) = conn.session else {
            return Ok(());
        };

        let authorized = conn.may_publish(topic.as_bytes());
        let refusal =
            if topic.len() > max_len || topic::levels(topic.as_bytes()).count() > max_levels {
                Some((
                    ReasonCode::TOPIC_NAME_INVALID,
                    "topic exceeds max_topic_length or max_topic_levels",
                ))
            } else if !authorized {
                Some((ReasonCode::NOT_AUTHORIZED, "publish not authorized"))
            } else if topic.as_bytes().starts_with(b"$SYS") {
                Some((
                    ReasonCode::NOT_AUTHORIZED,
                    "clients may not publish to $SYS topics",
                ))
            } else if p.properties.payload_format_utf8 == Some(true)
                && std::str::from_utf8(&p.payload).is_err()
            {
                Some((
                    ReasonCode::PAYLOAD_FORMAT_INVALID,
                    "[MQTT-3.3.2-4] payload is not UTF-8",
                ))
            } else {
                None
            };

        if let QosPid::ExactlyOnce(id) = p.qos_pid {
            let Some(s) = self.sessions.get_mut(sidx) else {
                return Ok(());
            };
            if s.incoming_qos2.contains(&id.get()) {
                // A resend of a message already received: acknowledge only [MQTT-4.3.3-10].
                let conn = self
                    .conns
                    .get_mut(index)
                    .ok_or_else(|| fail(ReasonCode::UNSPECIFIED_ERROR, "gone"))?;
                write_packet(conn, &Packet::PubRec(PubResp::new(id, ReasonCode::SUCCESS)));
                return Ok(());
            }
            if refusal.is_none() && s.incoming_qos2.len() >= usize::from(receive_maximum) {
                return Err(fail(
                    ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                    "[MQTT-3.3.4-9] more QoS 2 PUBLISH in flight than Receive Maximum",
                ));
            }
        }

        if let Some((reason, why)) = refusal {
            if reason == ReasonCode::NOT_AUTHORIZED {
                self.metrics.dropped(DropCause::NotAuthorized);
                info!(client_id = %client_id, topic = %topic, qos = ?qos, "publish denied: {why}");
            } else {
                debug!(client_id = %client_id, topic = %topic, reason = %reason, "publish refused: {why}");
            }
            let props = self.ack_properties(index, why);
            let conn = self
                .conns
                .get_mut(index)
                .ok_or_else(|| fail(ReasonCode::UNSPECIFIED_ERROR, "gone"))?;
            let ack = |id| PubResp {
                packet_id: id,
                reason_code: reason,
                properties: props.clone(),
            };
            match p.qos_pid {
                QosPid::AtMostOnce => {}
                QosPid::AtLeastOnce(id) if conn.version.is_v5() => {
                    write_packet(conn, &Packet::PubAck(ack(id)))
                }
                QosPid::ExactlyOnce(id) if conn.version.is_v5() => {
                    write_packet(conn, &Packet::PubRec(ack(id)))
                }
                // 3.1.1 has no negative acknowledgement: an unauthorized publish is
                // acknowledged normally and dropped (as Mosquitto does), so the client does not
                // resend it forever; any other refusal closes the connection [MQTT-3.3.5-2].
                QosPid::AtLeastOnce(id) if reason == ReasonCode::NOT_AUTHORIZED => {
                    write_packet(conn, &Packet::PubAck(PubResp::new(id, ReasonCode::SUCCESS)))
                }
                QosPid::ExactlyOnce(id) if reason == ReasonCode::NOT_AUTHORIZED => {
                    write_packet(conn, &Packet::PubRec(PubResp::new(id, ReasonCode::SUCCESS)));
                    // The PUBREL that follows completes normally.
                    if let Some(s) = self.sessions.get_mut(sidx) {
                        s.incoming_qos2.insert(id.get());
                    }
                }
                _ => return Err(fail(reason, why)),
            }
            return Ok(());
        }

        let mut properties = p.properties;
        properties.topic_alias = None;
        let expires_at = properties
            .message_expiry_secs
            .map(|s| now + Duration::from_secs(u64::from(s)));
        let message = Message {
            topic,
            payload: p.payload,
            qos,
            retain: p.retain,
            properties,
            expires_at,
            origin: client_id.into_bytes(),
        };
        self.metrics.message_in(qos);
        if message.retain {
            self.retain_everywhere(&message);
        }
        self.route(message, now);

        let conn = self
            .conns
            .get_mut(index)
            .ok_or_else(|| fail(ReasonCode::UNSPECIFIED_ERROR, "gone"))?;
        match p.qos_pid {
            QosPid::AtMostOnce => {}
            QosPid::AtLeastOnce(id) => {
                write_packet(conn, &Packet::PubAck(PubResp::new(id, ReasonCode::SUCCESS)))
            }
            QosPid::ExactlyOnce(id) => {
                if let Some(s) = self.sessions.get_mut(sidx) {
                    s.incoming_qos2.insert(id.get());
                }
                write_packet(conn, &Packet::PubRec(PubResp::new(id, ReasonCode::SUCCESS)));
            }
        }
        Ok(())
    }

    /// Stores (or clears, for an empty payload [MQTT-3.3.1-6]) the retained message on every
    /// shard's replica.
    pub(crate) fn retain_everywhere(&mut self, message: &Message) {
        // The store keeps it indefinitely: one compact copy, shared by every replica.
        let message = message.compact();
        let seq = self.next_retain_seq();
        for to in 0..self.shards {
            if to != self.id {
                self.send(
                    to,
                    ShardMsg::Retain {
                        message: message.clone(),
                        seq,
                    },
                );
            }
        }
        self.apply_retain(message, seq);
    }

    /// Applies a retained update to this shard's replica. Replicas converge whatever order
    /// concurrent updates arrive in: each topic keeps the update with the highest sequence
    /// number (one counter for all shards), and a clear stays as a tombstone so an older
    /// update arriving later cannot bring the topic back. Applied locally first, so a client
    /// that saw its PUBACK and then subscribes finds its own retained message.
    pub(crate) fn apply_retain(&mut self, message: Message, seq: u64) {
        let current = self.retained.get(message.topic.as_bytes());
        if current.is_some_and(|r| r.seq > seq) {
            return;
        }
        let was_live = current.is_some_and(|r| !r.message.payload.is_empty());
        let is_live = !message.payload.is_empty();
        let topic = message.topic.clone();
        if self
            .retained
            .set(topic.as_bytes(), Retained { seq, message })
            .is_err()
        {
            warn!(topic = %topic, limit = self.limits.max_retained_messages, "retained message dropped: max_retained_messages reached");
            return;
        }
        // The gauge counts what clients retained: not clears, not the broker's `$SYS` values.
        if !topic.as_bytes().starts_with(b"$") && was_live != is_live {
            if is_live {
                self.retained_live += 1;
            } else {
                self.retained_live = self.retained_live.saturating_sub(1);
            }
            self.metrics.retained_messages.set(self.retained_live);
        }
    }

    /// Publishes a will message [MQTT-3.1.2-8].
    pub(crate) fn publish_will(&mut self, will: Will, now: Instant) {
        let expires_at = will
            .properties
            .message_expiry_secs
            .map(|s| now + Duration::from_secs(u64::from(s)));
        let props = ringmq_codec::PublishProperties {
            payload_format_utf8: will.properties.payload_format_utf8,
            message_expiry_secs: will.properties.message_expiry_secs,
            content_type: will.properties.content_type,
            response_topic: will.properties.response_topic,
            correlation_data: will.properties.correlation_data,
            user_properties: will.properties.user_properties,
            ..Default::default()
        };
        let message = Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: props,
            expires_at,
            origin: Bytes::new(),
        };
        debug!(topic = %message.topic, "publishing will");
        if message.retain {
            self.retain_everywhere(&message);
        }
        self.route(message, now);
    }

    // ---- routing ----------------------------------------------------------------------------

    /// Hands `message` to every shard with a matching subscriber (itself included).
    pub(crate) fn route(&mut self, message: Message, now: Instant) {
        let mut targets = 0u64;
        let mut picks = std::mem::take(&mut self.scratch.picks);
        picks.clear();
        self.interest
            .for_each_match(message.topic.as_bytes(), |interest: &Interest| {
                targets |= interest.shards;
                for g in &interest.shared {
                    let count = g.shards.count_ones();
                    if count == 0 {
                        continue;
                    }
                    let n = g.next.get();
                    g.next.set(n.wrapping_add(1));
                    let shard = nth_bit(g.shards, n % count);
                    picks.push((interest.filter.clone(), g.group.clone(), shard));
                }
            });
        let me = self.id;
        let all_targets = targets;
        // Sessions that just left this shard: their new shard may not be in `targets` yet.
        if !self.forwarders.is_empty() {
            self.forward_moved(&message, all_targets, now);
        }
        while targets != 0 {
            let to = targets.trailing_zeros() as usize;
            targets &= targets - 1;
            if to == me {
                self.deliver_local(&message, now);
            } else {
                self.send(
                    to,
                    ShardMsg::Deliver {
                        message: message.clone(),
                        targets: all_targets,
                    },
                );
            }
        }
        for (filter, group, shard) in picks.drain(..) {
            if shard == me {
                self.deliver_shared_local(&message, &filter, &group, now);
            } else {
                self.send(
                    shard,
                    ShardMsg::DeliverShared {
                        message: message.clone(),
                        filter,
                        group,
                    },
                );
            }
        }
        self.scratch.picks = picks;
    }

    /// Delivers to this shard's non-shared subscriptions: once per session, at the highest
    /// granted QoS, with every matching subscription id [MQTT-3.3.4-2..5].
    pub(crate) fn deliver_local(&mut self, message: &Message, now: Instant) {
        // A session may be on its way here for a claim in flight; publishers can already
        // count this shard in (from an earlier stay). Keep the message for it (replayed when
        // it lands, `replay_for_arrived`).
        if !self.pending_claims.is_empty() && self.claim_log.len() < CLAIM_LOG_MAX {
            self.claim_log.push_back(message.clone());
        }
        let mut matches = std::mem::take(&mut self.scratch.matches);
        matches.clear();
        let sessions = &self.sessions;
        self.subs
            .for_each_match(message.topic.as_bytes(), |subs: &LocalSubs| {
                for s in &subs.normal {
                    if s.options.no_local
                        && !message.origin.is_empty()
                        && sessions
                            .get(s.session)
                            .is_some_and(|x| x.client_id.as_bytes() == &message.origin[..])
                    {
                        continue; // [MQTT-3.8.3-3]
                    }
                    matches.push(Match {
                        session: s.session,
                        qos: qos_min(s.options.qos, message.qos),
                        retain_as_published: s.options.retain_as_published,
                        id: s.id,
                    });
                }
            });
        matches.sort_unstable_by_key(|m| m.session);
        let mut i = 0;
        while i < matches.len() {
            let session = matches[i].session;
            let mut qos = QoS::AtMostOnce;
            let mut retain = false;
            let mut ids = SubIds::new();
            while i < matches.len() && matches[i].session == session {
                let m = matches[i];
                qos = qos.max(m.qos);
                retain |= m.retain_as_published && message.retain;
                if let Some(id) = m.id {
                    ids.push(id);
                }
                i += 1;
            }
            let out = Outgoing {
                message: message.clone(),
                qos,
                retain,
                sub_ids: ids,
            };
            self.deliver_to_session(session, out, now);
        }
        matches.clear();
        self.scratch.matches = matches;
    }

    /// Withdraws interests kept during moves, once their grace has passed, unless local
    /// subscribers came back meanwhile.
    pub(crate) fn withdraw_deferred_interests(&mut self, now: Instant) {
        if self.deferred_withdrawals.is_empty() {
            return;
        }
        let due: Vec<_> = {
            let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred_withdrawals)
                .into_iter()
                .partition(|(_, _, until)| *until <= now);
            self.deferred_withdrawals = keep;
            due
        };
        for (filter, group, _) in due {
            let still = self.subs.get(&filter).is_some_and(|e| match &group {
                None => !e.normal.is_empty(),
                Some(g) => e
                    .shared
                    .iter()
                    .any(|x| x.group == g && !x.members.is_empty()),
            });
            if !still {
                self.broadcast_interest(filter, group, false);
            }
        }
    }

    /// Remembers the subscriptions of a session that moved to `to`.
    pub(crate) fn remember_move(
        &mut self,
        session: &crate::proto::session::Session,
        to: u16,
        now: Instant,
    ) {
        let subs: Vec<_> = session
            .subscriptions
            .iter()
            .filter(|(f, _)| matches!(topic::parse_shared(f), Ok(None)))
            .map(|(f, r)| (f.clone(), r.clone()))
            .collect();
        if !subs.is_empty() {
            self.forwarders.push(Forwarder {
                client_id: session.client_id.clone(),
                to: usize::from(to),
                subs,
                until: now + FORWARD_GRACE,
            });
        }
    }

    /// A message reached this shard for subscriptions of a session that has moved: forward it,
    /// unless the publisher's shard also sent it to the session's new shard (then the new shard
    /// has it already). QoS 1/2 messages are therefore neither lost nor doubled by a move.
    pub(crate) fn forward_moved(&mut self, message: &Message, targets: u64, now: Instant) {
        self.forwarders.retain(|f| f.until > now);
        let mut sends = Vec::new();
        for f in &self.forwarders {
            if targets & (1u64 << f.to) != 0 {
                continue;
            }
            let subs = f.subs.iter().map(|(filter, rec)| (filter, rec));
            if let Some(out) = aggregate_for_session(subs, message, &f.client_id) {
                sends.push((
                    f.to,
                    ShardMsg::DeliverTo {
                        client_id: f.client_id.clone(),
                        out,
                        hops: 1,
                    },
                ));
            }
        }
        for (to, msg) in sends {
            self.stats.forwarded_after_move += 1;
            self.send(to, msg);
        }
    }

    /// Delivers to a session that just moved here the messages this shard delivered while it
    /// was on its way (they matched none of its subscriptions then).
    pub(crate) fn replay_for_arrived(
        &mut self,
        sidx: SessionId,
        buffered: Vec<Message>,
        now: Instant,
    ) {
        for message in buffered {
            let Some(session) = self.sessions.get(sidx) else {
                return;
            };
            if let Some(out) =
                aggregate_for_session(session.subscriptions.iter(), &message, &session.client_id)
            {
                self.deliver_to_session(sidx, out, now);
            }
        }
    }

    /// The messages of the claim log from position `from` on.
    pub(crate) fn claim_log_since(&self, from: u64) -> Vec<Message> {
        let skip = from.saturating_sub(self.claim_log_base) as usize;
        self.claim_log.iter().skip(skip).cloned().collect()
    }

    /// Drops the claim log's entries no pending claim can still need.
    pub(crate) fn trim_claim_log(&mut self) {
        let keep_from = self.pending_claims.values().map(|p| p.log_from).min();
        let end = self.claim_log_base + self.claim_log.len() as u64;
        let keep_from = keep_from.unwrap_or(end).min(end);
        while self.claim_log_base < keep_from {
            self.claim_log.pop_front();
            self.claim_log_base += 1;
        }
    }

    /// A forwarded delivery for a session that moved here (or moved on again).
    pub(crate) fn on_deliver_to(&mut self, client_id: Str, out: Outgoing, hops: u8, now: Instant) {
        if let Some(&sidx) = self.by_client_id.get(client_id.as_bytes()) {
            // Only if the session, as it is now, still subscribes to a matching filter: a clean
            // start or an unsubscribe since the move ends the old subscriptions.
            let topic = out.message.topic.as_bytes();
            let subscribed = self.sessions.get(sidx).is_some_and(|s| {
                s.subscriptions
                    .keys()
                    .any(|f| matches!(topic::parse_shared(f), Ok(None)) && topic::matches(f, topic))
            });
            if subscribed {
                self.deliver_to_session(sidx, out, now);
            } else {
                self.stats.dropped_no_session += 1;
            }
            return;
        }
        let next = self
            .forwarders
            .iter()
            .find(|f| f.client_id == client_id && f.until > now)
            .map(|f| f.to);
        match next {
            Some(to) if usize::from(hops) < self.shards => {
                let hops = hops.saturating_add(1);
                self.send(
                    to,
                    ShardMsg::DeliverTo {
                        client_id,
                        out,
                        hops,
                    },
                )
            }
            Some(_) => {
                // Forwarders never form a cycle (a session's arrival removes its shard's old
                // forwarder); should one appear, the message is dropped and counted.
                debug_assert!(false, "a forwarded message went round the shards");
                self.stats.dropped_no_session += 1;
            }
            None => self.stats.dropped_no_session += 1,
        }
    }

    /// Delivers to one member of a local shared group, preferring connected members.
    pub(crate) fn deliver_shared_local(
        &mut self,
        message: &Message,
        filter: &Bytes,
        group: &Bytes,
        now: Instant,
    ) {
        let sessions = &self.sessions;
        let Some(entry) = self.subs.get_mut(filter) else {
            return;
        };
        let Some(g) = entry.shared.iter_mut().find(|g| g.group == group) else {
            return;
        };
        let n = g.members.len();
        if n == 0 {
            return;
        }
        let mut chosen = g.next % n;
        for k in 0..n {
            let idx = (g.next + k) % n;
            if sessions
                .get(g.members[idx].session)
                .is_some_and(|s| s.conn.is_some())
            {
                chosen = idx;
                break;
            }
        }
        g.next = chosen + 1;
        let member = g.members[chosen].clone();
        let mut ids = SubIds::new();
        if let Some(id) = member.id {
            ids.push(id);
        }
        let out = Outgoing {
            message: message.clone(),
            qos: qos_min(member.options.qos, message.qos),
            retain: member.options.retain_as_published && message.retain,
            sub_ids: ids,
        };
        self.deliver_to_session(member.session, out, now);
    }

    /// Sends now if the session is connected and its window allows, else queues (QoS 1/2)
    /// or drops (QoS 0 to an offline session, as Mosquitto does by default).
    pub(crate) fn deliver_to_session(&mut self, sidx: SessionId, out: Outgoing, now: Instant) {
        if out.message.is_expired(now) {
            self.metrics.dropped(DropCause::Expired);
            return;
        }
        let Some(session) = self.sessions.get_mut(sidx) else {
            return;
        };
        let (max_msgs, max_bytes) = (session.max_queued_messages, session.max_queued_bytes);
        let conn = session
            .conn
            .and_then(|c| self.conns.get_mut(c))
            .filter(|c| c.is_connected());
        let Some(conn) = conn else {
            if out.qos != QoS::AtMostOnce && !session.enqueue(out, max_msgs, max_bytes) {
                self.metrics.dropped(DropCause::QueueFull);
            }
            return;
        };
        if out.qos == QoS::AtMostOnce {
            // A slow reader's QoS 0 backlog is bounded by max_queued_bytes.
            if conn.pending_bytes() > max_bytes {
                self.metrics.dropped(DropCause::Qos0SlowConsumer);
                return;
            }
            write_publish(conn, &out, QosPid::AtMostOnce, false, now, &self.metrics);
            return;
        }
        if session.inflight.len() >= usize::from(conn.window) || !session.queue.is_empty() {
            if !session.enqueue(out, max_msgs, max_bytes) {
                self.metrics.dropped(DropCause::QueueFull);
            }
            return;
        }
        publish_in_flight(conn, session, out, now, &self.metrics);
    }

    /// Moves queued messages into the in-flight window.
    pub(crate) fn fill_window(&mut self, sidx: SessionId, now: Instant) {
        let Some(session) = self.sessions.get_mut(sidx) else {
            return;
        };
        let Some(conn) = session
            .conn
            .and_then(|c| self.conns.get_mut(c))
            .filter(|c| c.is_connected())
        else {
            return;
        };
        while session.inflight.len() < usize::from(conn.window) {
            let Some(out) = session.dequeue() else { break };
            if out.message.is_expired(now) {
                self.metrics.dropped(DropCause::Expired);
                continue;
            }
            if out.qos == QoS::AtMostOnce {
                write_publish(conn, &out, QosPid::AtMostOnce, false, now, &self.metrics);
                continue;
            }
            publish_in_flight(conn, session, out, now, &self.metrics);
        }
    }

    /// After CONNACK on a resumed session: resend unacknowledged PUBLISH with DUP and
    /// PUBREL [MQTT-4.4.0-1], then queued messages.
    pub(crate) fn resume_delivery(&mut self, sidx: SessionId, now: Instant) {
        let Some(session) = self.sessions.get_mut(sidx) else {
            return;
        };
        let Some(conn) = session.conn.and_then(|c| self.conns.get_mut(c)) else {
            return;
        };
        // Aliases do not survive the connection [MQTT-3.3.2-7]; the map was made new.
        for f in &session.inflight {
            match f.state {
                InflightState::Published => {
                    write_publish(
                        conn,
                        &f.out,
                        QosPid::new(f.out.qos, f.packet_id),
                        true,
                        now,
                        &self.metrics,
                    );
                }
                InflightState::Released => {
                    write_packet(
                        conn,
                        &Packet::PubRel(PubResp::new(f.packet_id, ReasonCode::SUCCESS)),
                    );
                }
            }
        }
        self.fill_window(sidx, now);
    }
}

/// The filter without a `$share/{group}/` prefix: what permissions are checked against.
pub(crate) fn inner_filter(full: &[u8]) -> &[u8] {
    match topic::parse_shared(full) {
        Ok(Some(s)) => s.filter,
        _ => full,
    }
}

/// Splits `$share/{group}/{filter}` into (group, filter); an ordinary filter has no group.
fn split_shared(full: &Bytes) -> (Option<Bytes>, Bytes) {
    match topic::parse_shared(full) {
        Ok(Some(s)) => {
            let group = full.slice_ref(s.group);
            let filter = full.slice_ref(s.filter);
            (Some(group), filter)
        }
        _ => (None, full.clone()),
    }
}

/// The index of the `n`-th set bit of `mask` (n < popcount).
fn nth_bit(mut mask: u64, n: u32) -> usize {
    for _ in 0..n {
        mask &= mask - 1;
    }
    mask.trailing_zeros() as usize
}

/// Sends a QoS 1/2 message under a new packet id and records it in flight (unless it was not
/// sent, e.g. too large for the client).
fn publish_in_flight(
    conn: &mut crate::proto::conn::Conn,
    session: &mut crate::proto::session::Session,
    out: Outgoing,
    now: Instant,
    metrics: &ShardMetrics,
) {
    let id = session.next_packet_id();
    if write_publish(conn, &out, QosPid::new(out.qos, id), false, now, metrics) {
        session.inflight.push_back(Inflight {
            packet_id: id,
            out,
            state: InflightState::Published,
        });
    }
}

/// What one session gets of `message` through the ordinary (non-shared) subscriptions in
/// `subs`: one delivery at the highest granted QoS with every matching identifier
/// [MQTT-3.3.4-2..5], No Local applied for `client_id` — or `None` when nothing matches.
fn aggregate_for_session<'a>(
    subs: impl Iterator<Item = (&'a Bytes, &'a crate::proto::session::SubRecord)>,
    message: &Message,
    client_id: &Str,
) -> Option<Outgoing> {
    let mut qos: Option<QoS> = None;
    let mut retain = false;
    let mut ids = SubIds::new();
    for (filter, rec) in subs {
        if !matches!(topic::parse_shared(filter), Ok(None))
            || !topic::matches(filter, message.topic.as_bytes())
        {
            continue;
        }
        if rec.options.no_local && message.origin == *client_id.as_bytes_shared() {
            continue;
        }
        let q = qos_min(rec.options.qos, message.qos);
        qos = Some(qos.map_or(q, |x| x.max(q)));
        retain |= rec.options.retain_as_published && message.retain;
        if let Some(id) = rec.id {
            ids.push(id);
        }
    }
    qos.map(|qos| Outgoing {
        message: message.clone(),
        qos,
        retain,
        sub_ids: ids,
    })
}

/// Payloads at least this large are queued to the socket as the shared `Bytes` instead of
/// being copied into each subscriber's buffer; smaller ones are cheaper to copy than to
/// write as a separate frame.
pub const PAYLOAD_BY_REFERENCE: usize = 8 * 1024;

/// Encodes one PUBLISH to `conn`: the header (topic or alias, expiry, subscription ids) and
/// the payload. A packet larger than the client's Maximum Packet Size is not sent
/// [MQTT-3.1.2-25]. Returns whether it was written (and counted in `metrics`).
pub(crate) fn write_publish(
    conn: &mut crate::proto::conn::Conn,
    out: &Outgoing,
    qos_pid: QosPid,
    dup: bool,
    now: Instant,
    metrics: &ShardMetrics,
) -> bool {
    let m = &out.message;
    let topic = m.topic.as_bytes();
    // Server → client topic alias: reuse one, or assign one while the client allows more.
    let aliases = conn.extra().map(|e| &e.aliases_out);
    let existing = aliases.and_then(|a| a.get(topic)).copied();
    let in_use = aliases.map_or(0, |a| a.len());
    let new_alias = match existing {
        None if usize::from(conn.client_alias_max) > in_use => NonZeroU16::new(in_use as u16 + 1),
        _ => None,
    };
    let header = PublishHeader {
        dup,
        qos_pid,
        retain: out.retain,
        topic: if existing.is_some() { &[] } else { topic },
        topic_alias: existing.or(new_alias),
        message_expiry_secs: m.remaining_expiry_secs(now),
        subscription_ids: &out.sub_ids,
        forwarded: Some(&m.properties),
    };
    let version = conn.version;
    let len = match header.packet_len(version, m.payload.len()) {
        Ok(len) => len,
        Err(e) => {
            warn!(client_id = %conn.client_id, "cannot encode PUBLISH: {e}");
            return false;
        }
    };
    if len > conn.client_max_packet as usize {
        metrics.dropped(DropCause::TooLarge);
        debug!(client_id = %conn.client_id, len, max = conn.client_max_packet, "message larger than the client's Maximum Packet Size dropped");
        return false;
    }
    let by_reference = m.payload.len() >= PAYLOAD_BY_REFERENCE;
    conn.out.reserve(if by_reference {
        len - m.payload.len()
    } else {
        len
    });
    if let Err(e) = header.encode(version, m.payload.len(), &mut conn.out) {
        warn!(client_id = %conn.client_id, "cannot encode PUBLISH: {e}");
        return false;
    }
    if by_reference {
        conn.push_payload(m.payload.clone());
    } else {
        conn.out.extend_from_slice(&m.payload);
    }
    if let Some(alias) = new_alias {
        conn.extra_mut()
            .aliases_out
            .insert(m.topic.as_bytes_shared().clone(), alias);
    }
    metrics.message_out(qos_pid.qos());
    true
}

#[allow(dead_code)]
fn unused(_: Str) {}
