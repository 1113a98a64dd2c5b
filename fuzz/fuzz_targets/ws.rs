//! Arbitrary bytes → `WsServer::receive`, in several reads, with the broker's own `send` and
//! `close` between them. Checks that nothing panics, that nothing is buffered beyond the
//! config's limits (an unfinished request head under `max_handshake_size`, an unfinished
//! frame under the largest control frame), that MQTT bytes and our output stay bounded by
//! the input, that what we write is well-formed, that an error or a close leaves the server
//! closed for good, and that the MQTT bytes and the outcome do not depend on how the input
//! was split into reads.
//!
//! Input layout: byte 0 is a control byte (bits 0–2: number of extra reads, bit 3: small
//! limits, bit 4: prefix a valid upgrade request, bit 5: echo MQTT bytes back with `send`
//! after each read, bit 6: `close` before the last read); then one byte per extra read, the
//! length of that read; the rest is the wire bytes.

#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmq::transport::ws::{CloseCode, WsConfig, WsError, WsEvent, WsServer};

/// A valid opening handshake, for inputs that want to reach the frames directly.
const UPGRADE: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: broker\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

/// The most a receive may leave unconsumed once open: a control frame (at most 125 payload
/// bytes, so a 2-byte length and a 4-byte mask) one byte short of complete. An unfinished
/// data-frame header is at most 13 bytes.
const OPEN_LEFTOVER_MAX: usize = 6 + 125 - 1;
/// What one receive may write on top of pongs: the 101 response or an HTTP refusal, and a
/// close frame. Both responses are under 400 bytes.
const RECEIVE_OUT_MAX: usize = 512;
/// A pong: header and at most 125 payload bytes.
const PONG_MAX: usize = 2 + 125;

struct Run {
    mqtt: BytesMut,
    wire: BytesMut,
    /// The first error (nothing but `Closed` may follow it), or whether the peer closed.
    error: Option<WsError>,
    closed: bool,
    close_called: bool,
    subprotocol: Option<&'static str>,
    peer_close: Option<CloseCode>,
}

fn config(small: bool) -> Arc<WsConfig> {
    Arc::new(if small {
        WsConfig {
            path: WsConfig::DEFAULT_PATH.to_owned(),
            max_frame_size: 16,
            max_handshake_size: UPGRADE.len() + 8,
        }
    } else {
        WsConfig::default()
    })
}

/// Feeds `reads` to a fresh server, checking each step.
fn run(config: &Arc<WsConfig>, reads: &[&[u8]], echo: bool, close_before_last: bool) -> Run {
    let mut ws = WsServer::new(config.clone());
    let mut input = BytesMut::new();
    let mut out = Run {
        mqtt: BytesMut::new(),
        wire: BytesMut::new(),
        error: None,
        closed: false,
        close_called: false,
        subprotocol: None,
        peer_close: None,
    };
    let mut opened = false;
    for (i, read) in reads.iter().enumerate() {
        if close_before_last && i + 1 == reads.len() && i > 0 {
            let before = out.wire.len();
            let was_open = ws.is_open();
            ws.close(CloseCode::GOING_AWAY, &mut out.wire);
            out.close_called |= was_open;
            assert!(out.wire.len() - before <= 4, "close writes one close frame");
            // A second close writes nothing.
            let before = out.wire.len();
            ws.close(CloseCode::NORMAL, &mut out.wire);
            assert_eq!(out.wire.len(), before);
        }
        input.extend_from_slice(read);
        let (in_before, mqtt_before, wire_before) = (input.len(), out.mqtt.len(), out.wire.len());
        let was_closed = out.error.is_some() || out.closed;
        let result = ws.receive(&mut input, &mut out.mqtt, &mut out.wire);
        let consumed = in_before - input.len();
        let mqtt_added = out.mqtt.len() - mqtt_before;
        let wire_added = out.wire.len() - wire_before;
        assert!(mqtt_added <= consumed, "more MQTT bytes than wire bytes");
        assert!(
            wire_added <= RECEIVE_OUT_MAX + PONG_MAX,
            "one receive wrote {wire_added} bytes"
        );
        if was_closed {
            assert_eq!(result, Ok(WsEvent::Closed), "a closed server came back");
            assert!(input.is_empty() && mqtt_added == 0 && wire_added == 0);
        }
        match result {
            Ok(WsEvent::Handshaking) => {
                assert!(!opened && !ws.is_open());
                assert!(input.len() < config.max_handshake_size, "request head over the limit");
                assert!(consumed == 0 && mqtt_added == 0 && wire_added == 0);
            }
            Ok(WsEvent::Open) => {
                assert!(!opened, "opened twice");
                opened = true;
                assert!(ws.is_open());
                assert!(input.len() <= OPEN_LEFTOVER_MAX, "{} bytes left", input.len());
            }
            Ok(WsEvent::Data) => {
                assert!(opened && ws.is_open());
                assert!(input.len() <= OPEN_LEFTOVER_MAX, "{} bytes left", input.len());
            }
            Ok(WsEvent::Closed) => {
                assert!(!ws.is_open() && input.is_empty());
                // The peer's close, not a read after the end.
                out.closed |= !was_closed;
            }
            Err(e) => {
                assert!(!ws.is_open() && input.is_empty(), "open after {e}");
                // A refusal or a close frame, unless our own close went out already.
                assert!(wire_added > 0 || out.close_called, "an error wrote nothing");
                assert!(out.error.is_none() && !out.closed);
                out.error = Some(e);
            }
        }
        if echo {
            // The broker answers with what it received (bounded, as its packets are).
            let reply = out.mqtt[mqtt_before..].to_vec();
            let reply = &reply[..reply.len().min(300)];
            let before = out.wire.len();
            ws.send(reply, &mut out.wire);
            let sent = out.wire.len() - before;
            if ws.is_open() && !out.close_called && !reply.is_empty() {
                assert!(sent > reply.len() && sent <= reply.len() + 10);
            } else {
                assert_eq!(sent, 0, "sent after the end or before the handshake");
            }
        }
    }
    // After the end, nothing more comes out.
    if out.error.is_some() || out.closed {
        let before = out.wire.len();
        ws.send(b"x", &mut out.wire);
        ws.close(CloseCode::NORMAL, &mut out.wire);
        assert_eq!(out.wire.len(), before);
    }
    out.subprotocol = ws.subprotocol();
    out.peer_close = ws.peer_close_code();
    check_wire(&out.wire, opened);
    out
}

