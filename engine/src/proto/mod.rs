//! The shard core: the sans-IO broker logic of one shard.
//!
//! What it is for: everything a shard decides — connections, sessions, CONNECT and takeover,
//! publish, routing and delivery, subscriptions, authentication glue, timers — as a state
//! machine driven through one entry point, [`ShardCore::handle`] (`input.rs`), with time
//! ([`Now`]) as an argument. Outputs are polled: bytes per connection (`Conn::take_output`),
//! writers to wake ([`ShardCore::poll_writable`]), mesh backlog ([`ShardCore::mesh_backlog`]).
//! What it must never do: touch a socket, a file, a thread, a task or a clock (CI greps this
//! folder for them), panic on what a peer sends, or let a queue grow without a bound.
//!
//! Where things are: `lifecycle` (accept → read → close → release), `packets` (a connected
//! client's packets and acknowledgements), `connect` (CONNECT, sessions, CONNACK), `claims`
//! (client-id directory, claims, takeover), `publish`, `route` (tries, interest, matching),
//! `deliver` (windows, queues, shared groups), `forward` (sessions that moved), `subscribe`,
//! `authn`, `quotas`, `timers`, `outbox` (mesh in and out, throttle), `wire` (what is written
//! to a client). State that one concern owns is a sub-struct with private fields in that
//! concern's file (`claims::Claims`, `forward::Forwarding`, `outbox::Outboxes`,
//! `timers::Timers`).

/// An "impossible" branch: a slot that an invariant says is there is empty. Debug builds panic
/// (the tests and the fuzzer find it); release builds count it
/// (`ringmq_internal_errors_total`) and log it, and the caller skips the step instead of
/// taking the shard and its thousands of connections down.
macro_rules! bug {
    ($metrics:expr, $($arg:tt)+) => {{
        debug_assert!(false, $($arg)+);
        $metrics.internal_errors.inc();
        tracing::error!("internal error: {}", format_args!($($arg)+));
    }};
}

pub mod authn;
pub mod authn_external;
mod claims;
pub use claims::directory_shard_of;
pub mod conn;
mod connect;
mod conns;
mod deliver;
pub mod durable;
mod forward;
mod input;
mod lifecycle;
pub mod message;
mod outbox;
mod packets;
mod publish;
mod quotas;
pub mod route;
pub mod session;
mod subscribe;
mod timers;
mod wire;

pub(crate) use wire::{
    Failure, fail, over_quota, reason_string, write_connack_refusal, write_packet,
};

use bytes::Bytes;
use rustc_hash::FxHashMap;

use crate::config::Limits;

use crate::ops::metrics::{ShardHandle, ShardMetrics};
use crate::proto::conn::Conn;
use crate::proto::conns::Conns;
use crate::proto::route::{Interest, LocalSubs, Scratch};
use crate::proto::session::Sessions;
use crate::shard::mesh::Mesh;
use crate::shard::retain::MemoryRetainStore;
use crate::shard::trie::FilterTrie;

pub use crate::ids::{ConnId, SessionId, ShardId};
pub use input::{Handled, Input, Now};

/// Data-lane messages handled before each piece of client input (see
/// [`ShardCore::poll_mesh`]): enough to keep the lane moving, few enough that a read stays
/// cheap whatever other shards send.
pub const MESH_PER_INPUT: usize = 128;

/// Deliveries the data-lane messages of one batch ([`ShardCore::poll_mesh`]) may cause before
/// the batch ends: with a topic of a thousand subscribers, 1 024 messages were a million
/// deliveries and one turn of the inbox task took tens of milliseconds.
pub const MESH_DELIVERIES_PER_BATCH: u64 = 8192;

/// Internal counters of session moves, for tests and debugging; what an operator needs is in
/// [`ShardCore::metrics`].
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Messages forwarded to a session's new shard after it moved.
    pub forwarded_after_move: u64,
    /// Forwarded messages that found no session (or no matching subscription) on arrival.
    pub dropped_no_session: u64,
    /// Forwarded copies dropped because the session got the message through this shard.
    pub forwarded_duplicates: u64,
}

/// Everything one shard owns.
pub struct ShardCore {
    pub id: ShardId,
    shards: usize,
    limits: Limits,
    codec_limits: ringmq_codec::Limits,
    /// The authentication and authorization policy (shared snapshot, swapped on reload).
    auth: ringmq_auth::SharedSnapshot,
    /// The snapshot version the connected sessions were last checked against.
    auth_version: u64,
    /// This shard's verification caches (no sharing, no locks).
    auth_caches: ringmq_auth::Caches,
    /// Authentication decided off the shard: parked CONNECTs, requests, cache
    /// (`authn_external.rs`).
    external: authn_external::External,
    conns: Conns,
    next_serial: u64,
    sessions: Sessions,
    by_client_id: FxHashMap<Bytes, SessionId>,
    subs: FilterTrie<LocalSubs>,
    interest: FilterTrie<Interest>,
    retained: MemoryRetainStore<crate::proto::route::Retained>,
    /// The client-id directory, claims in flight and the claim log (`claims.rs`).
    claims: claims::Claims,
    /// Wall time, `$SYS` publication, shutdown (`timers.rs`).
    timers: timers::Timers,
    /// Sessions that moved away recently, and interests withdrawn after a grace (`forward.rs`).
    forwarding: forward::Forwarding,
    /// The mesh, the outboxes towards other shards and the throttle (`outbox.rs`).
    outboxes: outbox::Outboxes,
    scratch: Scratch,
    assigned_ids: u64,
    /// Connection and publish quotas (`quotas.rs`).
    quotas: quotas::Quotas,
    pub stats: Stats,
    /// This shard's metrics (written here only; read by the exporter and `$SYS`).
    metrics: ShardHandle,
    /// Retained messages in this replica, clears (tombstones) and `$` topics left out.
    retained_live: u64,
    /// Persistence (`durable/`): `None` when storage is off, which keeps the memory-only
    /// path free of it.
    durable: Option<Box<durable::Durable>>,
}

