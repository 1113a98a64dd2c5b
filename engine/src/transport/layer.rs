//! Transport layers between the socket and the MQTT core, for every listener but plain `mqtt`:
//! TLS (`mqtts`), WebSocket (`ws`) and WebSocket inside TLS (`wss`). Each layer is sans-IO
//! ([`Layer`]): it turns bytes from below into bytes for the layer above and wraps bytes from
//! above for the wire, so layers compose ([`Tls<Ws>`](Tls) is `wss`) and one byte pump
//! (`layer_pump.rs`) serves all three listener kinds.
//!
//! What it must never do: panic on peer input, or lose bytes between layers (whatever a layer
//! must say to the peer, even while refusing it, reaches the wire). The plain `mqtt` pump in
//! `plain_pump.rs` does not go through here: its hot path stays free of any layer.

use std::io::{Read, Write};

use bytes::{Buf, BufMut, BytesMut};
use rustls::ServerConnection;
use rustls_pki_types::CertificateDer;

use crate::transport::runtime::READ_CHUNK;
use crate::transport::ws::{CloseCode, WsError, WsEvent, WsServer};

/// TLS records are at most 16 KiB plus overhead; read at least one whole record at a time.
const CIPHER_CHUNK: usize = 17 * 1024;

/// What a [`Layer::receive`] call amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// The connection goes on (handshake in progress or data processed).
    Open,
    /// The peer ended the connection (TLS close_notify, WebSocket close frame).
    PeerClosed,
}

/// Why a layer ends the connection. Its goodbye (TLS alert, close frame, HTTP refusal) is in
/// the `down` buffer already.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LayerError {
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// Bytes did not pass into or out of the TLS session (rustls' buffers refused them, or
    /// plaintext ended early); the error keeps its kind.
    #[error("TLS I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Ws(#[from] WsError),
}

/// One sans-IO transport layer. `down` is always "towards the peer", `up` "towards MQTT".
pub(crate) trait Layer {
    /// Hands bytes to the layer above without wrapping them: lets [`Tls`] skip a copy when
    /// MQTT sits directly on it.
    const TRANSPARENT: bool = false;

    /// Consumes what the peer sent (`input`; an incomplete record or frame stays in it),
    /// appending the bytes for the layer above to `up` and what must go back to the peer
    /// (handshake, pongs, alerts) to `down`. On an error, still write `down` to the peer.
    fn receive(
        &mut self,
        input: &mut BytesMut,
        up: &mut BytesMut,
        down: &mut BytesMut,
    ) -> Result<Received, LayerError>;

    /// Wraps `data` from the layer above into `down`.
    fn send(&mut self, data: &[u8], down: &mut BytesMut) -> Result<(), LayerError>;

    /// Appends the layer's goodbye to `down` (once; later calls add nothing).
    /// `going_away`: the server is shutting down.
    fn close(&mut self, going_away: bool, down: &mut BytesMut);

    /// The client's certificate chain, leaf first, once the handshake that would carry it
    /// has completed (empty when there is none); `None` before.
    fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        Some(Vec::new())
    }

    /// Makes room in `input` for the next read from the socket.
    fn reserve_for_read(&self, input: &mut BytesMut) {
        if input.capacity() - input.len() < READ_CHUNK / 2 {
            input.reserve(READ_CHUNK);
        }
    }
}

/// MQTT directly on the layer below (`mqtts` is `Tls<Bare>`).
#[derive(Debug, Default)]
pub(crate) struct Bare;

impl Layer for Bare {
    const TRANSPARENT: bool = true;

    fn receive(
        &mut self,
        input: &mut BytesMut,
        up: &mut BytesMut,
        _down: &mut BytesMut,
    ) -> Result<Received, LayerError> {
        if up.is_empty() {
            std::mem::swap(up, input);
        } else {
            up.extend_from_slice(input);
            input.clear();
        }
        Ok(Received::Open)
    }

    fn send(&mut self, data: &[u8], down: &mut BytesMut) -> Result<(), LayerError> {
        down.extend_from_slice(data);
        Ok(())
    }

    fn close(&mut self, _going_away: bool, _down: &mut BytesMut) {}
}

