//! An application message as it travels between shards: every field a `Bytes` (shared by
//! reference count), so cloning it for another subscriber or shard never copies the payload.

use std::time::Instant;

use bytes::Bytes;
use ringmq_codec::{PublishProperties, QoS, Str};

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
