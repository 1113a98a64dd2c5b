//! Durable sessions and retained messages, on the core's side: the records the core emits,
//! acknowledgements held until those records are on disk, replay and restore after a restart,
//! and the snapshot of live state (docs/storage.md).
//!
//! What it is for: the core emits a record ([`record::Record`]) for every change to the state
//! of a persistent session (Clean Start 0 with a Session Expiry Interval above zero; 3.1.1:
//! clean session 0) and for every retained update made on this shard; the runtime drains them
//! ([`ShardCore::drain_records`]) into the shard's write-ahead log and tells the core how far
//! the log is on disk ([`crate::proto::Input::Durable`]). PUBACK, PUBREC, the SUBACK of a
//! persistent session and a CONNACK with Session Present 1 wait for that: the connection's
//! output is held (`gate`) until the records emitted before the acknowledgement are durable.
//! What it must never do: write a file (the runtime does), cost anything when storage is off
//! (every hook is one `Option` test), or hold output without a release: a gate is only ever
//! set at or below the records emitted, and every record emitted is drained and flushed.

mod hold;
pub mod record;
pub mod replay;
mod restore;
mod snapshot;

pub use restore::Restored;
pub use snapshot::{SNAPSHOT_RETAINED_PER_STEP, SNAPSHOT_SESSIONS_PER_STEP, SnapshotProgress};

use std::collections::VecDeque;
use std::num::NonZeroU16;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ringmq_codec::{QoS, Str, Will};

use crate::ids::{ConnId, SessionId};
use crate::proto::ShardCore;
use crate::proto::message::Message;
use crate::proto::session::{InflightState, Outgoing, Session};
use record::{Record, SessionRecord, StoredMessage, StoredSub, StoredWill};

/// Records emitted and not yet drained above which `check_invariants` fails: the runtime
/// drains after every input, so a backlog this large means it stopped.
const MAX_UNDRAINED_RECORDS: usize = 1 << 22;

/// Inputs whose stamps wait for their records to be durable, at most (see `stamp_marks`).
const MAX_STAMP_MARKS: usize = 1 << 16;

/// The core's durable state: records waiting to be drained, how far the log is on disk,
/// connections whose output waits for it.
#[derive(Debug, Default)]
pub struct Durable {
    /// Records not yet drained, each as a `u32` length (native endian) and its bytes.
    buf: Vec<u8>,
    undrained: usize,
    /// Records emitted since the core started (the last one's number).
    emitted: u64,
    /// Records on disk (`Input::Durable`).
    durable: u64,
    /// Session generations (see [`SessionRecord::generation`]): one counter for all shards
    /// (in the mesh), so a copy written after a move always outranks the one left behind.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    next_message_id: u64,
    /// The message last written as a `Message` record in this batch, and its id: the other
    /// sessions of this shard it goes to reference it. The payload `Bytes` is kept so the
    /// pointer compared cannot be reused by another message meanwhile.
    last_message: Option<(Bytes, Bytes, u64)>,
    /// Connections whose output is held.
    gated: Vec<ConnId>,
    /// Some held connection waits for other shards (`ConnExtra::gate_remote`).
    remote_waits: bool,
    /// The targets (a bit per shard) and stamp of the message routed last, for its
    /// acknowledgement.
    routed: Option<(u64, u64)>,
    /// (records emitted, stamps handled from each shard) at the end of inputs whose records
    /// are not yet durable: once they are, those stamps are published to their senders.
    stamp_marks: VecDeque<(u64, Vec<u64>)>,
    /// The stamps last published, by sender.
    stamps_published: Vec<u64>,
    /// The highest stamp of a shared-subscription delivery handled from each shard.
    shared_seen: Vec<u64>,
    /// By shard: how far it has on disk what it handled from this shard (`DurableStamp`).
    remote_durable: Vec<u64>,
    /// Sessions that moved here: (client id, generation of their image here, the shard they
    /// left, the record that must be durable before that shard drops its copy).
    settles: VecDeque<(Str, u64, crate::ids::ShardId, u64)>,
    /// The generation of the last session record written.
    last_generation: u64,
    /// The clock of the input being handled.
    mono: Option<Instant>,
    wall: Option<SystemTime>,
    /// Records written, for tests and metrics.
    pub records_total: u64,
    /// The log is full for ordinary records (`ShardCore::set_storage_full`).
    full: bool,
    /// Every shard's `full`, a bit each (shared through the mesh; alone: this shard's).
    full_shards: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The snapshot in progress (`snapshot.rs`).
    snapshot: Option<snapshot::SnapshotWalk>,
    /// Copies forwarded to moved sessions, not yet durable on their new shard (`hold.rs`).
    relays: VecDeque<hold::Relay>,
    /// Relay waits given up at the bound (see `durable_relay`).
    pub relays_dropped: u64,
    /// The stamps last ready to publish (before the relay caps), for when a cap lifts.
    stamps_ready: Vec<u64>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Durable {
    fn push(&mut self, record: &Record) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        record.encode(&mut self.buf);
        let len = u32::try_from(self.buf.len() - at - 4).unwrap_or(u32::MAX);
        self.buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
        self.undrained += 1;
        self.emitted += 1;
        self.records_total += 1;
    }

