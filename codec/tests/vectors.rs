//! Hex wire vectors: each decodes to the expected packet and encodes back to the same bytes.
//! Together they cover every packet type in MQTT 5.0 and 3.1.1 and every property identifier.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use core::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
use common::*;
use ringmq_codec::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

fn s(v: &'static str) -> Str {
    Str::from_static(v)
}
fn b(v: &[u8]) -> Bytes {
    Bytes::copy_from_slice(v)
}
fn up(pairs: &[(&str, &str)]) -> UserProperties {
    UserProperties::from_pairs(pairs.iter().copied()).unwrap()
}
fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap()
}
fn nz32(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

#[test]
fn connect_v5_spec_example() {
    // MQTT 5.0 section 3.1.2.11 example variable header: flags 0xCE (user name, password,
    // will QoS 1, will flag, clean start), keep alive 10, Session Expiry Interval 10.
    let hex_str = "10 24 0004 4d515454 05 ce 000a 05 11 0000000a
                   0001 63 00 0001 74 0001 70 0004 75736572 0002 7077";
    let expected = Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive_secs: 10,
        properties: ConnectProperties {
            session_expiry_secs: Some(10),
            ..Default::default()
        },
        client_id: s("c"),
        will: Some(Will {
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: s("t"),
            payload: b(b"p"),
            properties: WillProperties::default(),
        }),
        username: Some(s("user")),
        password: Some(b(b"pw")),
    }));
    vector(hex_str, V5, &expected);
    // CONNECT describes its own version: the connection's version does not matter.
    vector(hex_str, V311, &expected);
}

#[test]
fn connect_v311_spec_example() {
    // MQTT 3.1.1 section 3.1.2.10 example variable header: flags 0xCE, keep alive 10.
    let hex_str = "10 1d 0004 4d515454 04 ce 000a 0001 63 0001 74 0001 70 0004 75736572 0002 7077";
    let expected = Packet::Connect(Box::new(Connect {
        protocol: V311,
        clean_start: true,
        keep_alive_secs: 10,
        properties: ConnectProperties::default(),
        client_id: s("c"),
        will: Some(Will {
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: s("t"),
            payload: b(b"p"),
            properties: WillProperties::default(),
        }),
        username: Some(s("user")),
        password: Some(b(b"pw")),
    }));
    vector(hex_str, V311, &expected);
}

#[test]
fn connect_v311_minimal_and_v31() {
    let minimal = Connect {
        protocol: V311,
        clean_start: true,
        keep_alive_secs: 60,
        properties: ConnectProperties::default(),
        client_id: s(""),
        will: None,
        username: None,
        password: None,
    };
    vector(
        "10 0c 0004 4d515454 04 02 003c 0000",
        V311,
        &Packet::Connect(Box::new(minimal.clone())),
    );
    let v31 = Connect {
        protocol: ProtocolVersion::V3_1,
        client_id: s("id"),
        ..minimal
    };
    vector(
        "10 10 0006 4d5149736470 03 02 003c 0002 6964",
        V311,
        &Packet::Connect(Box::new(v31)),
    );
}

#[test]
fn connect_v5_every_property() {
    let hex_str = "10 75 0004 4d515454 05 ce 000a
        27 11 0000000a 21 0014 27 00000400 22 000a 19 01 17 00 26 0001 61 0001 62
           15 0004 6d657468 16 0002 0102
        0002 6964
        2b 18 0000003c 01 01 02 00000078 03 000a 746578742f706c61696e 08 0003 722f74
           09 0002 abcd 26 0001 78 0001 79
        0003 772f74 0002 6869
        0004 75736572 0002 7077";
    let expected = Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive_secs: 10,
        properties: ConnectProperties {
            session_expiry_secs: Some(10),
            receive_maximum: Some(pid(20)),
            maximum_packet_size: Some(nz32(1024)),
            topic_alias_maximum: Some(10),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            user_properties: up(&[("a", "b")]),
            authentication_method: Some(s("meth")),
            authentication_data: Some(b(&[1, 2])),
        },
        client_id: s("id"),
        will: Some(Will {
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: s("w/t"),
            payload: b(b"hi"),
            properties: WillProperties {
                will_delay_secs: Some(60),
                payload_format_utf8: Some(true),
                message_expiry_secs: Some(120),
                content_type: Some(s("text/plain")),
                response_topic: Some(s("r/t")),
                correlation_data: Some(b(&[0xab, 0xcd])),
                user_properties: up(&[("x", "y")]),
            },
        }),
        username: Some(s("user")),
        password: Some(b(b"pw")),
    }));
    vector(hex_str, V5, &expected);
}

