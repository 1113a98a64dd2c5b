//! Helpers shared by the codec's integration tests.
#![allow(dead_code)]

use bytes::BytesMut;
use ringmq_codec::{DecodeError, Limits, Packet, ProtocolVersion, decode, encode};

/// Parses hex with optional whitespace.
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd hex length");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

pub fn to_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Decodes exactly one packet that fills `bytes`.
pub fn decode_all(bytes: &[u8], version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, &Limits::default(), version)?.expect("frame is complete");
    assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    Ok(packet)
}

pub fn encode_vec(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out).expect("encodes");
    out.to_vec()
}

/// Decodes `hex`, checks the result equals `expected`, re-encodes it to the same bytes.
pub fn vector(hex_str: &str, version: ProtocolVersion, expected: &Packet) {
    let bytes = hex(hex_str);
    let packet = decode_all(&bytes, version).unwrap_or_else(|e| panic!("decode failed: {e}"));
    assert_eq!(&packet, expected);
    assert_eq!(
        to_hex(&encode_vec(&packet, version)),
        to_hex(&bytes),
        "re-encoding differs"
    );
    assert_eq!(
        to_hex(&encode_vec(expected, version)),
        to_hex(&bytes),
        "encoding differs"
    );
}

/// The decode error for `hex`, which must be exactly one frame (its remaining length matches
/// its size), so that the error comes from the content and not from a mistyped vector.
pub fn decode_err(hex_str: &str, version: ProtocolVersion) -> DecodeError {
    let bytes = hex(hex_str);
    if let Ok(Some(len)) = ringmq_codec::peek_frame_len(&bytes, &Limits::default()) {
        assert_eq!(
            len,
            bytes.len(),
            "{hex_str}: remaining length disagrees with the vector"
        );
    }
    match decode_all(&bytes, version) {
        Ok(p) => panic!("expected an error, decoded {p:?}"),
        Err(e) => e,
    }
}