    /// The wall-clock time (unix ms) at which the monotonic `at` falls.
    fn wall_ms_of(&self, at: Instant) -> u64 {
        let (Some(mono), Some(wall)) = (self.mono, self.wall) else {
            return 0;
        };
        let now = unix_ms(wall);
        if at >= mono {
            now.saturating_add(u64::try_from((at - mono).as_millis()).unwrap_or(u64::MAX))
        } else {
            now.saturating_sub(u64::try_from((mono - at).as_millis()).unwrap_or(u64::MAX))
        }
    }

    fn next_generation(&mut self) -> u64 {
        self.last_generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(1);
        self.last_generation
    }

    /// Generations continue above `g` (restore: the highest found in the logs).
    pub(crate) fn raise_generation(&self, g: u64) {
        self.generation
            .fetch_max(g, std::sync::atomic::Ordering::Relaxed);
    }

    fn stored(&self, m: &Message) -> StoredMessage {
        StoredMessage {
            topic: m.topic.clone(),
            payload: m.payload.clone(),
            qos: m.qos,
            retain: m.retain,
            properties: m.properties.clone(),
            expires_unix_ms: m.expires_at.map(|at| self.wall_ms_of(at).max(1)),
        }
    }

    /// The id of `m`'s `Message` record in this batch, writing it first if needed.
    fn message_id(&mut self, m: &Message) -> u64 {
        if let Some((payload, topic, id)) = &self.last_message
            && payload.as_ptr() == m.payload.as_ptr()
            && payload.len() == m.payload.len()
            && topic.as_ptr() == m.topic.as_bytes().as_ptr()
        {
            return *id;
        }
        self.next_message_id += 1;
        let id = self.next_message_id;
        let message = self.stored(m);
        self.push(&Record::Message { id, message });
        self.last_message = Some((m.payload.clone(), m.topic.as_bytes_shared().clone(), id));
        id
    }

    fn stored_will(&self, will: &Will, publish_at: Option<Instant>) -> StoredWill {
        let p = &will.properties;
        StoredWill {
            delay_secs: p.will_delay_secs.unwrap_or(0),
            publish_unix_ms: publish_at.map(|at| self.wall_ms_of(at).max(1)),
            message: StoredMessage {
                topic: will.topic.clone(),
                payload: will.payload.clone(),
                qos: will.qos,
                retain: will.retain,
                properties: ringmq_codec::PublishProperties {
                    payload_format_utf8: p.payload_format_utf8,
                    message_expiry_secs: None,
                    content_type: p.content_type.clone(),
                    response_topic: p.response_topic.clone(),
                    correlation_data: p.correlation_data.clone(),
                    user_properties: p.user_properties.clone(),
                    ..Default::default()
                },
                // The will's own expiry interval starts when it is published: kept relative.
                expires_unix_ms: p.message_expiry_secs.map(u64::from),
            },
        }
    }

    /// The session's metadata record; `conn_will`: the will of its connection, if connected.
    fn session_record(
        &mut self,
        s: &Session,
        conn_will: Option<&Will>,
        reset: bool,
        generation: Option<u64>,
    ) -> Record {
        let generation = generation.unwrap_or_else(|| self.next_generation());
        let will = match (&s.pending_will, conn_will) {
            (Some(p), _) => Some(self.stored_will(&p.will, Some(p.publish_at))),
            (None, Some(w)) => Some(self.stored_will(w, None)),
            (None, None) => None,
        };
        Record::Session(SessionRecord {
            client_id: s.client_id.clone(),
            generation,
            expiry_secs: s.expiry_secs,
            expires_unix_ms: s.expires_at.map(|at| self.wall_ms_of(at).max(1)),
            reset,
            owner: s.owner.as_deref().and_then(|o| Str::copy_from(o).ok()),
            subs: s
                .subscriptions
                .iter()
                .map(|(filter, r)| StoredSub {
                    filter: filter.clone(),
                    options: r.options,
                    id: r.id,
                })
                .collect(),
            will,
        })
    }

