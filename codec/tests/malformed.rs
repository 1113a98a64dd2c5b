//! Every validation rule of the decoder, each with the error variant (through its reason code)
//! and the normative statement it reports; incomplete frames; the size limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::BytesMut;
use common::*;
use ringmq_codec::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const MALFORMED: ReasonCode = ReasonCode::MALFORMED_PACKET;
const PROTOCOL: ReasonCode = ReasonCode::PROTOCOL_ERROR;

#[track_caller]
fn check(hex_str: &str, version: ProtocolVersion, reason: ReasonCode, statement: &str) {
    let e = decode_err(hex_str, version);
    assert_eq!(
        (e.reason_code(), e.statement()),
        (reason, statement),
        "{hex_str}: {e}"
    );
    assert!(e.to_string().contains(&format!("[{statement}]")), "{e}");
    match reason {
        MALFORMED => assert!(matches!(e, DecodeError::Malformed { .. })),
        PROTOCOL => assert!(matches!(e, DecodeError::Protocol { .. })),
        _ => {}
    }
}

#[test]
fn reserved_fixed_header_flags() {
    check(
        "11 0c 0004 4d515454 04 02 003c 0000",
        V5,
        MALFORMED,
        "MQTT-2.1.3-1",
    );
    check("21 03 00 00 00", V5, MALFORMED, "MQTT-2.1.3-1");
    check("41 02 0001", V5, MALFORMED, "MQTT-2.1.3-1");
    check("58 02 0001", V5, MALFORMED, "MQTT-2.1.3-1");
    check("60 02 0001", V5, MALFORMED, "MQTT-3.6.1-1");
    check("63 02 0001", V311, MALFORMED, "MQTT-3.6.1-1");
    check("71 02 0001", V5, MALFORMED, "MQTT-2.1.3-1");
    check("80 08 000b 0003 612f62 01", V311, MALFORMED, "MQTT-3.8.1-1");
    check("92 03 0001 00", V311, MALFORMED, "MQTT-2.1.3-1");
    check("a0 07 000c 0003 612f62", V311, MALFORMED, "MQTT-3.10.1-1");
    check("b2 02 000c", V311, MALFORMED, "MQTT-2.1.3-1");
    check("c1 00", V5, MALFORMED, "MQTT-2.1.3-1");
    check("d4 00", V5, MALFORMED, "MQTT-2.1.3-1");
    check("e8 00", V5, MALFORMED, "MQTT-2.1.3-1");
    check("f1 00", V5, MALFORMED, "MQTT-2.1.3-1");
}

#[test]
fn packet_types() {
    check("00 00", V5, MALFORMED, "MQTT-2.1.2");
    check("f0 00", V311, MALFORMED, "MQTT-2.1.2");
    check("f0 00", ProtocolVersion::V3_1, MALFORMED, "MQTT-2.1.2");
}

#[test]
fn publish_flags() {
    check("36 05 0003 612f62", V5, MALFORMED, "MQTT-3.3.1-4");
    check("3e 07 0003 612f62 0001", V311, MALFORMED, "MQTT-3.3.1-4");
    check("38 06 0003 612f62 00", V5, PROTOCOL, "MQTT-3.3.1-2");
    check("38 05 0003 612f62", V311, PROTOCOL, "MQTT-3.3.1-2");
}

#[test]
fn packet_identifier_zero() {
    check("32 08 0003 612f62 0000 00", V5, PROTOCOL, "MQTT-2.2.1-3");
    check("34 07 0003 612f62 0000", V311, PROTOCOL, "MQTT-2.2.1-3");
    for first in ["40", "50", "62", "70"] {
        check(&format!("{first} 02 0000"), V5, PROTOCOL, "MQTT-2.2.1-3");
        check(&format!("{first} 02 0000"), V311, PROTOCOL, "MQTT-2.2.1-3");
    }
    check("82 08 0000 0003 612f62 01", V311, PROTOCOL, "MQTT-2.2.1-3");
    check("90 03 0000 00", V311, PROTOCOL, "MQTT-2.2.1-3");
    check("a2 07 0000 0003 612f62", V311, PROTOCOL, "MQTT-2.2.1-3");
    check("b0 02 0000", V311, PROTOCOL, "MQTT-2.2.1-3");
}

