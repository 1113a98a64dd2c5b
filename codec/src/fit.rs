//! Encoding within the receiver's Maximum Packet Size.
//!
//! A server MUST NOT send a packet larger than the Maximum Packet Size its client announced
//! [MQTT-3.1.2-25]. The Reason String and User Properties of CONNACK, PUBACK, PUBREC, PUBREL,
//! PUBCOMP, SUBACK, UNSUBACK, DISCONNECT and AUTH are the parts a sender leaves out for that:
//! each packet's section says the sender MUST NOT send them if they would take the packet past
//! that size (CONNACK [MQTT-3.2.2-19] [MQTT-3.2.2-20], PUBACK [MQTT-3.4.2-2] [MQTT-3.4.2-3],
//! PUBREC [MQTT-3.5.2-2] [MQTT-3.5.2-3], PUBREL [MQTT-3.6.2-2] [MQTT-3.6.2-3], PUBCOMP
//! [MQTT-3.7.2-2] [MQTT-3.7.2-3], SUBACK [MQTT-3.9.2-1] [MQTT-3.9.2-2], UNSUBACK [MQTT-3.11.2-1]
//! [MQTT-3.11.2-2], DISCONNECT [MQTT-3.14.2-3] [MQTT-3.14.2-4], AUTH [MQTT-3.15.2-2]
//! [MQTT-3.15.2-3]). They are diagnostics: the packet still says everything without them.
//!
//! [`encode_within`] leaves something out only when the whole packet would not fit otherwise:
//! the Reason String first (human-readable text, the least any program relies on), then the
//! User Properties instead if the Reason String alone fits, then both. A PUBLISH is never
//! trimmed: its properties are the publisher's, forwarded unaltered [MQTT-3.3.2-17]
//! [MQTT-3.3.2-18], so a PUBLISH too large is discarded whole by its sender.

use bytes::BytesMut;

use crate::encode::{encode_sized, frame_len, remaining_len};
use crate::{EncodeError, Packet, ProtocolVersion, Str, UserProperties};

/// What [`encode_within`] left out of a packet so that it fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Omitted {
    pub reason_string: bool,
    pub user_properties: bool,
}

impl Omitted {
    /// The packet was encoded whole.
    pub const NOTHING: Omitted = Omitted {
        reason_string: false,
        user_properties: false,
    };

    /// Something was left out.
    pub fn any(self) -> bool {
        self.reason_string || self.user_properties
    }
}

/// The smaller packets tried in turn, most kept first.
const TRIMS: [Omitted; 3] = [
    Omitted {
        reason_string: true,
        user_properties: false,
    },
    Omitted {
        reason_string: false,
        user_properties: true,
    },
    Omitted {
        reason_string: true,
        user_properties: true,
    },
];

/// Appends `packet`, encoded for `version`, to `out` in at most `max_packet_size` bytes (the
/// receiver's Maximum Packet Size, fixed header included), leaving out its Reason String and
/// User Properties if it takes that (see the module header). Returns what was left out.
///
/// Fails with [`EncodeError::ExceedsMaximumPacketSize`] when the packet does not fit even
/// without them (then it must not be sent [MQTT-3.1.2-25]), and with any error of
/// [`encode`](crate::encode). Nothing is appended when an error is returned. Allocates only
/// to trim (a copy of the packet), never when the packet fits as it is.
pub fn encode_within(
    packet: &Packet,
    version: ProtocolVersion,
    max_packet_size: u32,
    out: &mut BytesMut,
) -> Result<Omitted, EncodeError> {
    let max = max_packet_size as usize;
    let remaining = remaining_len(packet, version)?;
    let whole = frame_len(remaining);
    if whole <= max {
        encode_sized(packet, version, remaining, out)?;
        return Ok(Omitted::NOTHING);
    }
    let too_large = |len| EncodeError::ExceedsMaximumPacketSize {
        packet: packet.name(),
        len,
        max: max_packet_size,
    };
    // 3.1.1 packets carry no properties: nothing to leave out.
    let Some(present) = optional(packet).filter(|_| version.is_v5()) else {
        return Err(too_large(whole));
    };
    let mut smallest = whole;
    for omit in TRIMS {
        // A trim of something absent is the same packet as a trim tried before it.
        if (omit.reason_string && !present.reason_string)
            || (omit.user_properties && !present.user_properties)
        {
            continue;
        }
        let mut trimmed = packet.clone();
        trim(&mut trimmed, omit);
        let remaining = remaining_len(&trimmed, version)?;
        let len = frame_len(remaining);
        if len <= max {
            encode_sized(&trimmed, version, remaining, out)?;
            return Ok(omit);
        }
        smallest = smallest.min(len);
    }
    Err(too_large(smallest))
}

