//! Authorization checks: the per-PUBLISH check against 20 expanded filters (cache miss with a
//! match, cache miss without one, cache hit), a SUBSCRIBE check, and compiling a session's
//! permissions for a client in 5 groups.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ringmq_auth::authz::{Policy, parse_policy};
use ringmq_auth::{AttrValue, Identity};
use serde_json::json;

/// 5 groups, each bound (Publisher and Subscriber) to its own topic space of 4 templates:
/// 20 expanded filters per action for a client in every group.
fn policy() -> Policy {
    let groups: Vec<_> = (0..5)
        .map(|g| json!({ "name": format!("g{g}"), "query": format!("attributes.type = 'truck' AND attributes.year >= {}", 2000 + g) }))
        .collect();
    let spaces: Vec<_> = (0..5)
        .map(|s| {
            json!({ "name": format!("s{s}"), "topicTemplates": [
                format!("fleet{s}/${{client.attributes.zone}}/${{client.authenticationName}}/telemetry/#"),
                format!("fleet{s}/${{client.attributes.zone}}/${{client.authenticationName}}/status"),
                format!("fleet{s}/+/broadcast/${{client.attributes.zone}}"),
                format!("cmd{s}/${{client.authenticationName}}/+/reply"),
            ]})
        })
        .collect();
    let mut bindings = Vec::new();
    for i in 0..5 {
        for perm in ["Publisher", "Subscriber"] {
            bindings.push(json!({ "name": format!("b{i}{perm}"), "clientGroupName": format!("g{i}"), "topicSpaceName": format!("s{i}"), "permission": perm }));
        }
    }
    let root =
        json!({ "clientGroups": groups, "topicSpaces": spaces, "permissionBindings": bindings });
    match parse_policy(&root, &mut Vec::new()) {
        Ok(p) => p,
        Err(e) => panic!("bench policy: {e}"),
    }
}

fn identity() -> Identity {
    let mut id = Identity::anonymous("truck-17");
    id.attributes
        .insert("type".into(), AttrValue::String("truck".into()));
    id.attributes
        .insert("year".into(), AttrValue::Integer(2023));
    id.attributes
        .insert("zone".into(), AttrValue::String("eu".into()));
    id
}

fn bench(c: &mut Criterion) {
    let policy = policy();
    let id = identity();
    let perms = policy.permissions(&id);
    assert_eq!(perms.publish_filters().count(), 20);

    // Distinct topics, many more than the cache's slots, so nearly every check is a miss.
    let hits: Vec<Vec<u8>> = (0..1024)
        .map(|i| format!("fleet4/eu/truck-17/telemetry/engine/{i}").into_bytes())
        .collect();
    let misses: Vec<Vec<u8>> = (0..1024)
        .map(|i| format!("fleet4/eu/truck-18/telemetry/engine/{i}").into_bytes())
        .collect();
    let mut i = 0usize;
    c.bench_function("authz/allow_publish/miss_allowed_20_filters", |b| {
        b.iter(|| {
            i = (i + 1) % hits.len();
            black_box(perms.allow_publish(black_box(&hits[i])))
        })
    });
    c.bench_function("authz/allow_publish/miss_denied_20_filters", |b| {
        b.iter(|| {
            i = (i + 1) % misses.len();
            black_box(perms.allow_publish(black_box(&misses[i])))
        })
    });
    let topic = b"fleet4/eu/truck-17/telemetry/engine/rpm";
    c.bench_function("authz/allow_publish/cached", |b| {
        b.iter(|| black_box(perms.allow_publish(black_box(topic))))
    });
    c.bench_function("authz/allow_subscribe/20_filters", |b| {
        b.iter(|| {
            black_box(perms.allow_subscribe(black_box(b"fleet4/eu/truck-17/telemetry/+/rpm")))
        })
    });
    c.bench_function("authz/permissions/5_groups_20_filters", |b| {
        b.iter(|| black_box(policy.permissions(black_box(&id))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
