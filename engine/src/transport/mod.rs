//! Everything that touches sockets, threads and the monoio runtime: the server and its shards,
//! the byte pumps, the TLS and WebSocket layers, accepting, the turn gate and the system calls.

pub(crate) mod accept;
pub(crate) mod host;
pub(crate) mod layer;
pub(crate) mod layer_pump;
pub(crate) mod plain_pump;
pub mod probe;
pub mod proxy;
pub mod runtime;
pub(crate) mod storage;
// The one module allowed unsafe code (`#![deny(unsafe_code)]` in lib.rs); each block says why
// it is sound in a `// SAFETY:` comment.
#[allow(unsafe_code)]
pub(crate) mod sys;
pub mod tls;
pub(crate) mod turn;
pub mod ws;
