//! What a shard owns besides the protocol logic: the subscription trie, the retained store, the
//! mesh between shards, quotas and the paged slabs. Plain data structures: no I/O, no clock.

pub mod mesh;
pub(crate) mod pages;
pub mod quota;
pub mod retain;
pub mod trie;
