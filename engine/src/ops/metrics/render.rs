//! The Prometheus text exposition (format 0.0.4) of [`Metrics`]: the metric families, one
//! line each, and the writer of their samples.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{
    AuthCache, AuthFailure, AuthMethod, BUILD_COMMIT, BUILD_VERSION, Counter, DropCause,
    LATENCY_BOUNDS_NANOS, ListenerMetrics, Metrics, PacketType, ProcessStats, ProxyFailure, Quota,
    ShardMetrics,
};

impl Metrics {
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
        self.by_shard(&mut w, &MESH_OUTBOX_DEPTH, |s| s.mesh_outbox_depth.get());
        w.single(&INTERNAL_ERRORS, self.sum(|s| s.internal_errors.get()));
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
        self.render_storage(&mut w);
        self.by_index(&mut w, &PACKETS_RECEIVED, "type", PacketType::LABELS, |s| {
            &s.packets_received
        });
        self.by_index(&mut w, &PACKETS_SENT, "type", PacketType::LABELS, |s| {
            &s.packets_sent
        });
        self.render_latency(&mut w);
        self.by_index(
            &mut w,
            &PROXY_FAILURES,
            "reason",
            ProxyFailure::LABELS,
            |s| &s.proxy_failures,
        );
        w.family(&BUILD_INFO);
        let build = [("version", BUILD_VERSION), ("commit", BUILD_COMMIT)];
        w.sample(BUILD_INFO.name, &build, 1);
        render_process(&mut w, &ProcessStats::read());
    }

    /// The write-ahead logs, per shard (only with `[storage] dir`).
    fn render_storage(&self, w: &mut Writer<'_>) {
        let Some(stats) = self.storage.get() else {
            return;
        };
        let read: Vec<ringmq_storage::StatsSnapshot> = stats.iter().map(|s| s.read()).collect();
        let per_shard =
            |w: &mut Writer<'_>, f: &Family, pick: fn(&ringmq_storage::StatsSnapshot) -> u64| {
                w.by(
                    f,
                    "shard",
                    read.iter()
                        .enumerate()
                        .map(|(i, s)| (i.to_string(), pick(s))),
                );
            };
        per_shard(w, &STORAGE_DISK, |s| s.disk_bytes);
        per_shard(w, &STORAGE_RECORDS, |s| s.records);
        per_shard(w, &STORAGE_FSYNCS, |s| s.fsyncs);
        per_shard(w, &STORAGE_SYNCED, |s| s.records_synced);
        per_shard(w, &STORAGE_TORN, |s| s.torn_tails);
        per_shard(w, &STORAGE_FULL, |s| s.full_refusals);
        per_shard(w, &STORAGE_SNAPSHOTS, |s| s.snapshots);
    }

    /// `ringmq_delivery_latency_seconds`: the shards' buckets added up, then made cumulative
    /// as the format wants.
    fn render_latency(&self, w: &mut Writer<'_>) {
        let f = &DELIVERY_LATENCY;
        w.family(f);
        let mut buckets = [0u64; LATENCY_BOUNDS_NANOS.len() + 1];
        let mut sum_nanos = 0u64;
        for s in self.shards.iter() {
            for (b, n) in buckets.iter_mut().zip(s.delivery_latency.bucket_counts()) {
                *b = b.wrapping_add(n);
            }
            sum_nanos = sum_nanos.wrapping_add(s.delivery_latency.sum_nanos());
        }
        let bucket = format!("{}_bucket", f.name);
        let mut cumulative = 0u64;
        for (i, n) in buckets.iter().enumerate() {
            cumulative = cumulative.wrapping_add(*n);
            let le = match LATENCY_BOUNDS_NANOS.get(i) {
                Some(&b) => (b as f64 / 1e9).to_string(),
                None => "+Inf".to_owned(),
            };
            w.sample(&bucket, &[("le", &le)], cumulative);
        }
        w.sample(&format!("{}_sum", f.name), &[], sum_nanos as f64 / 1e9);
        w.sample(&format!("{}_count", f.name), &[], cumulative);
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
        self.by_shard(w, &AUTH_PENDING, |s| s.auth_pending.get());
        if let Some(pool) = self.auth_pool.get() {
            w.single(&AUTH_POOL_QUEUED, pool.queued());
            w.single(&AUTH_POOL_DECIDED, pool.decided());
            if let Some(open) = pool.breaker_open() {
                w.single(&WEBHOOK_BREAKER_OPEN, u64::from(open));
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
}

/// The `process_*` families, each only when its value could be read.
fn render_process(w: &mut Writer<'_>, p: &ProcessStats) {
    let ints = [
        (&RESIDENT_MEMORY, p.resident_memory_bytes),
        (&VIRTUAL_MEMORY, p.virtual_memory_bytes),
        (&OPEN_FDS, p.open_fds),
        (&MAX_FDS, p.max_fds),
    ];
    for (f, v) in ints {
        if let Some(v) = v {
            w.single(f, v);
        }
    }
    for (f, v) in [
        (&CPU_SECONDS, p.cpu_seconds),
        (&START_TIME, p.start_time_seconds),
    ] {
        if let Some(v) = v {
            w.single(f, v);
        }
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
    MESH_OUTBOX_DEPTH gauge "ringmq_mesh_outbox_depth" "Messages waiting in a shard's outboxes for other shards' inboxes (sampled).";
    INTERNAL_ERRORS counter "ringmq_internal_errors_total" "Broken internal invariants met (a bug; each is logged).";
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
    AUTH_PENDING gauge "ringmq_auth_pending" "CONNECTs and re-authentications waiting for the authentication pool (password file, webhook), per shard.";
    AUTH_POOL_QUEUED gauge "ringmq_auth_pool_queued" "Authentication requests waiting for a pool thread (auth.pool.queue_capacity bounds it).";
    AUTH_POOL_DECIDED counter "ringmq_auth_pool_decided_total" "Authentication requests the pool decided (password checks and webhook calls).";
    WEBHOOK_BREAKER_OPEN gauge "ringmq_webhook_breaker_open" "1 while the webhook's circuit breaker refuses calls (0x88 at once).";
    JWKS_UP gauge "ringmq_jwks_up" "1 when the last JWKS fetch of the issuer succeeded.";
    STORAGE_DISK gauge "ringmq_storage_disk_bytes" "Bytes of write-ahead log segments on disk, per shard.";
    STORAGE_RECORDS counter "ringmq_storage_records_total" "Records appended to the write-ahead log, per shard.";
    STORAGE_FSYNCS counter "ringmq_storage_fsyncs_total" "fdatasync calls on the write-ahead log, per shard.";
    STORAGE_SYNCED counter "ringmq_storage_records_synced_total" "Records made durable by those fdatasyncs (divided by ringmq_storage_fsyncs_total: records per fsync).";
    STORAGE_TORN counter "ringmq_storage_torn_tails_total" "Torn tails cut off at recovery, per shard.";
    STORAGE_FULL counter "ringmq_storage_full_total" "Appends refused because the log reached storage.max_disk_bytes.";
    STORAGE_SNAPSHOTS counter "ringmq_storage_snapshots_total" "Snapshots (compactions) completed, per shard.";
    JWKS_AGE gauge "ringmq_jwks_age_seconds" "Seconds since the issuer's keys were last fetched.";
    PACKETS_RECEIVED counter "ringmq_packets_received_total" "MQTT control packets received from clients, by type.";
    PACKETS_SENT counter "ringmq_packets_sent_total" "MQTT control packets sent to clients, by type.";
    DELIVERY_LATENCY histogram "ringmq_delivery_latency_seconds" "Time from a client's PUBLISH being read to a copy being written for a subscriber (queued messages included; retained replays, wills and $SYS not).";
    PROXY_FAILURES counter "ringmq_proxy_protocol_failures_total" "Connections closed on a proxy_protocol listener before MQTT, by reason.";
    BUILD_INFO gauge "ringmq_build_info" "Always 1; the version and the commit the binary was built from.";
    RESIDENT_MEMORY gauge "process_resident_memory_bytes" "Resident memory size in bytes.";
    VIRTUAL_MEMORY gauge "process_virtual_memory_bytes" "Virtual memory size in bytes.";
    OPEN_FDS gauge "process_open_fds" "Number of open file descriptors.";
    MAX_FDS gauge "process_max_fds" "Maximum number of open file descriptors (the soft limit).";
    CPU_SECONDS counter "process_cpu_seconds_total" "Total user and system CPU time spent in seconds.";
    START_TIME gauge "process_start_time_seconds" "Start time of the process since unix epoch in seconds.";
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
    fn single(&mut self, f: &Family, value: impl std::fmt::Display) {
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

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape_label_value("a\"b\\c\nd", &mut s);
        assert_eq!(s, "a\\\"b\\\\c\\nd");
    }
}
