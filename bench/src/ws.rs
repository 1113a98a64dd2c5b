//! The client side of MQTT over WebSocket (RFC 6455, MQTT 5.0 section 6): the opening
//! handshake (subprotocol `mqtt`) and binary frames, masked from the client.
//!
//! Why our own framing rather than `tungstenite`: the bench's I/O is monoio's owned-buffer
//! reads and writes, split into a reader task and a writer task, with rustls driven sans-IO
//! underneath ([`crate::transport`]). tungstenite wants a blocking `Read + Write` stream it owns
//! whole; fitting it here would mean a fake stream and a copy per frame on both sides, and
//! one `WebSocket` could not be split between two tasks. The client side of RFC 6455 needed
//! here is small — write one masked binary frame per write, read unmasked frames, answer a
//! ping, stop at a close — and lives below as functions on byte buffers, tested with the RFC's
//! own vectors. SHA-1, random bytes and base64 come from aws-lc-rs and base64, as in the
//! broker's ws layer.
//!
//! What it must never do: panic on what a broker sends. A bad handshake answer or a frame a
//! server must not send (masked, text, reserved bits) is an error that ends the connection.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Buf as _, BufMut as _, BytesMut};

/// The subprotocol MQTT 3.1.1 and 5.0 use [MQTT-6.0.0-4].
pub const SUBPROTOCOL: &str = "mqtt";
/// Appended to the key before hashing (RFC 6455 1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Longest handshake answer read before giving up.
pub const RESPONSE_HEAD_MAX: usize = 8 * 1024;
/// Longest control frame payload (RFC 6455 5.5).
const CONTROL_MAX: u64 = 125;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("WebSocket handshake: {0}")]
    Handshake(String),
    #[error("WebSocket frame from the broker: {0}")]
    Frame(&'static str),
}

impl From<WsError> for std::io::Error {
    fn from(e: WsError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(ACCEPT_GUID);
    BASE64.encode(ctx.finish().as_ref())
}

/// 16 random bytes, base64: a `Sec-WebSocket-Key`.
pub fn new_key() -> String {
    let mut nonce = [0u8; 16];
    // The system generator failing is not something a benchmark can work around; a fixed
    // nonce is still a valid handshake.
    let _ = aws_lc_rs::rand::fill(&mut nonce);
    BASE64.encode(nonce)
}

/// Appends the opening handshake request.
pub fn put_request(out: &mut BytesMut, host: &str, path: &str, key: &str) {
    out.put_slice(b"GET ");
    out.put_slice(path.as_bytes());
    out.put_slice(b" HTTP/1.1\r\nHost: ");
    out.put_slice(host.as_bytes());
    out.put_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    out.put_slice(key.as_bytes());
    out.put_slice(b"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ");
    out.put_slice(SUBPROTOCOL.as_bytes());
    out.put_slice(b"\r\n\r\n");
}

/// Checks the answer to the handshake at the front of `buf`: `Ok(None)` until its head is
/// complete; on success the head is consumed and what follows (frames) stays in `buf`.
pub fn take_response(buf: &mut BytesMut, key: &str) -> Result<Option<()>, WsError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > RESPONSE_HEAD_MAX {
            return Err(WsError::Handshake(format!(
                "no end of the HTTP answer within {RESPONSE_HEAD_MAX} bytes"
            )));
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.advance(end + 4);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        return Err(WsError::Handshake(format!("broker answered {status:?}")));
    }
    let (mut upgrade, mut connection, mut accept, mut protocol) = (false, false, None, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        let has_token = |t: &str| value.split(',').any(|v| v.trim().eq_ignore_ascii_case(t));
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token("websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= has_token("upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            protocol = Some(value.to_string());
        }
    }
    if !upgrade || !connection {
        return Err(WsError::Handshake(
            "101 without Upgrade: websocket and Connection: Upgrade".into(),
        ));
    }
    if accept.as_deref() != Some(accept_key(key).as_str()) {
        return Err(WsError::Handshake(format!(
            "Sec-WebSocket-Accept {accept:?} does not match the key"
        )));
    }
    // [MQTT-6.0.0-4]: the server selects `mqtt`; an answer without it is not MQTT.
    if protocol.as_deref() != Some(SUBPROTOCOL) {
        return Err(WsError::Handshake(format!(
            "Sec-WebSocket-Protocol {protocol:?}, expected \"{SUBPROTOCOL}\""
        )));
    }
    Ok(Some(()))
}

