//! The byte pump of a plain (TCP) MQTT connection: one task that reads and writes.
//!
//! While idle, a connection holds no buffer: the task waits for the socket to become readable
//! (an io_uring poll, or epoll readiness with the legacy driver; no read with a buffer
//! committed), then reads without blocking into the shard's read arena, keeping only a frame
//! that arrived in part. Output is written without blocking straight from the connection's
//! `out`; when the socket takes no more, the task also waits for it to become writable, and
//! goes on reading meanwhile (a peer that writes before it reads cannot deadlock us).
//!
//! An idle connection therefore costs this task, its `Conn` and its session.
//!
//! A connection the server ends lingers like the layer pump's (`runtime::LINGER`): after its
//! last packet, FIN, then what the client still sends is read and discarded until it closes.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::BorrowedFd;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::net::TcpStream;
use tracing::debug;

use crate::ids::ConnId;
use crate::proto::Input;
use crate::transport::runtime::{Core, LINGER, LINGER_BYTES, READ_CHUNK, release_connection};
use crate::transport::sys::borrow_fd;

thread_local! {
    /// The shard's read arena (one per shard thread). Connections read into it one at a time,
    /// synchronously, so a connection waiting for data holds no read buffer.
    static READ_ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Size of the shard's read arena. Frames are split off it without a copy, so a message
/// still held after it was handled (QoS 1/2 in flight or queued) keeps its arena alive and
/// the next read starts a new one. Reads fill an arena front to back, so the memory a held
/// message keeps alive is bounded by this size.
pub(crate) const READ_ARENA_SIZE: usize = 4096;
/// Least room a read is given; an arena with less left starts over.
const READ_MIN: usize = READ_CHUNK;
/// Reads in a row from one connection before it lets the shard's other tasks run.
const READS_PER_TURN: usize = 4;
/// Deliveries (PUBLISH packets queued to subscribers) one connection's reads may cause in a
/// turn before it lets the others run: a 4 KiB read to a topic with 1 000 subscribers is ~50 000
/// of them, and four such reads made one task's turn tens of milliseconds long.
const DELIVERIES_PER_TURN: u64 = 8192;
/// How long reading pauses while another shard's inbox is full.
const MESH_BACKOFF: Duration = Duration::from_millis(1);

/// One plain connection, from accept to release.
///
/// An `async` block rather than an `async fn`: an `async fn` keeps its arguments in its future
/// next to the locals they are moved into (the stream twice, 80 bytes each); the block uses
/// what it captured in place.
pub(crate) fn connection(
    stream: TcpStream,
    index: ConnId,
    core: Core,
) -> impl Future<Output = ()> + 'static {
    let mut pump = Pump::new(index, core);
    async move {
        let mut readable = pin!(Some(stream.readable(false)));
        // Boxed on the first write that blocks, then kept: most connections never need it.
        let mut writable = unarmed(|| Box::pin(unarmed(|| stream.writable(false))));
        let finish = loop {
            match pump.turn(borrow_fd(&stream)) {
                Turn::Done(finish) => break finish,
                Turn::Yield => {
                    // More to read: after the driver's next turn (see `turn.rs`), so other
                    // connections, accepts and timers are served first.
                    crate::transport::turn::next_turn().await;
                    continue;
                }
                Turn::Wait => {}
            }
            if pump.wants_readable() && readable.is_none() {
                readable.set(Some(stream.readable(false)));
            }
            if pump.write_blocked {
                let slot = writable.get_or_insert_with(|| Box::pin(None));
                if slot.is_none() {
                    slot.set(Some(stream.writable(false)));
                }
            }
            pump.arm_backoff();
            std::future::poll_fn(|cx| {
                pump.poll_wait(cx, readable.as_mut(), writable.as_mut().map(|w| w.as_mut()))
            })
            .await;
        };
        drop(writable);
        if finish == Finish::Flushed && !pump.peer_closed {
            // FIN after the last packet, then read and discard until the client closes (LINGER).
            crate::transport::sys::shutdown_write(borrow_fd(&stream));
            // The backoff slot holds the deadline (the connection no longer reads for the core).
            pump.backoff = Some(Box::pin(monoio::time::sleep(LINGER)));
            loop {
                while pump.readable && pump.wants_input() {
                    pump.discard(borrow_fd(&stream));
                }
                if !pump.wants_input() {
                    break;
                }
                if readable.is_none() {
                    readable.set(Some(stream.readable(false)));
                }
                let expired =
                    std::future::poll_fn(|cx| pump.poll_linger(cx, readable.as_mut())).await;
                if expired {
                    break;
                }
            }
        }
        // Cancels a readiness wait still queued; shutting both directions ends the connection.
        readable.set(None);
        crate::transport::sys::shutdown_socket(borrow_fd(&stream));
        release_connection(&pump.core, pump.index());
    }
}

