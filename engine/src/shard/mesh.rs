//! The shard mesh: one bounded lock-free inbox per shard, woken once per batch.
//!
//! Producers push into the destination's `ArrayQueue`; a shard's own overflow (kept by the
//! core when an inbox is full) is retried on the next loop turn, so control messages are never
//! lost. After a loop turn the producer wakes each destination it wrote to once (TigerBeetle's
//! batch-per-turn), not once per message.
//!
//! Each inbox has two lanes. The *priority* lane carries the messages whose effect a client
//! can observe before the next packet it sends — interest and retained-message updates (a
//! SUBACK on one shard, then a PUBLISH read by another) — and which commute with everything
//! else: they change where this shard routes and what it replays on SUBSCRIBE, never a
//! session or a delivery already routed — and the directory's bookkeeping (see
//! [`ShardMsg::is_priority`]). The receiver applies that lane in full before any client
//! input. Everything else (deliveries, takeovers, "the session is already yours", session
//! moves) stays in one FIFO *data* lane per sending shard, whose order the session-move
//! protocol relies on, and is handled in bounded batches, so a flooded shard still gets to its
//! own connections between them.
//!
//! One data lane per sender (single producer, single consumer), taken round-robin: with one
//! lane shared by all senders, the sender that pushed first after each batch took every freed
//! slot, and another sender's messages — a claim among them — could wait behind it for ever
//! (seen with three shards, one slow). Each lane holds `capacity / (shards - 1)` messages (at
//! least [`MIN_LANE`]), so an inbox holds about `capacity` in all, as before.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use crossbeam::queue::ArrayQueue;
use ringmq_codec::Str;

use crate::ids::ShardId;
use crate::proto::message::Message;
use crate::proto::session::Session;

/// Identifies a connection across shards: the connection's slot and its serial number, so a
/// reply for a connection that has since closed (and whose slot was reused) is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnToken {
    pub conn: crate::ids::ConnId,
    pub serial: u64,
}

/// Where a routed message comes from and its place in that shard's routing order: the
/// publisher's shard numbers every message it routes, and its deliveries to any one shard
/// arrive in that order (one FIFO lane per sender). A shard that knows the highest number it
/// has handled from each shard can tell, for a forwarded message, whether the message reached
/// it before or after a point in time (see `proto/forward.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub from: ShardId,
    pub seq: u64,
}

