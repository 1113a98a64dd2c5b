//! Packet encoding into a caller's buffer.
//!
//! Each packet has one body writer, generic over a [`Sink`]: it runs first over a byte
//! [`Counter`] to learn the remaining length (and to find any field too long for the wire),
//! then over the output buffer, which is reserved once. Nothing is buffered in between, so
//! encoding allocates only if `out` must grow.

use core::num::{NonZeroU16, NonZeroU32};

use bytes::{BufMut, BytesMut};

use crate::props::{
    WriteProps, id, prop_bin, prop_bool, prop_str, prop_sub_ids, prop_u8, prop_u16, prop_u32,
    prop_user, props_len, put_props,
};
use crate::wire::{Counter, Sink, checked_varint, put_binary, put_varint, varint_len};
use crate::{
    AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties,
    Disconnect, DisconnectProperties, EncodeError, Packet, ProtocolVersion, PubResp, PublishHeader,
    PublishProperties, QosPid, ReasonCode, Str, SubAck, Subscribe, UnsubAck, Unsubscribe,
    UserProperties, WillProperties,
};

/// Appends `packet`, encoded for `version`, to `out`. CONNECT is encoded for its own
/// `protocol`. Nothing is appended when an error is returned.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let remaining = remaining_len(packet, version)?;
    encode_sized(packet, version, remaining, out)
}

/// The Remaining Length of `packet` encoded for `version`: what follows the fixed header.
pub(crate) fn remaining_len(
    packet: &Packet,
    version: ProtocolVersion,
) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    body(packet, version, &mut counter)?;
    Ok(counter.0)
}

/// The whole frame's length for a Remaining Length of `remaining`: what a receiver compares
/// with its Maximum Packet Size.
pub(crate) fn frame_len(remaining: usize) -> usize {
    1 + varint_len(remaining) + remaining
}

/// Appends `packet`, whose Remaining Length [`remaining_len`] gave, to `out`.
pub(crate) fn encode_sized(
    packet: &Packet,
    version: ProtocolVersion,
    remaining: usize,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let first = first_byte(packet, version)?;
    put_frame(out, first, remaining, |out| body(packet, version, out))
}

/// Reserves room, writes the fixed header, then the body with `write_body`.
fn put_frame(
    out: &mut BytesMut,
    first: u8,
    remaining: usize,
    write_body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let remaining_varint = checked_varint(remaining)?;
    out.reserve(1 + varint_len(remaining) + remaining);
    let start = out.len();
    out.put_u8(first);
    put_varint(out, remaining_varint);
    let body_start = out.len();
    // The counting pass ran the same checks, so writing cannot fail; truncate anyway so that
    // an error never leaves half a packet in `out`.
    if let Err(e) = write_body(out) {
        out.truncate(start);
        return Err(e);
    }
    debug_assert_eq!(out.len() - body_start, remaining);
    Ok(())
}

fn first_byte(packet: &Packet, version: ProtocolVersion) -> Result<u8, EncodeError> {
    Ok(match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => publish_first_byte(p.dup, p.qos_pid, p.retain),
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) if version.is_v5() => 0xF0,
        Packet::Auth(_) => {
            return Err(EncodeError::NotInVersion {
                packet: "AUTH",
                version,
            });
        }
    })
}

fn publish_first_byte(dup: bool, qos_pid: QosPid, retain: bool) -> u8 {
    0x30 | u8::from(dup) << 3 | (qos_pid.qos() as u8) << 1 | u8::from(retain)
}

fn body<S: Sink>(packet: &Packet, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => connect(c, s),
        Packet::ConnAck(c) => connack(c, v5, s),
        Packet::Publish(p) => {
            let props = PubProps::forwarding(
                &p.properties,
                p.properties.topic_alias,
                p.properties.message_expiry_secs,
                p.properties.subscription_ids.iter(),
            );
            publish_head(s, p.topic.as_bytes(), p.qos_pid, v5.then_some(&props))?;
            s.push_slice(&p.payload);
            Ok(())
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            pub_resp(r, v5, s)
        }
        Packet::Subscribe(sub) => subscribe(sub, v5, s),
        Packet::SubAck(a) => suback(a, v5, s),
        Packet::Unsubscribe(u) => unsubscribe(u, v5, s),
        Packet::UnsubAck(a) => unsuback(a, v5, s),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => disconnect(d, v5, s),
        Packet::Auth(a) => auth(a, s),
    }
}

