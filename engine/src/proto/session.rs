//! Session state [MQTT-4.1]: what survives a disconnect until the session expires.
//!
//! Plain data (`Send`), so a session can move to another shard on takeover. Storage stays
//! behind this type so a durable store can persist it later (subscriptions, in-flight and
//! queued messages are all here).

use std::collections::VecDeque;
use std::num::{NonZeroU16, NonZeroU32};
use std::time::Instant;

use bytes::Bytes;
use ringmq_codec::{QoS, Str, SubscriptionOptions, Will};
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use crate::ids::{ConnId, SessionId};
use crate::proto::message::Message;
use crate::shard::mesh::ConnToken;
use crate::shard::pages::PagedSlab;

pub type SubIds = SmallVec<[NonZeroU32; 2]>;

/// One subscription of this session, keyed in [`Session::subscriptions`] by the filter as the
/// client sent it (including any `$share/{group}/` prefix).
#[derive(Debug, Clone)]
pub struct SubRecord {
    pub options: SubscriptionOptions,
    pub id: Option<NonZeroU32>,
}

/// A message waiting for delivery to this session.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub message: Message,
    /// Granted QoS: min(publish QoS, subscription QoS).
    pub qos: QoS,
    /// The RETAIN flag to send [MQTT-3.3.1-12/13, 3.8.3.1 retain-as-published].
    pub retain: bool,
    pub sub_ids: SubIds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflightState {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREL sent; waiting for PUBCOMP.
    Released,
}

#[derive(Debug, Clone)]
pub struct Inflight {
    pub packet_id: NonZeroU16,
    pub out: Outgoing,
    pub state: InflightState,
    /// Its PUBLISH went out on the current connection, so it counts against the client's
    /// Receive Maximum [MQTT-3.3.4-9]. Cleared when the session resumes on a new connection:
    /// resent (DUP) only as the new window allows.
    pub sent: bool,
}

/// A will waiting out its delay [MQTT-3.1.3-9].
#[derive(Debug, Clone)]
pub struct PendingWill {
    /// Boxed like the connection's will, so an idle session stays small.
    pub will: Box<Will>,
    pub publish_at: Instant,
}

#[derive(Debug)]
pub struct Session {
    pub client_id: Str,
    /// The connection (slot on the owning shard) while connected. Shard-local: cleared when
    /// the session moves to another shard.
    pub conn: Option<ConnId>,
    /// The claim under which the directory shard records this shard as the owner.
    pub claim: ConnToken,
    /// The authentication name (lowercase) the session belongs to; `None` without a registry.
    pub owner: Option<std::sync::Arc<str>>,
    /// Session Expiry Interval in force (already capped by the server limit).
    pub expiry_secs: u32,
    /// When an offline session ends; `None` while connected.
    pub expires_at: Option<Instant>,
    pub subscriptions: FxHashMap<Bytes, SubRecord>,
    /// Server → client QoS 1/2 messages not yet completed, in send order [MQTT-4.6.0-1].
    pub inflight: VecDeque<Inflight>,
    /// Some in-flight PUBLISH has not been resent on the current connection yet (the new
    /// Receive Maximum was smaller than what was in flight): `fill_window` resends it first.
    pub resend_pending: bool,
    pub queue: VecDeque<Outgoing>,
    pub queued_bytes: usize,
    next_packet_id: u16,
    /// Client → server QoS 2 packet ids received and not yet released [MQTT-4.3.3-9].
    pub incoming_qos2: FxHashSet<u16>,
    pub pending_will: Option<PendingWill>,
    /// Messages dropped because a queue limit was hit.
    pub dropped: u64,
    /// This session's queue limits (by client type: `limits` or `limits.application`).
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    /// Persistent (storage on and expiry above zero): its changes are written to the log.
    pub durable: bool,
    /// While it travels to another shard: the shard it left (whose log still holds a copy,
    /// removed there once the new shard's copy is durable).
    pub moved_from: Option<crate::ids::ShardId>,
}

impl Session {
    pub fn new(client_id: Str, expiry_secs: u32) -> Session {
        Session {
            client_id,
            conn: None,
            claim: ConnToken::default(),
            owner: None,
            expiry_secs,
            expires_at: None,
            subscriptions: FxHashMap::default(),
            inflight: VecDeque::new(),
            resend_pending: false,
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_packet_id: 0,
            incoming_qos2: FxHashSet::default(),
            pending_will: None,
            dropped: 0,
            max_queued_messages: crate::config::Limits::default().max_queued_messages,
            max_queued_bytes: crate::config::Limits::default().max_queued_bytes,
            durable: false,
            moved_from: None,
        }
    }

    /// The next packet id not in flight [MQTT-2.2.1-3]. The caller keeps the in-flight window
    /// far below 65 535, so one is always free.
    /// The session's own invariants (see `ShardCore::check_invariants`).
    pub fn check_invariants(&self, max_inflight: u16) {
        assert!(
            self.inflight.len() <= usize::from(max_inflight),
            "{}: {} in flight, window {max_inflight}",
            self.client_id,
            self.inflight.len()
        );
        let queued: usize = self.queue.iter().map(|o| o.message.weight()).sum();
        assert_eq!(
            queued, self.queued_bytes,
            "{}: queued bytes",
            self.client_id
        );
        assert!(
            self.queue.len() <= self.max_queued_messages,
            "{}: queue over its bound",
            self.client_id
        );
        let mut ids: Vec<u16> = self.inflight.iter().map(|f| f.packet_id.get()).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(
            n,
            ids.len(),
            "{}: a packet id in flight twice",
            self.client_id
        );
    }

