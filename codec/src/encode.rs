//! Packet encoding into a caller's buffer.

use bytes::BytesMut;

use crate::{EncodeError, Packet, ProtocolVersion};

/// Appends `packet`, encoded for `version`, to `out`.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
    let _ = (packet, version, out);
    todo!("codec helper implements")
}

impl crate::PublishHeader<'_> {
    /// Total encoded length of the PUBLISH (fixed header + variable header + properties +
    /// `payload_len`) for `version`: what the sender compares with the receiver's maximum
    /// packet size before sending [MQTT-3.1.2-25].
    pub fn packet_len(&self, version: ProtocolVersion, payload_len: usize) -> Result<usize, EncodeError> {
        let _ = (version, payload_len);
        todo!("codec helper implements")
    }

    /// Appends the PUBLISH's fixed header, variable header and properties to `out`, sized for
    /// a payload of `payload_len` bytes that the caller sends right after. Allocates nothing
    /// when `out` has room.
    pub fn encode(&self, version: ProtocolVersion, payload_len: usize, out: &mut BytesMut) -> Result<(), EncodeError> {
        let _ = (version, payload_len, out);
        todo!("codec helper implements")
    }
}
