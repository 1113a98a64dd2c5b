//! Per-connection protocol state: what the shard core keeps for one network connection.
//! No I/O here: the runtime reads bytes into the core and writes `out` to the socket.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use ringmq_codec::{Connect, ProtocolVersion, Str, Will};
use rustc_hash::FxHashMap;

#[derive(Debug)]
pub enum ConnState {
    /// Waiting for CONNECT since the connection opened.
    AwaitConnect {
        since: Instant,
    },
    /// CONNECT accepted; waiting for the session (maybe from another shard).
    Claiming {
        connect: Box<Connect>,
        assigned_id: bool,
        since: Instant,
    },
    Connected,
    /// Closing: nothing more is read; `out` is flushed, then the socket closed.
    Closing,
}

#[derive(Debug)]
pub struct Conn {
    pub serial: u64,
    pub peer: SocketAddr,
    /// The listener that accepted it (config order), for per-listener metrics.
    pub listener: usize,
    pub state: ConnState,
    pub version: ProtocolVersion,
    pub session: Option<crate::ids::SessionId>,
    pub client_id: Str,
    pub keep_alive_secs: u16,
    pub last_rx: Instant,
    /// The client's Maximum Packet Size [MQTT-3.1.2-24].
    pub client_max_packet: u32,
    /// min(server max_inflight, client Receive Maximum).
    pub window: u16,
    /// Topic Alias Maximum the client accepts from us.
    pub client_alias_max: u16,
    pub request_problem_info: bool,
    /// The will, boxed: most connections have none and it is large.
    pub will: Option<Box<Will>>,
    /// Encoded packets waiting to be written (after the queued frames, see [`ConnExtra`]).
    pub out: BytesMut,
    /// The runtime's writer waits for output ([`crate::proto::conns::Conns::park_writer`]).
    pub(crate) writer_parked: bool,
    /// What few connections use (topic aliases, frames queued by reference, input held while
    /// the session is claimed), allocated on first use: an idle connection stays small.
    extra: Option<Box<ConnExtra>>,
    /// The TLS client certificate chain, leaf first (empty without TLS or certificate).
    pub peer_certificates: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Who the client is and what it may do; `None` when no policy restricts it (the
    /// embedded default), which keeps such connections small.
    pub auth: Option<Box<ConnAuth>>,
    /// The authentication name (lowercase) this connection's session belongs to.
    pub owner: Option<std::sync::Arc<str>>,
    /// Session expiry set at CONNECT was zero (DISCONNECT may not raise it [MQTT-3.14.2-2]).
    pub connect_expiry_zero: bool,
    /// Over this connection quota at accept: kept open only to answer its CONNECT with a
    /// refusal (it holds no connection count).
    pub refusal: Option<crate::ops::metrics::Quota>,
    /// Holds a per-IP connection count (given back when the connection is released).
    pub ip_counted: bool,
    /// `limits.max_publish_rate` and `limits.max_publish_bandwidth`, checked per PUBLISH;
    /// made full at the first PUBLISH checked (only when those limits are set), so an idle
    /// connection carries none.
    pub publish_buckets: Option<Box<crate::shard::quota::PublishBuckets>>,
}

/// The rarely used parts of a [`Conn`].
#[derive(Debug, Default)]
pub struct ConnExtra {
    /// Client → server aliases (index = alias - 1).
    pub aliases_in: Vec<Option<Str>>,
    /// Server → client aliases in use.
    pub aliases_out: FxHashMap<Bytes, NonZeroU16>,
    /// Frames written before `out`: a large payload is queued as the publisher's own `Bytes`
    /// (shared, not copied per subscriber), preceded by the bytes encoded before it.
    pub out_chunks: VecDeque<Bytes>,
    /// Bytes held in `out_chunks`.
    pub out_chunk_bytes: usize,
    /// Bytes received after CONNECT while the session was being claimed.
    pub held_input: BytesMut,
    /// Output is held until the write-ahead log is durable up to this record (0: not held):
    /// an acknowledgement was written that the client may act on only once its records are
    /// on disk (`proto/durable/`). Everything written after it waits too, in order.
    pub gate: u64,
    /// Output is held (`gate`, or `gate_remote` not yet reached).
    pub held: bool,
    /// Held until shard `i` has on disk what it handled from this shard up to stamp
    /// `gate_remote[i]` (empty: nothing asked of other shards).
    pub gate_remote: Vec<u64>,
}

/// The authenticated identity of a connection and the permissions compiled from it.
#[derive(Debug)]
pub struct ConnAuth {
    pub identity: ringmq_auth::Identity,
    pub permissions: ringmq_auth::authz::Permissions,
    pub credentials: crate::proto::authn::StoredCredentials,
}

impl Conn {
    /// Whether the client may publish to `topic` (true without a policy).
    pub fn may_publish(&self, topic: &[u8]) -> bool {
        self.auth
            .as_ref()
            .is_none_or(|a| a.permissions.allow_publish(topic))
    }

