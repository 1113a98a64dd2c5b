//! Property identifiers and property-block parsing and writing (MQTT 5.0 section 2.2.2).
//!
//! A property block is parsed once, in wire order, by [`Props`]: it checks that each
//! identifier is allowed on the packet, appears at most once (except User Property and, in
//! PUBLISH, Subscription Identifier) and has a value in range. User properties and subscription
//! identifiers are not copied out: the packet keeps the block as a `Bytes` slice of the frame
//! and [`UserProperties::iter`] / [`SubscriptionIds::iter`] walk it again on demand.

use core::fmt;
use core::num::NonZeroU32;
use core::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::str::StrError;
use crate::wire::{Reader, Sink, checked_varint, parse_varint, put_binary, put_varint, str_error};
use crate::{DecodeError, EncodeError, Str, SubscriptionIds, UserProperties};

/// Property identifiers (MQTT 5.0 table 2-4).
pub(crate) mod id {
    pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub(crate) const CONTENT_TYPE: u8 = 0x03;
    pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
    pub(crate) const CORRELATION_DATA: u8 = 0x09;
    pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
    pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
    pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
    pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
    pub(crate) const REASON_STRING: u8 = 0x1F;
    pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
    pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub(crate) const TOPIC_ALIAS: u8 = 0x23;
    pub(crate) const MAXIMUM_QOS: u8 = 0x24;
    pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
    pub(crate) const USER_PROPERTY: u8 = 0x26;
    pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

const fn bits(ids: &[u8]) -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < ids.len() {
        mask |= 1 << ids[i];
        i += 1;
    }
    mask
}

/// Which properties a packet may carry (MQTT 5.0 table 2-4), as a bit per identifier.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allowed {
    ids: u64,
    /// Identifiers that may repeat.
    multi: u64,
    /// The section defining this packet's properties: each property there says "It is a
    /// Protocol Error to include X more than once" or names its valid values, without a
    /// numbered statement, so errors of that kind name the section.
    section: &'static str,
}

use id::*;

pub(crate) const CONNECT: Allowed = Allowed {
    ids: bits(&[
        SESSION_EXPIRY_INTERVAL,
        RECEIVE_MAXIMUM,
        MAXIMUM_PACKET_SIZE,
        TOPIC_ALIAS_MAXIMUM,
        REQUEST_RESPONSE_INFORMATION,
        REQUEST_PROBLEM_INFORMATION,
        USER_PROPERTY,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
    ]),
    multi: bits(&[USER_PROPERTY]),
    section: "MQTT-3.1.2.11",
};
pub(crate) const WILL: Allowed = Allowed {
    ids: bits(&[
        WILL_DELAY_INTERVAL,
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        USER_PROPERTY,
    ]),
    multi: bits(&[USER_PROPERTY]),
    section: "MQTT-3.1.3.2",
};
pub(crate) const CONNACK: Allowed = Allowed {
    ids: bits(&[
        SESSION_EXPIRY_INTERVAL,
        RECEIVE_MAXIMUM,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        MAXIMUM_PACKET_SIZE,
        ASSIGNED_CLIENT_IDENTIFIER,
        TOPIC_ALIAS_MAXIMUM,
        REASON_STRING,
        USER_PROPERTY,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        SHARED_SUBSCRIPTION_AVAILABLE,
        SERVER_KEEP_ALIVE,
        RESPONSE_INFORMATION,
        SERVER_REFERENCE,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
    ]),
    multi: bits(&[USER_PROPERTY]),
    section: "MQTT-3.2.2.3",
};
pub(crate) const PUBLISH: Allowed = Allowed {
    ids: bits(&[
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        TOPIC_ALIAS,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        USER_PROPERTY,
        SUBSCRIPTION_IDENTIFIER,
        CONTENT_TYPE,
    ]),
    multi: bits(&[USER_PROPERTY, SUBSCRIPTION_IDENTIFIER]),
    section: "MQTT-3.3.2.3",
};
/// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK: Reason String and User Property.
const fn ack(section: &'static str) -> Allowed {
    Allowed {
        ids: bits(&[REASON_STRING, USER_PROPERTY]),
        multi: bits(&[USER_PROPERTY]),
        section,
    }
}
pub(crate) const PUBACK: Allowed = ack("MQTT-3.4.2.2");
pub(crate) const PUBREC: Allowed = ack("MQTT-3.5.2.2");
pub(crate) const PUBREL: Allowed = ack("MQTT-3.6.2.2");
pub(crate) const PUBCOMP: Allowed = ack("MQTT-3.7.2.2");
pub(crate) const SUBACK: Allowed = ack("MQTT-3.9.2.1");
pub(crate) const UNSUBACK: Allowed = ack("MQTT-3.11.2.1");
pub(crate) const SUBSCRIBE: Allowed = Allowed {
    ids: bits(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]),
    multi: bits(&[USER_PROPERTY]),
    section: "MQTT-3.8.2.1",
};
pub(crate) const UNSUBSCRIBE: Allowed = Allowed {
    ids: bits(&[USER_PROPERTY]),
    multi: bits(&[USER_PROPERTY]),
    section: "MQTT-3.10.2.1",
};
pub(crate) const DISCONNECT: Allowed = Allowed {
    ids: bits(&[
        SESSION_EXPIRY_INTERVAL,
        REASON_STRING,
        USER_PROPERTY,
        SERVER_REFERENCE,
    ]),
    multi: bits(&[USER_PROPERTY]),
    section: "MQTT-3.14.2.2",
};
pub(crate) const AUTH: Allowed = Allowed {
    ids: bits(&[
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
        REASON_STRING,
        USER_PROPERTY,
    ]),
    multi: bits(&[USER_PROPERTY]),
    section: "MQTT-3.15.2.2",
};

