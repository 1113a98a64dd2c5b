//! The byte pump of an `mqtts` connection: ciphertext from the socket into rustls's sans-IO
//! `ServerConnection`, plaintext from it into the shard core, and the core's output back
//! through rustls to the socket. Same shape as the plain pump in `runtime.rs` (a reader and
//! a writer task); the TLS session is shared by both, on one thread.

use std::cell::RefCell;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, BufMut, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use rustls::ServerConnection;
use tracing::{debug, warn};

use crate::conn::Output;
use crate::runtime::{Core, READ_CHUNK};

type Tls = Rc<RefCell<ServerConnection>>;

/// TLS records are at most 16 KiB plus overhead; read at least one whole record at a time.
const CIPHER_CHUNK: usize = 17 * 1024;

pub(crate) async fn connection(
    stream: TcpStream,
    index: usize,
    core: Core,
    session: ServerConnection,
) {
    let fd = stream.as_raw_fd();
    let tls: Tls = Rc::new(RefCell::new(session));
    let (mut reader, mut writer) = stream.into_split();
    let write_core = core.clone();
    let write_tls = tls.clone();
    let write_task = monoio::spawn(async move {
        let mut wire = BytesMut::new();
        let mut spare = BytesMut::new();
        let mut close_sent = false;
        loop {
            let Some((output, closing)) =
                next_step(&write_core, &write_tls, index, &mut spare, close_sent).await
            else {
                break;
            };
            {
                let mut t = write_tls.borrow_mut();
                let written = match output {
                    Some(Output::Frame(frame)) => t.writer().write_all(&frame),
                    Some(Output::Buffer(mut buf)) => {
                        let r = t.writer().write_all(&buf);
                        buf.clear();
                        spare = buf;
                        r
                    }
                    None => Ok(()),
                };
                if let Err(e) = written {
                    debug!(index, "TLS write failed: {e}");
                    break;
                }
                let drained = write_core
                    .borrow()
                    .conn(index)
                    .is_none_or(|c| c.pending_bytes() == 0);
                if closing && drained && !close_sent {
                    t.send_close_notify();
                    close_sent = true;
                }
                let mut out = (&mut wire).writer();
                while t.wants_write() {
                    if t.write_tls(&mut out).is_err() {
                        break;
                    }
                }
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

    let mut cipher = BytesMut::with_capacity(READ_CHUNK);
    let mut plain = BytesMut::new();
    let mut certificates_taken = false;
    loop {
        crate::runtime::wait_for_mesh_room(&core).await;
        if cipher.capacity() - cipher.len() < READ_CHUNK {
            // Grow towards one full record only when records actually arrive in pieces.
            cipher.reserve(if cipher.is_empty() {
                READ_CHUNK
            } else {
                CIPHER_CHUNK
            });
        }
        let filled = cipher.len();
        let (res, slice) = reader.read(cipher.slice_mut(filled..)).await;
        cipher = slice.into_inner();
        let now = Instant::now();
        let closed_by_peer = match res {
            Ok(0) | Err(_) => true,
            Ok(_) => match feed(&tls, &mut cipher, &mut plain) {
                Ok(peer_closed) => peer_closed,
                Err(e) => {
                    // rustls has queued an alert; the writer sends it, then closes.
                    warn!(index, "TLS error: {e}");
                    let mut c = core.borrow_mut();
                    c.close_conn(index, true, now);
                    c.flush_mesh();
                    break;
                }
            },
        };
        if !certificates_taken && !tls.borrow().is_handshaking() {
            certificates_taken = true;
            let certs: Vec<_> = tls
                .borrow()
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            if let Some(conn) = core.borrow_mut().conn_mut(index) {
                conn.peer_certificates = certs;
            }
        }
        let mut c = core.borrow_mut();
        c.poll_mesh(now, usize::MAX);
        if !plain.is_empty() {
            c.on_read(index, &mut plain, now);
        }
        if closed_by_peer {
            c.on_closed(index, now);
            c.flush_mesh();
            break;
        }
        c.flush_mesh();
        if tls.borrow().wants_write()
            && let Some(conn) = c.conn_mut(index)
        {
            conn.wake_writer();
        }
        if c.conn(index).is_none_or(|conn| conn.is_closing()) {
            break;
        }
    }
    let _ = write_task.await;
    crate::runtime::release_connection(&core, index);
}

/// Feeds received ciphertext to rustls and appends the plaintext it yields. Returns whether
/// the peer sent close_notify.
fn feed(tls: &Tls, cipher: &mut BytesMut, plain: &mut BytesMut) -> Result<bool, rustls::Error> {
    let mut t = tls.borrow_mut();
    let mut input: &[u8] = &cipher[..];
    let mut peer_closed = false;
    while !input.is_empty() {
        match t.read_tls(&mut input) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(rustls::Error::General(e.to_string())),
        }
        let state = t.process_new_packets()?;
        let n = state.plaintext_bytes_to_read();
        if n > 0 {
            let start = plain.len();
            plain.resize(start + n, 0);
            if let Err(e) = t.reader().read_exact(&mut plain[start..]) {
                return Err(rustls::Error::General(e.to_string()));
            }
        }
        peer_closed |= state.peer_has_closed();
    }
    let consumed = cipher.len() - input.len();
    cipher.advance(consumed);
    Ok(peer_closed)
}

/// Waits until the writer has something to do: output from the core, TLS records to send
/// (handshake, alerts), or a close to finish. `None` when the connection is done.
fn next_step<'a>(
    core: &'a Core,
    tls: &'a Tls,
    index: usize,
    spare: &'a mut BytesMut,
    close_sent: bool,
) -> impl Future<Output = Option<(Option<Output>, bool)>> + 'a {
    std::future::poll_fn(move |cx| {
        let mut c = core.borrow_mut();
        let Some(conn) = c.conn_mut(index) else {
            return Poll::Ready(None);
        };
        let closing = conn.is_closing();
        if let Some(output) = conn.take_output(spare) {
            return Poll::Ready(Some((Some(output), closing)));
        }
        if tls.borrow().wants_write() {
            return Poll::Ready(Some((None, closing)));
        }
        if closing {
            return Poll::Ready(if close_sent { None } else { Some((None, true)) });
        }
        conn.writer = Some(cx.waker().clone());
        Poll::Pending
    })
}
