//! Acknowledgements held until durable: the gates of connections, the release when the log
//! (and, for a PUBACK, every shard the message went to) is durable, the routing stamps each
//! shard reports durable to their senders (`ShardMsg::DurableStamp`), and the removal of the
//! copy a moved session left in another shard's log (`ShardMsg::SessionSettled`).

use super::*;

/// A copy forwarded to a moved session's new shard, not yet reported durable there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Relay {
    /// The stamp of the message as this shard got it (from its sender).
    pub origin: crate::shard::mesh::Stamp,
    /// The shard the copy went to, and the stamp it carries.
    pub to: crate::ids::ShardId,
    pub relay: u64,
}

impl ShardCore {
    /// The log is on disk up to record `upto`: held output goes out, and the senders of what
    /// those records hold learn it.
    pub(crate) fn handle_durable(&mut self, upto: u64) {
        let Some(d) = self.durable.as_deref_mut() else {
            return;
        };
        assert!(
            upto <= d.emitted,
            "durable up to {upto}, but only {} records were emitted",
            d.emitted
        );
        d.durable = d.durable.max(upto);
        let mut publish = None;
        while d.stamp_marks.front().is_some_and(|(n, _)| *n <= d.durable) {
            publish = d.stamp_marks.pop_front().map(|(_, seen)| seen);
        }
        if let Some(seen) = publish {
            self.publish_stamps(&seen);
        }
        self.send_settles();
        self.release_held();
    }

    /// Tells the shards sessions moved away from that their new copies are durable.
    fn send_settles(&mut self) {
        let Some(d) = self.durable.as_deref_mut() else {
            return;
        };
        let durable = d.durable;
        let mut ready = Vec::new();
        while d.settles.front().is_some_and(|s| s.3 <= durable) {
            if let Some(s) = d.settles.pop_front() {
                ready.push(s);
            }
        }
        for (client_id, generation, from, _) in ready {
            self.send(
                from,
                crate::shard::mesh::ShardMsg::SessionSettled {
                    client_id,
                    generation,
                },
            );
        }
    }

    /// The message just routed: its targets and stamp (persistence on).
    pub(crate) fn durable_routed(&mut self, targets: u64, seq: u64) {
        if let Some(d) = self.durable.as_deref_mut() {
            d.routed = Some((targets, seq));
        }
    }

    /// The message just routed also went to a shared-subscription member on `shard`.
    pub(crate) fn durable_routed_shared(&mut self, shard: crate::ids::ShardId, seq: u64) {
        if let Some(d) = self.durable.as_deref_mut() {
            let (targets, _) = d.routed.get_or_insert((0, seq));
            *targets |= 1u64 << shard.slot();
        }
    }

    /// A shared-subscription delivery stamped `stamp` is handled here (counted with the
    /// stamps this shard publishes as durable; the forwarding watermark counts only ordinary
    /// deliveries).
    pub(crate) fn durable_note_shared(&mut self, stamp: crate::shard::mesh::Stamp) {
        if let Some(d) = self.durable.as_deref_mut() {
            let slot = stamp.from.slot();
            if d.shared_seen.len() <= slot {
                d.shared_seen.resize(slot + 1, 0);
            }
            d.shared_seen[slot] = d.shared_seen[slot].max(stamp.seq);
        }
    }

    /// The targets and stamp of the message routed last, once.
    pub(crate) fn take_routed(&mut self) -> Option<(u64, u64)> {
        self.durable.as_deref_mut().and_then(|d| d.routed.take())
    }