    /// A full image of the session: metadata (reset) and every in-flight, queued and inbound
    /// QoS 2 entry. Used when a session becomes persistent, moves here, and for snapshots.
    fn session_image(&mut self, s: &Session, conn_will: Option<&Will>) {
        let meta = self.session_record(s, conn_will, true, None);
        self.push(&meta);
        let client_id = &s.client_id;
        for f in &s.inflight {
            self.enqueued(client_id, &f.out);
            self.push(&Record::Sent {
                client_id: client_id.clone(),
                packet_id: f.packet_id,
            });
            if f.state == InflightState::Released {
                self.push(&Record::Released {
                    client_id: client_id.clone(),
                    packet_id: f.packet_id,
                });
            }
        }
        for out in s.queue.iter().filter(|o| o.qos != QoS::AtMostOnce) {
            self.enqueued(client_id, out);
        }
        for &id in &s.incoming_qos2 {
            if let Some(packet_id) = NonZeroU16::new(id) {
                self.push(&Record::Inbound {
                    client_id: client_id.clone(),
                    packet_id,
                    received: true,
                });
            }
        }
        self.push(&Record::ImageEnd {
            client_id: client_id.clone(),
        });
    }

    fn enqueued(&mut self, client_id: &Str, out: &Outgoing) {
        let message = self.message_id(&out.message);
        self.push(&Record::Enqueued {
            client_id: client_id.clone(),
            message,
            qos: out.qos,
            retain: out.retain,
            sub_ids: out.sub_ids.to_vec(),
        });
    }

    pub(crate) fn inbound(&mut self, client_id: &Str, packet_id: NonZeroU16, received: bool) {
        self.push(&Record::Inbound {
            client_id: client_id.clone(),
            packet_id,
            received,
        });
    }

    fn simple(&mut self, r: Record) {
        self.push(&r);
    }
}

impl ShardCore {
    /// Turns persistence on: from now on the core emits records and holds acknowledgements
    /// until [`crate::proto::Input::Durable`] says they are on disk. Call before any input.
    pub fn enable_durable(&mut self) {
        let mut d = Box::<Durable>::default();
        if let Some(mesh) = self.outboxes_mesh() {
            d.generation = mesh.session_generation();
            d.full_shards = mesh.storage_full();
        }
        self.durable = Some(d);
    }

    /// Whether persistence is on.
    pub fn is_durable(&self) -> bool {
        self.durable.is_some()
    }

