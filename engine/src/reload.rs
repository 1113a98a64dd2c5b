//! The authentication policy: loaded from the registry file at startup (an invalid file stops
//! startup, naming it), reloaded on SIGHUP and when the file changes. A reload builds a new
//! immutable snapshot and swaps it in; an invalid new registry is refused with a log line and
//! the old one stays in force. Shards notice the new version on their next tick and re-check
//! their live sessions (`authn.rs`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use ringmq_auth::Snapshot;
use tracing::{error, info, warn};

use crate::config::Config;

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
    Ok(Loaded {
        snapshot: Snapshot {
            version,
            allow_anonymous: config.anonymous_allowed(),
            registry,
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
    Ok(registry)
}

/// Watches for SIGHUP and changes of the registry file and swaps in each valid new registry.
/// Owns the JWKS fetcher of the snapshot in force.
pub fn spawn_reloader(
    config: Config,
    auth: ringmq_auth::Registry,
    fetcher: Option<ringmq_auth::jwt::JwksFetcher>,
) -> std::io::Result<()> {
    // SIGHUP is always handled: its default action would kill the broker (`systemctl reload`).
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    let Some(path) = config.auth.registry.clone() else {
        std::thread::Builder::new()
            .name("ringmq-reload".into())
            .spawn(move || {
                for _ in signals.forever() {
                    info!("SIGHUP: no registry is configured, nothing to reload");
                }
            })?;
        return Ok(());
    };
    std::thread::Builder::new().name("ringmq-reload".into()).spawn(move || {
        let mut fetcher = fetcher;
        let mut last_modified = modified(&path);
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let hup = signals.pending().count() > 0;
            let now_modified = modified(&path);
            if !hup && now_modified == last_modified {
                continue;
            }
            last_modified = now_modified;
            let current = auth.load();
            let version = current.version + 1;
            match load_snapshot(&config, version, Some(&current)) {
                Ok(loaded) => {
                    auth.store(loaded.snapshot);
                    if let Some(old) = std::mem::replace(&mut fetcher, loaded.fetcher) {
                        old.stop();
                    }
                    info!(file = %path.display(), version, trigger = if hup { "SIGHUP" } else { "file changed" }, "registry reloaded");
                }
                Err(e) => error!("registry reload refused, the previous registry stays in force: {e}"),
            }
        }
    })?;
    Ok(())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