/// Section 2.2.2.2: an identifier that is unknown or not valid for the packet type, or a value
/// not of the specified type, is a Malformed Packet.
const PROPERTY: &str = "MQTT-2.2.2.2";

/// A property value with its strings and binary data as ranges of the block it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawValue {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(Range<usize>),
    Bin(Range<usize>),
    Pair(Range<usize>, Range<usize>),
}

fn overrun() -> DecodeError {
    DecodeError::malformed(PROPERTY, "property overruns the property length")
}

fn read_fixed<const N: usize>(block: &[u8], pos: &mut usize) -> Result<[u8; N], DecodeError> {
    let bytes = block.get(*pos..*pos + N).ok_or_else(overrun)?;
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    *pos += N;
    Ok(out)
}

fn read_len_prefixed(block: &[u8], pos: &mut usize) -> Result<Range<usize>, DecodeError> {
    let len = usize::from(u16::from_be_bytes(read_fixed::<2>(block, pos)?));
    let range = *pos..*pos + len;
    if range.end > block.len() {
        return Err(overrun());
    }
    *pos = range.end;
    Ok(range)
}

/// Parses the property at `block[*pos..]` without checking where it is allowed. Strings are
/// not validated here (see [`Props`]).
pub(crate) fn parse_entry(block: &[u8], pos: &mut usize) -> Result<(u8, RawValue), DecodeError> {
    // The identifier is a Variable Byte Integer; every defined one fits in its first byte, so
    // a multi-byte identifier is simply an unknown one.
    let [ident] = read_fixed::<1>(block, pos)?;
    let value = match ident {
        PAYLOAD_FORMAT_INDICATOR
        | REQUEST_PROBLEM_INFORMATION
        | REQUEST_RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => RawValue::Byte(read_fixed::<1>(block, pos)?[0]),
        SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => {
            RawValue::U16(u16::from_be_bytes(read_fixed(block, pos)?))
        }
        MESSAGE_EXPIRY_INTERVAL
        | SESSION_EXPIRY_INTERVAL
        | WILL_DELAY_INTERVAL
        | MAXIMUM_PACKET_SIZE => RawValue::U32(u32::from_be_bytes(read_fixed(block, pos)?)),
        SUBSCRIPTION_IDENTIFIER => RawValue::VarInt(parse_varint(block, pos)?.ok_or_else(overrun)?),
        CONTENT_TYPE
        | RESPONSE_TOPIC
        | ASSIGNED_CLIENT_IDENTIFIER
        | AUTHENTICATION_METHOD
        | RESPONSE_INFORMATION
        | SERVER_REFERENCE
        | REASON_STRING => RawValue::Str(read_len_prefixed(block, pos)?),
        CORRELATION_DATA | AUTHENTICATION_DATA => RawValue::Bin(read_len_prefixed(block, pos)?),
        USER_PROPERTY => {
            let name = read_len_prefixed(block, pos)?;
            let value = read_len_prefixed(block, pos)?;
            RawValue::Pair(name, value)
        }
        _ => {
            return Err(DecodeError::malformed(
                PROPERTY,
                "unknown property identifier",
            ));
        }
    };
    Ok((ident, value))
}

