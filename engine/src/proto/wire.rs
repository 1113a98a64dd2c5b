//! What the core writes to a client: control packets within the client's Maximum Packet
//! Size, refusals in CONNACK, and why a connection is closed ([`Failure`]).

use ringmq_codec::{ConnAck, ConnAckProperties, DecodeError, Packet, ReasonCode, Str};
use tracing::{debug, warn};

use crate::ops::metrics::{PacketType, Quota, ShardMetrics};
use crate::proto::conn::Conn;

/// Why a connection is being closed by the server.
pub(crate) struct Failure {
    pub reason: ReasonCode,
    pub message: String,
    /// A quota, not a protocol error, closed the connection (counted as such).
    pub quota: Option<Quota>,
}

impl From<DecodeError> for Failure {
    fn from(e: DecodeError) -> Failure {
        fail(e.reason_code(), e.to_string())
    }
}

pub(crate) fn fail(reason: ReasonCode, message: impl Into<String>) -> Failure {
    Failure {
        reason,
        message: message.into(),
        quota: None,
    }
}

/// A refusal or disconnect because of `quota`.
pub(crate) fn over_quota(quota: Quota, reason: ReasonCode, message: impl Into<String>) -> Failure {
    Failure {
        quota: Some(quota),
        ..fail(reason, message)
    }
}

/// Encodes a control packet into the connection's output (its writer is listed by
/// `ShardCore::poll_writable`).
///
/// Every control packet goes through here, so here the client's Maximum Packet Size is kept
/// [MQTT-3.1.2-25]: a Reason String, then User Properties, that would take the packet past it
/// are left out (CONNACK [MQTT-3.2.2-19] [MQTT-3.2.2-20], and the same rule on every
/// acknowledgement, DISCONNECT and AUTH), and a packet too large even without them is not
/// sent. Before CONNECT is read no limit is known (`client_max_packet` is the protocol's).
pub(crate) fn write_packet(conn: &mut Conn, packet: &Packet, metrics: &ShardMetrics) {
    let max = conn.client_max_packet;
    let written = ringmq_codec::encode_within(packet, conn.version, max, &mut conn.out);
    if written.is_ok() {
        metrics.packet_sent(PacketType::of(packet));
    }
    match written {
        Ok(omitted) if omitted.any() => {
            debug!(client_id = %conn.client_id, packet = packet.name(), max, ?omitted, "optional properties left out to fit the client's Maximum Packet Size");
        }
        Ok(_) => {}
        Err(e) => warn!(client_id = %conn.client_id, "{} not sent: {e}", packet.name()),
    }
}

/// CONNECT was understood: the refusal goes in CONNACK [MQTT-3.2.2-6]. 3.1.1 has return codes
/// for only a few causes [MQTT-3.2.2-5]; for the rest the connection is just closed.
pub(crate) fn write_connack_refusal(conn: &mut Conn, f: &Failure, metrics: &ShardMetrics) {
    let v3_code = f.reason.to_v3_connack();
    if conn.version.is_v5() || v3_code != 0x05 || f.reason == ReasonCode::NOT_AUTHORIZED {
        let properties = ConnAckProperties {
            reason_string: reason_string(&f.message),
            ..Default::default()
        };
        let ack = ConnAck {
            session_present: false,
            reason_code: f.reason,
            properties,
        };
        write_packet(conn, &Packet::ConnAck(ack), metrics);
    }
}

pub(crate) fn reason_string(s: &str) -> Option<Str> {
    // At most 256 bytes, cut on a character boundary.
    let mut end = s.len().min(256);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Str::copy_from(&s[..end]).ok()
}
