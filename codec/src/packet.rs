//! The control packets of MQTT 5.0 and 3.1.1 as plain data.
//!
//! Strings, binary data, topics and payloads are `Bytes` slices of the received frame, so
//! decoding does not copy them. Fields that cannot exist in a version (properties in 3.1.1) are
//! simply empty/`None` there and ignored by the encoder.

use core::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;

use crate::{ReasonCode, Str};

/// Protocol level from CONNECT: 3 ("MQIsdp", MQTT 3.1), 4 (MQTT 3.1.1), 5 (MQTT 5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    V3_1,
    V3_1_1,
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3_1 => 3,
            ProtocolVersion::V3_1_1 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service. QoS 3 is not representable: decoding it is an error [MQTT-3.3.1-4].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// QoS together with the packet identifier it requires: a QoS 0 PUBLISH has no packet id and a
/// QoS 1/2 PUBLISH always has a non-zero one [MQTT-2.2.1-2], so both facts live in one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosPid {
    AtMostOnce,
    AtLeastOnce(NonZeroU16),
    ExactlyOnce(NonZeroU16),
}

impl QosPid {
    pub fn qos(self) -> QoS {
        match self {
            QosPid::AtMostOnce => QoS::AtMostOnce,
            QosPid::AtLeastOnce(_) => QoS::AtLeastOnce,
            QosPid::ExactlyOnce(_) => QoS::ExactlyOnce,
        }
    }

    pub fn packet_id(self) -> Option<NonZeroU16> {
        match self {
            QosPid::AtMostOnce => None,
            QosPid::AtLeastOnce(id) | QosPid::ExactlyOnce(id) => Some(id),
        }
    }

    /// Builds the value for `qos`; `id` is ignored for QoS 0.
    pub fn new(qos: QoS, id: NonZeroU16) -> QosPid {
        match qos {
            QoS::AtMostOnce => QosPid::AtMostOnce,
            QoS::AtLeastOnce => QosPid::AtLeastOnce(id),
            QoS::ExactlyOnce => QosPid::ExactlyOnce(id),
        }
    }
}

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Boxed: CONNECT is large and rare; keeping it out of line keeps `Packet` small for the
    /// PUBLISH hot path.
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResp),
    PubRec(PubResp),
    PubRel(PubResp),
    PubComp(PubResp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// The packet type's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

/// CONNECT (3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// Clean Start (v5) / Clean Session (3.1.1).
    pub clean_start: bool,
    pub keep_alive_secs: u16,
    pub properties: ConnectProperties,
    /// May be empty (the server then assigns one, or refuses in 3.1.1 without clean session).
    pub client_id: Str,
    pub will: Option<Will>,
    pub username: Option<Str>,
    pub password: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectProperties {
    pub session_expiry_secs: Option<u32>,
    pub receive_maximum: Option<NonZeroU16>,
    pub maximum_packet_size: Option<NonZeroU32>,
    pub topic_alias_maximum: Option<u16>,
    pub request_response_information: Option<bool>,
    pub request_problem_information: Option<bool>,
    pub user_properties: UserProperties,
    pub authentication_method: Option<Str>,
    pub authentication_data: Option<Bytes>,
}

/// The will message of CONNECT (3.1.2.5, 3.1.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub qos: QoS,
    pub retain: bool,
    pub topic: Str,
    pub payload: Bytes,
    pub properties: WillProperties,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WillProperties {
    pub will_delay_secs: Option<u32>,
    /// `Some(true)`: the payload is UTF-8 text.
    pub payload_format_utf8: Option<bool>,
    pub message_expiry_secs: Option<u32>,
    pub content_type: Option<Str>,
    pub response_topic: Option<Str>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: UserProperties,
}

/// CONNACK (3.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    pub session_present: bool,
    /// In 3.1.1 the encoder sends `reason_code.to_v3_connack()`, the decoder maps back.
    pub reason_code: ReasonCode,
    pub properties: ConnAckProperties,
}

impl Default for ReasonCode {
    fn default() -> Self {
        ReasonCode::SUCCESS
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAckProperties {
    pub session_expiry_secs: Option<u32>,
    pub receive_maximum: Option<NonZeroU16>,
    pub maximum_qos: Option<QoS>,
    pub retain_available: Option<bool>,
    pub maximum_packet_size: Option<NonZeroU32>,
    pub assigned_client_id: Option<Str>,
    pub topic_alias_maximum: Option<u16>,
    pub reason_string: Option<Str>,
    pub user_properties: UserProperties,
    pub wildcard_subscription_available: Option<bool>,
    pub subscription_ids_available: Option<bool>,
    pub shared_subscription_available: Option<bool>,
    pub server_keep_alive_secs: Option<u16>,
    pub response_information: Option<Str>,
    pub server_reference: Option<Str>,
    pub authentication_method: Option<Str>,
    pub authentication_data: Option<Bytes>,
}

/// PUBLISH (3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos_pid: QosPid,
    pub retain: bool,
    /// Empty when the sender uses a topic alias alone (v5).
    pub topic: Str,
    pub properties: PublishProperties,
    pub payload: Bytes,
}

/// PUBLISH properties. Cloning is a few reference-count increments, never an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishProperties {
    /// `Some(true)`: the payload is UTF-8 text.
    pub payload_format_utf8: Option<bool>,
    pub message_expiry_secs: Option<u32>,
    pub topic_alias: Option<NonZeroU16>,
    pub response_topic: Option<Str>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: UserProperties,
    /// Only in server → client PUBLISH [MQTT-3.3.4-6]; the receiver checks the direction.
    pub subscription_ids: SubscriptionIds,
    pub content_type: Option<Str>,
}