    /// After every input: the stamps handled from other shards are published once the records
    /// they caused are durable (at once when none are pending), and held output whose
    /// conditions other shards met meanwhile goes out.
    pub(crate) fn durable_after_input(&mut self) {
        let Some(d) = self.durable.as_deref_mut() else {
            return;
        };
        let ordinary = self.forwarding.seen();
        let n = ordinary.len().max(d.shared_seen.len());
        // What this shard has handled from each shard, ordinary and shared deliveries alike
        // (each sender's lane is FIFO, so both are complete up to their maximum).
        let seen_at = |i: usize| {
            let a = ordinary.get(i).copied().unwrap_or(0);
            a.max(d.shared_seen.get(i).copied().unwrap_or(0))
        };
        let changed = (0..n).any(|i| d.stamps_published.get(i).is_none_or(|&p| p < seen_at(i)));
        if changed {
            let seen: Vec<u64> = (0..n).map(seen_at).collect();
            if d.emitted <= d.durable && d.stamp_marks.is_empty() {
                self.publish_stamps(&seen);
            } else if d.stamp_marks.back().is_none_or(|(_, s)| *s != seen) {
                if d.stamp_marks.len() < MAX_STAMP_MARKS {
                    d.stamp_marks.push_back((d.emitted, seen));
                } else if let Some(back) = d.stamp_marks.back_mut() {
                    // At the bound (a log that stopped flushing): the last mark covers more,
                    // which only delays the release of what it covers.
                    *back = (d.emitted, seen);
                }
            }
        }
        if self.durable.as_deref().is_some_and(|d| d.remote_waits) {
            self.release_held();
        }
    }

    /// Tells each sender how far this shard has on disk what it handled from it — short of
    /// a message it forwarded to a moved session whose new shard has not reported the copy
    /// durable yet (`relays`).
    fn publish_stamps(&mut self, seen: &[u64]) {
        let me = self.id;
        let Some(d) = self.durable.as_deref_mut() else {
            return;
        };
        if d.stamps_published.len() < seen.len() {
            d.stamps_published.resize(seen.len(), 0);
        }
        d.stamps_ready.clear();
        d.stamps_ready.extend_from_slice(seen);
        let mut to_send = Vec::new();
        for (i, &s) in seen.iter().enumerate() {
            let p = crate::ids::ShardId::from_slot(i);
            // Below the oldest stamp from `p` whose forwarded copy is not durable yet.
            let cap = d
                .relays
                .iter()
                .filter(|r| r.origin.from == p)
                .map(|r| r.origin.seq - 1)
                .min()
                .unwrap_or(u64::MAX);
            let s = s.min(cap);
            if p != me && d.stamps_published[i] < s {
                d.stamps_published[i] = s;
                to_send.push((p, s));
            }
        }
        for (p, seq) in to_send {
            self.send(
                p,
                crate::shard::mesh::ShardMsg::DurableStamp { from: me, seq },
            );
        }
    }

    /// Shard `from` has on disk what it handled from this shard up to stamp `seq`.
    pub(crate) fn handle_durable_stamp(&mut self, from: crate::ids::ShardId, seq: u64) {
        let Some(d) = self.durable.as_deref_mut() else {
            return;
        };
        let slot = from.slot();
        if d.remote_durable.len() <= slot {
            d.remote_durable.resize(slot + 1, 0);
        }
        d.remote_durable[slot] = d.remote_durable[slot].max(seq);
        // Forwarded copies `from` now has on disk: the stamps they held back may go out.
        let before = d.relays.len();
        d.relays.retain(|r| !(r.to == from && r.relay <= seq));
        if d.relays.len() != before {
            let ready = std::mem::take(&mut d.stamps_ready);
            self.publish_stamps(&ready);
        }
    }

    /// A copy of the message stamped `origin` is forwarded to `to` (a session moved there):
    /// returns the stamp the copy carries (`ShardMsg::DeliverTo::relay`), which `to` reports
    /// durable like a delivery of this shard's own. Until it does, this shard's report of
    /// `origin` to its sender waits; for a message routed here (`origin` is this shard's),
    /// the publisher's acknowledgement waits for `to` directly. `None` without persistence.
    pub(crate) fn durable_relay(
        &mut self,
        origin: crate::shard::mesh::Stamp,
        to: crate::ids::ShardId,
    ) -> Option<crate::shard::mesh::Stamp> {
        self.durable.as_deref()?;
        let me = self.id;
        if origin.from == me {
            self.durable_routed_shared(to, origin.seq);
            return Some(origin);
        }
        let relay = self.forwarding.next_stamp(me);
        let d = self.durable.as_deref_mut()?;
        if d.relays.len() >= MAX_STAMP_MARKS {
            // A log that stopped flushing on `to` for that many forwards: the oldest wait is
            // given up (counted), rather than grow without a bound.
            d.relays.pop_front();
            d.relays_dropped += 1;
        }
        d.relays.push_back(Relay {
            origin,
            to,
            relay: relay.seq,
        });
        Some(relay)
    }

