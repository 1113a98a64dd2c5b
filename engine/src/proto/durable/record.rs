//! The records of the write-ahead log: what the core emits for persistent sessions and
//! retained messages, as compact binary payloads (the storage engine frames them with a length
//! and a CRC and treats them as opaque bytes).
//!
//! What it is for: [`Record::encode`] and [`Record::decode`], one the inverse of the other.
//! What it must never do: panic or allocate without a bound on bytes read back from disk.
//! Every length is checked against what is left before anything is read or reserved, and a
//! bad record is a [`RecordError`].
//!
//! Format: one byte of version ([`VERSION`]), one byte of kind, then the kind's fields.
//! Integers are little-endian, fixed width; byte strings are a `u32` length and the bytes. An
//! application message (a retained one, a will, one waiting in a session) is stored as the
//! MQTT 5 PUBLISH packet the codec encodes and decodes — that format is already versioned,
//! compact and fuzzed — plus its absolute expiry deadline (wall clock, unix milliseconds).

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use ringmq_codec::{Packet, ProtocolVersion, Publish, QoS, QosPid, Str, SubscriptionOptions};

/// The record format version written by this build. A record of another version is refused
/// (a future build reads older versions; this one knows only its own).
pub const VERSION: u8 = 1;

/// Upper bound of one encoded PUBLISH inside a record (the protocol maximum).
const MAX_PUBLISH: u32 = ringmq_codec::Limits::PROTOCOL_MAX_PACKET_SIZE;

/// Subscriptions one session record may hold (far above any configured per-client limit).
const MAX_SUBS: u32 = 1 << 20;

/// Why a record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("record truncated: {0} needs more bytes than the record holds")]
    Truncated(&'static str),
    #[error("record version {0} is not {VERSION}")]
    Version(u8),
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("invalid {0} in record")]
    Invalid(&'static str),
    #[error("{0} bytes left over after the record")]
    Trailing(usize),
}

/// An application message as stored: the PUBLISH (topic, payload, QoS, RETAIN, properties)
/// and its absolute expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub topic: Str,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: ringmq_codec::PublishProperties,
    /// Unix milliseconds at which the message expires; `None`: never.
    pub expires_unix_ms: Option<u64>,
}

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSub {
    pub filter: Bytes,
    pub options: SubscriptionOptions,
    pub id: Option<NonZeroU32>,
}

/// A session's will: its delay and, once the connection is gone, when it is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWill {
    pub message: StoredMessage,
    pub delay_secs: u32,
    /// Unix milliseconds at which a pending will is published; `None`: the session was
    /// connected (the will belongs to its connection).
    pub publish_unix_ms: Option<u64>,
}

/// A session's metadata. `reset`: its queue, in-flight and inbound QoS 2 state start empty
/// (a new session, or an image that the following records fill).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub client_id: Str,
    /// Orders copies of one session found in several shards' logs: the highest wins.
    pub generation: u64,
    pub expiry_secs: u32,
    /// Unix milliseconds at which the offline session ends; `None`: connected.
    pub expires_unix_ms: Option<u64>,
    pub reset: bool,
    pub owner: Option<Str>,
    pub subs: Vec<StoredSub>,
    pub will: Option<StoredWill>,
}

/// A record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A session created or changed (subscriptions, expiry, connection, will).
    Session(SessionRecord),
    /// A session ended.
    SessionRemoved { client_id: Str, generation: u64 },
    /// A message accepted on this shard for persistent sessions: written once per shard,
    /// referenced by `Enqueued`.
    Message { id: u64, message: StoredMessage },
    /// The message `message` joins the back of the session's queue.
    Enqueued {
        client_id: Str,
        message: u64,
        qos: QoS,
        retain: bool,
        sub_ids: Vec<NonZeroU32>,
    },
    /// The front of the session's queue is sent under `packet_id` (now in flight).
    Sent {
        client_id: Str,
        packet_id: NonZeroU16,
    },
    /// The front of the session's queue is dropped (expired, or not deliverable).
    Dropped { client_id: Str },
    /// The end of the session's image (the `Session` record with `reset` and what follows
    /// it): replay applies an image only once it has seen its end, so an image cut short by a
    /// crash leaves the state it would have replaced.
    ImageEnd { client_id: Str },
    /// The in-flight message `packet_id` is complete (PUBACK, PUBCOMP, PUBREC with an error).
    Acked {
        client_id: Str,
        packet_id: NonZeroU16,
    },
    /// The in-flight QoS 2 message `packet_id` got its PUBREC: PUBREL sent.
    Released {
        client_id: Str,
        packet_id: NonZeroU16,
    },
    /// Inbound QoS 2: `received` — PUBREC sent for `packet_id`; else PUBREL received.
    Inbound {
        client_id: Str,
        packet_id: NonZeroU16,
        received: bool,
    },
    /// A retained message set (or cleared: empty payload), with its ordering stamp.
    Retained { seq: u64, message: StoredMessage },
}

