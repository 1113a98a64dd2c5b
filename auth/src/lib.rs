//! ringmq-auth: who a client is and what it may touch.
//!
//! What it is for: deciding CONNECT, PUBLISH and SUBSCRIBE permissions from an immutable
//! registry snapshot. What it must never do: block a shard (no I/O on the connect path), panic
//! on client input, or hold a lock on the hot path — the registry is read through `arc-swap`.
//!
//! Today it holds the policy of the embedded default: anonymous clients, everything allowed.
//! X.509, JWT and the Event Grid authorization model are added by later issues.

#![forbid(unsafe_code)]

use std::sync::Arc;

use arc_swap::ArcSwap;

/// The policy in force. Immutable: a reload builds a new one and swaps it in.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Incremented by every reload, so caches keyed by it are invalidated.
    pub version: u64,
    /// Whether a client with no credentials may connect.
    pub allow_anonymous: bool,
}

impl Snapshot {
    /// The embedded default: anonymous access, everything permitted.
    pub fn allow_all() -> Snapshot {
        Snapshot { version: 1, allow_anonymous: true }
    }
}

/// Shared handle to the current snapshot: cheap to clone, lock-free to read.
#[derive(Debug, Clone)]
pub struct Registry(Arc<ArcSwap<Snapshot>>);

impl Registry {
    pub fn new(snapshot: Snapshot) -> Registry {
        Registry(Arc::new(ArcSwap::from_pointee(snapshot)))
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    pub fn store(&self, snapshot: Snapshot) {
        self.0.store(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_replaces_snapshot_seen_by_existing_handles() {
        let registry = Registry::new(Snapshot::allow_all());
        let other = registry.clone();
        assert!(other.load().allow_anonymous);
        registry.store(Snapshot { version: 2, allow_anonymous: false });
        assert_eq!(other.load().version, 2);
        assert!(!other.load().allow_anonymous);
    }
}
