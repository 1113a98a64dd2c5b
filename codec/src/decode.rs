//! Frame and packet decoding.

use bytes::BytesMut;

use crate::{DecodeError, Limits, Packet, ProtocolVersion};

/// Decodes one packet from the front of `buf`.
///
/// `version` is the connection's protocol version (any value before CONNECT: CONNECT carries
/// its own). Returns `Ok(None)` and leaves `buf` untouched while the frame is incomplete.
pub fn decode(
    buf: &mut BytesMut,
    limits: &Limits,
    version: ProtocolVersion,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, limits, version);
    todo!("codec helper implements")
}

/// The total length (fixed header included) of the frame at the front of `buf`, once its fixed
/// header is complete; errors if it exceeds `limits` or the length is malformed. Lets the
/// reader reserve exactly what the frame needs.
pub fn peek_frame_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, DecodeError> {
    let _ = (buf, limits);
    todo!("codec helper implements")
}
