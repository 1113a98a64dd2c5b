//! Frame and packet decoding.
//!
//! A complete frame is split off the receive buffer and frozen; every field of the packet is
//! then a `Bytes` slice of that frame. Decoding a PUBLISH allocates nothing: its user
//! properties and subscription identifiers stay in the property block they arrived in.

use core::num::{NonZeroU16, NonZeroU32};

use bytes::BytesMut;

use crate::props::{self, Allowed, Props, Value, id};
use crate::topic::{parse_shared, validate_topic_filter, validate_topic_name};
use crate::wire::{Reader, parse_varint};
use crate::{
    AckProperties, Auth, ConnAck, ConnAckProperties, Connect, ConnectProperties, DecodeError,
    Disconnect, Limits, Packet, ProtocolVersion, PubResp, Publish, PublishProperties, QoS, QosPid,
    ReasonCode, RetainHandling, Str, SubAck, Subscribe, SubscribeFilter, SubscriptionIds,
    SubscriptionOptions, UnsubAck, Unsubscribe, UserProperties, Will, WillProperties,
};

/// Decodes one packet from the front of `buf`.
///
/// `version` is the connection's protocol version (any value before CONNECT: CONNECT carries
/// its own). Returns `Ok(None)` and leaves `buf` untouched while the frame is incomplete.
///
/// Errors: [`DecodeError::PacketTooLarge`] and a malformed Remaining Length are reported as
/// soon as the fixed header is in `buf`, before the body arrives, and leave `buf` untouched.
/// Any other error is found after the frame was split off `buf` (so it is consumed). Every
/// error ends the connection: in MQTT 5 send CONNACK (in reply to CONNECT) or DISCONNECT with
/// [`DecodeError::reason_code`] first; in 3.1.1 just close, except that an unsupported
/// protocol level gets a CONNACK in the format [`DecodeError::connack_version`] names.
pub fn decode(
    buf: &mut BytesMut,
    limits: &Limits,
    version: ProtocolVersion,
) -> Result<Option<Packet>, DecodeError> {
    let Some((header_len, total)) = frame_header(buf, limits)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    let frame = buf.split_to(total).freeze();
    let first = frame.first().copied().unwrap_or_default();
    let mut r = Reader::new(&frame, header_len, total);
    decode_packet(first, &mut r, version)
}

/// The total length (fixed header included) of the frame at the front of `buf`, once its fixed
/// header is complete; errors if it exceeds `limits` or the length is malformed. Lets the
/// reader reserve exactly what the frame needs.
pub fn peek_frame_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, DecodeError> {
    Ok(frame_header(buf, limits)?.map(|(_, total)| total))
}

/// (fixed header length, total frame length), once the fixed header is complete.
fn frame_header(buf: &[u8], limits: &Limits) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut pos = 1;
    let Some(remaining) = parse_varint(buf, &mut pos)? else {
        return Ok(None);
    };
    let total = pos + remaining as usize;
    if total as u64 > u64::from(limits.max_packet_size) {
        return Err(DecodeError::PacketTooLarge {
            size: total as u64,
            max: limits.max_packet_size,
        });
    }
    Ok(Some((pos, total)))
}

