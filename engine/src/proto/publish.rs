//! PUBLISH from a client: checks, topic aliases, acknowledgements, retained messages (kept in
//! every shard's replica, ordered by a sequence number), and wills.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_codec::{Packet, PubResp, Publish, QosPid, ReasonCode, Will, topic};
use tracing::{debug, info, warn};

use crate::ids::ConnId;
use crate::ids::ShardId;
use crate::ops::metrics::DropCause;
use crate::proto::message::Message;
use crate::proto::route::*;
use crate::proto::{Failure, ShardCore, fail, write_packet};
use crate::shard::mesh::ShardMsg;
use crate::shard::retain::RetainStore;

impl ShardCore {
    pub(crate) fn handle_publish(
        &mut self,
        index: ConnId,
        p: Publish,
        now: Instant,
    ) -> Result<(), Failure> {
        let max_levels = self.limits.max_topic_levels;
        let max_len = self.limits.max_topic_length;
        let receive_maximum = self.limits.receive_maximum;
        let max_alias = self.limits.topic_alias_maximum;
        let Some(conn) = self.conns.get_mut(index) else {
            bug!(self.metrics, "handle_publish: connection {index} is gone");
            return Ok(());
        };
        if !p.properties.subscription_ids.is_empty() {
            return Err(fail(
                ReasonCode::PROTOCOL_ERROR,
                "[MQTT-3.3.4-6] PUBLISH from a client carries a Subscription Identifier",
            ));
        }
        // Topic alias [MQTT-3.3.2-7..12].
        let topic = match p.properties.topic_alias {
            Some(alias) => {
                let slot = usize::from(alias.get()) - 1;
                if slot >= usize::from(max_alias) {
                    return Err(fail(
                        ReasonCode::TOPIC_ALIAS_INVALID,
                        "[MQTT-3.3.2-9] topic alias above Topic Alias Maximum",
                    ));
                }
                if p.topic.is_empty() {
                    match conn
                        .extra()
                        .and_then(|e| e.aliases_in.get(slot))
                        .and_then(Option::as_ref)
                    {
                        Some(t) => t.clone(),
                        None => {
                            return Err(fail(
                                ReasonCode::PROTOCOL_ERROR,
                                "[MQTT-3.3.4] topic alias not mapped and topic name empty",
                            ));
                        }
                    }
                } else {
                    // The table grows on first use: idle connections carry none.
                    let aliases = &mut conn.extra_mut().aliases_in;
                    if aliases.len() <= slot {
                        aliases.resize(slot + 1, None);
                    }
                    aliases[slot] = Some(p.topic.clone());
                    p.topic.clone()
                }
            }
            None => p.topic.clone(),
        };
        let qos = p.qos_pid.qos();
        let client_id = conn.client_id.clone();
        let Some(sidx) = conn.session else {
            return Ok(());
        };

        let authorized = conn.may_publish(topic.as_bytes());
        let refusal = if topic.len() > max_len
            || topic::levels(topic.as_bytes()).count() > max_levels
        {
            Some((
                ReasonCode::TOPIC_NAME_INVALID,
                "topic exceeds max_topic_length or max_topic_levels",
            ))
        } else if qos != ringmq_codec::QoS::AtMostOnce && self.storage_refuses(topic.as_bytes()) {
            Some((
                ReasonCode::QUOTA_EXCEEDED,
                "storage full: a write-ahead log the message needs reached storage.max_disk_bytes",
            ))
        } else if !authorized {
            Some((ReasonCode::NOT_AUTHORIZED, "publish not authorized"))
        } else if topic.as_bytes().starts_with(b"$SYS") {
            Some((
                ReasonCode::NOT_AUTHORIZED,
                "clients may not publish to $SYS topics",
            ))
        } else if p.properties.payload_format_utf8 == Some(true)
            && std::str::from_utf8(&p.payload).is_err()
        {
            Some((
                ReasonCode::PAYLOAD_FORMAT_INVALID,
                "[MQTT-3.3.2-4] payload is not UTF-8",
            ))
        } else {
            None
        };

        if let QosPid::ExactlyOnce(id) = p.qos_pid {
            let Some(s) = self.sessions.get_mut(sidx) else {
                bug!(self.metrics, "handle_publish: session {sidx} is gone");
                return Ok(());
            };
            if s.incoming_qos2.contains(&id.get()) {
                // A resend of a message already received: acknowledge only [MQTT-4.3.3-10].
                let conn = self
                    .conns
                    .get_mut(index)
                    .ok_or_else(|| fail(ReasonCode::UNSPECIFIED_ERROR, "gone"))?;
                write_packet(
                    conn,
                    &Packet::PubRec(PubResp::new(id, ReasonCode::SUCCESS)),
                    &self.metrics,
                );
                self.gate_output(index);
                return Ok(());
            }
            if refusal.is_none() && s.incoming_qos2.len() >= usize::from(receive_maximum) {
                return Err(fail(
                    ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                    "[MQTT-3.3.4-9] more QoS 2 PUBLISH in flight than Receive Maximum",
                ));
            }
        }

        if let Some((reason, why)) = refusal {
            if reason == ReasonCode::NOT_AUTHORIZED {
                self.metrics.dropped(DropCause::NotAuthorized);
                info!(client_id = %client_id, topic = %topic, qos = ?qos, "publish denied: {why}");
            } else {
                debug!(client_id = %client_id, topic = %topic, reason = %reason, "publish refused: {why}");
            }
            let props = self.ack_properties(index, why);
            let conn = self
                .conns
                .get_mut(index)
                .ok_or_else(|| fail(ReasonCode::UNSPECIFIED_ERROR, "gone"))?;
            let ack = |id| PubResp {
                packet_id: id,
                reason_code: reason,
                properties: props.clone(),
            };
            match p.qos_pid {
                QosPid::AtMostOnce => {}
                QosPid::AtLeastOnce(id) if conn.version.is_v5() => {
                    write_packet(conn, &Packet::PubAck(ack(id)), &self.metrics)
                }
                QosPid::ExactlyOnce(id) if conn.version.is_v5() => {
                    write_packet(conn, &Packet::PubRec(ack(id)), &self.metrics)
                }
                // 3.1.1 has no negative acknowledgement: an unauthorized publish is
                // acknowledged normally and dropped (as Mosquitto does), so the client does not
                // resend it forever; any other refusal closes the connection [MQTT-3.3.5-2].
                QosPid::AtLeastOnce(id) if reason == ReasonCode::NOT_AUTHORIZED => write_packet(
                    conn,
                    &Packet::PubAck(PubResp::new(id, ReasonCode::SUCCESS)),
                    &self.metrics,
                ),
                QosPid::ExactlyOnce(id) if reason == ReasonCode::NOT_AUTHORIZED => {
                    write_packet(
                        conn,
                        &Packet::PubRec(PubResp::new(id, ReasonCode::SUCCESS)),
                        &self.metrics,
                    );
                    // The PUBREL that follows completes normally.
                    if let Some(s) = self.sessions.get_mut(sidx) {
                        s.incoming_qos2.insert(id.get());
                    }
                    self.durable_inbound(sidx, id, true);
                    self.gate_output(index);
                }
                _ => return Err(fail(reason, why)),
            }
            return Ok(());
        }

        let mut properties = p.properties;
        properties.topic_alias = None;
        let expires_at = properties
            .message_expiry_secs
            .map(|s| now + Duration::from_secs(u64::from(s)));
        let message = Message {
            topic,
            payload: p.payload,
            qos,
            retain: p.retain,
            properties,
            expires_at,
            origin: client_id.into_bytes(),
            published_at: Some(now),
        };
        self.metrics.message_in(qos);
        if message.retain {
            self.retain_everywhere(&message);
        }
        self.route(message, now);
        let routed = self.take_routed();

        let conn = self
            .conns
            .get_mut(index)
            .ok_or_else(|| fail(ReasonCode::UNSPECIFIED_ERROR, "gone"))?;
        match p.qos_pid {
            QosPid::AtMostOnce => return Ok(()),
            QosPid::AtLeastOnce(id) => write_packet(
                conn,
                &Packet::PubAck(PubResp::new(id, ReasonCode::SUCCESS)),
                &self.metrics,
            ),
            QosPid::ExactlyOnce(id) => {
                if let Some(s) = self.sessions.get_mut(sidx) {
                    s.incoming_qos2.insert(id.get());
                }
                write_packet(
                    conn,
                    &Packet::PubRec(PubResp::new(id, ReasonCode::SUCCESS)),
                    &self.metrics,
                );
                self.durable_inbound(sidx, id, true);
            }
        }
        // The acknowledgement goes out once what the message caused is on disk, here and on
        // every shard it was routed to.
        self.gate_output_routed(index, routed);
        Ok(())
    }

