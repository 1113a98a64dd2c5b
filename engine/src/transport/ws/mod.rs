//! WebSocket server transport (RFC 6455) for MQTT over WebSockets (MQTT 5.0 section 6), used by
//! the `ws` and `wss` listeners between the socket (or the TLS plaintext) and the MQTT core.
//!
//! Sans-IO, like the rest of the protocol code: [`WsServer::receive`] takes the bytes read from
//! the peer and appends (a) the unmasked payloads of binary and continuation frames to the MQTT
//! input and (b) whatever must go back to the peer (the HTTP handshake response, pongs, close
//! frames) to the wire output. [`WsServer::send`] wraps the broker's MQTT bytes in binary
//! frames. MQTT does not care about frame boundaries [MQTT-6.0.0-2], so payloads are
//! appended as a byte stream, unmasked as they arrive: a large frame is never buffered whole.
//!
//! What it must never do: panic on peer input, buffer without a limit (the request head is
//! bounded by `max_handshake_size`, control frames by 125 bytes, data frames by
//! `max_frame_size`), or pass anything but binary-frame payload bytes to MQTT.
//!
//! Files: this one holds the state machine the handshake and the frames share ([`WsServer`]);
//! `handshake.rs` parses the HTTP request and writes the responses, `frame.rs` reads and writes
//! frame headers and unmasks payloads.

use std::sync::Arc;

use bytes::{Buf, BytesMut};

mod frame;
mod handshake;

use frame::{parse_header, put_close, put_header, unmask, unmask_into};
pub use handshake::accept_key;
use handshake::{find, parse_request, put_switching_protocols, write_http_error};

/// Payload limit of control frames (RFC 6455 5.5).
const CONTROL_MAX: usize = 125;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Settings of a WebSocket listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// Request path of the endpoint (the query string is ignored), e.g. `/mqtt`.
    pub path: String,
    /// Largest payload of one received frame. Payloads are streamed, so this bounds frames,
    /// not memory; set it to at least the listener's maximum MQTT packet size, since most
    /// clients send one packet per frame.
    pub max_frame_size: usize,
    /// Largest HTTP request head (request line and headers) accepted for the handshake.
    pub max_handshake_size: usize,
}

impl WsConfig {
    pub const DEFAULT_PATH: &'static str = "/mqtt";
    pub const DEFAULT_MAX_FRAME_SIZE: usize = 1024 * 1024;
    pub const DEFAULT_MAX_HANDSHAKE_SIZE: usize = 8 * 1024;
}

impl Default for WsConfig {
    fn default() -> WsConfig {
        WsConfig {
            path: WsConfig::DEFAULT_PATH.to_owned(),
            max_frame_size: WsConfig::DEFAULT_MAX_FRAME_SIZE,
            max_handshake_size: WsConfig::DEFAULT_MAX_HANDSHAKE_SIZE,
        }
    }
}

/// A close status code (RFC 6455 7.4). Printed in decimal, as the RFC lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);

    /// Whether a peer may send this code in a close frame (RFC 6455 7.4.1 and 7.4.2, plus
    /// the registered 1012–1014). 1005, 1006 and 1015 are for APIs only, never the wire.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a [`WsServer::receive`] call amounted to. Whatever the event, hand `mqtt_in` to the
/// core and write `wire_out` to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsEvent {
    /// The HTTP request is incomplete: read more.
    Handshaking,
    /// The handshake completed in this call: the 101 response is in `wire_out` (frames that
    /// followed the request were processed too).
    Open,
    /// Frames were processed (possibly none: a partial frame waits for more bytes).
    Data,
    /// The peer closed (its close frame is echoed in `wire_out` unless we had closed first),
    /// or the connection had already ended. Flush `wire_out`, then close the socket as a
    /// network connection lost without DISCONNECT.
    Closed,
}

/// Why the handshake was refused; the HTTP response with [`HandshakeError::status`] is in
/// `wire_out`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    #[error("request head exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("[RFC 9112] malformed request: {0}")]
    Malformed(&'static str),
    #[error("[RFC 6455 4.1] the method of an opening handshake must be GET")]
    Method,
    #[error("no WebSocket endpoint at this path")]
    NotFound,
    #[error(
        "[RFC 6455 4.2.1] not a WebSocket upgrade (Upgrade: websocket and Connection: Upgrade required)"
    )]
    NotUpgrade,
    #[error("[RFC 6455 4.2.2] unsupported Sec-WebSocket-Version (13 required)")]
    Version,
    #[error("[RFC 6455 4.2.1] Sec-WebSocket-Key must be the base64 of 16 bytes")]
    Key,
    #[error("[MQTT-6.0.0-3] Sec-WebSocket-Protocol must offer mqtt")]
    Subprotocol,
}

