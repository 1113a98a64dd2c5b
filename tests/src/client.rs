//! A small synchronous MQTT client over `std::net::TcpStream`, built on `ringmq-codec`.
//!
//! It does exactly what a test tells it and checks what comes back: no background thread, no
//! automatic acknowledgement, no retry. Every read has a timeout. Packets that arrive while the
//! client waits for a specific one (a SUBACK, a PUBACK) are kept, in order, for the next
//! [`Client::recv`].

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::num::{NonZeroU16, NonZeroU32};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use std::collections::HashSet;

use ringmq_codec::{
    AckProperties, ConnAck, Connect, ConnectProperties, DecodeError, Disconnect,
    DisconnectProperties, Limits, Packet, ProtocolVersion, PubResp, Publish, PublishProperties,
    QoS, QosPid, ReasonCode, RetainHandling, Str, Subscribe, SubscribeFilter, SubscriptionOptions,
    Unsubscribe, UserProperties, Will, WillProperties, decode, encode, peek_frame_len,
};

use crate::WAIT;

/// An MQTT string from test text (test literals are always valid).
pub fn s(text: &str) -> Str {
    Str::copy_from(text).unwrap_or_else(|e| panic!("invalid MQTT string {text:?}: {e}"))
}

/// A user property block from pairs.
pub fn user_props(pairs: &[(&str, &str)]) -> UserProperties {
    UserProperties::from_pairs(pairs.iter().copied()).expect("encode user properties")
}

/// The (name, value) pairs of a user property block, owned, for assertions.
pub fn pairs(props: &UserProperties) -> Vec<(String, String)> {
    props
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `n` as a packet id / alias (test constants are non-zero).
pub fn nz16(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("non-zero u16")
}

pub fn nz32(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero u32")
}

/// A PUBLISH to send: QoS 0, not retained, no properties. Change it with [`PublishExt`].
/// The client assigns the packet id when it sends a QoS 1/2 message.
pub fn msg(topic: &str, payload: impl Into<Bytes>) -> Publish {
    Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: s(topic),
        properties: PublishProperties::default(),
        payload: payload.into(),
    }
}

/// Builder-style changes to a [`Publish`].
pub trait PublishExt: Sized {
    fn qos(self, qos: QoS) -> Self;
    fn retain(self, retain: bool) -> Self;
    fn props(self, f: impl FnOnce(&mut PublishProperties)) -> Self;
}

impl PublishExt for Publish {
    fn qos(mut self, qos: QoS) -> Publish {
        let id = self.qos_pid.packet_id().unwrap_or(NonZeroU16::MIN);
        self.qos_pid = QosPid::new(qos, id);
        self
    }

    fn retain(mut self, retain: bool) -> Publish {
        self.retain = retain;
        self
    }

    fn props(mut self, f: impl FnOnce(&mut PublishProperties)) -> Publish {
        f(&mut self.properties);
        self
    }
}

/// CONNECT options, builder style. Defaults: clean start, keep alive 60 s, no properties.
#[derive(Debug, Clone)]
pub struct Opts {
    pub connect: Connect,
    user_props: Vec<(String, String)>,
}

impl Opts {
    pub fn new(version: ProtocolVersion, client_id: &str) -> Opts {
        Opts {
            connect: Connect {
                protocol: version,
                clean_start: true,
                keep_alive_secs: 60,
                properties: ConnectProperties::default(),
                client_id: s(client_id),
                will: None,
                username: None,
                password: None,
            },
            user_props: Vec::new(),
        }
    }

    pub fn v5(client_id: &str) -> Opts {
        Opts::new(ProtocolVersion::V5, client_id)
    }

    pub fn v3(client_id: &str) -> Opts {
        Opts::new(ProtocolVersion::V3_1_1, client_id)
    }

    pub fn clean(mut self, clean_start: bool) -> Opts {
        self.connect.clean_start = clean_start;
        self
    }

