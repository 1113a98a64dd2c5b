//! Arbitrary bytes → `decode`, for every protocol version and a small, the default and the
//! protocol's largest packet-size limit. The decoder must never panic, must make progress on
//! every packet, must leave the buffer untouched when it asks for more bytes, must agree with
//! `peek_frame_len`, and must give the same results when the bytes arrive in two reads.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmq_codec::{DecodeError, Limits, Packet, ProtocolVersion, decode, peek_frame_len};

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// Decodes `buf` until it needs more bytes or fails, checking the decoder's contract.
fn decode_all(
    buf: &mut BytesMut,
    limits: &Limits,
    version: ProtocolVersion,
    out: &mut Vec<Result<Packet, DecodeError>>,
) -> bool {
    loop {
        let before = buf.clone();
        let peeked = peek_frame_len(buf, limits);
        match decode(buf, limits, version) {
            Ok(Some(packet)) => {
                let consumed = before.len() - buf.len();
                assert!(consumed >= 2, "a packet is at least two bytes");
                assert_eq!(
                    peeked,
                    Ok(Some(consumed)),
                    "peek_frame_len disagrees with decode"
                );
                assert_eq!(&before[consumed..], &buf[..]);
                out.push(Ok(packet));
            }
            Ok(None) => {
                assert_eq!(
                    before, *buf,
                    "an incomplete frame must leave the buffer as it was"
                );
                if let Ok(Some(len)) = peeked {
                    assert!(
                        len > buf.len(),
                        "peek_frame_len says complete, decode says not"
                    );
                }
                return true;
            }
            Err(e) => {
                // The error names a statement and maps to an error reason code.
                assert!(e.statement().starts_with("MQTT-"));
                assert!(e.reason_code().is_error());
                out.push(Err(e));
                return false;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (split_at, data) = match data.split_first() {
        Some((&first, rest)) => (usize::from(first), rest),
        None => return,
    };
    for version in VERSIONS {
        for max_packet_size in [
            64,
            Limits::default().max_packet_size,
            Limits::PROTOCOL_MAX_PACKET_SIZE,
        ] {
            let limits = Limits { max_packet_size };
            let mut whole = Vec::new();
            decode_all(&mut BytesMut::from(data), &limits, version, &mut whole);

            // The same bytes in two reads decode to the same packets and error.
            let split_at = split_at.min(data.len());
            let mut buf = BytesMut::from(&data[..split_at]);
            let mut parts = Vec::new();
            if decode_all(&mut buf, &limits, version, &mut parts) {
                buf.extend_from_slice(&data[split_at..]);
                decode_all(&mut buf, &limits, version, &mut parts);
            }
            assert_eq!(whole, parts, "decoding depends on how the bytes were read");
        }
    }
});
