//! Delivery to sessions: the in-flight window, the queue of an offline or busy session,
//! shared-subscription picks, and encoding the PUBLISH a subscriber gets.

use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_codec::{Packet, PubResp, PublishHeader, QoS, QosPid, ReasonCode, Str, topic};
use tracing::{debug, warn};

use crate::ids::SessionId;
use crate::ops::metrics::{DropCause, PacketType, ShardMetrics};
use crate::proto::forward::handled_after;
use crate::proto::message::Message;
use crate::proto::route::*;
use crate::proto::session::{Inflight, InflightState, Outgoing, SubIds};
use crate::proto::{ShardCore, durable, write_packet};
use crate::shard::mesh::{ShardMsg, Stamp};

/// Hops a forwarded copy may take chasing a session from shard to shard (each hop is a shard
/// the session left while the copy was on its way).
pub(crate) const MAX_FORWARD_HOPS: u8 = 64;

/// Where a forwarded copy (`ShardMsg::DeliverTo`) comes from: the original delivery's
/// targets and stamp, and the relay stamp the forwarding shard waits on (persistence).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forwarded {
    pub targets: u64,
    pub stamp: Stamp,
    pub relay: Option<Stamp>,
}

impl ShardCore {
    /// A forwarded delivery for a session that moved here (or moved on again).
    pub(crate) fn handle_deliver_to(
        &mut self,
        client_id: Str,
        out: Outgoing,
        hops: u8,
        origin: Forwarded,
        now: Instant,
    ) {
        let Forwarded {
            targets,
            stamp,
            relay,
        } = origin;
        if let Some(&sidx) = self.by_client_id.get(client_id.as_bytes()) {
            // This shard handled the message after its claim started: the session has it.
            if self
                .forwarding
                .delivered_here(self.id, &client_id, targets, stamp)
            {
                self.stats.forwarded_duplicates += 1;
                return;
            }
            self.deliver_forwarded(sidx, out, now);
            return;
        }
        // The session is on its way here (a stale forwarder of an earlier stay would send the
        // copy round the shards it left): keep it for the session.
        let Some(out) = self.keep_forwarded_for_claim(&client_id, out, targets, stamp) else {
            return;
        };
        let next = self
            .forwarding
            .next_hop(&client_id, now)
            .map(|(to, stay)| (to, handled_after(self.id, targets, stamp, stay)));
        match next {
            // The session got it here, or this shard forwarded its own copy.
            Some((_, true)) => self.stats.forwarded_duplicates += 1,
            Some((to, false)) if hops < MAX_FORWARD_HOPS => {
                let hops = hops.saturating_add(1);
                // The shard before this one waits for `relay`: this one reports it only once
                // the next has the copy on disk.
                let relay = relay.and_then(|r| self.durable_relay(r, to));
                self.send(
                    to,
                    ShardMsg::DeliverTo {
                        client_id,
                        out,
                        hops,
                        targets,
                        stamp,
                        relay,
                    },
                )
            }
            Some(_) => {
                // Forwarders never form a cycle (a session's arrival removes its shard's old
                // forwarder), but a copy can chase a session that keeps moving: after this
                // many hops it is dropped and counted.
                warn!(client_id = %client_id, hops, "forwarded message dropped: its session kept moving");
                self.stats.dropped_no_session += 1;
            }
            None => self.stats.dropped_no_session += 1,
        }
    }

    /// A forwarded copy for session `sidx`: delivered only if the session, as it is now,
    /// still subscribes to a matching filter (a clean start or an unsubscribe since the move
    /// ends the old subscriptions).
    pub(crate) fn deliver_forwarded(&mut self, sidx: SessionId, out: Outgoing, now: Instant) {
        let topic = out.message.topic.as_bytes();
        let subscribed = self.sessions.get(sidx).is_some_and(|s| {
            s.subscriptions
                .keys()
                .any(|f| matches!(topic::parse_shared(f), Ok(None)) && topic::matches(f, topic))
        });
        if subscribed {
            self.deliver_to_session(sidx, out, now);
        } else {
            self.stats.dropped_no_session += 1;
        }
    }