/// What shards tell each other.
#[derive(Debug)]
pub enum ShardMsg {
    /// Deliver to this shard's matching (non-shared) subscriptions. `targets`: every shard
    /// the publisher's shard sent the message to (a bit each).
    Deliver {
        message: Message,
        targets: u64,
        stamp: Stamp,
    },
    /// Deliver to the session of `client_id`, which moved to this shard (forwarded by the
    /// shard it left, for a message that reached that shard after the session had gone).
    DeliverTo {
        client_id: Str,
        out: crate::proto::session::Outgoing,
        /// Shards that forwarded it so far: dropped beyond the number of shards, so no
        /// forwarding cycle can keep a message in flight.
        hops: u8,
        /// The original delivery's targets and stamp.
        targets: u64,
        stamp: Stamp,
        /// Persistence on: the forwarding shard's stamp for this copy. The receiver reports
        /// it durable (`DurableStamp`) like a delivery of its own, and the forwarding shard
        /// holds back its report of the original stamp until then, so the publisher's
        /// acknowledgement waits for the copy (`proto/durable/hold.rs`).
        relay: Option<Stamp>,
    },
    /// Deliver to one member of the shared subscription `$share/{group}/{filter}`.
    DeliverShared {
        message: Message,
        filter: Bytes,
        group: Bytes,
        /// The routing stamp of the message (persistence: the publisher's PUBACK waits until
        /// this shard has on disk what it handled up to it).
        stamp: Stamp,
    },
    /// Update this shard's replica of the retained store (highest `seq` wins per topic).
    Retain { message: Message, seq: u64 },
    /// Persistence: shard `from` has on disk what it handled from the receiver up to routing
    /// stamp `seq` (the receiver's PUBACKs for messages routed there wait for it).
    DurableStamp { from: ShardId, seq: u64 },
    /// Persistence: the session of `client_id` that left the receiver is durable on the
    /// sender under `generation`: the receiver removes the copy its log still holds.
    SessionSettled { client_id: Str, generation: u64 },
    /// `shard` gained its first (`add`) or lost its last subscriber to `filter` (in `group`).
    Interest {
        filter: Bytes,
        group: Option<Bytes>,
        shard: ShardId,
        add: bool,
    },
    /// Sent to the client id's directory shard: `shard` wants the session of `client_id`,
    /// for the authentication name `owner` (lowercase; `None` without a registry).
    Claim {
        client_id: Str,
        shard: ShardId,
        token: ConnToken,
        owner: Option<Arc<str>>,
    },
    /// Directory → claimant: the session belongs to another authentication name.
    ClaimRefused { client_id: Str, token: ConnToken },
    /// Sent to the authentication name's shard: may `client_id` hold a session for `name`
    /// (at most `limit` per name)?
    NameAcquire {
        name: Arc<str>,
        client_id: Str,
        shard: ShardId,
        token: ConnToken,
        limit: u32,
    },
    /// The answer to `NameAcquire`.
    NameAnswer { token: ConnToken, granted: bool },
    /// The session of `client_id` for `name` ended (or was never created).
    NameRelease { name: Arc<str>, client_id: Str },
    /// Directory → previous owner: hand the session to `to` (claimed for `owner`).
    Takeover {
        client_id: Str,
        to: ShardId,
        token: ConnToken,
        owner: Option<Arc<str>>,
    },
    /// The answer to a claim: the session moved from its previous owner (or none existed).
    SessionMoved {
        client_id: Str,
        token: ConnToken,
        session: Option<Box<Session>>,
        owner: Option<Arc<str>>,
    },
    /// Directory → claimant: the session is already on the claimant's own shard.
    ClaimedLocal {
        client_id: Str,
        token: ConnToken,
        owner: Option<Arc<str>>,
    },
    /// Owner → directory: the session ended; forget the owner if it is still `shard` by the
    /// same `claim`.
    Release {
        client_id: Str,
        shard: ShardId,
        claim: ConnToken,
    },
}

impl ShardMsg {
    /// Whether the message travels in the priority lane (see the module header).
    ///
    /// Besides interest and retained updates, the directory's bookkeeping: a claim, its refusal,
    /// "there was no session" (`SessionMoved` without one), releases and the per-name session
    /// counts. None of them carries or moves session state, so overtaking deliveries cannot
    /// reorder anything a client sees, and a new client's CONNACK no longer waits behind a
    /// backlog of deliveries (fan-in flood of 500 publishers on two shards: probe worst
    /// 155 ms). A takeover and a session that does move stay in the data lane, in order with
    /// the deliveries the move protocol accounts for.
    ///
    /// `ClaimedLocal` ("the session is already yours") stays there too: it goes to the shard
    /// that holds the session, as does the `Takeover` of any later claim, and that shard must
    /// see them in the directory's order. It hands its session over at once on a takeover
    /// (chains of racing claims end that way), so a takeover that overtook the answer — a full
    /// priority lane was enough — left it to make a fresh session for the earlier connection
    /// when the answer came: two live connections and two sessions for one client id (found
    /// by the `cores` fuzz target; `engine/tests/fuzz_found.rs`).
    pub fn is_priority(&self) -> bool {
        match self {
            ShardMsg::Interest { .. }
            | ShardMsg::Retain { .. }
            | ShardMsg::DurableStamp { .. }
            | ShardMsg::SessionSettled { .. }
            | ShardMsg::Claim { .. }
            | ShardMsg::ClaimRefused { .. }
            | ShardMsg::Release { .. }
            | ShardMsg::NameAcquire { .. }
            | ShardMsg::NameAnswer { .. }
            | ShardMsg::NameRelease { .. } => true,
            ShardMsg::SessionMoved { session, .. } => session.is_none(),
            ShardMsg::Deliver { .. }
            | ShardMsg::DeliverTo { .. }
            | ShardMsg::DeliverShared { .. }
            | ShardMsg::ClaimedLocal { .. }
            | ShardMsg::Takeover { .. } => false,
        }
    }
}

