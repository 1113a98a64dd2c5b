//! The fuzz target's model of one client connection: what it has sent (and what of that the
//! core has read), what it has received, and the checks made on every packet the broker
//! writes to it. No broker logic is reimplemented here: the model only records what the
//! client itself can see (its SUBACKs, its packet ids, the bytes on its socket).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bytes::{Bytes, BytesMut};
use ringmq::proto::ConnId;
use ringmq_codec::{Packet, ProtocolVersion, QoS, SubscriptionOptions};

/// A payload the target publishes starts with this tag and a sequence number (u32 LE), so a
/// delivery names the message it carries.
pub const PAYLOAD_TAG: &[u8; 2] = b"RQ";

/// Where a server → client QoS 1/2 PUBLISH stands, from the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flight {
    /// QoS 1, PUBACK owed.
    NeedAck,
    /// QoS 2, PUBREC owed.
    NeedRec,
    /// QoS 2, PUBREC read by the core, waiting for PUBREL.
    WaitRel,
    /// QoS 2, PUBREL received, PUBCOMP owed.
    NeedComp,
}

/// What a client packet does to the client's model once the core has read it.
#[derive(Debug, Clone, Copy)]
pub enum Effect {
    /// PUBACK, PUBCOMP or a failed PUBREC: the server's flight with this id ends.
    EndFlight(u16),
    /// A successful PUBREC: the flight waits for PUBREL.
    Received(u16),
}

/// A subscription the broker granted (SUBACK below 0x80), as the ledger needs it.
#[derive(Debug, Clone)]
pub struct SubRec {
    pub options: SubscriptionOptions,
    /// Full pumps of the mesh done when the SUBACK was read: a message published after a
    /// later full pump finds the subscription's interest on every shard.
    pub pump_gen: u32,
    /// Policy epoch when SUBSCRIBE was sent and when SUBACK was read (must both be current).
    pub epoch_sent: u32,
    pub epoch_acked: u32,
    /// Subscribed again or unsubscribed since: left out of the ledger.
    pub unstable: bool,
}

#[derive(Debug)]
pub struct Client {
    pub shard: usize,
    pub conn: ConnId,
    pub serial: u64,
    pub released: bool,
    /// `Input::Closed` was given: the runtime reads and writes no more.
    pub closed: bool,
    /// Version of the first CONNECT sent (`None`: none sent).
    pub version: Option<ProtocolVersion>,
    /// The model's client-id key (an empty client id gets a key of its own).
    pub key: Option<Vec<u8>>,
    pub clean_start: bool,
    /// CONNACK read: `Some(session_present)` on success.
    pub connack: Option<bool>,
    pub connack_seen: bool,
    /// Raw bytes were sent after CONNECT: subscriptions and acks no longer known.
    pub tainted: bool,
    /// Raw bytes were sent before any CONNECT: the protocol version is unknown.
    pub raw_before_connect: bool,
    /// An ack was sent that the model cannot follow: the window check is off.
    pub window_unknown: bool,
    /// Bytes the broker wrote, not yet decoded.
    pub rx: BytesMut,
    /// Maximum Packet Size and Receive Maximum the client announced.
    pub max_packet: u32,
    pub receive_max: u16,
    pub alias_max: u16,
    pub aliases: HashMap<u16, Bytes>,
    /// Server → client flights by packet id.
    pub outstanding: BTreeMap<u16, (Flight, bool)>,
    /// Our QoS 2 publishes the broker received (PUBREC): PUBREL owed (`true`: sent).
    pub owe_pubrel: BTreeMap<u16, bool>,
    /// Encoded bytes not yet handed to the core (the rest of a split write).
    pub unsent: BytesMut,
    /// Bytes handed to the core and left there (a frame in part), or not read (throttled).
    pub pending: BytesMut,
    pub consumed: u64,
    pub effects: VecDeque<(u64, Effect)>,
    pub next_pid: u16,
    /// Our unacknowledged QoS 1/2 publishes: packet id → ledger index.
    pub my_pubs: HashMap<u16, usize>,
    pub last_pub: Option<(Packet, Option<usize>)>,
    /// Topic alias 1 as this client set it towards the server.
    pub my_alias: Option<Bytes>,
    pub delivered: HashSet<u32>,
    /// Packets sent since the output was last drained (bounds what the broker may write).
    pub packets_since_drain: usize,
    /// Every filter sent in SUBSCRIBE on this connection.
    pub own_filters: Vec<Vec<u8>>,
    pub subs: HashMap<Vec<u8>, SubRec>,
    pub pending_subs: HashMap<u16, (Vec<(Vec<u8>, SubscriptionOptions)>, u32)>,
    /// Filters this connection sent in UNSUBSCRIBE (one acknowledged later by a SUBACK that
    /// was still pending is not stable either).
    pub unsubscribed: Vec<Vec<u8>>,
    pub server_disconnected: bool,
}

