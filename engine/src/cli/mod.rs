//! The `ringmq` binary's commands besides running the broker: `check` (a configuration and
//! every file it names, without binding anything), `thumbprint` (a certificate's SHA-256 in
//! the registry's form), `token` (a signed test JWT), and the log set-up shared with the
//! broker.
//!
//! What it must never do: bind a socket, start a shard, or panic on a file's content — every
//! problem is a message naming the file and the key or JSON path.

pub mod check;
pub mod logs;
pub mod thumbprint;
pub mod token;