/// Mask keys of one connection: xorshift64 seeded from the system generator.
///
/// RFC 6455 10.3 asks for unpredictable masks so that a client's data cannot steer what an
/// intercepting proxy sees; a load generator talking to the broker directly draws them from a
/// cheap generator seeded once per connection (a call into the system generator per frame
/// would cost more than the frame's other work).
#[derive(Debug, Clone)]
pub struct Masks(u64);

impl Masks {
    pub fn new() -> Masks {
        let mut seed = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut seed);
        // xorshift's state must not be zero.
        Masks(u64::from_le_bytes(seed) | 1)
    }

    fn next_key(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x as u32).to_le_bytes()
    }
}

impl Default for Masks {
    fn default() -> Masks {
        Masks::new()
    }
}

/// Appends one client frame (FIN set) carrying `payload`, masked with `mask`.
pub fn put_frame(out: &mut BytesMut, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    debug_assert!(opcode & 0xF0 == 0);
    out.reserve(payload.len() + 14);
    out.put_u8(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.put_u8(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(0x80 | 126);
        out.put_u16(len);
    } else {
        out.put_u8(0x80 | 127);
        out.put_u64(len as u64);
    }
    out.put_slice(&mask);
    let start = out.len();
    out.put_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// XORs `data` with the repeated 4-byte `mask` (eight bytes at a time).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Largest frame payload the writer sends. A write of a batch of PUBLISHes can be megabytes;
/// brokers bound a frame (ringmq: 1 MiB, closing with 1009 beyond), and MQTT packets may span
/// frames [MQTT-6.0.0-2], so a large write goes out as several binary frames.
pub const FRAME_PAYLOAD_MAX: usize = 64 * 1024;

/// Appends `payload` (an MQTT write) as masked binary frames of at most
/// [`FRAME_PAYLOAD_MAX`] bytes each.
pub fn put_binary(out: &mut BytesMut, payload: &[u8], masks: &mut Masks) {
    if payload.is_empty() {
        return;
    }
    for chunk in payload.chunks(FRAME_PAYLOAD_MAX) {
        put_frame(out, OP_BINARY, chunk, masks.next_key());
    }
}

/// What [`Deframer::decode`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Payload bytes were appended to the output (maybe along with control frames handled).
    Data,
    /// Nothing for the caller yet: read more.
    NeedMore,
    /// The broker sent a close frame: end of stream.
    Closed,
}

/// Reads server frames: the payload of binary frames (and their continuations) is appended to
/// the MQTT read buffer as it arrives, without waiting for a whole frame; a ping is answered
/// through `control_out`; a close ends the stream.
#[derive(Debug, Default)]
pub struct Deframer {
    /// Payload bytes of the current data frame still to come.
    remaining: u64,
    closed: bool,
}

impl Deframer {
    /// Moves what `input` holds into `out` (payload) and `control_out` (pongs to send).
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        control_out: &mut BytesMut,
        masks: &mut Masks,
    ) -> Result<Decoded, WsError> {
        let before = out.len();
        loop {
            if self.closed {
                input.clear();
                return Ok(if out.len() > before {
                    Decoded::Data
                } else {
                    Decoded::Closed
                });
            }
            if self.remaining > 0 {
                if input.is_empty() {
                    break;
                }
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                out.extend_from_slice(&input[..n]);
                input.advance(n);
                self.remaining -= n as u64;
                continue;
            }
            let Some(header) = parse_header(input)? else {
                break;
            };
            match header.opcode {
                OP_BINARY | OP_CONTINUATION => {
                    input.advance(header.header_len);
                    self.remaining = header.len;
                }
                OP_TEXT => return Err(WsError::Frame("text frame (MQTT needs binary frames)")),
                OP_CLOSE | OP_PING | OP_PONG => {
                    let total = header.header_len + header.len as usize;
                    if input.len() < total {
                        break;
                    }
                    let payload = input.split_to(total).split_off(header.header_len);
                    match header.opcode {
                        OP_PING => put_frame(control_out, OP_PONG, &payload, masks.next_key()),
                        OP_CLOSE => {
                            // Echo the status code, as RFC 6455 5.5.1 asks.
                            let code = payload.get(..2).unwrap_or_default();
                            put_frame(control_out, OP_CLOSE, code, masks.next_key());
                            self.closed = true;
                        }
                        _ => {}
                    }
                }
                _ => return Err(WsError::Frame("reserved opcode")),
            }
        }
        Ok(if out.len() > before {
            Decoded::Data
        } else {
            Decoded::NeedMore
        })
    }
}