/// `None` of the type `make` returns: an empty slot for a future made later.
fn unarmed<F>(_make: impl FnOnce() -> F) -> Option<F> {
    None
}

/// What the task keeps for its connection between wake-ups. The socket stays the task's:
/// the methods that use it take its descriptor borrowed from it.
struct Pump {
    core: Core,
    /// The connection's slot in the core.
    index: ConnId,
    /// A frame that arrived in part, continued by the next read; empty and unallocated while
    /// nothing is pending.
    input: BytesMut,
    /// The congestion backoff timer, allocated only while congested (a timer is large).
    backoff: Option<Pin<Box<monoio::time::Sleep>>>,
    /// The socket was readable and has not been read empty since.
    readable: bool,
    /// The last write did not take everything: wait until the socket is writable.
    write_blocked: bool,
    /// Reading pauses: this connection's messages wait for a full inbox of another shard.
    congested: bool,
    /// The client closed its side, or the socket failed: nothing more to read.
    peer_closed: bool,
    /// Bytes read and discarded after the server ended the connection (LINGER).
    discarded: u32,
}

enum Turn {
    /// Wait for readiness, output from the core, or the congestion backoff.
    Wait,
    /// More to read: let the shard's other tasks run first.
    Yield,
    /// The connection is over: release it.
    Done(Finish),
}

/// How a connection's output ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// Everything was written (or the connection is gone).
    Flushed,
    /// A write failed: close at once.
    WriteFailed,
}

/// How a read ended.
enum ReadEnd {
    Eof,
    /// Bytes were read; `filled`: all the room offered was used, so more is likely waiting.
    Data {
        filled: bool,
    },
}

impl Pump {
    fn new(index: ConnId, core: Core) -> Pump {
        Pump {
            core,
            index,
            input: BytesMut::new(),
            backoff: None,
            readable: false,
            write_blocked: false,
            congested: false,
            peer_closed: false,
            discarded: 0,
        }
    }

    fn index(&self) -> ConnId {
        self.index
    }

    /// PUBLISH packets the shard has queued to clients so far.
    fn delivered(&self) -> u64 {
        self.core.borrow().delivered()
    }

    /// Whether reading goes on (for the core, or to discard after a server-side close).
    fn wants_input(&self) -> bool {
        !self.peer_closed && self.discarded as usize <= LINGER_BYTES
    }

    fn wants_readable(&self) -> bool {
        !self.readable && self.wants_input()
    }

    /// Writes what the core queued and reads what the socket holds (a few reads at most).
    fn turn(&mut self, fd: BorrowedFd<'_>) -> Turn {
        // Running: what the core writes for this connection is seen below, without a wake-up.
        self.core.borrow_mut().unpark_writer(self.index());
        let delivered_before = self.delivered();
        for _ in 0..READS_PER_TURN {
            if self.delivered().wrapping_sub(delivered_before) > DELIVERIES_PER_TURN {
                // This connection's input fans out widely: the rest after the others' turn.
                return if self.readable && self.wants_input() {
                    Turn::Yield
                } else {
                    Turn::Wait
                };
            }
            if !self.write_blocked {
                match flush_output(&self.core, self.index(), fd) {
                    Ok(drained) => self.write_blocked = !drained,
                    Err(e) => {
                        debug!(index = self.index.raw(), "write failed: {e}");
                        connection_closed(&self.core, self.index());
                        return Turn::Done(Finish::WriteFailed);
                    }
                }
            }
            let closing = match self.core.borrow().conn(self.index()) {
                None => return Turn::Done(Finish::Flushed),
                Some(conn) if conn.is_closing() && conn.writable_bytes() == 0 => {
                    return Turn::Done(Finish::Flushed);
                }
                Some(conn) => conn.is_closing(),
            };
            if !self.readable || !self.wants_input() {
                return Turn::Wait;
            }
            if closing {
                // Ended by the server, still flushing: what the client sends is discarded.
                self.discard(fd);
                continue;
            }
            // Backpressure: while the shards this connection publishes to cannot keep up, read
            // nothing more from it, so it is slowed by TCP instead of growing the outbox.
            // Other connections go on being read (`ShardCore::conn_throttled`).
            self.congested = self
                .core
                .borrow_mut()
                .conn_throttled(self.index(), Instant::now());
            if self.congested {
                return Turn::Wait;
            }
            match self.read(fd) {
                Ok(ReadEnd::Data { filled }) => self.readable = filled,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(ReadEnd::Eof) | Err(_) => {
                    self.peer_closed = true;
                    connection_closed(&self.core, self.index());
                }
            }
            if !self.readable && self.input.is_empty() {
                // Read empty: an idle connection keeps no input buffer.
                self.input = BytesMut::new();
            }
        }
        Turn::Yield
    }

