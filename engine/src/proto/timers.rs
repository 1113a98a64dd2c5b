//! Time: keep alive, CONNECT timeout, session expiry, delayed wills, gauges, `$SYS`, and the
//! graceful shutdown. The clock is an input ([`crate::proto::Now`]); nothing here reads one.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ringmq_codec::{Disconnect, Packet, QoS, ReasonCode, Str};
use tracing::{debug, warn};

use crate::ids::ConnId;
use crate::proto::conn::ConnState;
use crate::proto::*;

/// The core's clocks and periodic duties. Private: only this module reads or changes it.
#[derive(Debug)]
pub(super) struct Timers {
    /// Wall time of the input being handled (token and certificate expiry).
    wall: SystemTime,
    /// When a graceful shutdown began.
    shutdown_since: Option<Instant>,
    /// `$SYS` publication period (shard 0 only) and the next one due.
    sys_interval: Option<Duration>,
    next_sys_at: Option<Instant>,
}

impl Timers {
    /// Wall time as of the input being handled.
    pub fn wall(&self) -> SystemTime {
        self.wall
    }
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            wall: SystemTime::UNIX_EPOCH,
            shutdown_since: None,
            sys_interval: None,
            next_sys_at: None,
        }
    }
}

impl ShardCore {
    /// Keep alive [MQTT-3.1.2-22], CONNECT timeout, session expiry, delayed wills.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        self.check_auth(now);
        self.withdraw_deferred_interests(now);
        let connect_timeout = Duration::from_secs(u64::from(self.limits.connect_timeout_secs));
        let mut expired_conns = Vec::new();
        for (index, conn) in self.conns.iter() {
            match &conn.state {
                ConnState::AwaitConnect { since } | ConnState::Claiming { since, .. }
                    if now.saturating_duration_since(*since) > connect_timeout =>
                {
                    expired_conns.push((index, false));
                }
                // A throttled connection is unread by the server's choice, not idle.
                ConnState::Connected
                    if conn.keep_alive_secs > 0 && !self.outboxes.is_throttled(index) =>
                {
                    let limit = Duration::from_millis(u64::from(conn.keep_alive_secs) * 1500);
                    if now.saturating_duration_since(conn.last_rx) > limit {
                        expired_conns.push((index, true));
                    }
                }
                _ => {}
            }
        }
        for (index, keep_alive) in expired_conns {
            if keep_alive {
                self.fail_conn(
                    index,
                    fail(ReasonCode::KEEP_ALIVE_TIMEOUT, "keep alive timeout"),
                    now,
                );
            } else if let Some(conn) = self.conns.get_mut(index) {
                warn!(peer = %conn.peer, "no CONNECT within connect_timeout_secs");
                self.close_conn(index, false, now);
            }
        }
        let mut ended = Vec::new();
        let mut wills = Vec::new();
        // Gauges are sampled here, in the pass over the sessions that expiry makes anyway.
        let (mut online, mut subscriptions) = (0u64, 0u64);
        for (sidx, s) in self.sessions.iter_mut() {
            subscriptions += s.subscriptions.len() as u64;
            if s.conn.is_some() {
                online += 1;
                continue;
            }
            if s.pending_will.as_ref().is_some_and(|p| p.publish_at <= now) {
                wills.push(sidx);
            }
            if s.expires_at.is_some_and(|at| at <= now) {
                ended.push(sidx);
            }
        }
        for sidx in wills {
            if let Some(p) = self
                .sessions
                .get_mut(sidx)
                .and_then(|s| s.pending_will.take())
            {
                self.publish_will(*p.will, now);
                self.durable_session_changed(sidx, false);
            }
        }
        for sidx in ended {
            debug!(sidx = sidx.raw(), "session expired");
            self.end_session(sidx, now);
        }
        self.sample_gauges(online, subscriptions);
        if let Some(interval) = self.timers.sys_interval
            && self.timers.next_sys_at.is_none_or(|at| now >= at)
        {
            self.timers.next_sys_at = Some(now + interval);
            self.publish_sys(now);
        }
        self.drain_local(now);
    }

    /// Session and mesh gauges, sampled each tick (`online` and `subscriptions` counted by
    /// the caller before sessions expired; the difference lasts one tick).
    pub(super) fn sample_gauges(&mut self, online: u64, subscriptions: u64) {
        let total = self.sessions.len() as u64;
        self.metrics.sessions_online.set(online.min(total));
        self.metrics
            .sessions_offline
            .set(total.saturating_sub(online));
        self.metrics.subscriptions.set(subscriptions);
        let depth = self.outboxes.inbox_len(self.id);
        self.metrics.mesh_inbox_depth.set(depth as u64);
        self.metrics
            .mesh_outbox_depth
            .set(self.outboxes.depth() as u64);
        self.metrics
            .auth_pending
            .set(self.external.pending_len() as u64);
    }

    /// Publishes the `$SYS/broker/...` values as retained QoS 0 messages through the normal
    /// routing path, like Mosquitto. Periodic, so it may allocate.
    pub(super) fn publish_sys(&mut self, now: Instant) {
        let topics = self.metrics.all().sys_topics(env!("CARGO_PKG_VERSION"));
        for (topic, value) in topics {
            let Ok(topic) = Str::copy_from(&topic) else {
                continue;
            };
            let message = crate::proto::message::Message {
                topic,
                payload: Bytes::from(value.into_bytes()),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Default::default(),
                expires_at: None,
                origin: Bytes::new(),
                published_at: None,
            };
            self.retain_everywhere(&message);
            self.route(message, now);
        }
    }

    /// Graceful shutdown: DISCONNECT 0x8B (Server shutting down) to v5 clients, 3.1.1
    /// connections closed; output is flushed by the writers. Wills are not published: the
    /// server, not the client, ends these connections. Idempotent.
    pub(super) fn begin_shutdown(&mut self, now: Instant) {
        if self.timers.shutdown_since.is_some() {
            return;
        }
        self.timers.shutdown_since = Some(now);
        let open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.is_closing())
            .map(|(i, _)| i)
            .collect();
        tracing::info!(
            shard = self.id.raw(),
            connections = open.len(),
            "shutting down"
        );
        for index in open {
            if let Some(conn) = self.conns.get_mut(index)
                && conn.is_connected()
                && conn.version.is_v5()
            {
                let d = Disconnect {
                    reason_code: ReasonCode::SERVER_SHUTTING_DOWN,
                    properties: Default::default(),
                };
                write_packet(conn, &Packet::Disconnect(d), &self.metrics);
            }
            self.close_conn(index, false, now);
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.timers.shutdown_since.is_some()
    }

    /// Whether a shutdown has finished: every connection released, or the bound passed.
    pub fn shutdown_complete(&self, now: Instant) -> bool {
        let Some(since) = self.timers.shutdown_since else {
            return false;
        };
        let bound = Duration::from_secs(u64::from(self.limits.shutdown_timeout_secs));
        self.conns.is_empty() || now.saturating_duration_since(since) >= bound
    }

    /// Publishes `$SYS/broker/...` every `interval` from the next tick on (one shard does).
    pub fn publish_sys_every(&mut self, interval: Duration) {
        self.timers.sys_interval = Some(interval);
        self.timers.next_sys_at = None;
    }

    pub(super) fn set_wall_clock(&mut self, wall: SystemTime) {
        self.timers.wall = wall;
    }

    /// Wall time as of the input being handled.
    pub(crate) fn wall_clock(&self) -> SystemTime {
        self.timers.wall
    }
}