    /// Releases every held connection whose records (here and on other shards) are durable.
    fn release_held(&mut self) {
        if self.durable.as_deref().is_none_or(|d| d.gated.is_empty()) {
            return;
        }
        let Some(d) = self.durable.as_deref_mut() else {
            return;
        };
        let durable = d.durable;
        let remote_durable = &d.remote_durable;
        let mut gated = std::mem::take(&mut d.gated);
        let mut remote_waits = false;
        gated.retain(|&id| {
            let Some(conn) = self.conns.get_mut_quiet(id) else {
                return false;
            };
            let Some(extra) = conn.extra_mut_if_any() else {
                return false;
            };
            let remote_done =
                extra.gate_remote.iter().enumerate().all(|(t, &need)| {
                    need == 0 || remote_durable.get(t).is_some_and(|&r| r >= need)
                });
            if extra.gate <= durable && remote_done {
                extra.gate = 0;
                extra.held = false;
                extra.gate_remote.clear();
                // Touched through `get_mut`: a parked writer is listed and woken.
                let _ = self.conns.get_mut(id);
                return false;
            }
            remote_waits |= !extra.gate_remote.is_empty();
            true
        });
        if let Some(d) = self.durable.as_deref_mut() {
            d.gated = gated;
            d.remote_waits = remote_waits;
        }
    }

    /// The connection is released: nothing of it is held any more.
    pub(crate) fn durable_conn_gone(&mut self, conn: ConnId) {
        if let Some(d) = self.durable.as_deref_mut() {
            d.gated.retain(|&c| c != conn);
        }
    }

    /// Holds the output of `conn` (an acknowledgement was just written) until every record
    /// emitted so far is durable. No-op without storage or when nothing is pending.
    pub(crate) fn gate_output(&mut self, conn: ConnId) {
        self.gate_output_routed(conn, None);
    }

    /// Like [`ShardCore::gate_output`], and also until every other shard in `routed`'s
    /// targets has on disk what it handled from this shard up to `routed`'s stamp.
    pub(crate) fn gate_output_routed(&mut self, conn: ConnId, routed: Option<(u64, u64)>) {
        let me = self.id;
        let shards = self.shards;
        let Some(d) = self.durable.as_deref_mut() else {
            return;
        };
        let remote = routed.map(|(targets, seq)| (targets & !(1u64 << me.slot()), seq));
        let remote = remote.filter(|&(targets, _)| targets != 0);
        let Some(c) = self.conns.get_mut_quiet(conn) else {
            return;
        };
        let already = c.is_held();
        if d.emitted <= d.durable && remote.is_none() && !already {
            return;
        }
        let extra = c.extra_mut();
        if !extra.held {
            d.gated.push(conn);
            extra.held = true;
        }
        extra.gate = extra.gate.max(d.emitted);
        if let Some((mut targets, seq)) = remote {
            if extra.gate_remote.len() < shards {
                extra.gate_remote.resize(shards, 0);
            }
            while targets != 0 {
                let t = targets.trailing_zeros() as usize;
                targets &= targets - 1;
                if let Some(need) = extra.gate_remote.get_mut(t) {
                    *need = (*need).max(seq);
                }
            }
            d.remote_waits = true;
        }
    }

    /// Session `sidx` moved here from `from` and its image was just written: once it is
    /// durable, `from` is told to remove the copy its log still holds (until then that copy is
    /// what a crash would restore).
    pub(crate) fn durable_settle_after_move(&mut self, sidx: SessionId, from: crate::ids::ShardId) {
        let Some(d) = self.durable.as_deref_mut() else {
            return;
        };
        let Some(s) = self.sessions.get(sidx).filter(|s| s.durable) else {
            return;
        };
        if from == self.id {
            return;
        }
        let entry = (s.client_id.clone(), d.last_generation, from, d.emitted);
        if d.settles.len() < MAX_STAMP_MARKS {
            d.settles.push_back(entry);
        }
    }

    /// The copy of `client_id`'s session that this shard's log holds is superseded: a removal
    /// just below the generation of the copy that replaced it (which it cannot remove).
    pub(crate) fn handle_session_settled(&mut self, client_id: Str, generation: u64) {
        let Some(d) = self.durable.as_deref_mut() else {
            return;
        };
        d.simple(Record::SessionRemoved {
            client_id,
            generation: generation.saturating_sub(1),
        });
    }
}