#[test]
fn connack_v5_every_property() {
    let hex_str = "20 49 01 00 46 11 00000e10 21 0100 24 01 25 00 27 00010000 12 0003 636964
        22 0005 1f 0002 6f6b 26 0001 6b 0001 76 28 01 29 00 2a 01 13 003c 1a 0003 722f69
        1c 0003 737276 15 0004 6d657468 16 0001 ff";
    let expected = Packet::ConnAck(ConnAck {
        session_present: true,
        reason_code: ReasonCode::SUCCESS,
        properties: ConnAckProperties {
            session_expiry_secs: Some(3600),
            receive_maximum: Some(pid(256)),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            maximum_packet_size: Some(nz32(65536)),
            assigned_client_id: Some(s("cid")),
            topic_alias_maximum: Some(5),
            reason_string: Some(s("ok")),
            user_properties: up(&[("k", "v")]),
            wildcard_subscription_available: Some(true),
            subscription_ids_available: Some(false),
            shared_subscription_available: Some(true),
            server_keep_alive_secs: Some(60),
            response_information: Some(s("r/i")),
            server_reference: Some(s("srv")),
            authentication_method: Some(s("meth")),
            authentication_data: Some(b(&[0xff])),
        },
    });
    vector(hex_str, V5, &expected);
    let refused = ConnAck {
        session_present: false,
        reason_code: ReasonCode::BAD_AUTHENTICATION_METHOD,
        properties: ConnAckProperties::default(),
    };
    vector("20 03 00 8c 00", V5, &Packet::ConnAck(refused));
}

