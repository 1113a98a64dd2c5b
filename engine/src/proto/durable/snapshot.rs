//! Incremental snapshots: the live state written into the log a bounded chunk per input, so
//! compaction never pauses a shard for a time that grows with its state.
//!
//! What it is for: the runtime begins a snapshot ([`ShardCore::start_snapshot`]) right after
//! the log's begin marker, then calls [`ShardCore::snapshot_step`] after later inputs (every
//! flush completion is one, so an idle shard's snapshot also runs to its end); each step
//! writes the images of at most [`SNAPSHOT_SESSIONS_PER_STEP`] persistent sessions and at most
//! [`SNAPSHOT_RETAINED_PER_STEP`] retained messages. When a step reports the walk done the
//! runtime writes the end marker.
//!
//! Why interleaving is safe (replay starts at the begin marker of the last complete
//! snapshot, docs/storage.md "Snapshots"): every record is an upsert or applies to a session
//! the replay already holds.
//! - A session's image (`Session` with `reset`, then its in-flight, queued and inbound QoS 2
//!   entries) replaces whatever the replay held for it; records about it written before its
//!   image are either skipped (session unknown) or overwritten by the image, which shows their
//!   effect; records after it apply to the image, as they applied to the live session.
//! - A session removed before the walk reaches it is never imaged: nothing in the window
//!   brings it back (a `SessionRemoved` in the window only adds a tombstone). One removed
//!   after its image: the `SessionRemoved` has a newer generation than the image and removes
//!   it. One created during the walk is written as an image by its creation (and again if the
//!   walk reaches its slot; the second image equals the live state then).
//! - Retained messages are taken (as shared references, no copy of payloads) when the walk
//!   starts and written in chunks; an update made meanwhile is written with a higher stamp,
//!   and the highest stamp wins whatever the order, clears (tombstones) included.
//! - `Message` records are referenced only by `Enqueued` records of the same batch.
//!
//! What it must never do: write more than the bounds above in one step, or report done before
//! every slot that may hold a session and every retained message taken were visited.

use std::collections::VecDeque;

use super::Durable;
use super::record::Record;
use crate::ids::SessionId;
use crate::proto::ShardCore;
use crate::proto::message::Message;

/// Persistent sessions imaged in one step, at most.
pub const SNAPSHOT_SESSIONS_PER_STEP: usize = 256;

/// Retained messages written in one step, at most.
pub const SNAPSHOT_RETAINED_PER_STEP: usize = 1024;

/// Empty session slots passed over in one step, at most (slots are cheap to test; the
/// bound keeps a step short in a slab left sparse by many disconnects).
const SNAPSHOT_SLOTS_PER_STEP: usize = 1 << 16;

/// Where a snapshot in progress stands.
#[derive(Debug, Default)]
pub(crate) struct SnapshotWalk {
    /// The next session slot to visit.
    next_slot: usize,
    /// Retained messages (stamp, message) taken at the start, not yet written.
    retained: VecDeque<(u64, Message)>,
    /// Steps taken (tests and logs).
    steps: u64,
}

/// What one [`ShardCore::snapshot_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotProgress {
    /// Sessions imaged and retained messages written by this step.
    pub sessions: usize,
    pub retained: usize,
    /// The walk is over: the runtime writes the end marker.
    pub done: bool,
}

impl ShardCore {
    /// Starts an incremental snapshot (after the log's begin marker): the walk over sessions
    /// starts at slot 0 and the retained messages are taken. A snapshot already in progress
    /// starts again.
    pub fn start_snapshot(&mut self) {
        if self.durable.is_none() {
            return;
        }
        use crate::shard::retain::RetainStore;
        let mut retained = VecDeque::with_capacity(self.retained.len());
        self.retained
            .for_each_matching(b"#", &mut |_, r: &crate::proto::route::Retained| {
                retained.push_back((r.seq, r.message.clone()));
            });
        if let Some(d) = self.durable.as_deref_mut() {
            d.snapshot = Some(SnapshotWalk {
                next_slot: 0,
                retained,
                steps: 0,
            });
        }
    }

    /// Whether a snapshot is in progress (started, not yet done or cancelled).
    pub fn snapshot_in_progress(&self) -> bool {
        self.durable
            .as_deref()
            .is_some_and(|d| d.snapshot.is_some())
    }

    /// Abandons the snapshot in progress (the log aborted it).
    pub fn cancel_snapshot(&mut self) {
        if let Some(d) = self.durable.as_deref_mut() {
            d.snapshot = None;
        }
    }

    /// Writes the next chunk of the snapshot in progress (see the bounds above). `done`:
    /// nothing is left (also when no snapshot is in progress).
    pub fn snapshot_step(&mut self) -> SnapshotProgress {
        let mut progress = SnapshotProgress::default();
        let Some(mut d) = self.durable.take() else {
            progress.done = true;
            return progress;
        };
        let Some(mut walk) = d.snapshot.take() else {
            self.durable = Some(d);
            progress.done = true;
            return progress;
        };
        walk.steps += 1;
        let bound = self.sessions.slot_bound();
        let mut slots = 0;
        while walk.next_slot < bound
            && progress.sessions < SNAPSHOT_SESSIONS_PER_STEP
            && slots < SNAPSHOT_SLOTS_PER_STEP
        {
            let sidx = SessionId::from_slot(walk.next_slot);
            walk.next_slot += 1;
            slots += 1;
            if let Some(s) = self.sessions.get(sidx).filter(|s| s.durable) {
                let will = s
                    .conn
                    .and_then(|c| self.conns.get(c))
                    .and_then(|c| c.will.as_deref());
                d.session_image(s, will);
                progress.sessions += 1;
            }
        }
        if walk.next_slot >= bound {
            while progress.retained < SNAPSHOT_RETAINED_PER_STEP
                && let Some((seq, m)) = walk.retained.pop_front()
            {
                write_retained(&mut d, seq, &m);
                progress.retained += 1;
            }
            progress.done = walk.retained.is_empty();
        }
        if !progress.done {
            d.snapshot = Some(walk);
        }
        self.durable = Some(d);
        progress
    }

    /// Emits the whole live state as records in one go (tests, and where a pause does not
    /// matter): [`Self::start_snapshot`], then steps until done.
    pub fn snapshot_records(&mut self) {
        self.start_snapshot();
        while !self.snapshot_step().done {}
    }

    /// Snapshot invariants (`check_invariants`): the walk stays within the slab and its
    /// retained backlog within the store's bound.
    pub(crate) fn check_snapshot_invariants(&self, d: &Durable) {
        if let Some(walk) = &d.snapshot {
            assert!(
                walk.next_slot <= self.sessions.slot_bound(),
                "snapshot walk beyond the session slots"
            );
            assert!(
                walk.retained.len() <= self.retained.max_messages(),
                "snapshot holds more retained messages than the store can"
            );
        }
    }
}

fn write_retained(d: &mut Durable, seq: u64, m: &Message) {
    let message = d.stored(m);
    d.push(&Record::Retained { seq, message });
}
