//! Many short-lived QoS 2 clients against several cores, at random (issue 12: "packets that
//! never come"): connects and takeovers of a small pool of client ids on any shard, clean and
//! persistent sessions that expire, subscriptions, QoS 2 publishes whose PUBREL comes at once,
//! later or never, subscribers that answer with a successful or an error PUBREC, now or later,
//! disconnects in the middle of a handshake. Checked after every step, once the mesh has
//! settled: every request on a connection the server did not close has its answer — SUBACK,
//! PUBREC, PUBCOMP, PINGRESP, and the PUBREL that follows a subscriber's successful PUBREC —
//! and the server closes a connection only when a newer one took its session over.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::*;
use ringmq_codec::*;

/// What a connection waits for from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    SubAck(u16),
    PubRec(u16),
    PubComp(u16),
    /// The server's PUBREL after our successful PUBREC of its delivery.
    PubRel(u16),
    PingResp,
}

struct Conn {
    client: Client,
    id: usize,
    next_pid: u16,
    expect: BTreeSet<Expect>,
    /// Our QoS 2 publishes whose PUBREC came and whose PUBREL we hold back.
    unreleased: Vec<u16>,
    /// Server deliveries (QoS 2) we have not answered yet.
    unacked: Vec<u16>,
    /// Server PUBRELs we have not completed yet.
    uncompleted: Vec<u16>,
    /// Released (its slot may now belong to a newer connection).
    dead: bool,
}

impl Conn {
    fn pid(&mut self) -> NonZeroU16 {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1).max(1);
            let p = self.next_pid;
            let busy = self.expect.iter().any(|e| {
                matches!(e, Expect::SubAck(x) | Expect::PubRec(x) | Expect::PubComp(x) if *x == p)
            }) || self.unreleased.contains(&p);
            if !busy {
                return pid(p);
            }
        }
    }
}

struct World {
    cl: Cluster,
    rng: Rng,
    conns: Vec<Conn>,
    /// Client id → the index in `conns` of its newest connection.
    newest: HashMap<usize, usize>,
    seed: u64,
}

const IDS: usize = 5;
const TOPICS: [&str; 3] = ["q/a", "q/b", "q/c"];

impl World {
    fn trace(&self, what: &str, k: usize) {
        if std::env::var("TRACE").is_ok() {
            let c = self.conns.get(k).map(|c| (c.client.shard, c.client.index));
            eprintln!("conn {k} {c:?} -> {what}");
        }
    }

    fn step(&mut self, step: usize) {
        let open: Vec<usize> = (0..self.conns.len()).filter(|&i| self.is_open(i)).collect();
        let roll = self.rng.below(100);
        if open.is_empty() || roll < 12 {
            self.connect();
        } else {
            let k = open[self.rng.below(open.len() as u64) as usize];
            match roll {
                12..=24 => self.subscribe(k),
                25..=59 => self.publish(k),
                60..=69 => self.release_some(k),
                70..=77 => self.ack_some(k),
                78..=84 => self.ping(k),
                85..=91 => {
                    let clean = self.rng.below(2) == 0;
                    self.disconnect(k, clean);
                }
                _ => {
                    self.cl.advance(Duration::from_secs(1 + self.rng.below(4)));
                }
            }
        }
        self.settle(step);
    }

    fn is_open(&self, k: usize) -> bool {
        !self.conns[k].dead && !self.cl.is_closing(&self.conns[k].client)
    }