/// Least capacity of one sender's data lane.
pub const MIN_LANE: usize = 64;

/// One shard's inbox.
#[derive(Debug)]
pub struct Inbox {
    /// Interest and retained updates, applied before any client input.
    priority: ArrayQueue<ShardMsg>,
    /// Everything else, in order, one lane per sending shard.
    lanes: Box<[ArrayQueue<ShardMsg>]>,
    /// The lane the next `pop` tries first (only the owning shard pops).
    next_lane: std::sync::atomic::AtomicUsize,
    waker: AtomicWaker,
    /// Messages that arrived, for metrics and tests.
    pub received: AtomicU64,
}

/// All inboxes, shared by every shard.
#[derive(Debug, Clone)]
pub struct Mesh {
    inboxes: Arc<[Inbox]>,
    /// Orders retained updates across shards (see `ShardCore::apply_retain`).
    retain_seq: Arc<AtomicU64>,
    /// Persistence: orders the records of a session across shards (its generation; a
    /// session's copy written after it moved has a higher one than the copy it left behind).
    session_generation: Arc<AtomicU64>,
    /// Persistence: a bit per shard whose log is full for ordinary records (a QoS 1/2 message
    /// any of them would receive is refused, see `proto/durable`).
    storage_full: Arc<AtomicU64>,
    /// Connection counts in all and per client IP, consulted on every shard's accept path
    /// (see `quota.rs` for why this one structure is shared under striped locks).
    conn_quotas: Arc<crate::shard::quota::ConnQuotas>,
}

impl Mesh {
    pub fn new(shards: usize, capacity: usize) -> Mesh {
        assert!(
            shards >= 1 && capacity >= 1,
            "a mesh needs a shard and room"
        );
        let lane = (capacity / shards.saturating_sub(1).max(1)).max(MIN_LANE);
        let inboxes = (0..shards)
            .map(|me| Inbox {
                priority: ArrayQueue::new(capacity),
                // A shard's messages to itself never cross the mesh (`ShardCore::send`): its
                // own lane only keeps the indices simple.
                lanes: (0..shards)
                    .map(|from| ArrayQueue::new(if from == me { 1 } else { lane }))
                    .collect(),
                next_lane: std::sync::atomic::AtomicUsize::new(0),
                waker: AtomicWaker::new(),
                received: AtomicU64::new(0),
            })
            .collect();
        Mesh {
            inboxes,
            retain_seq: Arc::new(AtomicU64::new(0)),
            session_generation: Arc::new(AtomicU64::new(0)),
            storage_full: Arc::new(AtomicU64::new(0)),
            conn_quotas: Arc::new(crate::shard::quota::ConnQuotas::new()),
        }
    }

    /// The connection counts every shard shares.
    pub fn conn_quotas(&self) -> &Arc<crate::shard::quota::ConnQuotas> {
        &self.conn_quotas
    }

