//! Metrics: per-shard counters and gauges, their Prometheus text rendering, Mosquitto-style
//! `$SYS` values, and a small HTTP/1.1 endpoint (`/metrics`, `/health`, `/ready`).
//!
//! What it is for: letting an operator see a running broker without touching a shard. Each
//! shard writes only its own [`ShardMetrics`] (plain relaxed atomics, cache-line aligned so
//! shards never share a line); the exporter reads all of them and sums.
//! What it must never do: take a lock or allocate on a shard's hot path, or block a shard. The
//! HTTP server runs on its own std threads and only reads atomics.
//!
//! Single-writer rule: a shard's counters are bumped with a relaxed load + store (no locked
//! read-modify-write instruction), which is exact only because one thread writes them. Only
//! the shard that owns a [`ShardMetrics`] may write it; [`AuthMetrics`] is written by the
//! reload and JWKS threads with `fetch_add`.
//!
//! Files: this one holds the metrics and the `$SYS` values; `render.rs` writes the Prometheus
//! text, `http.rs` serves the endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::config::ListenerConfig;

mod http;
mod process;
mod render;

pub use http::{
    Health, MAX_HTTP_WORKERS, MAX_REQUEST_HEAD, REQUEST_TIMEOUT, serve_http, spawn_http,
};
pub use process::ProcessStats;

/// The commit the binary was built from (`git rev-parse` at build time, see `build.rs`), or
/// `unknown` when it was built outside a git checkout (a source package).
pub const BUILD_COMMIT: &str = env!("RINGMQ_BUILD_COMMIT");
/// The crate version, for `ringmq_build_info`.
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

// ---- counters and gauges ------------------------------------------------------------------

