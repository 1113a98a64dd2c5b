//! Sessions that moved to another shard: for a grace period, messages routed here under the
//! old interest are forwarded to the new owner, and withdrawn interests wait for it.

use std::time::Instant;

use bytes::Bytes;
use ringmq_codec::{Str, topic};

use crate::ids::SessionId;
use crate::ids::ShardId;
use crate::proto::ShardCore;
use crate::proto::message::Message;
use crate::proto::route::*;
use crate::shard::mesh::ShardMsg;

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

    /// Where `client_id`'s session went, while its forwarder lasts.
    pub fn next_hop(&self, client_id: &Str, now: Instant) -> Option<ShardId> {
        self.forwarders
            .iter()
            .find(|f| f.client_id == *client_id && f.until > now)
            .map(|f| f.to)
    }

    /// `client_id`'s session arrived here: a forwarder for it (from an earlier stay) must go,
    /// or a late message would bounce between the two shards until the grace ran out.
    pub fn session_arrived(&mut self, client_id: &Str) {
        self.forwarders.retain(|f| f.client_id != *client_id);
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
        if !subs.is_empty() {
            self.forwarding.forwarders.push(Forwarder {
                client_id: session.client_id.clone(),
                to,
                subs,
                until: now + FORWARD_GRACE,
            });
        }
    }

    /// A message reached this shard for subscriptions of a session that has moved: forward it,
    /// unless the publisher's shard also sent it to the session's new shard (then the new shard
    /// has it already). QoS 1/2 messages are therefore neither lost nor doubled by a move.
    pub(crate) fn forward_moved(&mut self, message: &Message, targets: u64, now: Instant) {
        self.forwarding.forwarders.retain(|f| f.until > now);
        let mut sends = Vec::new();
        for f in &self.forwarding.forwarders {
            if targets & (f.to.bit()) != 0 {
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
}
