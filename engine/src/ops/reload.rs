//! Reloads without a restart, on SIGHUP and when a watched file changes (checked every 0.5 s):
//!
//! - the authentication policy: loaded from the registry file, the ACL file and the client CA
//!   files at startup (an invalid file stops startup, naming it, and the line for the ACL). A
//!   reload builds a new immutable snapshot and swaps it in; an invalid new registry, ACL file
//!   or client CA is refused with a log line and the old one stays in force. Shards notice the
//!   new version on their next tick and re-check their live sessions (`authn.rs`);
//! - the certificate and key of every TLS listener (`tls.rs`): new connections use the new
//!   ones, established connections keep theirs; files that do not load are refused with a log
//!   line naming the file, and the previous certificate stays in force.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use ringmq_auth::Snapshot;
use ringmq_auth::jwt::Jwks;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::ops::metrics::{AuthMetrics, Metrics};
use crate::transport::tls::ListenerTls;

/// Why the registry could not be loaded (names the file, the JSON path and the problem).
pub type LoadError = ringmq_auth::registry::LoadError;

/// The snapshot in force and the JWKS fetcher that keeps its issuers' keys fresh (alive as
/// long as the snapshot is current; stopped when a reload replaces it).
pub struct Loaded {
    pub snapshot: Snapshot,
    pub fetcher: Option<ringmq_auth::jwt::JwksFetcher>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("version", &self.snapshot.version)
            .field("fetcher", &self.fetcher.is_some())
            .finish()
    }
}

/// Builds the snapshot for `config` (the embedded default when no registry is configured).
/// With `previous`, JWKS keys already fetched for unchanged endpoints are carried over;
/// without it (startup), each JWKS endpoint is fetched once before clients are served.
pub fn load_snapshot(
    config: &Config,
    version: u64,
    previous: Option<&Snapshot>,
) -> Result<Loaded, LoadError> {
    let registry = match &config.auth.registry {
        None => None,
        Some(path) => Some(load_registry(path, config)?),
    };
    let mut fetcher = None;
    if let Some(reg) = &registry {
        match previous.and_then(|p| p.registry.as_ref()) {
            Some(old) => {
                ringmq_auth::jwt::carry_over_keys(old, reg);
            }
            None => {
                for endpoint in ringmq_auth::jwt::jwks_endpoints(reg) {
                    if let Err(e) = endpoint.refresh_blocking() {
                        warn!(
                            "JWKS {}: first fetch failed, retrying in the background: {e}",
                            endpoint.config().url
                        );
                    }
                }
            }
        }
        match ringmq_auth::jwt::JwksFetcher::for_registry(reg) {
            Ok(f) => fetcher = Some(f),
            Err(e) => warn!("cannot start the JWKS fetcher: {e}"),
        }
    }
    let files = crate::config::auth_files::load_auth_files(config)?;
    Ok(Loaded {
        snapshot: Snapshot {
            version,
            allow_anonymous: config.anonymous_allowed(),
            registry,
            files,
        },
        fetcher,
    })
}

fn load_registry(
    path: &Path,
    config: &Config,
) -> Result<ringmq_auth::registry::Registry, LoadError> {
    let (mut registry, warnings) = ringmq_auth::registry::Registry::load(path)?;
    for w in warnings {
        warn!(file = %path.display(), "registry: {w}");
    }
    registry.set_clock_skew(Duration::from_secs(u64::from(config.auth.clock_skew_secs)));
    crate::config::auth_files::apply_jwks_ca_file(config, &registry)?;
    Ok(registry)
}

/// Watches for SIGHUP and for changes of the registry file and of the TLS listeners'
/// certificate and key files; swaps in each valid new registry and TLS configuration. Owns the
/// JWKS fetcher of the snapshot in force, and records the registry version, reloads and JWKS
/// fetches in `metrics.auth` (checked every 0.5 s, like the files).
pub fn spawn_reloader(
    config: Config,
    auth: ringmq_auth::SharedSnapshot,
    fetcher: Option<ringmq_auth::jwt::JwksFetcher>,
    tls: Vec<(SocketAddr, Arc<ListenerTls>)>,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let first = auth.load();
    metrics
        .auth
        .registry_version
        .store(first.version, Ordering::Relaxed);
    let jwks = JwksMirror::new(&first, &metrics.auth);
    drop(first);
    // SIGHUP is always handled: its default action would kill the broker (`systemctl reload`).
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    let policy_files = config.auth.watched_files();
    if policy_files.is_empty() && tls.is_empty() {
        std::thread::Builder::new()
            .name("ringmq-reload".into())
            .spawn(move || {
                for _ in signals.forever() {
                    info!(
                        "SIGHUP: no registry and no TLS listener are configured, nothing to reload"
                    );
                }
            })?;
        return Ok(());
    }
    std::thread::Builder::new()
        .name("ringmq-reload".into())
        .spawn(move || {
            let mut registry = (!policy_files.is_empty()).then(|| RegistryWatch {
                last_modified: policy_files.iter().map(|p| modified(p)).collect(),
                paths: policy_files,
                fetcher,
                jwks,
            });
            let mut certificates: Vec<TlsWatch> = tls
                .into_iter()
                .map(|(bind, tls)| TlsWatch {
                    last_modified: tls.files_modified(),
                    bind,
                    tls,
                })
                .collect();
            loop {
                if let Some(watch) = &mut registry {
                    watch.jwks.sync(&metrics.auth);
                }
                std::thread::sleep(Duration::from_millis(500));
                let hup = signals.pending().count() > 0;
                if let Some(watch) = &mut registry {
                    watch.poll(&config, &auth, hup, &metrics.auth);
                }
                for watch in &mut certificates {
                    watch.poll(hup);
                }
            }
        })?;
    Ok(())
}