/// A monotonically increasing count, written by one thread (see the module header).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        // Single writer: load + store is exact and avoids a locked instruction per message.
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Mirrors a count the owner already keeps (the auth caches' hit counts, `core::Stats`),
    /// copied on a tick instead of bumped at each event. It must not go down.
    pub fn set_total(&self, total: u64) {
        debug_assert!(total >= self.0.load(Relaxed), "a counter went down");
        self.0.store(total, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down, written by one thread. `sub` saturates at zero so a
/// mismatched decrement shows as 0, not as 18446744073709551615.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.0
            .store(self.0.load(Relaxed).saturating_add(n), Relaxed);
    }

    #[inline]
    pub fn sub(&self, n: u64) {
        debug_assert!(self.0.load(Relaxed) >= n, "gauge decremented below zero");
        self.0
            .store(self.0.load(Relaxed).saturating_sub(n), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

// ---- label sets ---------------------------------------------------------------------------

/// Declares a label enum with its Prometheus label values, in index order.
macro_rules! label_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $label:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Label values in index (`as usize`) order.
            pub const LABELS: &'static [&'static str] = &[$($label),+];
            pub const COUNT: usize = Self::ALL.len();

            /// The label value.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }
    };
}

label_enum!(
    /// Why a message was not delivered (or not accepted).
    DropCause {
        Qos0SlowConsumer = "qos0_slow_consumer",
        QueueFull = "queue_full",
        TooLarge = "too_large",
        Expired = "expired",
        NotAuthorized = "not_authorized",
        /// A session on its way to this shard missed it: the claim log was full.
        ClaimLogFull = "claim_log_full",
    }
);

label_enum!(
    /// How a client authenticated (or tried to).
    AuthMethod {
        Anonymous = "anonymous",
        Certificate = "certificate",
        CustomJwt = "custom_jwt",
        OAuth2Jwt = "oauth2_jwt",
        PasswordJwt = "password_jwt",
        Webhook = "webhook",
        PasswordFile = "password_file",
        /// An Authentication Method the broker does not know (counted with `bad_method`).
        Unknown = "unknown",
    }
);

label_enum!(
    /// Why authentication failed; `Other` covers `AuthError` variants added later.
    AuthFailure {
        BadCredentials = "bad_credentials",
        NotAuthorized = "not_authorized",
        BadMethod = "bad_method",
        Other = "other",
    }
);

label_enum!(
    /// A per-shard verification cache.
    AuthCache {
        X509 = "x509",
        Jwt = "jwt",
    }
);

label_enum!(
    /// A quota that refused a connection or a message.
    Quota {
        Connections = "connections",
        ConnectionsPerIp = "connections_per_ip",
        ConnectionRate = "connection_rate",
        MessageRate = "message_rate",
        /// `limits.max_publish_bandwidth`: PUBLISH bytes per second of one connection.
        Bandwidth = "bandwidth",
        /// The registry's `maxClientSessionsPerAuthenticationName`.
        SessionsPerName = "sessions_per_name",
    }
);

label_enum!(
    /// An MQTT control packet type, for the per-type packet counters.
    PacketType {
        Connect = "connect",
        Connack = "connack",
        Publish = "publish",
        Puback = "puback",
        Pubrec = "pubrec",
        Pubrel = "pubrel",
        Pubcomp = "pubcomp",
        Subscribe = "subscribe",
        Suback = "suback",
        Unsubscribe = "unsubscribe",
        Unsuback = "unsuback",
        Pingreq = "pingreq",
        Pingresp = "pingresp",
        Disconnect = "disconnect",
        Auth = "auth",
    }
);

impl PacketType {
    #[inline]
    pub fn of(p: &ringmq_codec::Packet) -> PacketType {
        use ringmq_codec::Packet;
        match p {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::Connack,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::Puback,
            Packet::PubRec(_) => PacketType::Pubrec,
            Packet::PubRel(_) => PacketType::Pubrel,
            Packet::PubComp(_) => PacketType::Pubcomp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::Suback,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::Unsuback,
            Packet::PingReq => PacketType::Pingreq,
            Packet::PingResp => PacketType::Pingresp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

label_enum!(
    /// Why a connection on a `proxy_protocol` listener was closed before MQTT.
    ProxyFailure {
        /// Not a PROXY protocol v1 or v2 header, or a malformed one.
        Invalid = "invalid",
        /// No complete header within `limits.connect_timeout_secs`.
        Timeout = "timeout",
        /// The client closed (or the socket failed) before the header was complete.
        Closed = "closed",
        /// Too many connections of the shard were waiting for their header.
        TooManyPending = "too_many_pending",
    }
);

/// Upper bounds (inclusive, nanoseconds) of the delivery latency histogram's buckets; one
/// more bucket above them is `+Inf`. From 10 µs (a delivery on the publisher's own shard
/// within one input) to 10 s (a queued message delivered long after).
pub const LATENCY_BOUNDS_NANOS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A histogram with fixed buckets, written by one thread: one counter per bucket (not
/// cumulative; the exporter adds them up) and the sum in nanoseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; LATENCY_BOUNDS_NANOS.len() + 1],
    sum_nanos: Counter,
}

impl Histogram {
    /// Records one observation: a binary search over 19 bounds and two counter bumps, no
    /// allocation.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_NANOS.partition_point(|&b| b < nanos);
        self.buckets[i].inc();
        self.sum_nanos.add(nanos);
    }

    /// Observations per bucket (not cumulative), the last one `+Inf`.
    pub fn bucket_counts(&self) -> impl Iterator<Item = u64> + '_ {
        self.buckets.iter().map(Counter::get)
    }

    pub fn count(&self) -> u64 {
        self.bucket_counts().fold(0u64, u64::wrapping_add)
    }

    pub fn sum_nanos(&self) -> u64 {
        self.sum_nanos.get()
    }
}

impl From<ringmq_auth::identity::Method> for AuthMethod {
    fn from(m: ringmq_auth::identity::Method) -> AuthMethod {
        use ringmq_auth::identity::Method;
        match m {
            Method::Anonymous => AuthMethod::Anonymous,
            Method::Certificate => AuthMethod::Certificate,
            Method::CustomJwt => AuthMethod::CustomJwt,
            Method::OAuth2Jwt => AuthMethod::OAuth2Jwt,
            Method::PasswordJwt => AuthMethod::PasswordJwt,
            Method::Webhook => AuthMethod::Webhook,
            Method::PasswordFile => AuthMethod::PasswordFile,
        }
    }
}

impl From<&ringmq_auth::identity::AuthError> for AuthFailure {
    fn from(e: &ringmq_auth::identity::AuthError) -> AuthFailure {
        use ringmq_auth::identity::AuthError;
        match e {
            AuthError::BadCredentials(_) => AuthFailure::BadCredentials,
            AuthError::NotAuthorized(_) => AuthFailure::NotAuthorized,
            AuthError::BadMethod(_) => AuthFailure::BadMethod,
            _ => AuthFailure::Other,
        }
    }
}

/// A listener as it appears in labels: `listener="0.0.0.0:8883", protocol="mqtts"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLabel {
    pub name: String,
    pub protocol: &'static str,
}

impl ListenerLabel {
    pub fn from_config(l: &ListenerConfig) -> ListenerLabel {
        ListenerLabel {
            name: l.bind.to_string(),
            protocol: l.protocol.name(),
        }
    }
}

// ---- per shard ----------------------------------------------------------------------------

/// Connections of one listener on one shard. Aligned like [`ShardMetrics`]: the shards'
/// listener arrays are separate heap blocks that may lie next to each other.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ListenerMetrics {
    /// Open network connections (accepted, CONNECT or not).
    pub connections: Gauge,
    pub connections_total: Counter,
}