fn decode_packet(
    first: u8,
    r: &mut Reader<'_>,
    version: ProtocolVersion,
) -> Result<Option<Packet>, DecodeError> {
    let (packet_type, flags) = (first >> 4, first & 0x0F);
    let v5 = version.is_v5();
    // Every type except PUBLISH has fixed flags: 0b0010 for PUBREL, SUBSCRIBE, UNSUBSCRIBE
    // ([MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]), 0 elsewhere [MQTT-2.1.3-1].
    let (want, statement) = match packet_type {
        0 => {
            return Err(DecodeError::malformed(
                "MQTT-2.1.2",
                "reserved packet type 0",
            ));
        }
        15 if !v5 => {
            return Err(DecodeError::malformed(
                "MQTT-2.1.2",
                "AUTH does not exist before MQTT 5",
            ));
        }
        3 => (flags, ""),
        6 => (0b0010, "MQTT-3.6.1-1"),
        8 => (0b0010, "MQTT-3.8.1-1"),
        10 => (0b0010, "MQTT-3.10.1-1"),
        _ => (0, "MQTT-2.1.3-1"),
    };
    if flags != want {
        return Err(DecodeError::malformed(
            statement,
            "reserved fixed header flags have the wrong value",
        ));
    }
    let packet = match packet_type {
        1 => Packet::Connect(Box::new(connect(r)?)),
        2 => Packet::ConnAck(connack(r, v5)?),
        // Returned directly: PUBLISH is the hot path and `Packet` is large, so every
        // intermediate `Result`/`Option` wrapping would be another copy of it.
        3 => return publish(flags, r, v5),
        4 => Packet::PubAck(pub_resp(r, v5, props::PUBACK)?),
        5 => Packet::PubRec(pub_resp(r, v5, props::PUBREC)?),
        6 => Packet::PubRel(pub_resp(r, v5, props::PUBREL)?),
        7 => Packet::PubComp(pub_resp(r, v5, props::PUBCOMP)?),
        8 => Packet::Subscribe(subscribe(r, v5)?),
        9 => Packet::SubAck(suback(r, v5)?),
        10 => Packet::Unsubscribe(unsubscribe(r, v5)?),
        11 => Packet::UnsubAck(unsuback(r, v5)?),
        12 => {
            r.finish()?;
            Packet::PingReq
        }
        13 => {
            r.finish()?;
            Packet::PingResp
        }
        14 => Packet::Disconnect(disconnect(r, v5)?),
        _ => Packet::Auth(auth(r)?),
    };
    Ok(Some(packet))
}

fn packet_id(r: &mut Reader<'_>) -> Result<NonZeroU16, DecodeError> {
    NonZeroU16::new(r.u16()?)
        .ok_or_else(|| DecodeError::protocol("MQTT-2.2.1-3", "packet identifier is 0"))
}

fn topic_name(topic: &Str) -> Result<(), DecodeError> {
    validate_topic_name(topic.as_bytes())
}

// ---- CONNECT / CONNACK -----------------------------------------------------------------------

fn protocol(name: &[u8], level: u8) -> Result<ProtocolVersion, DecodeError> {
    match (name, level) {
        (b"MQTT", 4) => Ok(ProtocolVersion::V3_1_1),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V3_1),
        (b"MQTT", level) => Err(DecodeError::UnsupportedProtocol {
            name: "MQTT",
            level,
        }),
        (b"MQIsdp", level) => Err(DecodeError::UnsupportedProtocol {
            name: "MQIsdp",
            level,
        }),
        (_, level) => Err(DecodeError::UnsupportedProtocol {
            name: "unknown",
            level,
        }),
    }
}

fn connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = protocol(&name, level)?;
    let v5 = protocol.is_v5();
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::malformed(
            "MQTT-3.1.2-3",
            "CONNECT reserved flag is set",
        ));
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && will_qos != 0 {
        return Err(DecodeError::malformed(
            "MQTT-3.1.2-11",
            "Will QoS set without the Will Flag",
        ));
    }
    if will_qos == 3 {
        return Err(DecodeError::malformed("MQTT-3.1.2-12", "Will QoS is 3"));
    }
    if !will_flag && will_retain {
        return Err(DecodeError::malformed(
            "MQTT-3.1.2-13",
            "Will Retain set without the Will Flag",
        ));
    }
    if !v5 && password_flag && !username_flag {
        return Err(DecodeError::malformed(
            "MQTT-3.1.2-22",
            "Password Flag set without the User Name Flag (MQTT 3.1.1)",
        ));
    }
    let keep_alive_secs = r.u16()?;
    let properties = if v5 {
        connect_props(r)?
    } else {
        ConnectProperties::default()
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 {
            will_props(r)?
        } else {
            WillProperties::default()
        };
        let topic = r.string()?;
        topic_name(&topic)?;
        let payload = r.binary()?;
        let qos = QoS::from_u8(will_qos).unwrap_or_default();
        Some(Will {
            qos,
            retain: will_retain,
            topic,
            payload,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        protocol,
        clean_start: flags & 0x02 != 0,
        keep_alive_secs,
        properties,
        client_id,
        will,
        username,
        password,
    })
}