/// A decoded property value; strings are validated, everything is a slice of the frame.
#[derive(Debug)]
pub(crate) enum Value {
    Byte(u8),
    Bool(bool),
    U16(u16),
    U32(u32),
    Str(Str),
    Bin(Bytes),
    /// A user property or subscription identifier: left in the block.
    InBlock,
}

/// Walks one packet's property block, enforcing which identifiers are allowed, duplicates and
/// value ranges.
#[derive(Debug)]
pub(crate) struct Props<'a> {
    frame: &'a Bytes,
    start: usize,
    block: &'a [u8],
    pos: usize,
    allowed: Allowed,
    seen: u64,
}

impl<'a> Props<'a> {
    /// Reads the Property Length from `r` and takes that many bytes as the block.
    pub(crate) fn read(r: &mut Reader<'a>, allowed: Allowed) -> Result<Props<'a>, DecodeError> {
        let len = r.varint()?;
        let range = r
            .take(len as usize)
            .map_err(|_| DecodeError::malformed(PROPERTY, "property length overruns the packet"))?;
        let frame = r.frame();
        let block = frame.get(range.clone()).unwrap_or_default();
        Ok(Props {
            frame,
            start: range.start,
            block,
            pos: 0,
            allowed,
            seen: 0,
        })
    }

    /// The whole block if property `ident` occurred in it, else an empty `Bytes` (no refcount).
    pub(crate) fn block_if_seen(&self, ident: u8) -> Bytes {
        if self.seen & (1 << ident) != 0 {
            self.frame.slice(self.start..self.start + self.block.len())
        } else {
            Bytes::new()
        }
    }

    /// The section defining this packet's properties, for errors about their combination.
    pub(crate) fn section(&self) -> &'static str {
        self.allowed.section
    }

    fn slice(&self, r: Range<usize>) -> Bytes {
        self.frame.slice(self.start + r.start..self.start + r.end)
    }

    pub(crate) fn next(&mut self) -> Result<Option<(u8, Value)>, DecodeError> {
        if self.pos >= self.block.len() {
            return Ok(None);
        }
        let (ident, raw) = parse_entry(self.block, &mut self.pos)?;
        let bit = 1u64 << ident;
        if self.allowed.ids & bit == 0 {
            return Err(DecodeError::malformed(
                PROPERTY,
                "property not valid on this packet",
            ));
        }
        if self.seen & bit != 0 && self.allowed.multi & bit == 0 {
            return Err(DecodeError::protocol(
                self.allowed.section,
                "property included more than once",
            ));
        }
        self.seen |= bit;
        let value = match raw {
            RawValue::Byte(b) => check_byte(ident, b, self.allowed.section)?,
            RawValue::U16(v) => {
                if v == 0 && ident == RECEIVE_MAXIMUM {
                    return Err(DecodeError::protocol(
                        self.allowed.section,
                        "Receive Maximum is 0",
                    ));
                }
                if v == 0 && ident == TOPIC_ALIAS {
                    return Err(DecodeError::protocol("MQTT-3.3.2-8", "Topic Alias is 0"));
                }
                Value::U16(v)
            }
            RawValue::U32(v) => {
                if v == 0 && ident == MAXIMUM_PACKET_SIZE {
                    return Err(DecodeError::protocol(
                        self.allowed.section,
                        "Maximum Packet Size is 0",
                    ));
                }
                Value::U32(v)
            }
            RawValue::VarInt(v) => {
                if v == 0 {
                    return Err(DecodeError::protocol(
                        self.allowed.section,
                        "Subscription Identifier is 0",
                    ));
                }
                Value::InBlock
            }
            RawValue::Str(r) => Value::Str(Str::from_bytes(self.slice(r)).map_err(str_error)?),
            RawValue::Bin(r) => Value::Bin(self.slice(r)),
            RawValue::Pair(k, v) => {
                validate_str(self.block.get(k).unwrap_or_default())?;
                validate_str(self.block.get(v).unwrap_or_default())?;
                Value::InBlock
            }
        };
        Ok(Some((ident, value)))
    }
}

