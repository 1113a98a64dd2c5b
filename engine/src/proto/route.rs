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
use std::num::NonZeroU32;
use std::time::Instant;

use bytes::Bytes;
use ringmq_codec::{QoS, Str, SubscriptionOptions, topic};

use crate::ids::SessionId;
use crate::ids::ShardId;
use crate::proto::ShardCore;
use crate::proto::message::Message;
use crate::proto::session::{Outgoing, SubIds};
use crate::shard::mesh::ShardMsg;

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
    pub(super) next: usize,
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
    picks: Vec<(Bytes, Bytes, ShardId)>,
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
            // The session is moving to another shard: keep advertising an ordinary
            // subscription's interest while this shard forwards (see `forward_moved`); the
            // tick withdraws it later. A shared group's interest goes at once, or publishers
            // would keep picking this shard for a member that left.
            if !self.forwarding.defer_withdrawal(&filter, &group) {
                self.broadcast_interest(filter, group, false);
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
    pub(super) fn broadcast_interest(&mut self, filter: Bytes, group: Option<Bytes>, add: bool) {
        let (shards, own) = (self.shards, self.id);
        let me = own;
        for to in ShardId::all(shards).filter(|&to| to != own) {
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
        shard: ShardId,
        add: bool,
    ) {
        let bit = shard.bit();
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
        let stamp = self.forwarding.next_stamp(me);
        self.durable_routed(all_targets, stamp.seq);
        // Sessions that just left this shard: their new shard may not be in `targets` yet.
        if self.forwarding.any() {
            self.forward_moved(&message, all_targets, stamp, now);
        }
        while targets != 0 {
            let to = ShardId::lowest_in(targets);
            targets &= targets - 1;
            if to == me {
                self.deliver_local(&message, now);
            } else {
                self.send(
                    to,
                    ShardMsg::Deliver {
                        message: message.clone(),
                        targets: all_targets,
                        stamp,
                    },
                );
            }
        }
        for (filter, group, shard) in picks.drain(..) {
            if shard == me {
                self.deliver_shared_local(&message, &filter, &group, now);
            } else {
                self.durable_routed_shared(shard, stamp.seq);
                self.send(
                    shard,
                    ShardMsg::DeliverShared {
                        message: message.clone(),
                        filter,
                        group,
                        stamp,
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
        self.claims.log_delivery(message, &self.metrics);
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
}

/// The filter without a `$share/{group}/` prefix: what permissions are checked against.
pub(crate) fn inner_filter(full: &[u8]) -> &[u8] {
    match topic::parse_shared(full) {
        Ok(Some(s)) => s.filter,
        _ => full,
    }
}

/// Splits `$share/{group}/{filter}` into (group, filter); an ordinary filter has no group.
pub(super) fn split_shared(full: &Bytes) -> (Option<Bytes>, Bytes) {
    match topic::parse_shared(full) {
        Ok(Some(s)) => {
            let group = full.slice_ref(s.group);
            let filter = full.slice_ref(s.filter);
            (Some(group), filter)
        }
        _ => (None, full.clone()),
    }
}

/// The shard of the `n`-th set bit of `mask` (n < popcount).
pub(super) fn nth_bit(mut mask: u64, n: u32) -> ShardId {
    debug_assert!(n < mask.count_ones());
    for _ in 0..n {
        mask &= mask - 1;
    }
    ShardId::lowest_in(mask)
}

/// What one session gets of `message` through the ordinary (non-shared) subscriptions in
/// `subs`: one delivery at the highest granted QoS with every matching identifier
/// [MQTT-3.3.4-2..5], No Local applied for `client_id` — or `None` when nothing matches.
pub(super) fn aggregate_for_session<'a>(
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

#[allow(dead_code)]
fn unused(_: Str) {}
