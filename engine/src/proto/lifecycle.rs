//! Connections from accept to release: reading and decoding input, closing (with the will),
//! and the slots and quota counts they hold.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_codec::{ConnAck, Disconnect, DisconnectProperties, Packet, ReasonCode};
use tracing::{debug, warn};

use crate::ids::{ConnId, SessionId};
use crate::ops::metrics::Quota;
use crate::proto::conn::{Conn, ConnState};
use crate::proto::session::PendingWill;
use crate::proto::*;
use crate::shard::mesh::ConnToken;

impl ShardCore {
    /// A new network connection on listener number `listener` (config order), counted
    /// there until it is released (`Input::Release`); `None`: close it at once.
    ///
    /// A connection over a connection quota (`max_connections`, `max_connections_per_ip`,
    /// `max_connection_rate_per_ip`) is still accepted while this shard's share of
    /// `max_pending_refusals` lasts, only to answer its CONNECT with CONNACK 0x97 / 0x9F
    /// (3.1.1: 0x03) so the client learns why; beyond that it is closed without a word, which
    /// bounds what a flood of refused connections costs.
    pub(super) fn accept_on(
        &mut self,
        listener: usize,
        peer: SocketAddr,
        now: Instant,
    ) -> Option<ConnToken> {
        let (refusal, ip_counted) = self.quotas.admit(peer, &self.metrics, now)?;
        self.next_serial += 1;
        self.metrics.connection_opened(listener);
        let mut conn = Conn::new(self.next_serial, peer, now);
        conn.listener = listener;
        conn.refusal = refusal;
        conn.ip_counted = ip_counted;
        let index = self.conns.insert(conn);
        Some(ConnToken {
            conn: index,
            serial: self.next_serial,
        })
    }

    pub(crate) fn conn_live(&self, token: ConnToken) -> bool {
        self.conns
            .get(token.conn)
            .is_some_and(|c| c.serial == token.serial)
    }

    /// Bytes arrived on a connection: decode and handle every complete packet. A frame that
    /// is not complete stays in `buf` for the caller to continue.
    pub(super) fn handle_read(&mut self, index: ConnId, buf: &mut BytesMut, now: Instant) {
        // Nested when a claim resolved here releases another connection's held input
        // (`complete_connect`): that input is attributed to its own connection meanwhile.
        let previous = self.outboxes.begin_reading(index);
        // Input held while the session was claimed may end with a frame in part (see
        // `complete_connect`): these bytes continue it.
        if let Some(conn) = self.conns.get_mut(index)
            && !matches!(conn.state, ConnState::Claiming { .. })
            && let Some(extra) = conn.extra_mut_if_any()
            && !extra.held_input.is_empty()
        {
            let mut held = std::mem::take(&mut extra.held_input);
            held.extend_from_slice(buf);
            buf.clear();
            self.decode_input(index, &mut held, now);
            self.keep_partial_input(index, held);
        } else {
            self.decode_input(index, buf, now);
        }
        self.drain_local(now);
        self.outboxes.end_reading(previous);
    }

    /// What remains of held input after decoding (a frame in part) waits for the next read.
    pub(crate) fn keep_partial_input(&mut self, index: ConnId, rest: BytesMut) {
        if rest.is_empty() {
            return;
        }
        if let Some(conn) = self.conns.get_mut(index)
            && !conn.is_closing()
        {
            let held = &mut conn.extra_mut().held_input;
            if held.is_empty() {
                *held = rest;
            } else {
                // Claiming again meanwhile: the newer bytes are already behind these.
                let mut rest = rest;
                rest.extend_from_slice(held);
                *held = rest;
            }
        }
    }

    pub(super) fn decode_input(&mut self, index: ConnId, buf: &mut BytesMut, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(index) else {
                bug!(self.metrics, "decode_input: connection {index} is gone");
                return;
            };
            if conn.is_closing() {
                buf.clear();
                break;
            }
            if matches!(conn.state, ConnState::Claiming { .. }) {
                // Packets pipelined after CONNECT wait until the session is ready (it may be
                // coming from another shard); complete_connect processes them.
                let held = conn.extra().map_or(0, |e| e.held_input.len());
                if held + buf.len() > self.codec_limits.max_packet_size as usize {
                    let f = fail(
                        ReasonCode::QUOTA_EXCEEDED,
                        "too much data sent before CONNACK",
                    );
                    self.fail_conn(index, f, now);
                    buf.clear();
                    break;
                }
                if !buf.is_empty() {
                    conn.extra_mut().held_input.extend_from_slice(buf);
                }
                buf.clear();
                break;
            }
            let version = conn.version;
            let conn = if self.quotas.publish_on() {
                if let Err(f) = self.check_publish_frame(index, buf, now) {
                    // The message is not routed; the will is published (close by the server,
                    // not a normal DISCONNECT [MQTT-3.1.2-8]).
                    self.fail_conn(index, f, now);
                    continue;
                }
                match self.conns.get_mut(index) {
                    Some(conn) => conn,
                    None => return,
                }
            } else {
                conn
            };
            match ringmq_codec::decode(buf, &self.codec_limits, version) {
                Ok(Some(packet)) => {
                    conn.last_rx = now;
                    self.metrics.packet_received(&packet);
                    if let Err(f) = self.handle_packet(index, packet, now) {
                        self.fail_conn(index, f, now);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if let Some(version) = e.connack_version()
                        && matches!(conn.state, ConnState::AwaitConnect { .. })
                    {
                        // The CONNACK refusing the level is written in the format the level
                        // implies (see fail_conn).
                        conn.version = version;
                    }
                    self.fail_conn(index, e.into(), now);
                    buf.clear();
                    break;
                }
            }
        }
    }

