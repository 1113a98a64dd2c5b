//! Accepting connections when the process has run out of file descriptors.
//!
//! `accept` fails with EMFILE (or ENFILE) while every descriptor the process may hold is in
//! use; the connection stays in the kernel's backlog, so retrying at once fails again at once
//! (the tight loop of log lines issue 12 saw: ~150 lines a second with four listeners). What
//! Mosquitto's and nginx's users expect instead, and what this does:
//! - each listener task keeps one *reserve* descriptor (an open `/dev/null`); when accepting
//!   fails for want of descriptors it closes the reserve, accepts the waiting connection with
//!   the freed slot, reads the CONNECT the client sent while it waited and answers CONNACK
//!   0x97 Quota exceeded (3.1.1: return code 0x03 Server unavailable) so the client learns
//!   why, closes it, and takes the reserve back — synchronously, so the freed descriptor
//!   cannot go elsewhere in between;
//! - when even that fails, or no connection is waiting (with the table full, `accept` fails
//!   even on an empty queue), it backs off (10 ms, doubling up to 100 ms) instead of
//!   spinning;
//! - it logs once per [`LOG_INTERVAL`] with the number of refusals since the last line, and
//!   counts every failure in `ringmq_accept_errors_total` and every refusal in
//!   `ringmq_connections_refused_total{reason="descriptors"}`;
//! - connected clients are served meanwhile (the listener task only waits), and accepting
//!   resumes by itself as soon as descriptors are free again (every retry calls `accept`
//!   first).

use std::fs::File;
use std::io;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::net::{TcpListener, TcpStream};
use ringmq_codec::{ConnAck, Packet, ProtocolVersion, ReasonCode};
use tracing::{debug, warn};

use crate::ops::metrics::ShardMetrics;

/// At most one log line per listener in this interval while descriptors are exhausted.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Short: a retry is one failing syscall, and a client waits in the backlog this long at most.
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// Bytes read of a CONNECT to be refused (a larger CONNECT, with a large will say, is closed
/// without CONNACK).
const REFUSAL_READ_MAX: usize = 4096;

/// Whether an accept error means the process or the system has no descriptor to spare.
pub(crate) fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The state of one listener task's recovery from accept errors.
pub(crate) struct AcceptGuard {
    reserve: Option<File>,
    backoff: Duration,
    /// Failures and refusals since the last log line, and when that line was written.
    unlogged: u64,
    refused_unlogged: u64,
    logged_at: Option<Instant>,
    addr: String,
}

impl AcceptGuard {
    pub(crate) fn new(addr: String) -> AcceptGuard {
        AcceptGuard {
            reserve: open_reserve(),
            backoff: BACKOFF_MIN,
            unlogged: 0,
            refused_unlogged: 0,
            logged_at: None,
            addr,
        }
    }

    /// An accept succeeded. `false`: the reserve descriptor is gone and cannot be had back
    /// now — the table is full, this connection took the last descriptor — so the caller
    /// hands the connection to [`AcceptGuard::refuse_last`] rather than let the process
    /// run with no reserve.
    pub(crate) fn accepted(&mut self) -> bool {
        self.backoff = BACKOFF_MIN;
        if self.reserve.is_none() {
            self.reserve = open_reserve();
        }
        self.reserve.is_some()
    }

    /// Refuses a connection that took the last descriptor, and takes the reserve back.
    pub(crate) fn refuse_last(&mut self, stream: TcpStream, metrics: &ShardMetrics) {
        self.refuse(crate::transport::sys::into_std(stream), metrics);
        self.reserve = open_reserve();
    }

    /// Refuses `stream` ([`refuse_now`]) and counts it.
    fn refuse(&mut self, stream: std::net::TcpStream, metrics: &ShardMetrics) {
        refuse_now(stream);
        metrics.refused_no_descriptors.inc();
        self.refused_unlogged += 1;
    }

    /// `accept` failed with `e`. Out of descriptors with a connection waiting: refuse it with
    /// the reserve descriptor (all synchronous: the reserve is closed, the connection accepted,
    /// answered and closed, the reserve reopened, with nothing else of this thread in between).
    /// Otherwise, or when that is impossible now, wait before the next try.
    pub(crate) async fn failed(
        &mut self,
        e: io::Error,
        listener: &TcpListener,
        metrics: &ShardMetrics,
    ) {
        metrics.accept_errors.inc();
        self.unlogged += 1;
        if self.reserve.is_none() {
            self.reserve = open_reserve();
        }
        let fd = crate::transport::sys::borrow_fd(listener);
        // With the table full, accept fails even when no connection waits (the descriptor is
        // allocated first): spend the reserve only on a connection that is there.
        let mut refused = false;
        if out_of_descriptors(&e)
            && crate::transport::sys::connection_waiting(fd)
            && let Some(reserve) = self.reserve.take()
        {
            drop(reserve);
            match crate::transport::sys::accept_now(fd) {
                Ok(stream) => {
                    self.refuse(stream, metrics);
                    refused = true;
                }
                Err(e) => debug!("accept with the reserve descriptor failed: {e}"),
            }
            // Another shard may take the freed slot first: then it is reopened later.
            self.reserve = open_reserve();
        }
        self.log(&e);
        if refused && self.reserve.is_some() {
            // The next waiting client may be refused at once; `accept` is tried first, so a
            // freed descriptor goes to a real connection.
            return;
        }
        monoio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn log(&mut self, e: &io::Error) {
        let now = Instant::now();
        if self
            .logged_at
            .is_some_and(|at| now.duration_since(at) < LOG_INTERVAL)
        {
            return;
        }
        warn!(
            listener = %self.addr,
            failures = self.unlogged,
            refused = self.refused_unlogged,
            "accept failed: {e}{}",
            if out_of_descriptors(e) {
                " (out of file descriptors: raise LimitNOFILE / ulimit -n; waiting clients are \
                 refused with CONNACK 0x97 meanwhile)"
            } else {
                ""
            }
        );
        self.logged_at = Some(now);
        self.unlogged = 0;
        self.refused_unlogged = 0;
    }
}

fn open_reserve() -> Option<File> {
    match File::open("/dev/null") {
        Ok(f) => Some(f),
        Err(e) => {
            debug!("cannot open the reserve descriptor: {e}");
            None
        }
    }
}

/// Answers a connection's CONNECT, if it has already arrived, with CONNACK "Quota exceeded"
/// in the CONNECT's protocol version (3.1.1: 0x03 Server unavailable), then closes it. Never
/// waits: a client that waited in the backlog has sent its CONNECT long ago; one that has
/// not, or sent something else, is closed without a word (as [MQTT-3.1.4-1] allows).
fn refuse_now(mut stream: std::net::TcpStream) {
    use std::io::{Read, Write};
    let _ = stream.set_nonblocking(true);
    let mut buf = BytesMut::zeroed(REFUSAL_READ_MAX);
    let n = stream.read(&mut buf).unwrap_or_default();
    buf.truncate(n);
    let limits = ringmq_codec::Limits {
        max_packet_size: REFUSAL_READ_MAX as u32,
    };
    if let Ok(Some(Packet::Connect(c))) =
        ringmq_codec::decode(&mut buf, &limits, ProtocolVersion::V5)
    {
        let mut out = BytesMut::new();
        let ack = Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: ReasonCode::QUOTA_EXCEEDED,
            properties: Default::default(),
        });
        if ringmq_codec::encode(&ack, c.protocol, &mut out).is_ok() {
            // A few bytes into an empty send buffer: they fit.
            let _ = stream.write_all(&out);
        }
    }
    // Dropping the stream closes it, synchronously.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_errors_are_recognised() {
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
