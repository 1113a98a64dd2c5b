//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer sends before
//! anything else on a connection, carrying the client's real address.
//!
//! What it is for: on a listener with `proxy_protocol = true`, the address the core sees for a
//! connection (per-IP quotas, logs, metrics, webhook requests) is the one the header carries,
//! not the balancer's. The header is read *before* the connection reaches the core: the
//! `Input::Accept` the core gets already carries the real address, so nothing in the core
//! ever held (or counted a quota against) the balancer's address, and no input to change a
//! connection's address exists. It precedes the TLS handshake and the WebSocket upgrade, so
//! the layers never see it.
//! What it must never do: read past the header (the bytes after it belong to MQTT, TLS or
//! HTTP), accept a header longer than its bound, or wait for one longer than
//! `limits.connect_timeout_secs`.
//!
//! Files: this one holds the sans-IO parser ([`parse`], fuzzed by `fuzz/fuzz_targets/proxy.rs`)
//! and the task that reads the header with it ([`read_header`]). The parser lives here, not in
//! `codec/`: it is not MQTT, and only the transport uses it.
//!
//! Reading without reading too far: the header's bytes are *peeked* (`MSG_PEEK`) and parsed;
//! once complete, exactly its length is consumed, and the socket is handed on with the next
//! byte unread — so the byte pumps and layers start as on any other listener.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::net::TcpStream;
use tracing::warn;

use crate::ops::metrics::{ProxyFailure, ShardHandle};
use crate::transport::sys::{borrow_fd, peek_into, recv_into};

/// The longest version 1 header, CRLF included (the specification's bound).
pub const V1_MAX_LEN: usize = 107;
/// The longest version 2 header accepted, its 16 fixed bytes included. The specification
/// allows 65 551; balancers send the addresses (at most 216 bytes, for AF_UNIX) and a few TLVs
/// (an id, an SNI, a certificate's CN), well under this.
pub const V2_MAX_LEN: usize = 2048;
/// The most a header can be, and so the most ever peeked.
pub const MAX_HEADER_LEN: usize = V2_MAX_LEN;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version and command, family and transport, length.
const V2_FIXED_LEN: usize = 16;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied TCP connection: the client's address and the address it connected to.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v1 `UNKNOWN`, or v2 with an address family other than IPv4/IPv6 (unspecified, UNIX):
    /// no usable client address, so the connection's own peer is used.
    Unknown,
    /// v2 `LOCAL`: the balancer's own connection (a health check); its own peer address.
    Local,
}

impl ProxyHeader {
    /// The address to treat as the client's: the carried source, or the socket's peer.
    pub fn client_addr(&self, socket_peer: SocketAddr) -> SocketAddr {
        match *self {
            ProxyHeader::Proxied { source, .. } => source,
            ProxyHeader::Unknown | ProxyHeader::Local => socket_peer,
        }
    }
}

/// A complete header: what it says and how many bytes it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub header: ProxyHeader,
    pub len: usize,
}

/// Why the bytes are not a valid PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("not a PROXY protocol header (neither \"PROXY \" nor the version 2 signature)")]
    NotProxy,
    #[error("version 1 header without CRLF within {V1_MAX_LEN} bytes")]
    V1TooLong,
    #[error("malformed version 1 header: {0}")]
    V1Malformed(&'static str),
    #[error("version 2 header with version {0} (not 2)")]
    V2Version(u8),
    #[error("version 2 header with command {0:#x} (neither LOCAL nor PROXY)")]
    V2Command(u8),
    #[error("version 2 header with address family/transport {0:#04x}")]
    V2Family(u8),
    #[error("version 2 header of {0} bytes (at most {V2_MAX_LEN})")]
    V2TooLong(usize),
    #[error("version 2 header too short for its address family ({len} < {need} bytes)")]
    V2Short { len: usize, need: usize },
}

/// Parses a header at the start of `buf`: `Ok(None)` while `buf` is the beginning of a header
/// that may still be valid (more bytes needed), `Ok(Some)` once complete, an error as soon as
/// the bytes cannot be one. Never reads past the header's own length.
pub fn parse(buf: &[u8]) -> Result<Option<Parsed>, ProxyError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if n > 0 && buf[..n] == V2_SIGNATURE[..n] {
        return parse_v2(buf);
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        return parse_v1(buf);
    }
    Err(ProxyError::NotProxy)
}