    /// The peer closed the connection or the socket failed.
    pub(super) fn handle_closed(&mut self, index: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else {
            bug!(self.metrics, "handle_closed: connection {index} is gone");
            return;
        };
        if !conn.is_closing() {
            debug!(client_id = %conn.client_id, peer = %conn.peer, "connection lost");
            self.close_conn(index, true, now);
        }
        self.drain_local(now);
    }

    /// The runtime finished with the connection (socket closed, tasks ended).
    pub(super) fn release(&mut self, index: ConnId, now: Instant) {
        if let Some(conn) = self.conns.get(index) {
            if !conn.is_closing() {
                self.close_conn(index, true, now);
            }
            self.outboxes.forget(index);
            self.durable_conn_gone(index);
            if let Some(conn) = self.conns.try_remove(index) {
                self.metrics.connection_closed(conn.listener);
                self.quotas.release(&conn, now);
            }
        }
        self.drain_local(now);
    }

    /// Sends DISCONNECT (v5, when connected) or CONNACK (before CONNACK) with `f.reason` and
    /// closes the connection; the will is published [MQTT-3.1.2-8].
    pub(crate) fn fail_conn(&mut self, index: ConnId, f: Failure, now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        if conn.is_closing() {
            return;
        }
        if let Some(quota) = f.quota {
            self.metrics.quota_rejected(quota);
        } else if f.reason.is_protocol_error() {
            self.metrics.protocol_errors.inc();
        }
        warn!(client_id = %conn.client_id, peer = %conn.peer, reason = %f.reason, quota = f.quota.map(Quota::label), "closing connection: {}", f.message);
        match conn.state {
            ConnState::AwaitConnect { .. }
                if f.reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION =>
            {
                // In the format of the level the client sent (`decode_input` set it from
                // `DecodeError::connack_version`): 3.1.1 return code 0x01 for levels 3 and 4,
                // else MQTT 5 reason code 0x84 without properties [MQTT-3.1.2-2].
                write_packet(
                    conn,
                    &Packet::ConnAck(ConnAck {
                        reason_code: f.reason,
                        ..Default::default()
                    }),
                    &self.metrics,
                );
            }
            ConnState::AwaitConnect { .. } => {
                // A CONNECT that did not decode: close without CONNACK [MQTT-3.1.4-1], since
                // the client's protocol version is not known.
            }
            ConnState::Claiming { .. } => write_connack_refusal(conn, &f, &self.metrics),
            ConnState::Connected => {
                if conn.version.is_v5() {
                    let d = Disconnect {
                        reason_code: f.reason,
                        properties: DisconnectProperties {
                            reason_string: reason_string(&f.message),
                            ..Default::default()
                        },
                    };
                    write_packet(conn, &Packet::Disconnect(d), &self.metrics);
                }
            }
            ConnState::Closing => {}
        }
        self.close_conn(index, true, now);
    }

    /// Marks the connection closing and detaches its session. `publish_will`: the close was
    /// not a normal DISCONNECT, so the will is published (after its delay).
    pub(crate) fn close_conn(&mut self, index: ConnId, publish_will: bool, now: Instant) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        if conn.is_closing() {
            return;
        }
        let was_connected = conn.is_connected();
        conn.state = ConnState::Closing;
        let will = if publish_will { conn.will.take() } else { None };
        conn.will = None;
        let Some(sidx) = conn.session.take() else {
            return;
        };
        if !was_connected {
            return;
        }
        let Some(session) = self.sessions.get_mut(sidx) else {
            return;
        };
        let ends_now = session.expiry_secs == 0;
        if !ends_now {
            session.expires_at = Some(now + Duration::from_secs(u64::from(session.expiry_secs)));
        }
        if let Some(will) = will {
            let delay = will.properties.will_delay_secs.unwrap_or(0);
            if delay == 0 || ends_now {
                self.publish_will(*will, now);
            } else {
                let delay = delay.min(session.expiry_secs);
                session.pending_will = Some(PendingWill {
                    will,
                    publish_at: now + Duration::from_secs(u64::from(delay)),
                });
            }
        }
        self.detach_session(sidx);
        if ends_now {
            self.end_session(sidx, now);
        } else {
            // Offline now: its deadline and pending will.
            self.durable_session_changed(sidx, false);
        }
    }

    pub(crate) fn detach_session(&mut self, sidx: SessionId) {
        if let Some(s) = self.sessions.get_mut(sidx) {
            s.conn = None;
        }
    }
}