    /// Whether the client may subscribe to `filter` (true without a policy).
    pub fn may_subscribe(&self, filter: &[u8]) -> bool {
        self.auth
            .as_ref()
            .is_none_or(|a| a.permissions.allow_subscribe(filter))
    }

    pub fn new(serial: u64, peer: SocketAddr, now: Instant) -> Conn {
        Conn {
            serial,
            peer,
            listener: 0,
            state: ConnState::AwaitConnect { since: now },
            version: ProtocolVersion::V5,
            session: None,
            client_id: Str::default(),
            keep_alive_secs: 0,
            last_rx: now,
            client_max_packet: ringmq_codec::Limits::PROTOCOL_MAX_PACKET_SIZE,
            window: 1,
            client_alias_max: 0,
            request_problem_info: true,
            will: None,
            out: BytesMut::new(),
            writer_parked: false,
            extra: None,
            peer_certificates: Vec::new(),
            auth: None,
            owner: None,
            connect_expiry_zero: false,
            refusal: None,
            ip_counted: false,
            publish_buckets: None,
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.state, ConnState::Connected)
    }

    pub fn is_closing(&self) -> bool {
        matches!(self.state, ConnState::Closing)
    }

    /// The rarely used parts, if the connection ever needed them.
    pub fn extra(&self) -> Option<&ConnExtra> {
        self.extra.as_deref()
    }

    /// The rarely used parts, mutably, if the connection ever needed them.
    pub fn extra_mut_if_any(&mut self) -> Option<&mut ConnExtra> {
        self.extra.as_deref_mut()
    }

    /// The rarely used parts, allocated on first use.
    pub fn extra_mut(&mut self) -> &mut ConnExtra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Output waits for the write-ahead log (`ConnExtra::gate`).
    pub fn is_held(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| e.held)
    }

    /// Bytes the writer may write now: none while output is held.
    pub fn writable_bytes(&self) -> usize {
        if self.is_held() {
            0
        } else {
            self.pending_bytes()
        }
    }

    /// Bytes waiting to be written (held ones included).
    pub fn pending_bytes(&self) -> usize {
        self.out.len() + self.extra.as_ref().map_or(0, |e| e.out_chunk_bytes)
    }

    /// Queues a payload by reference: what is encoded so far becomes a frame, then the
    /// payload follows as its own frame.
    pub fn push_payload(&mut self, payload: Bytes) {
        if payload.is_empty() {
            // An empty frame would read as "nothing to write" (`next_output`).
            return;
        }
        let head = (!self.out.is_empty()).then(|| self.out.split().freeze());
        let extra = self.extra_mut();
        if let Some(head) = head {
            extra.out_chunk_bytes += head.len();
            extra.out_chunks.push_back(head);
        }
        extra.out_chunk_bytes += payload.len();
        extra.out_chunks.push_back(payload);
    }