/// The policy files (registry, ACL file, client CA and CRL) and the JWKS fetcher of the
/// snapshot in force.
struct RegistryWatch {
    paths: Vec<PathBuf>,
    last_modified: Vec<Option<SystemTime>>,
    fetcher: Option<ringmq_auth::jwt::JwksFetcher>,
    /// The fetch counts of the snapshot's JWKS endpoints, copied into the metrics.
    jwks: JwksMirror,
}

impl RegistryWatch {
    fn poll(
        &mut self,
        config: &Config,
        auth: &ringmq_auth::SharedSnapshot,
        hup: bool,
        metrics: &AuthMetrics,
    ) {
        let now_modified: Vec<_> = self.paths.iter().map(|p| modified(p)).collect();
        if !hup && now_modified == self.last_modified {
            return;
        }
        self.last_modified = now_modified;
        let current = auth.load();
        let version = current.version + 1;
        match load_snapshot(config, version, Some(&current)) {
            Ok(loaded) => {
                // The old fetcher's last fetches still count for its endpoints.
                self.jwks.sync(metrics);
                self.jwks = JwksMirror::new(&loaded.snapshot, metrics);
                auth.store(loaded.snapshot);
                if let Some(old) = std::mem::replace(&mut self.fetcher, loaded.fetcher) {
                    old.stop();
                }
                metrics.registry_reloaded(version);
                info!(files = ?self.paths, version, trigger = trigger(hup), "registry reloaded (with the ACL file and client CA, when configured)");
            }
            Err(e) => {
                metrics.registry_reload_failed();
                error!(
                    "registry reload refused, the previous registry, ACL file and client CA stay in force: {e}"
                )
            }
        }
    }
}

/// One TLS listener's certificate and key files.
struct TlsWatch {
    bind: SocketAddr,
    tls: Arc<ListenerTls>,
    last_modified: (Option<SystemTime>, Option<SystemTime>),
}

impl TlsWatch {
    fn poll(&mut self, hup: bool) {
        let now_modified = self.tls.files_modified();
        if !hup && now_modified == self.last_modified {
            return;
        }
        // A failed attempt is not retried until the next change or SIGHUP: a certificate
        // written before its key fails once, then loads when the key arrives.
        self.last_modified = now_modified;
        match self.tls.reload() {
            Ok(()) => info!(
                listener = %self.bind,
                cert = %self.tls.cert.display(),
                key = %self.tls.key.display(),
                trigger = trigger(hup),
                "TLS certificate reloaded; new connections use it"
            ),
            Err(e) => error!(
                listener = %self.bind,
                "TLS certificate reload refused, the previous certificate stays in force: {e}"
            ),
        }
    }
}

/// Copies the JWKS endpoints' own fetch counts into [`AuthMetrics`], labelled by URL: the
/// counts an endpoint made since the last sync are added, so totals survive reloads (a reload
/// makes new endpoints, counting from 0).
struct JwksMirror {
    /// Each endpoint with the (ok, failed) counts already copied.
    seen: Vec<(Arc<Jwks>, u64, u64)>,
}

impl JwksMirror {
    /// The endpoints of `snapshot`, named in `metrics` (which keeps the state of URLs that
    /// stay). Nothing is copied yet: fetches made before (at startup) are counted by `sync`.
    fn new(snapshot: &ringmq_auth::Snapshot, metrics: &AuthMetrics) -> JwksMirror {
        let endpoints = snapshot
            .registry
            .as_ref()
            .map(ringmq_auth::jwt::jwks_endpoints)
            .unwrap_or_default();
        let mut urls: Vec<&str> = endpoints.iter().map(|e| e.config().url.as_str()).collect();
        urls.sort_unstable();
        urls.dedup();
        metrics.set_jwks_issuers(&urls);
        JwksMirror {
            seen: endpoints.into_iter().map(|e| (e, 0, 0)).collect(),
        }
    }

    fn sync(&mut self, metrics: &AuthMetrics) {
        for (endpoint, ok_seen, failed_seen) in &mut self.seen {
            let (ok, failed) = (endpoint.fetches_ok(), endpoint.fetches_failed());
            if ok == *ok_seen && failed == *failed_seen {
                continue;
            }
            let url = endpoint.config().url.as_str();
            let fetched_at = endpoint.keys().fetched_at().unwrap_or_else(SystemTime::now);
            let failures = failed.saturating_sub(*failed_seen);
            let successes = ok.saturating_sub(*ok_seen);
            // The outcome of the last fetch is recorded last, so `up` ends right.
            let last_ok = endpoint.last_fetch_succeeded().unwrap_or(true);
            let (first, then) = if last_ok {
                ((false, failures), (true, successes))
            } else {
                ((true, successes), (false, failures))
            };
            for (result, n) in [first, then] {
                for _ in 0..n {
                    metrics.jwks_fetched(url, result, fetched_at);
                }
            }
            (*ok_seen, *failed_seen) = (ok, failed);
        }
    }
}

fn trigger(hup: bool) -> &'static str {
    if hup { "SIGHUP" } else { "file changed" }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
