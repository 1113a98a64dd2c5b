//! Restore: installs what replay found for this shard (see `replay.rs`) before the listeners
//! open — sessions (subscription tries and interest follow from `insert_session`), their
//! directory entries (each session is restored on its client id's directory shard), queues,
//! in-flight and inbound QoS 2 state, pending wills, the retained store, and the slots the
//! sessions hold of their authentication names' session limit. What expired
//! while the broker was down (absolute deadlines) is dropped here, and the pending will of a
//! session that ended meanwhile is published.

use std::time::Duration;

use bytes::Bytes;
use ringmq_codec::{Will, WillProperties};
use tracing::{debug, info};

use super::record::{StoredMessage, StoredWill};
use super::replay::{ReplayedOut, ShardRestore};
use super::{deadline, unix_ms_of};
use crate::ids::ConnId;
use crate::proto::message::Message;
use crate::proto::session::{
    Inflight, InflightState, Outgoing, PendingWill, Session, SubIds, SubRecord,
};
use crate::proto::{Now, ShardCore};
use crate::shard::mesh::ConnToken;

/// What a restore did, for the log line and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub sessions: usize,
    /// Sessions whose expiry passed while the broker was down.
    pub expired: usize,
    pub queued: usize,
    pub inflight: usize,
    pub retained: usize,
}

fn message_of(m: StoredMessage, now: Now, relative_expiry: bool) -> Option<Message> {
    let expires_at = match m.expires_unix_ms {
        None => None,
        Some(secs) if relative_expiry => Some(now.mono + Duration::from_secs(secs)),
        Some(ms) => Some(deadline(ms, now.mono, now.wall)?),
    };
    let mut properties = m.properties;
    // What is forwarded is the remaining lifetime, computed from `expires_at`.
    properties.message_expiry_secs = expires_at.map(|at| {
        u32::try_from(at.saturating_duration_since(now.mono).as_secs().max(1)).unwrap_or(u32::MAX)
    });
    Some(Message {
        topic: m.topic,
        payload: m.payload,
        qos: m.qos,
        retain: m.retain,
        properties,
        expires_at,
        origin: Bytes::new(),
        // Not timed: a restored message's arrival was before the restart.
        published_at: None,
    })
}

fn outgoing_of(o: ReplayedOut, now: Now) -> Option<Outgoing> {
    let mut sub_ids = SubIds::new();
    sub_ids.extend(o.sub_ids);
    Some(Outgoing {
        message: message_of(o.message, now, false)?,
        qos: o.qos,
        retain: o.retain,
        sub_ids,
    })
}

fn will_of(w: StoredWill) -> Will {
    let m = w.message;
    let p = m.properties;
    Will {
        qos: m.qos,
        retain: m.retain,
        topic: m.topic,
        payload: m.payload,
        properties: WillProperties {
            will_delay_secs: Some(w.delay_secs).filter(|&d| d > 0),
            payload_format_utf8: p.payload_format_utf8,
            message_expiry_secs: m.expires_unix_ms.and_then(|s| u32::try_from(s).ok()),
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
        },
    }
}

