//! Per-shard cache of verified tokens, keyed by the SHA-256 of the token.
//!
//! An entry remembers the claims and the identity built from them, and the generations it was
//! verified under: the compiled JWT section (changes on every registry reload) and, for a JWKS
//! key, the key set (changes on every fetch). A hit skips decoding and the signature check;
//! the time checks and `authClaims` (which may read the CONNECT's client id and user name) are
//! still evaluated against the current `now` and credentials.

use std::collections::HashMap;
use std::time::SystemTime;

use serde_json::{Map, Value};

use super::TokenSource;
use crate::Identity;

/// Entries kept per shard unless [`JwtCache::with_capacity`] says otherwise.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

pub(crate) type CacheKey = ([u8; 32], TokenSource);

/// What the cache counted (deterministic, for tests and metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JwtCacheStats {
    /// Tokens whose signature check was skipped.
    pub hits: u64,
    pub misses: u64,
    /// Signature checks made (one per key tried).
    pub signature_verifications: u64,
    /// Entries dropped because the registry or the key set changed.
    pub invalidations: u64,
    /// Entries dropped to stay within the capacity, or because the token expired.
    pub evictions: u64,
}

#[derive(Debug)]
pub(crate) struct CachedToken {
    pub(crate) verifier_generation: u64,
    /// The JWKS key set generation, or 0 for a static key.
    pub(crate) key_generation: u64,
    pub(crate) exp: u64,
    pub(crate) nbf: Option<u64>,
    pub(crate) claims: Map<String, Value>,
    pub(crate) identity: Identity,
}

/// Per-shard cache of verified tokens (bounded).
#[derive(Debug)]
pub struct JwtCache {
    entries: HashMap<CacheKey, CachedToken>,
    capacity: usize,
    pub(crate) stats: JwtCacheStats,
}

impl Default for JwtCache {
    fn default() -> JwtCache {
        JwtCache::with_capacity(DEFAULT_CACHE_CAPACITY)
    }
}

impl JwtCache {
    /// A cache of at most `capacity` tokens (0 disables caching).
    pub fn with_capacity(capacity: usize) -> JwtCache {
        JwtCache {
            entries: HashMap::new(),
            capacity,
            stats: JwtCacheStats::default(),
        }
    }

    pub fn stats(&self) -> JwtCacheStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The entry for `key` if it is still valid under these generations; drops a stale one.
    pub(crate) fn lookup(
        &mut self,
        key: &CacheKey,
        verifier_generation: u64,
        jwks_generation: Option<u64>,
    ) -> Option<&CachedToken> {
        let valid = {
            let e = self.entries.get(key)?;
            e.verifier_generation == verifier_generation
                && (e.key_generation == 0 || Some(e.key_generation) == jwks_generation)
        };
        if !valid {
            self.entries.remove(key);
            self.stats.invalidations += 1;
            return None;
        }
        self.entries.get(key)
    }

    pub(crate) fn remove(&mut self, key: &CacheKey) {
        if self.entries.remove(key).is_some() {
            self.stats.evictions += 1;
        }
    }

    pub(crate) fn insert(&mut self, key: CacheKey, entry: CachedToken, now: SystemTime) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let now_secs = super::verify::unix_secs(now);
            let before = self.entries.len();
            self.entries.retain(|_, e| e.exp >= now_secs);
            self.stats.evictions += (before - self.entries.len()) as u64;
            if self.entries.len() >= self.capacity {
                // Still full of live tokens: drop an arbitrary one (the map's first).
                if let Some(victim) = self.entries.keys().next().copied() {
                    self.entries.remove(&victim);
                    self.stats.evictions += 1;
                }
            }
        }
        self.entries.insert(key, entry);
    }
}
