//! The open-loop flood of issue 12, shaped as a new user writes a load test: `publishers`
//! threads, each with a blocking `std::net::TcpStream`, writing batches of 64 QoS 0 PUBLISH
//! packets (64-byte payloads, one `write_all` per batch) to its own topic as fast as TCP lets
//! it, no window, no pacing; one subscriber thread per topic reading into a 1 MiB buffer and
//! counting PUBLISH frames. ringmq froze under exactly this shape (clients batching
//! differently did not show it), so the shape is the point.
//!
//! What it is for: liveness tests run third-party clients *while* it runs and read the
//! per-subscriber counters at several points ([`Flood::delivered`]). ringmq-bench has a
//! library version (`ringmq_bench::flood::run`), but it runs for a fixed duration and reports
//! only at the end, it would bring monoio, rustls and clap into this crate, and ringmq-bench's
//! own tests depend on this crate; this one is std plus the codec.
//!
//! What it must never do: run unbounded or leave a thread behind (dropping a [`Flood`] shuts
//! every socket down, which ends a blocked `write_all` or `read`, and joins the threads), set
//! a write timeout on a publisher (a timed-out `write_all` leaves half a packet on the wire),
//! assume a read ends on a packet boundary, or run two floods at once in one test process
//! (two floods on two cores load the machine, not the broker: [`Flood::start`] takes a
//! process-wide lock).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use ringmq_codec::framing::{FrameCounter, PUBLISH};
use ringmq_codec::{Packet, ProtocolVersion, QoS, encode};

use crate::{Client, Opts, msg};

/// PUBLISH packets per `write_all`, as in issue 12 (~5 KB).
pub const BATCH: usize = 64;
pub const PAYLOAD_BYTES: usize = 64;
/// A subscriber's read buffer, as in issue 12.
const READ_BUFFER_BYTES: usize = 1 << 20;
/// How often a subscriber's blocked read wakes to look at the stop flag (reads, unlike writes,
/// may time out harmlessly).
const READ_TIMEOUT: Duration = Duration::from_millis(200);

/// One flood at a time per test process.
static RUNNING: Mutex<()> = Mutex::new(());

/// Counters and errors shared by the client threads and the test.
#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    /// Batches whose `write_all` completed, per publisher.
    batches: Vec<AtomicU64>,
    /// PUBLISH frames received, per subscriber.
    delivered: Vec<AtomicU64>,
    /// What went wrong before the stop (a broker that closes a client, a malformed frame).
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, what: String) {
        if !self.stop.load(Ordering::Acquire) {
            self.errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(what);
        }
    }
}

/// A running flood; stopped (sockets shut down, threads joined) on drop.
#[derive(Debug)]
pub struct Flood {
    shared: Arc<Shared>,
    /// Clones of every client socket, for the shutdown that unblocks their threads.
    sockets: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
    _running: MutexGuard<'static, ()>,
}

impl Flood {
    /// Connects `publishers` subscribers (MQTT 5, each subscribed to its topic `flood/{i}`)
    /// and as many publishers, all before any load, then starts every publisher at once.
    /// Panics (the test fails) if the idle broker does not accept them.
    pub fn start(addr: SocketAddr, publishers: usize) -> Flood {
        let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            batches: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
            delivered: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
            errors: Mutex::new(Vec::new()),
        });
        let mut flood = Flood {
            shared,
            sockets: Vec::new(),
            threads: Vec::new(),
            _running: running,
        };
        let mut streams = Vec::new();
        for i in 0..publishers {
            let mut sub = Client::connect(addr, Opts::v5(&format!("flood-sub-{i}")));
            sub.subscribe_ok(&topic(i), QoS::AtMostOnce);
            let stream = sub.into_stream();
            let shared = flood.shared.clone();
            flood.spawn(stream, move |s| subscribe_loop(s, i, &shared));
            let publisher = Client::connect(addr, Opts::v5(&format!("flood-pub-{i}")));
            streams.push(publisher.into_stream());
        }
        for (i, stream) in streams.into_iter().enumerate() {
            let shared = flood.shared.clone();
            flood.spawn(stream, move |s| publish_loop(s, i, &shared));
        }
        flood
    }

    /// Runs `client` on `stream` in a thread of its own; a clone of the socket stays here for
    /// the stop.
    fn spawn(&mut self, stream: TcpStream, client: impl FnOnce(TcpStream) + Send + 'static) {
        self.sockets
            .push(stream.try_clone().expect("clone a flood socket"));
        self.threads
            .push(std::thread::spawn(move || client(stream)));
    }

    /// PUBLISH frames each subscriber has received so far.
    pub fn delivered(&self) -> Vec<u64> {
        load_all(&self.shared.delivered)
    }

    /// Batches each publisher has written so far (the broker has read them or holds them in
    /// the socket's receive queue).
    pub fn batches(&self) -> Vec<u64> {
        load_all(&self.shared.batches)
    }

    /// What went wrong so far: clients closed by the broker, malformed frames.
    pub fn errors(&self) -> Vec<String> {
        self.shared
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops every client and waits for its thread.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for s in &self.sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop();
    }
}

