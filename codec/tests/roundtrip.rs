//! Property tests: any valid packet encodes and decodes back to itself (MQTT 5.0, 3.1.1 and
//! the 3.1 CONNECT), re-encodes to the same bytes, and a `PublishHeader` plus its payload is
//! the same bytes as the whole PUBLISH. Arbitrary and mutated bytes never panic the decoder.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use core::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use ringmq_codec::*;

fn text() -> impl Strategy<Value = Str> {
    "[a-zA-Z0-9 _/é€-]{0,12}".prop_map(|s| Str::copy_from(&s).unwrap())
}
fn topic() -> impl Strategy<Value = Str> {
    "[a-z0-9$]{1,4}(/[a-z0-9 ]{0,4}){0,3}".prop_map(|s| Str::copy_from(&s).unwrap())
}
fn filter() -> impl Strategy<Value = Str> {
    prop_oneof![
        topic(),
        Just("#".to_owned()).prop_map(|s| Str::copy_from(&s).unwrap()),
        "[a-z]{1,3}/\\+(/[a-z]{1,3})?".prop_map(|s| Str::copy_from(&s).unwrap()),
        "(\\+/)?[a-z]{0,3}/#".prop_map(|s| Str::copy_from(&s).unwrap()),
        "\\$share/[a-z]{1,3}/[a-z+]{1}(/#)?".prop_map(|s| Str::copy_from(&s).unwrap()),
    ]
}
fn bin() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}
fn user() -> impl Strategy<Value = UserProperties> {
    vec(("[a-z]{0,4}", "[a-z0-9é]{0,4}"), 0..3).prop_map(|pairs| {
        UserProperties::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap()
    })
}
fn nz16() -> impl Strategy<Value = NonZeroU16> {
    (1..=u16::MAX).prop_map(|v| NonZeroU16::new(v).unwrap())
}
fn nz32() -> impl Strategy<Value = NonZeroU32> {
    (1..=u32::MAX).prop_map(|v| NonZeroU32::new(v).unwrap())
}
fn sub_id() -> impl Strategy<Value = NonZeroU32> {
    (1..=268_435_455u32).prop_map(|v| NonZeroU32::new(v).unwrap())
}
fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}
fn reason() -> impl Strategy<Value = ReasonCode> {
    any::<u8>().prop_map(ReasonCode)
}
fn ack_props(v5: bool) -> BoxedStrategy<AckProperties> {
    if !v5 {
        return Just(AckProperties::default()).boxed();
    }
    (of(text()), user())
        .prop_map(|(reason_string, user_properties)| AckProperties {
            reason_string,
            user_properties,
        })
        .boxed()
}
/// Authentication Data only comes with an Authentication Method.
fn auth_pair() -> impl Strategy<Value = (Option<Str>, Option<Bytes>)> {
    (of(text()), of(bin())).prop_map(|(m, d)| (m.clone(), d.filter(|_| m.is_some())))
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    let props = (
        (of(any::<u32>()), of(nz16()), of(nz32()), of(any::<u16>())),
        (of(any::<bool>()), of(any::<bool>()), user(), auth_pair()),
    )
        .prop_map(move |((se, rm, mps, tam), (rri, rpi, up, (am, ad)))| {
            if !v5 {
                return ConnectProperties::default();
            }
            ConnectProperties {
                session_expiry_secs: se,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties: up,
                authentication_method: am,
                authentication_data: ad,
            }
        });
    let will_props = (
        (
            of(any::<u32>()),
            of(any::<bool>()),
            of(any::<u32>()),
            of(text()),
        ),
        (of(topic()), of(bin()), user()),
    )
        .prop_map(move |((wd, pf, me, ct), (rt, cd, up))| {
            if !v5 {
                return WillProperties::default();
            }
            WillProperties {
                will_delay_secs: wd,
                payload_format_utf8: pf,
                message_expiry_secs: me,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd,
                user_properties: up,
            }
        });
    let will = of((qos(), any::<bool>(), topic(), bin(), will_props).prop_map(
        |(qos, retain, topic, payload, properties)| Will {
            qos,
            retain,
            topic,
            payload,
            properties,
        },
    ));
    (
        any::<bool>(),
        any::<u16>(),
        props,
        text(),
        will,
        of(text()),
        of(bin()),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive_secs,
                properties,
                client_id,
                will,
                mut username,
                password,
            )| {
                if !v5 && password.is_some() && username.is_none() {
                    username = Some(Str::from_static("u"));
                }
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive_secs,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                }))
            },
        )
}

