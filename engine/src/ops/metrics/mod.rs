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

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tracing::{debug, warn};

use crate::config::ListenerConfig;

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

impl From<ringmq_auth::identity::Method> for AuthMethod {
    fn from(m: ringmq_auth::identity::Method) -> AuthMethod {
        use ringmq_auth::identity::Method;
        match m {
            Method::Anonymous => AuthMethod::Anonymous,
            Method::Certificate => AuthMethod::Certificate,
            Method::CustomJwt => AuthMethod::CustomJwt,
            Method::OAuth2Jwt => AuthMethod::OAuth2Jwt,
            Method::PasswordJwt => AuthMethod::PasswordJwt,
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
    /// Connections closed for a protocol violation or decode error.
    pub protocol_errors: Counter,
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

    /// Prometheus text exposition format 0.0.4. Counters are summed over shards except the
    /// mesh ones, which are per shard (`shard="N"`) because a hot shard is the point of them.
    /// Every fixed label value is written even at zero: a series that appears late breaks
    /// `rate()`.
    pub fn render_prometheus(&self, out: &mut String) {
        let mut w = Writer { out };
        w.single(&UPTIME, self.uptime().as_secs());
        w.single(&SHARDS, self.shards.len() as u64);
        self.by_listener(&mut w, &CONNECTIONS, |l| l.connections.get());
        self.by_listener(&mut w, &CONNECTIONS_TOTAL, |l| l.connections_total.get());
        const QOS: &[&str] = &["0", "1", "2"];
        self.by_index(&mut w, &RECEIVED, "qos", QOS, |s| &s.messages_in);
        self.by_index(&mut w, &SENT, "qos", QOS, |s| &s.messages_out);
        w.single(&BYTES_RECEIVED, self.sum(|s| s.bytes_in.get()));
        w.single(&BYTES_SENT, self.sum(|s| s.bytes_out.get()));
        self.by_index(&mut w, &DROPPED, "cause", DropCause::LABELS, |s| &s.dropped);
        w.single(&RETAINED, self.retained());
        let sessions = [
            ("online", self.sum(|s| s.sessions_online.get())),
            ("offline", self.sum(|s| s.sessions_offline.get())),
        ];
        w.by(&SESSIONS, "state", sessions);
        w.single(&SUBSCRIPTIONS, self.sum(|s| s.subscriptions.get()));
        self.by_shard(&mut w, &INBOX_DEPTH, |s| s.mesh_inbox_depth.get());
        self.by_shard(&mut w, &MESH_OVERFLOW, |s| s.mesh_overflow.get());
        w.single(&PROTOCOL_ERRORS, self.sum(|s| s.protocol_errors.get()));
        w.single(&ACCEPT_ERRORS, self.sum(|s| s.accept_errors.get()));
        w.by(
            &REFUSED,
            "reason",
            [("descriptors", self.sum(|s| s.refused_no_descriptors.get()))],
        );
        let stalls = self.stalls.iter().enumerate();
        w.by(
            &STALLS,
            "shard",
            stalls.map(|(i, c)| (i.to_string(), c.load(Relaxed))),
        );
        w.single(&SUBSCRIBE_DENIED, self.sum(|s| s.subscribe_denied.get()));
        self.by_index(&mut w, &QUOTA_REJECTIONS, "quota", Quota::LABELS, |s| {
            &s.quota_rejections
        });
        self.render_auth(&mut w);
    }

    fn render_auth(&self, w: &mut Writer<'_>) {
        self.by_index(w, &AUTH_OK, "method", AuthMethod::LABELS, |s| {
            &s.auth_successes
        });
        w.family(&AUTH_FAILED);
        for (m, method) in AuthMethod::LABELS.iter().enumerate() {
            for (r, reason) in AuthFailure::LABELS.iter().enumerate() {
                let v = self.sum(|s| s.auth_failures[m * AuthFailure::COUNT + r].get());
                w.sample(
                    AUTH_FAILED.name,
                    &[("method", method), ("reason", reason)],
                    v,
                );
            }
        }
        w.family(&AUTH_CACHE);
        for (c, cache) in AuthCache::LABELS.iter().enumerate() {
            for (k, result) in ["hit", "miss"].into_iter().enumerate() {
                let v = self.sum(|s| s.auth_cache[c * 2 + k].get());
                w.sample(AUTH_CACHE.name, &[("cache", cache), ("result", result)], v);
            }
        }
        let a = &self.auth;
        w.single(&REGISTRY_VERSION, a.registry_version.load(Relaxed));
        let reloads = [
            ("ok", a.registry_reloads_ok.load(Relaxed)),
            ("error", a.registry_reloads_failed.load(Relaxed)),
        ];
        w.by(&REGISTRY_RELOADS, "result", reloads);

        let jwks = a.jwks.load();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        w.family(&JWKS_FETCHES);
        for j in jwks.iter() {
            let (ok, failed) = (j.fetch_ok.load(Relaxed), j.fetch_failed.load(Relaxed));
            w.sample(
                JWKS_FETCHES.name,
                &[("issuer", &j.issuer), ("result", "ok")],
                ok,
            );
            w.sample(
                JWKS_FETCHES.name,
                &[("issuer", &j.issuer), ("result", "error")],
                failed,
            );
        }
        let up = jwks
            .iter()
            .map(|j| (j.issuer.as_str(), u64::from(j.up.load(Relaxed))));
        w.by(&JWKS_UP, "issuer", up);
        // Never fetched: no sample rather than a made-up age.
        let fetched = jwks.iter().filter_map(|j| {
            let at = j.last_success_unix_secs.load(Relaxed);
            (at != 0).then(|| (j.issuer.as_str(), now.saturating_sub(at)))
        });
        w.by(&JWKS_AGE, "issuer", fetched);
    }

    /// A family labelled by an index into a counter array, summed over shards.
    fn by_index(
        &self,
        w: &mut Writer<'_>,
        f: &Family,
        key: &str,
        labels: &[&str],
        pick: fn(&ShardMetrics) -> &[Counter],
    ) {
        let samples = labels.iter().enumerate();
        w.by(
            f,
            key,
            samples.map(|(i, l)| (*l, self.sum(|s| pick(s)[i].get()))),
        );
    }

    /// A family labelled by listener, summed over shards.
    fn by_listener(&self, w: &mut Writer<'_>, f: &Family, pick: fn(&ListenerMetrics) -> u64) {
        w.family(f);
        for (i, l) in self.listeners.iter().enumerate() {
            let labels = [("listener", l.name.as_str()), ("protocol", l.protocol)];
            w.sample(f.name, &labels, self.sum(|s| pick(&s.listeners[i])));
        }
    }

    /// A family with one sample per shard.
    fn by_shard(&self, w: &mut Writer<'_>, f: &Family, pick: fn(&ShardMetrics) -> u64) {
        let shards = self.shards.iter().enumerate();
        w.by(f, "shard", shards.map(|(i, s)| (i.to_string(), pick(s))));
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

/// A metric family: name, type and help text.
#[derive(Debug)]
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

/// Declares the families, one line each.
macro_rules! families {
    ($($id:ident $kind:ident $name:literal $help:literal;)*) => {
        $(const $id: Family = Family { name: $name, kind: stringify!($kind), help: $help };)*
    };
}

families! {
    UPTIME gauge "ringmq_uptime_seconds" "Seconds since the broker started.";
    SHARDS gauge "ringmq_shards" "Shard threads.";
    CONNECTIONS gauge "ringmq_connections" "Open network connections (before and after CONNECT).";
    CONNECTIONS_TOTAL counter "ringmq_connections_total" "Connections accepted.";
    RECEIVED counter "ringmq_messages_received_total" "PUBLISH packets received from clients.";
    SENT counter "ringmq_messages_sent_total" "PUBLISH packets sent to clients.";
    BYTES_RECEIVED counter "ringmq_received_bytes_total" "Bytes read from client sockets.";
    BYTES_SENT counter "ringmq_sent_bytes_total" "Bytes written to client sockets.";
    DROPPED counter "ringmq_messages_dropped_total" "Messages not delivered or not accepted, by cause.";
    RETAINED gauge "ringmq_retained_messages" "Retained messages (one replica; every shard holds one).";
    SESSIONS gauge "ringmq_sessions" "Sessions, online (connected) or offline (kept for a client that is away).";
    SUBSCRIPTIONS gauge "ringmq_subscriptions" "Subscriptions of all sessions.";
    INBOX_DEPTH gauge "ringmq_mesh_inbox_depth" "Messages waiting in a shard's inbox (sampled).";
    MESH_OVERFLOW counter "ringmq_mesh_overflow_total" "Messages that waited because a destination shard's inbox was full.";
    PROTOCOL_ERRORS counter "ringmq_protocol_errors_total" "Connections closed for a protocol error.";
    ACCEPT_ERRORS counter "ringmq_accept_errors_total" "Failed accepts (above all: out of file descriptors).";
    REFUSED counter "ringmq_connections_refused_total" "Connections accepted only to be refused, by reason.";
    STALLS counter "ringmq_shard_stalls_total" "Times a shard had ready work but made no progress for server.stall_threshold_ms.";
    SUBSCRIBE_DENIED counter "ringmq_subscribe_denied_total" "Subscriptions refused by authorization.";
    QUOTA_REJECTIONS counter "ringmq_quota_rejections_total" "Connections or messages refused by a quota.";
    AUTH_OK counter "ringmq_auth_successes_total" "Clients authenticated, by method.";
    AUTH_FAILED counter "ringmq_auth_failures_total" "Authentications refused, by method and reason.";
    AUTH_CACHE counter "ringmq_auth_cache_lookups_total" "Verification cache lookups, by cache and result.";
    REGISTRY_VERSION gauge "ringmq_registry_version" "Version of the registry in force (1 = loaded at startup).";
    REGISTRY_RELOADS counter "ringmq_registry_reloads_total" "Registry reloads, by result.";
    JWKS_FETCHES counter "ringmq_jwks_fetches_total" "JWKS fetches, by issuer and result.";
    JWKS_UP gauge "ringmq_jwks_up" "1 when the last JWKS fetch of the issuer succeeded.";
    JWKS_AGE gauge "ringmq_jwks_age_seconds" "Seconds since the issuer's keys were last fetched.";
}

/// Writes exposition lines; writing to a `String` cannot fail.
struct Writer<'a> {
    out: &'a mut String,
}

impl Writer<'_> {
    fn family(&mut self, f: &Family) {
        let Family { name, kind, help } = f;
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A family with one sample and no labels.
    fn single(&mut self, f: &Family, value: u64) {
        self.family(f);
        self.sample(f.name, &[], value);
    }

    /// A family with one label.
    fn by<L: AsRef<str>>(
        &mut self,
        f: &Family,
        key: &str,
        samples: impl IntoIterator<Item = (L, u64)>,
    ) {
        self.family(f);
        for (label, value) in samples {
            self.sample(f.name, &[(key, label.as_ref())], value);
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label_value(v, self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label values escape `\`, `"` and newline (exposition format 0.0.4).
fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

// ---- HTTP endpoint --------------------------------------------------------------------------

/// Liveness and readiness. `ready` is set once every shard listens; `draining` when a graceful
/// stop begins, so load balancers stop sending new clients before the listeners close.
#[derive(Debug, Default)]
pub struct Health {
    pub ready: AtomicBool,
    pub draining: AtomicBool,
}

impl Health {
    /// Ready for new clients: started and not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed) && !self.draining.load(Relaxed)
    }
}

/// Request line and headers larger than this are answered 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send its whole request head (not per read: a slow sender cannot
/// stretch it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests served at once; beyond it new connections get 503 at once. Keeps a few slow
/// clients from holding the scraper out while bounding threads.
pub const MAX_HTTP_WORKERS: usize = 4;

/// Binds `addr` and serves `/metrics`, `/health` and `/ready` on a std thread for the life of
/// the process. Bind errors are returned here, before any thread starts.
pub fn spawn_http(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> io::Result<JoinHandle<()>> {
    serve_http(TcpListener::bind(addr)?, metrics, health)
}

/// Serves on an already bound listener (tests bind port 0 and read the address first).
pub fn serve_http(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ringmq-metrics".into())
        .spawn(move || accept_loop(listener, metrics, health))
}

fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!("metrics endpoint: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if busy.fetch_add(1, Relaxed) >= MAX_HTTP_WORKERS {
            busy.fetch_sub(1, Relaxed);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = respond(&mut stream, 503, "text/plain", b"busy\n", &[]);
            continue;
        }
        let (metrics, health, worker_busy) = (metrics.clone(), health.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("ringmq-metrics-req".into())
            .spawn(move || {
                if let Err(e) = handle_connection(&mut stream, &metrics, &health) {
                    debug!("metrics endpoint: {e}");
                }
                worker_busy.fetch_sub(1, Relaxed);
            });
        if let Err(e) = spawned {
            busy.fetch_sub(1, Relaxed);
            warn!("metrics endpoint: cannot spawn a request thread: {e}");
        }
    }
}

/// What the request head said, or why it cannot be served.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Request { method: String, path: String },
    Malformed,
    TooLarge,
    TimedOut,
    Closed,
}

fn handle_connection(stream: &mut TcpStream, metrics: &Metrics, health: &Health) -> io::Result<()> {
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let (method, path) = match read_head(stream)? {
        Head::Request { method, path } => (method, path),
        Head::Malformed => return respond(stream, 400, "text/plain", b"bad request\n", &[]),
        Head::TooLarge => {
            return respond(
                stream,
                431,
                "text/plain",
                b"request header fields too large\n",
                &[],
            );
        }
        Head::TimedOut => return respond(stream, 408, "text/plain", b"request timeout\n", &[]),
        Head::Closed => return Ok(()),
    };
    if method != "GET" {
        return respond(
            stream,
            405,
            "text/plain",
            b"method not allowed\n",
            &[("Allow", "GET")],
        );
    }
    // The query string, if any, is ignored.
    let path = path.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            let mut body = String::with_capacity(16 * 1024);
            metrics.render_prometheus(&mut body);
            respond(
                stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
                &[],
            )
        }
        "/health" => respond(stream, 200, "text/plain", b"ok\n", &[]),
        "/ready" if health.is_ready() => respond(stream, 200, "text/plain", b"ready\n", &[]),
        "/ready" if health.draining.load(Relaxed) => {
            respond(stream, 503, "text/plain", b"draining\n", &[])
        }
        "/ready" => respond(stream, 503, "text/plain", b"starting\n", &[]),
        _ => respond(stream, 404, "text/plain", b"not found\n", &[]),
    }
}

/// Reads up to the blank line ending the head, within [`MAX_REQUEST_HEAD`] bytes and
/// [`REQUEST_TIMEOUT`] in all. A body, if any, is not read.
fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = vec![0u8; MAX_REQUEST_HEAD];
    let mut len = 0;
    loop {
        if let Some(end) = head_end(&buf[..len]) {
            return Ok(parse_head(&buf[..end]));
        }
        if len == buf.len() {
            return Ok(Head::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::TimedOut);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[len..]) {
            Ok(0) if len == 0 => return Ok(Head::Closed),
            Ok(0) => return Ok(Head::Malformed),
            Ok(n) => len += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Head::TimedOut);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// End of the head: after `\r\n\r\n` (or `\n\n`, which RFC 9112 lets a server accept).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_head(head: &[u8]) -> Head {
    let Ok(text) = std::str::from_utf8(head) else {
        return Head::Malformed;
    };
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Head::Malformed;
    };
    // Absolute form (`GET http://host/metrics`), which a server must accept (RFC 9112 3.2.2).
    let target = match target.split_once("://") {
        Some(("http" | "https", rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        _ => target,
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    if !token(method) || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Head::Malformed;
    }
    // Every header line must be `name: value` (an empty line ends the head).
    for line in lines.take_while(|l| !l.is_empty()) {
        match line.split_once(':') {
            Some((name, _)) if !name.is_empty() && !name.contains([' ', '\t']) => {}
            _ => return Head::Malformed,
        }
    }
    Head::Request {
        method: method.to_owned(),
        path: target.to_owned(),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_parsing() {
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Head::Request {
                method: "GET".into(),
                path: "/metrics?x=1".into()
            }
        );
        assert_eq!(parse_head(b"GET /metrics\r\n\r\n"), Head::Malformed);
        assert_eq!(
            parse_head(b"GET /metrics HTTP/2.0\r\n\r\n"),
            Head::Malformed
        );
        assert_eq!(
            parse_head(b"GET  /metrics HTTP/1.1\r\n\r\n"),
            Head::Malformed
        );
        assert_eq!(parse_head(b"GET metrics HTTP/1.1\r\n\r\n"), Head::Malformed);
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            Head::Malformed
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape_label_value("a\"b\\c\nd", &mut s);
        assert_eq!(s, "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn gauge_adds_and_subtracts() {
        let g = Gauge::default();
        g.add(2);
        g.sub(1);
        assert_eq!(g.get(), 1);
    }
}