const K_SESSION: u8 = 1;
const K_SESSION_REMOVED: u8 = 2;
const K_MESSAGE: u8 = 3;
const K_ENQUEUED: u8 = 4;
const K_SENT: u8 = 5;
const K_DROPPED: u8 = 6;
const K_ACKED: u8 = 7;
const K_RELEASED: u8 = 8;
const K_INBOUND: u8 = 9;
const K_RETAINED: u8 = 10;
const K_IMAGE_END: u8 = 11;

// ---- encoding ------------------------------------------------------------------------------

fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Every length written is bounded by the protocol (client ids, topics, payloads).
    put_u32(out, u32::try_from(b.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(b);
}
/// `None` as 0 (deadlines and ids are never 0 in use).
fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    put_u64(out, v.map_or(0, |v| v.max(1)));
}

fn options_byte(o: SubscriptionOptions) -> u8 {
    (o.qos as u8)
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling as u8) << 4)
}

fn options_from(b: u8) -> Result<SubscriptionOptions, RecordError> {
    let qos = QoS::from_u8(b & 3).ok_or(RecordError::Invalid("subscription QoS"))?;
    let retain_handling = match (b >> 4) & 3 {
        0 => ringmq_codec::RetainHandling::SendAtSubscribe,
        1 => ringmq_codec::RetainHandling::SendAtSubscribeIfNew,
        2 => ringmq_codec::RetainHandling::DoNotSend,
        _ => return Err(RecordError::Invalid("retain handling")),
    };
    if b & 0xC0 != 0 {
        return Err(RecordError::Invalid("subscription options"));
    }
    Ok(SubscriptionOptions {
        qos,
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling,
    })
}

fn put_message(out: &mut Vec<u8>, m: &StoredMessage) {
    put_opt_u64(out, m.expires_unix_ms);
    let qos_pid = match m.qos {
        QoS::AtMostOnce => QosPid::AtMostOnce,
        // The packet id is not part of the stored message; any valid one will do.
        q => QosPid::new(q, NonZeroU16::MIN),
    };
    let mut properties = m.properties.clone();
    properties.topic_alias = None;
    properties.subscription_ids = Default::default();
    // The stored deadline replaces the relative expiry.
    properties.message_expiry_secs = None;
    let packet = Packet::Publish(Publish {
        dup: false,
        qos_pid,
        retain: m.retain,
        topic: m.topic.clone(),
        properties,
        payload: m.payload.clone(),
    });
    let mut buf = BytesMut::new();
    if ringmq_codec::encode(&packet, ProtocolVersion::V5, &mut buf).is_err() {
        // A message the codec cannot encode was never accepted from a client in the first
        // place; an empty packet makes the record fail to decode rather than lie.
        buf.clear();
    }
    put_bytes(out, &buf);
}

fn put_client(out: &mut Vec<u8>, client_id: &Str) {
    put_bytes(out, client_id.as_bytes());
}

