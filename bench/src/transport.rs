//! The byte stream under an MQTT client: plain TCP, or TLS through rustls's sans-IO
//! `ClientConnection` driven by the client's own monoio reads and writes.
//!
//! A TLS connection keeps the shape of a plain one: the same tasks, the same buffers handed to
//! the same reads and writes, on the same thread. Ciphertext read from the socket goes into
//! `cipher_in` and rustls decrypts it into the caller's `BytesMut`; plaintext written is
//! encrypted into `cipher_out` and written with one `write_all`. After `into_split` the read
//! and write halves share the `ClientConnection` through an `Rc<RefCell<_>>` (one thread; never
//! borrowed across an await).
//!
//! `ws://` and `wss://` add a WebSocket layer ([`crate::ws`]) on top of either: each write is
//! one masked binary frame, reads unwrap frames into the same MQTT buffer.
//!
//! What rustls wants to send after the handshake on its own (a KeyUpdate answer) goes out with
//! the connection's next write: nothing in TLS 1.3 needs it sooner, and every writer pings at
//! least every half keep alive.

use core::cell::RefCell;
use std::io::{self, BufRead as _, Write as _};
use std::rc::Rc;

use bytes::{Buf as _, BufMut as _, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use rustls::ClientConnection;

use crate::client::read_more;
use crate::ws::{self, Decoded, Deframer, Masks, WsError};

/// A connected byte stream (TCP or TLS), before it is split into a reader and a writer task.
#[derive(Debug)]
pub enum RawStream {
    Plain(TcpStream),
    Tls(TlsStream),
}

#[derive(Debug)]
pub struct TlsStream {
    tcp: TcpStream,
    tls: Rc<RefCell<ClientConnection>>,
    cipher_in: BytesMut,
    cipher_out: BytesMut,
}

/// Why a TLS connection could not be set up or carried on.
#[derive(Debug, thiserror::Error)]
pub enum TlsIoError {
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    #[error("broker closed the connection during the TLS handshake")]
    ClosedInHandshake,
    #[error("i/o during the TLS handshake: {0}")]
    Io(#[from] io::Error),
}

/// A rustls error as an `io::Error` (for the read and write paths), recoverable with
/// [`tls_error`].
fn io_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

/// The rustls error an `io::Error` of this module carries, if it carries one.
pub fn tls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// What [`decrypt`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decrypted {
    /// Plaintext was appended to the output.
    Data,
    /// Nothing to hand out yet: read more ciphertext.
    NeedMore,
    /// The broker closed the TLS session (close_notify) and everything before it was read.
    Closed,
}

/// Hands ciphertext from `cipher_in` to rustls and appends what it decrypts to `out`.
fn decrypt(
    tls: &mut ClientConnection,
    cipher_in: &mut BytesMut,
    out: &mut BytesMut,
) -> io::Result<Decrypted> {
    let before = out.len();
    loop {
        // Drain first: rustls refuses more ciphertext while 16 KiB of plaintext wait.
        loop {
            let mut reader = tls.reader();
            let n = match reader.fill_buf() {
                Ok([]) if out.len() > before => return Ok(Decrypted::Data),
                Ok([]) => return Ok(Decrypted::Closed),
                Ok(chunk) => {
                    out.extend_from_slice(chunk);
                    chunk.len()
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            reader.consume(n);
        }
        if cipher_in.is_empty() {
            break;
        }
        let n = tls.read_tls(&mut &cipher_in[..])?;
        if n == 0 {
            // After close_notify rustls takes nothing more; what follows is discarded.
            cipher_in.clear();
        }
        cipher_in.advance(n);
        tls.process_new_packets().map_err(io_error)?;
    }
    Ok(if out.len() > before {
        Decrypted::Data
    } else {
        Decrypted::NeedMore
    })
}

/// Moves what rustls wants to send into `cipher_out`.
fn collect_output(tls: &mut ClientConnection, cipher_out: &mut BytesMut) -> io::Result<()> {
    let mut sink = cipher_out.writer();
    while tls.wants_write() {
        tls.write_tls(&mut sink)?;
    }
    Ok(())
}

/// Encrypts `plain` (and anything rustls still had to send) into `cipher_out`.
fn encrypt(tls: &mut ClientConnection, plain: &[u8], cipher_out: &mut BytesMut) -> io::Result<()> {
    // The buffer limit is off (see `TlsStream::new`), so rustls takes everything at once.
    tls.writer().write_all(plain)?;
    collect_output(tls, cipher_out)
}

/// Writes all of `buf` and leaves it empty (allocation kept for the next write).
async fn write_raw<W: AsyncWriteRentExt>(stream: &mut W, buf: &mut BytesMut) -> io::Result<()> {
    let owned = std::mem::take(buf);
    let (res, mut owned) = stream.write_all(owned).await;
    owned.clear();
    *buf = owned;
    res.map(|_| ())
}

/// Reads ciphertext until rustls decrypts something or the stream ends.
async fn read_decrypted<R: AsyncReadRent>(
    tcp: &mut R,
    tls: &RefCell<ClientConnection>,
    cipher_in: &mut BytesMut,
    out: &mut BytesMut,
) -> io::Result<usize> {
    let before = out.len();
    loop {
        match decrypt(&mut tls.borrow_mut(), cipher_in, out)? {
            Decrypted::Data => return Ok(out.len() - before),
            Decrypted::Closed => return Ok(0),
            Decrypted::NeedMore => {}
        }
        if read_more(tcp, cipher_in).await? == 0 {
            // TCP closed without close_notify: for MQTT, whose packets are framed, the same
            // as a clean close.
            return Ok(0);
        }
    }
}

impl TlsStream {
    pub fn new(tcp: TcpStream, mut tls: ClientConnection) -> TlsStream {
        // The writers bound what they write at once (a batch of PUBLISHes), so rustls need not.
        tls.set_buffer_limit(None);
        TlsStream {
            tcp,
            tls: Rc::new(RefCell::new(tls)),
            cipher_in: BytesMut::with_capacity(4096),
            cipher_out: BytesMut::with_capacity(4096),
        }
    }

    /// Runs the handshake up to the point where the client may send application data. The
    /// client's last flight stays queued and goes out with the first write (CONNECT), so the
    /// handshake costs no extra round trip or write.
    ///
    /// With TLS 1.3 a broker that refuses the client's certificate says so after this returns:
    /// its alert arrives in place of the CONNACK and fails that read.
    pub async fn handshake(&mut self) -> Result<(), TlsIoError> {
        loop {
            if !self.tls.borrow().is_handshaking() {
                return Ok(());
            }
            collect_output(&mut self.tls.borrow_mut(), &mut self.cipher_out)?;
            if !self.cipher_out.is_empty() {
                write_raw(&mut self.tcp, &mut self.cipher_out).await?;
            }
            if read_more(&mut self.tcp, &mut self.cipher_in).await? == 0 {
                return Err(TlsIoError::ClosedInHandshake);
            }
            let mut tls = self.tls.borrow_mut();
            while !self.cipher_in.is_empty() && tls.wants_read() {
                let n = tls.read_tls(&mut &self.cipher_in[..])?;
                self.cipher_in.advance(n);
                tls.process_new_packets()?;
                if n == 0 {
                    break;
                }
            }
        }
    }
}

impl RawStream {
    /// Reads more (decrypted) bytes into `buf`; `Ok(0)` is end of stream.
    pub async fn read_more(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            RawStream::Plain(tcp) => read_more(tcp, buf).await,
            RawStream::Tls(s) => read_decrypted(&mut s.tcp, &s.tls, &mut s.cipher_in, buf).await,
        }
    }

    /// Writes all of `buf` (encrypted with TLS) and leaves it empty.
    pub async fn write_all(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        match self {
            RawStream::Plain(tcp) => write_raw(tcp, buf).await,
            RawStream::Tls(s) => {
                let encrypted = encrypt(&mut s.tls.borrow_mut(), &buf[..], &mut s.cipher_out);
                buf.clear();
                encrypted?;
                write_raw(&mut s.tcp, &mut s.cipher_out).await
            }
        }
    }

    /// Splits the stream for a reader task and a writer task.
    fn into_split(self) -> (RawRead, RawWrite) {
        match self {
            RawStream::Plain(tcp) => {
                let (r, w) = tcp.into_split();
                (RawRead::Plain(r), RawWrite::Plain(w))
            }
            RawStream::Tls(s) => {
                let (r, w) = s.tcp.into_split();
                (
                    RawRead::Tls {
                        tcp: r,
                        tls: s.tls.clone(),
                        cipher_in: s.cipher_in,
                    },
                    RawWrite::Tls {
                        tcp: w,
                        tls: s.tls,
                        cipher_out: s.cipher_out,
                    },
                )
            }
        }
    }
}

/// The reading half of a [`RawStream`].
#[derive(Debug)]
pub enum RawRead {
    Plain(OwnedReadHalf<TcpStream>),
    Tls {
        tcp: OwnedReadHalf<TcpStream>,
        tls: Rc<RefCell<ClientConnection>>,
        cipher_in: BytesMut,
    },
}

impl RawRead {
    /// Reads more (decrypted) bytes into `buf`; `Ok(0)` is end of stream.
    pub async fn read_more(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            RawRead::Plain(tcp) => read_more(tcp, buf).await,
            RawRead::Tls {
                tcp,
                tls,
                cipher_in,
            } => read_decrypted(tcp, tls, cipher_in, buf).await,
        }
    }
}

/// The writing half of a [`RawStream`]. Dropping it shuts the socket's sending side down.
#[derive(Debug)]
pub enum RawWrite {
    Plain(OwnedWriteHalf<TcpStream>),
    Tls {
        tcp: OwnedWriteHalf<TcpStream>,
        tls: Rc<RefCell<ClientConnection>>,
        cipher_out: BytesMut,
    },
}

impl RawWrite {
    /// Writes all of `buf` (encrypted with TLS) and leaves it empty.
    pub async fn write_all(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        match self {
            RawWrite::Plain(tcp) => write_raw(tcp, buf).await,
            RawWrite::Tls {
                tcp,
                tls,
                cipher_out,
            } => {
                let encrypted = encrypt(&mut tls.borrow_mut(), &buf[..], cipher_out);
                buf.clear();
                encrypted?;
                write_raw(tcp, cipher_out).await
            }
        }
    }
}

/// The WebSocket layer's state both halves share: control frames the reader owes (a pong, the
/// close echo), sent before the writer's next frame, and the mask generator.
#[derive(Debug, Default)]
struct WsShared {
    control_out: BytesMut,
    masks: Masks,
}

/// The reading side of the WebSocket layer.
#[derive(Debug)]
struct WsRead {
    deframer: Deframer,
    /// Frame bytes read but not yet unwrapped.
    frames_in: BytesMut,
    shared: Rc<RefCell<WsShared>>,
}

/// The writing side of the WebSocket layer.
#[derive(Debug)]
struct WsWrite {
    frame_out: BytesMut,
    shared: Rc<RefCell<WsShared>>,
}

/// Something [`ws_read`] can read frame bytes from.
trait ReadBytes {
    async fn read_bytes(&mut self, buf: &mut BytesMut) -> io::Result<usize>;
}

impl ReadBytes for RawStream {
    async fn read_bytes(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.read_more(buf).await
    }
}

impl ReadBytes for RawRead {
    async fn read_bytes(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.read_more(buf).await
    }
}

/// Reads frames until some MQTT bytes are unwrapped into `buf`; `Ok(0)` at a close frame or
/// the end of the stream.
async fn ws_read(
    raw: &mut impl ReadBytes,
    ws: &mut WsRead,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    let before = buf.len();
    loop {
        let decoded = {
            let mut shared = ws.shared.borrow_mut();
            let WsShared { control_out, masks } = &mut *shared;
            ws.deframer
                .decode(&mut ws.frames_in, buf, control_out, masks)?
        };
        match decoded {
            Decoded::Data => return Ok(buf.len() - before),
            Decoded::Closed => return Ok(0),
            Decoded::NeedMore => {}
        }
        if raw.read_bytes(&mut ws.frames_in).await? == 0 {
            return Ok(0);
        }
    }
}

/// Wraps `buf` in one masked binary frame (after any control frame owed) into `frame_out`,
/// and leaves `buf` empty.
fn ws_frame(ws: &mut WsWrite, buf: &mut BytesMut) {
    ws.frame_out.clear();
    let mut shared = ws.shared.borrow_mut();
    if !shared.control_out.is_empty() {
        ws.frame_out.extend_from_slice(&shared.control_out);
        shared.control_out.clear();
    }
    ws::put_binary(&mut ws.frame_out, buf, &mut shared.masks);
    buf.clear();
}

/// A connected stream: TCP or TLS, with MQTT over WebSocket on top for `ws://` and `wss://`.
#[derive(Debug)]
pub struct Stream {
    raw: RawStream,
    ws: Option<(WsRead, WsWrite)>,
}

impl Stream {
    pub fn new(raw: RawStream) -> Stream {
        Stream { raw, ws: None }
    }

    /// Runs the WebSocket opening handshake (`GET path`, subprotocol `mqtt`) over the
    /// connection; from then on every write is one binary frame.
    pub async fn upgrade_ws(&mut self, host: &str, path: &str) -> io::Result<()> {
        let key = ws::new_key();
        let mut out = BytesMut::with_capacity(256);
        ws::put_request(&mut out, host, path, &key);
        self.raw.write_all(&mut out).await?;
        let mut frames_in = BytesMut::with_capacity(1024);
        loop {
            if ws::take_response(&mut frames_in, &key)?.is_some() {
                break;
            }
            if self.raw.read_more(&mut frames_in).await? == 0 {
                return Err(io::Error::from(WsError::Handshake(
                    "broker closed the connection before answering".into(),
                )));
            }
        }
        let shared = Rc::new(RefCell::new(WsShared::default()));
        self.ws = Some((
            WsRead {
                deframer: Deframer::default(),
                frames_in,
                shared: shared.clone(),
            },
            WsWrite {
                frame_out: BytesMut::with_capacity(4096),
                shared,
            },
        ));
        Ok(())
    }

    /// Reads more (decrypted, unframed) bytes into `buf`; `Ok(0)` is end of stream.
    pub async fn read_more(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match &mut self.ws {
            None => self.raw.read_more(buf).await,
            Some((ws, _)) => ws_read(&mut self.raw, ws, buf).await,
        }
    }

    /// Writes all of `buf` (framed, encrypted) and leaves it empty.
    pub async fn write_all(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        match &mut self.ws {
            None => self.raw.write_all(buf).await,
            Some((_, ws)) => {
                ws_frame(ws, buf);
                self.raw.write_all(&mut ws.frame_out).await
            }
        }
    }

    /// Splits the stream for a reader task and a writer task.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        let (raw_read, raw_write) = self.raw.into_split();
        let (ws_read, ws_write) = match self.ws {
            Some((r, w)) => (Some(r), Some(w)),
            None => (None, None),
        };
        (
            ReadHalf {
                raw: raw_read,
                ws: ws_read,
            },
            WriteHalf {
                raw: raw_write,
                ws: ws_write,
            },
        )
    }
}

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub struct ReadHalf {
    raw: RawRead,
    ws: Option<WsRead>,
}