/// What we wrote: an HTTP response, then (after a 101) unmasked final frames of the opcodes
/// a server sends, nothing after a close frame.
fn check_wire(wire: &[u8], opened: bool) {
    if wire.is_empty() {
        return;
    }
    let head_end = wire
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response head");
    let head = &wire[..head_end];
    // The handshake may complete in a receive that then fails on a frame: an error, not
    // `Open`, though the 101 went out.
    if !head.starts_with(b"HTTP/1.1 101 ") {
        assert!(!opened && head.starts_with(b"HTTP/1.1 4"), "refusal is a 4xx");
        return;
    }
    let mut frames = &wire[head_end + 4..];
    let mut closed = false;
    while !frames.is_empty() {
        assert!(!closed, "bytes after our close frame");
        let [b0, b1, rest @ ..] = frames else {
            panic!("truncated frame header");
        };
        assert_eq!(b0 & 0xF0, 0x80, "FIN set, no reserved bits");
        assert_eq!(b1 & 0x80, 0, "server frames are not masked");
        let (len, rest) = match b1 & 0x7F {
            126 => (usize::from(u16::from_be_bytes([rest[0], rest[1]])), &rest[2..]),
            127 => {
                let len = u64::from_be_bytes(rest[..8].try_into().unwrap());
                (usize::try_from(len).unwrap(), &rest[8..])
            }
            n => (usize::from(n), rest),
        };
        assert!(len <= rest.len(), "frame longer than what was written");
        match b0 & 0x0F {
            0x2 => assert!(len > 0),
            0x8 => {
                assert!(len == 0 || len == 2);
                closed = true;
            }
            0xA => assert!(len <= 125),
            op => panic!("server sent opcode {op:#x}"),
        }
        frames = &rest[len..];
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let extra_reads = usize::from(ctl & 7);
    if rest.len() < extra_reads {
        return;
    }
    let (lens, wire) = rest.split_at(extra_reads);
    let mut stream = Vec::with_capacity(wire.len() + UPGRADE.len());
    if ctl & 0x10 != 0 {
        stream.extend_from_slice(UPGRADE);
    }
    stream.extend_from_slice(wire);
    let mut reads = Vec::with_capacity(extra_reads + 1);
    let mut left = &stream[..];
    for &len in lens {
        let (read, after) = left.split_at(usize::from(len).min(left.len()));
        reads.push(read);
        left = after;
    }
    reads.push(left);

    let config = config(ctl & 0x08 != 0);
    let whole = run(&config, &[&stream], false, false);
    let split = run(&config, &reads, ctl & 0x20 != 0, ctl & 0x40 != 0);

    // How the bytes were read changes nothing the core or the peer can see, except that our
    // own close stops the MQTT bytes.
    if split.close_called {
        assert!(whole.mqtt.starts_with(&split.mqtt));
    } else {
        assert_eq!(whole.mqtt, split.mqtt, "MQTT bytes depend on the reads");
        assert_eq!(whole.error, split.error);
        assert_eq!(whole.closed, split.closed);
        assert_eq!(whole.peer_close, split.peer_close);
    }
    assert_eq!(whole.subprotocol, split.subprotocol);
    assert!(whole.mqtt.len() <= stream.len());
});
