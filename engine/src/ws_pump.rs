//! The byte pump of a `ws` connection (MQTT over WebSockets, RFC 6455, subprotocol `mqtt`):
//! bytes from the socket go through the sans-IO [`WsServer`] (handshake, unmasking, control
//! frames) into the shard core; the core's output leaves as binary frames. Same shape as the
//! plain pump in `runtime.rs`; the WebSocket state is shared by the reader and the writer.

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use tracing::{debug, warn};

use crate::conn::Output;
use crate::runtime::{Core, READ_CHUNK, release_connection, wait_for_mesh_room};
use crate::ws::{CloseCode, WsConfig, WsEvent, WsServer};

/// The WebSocket state and the frames waiting to be written.
struct Link {
    ws: WsServer,
    wire: BytesMut,
}

type Shared = Rc<RefCell<Link>>;

pub(crate) async fn connection(stream: TcpStream, index: usize, core: Core, config: Arc<WsConfig>) {
    let fd = stream.as_raw_fd();
    let link: Shared = Rc::new(RefCell::new(Link {
        ws: WsServer::new(config),
        wire: BytesMut::new(),
    }));
    let (mut reader, mut writer) = stream.into_split();
    let write_core = core.clone();
    let write_link = link.clone();
    let write_task = monoio::spawn(async move {
        let mut spare = BytesMut::new();
        let mut wire = BytesMut::new();
        let mut close_sent = false;
        loop {
            let Some((output, closing)) =
                next_step(&write_core, &write_link, index, &mut spare, close_sent).await
            else {
                break;
            };
            {
                let mut l = write_link.borrow_mut();
                let Link { ws, wire: pending } = &mut *l;
                match output {
                    Some(Output::Frame(frame)) => ws.send(&frame, pending),
                    Some(Output::Buffer(mut buf)) => {
                        ws.send(&buf, pending);
                        buf.clear();
                        spare = buf;
                    }
                    None => {}
                }
                let drained = write_core
                    .borrow()
                    .conn(index)
                    .is_none_or(|c| c.pending_bytes() == 0);
                if closing && drained && !close_sent {
                    let code = if write_core.borrow().is_shutting_down() {
                        CloseCode::GOING_AWAY
                    } else {
                        CloseCode::NORMAL
                    };
                    ws.close(code, pending);
                    close_sent = true;
                }
                std::mem::swap(&mut wire, pending);
            }
            if !wire.is_empty() {
                let (res, w) = writer.write_all(wire).await;
                wire = w;
                wire.clear();
                if let Err(e) = res {
                    debug!(index, "write failed: {e}");
                    break;
                }
            }
        }
        crate::sys::shutdown_socket(fd);
    });

    let mut raw = BytesMut::with_capacity(READ_CHUNK);
    let mut mqtt = BytesMut::new();
    loop {
        wait_for_mesh_room(&core).await;
        if raw.capacity() - raw.len() < READ_CHUNK / 2 {
            raw.reserve(READ_CHUNK);
        }
        let filled = raw.len();
        let (res, slice) = reader.read(raw.slice_mut(filled..)).await;
        raw = slice.into_inner();
        let now = Instant::now();
        let event = match res {
            Ok(0) | Err(_) => Ok(WsEvent::Closed),
            Ok(_) => {
                let mut l = link.borrow_mut();
                let Link { ws, wire } = &mut *l;
                ws.receive(&mut raw, &mut mqtt, wire)
            }
        };
        let mut c = core.borrow_mut();
        c.poll_mesh(now, usize::MAX);
        if !mqtt.is_empty() {
            c.on_read(index, &mut mqtt, now);
        }
        let stop = match event {
            Ok(WsEvent::Closed) => {
                c.on_closed(index, now);
                true
            }
            Err(e) => {
                // The refusal (HTTP status or close frame) is in the wire buffer already.
                warn!(index, "WebSocket: {e}");
                c.close_conn(index, true, now);
                true
            }
            Ok(_) => false,
        };
        if !link.borrow().wire.is_empty()
            && let Some(conn) = c.conn_mut(index)
        {
            conn.wake_writer();
        }
        c.flush_mesh();
        if stop || c.conn(index).is_none_or(|conn| conn.is_closing()) {
            break;
        }
    }
    let _ = write_task.await;
    release_connection(&core, index);
}

/// Waits until the writer has something to do: output from the core, WebSocket frames or an
/// HTTP response waiting, or a close to finish. `None` when the connection is done.
fn next_step<'a>(
    core: &'a Core,
    link: &'a Shared,
    index: usize,
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
        conn.writer = Some(cx.waker().clone());
        Poll::Pending
    })
}
