//! Codec micro-benchmarks (criterion): PUBLISH decode/encode, the per-subscriber PUBLISH
//! header, CONNECT and SUBSCRIBE, and the topic utilities.
//!
//! Decode iterations are shaped like the connection's read loop: the frame's bytes are
//! appended to a receive buffer (`extend_from_slice`, as a socket read would land them), then
//! `decode` splits the frame off, freezes it and returns a packet whose fields are slices of
//! it; the packet is dropped before the next iteration, so the buffer's allocation is reused
//! as it is in the broker. The copy into the buffer is part of the measured time.
//!
//! Run: `cargo bench -p ringmq-codec --bench codec -- --warm-up-time 1 --measurement-time 3`.

// Bench setup builds known-good packets; a failure there is a bug in the bench, not input.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringmq_codec::topic::{filter_contains, matches, validate_topic_filter, validate_topic_name};
use ringmq_codec::{
    Connect, ConnectProperties, Limits, Packet, ProtocolVersion, Publish, PublishHeader,
    PublishProperties, QoS, QosPid, RetainHandling, Str, Subscribe, SubscribeFilter,
    SubscriptionOptions, UserProperties, Will, WillProperties, decode, encode,
};

const TOPIC: &str = "sensors/building-7/floor-3/room-12/temperature";

const VERSIONS: [(&str, ProtocolVersion); 2] = [
    ("v5", ProtocolVersion::V5),
    ("v3.1.1", ProtocolVersion::V3_1_1),
];

fn publish(payload_len: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: Str::from_static(TOPIC),
        properties: PublishProperties::default(),
        payload: Bytes::from(vec![0x5a; payload_len]),
    })
}

fn connect_v5() -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive_secs: 60,
        properties: ConnectProperties {
            session_expiry_secs: Some(3600),
            receive_maximum: NonZeroU16::new(100),
            maximum_packet_size: NonZeroU32::new(1 << 20),
            topic_alias_maximum: Some(16),
            request_problem_information: Some(true),
            user_properties: UserProperties::from_pairs([("site", "berlin"), ("fw", "1.4.2")])
                .expect("user properties"),
            ..ConnectProperties::default()
        },
        client_id: Str::from_static("device-0042-7f3a"),
        will: Some(Will {
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: Str::from_static("devices/device-0042-7f3a/status"),
            payload: Bytes::from_static(b"offline"),
            properties: WillProperties {
                will_delay_secs: Some(10),
                payload_format_utf8: Some(true),
                content_type: Some(Str::from_static("text/plain")),
                ..WillProperties::default()
            },
        }),
        username: Some(Str::from_static("device-0042")),
        password: Some(Bytes::from_static(b"s3cr3t-t0ken-0123456789abcdef")),
    }))
}

fn subscribe_v5() -> Packet {
    let options = |qos, no_local| SubscriptionOptions {
        qos,
        no_local,
        retain_as_published: false,
        retain_handling: RetainHandling::SendAtSubscribe,
    };
    let filters = [
        (
            "sensors/+/floor-3/+/temperature",
            options(QoS::AtMostOnce, false),
        ),
        ("alerts/#", options(QoS::AtLeastOnce, true)),
        ("$share/workers/jobs/+", options(QoS::AtLeastOnce, false)),
        (
            "devices/device-0042-7f3a/cmd",
            options(QoS::ExactlyOnce, true),
        ),
        ("status/+/+/online", options(QoS::AtMostOnce, false)),
    ];
    Packet::Subscribe(Subscribe {
        packet_id: NonZeroU16::MIN,
        subscription_id: NonZeroU32::new(7),
        user_properties: UserProperties::default(),
        filters: filters
            .into_iter()
            .map(|(filter, options)| SubscribeFilter {
                filter: Str::from_static(filter),
                options,
            })
            .collect(),
    })
}

fn encoded(packet: &Packet, version: ProtocolVersion) -> Bytes {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out).expect("encode");
    out.freeze()
}

/// Benchmarks decoding `frame` the way the read loop does (see the module comment).
fn bench_decode(
    c: &mut Criterion,
    group: &str,
    id: BenchmarkId,
    frame: &Bytes,
    version: ProtocolVersion,
) {
    let limits = Limits::default();
    // Check once, outside the measurement, that the frame decodes to a packet.
    let mut check = BytesMut::from(&frame[..]);
    assert!(
        matches!(decode(&mut check, &limits, version), Ok(Some(_))),
        "{group}: the bench frame does not decode"
    );
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function(id, |b| {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        b.iter(|| {
            buf.extend_from_slice(frame);
            let packet = decode(&mut buf, &limits, version);
            black_box(packet)
        })
    });
    g.finish();
}

fn bench_encode(
    c: &mut Criterion,
    group: &str,
    id: BenchmarkId,
    packet: &Packet,
    version: ProtocolVersion,
) {
    let len = encoded(packet, version).len();
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function(id, |b| {
        let mut out = BytesMut::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            let result = encode(black_box(packet), version, &mut out);
            black_box((result, out.len()))
        })
    });
    g.finish();
}