// ---- PUBLISH -------------------------------------------------------------------------------

/// PUBLISH properties, in the order both [`encode`] and [`PublishHeader::encode`] write them
/// (so the two produce identical bytes).
struct PubProps<'a, I> {
    payload_format_utf8: Option<bool>,
    message_expiry_secs: Option<u32>,
    topic_alias: Option<NonZeroU16>,
    response_topic: Option<&'a Str>,
    correlation_data: Option<&'a [u8]>,
    user_properties: Option<&'a UserProperties>,
    subscription_ids: I,
    content_type: Option<&'a Str>,
}

impl<'a, I> PubProps<'a, I> {
    fn forwarding(
        forwarded: &'a PublishProperties,
        topic_alias: Option<NonZeroU16>,
        message_expiry_secs: Option<u32>,
        subscription_ids: I,
    ) -> Self {
        PubProps {
            payload_format_utf8: forwarded.payload_format_utf8,
            message_expiry_secs,
            topic_alias,
            response_topic: forwarded.response_topic.as_ref(),
            correlation_data: forwarded.correlation_data.as_deref(),
            user_properties: Some(&forwarded.user_properties),
            subscription_ids,
            content_type: forwarded.content_type.as_ref(),
        }
    }
}

impl<I: Iterator<Item = NonZeroU32> + Clone> WriteProps for PubProps<'_, I> {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        prop_bool(s, id::PAYLOAD_FORMAT_INDICATOR, self.payload_format_utf8);
        prop_u32(s, id::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_secs);
        prop_u16(s, id::TOPIC_ALIAS, self.topic_alias.map(NonZeroU16::get));
        prop_str(s, id::RESPONSE_TOPIC, self.response_topic)?;
        prop_bin(
            s,
            id::CORRELATION_DATA,
            "correlation data",
            self.correlation_data,
        )?;
        if let Some(user) = self.user_properties {
            prop_user(s, user)?;
        }
        prop_sub_ids(s, self.subscription_ids.clone())?;
        prop_str(s, id::CONTENT_TYPE, self.content_type)
    }
}

/// Topic, packet identifier and (v5) properties: everything of a PUBLISH but the payload.
fn publish_head<S: Sink, I: Iterator<Item = NonZeroU32> + Clone>(
    s: &mut S,
    topic: &[u8],
    qos_pid: QosPid,
    props: Option<&PubProps<'_, I>>,
) -> Result<(), EncodeError> {
    put_binary(s, "topic name", topic)?;
    if let Some(packet_id) = qos_pid.packet_id() {
        s.push_u16(packet_id.get());
    }
    match props {
        Some(props) => put_props(s, props),
        None => Ok(()),
    }
}

