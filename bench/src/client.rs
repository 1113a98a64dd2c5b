//! One MQTT client connection on a monoio runtime: connect, subscribe, and the tasks that
//! publish and receive.
//!
//! Reads land in the connection's `BytesMut` and are decoded in place by ringmq-codec; nothing
//! a broker sends can panic these tasks: a bad frame or a closed socket ends the connection and
//! is counted.

use core::cell::{Cell, RefCell};
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use hdrhistogram::Histogram;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use ringmq_codec::{DecodeError, Limits, Packet, ProtocolVersion, QoS, QosPid, ReasonCode, decode};

use crate::clock;
use crate::config::{LoadConfig, PubSpec};
use crate::outbox::{self, Outbox};
use crate::stats::{Shared, phase};
use crate::target::{Target, Transport};
use crate::tls::TlsError;
use crate::transport::{RawStream, ReadHalf, Stream, TlsIoError, TlsStream, WriteHalf};
use crate::wire::{self, Credentials, PacketIds, WireError};

/// Where one client connects to, and from.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub target: &'a Target,
    /// `--ifaddr`: the source address bound before connecting.
    pub source: Option<std::net::IpAddr>,
}

/// Bytes reserved before each read.
const READ_CHUNK: usize = 64 * 1024;
/// PUBLISH packets written per write when publishing as fast as possible.
const PUBLISH_BATCH: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(io::Error),
    /// The TLS handshake or a TLS record failed (an alert from the broker, a certificate the
    /// broker's CA file does not vouch for, ...).
    #[error("TLS: {0}")]
    Tls(TlsIoError),
    /// This client's certificate or key could not be loaded (`%i` paths).
    #[error(transparent)]
    Identity(#[from] TlsError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("undecodable frame from the broker: {0}")]
    Decode(#[from] DecodeError),
    #[error("broker refused: {0}")]
    Refused(ReasonCode),
    #[error("broker closed the connection")]
    Closed,
    #[error("expected {expected}, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("timed out")]
    Timeout,
}

impl From<io::Error> for ClientError {
    /// An error of the TLS layer stays one, so it is counted as a TLS failure.
    fn from(err: io::Error) -> ClientError {
        match crate::transport::tls_error(&err) {
            Some(tls) => ClientError::Tls(TlsIoError::Tls(tls.clone())),
            None => ClientError::Io(err),
        }
    }
}

impl ClientError {
    /// Whether TLS, not MQTT or the network, failed: the handshake, a record, or loading the
    /// client's certificate.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientError::Tls(_) | ClientError::Identity(_))
    }
}

/// An established MQTT connection.
#[derive(Debug)]
pub struct Conn {
    pub stream: Stream,
    /// Bytes read but not yet decoded.
    pub rbuf: BytesMut,
    /// The broker's Receive Maximum (65 535 when it sent none, or in 3.1.1).
    pub receive_maximum: u16,
    /// Keep alive in effect: ours, or the broker's Server Keep Alive.
    pub keep_alive_secs: u16,
}

/// Decode limits for frames from the broker: room for our payloads plus headers.
pub fn limits(cfg: &LoadConfig) -> Limits {
    let max = (cfg.payload_size as u64 + 64 * 1024).max(1024 * 1024);
    Limits {
        max_packet_size: u32::try_from(max).unwrap_or(Limits::PROTOCOL_MAX_PACKET_SIZE),
    }
}

/// Reads more bytes into `buf`; `Ok(0)` is end of stream.
pub(crate) async fn read_more<R: AsyncReadRent>(
    stream: &mut R,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    // Trap: monoio's `IoBufMut for BytesMut` reads to the *start* of the buffer (write_ptr is
    // `as_mut_ptr()`), overwriting bytes not yet decoded. Reading into the spare capacity
    // needs a `SliceMut` starting at `len`.
    let len = buf.len();
    let spare = std::mem::take(buf).slice_mut(len..);
    let (res, spare) = stream.read(spare).await;
    *buf = spare.into_inner();
    res
}

