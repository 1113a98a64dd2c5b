//! ringmq: a thread-per-core MQTT 5.0 / 3.1.1 broker.
//!
//! What it is for: owning connections, sessions and subscriptions per shard (one pinned thread
//! each, no locks — except the striped connection counts of `quota`, on the accept path only),
//! routing messages between shards over bounded lock-free queues.
//! What it must never do: panic on anything a peer or config can influence, block a shard, or
//! let one slow client stall others. Unsafe code lives only in `transport::sys` (the crate
//! denies it elsewhere); descriptors pass through it borrowed from their sockets, never as bare
//! numbers.
//!
//! `core` (with `route`) is the sans-IO broker logic; `runtime` is the monoio byte pump, with
//! `layer_pump` for the listeners whose bytes pass through a transport `layer` (TLS, WebSocket).

#![deny(unsafe_code)]

pub mod authpool;
pub mod cli {
    //! Subcommands of the `ringmq` binary.
    pub mod passwd;
}
pub mod config;
pub mod ids;
pub mod ops;
pub mod proto;
pub mod shard;
pub mod transport;

pub use transport::runtime::{Server, Shutdown, StartError};

/// Shard bitmasks are `u64`.
pub const MAX_SHARDS: usize = 64;

/// What unit tests of the sans-IO core use for time: the core reads no clock, so its tests
/// take a starting instant from here.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::OnceLock;
    use std::time::Instant;

    pub fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }
}