#[test]
fn connack_v311_return_codes() {
    let ok = ConnAck {
        session_present: true,
        ..Default::default()
    };
    vector("20 02 01 00", V311, &Packet::ConnAck(ok));
    for (code, reason) in [
        (1, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        (2, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        (3, ReasonCode::SERVER_UNAVAILABLE),
        (4, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        (5, ReasonCode::NOT_AUTHORIZED),
    ] {
        let packet = Packet::ConnAck(ConnAck {
            reason_code: reason,
            ..Default::default()
        });
        vector(&format!("20 02 00 {code:02x}"), V311, &packet);
    }
    // A v5 code is sent as its closest 3.1.1 return code.
    let banned = Packet::ConnAck(ConnAck {
        reason_code: ReasonCode::BANNED,
        ..Default::default()
    });
    assert_eq!(encode_vec(&banned, V311), hex("20 02 00 05"));
    // A quota or connection-rate refusal: 0x03 Server unavailable, not "not authorized".
    for reason in [
        ReasonCode::QUOTA_EXCEEDED,
        ReasonCode::CONNECTION_RATE_EXCEEDED,
    ] {
        let refused = Packet::ConnAck(ConnAck {
            reason_code: reason,
            ..Default::default()
        });
        assert_eq!(encode_vec(&refused, V311), hex("20 02 00 03"), "{reason:?}");
    }
}

#[test]
fn publish_v5_every_property() {
    // DUP, QoS 2, retain; two subscription identifiers (5 and 256).
    let hex_str = "3d 33 0003 612f62 04d2 29 01 01 02 0000001e 23 0007 08 0003 722f74
        09 0003 010203 26 0001 6b 0001 76 0b 05 0b 8002 03 0004 6a736f6e 7b7d";
    let expected = Packet::Publish(Publish {
        dup: true,
        qos_pid: QosPid::ExactlyOnce(pid(1234)),
        retain: true,
        topic: s("a/b"),
        properties: PublishProperties {
            payload_format_utf8: Some(true),
            message_expiry_secs: Some(30),
            topic_alias: Some(pid(7)),
            response_topic: Some(s("r/t")),
            correlation_data: Some(b(&[1, 2, 3])),
            user_properties: up(&[("k", "v")]),
            subscription_ids: SubscriptionIds::from_ids(&[nz32(5), nz32(256)]),
            content_type: Some(s("json")),
        },
        payload: b(b"{}"),
    });
    vector(hex_str, V5, &expected);
}

#[test]
fn publish_v5_topic_alias_only_and_v311() {
    let alias_only = Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: s(""),
        properties: PublishProperties {
            topic_alias: Some(pid(1)),
            ..Default::default()
        },
        payload: b(b"hi"),
    });
    vector("30 08 0000 03 2300 01 6869", V5, &alias_only);
    let v3 = Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: s("a/b"),
        properties: PublishProperties::default(),
        payload: b(b"hi"),
    });
    vector("30 07 0003 612f62 6869", V311, &v3);
    let v3_qos1 = Packet::Publish(Publish {
        dup: true,
        qos_pid: QosPid::AtLeastOnce(pid(2)),
        retain: false,
        topic: s("a/b"),
        properties: PublishProperties::default(),
        payload: Bytes::new(),
    });
    vector("3a 07 0003 612f62 0002", V311, &v3_qos1);
}

#[test]
fn pub_responses() {
    let ack = |id, rc| PubResp::new(pid(id), rc);
    for v in [V5, V311] {
        vector(
            "40 02 0001",
            v,
            &Packet::PubAck(ack(1, ReasonCode::SUCCESS)),
        );
        vector(
            "50 02 0002",
            v,
            &Packet::PubRec(ack(2, ReasonCode::SUCCESS)),
        );
        vector(
            "62 02 0003",
            v,
            &Packet::PubRel(ack(3, ReasonCode::SUCCESS)),
        );
        vector(
            "70 02 0004",
            v,
            &Packet::PubComp(ack(4, ReasonCode::SUCCESS)),
        );
    }
    vector(
        "40 03 0001 10",
        V5,
        &Packet::PubAck(ack(1, ReasonCode::NO_MATCHING_SUBSCRIBERS)),
    );
    vector(
        "62 03 0003 92",
        V5,
        &Packet::PubRel(ack(3, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)),
    );
    let full = PubResp {
        packet_id: pid(1),
        reason_code: ReasonCode::UNSPECIFIED_ERROR,
        properties: AckProperties {
            reason_string: Some(s("no")),
            user_properties: up(&[("a", "b")]),
        },
    };
    vector(
        "40 10 0001 80 0c 1f 0002 6e6f 26 0001 61 0001 62",
        V5,
        &Packet::PubAck(full.clone()),
    );
    vector(
        "50 10 0001 80 0c 1f 0002 6e6f 26 0001 61 0001 62",
        V5,
        &Packet::PubRec(full.clone()),
    );
    vector(
        "62 10 0001 80 0c 1f 0002 6e6f 26 0001 61 0001 62",
        V5,
        &Packet::PubRel(full.clone()),
    );
    vector(
        "70 10 0001 80 0c 1f 0002 6e6f 26 0001 61 0001 62",
        V5,
        &Packet::PubComp(full),
    );
    // Long forms of a plain success decode to the same packet (encode picks the short form).
    assert_eq!(
        decode_all(&hex("40 04 0001 00 00"), V5).unwrap(),
        Packet::PubAck(ack(1, ReasonCode::SUCCESS))
    );
    assert_eq!(
        decode_all(&hex("40 03 0001 00"), V5).unwrap(),
        Packet::PubAck(ack(1, ReasonCode::SUCCESS))
    );
}