impl std::fmt::Debug for ShardCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardCore")
            .field("id", &self.id)
            .field("conns", &self.conns.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl ShardCore {
    /// A core counting into metrics of its own (protocol tests, benches).
    pub fn new(
        id: usize,
        mesh: Option<Mesh>,
        limits: Limits,
        auth: ringmq_auth::SharedSnapshot,
    ) -> ShardCore {
        let shards = mesh.as_ref().map_or(1, Mesh::shards);
        ShardCore::with_metrics(id, mesh, limits, auth, ShardHandle::standalone(id, shards))
    }

    /// A core counting into the server's metrics.
    pub fn with_metrics(
        id: usize,
        mesh: Option<Mesh>,
        limits: Limits,
        auth: ringmq_auth::SharedSnapshot,
        metrics: ShardHandle,
    ) -> ShardCore {
        let shards = mesh.as_ref().map_or(1, Mesh::shards);
        let conn_quotas = mesh
            .as_ref()
            .map_or_else(Default::default, |m| m.conn_quotas().clone());
        ShardCore {
            quotas: quotas::Quotas::new(&limits, conn_quotas, shards),
            id: ShardId::from_slot(id),
            shards,
            codec_limits: ringmq_codec::Limits {
                max_packet_size: limits.max_packet_size,
            },
            retained: MemoryRetainStore::new(limits.max_retained_messages),
            limits,
            auth_version: auth.load().version,
            auth,
            auth_caches: ringmq_auth::Caches::default(),
            external: authn_external::External::default(),
            conns: Conns::new(),
            next_serial: 0,
            sessions: Sessions::default(),
            by_client_id: FxHashMap::default(),
            subs: FilterTrie::new(),
            interest: FilterTrie::new(),
            claims: claims::Claims::default(),
            timers: timers::Timers::default(),
            forwarding: forward::Forwarding::default(),
            outboxes: outbox::Outboxes::new(mesh, shards),
            scratch: Scratch::default(),
            assigned_ids: 0,
            stats: Stats::default(),
            metrics,
            retained_live: 0,
            durable: None,
        }
    }

    /// The codec limits of this shard's connections (the runtime sizes partial frames by them).
    pub fn codec_limits(&self) -> &ringmq_codec::Limits {
        &self.codec_limits
    }

    /// This shard's metrics.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    pub fn conn(&self, index: ConnId) -> Option<&Conn> {
        self.conns.get(index)
    }

    /// The connection, for the runtime to take its output (which wakes no writer).
    pub fn conn_mut(&mut self, index: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut_quiet(index)
    }

    /// Assigned client ids start with this; exposed for tests.
    pub fn assigned_prefix(&self) -> String {
        format!("ringmq-{}-", self.id)
    }

    /// Session and connection counts, for tests and metrics.
    pub fn counts(&self) -> (usize, usize) {
        (self.conns.len(), self.sessions.len())
    }

    /// The client ids of the sessions on this shard, for checks across shards (tests, fuzzer).
    pub fn session_client_ids(&self) -> impl Iterator<Item = &[u8]> {
        self.by_client_id.keys().map(|k| k.as_ref())
    }

    /// Checks the core's invariants, panicking with the first one broken: for tests and the
    /// fuzzer, after every input (a full pass over connections and sessions).
    pub fn check_invariants(&self) {
        for (id, conn) in self.conns.iter() {
            assert!(
                !conn.is_connected() || conn.session.is_some(),
                "{id}: connected without a session"
            );
            if let Some(sidx) = conn.session {
                let session = self.sessions.get(sidx);
                assert!(session.is_some(), "{id}: session {sidx} is gone");
                if conn.is_connected() {
                    assert_eq!(
                        session.and_then(|s| s.conn),
                        Some(id),
                        "{id}: its session points elsewhere"
                    );
                    // [MQTT-3.3.4-9]: PUBLISH packets sent and not completed on this
                    // connection stay within the client's Receive Maximum.
                    let sent = session.map_or(0, |s| s.inflight.iter().filter(|f| f.sent).count());
                    assert!(
                        sent <= usize::from(conn.window),
                        "{id}: {sent} in flight over a window of {}",
                        conn.window
                    );
                }
            }
        }
        for (sidx, session) in self.sessions.iter() {
            if let Some(id) = session.conn {
                let conn = self.conns.get(id);
                assert!(conn.is_some(), "session {sidx}: connection {id} is gone");
                assert_eq!(
                    conn.and_then(|c| c.session),
                    Some(sidx),
                    "session {sidx}: its connection points elsewhere"
                );
            }
            assert_eq!(
                self.by_client_id.get(session.client_id.as_bytes()),
                Some(&sidx),
                "session {sidx}: not found by its client id"
            );
            let window = self
                .limits
                .max_inflight
                .max(self.limits.application.max_inflight);
            session.check_invariants(window);
        }
        assert_eq!(
            self.by_client_id.len(),
            self.sessions.len(),
            "client-id index and sessions differ"
        );
        for id in self.forwarding.stays() {
            assert!(
                self.by_client_id.contains_key(id),
                "a stay is recorded for {id:?}, whose session is not here"
            );
        }
        self.claims.check_invariants();
        self.check_durable_invariants();
        self.outboxes
            .check_invariants(self.limits.shard_queue_capacity);
    }
}