/// WebSocket (RFC 6455, subprotocol `mqtt`, binary frames): see [`WsServer`].
impl Layer for WsServer {
    fn receive(
        &mut self,
        input: &mut BytesMut,
        up: &mut BytesMut,
        down: &mut BytesMut,
    ) -> Result<Received, LayerError> {
        match WsServer::receive(self, input, up, down)? {
            WsEvent::Closed => Ok(Received::PeerClosed),
            WsEvent::Handshaking | WsEvent::Open | WsEvent::Data => Ok(Received::Open),
        }
    }

    fn send(&mut self, data: &[u8], down: &mut BytesMut) -> Result<(), LayerError> {
        WsServer::send(self, data, down);
        Ok(())
    }

    fn close(&mut self, going_away: bool, down: &mut BytesMut) {
        let code = if going_away {
            CloseCode::GOING_AWAY
        } else {
            CloseCode::NORMAL
        };
        WsServer::close(self, code, down);
    }
}

/// TLS (rustls' sans-IO `ServerConnection`) under `inner`.
pub(crate) struct Tls<I> {
    session: ServerConnection,
    inner: I,
    /// Plaintext received and not yet taken by `inner` (unused when `inner` is transparent).
    plain: BytesMut,
    /// What `inner` wants sent, before encryption.
    inner_down: BytesMut,
    close_sent: bool,
}

impl<I> std::fmt::Debug for Tls<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.session.is_handshaking())
            .field("plain", &self.plain.len())
            .finish_non_exhaustive()
    }
}

impl<I: Layer> Tls<I> {
    pub(crate) fn new(mut session: ServerConnection, inner: I) -> Tls<I> {
        // Our own limits bound what is queued; rustls' buffer must not refuse it.
        session.set_buffer_limit(None);
        Tls {
            session,
            inner,
            plain: BytesMut::new(),
            inner_down: BytesMut::new(),
            close_sent: false,
        }
    }

    /// Encrypts what `inner` wrote to `inner_down`.
    fn seal_inner_down(&mut self) -> Result<(), LayerError> {
        if self.inner_down.is_empty() {
            return Ok(());
        }
        let written = self.session.writer().write_all(&self.inner_down);
        self.inner_down.clear();
        written.map_err(LayerError::Io)
    }

    /// Moves the records rustls has ready (handshake, data, alerts) to `down`.
    fn drain(&mut self, down: &mut BytesMut) {
        let mut out = down.writer();
        while self.session.wants_write() {
            // Writing into memory cannot fail.
            if self.session.write_tls(&mut out).is_err() {
                break;
            }
        }
    }
}

impl<I: Layer> Layer for Tls<I> {
    fn receive(
        &mut self,
        input: &mut BytesMut,
        up: &mut BytesMut,
        down: &mut BytesMut,
    ) -> Result<Received, LayerError> {
        let plain = if I::TRANSPARENT {
            &mut *up
        } else {
            &mut self.plain
        };
        let peer_closed = match decrypt(&mut self.session, input, plain) {
            Ok(closed) => closed,
            Err(e) => {
                // rustls has queued an alert for the peer.
                self.drain(down);
                return Err(e);
            }
        };
        let inner = if I::TRANSPARENT {
            Ok(Received::Open)
        } else {
            self.inner
                .receive(&mut self.plain, up, &mut self.inner_down)
        };
        // Whatever `inner` answered (a handshake response, a refusal) goes out even if it
        // failed.
        let sealed = self.seal_inner_down();
        self.drain(down);
        let inner = inner?;
        sealed?;
        Ok(if peer_closed {
            Received::PeerClosed
        } else {
            inner
        })
    }

    fn send(&mut self, data: &[u8], down: &mut BytesMut) -> Result<(), LayerError> {
        if I::TRANSPARENT {
            self.session.writer().write_all(data)?;
        } else {
            self.inner.send(data, &mut self.inner_down)?;
            self.seal_inner_down()?;
        }
        self.drain(down);
        Ok(())
    }

    fn close(&mut self, going_away: bool, down: &mut BytesMut) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        self.inner.close(going_away, &mut self.inner_down);
        // The connection is ending: a failure to seal the inner goodbye changes nothing.
        let _ = self.seal_inner_down();
        self.session.send_close_notify();
        self.drain(down);
    }

    fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        if self.session.is_handshaking() {
            return None;
        }
        Some(
            self.session
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
        )
    }

    fn reserve_for_read(&self, input: &mut BytesMut) {
        if input.capacity() - input.len() < READ_CHUNK {
            // Grow towards one full record only when records actually arrive in pieces.
            input.reserve(if input.is_empty() {
                READ_CHUNK
            } else {
                CIPHER_CHUNK
            });
        }
    }
}