#[test]
fn subscribe_and_suback() {
    let sub = Subscribe {
        packet_id: pid(10),
        subscription_id: Some(nz32(7)),
        user_properties: up(&[("a", "b")]),
        filters: vec![
            SubscribeFilter {
                filter: s("a/+"),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            },
            SubscribeFilter {
                filter: s("#"),
                options: SubscriptionOptions::default(),
            },
        ],
    };
    vector(
        "82 16 000a 09 0b 07 26 0001 61 0001 62 0003 612f2b 2d 0001 23 00",
        V5,
        &Packet::Subscribe(sub),
    );
    let v3 = Subscribe {
        packet_id: pid(11),
        subscription_id: None,
        user_properties: UserProperties::new(),
        filters: vec![SubscribeFilter {
            filter: s("a/b"),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        }],
    };
    vector("82 08 000b 0003 612f62 01", V311, &Packet::Subscribe(v3));

    let suback = SubAck {
        packet_id: pid(10),
        properties: AckProperties {
            reason_string: Some(s("")),
            ..Default::default()
        },
        reason_codes: vec![
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::NOT_AUTHORIZED,
        ],
    };
    vector(
        "90 09 000a 03 1f 0000 01 00 87",
        V5,
        &Packet::SubAck(suback),
    );
    let v3 = SubAck {
        packet_id: pid(11),
        properties: AckProperties::default(),
        reason_codes: [0x00, 0x01, 0x02, 0x80].map(ReasonCode).to_vec(),
    };
    vector("90 06 000b 00 01 02 80", V311, &Packet::SubAck(v3));
    // v5 failure codes become 0x80 in 3.1.1.
    let v5_codes = SubAck {
        packet_id: pid(1),
        properties: AckProperties::default(),
        reason_codes: vec![ReasonCode::GRANTED_QOS_2, ReasonCode::TOPIC_FILTER_INVALID],
    };
    assert_eq!(
        encode_vec(&Packet::SubAck(v5_codes), V311),
        hex("90 04 0001 02 80")
    );
}

#[test]
fn unsubscribe_and_unsuback() {
    let unsub = Unsubscribe {
        packet_id: pid(12),
        user_properties: UserProperties::new(),
        filters: vec![s("a/b"), s("#")],
    };
    vector(
        "a2 0b 000c 00 0003 612f62 0001 23",
        V5,
        &Packet::Unsubscribe(unsub.clone()),
    );
    let with_user = Unsubscribe {
        user_properties: up(&[("a", "b")]),
        ..unsub
    };
    vector(
        "a2 12 000c 07 26 0001 61 0001 62 0003 612f62 0001 23",
        V5,
        &Packet::Unsubscribe(with_user),
    );
    let v3 = Unsubscribe {
        packet_id: pid(12),
        user_properties: UserProperties::new(),
        filters: vec![s("a/b")],
    };
    vector("a2 07 000c 0003 612f62", V311, &Packet::Unsubscribe(v3));

    let unsuback = UnsubAck {
        packet_id: pid(12),
        properties: AckProperties::default(),
        reason_codes: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
    };
    vector("b0 05 000c 00 00 11", V5, &Packet::UnsubAck(unsuback));
    let v3 = UnsubAck {
        packet_id: pid(12),
        properties: AckProperties::default(),
        reason_codes: vec![],
    };
    vector("b0 02 000c", V311, &Packet::UnsubAck(v3));
}

