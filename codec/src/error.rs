//! Decode and encode errors. Every decode error names the normative statement it violates and
//! maps to the MQTT 5 reason code the broker sends in CONNACK or DISCONNECT.

use crate::ReasonCode;

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

    pub(crate) fn malformed(statement: &'static str, what: &'static str) -> Self {
        DecodeError::Malformed { statement, what }
    }

    pub(crate) fn protocol(statement: &'static str, what: &'static str) -> Self {
        DecodeError::Protocol { statement, what }
    }
}

/// Why a packet could not be encoded: a field is longer than the wire format can carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error(
        "[MQTT-1.5.4-1] {field} is {len} bytes, more than the 65535 a string or binary can hold"
    )]
    FieldTooLong { field: &'static str, len: usize },
    #[error("[MQTT-2.2.3] packet of {len} bytes exceeds the 268435455 remaining length maximum")]
    PacketTooLarge { len: usize },
    #[error("{packet} cannot be encoded for protocol {version:?}")]
    NotInVersion {
        packet: &'static str,
        version: crate::ProtocolVersion,
    },
}