/// The checks of [`Str::from_bytes`] on a borrowed slice (a user property is not kept as `Str`).
fn validate_str(bytes: &[u8]) -> Result<(), DecodeError> {
    match core::str::from_utf8(bytes) {
        Err(_) => Err(str_error(StrError::InvalidUtf8)),
        Ok(_) if bytes.contains(&0) => Err(str_error(StrError::NullCharacter)),
        Ok(_) => Ok(()),
    }
}

fn check_byte(ident: u8, b: u8, section: &'static str) -> Result<Value, DecodeError> {
    match (ident, b) {
        (MAXIMUM_QOS, 0 | 1) => Ok(Value::Byte(b)),
        (MAXIMUM_QOS, _) => Err(DecodeError::protocol(section, "Maximum QoS is not 0 or 1")),
        (_, 0) => Ok(Value::Bool(false)),
        (_, 1) => Ok(Value::Bool(true)),
        (PAYLOAD_FORMAT_INDICATOR, _) => Err(DecodeError::protocol(
            section,
            "Payload Format Indicator is not 0 or 1",
        )),
        _ => Err(DecodeError::protocol(
            section,
            "boolean property is not 0 or 1",
        )),
    }
}

// ---- writing ---------------------------------------------------------------------------------

/// A set of properties that can be written into a block.
pub(crate) trait WriteProps {
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError>;
}

/// Writes Property Length and the properties (see [`Sink::props`]).
pub(crate) fn put_props<S: Sink, P: WriteProps>(s: &mut S, props: &P) -> Result<(), EncodeError> {
    s.props(props)
}

/// The length of a property block's content (without its Property Length).
pub(crate) fn props_len<P: WriteProps>(props: &P) -> Result<usize, EncodeError> {
    let mut counter = crate::wire::Counter::default();
    props.write(&mut counter)?;
    checked_varint(counter.0)?;
    Ok(counter.0)
}

pub(crate) fn prop_u8<S: Sink>(s: &mut S, ident: u8, v: Option<u8>) {
    if let Some(v) = v {
        s.push_u8(ident);
        s.push_u8(v);
    }
}

pub(crate) fn prop_bool<S: Sink>(s: &mut S, ident: u8, v: Option<bool>) {
    prop_u8(s, ident, v.map(u8::from));
}

pub(crate) fn prop_u16<S: Sink>(s: &mut S, ident: u8, v: Option<u16>) {
    if let Some(v) = v {
        s.push_u8(ident);
        s.push_u16(v);
    }
}

pub(crate) fn prop_u32<S: Sink>(s: &mut S, ident: u8, v: Option<u32>) {
    if let Some(v) = v {
        s.push_u8(ident);
        s.push_u32(v);
    }
}

pub(crate) fn prop_str<S: Sink>(s: &mut S, ident: u8, v: Option<&Str>) -> Result<(), EncodeError> {
    prop_bin(s, ident, "string property", v.map(Str::as_bytes))
}