/// `PROXY TCP4 1.2.3.4 5.6.7.8 1234 1883\r\n`, `PROXY TCP6 ...`, `PROXY UNKNOWN ...\r\n`.
fn parse_v1(buf: &[u8]) -> Result<Option<Parsed>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if window.contains(&b'\n') {
            return Err(ProxyError::V1Malformed("LF without CR"));
        }
        return if buf.len() >= V1_MAX_LEN {
            Err(ProxyError::V1TooLong)
        } else {
            Ok(None)
        };
    };
    match window.get(cr + 1) {
        None if cr + 1 >= V1_MAX_LEN => return Err(ProxyError::V1TooLong),
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyError::V1Malformed("CR not followed by LF")),
    }
    if window[..cr].contains(&b'\n') {
        return Err(ProxyError::V1Malformed("LF without CR"));
    }
    if cr < V1_PREFIX.len() {
        return Err(ProxyError::V1Malformed("no protocol"));
    }
    let line = std::str::from_utf8(&window[V1_PREFIX.len()..cr])
        .map_err(|_| ProxyError::V1Malformed("not ASCII"))?;
    if line.starts_with("UNKNOWN") && matches!(line.as_bytes().get(7), None | Some(b' ')) {
        // The rest is to be ignored, whatever it is.
        return Ok(Some(Parsed {
            header: ProxyHeader::Unknown,
            len: cr + 2,
        }));
    }
    let mut parts = line.split(' ');
    let family = parts.next().unwrap_or_default();
    let mut next = || parts.next().ok_or(ProxyError::V1Malformed("missing field"));
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if parts.next().is_some() {
        return Err(ProxyError::V1Malformed("extra field"));
    }
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (ipv4(src)?.into(), ipv4(dst)?.into()),
        "TCP6" => (ipv6(src)?.into(), ipv6(dst)?.into()),
        _ => {
            return Err(ProxyError::V1Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    Ok(Some(Parsed {
        header: ProxyHeader::Proxied {
            source: SocketAddr::new(src, port(sport)?),
            destination: SocketAddr::new(dst, port(dport)?),
        },
        len: cr + 2,
    }))
}

fn ipv4(s: &str) -> Result<Ipv4Addr, ProxyError> {
    s.parse()
        .map_err(|_| ProxyError::V1Malformed("bad IPv4 address"))
}

fn ipv6(s: &str) -> Result<Ipv6Addr, ProxyError> {
    s.parse()
        .map_err(|_| ProxyError::V1Malformed("bad IPv6 address"))
}

/// A port: 1 to 5 decimal digits, at most 65535 (no sign, no leading zero but "0" itself).
fn port(s: &str) -> Result<u16, ProxyError> {
    let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(ProxyError::V1Malformed("bad port"));
    }
    s.parse()
        .map_err(|_| ProxyError::V1Malformed("port above 65535"))
}

/// The binary header: signature, version 2 and command, family and transport, length, the
/// addresses, TLVs (skipped).
fn parse_v2(buf: &[u8]) -> Result<Option<Parsed>, ProxyError> {
    if buf.len() < V2_FIXED_LEN {
        // Check what has arrived of the fixed part already.
        if let Some(&vc) = buf.get(12) {
            check_version_command(vc)?;
        }
        if let Some(&ft) = buf.get(13) {
            check_family(ft)?;
        }
        return Ok(None);
    }
    let command = check_version_command(buf[12])?;
    let family = check_family(buf[13])?;
    let rest = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = V2_FIXED_LEN + rest;
    if len > V2_MAX_LEN {
        return Err(ProxyError::V2TooLong(len));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[V2_FIXED_LEN..len];
    // LOCAL: the addresses (if any) are to be ignored [PROXY protocol 2.2].
    if command == 0 {
        return Ok(Some(Parsed {
            header: ProxyHeader::Local,
            len,
        }));
    }
    let need = match family >> 4 {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if body.len() < need {
        return Err(ProxyError::V2Short {
            len: body.len(),
            need,
        });
    }
    let header = match family >> 4 {
        1 => {
            let ip = |at: usize| Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3]);
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0).into(), port(8)),
                destination: SocketAddr::new(ip(4).into(), port(10)),
            }
        }
        2 => {
            let ip = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&body[at..at + 16]);
                Ipv6Addr::from(o)
            };
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(0).into(), port(32)),
                destination: SocketAddr::new(ip(16).into(), port(34)),
            }
        }
        // AF_UNSPEC and AF_UNIX: no IP address to use.
        _ => ProxyHeader::Unknown,
    };
    Ok(Some(Parsed { header, len }))
}

