#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Routing benchmarks: the subscription trie on the publish path and the retained store on the
//! subscribe path, at 10 000 filters / topics shaped like a device fleet
//! (`fleet/{region}/{device}/telemetry/{sensor}`).
//!
//! Run: `cargo bench -p ringmq --bench routing -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringmq::shard::retain::{MemoryRetainStore, RetainStore};
use ringmq::shard::trie::FilterTrie;

const REGIONS: [&str; 8] = [
    "eu-west",
    "eu-central",
    "us-east",
    "us-west",
    "ap-south",
    "ap-east",
    "sa-east",
    "af-south",
];
const SENSORS: [&str; 5] = ["temp", "humidity", "pressure", "battery", "gps"];
const DEVICES: usize = 2000;

fn region(device: usize) -> &'static str {
    REGIONS[device % REGIONS.len()]
}

fn device_topic(device: usize, sensor: &str) -> String {
    format!(
        "fleet/{}/dev-{device:05}/telemetry/{sensor}",
        region(device)
    )
}

/// 10 000 distinct filters: 6 000 exact, 2 040 with `+`, 1 960 ending in `#`. No filter starts
/// with a wildcard, so a topic outside the fleet matches nothing.
fn fleet_filters() -> Vec<String> {
    let mut filters = Vec::with_capacity(10_000);
    // Exact: three sensors of every device.
    for device in 0..DEVICES {
        for sensor in &SENSORS[..3] {
            filters.push(device_topic(device, sensor));
        }
    }
    // `+`: per-device dashboards and per-region sensor views.
    for device in 0..DEVICES {
        filters.push(format!("fleet/+/dev-{device:05}/telemetry/+"));
    }
    for region in REGIONS {
        for sensor in SENSORS {
            filters.push(format!("fleet/{region}/+/telemetry/{sensor}"));
        }
    }
    // `#`: everything of one device.
    for device in 0..1960 {
        filters.push(format!("fleet/{}/dev-{device:05}/#", region(device)));
    }
    filters
}

fn filter_trie(filters: &[String]) -> FilterTrie<u32> {
    let mut trie = FilterTrie::new();
    for (i, filter) in filters.iter().enumerate() {
        trie.get_or_insert_with(filter.as_bytes(), || i as u32);
    }
    trie
}

fn count_matches(trie: &FilterTrie<u32>, topic: &[u8]) -> usize {
    let mut n = 0;
    trie.for_each_match(topic, |v| {
        black_box(v);
        n += 1;
    });
    n
}

fn bench_trie(c: &mut Criterion) {
    let filters = fleet_filters();
    let mut trie = filter_trie(&filters);
    assert_eq!(trie.len(), 10_000);

    // Matched by its exact filter, `fleet/+/dev-00042/telemetry/+`,
    // `fleet/us-east/+/telemetry/temp` and `fleet/us-east/dev-00042/#`.
    let hit = device_topic(42, "temp");
    // Walks into the fleet (region, `+` branch, device) but matches nothing.
    let miss = format!("fleet/{}/dev-09999/status/online", region(42));
    assert_eq!(count_matches(&trie, hit.as_bytes()), 4);
    assert_eq!(count_matches(&trie, miss.as_bytes()), 0);
    assert_eq!(count_matches(&trie, b"factory/line-3/press-7/vibration"), 0);

    let mut group = c.benchmark_group("trie_10k");
    group.throughput(Throughput::Elements(1));
    group.bench_function("match_hit_4", |b| {
        b.iter(|| count_matches(&trie, black_box(hit.as_bytes())))
    });
    group.bench_function("match_miss_deep", |b| {
        b.iter(|| count_matches(&trie, black_box(miss.as_bytes())))
    });
    group.bench_function("match_miss_first_level", |b| {
        b.iter(|| count_matches(&trie, black_box(b"factory/line-3/press-7/vibration")))
    });

    // A subscribe followed by its unsubscribe, on the 10 000-filter trie.
    let exact_new = device_topic(4242, "gps");
    let wildcard_new = "fleet/+/dev-04242/+/gps".to_string();
    for (name, filter) in [
        ("insert_remove_exact", &exact_new),
        ("insert_remove_plus", &wildcard_new),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                trie.get_or_insert_with(black_box(filter.as_bytes()), || 7);
                black_box(trie.remove(filter.as_bytes()))
            })
        });
    }
    // An existing filter: a second subscriber to it finds the node, nothing is created.
    let existing = device_topic(42, "temp");
    group.bench_function("get_or_insert_existing", |b| {
        b.iter(|| *trie.get_or_insert_with(black_box(existing.as_bytes()), || 7))
    });
    group.finish();
    assert_eq!(trie.len(), 10_000);
}

fn bench_retain(c: &mut Criterion) {
    let mut store = MemoryRetainStore::new(10_000);
    for device in 0..DEVICES {
        for sensor in SENSORS {
            let topic = device_topic(device, sensor);
            assert!(
                store.set(topic.as_bytes(), topic.len()).is_ok(),
                "store bound too small"
            );
        }
    }
    assert_eq!(store.len(), 10_000);

    let mut group = c.benchmark_group("retain_10k");
    let cases: [(&str, &str, u64); 5] = [
        ("hash_all", "#", 10_000),
        ("hash_region", "fleet/eu-west/#", 1_250),
        ("plus_sensor", "fleet/+/+/telemetry/temp", 2_000),
        ("plus_device", "fleet/+/dev-00042/telemetry/+", 5),
        ("exact", "fleet/us-east/dev-00042/telemetry/temp", 1),
    ];
    for (name, filter, expect) in cases {
        let mut n = 0u64;
        store.for_each_matching(filter.as_bytes(), &mut |_, _| n += 1);
        assert_eq!(n, expect, "{filter}");
        // Throughput in messages, so the report shows the cost per delivered message too.
        group.throughput(Throughput::Elements(expect));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut sum = 0usize;
                store.for_each_matching(black_box(filter.as_bytes()), &mut |topic, m| {
                    sum += topic.len() + m;
                });
                sum
            })
        });
    }
    group.finish();
}

/// Cross-shard hand-off: one `ShardMsg::Deliver` (a 64-byte message, shared `Bytes`) pushed
/// into a shard's inbox and popped on the other side, in batches of 64 as a loop turn does.
fn bench_mesh(c: &mut Criterion) {
    use bytes::Bytes;
    use ringmq::proto::message::Message;
    use ringmq::shard::mesh::{Mesh, ShardMsg};
    use ringmq_codec::{PublishProperties, QoS, Str};
    let mesh = Mesh::new(2, 4096);
    let message = Message {
        topic: Str::from_static("fleet/truck-17/telemetry"),
        payload: Bytes::from_static(&[7u8; 64]),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: None,
        origin: Bytes::from_static(b"publisher"),
        published_at: None,
    };
    let mut group = c.benchmark_group("mesh");
    group.throughput(Throughput::Elements(64));
    group.bench_function("deliver_handoff_batch_64", |b| {
        b.iter(|| {
            for _ in 0..64 {
                let msg = ShardMsg::Deliver {
                    message: message.clone(),
                    targets: 0b10,
                    stamp: ringmq::shard::mesh::Stamp {
                        from: ringmq::proto::ShardId::from_slot(0),
                        seq: 1,
                    },
                };
                if mesh.push(0, 1, black_box(msg)).is_err() {
                    panic!("inbox full");
                }
            }
            mesh.wake(1);
            let mut n = 0;
            while let Some(m) = mesh.pop(1) {
                black_box(&m);
                n += 1;
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, bench_trie, bench_retain, bench_mesh);
criterion_main!(benches);