/// One shard's metrics. Written only by that shard's thread; aligned to 128 bytes (two cache
/// lines, the adjacent-line prefetch unit) so two shards' counters never share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardMetrics {
    /// Indexed by listener number (the order of `[[listener]]` in the config).
    pub listeners: Box<[ListenerMetrics]>,
    /// PUBLISH packets received from clients, by QoS.
    pub messages_in: [Counter; 3],
    /// PUBLISH packets written to clients, by QoS.
    pub messages_out: [Counter; 3],
    /// Bytes read from / written to client sockets (TLS: the encrypted bytes).
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub dropped: [Counter; DropCause::COUNT],
    /// Retained messages in this shard's replica.
    pub retained_messages: Gauge,
    /// Sessions with a live connection / kept for a client that is away.
    pub sessions_online: Gauge,
    pub sessions_offline: Gauge,
    pub subscriptions: Gauge,
    /// Messages waiting in this shard's mesh inbox (sampled).
    pub mesh_inbox_depth: Gauge,
    /// Messages that found a destination inbox full and waited in the outbox.
    pub mesh_overflow: Counter,
    /// Messages waiting in this shard's mesh outboxes, both lanes, all destinations (sampled).
    pub mesh_outbox_depth: Gauge,
    /// CONNECTs and re-authentications parked until the authentication pool answers (sampled).
    pub auth_pending: Gauge,
    /// Connections closed for a protocol violation or decode error.
    pub protocol_errors: Counter,
    /// Broken internal invariants met in a release build (a bug: each is logged as an error;
    /// debug builds assert instead).
    pub internal_errors: Counter,
    pub subscribe_denied: Counter,
    /// Failed `accept` calls (out of descriptors above all, see `accept.rs`).
    pub accept_errors: Counter,
    /// Connections accepted with the reserve descriptor only to be refused (CONNACK 0x97).
    pub refused_no_descriptors: Counter,
    pub auth_successes: [Counter; AuthMethod::COUNT],
    /// Indexed `[method * AuthFailure::COUNT + reason]`.
    pub auth_failures: [Counter; AuthMethod::COUNT * AuthFailure::COUNT],
    /// Indexed `[cache * 2 + (0 = hit, 1 = miss)]`.
    pub auth_cache: [Counter; AuthCache::COUNT * 2],
    pub quota_rejections: [Counter; Quota::COUNT],
    /// MQTT control packets decoded from clients / encoded to clients, by type.
    pub packets_received: [Counter; PacketType::COUNT],
    pub packets_sent: [Counter; PacketType::COUNT],
    /// From a client's PUBLISH read (on the publisher's shard) to a copy of it encoded for a
    /// subscriber (on the subscriber's shard); see `proto::deliver::write_publish`.
    pub delivery_latency: Histogram,
    /// Connections closed before MQTT on a `proxy_protocol` listener.
    pub proxy_failures: [Counter; ProxyFailure::COUNT],
}