    fn connect(&mut self) {
        let id = self.rng.below(IDS as u64) as usize;
        self.trace(&format!("connect c{id}"), self.conns.len());
        let shard = self.rng.below(self.cl.cores.len() as u64) as usize;
        let clean = self.rng.below(2) == 0;
        let expiry = if self.rng.below(2) == 0 { 0 } else { 3 };
        let mut client = self.cl.open(shard);
        let mut connect = connect_packet(&format!("c{id}"), ProtocolVersion::V5);
        connect.clean_start = clean;
        connect.properties.session_expiry_secs = Some(expiry);
        // The client's window: small, so the server's in-flight limit is exercised.
        connect.properties.receive_maximum = NonZeroU16::new(2);
        // Now and then a SUBSCRIBE and a QoS 2 PUBLISH right behind the CONNECT, in the same
        // read (held while the session is claimed, handled once it is ready), the PUBLISH
        // cut at a random byte so the next read completes it.
        let pipelined = self.rng.below(3) == 0;
        let mut bytes = bytes::BytesMut::new();
        encode(
            &Packet::Connect(Box::new(connect)),
            ProtocolVersion::V5,
            &mut bytes,
        )
        .unwrap();
        let mut tail = bytes::BytesMut::new();
        let mut expect = BTreeSet::new();
        if pipelined {
            let topic = TOPICS[self.rng.below(TOPICS.len() as u64) as usize];
            let s = subscribe_packet(pid(1), topic, QoS::ExactlyOnce);
            encode(&s, ProtocolVersion::V5, &mut bytes).unwrap();
            let p = publish(topic, b"pipelined", QosPid::ExactlyOnce(pid(2)));
            encode(&p, ProtocolVersion::V5, &mut tail).unwrap();
            let cut = self.rng.below(tail.len() as u64) as usize;
            bytes.extend_from_slice(&tail.split_to(cut));
            expect.insert(Expect::SubAck(1));
            expect.insert(Expect::PubRec(2));
        }
        self.cl.send_bytes(&client, &bytes);
        if !tail.is_empty() {
            self.cl.send_bytes(&client, &tail);
        }
        let mut packets = self.cl.recv(&mut client);
        assert!(
            matches!(packets.first(), Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::SUCCESS),
            "seed {}: CONNACK for c{id}: {packets:?}",
            self.seed
        );
        packets.remove(0);
        client.pending = packets;
        let index = self.conns.len();
        self.conns.push(Conn {
            client,
            id,
            next_pid: if pipelined { 2 } else { 0 },
            expect,
            unreleased: Vec::new(),
            unacked: Vec::new(),
            uncompleted: Vec::new(),
            dead: false,
        });
        if let Some(old) = self.newest.insert(id, index) {
            // Taken over: the old connection is closed by the server (DISCONNECT 0x8E).
            assert!(
                !self.is_open(old),
                "seed {}: c{id}'s older connection still open after a takeover",
                self.seed
            );
        }
    }

    fn subscribe(&mut self, k: usize) {
        self.trace("subscribe", k);
        let topic = TOPICS[self.rng.below(TOPICS.len() as u64) as usize];
        let c = &mut self.conns[k];
        let p = c.pid();
        c.expect.insert(Expect::SubAck(p.get()));
        let client = c.client.handle();
        self.cl
            .send(&client, &subscribe_packet(p, topic, QoS::ExactlyOnce));
    }

    fn publish(&mut self, k: usize) {
        self.trace("publish", k);
        let topic = TOPICS[self.rng.below(TOPICS.len() as u64) as usize];
        let c = &mut self.conns[k];
        let p = c.pid();
        c.expect.insert(Expect::PubRec(p.get()));
        let client = c.client.handle();
        let packet = publish(topic, b"exactly once", QosPid::ExactlyOnce(p));
        self.cl.send(&client, &packet);
    }

    /// Sends PUBREL for some held-back publishes, PUBCOMP for some server PUBRELs.
    fn release_some(&mut self, k: usize) {
        self.trace("release_some", k);
        let c = &mut self.conns[k];
        let client = c.client.handle();
        let mut out = Vec::new();
        for p in std::mem::take(&mut c.unreleased) {
            c.expect.insert(Expect::PubComp(p));
            out.push(Packet::PubRel(PubResp::new(pid(p), ReasonCode::SUCCESS)));
        }
        for p in std::mem::take(&mut c.uncompleted) {
            out.push(Packet::PubComp(PubResp::new(pid(p), ReasonCode::SUCCESS)));
        }
        for packet in out {
            self.cl.send(&client, &packet);
        }
    }

    /// Answers held-back deliveries: a successful PUBREC (then a PUBREL must come) or an
    /// error PUBREC (the exchange ends there [MQTT-4.3.3]).
    fn ack_some(&mut self, k: usize) {
        self.trace("ack_some", k);
        let error = self.rng.below(3) == 0;
        let c = &mut self.conns[k];
        let client = c.client.handle();
        let mut out = Vec::new();
        for p in std::mem::take(&mut c.unacked) {
            if error {
                out.push(Packet::PubRec(PubResp::new(
                    pid(p),
                    ReasonCode::UNSPECIFIED_ERROR,
                )));
            } else {
                c.expect.insert(Expect::PubRel(p));
                out.push(Packet::PubRec(PubResp::new(pid(p), ReasonCode::SUCCESS)));
            }
        }
        for packet in out {
            self.cl.send(&client, &packet);
        }
    }

    fn ping(&mut self, k: usize) {
        self.trace("ping", k);
        let c = &mut self.conns[k];
        c.expect.insert(Expect::PingResp);
        let client = c.client.handle();
        self.cl.send(&client, &Packet::PingReq);
    }

    fn disconnect(&mut self, k: usize, clean: bool) {
        let client = self.conns[k].client.handle();
        if clean {
            let d = Disconnect {
                reason_code: ReasonCode::SUCCESS,
                properties: Default::default(),
            };
            self.cl.send(&client, &Packet::Disconnect(d));
        }
        self.cl.drop_conn(&client);
        self.conns[k].dead = true;
    }