impl HandshakeError {
    /// The HTTP status sent to the client.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::TooLarge { .. } => 431,
            HandshakeError::Method => 405,
            HandshakeError::NotFound => 404,
            HandshakeError::Version => 426,
            HandshakeError::Malformed(_)
            | HandshakeError::NotUpgrade
            | HandshakeError::Key
            | HandshakeError::Subprotocol => 400,
        }
    }
}

/// A frame-level protocol violation; a close frame with [`FrameError::close_code`] is in
/// `wire_out`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("[RFC 6455 5.1] a client frame is not masked")]
    Unmasked,
    #[error("[RFC 6455 5.2] reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("[RFC 6455 5.2] reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("[MQTT-6.0.0-1] text frame: MQTT packets travel in binary frames")]
    Text,
    #[error("[RFC 6455 5.5] fragmented control frame")]
    ControlFragmented,
    #[error("[RFC 6455 5.5] control frame payload over 125 bytes")]
    ControlTooLong,
    #[error("[RFC 6455 5.2] 64-bit payload length with the most significant bit set")]
    LengthTopBit,
    #[error("frame payload of {len} bytes exceeds the limit of {limit}")]
    TooLarge { len: u64, limit: usize },
    #[error("[RFC 6455 5.4] continuation frame outside a fragmented message")]
    UnexpectedContinuation,
    #[error("[RFC 6455 5.4] new data frame inside a fragmented message")]
    Interleaved,
    #[error("[RFC 6455 5.5.1] close frame with a 1-byte payload")]
    CloseLength,
    #[error("[RFC 6455 7.4] invalid close code {0}")]
    CloseCode(u16),
    #[error("[RFC 6455 5.5.1] close reason is not UTF-8")]
    CloseReason,
}