#[test]
fn connect_flags() {
    // Reserved bit 0.
    check(
        "10 0c 0004 4d515454 04 03 003c 0000",
        V5,
        MALFORMED,
        "MQTT-3.1.2-3",
    );
    check(
        "10 0d 0004 4d515454 05 03 003c 00 0000",
        V5,
        MALFORMED,
        "MQTT-3.1.2-3",
    );
    // Will QoS 1 without the Will Flag.
    check(
        "10 0c 0004 4d515454 04 0a 003c 0000",
        V5,
        MALFORMED,
        "MQTT-3.1.2-11",
    );
    // Will QoS 3 with the Will Flag.
    check(
        "10 12 0004 4d515454 04 1e 003c 0000 0001 74 0001 70",
        V5,
        MALFORMED,
        "MQTT-3.1.2-12",
    );
    // Will Retain without the Will Flag.
    check(
        "10 0c 0004 4d515454 04 22 003c 0000",
        V5,
        MALFORMED,
        "MQTT-3.1.2-13",
    );
    // Password without user name: an error in 3.1.1 (and 3.1), allowed in 5.0.
    check(
        "10 10 0004 4d515454 04 42 003c 0000 0002 7077",
        V5,
        MALFORMED,
        "MQTT-3.1.2-22",
    );
    check(
        "10 12 0006 4d5149736470 03 42 003c 0000 0002 7077",
        V5,
        MALFORMED,
        "MQTT-3.1.2-22",
    );
    let Packet::Connect(c) =
        decode_all(&hex("10 11 0004 4d515454 05 42 003c 00 0000 0002 7077"), V5).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (c.username, c.password.as_deref()),
        (None, Some(&b"pw"[..]))
    );
}