    /// The log refused an ordinary append for want of room (`storage.max_disk_bytes`): new
    /// QoS 1/2 messages are refused (0x97 Quota exceeded) until it takes appends again.
    pub fn set_storage_full(&mut self, full: bool) {
        let bit = self.id.bit();
        if let Some(d) = self.durable.as_deref_mut() {
            d.full = full;
            if full {
                d.full_shards
                    .fetch_or(bit, std::sync::atomic::Ordering::Relaxed);
            } else {
                d.full_shards
                    .fetch_and(!bit, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Whether this shard's log is full (see [`ShardCore::set_storage_full`]).
    pub fn storage_full(&self) -> bool {
        self.durable.as_deref().is_some_and(|d| d.full)
    }

    /// Whether a new QoS 1/2 message on `topic` is refused (0x97) for want of log room. The
    /// rule: when the log of any shard that would write records for it is full — this shard
    /// (the publisher's session, a retained message, its own subscribers) or a shard whose
    /// subscribers the topic reaches (every shard of a matching shared group counts, as any
    /// may be picked). Those are the logs a PUBACK waits for; a full one would take the
    /// records from its reserve. Costs one atomic load while no log is full.
    pub(crate) fn storage_refuses(&self, topic: &[u8]) -> bool {
        let Some(d) = self.durable.as_deref() else {
            return false;
        };
        if d.full {
            return true;
        }
        let others = d.full_shards.load(std::sync::atomic::Ordering::Relaxed) & !self.id.bit();
        if others == 0 {
            return false;
        }
        let mut targets = 0u64;
        self.interest
            .for_each_match(topic, |i: &crate::proto::route::Interest| {
                targets |= i.shards;
                for g in &i.shared {
                    targets |= g.shards;
                }
            });
        targets & others != 0
    }

    /// Records emitted so far (the number of the last one; the first is 1).
    pub fn records_emitted(&self) -> u64 {
        self.durable.as_ref().map_or(0, |d| d.emitted)
    }

    /// Records made durable so far (the last `Input::Durable`).
    pub fn records_durable(&self) -> u64 {
        self.durable.as_ref().map_or(0, |d| d.durable)
    }

    /// Hands every record emitted since the last call to `f`, in order, and returns the number
    /// of the last one (what `Input::Durable { upto }` refers to). Record `n` is the `n`-th
    /// record `f` was ever given.
    pub fn drain_records(&mut self, mut f: impl FnMut(&[u8])) -> u64 {
        let Some(d) = self.durable.as_deref_mut() else {
            return 0;
        };
        let mut at = 0;
        while at + 4 <= d.buf.len() {
            let mut len = [0u8; 4];
            len.copy_from_slice(&d.buf[at..at + 4]);
            let len = u32::from_ne_bytes(len) as usize;
            let end = (at + 4 + len).min(d.buf.len());
            f(&d.buf[at + 4..end]);
            at = end;
        }
        d.buf.clear();
        d.undrained = 0;
        // A new batch: the next session that gets the same message writes it again (the log
        // may start a snapshot between batches).
        d.last_message = None;
        d.emitted
    }

    /// Called at the start of every input with its clock.
    pub(crate) fn durable_clock(&mut self, mono: Instant, wall: SystemTime) {
        if let Some(d) = self.durable.as_deref_mut() {
            d.mono = Some(mono);
            d.wall = Some(wall);
        }
    }

    /// The session `sidx` changed (subscriptions, connection, expiry, will): its metadata
    /// record. `reset`: a full image instead (it just became persistent or moved here).
    pub(crate) fn durable_session_changed(&mut self, sidx: SessionId, reset: bool) {
        let Some(d) = self.durable.as_deref_mut() else {
            return;
        };
        let Some(s) = self.sessions.get(sidx) else {
            return;
        };
        if !s.durable {
            return;
        }
        let will = s
            .conn
            .and_then(|c| self.conns.get(c))
            .and_then(|c| c.will.as_deref());
        if reset {
            d.session_image(s, will);
        } else {
            let r = d.session_record(s, will, false, None);
            d.push(&r);
        }
    }

    /// Decides whether session `sidx` is persistent now (expiry above zero) and records the
    /// change: an image when it becomes persistent, a removal when it stops being so.
    pub(crate) fn durable_session_mode(&mut self, sidx: SessionId) {
        let Some(d) = self.durable.as_deref_mut() else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sidx) else {
            return;
        };
        let wanted = s.expiry_secs > 0;
        if wanted == s.durable {
            return;
        }
        s.durable = wanted;
        if wanted {
            self.durable_session_changed(sidx, true);
        } else {
            let generation = d.next_generation();
            d.simple(Record::SessionRemoved {
                client_id: s.client_id.clone(),
                generation,
            });
        }
    }

    /// A persistent session ended (expired, clean start, expiry zero at disconnect).
    pub(crate) fn durable_session_removed(&mut self, session: &Session) {
        let Some(d) = self.durable.as_deref_mut() else {
            return;
        };
        if !session.durable {
            return;
        }
        let generation = d.next_generation();
        d.simple(Record::SessionRemoved {
            client_id: session.client_id.clone(),
            generation,
        });
    }

    /// A retained update made on this shard (other shards log none: the originating shard's
    /// log holds it, and every shard's snapshot holds its whole replica).
    pub(crate) fn durable_retained(&mut self, seq: u64, message: &Message) {
        let Some(d) = self.durable.as_deref_mut() else {
            return;
        };
        if message.topic.as_bytes().starts_with(b"$") {
            // `$SYS` and the like are the broker's own, published again after a restart.
            return;
        }
        let message = d.stored(message);
        d.simple(Record::Retained { seq, message });
    }

    /// Inbound QoS 2 on the connection's session: PUBREC sent (`received`) or PUBREL taken.
    pub(crate) fn durable_inbound(
        &mut self,
        sidx: SessionId,
        packet_id: NonZeroU16,
        received: bool,
    ) {
        let Some(d) = self.durable.as_deref_mut() else {
            return;
        };
        let Some(s) = self.sessions.get(sidx).filter(|s| s.durable) else {
            return;
        };
        d.simple(Record::Inbound {
            client_id: s.client_id.clone(),
            packet_id,
            received,
        });
    }
}

/// What [`ShardCore::deliver_to_session`] and friends tell the log about one session: free
/// functions over the `Durable` field, so callers holding the session and connection
/// borrowed can call them.
pub(crate) mod hooks {
    use super::*;

    pub fn enqueued(d: Option<&mut Durable>, s: &Session, out: &Outgoing) {
        if let Some(d) = d
            && s.durable
            && out.qos != QoS::AtMostOnce
        {
            d.enqueued(&s.client_id, out);
        }
    }

    pub fn sent(d: Option<&mut Durable>, s: &Session, packet_id: NonZeroU16) {
        if let Some(d) = d
            && s.durable
        {
            d.simple(Record::Sent {
                client_id: s.client_id.clone(),
                packet_id,
            });
        }
    }

    pub fn dropped(d: Option<&mut Durable>, s: &Session, out: &Outgoing) {
        if let Some(d) = d
            && s.durable
            && out.qos != QoS::AtMostOnce
        {
            d.simple(Record::Dropped {
                client_id: s.client_id.clone(),
            });
        }
    }

    pub fn acked(d: Option<&mut Durable>, s: &Session, packet_id: NonZeroU16) {
        if let Some(d) = d
            && s.durable
        {
            d.simple(Record::Acked {
                client_id: s.client_id.clone(),
                packet_id,
            });
        }
    }

    pub fn released(d: Option<&mut Durable>, s: &Session, packet_id: NonZeroU16) {
        if let Some(d) = d
            && s.durable
        {
            d.simple(Record::Released {
                client_id: s.client_id.clone(),
                packet_id,
            });
        }
    }
}

impl ShardCore {
    /// The durable invariants (see `check_invariants`): held connections exist and are
    /// listed once, every gate waits for records actually emitted, the backlog is bounded.
    pub(crate) fn check_durable_invariants(&self) {
        let Some(d) = self.durable.as_deref() else {
            return;
        };
        assert!(d.durable <= d.emitted, "durable beyond what was emitted");
        assert!(
            d.undrained <= MAX_UNDRAINED_RECORDS,
            "{} records not drained",
            d.undrained
        );
        assert!(
            d.gated.len() <= self.conns.len(),
            "more held connections than connections"
        );
        let mut seen = d.gated.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), d.gated.len(), "a held connection listed twice");
        assert!(
            d.stamp_marks.len() <= MAX_STAMP_MARKS,
            "stamp marks over their bound"
        );
        assert!(d.relays.len() <= MAX_STAMP_MARKS, "relays over their bound");
        for r in &d.relays {
            assert!(r.to != self.id, "a copy relayed to this shard itself");
            assert!(
                r.origin.from != self.id,
                "a relay wait for this shard's own stamp"
            );
            assert!(r.origin.seq > 0, "relay of an unstamped message");
        }
        for &id in &d.gated {
            if let Some(e) = self.conns.get(id).and_then(|c| c.extra()) {
                assert!(e.held, "{id}: listed as held but not held");
                assert!(e.gate <= d.emitted, "{id}: held for records never emitted");
                assert!(
                    e.gate > d.durable || !e.gate_remote.is_empty(),
                    "{id}: held though its records are durable"
                );
            }
        }
        for (id, c) in self.conns.iter() {
            if c.extra().is_some_and(|e| e.held) {
                assert!(d.gated.contains(&id), "{id}: held but not listed");
            }
        }
        self.check_snapshot_invariants(d);
    }
}

/// Converts a stored deadline (unix ms) to the core's monotonic clock; `None` when it has
/// passed.
pub(crate) fn deadline(unix_ms: u64, mono: Instant, wall: SystemTime) -> Option<Instant> {
    let now = unix_ms_of(wall);
    (unix_ms > now).then(|| mono + Duration::from_millis(unix_ms - now))
}

pub(crate) fn unix_ms_of(wall: SystemTime) -> u64 {
    unix_ms(wall)
}