    /// Delivers to one member of a local shared group, preferring connected members.
    pub(crate) fn deliver_shared_local(
        &mut self,
        message: &Message,
        filter: &Bytes,
        group: &Bytes,
        now: Instant,
    ) {
        let sessions = &self.sessions;
        let Some(entry) = self.subs.get_mut(filter) else {
            return;
        };
        let Some(g) = entry.shared.iter_mut().find(|g| g.group == group) else {
            return;
        };
        let n = g.members.len();
        if n == 0 {
            return;
        }
        let mut chosen = g.next % n;
        for k in 0..n {
            let idx = (g.next + k) % n;
            if sessions
                .get(g.members[idx].session)
                .is_some_and(|s| s.conn.is_some())
            {
                chosen = idx;
                break;
            }
        }
        g.next = chosen + 1;
        let member = g.members[chosen].clone();
        let mut ids = SubIds::new();
        if let Some(id) = member.id {
            ids.push(id);
        }
        let out = Outgoing {
            message: message.clone(),
            qos: qos_min(member.options.qos, message.qos),
            retain: member.options.retain_as_published && message.retain,
            sub_ids: ids,
        };
        self.deliver_to_session(member.session, out, now);
    }

    /// Sends now if the session is connected and its window allows, else queues (QoS 1/2)
    /// or drops (QoS 0 to an offline session, as Mosquitto does by default).
    pub(crate) fn deliver_to_session(&mut self, sidx: SessionId, out: Outgoing, now: Instant) {
        if out.message.is_expired(now) {
            self.metrics.dropped(DropCause::Expired);
            return;
        }
        let Some(session) = self.sessions.get_mut(sidx) else {
            bug!(self.metrics, "deliver_to_session: session {sidx} is gone");
            return;
        };
        let (max_msgs, max_bytes) = (session.max_queued_messages, session.max_queued_bytes);
        let conn = session
            .conn
            .and_then(|c| self.conns.get_mut(c))
            .filter(|c| c.is_connected());
        let Some(conn) = conn else {
            if out.qos != QoS::AtMostOnce {
                if session.has_room(&out, max_msgs, max_bytes) {
                    durable::hooks::enqueued(self.durable.as_deref_mut(), session, &out);
                }
                if !session.enqueue(out, max_msgs, max_bytes) {
                    self.metrics.dropped(DropCause::QueueFull);
                }
            }
            return;
        };
        if out.qos == QoS::AtMostOnce {
            // A slow reader's QoS 0 backlog is bounded by max_queued_bytes.
            if conn.pending_bytes() > max_bytes {
                self.metrics.dropped(DropCause::Qos0SlowConsumer);
                return;
            }
            write_publish(conn, &out, QosPid::AtMostOnce, false, now, &self.metrics);
            return;
        }
        if session.inflight.len() >= usize::from(conn.window)
            || !session.queue.is_empty()
            || session.resend_pending
        {
            if session.has_room(&out, max_msgs, max_bytes) {
                durable::hooks::enqueued(self.durable.as_deref_mut(), session, &out);
            }
            if !session.enqueue(out, max_msgs, max_bytes) {
                self.metrics.dropped(DropCause::QueueFull);
            }
            return;
        }
        durable::hooks::enqueued(self.durable.as_deref_mut(), session, &out);
        publish_in_flight(
            conn,
            session,
            out,
            now,
            &self.metrics,
            self.durable.as_deref_mut(),
        );
    }