impl PublishHeader<'_> {
    fn props(&self) -> PubProps<'_, core::iter::Copied<core::slice::Iter<'_, NonZeroU32>>> {
        let ids = self.subscription_ids.iter().copied();
        match self.forwarded {
            Some(f) => PubProps::forwarding(f, self.topic_alias, self.message_expiry_secs, ids),
            None => PubProps {
                payload_format_utf8: None,
                message_expiry_secs: self.message_expiry_secs,
                topic_alias: self.topic_alias,
                response_topic: None,
                correlation_data: None,
                user_properties: None,
                subscription_ids: ids,
                content_type: None,
            },
        }
    }

    /// The remaining length of the PUBLISH (payload included) and, in v5, the length of its
    /// property block: computed once so that encoding walks the properties only twice (size,
    /// write).
    fn layout(
        &self,
        version: ProtocolVersion,
        payload_len: usize,
    ) -> Result<(usize, Option<usize>), EncodeError> {
        let topic_len = self.topic.len();
        if topic_len > usize::from(u16::MAX) {
            return Err(EncodeError::FieldTooLong {
                field: "topic name",
                len: topic_len,
            });
        }
        let props_len = if version.is_v5() {
            Some(props_len(&self.props())?)
        } else {
            None
        };
        let packet_id_len = if self.qos_pid.packet_id().is_some() {
            2
        } else {
            0
        };
        let head_len =
            2 + topic_len + packet_id_len + props_len.map_or(0, |len| varint_len(len) + len);
        let remaining = head_len.saturating_add(payload_len);
        checked_varint(remaining)?;
        Ok((remaining, props_len))
    }

    /// Total encoded length of the PUBLISH (fixed header + variable header + properties +
    /// `payload_len`) for `version`: what the sender compares with the receiver's maximum
    /// packet size before sending [MQTT-3.1.2-25].
    pub fn packet_len(
        &self,
        version: ProtocolVersion,
        payload_len: usize,
    ) -> Result<usize, EncodeError> {
        let (remaining, _) = self.layout(version, payload_len)?;
        Ok(1 + varint_len(remaining) + remaining)
    }

    /// Appends the PUBLISH's fixed header, variable header and properties to `out`, sized for
    /// a payload of `payload_len` bytes that the caller sends right after. Allocates nothing
    /// when `out` has room. Nothing is appended when an error is returned.
    pub fn encode(
        &self,
        version: ProtocolVersion,
        payload_len: usize,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let (remaining, props_len) = self.layout(version, payload_len)?;
        let head_len = remaining - payload_len;
        out.reserve(1 + varint_len(remaining) + head_len);
        let start = out.len();
        out.put_u8(publish_first_byte(self.dup, self.qos_pid, self.retain));
        put_varint(out, checked_varint(remaining)?);
        let written = self.write_head(out, props_len);
        // `layout` ran the same checks, so this cannot fail; never leave half a header.
        if written.is_err() {
            out.truncate(start);
        }
        debug_assert!(
            written.is_err() || out.len() - start == 1 + varint_len(remaining) + head_len
        );
        written
    }

    fn write_head(&self, out: &mut BytesMut, props_len: Option<usize>) -> Result<(), EncodeError> {
        put_binary(out, "topic name", self.topic)?;
        if let Some(packet_id) = self.qos_pid.packet_id() {
            out.push_u16(packet_id.get());
        }
        if let Some(len) = props_len {
            put_varint(out, checked_varint(len)?);
            self.props().write(out)?;
        }
        Ok(())
    }
}

// ---- CONNECT / CONNACK ---------------------------------------------------------------------

