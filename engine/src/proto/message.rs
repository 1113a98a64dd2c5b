//! An application message as it travels between shards: every field a `Bytes` (shared by
//! reference count), so cloning it for another subscriber or shard never copies the payload.

use std::time::Instant;

use bytes::Bytes;
use ringmq_codec::{PublishProperties, QoS, Str, UserProperties, Will, WillProperties};

/// A message accepted from a publisher (or a will), ready to route.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: Str,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Forwarded properties. Topic alias and subscription ids are always cleared here.
    pub properties: PublishProperties,
    /// When the Message Expiry Interval runs out [MQTT-3.3.2-5].
    pub expires_at: Option<Instant>,
    /// The publisher's client id, for No Local [MQTT-3.8.3-3]. Empty for server messages.
    pub origin: Bytes,
    /// When the publisher's PUBLISH was read, for `ringmq_delivery_latency_seconds`; `None`
    /// for what is not a client's live PUBLISH (retained copies, wills, `$SYS`).
    pub published_at: Option<Instant>,
}

impl Message {
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Remaining expiry in whole seconds, rounded up, for the forwarded PUBLISH
    /// [MQTT-3.3.2-6]; `None` when the message does not expire.
    pub fn remaining_expiry_secs(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }

    /// Approximate bytes this message holds, for queue byte limits.
    pub fn weight(&self) -> usize {
        self.payload.len() + self.topic.len()
    }
}

/// Copies a string out of the frame it was sliced from.
///
/// Fields are `Bytes` slices of the received frame, which keeps the whole read buffer the
/// frame came in alive. That is right for a message in transit and wrong for state that lives
/// as long as a session (client id, subscription filters, will) or the retained store: those
/// are copied into buffers of their own size.
pub fn compact_str(s: &Str) -> Str {
    Str::copy_from(s.as_str()).unwrap_or_else(|_| s.clone())
}

pub fn compact_bytes(b: &Bytes) -> Bytes {
    Bytes::copy_from_slice(b)
}

fn compact_user_properties(u: &UserProperties) -> UserProperties {
    if u.is_empty() {
        return UserProperties::new();
    }
    UserProperties::from_pairs(u.iter()).unwrap_or_else(|_| u.clone())
}

/// Publish properties that no longer refer to the frame they came in.
pub fn compact_properties(p: &PublishProperties) -> PublishProperties {
    PublishProperties {
        payload_format_utf8: p.payload_format_utf8,
        message_expiry_secs: p.message_expiry_secs,
        topic_alias: None,
        response_topic: p.response_topic.as_ref().map(compact_str),
        correlation_data: p.correlation_data.as_ref().map(compact_bytes),
        user_properties: compact_user_properties(&p.user_properties),
        subscription_ids: Default::default(),
        content_type: p.content_type.as_ref().map(compact_str),
    }
}

impl Message {
    /// A copy that owns its bytes (for the retained store).
    pub fn compact(&self) -> Message {
        Message {
            topic: compact_str(&self.topic),
            payload: compact_bytes(&self.payload),
            qos: self.qos,
            retain: self.retain,
            properties: compact_properties(&self.properties),
            expires_at: self.expires_at,
            origin: Bytes::new(),
            // A retained copy replayed on SUBSCRIBE is not a delivery of the live PUBLISH.
            published_at: None,
        }
    }
}

/// A will that owns its bytes: it lives as long as the connection.
pub fn compact_will(w: &Will) -> Will {
    let p = &w.properties;
    Will {
        qos: w.qos,
        retain: w.retain,
        topic: compact_str(&w.topic),
        payload: compact_bytes(&w.payload),
        properties: WillProperties {
            will_delay_secs: p.will_delay_secs,
            payload_format_utf8: p.payload_format_utf8,
            message_expiry_secs: p.message_expiry_secs,
            content_type: p.content_type.as_ref().map(compact_str),
            response_topic: p.response_topic.as_ref().map(compact_str),
            correlation_data: p.correlation_data.as_ref().map(compact_bytes),
            user_properties: compact_user_properties(&p.user_properties),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn compact_copies_do_not_share_the_frame() {
        let frame = Bytes::from_static(b"xxtopicpayload");
        let m = Message {
            topic: Str::from_bytes(frame.slice(2..7)).unwrap(),
            payload: frame.slice(7..),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: PublishProperties {
                content_type: Some(Str::from_static("text/plain")),
                user_properties: UserProperties::from_pairs([("k", "v")]).unwrap(),
                ..Default::default()
            },
            expires_at: None,
            origin: Bytes::from_static(b"c"),
            published_at: None,
        };
        let c = m.compact();
        assert_eq!(c.topic, m.topic);
        assert_eq!(c.payload, m.payload);
        assert_eq!(c.properties.user_properties, m.properties.user_properties);
        assert_eq!(c.properties.content_type, m.properties.content_type);
        assert_ne!(c.payload.as_ptr(), m.payload.as_ptr());
        assert_ne!(c.topic.as_bytes().as_ptr(), m.topic.as_bytes().as_ptr());
    }
}