impl ShardMetrics {
    pub fn new(listeners: usize) -> ShardMetrics {
        ShardMetrics {
            listeners: (0..listeners).map(|_| ListenerMetrics::default()).collect(),
            ..ShardMetrics::default()
        }
    }

    /// A connection accepted on listener `listener`.
    #[inline]
    pub fn connection_opened(&self, listener: usize) {
        if let Some(l) = self.listeners.get(listener) {
            l.connections.add(1);
            l.connections_total.inc();
        } else {
            debug_assert!(false, "listener {listener} out of range");
        }
    }

    /// A connection of listener `listener` released (its tasks ended).
    #[inline]
    pub fn connection_closed(&self, listener: usize) {
        if let Some(l) = self.listeners.get(listener) {
            l.connections.sub(1);
        }
    }

    #[inline]
    pub fn message_in(&self, qos: ringmq_codec::QoS) {
        self.messages_in[qos as usize].inc();
    }

    #[inline]
    pub fn message_out(&self, qos: ringmq_codec::QoS) {
        self.messages_out[qos as usize].inc();
    }

    #[inline]
    pub fn dropped(&self, cause: DropCause) {
        self.dropped[cause as usize].inc();
    }

    pub fn auth_succeeded(&self, method: AuthMethod) {
        self.auth_successes[method as usize].inc();
    }

    pub fn auth_failed(&self, method: AuthMethod, reason: AuthFailure) {
        self.auth_failures[method as usize * AuthFailure::COUNT + reason as usize].inc();
    }

    pub fn auth_cache_lookup(&self, cache: AuthCache, hit: bool) {
        self.auth_cache[cache as usize * 2 + usize::from(!hit)].inc();
    }

    /// Mirrors a cache's own hit and miss counts (`X509Cache::hits`, `JwtCache::stats`).
    pub fn auth_cache_totals(&self, cache: AuthCache, hits: u64, misses: u64) {
        self.auth_cache[cache as usize * 2].set_total(hits);
        self.auth_cache[cache as usize * 2 + 1].set_total(misses);
    }

    pub fn quota_rejected(&self, quota: Quota) {
        self.quota_rejections[quota as usize].inc();
    }

    #[inline]
    pub fn packet_received(&self, p: &ringmq_codec::Packet) {
        self.packets_received[PacketType::of(p) as usize].inc();
    }

    #[inline]
    pub fn packet_sent(&self, t: PacketType) {
        self.packets_sent[t as usize].inc();
    }

    pub fn proxy_failed(&self, why: ProxyFailure) {
        self.proxy_failures[why as usize].inc();
    }
}

/// A shard's handle on the broker's metrics: dereferences to its own [`ShardMetrics`], which
/// only that shard writes, and reaches the whole set for `$SYS` (`all`).
#[derive(Debug, Clone)]
pub struct ShardHandle {
    all: Arc<Metrics>,
    id: usize,
}

impl ShardHandle {
    /// Shard `id`'s handle; `id` must be below `all.shards().len()`.
    pub fn new(all: Arc<Metrics>, id: usize) -> ShardHandle {
        assert!(id < all.shards.len(), "shard {id} has no metrics");
        ShardHandle { all, id }
    }

    /// Metrics of a core that runs outside a server (protocol tests, benches): its own set,
    /// with one unnamed listener (number 0).
    pub fn standalone(id: usize, shards: usize) -> ShardHandle {
        let listener = ListenerLabel {
            name: "standalone".into(),
            protocol: "mqtt",
        };
        ShardHandle::new(
            Arc::new(Metrics::new(shards.max(id + 1), vec![listener])),
            id,
        )
    }