    /// The next retained-update sequence number (shared by all shards, lock-free).
    pub fn next_retain_seq(&self) -> u64 {
        self.retain_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The shards whose logs are full, a bit each (see `proto/durable`).
    pub fn storage_full(&self) -> Arc<AtomicU64> {
        self.storage_full.clone()
    }

    /// The counter of session generations, shared by all shards (see `proto/durable`).
    pub fn session_generation(&self) -> Arc<AtomicU64> {
        self.session_generation.clone()
    }

    /// Retained stamps continue above `seq` (restore after a restart).
    pub fn raise_retain_seq(&self, seq: u64) {
        self.retain_seq.fetch_max(seq, Ordering::Relaxed);
    }

    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Pushes to `to`'s inbox; gives the message back when the inbox is full (by value: the
    /// caller keeps it for a retry, and boxing it would allocate per message).
    #[allow(clippy::result_large_err)]
    pub fn push(
        &self,
        from: impl Into<ShardId>,
        to: impl Into<ShardId>,
        msg: ShardMsg,
    ) -> Result<(), ShardMsg> {
        let (from, to) = (from.into().slot(), to.into().slot());
        let Some(inbox) = self.inboxes.get(to) else {
            return Err(msg);
        };
        if msg.is_priority() {
            return inbox.priority.push(msg);
        }
        match inbox.lanes.get(from) {
            Some(lane) => lane.push(msg),
            None => Err(msg),
        }
    }

    /// Wakes `to` after a batch of pushes.
    pub fn wake(&self, to: impl Into<ShardId>) {
        if let Some(inbox) = self.inboxes.get(to.into().slot()) {
            inbox.waker.wake();
        }
    }

    /// The next message of `me`'s data lanes: the senders in turn, one message each.
    pub fn pop(&self, me: impl Into<ShardId>) -> Option<ShardMsg> {
        let me = me.into().slot();
        let inbox = self.inboxes.get(me)?;
        let lanes = inbox.lanes.len();
        let start = inbox.next_lane.load(Ordering::Relaxed);
        // Per message on the hot path: no division, the own (always empty) lane skipped, the
        // cursor written only when it moves.
        let mut lane = start;
        for _ in 0..lanes {
            if lane >= lanes {
                lane = 0;
            }
            if lane != me
                && let Some(msg) = inbox.lanes.get(lane).and_then(ArrayQueue::pop)
            {
                let next = if lane + 1 == lanes { 0 } else { lane + 1 };
                if next != start {
                    inbox.next_lane.store(next, Ordering::Relaxed);
                }
                inbox.received.fetch_add(1, Ordering::Relaxed);
                return Some(msg);
            }
            lane += 1;
        }
        None
    }

    /// The next message of `me`'s priority lane.
    pub fn pop_priority(&self, me: impl Into<ShardId>) -> Option<ShardMsg> {
        let inbox = self.inboxes.get(me.into().slot())?;
        let msg = inbox.priority.pop()?;
        inbox.received.fetch_add(1, Ordering::Relaxed);
        Some(msg)
    }

    /// Messages waiting in all lanes of `shard`'s inbox.
    pub fn len(&self, shard: impl Into<ShardId>) -> usize {
        let shard = shard.into();
        self.data_len(shard) + self.priority_len(shard)
    }

    /// Messages waiting in `shard`'s priority lane.
    pub fn priority_len(&self, shard: impl Into<ShardId>) -> usize {
        self.inboxes
            .get(shard.into().slot())
            .map_or(0, |i| i.priority.len())
    }

    /// Messages waiting in `shard`'s data lanes.
    pub fn data_len(&self, shard: impl Into<ShardId>) -> usize {
        self.inboxes
            .get(shard.into().slot())
            .map_or(0, |i| i.lanes.iter().map(ArrayQueue::len).sum())
    }

    /// `Ready` when `me`'s inbox is non-empty; otherwise registers `cx`'s waker, which
    /// [`Mesh::wake`] (or a push followed by it) wakes.
    pub fn poll_readable(&self, me: impl Into<ShardId>, cx: &mut Context<'_>) -> Poll<()> {
        Readable {
            mesh: self,
            me: me.into().slot(),
        }
        .poll_ready(cx)
    }

    /// Resolves when `me`'s inbox is non-empty.
    pub fn readable(&self, me: impl Into<ShardId>) -> Readable<'_> {
        Readable {
            mesh: self,
            me: me.into().slot(),
        }
    }
}

