//! First-line checks of decode/encode on a few packets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use core::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use common::*;
use ringmq_codec::*;

fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap()
}

#[test]
fn v5_publish_with_properties_round_trips() {
    // PUBLISH QoS1 retain, topic "a/b", pid 10, props: topic alias 5, user ("k","v"), payload "hi"
    let hex_str = "33 14 0003 612f62 000a 0a 2300 05 26 0001 6b 0001 76 6869";
    let packet = decode_all(&hex(hex_str), ProtocolVersion::V5).unwrap();
    let Packet::Publish(p) = &packet else {
        panic!("{packet:?}")
    };
    assert_eq!(p.topic.as_str(), "a/b");
    assert_eq!(p.qos_pid, QosPid::AtLeastOnce(pid(10)));
    assert!(p.retain);
    assert_eq!(p.properties.topic_alias, Some(pid(5)));
    assert_eq!(
        p.properties.user_properties.iter().collect::<Vec<_>>(),
        vec![("k", "v")]
    );
    assert!(p.properties.subscription_ids.is_empty());
    assert_eq!(&p.payload[..], b"hi");
    assert_eq!(
        to_hex(&encode_vec(&packet, ProtocolVersion::V5)),
        to_hex(&hex(hex_str))
    );
}

#[test]
fn publish_header_matches_full_encoding() {
    let props = PublishProperties {
        correlation_data: Some(Bytes::from_static(b"c")),
        user_properties: UserProperties::from_pairs([("a", "1"), ("b", "2")]).unwrap(),
        ..Default::default()
    };
    let ids = [NonZeroU32::new(7).unwrap(), NonZeroU32::new(300).unwrap()];
    let publish = Publish {
        dup: false,
        qos_pid: QosPid::ExactlyOnce(pid(3)),
        retain: false,
        topic: Str::from_static("x/y"),
        properties: PublishProperties {
            subscription_ids: SubscriptionIds::from_ids(&ids),
            message_expiry_secs: Some(9),
            ..props.clone()
        },
        payload: Bytes::from_static(b"payload"),
    };
    let header = PublishHeader {
        dup: false,
        qos_pid: QosPid::ExactlyOnce(pid(3)),
        retain: false,
        topic: b"x/y",
        topic_alias: None,
        message_expiry_secs: Some(9),
        subscription_ids: &ids,
        forwarded: Some(&props),
    };
    let mut out = BytesMut::new();
    header.encode(ProtocolVersion::V5, 7, &mut out).unwrap();
    out.extend_from_slice(b"payload");
    let full = encode_vec(&Packet::Publish(publish.clone()), ProtocolVersion::V5);
    assert_eq!(to_hex(&out), to_hex(&full));
    assert_eq!(
        header.packet_len(ProtocolVersion::V5, 7).unwrap(),
        full.len()
    );
    assert_eq!(
        decode_all(&full, ProtocolVersion::V5).unwrap(),
        Packet::Publish(publish)
    );
}

#[test]
fn v311_connect_spec_example_and_incomplete_frames() {
    // MQTT 3.1.1 3.1.2.10 variable header (flags 0xCE, keep alive 10) with a payload.
    let hex_str = "10 1d 0004 4d515454 04 ce 000a 0001 63 0001 74 0001 70 0004 75736572 0002 7077";
    let bytes = hex(hex_str);
    let packet = decode_all(&bytes, ProtocolVersion::V5).unwrap();
    let Packet::Connect(c) = &packet else {
        panic!()
    };
    assert_eq!(c.protocol, ProtocolVersion::V3_1_1);
    assert_eq!(c.keep_alive_secs, 10);
    let will = c.will.as_ref().unwrap();
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert_eq!(will.topic.as_str(), "t");
    assert_eq!(c.username.as_ref().unwrap().as_str(), "user");
    assert_eq!(
        to_hex(&encode_vec(&packet, ProtocolVersion::V3_1_1)),
        to_hex(&bytes)
    );
    for n in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..n]);
        assert_eq!(
            decode(&mut buf, &Limits::default(), ProtocolVersion::V5),
            Ok(None)
        );
        assert_eq!(&buf[..], &bytes[..n]);
    }
}