/// The Reason String and User Properties of the packets a sender may trim; `None` for the
/// others (PUBLISH, CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, PINGRESP).
fn optional_mut(packet: &mut Packet) -> Option<(&mut Option<Str>, &mut UserProperties)> {
    match packet {
        Packet::ConnAck(c) => Some((
            &mut c.properties.reason_string,
            &mut c.properties.user_properties,
        )),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => Some((
            &mut r.properties.reason_string,
            &mut r.properties.user_properties,
        )),
        Packet::SubAck(a) => Some((
            &mut a.properties.reason_string,
            &mut a.properties.user_properties,
        )),
        Packet::UnsubAck(a) => Some((
            &mut a.properties.reason_string,
            &mut a.properties.user_properties,
        )),
        Packet::Disconnect(d) => Some((
            &mut d.properties.reason_string,
            &mut d.properties.user_properties,
        )),
        Packet::Auth(a) => Some((
            &mut a.properties.reason_string,
            &mut a.properties.user_properties,
        )),
        Packet::Connect(_)
        | Packet::Publish(_)
        | Packet::Subscribe(_)
        | Packet::Unsubscribe(_)
        | Packet::PingReq
        | Packet::PingResp => None,
    }
}

/// Which of the two `packet` carries; `None` if it is not a packet a sender may trim.
fn optional(packet: &Packet) -> Option<Omitted> {
    let (reason_string, user_properties) = match packet {
        Packet::ConnAck(c) => (&c.properties.reason_string, &c.properties.user_properties),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            (&r.properties.reason_string, &r.properties.user_properties)
        }
        Packet::SubAck(a) => (&a.properties.reason_string, &a.properties.user_properties),
        Packet::UnsubAck(a) => (&a.properties.reason_string, &a.properties.user_properties),
        Packet::Disconnect(d) => (&d.properties.reason_string, &d.properties.user_properties),
        Packet::Auth(a) => (&a.properties.reason_string, &a.properties.user_properties),
        _ => return None,
    };
    Some(Omitted {
        reason_string: reason_string.is_some(),
        user_properties: !user_properties.is_empty(),
    })
}

