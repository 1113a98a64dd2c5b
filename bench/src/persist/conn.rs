//! A blocking MQTT connection for the persistent-session scenarios: CONNECT with Clean Start 0
//! and a Session Expiry Interval (MQTT 5) or clean session 0 (3.1.1), then any packet in either
//! direction. Reads have a short socket timeout so a caller's loop can look at its deadlines;
//! writes have none (a timed-out `write_all` would cut a packet in two).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_codec::{
    Connect, ConnectProperties, Limits, Packet, ProtocolVersion, PubResp, QoS, QosPid, ReasonCode,
    Str, encode,
};

use crate::blocking::ExchangeError;
use crate::wire::{self, WireError};

/// Socket read timeout: the longest a [`Conn::next_packet`] blocks.
pub const READ_SLICE: Duration = Duration::from_millis(50);
const READ_BYTES: usize = 64 * 1024;

/// How a client connects: its id, protocol and session expiry.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub addr: SocketAddr,
    pub source: Option<IpAddr>,
    pub version: ProtocolVersion,
    /// Session Expiry Interval sent with MQTT 5 (ignored in 3.1.1: clean session 0 keeps the
    /// session until the broker's own expiry).
    pub expiry_secs: u32,
    pub timeout: Duration,
}

/// A connected client.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    version: ProtocolVersion,
    buf: BytesMut,
    out: BytesMut,
    limits: Limits,
    chunk: Box<[u8]>,
}

impl Conn {
    /// Connects with Clean Start 0 and waits for a successful CONNACK; returns the connection
    /// and its Session Present flag.
    pub fn connect(spec: &SessionSpec, client_id: &str) -> Result<(Conn, bool), ExchangeError> {
        let started = Instant::now();
        let addr = spec.addr;
        let stream = crate::target::connect_blocking(spec.source, addr, spec.timeout)
            .map_err(|source| ExchangeError::Connect { addr, source })?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_SLICE))?;
        let mut conn = Conn {
            stream,
            version: spec.version,
            buf: BytesMut::with_capacity(READ_BYTES),
            out: BytesMut::with_capacity(4096),
            limits: Limits::default(),
            chunk: vec![0u8; READ_BYTES].into_boxed_slice(),
        };
        let client_id = Str::copy_from(client_id).map_err(|e| WireError::BadString {
            what: "client id",
            reason: e.to_string(),
        })?;
        let properties = ConnectProperties {
            session_expiry_secs: (spec.version == ProtocolVersion::V5).then_some(spec.expiry_secs),
            ..ConnectProperties::default()
        };
        let connect = Connect {
            protocol: spec.version,
            clean_start: false,
            keep_alive_secs: 120,
            properties,
            client_id,
            will: None,
            username: None,
            password: None,
        };
        encode(
            &Packet::Connect(Box::new(connect)),
            spec.version,
            &mut conn.out,
        )?;
        conn.flush()?;
        let deadline = started + spec.timeout;
        loop {
            match conn.next_packet()? {
                Some(Packet::ConnAck(ack)) if ack.reason_code == ReasonCode::SUCCESS => {
                    let present = ack.session_present;
                    return Ok((conn, present));
                }
                Some(Packet::ConnAck(ack)) => {
                    return Err(ExchangeError::Refused {
                        what: "CONNECT",
                        code: ack.reason_code,
                    });
                }
                Some(other) => {
                    return Err(ExchangeError::Unexpected {
                        expected: "CONNACK",
                        got: other.name(),
                    });
                }
                None if Instant::now() > deadline => {
                    return Err(ExchangeError::Timeout {
                        what: "CONNACK",
                        timeout: spec.timeout,
                    });
                }
                None => {}
            }
        }
    }

    /// SUBSCRIBE `filter` at `qos` and wait (bounded) for a SUBACK granting it. PUBLISH packets
    /// arriving meanwhile are handed to `on_publish`.
    pub fn subscribe(
        &mut self,
        filter: &str,
        qos: QoS,
        timeout: Duration,
        mut on_publish: impl FnMut(&mut Conn, ringmq_codec::Publish) -> io::Result<()>,
    ) -> Result<(), ExchangeError> {
        wire::subscribe(self.version, NonZeroU16::MIN, filter, qos, &mut self.out)?;
        self.flush()?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_packet()? {
                Some(Packet::SubAck(ack)) => {
                    return match ack.reason_codes.iter().find(|c| c.is_error()) {
                        Some(&code) => Err(ExchangeError::Refused {
                            what: "SUBSCRIBE",
                            code,
                        }),
                        None => Ok(()),
                    };
                }
                Some(Packet::Publish(p)) => on_publish(self, p)?,
                Some(_) => {}
                None if Instant::now() > deadline => {
                    return Err(ExchangeError::Timeout {
                        what: "SUBACK",
                        timeout,
                    });
                }
                None => {}
            }
        }
    }

    /// The next packet: one already buffered, or what one read (at most [`READ_SLICE`]) brings.
    /// `Ok(None)` when nothing complete arrived in time.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, ExchangeError> {
        if let Some(p) = ringmq_codec::decode(&mut self.buf, &self.limits, self.version)? {
            return Ok(Some(p));
        }
        // What was queued (acknowledgements, publishes) goes out before waiting for more.
        self.flush()?;
        match self.stream.read(&mut self.chunk) {
            Ok(0) => Err(ExchangeError::Closed("a packet")),
            Ok(n) => {
                self.buf.extend_from_slice(&self.chunk[..n]);
                Ok(ringmq_codec::decode(
                    &mut self.buf,
                    &self.limits,
                    self.version,
                )?)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(ExchangeError::Io(e)),
        }
    }

    /// The next packet already in the buffer, without reading.
    pub fn next_buffered(&mut self) -> Result<Option<Packet>, ExchangeError> {
        Ok(ringmq_codec::decode(
            &mut self.buf,
            &self.limits,
            self.version,
        )?)
    }

    /// Queues a PUBLISH (written by the next [`Conn::flush`]).
    pub fn publish(
        &mut self,
        topic: &str,
        qos_pid: QosPid,
        payload: &[u8],
    ) -> Result<(), ExchangeError> {
        wire::publish(self.version, topic, qos_pid, payload, &mut self.out)?;
        Ok(())
    }

    /// Queues a PUBACK / PUBREC / PUBREL / PUBCOMP.
    pub fn ack(&mut self, kind: AckKind, id: NonZeroU16) -> Result<(), ExchangeError> {
        let r = PubResp::new(id, ReasonCode::SUCCESS);
        let p = match kind {
            AckKind::PubAck => Packet::PubAck(r),
            AckKind::PubRec => Packet::PubRec(r),
            AckKind::PubRel => Packet::PubRel(r),
            AckKind::PubComp => Packet::PubComp(r),
        };
        encode(&p, self.version, &mut self.out)?;
        Ok(())
    }

    /// Writes everything queued.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// A normal DISCONNECT (the session stays: its expiry is not zero), then close.
    pub fn disconnect(mut self) {
        if wire::disconnect(self.version, &mut self.out).is_ok() {
            let _ = self.flush();
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[derive(Debug, Clone, Copy)]
pub enum AckKind {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}