fn auth_data_without_method(section: &'static str) -> DecodeError {
    DecodeError::protocol(section, "Authentication Data without Authentication Method")
}

fn connect_props(r: &mut Reader<'_>) -> Result<ConnectProperties, DecodeError> {
    let mut props = Props::read(r, props::CONNECT)?;
    let mut p = ConnectProperties::default();
    while let Some((ident, value)) = props.next()? {
        match (ident, value) {
            (id::SESSION_EXPIRY_INTERVAL, Value::U32(v)) => p.session_expiry_secs = Some(v),
            (id::RECEIVE_MAXIMUM, Value::U16(v)) => p.receive_maximum = NonZeroU16::new(v),
            (id::MAXIMUM_PACKET_SIZE, Value::U32(v)) => p.maximum_packet_size = NonZeroU32::new(v),
            (id::TOPIC_ALIAS_MAXIMUM, Value::U16(v)) => p.topic_alias_maximum = Some(v),
            (id::REQUEST_RESPONSE_INFORMATION, Value::Bool(v)) => {
                p.request_response_information = Some(v)
            }
            (id::REQUEST_PROBLEM_INFORMATION, Value::Bool(v)) => {
                p.request_problem_information = Some(v)
            }
            (id::AUTHENTICATION_METHOD, Value::Str(v)) => p.authentication_method = Some(v),
            (id::AUTHENTICATION_DATA, Value::Bin(v)) => p.authentication_data = Some(v),
            _ => {}
        }
    }
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(auth_data_without_method(props.section()));
    }
    p.user_properties = UserProperties {
        raw: props.block_if_seen(id::USER_PROPERTY),
    };
    Ok(p)
}

fn will_props(r: &mut Reader<'_>) -> Result<WillProperties, DecodeError> {
    let mut props = Props::read(r, props::WILL)?;
    let mut p = WillProperties::default();
    while let Some((ident, value)) = props.next()? {
        match (ident, value) {
            (id::WILL_DELAY_INTERVAL, Value::U32(v)) => p.will_delay_secs = Some(v),
            (id::PAYLOAD_FORMAT_INDICATOR, Value::Bool(v)) => p.payload_format_utf8 = Some(v),
            (id::MESSAGE_EXPIRY_INTERVAL, Value::U32(v)) => p.message_expiry_secs = Some(v),
            (id::CONTENT_TYPE, Value::Str(v)) => p.content_type = Some(v),
            (id::RESPONSE_TOPIC, Value::Str(v)) => {
                topic_name(&v)?;
                p.response_topic = Some(v)
            }
            (id::CORRELATION_DATA, Value::Bin(v)) => p.correlation_data = Some(v),
            _ => {}
        }
    }
    p.user_properties = UserProperties {
        raw: props.block_if_seen(id::USER_PROPERTY),
    };
    Ok(p)
}

fn connack(r: &mut Reader<'_>, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::malformed(
            "MQTT-3.2.2-1",
            "CONNACK reserved flags are set",
        ));
    }
    let code = r.u8()?;
    if !v5 && code > 5 {
        // MQTT 3.1.1 table 3.1: 6-255 are reserved. Rejecting them also keeps decode and
        // encode inverse (the encoder maps any v5 code onto 0-5).
        return Err(DecodeError::malformed(
            "MQTT-3.2.2.3",
            "reserved MQTT 3.1.1 CONNACK return code (above 5)",
        ));
    }
    let (reason_code, properties) = if v5 {
        (ReasonCode(code), connack_props(r)?)
    } else {
        (
            ReasonCode::from_v3_connack(code),
            ConnAckProperties::default(),
        )
    };
    r.finish()?;
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        reason_code,
        properties,
    })
}

