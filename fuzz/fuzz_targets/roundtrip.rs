//! decode → encode → decode → encode: whatever decodes re-encodes (for its version), the
//! encoding decodes to an equal packet, and encoding that again gives identical bytes. The first
//! encoding may differ from the input (non-minimal lengths, property order), never later ones.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmq_codec::{Limits, Packet, ProtocolVersion, decode, encode};

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_packet_size: Limits::PROTOCOL_MAX_PACKET_SIZE,
    };
    for version in VERSIONS {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode(&mut buf, &limits, version) {
            // CONNECT carries its own protocol version.
            let version = match &packet {
                Packet::Connect(connect) => connect.protocol,
                _ => version,
            };
            let mut first = BytesMut::new();
            if let Err(e) = encode(&packet, version, &mut first) {
                panic!("decoded {packet:?} for {version:?} but cannot encode it: {e}");
            }
            let mut again = first.clone();
            let redecoded = match decode(&mut again, &limits, version) {
                Ok(Some(p)) => p,
                other => panic!("encoding of {packet:?} ({first:02x?}) decodes to {other:?}"),
            };
            assert!(
                again.is_empty(),
                "encoding of {packet:?} has trailing bytes"
            );
            assert_eq!(packet, redecoded, "encoded as {first:02x?}");
            let mut second = BytesMut::new();
            if let Err(e) = encode(&redecoded, version, &mut second) {
                panic!("re-decoded {redecoded:?} cannot be encoded: {e}");
            }
            assert_eq!(first, second, "encoding is not stable for {packet:?}");
        }
    }
});
