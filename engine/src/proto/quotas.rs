//! Quotas in the shard core: admission of a new connection (counts in all and per IP, rate per
//! IP, refusal slots) and the publish rate and bandwidth of a connection, checked on the raw
//! PUBLISH frame. The buckets and the shared connection counts are `shard::quota`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ringmq_codec::ReasonCode;

use crate::config::Limits;
use crate::ids::ConnId;
use crate::ops::metrics::Quota;
use crate::ops::metrics::ShardMetrics;
use crate::proto::conn::Conn;
use crate::proto::{Failure, ShardCore, over_quota};
use crate::shard::quota::{ConnQuotas, IpLimits, PublishBuckets, Rate};

/// A shard's side of the quotas. Private: only this module reads or changes it.
#[derive(Debug)]
pub(super) struct Quotas {
    /// Connection counts shared with the other shards (in all, per IP).
    conns: Arc<ConnQuotas>,
    ip_limits: IpLimits,
    max_connections: usize,
    publish_rate: Rate,
    publish_bandwidth: Rate,
    /// Either publish quota is configured (otherwise PUBLISH skips the check).
    publish_on: bool,
    /// Connections open only to refuse their CONNECT (`Conn::refusal`), at most
    /// `refusal_slots`: this shard's share of `limits.max_pending_refusals`.
    pending_refusals: usize,
    refusal_slots: usize,
}

impl Quotas {
    pub fn new(limits: &Limits, conns: Arc<ConnQuotas>, shards: usize) -> Quotas {
        Quotas {
            conns,
            ip_limits: limits.ip_limits(),
            max_connections: limits.max_connections,
            publish_rate: limits.publish_rate(),
            publish_bandwidth: limits.publish_bandwidth(),
            publish_on: !limits.publish_rate().is_unlimited()
                || !limits.publish_bandwidth().is_unlimited(),
            pending_refusals: 0,
            refusal_slots: limits.max_pending_refusals.div_ceil(shards.max(1)),
        }
    }

    /// Admission of a connection from `peer`: `Some((refusal, ip_counted))` to accept it —
    /// with the quota it is over when it is kept only to refuse its CONNECT — or `None` to
    /// close it at once (over quota and no refusal slot left).
    pub fn admit(
        &mut self,
        peer: SocketAddr,
        metrics: &ShardMetrics,
        now: Instant,
    ) -> Option<(Option<Quota>, bool)> {
        let ip = peer.ip().to_canonical();
        match self
            .conns
            .admit(ip, self.max_connections, &self.ip_limits, now)
        {
            Ok(ip_counted) => Some((None, ip_counted)),
            Err(quota) => {
                metrics.quota_rejected(quota);
                if self.pending_refusals >= self.refusal_slots {
                    tracing::debug!(%peer, quota = quota.label(), "connection closed at accept: over quota, no refusal slot left");
                    return None;
                }
                self.pending_refusals += 1;
                Some((Some(quota), false))
            }
        }
    }

    /// Gives back what an accepted connection held: its connection counts, or its refusal
    /// slot.
    pub fn release(&mut self, conn: &Conn, now: Instant) {
        if conn.refusal.is_some() {
            debug_assert!(self.pending_refusals > 0, "a refusal slot released twice");
            self.pending_refusals = self.pending_refusals.saturating_sub(1);
        } else {
            let ip = conn.ip_counted.then(|| conn.peer.ip().to_canonical());
            self.conns.release(ip, self.ip_limits.rate, now);
        }
    }

    /// Whether PUBLISH frames are checked at all.
    pub fn publish_on(&self) -> bool {
        self.publish_on
    }
}

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
        let (rate, bandwidth) = (self.quotas.publish_rate, self.quotas.publish_bandwidth);
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
            Quota::Bandwidth => (
                "max_publish_bandwidth",
                self.quotas.publish_bandwidth,
                "bytes",
            ),
            _ => (
                "max_publish_rate",
                self.quotas.publish_rate,
                "PUBLISH packets",
            ),
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
