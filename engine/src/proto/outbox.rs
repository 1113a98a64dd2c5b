//! The mesh from the core's side: handling what other shards sent (bounded per input), the
//! outboxes towards them (bounded, metered), and the per-connection throttle that keeps a
//! publisher faster than its destinations from growing them.

use std::collections::VecDeque;
use std::time::Instant;

use crate::ids::ConnId;
use crate::ids::ShardId;
use crate::proto::*;
use crate::shard::mesh::ShardMsg;

/// Messages one input may send to this shard itself, handled before the input returns
/// ([`ShardCore::drain_local`]); what is left waits for the next input. Each message causes a
/// bounded amount of work, and a read holds a bounded number of packets, so this is not reached
/// in practice; it bounds the loop all the same.
pub const LOCAL_MESSAGES_PER_INPUT: usize = 65_536;

/// Connections throttled on an outbox are read again once it is down to this fraction of the
/// bound (`shard_queue_capacity / THROTTLE_RESUME_DIVISOR`), all at once: see
/// [`ShardCore::conn_throttled`].
pub const THROTTLE_RESUME_DIVISOR: usize = 2;

/// The mesh as one shard sees it. Private: only this module reads or changes it.
#[derive(Debug)]
pub(super) struct Outboxes {
    mesh: Option<Mesh>,
    /// Per destination: data-lane messages not yet accepted by its inbox.
    data: Vec<VecDeque<ShardMsg>>,
    /// Per destination: priority-lane messages (see `mesh.rs`) not yet accepted by its inbox.
    priority: Vec<VecDeque<ShardMsg>>,
    /// Destinations with messages to push (a bit each).
    wake_mask: u64,
    /// Messages to this shard itself, handled before the current input returns.
    local: VecDeque<ShardMsg>,
    /// The connection whose input is being handled: a message it routes into a congested
    /// outbox throttles that connection, and no other.
    reading: Option<ConnId>,
    /// Connections whose input fed a congested outbox: the destination shards (a bit each).
    /// The runtime stops reading them until those outboxes drain
    /// ([`ShardCore::conn_throttled`]); every other connection is read as usual.
    throttled: FxHashMap<ConnId, u64>,
    /// Retained-update sequence without a mesh (a lone core in tests).
    local_retain_seq: u64,
    /// Scratch list of connections a drained outbox released (kept to reuse its capacity).
    released: Vec<ConnId>,
}

impl Outboxes {
    pub fn new(mesh: Option<Mesh>, shards: usize) -> Outboxes {
        Outboxes {
            mesh,
            data: (0..shards).map(|_| VecDeque::new()).collect(),
            priority: (0..shards).map(|_| VecDeque::new()).collect(),
            wake_mask: 0,
            local: VecDeque::new(),
            reading: None,
            throttled: FxHashMap::default(),
            local_retain_seq: 0,
            released: Vec::new(),
        }
    }

    /// Input of `conn` is being handled from now on; returns whose was before (input can nest
    /// when a resolved claim releases another connection's held input).
    pub fn begin_reading(&mut self, conn: ConnId) -> Option<ConnId> {
        self.reading.replace(conn)
    }

    pub fn end_reading(&mut self, previous: Option<ConnId>) {
        self.reading = previous;
    }

    /// Whether the runtime leaves `conn` unread for now (keep alive does not count that time).
    pub fn is_throttled(&self, conn: ConnId) -> bool {
        self.throttled.contains_key(&conn)
    }

    /// The connection is gone.
    pub fn forget(&mut self, conn: ConnId) {
        self.throttled.remove(&conn);
        if self.reading == Some(conn) {
            self.reading = None;
        }
    }

    /// Messages waiting in this shard's inbox (sampled for the gauge).
    pub fn inbox_len(&self, me: ShardId) -> usize {
        self.mesh.as_ref().map_or(0, |m| m.len(me))
    }

    /// Messages waiting in all outboxes, both lanes.
    pub fn depth(&self) -> usize {
        self.data
            .iter()
            .chain(&self.priority)
            .map(VecDeque::len)
            .sum()
    }

    /// Bookkeeping that must hold between inputs.
    pub fn check_invariants(&self, capacity: usize) {
        assert!(self.local.is_empty(), "a message to self left unhandled");
        assert!(self.reading.is_none(), "input attribution left set");
        for (to, (d, p)) in self.data.iter().zip(&self.priority).enumerate() {
            if !d.is_empty() || !p.is_empty() {
                assert!(
                    self.wake_mask & (1 << to) != 0,
                    "outbox {to} holds messages unflagged"
                );
            }
        }
        for (conn, mask) in &self.throttled {
            assert!(*mask != 0, "{conn}: throttled for no destination");
        }
        let _ = capacity;
    }
}