    /// The next frame for the writer: queued frames first, then `out` (swapped with
    /// `spare`, so steady state allocates nothing).
    pub fn take_output(&mut self, spare: &mut BytesMut) -> Option<Output> {
        if self.is_held() {
            return None;
        }
        if let Some(extra) = self.extra.as_mut()
            && let Some(chunk) = extra.out_chunks.pop_front()
        {
            extra.out_chunk_bytes -= chunk.len();
            return Some(Output::Frame(chunk));
        }
        if self.out.is_empty() {
            return None;
        }
        Some(Output::Buffer(std::mem::replace(
            &mut self.out,
            std::mem::take(spare),
        )))
    }

    /// The bytes to write next, in place (queued frames first, then `out`); empty when
    /// nothing is waiting. Written bytes are then dropped with [`Conn::consume_output`].
    pub fn next_output(&self) -> &[u8] {
        if self.is_held() {
            return &[];
        }
        match self.extra.as_ref().and_then(|e| e.out_chunks.front()) {
            Some(chunk) => chunk,
            None => &self.out,
        }
    }

    /// Drops the first `n` bytes of [`Conn::next_output`] once written. `out` keeps its
    /// capacity, so steady state allocates nothing.
    pub fn consume_output(&mut self, n: usize) {
        if let Some(extra) = self.extra.as_mut()
            && let Some(chunk) = extra.out_chunks.front_mut()
        {
            let n = n.min(chunk.len());
            chunk.advance(n);
            extra.out_chunk_bytes -= n;
            if chunk.is_empty() {
                extra.out_chunks.pop_front();
            }
            return;
        }
        // The space written from is reclaimed by the next `reserve` (no allocation while
        // the buffer is not shared).
        self.out.advance(n.min(self.out.len()));
    }
}

/// What the writer task writes next.
#[derive(Debug)]
pub enum Output {
    /// A shared frame (usually a large payload).
    Frame(Bytes),
    /// The encode buffer; handed back to the connection as its spare when written.
    Buffer(BytesMut),
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        Conn::new(
            1,
            "127.0.0.1:1883".parse().unwrap(),
            crate::testing::epoch(),
        )
    }

    /// Drains output the way the plain pump does, `step` bytes per write.
    fn drain(c: &mut Conn, step: usize) -> Vec<u8> {
        let mut written = Vec::new();
        loop {
            let data = c.next_output();
            if data.is_empty() {
                return written;
            }
            let n = step.min(data.len());
            written.extend_from_slice(&data[..n]);
            c.consume_output(n);
        }
    }

    #[test]
    fn output_in_place_keeps_order_across_partial_writes() {
        let mut c = conn();
        c.out.extend_from_slice(b"head");
        c.push_payload(Bytes::from_static(b"PAYLOAD"));
        c.out.extend_from_slice(b"tail");
        assert_eq!(c.pending_bytes(), 15);
        assert_eq!(drain(&mut c, 3), b"headPAYLOADtail");
        assert_eq!(c.pending_bytes(), 0);
        assert!(c.extra().unwrap().out_chunks.is_empty());
    }

    #[test]
    fn written_output_space_is_reused_without_allocating() {
        let mut c = conn();
        c.out.reserve(64);
        let start = c.out.as_ptr();
        for round in 0..100u8 {
            c.out.extend_from_slice(&[round; 40]);
            assert_eq!(c.out.as_ptr(), start, "the same allocation, reclaimed");
            assert_eq!(drain(&mut c, 16), vec![round; 40]);
        }
    }

    #[test]
    fn an_idle_connection_has_no_extra_parts() {
        let mut c = conn();
        c.out.extend_from_slice(b"x");
        assert_eq!(drain(&mut c, 100), b"x");
        assert!(c.extra().is_none());
        assert!(
            std::mem::size_of::<Conn>() <= 256,
            "Conn grew: {}",
            std::mem::size_of::<Conn>()
        );
    }
}