fn connect<S: Sink>(c: &Connect, s: &mut S) -> Result<(), EncodeError> {
    let v5 = c.protocol.is_v5();
    let name: &[u8] = if c.protocol == ProtocolVersion::V3_1 {
        b"MQIsdp"
    } else {
        b"MQTT"
    };
    put_binary(s, "protocol name", name)?;
    s.push_u8(c.protocol.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(will) = &c.will {
        flags |= 0x04 | (will.qos as u8) << 3 | u8::from(will.retain) << 5;
    }
    flags |= u8::from(c.password.is_some()) << 6 | u8::from(c.username.is_some()) << 7;
    s.push_u8(flags);
    s.push_u16(c.keep_alive_secs);
    if v5 {
        put_props(s, &c.properties)?;
    }
    put_binary(s, "client identifier", c.client_id.as_bytes())?;
    if let Some(will) = &c.will {
        if v5 {
            put_props(s, &will.properties)?;
        }
        put_binary(s, "will topic", will.topic.as_bytes())?;
        put_binary(s, "will payload", &will.payload)?;
    }
    if let Some(username) = &c.username {
        put_binary(s, "user name", username.as_bytes())?;
    }
    if let Some(password) = &c.password {
        put_binary(s, "password", password)?;
    }
    Ok(())
}

impl WriteProps for ConnectProperties {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        prop_u32(s, id::SESSION_EXPIRY_INTERVAL, self.session_expiry_secs);
        prop_u16(
            s,
            id::RECEIVE_MAXIMUM,
            self.receive_maximum.map(NonZeroU16::get),
        );
        prop_u32(
            s,
            id::MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        prop_u16(s, id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        prop_bool(
            s,
            id::REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        prop_bool(
            s,
            id::REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        prop_user(s, &self.user_properties)?;
        prop_str(
            s,
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        )?;
        prop_bin(
            s,
            id::AUTHENTICATION_DATA,
            "authentication data",
            self.authentication_data.as_deref(),
        )
    }
}

impl WriteProps for WillProperties {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        prop_u32(s, id::WILL_DELAY_INTERVAL, self.will_delay_secs);
        prop_bool(s, id::PAYLOAD_FORMAT_INDICATOR, self.payload_format_utf8);
        prop_u32(s, id::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_secs);
        prop_str(s, id::CONTENT_TYPE, self.content_type.as_ref())?;
        prop_str(s, id::RESPONSE_TOPIC, self.response_topic.as_ref())?;
        prop_bin(
            s,
            id::CORRELATION_DATA,
            "correlation data",
            self.correlation_data.as_deref(),
        )?;
        prop_user(s, &self.user_properties)
    }
}

fn connack<S: Sink>(c: &ConnAck, v5: bool, s: &mut S) -> Result<(), EncodeError> {
    s.push_u8(u8::from(c.session_present));
    if v5 {
        s.push_u8(c.reason_code.0);
        put_props(s, &c.properties)
    } else {
        s.push_u8(c.reason_code.to_v3_connack());
        Ok(())
    }
}

impl WriteProps for ConnAckProperties {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        prop_u32(s, id::SESSION_EXPIRY_INTERVAL, self.session_expiry_secs);
        prop_u16(
            s,
            id::RECEIVE_MAXIMUM,
            self.receive_maximum.map(NonZeroU16::get),
        );
        prop_u8(s, id::MAXIMUM_QOS, self.maximum_qos.map(|q| q as u8));
        prop_bool(s, id::RETAIN_AVAILABLE, self.retain_available);
        prop_u32(
            s,
            id::MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        prop_str(
            s,
            id::ASSIGNED_CLIENT_IDENTIFIER,
            self.assigned_client_id.as_ref(),
        )?;
        prop_u16(s, id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        prop_str(s, id::REASON_STRING, self.reason_string.as_ref())?;
        prop_user(s, &self.user_properties)?;
        prop_bool(
            s,
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        prop_bool(
            s,
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_ids_available,
        );
        prop_bool(
            s,
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        prop_u16(s, id::SERVER_KEEP_ALIVE, self.server_keep_alive_secs);
        prop_str(
            s,
            id::RESPONSE_INFORMATION,
            self.response_information.as_ref(),
        )?;
        prop_str(s, id::SERVER_REFERENCE, self.server_reference.as_ref())?;
        prop_str(
            s,
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        )?;
        prop_bin(
            s,
            id::AUTHENTICATION_DATA,
            "authentication data",
            self.authentication_data.as_deref(),
        )
    }
}

// ---- acknowledgements ----------------------------------------------------------------------

impl WriteProps for AckProperties {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        prop_str(s, id::REASON_STRING, self.reason_string.as_ref())?;
        prop_user(s, &self.user_properties)
    }
}

fn ack_props_empty(p: &AckProperties) -> bool {
    p.reason_string.is_none() && p.user_properties.is_empty()
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: the shortest form that carries the content (v5 3.4.2.1).
fn pub_resp<S: Sink>(r: &PubResp, v5: bool, s: &mut S) -> Result<(), EncodeError> {
    s.push_u16(r.packet_id.get());
    if !v5 {
        return Ok(());
    }
    let no_props = ack_props_empty(&r.properties);
    if r.reason_code == ReasonCode::SUCCESS && no_props {
        return Ok(());
    }
    s.push_u8(r.reason_code.0);
    if no_props {
        Ok(())
    } else {
        put_props(s, &r.properties)
    }
}

fn suback<S: Sink>(a: &SubAck, v5: bool, s: &mut S) -> Result<(), EncodeError> {
    s.push_u16(a.packet_id.get());
    if v5 {
        put_props(s, &a.properties)?;
        for code in &a.reason_codes {
            s.push_u8(code.0);
        }
    } else {
        // MQTT 3.1.1 knows only the granted QoS and 0x80 (failure) [MQTT-3.9.3-2].
        for code in &a.reason_codes {
            s.push_u8(if code.0 <= 0x02 { code.0 } else { 0x80 });
        }
    }
    Ok(())
}

fn unsuback<S: Sink>(a: &UnsubAck, v5: bool, s: &mut S) -> Result<(), EncodeError> {
    s.push_u16(a.packet_id.get());
    if v5 {
        put_props(s, &a.properties)?;
        for code in &a.reason_codes {
            s.push_u8(code.0);
        }
    }
    Ok(())
}

// ---- SUBSCRIBE / UNSUBSCRIBE ---------------------------------------------------------------

struct SubscribeProps<'a> {
    subscription_id: Option<NonZeroU32>,
    user_properties: &'a UserProperties,
}

impl WriteProps for SubscribeProps<'_> {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        prop_sub_ids(s, self.subscription_id.into_iter())?;
        prop_user(s, self.user_properties)
    }
}

fn subscribe<S: Sink>(sub: &Subscribe, v5: bool, s: &mut S) -> Result<(), EncodeError> {
    s.push_u16(sub.packet_id.get());
    if v5 {
        let props = SubscribeProps {
            subscription_id: sub.subscription_id,
            user_properties: &sub.user_properties,
        };
        put_props(s, &props)?;
    }
    for f in &sub.filters {
        put_binary(s, "topic filter", f.filter.as_bytes())?;
        let o = f.options;
        let mut byte = o.qos as u8;
        if v5 {
            byte |= u8::from(o.no_local) << 2
                | u8::from(o.retain_as_published) << 3
                | (o.retain_handling as u8) << 4;
        }
        s.push_u8(byte);
    }
    Ok(())
}

struct UserOnly<'a>(&'a UserProperties);

impl WriteProps for UserOnly<'_> {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        prop_user(s, self.0)
    }
}