    /// One read: into the connection's own buffer when a frame is pending in part (sized for
    /// that frame), otherwise into the shard's arena.
    fn read(&mut self, fd: BorrowedFd<'_>) -> io::Result<ReadEnd> {
        if !self.input.is_empty() {
            let want = {
                let c = self.core.borrow();
                match ringmq_codec::peek_frame_len(&self.input, c.codec_limits()) {
                    Ok(Some(len)) => len.saturating_sub(self.input.len()).max(READ_MIN),
                    _ => READ_MIN,
                }
            };
            if self.input.capacity() - self.input.len() < want {
                self.input.reserve(want);
            }
            let room = self.input.capacity() - self.input.len();
            let n = crate::transport::sys::recv_into(fd, &mut self.input, room)?;
            if n == 0 {
                return Ok(ReadEnd::Eof);
            }
            self.core.borrow().metrics().bytes_in.add(n as u64);
            handle_input(&self.core, self.index(), &mut self.input);
            return Ok(ReadEnd::Data { filled: n == room });
        }
        READ_ARENA.with(|arena| {
            let mut arena = arena.borrow_mut();
            debug_assert!(arena.is_empty(), "the arena holds nothing between reads");
            arena.clear();
            if arena.capacity() < READ_MIN {
                // Starts over in place when no frame of the arena is still held, else in a
                // new allocation.
                arena.reserve(READ_ARENA_SIZE);
            }
            let room = arena.capacity();
            let n = crate::transport::sys::recv_into(fd, &mut arena, room)?;
            if n == 0 {
                return Ok(ReadEnd::Eof);
            }
            self.core.borrow().metrics().bytes_in.add(n as u64);
            handle_input(&self.core, self.index(), &mut arena);
            if !arena.is_empty() {
                // A frame arrived in part: it waits in the connection's own buffer; the
                // arena is for the next read of any connection.
                self.input.reserve(arena.len().max(READ_MIN));
                self.input.extend_from_slice(&arena);
                arena.clear();
            }
            Ok(ReadEnd::Data { filled: n == room })
        })
    }