    pub fn keep_alive(mut self, secs: u16) -> Opts {
        self.connect.keep_alive_secs = secs;
        self
    }

    pub fn session_expiry(mut self, secs: u32) -> Opts {
        self.connect.properties.session_expiry_secs = Some(secs);
        self
    }

    pub fn will(mut self, topic: &str, payload: impl Into<Bytes>, qos: QoS, retain: bool) -> Opts {
        self.connect.will = Some(Will {
            qos,
            retain,
            topic: s(topic),
            payload: payload.into(),
            properties: WillProperties::default(),
        });
        self
    }

    /// Changes the will's properties (call after [`Opts::will`]).
    pub fn will_props(mut self, f: impl FnOnce(&mut WillProperties)) -> Opts {
        let will = self.connect.will.as_mut().expect("will_props after will");
        f(&mut will.properties);
        self
    }

    pub fn will_delay(self, secs: u32) -> Opts {
        self.will_props(|p| p.will_delay_secs = Some(secs))
    }

    pub fn login(mut self, username: &str, password: &[u8]) -> Opts {
        self.connect.username = Some(s(username));
        self.connect.password = Some(Bytes::copy_from_slice(password));
        self
    }

    pub fn receive_max(mut self, n: u16) -> Opts {
        self.connect.properties.receive_maximum = Some(nz16(n));
        self
    }

    pub fn max_packet_size(mut self, n: u32) -> Opts {
        self.connect.properties.maximum_packet_size = Some(nz32(n));
        self
    }

    pub fn topic_alias_max(mut self, n: u16) -> Opts {
        self.connect.properties.topic_alias_maximum = Some(n);
        self
    }

    pub fn auth(mut self, method: &str, data: &[u8]) -> Opts {
        self.connect.properties.authentication_method = Some(s(method));
        self.connect.properties.authentication_data = Some(Bytes::copy_from_slice(data));
        self
    }

