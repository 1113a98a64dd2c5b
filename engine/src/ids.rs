//! Indices of what a shard owns, as types: a connection slot, a session slot, a shard. A bare
//! `usize` could be any of them, and a cast between `u16`, `u32` and `usize` at each use hid
//! which one was meant.

use std::fmt;

/// A connection's slot in its shard (reused after release; with the serial of a
/// [`ConnToken`](crate::shard::mesh::ConnToken) it names one connection for good).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u32);

/// A session's slot in its shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u32);

/// A shard: its thread, core and mesh lanes. At most [`crate::MAX_SHARDS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(u16);

macro_rules! slot_id {
    ($t:ident, $repr:ty) => {
        impl $t {
            /// From a slab slot. Slabs hold fewer entries than the representation can name
            /// (connections are bounded by the descriptor limit, sessions by memory).
            pub fn from_slot(slot: usize) -> $t {
                assert!(slot <= <$repr>::MAX as usize, "slot {slot} out of range");
                $t(slot as $repr)
            }

            pub fn slot(self) -> usize {
                self.0 as usize
            }

            /// The raw value, for the wire between shards and for logs.
            pub fn raw(self) -> $repr {
                self.0
            }

            pub fn from_raw(raw: $repr) -> $t {
                $t(raw)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

slot_id!(ConnId, u32);
slot_id!(SessionId, u32);
slot_id!(ShardId, u16);

impl From<usize> for ShardId {
    /// A shard number (tests and the runtime count shards with `usize`).
    fn from(n: usize) -> ShardId {
        ShardId::from_slot(n)
    }
}

impl ShardId {
    /// Every shard of a mesh of `shards`.
    pub fn all(shards: usize) -> impl Iterator<Item = ShardId> {
        (0..shards).map(ShardId::from_slot)
    }

    /// The lowest shard of a non-empty `u64` shard mask.
    pub fn lowest_in(mask: u64) -> ShardId {
        debug_assert!(mask != 0);
        ShardId(mask.trailing_zeros() as u16)
    }

    /// The bit of this shard in a `u64` shard mask.
    pub fn bit(self) -> u64 {
        debug_assert!(self.slot() < crate::MAX_SHARDS);
        1 << self.0
    }
}
