//! Sessions that moved to another shard: for a grace period, messages routed here under the
//! old interest are forwarded to the new owner, and withdrawn interests wait for it.
//!
//! Exactly one shard must hand each message to a moving session. A session moves from A to B
//! when B claims it: B's claim starts, A gives the session up, it arrives at B. A message the
//! publisher's shard P sent to both A and B can reach each of them at any point of that, since
//! P's lanes to A and to B, and the directory's messages, are separate queues:
//! - at B after the claim started: B keeps it in the claim log and replays it on arrival, or
//!   delivers it to the session present;
//! - at B before the claim started: B had no reason to keep it;
//! - at A before the session left: A delivers it, and the session carries it to B;
//! - at A after the session left: A forwards it to B (`forward_moved`).
//!
//! A forwards every message it gets after the session left; B drops a forwarded copy only if it
//! handled the message itself after its claim started. Both facts are local to B: every
//! routed message carries a [`Stamp`] (P's routing sequence number), P's deliveries to B arrive
//! in that order, and B noted the highest number it had handled from each shard when its claim
//! started (the `watermark`). A stamp above the watermark reached B after the claim started.
//! (A once left out every message whose targets included B, assuming B had it: when the
//! message reached B before B's claim, nobody delivered it — acknowledged QoS 1 messages lost
//! across quick takeovers, engine/tests/takeover_loss.rs.) A shard the session has left again
//! drops a forwarded copy by the same rule, with the watermark of its stay, else passes it on.

use std::time::Instant;

use bytes::Bytes;
use ringmq_codec::{Str, topic};

use crate::ids::SessionId;
use crate::ids::ShardId;
use crate::proto::ShardCore;
use crate::proto::message::Message;
use crate::proto::route::*;
use crate::shard::mesh::{ShardMsg, Stamp};

/// How long a shard forwards messages for a session that moved away: longer than a message
/// can take to cross the mesh, short enough that few forwarders are ever scanned.
pub(crate) const FORWARD_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// The subscriptions of a session that moved to shard `to`, kept for [`FORWARD_GRACE`].
#[derive(Debug)]
pub struct Forwarder {
    pub client_id: Str,
    pub to: ShardId,
    pub subs: Vec<(Bytes, crate::proto::session::SubRecord)>,
    pub until: Instant,
    /// The watermark of the session's stay here (empty: it stayed long, every message this
    /// shard handled reached it).
    pub stay: Vec<u64>,
}

/// Whether a shard with `watermark` (of a claim, or of a stay that ended) handled the message
/// `stamp` itself: it was among the `targets` and came after the watermark — so the session
/// has it from this shard, or this shard forwarded its own copy.
pub(crate) fn handled_after(me: ShardId, targets: u64, stamp: Stamp, watermark: &[u64]) -> bool {
    targets & me.bit() != 0 && stamp.seq > watermark.get(stamp.from.slot()).copied().unwrap_or(0)
}

/// Forwarding state of one shard. Private: only this module reads or changes it.
#[derive(Debug, Default)]
pub(super) struct Forwarding {
    /// Sessions that moved to another shard recently: their subscriptions, so a message routed
    /// here before the move was known is forwarded (see `forward_moved`).
    forwarders: Vec<Forwarder>,
    /// Set while a moving session's subscriptions are removed: their interests are withdrawn
    /// only after the forwarding grace (`deferred`).
    moving_until: Option<Instant>,
    /// Interests (filter, shared group) to withdraw at the instant given.
    deferred: Vec<(Bytes, Option<Bytes>, Instant)>,
    /// This shard's routing sequence number (the last one given out).
    seq: u64,
    /// The highest stamp handled from each shard (this one included), by shard slot.
    seen: Vec<u64>,
    /// The watermark of the claim that brought each session here that arrived by a move, for
    /// as long as it stays (by client id).
    stays: rustc_hash::FxHashMap<Bytes, Vec<u64>>,
}

impl Forwarding {
    /// Whether any session moved away recently (messages may need forwarding).
    pub fn any(&self) -> bool {
        !self.forwarders.is_empty()
    }

    /// A session that was here moves on: interests its removal withdraws wait until `until`.
    pub fn begin_move(&mut self, until: Instant) {
        self.moving_until = Some(until);
    }

    pub fn end_move(&mut self) {
        self.moving_until = None;
    }

    /// The last local subscriber of `filter` left: `true` when the withdrawal is deferred
    /// (a session is moving), `false` when it goes out now.
    pub fn defer_withdrawal(&mut self, filter: &Bytes, group: &Option<Bytes>) -> bool {
        match (self.moving_until, group) {
            (Some(until), None) => {
                self.deferred.push((filter.clone(), None, until));
                true
            }
            _ => false,
        }
    }

    /// Where `client_id`'s session went, while its forwarder lasts, and the watermark of its
    /// stay here.
    pub fn next_hop(&self, client_id: &Str, now: Instant) -> Option<(ShardId, &[u64])> {
        self.forwarders
            .iter()
            .find(|f| f.client_id == *client_id && f.until > now)
            .map(|f| (f.to, f.stay.as_slice()))
    }