fn trim(packet: &mut Packet, omit: Omitted) {
    if let Some((reason_string, user_properties)) = optional_mut(packet) {
        if omit.reason_string {
            *reason_string = None;
        }
        if omit.user_properties {
            *user_properties = UserProperties::new();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use core::num::NonZeroU16;

    use super::*;
    use crate::{
        AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Disconnect,
        DisconnectProperties, PubResp, Publish, PublishProperties, QosPid, ReasonCode, SubAck,
        UnsubAck, encode,
    };

    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(core::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn pid(n: u16) -> NonZeroU16 {
        NonZeroU16::new(n).unwrap()
    }

    fn within(packet: &Packet, max: u32) -> Result<(Vec<u8>, Omitted), EncodeError> {
        let mut out = BytesMut::new();
        let omitted = encode_within(packet, V5, max, &mut out)?;
        assert!(out.len() <= max as usize, "{} bytes > {max}", out.len());
        Ok((out.to_vec(), omitted))
    }

    fn whole_len(packet: &Packet) -> usize {
        let mut out = BytesMut::new();
        encode(packet, V5, &mut out).unwrap();
        out.len()
    }

    fn ack_props(reason: &'static str, user: &[(&str, &str)]) -> AckProperties {
        AckProperties {
            reason_string: Some(Str::from_static(reason)),
            user_properties: UserProperties::from_pairs(user.iter().copied()).unwrap(),
        }
    }

    /// PUBACK 0x87 with Reason String "no" and User Property ("k", "v").
    fn puback() -> Packet {
        Packet::PubAck(PubResp {
            packet_id: pid(7),
            reason_code: ReasonCode::NOT_AUTHORIZED,
            properties: ack_props("no", &[("k", "v")]),
        })
    }

    #[test]
    fn puback_vectors_at_each_boundary() {
        // Whole: 40 10 0007 87, properties (12): 1f 0002 "no", 26 0001 "k" 0001 "v".
        let whole = "40 10 0007 87 0c 1f 0002 6e6f 26 0001 6b 0001 76";
        assert_eq!(
            within(&puback(), 18).unwrap(),
            (hex(whole), Omitted::NOTHING)
        );
        assert_eq!(within(&puback(), 1024).unwrap().0, hex(whole));
        // One byte less: the Reason String goes, the User Property stays.
        let no_reason = "40 0b 0007 87 07 26 0001 6b 0001 76";
        let omitted = Omitted {
            reason_string: true,
            user_properties: false,
        };
        assert_eq!(within(&puback(), 17).unwrap(), (hex(no_reason), omitted));
        assert_eq!(within(&puback(), 13).unwrap(), (hex(no_reason), omitted));
        // Below that, the Reason String alone still fits: it is kept, the User Property goes.
        let no_user = "40 09 0007 87 05 1f 0002 6e6f";
        let omitted = Omitted {
            reason_string: false,
            user_properties: true,
        };
        assert_eq!(within(&puback(), 12).unwrap(), (hex(no_user), omitted));
        assert_eq!(within(&puback(), 11).unwrap(), (hex(no_user), omitted));
        // Then neither: the shortest form, without a Property Length (3.4.2.1).
        let bare = "40 03 0007 87";
        let omitted = Omitted {
            reason_string: true,
            user_properties: true,
        };
        assert_eq!(within(&puback(), 10).unwrap(), (hex(bare), omitted));
        assert_eq!(within(&puback(), 5).unwrap(), (hex(bare), omitted));
        // Not even that: an error, and nothing written.
        let mut out = BytesMut::from(&b"kept"[..]);
        let e = encode_within(&puback(), V5, 4, &mut out).unwrap_err();
        assert_eq!(
            e,
            EncodeError::ExceedsMaximumPacketSize {
                packet: "PUBACK",
                len: 5,
                max: 4
            }
        );
        assert!(
            e.to_string()
                .starts_with("[MQTT-3.1.2-25] PUBACK of 5 bytes")
        );
        assert_eq!(&out[..], b"kept");
    }

    #[test]
    fn connack_refusal_loses_its_reason_string_first() {
        // [MQTT-3.2.2-19]: CONNACK 0x85 with a Maximum Packet Size after the Reason String.
        let ack = Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            properties: ConnAckProperties {
                maximum_packet_size: core::num::NonZeroU32::new(1024),
                reason_string: Some(Str::from_static("client identifier too long")),
                ..Default::default()
            },
        });
        let whole = whole_len(&ack);
        assert_eq!(whole, 39);
        assert_eq!(within(&ack, 39).unwrap().1, Omitted::NOTHING);
        let (bytes, omitted) = within(&ack, 38).unwrap();
        assert_eq!(bytes, hex("20 08 00 85 05 27 00000400"));
        assert!(omitted.reason_string && !omitted.user_properties);
        // The properties the client needs are never left out.
        let e = within(&ack, 9).unwrap_err();
        assert_eq!(
            e,
            EncodeError::ExceedsMaximumPacketSize {
                packet: "CONNACK",
                len: 10,
                max: 9
            }
        );
    }

    /// Every packet a server trims, at every maximum from under its bare size to over its
    /// whole size: what is sent fits whenever the bare packet does, both properties are sent
    /// whenever the whole packet fits, and one is left out only when the packet with it does
    /// not fit (the Reason String goes first).
    #[test]
    fn each_trimmable_packet_at_every_maximum() {
        let props = || ack_props("a reason string long enough", &[("why", "a user property")]);
        let packets = [
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::NOT_AUTHORIZED,
                properties: ConnAckProperties {
                    reason_string: props().reason_string,
                    user_properties: props().user_properties,
                    server_reference: Some(Str::from_static("srv")),
                    ..Default::default()
                },
            }),
            Packet::PubAck(PubResp {
                packet_id: pid(1),
                reason_code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
                properties: props(),
            }),
            Packet::PubRec(PubResp {
                packet_id: pid(1),
                reason_code: ReasonCode::SUCCESS,
                properties: props(),
            }),
            Packet::PubRel(PubResp {
                packet_id: pid(1),
                reason_code: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                properties: props(),
            }),
            Packet::PubComp(PubResp {
                packet_id: pid(1),
                reason_code: ReasonCode::SUCCESS,
                properties: props(),
            }),
            Packet::SubAck(SubAck {
                packet_id: pid(1),
                properties: props(),
                reason_codes: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::NOT_AUTHORIZED],
            }),
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(1),
                properties: props(),
                reason_codes: vec![ReasonCode::SUCCESS],
            }),
            Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::UNSPECIFIED_ERROR,
                properties: DisconnectProperties {
                    reason_string: props().reason_string,
                    user_properties: props().user_properties,
                    server_reference: Some(Str::from_static("srv")),
                    ..Default::default()
                },
            }),
            Packet::Auth(Auth {
                reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: AuthProperties {
                    authentication_method: Some(Str::from_static("m")),
                    reason_string: props().reason_string,
                    user_properties: props().user_properties,
                    ..Default::default()
                },
            }),
        ];
        for packet in packets {
            let name = packet.name();
            let variant = |omit: Omitted| {
                let mut p = packet.clone();
                trim(&mut p, omit);
                whole_len(&p)
            };
            let both = whole_len(&packet);
            let reason_only = variant(TRIMS[1]);
            let user_only = variant(TRIMS[0]);
            let bare = variant(TRIMS[2]);
            assert!(
                bare < user_only && user_only < both && reason_only < both,
                "{name}"
            );
            for max in bare - 1..=both + 1 {
                let Ok((bytes, omitted)) = within(&packet, max as u32) else {
                    assert!(max < bare, "{name}: {max} fits the bare packet");
                    continue;
                };
                assert!(max >= bare, "{name}");
                if max >= both {
                    assert_eq!(omitted, Omitted::NOTHING, "{name} at {max}");
                } else if max >= user_only {
                    assert_eq!(omitted, TRIMS[0], "{name} at {max}");
                } else if max >= reason_only {
                    assert_eq!(omitted, TRIMS[1], "{name} at {max}");
                } else {
                    assert_eq!(omitted, TRIMS[2], "{name} at {max}");
                }
                // What was sent decodes to the packet less what was left out.
                let mut buf = BytesMut::from(&bytes[..]);
                let limits = crate::Limits::default();
                let got = crate::decode(&mut buf, &limits, V5).unwrap().unwrap();
                let mut want = packet.clone();
                trim(&mut want, omitted);
                assert_eq!(got, want, "{name} at {max}");
            }
        }
    }

    #[test]
    fn publish_and_v311_are_never_trimmed() {
        let publish = Packet::Publish(Publish {
            dup: false,
            qos_pid: QosPid::AtMostOnce,
            retain: false,
            topic: Str::from_static("a/b"),
            properties: PublishProperties {
                user_properties: UserProperties::from_pairs([("k", "v")]).unwrap(),
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(b"x"),
        });
        let len = whole_len(&publish);
        assert!(within(&publish, len as u32).is_ok());
        let e = within(&publish, len as u32 - 1).unwrap_err();
        assert!(
            matches!(
                e,
                EncodeError::ExceedsMaximumPacketSize {
                    packet: "PUBLISH",
                    ..
                }
            ),
            "{e:?}"
        );
        // 3.1.1: PUBACK is 4 bytes whatever its properties.
        let mut out = BytesMut::new();
        let omitted = encode_within(&puback(), ProtocolVersion::V3_1_1, 4, &mut out).unwrap();
        assert_eq!(
            (out.to_vec(), omitted),
            (hex("40 02 0007"), Omitted::NOTHING)
        );
        assert!(encode_within(&puback(), ProtocolVersion::V3_1_1, 3, &mut out).is_err());
    }
}