impl Client {
    pub fn new(shard: usize, conn: ConnId, serial: u64) -> Client {
        Client {
            shard,
            conn,
            serial,
            released: false,
            closed: false,
            version: None,
            key: None,
            clean_start: true,
            connack: None,
            connack_seen: false,
            tainted: false,
            raw_before_connect: false,
            window_unknown: false,
            rx: BytesMut::new(),
            max_packet: ringmq_codec::Limits::PROTOCOL_MAX_PACKET_SIZE,
            receive_max: u16::MAX,
            alias_max: 0,
            aliases: HashMap::new(),
            outstanding: BTreeMap::new(),
            owe_pubrel: BTreeMap::new(),
            unsent: BytesMut::new(),
            pending: BytesMut::new(),
            consumed: 0,
            effects: VecDeque::new(),
            next_pid: 0,
            my_pubs: HashMap::new(),
            last_pub: None,
            my_alias: None,
            delivered: HashSet::new(),
            packets_since_drain: 0,
            own_filters: Vec::new(),
            subs: HashMap::new(),
            pending_subs: HashMap::new(),
            unsubscribed: Vec::new(),
            server_disconnected: false,
        }
    }

    /// The version packets are encoded and decoded in.
    pub fn wire_version(&self) -> ProtocolVersion {
        self.version.unwrap_or(ProtocolVersion::V5)
    }

    /// The next packet id: from `session`, the counter of the client id, when there is one.
    /// Packet ids belong to the session, not the connection: a client that resumes a session
    /// with an unfinished QoS 2 flow and reuses its id sends a duplicate, which the broker
    /// rightly acknowledges without routing [MQTT-4.3.3-10].
    pub fn next_packet_id(&mut self, session: Option<&mut u16>) -> std::num::NonZeroU16 {
        let counter = session.unwrap_or(&mut self.next_pid);
        loop {
            *counter = counter.wrapping_add(1);
            if let Some(id) = std::num::NonZeroU16::new(*counter) {
                return id;
            }
        }
    }

    /// Stream position after everything written so far.
    pub fn stream_end(&self) -> u64 {
        self.consumed + (self.pending.len() + self.unsent.len()) as u64
    }

    /// The core read `n` more bytes: apply the effects of the packets now wholly read.
    pub fn on_consumed(&mut self, n: usize) {
        self.consumed += n as u64;
        while let Some(&(end, effect)) = self.effects.front() {
            if end > self.consumed {
                break;
            }
            self.effects.pop_front();
            match effect {
                Effect::EndFlight(id) => {
                    self.outstanding.remove(&id);
                }
                Effect::Received(id) => {
                    if let Some(f) = self.outstanding.get_mut(&id) {
                        *f = (Flight::WaitRel, false);
                    }
                }
            }
        }
    }

    /// Flights the client may answer now: (packet id, flight) not answered yet.
    pub fn answerable(&self) -> Vec<(u16, Flight)> {
        self.outstanding
            .iter()
            .filter(|(_, (f, answered))| !answered && *f != Flight::WaitRel)
            .map(|(id, (f, _))| (*id, *f))
            .collect()
    }

    /// Our QoS 2 publishes whose PUBREL is owed and not sent yet.
    pub fn unsent_pubrels(&self) -> Vec<u16> {
        self.owe_pubrel
            .iter()
            .filter(|(_, sent)| !**sent)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Server → client flights the broker's window must hold.
    pub fn window(&self, max_inflight: u16) -> usize {
        usize::from(max_inflight.min(self.receive_max))
    }

    pub fn seq_of(payload: &[u8]) -> Option<u32> {
        let rest = payload.strip_prefix(PAYLOAD_TAG)?;
        let b: [u8; 4] = rest.get(..4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b))
    }

    /// Whether a server → client packet of this type is allowed at all for `version`.
    pub fn server_may_send(p: &Packet, version: ProtocolVersion) -> bool {
        match p {
            Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq => false,
            // 3.1.1 has no server DISCONNECT and no AUTH.
            Packet::Disconnect(_) | Packet::Auth(_) => version.is_v5(),
            _ => true,
        }
    }

    pub fn granted_qos(reason: u8) -> Option<QoS> {
        QoS::from_u8(reason)
    }
}
