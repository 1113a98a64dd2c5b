//! Packets from a connected client, and the acknowledgements of what the server sent it.

use std::num::NonZeroU16;
use std::time::Instant;

use ringmq_codec::{AckProperties, Disconnect, Packet, PubResp, QoS, ReasonCode};
use tracing::debug;

use crate::ids::ConnId;
use crate::proto::conn::ConnState;
use crate::proto::session::InflightState;
use crate::proto::*;

impl ShardCore {
    pub(super) fn handle_packet(
        &mut self,
        index: ConnId,
        packet: Packet,
        now: Instant,
    ) -> Result<(), Failure> {
        let Some(conn) = self.conns.get_mut(index) else {
            bug!(self.metrics, "handle_packet: connection {index} is gone");
            return Ok(());
        };
        match (&conn.state, packet) {
            (ConnState::AwaitConnect { .. }, Packet::Connect(connect)) => {
                self.handle_connect(index, connect, now)
            }
            (ConnState::AwaitConnect { .. }, p) => Err(fail(
                ReasonCode::PROTOCOL_ERROR,
                format!(
                    "[MQTT-3.1.0-1] first packet must be CONNECT, got {}",
                    p.name()
                ),
            )),
            (ConnState::Claiming { .. }, Packet::Connect(_))
            | (ConnState::Connected, Packet::Connect(_)) => Err(fail(
                ReasonCode::PROTOCOL_ERROR,
                "[MQTT-3.1.0-2] second CONNECT",
            )),
            // handle_read holds input back while claiming; nothing is decoded in this state.
            (ConnState::Claiming { .. }, _) => Ok(()),
            (ConnState::Closing, _) => Ok(()),
            (ConnState::Connected, p) => self.handle_session_packet(index, p, now),
        }
    }

    pub(super) fn handle_session_packet(
        &mut self,
        index: ConnId,
        packet: Packet,
        now: Instant,
    ) -> Result<(), Failure> {
        match packet {
            Packet::Publish(p) => self.handle_publish(index, p, now),
            Packet::PubAck(a) => {
                self.handle_puback(index, a.packet_id, now);
                Ok(())
            }
            Packet::PubRec(a) => {
                self.handle_pubrec(index, a, now);
                Ok(())
            }
            Packet::PubRel(a) => {
                self.handle_pubrel(index, a.packet_id);
                Ok(())
            }
            Packet::PubComp(a) => {
                self.handle_pubcomp(index, a.packet_id, now);
                Ok(())
            }
            Packet::Subscribe(s) => self.handle_subscribe(index, s, now),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(index, u),
            Packet::PingReq => {
                if let Some(conn) = self.conns.get_mut(index) {
                    write_packet(conn, &Packet::PingResp, &self.metrics);
                }
                Ok(())
            }
            Packet::Disconnect(d) => self.handle_disconnect(index, d, now),
            Packet::Auth(a) => self.handle_auth(index, a, now),
            p => Err(fail(
                ReasonCode::PROTOCOL_ERROR,
                format!("{} is not sent by clients", p.name()),
            )),
        }
    }

    pub(super) fn handle_disconnect(
        &mut self,
        index: ConnId,
        d: Disconnect,
        now: Instant,
    ) -> Result<(), Failure> {
        let Some(conn) = self.conns.get_mut(index) else {
            bug!(
                self.metrics,
                "handle_disconnect: connection {index} is gone"
            );
            return Ok(());
        };
        if let Some(expiry) = d.properties.session_expiry_secs {
            if conn.connect_expiry_zero && expiry != 0 {
                return Err(fail(
                    ReasonCode::PROTOCOL_ERROR,
                    "[MQTT-3.14.2-2] session expiry set in DISCONNECT after zero in CONNECT",
                ));
            }
            if let Some(s) = conn.session.and_then(|s| self.sessions.get_mut(s)) {
                s.expiry_secs = expiry.min(self.limits.max_session_expiry_secs);
            }
        }
        let with_will = d.reason_code == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE;
        debug!(client_id = %conn.client_id, reason = %d.reason_code, "client disconnected");
        // [MQTT-3.14.4-3]: a normal DISCONNECT deletes the will.
        self.close_conn(index, with_will, now);
        Ok(())
    }