    /// Moves queued messages into the in-flight window.
    pub(crate) fn fill_window(&mut self, sidx: SessionId, now: Instant) {
        let Some(session) = self.sessions.get_mut(sidx) else {
            bug!(self.metrics, "fill_window: session {sidx} is gone");
            return;
        };
        let Some(conn) = session
            .conn
            .and_then(|c| self.conns.get_mut(c))
            .filter(|c| c.is_connected())
        else {
            return;
        };
        if session.resend_pending {
            resend_in_flight(conn, session, now, &self.metrics);
            if session.resend_pending {
                return;
            }
        }
        while session.inflight.len() < usize::from(conn.window) {
            let Some(out) = session.dequeue() else { break };
            if out.message.is_expired(now) {
                self.metrics.dropped(DropCause::Expired);
                durable::hooks::dropped(self.durable.as_deref_mut(), session, &out);
                continue;
            }
            if out.qos == QoS::AtMostOnce {
                write_publish(conn, &out, QosPid::AtMostOnce, false, now, &self.metrics);
                continue;
            }
            publish_in_flight(
                conn,
                session,
                out,
                now,
                &self.metrics,
                self.durable.as_deref_mut(),
            );
        }
    }

    /// After CONNACK on a resumed session: resend unacknowledged PUBLISH with DUP and
    /// PUBREL [MQTT-4.4.0-1], then queued messages.
    pub(crate) fn resume_delivery(&mut self, sidx: SessionId, now: Instant) {
        let Some(session) = self.sessions.get_mut(sidx) else {
            bug!(self.metrics, "resume_delivery: session {sidx} is gone");
            return;
        };
        let Some(conn) = session.conn.and_then(|c| self.conns.get_mut(c)) else {
            bug!(
                self.metrics,
                "resume_delivery: connection of session {sidx} is gone"
            );
            return;
        };
        // Aliases do not survive the connection [MQTT-3.3.2-7]; the map was made new. PUBREL
        // goes out for every released message (it is not a PUBLISH: no Receive Maximum);
        // unacknowledged PUBLISH packets as the new window allows, in order, the rest as
        // acknowledgements free it (`fill_window`).
        for f in &mut session.inflight {
            f.sent = false;
            if f.state == InflightState::Released {
                write_packet(
                    conn,
                    &Packet::PubRel(PubResp::new(f.packet_id, ReasonCode::SUCCESS)),
                    &self.metrics,
                );
            }
        }
        session.resend_pending = session
            .inflight
            .iter()
            .any(|f| f.state == InflightState::Published);
        self.fill_window(sidx, now);
    }
}

/// Sends a QoS 1/2 message under a new packet id and records it in flight (unless it was not
/// sent, e.g. too large for the client).
fn publish_in_flight(
    conn: &mut crate::proto::conn::Conn,
    session: &mut crate::proto::session::Session,
    out: Outgoing,
    now: Instant,
    metrics: &ShardMetrics,
    durable: Option<&mut durable::Durable>,
) {
    let Some(id) = session.next_packet_id() else {
        // Every id in flight: the window was not checked. Keep the message for later.
        debug_assert!(false, "{}: no free packet id", session.client_id);
        metrics.internal_errors.inc();
        tracing::error!(client_id = %session.client_id, "no free packet id: message kept queued");
        session.queued_bytes += out.message.weight();
        session.queue.push_front(out);
        return;
    };
    if write_publish(conn, &out, QosPid::new(out.qos, id), false, now, metrics) {
        durable::hooks::sent(durable, session, id);
        session.inflight.push_back(Inflight {
            packet_id: id,
            out,
            state: InflightState::Published,
            sent: true,
        });
    } else {
        durable::hooks::dropped(durable, session, &out);
    }
}

/// Resends (DUP) the in-flight PUBLISH packets not yet sent on this connection, in order, while
/// the client's Receive Maximum allows [MQTT-3.3.4-9]; `resend_pending` says whether any is
/// left.
fn resend_in_flight(
    conn: &mut crate::proto::conn::Conn,
    session: &mut crate::proto::session::Session,
    now: Instant,
    metrics: &ShardMetrics,
) {
    let window = usize::from(conn.window);
    // A released QoS 2 message holds its packet id at the client until PUBCOMP: it takes a
    // slot of the window too (conservative; PUBREL itself is not a PUBLISH), like the check
    // for new messages, which counts every entry in flight.
    let mut used = session
        .inflight
        .iter()
        .filter(|f| f.sent || f.state == InflightState::Released)
        .count();
    let mut left = false;
    for f in &mut session.inflight {
        if f.sent || f.state != InflightState::Published {
            continue;
        }
        if used >= window {
            left = true;
            break;
        }
        write_publish(
            conn,
            &f.out,
            QosPid::new(f.out.qos, f.packet_id),
            true,
            now,
            metrics,
        );
        f.sent = true;
        used += 1;
    }
    session.resend_pending = left;
}