impl ReadHalf {
    /// Reads more (decrypted, unframed) bytes into `buf`; `Ok(0)` is end of stream.
    pub async fn read_more(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match &mut self.ws {
            None => self.raw.read_more(buf).await,
            Some(ws) => ws_read(&mut self.raw, ws, buf).await,
        }
    }
}

/// The writing half of a [`Stream`]. Dropping it shuts the socket's sending side down.
#[derive(Debug)]
pub struct WriteHalf {
    raw: RawWrite,
    ws: Option<WsWrite>,
}

impl WriteHalf {
    /// Writes all of `buf` (framed, encrypted) and leaves it empty.
    pub async fn write_all(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        match &mut self.ws {
            None => self.raw.write_all(buf).await,
            Some(ws) => {
                ws_frame(ws, buf);
                self.raw.write_all(&mut ws.frame_out).await
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    //! The sans-IO core against a rustls server in memory: no sockets, deterministic.
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, RootCertStore, ServerConfig, ServerConnection};

    use super::*;

    fn ok<T, E: core::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn pair() -> (ClientConnection, ServerConnection) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = ok(rcgen::KeyPair::generate());
        let cert =
            ok(ok(rcgen::CertificateParams::new(vec!["localhost".to_string()])).self_signed(&key));
        let der: CertificateDer<'static> = cert.der().clone();
        let server = ok(ok(ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions())
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ));
        let mut roots = RootCertStore::empty();
        ok(roots.add(der));
        let client =
            ok(ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions())
                .with_root_certificates(roots)
                .with_no_client_auth();
        let name = ok(ServerName::try_from("localhost"));
        (
            ok(ClientConnection::new(Arc::new(client), name)),
            ok(ServerConnection::new(Arc::new(server))),
        )
    }