impl ShardCore {
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
    pub(super) fn poll_mesh(&mut self, now: Instant, max: usize) -> usize {
        let Some(mesh) = self.outboxes.mesh.clone() else {
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

    pub(super) fn handle_mesh(&mut self, msg: ShardMsg, now: Instant) {
        match msg {
            ShardMsg::Deliver {
                message,
                targets,
                stamp,
            } => {
                self.forwarding.note(stamp);
                if self.forwarding.any() {
                    self.forward_moved(&message, targets, stamp, now);
                }
                self.deliver_local(&message, now)
            }
            ShardMsg::DeliverTo {
                client_id,
                out,
                hops,
                targets,
                stamp,
                relay,
            } => {
                let origin = crate::proto::deliver::Forwarded {
                    targets,
                    stamp,
                    relay,
                };
                self.handle_deliver_to(client_id, out, hops, origin, now);
                if let Some(relay) = relay {
                    // Reported durable to the forwarding shard with this input's records.
                    self.durable_note_shared(relay);
                }
            }
            ShardMsg::DeliverShared {
                message,
                filter,
                group,
                stamp,
            } => {
                self.durable_note_shared(stamp);
                self.deliver_shared_local(&message, &filter, &group, now)
            }
            ShardMsg::Retain { message, seq } => self.apply_retain(message, seq),
            ShardMsg::DurableStamp { from, seq } => self.handle_durable_stamp(from, seq),
            ShardMsg::SessionSettled {
                client_id,
                generation,
            } => self.handle_session_settled(client_id, generation),
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
            } => self.handle_claim(client_id, shard, token, owner),
            ShardMsg::ClaimRefused { client_id, token } => {
                self.handle_claim_refused(client_id, token, now)
            }
            ShardMsg::Takeover {
                client_id,
                to,
                token,
                owner,
            } => self.handle_takeover(client_id, to, token, owner, now),
            ShardMsg::SessionMoved {
                client_id,
                token,
                session,
                owner,
            } => self.handle_session_ready(client_id, token, session, false, owner, now),
            ShardMsg::ClaimedLocal {
                client_id,
                token,
                owner,
            } => self.handle_session_ready(client_id, token, None, true, owner, now),
            ShardMsg::Release {
                client_id,
                shard,
                claim,
            } => self.handle_release(client_id, shard, claim),
            ShardMsg::NameAcquire {
                name,
                client_id,
                shard,
                token,
                limit,
            } => self.handle_name_acquire(name, client_id, shard, token, limit),
            ShardMsg::NameAnswer { token, granted } => self.handle_name_answer(token, granted, now),
            ShardMsg::NameRelease { name, client_id } => {
                self.handle_name_release(&name, &client_id)
            }
        }
    }

    /// Sends to a shard (to this one: handled before the current call returns).
    pub(crate) fn send(&mut self, to: ShardId, msg: ShardMsg) {
        if to == self.id || self.outboxes.mesh.is_none() {
            self.outboxes.local.push_back(msg);
            return;
        }
        let lanes = if msg.is_priority() {
            &mut self.outboxes.priority
        } else {
            &mut self.outboxes.data
        };
        let Some(outbox) = lanes.get_mut(to.slot()) else {
            return;
        };
        outbox.push_back(msg);
        self.outboxes.wake_mask |= to.bit();
        // Both lanes count: a flood of retained publishes fills the priority lane.
        if self.outbox_len(to) > self.limits.shard_queue_capacity
            && let Some(index) = self.outboxes.reading
        {
            // Backpressure on the cause only: the connection whose input this is.
            *self.outboxes.throttled.entry(index).or_default() |= to.bit();
        }
    }

    pub(crate) fn drain_local(&mut self, now: Instant) {
        for _ in 0..LOCAL_MESSAGES_PER_INPUT {
            let Some(msg) = self.outboxes.local.pop_front() else {
                return;
            };
            self.handle_mesh(msg, now);
        }
        if !self.outboxes.local.is_empty() {
            // Left for the next input; far beyond what one input causes, so worth a look.
            self.metrics.internal_errors.inc();
            tracing::error!(
                shard = self.id.raw(),
                left = self.outboxes.local.len(),
                "more than LOCAL_MESSAGES_PER_INPUT messages to self in one input"
            );
        }
    }

    /// Moves outgoing mesh messages into the destination inboxes and wakes each destination
    /// once. Messages an inbox cannot take stay queued for the next call.
    pub(super) fn flush_mesh(&mut self) {
        let Some(mesh) = &self.outboxes.mesh else {
            return;
        };
        let mut mask = self.outboxes.wake_mask;
        self.outboxes.wake_mask = 0;
        while mask != 0 {
            let to = ShardId::lowest_in(mask);
            mask &= mask - 1;
            let mut pushed = false;
            let mut left = false;
            // The priority lane first: it must not wait behind a backlog of deliveries.
            for outbox in [
                self.outboxes.priority.get_mut(to.slot()),
                self.outboxes.data.get_mut(to.slot()),
            ]
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
                self.outboxes.wake_mask |= to.bit();
            }
            if pushed {
                mesh.wake(to);
            }
        }
    }

