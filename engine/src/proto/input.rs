//! The core's one entry point, [`ShardCore::handle`], and what the runtime reads back.
//!
//! Every input is handled the same way: what other shards sent first (so a client never
//! observes an effect before its cause, see [`ShardCore::poll_mesh`]), then the input, then the
//! outgoing mesh messages are pushed to their inboxes. Time comes in with the input: the core
//! reads no clock. Outputs are polled: bytes per connection (`Conn::take_output`), the
//! connections whose parked writer has something to do ([`ShardCore::poll_writable`]), and
//! whether an outbox waits for a full inbox ([`ShardCore::mesh_backlog`]).

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use bytes::BytesMut;

use crate::ids::ConnId;
use crate::proto::{MESH_PER_INPUT, ShardCore};
use crate::shard::mesh::ConnToken;

/// When an input happens: monotonic time for every timer, wall time for what is dated in the
/// world (token and certificate expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

/// Something that happened to the shard.
#[derive(Debug)]
pub enum Input<'a> {
    /// A connection was accepted on listener number `listener` (config order) from `peer`:
    /// the client's address (on a `proxy_protocol` listener, the one its PROXY header carried;
    /// the header is read before this input, `transport/proxy.rs`).
    Accept { listener: usize, peer: SocketAddr },
    /// Bytes arrived on a connection. A frame that is not complete stays in `bytes` for the
    /// runtime to continue with the next read.
    Read {
        conn: ConnId,
        bytes: &'a mut BytesMut,
    },
    /// The peer closed the connection, or the socket failed.
    Closed(ConnId),
    /// The runtime is done with the connection (socket closed, tasks ended): free its slot.
    Release(ConnId),
    /// The periodic timer: keep alive, expiry, wills, gauges, `$SYS`.
    Tick,
    /// Only what other shards sent: at most `max` data-lane messages.
    Inbox { max: usize },
    /// Begin a graceful shutdown (idempotent).
    Shutdown,
    /// The pool decided request `ticket` ([`crate::proto::authn_external::AuthRequest`]).
    AuthResult {
        ticket: u64,
        outcome: crate::proto::authn_external::AuthOutcome,
    },
    /// The write-ahead log is on disk up to record `upto` (as numbered by
    /// [`ShardCore::drain_records`]): acknowledgements waiting for those records go out.
    Durable { upto: u64 },
}

/// What handling an input produced, besides the polled outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Handled {
    Done,
    /// [`Input::Accept`]: the connection's slot and serial.
    Accepted(ConnToken),
    /// [`Input::Accept`]: close the connection at once (over quota, no refusal slot left).
    Refused,
}

impl ShardCore {
    /// Handles one input at `now`; see the module header.
    pub fn handle(&mut self, input: Input<'_>, now: Now) -> Handled {
        self.set_wall_clock(now.wall);
        self.durable_clock(now.mono, now.wall);
        let now = now.mono;
        let max = match input {
            Input::Inbox { max } => max,
            _ => MESH_PER_INPUT,
        };
        self.poll_mesh(now, max);
        let handled = match input {
            Input::Accept { listener, peer } => match self.accept_on(listener, peer, now) {
                Some(token) => Handled::Accepted(token),
                None => Handled::Refused,
            },
            Input::Read { conn, bytes } => {
                self.handle_read(conn, bytes, now);
                Handled::Done
            }
            Input::Closed(conn) => {
                self.handle_closed(conn, now);
                Handled::Done
            }
            Input::Release(conn) => {
                self.release(conn, now);
                Handled::Done
            }
            Input::Tick => {
                self.handle_timeout(now);
                Handled::Done
            }
            Input::Inbox { .. } => Handled::Done,
            Input::Durable { upto } => {
                self.handle_durable(upto);
                Handled::Done
            }
            Input::Shutdown => {
                self.begin_shutdown(now);
                Handled::Done
            }
            Input::AuthResult { ticket, outcome } => {
                self.handle_auth_result(ticket, outcome, now);
                Handled::Done
            }
        };
        // Whatever the input sent this shard itself is handled before it returns (a shutdown
        // releases directory entries this shard may hold itself, for one).
        // Persistence: stamps made durable go to their senders with this input's messages.
        self.durable_after_input();
        self.drain_local(now);
        self.flush_mesh();
        handled
    }

    /// The writer of `conn` waits for output; `false`: it should not (output is there, or the
    /// connection is closing or gone). It is listed by [`ShardCore::poll_writable`] once
    /// output comes.
    pub fn park_writer(&mut self, conn: ConnId) -> bool {
        self.conns.park_writer(conn)
    }

    /// The task of `conn` runs (reads, writes): its writer is not waiting.
    pub fn unpark_writer(&mut self, conn: ConnId) {
        self.conns.unpark_writer(conn);
    }

    /// The next connection whose parked writer has output to write or a close to perform.
    pub fn poll_writable(&mut self) -> Option<ConnId> {
        self.conns.poll_writable()
    }
}
