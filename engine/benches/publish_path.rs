//! The publish → route → deliver path without sockets, for instruction counts and timing.
//!
//! Two shard cores joined by the real mesh: a publisher on shard 0, a subscriber on shard 0
//! and one on shard 1. Each iteration feeds one encoded QoS 0 PUBLISH (64-byte payload) to
//! shard 0, hands the cross-shard copy over the mesh, and drains both subscribers' output as
//! the writer tasks would. Run it plainly for ns/message, or under callgrind for a count that
//! does not depend on the machine's load:
//!
//! ```sh
//! cargo bench -p ringmq --bench publish_path --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!   target/release/deps/publish_path-* 20000
//! ```
//! and divide the reported `Collected` instructions (minus those of a run with 0 messages) by
//! the message count; `ringmq-bench`'s `docs/benchmarks.md` section records the figure.
//! A second argument `quotas` turns on the publish rate and bandwidth quotas (too high to
//! trip), to see what their token buckets cost per message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use ringmq::config::Limits;
use ringmq::proto::{ConnId, Handled, Input, Now, ShardCore};
use ringmq::shard::mesh::Mesh;
use ringmq_codec::*;

fn connect(core: &mut ShardCore, id: &str, now: Now) -> ConnId {
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let Handled::Accepted(token) = core.handle(Input::Accept { listener: 0, peer }, now) else {
        panic!("refused");
    };
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive_secs: 0,
        properties: ConnectProperties::default(),
        client_id: Str::copy_from(id).unwrap(),
        will: None,
        username: None,
        password: None,
    };
    let mut b = BytesMut::new();
    encode(
        &Packet::Connect(Box::new(connect)),
        ProtocolVersion::V5,
        &mut b,
    )
    .unwrap();
    let _ = core.handle(
        Input::Read {
            conn: token.conn,
            bytes: &mut b,
        },
        now,
    );
    token.conn
}

fn drain(core: &mut ShardCore, index: ConnId, spare: &mut BytesMut) -> usize {
    let conn = core.conn_mut(index).unwrap();
    let mut n = 0;
    while let Some(out) = conn.take_output(spare) {
        if let ringmq::proto::conn::Output::Buffer(mut b) = out {
            n += b.len();
            b.clear();
            *spare = b;
        }
    }
    n
}

fn pump(cores: &mut [ShardCore], mesh: &Mesh, now: Now) {
    for _ in 0..4 {
        for c in cores.iter_mut() {
            let _ = c.handle(Input::Inbox { max: usize::MAX }, now);
        }
    }
    assert!((0..cores.len()).all(|i| mesh.len(i) == 0), "mesh settled");
}

fn main() {
    let messages: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let limits = match std::env::args().nth(2).as_deref() {
        Some("quotas") => Limits {
            max_publish_rate: u32::MAX,
            max_publish_bandwidth: u32::MAX,
            ..Limits::default()
        },
        _ => Limits::default(),
    };
    let mesh = Mesh::new(2, 4096);
    let auth = ringmq_auth::SharedSnapshot::new(ringmq_auth::Snapshot::allow_all());
    let mut cores: Vec<ShardCore> = (0..2)
        .map(|i| ShardCore::new(i, Some(mesh.clone()), limits.clone(), auth.clone()))
        .collect();
    let now = Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    };
    let publisher = connect(&mut cores[0], "pub", now);
    let subs = [
        (0usize, connect(&mut cores[0], "sub0", now)),
        (1usize, connect(&mut cores[1], "sub1", now)),
    ];
    pump(&mut cores, &mesh, now);
    for &(shard, index) in &subs {
        let s = Subscribe {
            packet_id: std::num::NonZeroU16::new(1).unwrap(),
            subscription_id: None,
            user_properties: UserProperties::new(),
            filters: vec![SubscribeFilter {
                filter: Str::from_static("fleet/+/telemetry"),
                options: SubscriptionOptions::default(),
            }],
        };
        let mut b = BytesMut::new();
        encode(&Packet::Subscribe(s), ProtocolVersion::V5, &mut b).unwrap();
        let _ = cores[shard].handle(
            Input::Read {
                conn: index,
                bytes: &mut b,
            },
            now,
        );
    }
    pump(&mut cores, &mesh, now);
    let mut frame = BytesMut::new();
    let publish = Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: Str::from_static("fleet/truck-17/telemetry"),
        properties: PublishProperties::default(),
        payload: Bytes::from_static(&[7u8; 64]),
    };
    encode(&Packet::Publish(publish), ProtocolVersion::V5, &mut frame).unwrap();
    let mut input = BytesMut::with_capacity(4096);
    let mut spare = BytesMut::new();
    let mut delivered = 0usize;
    let started = Instant::now();
    for _ in 0..messages {
        input.extend_from_slice(&frame);
        let _ = cores[0].handle(
            Input::Read {
                conn: publisher,
                bytes: &mut input,
            },
            now,
        );
        let _ = cores[1].handle(Input::Inbox { max: usize::MAX }, now);
        for &(shard, index) in &subs {
            if drain(&mut cores[shard], index, &mut spare) > 0 {
                delivered += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(
        delivered,
        messages * subs.len(),
        "every message delivered to both subscribers"
    );
    if messages > 0 {
        println!(
            "{messages} messages, {delivered} deliveries (one subscriber on the publisher's shard, one across the mesh): {:.0} ns per message",
            elapsed.as_nanos() as f64 / messages as f64
        );
    }
}