fn connack_props(r: &mut Reader<'_>) -> Result<ConnAckProperties, DecodeError> {
    let mut props = Props::read(r, props::CONNACK)?;
    let mut p = ConnAckProperties::default();
    while let Some((ident, value)) = props.next()? {
        match (ident, value) {
            (id::SESSION_EXPIRY_INTERVAL, Value::U32(v)) => p.session_expiry_secs = Some(v),
            (id::RECEIVE_MAXIMUM, Value::U16(v)) => p.receive_maximum = NonZeroU16::new(v),
            (id::MAXIMUM_QOS, Value::Byte(v)) => p.maximum_qos = QoS::from_u8(v),
            (id::RETAIN_AVAILABLE, Value::Bool(v)) => p.retain_available = Some(v),
            (id::MAXIMUM_PACKET_SIZE, Value::U32(v)) => p.maximum_packet_size = NonZeroU32::new(v),
            (id::ASSIGNED_CLIENT_IDENTIFIER, Value::Str(v)) => p.assigned_client_id = Some(v),
            (id::TOPIC_ALIAS_MAXIMUM, Value::U16(v)) => p.topic_alias_maximum = Some(v),
            (id::REASON_STRING, Value::Str(v)) => p.reason_string = Some(v),
            (id::WILDCARD_SUBSCRIPTION_AVAILABLE, Value::Bool(v)) => {
                p.wildcard_subscription_available = Some(v)
            }
            (id::SUBSCRIPTION_IDENTIFIER_AVAILABLE, Value::Bool(v)) => {
                p.subscription_ids_available = Some(v)
            }
            (id::SHARED_SUBSCRIPTION_AVAILABLE, Value::Bool(v)) => {
                p.shared_subscription_available = Some(v)
            }
            (id::SERVER_KEEP_ALIVE, Value::U16(v)) => p.server_keep_alive_secs = Some(v),
            (id::RESPONSE_INFORMATION, Value::Str(v)) => p.response_information = Some(v),
            (id::SERVER_REFERENCE, Value::Str(v)) => p.server_reference = Some(v),
            (id::AUTHENTICATION_METHOD, Value::Str(v)) => p.authentication_method = Some(v),
            (id::AUTHENTICATION_DATA, Value::Bin(v)) => p.authentication_data = Some(v),
            _ => {}
        }
    }
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(auth_data_without_method(props.section()));
    }
    p.user_properties = UserProperties {
        raw: props.block_if_seen(id::USER_PROPERTY),
    };
    Ok(p)
}

// ---- PUBLISH and its acknowledgements ---------------------------------------------------------

fn publish(flags: u8, r: &mut Reader<'_>, v5: bool) -> Result<Option<Packet>, DecodeError> {
    let dup = flags & 0x08 != 0;
    let retain = flags & 0x01 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0x03)
        .ok_or_else(|| DecodeError::malformed("MQTT-3.3.1-4", "PUBLISH QoS is 3"))?;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::protocol(
            "MQTT-3.3.1-2",
            "DUP flag set on a QoS 0 PUBLISH",
        ));
    }
    let topic = r.string()?;
    let qos_pid = match qos {
        QoS::AtMostOnce => QosPid::AtMostOnce,
        QoS::AtLeastOnce => QosPid::AtLeastOnce(packet_id(r)?),
        QoS::ExactlyOnce => QosPid::ExactlyOnce(packet_id(r)?),
    };
    let mut properties = PublishProperties::default();
    if v5 {
        publish_props(r, &mut properties)?;
    }
    if topic.is_empty() {
        if !v5 {
            return Err(DecodeError::TopicName {
                statement: "MQTT-4.7.3-1",
                what: "topic name is empty",
            });
        }
        if properties.topic_alias.is_none() {
            return Err(DecodeError::protocol(
                "MQTT-3.3.2-1",
                "empty topic name without a Topic Alias",
            ));
        }
    } else {
        topic_name(&topic)?;
    }
    let payload = r.rest();
    Ok(Some(Packet::Publish(Publish {
        dup,
        qos_pid,
        retain,
        topic,
        properties,
        payload,
    })))
}

