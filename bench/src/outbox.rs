//! What a receiving connection sends: acknowledgements queued by its reader and keep-alive
//! pings, written by one writer task so reads are never interrupted (cancelling an io_uring
//! read can lose the bytes it already received).

use core::cell::{Cell, RefCell};
use core::future::Future;
use core::task::{Context, Poll, Waker};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_codec::{Packet, ProtocolVersion, encode};

use crate::client::Conn;
use crate::transport::WriteHalf;

/// How often a client with keep alive `secs` sends PINGREQ when it has nothing else to send:
/// half the keep alive, so a late ping is still within the 1.5 × grace [MQTT-3.1.2-22].
pub fn ping_interval(keep_alive_secs: u16) -> Option<Duration> {
    (keep_alive_secs > 0).then(|| Duration::from_millis(u64::from(keep_alive_secs) * 500))
}

/// Appends a PINGREQ.
pub fn pingreq(version: ProtocolVersion, out: &mut BytesMut) {
    // PINGREQ has no fields that can fail to encode.
    let _ = encode(&Packet::PingReq, version, out);
}

/// Bytes waiting to be written, and the writer task's waker.
#[derive(Default)]
pub struct Outbox {
    buf: RefCell<BytesMut>,
    waker: Cell<Option<Waker>>,
    closed: Cell<bool>,
}

impl core::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &self.buf.borrow().len())
            .finish()
    }
}

impl Outbox {
    /// Appends with `fill` and wakes the writer.
    pub fn push(&self, fill: impl FnOnce(&mut BytesMut)) {
        fill(&mut self.buf.borrow_mut());
        self.wake();
    }

    /// Stops the writer.
    pub fn close(&self) {
        self.closed.set(true);
        self.wake();
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn ready(&self) -> impl Future<Output = ()> + '_ {
        core::future::poll_fn(move |cx: &mut Context<'_>| {
            if self.closed.get() || !self.buf.borrow().is_empty() {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
    }
}

/// Writes what the outbox collects, and a PINGREQ whenever nothing was written for a ping
/// interval. Ends when the outbox is closed or a write fails.
pub async fn run_writer(
    mut writer: WriteHalf,
    outbox: Rc<Outbox>,
    version: ProtocolVersion,
    keep_alive_secs: u16,
) {
    let ping_every = ping_interval(keep_alive_secs);
    let mut spare = BytesMut::with_capacity(4096);
    let mut last_write = Instant::now();
    loop {
        match ping_every {
            Some(every) => {
                let left = every.saturating_sub(last_write.elapsed());
                let _ = monoio::time::timeout(left, outbox.ready()).await;
            }
            None => outbox.ready().await,
        }
        if outbox.closed.get() {
            return;
        }
        core::mem::swap(&mut *outbox.buf.borrow_mut(), &mut spare);
        if spare.is_empty() {
            if ping_every.is_none_or(|every| last_write.elapsed() < every) {
                continue;
            }
            pingreq(version, &mut spare);
        }
        if writer.write_all(&mut spare).await.is_err() {
            return;
        }
        last_write = Instant::now();
    }
}

/// Keeps an idle connection open until the broker or the end of the run closes it, reading
/// (and discarding) what the broker sends and pinging when it has a keep alive. Dropping a read
/// on the ping timer may lose the bytes it received; for an idle client those are PINGRESPs,
/// and the timer fires half a keep alive after the last one, so the read it drops is idle. (Over
/// TLS a lost record would break the stream; that needs the broker to send unasked exactly as
/// the timer fires.)
pub async fn hold_idle(conn: Conn, version: ProtocolVersion, keep_alive_secs: u16) {
    let Conn {
        mut stream,
        mut rbuf,
        ..
    } = conn;
    let every = ping_interval(keep_alive_secs);
    let mut out = BytesMut::with_capacity(8);
    loop {
        let read = match every {
            Some(every) => match monoio::time::timeout(every, stream.read_more(&mut rbuf)).await {
                Ok(read) => read,
                Err(_) => {
                    pingreq(version, &mut out);
                    if stream.write_all(&mut out).await.is_err() {
                        return;
                    }
                    continue;
                }
            },
            None => stream.read_more(&mut rbuf).await,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => rbuf.clear(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn ping_at_half_the_keep_alive() {
        assert_eq!(ping_interval(0), None);
        assert_eq!(ping_interval(60), Some(Duration::from_secs(30)));
        assert_eq!(ping_interval(1), Some(Duration::from_millis(500)));
    }

    #[test]
    fn pingreq_is_two_bytes() {
        let mut out = BytesMut::new();
        pingreq(ProtocolVersion::V5, &mut out);
        assert_eq!(&out[..], &[0xC0, 0x00]);
    }

    #[test]
    fn outbox_collects_until_taken() {
        let outbox = Outbox::default();
        outbox.push(|b| b.extend_from_slice(b"ab"));
        outbox.push(|b| b.extend_from_slice(b"c"));
        assert_eq!(&outbox.buf.borrow()[..], b"abc");
        outbox.close();
        assert!(outbox.closed.get());
    }
}