/// The per-subscriber part of an outgoing PUBLISH, encoded apart from the shared payload so
/// one payload `Bytes` can go to many subscribers by vectored write (see
/// [`PublishHeader::encode`]).
#[derive(Debug, Clone, Copy)]
pub struct PublishHeader<'a> {
    pub dup: bool,
    pub qos_pid: QosPid,
    pub retain: bool,
    /// Empty when only `topic_alias` identifies the topic.
    pub topic: &'a [u8],
    pub topic_alias: Option<NonZeroU16>,
    /// The remaining lifetime, already decremented by the time the message waited [MQTT-3.3.2-6].
    pub message_expiry_secs: Option<u32>,
    pub subscription_ids: &'a [NonZeroU32],
    /// Properties forwarded unchanged from the publisher [MQTT-3.3.2-17..20]: payload format,
    /// content type, response topic, correlation data, user properties. Their topic alias,
    /// expiry and subscription ids are not used (the fields above replace them).
    pub forwarded: Option<&'a PublishProperties>,
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP (3.4–3.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResp {
    pub packet_id: NonZeroU16,
    pub reason_code: ReasonCode,
    pub properties: AckProperties,
}

impl PubResp {
    pub fn new(packet_id: NonZeroU16, reason_code: ReasonCode) -> PubResp {
        PubResp {
            packet_id,
            reason_code,
            properties: AckProperties::default(),
        }
    }
}

/// Reason string and user properties: the properties of PUBACK/PUBREC/PUBREL/PUBCOMP,
/// SUBACK and UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckProperties {
    pub reason_string: Option<Str>,
    pub user_properties: UserProperties,
}

/// SUBSCRIBE (3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: NonZeroU16,
    pub subscription_id: Option<NonZeroU32>,
    pub user_properties: UserProperties,
    /// At least one [MQTT-3.8.3-2].
    pub filters: Vec<SubscribeFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// A valid topic filter, possibly `$share/{group}/{filter}`.
    pub filter: Str,
    pub options: SubscriptionOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    #[default]
    SendAtSubscribe = 0,
    SendAtSubscribeIfNew = 1,
    DoNotSend = 2,
}

/// SUBACK (3.9). In 3.1.1 the return codes are 0x00–0x02 and 0x80.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: NonZeroU16,
    pub properties: AckProperties,
    pub reason_codes: Vec<ReasonCode>,
}

/// UNSUBSCRIBE (3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: NonZeroU16,
    pub user_properties: UserProperties,
    pub filters: Vec<Str>,
}

/// UNSUBACK (3.11). 3.1.1 has no reason codes: `reason_codes` is empty there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: NonZeroU16,
    pub properties: AckProperties,
    pub reason_codes: Vec<ReasonCode>,
}

/// DISCONNECT (3.14). 3.1.1 has no reason code: it is always `NORMAL_DISCONNECTION` there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    pub reason_code: ReasonCode,
    pub properties: DisconnectProperties,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisconnectProperties {
    pub session_expiry_secs: Option<u32>,
    pub reason_string: Option<Str>,
    pub user_properties: UserProperties,
    pub server_reference: Option<Str>,
}

/// AUTH (3.15), v5 only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub reason_code: ReasonCode,
    pub properties: AuthProperties,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthProperties {
    pub authentication_method: Option<Str>,
    pub authentication_data: Option<Bytes>,
    pub reason_string: Option<Str>,
    pub user_properties: UserProperties,
}

/// User properties [MQTT-3.1.2.3.8 etc.], kept as the encoded property block they came in so
/// decoding and forwarding them costs no allocation. The block may hold other properties too;
/// only the User Property (0x26) entries are visible through this type.
#[derive(Clone, Default)]
pub struct UserProperties {
    /// A validated property block (sequence of id + value). Invariant: every entry parses.
    pub(crate) raw: Bytes,
}

/// Subscription identifiers of a server → client PUBLISH, kept as the encoded property block
/// (like [`UserProperties`]). Only Subscription Identifier (0x0B) entries are visible.
#[derive(Clone, Default)]
pub struct SubscriptionIds {
    pub(crate) raw: Bytes,
}