/// Reads until one whole packet is decoded.
async fn read_packet(
    conn: &mut Conn,
    limits: &Limits,
    version: ProtocolVersion,
) -> Result<Packet, ClientError> {
    loop {
        if let Some(packet) = decode(&mut conn.rbuf, limits, version)? {
            return Ok(packet);
        }
        if conn.stream.read_more(&mut conn.rbuf).await? == 0 {
            return Err(ClientError::Closed);
        }
    }
}

/// Opens TCP from the route's source to its target (and TLS for `mqtts://`/`wss://`,
/// presenting the certificate of connection number `connection`, see
/// [`crate::tls::TlsSetup::client_config`]; then the WebSocket handshake for `ws://`/`wss://`),
/// sends CONNECT with `creds` and waits for a successful CONNACK.
pub async fn connect(
    cfg: &LoadConfig,
    route: Route<'_>,
    creds: &Credentials,
    connection: u32,
    timeout: Duration,
) -> Result<Conn, ClientError> {
    let attempt = async {
        // Loaded before the TCP connect: a client whose files are missing costs the broker
        // nothing.
        let tls_config = match (&cfg.tls, route.target.tls) {
            (Some(tls), true) => {
                let name = route
                    .target
                    .server_name
                    .clone()
                    .unwrap_or_else(|| tls.server_name().clone());
                Some((tls.client_config(connection)?, name))
            }
            _ => None,
        };
        let tcp = crate::target::connect_tcp(route.source, route.target.addr).await?;
        crate::sockets::register(std::os::fd::AsRawFd::as_raw_fd(&tcp));
        tcp.set_nodelay(true)?;
        let raw = match tls_config {
            None => RawStream::Plain(tcp),
            Some((config, name)) => {
                let session = rustls::ClientConnection::new(config, name)
                    .map_err(|e| ClientError::Tls(TlsIoError::Tls(e)))?;
                let mut tls = TlsStream::new(tcp, session);
                tls.handshake().await.map_err(ClientError::Tls)?;
                RawStream::Tls(tls)
            }
        };
        let mut stream = Stream::new(raw);
        if route.target.transport == Transport::Ws {
            stream
                .upgrade_ws(&route.target.host_header(), &route.target.path)
                .await?;
        }
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::new(),
            receive_maximum: u16::MAX,
            keep_alive_secs: cfg.keep_alive_secs,
        };
        let mut out = BytesMut::with_capacity(256);
        wire::connect(cfg, creds, &mut out)?;
        conn.stream.write_all(&mut out).await?;
        match read_packet(&mut conn, &limits(cfg), cfg.protocol).await? {
            Packet::ConnAck(ack) if ack.reason_code.is_error() => {
                Err(ClientError::Refused(ack.reason_code))
            }
            Packet::ConnAck(ack) => {
                if let Some(max) = ack.properties.receive_maximum {
                    conn.receive_maximum = max.get();
                }
                // The server's keep alive replaces ours [MQTT-3.2.2-21].
                if let Some(server) = ack.properties.server_keep_alive_secs {
                    conn.keep_alive_secs = server;
                }
                Ok(conn)
            }
            other => Err(ClientError::Unexpected {
                expected: "CONNACK",
                got: other.name(),
            }),
        }
    };
    monoio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ClientError::Timeout)?
}

/// Subscribes to `filter` and waits for a SUBACK that grants it.
pub async fn subscribe(cfg: &LoadConfig, conn: &mut Conn, filter: &str) -> Result<(), ClientError> {
    let mut out = BytesMut::with_capacity(128);
    wire::subscribe(
        cfg.protocol,
        PacketIds::default().next_id(),
        filter,
        cfg.qos,
        &mut out,
    )?;
    conn.stream.write_all(&mut out).await?;
    loop {
        match read_packet(conn, &limits(cfg), cfg.protocol).await? {
            Packet::SubAck(ack) => {
                return match ack.reason_codes.first() {
                    Some(code) if !code.is_error() => Ok(()),
                    Some(code) => Err(ClientError::Refused(*code)),
                    None => Err(ClientError::Refused(ReasonCode::UNSPECIFIED_ERROR)),
                };
            }
            // A retained message may arrive before the SUBACK; it is not part of the run.
            Packet::Publish(_) => continue,
            other => {
                return Err(ClientError::Unexpected {
                    expected: "SUBACK",
                    got: other.name(),
                });
            }
        }
    }
}