fn publish_benches(c: &mut Criterion) {
    for (name, version) in VERSIONS {
        for payload_len in [64, 1024] {
            let packet = publish(payload_len);
            let frame = encoded(&packet, version);
            let id = BenchmarkId::new(name, format!("{payload_len}B"));
            bench_decode(c, "decode_publish_qos0", id.clone(), &frame, version);
            bench_encode(c, "encode_publish_qos0", id, &packet, version);
        }
    }
    // The part of a decode iteration that is not the codec: appending the frame to the receive
    // buffer, splitting it off and freezing it, dropping it. Subtract it to see decode alone.
    let mut g = c.benchmark_group("buffer_refill_split_only");
    for payload_len in [64, 1024] {
        let frame = encoded(&publish(payload_len), ProtocolVersion::V3_1_1);
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(format!("{payload_len}B"), |b| {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            b.iter(|| {
                buf.extend_from_slice(&frame);
                black_box(buf.split_to(frame.len()).freeze())
            })
        });
    }
    g.finish();
}

fn publish_header_benches(c: &mut Criterion) {
    let forwarded = PublishProperties {
        payload_format_utf8: Some(true),
        content_type: Some(Str::from_static("application/json")),
        user_properties: UserProperties::from_pairs([("trace", "4bf92f3577b34da6")])
            .expect("user properties"),
        ..PublishProperties::default()
    };
    let sub_ids = [NonZeroU32::MIN.saturating_add(41)];
    let plain = PublishHeader {
        dup: false,
        qos_pid: QosPid::AtLeastOnce(NonZeroU16::MIN.saturating_add(9)),
        retain: false,
        topic: TOPIC.as_bytes(),
        topic_alias: None,
        message_expiry_secs: None,
        subscription_ids: &[],
        forwarded: None,
    };
    let rich = PublishHeader {
        subscription_ids: &sub_ids,
        message_expiry_secs: Some(300),
        forwarded: Some(&forwarded),
        ..plain
    };
    let cases = [
        ("v3.1.1", ProtocolVersion::V3_1_1, plain),
        ("v5", ProtocolVersion::V5, plain),
        (
            "v5_sub_id_expiry_forwarded_props",
            ProtocolVersion::V5,
            rich,
        ),
    ];
    let mut g = c.benchmark_group("publish_header_encode");
    for (name, version, header) in cases {
        g.bench_function(name, |b| {
            let mut out = BytesMut::with_capacity(4096);
            b.iter(|| {
                out.clear();
                let result = black_box(&header).encode(version, 1024, &mut out);
                black_box((result, out.len()))
            })
        });
    }
    g.finish();
}

fn control_benches(c: &mut Criterion) {
    let v5 = ProtocolVersion::V5;
    let connect = connect_v5();
    let frame = encoded(&connect, v5);
    bench_decode(
        c,
        "connect_v5_props",
        BenchmarkId::from_parameter("decode"),
        &frame,
        v5,
    );
    bench_encode(
        c,
        "connect_v5_props",
        BenchmarkId::from_parameter("encode"),
        &connect,
        v5,
    );
    let subscribe = subscribe_v5();
    let frame = encoded(&subscribe, v5);
    bench_decode(
        c,
        "subscribe_v5_5_filters",
        BenchmarkId::from_parameter("decode"),
        &frame,
        v5,
    );
    bench_encode(
        c,
        "subscribe_v5_5_filters",
        BenchmarkId::from_parameter("encode"),
        &subscribe,
        v5,
    );
}

fn topic_benches(c: &mut Criterion) {
    let topic = TOPIC.as_bytes();
    let match_cases: [(&str, &[u8]); 5] = [
        ("literal_hit", topic),
        ("plus_hit", b"sensors/+/floor-3/+/temperature"),
        ("hash_hit", b"sensors/building-7/#"),
        ("miss_at_level_1", b"alerts/#"),
        (
            "miss_at_last_level",
            b"sensors/building-7/floor-3/room-12/humidity",
        ),
    ];
    let mut g = c.benchmark_group("topic_matches");
    for (name, filter) in match_cases {
        assert_eq!(matches(filter, topic), name.ends_with("hit"), "{name}");
        g.bench_function(name, |b| {
            b.iter(|| matches(black_box(filter), black_box(topic)))
        });
    }
    g.finish();

    let contain_cases: [(&str, &[u8], &[u8], bool); 4] = [
        (
            "hash_over_plus",
            b"sensors/#",
            b"sensors/+/floor-3/+/temperature",
            true,
        ),
        ("equal_literal", topic, topic, true),
        (
            "plus_vs_hash",
            b"sensors/+/+/+/+",
            b"sensors/building-7/#",
            false,
        ),
        ("dollar_rule", b"#", b"$SYS/broker/clients/+", false),
    ];
    let mut g = c.benchmark_group("topic_filter_contains");
    for (name, outer, inner, expected) in contain_cases {
        assert_eq!(filter_contains(outer, inner), expected, "{name}");
        g.bench_function(name, |b| {
            b.iter(|| filter_contains(black_box(outer), black_box(inner)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("topic_validate");
    g.bench_function("name", |b| b.iter(|| validate_topic_name(black_box(topic))));
    let filter: &[u8] = b"$share/workers/sensors/+/floor-3/+/temperature";
    g.bench_function("shared_filter", |b| {
        b.iter(|| validate_topic_filter(black_box(filter)))
    });
    g.finish();
}

criterion_group!(
    benches,
    publish_benches,
    publish_header_benches,
    control_benches,
    topic_benches
);
criterion_main!(benches);