pub(crate) fn prop_bin<S: Sink>(
    s: &mut S,
    ident: u8,
    field: &'static str,
    v: Option<&[u8]>,
) -> Result<(), EncodeError> {
    if let Some(v) = v {
        s.push_u8(ident);
        put_binary(s, field, v)?;
    }
    Ok(())
}

/// Copies the User Property entries of `user` (only those, whatever else its block holds).
/// The block was validated when it was built (decoded or [`UserProperties::from_pairs`]), so
/// its entries are copied as they are, without re-checking lengths or UTF-8.
pub(crate) fn prop_user<S: Sink>(s: &mut S, user: &UserProperties) -> Result<(), EncodeError> {
    let raw: &[u8] = &user.raw;
    for (span, _) in entries(raw, USER_PROPERTY) {
        s.push_slice(raw.get(span).unwrap_or_default());
    }
    Ok(())
}

/// Writes one Subscription Identifier property per id.
pub(crate) fn prop_sub_ids<S: Sink>(
    s: &mut S,
    ids: impl Iterator<Item = NonZeroU32>,
) -> Result<(), EncodeError> {
    for sub_id in ids {
        let v = sub_id.get();
        if v > crate::wire::VARINT_MAX {
            return Err(EncodeError::FieldTooLong {
                field: "subscription identifier",
                len: v as usize,
            });
        }
        s.push_u8(SUBSCRIPTION_IDENTIFIER);
        put_varint(s, v);
    }
    Ok(())
}

// ---- UserProperties / SubscriptionIds ----------------------------------------------------------

/// Iterates the entries of a (validated) block with identifier `want`, with the span of the
/// whole entry (identifier included).
fn entries(raw: &[u8], want: u8) -> impl Iterator<Item = (Range<usize>, RawValue)> + Clone + '_ {
    let mut pos = 0;
    core::iter::from_fn(move || {
        while pos < raw.len() {
            let start = pos;
            // The block was validated when it was built, so an error cannot happen; stopping
            // is the safe answer if it somehow did.
            let (ident, value) = parse_entry(raw, &mut pos).ok()?;
            if ident == want {
                return Some((start..pos, value));
            }
        }
        None
    })
}

fn as_str(raw: &[u8], r: Range<usize>) -> &str {
    core::str::from_utf8(raw.get(r).unwrap_or_default()).unwrap_or_default()
}

impl UserProperties {
    /// No user properties.
    pub fn new() -> UserProperties {
        UserProperties::default()
    }

    /// Encodes `pairs` into a new block (allocates once; for senders, not the hot path).
    /// Fails if a name or value is longer than 65535 bytes. A name or value containing U+0000
    /// is encoded as given, and a receiver will reject it [MQTT-1.5.4-2].
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<UserProperties, EncodeError> {
        let mut out = BytesMut::new();
        for (name, value) in pairs {
            out.put_u8(USER_PROPERTY);
            put_binary(&mut out, "user property name", name.as_bytes())?;
            put_binary(&mut out, "user property value", value.as_bytes())?;
        }
        Ok(UserProperties { raw: out.freeze() })
    }

