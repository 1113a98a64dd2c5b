//! Blocking MQTT exchanges on a `std::net::TcpStream`, each bounded by a timeout: connect and
//! wait for CONNACK, subscribe and wait for SUBACK, ping and wait for PINGRESP.
//!
//! What it is for: the liveness probe and the flood scenario, whose clients are deliberately
//! plain threads with blocking sockets (the shape of client that found issue 12), not the
//! monoio clients of the load scenarios.
//!
//! What it must never do: wait without a bound, or panic on what a broker sends (a refusal, a
//! close or an undecodable answer is an [`ExchangeError`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_codec::{
    Connect, ConnectProperties, DecodeError, EncodeError, Limits, Packet, ProtocolVersion, QoS,
    ReasonCode, encode,
};

use crate::wire::{self, WireError};

/// Bytes read per `read` while waiting for an answer (answers here are a few bytes).
const ANSWER_READ_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    #[error("TCP connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("no {what} within {} ms", timeout.as_millis())]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("connection closed while waiting for {0}")]
    Closed(&'static str),
    #[error("expected {expected}, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("{what} refused: {code}")]
    Refused {
        what: &'static str,
        code: ReasonCode,
    },
    #[error("undecodable answer: {0}")]
    Decode(#[from] DecodeError),
    #[error("cannot build a packet: {0}")]
    Wire(#[from] WireError),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

impl From<EncodeError> for ExchangeError {
    fn from(e: EncodeError) -> Self {
        ExchangeError::Wire(WireError::Encode(e))
    }
}

impl ExchangeError {
    /// Whether the broker did not answer in time (as opposed to refusing or closing).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ExchangeError::Timeout { .. })
    }
}

/// A connected client: its socket and what has been read but not yet decoded.
#[derive(Debug)]
pub struct Session {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    buf: BytesMut,
}

/// CONNECT with clean start, no credentials, no will: the probe and the flood measure the
/// broker's plain path.
pub fn connect_packet(
    version: ProtocolVersion,
    client_id: &str,
    keep_alive_secs: u16,
    out: &mut BytesMut,
) -> Result<(), ExchangeError> {
    let client_id = ringmq_codec::Str::copy_from(client_id).map_err(|e| WireError::BadString {
        what: "client id",
        reason: e.to_string(),
    })?;
    let connect = Connect {
        protocol: version,
        clean_start: true,
        keep_alive_secs,
        properties: ConnectProperties::default(),
        client_id,
        will: None,
        username: None,
        password: None,
    };
    encode(&Packet::Connect(Box::new(connect)), version, out)?;
    Ok(())
}

impl Session {
    /// Opens a TCP connection, sends CONNECT and waits for a successful CONNACK; the whole
    /// exchange (TCP handshake included) must finish within `timeout`. Returns the session and
    /// how long it took.
    pub fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        keep_alive_secs: u16,
        timeout: Duration,
    ) -> Result<(Session, Duration), ExchangeError> {
        Session::connect_from(None, addr, version, client_id, keep_alive_secs, timeout)
    }

    /// [`Session::connect`] from source address `source` (bound before connecting) when given.
    pub fn connect_from(
        source: Option<std::net::IpAddr>,
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        keep_alive_secs: u16,
        timeout: Duration,
    ) -> Result<(Session, Duration), ExchangeError> {
        let started = Instant::now();
        let stream = crate::target::connect_blocking(source, addr, timeout)
            .map_err(|source| ExchangeError::Connect { addr, source })?;
        Session::handshake(
            stream,
            version,
            client_id,
            keep_alive_secs,
            started,
            timeout,
        )
    }

    /// Sends CONNECT on a connected socket and waits for a successful CONNACK, at most until
    /// `started + timeout`. The socket keeps `timeout` as its write timeout; a caller that then
    /// writes a stream of packets clears it (a timed-out `write_all` would cut a packet in two).
    pub fn handshake(
        stream: TcpStream,
        version: ProtocolVersion,
        client_id: &str,
        keep_alive_secs: u16,
        started: Instant,
        timeout: Duration,
    ) -> Result<(Session, Duration), ExchangeError> {
        let mut out = BytesMut::new();
        connect_packet(version, client_id, keep_alive_secs, &mut out)?;
        let mut session = Session::from_stream(stream, version)?;
        session.stream.set_write_timeout(Some(timeout))?;
        session.send(&out, "CONNACK", timeout)?;
        match session.read_packet("CONNACK", started, timeout)? {
            Packet::ConnAck(ack) if ack.reason_code == ReasonCode::SUCCESS => {
                Ok((session, started.elapsed()))
            }
            Packet::ConnAck(ack) => Err(ExchangeError::Refused {
                what: "CONNECT",
                code: ack.reason_code,
            }),
            other => Err(ExchangeError::Unexpected {
                expected: "CONNACK",
                got: other.name(),
            }),
        }
    }

    /// A session on an already connected socket (no CONNECT sent).
    pub fn from_stream(
        stream: TcpStream,
        version: ProtocolVersion,
    ) -> Result<Session, ExchangeError> {
        // Requests here are single small packets: waiting for more to coalesce only adds delay.
        stream.set_nodelay(true)?;
        Ok(Session {
            stream,
            version,
            buf: BytesMut::new(),
        })
    }

    /// SUBSCRIBE to `filter` (QoS 0, packet id 1) and wait for a SUBACK granting it.
    pub fn subscribe(&mut self, filter: &str, timeout: Duration) -> Result<(), ExchangeError> {
        let started = Instant::now();
        let mut out = BytesMut::new();
        wire::subscribe(
            self.version,
            core::num::NonZeroU16::MIN,
            filter,
            QoS::AtMostOnce,
            &mut out,
        )?;
        self.send(&out, "SUBACK", timeout)?;
        match self.read_packet("SUBACK", started, timeout)? {
            Packet::SubAck(ack) => match ack.reason_codes.iter().find(|c| c.is_error()) {
                Some(&code) => Err(ExchangeError::Refused {
                    what: "SUBSCRIBE",
                    code,
                }),
                None => Ok(()),
            },
            other => Err(ExchangeError::Unexpected {
                expected: "SUBACK",
                got: other.name(),
            }),
        }
    }

    /// PINGREQ, then wait for PINGRESP; returns the round trip.
    pub fn ping(&mut self, timeout: Duration) -> Result<Duration, ExchangeError> {
        let started = Instant::now();
        let mut out = BytesMut::new();
        encode(&Packet::PingReq, self.version, &mut out)?;
        self.send(&out, "PINGRESP", timeout)?;
        match self.read_packet("PINGRESP", started, timeout)? {
            Packet::PingResp => Ok(started.elapsed()),
            other => Err(ExchangeError::Unexpected {
                expected: "PINGRESP",
                got: other.name(),
            }),
        }
    }

    /// A normal DISCONNECT, best effort: the caller closes the socket next either way.
    pub fn disconnect(mut self) {
        let mut out = BytesMut::new();
        if wire::disconnect(self.version, &mut out).is_ok() {
            let _ = self.stream.write_all(&out);
        }
    }

    /// Writes a request; a write that times out means the broker stopped reading, reported as
    /// "no answer" to that request.
    fn send(
        &mut self,
        bytes: &[u8],
        awaiting: &'static str,
        timeout: Duration,
    ) -> Result<(), ExchangeError> {
        self.stream.write_all(bytes).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ExchangeError::Timeout {
                what: awaiting,
                timeout,
            },
            _ => ExchangeError::Io(e),
        })
    }

    /// The next packet from the broker, waiting at most until `started + timeout`.
    fn read_packet(
        &mut self,
        what: &'static str,
        started: Instant,
        timeout: Duration,
    ) -> Result<Packet, ExchangeError> {
        let deadline = started + timeout;
        let limits = Limits::default();
        let mut chunk = [0u8; ANSWER_READ_BYTES];
        // Bounded by the deadline: every turn either returns or waits at most until it.
        loop {
            if let Some(packet) = ringmq_codec::decode(&mut self.buf, &limits, self.version)? {
                return Ok(packet);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ExchangeError::Timeout { what, timeout });
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ExchangeError::Closed(what)),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ExchangeError::Timeout { what, timeout });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ExchangeError::Io(e)),
            }
        }
    }
}