/// A parsed server frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    opcode: u8,
    len: u64,
    header_len: usize,
}

/// The header at the front of `buf`; `None` until complete.
fn parse_header(buf: &[u8]) -> Result<Option<Header>, WsError> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::Frame("reserved bits set"));
    }
    if b1 & 0x80 != 0 {
        return Err(WsError::Frame(
            "masked (a server must not mask, RFC 6455 5.1)",
        ));
    }
    let opcode = b0 & 0x0F;
    let len7 = b1 & 0x7F;
    let (len, header_len) = match (len7, rest) {
        (126, [a, b, ..]) => (u64::from(u16::from_be_bytes([*a, *b])), 4),
        (126, _) => return Ok(None),
        (127, [a, b, c, d, e, f, g, h, ..]) => {
            (u64::from_be_bytes([*a, *b, *c, *d, *e, *f, *g, *h]), 10)
        }
        (127, _) => return Ok(None),
        (n, _) => (u64::from(n), 2),
    };
    if opcode & 0x8 != 0 && (b0 & 0x80 == 0 || len > CONTROL_MAX) {
        return Err(WsError::Frame("fragmented or oversized control frame"));
    }
    Ok(Some(Header {
        opcode,
        len,
        header_len,
    }))
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    /// RFC 6455 1.3's example key and answer.
    #[test]
    fn accept_key_of_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(BASE64.decode(new_key()).map(|k| k.len()).unwrap_or(0), 16);
    }

    /// RFC 6455 5.7: a masked "Hello" and an unmasked one.
    #[test]
    fn frames_of_the_rfc_examples() {
        let mut out = BytesMut::new();
        put_frame(&mut out, 0x1, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(&out[..], &hex("818537fa213d7f9f4d5158")[..]);
        // Extended lengths: 256 bytes (16-bit) and 65 536 bytes (64-bit), masked.
        let mut out = BytesMut::new();
        put_binary(&mut out, &[0u8; 256], &mut Masks::new());
        assert_eq!(&out[..4], &hex("82fe0100")[..]);
        assert_eq!(out.len(), 4 + 4 + 256);
        let mut out = BytesMut::new();
        put_frame(&mut out, OP_BINARY, &vec![0u8; 65_536], [0; 4]);
        assert_eq!(&out[..10], &hex("82ff0000000000010000")[..]);
        // A write larger than a frame may carry goes out as several whole binary frames.
        let mut out = BytesMut::new();
        put_binary(
            &mut out,
            &vec![7u8; FRAME_PAYLOAD_MAX + 10],
            &mut Masks::new(),
        );
        assert_eq!(&out[..10], &hex("82ff0000000000010000")[..]);
        let second = 10 + 4 + FRAME_PAYLOAD_MAX;
        assert_eq!(&out[second..second + 2], &hex("828a")[..]);
        assert_eq!(out.len(), second + 2 + 4 + 10);
    }

    #[test]
    fn masking_is_its_own_inverse_at_every_length() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut masked = data.clone();
            apply_mask(&mut masked, [1, 2, 3, 4]);
            if len > 0 {
                assert_ne!(masked, data);
            }
            for (i, (m, d)) in masked.iter().zip(&data).enumerate() {
                assert_eq!(m ^ d, [1, 2, 3, 4][i % 4]);
            }
            apply_mask(&mut masked, [1, 2, 3, 4]);
            assert_eq!(masked, data);
        }
    }

    fn decode_all(
        d: &mut Deframer,
        input: &mut BytesMut,
    ) -> (Result<Decoded, WsError>, BytesMut, BytesMut) {
        let (mut out, mut control) = (BytesMut::new(), BytesMut::new());
        let r = d.decode(input, &mut out, &mut control, &mut Masks::new());
        (r, out, control)
    }

    /// Payload is handed out byte by byte as it arrives, across frames and continuations.
    #[test]
    fn data_frames_stream_out_in_pieces() {
        // "\x20\x03" in a binary frame without FIN, "\x00\x00\x00" in its continuation.
        let wire = hex(
            "0202200380030000", /* second frame: FIN, continuation, 3 bytes */
        );
        let mut wire = wire;
        wire.push(0x00);
        let mut d = Deframer::default();
        let mut got = Vec::new();
        let mut input = BytesMut::new();
        for byte in wire {
            input.extend_from_slice(&[byte]);
            let (r, out, control) = decode_all(&mut d, &mut input);
            assert!(matches!(r, Ok(Decoded::Data | Decoded::NeedMore)), "{r:?}");
            assert!(control.is_empty());
            // A payload byte goes out the moment it arrives.
            assert_eq!(r == Ok(Decoded::Data), !out.is_empty());
            got.extend_from_slice(&out);
        }
        assert!(input.is_empty());
        assert_eq!(got, hex("2003000000"));
    }

    #[test]
    fn ping_is_answered_and_close_ends_the_stream() {
        let mut input = BytesMut::from(&hex("8902686982021234")[..]);
        input.extend_from_slice(&hex("880203e8"));
        input.extend_from_slice(&hex("820101"));
        let mut d = Deframer::default();
        let (r, out, control) = decode_all(&mut d, &mut input);
        // The data before the close is handed out; the close is seen on the next call.
        assert_eq!(r, Ok(Decoded::Data));
        assert_eq!(&out[..], &hex("1234")[..]);
        // A masked pong carrying "hi", then the echoed close code.
        assert_eq!(&control[..2], &hex("8a82")[..]);
        let mut pong = control[6..8].to_vec();
        apply_mask(&mut pong, [control[2], control[3], control[4], control[5]]);
        assert_eq!(pong, b"hi");
        assert_eq!(&control[8..10], &hex("8882")[..]);
        assert!(input.is_empty());
        let (r, out, _) = decode_all(&mut d, &mut BytesMut::new());
        assert_eq!(r, Ok(Decoded::Closed));
        assert!(out.is_empty());
    }

    #[test]
    fn frames_a_server_must_not_send_are_errors() {
        for (wire, what) in [
            ("8281ff", "masked"),
            ("8100", "text"),
            ("c200", "reserved bits"),
            ("8300", "reserved opcode"),
            ("0900", "fragmented or oversized control"),
            ("897e0080", "fragmented or oversized control"),
        ] {
            let mut input = BytesMut::from(&hex(wire)[..]);
            let (r, _, _) = decode_all(&mut Deframer::default(), &mut input);
            match r {
                Err(e) => assert!(e.to_string().contains(what), "{wire}: {e}"),
                Ok(d) => panic!("{wire} should fail, got {d:?}"),
            }
        }
    }

    #[test]
    fn handshake_answer_is_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";
        let mut buf = BytesMut::from(&good.as_bytes()[..good.len() - 1]);
        assert_eq!(take_response(&mut buf, key), Ok(None));
        buf.extend_from_slice(b"\n\x82\x00");
        assert_eq!(take_response(&mut buf, key), Ok(Some(())));
        assert_eq!(&buf[..], b"\x82\x00", "frames after the head stay");
        for (bad, want) in [
            (
                good.replace("101 Switching Protocols", "404 Not Found"),
                "404",
            ),
            (
                good.replace("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "AAAA"),
                "does not match",
            ),
            (
                good.replace("Protocol: mqtt", "Protocol: other"),
                "expected",
            ),
            (
                good.replace("Upgrade: websocket\r\n", ""),
                "without Upgrade",
            ),
        ] {
            match take_response(&mut BytesMut::from(bad.as_bytes()), key) {
                Err(e) => assert!(e.to_string().contains(want), "{e}"),
                Ok(r) => panic!("{bad:?} should fail, got {r:?}"),
            }
        }
        let mut endless = BytesMut::from(&vec![b'x'; RESPONSE_HEAD_MAX + 1][..]);
        assert!(take_response(&mut endless, key).is_err());
    }

    #[test]
    fn request_has_the_mqtt_subprotocol() {
        let mut out = BytesMut::new();
        put_request(&mut out, "127.0.0.1:8080", "/mqtt", "k==");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        assert!(text.contains("Sec-WebSocket-Key: k==\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