#[test]
fn connect_protocol_name_and_level() {
    // (name, level, the version whose CONNACK refuses it [MQTT-3.1.2-2]).
    let unsupported = |hex_str: &str| match decode_err(hex_str, V5) {
        DecodeError::UnsupportedProtocol { name, level } => {
            let e = DecodeError::UnsupportedProtocol { name, level };
            assert_eq!(e.reason_code(), ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
            assert_eq!(e.statement(), "MQTT-3.1.2-2");
            (name, level, e.connack_version())
        }
        e => panic!("{e:?}"),
    };
    // An unknown level gets the MQTT 5 CONNACK 0x84.
    assert_eq!(
        unsupported("10 0c 0004 4d515454 06 02 003c 0000"),
        ("MQTT", 6, Some(V5))
    );
    assert_eq!(
        unsupported("10 0c 0004 4d515454 ff 02 003c 0000"),
        ("MQTT", 255, Some(V5))
    );
    assert_eq!(
        unsupported("10 0c 0004 4d515454 02 02 003c 0000"),
        ("MQTT", 2, Some(V5))
    );
    assert_eq!(
        unsupported("10 0e 0006 4d5149736470 05 02 003c 0000"),
        ("MQIsdp", 5, Some(V5))
    );
    // Levels 3 and 4 under the other name: a 3.1.x client, answered in 3.1.1 (0x01).
    assert_eq!(
        unsupported("10 0c 0004 4d515454 03 02 003c 0000"),
        ("MQTT", 3, Some(V311))
    );
    assert_eq!(
        unsupported("10 0e 0006 4d5149736470 04 02 003c 0000"),
        ("MQIsdp", 4, Some(V311))
    );
    assert_eq!(
        unsupported("10 0c 0004 6d717474 04 02 003c 0000"),
        ("unknown", 4, Some(V311))
    );
    // Any other error gets no CONNACK.
    let reserved_flag = decode_err("10 0c 0004 4d515454 04 03 003c 0000", V5);
    assert_eq!(reserved_flag.connack_version(), None);
}

#[test]
fn strings() {
    // Not UTF-8 (a lone continuation byte; an encoded surrogate U+D800) and U+0000, in a topic,
    // a client identifier, a user property name and value, a reason string.
    check("30 03 0001 ff", V311, MALFORMED, "MQTT-1.5.4-1");
    check("30 05 0003 eda080", V311, MALFORMED, "MQTT-1.5.4-1");
    check("30 04 0002 6100", V311, MALFORMED, "MQTT-1.5.4-2");
    check(
        "10 0d 0004 4d515454 04 02 003c 0001 00",
        V5,
        MALFORMED,
        "MQTT-1.5.4-2",
    );
    check(
        "10 0d 0004 4d515454 04 02 003c 0001 c0",
        V5,
        MALFORMED,
        "MQTT-1.5.4-1",
    );
    check(
        "40 0b 0001 00 07 26 0001 ff 0001 61",
        V5,
        MALFORMED,
        "MQTT-1.5.4-1",
    );
    check(
        "40 0b 0001 00 07 26 0001 61 0001 00",
        V5,
        MALFORMED,
        "MQTT-1.5.4-2",
    );
    check("40 08 0001 80 04 1f 0001 00", V5, MALFORMED, "MQTT-1.5.4-2");
}

#[test]
fn topic_names() {
    let e = decode_err("30 05 0003 612f2b", V311);
    assert!(
        matches!(
            e,
            DecodeError::TopicName {
                statement: "MQTT-3.3.2-2",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.reason_code(), ReasonCode::TOPIC_NAME_INVALID);
    check(
        "30 06 0003 612f23 00",
        V5,
        ReasonCode::TOPIC_NAME_INVALID,
        "MQTT-3.3.2-2",
    );
    // Will topic and response topic are topic names too.
    check(
        "10 12 0004 4d515454 04 06 003c 0000 0001 2b 0001 70",
        V5,
        ReasonCode::TOPIC_NAME_INVALID,
        "MQTT-3.3.2-2",
    );
    check(
        "30 09 0001 74 05 08 0002 232f",
        V5,
        ReasonCode::TOPIC_NAME_INVALID,
        "MQTT-3.3.2-2",
    );
    // Empty topic: never in 3.1.1; in 5.0 only with a Topic Alias.
    let e = decode_err("30 02 0000", V311);
    assert!(
        matches!(
            e,
            DecodeError::TopicName {
                statement: "MQTT-4.7.3-1",
                ..
            }
        ),
        "{e:?}"
    );
    check("30 03 0000 00", V5, PROTOCOL, "MQTT-3.3.2-1");
    check("30 08 0000 05 02 00000001", V5, PROTOCOL, "MQTT-3.3.2-1");
    assert!(decode_all(&hex("30 06 0000 03 23 0001"), V5).is_ok());
}

#[test]
fn subscribe_rules() {
    // Invalid filters (0x8F), in SUBSCRIBE and UNSUBSCRIBE.
    let e = decode_err("82 0a 0001 0005 612f232f62 00", V311);
    assert!(
        matches!(
            e,
            DecodeError::TopicFilter {
                statement: "MQTT-4.7.1-1",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.reason_code(), ReasonCode::TOPIC_FILTER_INVALID);
    check(
        "82 08 0001 00 0002 612b 00",
        V5,
        ReasonCode::TOPIC_FILTER_INVALID,
        "MQTT-4.7.1-2",
    );
    check(
        "a2 05 0001 00 0000",
        V5,
        ReasonCode::TOPIC_FILTER_INVALID,
        "MQTT-4.7.3-1",
    );
    check(
        "a2 0b 0001 0007 2473686172652f",
        V311,
        ReasonCode::TOPIC_FILTER_INVALID,
        "MQTT-4.8.2-1",
    );
    // No filter at all.
    check("82 03 0001 00", V5, PROTOCOL, "MQTT-3.8.3-2");
    check("82 02 0001", V311, PROTOCOL, "MQTT-3.8.3-2");
    check("a2 03 0001 00", V5, PROTOCOL, "MQTT-3.10.3-2");
    check("a2 02 0001", V311, PROTOCOL, "MQTT-3.10.3-2");
    // Options: reserved bits, QoS 3, Retain Handling 3.
    check("82 07 0001 00 0001 23 40", V5, MALFORMED, "MQTT-3.8.3-5");
    check("82 07 0001 00 0001 23 80", V5, MALFORMED, "MQTT-3.8.3-5");
    check("82 06 0001 0001 23 04", V311, MALFORMED, "MQTT-3.8.3-5");
    check("82 07 0001 00 0001 23 03", V5, PROTOCOL, "MQTT-3.8.3.1");
    check("82 06 0001 0001 23 03", V311, PROTOCOL, "MQTT-3.8.3.1");
    check("82 07 0001 00 0001 23 30", V5, PROTOCOL, "MQTT-3.8.3.1");
    // No Local on a shared subscription.
    check(
        "82 10 0001 00 000a 2473686172652f672f61 04",
        V5,
        PROTOCOL,
        "MQTT-3.8.3-4",
    );
    assert!(decode_all(&hex("82 10 0001 00 000a 2473686172652f672f61 00"), V5).is_ok());
    // Filters are decoded until the end: a truncated option byte overruns.
    check("82 05 0001 0001 23", V311, MALFORMED, "MQTT-2.1.4");
}

#[test]
fn v311_return_codes() {
    check("20 02 00 06", V311, MALFORMED, "MQTT-3.2.2.3");
    check(
        "20 02 00 80",
        ProtocolVersion::V3_1,
        MALFORMED,
        "MQTT-3.2.2.3",
    );
    check("20 02 02 00", V311, MALFORMED, "MQTT-3.2.2-1");
    check("90 03 0001 03", V311, MALFORMED, "MQTT-3.9.3-2");
    check("90 03 0001 87", V311, MALFORMED, "MQTT-3.9.3-2");
}

#[test]
fn duplicate_properties() {
    // Each packet's properties section says "It is a Protocol Error to include X more than
    // once" (no numbered statement), so the error names that section.
    // PUBLISH: Message Expiry Interval twice.
    check(
        "30 0e 0001 74 0a 02 00000001 02 00000002",
        V5,
        PROTOCOL,
        "MQTT-3.3.2.3",
    );
    // SUBSCRIBE: Subscription Identifier twice (only PUBLISH may repeat it).
    check(
        "82 0b 0001 04 0b 01 0b 02 0001 23 00",
        V5,
        PROTOCOL,
        "MQTT-3.8.2.1",
    );
    // CONNECT: Session Expiry Interval twice.
    check(
        "10 17 0004 4d515454 05 02 003c 0a 11 00000001 11 00000001 0000",
        V5,
        PROTOCOL,
        "MQTT-3.1.2.11",
    );
    // Reason String twice in PUBACK; Authentication Method twice in AUTH.
    check(
        "40 0c 0001 80 08 1f 0001 61 1f 0001 62",
        V5,
        PROTOCOL,
        "MQTT-3.4.2.2",
    );
    check(
        "f0 0c 18 0a 15 0002 6d31 15 0002 6d32",
        V5,
        PROTOCOL,
        "MQTT-3.15.2.2",
    );
}

#[test]
fn duplicates_of_every_ack_type_name_their_section() {
    for (first, section) in [
        ("40", "MQTT-3.4.2.2"),
        ("50", "MQTT-3.5.2.2"),
        ("62", "MQTT-3.6.2.2"),
        ("70", "MQTT-3.7.2.2"),
    ] {
        let hex_str = format!("{first} 0c 0001 80 08 1f 0001 61 1f 0001 62");
        check(&hex_str, V5, PROTOCOL, section);
    }
    check(
        "90 0c 0001 08 1f 0001 61 1f 0001 62 00",
        V5,
        PROTOCOL,
        "MQTT-3.9.2.1",
    );
    check(
        "b0 0c 0001 08 1f 0001 61 1f 0001 62 00",
        V5,
        PROTOCOL,
        "MQTT-3.11.2.1",
    );
    check(
        "e0 0c 80 0a 11 00000001 11 00000001",
        V5,
        PROTOCOL,
        "MQTT-3.14.2.2",
    );
    check(
        "20 0d 00 00 0a 24 00 24 00 13 0001 13 0001",
        V5,
        PROTOCOL,
        "MQTT-3.2.2.3",
    );
    // Will properties: Will Delay Interval twice.
    check(
        "10 1e 0004 4d515454 05 06 003c 00 0000 0a 18 00000001 18 00000001 0001 74 0001 70",
        V5,
        PROTOCOL,
        "MQTT-3.1.3.2",
    );
}

#[test]
fn properties_not_allowed_or_unknown() {
    // Session Expiry Interval on PUBLISH, Message Expiry Interval on PUBACK, Topic Alias on
    // the will, Reason String on CONNECT, an unknown identifier (0x7F) and a multi-byte one.
    check(
        "30 09 0001 74 05 11 00000001",
        V5,
        MALFORMED,
        "MQTT-2.2.2.2",
    );
    check(
        "40 09 0001 80 05 02 00000001",
        V5,
        MALFORMED,
        "MQTT-2.2.2.2",
    );
    check(
        "10 17 0004 4d515454 05 06 003c 00 0000 03 23 0001 0001 74 0001 70",
        V5,
        MALFORMED,
        "MQTT-2.2.2.2",
    );
    check(
        "10 12 0004 4d515454 05 02 003c 05 1f 0002 6161 0000",
        V5,
        MALFORMED,
        "MQTT-2.2.2.2",
    );
    check("30 06 0001 74 02 7f 00", V5, MALFORMED, "MQTT-2.2.2.2");
    check("30 07 0001 74 03 81 01 00", V5, MALFORMED, "MQTT-2.2.2.2");
    check("e0 04 00 02 24 01", V5, MALFORMED, "MQTT-2.2.2.2");
}

#[test]
fn property_values_out_of_range() {
    let connect_with = |prop: &str| {
        let props = hex(prop);
        let rl = 10 + 1 + props.len() + 2;
        format!(
            "10 {rl:02x} 0004 4d515454 05 02 003c {:02x} {prop} 0000",
            props.len()
        )
    };
    check(&connect_with("21 0000"), V5, PROTOCOL, "MQTT-3.1.2.11"); // Receive Maximum 0
    check(&connect_with("27 00000000"), V5, PROTOCOL, "MQTT-3.1.2.11"); // Maximum Packet Size 0
    check(&connect_with("17 02"), V5, PROTOCOL, "MQTT-3.1.2.11"); // Request Problem Information 2
    check(&connect_with("19 ff"), V5, PROTOCOL, "MQTT-3.1.2.11"); // Request Response Information
    check(&connect_with("16 0001 00"), V5, PROTOCOL, "MQTT-3.1.2.11"); // data without method
    check("30 07 0001 74 03 23 0000", V5, PROTOCOL, "MQTT-3.3.2-8"); // Topic Alias 0
    check("30 06 0001 74 02 0b 00", V5, PROTOCOL, "MQTT-3.3.2.3"); // Subscription Identifier 0
    check(
        "82 09 0001 02 0b 00 0001 23 00",
        V5,
        PROTOCOL,
        "MQTT-3.8.2.1",
    );
    check("30 06 0001 74 02 01 02", V5, PROTOCOL, "MQTT-3.3.2.3"); // Payload Format 2
    check("20 05 00 00 02 24 02", V5, PROTOCOL, "MQTT-3.2.2.3"); // Maximum QoS 2
    check("20 05 00 00 02 25 02", V5, PROTOCOL, "MQTT-3.2.2.3"); // Retain Available 2
    check("20 05 00 00 02 28 05", V5, PROTOCOL, "MQTT-3.2.2.3");
    check("20 05 00 00 02 29 05", V5, PROTOCOL, "MQTT-3.2.2.3");
    check("20 05 00 00 02 2a 05", V5, PROTOCOL, "MQTT-3.2.2.3");
    check("20 06 00 00 03 21 0000", V5, PROTOCOL, "MQTT-3.2.2.3");
    check("f0 06 18 04 16 0001 00", V5, PROTOCOL, "MQTT-3.15.2.2");
    // Subscription Identifier as a 5-byte and as a non-minimal Variable Byte Integer.
    check(
        "30 0a 0001 74 06 0b ffffffff7f",
        V5,
        MALFORMED,
        "MQTT-1.5.5-1",
    );
    check("30 07 0001 74 03 0b 8100", V5, MALFORMED, "MQTT-1.5.5-1");
}

#[test]
fn property_length_overruns() {
    // Property Length 5 with 2 bytes left in the packet.
    check("30 06 0001 74 05 0200", V5, MALFORMED, "MQTT-2.2.2.2");
    // A property that runs past the Property Length (Message Expiry needs 4 bytes, 2 given).
    check("30 08 0001 74 03 02 0000 ff", V5, MALFORMED, "MQTT-2.2.2.2");
    // A user property value that runs past it.
    check(
        "40 0b 0001 00 06 26 0001 61 0005 62",
        V5,
        MALFORMED,
        "MQTT-2.2.2.2",
    );
    // Property Length itself missing or malformed.
    check("20 02 00 00", V5, MALFORMED, "MQTT-2.1.4");
    check("30 04 0001 74 80", V5, MALFORMED, "MQTT-2.1.4");
}

#[test]
fn remaining_length_disagrees_with_content() {
    // Trailing bytes where none are allowed.
    check("c0 01 00", V5, MALFORMED, "MQTT-2.1.4");
    check("d0 01 00", V311, MALFORMED, "MQTT-2.1.4");
    check("40 03 0001 00", V311, MALFORMED, "MQTT-2.1.4");
    check("62 03 0001 00", V311, MALFORMED, "MQTT-2.1.4");
    check("40 05 0001 00 00 ff", V5, MALFORMED, "MQTT-2.1.4");
    check("e0 01 00", V311, MALFORMED, "MQTT-2.1.4");
    check("e0 03 00 00 ff", V5, MALFORMED, "MQTT-2.1.4");
    check("f0 03 00 00 ff", V5, MALFORMED, "MQTT-2.1.4");
    check("b0 03 000c 00", V311, MALFORMED, "MQTT-2.1.4");
    check("20 03 00 00 00", V311, MALFORMED, "MQTT-2.1.4");
    check("20 04 00 00 00 00", V5, MALFORMED, "MQTT-2.1.4");
    check(
        "10 0d 0004 4d515454 04 02 003c 0000 00",
        V5,
        MALFORMED,
        "MQTT-2.1.4",
    );
    // Content longer than the remaining length.
    check("10 05 0004 4d5154", V5, MALFORMED, "MQTT-2.1.4");
    check("40 01 00", V5, MALFORMED, "MQTT-2.1.4");
    check("30 02 0003", V5, MALFORMED, "MQTT-2.1.4");
    check("32 06 0003 612f62 00", V5, MALFORMED, "MQTT-2.1.4");
    check("20 01 00", V311, MALFORMED, "MQTT-2.1.4");
    check(
        "10 0c 0004 4d515454 04 82 003c 0000",
        V5,
        MALFORMED,
        "MQTT-2.1.4",
    );
}

#[test]
fn variable_byte_integer_at_most_four_bytes() {
    let limits = Limits {
        max_packet_size: Limits::PROTOCOL_MAX_PACKET_SIZE,
    };
    let mut buf = BytesMut::from(&hex("30 ff ff ff ff 7f")[..]);
    let e = decode(&mut buf, &limits, V5).unwrap_err();
    assert_eq!(
        (e.reason_code(), e.statement()),
        (MALFORMED, "MQTT-1.5.5-1")
    );
    assert_eq!(
        peek_frame_len(&hex("30 80 80 80 80"), &limits).unwrap_err(),
        e
    );
    // Non-minimal: 0x80 0x00 is 0 in two bytes.
    let e = peek_frame_len(&hex("c0 80 00"), &limits).unwrap_err();
    assert_eq!(e.statement(), "MQTT-1.5.5-1");
    // The largest remaining length is accepted (and waits for its body).
    assert_eq!(
        peek_frame_len(&hex("30 ff ff ff 7f"), &limits),
        Ok(Some(268_435_460))
    );
}

#[test]
fn oversized_packet_is_refused_on_the_fixed_header() {
    let limits = Limits {
        max_packet_size: 100,
    };
    // Remaining length 1000: refused with only the fixed header received.
    let mut buf = BytesMut::from(&hex("30 e8 07")[..]);
    let e = decode(&mut buf, &limits, V5).unwrap_err();
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            size: 1003,
            max: 100
        }
    );
    assert_eq!(e.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    assert_eq!(peek_frame_len(&hex("30 e8 07"), &limits), Err(e));
    // The limit counts the fixed header: 98 + 2 = 100 passes, 99 + 2 does not.
    assert_eq!(peek_frame_len(&hex("30 62"), &limits), Ok(Some(100)));
    assert!(matches!(
        peek_frame_len(&hex("30 63"), &limits),
        Err(DecodeError::PacketTooLarge {
            size: 101,
            max: 100
        })
    ));
    // The default limit (1 MiB) applies too.
    let mut buf = BytesMut::from(&hex("30 ff ff 7f")[..]);
    assert!(matches!(
        decode(&mut buf, &Limits::default(), V5),
        Err(DecodeError::PacketTooLarge { .. })
    ));
}

/// Valid frames of several types; every proper prefix must be `Ok(None)` with the buffer
/// untouched, and the whole frame must decode and consume exactly itself.
#[test]
fn incomplete_frames_wait() {
    let frames = [
        (
            "10 24 0004 4d515454 05 ce 000a 05 11 0000000a 0001 63 00 0001 74 0001 70 0004 75736572 0002 7077",
            V5,
        ),
        (
            "20 49 01 00 46 11 00000e10 21 0100 24 01 25 00 27 00010000 12 0003 636964 22 0005 1f 0002 6f6b 26 0001 6b 0001 76 28 01 29 00 2a 01 13 003c 1a 0003 722f69 1c 0003 737276 15 0004 6d657468 16 0001 ff",
            V5,
        ),
        (
            "3d 33 0003 612f62 04d2 29 01 01 02 0000001e 23 0007 08 0003 722f74 09 0003 010203 26 0001 6b 0001 76 0b 05 0b 8002 03 0004 6a736f6e 7b7d",
            V5,
        ),
        ("30 07 0003 612f62 6869", V311),
        (
            "82 16 000a 09 0b 07 26 0001 61 0001 62 0003 612f2b 2d 0001 23 00",
            V5,
        ),
        (
            "e0 19 9c 17 11 00000000 1f 0002 6279 26 0001 61 0001 62 1c 0003 737276",
            V5,
        ),
        ("c0 00", V311),
    ];
    let limits = Limits::default();
    for (hex_str, version) in frames {
        let bytes = hex(hex_str);
        for n in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..n]);
            assert_eq!(
                decode(&mut buf, &limits, version),
                Ok(None),
                "{hex_str} prefix {n}"
            );
            assert_eq!(&buf[..], &bytes[..n]);
            let peek = peek_frame_len(&bytes[..n], &limits).unwrap();
            assert!(peek.is_none() || peek == Some(bytes.len()));
        }
        assert_eq!(peek_frame_len(&bytes, &limits), Ok(Some(bytes.len())));
        // Two frames and a partial third back to back: two packets, the rest stays.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&bytes);
        buf.extend_from_slice(&bytes);
        buf.extend_from_slice(&bytes[..1]);
        let a = decode(&mut buf, &limits, version).unwrap().unwrap();
        let b = decode(&mut buf, &limits, version).unwrap().unwrap();
        assert_eq!(a, b);
        assert_eq!(decode(&mut buf, &limits, version), Ok(None));
        assert_eq!(&buf[..], &bytes[..1]);
    }
}

#[test]
fn encode_limits() {
    let mut out = BytesMut::new();
    let big = bytes::Bytes::from(vec![0u8; 65_536]);
    let publish = |props| {
        Packet::Publish(Publish {
            dup: false,
            qos_pid: QosPid::AtMostOnce,
            retain: false,
            topic: Str::from_static("t"),
            properties: props,
            payload: bytes::Bytes::new(),
        })
    };
    let p = publish(PublishProperties {
        correlation_data: Some(big.clone()),
        ..Default::default()
    });
    assert!(matches!(
        encode(&p, V5, &mut out),
        Err(EncodeError::FieldTooLong { len: 65_536, .. })
    ));
    assert!(out.is_empty(), "nothing is written on error");
    // In 3.1.1 the property is not sent, so the packet encodes.
    encode(&p, V311, &mut out).unwrap();
    assert_eq!(&out[..], &hex("30 03 0001 74")[..]);

    let header = PublishHeader {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: b"t",
        topic_alias: None,
        message_expiry_secs: None,
        subscription_ids: &[],
        forwarded: None,
    };
    assert_eq!(header.packet_len(V5, 268_435_455 - 4), Ok(268_435_460));
    assert!(matches!(
        header.packet_len(V5, 268_435_455 - 3),
        Err(EncodeError::PacketTooLarge { len: 268_435_456 })
    ));
    assert_eq!(header.packet_len(V311, 0), Ok(5));
    let mut out = BytesMut::new();
    header.encode(V5, 268_435_455 - 4, &mut out).unwrap();
    assert_eq!(&out[..], &hex("30 ff ff ff 7f 0001 74 00")[..]);
    let e = header.encode(V5, usize::MAX, &mut BytesMut::new());
    assert!(matches!(e, Err(EncodeError::PacketTooLarge { .. })));
    let too_big_id = [core::num::NonZeroU32::new(268_435_456).unwrap()];
    let header = PublishHeader {
        subscription_ids: &too_big_id,
        ..header
    };
    assert!(header.encode(V5, 0, &mut BytesMut::new()).is_err());
}