    /// Every shard's metrics (read only: a shard writes its own through `Deref`).
    pub fn all(&self) -> &Metrics {
        &self.all
    }
}

impl std::ops::Deref for ShardHandle {
    type Target = ShardMetrics;

    #[inline]
    fn deref(&self) -> &ShardMetrics {
        &self.all.shards[self.id]
    }
}

// ---- shared, written off the shards ---------------------------------------------------------

/// One JWKS endpoint's fetch state.
#[derive(Debug)]
pub struct JwksMetrics {
    pub issuer: String,
    pub fetch_ok: AtomicU64,
    pub fetch_failed: AtomicU64,
    /// Unix seconds of the last successful fetch; 0 = never.
    pub last_success_unix_secs: AtomicU64,
    /// Whether the last fetch succeeded.
    pub up: AtomicBool,
}

/// Authentication state kept outside the shards: the registry version and reloads (the reload
/// thread) and JWKS fetches (the fetcher). The issuer list is a snapshot swapped on reload, so
/// the exporter reads it without a lock.
#[derive(Debug, Default)]
pub struct AuthMetrics {
    pub registry_version: AtomicU64,
    pub registry_reloads_ok: AtomicU64,
    pub registry_reloads_failed: AtomicU64,
    jwks: ArcSwap<Vec<Arc<JwksMetrics>>>,
}

impl AuthMetrics {
    /// Replaces the set of JWKS issuers (after a reload), keeping the state of issuers that
    /// stay.
    pub fn set_jwks_issuers<S: AsRef<str>>(&self, issuers: &[S]) {
        let old = self.jwks.load();
        let new = issuers
            .iter()
            .map(|i| {
                let i = i.as_ref();
                old.iter()
                    .find(|m| m.issuer == i)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(JwksMetrics {
                            issuer: i.to_owned(),
                            fetch_ok: AtomicU64::new(0),
                            fetch_failed: AtomicU64::new(0),
                            last_success_unix_secs: AtomicU64::new(0),
                            up: AtomicBool::new(false),
                        })
                    })
            })
            .collect();
        self.jwks.store(Arc::new(new));
    }

    /// Records a fetch of `issuer`'s key set; unknown issuers are ignored.
    pub fn jwks_fetched(&self, issuer: &str, ok: bool, at: SystemTime) {
        let list = self.jwks.load();
        let Some(m) = list.iter().find(|m| m.issuer == issuer) else {
            return;
        };
        m.up.store(ok, Relaxed);
        if ok {
            m.fetch_ok.fetch_add(1, Relaxed);
            let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            m.last_success_unix_secs.store(secs, Relaxed);
        } else {
            m.fetch_failed.fetch_add(1, Relaxed);
        }
    }

    pub fn registry_reloaded(&self, version: u64) {
        self.registry_version.store(version, Relaxed);
        self.registry_reloads_ok.fetch_add(1, Relaxed);
    }

    pub fn registry_reload_failed(&self) {
        self.registry_reloads_failed.fetch_add(1, Relaxed);
    }
}

// ---- the whole broker -----------------------------------------------------------------------

/// Every shard's metrics plus the shared ones; shared as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    shards: Box<[ShardMetrics]>,
    listeners: Box<[ListenerLabel]>,
    pub auth: AuthMetrics,
    /// Stalls seen per shard, counted by the stall detector's thread (`fetch_add`: not a
    /// shard's single-writer counter).
    stalls: Box<[AtomicU64]>,
    started: Instant,
    /// Every shard's log counters, set once the store is open (`[storage] dir`).
    pub storage: std::sync::OnceLock<Box<[Arc<ringmq_storage::LogStats>]>>,
    /// The authentication pool's gauges (only when the pool runs: a password file, a webhook
    /// or a registry).
    pub auth_pool: std::sync::OnceLock<Arc<dyn AuthPoolGauges>>,
}