    /// Stores (or clears, for an empty payload [MQTT-3.3.1-6]) the retained message on every
    /// shard's replica.
    pub(crate) fn retain_everywhere(&mut self, message: &Message) {
        // The store keeps it indefinitely: one compact copy, shared by every replica.
        let message = message.compact();
        let seq = self.next_retain_seq();
        self.durable_retained(seq, &message);
        for to in ShardId::all(self.shards) {
            if to != self.id {
                self.send(
                    to,
                    ShardMsg::Retain {
                        message: message.clone(),
                        seq,
                    },
                );
            }
        }
        self.apply_retain(message, seq);
    }

    /// Applies a retained update to this shard's replica. Replicas converge whatever order
    /// concurrent updates arrive in: each topic keeps the update with the highest sequence
    /// number (one counter for all shards), and a clear stays as a tombstone so an older
    /// update arriving later cannot bring the topic back. Applied locally first, so a client
    /// that saw its PUBACK and then subscribes finds its own retained message.
    pub(crate) fn apply_retain(&mut self, message: Message, seq: u64) {
        let current = self.retained.get(message.topic.as_bytes());
        if current.is_some_and(|r| r.seq > seq) {
            return;
        }
        let was_live = current.is_some_and(|r| !r.message.payload.is_empty());
        let is_live = !message.payload.is_empty();
        let topic = message.topic.clone();
        if self
            .retained
            .set(topic.as_bytes(), Retained { seq, message })
            .is_err()
        {
            warn!(topic = %topic, limit = self.limits.max_retained_messages, "retained message dropped: max_retained_messages reached");
            return;
        }
        // The gauge counts what clients retained: not clears, not the broker's `$SYS` values.
        if !topic.as_bytes().starts_with(b"$") && was_live != is_live {
            if is_live {
                self.retained_live += 1;
            } else {
                self.retained_live = self.retained_live.saturating_sub(1);
            }
            self.metrics.retained_messages.set(self.retained_live);
        }
    }

    /// Publishes a will message [MQTT-3.1.2-8].
    pub(crate) fn publish_will(&mut self, will: Will, now: Instant) {
        let expires_at = will
            .properties
            .message_expiry_secs
            .map(|s| now + Duration::from_secs(u64::from(s)));
        let props = ringmq_codec::PublishProperties {
            payload_format_utf8: will.properties.payload_format_utf8,
            message_expiry_secs: will.properties.message_expiry_secs,
            content_type: will.properties.content_type,
            response_topic: will.properties.response_topic,
            correlation_data: will.properties.correlation_data,
            user_properties: will.properties.user_properties,
            ..Default::default()
        };
        let message = Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: props,
            expires_at,
            origin: Bytes::new(),
            published_at: None,
        };
        debug!(topic = %message.topic, "publishing will");
        if message.retain {
            self.retain_everywhere(&message);
        }
        self.route(message, now);
    }
}