impl FrameError {
    /// The status code of the close frame sent to the peer.
    pub fn close_code(&self) -> CloseCode {
        match self {
            FrameError::Text => CloseCode::UNSUPPORTED_DATA,
            FrameError::TooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            FrameError::CloseReason => CloseCode::INVALID_PAYLOAD,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// The connection must end: flush `wire_out` (an HTTP error response or a close frame), then
/// close the socket. Later `receive` calls return [`WsEvent::Closed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    #[error("WebSocket handshake refused with HTTP {status}: {0}", status = .0.status())]
    Handshake(#[from] HandshakeError),
    #[error("WebSocket closed with {code}: {0}", code = .0.close_code())]
    Frame(#[from] FrameError),
}

#[derive(Debug)]
enum State {
    /// Reading the HTTP request; `scanned` bytes of the input hold no end of head.
    Handshake {
        scanned: usize,
    },
    Open,
    /// Close frames exchanged or an error: nothing more is read or sent.
    Closed,
}

/// Where the frame reader stands.
#[derive(Debug)]
enum Reading {
    Header,
    /// Inside the payload of a data frame: `remaining` bytes to go, `phase` = bytes done mod 4.
    Payload {
        remaining: u64,
        mask: [u8; 4],
        phase: usize,
    },
}

/// The WebSocket side of one connection.
#[derive(Debug)]
pub struct WsServer {
    config: Arc<WsConfig>,
    state: State,
    reading: Reading,
    /// A fragmented binary message awaits its continuation frames.
    in_message: bool,
    /// Our close frame is sent: no data frames may follow it (RFC 6455 5.5.1).
    close_sent: bool,
    subprotocol: Option<&'static str>,
    peer_hint: Option<String>,
    peer_close: Option<CloseCode>,
}

impl WsServer {
    pub fn new(config: Arc<WsConfig>) -> WsServer {
        WsServer {
            config,
            state: State::Handshake { scanned: 0 },
            reading: Reading::Header,
            in_message: false,
            close_sent: false,
            subprotocol: None,
            peer_hint: None,
            peer_close: None,
        }
    }

    /// Consumes bytes from `input` (what the peer sent), appending MQTT bytes to `mqtt_in` and
    /// bytes for the peer to `wire_out`. Leaves an incomplete request head or frame header in
    /// `input`. Always hand `mqtt_in` to the core and flush `wire_out`, even on an error.
    pub fn receive(
        &mut self,
        input: &mut BytesMut,
        mqtt_in: &mut BytesMut,
        wire_out: &mut BytesMut,
    ) -> Result<WsEvent, WsError> {
        let opened = match self.state {
            State::Closed => {
                input.clear();
                return Ok(WsEvent::Closed);
            }
            State::Handshake { .. } => match self.handshake(input, wire_out) {
                Ok(false) => return Ok(WsEvent::Handshaking),
                Ok(true) => true,
                Err(e) => {
                    self.state = State::Closed;
                    input.clear();
                    write_http_error(&e, wire_out);
                    return Err(e.into());
                }
            },
            State::Open => false,
        };
        let mut pong = Pong::default();
        let result = self.frames(input, mqtt_in, wire_out, &mut pong);
        pong.flush(wire_out);
        match result {
            Ok(WsEvent::Closed) => Ok(WsEvent::Closed),
            Ok(_) if opened => Ok(WsEvent::Open),
            Ok(event) => Ok(event),
            Err(e) => {
                if !self.close_sent {
                    put_close(wire_out, e.close_code());
                    self.close_sent = true;
                }
                self.state = State::Closed;
                input.clear();
                Err(e.into())
            }
        }
    }

    /// Appends `mqtt_out` to `wire_out` as one binary frame (server frames are not masked).
    /// Nothing is sent before the handshake completes or after a close frame (RFC 6455 5.5.1):
    /// the bytes are dropped, as the connection is ending anyway.
    pub fn send(&mut self, mqtt_out: &[u8], wire_out: &mut BytesMut) {
        if mqtt_out.is_empty() || !self.is_open() || self.close_sent {
            return;
        }
        wire_out.reserve(10 + mqtt_out.len());
        put_header(wire_out, OP_BINARY, mqtt_out.len());
        wire_out.extend_from_slice(mqtt_out);
    }

    /// Whether the handshake completed and the connection has not ended.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// Appends a close frame with `code` (once; nothing before the handshake completes). The
    /// caller then closes the socket after flushing, or waits for the peer's close frame,
    /// which [`WsServer::receive`] reports as [`WsEvent::Closed`].
    pub fn close(&mut self, code: CloseCode, wire_out: &mut BytesMut) {
        if self.is_open() && !self.close_sent {
            put_close(wire_out, code);
            self.close_sent = true;
        }
    }

    /// The subprotocol agreed in the handshake (`mqtt` or `mqttv3.1`).
    pub fn subprotocol(&self) -> Option<&'static str> {
        self.subprotocol
    }

    /// The first `X-Forwarded-For` entry of the request, as sent: for logs only, since any
    /// client can write it.
    pub fn peer_hint(&self) -> Option<&str> {
        self.peer_hint.as_deref()
    }

    /// The status code of the peer's close frame, once received (`None` for an empty one).
    pub fn peer_close_code(&self) -> Option<CloseCode> {
        self.peer_close
    }

    /// Looks for the end of the request head; once found, answers it. `Ok(true)` when open.
    fn handshake(
        &mut self,
        input: &mut BytesMut,
        wire_out: &mut BytesMut,
    ) -> Result<bool, HandshakeError> {
        let State::Handshake { scanned } = &mut self.state else {
            return Ok(true);
        };
        let limit = self.config.max_handshake_size;
        let window = &input[..input.len().min(limit)];
        // Resume the search where the previous call stopped, so byte-by-byte input stays linear.
        let from = scanned.saturating_sub(3).min(window.len());
        let Some(found) = find(&window[from..], b"\r\n\r\n") else {
            if input.len() >= limit {
                return Err(HandshakeError::TooLarge { limit });
            }
            *scanned = input.len();
            return Ok(false);
        };
        let head_len = from + found + 4;
        let request = parse_request(&input[..head_len], &self.config.path)?;
        put_switching_protocols(wire_out, request.key, request.subprotocol);
        self.subprotocol = Some(request.subprotocol);
        self.peer_hint = request.forwarded_for.map(str::to_owned);
        self.state = State::Open;
        input.advance(head_len);
        Ok(true)
    }

    /// Reads frames until `input` runs out, the peer closes, or a violation.
    fn frames(
        &mut self,
        input: &mut BytesMut,
        mqtt_in: &mut BytesMut,
        wire_out: &mut BytesMut,
        pong: &mut Pong,
    ) -> Result<WsEvent, FrameError> {
        loop {
            if let Reading::Payload {
                remaining,
                mask,
                phase,
            } = &mut self.reading
            {
                let n = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                if n == 0 {
                    return Ok(WsEvent::Data);
                }
                // After our close frame the core is done: what the peer still sends is dropped.
                if !self.close_sent {
                    unmask_into(&input[..n], *mask, *phase, mqtt_in);
                }
                input.advance(n);
                *remaining -= n as u64;
                *phase = (*phase + n) % 4;
                if *remaining == 0 {
                    self.reading = Reading::Header;
                }
                continue;
            }
            let Some(h) = parse_header(input)? else {
                return Ok(WsEvent::Data);
            };
            match h.opcode {
                OP_TEXT => return Err(FrameError::Text),
                OP_BINARY | OP_CONTINUATION => {
                    if h.opcode == OP_BINARY && self.in_message {
                        return Err(FrameError::Interleaved);
                    }
                    if h.opcode == OP_CONTINUATION && !self.in_message {
                        return Err(FrameError::UnexpectedContinuation);
                    }
                    let limit = self.config.max_frame_size;
                    if h.len > limit as u64 {
                        return Err(FrameError::TooLarge { len: h.len, limit });
                    }
                    self.in_message = !h.fin;
                    input.advance(h.header_len);
                    if h.len > 0 {
                        // Reserve once for the whole frame (or what of it has arrived).
                        mqtt_in.reserve(
                            usize::try_from(h.len).map_or(input.len(), |l| l.min(input.len())),
                        );
                        self.reading = Reading::Payload {
                            remaining: h.len,
                            mask: h.mask,
                            phase: 0,
                        };
                    }
                }
                _ => {
                    // Control frames are at most 125 bytes: wait until one is whole.
                    let total = h.header_len + h.len as usize;
                    if input.len() < total {
                        return Ok(WsEvent::Data);
                    }
                    let mut payload = [0u8; CONTROL_MAX];
                    let payload = &mut payload[..h.len as usize];
                    payload.copy_from_slice(&input[h.header_len..total]);
                    unmask(payload, h.mask);
                    input.advance(total);
                    if h.opcode == OP_CLOSE {
                        return self.on_close(payload, input, wire_out, pong);
                    }
                    if h.opcode == OP_PING && !self.close_sent {
                        pong.set(payload);
                    }
                    // A pong answers nothing we sent (we send no pings): ignored.
                }
            }
        }
    }

    /// The peer's close frame: echo its code (unless we closed first) and end.
    fn on_close(
        &mut self,
        payload: &[u8],
        input: &mut BytesMut,
        wire_out: &mut BytesMut,
        pong: &mut Pong,
    ) -> Result<WsEvent, FrameError> {
        let code = match payload {
            [] => None,
            [_] => return Err(FrameError::CloseLength),
            [hi, lo, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_valid_on_wire() {
                    return Err(FrameError::CloseCode(code.0));
                }
                if std::str::from_utf8(reason).is_err() {
                    return Err(FrameError::CloseReason);
                }
                Some(code)
            }
        };
        self.peer_close = code;
        if !self.close_sent {
            pong.flush(wire_out);
            match code {
                Some(code) => put_close(wire_out, code),
                None => put_header(wire_out, OP_CLOSE, 0),
            }
            self.close_sent = true;
        }
        self.state = State::Closed;
        // Nothing may follow a close frame (RFC 6455 5.5.1).
        input.clear();
        Ok(WsEvent::Closed)
    }
}

/// The pong for the latest ping of one `receive` call: RFC 6455 5.5.3 allows answering only
/// the most recent, which bounds what a ping flood makes us write.
#[derive(Debug)]
struct Pong {
    payload: [u8; CONTROL_MAX],
    len: Option<usize>,
}

impl Default for Pong {
    fn default() -> Pong {
        Pong {
            payload: [0; CONTROL_MAX],
            len: None,
        }
    }
}

impl Pong {
    fn set(&mut self, payload: &[u8]) {
        let len = payload.len().min(CONTROL_MAX);
        self.payload[..len].copy_from_slice(&payload[..len]);
        self.len = Some(len);
    }

    fn flush(&mut self, wire_out: &mut BytesMut) {
        if let Some(len) = self.len.take() {
            put_header(wire_out, OP_PONG, len);
            wire_out.extend_from_slice(&self.payload[..len]);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn close_codes() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(CloseCode(ok).is_valid_on_wire(), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!CloseCode(bad).is_valid_on_wire(), "{bad}");
        }
    }
}
