//! A deterministic harness for the sans-IO shard core: several cores joined by a real mesh,
//! pumped by hand, fake clients that speak bytes, and a clock that only moves when told.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod pki;

use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use ringmq::config::Limits;
use ringmq::ops::metrics::{ListenerLabel, Metrics, ShardHandle};
use ringmq::proto::{ConnId, Handled, Input, Now, ShardCore};
use ringmq::shard::mesh::Mesh;
use ringmq_codec::*;

pub struct Cluster {
    pub cores: Vec<ShardCore>,
    pub mesh: Mesh,
    pub now: Instant,
    /// Wall time, moved with `now` (token and certificate expiry).
    pub wall: SystemTime,
    /// The policy every core reads (swap a snapshot in to reload).
    pub auth: ringmq_auth::SharedSnapshot,
    /// Every core's metrics, as a server shares them.
    pub metrics: Arc<Metrics>,
    /// Check every core's invariants after each input (off where a test counts allocations
    /// or runs long loops: the check walks every connection and session).
    pub check_invariants: bool,
}

impl Cluster {
    pub fn new(shards: usize) -> Cluster {
        Cluster::with_limits(shards, Limits::default())
    }

    pub fn with_limits(shards: usize, limits: Limits) -> Cluster {
        Cluster::with_policy(shards, limits, ringmq_auth::Snapshot::allow_all())
    }

    /// Cores that authenticate and authorize with `snapshot` (a registry, or allow-all).
    pub fn with_policy(shards: usize, limits: Limits, snapshot: ringmq_auth::Snapshot) -> Cluster {
        let auth = ringmq_auth::SharedSnapshot::new(snapshot);
        // Inboxes as large as the outbox bound, as the server makes them.
        let mesh = Mesh::new(shards, limits.shard_queue_capacity);
        let listener = ListenerLabel {
            name: "test".into(),
            protocol: "mqtt",
        };
        let metrics = Arc::new(Metrics::new(shards, vec![listener]));
        let cores = (0..shards)
            .map(|i| {
                ShardCore::with_metrics(
                    i,
                    Some(mesh.clone()),
                    limits.clone(),
                    auth.clone(),
                    ShardHandle::new(metrics.clone(), i),
                )
            })
            .collect();
        Cluster {
            cores,
            mesh,
            now: Instant::now(),
            // A fixed date, so expiry in tests does not depend on when they run.
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            auth,
            metrics,
            check_invariants: true,
        }
    }

    /// The clocks, as an input's time.
    pub fn at(&self) -> Now {
        Now {
            mono: self.now,
            wall: self.wall,
        }
    }

    /// Hands `input` to core `shard` at the cluster's time.
    pub fn input(&mut self, shard: usize, input: Input<'_>) -> Handled {
        let now = self.at();
        let handled = self.cores[shard].handle(input, now);
        if self.check_invariants {
            self.cores[shard].check_invariants();
        }
        handled
    }

    /// Delivers mesh messages until every inbox and outbox is empty.
    pub fn pump(&mut self) {
        for _ in 0..10_000 {
            for i in 0..self.cores.len() {
                let _ = self.input(i, Input::Inbox { max: usize::MAX });
            }
            let idle = (0..self.cores.len())
                .all(|i| self.mesh.len(i) == 0 && !self.cores[i].mesh_backlog());
            if idle {
                return;
            }
        }
        panic!("mesh did not settle");
    }