/// Receives PUBLISHes until the connection ends: counts them, records the latency of the
/// stamped ones, and acknowledges QoS 1.
pub async fn run_subscriber(
    conn: Conn,
    cfg: Rc<LoadConfig>,
    shared: Arc<Shared>,
    latencies: Rc<RefCell<Histogram<u64>>>,
) {
    let limits = limits(&cfg);
    let Conn {
        stream,
        mut rbuf,
        keep_alive_secs,
        ..
    } = conn;
    let (mut reader, writer) = stream.into_split();
    let outbox = Rc::new(Outbox::default());
    crate::sockets::spawn_io(outbox::run_writer(
        writer,
        outbox.clone(),
        cfg.protocol,
        keep_alive_secs,
    ));
    let mut acks = BytesMut::with_capacity(4096);
    loop {
        match reader.read_more(&mut rbuf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let now = clock::monotonic_ns();
        let start_ns = shared.start_ns.load(Ordering::Acquire);
        let mut delivered = 0u64;
        let mut stale = 0u64;
        let end = {
            let mut hist = latencies.borrow_mut();
            loop {
                match decode(&mut rbuf, &limits, cfg.protocol) {
                    Ok(Some(Packet::Publish(publish))) => {
                        match clock::read_stamp(&publish.payload) {
                            // Sent before this run started: left in the broker by an earlier run.
                            Some(sent) if start_ns == 0 || sent < start_ns => stale += 1,
                            Some(sent) => {
                                delivered += 1;
                                hist.saturating_record(now.saturating_sub(sent).max(1));
                            }
                            None => delivered += 1,
                        }
                        if let QosPid::AtLeastOnce(id) = publish.qos_pid
                            && wire::puback(cfg.protocol, id, &mut acks).is_err()
                        {
                            break Some(&shared.decode_errors);
                        }
                    }
                    Ok(Some(Packet::Disconnect(_))) => break Some(&shared.disconnected),
                    Ok(Some(_)) => {}
                    Ok(None) => break None,
                    Err(err) => break Some(decode_failed(&shared, "subscriber", &err, &rbuf)),
                }
            }
        };
        Shared::add(&shared.stale, stale);
        if delivered > 0 {
            Shared::add(&shared.delivered, delivered);
            wake_delivery_waiters();
            shared.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
        }
        if !acks.is_empty() {
            outbox.push(|out| out.extend_from_slice(&acks));
            acks.clear();
        }
        if let Some(counter) = end {
            Shared::add(counter, 1);
            outbox.close();
            return;
        }
    }
    outbox.close();
    if shared.phase() < phase::DONE {
        Shared::add(&shared.disconnected, 1);
    }
}

/// The QoS 1 in-flight window of one publisher, shared by its writer and reader tasks.
struct Window {
    inflight: Cell<u32>,
    limit: u32,
    closed: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl core::fmt::Debug for Window {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Window")
            .field("inflight", &self.inflight.get())
            .field("limit", &self.limit)
            .finish()
    }
}

impl Window {
    fn room(&self) -> u32 {
        self.limit.saturating_sub(self.inflight.get())
    }

    fn acquire(&self, n: u32) {
        debug_assert!(n <= self.room());
        self.inflight.set(self.inflight.get() + n);
    }

    fn release(&self, n: u32) {
        // A broker acking more than was sent must not underflow the window.
        self.inflight.set(self.inflight.get().saturating_sub(n));
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn close(&self) {
        self.closed.set(true);
        self.release(0);
    }

    /// Resolves when there is room in the window or the connection closed.
    fn wait_room(&self) -> impl Future<Output = ()> + '_ {
        core::future::poll_fn(move |cx: &mut Context<'_>| {
            if self.room() > 0 || self.closed.get() {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
    }
}

/// What a publisher needs to know about the whole run.
#[derive(Debug, Clone, Copy)]
pub struct RunShape {
    pub publishers: u32,
    /// Deliveries per published message.
    pub fanout: u64,
    /// Idle clients and subscribers, which connect before the publishers.
    pub first_connections: u32,
}

/// Starts a publisher's writer and reader tasks on the current runtime.
pub fn spawn_publisher(
    conn: Conn,
    spec: PubSpec,
    cfg: Rc<LoadConfig>,
    shared: Arc<Shared>,
    shape: RunShape,
) {
    let limit = match cfg.qos {
        QoS::AtMostOnce => u32::MAX,
        _ => u32::from(cfg.inflight.min(conn.receive_maximum)),
    };
    let window = Rc::new(Window {
        inflight: Cell::new(0),
        limit,
        closed: Cell::new(false),
        waker: Cell::new(None),
    });
    let Conn {
        stream,
        rbuf,
        keep_alive_secs,
        ..
    } = conn;
    let ping_every = outbox::ping_interval(keep_alive_secs);
    let (reader, writer) = stream.into_split();
    crate::sockets::spawn_io(read_acks(
        reader,
        rbuf,
        cfg.clone(),
        shared.clone(),
        window.clone(),
    ));
    crate::sockets::spawn_io(publish(
        writer, spec, cfg, shared, window, shape, ping_every,
    ));
}

async fn read_acks(
    mut reader: ReadHalf,
    mut rbuf: BytesMut,
    cfg: Rc<LoadConfig>,
    shared: Arc<Shared>,
    window: Rc<Window>,
) {
    let limits = limits(&cfg);
    loop {
        let mut acked = 0u32;
        let end = loop {
            match decode(&mut rbuf, &limits, cfg.protocol) {
                Ok(Some(Packet::PubAck(ack))) => {
                    acked += 1;
                    if ack.reason_code.is_error() {
                        Shared::add(&shared.refused, 1);
                    }
                }
                Ok(Some(Packet::Disconnect(_))) => break Some(&shared.disconnected),
                Ok(Some(_)) => {}
                Ok(None) => break None,
                Err(err) => break Some(decode_failed(&shared, "publisher", &err, &rbuf)),
            }
        };
        if acked > 0 {
            Shared::add(&shared.acked, u64::from(acked));
            window.release(acked);
        }
        if let Some(counter) = end {
            Shared::add(counter, 1);
            break;
        }
        match reader.read_more(&mut rbuf).await {
            Ok(n) if n > 0 => {}
            _ => {
                if shared.phase() < phase::DONE {
                    Shared::add(&shared.disconnected, 1);
                }
                break;
            }
        }
    }
    window.close();
}

/// Waits (polling once a millisecond) until the run reaches `target`.
pub async fn wait_phase(shared: &Shared, target: u8) {
    while shared.phase() < target {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn publish(
    mut writer: WriteHalf,
    spec: PubSpec,
    cfg: Rc<LoadConfig>,
    shared: Arc<Shared>,
    window: Rc<Window>,
    shape: RunShape,
    ping_every: Option<Duration>,
) {
    let publishers = shape.publishers;
    wait_phase(&shared, phase::RUN).await;
    let start_ns = shared.start_ns.load(Ordering::Acquire);
    // Spread the publishers' send instants over one period instead of sending in lockstep.
    let offset_ns = if cfg.rate > 0.0 {
        (f64::from(spec.index % publishers.max(1)) / f64::from(publishers.max(1)) / cfg.rate * 1e9)
            as u64
    } else {
        0
    };
    let mut payload = vec![0x5A_u8; cfg.payload_size];
    let mut ids = PacketIds::default();
    let mut out = BytesMut::with_capacity(
        (cfg.payload_size + spec.topic.len() + 16) * PUBLISH_BATCH as usize,
    );
    let mut sent = 0u64;
    let mut last_write = std::time::Instant::now();
    let ping_due =
        |last: std::time::Instant| ping_every.is_some_and(|every| last.elapsed() >= every);
    loop {
        if shared.phase() >= phase::DRAIN || window.closed.get() {
            break;
        }
        if spec.limit.is_some_and(|limit| sent >= limit) {
            Shared::add(&shared.publishers_done, 1);
            break;
        }
        let mut n = PUBLISH_BATCH;
        if cfg.rate > 0.0 {
            let elapsed_ns = clock::monotonic_ns().saturating_sub(start_ns + offset_ns);
            let due = (elapsed_ns as f64 * cfg.rate / 1e9) as u64 + 1;
            if due <= sent {
                if ping_due(last_write) {
                    outbox::pingreq(cfg.protocol, &mut out);
                    if writer.write_all(&mut out).await.is_err() {
                        break;
                    }
                    last_write = std::time::Instant::now();
                }
                let next_ns = start_ns + offset_ns + (sent as f64 / cfg.rate * 1e9) as u64;
                let wait =
                    Duration::from_nanos(next_ns.saturating_sub(clock::monotonic_ns()).max(1000));
                // At most 50 ms: a sleeping publisher must notice the end of the run soon.
                let wait = wait.min(Duration::from_millis(50));
                monoio::time::sleep(ping_every.map_or(wait, |every| wait.min(every))).await;
                continue;
            }
            n = n.min(due - sent);
        }
        if cfg.window > 0 {
            let room = e2e_room(&shared, cfg.window, shape.fanout);
            if room == 0 {
                wait_e2e_room(&shared, cfg.window, shape.fanout).await;
                continue;
            }
            n = n.min(room);
        }
        if cfg.qos != QoS::AtMostOnce {
            let room = window.room();
            if room == 0 {
                window.wait_room().await;
                continue;
            }
            n = n.min(u64::from(room));
        }
        if let Some(limit) = spec.limit {
            n = n.min(limit - sent);
        }
        for _ in 0..n {
            clock::stamp(&mut payload, clock::monotonic_ns());
            let qos_pid = QosPid::new(cfg.qos, ids.next_id());
            if wire::publish(cfg.protocol, &spec.topic, qos_pid, &payload, &mut out).is_err() {
                Shared::add(&shared.decode_errors, 1);
                return;
            }
        }
        if cfg.qos != QoS::AtMostOnce {
            window.acquire(n as u32);
        }
        // A write that started before the drain counts as published when it completes; the
        // drain waits for it (`Shared::writing`).
        shared.writing.fetch_add(1, Ordering::SeqCst);
        let written = writer.write_all(&mut out).await;
        if written.is_ok() {
            Shared::add(&shared.published, n);
        }
        shared.writing.fetch_sub(1, Ordering::SeqCst);
        if written.is_err() {
            if shared.phase() < phase::DONE {
                Shared::add(&shared.disconnected, 1);
            }
            break;
        }
        sent += n;
        last_write = std::time::Instant::now();
        shared
            .last_publish_ns
            .fetch_max(clock::monotonic_ns(), Ordering::Relaxed);
        // The legacy driver can complete a write without suspending: let the other
        // connections of this thread run.
        yield_now().await;
    }
    // Dropping the write half shuts the socket down; keep the connection open until the end
    // so the broker does not see a publisher leave before its messages are delivered.
    while shared.phase() < phase::DONE {
        monoio::time::sleep(Duration::from_millis(5)).await;
        if ping_due(last_write) {
            outbox::pingreq(cfg.protocol, &mut out);
            if writer.write_all(&mut out).await.is_err() {
                break;
            }
            last_write = std::time::Instant::now();
        }
    }
    drop(writer);
}

/// Counts an undecodable frame and prints the first few, with the bytes that follow, so a
/// broker (or codec) bug can be reproduced. Returns the counter the caller bumps.
fn decode_failed<'a>(
    shared: &'a Shared,
    role: &str,
    err: &DecodeError,
    rest: &[u8],
) -> &'a AtomicU64 {
    const SHOWN: u64 = 3;
    if Shared::get(&shared.decode_errors) < SHOWN {
        let head: Vec<String> = rest.iter().take(32).map(|b| format!("{b:02x}")).collect();
        eprintln!(
            "{role}: undecodable frame from the broker: {err}; next bytes: {}",
            head.join(" ")
        );
    }
    &shared.decode_errors
}

/// Messages published but neither delivered nor written off, over the whole run.
fn e2e_outstanding(shared: &Shared, fanout: u64) -> u64 {
    let published = Shared::get(&shared.published);
    let delivered = Shared::get(&shared.delivered) / fanout.max(1);
    published.saturating_sub(delivered + Shared::get(&shared.written_off))
}

/// How many more messages the end-to-end window allows.
fn e2e_room(shared: &Shared, window: u64, fanout: u64) -> u64 {
    window.saturating_sub(e2e_outstanding(shared, fanout))
}

/// How long the end-to-end window waits for a delivery before it writes the outstanding
/// messages off as lost (a broker may drop QoS 0 messages; the window must not deadlock).
const E2E_STALL_NS: u64 = 50_000_000;

/// Waits until the end-to-end window has room, the run stops publishing, or deliveries stall.
async fn wait_e2e_room(shared: &Shared, window: u64, fanout: u64) {
    let mut last = (Shared::get(&shared.delivered), clock::monotonic_ns());
    while e2e_room(shared, window, fanout) == 0 && shared.phase() < phase::DRAIN {
        // Woken by a delivery on this thread (a p2p pair's publisher and subscriber share a
        // thread), else after 1 ms: polling alone would cap the rate at window / 1 ms.
        let _ = monoio::time::timeout(Duration::from_millis(1), next_local_delivery()).await;
        let delivered = Shared::get(&shared.delivered);
        let now = clock::monotonic_ns();
        if delivered != last.0 {
            last = (delivered, now);
        } else if now - last.1 > E2E_STALL_NS {
            let target = Shared::get(&shared.published).saturating_sub(delivered / fanout.max(1));
            shared.written_off.fetch_max(target, Ordering::Relaxed);
            last.1 = now;
        }
    }
}

thread_local! {
    /// Publishers of this thread waiting for the end-to-end window to open.
    static DELIVERY_WAITERS: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

/// Wakes this thread's publishers waiting for deliveries.
fn wake_delivery_waiters() {
    let waiters = DELIVERY_WAITERS.with(|w| std::mem::take(&mut *w.borrow_mut()));
    for waker in waiters {
        waker.wake();
    }
}

/// Resolves at the next delivery counted on this thread (or a spurious wake-up: callers
/// re-check their condition).
fn next_local_delivery() -> impl Future<Output = ()> {
    let mut registered = false;
    core::future::poll_fn(move |cx: &mut Context<'_>| {
        if registered {
            return Poll::Ready(());
        }
        registered = true;
        DELIVERY_WAITERS.with(|w| w.borrow_mut().push(cx.waker().clone()));
        Poll::Pending
    })
}

/// Gives the other tasks of this runtime a turn.
pub fn yield_now() -> impl Future<Output = ()> {
    struct YieldNow(bool);
    impl Future for YieldNow {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                Poll::Ready(())
            } else {
                self.0 = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
    YieldNow(false)
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    fn window(limit: u32) -> Window {
        Window {
            inflight: Cell::new(0),
            limit,
            closed: Cell::new(false),
            waker: Cell::new(None),
        }
    }

    #[test]
    fn window_accounts_inflight() {
        let w = window(4);
        assert_eq!(w.room(), 4);
        w.acquire(3);
        assert_eq!(w.room(), 1);
        w.release(2);
        assert_eq!(w.room(), 3);
        // More acks than sent (a broker bug) cannot open the window beyond its limit.
        w.release(10);
        assert_eq!(w.room(), 4);
    }
}