/// Feeds received ciphertext to rustls and appends the plaintext it yields to `plain`.
/// Returns whether the peer sent close_notify.
fn decrypt(
    session: &mut ServerConnection,
    cipher: &mut BytesMut,
    plain: &mut BytesMut,
) -> Result<bool, LayerError> {
    let mut input: &[u8] = &cipher[..];
    let mut peer_closed = false;
    while !input.is_empty() {
        if session.read_tls(&mut input)? == 0 {
            break;
        }
        let state = session.process_new_packets()?;
        let n = state.plaintext_bytes_to_read();
        if n > 0 {
            let start = plain.len();
            plain.resize(start + n, 0);
            session.reader().read_exact(&mut plain[start..])?;
        }
        peer_closed |= state.peer_has_closed();
    }
    let consumed = cipher.len() - input.len();
    cipher.advance(consumed);
    Ok(peer_closed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    use super::*;
    use crate::transport::ws::WsConfig;

    /// A server configuration for `localhost` and a client configuration trusting it, with
    /// a client certificate when `client_cert`.
    fn configs(client_cert: bool) -> (Arc<rustls::ServerConfig>, Arc<ClientConfig>) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let client = rcgen::generate_simple_self_signed(vec!["device-1".into()]).unwrap();
        // One directory per call: tests run in parallel and remove their directory.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "ringmq-layer-{}-{client_cert}-{call}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s.pem"), server.cert.pem()).unwrap();
        std::fs::write(dir.join("s.key"), server.signing_key.serialize_pem()).unwrap();
        let mode = if client_cert {
            crate::config::ClientCertificateMode::Required
        } else {
            crate::config::ClientCertificateMode::None
        };
        let server_config =
            crate::transport::tls::server_config(&dir.join("s.pem"), &dir.join("s.key"), mode)
                .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(server.cert.der().clone()).unwrap();
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let client_config = if client_cert {
            builder
                .with_client_auth_cert(
                    vec![client.cert.der().clone()],
                    PrivateKeyDer::try_from(client.signing_key.serialize_der()).unwrap(),
                )
                .unwrap()
        } else {
            builder.with_no_client_auth()
        };
        (server_config, Arc::new(client_config))
    }

    /// Moves everything the client has to send into `buf`.
    fn client_out(c: &mut ClientConnection, buf: &mut BytesMut) {
        let mut w = buf.writer();
        while c.wants_write() {
            c.write_tls(&mut w).unwrap();
        }
    }

    /// Feeds `wire` to the client and returns the plaintext it yields.
    fn client_in(c: &mut ClientConnection, wire: &mut BytesMut) -> Vec<u8> {
        let mut input: &[u8] = &wire[..];
        while !input.is_empty() {
            c.read_tls(&mut input).unwrap();
            c.process_new_packets().unwrap();
        }
        wire.clear();
        let mut plain = Vec::new();
        match c.reader().read_to_end(&mut plain) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        plain
    }

    /// Runs the TLS handshake between `client` and `server` in memory.
    fn handshake<I: Layer>(client: &mut ClientConnection, server: &mut Tls<I>, up: &mut BytesMut) {
        let mut to_server = BytesMut::new();
        let mut to_client = BytesMut::new();
        for _ in 0..10 {
            client_out(client, &mut to_server);
            server.receive(&mut to_server, up, &mut to_client).unwrap();
            client_in(client, &mut to_client);
            if !client.is_handshaking() && server.peer_certificates().is_some() {
                return;
            }
        }
        panic!("handshake did not complete");
    }

    /// `mqtts`: plaintext crosses both ways, the client chain is seen after the handshake,
    /// close_notify is reported as the peer closing.
    #[test]
    fn tls_bare_round_trip() {
        let (server_config, client_config) = configs(true);
        let mut server = Tls::new(ServerConnection::new(server_config).unwrap(), Bare);
        assert!(server.peer_certificates().is_none());
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client_config, name).unwrap();
        let mut up = BytesMut::new();
        handshake(&mut client, &mut server, &mut up);
        assert_eq!(server.peer_certificates().unwrap().len(), 1);

        client.writer().write_all(b"\x10\x00 connect").unwrap();
        let mut wire = BytesMut::new();
        client_out(&mut client, &mut wire);
        let mut down = BytesMut::new();
        let r = server.receive(&mut wire, &mut up, &mut down).unwrap();
        assert_eq!(r, Received::Open);
        assert_eq!(&up[..], b"\x10\x00 connect");
        assert!(wire.is_empty());

        server.send(b"\x20\x02\x00\x00", &mut down).unwrap();
        assert_eq!(client_in(&mut client, &mut down), b"\x20\x02\x00\x00");

        client.send_close_notify();
        client_out(&mut client, &mut wire);
        let r = server.receive(&mut wire, &mut up, &mut down).unwrap();
        assert_eq!(r, Received::PeerClosed);
    }

    /// `wss`: the WebSocket handshake and frames travel inside TLS; MQTT bytes come out
    /// unmasked, the server's bytes leave as one binary frame, and a close frame ends it.
    #[test]
    fn tls_websocket_round_trip() {
        let (server_config, client_config) = configs(false);
        let ws = WsServer::new(Arc::new(WsConfig::default()));
        let mut server = Tls::new(ServerConnection::new(server_config).unwrap(), ws);
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client_config, name).unwrap();
        let mut up = BytesMut::new();
        handshake(&mut client, &mut server, &mut up);
        assert!(server.peer_certificates().unwrap().is_empty());

        let request = "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";
        // The request, then a masked binary frame with 4 MQTT bytes, in one TLS write.
        let mask = [1u8, 2, 3, 4];
        let payload = *b"\xC0\x00\xC0\x00";
        let mut frame = vec![0x82, 0x80 | 4];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        client.writer().write_all(request.as_bytes()).unwrap();
        client.writer().write_all(&frame).unwrap();
        let mut wire = BytesMut::new();
        client_out(&mut client, &mut wire);
        let mut down = BytesMut::new();
        assert_eq!(
            server.receive(&mut wire, &mut up, &mut down).unwrap(),
            Received::Open
        );
        assert_eq!(&up[..], &payload);
        let response = client_in(&mut client, &mut down);
        let response = String::from_utf8(response).unwrap();
        assert!(response.starts_with("HTTP/1.1 101"), "{response}");
        assert!(
            response.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{response}"
        );

        server.send(b"\xD0\x00", &mut down).unwrap();
        assert_eq!(client_in(&mut client, &mut down), b"\x82\x02\xD0\x00");

        server.close(false, &mut down);
        let goodbye = client_in(&mut client, &mut down);
        assert_eq!(goodbye, b"\x88\x02\x03\xE8", "close frame 1000");
        // A second close adds nothing.
        server.close(false, &mut down);
        assert!(down.is_empty());
    }

    /// A WebSocket refusal inside TLS still reaches the client (encrypted) before the error.
    #[test]
    fn websocket_refusal_is_sent_through_tls() {
        let (server_config, client_config) = configs(false);
        let ws = WsServer::new(Arc::new(WsConfig::default()));
        let mut server = Tls::new(ServerConnection::new(server_config).unwrap(), ws);
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client_config, name).unwrap();
        let mut up = BytesMut::new();
        handshake(&mut client, &mut server, &mut up);
        client
            .writer()
            .write_all(b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut wire = BytesMut::new();
        client_out(&mut client, &mut wire);
        let mut down = BytesMut::new();
        let e = server.receive(&mut wire, &mut up, &mut down).unwrap_err();
        assert!(matches!(e, LayerError::Ws(_)), "{e}");
        let response = String::from_utf8(client_in(&mut client, &mut down)).unwrap();
        assert!(response.starts_with("HTTP/1.1 404"), "{response}");
        assert!(up.is_empty());
    }

    /// Garbage instead of a ClientHello is a TLS error with an alert for the peer.
    #[test]
    fn tls_garbage_is_an_error_with_an_alert() {
        let (server_config, _) = configs(false);
        let mut server = Tls::new(ServerConnection::new(server_config).unwrap(), Bare);
        let mut wire = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        let mut up = BytesMut::new();
        let mut down = BytesMut::new();
        let e = server.receive(&mut wire, &mut up, &mut down).unwrap_err();
        assert!(matches!(e, LayerError::Tls(_)), "{e}");
        assert_eq!(down.first(), Some(&0x15), "an alert record");
        assert!(up.is_empty());
    }
}