impl Record {
    /// Appends the record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, VERSION);
        match self {
            Record::Session(s) => {
                put_u8(out, K_SESSION);
                put_client(out, &s.client_id);
                put_u64(out, s.generation);
                put_u32(out, s.expiry_secs);
                put_opt_u64(out, s.expires_unix_ms);
                put_u8(out, u8::from(s.reset));
                put_bytes(out, s.owner.as_ref().map_or(&[][..], |o| o.as_bytes()));
                put_u32(out, u32::try_from(s.subs.len()).unwrap_or(u32::MAX));
                for sub in &s.subs {
                    put_bytes(out, &sub.filter);
                    put_u8(out, options_byte(sub.options));
                    put_u32(out, sub.id.map_or(0, NonZeroU32::get));
                }
                match &s.will {
                    None => put_u8(out, 0),
                    Some(w) => {
                        put_u8(out, 1);
                        put_u32(out, w.delay_secs);
                        put_opt_u64(out, w.publish_unix_ms);
                        put_message(out, &w.message);
                    }
                }
            }
            Record::SessionRemoved {
                client_id,
                generation,
            } => {
                put_u8(out, K_SESSION_REMOVED);
                put_client(out, client_id);
                put_u64(out, *generation);
            }
            Record::Message { id, message } => {
                put_u8(out, K_MESSAGE);
                put_u64(out, *id);
                put_message(out, message);
            }
            Record::Enqueued {
                client_id,
                message,
                qos,
                retain,
                sub_ids,
            } => {
                put_u8(out, K_ENQUEUED);
                put_client(out, client_id);
                put_u64(out, *message);
                put_u8(out, *qos as u8 | (u8::from(*retain) << 2));
                put_u8(out, u8::try_from(sub_ids.len()).unwrap_or(u8::MAX));
                for id in sub_ids.iter().take(usize::from(u8::MAX)) {
                    put_u32(out, id.get());
                }
            }
            Record::Sent {
                client_id,
                packet_id,
            } => {
                put_u8(out, K_SENT);
                put_client(out, client_id);
                put_u16(out, packet_id.get());
            }
            Record::Dropped { client_id } => {
                put_u8(out, K_DROPPED);
                put_client(out, client_id);
            }
            Record::ImageEnd { client_id } => {
                put_u8(out, K_IMAGE_END);
                put_client(out, client_id);
            }
            Record::Acked {
                client_id,
                packet_id,
            } => {
                put_u8(out, K_ACKED);
                put_client(out, client_id);
                put_u16(out, packet_id.get());
            }
            Record::Released {
                client_id,
                packet_id,
            } => {
                put_u8(out, K_RELEASED);
                put_client(out, client_id);
                put_u16(out, packet_id.get());
            }
            Record::Inbound {
                client_id,
                packet_id,
                received,
            } => {
                put_u8(out, K_INBOUND);
                put_client(out, client_id);
                put_u16(out, packet_id.get());
                put_u8(out, u8::from(*received));
            }
            Record::Retained { seq, message } => {
                put_u8(out, K_RETAINED);
                put_u64(out, *seq);
                put_message(out, message);
            }
        }
    }

    /// The record as bytes (tests, tools).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Reads one record; the whole of `bytes` must be that record.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(RecordError::Version(version));
        }
        let record = match r.u8("kind")? {
            K_SESSION => {
                let client_id = r.client()?;
                let generation = r.u64("generation")?;
                let expiry_secs = r.u32("expiry")?;
                let expires_unix_ms = r.opt_u64("deadline")?;
                let reset = r.bool("reset")?;
                let owner = r.bytes("owner", u32::from(u16::MAX))?;
                let owner = if owner.is_empty() {
                    None
                } else {
                    Some(Str::from_bytes(owner).map_err(|_| RecordError::Invalid("owner"))?)
                };
                let n = r.u32("subscription count")?;
                if n > MAX_SUBS {
                    return Err(RecordError::Invalid("subscription count"));
                }
                // Each subscription takes at least 9 bytes: no reservation beyond the record.
                let mut subs = Vec::with_capacity((n as usize).min(r.left() / 9));
                for _ in 0..n {
                    let filter = r.bytes("filter", u32::from(u16::MAX))?;
                    ringmq_codec::topic::validate_topic_filter(&filter)
                        .map_err(|_| RecordError::Invalid("topic filter"))?;
                    let options = options_from(r.u8("options")?)?;
                    let id = NonZeroU32::new(r.u32("subscription id")?);
                    subs.push(StoredSub {
                        filter,
                        options,
                        id,
                    });
                }
                let will = match r.u8("will flag")? {
                    0 => None,
                    1 => Some(StoredWill {
                        delay_secs: r.u32("will delay")?,
                        publish_unix_ms: r.opt_u64("will deadline")?,
                        message: r.message()?,
                    }),
                    _ => return Err(RecordError::Invalid("will flag")),
                };
                Record::Session(SessionRecord {
                    client_id,
                    generation,
                    expiry_secs,
                    expires_unix_ms,
                    reset,
                    owner,
                    subs,
                    will,
                })
            }
            K_SESSION_REMOVED => Record::SessionRemoved {
                client_id: r.client()?,
                generation: r.u64("generation")?,
            },
            K_MESSAGE => Record::Message {
                id: r.u64("message id")?,
                message: r.message()?,
            },
            K_ENQUEUED => {
                let client_id = r.client()?;
                let message = r.u64("message id")?;
                let flags = r.u8("flags")?;
                let qos = QoS::from_u8(flags & 3).ok_or(RecordError::Invalid("QoS"))?;
                if flags & !7 != 0 {
                    return Err(RecordError::Invalid("flags"));
                }
                let n = r.u8("subscription id count")?;
                let mut sub_ids = Vec::with_capacity(usize::from(n).min(r.left() / 4));
                for _ in 0..n {
                    let id = NonZeroU32::new(r.u32("subscription id")?)
                        .ok_or(RecordError::Invalid("subscription id"))?;
                    sub_ids.push(id);
                }
                Record::Enqueued {
                    client_id,
                    message,
                    qos,
                    retain: flags & 4 != 0,
                    sub_ids,
                }
            }
            K_SENT => Record::Sent {
                client_id: r.client()?,
                packet_id: r.packet_id()?,
            },
            K_DROPPED => Record::Dropped {
                client_id: r.client()?,
            },
            K_IMAGE_END => Record::ImageEnd {
                client_id: r.client()?,
            },
            K_ACKED => Record::Acked {
                client_id: r.client()?,
                packet_id: r.packet_id()?,
            },
            K_RELEASED => Record::Released {
                client_id: r.client()?,
                packet_id: r.packet_id()?,
            },
            K_INBOUND => Record::Inbound {
                client_id: r.client()?,
                packet_id: r.packet_id()?,
                received: r.bool("received")?,
            },
            K_RETAINED => Record::Retained {
                seq: r.u64("stamp")?,
                message: r.message()?,
            },
            k => return Err(RecordError::Kind(k)),
        };
        if r.left() != 0 {
            return Err(RecordError::Trailing(r.left()));
        }
        Ok(record)
    }
}