/// Version 2 and a known command: 0 LOCAL, 1 PROXY.
fn check_version_command(vc: u8) -> Result<u8, ProxyError> {
    if vc >> 4 != 2 {
        return Err(ProxyError::V2Version(vc >> 4));
    }
    match vc & 0x0f {
        c @ (0 | 1) => Ok(c),
        c => Err(ProxyError::V2Command(c)),
    }
}

/// Family 0 (unspecified), 1 (IPv4), 2 (IPv6) or 3 (UNIX); transport 0 (unspecified),
/// 1 (stream) or 2 (datagram).
fn check_family(ft: u8) -> Result<u8, ProxyError> {
    if ft >> 4 > 3 || ft & 0x0f > 2 {
        return Err(ProxyError::V2Family(ft));
    }
    Ok(ft)
}

// ---- reading it from a socket ---------------------------------------------------------------

/// Connections of one listener on one shard that may wait for their header at once; more are
/// closed at once (each waiting one is a task and a socket, bounded in time by the timeout).
pub(crate) const MAX_PENDING: usize = 1024;
/// A header that arrived in part is peeked again after this (the socket stays readable while
/// the part waits, so waiting for readability would spin). Headers come in one segment in
/// practice; a split one waits a few of these.
const PARTIAL_RETRY: Duration = Duration::from_millis(5);
/// At most one log line per listener and shard in this interval, with the count since.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One `proxy_protocol` listener on one shard: its timeout, the connections waiting for their
/// header, and the log line limiter.
#[derive(Debug)]
pub(crate) struct ProxyListener {
    addr: String,
    timeout: Duration,
    pending: Cell<usize>,
    unlogged: Cell<u64>,
    logged_at: Cell<Option<Instant>>,
}

impl ProxyListener {
    pub(crate) fn new(addr: String, timeout: Duration) -> Rc<ProxyListener> {
        Rc::new(ProxyListener {
            addr,
            timeout,
            pending: Cell::new(0),
            unlogged: Cell::new(0),
            logged_at: Cell::new(None),
        })
    }

    /// A connection closed before MQTT: one line now, or counted into the next one.
    fn log(&self, peer: SocketAddr, why: &dyn std::fmt::Display) {
        let now = Instant::now();
        let since = self.unlogged.get();
        if self
            .logged_at
            .get()
            .is_some_and(|at| now.duration_since(at) < LOG_INTERVAL)
        {
            self.unlogged.set(since + 1);
            return;
        }
        warn!(listener = %self.addr, %peer, closed_unlogged = since, "PROXY protocol: connection closed: {why}");
        self.logged_at.set(Some(now));
        self.unlogged.set(0);
    }
}