    /// The stamp of a message this shard routes now.
    pub fn next_stamp(&mut self, me: ShardId) -> Stamp {
        self.seq += 1;
        self.note(Stamp {
            from: me,
            seq: self.seq,
        });
        Stamp {
            from: me,
            seq: self.seq,
        }
    }

    /// A delivery stamped `stamp` is handled here.
    pub fn note(&mut self, stamp: Stamp) {
        let slot = stamp.from.slot();
        if self.seen.len() <= slot {
            self.seen.resize(slot + 1, 0);
        }
        // Each sender's deliveries arrive in its order (one FIFO lane per sender).
        debug_assert!(self.seen[slot] < stamp.seq, "deliveries out of order");
        self.seen[slot] = self.seen[slot].max(stamp.seq);
    }

    /// The highest stamp handled from each shard, by slot (no copy).
    pub fn seen(&self) -> &[u64] {
        &self.seen
    }

    /// What this shard has handled so far, for a claim starting now.
    pub fn watermark(&self) -> Vec<u64> {
        self.seen.clone()
    }

    /// `client_id`'s session arrived here; `watermark`: of the claim that brought it, when it
    /// moved here (`None`: it was here already). A forwarder for it from an earlier stay must
    /// go, or a late message would bounce between the two shards until the grace ran out.
    pub fn session_arrived(&mut self, client_id: &Str, watermark: Option<Vec<u64>>) {
        self.forwarders.retain(|f| f.client_id != *client_id);
        if let Some(watermark) = watermark {
            self.stays
                .insert(client_id.as_bytes_shared().clone(), watermark);
        }
    }

    /// A session of `client_id` begins or ends here (not by a move): no stay to remember.
    pub fn session_gone(&mut self, client_id: &Str) {
        self.stays.remove(client_id.as_bytes());
    }

    /// Whether the session of `client_id`, here, got the message `stamp` through this shard
    /// already (so a forwarded copy is a duplicate). A session that did not move here got
    /// every message this shard handled.
    pub fn delivered_here(&self, me: ShardId, client_id: &Str, targets: u64, stamp: Stamp) -> bool {
        let watermark = self
            .stays
            .get(client_id.as_bytes())
            .map_or(&[][..], Vec::as_slice);
        handled_after(me, targets, stamp, watermark)
    }

    /// The session of `client_id` leaves: the watermark of its stay, for its forwarder.
    fn take_stay(&mut self, client_id: &Str) -> Vec<u64> {
        self.stays.remove(client_id.as_bytes()).unwrap_or_default()
    }

    /// Client ids with a stay recorded (each must have its session here).
    pub fn stays(&self) -> impl Iterator<Item = &Bytes> {
        self.stays.keys()
    }
}

impl ShardCore {
    /// Withdraws interests kept during moves, once their grace has passed, unless local
    /// subscribers came back meanwhile.
    pub(crate) fn withdraw_deferred_interests(&mut self, now: Instant) {
        if self.forwarding.deferred.is_empty() {
            return;
        }
        let due: Vec<_> = {
            let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.forwarding.deferred)
                .into_iter()
                .partition(|(_, _, until)| *until <= now);
            self.forwarding.deferred = keep;
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
        to: ShardId,
        now: Instant,
    ) {
        let subs: Vec<_> = session
            .subscriptions
            .iter()
            .filter(|(f, _)| matches!(topic::parse_shared(f), Ok(None)))
            .map(|(f, r)| (f.clone(), r.clone()))
            .collect();
        let stay = self.forwarding.take_stay(&session.client_id);
        if !subs.is_empty() {
            self.forwarding.forwarders.push(Forwarder {
                client_id: session.client_id.clone(),
                to,
                subs,
                until: now + FORWARD_GRACE,
                stay,
            });
        }
    }

    /// A message reached this shard for subscriptions of a session that has moved: forward it.
    /// The new shard drops the copy if it handled the message itself after its claim started
    /// (module header), so no QoS 1/2 message is lost by a move. (A message can still reach a
    /// session twice across quick moves: docs/architecture.md, "Messages during a move".)
    pub(crate) fn forward_moved(
        &mut self,
        message: &Message,
        targets: u64,
        stamp: Stamp,
        now: Instant,
    ) {
        self.forwarding.forwarders.retain(|f| f.until > now);
        let mut sends = Vec::new();
        for f in &self.forwarding.forwarders {
            let subs = f.subs.iter().map(|(filter, rec)| (filter, rec));
            if let Some(out) = aggregate_for_session(subs, message, &f.client_id) {
                sends.push((
                    f.to,
                    ShardMsg::DeliverTo {
                        client_id: f.client_id.clone(),
                        out,
                        hops: 1,
                        targets,
                        stamp,
                        relay: None,
                    },
                ));
            }
        }
        for (to, mut msg) in sends {
            if let ShardMsg::DeliverTo { relay, .. } = &mut msg {
                // Persistence on: the publisher's acknowledgement waits for the copy too.
                *relay = self.durable_relay(stamp, to);
            }
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
}
