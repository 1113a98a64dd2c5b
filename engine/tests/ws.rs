//! MQTT over WebSockets: the sans-IO `ws` transport driven by hand-made client bytes (RFC 6455
//! handshakes and frames, hex vectors from the RFC where it has them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ringmq::transport::ws::*;
use ringmq_codec::{
    Connect, ConnectProperties, Limits, Packet, ProtocolVersion, QoS, Str, Will, WillProperties,
};

const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn config() -> Arc<WsConfig> {
    Arc::new(WsConfig::default())
}

/// The RFC 6455 1.2 example request, aimed at `/mqtt` with the MQTT subprotocol.
fn request_with(headers: &[(&str, &str)]) -> String {
    let mut r = String::from("GET /mqtt HTTP/1.1\r\n");
    for (name, value) in headers {
        r.push_str(&format!("{name}: {value}\r\n"));
    }
    r.push_str("\r\n");
    r
}

fn good_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", RFC_KEY),
        ("Origin", "http://example.com"),
        ("Sec-WebSocket-Protocol", "mqtt"),
        ("Sec-WebSocket-Version", "13"),
    ]
}

/// `good_headers` with `name` replaced by `value` (or removed when `None`).
fn request_replacing(name: &str, value: Option<&str>) -> String {
    let mut h = good_headers();
    h.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    if let Some(v) = value {
        h.push((
            Box::leak(name.to_owned().into_boxed_str()),
            Box::leak(v.to_owned().into_boxed_str()),
        ));
    }
    request_with(&h)
}

fn switching_protocols(subprotocol: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {RFC_ACCEPT}\r\nSec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
    )
}

/// Result of one `receive` call: event, MQTT bytes, bytes for the peer, input left over.
struct Step {
    result: Result<WsEvent, WsError>,
    mqtt: BytesMut,
    wire: BytesMut,
    left: BytesMut,
}

fn feed(ws: &mut WsServer, bytes: &[u8]) -> Step {
    let mut input = BytesMut::from(bytes);
    let mut mqtt = BytesMut::new();
    let mut wire = BytesMut::new();
    let result = ws.receive(&mut input, &mut mqtt, &mut wire);
    Step {
        result,
        mqtt,
        wire,
        left: input,
    }
}

fn open_with(config: Arc<WsConfig>) -> WsServer {
    let mut ws = WsServer::new(config);
    let s = feed(&mut ws, request_with(&good_headers()).as_bytes());
    assert_eq!(s.result, Ok(WsEvent::Open));
    assert!(ws.is_open());
    ws
}

fn open() -> WsServer {
    open_with(config())
}

/// A client frame: masked with `mask`, shortest length encoding.
fn frame(fin: bool, opcode: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn binary(payload: &[u8]) -> Vec<u8> {
    frame(true, 0x2, MASK, payload)
}

fn close_frame(code: CloseCode) -> Vec<u8> {
    let mut f = vec![0x88, 0x02];
    f.extend_from_slice(&code.0.to_be_bytes());
    f
}

fn connect_packet() -> (Packet, BytesMut) {
    let packet = Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive_secs: 30,
        properties: ConnectProperties {
            session_expiry_secs: Some(3600),
            ..ConnectProperties::default()
        },
        client_id: Str::from_static("ws-client-1"),
        will: Some(Will {
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: Str::from_static("status/ws-client-1"),
            payload: Bytes::from_static(b"offline"),
            properties: WillProperties::default(),
        }),
        username: Some(Str::from_static("alice")),
        password: Some(Bytes::from_static(b"secret")),
    }));
    let mut bytes = BytesMut::new();
    ringmq_codec::encode(&packet, ProtocolVersion::V5, &mut bytes).unwrap();
    (packet, bytes)
}

fn decode_all(mut mqtt: BytesMut) -> Vec<Packet> {
    let mut packets = Vec::new();
    while let Some(p) =
        ringmq_codec::decode(&mut mqtt, &Limits::default(), ProtocolVersion::V5).unwrap()
    {
        packets.push(p);
    }
    assert!(mqtt.is_empty(), "trailing bytes: {mqtt:?}");
    packets
}

