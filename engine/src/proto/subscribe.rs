//! SUBSCRIBE and UNSUBSCRIBE: validation, authorization, the tries, retained delivery.
//! Part of the shard core (`proto/`); matching and interest are `route.rs`.

use std::num::NonZeroU32;
use std::time::Instant;

use bytes::Bytes;
use ringmq_codec::{
    Packet, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck,
    Unsubscribe, topic,
};
use tracing::info;

use crate::ids::{ConnId, SessionId};
use crate::proto::route::Retained;
use crate::proto::route::qos_min;
use crate::proto::session::{Outgoing, SubIds};
use crate::proto::{Failure, ShardCore, fail, write_packet};
use crate::shard::retain::RetainStore;

impl ShardCore {
    // ---- SUBSCRIBE / UNSUBSCRIBE -----------------------------------------------------------

    pub(crate) fn handle_subscribe(
        &mut self,
        index: ConnId,
        s: Subscribe,
        now: Instant,
    ) -> Result<(), Failure> {
        let Some(conn) = self.conns.get(index) else {
            bug!(self.metrics, "handle_subscribe: connection {index} is gone");
            return Ok(());
        };
        let v5 = conn.version.is_v5();
        let Some(sidx) = conn.session else {
            return Ok(());
        };
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained_for: Vec<(Bytes, SubscriptionOptions)> = Vec::new();
        for f in &s.filters {
            // Kept as long as the subscription: a compact copy, not a slice of the frame.
            let full = crate::proto::message::compact_bytes(f.filter.as_bytes_shared());
            let shared = topic::parse_shared(&full).map_err(Failure::from)?;
            if shared.is_some() && f.options.no_local {
                return Err(fail(
                    ReasonCode::PROTOCOL_ERROR,
                    "[MQTT-3.8.3-4] No Local on a shared subscription",
                ));
            }
            let inner = shared.map_or(&full[..], |s| s.filter);
            if full.len() > self.limits.max_topic_length
                || topic::levels(inner).count() > self.limits.max_topic_levels
            {
                codes.push(if v5 {
                    ReasonCode::TOPIC_FILTER_INVALID
                } else {
                    ReasonCode(0x80)
                });
                continue;
            }
            if !self
                .conns
                .get(index)
                .is_some_and(|c| c.may_subscribe(inner))
            {
                self.metrics.subscribe_denied.inc();
                info!(filter = %String::from_utf8_lossy(&full), "subscription denied: not authorized");
                codes.push(if v5 {
                    ReasonCode::NOT_AUTHORIZED
                } else {
                    ReasonCode(0x80)
                });
                continue;
            }
            let Some(session) = self.sessions.get_mut(sidx) else {
                bug!(self.metrics, "handle_subscribe: session {sidx} is gone");
                return Ok(());
            };
            let existed = session.subscriptions.contains_key(&full);
            if !existed && session.subscriptions.len() >= self.limits.max_subscriptions_per_client {
                codes.push(if v5 {
                    ReasonCode::QUOTA_EXCEEDED
                } else {
                    ReasonCode(0x80)
                });
                continue;
            }
            session.subscriptions.insert(
                full.clone(),
                crate::proto::session::SubRecord {
                    options: f.options,
                    id: s.subscription_id,
                },
            );
            self.add_local_sub(&full, sidx, f.options, s.subscription_id);
            codes.push(ReasonCode(f.options.qos as u8));
            // Retained messages are not sent for shared subscriptions (MQTT 5.0 section 4.8.2).
            let send_retained = shared.is_none()
                && match f.options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendAtSubscribeIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                retained_for.push((full.clone(), f.options));
            }
        }
        let conn = self
            .conns
            .get_mut(index)
            .ok_or_else(|| fail(ReasonCode::UNSPECIFIED_ERROR, "gone"))?;
        let ack = SubAck {
            packet_id: s.packet_id,
            properties: Default::default(),
            reason_codes: codes,
        };
        write_packet(conn, &Packet::SubAck(ack), &self.metrics);
        if self.sessions.get(sidx).is_some_and(|s| s.durable) {
            self.durable_session_changed(sidx, false);
            self.gate_output(index);
        }
        for (filter, options) in retained_for {
            self.send_retained(sidx, &filter, options, s.subscription_id, now);
        }
        Ok(())
    }

    /// Retained messages matching `filter`, with RETAIN set [MQTT-3.3.1-9].
    pub(crate) fn send_retained(
        &mut self,
        sidx: SessionId,
        filter: &[u8],
        options: SubscriptionOptions,
        id: Option<NonZeroU32>,
        now: Instant,
    ) {
        let mut found = Vec::new();
        self.retained
            .for_each_matching(filter, &mut |_, r: &Retained| {
                // Tombstones (clears) are not delivered.
                if !r.message.payload.is_empty() {
                    found.push(r.message.clone());
                }
            });
        for message in found {
            let mut ids = SubIds::new();
            if let Some(id) = id {
                ids.push(id);
            }
            let qos = qos_min(options.qos, message.qos);
            self.deliver_to_session(
                sidx,
                Outgoing {
                    message,
                    qos,
                    retain: true,
                    sub_ids: ids,
                },
                now,
            );
        }
    }

    pub(crate) fn handle_unsubscribe(
        &mut self,
        index: ConnId,
        u: Unsubscribe,
    ) -> Result<(), Failure> {
        let Some(conn) = self.conns.get(index) else {
            bug!(
                self.metrics,
                "handle_unsubscribe: connection {index} is gone"
            );
            return Ok(());
        };
        let v5 = conn.version.is_v5();
        let Some(sidx) = conn.session else {
            return Ok(());
        };
        let mut codes = Vec::with_capacity(u.filters.len());
        for f in &u.filters {
            let full = f.as_bytes_shared().clone();
            let existed = self
                .sessions
                .get_mut(sidx)
                .is_some_and(|s| s.subscriptions.remove(&full).is_some());
            if existed {
                self.remove_local_sub(&full, sidx);
                codes.push(ReasonCode::SUCCESS);
            } else {
                codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        if !v5 {
            codes.clear();
        }
        self.durable_session_changed(sidx, false);
        let conn = self
            .conns
            .get_mut(index)
            .ok_or_else(|| fail(ReasonCode::UNSPECIFIED_ERROR, "gone"))?;
        write_packet(
            conn,
            &Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                properties: Default::default(),
                reason_codes: codes,
            }),
            &self.metrics,
        );
        Ok(())
    }
}