    /// The next packet id not in flight. At most `u16::MAX` candidates are tried: a window
    /// is at most 65 535, and callers send only while the window has room, so one is free.
    pub fn next_packet_id(&mut self) -> Option<NonZeroU16> {
        debug_assert!(
            self.inflight.len() < usize::from(u16::MAX),
            "no packet id can be free"
        );
        for _ in 0..u16::MAX {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if let Some(id) = NonZeroU16::new(self.next_packet_id)
                && !self.inflight.iter().any(|f| f.packet_id == id)
            {
                return Some(id);
            }
        }
        None
    }

    /// Position of the in-flight entry with `id`; acks usually come in order, so the scan
    /// from the front is short.
    pub fn inflight_position(&self, id: NonZeroU16) -> Option<usize> {
        self.inflight.iter().position(|f| f.packet_id == id)
    }

    /// Queues a message for later delivery. Returns false (and counts a drop) when the
    /// session's message or byte limit is reached: new messages are refused, queued ones kept.
    pub fn enqueue(&mut self, out: Outgoing, max_messages: usize, max_bytes: usize) -> bool {
        let weight = out.message.weight();
        if !self.has_room(&out, max_messages, max_bytes) {
            self.dropped += 1;
            return false;
        }
        self.queued_bytes += weight;
        self.queue.push_back(out);
        true
    }

    /// Whether [`Session::enqueue`] would take `out`.
    pub fn has_room(&self, out: &Outgoing, max_messages: usize, max_bytes: usize) -> bool {
        self.queue.len() < max_messages && self.queued_bytes + out.message.weight() <= max_bytes
    }

    pub fn dequeue(&mut self) -> Option<Outgoing> {
        let out = self.queue.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(out.message.weight());
        Some(out)
    }
}

/// The shard's sessions, by [`SessionId`].
#[derive(Debug, Default)]
pub(crate) struct Sessions(PagedSlab<Session>);

impl Sessions {
    pub fn insert(&mut self, session: Session) -> SessionId {
        SessionId::from_slot(self.0.insert(session))
    }

    pub fn get(&self, id: SessionId) -> Option<&Session> {
        self.0.get(id.slot())
    }

    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.0.get_mut(id.slot())
    }

    pub fn try_remove(&mut self, id: SessionId) -> Option<Session> {
        self.0.try_remove(id.slot())
    }

    pub fn iter(&self) -> impl Iterator<Item = (SessionId, &Session)> {
        self.0
            .iter()
            .map(|(slot, s)| (SessionId::from_slot(slot), s))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (SessionId, &mut Session)> {
        self.0
            .iter_mut()
            .map(|(slot, s)| (SessionId::from_slot(slot), s))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Slots below this may hold a session: a walk over `0..slot_bound()` with [`Self::get`]
    /// visits every session (an incremental snapshot keeps its place as a slot number).
    pub fn slot_bound(&self) -> usize {
        self.0.capacity()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn message(payload: &'static [u8]) -> Outgoing {
        Outgoing {
            message: Message {
                topic: Str::from_static("t"),
                payload: Bytes::from_static(payload),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Default::default(),
                expires_at: None,
                origin: Bytes::new(),
                published_at: None,
            },
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: SubIds::new(),
        }
    }

    #[test]
    fn packet_ids_skip_zero_and_ids_in_flight() {
        let mut s = Session::new(Str::from_static("c"), 0);
        let first = s.next_packet_id().unwrap();
        assert_eq!(first.get(), 1);
        s.inflight.push_back(Inflight {
            packet_id: NonZeroU16::new(2).unwrap(),
            out: message(b"x"),
            state: InflightState::Published,
            sent: true,
        });
        assert_eq!(s.next_packet_id().unwrap().get(), 3);
        s.next_packet_id = u16::MAX - 1;
        assert_eq!(s.next_packet_id().unwrap().get(), u16::MAX);
        assert_eq!(s.next_packet_id().unwrap().get(), 1, "wraps past zero");
    }

    #[test]
    fn queue_limits_refuse_new_messages_and_count_drops() {
        let mut s = Session::new(Str::from_static("c"), 0);
        assert!(s.enqueue(message(b"aaaa"), 2, 100));
        assert!(s.enqueue(message(b"bbbb"), 2, 100));
        assert!(!s.enqueue(message(b"cccc"), 2, 100));
        assert_eq!(s.dropped, 1);
        assert_eq!(s.queued_bytes, 10);
        assert_eq!(
            s.dequeue().unwrap().message.payload,
            Bytes::from_static(b"aaaa")
        );
        assert_eq!(s.queued_bytes, 5);
        assert!(!s.enqueue(message(b"too long for the byte limit"), 10, 20));
    }
}