// ---- handshake ----

/// RFC 6455 1.2/1.3: the example key gets the example accept value, with the subprotocol.
#[test]
fn handshake_rfc_example() {
    let mut ws = WsServer::new(config());
    assert!(!ws.is_open());
    let s = feed(&mut ws, request_with(&good_headers()).as_bytes());
    assert_eq!(s.result, Ok(WsEvent::Open));
    assert_eq!(&s.wire[..], switching_protocols("mqtt").as_bytes());
    assert!(s.mqtt.is_empty() && s.left.is_empty());
    assert_eq!(ws.subprotocol(), Some("mqtt"));
    assert_eq!(ws.peer_hint(), None);
}

/// The request arrives one byte at a time; nothing is answered until its last byte.
#[test]
fn handshake_byte_by_byte() {
    let request = request_with(&good_headers());
    let mut ws = WsServer::new(config());
    let mut input = BytesMut::new();
    let mut mqtt = BytesMut::new();
    let mut wire = BytesMut::new();
    for (i, b) in request.bytes().enumerate() {
        input.extend_from_slice(&[b]);
        let event = ws.receive(&mut input, &mut mqtt, &mut wire).unwrap();
        if i + 1 < request.len() {
            assert_eq!(event, WsEvent::Handshaking, "byte {i}");
            assert!(wire.is_empty());
        } else {
            assert_eq!(event, WsEvent::Open);
        }
    }
    assert_eq!(&wire[..], switching_protocols("mqtt").as_bytes());
    assert!(input.is_empty());
}

/// Frames right behind the request, in the same read, are not lost.
#[test]
fn handshake_then_frames_in_one_read() {
    let mut bytes = request_with(&good_headers()).into_bytes();
    bytes.extend(binary(&hex("C000"))); // PINGREQ
    bytes.extend(&binary(&hex("C000"))[..3]); // and the start of another frame
    let mut ws = WsServer::new(config());
    let s = feed(&mut ws, &bytes);
    assert_eq!(s.result, Ok(WsEvent::Open));
    assert_eq!(&s.mqtt[..], &hex("C000")[..]);
    assert_eq!(s.left.len(), 3);
}

/// Header names and the Upgrade/Connection tokens are case-insensitive; Connection is a list
/// (Firefox sends `keep-alive, Upgrade`); the query string is not part of the path.
#[test]
fn handshake_lenient_where_http_is() {
    let request = "GET /mqtt?token=abc HTTP/1.1\r\nhost: h\r\nUPGRADE: WebSocket\r\n\
                   connection: keep-alive, Upgrade\r\nsec-websocket-key:  dGhlIHNhbXBsZSBub25jZQ== \r\n\
                   sec-websocket-version: 13\r\nsec-websocket-protocol: foo, mqtt\r\n\r\n";
    let mut ws = WsServer::new(config());
    let s = feed(&mut ws, request.as_bytes());
    assert_eq!(s.result, Ok(WsEvent::Open));
    assert_eq!(&s.wire[..], switching_protocols("mqtt").as_bytes());
}

/// `mqtt` wins over `mqttv3.1` whatever the order; `mqttv3.1` alone is accepted; offers may
/// come in several headers.
#[test]
fn handshake_subprotocol_choice() {
    for (offers, chosen) in [
        (vec!["mqttv3.1, mqtt"], "mqtt"),
        (vec!["mqttv3.1"], "mqttv3.1"),
        (vec!["chat", "mqttv3.1", "mqtt"], "mqtt"),
        (vec!["x", "mqttv3.1"], "mqttv3.1"),
    ] {
        let mut h = good_headers();
        h.retain(|(n, _)| *n != "Sec-WebSocket-Protocol");
        for o in &offers {
            h.push(("Sec-WebSocket-Protocol", o));
        }
        let mut ws = WsServer::new(config());
        let s = feed(&mut ws, request_with(&h).as_bytes());
        assert_eq!(s.result, Ok(WsEvent::Open), "{offers:?}");
        assert_eq!(ws.subprotocol(), Some(chosen));
        assert_eq!(&s.wire[..], switching_protocols(chosen).as_bytes());
    }
}