    pub fn user_prop(mut self, name: &str, value: &str) -> Opts {
        self.user_props.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Any other change to the CONNECT packet.
    pub fn with(mut self, f: impl FnOnce(&mut Connect)) -> Opts {
        f(&mut self.connect);
        self
    }

    pub fn into_packet(self) -> Packet {
        let mut connect = self.connect;
        if !self.user_props.is_empty() {
            connect.properties.user_properties = UserProperties::from_pairs(
                self.user_props
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .expect("encode user properties");
        }
        Packet::Connect(Box::new(connect))
    }
}

/// Why [`Client::try_recv`] got no packet.
#[derive(Debug)]
pub enum RecvError {
    /// The peer closed the connection (EOF or reset).
    Closed,
    /// The bytes from the peer do not decode.
    Decode(DecodeError),
    Io(std::io::Error),
}

/// A connected (or connecting) test client.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    rbuf: BytesMut,
    version: ProtocolVersion,
    next_pid: u16,
    pending: VecDeque<Packet>,
    /// The CONNACK received by [`Client::connect`] / [`Client::handshake`].
    pub connack: ConnAck,
    /// For failure messages.
    pub name: String,
    /// What this client told the server in CONNECT, checked on every packet the server sends
    /// (see [`Client::check_from_server`]).
    receive_maximum: u16,
    max_packet_size: u32,
    topic_alias_max: u16,
    /// Packet ids of QoS 1/2 PUBLISH packets received and not yet completed (PUBACK, PUBCOMP or
    /// a failing PUBREC sent).
    inflight_in: HashSet<u16>,
    /// Bytes written to / read from the socket so far (the broker's byte counters must agree).
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl Client {
    /// TCP connection only; nothing sent.
    pub fn open(addr: SocketAddr, version: ProtocolVersion) -> Client {
        let stream = TcpStream::connect_timeout(&addr, WAIT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client::from_stream(stream, version)
    }

    /// TCP connection from the local address `source` (e.g. 127.0.0.2: every 127/8 address is
    /// loopback on Linux, so a test can be several client IPs); nothing sent.
    pub fn open_from(addr: SocketAddr, source: IpAddr, version: ProtocolVersion) -> Client {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .unwrap_or_else(|e| panic!("bind {source}: {e}"));
        socket
            .connect_timeout(&addr.into(), WAIT)
            .unwrap_or_else(|e| panic!("connect {addr} from {source}: {e}"));
        Client::from_stream(socket.into(), version)
    }

    fn from_stream(stream: TcpStream, version: ProtocolVersion) -> Client {
        stream.set_nodelay(true).expect("set_nodelay");
        stream
            .set_write_timeout(Some(WAIT))
            .expect("set_write_timeout");
        Client {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            version,
            next_pid: 0,
            pending: VecDeque::new(),
            connack: ConnAck::default(),
            name: String::from("(not connected)"),
            receive_maximum: u16::MAX,
            max_packet_size: Limits::PROTOCOL_MAX_PACKET_SIZE,
            topic_alias_max: 0,
            inflight_in: HashSet::new(),
            bytes_sent: 0,
            bytes_received: 0,
        }
    }

    /// Invariants every packet from the server must satisfy, whatever the test checks:
    /// - [MQTT-3.1.2-25] no packet larger than the client's Maximum Packet Size;
    /// - [MQTT-3.3.2-11] / [MQTT-3.1.2-26] no Topic Alias above the client's Topic Alias Maximum;
    /// - [MQTT-3.3.4-9] no more unacknowledged QoS 1/2 PUBLISH packets than its Receive Maximum;
    /// - [MQTT-3.14.2-2] no Session Expiry Interval in a DISCONNECT from the server;
    /// - only packets a server may send (no CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ).
    fn check_from_server(&mut self, packet: &Packet, frame_len: usize) {
        assert!(
            frame_len as u64 <= u64::from(self.max_packet_size),
            "[MQTT-3.1.2-25] [{}] server sent a {frame_len}-byte {} above our Maximum Packet Size {}",
            self.name,
            packet.name(),
            self.max_packet_size
        );
        match packet {
            Packet::Publish(p) => {
                if let Some(alias) = p.properties.topic_alias {
                    assert!(
                        alias.get() <= self.topic_alias_max,
                        "[MQTT-3.3.2-11] [{}] server used Topic Alias {alias} above our maximum {}: {p:?}",
                        self.name,
                        self.topic_alias_max
                    );
                }
                if let Some(id) = p.qos_pid.packet_id() {
                    self.inflight_in.insert(id.get());
                    assert!(
                        self.inflight_in.len() <= usize::from(self.receive_maximum),
                        "[MQTT-3.3.4-9] [{}] server has {} unacknowledged QoS 1/2 PUBLISH in flight, our Receive Maximum is {}",
                        self.name,
                        self.inflight_in.len(),
                        self.receive_maximum
                    );
                }
            }
            Packet::Disconnect(d) => assert!(
                d.properties.session_expiry_secs.is_none(),
                "[MQTT-3.14.2-2] [{}] server DISCONNECT carries a Session Expiry Interval: {d:?}",
                self.name
            ),
            Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq => {
                panic!(
                    "[{}] server sent a client-only packet: {packet:?}",
                    self.name
                )
            }
            _ => {}
        }
    }

    /// Connects, sends CONNECT and returns the client and the CONNACK, whatever its code.
    pub fn handshake(addr: SocketAddr, opts: Opts) -> (Client, ConnAck) {
        let client = Client::open(addr, opts.connect.protocol);
        client.handshake_on(opts)
    }

    /// [`Client::handshake`] from the local address `source` (see [`Client::open_from`]).
    pub fn handshake_from(addr: SocketAddr, source: IpAddr, opts: Opts) -> (Client, ConnAck) {
        let client = Client::open_from(addr, source, opts.connect.protocol);
        client.handshake_on(opts)
    }

    /// [`Client::connect`] from the local address `source` (see [`Client::open_from`]).
    pub fn connect_from(addr: SocketAddr, source: IpAddr, opts: Opts) -> Client {
        let (client, connack) = Client::handshake_from(addr, source, opts);
        assert_eq!(
            connack.reason_code,
            ReasonCode::SUCCESS,
            "[{}] CONNACK refused: {connack:?}",
            client.name
        );
        client
    }

    fn handshake_on(self, opts: Opts) -> (Client, ConnAck) {
        let mut client = self;
        client.name = opts.connect.client_id.to_string();
        if opts.connect.protocol.is_v5() {
            let props = &opts.connect.properties;
            client.receive_maximum = props.receive_maximum.map_or(u16::MAX, NonZeroU16::get);
            client.max_packet_size = props
                .maximum_packet_size
                .map_or(Limits::PROTOCOL_MAX_PACKET_SIZE, NonZeroU32::get);
            client.topic_alias_max = props.topic_alias_maximum.unwrap_or(0);
        }
        client.send(&opts.into_packet());
        match client.recv(WAIT) {
            Some(Packet::ConnAck(connack)) => {
                client.connack = connack.clone();
                if let Some(id) = &connack.properties.assigned_client_id {
                    client.name = id.to_string();
                }
                (client, connack)
            }
            Some(other) => panic!("[{}] expected CONNACK, got {other:?}", client.name),
            None => panic!("[{}] no CONNACK within {WAIT:?}", client.name),
        }
    }

    /// Connects and expects CONNACK with reason Success.
    pub fn connect(addr: SocketAddr, opts: Opts) -> Client {
        let (client, connack) = Client::handshake(addr, opts);
        assert_eq!(
            connack.reason_code,
            ReasonCode::SUCCESS,
            "[{}] CONNACK refused: {connack:?}",
            client.name
        );
        client
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Whether the CONNACK said a session was present.
    pub fn session_present(&self) -> bool {
        self.connack.session_present
    }

    /// The next packet identifier (1, 2, ... wrapping past 65535 to 1).
    pub fn next_packet_id(&mut self) -> NonZeroU16 {
        self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
        nz16(self.next_pid)
    }

    /// Encodes and writes one packet; panics if the write fails.
    pub fn send(&mut self, packet: &Packet) {
        if let Err(e) = self.try_send(packet) {
            panic!("[{}] send {}: {e}", self.name, packet.name());
        }
    }

    /// Encodes and writes one packet.
    pub fn try_send(&mut self, packet: &Packet) -> std::io::Result<()> {
        match packet {
            Packet::PubAck(a) | Packet::PubComp(a) => {
                self.inflight_in.remove(&a.packet_id.get());
            }
            Packet::PubRec(a) if a.reason_code.is_error() => {
                self.inflight_in.remove(&a.packet_id.get());
            }
            _ => {}
        }
        let mut out = BytesMut::new();
        encode(packet, self.version, &mut out)
            .unwrap_or_else(|e| panic!("[{}] encode {packet:?}: {e}", self.name));
        self.send_raw(&out)
    }

    /// Writes raw bytes (for malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.bytes_sent += bytes.len() as u64;
        Ok(())
    }

    /// Stops writing (TCP FIN), keeps reading.
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Drops the connection without DISCONNECT (a network failure from the broker's view).
    pub fn drop_connection(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// The next packet, from what was kept aside first, else from the socket.
    pub fn try_recv(&mut self, timeout: Duration) -> Result<Option<Packet>, RecvError> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(Some(p));
        }
        self.read_packet(timeout)
    }

    fn read_packet(&mut self, timeout: Duration) -> Result<Option<Packet>, RecvError> {
        let deadline = Instant::now() + timeout;
        // The client accepts any size the protocol allows: checking the broker's respect of
        // our Maximum Packet Size is a test's job, not a decode failure.
        let limits = Limits {
            max_packet_size: Limits::PROTOCOL_MAX_PACKET_SIZE,
        };
        loop {
            let frame_len = peek_frame_len(&self.rbuf, &limits).map_err(RecvError::Decode)?;
            if let Some(packet) =
                decode(&mut self.rbuf, &limits, self.version).map_err(RecvError::Decode)?
            {
                self.check_from_server(&packet, frame_len.unwrap_or(0));
                return Ok(Some(packet));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let left = (deadline - now).max(Duration::from_millis(1));
            self.stream
                .set_read_timeout(Some(left))
                .map_err(RecvError::Io)?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => {
                    self.bytes_received += n as u64;
                    self.rbuf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Err(RecvError::Closed);
                }
                Err(e) => return Err(RecvError::Io(e)),
            }
        }
    }

    /// The next packet, `None` on timeout; panics if the connection closes or fails.
    pub fn recv(&mut self, timeout: Duration) -> Option<Packet> {
        match self.try_recv(timeout) {
            Ok(p) => p,
            Err(e) => panic!(
                "[{}] connection failed while waiting for a packet: {e:?}",
                self.name
            ),
        }
    }

    /// The next packet, which must arrive within `timeout`.
    pub fn expect_packet(&mut self, timeout: Duration) -> Packet {
        match self.recv(timeout) {
            Some(p) => p,
            None => panic!("[{}] no packet within {timeout:?}", self.name),
        }
    }

    /// The next packet must be a PUBLISH (not acknowledged: see [`Client::ack`]).
    pub fn expect_publish(&mut self) -> Publish {
        match self.expect_packet(WAIT) {
            Packet::Publish(p) => p,
            other => panic!("[{}] expected PUBLISH, got {other:?}", self.name),
        }
    }

    /// The next packet must be a PUBLISH; it is acknowledged (QoS 1: PUBACK; QoS 2: PUBREC,
    /// PUBREL expected, PUBCOMP).
    pub fn expect_publish_acked(&mut self) -> Publish {
        let p = self.expect_publish();
        self.ack(&p);
        p
    }

    /// `n` PUBLISH packets, acknowledged.
    pub fn expect_publishes(&mut self, n: usize) -> Vec<Publish> {
        (0..n).map(|_| self.expect_publish_acked()).collect()
    }

    /// Completes the receiver side of a PUBLISH's QoS flow.
    pub fn ack(&mut self, p: &Publish) {
        match p.qos_pid {
            QosPid::AtMostOnce => {}
            QosPid::AtLeastOnce(id) => {
                self.send(&Packet::PubAck(PubResp::new(id, ReasonCode::SUCCESS)))
            }
            QosPid::ExactlyOnce(id) => {
                self.send(&Packet::PubRec(PubResp::new(id, ReasonCode::SUCCESS)));
                let rel = self.wait_for(
                    WAIT,
                    "PUBREL",
                    |p| matches!(p, Packet::PubRel(r) if r.packet_id == id),
                );
                let Packet::PubRel(rel) = rel else {
                    unreachable!()
                };
                assert_eq!(
                    rel.reason_code,
                    ReasonCode::SUCCESS,
                    "[{}] PUBREL reason",
                    self.name
                );
                self.send(&Packet::PubComp(PubResp::new(id, ReasonCode::SUCCESS)));
            }
        }
    }

    /// Waits for the first packet satisfying `want`; the others are kept, in order, for later.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        mut want: impl FnMut(&Packet) -> bool,
    ) -> Packet {
        if let Some(i) = self.pending.iter().position(&mut want) {
            return self.pending.remove(i).expect("index from position");
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_packet(left) {
                Ok(Some(p)) if want(&p) => return p,
                Ok(Some(p)) => self.pending.push_back(p),
                Ok(None) => panic!(
                    "[{}] no {what} within {timeout:?}; received meanwhile: {:?}",
                    self.name, self.pending
                ),
                Err(e) => panic!(
                    "[{}] connection failed while waiting for {what}: {e:?}; received: {:?}",
                    self.name, self.pending
                ),
            }
        }
    }

    /// Asserts that no packet arrives within `window` (and the connection stays open).
    pub fn expect_nothing(&mut self, window: Duration) {
        if let Some(p) = self.recv(window) {
            panic!("[{}] expected no packet, got {p:?}", self.name);
        }
    }

    /// Asserts the broker closes the connection within `timeout` without sending any packet.
    pub fn expect_closed(&mut self, timeout: Duration) {
        match self.try_recv(timeout) {
            Err(RecvError::Closed) => {}
            Ok(Some(p)) => panic!(
                "[{}] expected the connection to close, got {p:?}",
                self.name
            ),
            Ok(None) => panic!("[{}] connection still open after {timeout:?}", self.name),
            Err(e) => panic!("[{}] expected a clean close, got {e:?}", self.name),
        }
    }

    /// Asserts the broker sends DISCONNECT (v5) and closes; returns the DISCONNECT.
    pub fn expect_disconnect(&mut self, timeout: Duration) -> Disconnect {
        let d = match self.try_recv(timeout) {
            Ok(Some(Packet::Disconnect(d))) => d,
            Ok(Some(p)) => panic!("[{}] expected DISCONNECT, got {p:?}", self.name),
            Ok(None) => panic!("[{}] no DISCONNECT within {timeout:?}", self.name),
            Err(e) => panic!(
                "[{}] expected DISCONNECT, the connection ended with {e:?}",
                self.name
            ),
        };
        match self.try_recv(timeout) {
            Err(RecvError::Closed) => d,
            Ok(Some(p)) => panic!("[{}] packet after DISCONNECT {d:?}: {p:?}", self.name),
            Ok(None) => panic!(
                "[{}] connection still open {timeout:?} after DISCONNECT {d:?}",
                self.name
            ),
            Err(e) => panic!("[{}] after DISCONNECT: {e:?}", self.name),
        }
    }

    /// Asserts the broker ends the connection within `timeout`, with or without a DISCONNECT
    /// first; returns the DISCONNECT if there was one.
    pub fn expect_disconnect_or_close(&mut self, timeout: Duration) -> Option<Disconnect> {
        match self.try_recv(timeout) {
            Err(RecvError::Closed) => None,
            Ok(Some(Packet::Disconnect(d))) => {
                match self.try_recv(timeout) {
                    Err(RecvError::Closed) => {}
                    other => panic!(
                        "[{}] after DISCONNECT {d:?} expected a close, got {other:?}",
                        self.name
                    ),
                }
                Some(d)
            }
            Ok(Some(p)) => panic!("[{}] expected the connection to end, got {p:?}", self.name),
            Ok(None) => panic!("[{}] connection still open after {timeout:?}", self.name),
            Err(e) => panic!(
                "[{}] expected the connection to end cleanly, got {e:?}",
                self.name
            ),
        }
    }

    /// Asserts a DISCONNECT with `reason` (v5) or a close (3.1.1), skipping PUBLISH packets
    /// that may have been sent before.
    pub fn expect_disconnect_reason(&mut self, reason: ReasonCode, timeout: Duration) {
        if self.version.is_v5() {
            let d = self.expect_disconnect(timeout);
            assert_eq!(
                d.reason_code, reason,
                "[{}] DISCONNECT reason: {d:?}",
                self.name
            );
        } else {
            self.expect_closed(timeout);
        }
    }

    /// Asserts a DISCONNECT (v5) whose reason is one of `reasons`, then a close; for spec
    /// statements that leave the exact code open.
    pub fn expect_disconnect_one_of(
        &mut self,
        reasons: &[ReasonCode],
        timeout: Duration,
    ) -> ReasonCode {
        let d = self.expect_disconnect(timeout);
        assert!(
            reasons.contains(&d.reason_code),
            "[{}] DISCONNECT reason not in {reasons:?}: {d:?}",
            self.name
        );
        d.reason_code
    }

    /// Publishes and completes the flow: QoS 1 waits for PUBACK, QoS 2 for PUBREC, sends PUBREL
    /// (if PUBREC succeeded) and waits for PUBCOMP. Returns the PUBACK/PUBREC reason code.
    pub fn publish(&mut self, mut p: Publish) -> Option<ReasonCode> {
        let id = self.publish_nowait(&mut p)?;
        match p.qos_pid.qos() {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => {
                let ack = self.wait_for(
                    WAIT,
                    "PUBACK",
                    |q| matches!(q, Packet::PubAck(a) if a.packet_id == id),
                );
                let Packet::PubAck(ack) = ack else {
                    unreachable!()
                };
                Some(ack.reason_code)
            }
            QoS::ExactlyOnce => {
                let rec = self.wait_for(
                    WAIT,
                    "PUBREC",
                    |q| matches!(q, Packet::PubRec(a) if a.packet_id == id),
                );
                let Packet::PubRec(rec) = rec else {
                    unreachable!()
                };
                if !rec.reason_code.is_error() {
                    self.send(&Packet::PubRel(PubResp::new(id, ReasonCode::SUCCESS)));
                    let comp = self.wait_for(
                        WAIT,
                        "PUBCOMP",
                        |q| matches!(q, Packet::PubComp(a) if a.packet_id == id),
                    );
                    let Packet::PubComp(comp) = comp else {
                        unreachable!()
                    };
                    assert_eq!(
                        comp.reason_code,
                        ReasonCode::SUCCESS,
                        "[{}] PUBCOMP reason",
                        self.name
                    );
                }
                Some(rec.reason_code)
            }
        }
    }

    /// Assigns a packet id (QoS 1/2) and sends; returns the id. No acknowledgement awaited.
    pub fn publish_nowait(&mut self, p: &mut Publish) -> Option<NonZeroU16> {
        let id = match p.qos_pid.qos() {
            QoS::AtMostOnce => None,
            qos => {
                let id = self.next_packet_id();
                p.qos_pid = QosPid::new(qos, id);
                Some(id)
            }
        };
        self.send(&Packet::Publish(p.clone()));
        id
    }

    /// QoS 0 publish; returns once written.
    pub fn publish0(&mut self, topic: &str, payload: &'static str) {
        self.publish(msg(topic, payload));
    }

    /// Subscribes to one filter with `qos` and default options; returns the SUBACK code.
    pub fn subscribe(&mut self, filter: &str, qos: QoS) -> ReasonCode {
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        self.subscribe_with(&[(filter, options)], None)[0]
    }

    /// Subscribes and asserts the granted code is the requested QoS.
    pub fn subscribe_ok(&mut self, filter: &str, qos: QoS) {
        let code = self.subscribe(filter, qos);
        assert_eq!(
            code,
            ReasonCode(qos as u8),
            "[{}] SUBACK for {filter:?}",
            self.name
        );
    }

    /// Subscribes to several filters with explicit options and an optional subscription id;
    /// returns the SUBACK reason codes.
    pub fn subscribe_with(
        &mut self,
        filters: &[(&str, SubscriptionOptions)],
        sub_id: Option<u32>,
    ) -> Vec<ReasonCode> {
        let id = self.next_packet_id();
        let sub = Subscribe {
            packet_id: id,
            subscription_id: sub_id.map(nz32),
            user_properties: UserProperties::default(),
            filters: filters
                .iter()
                .map(|(f, options)| SubscribeFilter {
                    filter: s(f),
                    options: *options,
                })
                .collect(),
        };
        self.send(&Packet::Subscribe(sub));
        let ack = self.wait_for(
            WAIT,
            "SUBACK",
            |p| matches!(p, Packet::SubAck(a) if a.packet_id == id),
        );
        let Packet::SubAck(ack) = ack else {
            unreachable!()
        };
        assert_eq!(
            ack.reason_codes.len(),
            filters.len(),
            "[{}] SUBACK has one code per filter: {ack:?}",
            self.name
        );
        ack.reason_codes
    }

    /// Unsubscribes; returns the UNSUBACK reason codes (empty in 3.1.1).
    pub fn unsubscribe(&mut self, filters: &[&str]) -> Vec<ReasonCode> {
        let id = self.next_packet_id();
        let unsub = Unsubscribe {
            packet_id: id,
            user_properties: UserProperties::default(),
            filters: filters.iter().map(|f| s(f)).collect(),
        };
        self.send(&Packet::Unsubscribe(unsub));
        let ack = self.wait_for(
            WAIT,
            "UNSUBACK",
            |p| matches!(p, Packet::UnsubAck(a) if a.packet_id == id),
        );
        let Packet::UnsubAck(ack) = ack else {
            unreachable!()
        };
        ack.reason_codes
    }

    /// PINGREQ, expects PINGRESP.
    pub fn ping(&mut self) {
        self.send(&Packet::PingReq);
        self.wait_for(WAIT, "PINGRESP", |p| matches!(p, Packet::PingResp));
    }

    /// A normal DISCONNECT (reason 0x00), then waits (bounded) for the broker to close.
    pub fn disconnect(self) {
        self.disconnect_with(
            ReasonCode::NORMAL_DISCONNECTION,
            DisconnectProperties::default(),
        );
    }

    /// DISCONNECT with a reason and properties, then waits (bounded) for the broker to close:
    /// once it has, the broker has processed the DISCONNECT.
    pub fn disconnect_with(mut self, reason_code: ReasonCode, properties: DisconnectProperties) {
        self.send(&Packet::Disconnect(Disconnect {
            reason_code,
            properties,
        }));
        self.shutdown_write();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "[{}] broker did not close the connection within {WAIT:?} of DISCONNECT",
                    self.name
                );
            }
            match self.read_packet(left) {
                Err(_) => return,
                Ok(Some(Packet::Publish(_))) | Ok(None) => {}
                Ok(Some(p)) => panic!("[{}] unexpected {p:?} after DISCONNECT", self.name),
            }
        }
    }

    /// Reads raw bytes until the peer closes or `timeout` passes; returns the bytes (packets
    /// already decoded are lost, use on a connection whose answer is checked byte by byte) and
    /// whether the connection was closed.
    pub fn read_raw_until_close(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let mut bytes = self.rbuf.split().to_vec();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (bytes, false);
            }
            let _ = self.stream.set_read_timeout(Some(left));
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return (bytes, true),
                Ok(n) => {
                    self.bytes_received += n as u64;
                    bytes.extend_from_slice(&chunk[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return (bytes, true),
            }
        }
    }

    /// Packets received but not yet consumed.
    pub fn pending(&self) -> &VecDeque<Packet> {
        &self.pending
    }

    /// The socket, for a test that drives the connection itself from here on (a load
    /// generator after its handshake). Called between exchanges, with nothing read and not
    /// yet consumed: such bytes would be lost.
    pub fn into_stream(self) -> TcpStream {
        assert!(
            self.rbuf.is_empty() && self.pending.is_empty(),
            "[{}] into_stream with unconsumed input: {:?}",
            self.name,
            self.pending
        );
        self.stream
    }
}

/// Subscription options with the given QoS and defaults otherwise.
pub fn sub_opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

/// Subscription options with every field given.
pub fn sub_opts_full(
    qos: QoS,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: RetainHandling,
) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local,
        retain_as_published,
        retain_handling,
    }
}

/// Ack properties helper for tests that build acks by hand.
pub fn ack(id: NonZeroU16, reason: ReasonCode) -> PubResp {
    PubResp {
        packet_id: id,
        reason_code: reason,
        properties: AckProperties::default(),
    }
}

/// The payload as text, for assertions with readable failures.
pub fn text(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}