/// Future returned by [`Mesh::readable`].
#[derive(Debug)]
pub struct Readable<'a> {
    mesh: &'a Mesh,
    me: usize,
}

impl Readable<'_> {
    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(inbox) = self.mesh.inboxes.get(self.me) else {
            return Poll::Pending;
        };
        let empty = || inbox.priority.is_empty() && inbox.lanes.iter().all(ArrayQueue::is_empty);
        if !empty() {
            return Poll::Ready(());
        }
        inbox.waker.register(cx.waker());
        // A push between the check and the registration would otherwise be missed.
        if empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

impl Future for Readable<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_ready(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// A data-lane message naming `id`.
    fn release(id: &'static str) -> ShardMsg {
        ShardMsg::Takeover {
            client_id: Str::from_static(id),
            to: ShardId::default(),
            token: ConnToken {
                conn: crate::ids::ConnId::default(),
                serial: 0,
            },
            owner: None,
        }
    }

    fn id(msg: Option<ShardMsg>) -> Option<String> {
        match msg {
            Some(ShardMsg::Takeover { client_id, .. }) => Some(client_id.as_str().to_owned()),
            Some(m) => panic!("unexpected {m:?}"),
            None => None,
        }
    }

    #[test]
    fn full_lane_returns_the_message() {
        let mesh = Mesh::new(2, 1);
        for _ in 0..MIN_LANE {
            assert!(mesh.push(0, 1, release("a")).is_ok());
        }
        let back = mesh.push(0, 1, release("b"));
        assert!(matches!(back, Err(ShardMsg::Takeover { .. })));
        for _ in 0..MIN_LANE {
            assert!(mesh.pop(1).is_some());
        }
        assert!(mesh.pop(1).is_none());
        assert!(mesh.push(0, 5, release("c")).is_err(), "no such shard");
        assert!(mesh.push(7, 1, release("c")).is_err(), "no such sender");
    }

    #[test]
    fn senders_are_taken_in_turn_and_one_cannot_starve_another() {
        let mesh = Mesh::new(3, 2 * MIN_LANE);
        // Sender 1 fills its lane of shard 0; sender 2 still has room.
        while mesh.push(1, 0, release("one")).is_ok() {}
        assert!(mesh.push(2, 0, release("two")).is_ok());
        assert!(mesh.push(2, 0, release("two-b")).is_ok());
        let first: Vec<_> = (0..4).map(|_| id(mesh.pop(0)).unwrap()).collect();
        assert_eq!(first, ["one", "two", "one", "two-b"]);
        // Order within a sender's lane is kept.
        while mesh.pop(0).is_some() {}
        for name in ["x1", "x2", "x3"] {
            assert!(mesh.push(1, 0, release(name)).is_ok());
        }
        let order: Vec<_> = (0..3).map(|_| id(mesh.pop(0)).unwrap()).collect();
        assert_eq!(order, ["x1", "x2", "x3"]);
    }

    #[test]
    fn interest_and_retained_updates_take_the_priority_lane() {
        let mesh = Mesh::new(2, 64);
        let interest = ShardMsg::Interest {
            filter: Bytes::from_static(b"a/b"),
            group: None,
            shard: ShardId::default(),
            add: true,
        };
        assert!(interest.is_priority());
        assert!(!release("x").is_priority());
        assert!(mesh.push(0, 1, release("x")).is_ok());
        assert!(mesh.push(0, 1, interest).is_ok());
        assert_eq!(
            (mesh.data_len(1), mesh.priority_len(1), mesh.len(1)),
            (1, 1, 2)
        );
        assert!(matches!(
            mesh.pop_priority(1),
            Some(ShardMsg::Interest { .. })
        ));
        assert!(mesh.pop_priority(1).is_none());
        assert_eq!(id(mesh.pop(1)).as_deref(), Some("x"));
    }
}