    /// Everything `server` wants to send, as the client's ciphertext input.
    fn server_output(server: &mut ServerConnection, cipher_in: &mut BytesMut) {
        let mut sink = cipher_in.writer();
        while server.wants_write() {
            ok(server.write_tls(&mut sink));
        }
    }

    /// Feeds `cipher` to the server and returns the plaintext it decrypted.
    fn server_input(server: &mut ServerConnection, cipher: &mut BytesMut) -> Vec<u8> {
        let mut plain = Vec::new();
        while !cipher.is_empty() {
            let n = ok(server.read_tls(&mut &cipher[..]));
            cipher.advance(n);
            ok(server.process_new_packets());
            let _ = std::io::Read::read_to_end(&mut server.reader(), &mut plain);
        }
        plain
    }

    fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) {
        let (mut cipher_in, mut cipher_out, mut out) =
            (BytesMut::new(), BytesMut::new(), BytesMut::new());
        for _ in 0..10 {
            ok(collect_output(client, &mut cipher_out));
            server_input(server, &mut cipher_out);
            server_output(server, &mut cipher_in);
            ok(decrypt(client, &mut cipher_in, &mut out));
            if !client.is_handshaking() && !server.is_handshaking() {
                assert!(out.is_empty());
                return;
            }
        }
        panic!("no handshake after 10 round trips");
    }

    #[test]
    fn decrypt_hands_out_more_than_rustls_buffers_then_sees_close_notify() {
        let (mut client, mut server) = pair();
        server.set_buffer_limit(None);
        handshake(&mut client, &mut server);
        // 100 000 bytes: seven records, more than rustls keeps as plaintext (16 KiB) at once.
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        ok(server.writer().write_all(&sent));
        server.send_close_notify();
        let mut cipher_in = BytesMut::new();
        server_output(&mut server, &mut cipher_in);
        let mut out = BytesMut::new();
        assert_eq!(
            ok(decrypt(&mut client, &mut cipher_in, &mut out)),
            Decrypted::Data
        );
        assert!(cipher_in.is_empty());
        assert_eq!(&out[..], &sent[..]);
        assert_eq!(
            ok(decrypt(&mut client, &mut cipher_in, &mut out)),
            Decrypted::Closed
        );
    }

    #[test]
    fn a_record_split_across_reads_waits_for_the_rest() {
        let (mut client, mut server) = pair();
        handshake(&mut client, &mut server);
        ok(server.writer().write_all(b"\x20\x03\x00\x00\x00"));
        let mut all = BytesMut::new();
        server_output(&mut server, &mut all);
        let mut cipher_in = all.split_to(all.len() / 2);
        let mut out = BytesMut::new();
        assert_eq!(
            ok(decrypt(&mut client, &mut cipher_in, &mut out)),
            Decrypted::NeedMore
        );
        cipher_in.extend_from_slice(&all);
        assert_eq!(
            ok(decrypt(&mut client, &mut cipher_in, &mut out)),
            Decrypted::Data
        );
        assert_eq!(&out[..], b"\x20\x03\x00\x00\x00");
    }

    #[test]
    fn encrypted_writes_arrive_whole_and_bad_records_are_tls_errors() {
        let (mut client, mut server) = pair();
        client.set_buffer_limit(None);
        handshake(&mut client, &mut server);
        let sent = vec![0x5A_u8; 70_000];
        let mut cipher_out = BytesMut::new();
        ok(encrypt(&mut client, &sent, &mut cipher_out));
        assert_eq!(server_input(&mut server, &mut cipher_out), sent);

        // A corrupted record: the error carries rustls's, so it is counted as a TLS failure.
        ok(server.writer().write_all(b"hello"));
        let mut cipher_in = BytesMut::new();
        server_output(&mut server, &mut cipher_in);
        let last = cipher_in.len() - 1;
        cipher_in[last] ^= 0xFF;
        let Err(err) = decrypt(&mut client, &mut cipher_in, &mut BytesMut::new()) else {
            panic!("a corrupted record must not decrypt")
        };
        assert!(tls_error(&err).is_some(), "{err}");
    }
}