/// What the authentication pool reports at each scrape (`authpool.rs`).
pub trait AuthPoolGauges: Send + Sync + std::fmt::Debug {
    /// Requests waiting for a worker thread.
    fn queued(&self) -> u64;
    /// Requests decided since start.
    fn decided(&self) -> u64;
    /// The webhook's circuit breaker: `None` without a webhook, else whether it is open now.
    fn breaker_open(&self) -> Option<bool>;
}

impl Metrics {
    pub fn new(shards: usize, listeners: Vec<ListenerLabel>) -> Metrics {
        assert!(shards >= 1, "at least one shard");
        Metrics {
            shards: (0..shards)
                .map(|_| ShardMetrics::new(listeners.len()))
                .collect(),
            listeners: listeners.into(),
            auth: AuthMetrics::default(),
            stalls: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            started: Instant::now(),
            storage: std::sync::OnceLock::new(),
            auth_pool: std::sync::OnceLock::new(),
        }
    }

    /// Metrics for `shards` shards and the configured listeners, in config order.
    pub fn for_config(shards: usize, listeners: &[ListenerConfig]) -> Metrics {
        Metrics::new(
            shards,
            listeners.iter().map(ListenerLabel::from_config).collect(),
        )
    }

    /// Counts a stall of shard `id` (the stall detector, see `stall.rs`).
    pub fn stalled(&self, id: usize) {
        if let Some(c) = self.stalls.get(id) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Stalls counted for shard `id`.
    pub fn stalls(&self, id: usize) -> u64 {
        self.stalls.get(id).map_or(0, |c| c.load(Relaxed))
    }

    /// Shard `id`'s metrics, to be written by that shard only.
    pub fn shard(&self, id: usize) -> &ShardMetrics {
        &self.shards[id]
    }

    pub fn shards(&self) -> &[ShardMetrics] {
        &self.shards
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    fn sum(&self, f: impl Fn(&ShardMetrics) -> u64) -> u64 {
        self.shards
            .iter()
            .map(f)
            .fold(0u64, |a, b| a.wrapping_add(b))
    }

    /// Retained messages: every shard holds a full replica, so the largest, not the sum.
    fn retained(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.retained_messages.get())
            .max()
            .unwrap_or(0)
    }

    /// Mosquitto-style `$SYS` topics and values, only those ringmq can compute honestly (no
    /// heap size, no load averages, no high-water marks). `version` is the crate version.
    /// Meanings as in mosquitto(8), except `messages/*`: ringmq counts PUBLISH packets there
    /// (the same as `publish/messages/*`), Mosquitto all control packets.
    pub fn sys_topics(&self, version: &str) -> Vec<(String, String)> {
        let online = self.sum(|s| s.sessions_online.get());
        let offline = self.sum(|s| s.sessions_offline.get());
        let received = self.sum(|s| s.messages_in.iter().map(Counter::get).sum());
        let sent = self.sum(|s| s.messages_out.iter().map(Counter::get).sum());
        let dropped = self.sum(|s| s.dropped.iter().map(Counter::get).sum());
        let topics: [(&str, String); 14] = [
            ("version", format!("ringmq version {version}")),
            ("uptime", format!("{} seconds", self.uptime().as_secs())),
            ("clients/connected", online.to_string()),
            ("clients/disconnected", offline.to_string()),
            ("clients/total", online.saturating_add(offline).to_string()),
            ("messages/received", received.to_string()),
            ("messages/sent", sent.to_string()),
            ("publish/messages/received", received.to_string()),
            ("publish/messages/sent", sent.to_string()),
            ("publish/messages/dropped", dropped.to_string()),
            ("retained messages/count", self.retained().to_string()),
            (
                "subscriptions/count",
                self.sum(|s| s.subscriptions.get()).to_string(),
            ),
            ("bytes/received", self.sum(|s| s.bytes_in.get()).to_string()),
            ("bytes/sent", self.sum(|s| s.bytes_out.get()).to_string()),
        ];
        topics
            .into_iter()
            .map(|(name, value)| (format!("$SYS/broker/{name}"), value))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_adds_and_subtracts() {
        let g = Gauge::default();
        g.add(2);
        g.sub(1);
        assert_eq!(g.get(), 1);
    }
}