#[test]
fn handshake_records_forwarded_for() {
    let mut h = good_headers();
    h.push(("X-Forwarded-For", "203.0.113.7, 10.0.0.1"));
    let mut ws = WsServer::new(config());
    assert_eq!(
        feed(&mut ws, request_with(&h).as_bytes()).result,
        Ok(WsEvent::Open)
    );
    assert_eq!(ws.peer_hint(), Some("203.0.113.7"));
}

fn assert_refused(request: &[u8], error: HandshakeError, status_line: &str) -> BytesMut {
    let mut ws = WsServer::new(config());
    let s = feed(&mut ws, request);
    assert_eq!(
        s.result,
        Err(WsError::Handshake(error.clone())),
        "{status_line}"
    );
    let response = String::from_utf8(s.wire.to_vec()).unwrap();
    assert!(
        response.starts_with(&format!("{status_line}\r\n")),
        "{response}"
    );
    assert!(response.contains("\r\nConnection: close\r\n"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(response.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
    assert_eq!(body, format!("{error}\n"));
    assert!(!ws.is_open());
    // Ended: later input is dropped.
    let again = feed(&mut ws, request);
    assert_eq!(again.result, Ok(WsEvent::Closed));
    assert!(again.wire.is_empty() && again.left.is_empty());
    s.wire
}

#[test]
fn handshake_failures() {
    let bad = "HTTP/1.1 400 Bad Request";
    let cases: Vec<(String, HandshakeError, &str)> = vec![
        (
            request_with(&good_headers()).replacen("/mqtt", "/other", 1),
            HandshakeError::NotFound,
            "HTTP/1.1 404 Not Found",
        ),
        (
            request_with(&good_headers()).replacen("/mqtt", "/mqtt/x", 1),
            HandshakeError::NotFound,
            "HTTP/1.1 404 Not Found",
        ),
        (
            request_with(&good_headers()).replacen("GET", "POST", 1),
            HandshakeError::Method,
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (
            request_replacing("Sec-WebSocket-Version", Some("8")),
            HandshakeError::Version,
            "HTTP/1.1 426 Upgrade Required",
        ),
        (
            request_replacing("Sec-WebSocket-Version", None),
            HandshakeError::Version,
            "HTTP/1.1 426 Upgrade Required",
        ),
        (
            request_replacing("Upgrade", None),
            HandshakeError::NotUpgrade,
            bad,
        ),
        (
            request_replacing("Upgrade", Some("h2c")),
            HandshakeError::NotUpgrade,
            bad,
        ),
        (
            request_replacing("Connection", Some("keep-alive")),
            HandshakeError::NotUpgrade,
            bad,
        ),
        (
            request_replacing("Sec-WebSocket-Key", None),
            HandshakeError::Key,
            bad,
        ),
        // base64 of 11 bytes, then not base64 at all.
        (
            request_replacing("Sec-WebSocket-Key", Some("dGhlIHNhbXBsZQ==")),
            HandshakeError::Key,
            bad,
        ),
        (
            request_replacing("Sec-WebSocket-Key", Some("not base64 at all!!!!!!!")),
            HandshakeError::Key,
            bad,
        ),
        (
            request_replacing("Sec-WebSocket-Protocol", None),
            HandshakeError::Subprotocol,
            bad,
        ),
        (
            request_replacing("Sec-WebSocket-Protocol", Some("chat, MQTT")),
            HandshakeError::Subprotocol,
            bad,
        ),
        (
            request_replacing("Host", None),
            HandshakeError::Malformed("missing Host"),
            bad,
        ),
        (
            request_with(&good_headers()).replacen("HTTP/1.1", "HTTP/1.0", 1),
            HandshakeError::Malformed("HTTP/1.1 required"),
            bad,
        ),
        (
            "GET  /mqtt HTTP/1.1\r\n\r\n".to_owned(),
            HandshakeError::Malformed("request line"),
            bad,
        ),
        (
            request_with(&good_headers()).replacen("Origin: ", " Origin: ", 1),
            HandshakeError::Malformed("obsolete line folding"),
            bad,
        ),
        (
            request_with(&good_headers()).replacen("Version: ", "Version ", 1),
            HandshakeError::Malformed("header line without a colon"),
            bad,
        ),
    ];
    for (request, error, status_line) in cases {
        assert_refused(request.as_bytes(), error, status_line);
    }
    let response = assert_refused(
        request_replacing("Sec-WebSocket-Version", Some("8")).as_bytes(),
        HandshakeError::Version,
        "HTTP/1.1 426 Upgrade Required",
    );
    assert!(
        std::str::from_utf8(&response)
            .unwrap()
            .contains("\r\nSec-WebSocket-Version: 13\r\n")
    );
    let response = assert_refused(
        request_with(&good_headers())
            .replacen("GET", "PUT", 1)
            .as_bytes(),
        HandshakeError::Method,
        "HTTP/1.1 405 Method Not Allowed",
    );
    assert!(
        std::str::from_utf8(&response)
            .unwrap()
            .contains("\r\nAllow: GET\r\n")
    );
}

/// A head that does not end within `max_handshake_size` is refused with 431, whether it
/// arrives at once or byte by byte, and whether or not it ends later.
#[test]
fn handshake_too_large() {
    let limit = WsConfig::DEFAULT_MAX_HANDSHAKE_SIZE;
    let mut h = good_headers();
    let padding = "a".repeat(limit);
    h.push(("X-Padding", &padding));
    let request = request_with(&h);
    assert_refused(
        request.as_bytes(),
        HandshakeError::TooLarge { limit },
        "HTTP/1.1 431 Request Header Fields Too Large",
    );
    let mut ws = WsServer::new(config());
    let mut input = BytesMut::new();
    let mut mqtt = BytesMut::new();
    let mut wire = BytesMut::new();
    let mut result = Ok(WsEvent::Handshaking);
    for b in request.bytes().take(limit) {
        input.extend_from_slice(&[b]);
        result = ws.receive(&mut input, &mut mqtt, &mut wire);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(
        result,
        Err(WsError::Handshake(HandshakeError::TooLarge { limit }))
    );
    // The largest head that fits is accepted.
    let mut h = good_headers();
    let base = request_with(&h).len() + "X-P: \r\n".len();
    let padding = "a".repeat(limit - base);
    h.push(("X-P", &padding));
    let request = request_with(&h);
    assert_eq!(request.len(), limit);
    let mut ws = WsServer::new(config());
    assert_eq!(feed(&mut ws, request.as_bytes()).result, Ok(WsEvent::Open));
}

// ---- frames ----

/// RFC 6455 5.7 "A single-frame masked text message" with the binary opcode: "Hello".
#[test]
fn rfc_masked_frame() {
    let mut ws = open();
    let s = feed(&mut ws, &hex("82 85 37fa213d 7f9f4d5158"));
    assert_eq!(s.result, Ok(WsEvent::Data));
    assert_eq!(&s.mqtt[..], b"Hello");
    assert!(s.wire.is_empty() && s.left.is_empty());
}

/// A frame cut anywhere, across two reads, gives the same bytes.
#[test]
fn frame_split_at_every_byte() {
    let payload: Vec<u8> = (0..300u16).map(|i| (i * 7) as u8).collect();
    let f = binary(&payload);
    for cut in 0..=f.len() {
        let mut ws = open();
        let mut input = BytesMut::from(&f[..cut]);
        let mut mqtt = BytesMut::new();
        let mut wire = BytesMut::new();
        assert_eq!(
            ws.receive(&mut input, &mut mqtt, &mut wire),
            Ok(WsEvent::Data)
        );
        input.extend_from_slice(&f[cut..]);
        assert_eq!(
            ws.receive(&mut input, &mut mqtt, &mut wire),
            Ok(WsEvent::Data)
        );
        assert_eq!(&mqtt[..], &payload[..], "cut {cut}");
        assert!(input.is_empty() && wire.is_empty());
    }
}

/// RFC 6455 5.7 "A fragmented unmasked text message" ("Hel" + "lo"), masked and binary, with a
/// ping between the fragments (control frames may interleave, 5.4).
#[test]
fn fragmented_message_with_ping_inside() {
    let mut ws = open();
    let mut bytes = frame(false, 0x2, MASK, b"Hel");
    bytes.extend(frame(true, 0x9, [1, 2, 3, 4], b"hi"));
    bytes.extend(frame(true, 0x0, [9, 8, 7, 6], b"lo"));
    let s = feed(&mut ws, &bytes);
    assert_eq!(s.result, Ok(WsEvent::Data));
    assert_eq!(&s.mqtt[..], b"Hello");
    assert_eq!(&s.wire[..], &hex("8A02 6869")[..]);
}

/// [MQTT-6.0.0-2] a frame may hold several packets, and a packet may span frames (fragments
/// of one message, or separate messages).
#[test]
fn packets_and_frames_are_independent() {
    let (connect, connect_bytes) = connect_packet();
    let mut all = connect_bytes.to_vec();
    all.extend(hex("C000 C000")); // two PINGREQs
    let mut ws = open();
    let s = feed(&mut ws, &binary(&all));
    assert_eq!(
        decode_all(s.mqtt),
        vec![connect.clone(), Packet::PingReq, Packet::PingReq]
    );

    let (a, rest) = connect_bytes.split_at(5);
    let (b, c) = rest.split_at(11);
    for (opcodes, fins) in [
        ([0x2, 0x0, 0x0], [false, false, true]),
        ([0x2; 3], [true; 3]),
    ] {
        let mut ws = open();
        let mut bytes = Vec::new();
        for (i, part) in [a, b, c].iter().enumerate() {
            bytes.extend(frame(
                fins[i],
                opcodes[i],
                [i as u8, 0x55, 0xAA, 0xFF],
                part,
            ));
        }
        let s = feed(&mut ws, &bytes);
        assert_eq!(s.result, Ok(WsEvent::Data));
        assert_eq!(&s.mqtt[..], &connect_bytes[..]);
        assert_eq!(decode_all(s.mqtt), vec![connect.clone()]);
    }
}

/// A CONNECT encoded by the codec comes out of masked client frames byte for byte, however the
/// frames are read.
#[test]
fn mqtt_connect_through_frames() {
    let (connect, connect_bytes) = connect_packet();
    let wire = binary(&connect_bytes);
    for chunk in [1, 2, 3, 7, wire.len()] {
        let mut ws = open();
        let mut input = BytesMut::new();
        let mut mqtt = BytesMut::new();
        let mut out = BytesMut::new();
        for piece in wire.chunks(chunk) {
            input.extend_from_slice(piece);
            assert_eq!(
                ws.receive(&mut input, &mut mqtt, &mut out),
                Ok(WsEvent::Data)
            );
        }
        assert_eq!(&mqtt[..], &connect_bytes[..], "chunk {chunk}");
        assert_eq!(decode_all(mqtt), vec![connect.clone()]);
    }
}

/// 16-bit (RFC 6455 5.7: 256 bytes, `7E 0100`) and 64-bit (64 KiB, `7F 0000000000010000`)
/// lengths, the latter read in odd-sized pieces.
#[test]
fn extended_lengths() {
    let payload: Vec<u8> = (0..256u32).map(|i| i as u8).collect();
    let f = binary(&payload);
    assert_eq!(&f[..4], &hex("82 FE 0100")[..]);
    let mut ws = open();
    let s = feed(&mut ws, &f);
    assert_eq!(&s.mqtt[..], &payload[..]);

    let payload: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let f = binary(&payload);
    assert_eq!(&f[..10], &hex("82 FF 0000000000010000")[..]);
    let mut ws = open();
    let mut input = BytesMut::new();
    let mut mqtt = BytesMut::new();
    let mut wire = BytesMut::new();
    for piece in f.chunks(999) {
        input.extend_from_slice(piece);
        assert_eq!(
            ws.receive(&mut input, &mut mqtt, &mut wire),
            Ok(WsEvent::Data)
        );
    }
    assert_eq!(mqtt.len(), payload.len());
    assert!(mqtt[..] == payload[..]);
}

/// RFC 6455 5.7: a masked ping "Hello" is answered by the unmasked pong `8a 05 "Hello"`; a
/// pong from the client is ignored; a burst of pings in one read gets one pong, for the last.
#[test]
fn ping_pong() {
    let mut ws = open();
    let s = feed(&mut ws, &hex("89 85 37fa213d 7f9f4d5158"));
    assert_eq!(s.result, Ok(WsEvent::Data));
    assert_eq!(&s.wire[..], &hex("8a05 48656c6c6f")[..]);
    assert!(s.mqtt.is_empty());
    // RFC 6455 5.7 "Unmasked Pong response" sent back masked by a client: ignored.
    let s = feed(&mut ws, &hex("8a 85 37fa213d 7f9f4d5158"));
    assert_eq!(s.result, Ok(WsEvent::Data));
    assert!(s.wire.is_empty());
    let mut burst = Vec::new();
    for i in 0..100u8 {
        burst.extend(frame(true, 0x9, MASK, &[i]));
    }
    let s = feed(&mut ws, &burst);
    assert_eq!(&s.wire[..], &hex("8A01 63")[..]);
    // Empty ping, empty pong; the largest control payload (125) is echoed whole.
    assert_eq!(
        &feed(&mut ws, &frame(true, 0x9, MASK, b"")).wire[..],
        &hex("8A00")[..]
    );
    let big = [0x5Au8; 125];
    let s = feed(&mut ws, &frame(true, 0x9, MASK, &big));
    assert_eq!(&s.wire[..2], &hex("8A7D")[..]);
    assert_eq!(&s.wire[2..], &big[..]);
}

/// The client closes with 1000 and a reason: the code is echoed, data after the close frame
/// is dropped, and the transport stays closed.
#[test]
fn client_close_is_echoed() {
    let mut ws = open();
    let mut bytes = binary(&hex("C000"));
    bytes.extend(frame(true, 0x8, MASK, &[0x03, 0xE8, b'b', b'y', b'e']));
    bytes.extend(binary(&hex("C000")));
    let s = feed(&mut ws, &bytes);
    assert_eq!(s.result, Ok(WsEvent::Closed));
    assert_eq!(&s.mqtt[..], &hex("C000")[..]);
    assert_eq!(&s.wire[..], &close_frame(CloseCode::NORMAL)[..]);
    assert!(s.left.is_empty());
    assert_eq!(ws.peer_close_code(), Some(CloseCode::NORMAL));
    assert!(!ws.is_open());
    let s = feed(&mut ws, &binary(&hex("C000")));
    assert_eq!(s.result, Ok(WsEvent::Closed));
    assert!(s.mqtt.is_empty() && s.wire.is_empty());
    let mut wire = BytesMut::new();
    ws.send(&hex("D000"), &mut wire);
    ws.close(CloseCode::NORMAL, &mut wire);
    assert!(wire.is_empty());

    // An empty close is answered with an empty close.
    let mut ws = open();
    let s = feed(&mut ws, &frame(true, 0x8, MASK, b""));
    assert_eq!(s.result, Ok(WsEvent::Closed));
    assert_eq!(&s.wire[..], &hex("8800")[..]);
    assert_eq!(ws.peer_close_code(), None);
}

/// We close first: data is no longer sent, and the client's close is not echoed.
#[test]
fn server_close_then_client_close() {
    let mut ws = open();
    let mut wire = BytesMut::new();
    ws.close(CloseCode::NORMAL, &mut wire);
    assert_eq!(&wire[..], &hex("8802 03E8")[..]);
    ws.close(CloseCode::GOING_AWAY, &mut wire);
    ws.send(&hex("D000"), &mut wire);
    assert_eq!(&wire[..], &hex("8802 03E8")[..]);
    // A data frame in flight is dropped, a ping is not answered, the close ends it.
    let mut bytes = binary(&hex("C000"));
    bytes.extend(frame(true, 0x9, MASK, b"p"));
    bytes.extend(frame(true, 0x8, MASK, &[0x03, 0xE8]));
    let s = feed(&mut ws, &bytes);
    assert_eq!(s.result, Ok(WsEvent::Closed));
    assert!(s.mqtt.is_empty() && s.wire.is_empty());
}

/// Invalid close frames: a 1-byte payload and codes not allowed on the wire are protocol
/// errors (1002); a reason that is not UTF-8 is 1007.
#[test]
fn invalid_close_frames() {
    for (payload, error) in [
        (vec![0x03], FrameError::CloseLength),
        (vec![0x03, 0xED], FrameError::CloseCode(1005)),
        (vec![0x03, 0xEE], FrameError::CloseCode(1006)),
        (vec![0x00, 0x00], FrameError::CloseCode(0)),
        (vec![0x13, 0x88], FrameError::CloseCode(5000)),
        (vec![0x03, 0xE8, 0xFF, 0xFE], FrameError::CloseReason),
    ] {
        let mut ws = open();
        let s = feed(&mut ws, &frame(true, 0x8, MASK, &payload));
        let code = error.close_code();
        assert_eq!(s.result, Err(WsError::Frame(error)));
        assert_eq!(&s.wire[..], &close_frame(code)[..]);
    }
    assert_eq!(
        FrameError::CloseReason.close_code(),
        CloseCode::INVALID_PAYLOAD
    );
}

fn assert_violation(bytes: &[u8], error: FrameError, code: CloseCode) {
    let mut ws = open();
    let s = feed(&mut ws, bytes);
    assert_eq!(s.result, Err(WsError::Frame(error.clone())), "{error}");
    assert_eq!(error.close_code(), code);
    assert_eq!(&s.wire[..], &close_frame(code)[..], "{error}");
    assert!(!ws.is_open());
    let again = feed(&mut ws, &binary(b"x"));
    assert_eq!(again.result, Ok(WsEvent::Closed));
    assert!(again.mqtt.is_empty() && again.wire.is_empty());
}

#[test]
fn frame_violations() {
    let p = CloseCode::PROTOCOL_ERROR;
    // RFC 6455 5.7 "A single-frame unmasked text message" and its binary twin.
    assert_violation(&hex("81 05 48656c6c6f"), FrameError::Unmasked, p);
    assert_violation(&hex("82 05 48656c6c6f"), FrameError::Unmasked, p);
    // RFC 6455 5.7 masked "Hello" as text: MQTT needs binary [MQTT-6.0.0-1].
    assert_violation(
        &hex("81 85 37fa213d 7f9f4d5158"),
        FrameError::Text,
        CloseCode::UNSUPPORTED_DATA,
    );
    assert_violation(
        &frame(true, 0x2 | 0x40, MASK, b"x"),
        FrameError::ReservedBits,
        p,
    );
    assert_violation(
        &frame(true, 0x3, MASK, b"x"),
        FrameError::ReservedOpcode(0x3),
        p,
    );
    assert_violation(
        &frame(true, 0xB, MASK, b"x"),
        FrameError::ReservedOpcode(0xB),
        p,
    );
    assert_violation(
        &frame(true, 0x0, MASK, b"x"),
        FrameError::UnexpectedContinuation,
        p,
    );
    let mut interleaved = frame(false, 0x2, MASK, b"a");
    interleaved.extend(frame(true, 0x2, MASK, b"b"));
    assert_violation(&interleaved, FrameError::Interleaved, p);
    assert_violation(
        &frame(false, 0x9, MASK, b"x"),
        FrameError::ControlFragmented,
        p,
    );
    assert_violation(
        &frame(true, 0x9, MASK, &[0; 126]),
        FrameError::ControlTooLong,
        p,
    );
    assert_violation(
        &hex("82 FF 8000000000000000 37fa213d"),
        FrameError::LengthTopBit,
        p,
    );
}

/// Data before a violation in the same read still reaches MQTT; the close frame follows the
/// pong of an earlier ping.
#[test]
fn violation_after_data_and_ping() {
    let mut ws = open();
    let mut bytes = binary(&hex("C000"));
    bytes.extend(frame(true, 0x9, MASK, b"p"));
    bytes.extend(frame(true, 0x1, MASK, b"text"));
    let s = feed(&mut ws, &bytes);
    assert_eq!(s.result, Err(WsError::Frame(FrameError::Text)));
    assert_eq!(&s.mqtt[..], &hex("C000")[..]);
    assert_eq!(&s.wire[..], &hex("8A01 70 8802 03EB")[..]);
}

/// Frames over `max_frame_size` are refused with 1009 as soon as their header arrives; a frame
/// of exactly the limit passes.
#[test]
fn oversize_frame() {
    let config = Arc::new(WsConfig {
        max_frame_size: 1024,
        ..WsConfig::default()
    });
    let mut ws = open_with(config.clone());
    let s = feed(&mut ws, &binary(&[7; 1024]));
    assert_eq!(s.result, Ok(WsEvent::Data));
    assert_eq!(s.mqtt.len(), 1024);
    let header_only = &binary(&[7; 1025])[..8];
    let mut ws = open_with(config);
    let s = feed(&mut ws, header_only);
    assert_eq!(
        s.result,
        Err(WsError::Frame(FrameError::TooLarge {
            len: 1025,
            limit: 1024
        }))
    );
    assert_eq!(&s.wire[..], &close_frame(CloseCode::MESSAGE_TOO_BIG)[..]);
    assert!(s.mqtt.is_empty());
}

// ---- sending ----

#[test]
fn send_wraps_in_binary_frames() {
    let mut ws = WsServer::new(config());
    let mut wire = BytesMut::new();
    // Before the handshake nothing can be sent.
    ws.send(&hex("20030000 00"), &mut wire);
    ws.close(CloseCode::NORMAL, &mut wire);
    assert!(wire.is_empty());
    let mut ws = open();
    ws.send(&hex("D000"), &mut wire);
    assert_eq!(&wire[..], &hex("8202 D000")[..]);
    ws.send(&[], &mut wire);
    assert_eq!(wire.len(), 4);
    for (len, header) in [
        (125, "827D"),
        (126, "827E007E"),
        (65535, "827EFFFF"),
        (65536, "827F0000000000010000"),
    ] {
        let payload = vec![0xAB; len];
        let mut wire = BytesMut::new();
        ws.send(&payload, &mut wire);
        let header = hex(header);
        assert_eq!(&wire[..header.len()], &header[..], "{len}");
        assert!(wire[header.len()..] == payload[..]);
    }
}

#[test]
fn errors_name_the_rule_and_the_status() {
    let e = WsError::Handshake(HandshakeError::Version);
    assert_eq!(
        e.to_string(),
        "WebSocket handshake refused with HTTP 426: [RFC 6455 4.2.2] unsupported Sec-WebSocket-Version (13 required)"
    );
    let e = WsError::Frame(FrameError::Unmasked);
    assert_eq!(
        e.to_string(),
        "WebSocket closed with 1002: [RFC 6455 5.1] a client frame is not masked"
    );
}