    /// Whether the runtime should leave connection `index` unread for now: its input routed
    /// messages into an outbox that held more than `shard_queue_capacity` messages (the
    /// destination shard cannot keep up). A publisher faster than the shards it feeds is thus
    /// slowed by TCP flow control instead of growing memory, while every other connection —
    /// subscribers' acknowledgements and PINGREQs, new CONNECTs, publishers to other shards —
    /// is read as usual.
    ///
    /// The outbox drains as the destination takes messages; the runtime retries
    /// ([`ShardCore::flush_mesh`]) at least every millisecond while it is backlogged
    /// (`mesh_backlog`) and calls this again then. Once the outbox is down to
    /// [`THROTTLE_RESUME_DIVISOR`]th of the bound, *every* connection throttled on it is
    /// released at once: releasing each as soon as the outbox dipped under the bound let the
    /// first one read push it over again before the others were checked, and under a flood
    /// some publishers were never read for seconds. Each throttled connection adds at most one
    /// read's worth of messages beyond the bound before it is stopped again.
    pub fn conn_throttled(&mut self, index: ConnId, now: Instant) -> bool {
        if !self.outboxes.throttled.contains_key(&index) {
            return false;
        }
        if self.outboxes.wake_mask != 0 {
            self.flush_mesh();
        }
        let resume = self.limits.shard_queue_capacity / THROTTLE_RESUME_DIVISOR;
        let mut bits = self.outboxes.throttled.get(&index).copied().unwrap_or(0);
        while bits != 0 {
            let to = ShardId::lowest_in(bits);
            bits &= bits - 1;
            if self.outbox_len(to) <= resume {
                self.release_throttled(to, now);
            }
        }
        self.outboxes.throttled.contains_key(&index)
    }

    /// The outbox towards `to` drained: every connection throttled on it may be read again
    /// (those throttled on other outboxes too stay throttled on those).
    fn release_throttled(&mut self, to: ShardId, now: Instant) {
        let mut released = std::mem::take(&mut self.outboxes.released);
        released.clear();
        self.outboxes.throttled.retain(|&conn, mask| {
            *mask &= !to.bit();
            if *mask == 0 {
                released.push(conn);
            }
            *mask != 0
        });
        for &conn in &released {
            // Unread by the server's choice: keep alive counts from now.
            if let Some(c) = self.conns.get_mut_quiet(conn) {
                c.last_rx = c.last_rx.max(now);
            }
        }
        self.outboxes.released = released;
    }

    /// Connections throttled now (for tests and the stall detector).
    pub fn throttled_conns(&self) -> usize {
        self.outboxes.throttled.len()
    }

    /// The mesh, if any.
    pub(crate) fn outboxes_mesh(&self) -> Option<&Mesh> {
        self.outboxes.mesh.as_ref()
    }

    /// Restore: retained stamps continue above `seq`, the highest one found in the logs.
    pub(crate) fn raise_retain_seq(&mut self, seq: u64) {
        match &self.outboxes.mesh {
            Some(mesh) => mesh.raise_retain_seq(seq),
            None => {
                self.outboxes.local_retain_seq = self.outboxes.local_retain_seq.max(seq);
            }
        }
    }

    /// The next retained-update sequence number: one counter for all shards (in the mesh).
    pub(crate) fn next_retain_seq(&mut self) -> u64 {
        match &self.outboxes.mesh {
            Some(mesh) => mesh.next_retain_seq(),
            None => {
                self.outboxes.local_retain_seq += 1;
                self.outboxes.local_retain_seq
            }
        }
    }

    /// Whether messages are waiting for a full inbox (the runtime retries soon).
    pub fn mesh_backlog(&self) -> bool {
        self.outboxes.wake_mask != 0
    }

    /// Messages (both lanes) waiting for `to`'s inbox.
    pub fn outbox_len(&self, to: impl Into<ShardId>) -> usize {
        let to = to.into().slot();
        self.outboxes.data.get(to).map_or(0, VecDeque::len)
            + self.outboxes.priority.get(to).map_or(0, VecDeque::len)
    }
}
