//! Replay: from the records of every shard's log to the state each shard restores.
//!
//! What it is for: [`Replay::apply`] folds one shard's records, in log order, into plain data
//! (sessions with their queues, in-flight and inbound QoS 2 state; retained messages); every
//! record is an upsert, so records of a snapshot interleaved with ordinary records replay to
//! the same state, and a record about a session the replay does not know yet (its image comes
//! later in a snapshot) is skipped. [`merge`] joins the shards' replays — the highest session
//! generation wins, a removal newer than every copy removes, the highest retained stamp wins —
//! and splits the result by the shard that will hold each session: its client id's directory
//! shard, so a changed shard count re-homes sessions. `ShardCore::restore` installs a part.
//! What it must never do: panic on what it reads; a record that does not decode is counted and
//! skipped (the storage engine has already checked its CRC).

use std::collections::VecDeque;
use std::num::NonZeroU16;

use bytes::Bytes;
use ringmq_codec::QoS;
use rustc_hash::{FxHashMap, FxHashSet};

use super::record::{Record, RecordError, SessionRecord, StoredMessage};

/// A message waiting in a replayed session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedOut {
    pub message: StoredMessage,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<std::num::NonZeroU32>,
}

/// One in-flight message of a replayed session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedInflight {
    pub packet_id: NonZeroU16,
    pub out: ReplayedOut,
    /// PUBREC received, PUBREL sent.
    pub released: bool,
}

/// A session as the log left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedSession {
    pub meta: SessionRecord,
    pub inflight: VecDeque<ReplayedInflight>,
    pub queue: VecDeque<ReplayedOut>,
    pub inbound_qos2: FxHashSet<u16>,
    /// The shard whose log held it (a session restored elsewhere is written there again).
    pub from_shard: usize,
}

/// One shard's log folded into state.
#[derive(Debug, Default)]
pub struct Replay {
    shard: usize,
    sessions: FxHashMap<Bytes, ReplayedSession>,
    /// Sessions removed, with the generation of the removal.
    removed: FxHashMap<Bytes, u64>,
    /// The session image being read (a `Session` record with `reset` not yet followed by its
    /// `ImageEnd`), with what it replaced: put back if the image turns out cut short.
    open_image: Option<OpenImage>,
    messages: FxHashMap<u64, StoredMessage>,
    retained: FxHashMap<Bytes, (u64, StoredMessage)>,
    /// Records applied, and records that did not decode or did not fit the state (skipped).
    pub records: u64,
    pub skipped: u64,
    /// Session images cut short by a crash and undone.
    pub images_undone: u64,
}

/// An image whose end has not been read yet, and the state it replaced.
#[derive(Debug)]
struct OpenImage {
    key: Bytes,
    prior: Option<ReplayedSession>,
    prior_removed: Option<u64>,
}

impl Replay {
    pub fn new(shard: usize) -> Replay {
        Replay {
            shard,
            ..Replay::default()
        }
    }