    /// The (name, value) pairs in wire order. Allocates nothing.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        let raw: &[u8] = &self.raw;
        entries(raw, USER_PROPERTY).filter_map(move |(_, v)| match v {
            RawValue::Pair(k, v) => Some((as_str(raw, k), as_str(raw, v))),
            _ => None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl SubscriptionIds {
    /// Encodes `ids` into a new block.
    ///
    /// # Panics
    /// If an id exceeds 268 435 455, the largest a Variable Byte Integer can carry: ids come
    /// from SUBSCRIBE packets, which cannot carry larger ones, so this is a programming error.
    pub fn from_ids(ids: &[NonZeroU32]) -> SubscriptionIds {
        let mut out = BytesMut::new();
        for sub_id in ids {
            assert!(
                sub_id.get() <= crate::wire::VARINT_MAX,
                "subscription id {sub_id} out of range"
            );
            out.put_u8(SUBSCRIPTION_IDENTIFIER);
            put_varint(&mut out, sub_id.get());
        }
        SubscriptionIds { raw: out.freeze() }
    }

    /// The identifiers in wire order. Allocates nothing.
    pub fn iter(&self) -> impl Iterator<Item = NonZeroU32> + Clone + '_ {
        entries(&self.raw, SUBSCRIPTION_IDENTIFIER).filter_map(|(_, v)| match v {
            RawValue::VarInt(v) => NonZeroU32::new(v),
            _ => None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl PartialEq for UserProperties {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}
impl Eq for UserProperties {}

impl PartialEq for SubscriptionIds {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}
impl Eq for SubscriptionIds {}

impl fmt::Debug for UserProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl fmt::Debug for SubscriptionIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_identifier_parses_with_its_type() {
        let all = [
            CONNECT,
            WILL,
            CONNACK,
            PUBLISH,
            PUBACK,
            PUBREC,
            PUBREL,
            PUBCOMP,
            SUBSCRIBE,
            SUBACK,
            UNSUBSCRIBE,
            UNSUBACK,
            DISCONNECT,
            AUTH,
        ];
        let union = all.iter().fold(0u64, |m, a| m | a.ids);
        // Table 2-4 has 27 identifiers, each allowed somewhere.
        assert_eq!(union.count_ones(), 27);
        for ident in 0..64u8 {
            // Enough zero bytes for any value type (zero-length strings, a one-byte varint 0).
            let block = [ident, 0, 0, 0, 0];
            let mut pos = 0;
            let parsed = parse_entry(&block, &mut pos);
            assert_eq!(
                parsed.is_ok(),
                union & (1 << ident) != 0,
                "identifier 0x{ident:02X}"
            );
            if let Ok((got, _)) = parsed {
                assert_eq!(got, ident);
                assert!(pos >= 2);
            }
        }
        for a in all {
            assert_eq!(a.multi & !a.ids, 0, "a repeatable property is allowed");
        }
    }

    #[test]
    fn entries_of_each_type() {
        let block = [
            0x01, 0x01, // payload format
            0x23, 0x00, 0x05, // topic alias
            0x02, 0, 0, 1, 0, // message expiry
            0x0B, 0x80, 0x01, // subscription id 128
            0x03, 0x00, 0x01, b'x', // content type
            0x09, 0x00, 0x00, // empty correlation data
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property
        ];
        let mut pos = 0;
        let mut got = Vec::new();
        while pos < block.len() {
            got.push(parse_entry(&block, &mut pos).unwrap());
        }
        assert_eq!(
            got,
            vec![
                (0x01, RawValue::Byte(1)),
                (0x23, RawValue::U16(5)),
                (0x02, RawValue::U32(256)),
                (0x0B, RawValue::VarInt(128)),
                (0x03, RawValue::Str(16..17)),
                (0x09, RawValue::Bin(20..20)),
                (0x26, RawValue::Pair(23..24, 26..27)),
            ]
        );
        let user = UserProperties {
            raw: Bytes::copy_from_slice(&block),
        };
        assert_eq!(user.iter().collect::<Vec<_>>(), vec![("k", "v")]);
        let ids = SubscriptionIds {
            raw: Bytes::copy_from_slice(&block),
        };
        assert_eq!(
            ids.iter().map(NonZeroU32::get).collect::<Vec<_>>(),
            vec![128]
        );
        assert_eq!(format!("{user:?} {ids:?}"), r#"[("k", "v")] [128]"#);
    }

    #[test]
    fn truncated_entries_fail() {
        for block in [
            &[0x02, 0, 0][..],
            &[0x26, 0, 1, b'k', 0],
            &[0x0B, 0x80],
            &[0x03, 0, 2, b'x'],
        ] {
            let e = parse_entry(block, &mut 0).unwrap_err();
            assert_eq!(e.reason_code(), crate::ReasonCode::MALFORMED_PACKET);
        }
    }
}