#[test]
fn ping_disconnect_auth() {
    for v in [V5, V311] {
        vector("c0 00", v, &Packet::PingReq);
        vector("d0 00", v, &Packet::PingResp);
        vector("e0 00", v, &Packet::Disconnect(Disconnect::default()));
    }
    let with_will = Disconnect {
        reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        ..Default::default()
    };
    vector("e0 01 04", V5, &Packet::Disconnect(with_will));
    let full = Disconnect {
        reason_code: ReasonCode::USE_ANOTHER_SERVER,
        properties: DisconnectProperties {
            session_expiry_secs: Some(0),
            reason_string: Some(s("by")),
            user_properties: up(&[("a", "b")]),
            server_reference: Some(s("srv")),
        },
    };
    vector(
        "e0 19 9c 17 11 00000000 1f 0002 6279 26 0001 61 0001 62 1c 0003 737276",
        V5,
        &Packet::Disconnect(full),
    );
    vector("f0 00", V5, &Packet::Auth(Auth::default()));
    let auth = Auth {
        reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: AuthProperties {
            authentication_method: Some(s("meth")),
            authentication_data: Some(b(&[1, 2])),
            reason_string: Some(s("ok")),
            user_properties: up(&[("a", "b")]),
        },
    };
    vector(
        "f0 1a 18 18 15 0004 6d657468 16 0002 0102 1f 0002 6f6b 26 0001 61 0001 62",
        V5,
        &Packet::Auth(auth),
    );
    // AUTH does not exist in 3.1.1: neither side of the codec produces or accepts it.
    let err = encode(
        &Packet::Auth(Auth::default()),
        V311,
        &mut bytes::BytesMut::new(),
    );
    assert!(matches!(
        err,
        Err(EncodeError::NotInVersion { packet: "AUTH", .. })
    ));
}

#[test]
fn user_properties_keep_order_and_duplicates() {
    let props = up(&[("k", "1"), ("k", "2"), ("", "")]);
    assert_eq!(
        props.iter().collect::<Vec<_>>(),
        vec![("k", "1"), ("k", "2"), ("", "")]
    );
    assert!(!props.is_empty());
    assert!(UserProperties::new().is_empty());
    let too_long = "x".repeat(65_536);
    assert!(matches!(
        UserProperties::from_pairs([(too_long.as_str(), "v")]),
        Err(EncodeError::FieldTooLong { len: 65_536, .. })
    ));
    let ids = SubscriptionIds::from_ids(&[nz32(1), nz32(268_435_455), nz32(1)]);
    assert_eq!(
        ids.iter().map(NonZeroU32::get).collect::<Vec<_>>(),
        vec![1, 268_435_455, 1]
    );
}

#[test]
fn user_properties_see_only_their_entries_of_a_shared_block() {
    // PUBLISH block with user properties interleaved with other properties: each view sees only
    // its own entries, and re-encoding the user properties copies only the 0x26 entries.
    let hex_str =
        "30 1d 0001 74 17 26 0001 61 0001 31 0b 03 02 00000005 26 0001 62 0001 32 0b 04 6869";
    let Packet::Publish(p) = decode_all(&hex(hex_str), V5).unwrap() else {
        panic!()
    };
    let user = &p.properties.user_properties;
    assert_eq!(
        user.iter().collect::<Vec<_>>(),
        vec![("a", "1"), ("b", "2")]
    );
    assert_eq!(
        p.properties
            .subscription_ids
            .iter()
            .map(NonZeroU32::get)
            .collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(p.properties.message_expiry_secs, Some(5));
    let ack = Packet::PubAck(PubResp {
        packet_id: pid(1),
        reason_code: ReasonCode::SUCCESS,
        properties: AckProperties {
            reason_string: None,
            user_properties: user.clone(),
        },
    });
    assert_eq!(
        encode_vec(&ack, V5),
        hex("40 12 0001 00 0e 26 0001 61 0001 31 26 0001 62 0001 32")
    );
    assert_eq!(
        to_hex(&encode_vec(&Packet::Publish(p), V5)),
        to_hex(&hex(
            "30 1d 0001 74 17 02 00000005 26 0001 61 0001 31 26 0001 62 0001 32 0b 03 0b 04 6869"
        ))
    );
}
