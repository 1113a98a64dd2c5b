//! The byte pump of a connection whose MQTT bytes travel inside a transport [`Layer`]
//! (`mqtts`, `ws`, `wss`): bytes from the socket go through the layer into the shard core; the
//! core's output goes through the layer back to the socket. Unlike the plain pump
//! (`plain_pump.rs`, one task), a reader and a writer task; the layer is shared by both, on one
//! thread.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::task::Poll;

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use tracing::{debug, warn};

use crate::ids::ConnId;
use crate::proto::Input;
use crate::proto::conn::Output;
use crate::transport::layer::{Layer, Received};
use crate::transport::runtime::{
    Core, LINGER_BYTES, READ_CHUNK, ReadDone, finish_writes, release_connection,
    wait_while_throttled,
};

/// The layer and the bytes it has ready for the peer.
struct Link<L> {
    layer: L,
    wire: BytesMut,
}

type Shared<L> = Rc<RefCell<Link<L>>>;

pub(crate) async fn connection<L: Layer + 'static>(
    stream: TcpStream,
    index: ConnId,
    core: Core,
    layer: L,
) {
    let link: Shared<L> = Rc::new(RefCell::new(Link {
        layer,
        wire: BytesMut::new(),
    }));
    let (mut reader, mut writer) = stream.into_split();
    let write_core = core.clone();
    let write_link = link.clone();
    let read_done = Rc::new(ReadDone::default());
    let write_done = read_done.clone();
    let write_task = monoio::spawn(async move {
        let mut spare = BytesMut::new();
        let mut wire = BytesMut::new();
        let mut close_sent = false;
        let mut flushed = true;
        loop {
            let Some((output, closing)) =
                next_step(&write_core, &write_link, index, &mut spare, close_sent).await
            else {
                break;
            };
            {
                let mut l = write_link.borrow_mut();
                let Link {
                    layer,
                    wire: pending,
                } = &mut *l;
                let sent = match output {
                    Some(Output::Frame(frame)) => layer.send(&frame, pending),
                    Some(Output::Buffer(mut buf)) => {
                        let sent = layer.send(&buf, pending);
                        buf.clear();
                        spare = buf;
                        sent
                    }
                    None => Ok(()),
                };
                if let Err(e) = sent {
                    debug!(index = index.raw(), "write failed: {e}");
                    flushed = false;
                    break;
                }
                let drained = write_core
                    .borrow()
                    .conn(index)
                    .is_none_or(|c| c.writable_bytes() == 0);
                if closing && drained && !close_sent {
                    layer.close(write_core.borrow().is_shutting_down(), pending);
                    close_sent = true;
                }
                std::mem::swap(&mut wire, pending);
            }
            if !wire.is_empty() {
                let (res, w) = writer.write_all(wire).await;
                wire = w;
                wire.clear();
                match res {
                    // Counted as they leave the socket (TLS: encrypted; ws: with framing).
                    Ok(n) => write_core.borrow().metrics().bytes_out.add(n as u64),
                    Err(e) => {
                        debug!(index = index.raw(), "write failed: {e}");
                        flushed = false;
                        break;
                    }
                }
            }
        }
        let fd = crate::transport::sys::borrow_fd(&writer);
        finish_writes(fd, flushed, &write_done).await;
    });

    let mut raw = BytesMut::with_capacity(READ_CHUNK);
    let mut mqtt = BytesMut::new();
    let mut certificates_taken = false;
    let mut discarded = 0;
    loop {
        wait_while_throttled(&core, index).await;
        link.borrow().layer.reserve_for_read(&mut raw);
        // Trap: monoio's `IoBufMut for BytesMut` reads from offset 0; read after the bytes
        // already buffered instead.
        let filled = raw.len();
        let (res, slice) = reader.read(raw.slice_mut(filled..)).await;
        raw = slice.into_inner();
        if let Ok(n @ 1..) = res
            && core.borrow().conn(index).is_none_or(|c| c.is_closing())
        {
            // Ended by the server: what the client still sends is discarded (LINGER).
            core.borrow().metrics().bytes_in.add(n as u64);
            raw.clear();
            discarded += n;
            if discarded > LINGER_BYTES {
                break;
            }
            continue;
        }
        let received = match res {
            Ok(0) | Err(_) => Ok(Received::PeerClosed),
            Ok(n) => {
                // Counted as they arrive (TLS: encrypted; ws: with framing).
                core.borrow().metrics().bytes_in.add(n as u64);
                let mut l = link.borrow_mut();
                let Link { layer, wire } = &mut *l;
                layer.receive(&mut raw, &mut mqtt, wire)
            }
        };
        let mut c = core.borrow_mut();
        // The client chain must be in place before the CONNECT that follows the handshake
        // reaches the core (X.509 authentication reads it there).
        if !certificates_taken && let Some(certs) = link.borrow().layer.peer_certificates() {
            certificates_taken = true;
            if let Some(conn) = c.conn_mut(index) {
                conn.peer_certificates = certs;
            }
        }
        if !mqtt.is_empty() {
            let _ = c.handle(Input::Read {
                conn: index,
                bytes: &mut mqtt,
            });
        }
        let stop = match received {
            Ok(Received::PeerClosed) => {
                let _ = c.handle(Input::Closed(index));
                true
            }
            Err(e) => {
                // The layer's goodbye (alert, HTTP status, close frame) is in the wire buffer;
                // input is discarded from here on (LINGER).
                warn!(index = index.raw(), "{e}");
                let _ = c.handle(Input::Closed(index));
                false
            }
            Ok(Received::Open) => false,
        };
        if !link.borrow().wire.is_empty() {
            c.wake_writer(index);
        }
        if stop {
            break;
        }
    }
    read_done.set();
    let _ = write_task.await;
    release_connection(&core, index);
}

/// Waits until the writer has something to do: output from the core, bytes the layer has for
/// the peer (handshake, pongs, alerts, a refusal), or a close to finish. `None` when the
/// connection is done.
fn next_step<'a, L>(
    core: &'a Core,
    link: &'a Shared<L>,
    index: ConnId,
    spare: &'a mut BytesMut,
    close_sent: bool,
) -> impl Future<Output = Option<(Option<Output>, bool)>> + 'a {
    std::future::poll_fn(move |cx| {
        let mut c = core.borrow_mut();
        let Some(conn) = c.conn_mut(index) else {
            // Released: what is left in the wire buffer (a refusal) still goes out.
            return Poll::Ready(if link.borrow().wire.is_empty() {
                None
            } else {
                Some((None, true))
            });
        };
        let closing = conn.is_closing();
        if let Some(output) = conn.take_output(spare) {
            return Poll::Ready(Some((Some(output), closing)));
        }
        if !link.borrow().wire.is_empty() {
            return Poll::Ready(Some((None, closing)));
        }
        if closing {
            return Poll::Ready(if close_sent { None } else { Some((None, true)) });
        }
        if c.park_writer(index, cx.waker()) {
            Poll::Pending
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}