/// Fills `p` (in place: the struct is large and this is the hot path).
fn publish_props(r: &mut Reader<'_>, p: &mut PublishProperties) -> Result<(), DecodeError> {
    let mut props = Props::read(r, props::PUBLISH)?;
    while let Some((ident, value)) = props.next()? {
        match (ident, value) {
            (id::PAYLOAD_FORMAT_INDICATOR, Value::Bool(v)) => p.payload_format_utf8 = Some(v),
            (id::MESSAGE_EXPIRY_INTERVAL, Value::U32(v)) => p.message_expiry_secs = Some(v),
            (id::TOPIC_ALIAS, Value::U16(v)) => p.topic_alias = NonZeroU16::new(v),
            (id::RESPONSE_TOPIC, Value::Str(v)) => {
                // The Response Topic MUST be a topic name, without wildcards [MQTT-3.3.2-14].
                topic_name(&v)?;
                p.response_topic = Some(v)
            }
            (id::CORRELATION_DATA, Value::Bin(v)) => p.correlation_data = Some(v),
            (id::CONTENT_TYPE, Value::Str(v)) => p.content_type = Some(v),
            _ => {}
        }
    }
    // Both keep the whole block (a reference count, no copy); each sees only its own entries.
    p.user_properties = UserProperties {
        raw: props.block_if_seen(id::USER_PROPERTY),
    };
    p.subscription_ids = SubscriptionIds {
        raw: props.block_if_seen(id::SUBSCRIPTION_IDENTIFIER),
    };
    Ok(())
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: in v5 the reason code and properties may be omitted
/// (remaining length 2: success, no properties; 3: no properties).
fn pub_resp(r: &mut Reader<'_>, v5: bool, allowed: Allowed) -> Result<PubResp, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut resp = PubResp::new(packet_id, ReasonCode::SUCCESS);
    if v5 && !r.is_empty() {
        resp.reason_code = ReasonCode(r.u8()?);
        if !r.is_empty() {
            resp.properties = ack_props(r, allowed)?;
        }
    }
    r.finish()?;
    Ok(resp)
}

fn ack_props(r: &mut Reader<'_>, allowed: Allowed) -> Result<AckProperties, DecodeError> {
    let mut props = Props::read(r, allowed)?;
    let mut p = AckProperties::default();
    while let Some((ident, value)) = props.next()? {
        if let (id::REASON_STRING, Value::Str(v)) = (ident, value) {
            p.reason_string = Some(v);
        }
    }
    p.user_properties = UserProperties {
        raw: props.block_if_seen(id::USER_PROPERTY),
    };
    Ok(p)
}

// ---- SUBSCRIBE / UNSUBSCRIBE and their acknowledgements ---------------------------------------

fn subscribe(r: &mut Reader<'_>, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut subscription_id = None;
    let mut user_properties = UserProperties::default();
    if v5 {
        let mut props = Props::read(r, props::SUBSCRIBE)?;
        while props.next()?.is_some() {}
        let ids = SubscriptionIds {
            raw: props.block_if_seen(id::SUBSCRIPTION_IDENTIFIER),
        };
        subscription_id = ids.iter().next();
        user_properties = UserProperties {
            raw: props.block_if_seen(id::USER_PROPERTY),
        };
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        validate_topic_filter(filter.as_bytes())?;
        let options = subscription_options(r.u8()?, v5)?;
        if options.no_local && parse_shared(filter.as_bytes())?.is_some() {
            return Err(DecodeError::protocol(
                "MQTT-3.8.3-4",
                "No Local set on a shared subscription",
            ));
        }
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(DecodeError::protocol(
            "MQTT-3.8.3-2",
            "SUBSCRIBE without a topic filter",
        ));
    }
    Ok(Subscribe {
        packet_id,
        subscription_id,
        user_properties,
        filters,
    })
}

fn subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions, DecodeError> {
    // MQTT 3.1.1 has only the QoS bits; v5 adds No Local, Retain As Published and Retain
    // Handling. Reserved bits must be 0 [MQTT-3.8.3-5].
    let reserved = if v5 { 0xC0 } else { 0xFC };
    if byte & reserved != 0 {
        return Err(DecodeError::malformed(
            "MQTT-3.8.3-5",
            "reserved subscription option bits set",
        ));
    }
    let qos = QoS::from_u8(byte & 0x03).ok_or_else(|| {
        DecodeError::protocol("MQTT-3.8.3.1", "subscription option Maximum QoS is 3")
    })?;
    let retain_handling = match (byte >> 4) & 0x03 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendAtSubscribeIfNew,
        2 => RetainHandling::DoNotSend,
        _ => {
            return Err(DecodeError::protocol(
                "MQTT-3.8.3.1",
                "subscription option Retain Handling is 3",
            ));
        }
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

fn suback(r: &mut Reader<'_>, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = if v5 {
        ack_props(r, props::SUBACK)?
    } else {
        AckProperties::default()
    };
    let codes = r.rest_slice();
    if !v5
        && codes
            .iter()
            .any(|c| !matches!(c, 0x00 | 0x01 | 0x02 | 0x80))
    {
        return Err(DecodeError::malformed(
            "MQTT-3.9.3-2",
            "SUBACK return code not 0, 1, 2 or 0x80",
        ));
    }
    let reason_codes = codes.iter().map(|&c| ReasonCode(c)).collect();
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

fn unsubscribe(r: &mut Reader<'_>, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut user_properties = UserProperties::default();
    if v5 {
        let mut props = Props::read(r, props::UNSUBSCRIBE)?;
        while props.next()?.is_some() {}
        user_properties = UserProperties {
            raw: props.block_if_seen(id::USER_PROPERTY),
        };
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        validate_topic_filter(filter.as_bytes())?;
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(DecodeError::protocol(
            "MQTT-3.10.3-2",
            "UNSUBSCRIBE without a topic filter",
        ));
    }
    Ok(Unsubscribe {
        packet_id,
        user_properties,
        filters,
    })
}

fn unsuback(r: &mut Reader<'_>, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    if !v5 {
        r.finish()?;
        return Ok(UnsubAck {
            packet_id,
            properties: AckProperties::default(),
            reason_codes: Vec::new(),
        });
    }
    let properties = ack_props(r, props::UNSUBACK)?;
    let reason_codes = r.rest_slice().iter().map(|&c| ReasonCode(c)).collect();
    Ok(UnsubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

// ---- DISCONNECT / AUTH ------------------------------------------------------------------------

fn disconnect(r: &mut Reader<'_>, v5: bool) -> Result<Disconnect, DecodeError> {
    let mut d = Disconnect::default();
    if v5 && !r.is_empty() {
        d.reason_code = ReasonCode(r.u8()?);
        if !r.is_empty() {
            let mut props = Props::read(r, props::DISCONNECT)?;
            let p = &mut d.properties;
            while let Some((ident, value)) = props.next()? {
                match (ident, value) {
                    (id::SESSION_EXPIRY_INTERVAL, Value::U32(v)) => p.session_expiry_secs = Some(v),
                    (id::REASON_STRING, Value::Str(v)) => p.reason_string = Some(v),
                    (id::SERVER_REFERENCE, Value::Str(v)) => p.server_reference = Some(v),
                    _ => {}
                }
            }
            p.user_properties = UserProperties {
                raw: props.block_if_seen(id::USER_PROPERTY),
            };
        }
    }
    r.finish()?;
    Ok(d)
}

fn auth(r: &mut Reader<'_>) -> Result<Auth, DecodeError> {
    let mut a = Auth::default();
    if !r.is_empty() {
        a.reason_code = ReasonCode(r.u8()?);
        if !r.is_empty() {
            let mut props = Props::read(r, props::AUTH)?;
            let p = &mut a.properties;
            while let Some((ident, value)) = props.next()? {
                match (ident, value) {
                    (id::AUTHENTICATION_METHOD, Value::Str(v)) => p.authentication_method = Some(v),
                    (id::AUTHENTICATION_DATA, Value::Bin(v)) => p.authentication_data = Some(v),
                    (id::REASON_STRING, Value::Str(v)) => p.reason_string = Some(v),
                    _ => {}
                }
            }
            if p.authentication_data.is_some() && p.authentication_method.is_none() {
                return Err(auth_data_without_method(props.section()));
            }
            p.user_properties = UserProperties {
                raw: props.block_if_seen(id::USER_PROPERTY),
            };
        }
    }
    r.finish()?;
    Ok(a)
}
