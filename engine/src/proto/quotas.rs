//! Quotas in the shard core: the publish rate and bandwidth of a connection, checked on the
//! raw PUBLISH frame. The buckets and the shared connection counts are `shard::quota`.

use std::time::Instant;

use ringmq_codec::ReasonCode;

use crate::ids::ConnId;
use crate::ops::metrics::Quota;
use crate::proto::{Failure, ShardCore, over_quota};
use crate::shard::quota::PublishBuckets;

impl ShardCore {
    /// The publish quotas for the frame at the front of `buf`, when it is a complete PUBLISH
    /// (packet type 3). Checked on the raw frame, before it is decoded: inspecting the decoded
    /// packet before handing it on costs a copy of it on every message (callgrind: ~50
    /// instructions per message, quotas on or off).
    pub(crate) fn check_publish_frame(
        &mut self,
        index: ConnId,
        buf: &[u8],
        now: Instant,
    ) -> Result<(), Failure> {
        if buf.first().is_none_or(|b| b >> 4 != 3) {
            return Ok(());
        }
        match ringmq_codec::peek_frame_len(buf, &self.codec_limits) {
            Ok(Some(len)) if buf.len() >= len => match self.publish_over_quota(index, len, now) {
                None => Ok(()),
                Some(quota) => Err(self.publish_quota_failure(quota)),
            },
            // Incomplete (checked once complete) or malformed (decode reports it).
            _ => Ok(()),
        }
    }

    /// `limits.max_publish_rate` and `limits.max_publish_bandwidth` for a PUBLISH of
    /// `frame_len` bytes: token buckets on the connection (allocated, full, at its first
    /// PUBLISH; no allocation after), no clock read.
    /// Returns the quota exceeded, if any (nothing is charged then).
    fn publish_over_quota(
        &mut self,
        index: ConnId,
        frame_len: usize,
        now: Instant,
    ) -> Option<Quota> {
        let (rate, bandwidth) = (self.publish_rate, self.publish_bandwidth);
        let conn = self.conns.get_mut(index)?;
        if !conn.is_connected() {
            return None;
        }
        let bytes = frame_len as u64;
        let buckets = conn
            .publish_buckets
            .get_or_insert_with(|| Box::new(PublishBuckets::new(now)));
        if !buckets.rate.allows(1, rate, now) {
            return Some(Quota::MessageRate);
        }
        if !buckets.bytes.allows(bytes, bandwidth, now) {
            return Some(Quota::Bandwidth);
        }
        buckets.rate.charge(1, rate);
        buckets.bytes.charge(bytes, bandwidth);
        None
    }

    #[cold]
    fn publish_quota_failure(&self, quota: Quota) -> Failure {
        let (key, rate, unit) = match quota {
            Quota::Bandwidth => ("max_publish_bandwidth", self.publish_bandwidth, "bytes"),
            _ => ("max_publish_rate", self.publish_rate, "PUBLISH packets"),
        };
        over_quota(
            quota,
            ReasonCode::MESSAGE_RATE_TOO_HIGH,
            format!(
                "more than limits.{key} = {} {unit}/s (burst {})",
                rate.per_sec, rate.burst
            ),
        )
    }
}