impl ShardCore {
    /// Installs this shard's part of the recovered state (before any connection exists).
    pub fn restore(&mut self, part: ShardRestore, now: Now) -> Restored {
        assert!(self.conns.is_empty(), "restore runs before listeners open");
        self.set_wall_clock(now.wall);
        self.durable_clock(now.mono, now.wall);
        if let Some(d) = self.durable.as_deref() {
            d.raise_generation(part.max_generation);
        }
        self.raise_retain_seq(part.max_retain_seq);
        let mut done = Restored::default();
        for (seq, m) in part.retained {
            // A clear is kept (as a tombstone) so an older copy cannot come back.
            let Some(message) = message_of(m, now, false) else {
                continue;
            };
            if !message.payload.is_empty() {
                done.retained += 1;
            }
            self.apply_retain(message, seq);
        }
        let wall_ms = unix_ms_of(now.wall);
        // `maxClientSessionsPerAuthenticationName` counts restored sessions too.
        let name_limit = self
            .auth
            .load()
            .registry
            .as_ref()
            .map(|r| r.max_client_sessions_per_authentication_name());
        let mut serial = u64::MAX;
        let mut wills = Vec::new();
        for rs in part.sessions {
            let meta = rs.meta;
            let client_id = meta.client_id.clone();
            if self.by_client_id.contains_key(client_id.as_bytes()) {
                continue;
            }
            // Connected at the crash: the connection ended with the broker, so its will is
            // pending from now (MQTT 5.0 3.1.2.5: the server publishes the will when the
            // network connection closes without DISCONNECT, after the Will Delay Interval or
            // when the session ends, whichever comes first), and the session expires
            // `expiry_secs` after the restart (the moment of the crash is unknown).
            let (expires_at, publish_will_at) = match meta.expires_unix_ms {
                Some(ms) if ms <= wall_ms => {
                    done.expired += 1;
                    if let Some(w) = meta.will {
                        wills.push(will_of(w));
                    }
                    continue;
                }
                Some(ms) => (
                    deadline(ms, now.mono, now.wall),
                    meta.will.as_ref().and_then(|w| w.publish_unix_ms),
                ),
                None => (
                    Some(now.mono + Duration::from_secs(u64::from(meta.expiry_secs))),
                    None,
                ),
            };
            let mut session = Session::new(client_id.clone(), meta.expiry_secs);
            // Persistent, but marked so only once installed: `insert_session` writes an image
            // of a persistent session that arrives, and this one is already in a log.
            session.expires_at = expires_at;
            session.owner = meta
                .owner
                .as_ref()
                .map(|o| std::sync::Arc::from(o.as_str()));
            serial -= 1;
            session.claim = ConnToken {
                conn: ConnId::from_slot(0),
                serial,
            };
            for sub in meta.subs {
                session.subscriptions.insert(
                    sub.filter,
                    SubRecord {
                        options: sub.options,
                        id: sub.id,
                    },
                );
            }
            if let Some(w) = meta.will {
                let publish_at = match (publish_will_at, meta.expires_unix_ms) {
                    (Some(ms), _) => deadline(ms, now.mono, now.wall).unwrap_or(now.mono),
                    (None, _) => {
                        now.mono
                            + Duration::from_secs(u64::from(w.delay_secs.min(meta.expiry_secs)))
                    }
                };
                session.pending_will = Some(PendingWill {
                    will: Box::new(will_of(w)),
                    publish_at,
                });
            }
            for f in rs.inflight {
                let Some(out) = outgoing_of(f.out, now) else {
                    continue;
                };
                done.inflight += 1;
                session.inflight.push_back(Inflight {
                    packet_id: f.packet_id,
                    out,
                    state: if f.released {
                        InflightState::Released
                    } else {
                        InflightState::Published
                    },
                    sent: false,
                });
            }
            session.resend_pending = session
                .inflight
                .iter()
                .any(|f| f.state == InflightState::Published);
            for o in rs.queue {
                if let Some(out) = outgoing_of(o, now) {
                    done.queued += 1;
                    session.queued_bytes += out.message.weight();
                    session.queue.push_back(out);
                }
            }
            session.incoming_qos2 = rs.inbound_qos2;
            let owner = session.owner.clone();
            let claim = session.claim;
            let rehomed = rs.from_shard != self.id.slot();
            let sidx = self.insert_session(session);
            if let Some(s) = self.sessions.get_mut(sidx) {
                s.durable = true;
            }
            if let (Some(name), Some(_)) = (owner.clone(), name_limit) {
                self.restore_name_holder(name, client_id.clone(), claim);
            }
            self.restore_directory_entry(client_id, claim, owner);
            if rehomed {
                // Written again in this shard's log, with a newer generation than the copy
                // left in the other shard's log.
                self.durable_session_changed(sidx, true);
            }
            done.sessions += 1;
        }
        for will in wills {
            debug!(topic = %will.topic, "publishing the will of a session that expired while the broker was down");
            self.publish_will(will, now.mono);
        }
        self.drain_local(now.mono);
        self.flush_mesh();
        if done != Restored::default() {
            info!(shard = %self.id, sessions = done.sessions, expired = done.expired, queued = done.queued, inflight = done.inflight, retained = done.retained, "state restored from the log");
        }
        done
    }

    /// A restored session holds one of its authentication name's slots: registered on the
    /// name's shard as a connection's CONNECT registers it (`NameAcquire`, here without a
    /// limit: the session existed). The answer comes back for `claim`, which no connection
    /// is claiming (restored claims count down from `u64::MAX`), and is dropped.
    fn restore_name_holder(
        &mut self,
        name: std::sync::Arc<str>,
        client_id: ringmq_codec::Str,
        claim: ConnToken,
    ) {
        let to = self.directory_shard(name.as_bytes());
        let shard = self.id;
        self.send(
            to,
            crate::shard::mesh::ShardMsg::NameAcquire {
                name,
                client_id,
                shard,
                token: claim,
                limit: u32::MAX,
            },
        );
    }
}