/// Why no header was read.
#[derive(Debug, thiserror::Error)]
enum HeaderError {
    #[error("{0}")]
    Invalid(#[from] ProxyError),
    #[error("the client closed before the header was complete")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads the PROXY header of `stream` (accepted from `peer` on `listener`) in a task of its
/// own, then calls `start` with the stream, positioned just after the header, and the client's
/// address. Without a valid header within the listener's timeout the stream is closed, logged
/// and counted (`ringmq_proxy_protocol_failures_total`).
pub(crate) fn spawn_after_header<F>(
    listener: &Rc<ProxyListener>,
    stream: TcpStream,
    peer: SocketAddr,
    metrics: &ShardHandle,
    start: F,
) where
    F: FnOnce(TcpStream, SocketAddr) + 'static,
{
    if listener.pending.get() >= MAX_PENDING {
        metrics.proxy_failed(ProxyFailure::TooManyPending);
        listener.log(peer, &"too many connections waiting for their header");
        return; // dropping the stream closes it
    }
    listener.pending.set(listener.pending.get() + 1);
    let (listener, metrics) = (listener.clone(), metrics.clone());
    monoio::spawn(async move {
        let read = monoio::time::timeout(listener.timeout, read_header(&stream)).await;
        listener.pending.set(listener.pending.get() - 1);
        let failure = match read {
            Ok(Ok(header)) => return start(stream, header.client_addr(peer)),
            Ok(Err(HeaderError::Invalid(e))) => (ProxyFailure::Invalid, e.to_string()),
            Ok(Err(e)) => (ProxyFailure::Closed, e.to_string()),
            Err(_) => (
                ProxyFailure::Timeout,
                format!("no complete header within {:?}", listener.timeout),
            ),
        };
        metrics.proxy_failed(failure.0);
        listener.log(peer, &failure.1);
    });
}

/// Peeks until a complete header is there, then consumes exactly its bytes.
async fn read_header(stream: &TcpStream) -> Result<ProxyHeader, HeaderError> {
    let mut buf = BytesMut::with_capacity(MAX_HEADER_LEN);
    loop {
        buf.clear();
        let partial = match peek_into(borrow_fd(stream), &mut buf, MAX_HEADER_LEN) {
            Ok(0) => return Err(HeaderError::Closed),
            Ok(_) => match parse(&buf)? {
                Some(parsed) => {
                    consume(stream, parsed.len)?;
                    return Ok(parsed.header);
                }
                None => true,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if partial {
            monoio::time::sleep(PARTIAL_RETRY).await;
        } else {
            stream.readable(false).await?;
        }
    }
}

/// Reads and drops the `len` bytes of the header, which a peek has just seen.
fn consume(stream: &TcpStream, len: usize) -> Result<(), HeaderError> {
    let mut sink = BytesMut::with_capacity(len);
    let n = recv_into(borrow_fd(stream), &mut sink, len)?;
    // Peeked bytes stay queued until read: all of them are there.
    if n != len {
        return Err(HeaderError::Closed);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn proxied(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        }
    }

    /// Every split of `wire` gives "more needed" until the last byte, then `expect`.
    fn complete_only_at_end(wire: &[u8], expect: Parsed) {
        for cut in 0..wire.len() {
            assert_eq!(parse(&wire[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        assert_eq!(parse(wire), Ok(Some(expect)));
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let wire = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1883\r\n";
        let expect = Parsed {
            header: proxied("192.0.2.1:56324", "198.51.100.2:1883"),
            len: wire.len(),
        };
        complete_only_at_end(wire, expect);
        let wire = b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 8883\r\n";
        let expect = Parsed {
            header: proxied("[2001:db8::1]:65535", "[2001:db8::2]:8883"),
            len: wire.len(),
        };
        complete_only_at_end(wire, expect);
        for wire in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n",
        ] {
            let expect = Parsed {
                header: ProxyHeader::Unknown,
                len: wire.len(),
            };
            complete_only_at_end(wire, expect);
        }
    }

    #[test]
    fn v1_stops_at_its_own_end() {
        let mut wire = b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n".to_vec();
        let len = wire.len();
        wire.extend_from_slice(b"\x10\x0d\x00\x04MQTT");
        assert_eq!(parse(&wire).unwrap().unwrap().len, len);
    }

    #[test]
    fn v1_malformed_and_oversized_are_refused() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2 3\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.2 1 2\r\n",
            b"PROXY TCP6 10.0.0.1 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 65536 2\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 01 2\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 -1 2\r\n",
            b"PROXY TCP4 10.0.0.1  10.0.0.2 1 2\r\n",
            b"PROXY UDP4 10.0.0.1 10.0.0.2 1 2\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\rX",
            b"PROXY \r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY UNKNOWN x\n\r\n",
        ];
        for wire in bad {
            assert!(
                matches!(parse(wire), Err(ProxyError::V1Malformed(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(wire),
                parse(wire)
            );
        }
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN, b'x');
        assert_eq!(parse(&long[..V1_MAX_LEN - 1]), Ok(None));
        assert_eq!(parse(&long), Err(ProxyError::V1TooLong));
        // CRLF exactly at the bound is fine, one byte later is not.
        long.truncate(V1_MAX_LEN - 2);
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long).unwrap().unwrap().len, V1_MAX_LEN);
        long.truncate(V1_MAX_LEN - 2);
        long.extend_from_slice(b"x\r\n");
        assert_eq!(parse(&long), Err(ProxyError::V1TooLong));
    }

    #[test]
    fn garbage_and_mqtt_are_not_a_header() {
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b"PRO"), Ok(None));
        assert_eq!(parse(b"\x10\x0d\x00\x04MQTT"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"\x16\x03\x01"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"proxy TCP4"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"\r\n\r\n\0X"), Err(ProxyError::NotProxy));
    }

    #[test]
    fn v2_inet_inet6_unspec_unix_and_local() {
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&1883u16.to_be_bytes());
        let wire = v2(1, 0x11, &body);
        let expect = Parsed {
            header: proxied("192.0.2.1:56324", "198.51.100.2:1883"),
            len: 28,
        };
        complete_only_at_end(&wire, expect);

        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut body = src.octets().to_vec();
        body.extend_from_slice(&dst.octets());
        body.extend_from_slice(&[0xff, 0xff, 0x22, 0xb3]);
        let wire = v2(1, 0x21, &body);
        let expect = Parsed {
            header: proxied("[2001:db8::1]:65535", "[2001:db8::2]:8883"),
            len: 52,
        };
        complete_only_at_end(&wire, expect);

        let wire = v2(1, 0x00, &[]);
        assert_eq!(parse(&wire).unwrap().unwrap().header, ProxyHeader::Unknown);
        let wire = v2(1, 0x31, &[0u8; 216]);
        assert_eq!(parse(&wire).unwrap().unwrap().header, ProxyHeader::Unknown);
        // LOCAL: addresses ignored, present or not.
        for wire in [v2(0, 0x00, &[]), v2(0, 0x11, &[1u8; 12])] {
            let p = parse(&wire).unwrap().unwrap();
            assert_eq!((p.header, p.len), (ProxyHeader::Local, wire.len()));
        }
    }

    #[test]
    fn v2_tlvs_are_skipped_and_the_header_ends_at_its_length() {
        let mut body = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2];
        // PP2_TYPE_AUTHORITY "broker", PP2_TYPE_UNIQUE_ID of 4 bytes.
        body.extend_from_slice(&[0x02, 0, 6]);
        body.extend_from_slice(b"broker");
        body.extend_from_slice(&[0x05, 0, 4, 1, 2, 3, 4]);
        let mut wire = v2(1, 0x11, &body);
        let len = wire.len();
        wire.extend_from_slice(b"\x10\x0d");
        let p = parse(&wire).unwrap().unwrap();
        assert_eq!(p.len, len);
        assert_eq!(p.header, proxied("10.0.0.1:1", "10.0.0.2:2"));
    }

    #[test]
    fn v2_bad_fields_short_addresses_and_oversize_are_refused() {
        let mut w = v2(1, 0x11, &[0u8; 12]);
        w[12] = 0x11;
        assert_eq!(parse(&w), Err(ProxyError::V2Version(1)));
        assert_eq!(parse(&w[..13]), Err(ProxyError::V2Version(1)));
        let w = v2(2, 0x11, &[0u8; 12]);
        assert_eq!(parse(&w), Err(ProxyError::V2Command(2)));
        let w = v2(1, 0x41, &[0u8; 12]);
        assert_eq!(parse(&w), Err(ProxyError::V2Family(0x41)));
        assert_eq!(parse(&w[..14]), Err(ProxyError::V2Family(0x41)));
        let w = v2(1, 0x13, &[0u8; 12]);
        assert_eq!(parse(&w), Err(ProxyError::V2Family(0x13)));
        let w = v2(1, 0x11, &[0u8; 11]);
        assert_eq!(parse(&w), Err(ProxyError::V2Short { len: 11, need: 12 }));
        let w = v2(1, 0x21, &[0u8; 12]);
        assert_eq!(parse(&w), Err(ProxyError::V2Short { len: 12, need: 36 }));
        // The length is checked before the body arrives.
        let w = v2(1, 0x11, &vec![0u8; V2_MAX_LEN]);
        assert_eq!(
            parse(&w[..V2_FIXED_LEN]),
            Err(ProxyError::V2TooLong(V2_MAX_LEN + V2_FIXED_LEN))
        );
        let w = v2(1, 0x11, &vec![0u8; V2_MAX_LEN - V2_FIXED_LEN]);
        assert_eq!(parse(&w).unwrap().unwrap().len, V2_MAX_LEN);
    }

    #[test]
    fn client_addr_falls_back_to_the_socket_peer() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let h = proxied("192.0.2.1:1", "192.0.2.2:2");
        assert_eq!(h.client_addr(peer), "192.0.2.1:1".parse().unwrap());
        assert_eq!(ProxyHeader::Unknown.client_addr(peer), peer);
        assert_eq!(ProxyHeader::Local.client_addr(peer), peer);
    }
}