    /// One read whose bytes are counted and dropped (the server has ended the connection).
    fn discard(&mut self, fd: BorrowedFd<'_>) {
        self.input = BytesMut::new();
        let read = READ_ARENA.with(|arena| {
            let mut arena = arena.borrow_mut();
            arena.clear();
            if arena.capacity() < READ_MIN {
                arena.reserve(READ_ARENA_SIZE);
            }
            let room = arena.capacity();
            let n = crate::transport::sys::recv_into(fd, &mut arena, room);
            arena.clear();
            n.map(|n| (n, room))
        });
        match read {
            Ok((0, _)) => self.peer_closed = true,
            Ok((n, room)) => {
                self.core.borrow().metrics().bytes_in.add(n as u64);
                self.discarded = self.discarded.saturating_add(n as u32);
                self.readable = n == room;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.peer_closed = true,
        }
    }

    /// While lingering: ready with `false` when the socket is readable, `true` once the
    /// deadline (in the backoff slot) has passed.
    fn poll_linger<R>(
        &mut self,
        cx: &mut Context<'_>,
        mut readable: Pin<&mut Option<R>>,
    ) -> Poll<bool>
    where
        R: Future<Output = io::Result<()>>,
    {
        if let Some(wait) = readable.as_mut().as_pin_mut()
            && wait.poll(cx).is_ready()
        {
            readable.set(None);
            self.readable = true;
            return Poll::Ready(false);
        }
        match self.backoff.as_mut() {
            Some(deadline) => deadline.as_mut().poll(cx).map(|()| true),
            None => Poll::Ready(true),
        }
    }

    /// Starts (or restarts) the congestion backoff while congested; frees it otherwise.
    fn arm_backoff(&mut self) {
        if !self.congested {
            self.backoff = None;
            return;
        }
        match self.backoff.as_mut() {
            Some(sleep) => sleep
                .as_mut()
                .reset(monoio::time::Instant::now() + MESH_BACKOFF),
            None => self.backoff = Some(Box::pin(monoio::time::sleep(MESH_BACKOFF))),
        }
    }

    /// Waits until there is something to do: the socket became readable or writable, the
    /// core queued output or closed the connection, or the congestion backoff ran out.
    fn poll_wait<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut readable: Pin<&mut Option<R>>,
        writable: Option<Pin<&mut Option<W>>>,
    ) -> Poll<()>
    where
        R: Future<Output = io::Result<()>>,
        W: Future<Output = io::Result<()>>,
    {
        let mut ready = false;
        // A failed readiness wait counts as ready: the read or write then reports the error.
        if let Some(wait) = readable.as_mut().as_pin_mut()
            && wait.poll(cx).is_ready()
        {
            readable.set(None);
            self.readable = true;
            ready = true;
        }
        if let Some(mut writable) = writable
            && let Some(wait) = writable.as_mut().as_pin_mut()
            && wait.poll(cx).is_ready()
        {
            writable.set(None);
            self.write_blocked = false;
            ready = true;
        }
        if let Some(sleep) = self.backoff.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            ready = true;
        }
        let mut c = self.core.borrow_mut();
        match c.conn(self.index()) {
            None => return Poll::Ready(()),
            // Blocked on the socket, the writable wait above wakes the task; otherwise it
            // waits for output from the core (listed once it comes, see `Host::park_writer`).
            Some(conn) if !self.write_blocked => {
                let has_output = conn.writable_bytes() > 0 || conn.is_closing();
                if has_output || !c.park_writer(self.index(), cx.waker()) {
                    ready = true;
                }
            }
            Some(_) => {}
        }
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Writes the connection's output until all is written (`Ok(true)`) or the socket takes no
/// more (`Ok(false)`).
fn flush_output(core: &Core, index: ConnId, fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut c = core.borrow_mut();
    let mut sent = 0;
    let result = match c.conn_mut(index) {
        None => Ok(true),
        Some(conn) => loop {
            let data = conn.next_output();
            if data.is_empty() {
                break Ok(true);
            }
            let len = data.len();
            match crate::transport::sys::send(fd, data) {
                Ok(n) => {
                    conn.consume_output(n);
                    sent += n;
                    if n < len {
                        // The send buffer is full.
                        break Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        },
    };
    if sent > 0 {
        c.metrics().bytes_out.add(sent as u64);
    }
    result
}

/// Bytes arrived: the core handles every complete frame in `buf`, after what other shards
/// sent (see `ShardCore::poll_mesh`).
fn handle_input(core: &Core, index: ConnId, buf: &mut BytesMut) {
    let _ = core.borrow_mut().handle(Input::Read {
        conn: index,
        bytes: buf,
    });
}

/// The peer closed the connection or the socket failed.
fn connection_closed(core: &Core, index: ConnId) {
    let _ = core.borrow_mut().handle(Input::Closed(index));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::proto::ShardCore;

    /// What an idle connection's task holds: its future (plus monoio's 48-byte task header)
    /// is all, no read buffer. Measured 304 bytes; with the header at most 368, inside
    /// mimalloc's 384-byte size class.
    const MAX_TASK_FUTURE: usize = 320;

    #[test]
    fn the_connection_task_is_small() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            let core: Core = Rc::new(RefCell::new(crate::transport::host::Host::new(
                ShardCore::new(
                    0,
                    None,
                    crate::config::Limits::default(),
                    ringmq_auth::SharedSnapshot::new(ringmq_auth::Snapshot::allow_all()),
                ),
            )));
            let task = connection(
                TcpStream::from_std(server).unwrap(),
                crate::ids::ConnId::default(),
                core,
            );
            let size = std::mem::size_of_val(&task);
            assert!(
                size <= MAX_TASK_FUTURE,
                "the plain connection's future is {size} bytes (bound {MAX_TASK_FUTURE})"
            );
        });
    }
}
