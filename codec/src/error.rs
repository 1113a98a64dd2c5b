//! Decode and encode errors. Every decode error names the normative statement it violates and
//! maps to the MQTT 5 reason code the broker sends in CONNACK or DISCONNECT.

use crate::{ProtocolVersion, ReasonCode};

/// Why a frame could not be decoded. `statement` is the normative statement of the MQTT 5.0
/// specification (or MQTT 3.1.1 where only it applies) that the input violates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The fixed header announces a packet larger than the receiver's maximum packet size.
    /// Checked before any byte of the body is buffered.
    #[error("[MQTT-3.1.2-24] packet of {size} bytes exceeds the maximum packet size of {max}")]
    PacketTooLarge { size: u64, max: u32 },
    /// The bytes do not form a valid packet (reason 0x81).
    #[error("[{statement}] malformed packet: {what}")]
    Malformed {
        statement: &'static str,
        what: &'static str,
    },
    /// The packet is well-formed but breaks a protocol rule (reason 0x82).
    #[error("[{statement}] protocol error: {what}")]
    Protocol {
        statement: &'static str,
        what: &'static str,
    },
    /// A topic name is invalid (reason 0x90).
    #[error("[{statement}] invalid topic name: {what}")]
    TopicName {
        statement: &'static str,
        what: &'static str,
    },
    /// A topic filter is invalid (reason 0x8F).
    #[error("[{statement}] invalid topic filter: {what}")]
    TopicFilter {
        statement: &'static str,
        what: &'static str,
    },
    /// CONNECT carries a protocol name or level this codec does not speak (reason 0x84;
    /// MQTT 3.1.1 return code 0x01).
    #[error("[MQTT-3.1.2-2] unsupported protocol {name:?} level {level}")]
    UnsupportedProtocol { name: &'static str, level: u8 },
}

impl DecodeError {
    /// The v5 reason code the broker sends for this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::Malformed { .. } => ReasonCode::MALFORMED_PACKET,
            DecodeError::Protocol { .. } => ReasonCode::PROTOCOL_ERROR,
            DecodeError::TopicName { .. } => ReasonCode::TOPIC_NAME_INVALID,
            DecodeError::TopicFilter { .. } => ReasonCode::TOPIC_FILTER_INVALID,
            DecodeError::UnsupportedProtocol { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }

    /// The normative statement violated, e.g. `MQTT-3.3.2-2`.
    pub fn statement(&self) -> &'static str {
        match self {
            DecodeError::PacketTooLarge { .. } => "MQTT-3.1.2-24",
            DecodeError::Malformed { statement, .. }
            | DecodeError::Protocol { statement, .. }
            | DecodeError::TopicName { statement, .. }
            | DecodeError::TopicFilter { statement, .. } => statement,
            DecodeError::UnsupportedProtocol { .. } => "MQTT-3.1.2-2",
        }
    }

    /// For an unsupported protocol level, the version whose CONNACK refuses it before the
    /// connection is closed; `None` for every other error (the connection is just closed, as
    /// a CONNECT that did not decode says nothing reliable about what the client can read).
    ///
    /// The level byte decides the format: level 3 or 4 comes from an MQTT 3.1 or 3.1.1
    /// client (for example "MQTT" with level 3), which reads the 3.1.1 CONNACK with return
    /// code 0x01 (MQTT 3.1.1 [MQTT-3.1.2-2]); any other level (0 to 2, 6 and above, or 5
    /// under the 3.1 name) gets the MQTT 5 CONNACK with reason code 0x84 and no properties
    /// (MQTT 5.0 [MQTT-3.1.2-2]), as Mosquitto's development line answers it (Mosquitto 2.0
    /// answers every unknown level in the 3.1.1 format).
    pub fn connack_version(&self) -> Option<ProtocolVersion> {
        match self {
            DecodeError::UnsupportedProtocol { level: 3 | 4, .. } => Some(ProtocolVersion::V3_1_1),
            DecodeError::UnsupportedProtocol { .. } => Some(ProtocolVersion::V5),
            _ => None,
        }
    }

    pub(crate) fn malformed(statement: &'static str, what: &'static str) -> Self {
        DecodeError::Malformed { statement, what }
    }

    pub(crate) fn protocol(statement: &'static str, what: &'static str) -> Self {
        DecodeError::Protocol { statement, what }
    }
}

/// Why a packet could not be encoded: a field is longer than the wire format can carry, or the
/// packet is larger than its receiver accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error(
        "[MQTT-1.5.4-1] {field} is {len} bytes, more than the 65535 a string or binary can hold"
    )]
    FieldTooLong { field: &'static str, len: usize },
    #[error("[MQTT-2.2.3] packet of {len} bytes exceeds the 268435455 remaining length maximum")]
    PacketTooLarge { len: usize },
    /// The packet is larger than the receiver's Maximum Packet Size even without what the
    /// sender may leave out (its Reason String and User Properties): it is not sent.
    #[error(
        "[MQTT-3.1.2-25] {packet} of {len} bytes exceeds the receiver's Maximum Packet Size of {max}"
    )]
    ExceedsMaximumPacketSize {
        packet: &'static str,
        len: usize,
        max: u32,
    },
    #[error("{packet} cannot be encoded for protocol {version:?}")]
    NotInVersion {
        packet: &'static str,
        version: ProtocolVersion,
    },
}