// ---- decoding ------------------------------------------------------------------------------

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], RecordError> {
        if self.left() < n {
            return Err(RecordError::Truncated(what));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, RecordError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn bool(&mut self, what: &'static str) -> Result<bool, RecordError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RecordError::Invalid(what)),
        }
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn opt_u64(&mut self, what: &'static str) -> Result<Option<u64>, RecordError> {
        Ok(Some(self.u64(what)?).filter(|&v| v != 0))
    }
    fn packet_id(&mut self) -> Result<NonZeroU16, RecordError> {
        NonZeroU16::new(self.u16("packet id")?).ok_or(RecordError::Invalid("packet id"))
    }

    /// A length-prefixed byte string of at most `max` bytes.
    fn bytes(&mut self, what: &'static str, max: u32) -> Result<Bytes, RecordError> {
        let n = self.u32(what)?;
        if n > max {
            return Err(RecordError::Invalid(what));
        }
        Ok(Bytes::copy_from_slice(self.take(n as usize, what)?))
    }

    fn client(&mut self) -> Result<Str, RecordError> {
        let b = self.bytes("client id", u32::from(u16::MAX))?;
        Str::from_bytes(b).map_err(|_| RecordError::Invalid("client id"))
    }

    fn message(&mut self) -> Result<StoredMessage, RecordError> {
        let expires_unix_ms = self.opt_u64("message deadline")?;
        let packet = self.bytes("message", MAX_PUBLISH)?;
        let mut buf = BytesMut::from(&packet[..]);
        let limits = ringmq_codec::Limits {
            max_packet_size: MAX_PUBLISH,
        };
        let decoded = ringmq_codec::decode(&mut buf, &limits, ProtocolVersion::V5)
            .map_err(|_| RecordError::Invalid("message"))?;
        let Some(Packet::Publish(p)) = decoded else {
            return Err(RecordError::Invalid("message"));
        };
        if !buf.is_empty() || p.topic.is_empty() {
            return Err(RecordError::Invalid("message"));
        }
        Ok(StoredMessage {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos_pid.qos(),
            retain: p.retain,
            properties: p.properties,
            expires_unix_ms,
        })
    }
}