fn load_all(counters: &[AtomicU64]) -> Vec<u64> {
    counters.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

pub fn topic(i: usize) -> String {
    format!("flood/{i}")
}

/// One batch: publisher `i`'s PUBLISH packet [`BATCH`] times.
fn batch(i: usize) -> Vec<u8> {
    let mut packet = BytesMut::new();
    let publish = Packet::Publish(msg(&topic(i), vec![b'x'; PAYLOAD_BYTES]));
    encode(&publish, ProtocolVersion::V5, &mut packet).expect("encode a flood PUBLISH");
    packet.repeat(BATCH)
}

/// The same batch again and again, one `write_all` each, until the stop.
fn publish_loop(mut stream: TcpStream, i: usize, shared: &Shared) {
    let batch = batch(i);
    // No write timeout (see the module header): the stop's shutdown ends a blocked write.
    if let Err(e) = stream.set_write_timeout(None) {
        shared.error(format!("publisher {i}: {e}"));
        return;
    }
    while !shared.stop.load(Ordering::Acquire) {
        if let Err(e) = stream.write_all(&batch) {
            shared.error(format!("publisher {i}: write: {e}"));
            return;
        }
        shared.batches[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads whatever arrives into one large buffer and counts PUBLISH frames.
fn subscribe_loop(mut stream: TcpStream, i: usize, shared: &Shared) {
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    let mut frames = FrameCounter::default();
    if let Err(e) = stream.set_read_timeout(Some(READ_TIMEOUT)) {
        shared.error(format!("subscriber {i}: {e}"));
        return;
    }
    while !shared.stop.load(Ordering::Acquire) {
        match stream.read(&mut buf) {
            Ok(0) => {
                shared.error(format!("subscriber {i}: the broker closed the connection"));
                return;
            }
            Ok(n) => match frames.feed(&buf[..n]) {
                Ok(_) => {
                    let publishes = frames.frames(PUBLISH);
                    shared.delivered[i].store(publishes, Ordering::Relaxed);
                }
                Err(e) => {
                    shared.error(format!("subscriber {i}: {e}"));
                    return;
                }
            },
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                shared.error(format!("subscriber {i}: read: {e}"));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two PUBLISH frames and a PINGRESP, fed one byte at a time and in one piece.
    #[test]
    fn frames_are_counted_across_any_cut() {
        let mut stream = batch(0);
        stream.truncate(2 * (stream.len() / BATCH));
        stream.extend_from_slice(&[0xd0, 0x00]);
        let mut whole = FrameCounter::default();
        assert_eq!(whole.feed(&stream), Ok(3));
        assert_eq!(whole.frames(PUBLISH), 2);
        let mut bytewise = FrameCounter::default();
        for b in &stream {
            bytewise.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(bytewise.frames(PUBLISH), 2);
        assert!(bytewise.at_boundary());
    }

    /// A Remaining Length above 127 takes two bytes.
    #[test]
    fn two_byte_remaining_length() {
        let mut frame = vec![0x30, 0x80, 0x01];
        frame.extend(std::iter::repeat_n(0u8, 128));
        frame.extend_from_slice(&[0x30, 0x00]);
        let mut counter = FrameCounter::default();
        assert_eq!(counter.feed(&frame), Ok(2));
        assert_eq!(counter.frames(PUBLISH), 2);
    }
}