fn connack(v5: bool) -> BoxedStrategy<Packet> {
    if !v5 {
        let codes = [0u8, 1, 2, 3, 4, 5].map(ReasonCode::from_v3_connack);
        return (any::<bool>(), proptest::sample::select(codes.to_vec()))
            .prop_map(|(session_present, reason_code)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    reason_code,
                    properties: Default::default(),
                })
            })
            .boxed();
    }
    let props = (
        (
            of(any::<u32>()),
            of(nz16()),
            of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        ),
        (
            of(any::<bool>()),
            of(nz32()),
            of(text()),
            of(any::<u16>()),
            of(text()),
            user(),
        ),
        (
            of(any::<bool>()),
            of(any::<bool>()),
            of(any::<bool>()),
            of(any::<u16>()),
        ),
        (of(text()), of(text()), auth_pair()),
    )
        .prop_map(
            |(
                (se, rm, mq),
                (ra, mps, aci, tam, rs, up),
                (wsa, sia, ssa, ska),
                (ri, sr, (am, ad)),
            )| {
                ConnAckProperties {
                    session_expiry_secs: se,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_id: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    user_properties: up,
                    wildcard_subscription_available: wsa,
                    subscription_ids_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive_secs: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am,
                    authentication_data: ad,
                }
            },
        );
    (any::<bool>(), reason(), props)
        .prop_map(|(session_present, reason_code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code,
                properties,
            })
        })
        .boxed()
}

fn publish(v5: bool) -> impl Strategy<Value = Publish> {
    let props = (
        (of(any::<bool>()), of(any::<u32>()), of(nz16()), of(topic())),
        (of(bin()), user(), vec(sub_id(), 0..3), of(text())),
    )
        .prop_map(move |((pf, me, ta, rt), (cd, up, ids, ct))| {
            if !v5 {
                return PublishProperties::default();
            }
            PublishProperties {
                payload_format_utf8: pf,
                message_expiry_secs: me,
                topic_alias: ta,
                response_topic: rt,
                correlation_data: cd,
                user_properties: up,
                subscription_ids: SubscriptionIds::from_ids(&ids),
                content_type: ct,
            }
        });
    (
        any::<bool>(),
        qos(),
        nz16(),
        any::<bool>(),
        topic(),
        any::<bool>(),
        props,
        vec(any::<u8>(), 0..64),
    )
        .prop_map(
            move |(dup, qos, id, retain, topic, alias_only, mut properties, payload)| {
                let topic = if v5 && alias_only {
                    properties.topic_alias.get_or_insert(NonZeroU16::MIN);
                    Str::default()
                } else {
                    topic
                };
                Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos_pid: QosPid::new(qos, id),
                    retain,
                    topic,
                    properties,
                    payload: Bytes::from(payload),
                }
            },
        )
}

fn pub_resp(v5: bool) -> impl Strategy<Value = PubResp> {
    (nz16(), reason(), ack_props(v5)).prop_map(move |(packet_id, reason_code, properties)| {
        PubResp {
            packet_id,
            reason_code: if v5 { reason_code } else { ReasonCode::SUCCESS },
            properties,
        }
    })
}

fn subscribe(v5: bool) -> impl Strategy<Value = Subscribe> {
    let rh = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendAtSubscribeIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    let entry = (filter(), qos(), any::<bool>(), any::<bool>(), rh).prop_map(
        move |(filter, qos, nl, rap, rh)| {
            let shared = filter.as_str().starts_with("$share/");
            let options = if v5 {
                SubscriptionOptions {
                    qos,
                    no_local: nl && !shared,
                    retain_as_published: rap,
                    retain_handling: rh,
                }
            } else {
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                }
            };
            SubscribeFilter { filter, options }
        },
    );
    (nz16(), of(sub_id()), user(), vec(entry, 1..4)).prop_map(
        move |(packet_id, id, up, filters)| Subscribe {
            packet_id,
            subscription_id: id.filter(|_| v5),
            user_properties: if v5 { up } else { UserProperties::new() },
            filters,
        },
    )
}

fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version.is_v5();
    let v3_codes = proptest::sample::select(vec![0x00u8, 0x01, 0x02, 0x80]).prop_map(ReasonCode);
    let suback_codes = if v5 {
        vec(reason(), 0..4).boxed()
    } else {
        vec(v3_codes, 0..4).boxed()
    };
    let mut arms = vec![
        connect(version).boxed(),
        connack(v5),
        publish(v5).prop_map(Packet::Publish).boxed(),
        pub_resp(v5).prop_map(Packet::PubAck).boxed(),
        pub_resp(v5).prop_map(Packet::PubRec).boxed(),
        pub_resp(v5).prop_map(Packet::PubRel).boxed(),
        pub_resp(v5).prop_map(Packet::PubComp).boxed(),
        subscribe(v5).prop_map(Packet::Subscribe).boxed(),
        (nz16(), ack_props(v5), suback_codes)
            .prop_map(|(packet_id, properties, reason_codes)| {
                Packet::SubAck(SubAck {
                    packet_id,
                    properties,
                    reason_codes,
                })
            })
            .boxed(),
        (nz16(), user(), vec(filter(), 1..4))
            .prop_map(move |(packet_id, up, filters)| {
                let user_properties = if v5 { up } else { UserProperties::new() };
                Packet::Unsubscribe(Unsubscribe {
                    packet_id,
                    user_properties,
                    filters,
                })
            })
            .boxed(),
        (nz16(), ack_props(v5), vec(reason(), 0..4))
            .prop_map(move |(packet_id, properties, codes)| {
                let reason_codes = if v5 { codes } else { Vec::new() };
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    properties,
                    reason_codes,
                })
            })
            .boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
    ];
    if v5 {
        let disconnect_props =
            (of(any::<u32>()), of(text()), user(), of(text())).prop_map(|(se, rs, up, sr)| {
                DisconnectProperties {
                    session_expiry_secs: se,
                    reason_string: rs,
                    user_properties: up,
                    server_reference: sr,
                }
            });
        arms.push(
            (reason(), disconnect_props)
                .prop_map(|(reason_code, properties)| {
                    Packet::Disconnect(Disconnect {
                        reason_code,
                        properties,
                    })
                })
                .boxed(),
        );
        let auth_props =
            (auth_pair(), of(text()), user()).prop_map(|((am, ad), rs, up)| AuthProperties {
                authentication_method: am,
                authentication_data: ad,
                reason_string: rs,
                user_properties: up,
            });
        arms.push(
            (reason(), auth_props)
                .prop_map(|(reason_code, properties)| {
                    Packet::Auth(Auth {
                        reason_code,
                        properties,
                    })
                })
                .boxed(),
        );
    } else {
        arms.push(Just(Packet::Disconnect(Disconnect::default())).boxed());
    }
    proptest::strategy::Union::new(arms).boxed()
}

fn round_trip(packet: &Packet, version: ProtocolVersion) -> Result<(), TestCaseError> {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let bytes = out.clone().freeze();
    let limits = Limits {
        max_packet_size: Limits::PROTOCOL_MAX_PACKET_SIZE,
    };
    prop_assert_eq!(peek_frame_len(&bytes, &limits), Ok(Some(bytes.len())));
    let decoded = decode(&mut out, &limits, version)
        .map_err(|e| TestCaseError::fail(format!("{e} decoding {}", common::to_hex(&bytes))))?;
    prop_assert!(out.is_empty());
    prop_assert_eq!(decoded.as_ref(), Some(packet));
    let mut again = BytesMut::new();
    encode(packet, version, &mut again).unwrap();
    prop_assert_eq!(&again[..], &bytes[..]);

    if let Packet::Publish(p) = packet {
        let ids: Vec<NonZeroU32> = p.properties.subscription_ids.iter().collect();
        let header = PublishHeader {
            dup: p.dup,
            qos_pid: p.qos_pid,
            retain: p.retain,
            topic: p.topic.as_bytes(),
            topic_alias: p.properties.topic_alias,
            message_expiry_secs: p.properties.message_expiry_secs,
            subscription_ids: &ids,
            forwarded: Some(&p.properties),
        };
        prop_assert_eq!(header.packet_len(version, p.payload.len()), Ok(bytes.len()));
        let mut out = BytesMut::new();
        header.encode(version, p.payload.len(), &mut out).unwrap();
        out.extend_from_slice(&p.payload);
        prop_assert_eq!(&out[..], &bytes[..]);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn v5_round_trip(p in packet(ProtocolVersion::V5)) {
        round_trip(&p, ProtocolVersion::V5)?;
    }

    #[test]
    fn v311_round_trip(p in packet(ProtocolVersion::V3_1_1)) {
        round_trip(&p, ProtocolVersion::V3_1_1)?;
    }

    #[test]
    fn v31_connect_round_trip(p in connect(ProtocolVersion::V3_1)) {
        round_trip(&p, ProtocolVersion::V3_1_1)?;
    }

    /// Arbitrary bytes: never a panic; whatever decodes re-encodes to something that decodes
    /// to the same packet.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..64), v5 in any::<bool>()) {
        let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V3_1_1 };
        decode_stable(&bytes, version)?;
    }

    /// Valid frames with one byte changed or cut short: never a panic.
    #[test]
    fn mutated_frames_never_panic(
        p in packet(ProtocolVersion::V5),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut out = BytesMut::new();
        encode(&p, ProtocolVersion::V5, &mut out).unwrap();
        let mut bytes = out.to_vec();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        decode_stable(&bytes, ProtocolVersion::V5)?;
        let n = cut.index(bytes.len());
        decode_stable(&bytes[..n], ProtocolVersion::V5)?;
    }
}

fn decode_stable(bytes: &[u8], version: ProtocolVersion) -> Result<(), TestCaseError> {
    let limits = Limits::default();
    let mut buf = BytesMut::from(bytes);
    if let Ok(Some(packet)) = decode(&mut buf, &limits, version) {
        let mut out = BytesMut::new();
        // An encoding error is possible only for AUTH in 3.1.1, which does not decode there.
        encode(&packet, version, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again = decode(&mut out, &limits, version);
        prop_assert_eq!(again, Ok(Some(packet)));
    }
    Ok(())
}