    /// Reads what the server sent to every open connection, answers deliveries by each
    /// connection's policy (at once or later), until nothing moves; then every expectation of
    /// an open connection must be met.
    fn settle(&mut self, step: usize) {
        for _ in 0..20 {
            let mut sent = false;
            for k in 0..self.conns.len() {
                if self.conns[k].dead {
                    continue;
                }
                if self.cl.is_closing(&self.conns[k].client) {
                    // Closed by the server (taken over): what it wrote last is read, then the
                    // runtime releases the connection.
                    let c = &mut self.conns[k];
                    for p in self.cl.recv(&mut c.client) {
                        assert!(
                            matches!(p, Packet::Disconnect(ref d) if d.reason_code == ReasonCode::SESSION_TAKEN_OVER)
                                || !matches!(p, Packet::Disconnect(_)),
                            "seed {}: {p:?}",
                            self.seed
                        );
                    }
                    let client = c.client.handle();
                    self.cl.drop_conn(&client);
                    self.conns[k].dead = true;
                    continue;
                }
                let packets = {
                    let c = &mut self.conns[k];
                    self.cl.recv(&mut c.client)
                };
                for packet in packets {
                    sent |= self.on_packet(k, packet, step);
                }
            }
            if !sent {
                break;
            }
        }
        for (k, c) in self.conns.iter().enumerate() {
            if !self.is_open(k) {
                continue;
            }
            assert!(
                c.expect.is_empty(),
                "seed {} step {step}: c{} (shard {}) still waits for {:?}",
                self.seed,
                c.id,
                c.client.shard,
                c.expect
            );
        }
    }

    /// Handles one packet from the server; `true` if it sent an answer.
    fn on_packet(&mut self, k: usize, packet: Packet, step: usize) -> bool {
        let seed = self.seed;
        if std::env::var("TRACE").is_ok() {
            eprintln!(
                "  step {step} conn {k} (c{}) <- {packet:?}",
                self.conns[k].id
            );
        }
        let answer_now = self.rng.below(3) != 0;
        let c = &mut self.conns[k];
        let met = |c: &mut Conn, e: Expect| {
            assert!(
                c.expect.remove(&e),
                "seed {seed} step {step}: c{} got {e:?} it did not wait for",
                c.id
            );
        };
        match packet {
            Packet::SubAck(a) => met(c, Expect::SubAck(a.packet_id.get())),
            Packet::PubRec(a) => {
                met(c, Expect::PubRec(a.packet_id.get()));
                assert!(
                    matches!(
                        a.reason_code,
                        ReasonCode::SUCCESS | ReasonCode::NO_MATCHING_SUBSCRIBERS
                    ),
                    "seed {seed}: PUBREC {:?}",
                    a.reason_code
                );
                if answer_now {
                    c.expect.insert(Expect::PubComp(a.packet_id.get()));
                    let client = c.client.handle();
                    let rel = Packet::PubRel(PubResp::new(a.packet_id, ReasonCode::SUCCESS));
                    self.cl.send(&client, &rel);
                    return true;
                }
                c.unreleased.push(a.packet_id.get());
            }
            Packet::PubComp(a) => met(c, Expect::PubComp(a.packet_id.get())),
            Packet::PingResp => met(c, Expect::PingResp),
            Packet::Publish(p) => {
                if let QosPid::ExactlyOnce(p) = p.qos_pid {
                    if answer_now {
                        c.expect.insert(Expect::PubRel(p.get()));
                        let client = c.client.handle();
                        let rec = Packet::PubRec(PubResp::new(p, ReasonCode::SUCCESS));
                        self.cl.send(&client, &rec);
                        return true;
                    }
                    if !c.unacked.contains(&p.get()) {
                        c.unacked.push(p.get());
                    }
                }
            }
            Packet::PubRel(a) => {
                // A resumed session may resend PUBREL for a delivery we acknowledged on an
                // earlier connection: expected or not, it is answered.
                c.expect.remove(&Expect::PubRel(a.packet_id.get()));
                if answer_now {
                    let client = c.client.handle();
                    let comp = Packet::PubComp(PubResp::new(a.packet_id, ReasonCode::SUCCESS));
                    self.cl.send(&client, &comp);
                    return true;
                }
                c.uncompleted.push(a.packet_id.get());
            }
            Packet::Disconnect(d) => {
                assert_eq!(
                    d.reason_code,
                    ReasonCode::SESSION_TAKEN_OVER,
                    "seed {seed} step {step}: c{} disconnected by the server",
                    c.id
                );
            }
            other => panic!("seed {seed} step {step}: unexpected {other:?}"),
        }
        false
    }
}

use std::num::NonZeroU16;

#[test]
fn every_qos2_request_gets_its_answer() {
    for seed in 1..=24u64 {
        let shards = 1 + (seed % 3) as usize;
        let mut w = World {
            cl: Cluster::new(shards),
            rng: Rng::new(seed),
            conns: Vec::new(),
            newest: HashMap::new(),
            seed,
        };
        for step in 0..400 {
            w.step(step);
        }
    }
}