    pub(super) fn handle_puback(&mut self, index: ConnId, id: NonZeroU16, now: Instant) {
        let Some(sidx) = self.conns.get(index).and_then(|c| c.session) else {
            bug!(
                self.metrics,
                "handle_puback: connection {index} or its session is gone"
            );
            return;
        };
        let Some(s) = self.sessions.get_mut(sidx) else {
            bug!(self.metrics, "handle_puback: session {sidx} is gone");
            return;
        };
        match s.inflight_position(id) {
            Some(pos) if s.inflight[pos].out.qos == QoS::AtLeastOnce => {
                s.inflight.remove(pos);
                durable::hooks::acked(self.durable.as_deref_mut(), s, id);
            }
            _ => debug!(client_id = %s.client_id, id, "PUBACK for unknown packet id"),
        }
        self.fill_window(sidx, now);
    }

    pub(super) fn handle_pubrec(&mut self, index: ConnId, ack: PubResp, now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else {
            bug!(self.metrics, "handle_pubrec: connection {index} is gone");
            return;
        };
        let Some(sidx) = conn.session else { return };
        let Some(s) = self.sessions.get_mut(sidx) else {
            bug!(self.metrics, "handle_pubrec: session {sidx} is gone");
            return;
        };
        let id = ack.packet_id;
        match s.inflight_position(id) {
            Some(pos) if s.inflight[pos].out.qos == QoS::ExactlyOnce => {
                if ack.reason_code.is_error() {
                    // A PUBREC with an error code ends the exchange: no PUBREL [MQTT-4.3.3-4].
                    s.inflight.remove(pos);
                    durable::hooks::acked(self.durable.as_deref_mut(), s, id);
                    self.fill_window(sidx, now);
                    return;
                }
                s.inflight[pos].state = InflightState::Released;
                durable::hooks::released(self.durable.as_deref_mut(), s, id);
                write_packet(
                    conn,
                    &Packet::PubRel(PubResp::new(id, ReasonCode::SUCCESS)),
                    &self.metrics,
                );
            }
            _ => {
                // Unknown id: PUBREL with 0x92 (MQTT 5.0 section 3.6.2.1).
                let rc = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                write_packet(conn, &Packet::PubRel(PubResp::new(id, rc)), &self.metrics);
            }
        }
    }

    pub(super) fn handle_pubcomp(&mut self, index: ConnId, id: NonZeroU16, now: Instant) {
        let Some(sidx) = self.conns.get(index).and_then(|c| c.session) else {
            bug!(
                self.metrics,
                "handle_pubcomp: connection {index} or its session is gone"
            );
            return;
        };
        let Some(s) = self.sessions.get_mut(sidx) else {
            bug!(self.metrics, "handle_pubcomp: session {sidx} is gone");
            return;
        };
        if let Some(pos) = s.inflight_position(id)
            && s.inflight[pos].state == InflightState::Released
        {
            s.inflight.remove(pos);
            durable::hooks::acked(self.durable.as_deref_mut(), s, id);
        }
        self.fill_window(sidx, now);
    }

    pub(super) fn handle_pubrel(&mut self, index: ConnId, id: NonZeroU16) {
        let Some(conn) = self.conns.get_mut(index) else {
            bug!(self.metrics, "handle_pubrel: connection {index} is gone");
            return;
        };
        let Some(s) = conn.session.and_then(|s| self.sessions.get_mut(s)) else {
            bug!(self.metrics, "handle_pubrel: session of {index} is gone");
            return;
        };
        let rc = if s.incoming_qos2.remove(&id.get()) {
            if let Some(d) = self.durable.as_deref_mut()
                && s.durable
            {
                d.inbound(&s.client_id, id, false);
            }
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        let durable = s.durable;
        write_packet(conn, &Packet::PubComp(PubResp::new(id, rc)), &self.metrics);
        if durable {
            // After PUBCOMP the client may reuse the packet id: its release must be on disk
            // first, or a restart would take the new message for a duplicate.
            self.gate_output(index);
        }
    }

    pub(crate) fn ack_properties(&self, index: ConnId, reason: &str) -> AckProperties {
        let wants = self
            .conns
            .get(index)
            .is_some_and(|c| c.request_problem_info);
        AckProperties {
            reason_string: if wants { reason_string(reason) } else { None },
            ..Default::default()
        }
    }
}