fn unsubscribe<S: Sink>(u: &Unsubscribe, v5: bool, s: &mut S) -> Result<(), EncodeError> {
    s.push_u16(u.packet_id.get());
    if v5 {
        put_props(s, &UserOnly(&u.user_properties))?;
    }
    for f in &u.filters {
        put_binary(s, "topic filter", f.as_bytes())?;
    }
    Ok(())
}

// ---- DISCONNECT / AUTH ---------------------------------------------------------------------

impl WriteProps for DisconnectProperties {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        prop_u32(s, id::SESSION_EXPIRY_INTERVAL, self.session_expiry_secs);
        prop_str(s, id::REASON_STRING, self.reason_string.as_ref())?;
        prop_user(s, &self.user_properties)?;
        prop_str(s, id::SERVER_REFERENCE, self.server_reference.as_ref())
    }
}

fn disconnect<S: Sink>(d: &Disconnect, v5: bool, s: &mut S) -> Result<(), EncodeError> {
    if !v5 {
        return Ok(());
    }
    let p = &d.properties;
    let no_props = p.session_expiry_secs.is_none()
        && p.reason_string.is_none()
        && p.user_properties.is_empty()
        && p.server_reference.is_none();
    reason_and_props(s, d.reason_code, no_props, p)
}

impl WriteProps for AuthProperties {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        prop_str(
            s,
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        )?;
        prop_bin(
            s,
            id::AUTHENTICATION_DATA,
            "authentication data",
            self.authentication_data.as_deref(),
        )?;
        prop_str(s, id::REASON_STRING, self.reason_string.as_ref())?;
        prop_user(s, &self.user_properties)
    }
}

fn auth<S: Sink>(a: &Auth, s: &mut S) -> Result<(), EncodeError> {
    let p = &a.properties;
    let no_props = p.authentication_method.is_none()
        && p.authentication_data.is_none()
        && p.reason_string.is_none()
        && p.user_properties.is_empty();
    reason_and_props(s, a.reason_code, no_props, p)
}

/// DISCONNECT and AUTH: nothing for success without properties (remaining length 0), the
/// reason code alone without properties, else both.
fn reason_and_props<S: Sink, P: WriteProps>(
    s: &mut S,
    reason: ReasonCode,
    no_props: bool,
    props: &P,
) -> Result<(), EncodeError> {
    if reason == ReasonCode::SUCCESS && no_props {
        return Ok(());
    }
    s.push_u8(reason.0);
    if no_props {
        Ok(())
    } else {
        put_props(s, props)
    }
}