    /// Applies one record (its payload as the log returned it).
    pub fn apply(&mut self, bytes: &[u8]) -> Result<(), RecordError> {
        let record = match Record::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.skipped += 1;
                return Err(e);
            }
        };
        self.records += 1;
        self.apply_record(record);
        Ok(())
    }

    fn session(&mut self, client_id: &ringmq_codec::Str) -> Option<&mut ReplayedSession> {
        let s = self.sessions.get_mut(client_id.as_bytes());
        if s.is_none() {
            self.skipped += 1;
        }
        s
    }

    /// An image's records are written together (one `session_image` call), so only the last
    /// one of a log can be cut short by a crash; after a restart, records of the next run
    /// follow it. So an open image ends at its `ImageEnd` (applied), or at the first record
    /// that cannot belong to it, or at the end of the log (both: cut short, undone).
    fn close_image_before(&mut self, record: &Record) -> bool {
        let Some(open) = &self.open_image else {
            return false;
        };
        let ours = |client_id: &ringmq_codec::Str| client_id.as_bytes() == &open.key[..];
        match record {
            Record::ImageEnd { client_id } if ours(client_id) => {
                self.open_image = None;
                return true;
            }
            Record::Message { .. } => return false,
            Record::Enqueued { client_id, .. }
            | Record::Sent { client_id, .. }
            | Record::Released { client_id, .. }
            | Record::Inbound { client_id, .. }
                if ours(client_id) =>
            {
                return false;
            }
            _ => {}
        }
        self.undo_open_image();
        false
    }

    /// Puts back what a cut-short image replaced.
    fn undo_open_image(&mut self) {
        let Some(open) = self.open_image.take() else {
            return;
        };
        match open.prior {
            Some(prior) => {
                self.sessions.insert(open.key.clone(), prior);
            }
            None => {
                self.sessions.remove(&open.key);
            }
        }
        if let Some(g) = open.prior_removed {
            self.removed.insert(open.key, g);
        }
        self.images_undone += 1;
    }

    /// The end of the log: an image still open was cut short.
    pub fn finish(&mut self) {
        self.undo_open_image();
    }

    fn apply_record(&mut self, record: Record) {
        if self.close_image_before(&record) {
            return;
        }
        match record {
            Record::Session(meta) => {
                let key = meta.client_id.as_bytes_shared().clone();
                if self
                    .removed
                    .get(&key)
                    .is_some_and(|&g| g >= meta.generation)
                {
                    return;
                }
                let prior_removed = self.removed.remove(&key);
                match self.sessions.get_mut(&key) {
                    Some(s) if !meta.reset => s.meta = meta,
                    _ => {
                        let reset = meta.reset;
                        let prior = self.sessions.insert(
                            key.clone(),
                            ReplayedSession {
                                meta,
                                inflight: VecDeque::new(),
                                queue: VecDeque::new(),
                                inbound_qos2: FxHashSet::default(),
                                from_shard: self.shard,
                            },
                        );
                        if reset {
                            self.open_image = Some(OpenImage {
                                key,
                                prior,
                                prior_removed,
                            });
                        }
                    }
                }
            }
            Record::ImageEnd { .. } => {}
            Record::SessionRemoved {
                client_id,
                generation,
            } => {
                let key = client_id.as_bytes_shared().clone();
                if self
                    .sessions
                    .get(&key)
                    .is_some_and(|s| s.meta.generation > generation)
                {
                    return;
                }
                self.sessions.remove(&key);
                self.removed.insert(key, generation);
            }
            Record::Message { id, message } => {
                self.messages.insert(id, message);
            }
            Record::Enqueued {
                client_id,
                message,
                qos,
                retain,
                sub_ids,
            } => {
                let Some(m) = self.messages.get(&message).cloned() else {
                    self.skipped += 1;
                    return;
                };
                if let Some(s) = self.session(&client_id) {
                    s.queue.push_back(ReplayedOut {
                        message: m,
                        qos,
                        retain,
                        sub_ids,
                    });
                }
            }
            Record::Sent {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.session(&client_id)
                    && let Some(out) = s.queue.pop_front()
                {
                    // A packet id is in flight once: a stale entry under it is replaced.
                    s.inflight.retain(|f| f.packet_id != packet_id);
                    s.inflight.push_back(ReplayedInflight {
                        packet_id,
                        out,
                        released: false,
                    });
                }
            }
            Record::Dropped { client_id } => {
                if let Some(s) = self.session(&client_id) {
                    s.queue.pop_front();
                }
            }
            Record::Acked {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.session(&client_id) {
                    s.inflight.retain(|f| f.packet_id != packet_id);
                }
            }
            Record::Released {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.session(&client_id)
                    && let Some(f) = s.inflight.iter_mut().find(|f| f.packet_id == packet_id)
                {
                    f.released = true;
                }
            }
            Record::Inbound {
                client_id,
                packet_id,
                received,
            } => {
                if let Some(s) = self.session(&client_id) {
                    if received {
                        s.inbound_qos2.insert(packet_id.get());
                    } else {
                        s.inbound_qos2.remove(&packet_id.get());
                    }
                }
            }
            Record::Retained { seq, message } => {
                let key = message.topic.as_bytes_shared().clone();
                if self.retained.get(&key).is_none_or(|(s, _)| *s < seq) {
                    self.retained.insert(key, (seq, message));
                }
            }
        }
    }

    /// Sessions replayed so far (tests).
    pub fn sessions(&self) -> impl Iterator<Item = &ReplayedSession> {
        self.sessions.values()
    }
}

/// What one shard restores.
#[derive(Debug, Default)]
pub struct ShardRestore {
    pub sessions: Vec<ReplayedSession>,
    /// Every retained topic (clears included, as empty payloads) with its stamp.
    pub retained: Vec<(u64, StoredMessage)>,
    /// The highest retained stamp and session generation seen in any log.
    pub max_retain_seq: u64,
    pub max_generation: u64,
}

/// Joins the replays of all shards and splits the result over `shards` shards (each session
/// to `home(client_id)`).
pub fn merge(
    replays: Vec<Replay>,
    shards: usize,
    home: impl Fn(&[u8]) -> usize,
) -> Vec<ShardRestore> {
    let mut sessions: FxHashMap<Bytes, ReplayedSession> = FxHashMap::default();
    let mut removed: FxHashMap<Bytes, u64> = FxHashMap::default();
    let mut retained: FxHashMap<Bytes, (u64, StoredMessage)> = FxHashMap::default();
    let mut max_generation = 0;
    for mut r in replays {
        r.finish();
        for (k, g) in r.removed {
            max_generation = max_generation.max(g);
            let e = removed.entry(k).or_insert(g);
            *e = (*e).max(g);
        }
        for (k, s) in r.sessions {
            max_generation = max_generation.max(s.meta.generation);
            match sessions.get(&k) {
                Some(have) if have.meta.generation >= s.meta.generation => {}
                _ => {
                    sessions.insert(k, s);
                }
            }
        }
        for (k, (seq, m)) in r.retained {
            if retained.get(&k).is_none_or(|(s, _)| *s < seq) {
                retained.insert(k, (seq, m));
            }
        }
    }
    let shards = shards.max(1);
    let mut out: Vec<ShardRestore> = (0..shards).map(|_| ShardRestore::default()).collect();
    let max_retain_seq = retained.values().map(|(s, _)| *s).max().unwrap_or(0);
    let retained: Vec<(u64, StoredMessage)> = retained.into_values().collect();
    for part in &mut out {
        part.retained = retained.clone();
        part.max_retain_seq = max_retain_seq;
        part.max_generation = max_generation;
    }
    for (k, s) in sessions {
        if removed.get(&k).is_some_and(|&g| g >= s.meta.generation) {
            continue;
        }
        let to = home(&k).min(shards - 1);
        out[to].sessions.push(s);
    }
    out
}