    /// Moves both clocks by `d` and ticks every core.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.wall += d;
        for i in 0..self.cores.len() {
            let _ = self.input(i, Input::Tick);
        }
        self.pump();
    }

    pub fn open(&mut self, shard: usize) -> Client {
        self.open_from(shard, "127.0.0.1:40000")
    }

    /// A connection from `peer` (`"10.0.0.1:5000"`), which must be accepted.
    pub fn open_from(&mut self, shard: usize, peer: &str) -> Client {
        self.try_open_from(shard, peer).expect("accept")
    }

    /// A connection from `peer`; `None` when the core closes it at accept.
    pub fn try_open_from(&mut self, shard: usize, peer: &str) -> Option<Client> {
        let peer: SocketAddr = peer.parse().unwrap();
        let Handled::Accepted(token) = self.input(shard, Input::Accept { listener: 0, peer })
        else {
            return None;
        };
        Some(Client {
            shard,
            index: token.conn,
            version: ProtocolVersion::V5,
            rx: BytesMut::new(),
            pending: Vec::new(),
        })
    }

    /// Sends CONNECT on an open connection and returns the first packet back (CONNACK).
    pub fn connect_on(&mut self, c: &mut Client, id: &str) -> ConnAck {
        let connect = connect_packet(id, c.version);
        self.connect_with(c, connect)
    }

    pub fn send(&mut self, c: &Client, p: &Packet) {
        let mut buf = BytesMut::new();
        encode(p, c.version, &mut buf).unwrap();
        self.send_bytes(c, &buf);
    }

    pub fn send_bytes(&mut self, c: &Client, bytes: &[u8]) {
        let mut buf = BytesMut::from(bytes);
        let _ = self.input(
            c.shard,
            Input::Read {
                conn: c.index,
                bytes: &mut buf,
            },
        );
        self.pump();
    }

    /// Packets the core has written to `c` so far.
    pub fn recv(&mut self, c: &mut Client) -> Vec<Packet> {
        if let Some(conn) = self.cores[c.shard].conn_mut(c.index) {
            let mut spare = BytesMut::new();
            while let Some(output) = conn.take_output(&mut spare) {
                match output {
                    ringmq::proto::conn::Output::Frame(frame) => c.rx.extend_from_slice(&frame),
                    ringmq::proto::conn::Output::Buffer(buf) => c.rx.extend_from_slice(&buf),
                }
            }
        }
        let mut packets: Vec<Packet> = c.pending.drain(..).collect();
        let limits = ringmq_codec::Limits {
            max_packet_size: Limits::PROTOCOL_MAX,
        };
        while let Some(p) = decode(&mut c.rx, &limits, c.version).unwrap() {
            packets.push(p);
        }
        packets
    }

    pub fn recv_one(&mut self, c: &mut Client) -> Packet {
        let mut p = self.recv(c);
        assert_eq!(p.len(), 1, "expected one packet, got {p:?}");
        p.remove(0)
    }

    pub fn is_closing(&self, c: &Client) -> bool {
        self.cores[c.shard]
            .conn(c.index)
            .is_none_or(|conn| conn.is_closing())
    }

    /// The socket closed (the runtime's release after the peer went away).
    pub fn drop_conn(&mut self, c: &Client) {
        let _ = self.input(c.shard, Input::Closed(c.index));
        let _ = self.input(c.shard, Input::Release(c.index));
        self.pump();
    }

    pub fn connect(
        &mut self,
        shard: usize,
        id: &str,
        clean: bool,
        expiry: u32,
    ) -> (Client, ConnAck) {
        let mut c = self.open(shard);
        let mut connect = connect_packet(id, ProtocolVersion::V5);
        connect.clean_start = clean;
        connect.properties.session_expiry_secs = Some(expiry);
        let ack = self.connect_with(&mut c, connect);
        (c, ack)
    }

    pub fn subscribe(&mut self, c: &mut Client, filter: &'static str, qos: QoS) -> SubAck {
        self.send(c, &subscribe_packet(pid(1), filter, qos));
        let mut packets = self.recv(c);
        assert!(!packets.is_empty(), "no SUBACK");
        let first = packets.remove(0);
        c.pending = packets;
        match first {
            Packet::SubAck(a) => a,
            p => panic!("expected SUBACK, got {p:?}"),
        }
    }
}

// Identity: what the TLS layer and a full CONNECT bring in.
impl Cluster {
    /// Sends `connect` on an open connection (its protocol version becomes the client's) and
    /// returns the first packet back (CONNACK).
    pub fn connect_with(&mut self, c: &mut Client, connect: Connect) -> ConnAck {
        c.version = connect.protocol;
        self.send(c, &Packet::Connect(Box::new(connect)));
        let mut packets = self.recv(c);
        assert!(!packets.is_empty(), "no CONNACK");
        let first = packets.remove(0);
        c.pending = packets;
        match first {
            Packet::ConnAck(a) => a,
            p => panic!("expected CONNACK, got {p:?}"),
        }
    }

    /// The client certificate chain (leaf first) the TLS layer verified for `c`, as the
    /// runtime records it before the first read.
    pub fn set_peer_certificates(
        &mut self,
        c: &Client,
        chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    ) {
        self.cores[c.shard]
            .conn_mut(c.index)
            .expect("open connection")
            .peer_certificates = chain;
    }

    /// Swaps in a new policy, as a registry reload does; the cores re-check their sessions at
    /// the next tick.
    pub fn reload(&mut self, snapshot: ringmq_auth::Snapshot) {
        self.auth.store(snapshot);
        self.advance(Duration::ZERO);
    }
}

pub struct Client {
    pub shard: usize,
    pub index: ConnId,
    pub version: ProtocolVersion,
    pub rx: BytesMut,
    /// Packets received after CONNACK by `connect`, returned by the next `recv`.
    pub pending: Vec<Packet>,
}

impl Client {
    /// Another handle on the same connection (for sending; received bytes stay with `self`).
    pub fn handle(&self) -> Client {
        Client {
            shard: self.shard,
            index: self.index,
            version: self.version,
            rx: BytesMut::new(),
            pending: Vec::new(),
        }
    }
}

/// A small deterministic generator (xorshift64*), so a randomized test replays by seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// SUBSCRIBE `packet_id` to one `filter` at `qos`, default options otherwise.
pub fn subscribe_packet(packet_id: NonZeroU16, filter: &'static str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        subscription_id: None,
        user_properties: UserProperties::new(),
        filters: vec![SubscribeFilter {
            filter: Str::from_static(filter),
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
        }],
    })
}

pub fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap()
}

pub fn subid(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

pub fn connect_packet(id: &str, version: ProtocolVersion) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive_secs: 60,
        properties: ConnectProperties::default(),
        client_id: Str::copy_from(id).unwrap(),
        will: None,
        username: None,
        password: None,
    }
}

pub fn publish(topic: &'static str, payload: &'static [u8], qos_pid: QosPid) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos_pid,
        retain: false,
        topic: Str::from_static(topic),
        properties: PublishProperties::default(),
        payload: Bytes::from_static(payload),
    })
}

pub trait LimitsExt {
    const PROTOCOL_MAX: u32;
}

impl LimitsExt for Limits {
    const PROTOCOL_MAX: u32 = ringmq_codec::Limits::PROTOCOL_MAX_PACKET_SIZE;
}