/// Payloads at least this large are queued to the socket as the shared `Bytes` instead of
/// being copied into each subscriber's buffer; smaller ones are cheaper to copy than to
/// write as a separate frame.
pub const PAYLOAD_BY_REFERENCE: usize = 8 * 1024;

/// Encodes one PUBLISH to `conn`: the header (topic or alias, expiry, subscription ids) and
/// the payload. A packet larger than the client's Maximum Packet Size is not sent
/// [MQTT-3.1.2-25]. Returns whether it was written (and counted in `metrics`).
pub(crate) fn write_publish(
    conn: &mut crate::proto::conn::Conn,
    out: &Outgoing,
    qos_pid: QosPid,
    dup: bool,
    now: Instant,
    metrics: &ShardMetrics,
) -> bool {
    let m = &out.message;
    let topic = m.topic.as_bytes();
    // Server → client topic alias: reuse one, or assign one while the client allows more.
    let aliases = conn.extra().map(|e| &e.aliases_out);
    let existing = aliases.and_then(|a| a.get(topic)).copied();
    let in_use = aliases.map_or(0, |a| a.len());
    let new_alias = match existing {
        None if usize::from(conn.client_alias_max) > in_use => NonZeroU16::new(in_use as u16 + 1),
        _ => None,
    };
    let header = PublishHeader {
        dup,
        qos_pid,
        retain: out.retain,
        topic: if existing.is_some() { &[] } else { topic },
        topic_alias: existing.or(new_alias),
        message_expiry_secs: m.remaining_expiry_secs(now),
        subscription_ids: &out.sub_ids,
        forwarded: Some(&m.properties),
    };
    let version = conn.version;
    let len = match header.packet_len(version, m.payload.len()) {
        Ok(len) => len,
        Err(e) => {
            warn!(client_id = %conn.client_id, "cannot encode PUBLISH: {e}");
            return false;
        }
    };
    if len > conn.client_max_packet as usize {
        metrics.dropped(DropCause::TooLarge);
        debug!(client_id = %conn.client_id, len, max = conn.client_max_packet, "message larger than the client's Maximum Packet Size dropped");
        return false;
    }
    let by_reference = m.payload.len() >= PAYLOAD_BY_REFERENCE;
    conn.out.reserve(if by_reference {
        len - m.payload.len()
    } else {
        len
    });
    if let Err(e) = header.encode(version, m.payload.len(), &mut conn.out) {
        warn!(client_id = %conn.client_id, "cannot encode PUBLISH: {e}");
        return false;
    }
    if by_reference {
        conn.push_payload(m.payload.clone());
    } else {
        conn.out.extend_from_slice(&m.payload);
    }
    if let Some(alias) = new_alias {
        conn.extra_mut()
            .aliases_out
            .insert(m.topic.as_bytes_shared().clone(), alias);
    }
    metrics.message_out(qos_pid.qos());
    metrics.packet_sent(PacketType::Publish);
    if !dup && let Some(at) = m.published_at {
        // `now` is the time of the input being handled on this shard: the subscriber's. A
        // delivery within the publisher's own input (same shard) is 0 without the subtraction
        // (~55 instructions: callgrind, docs/benchmarks.md).
        let latency = if at == now {
            Duration::ZERO
        } else {
            now.saturating_duration_since(at)
        };
        metrics.delivery_latency.observe(latency);
    }
    true
}
