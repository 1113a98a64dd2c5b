//! The ACL file's checks (docs/benchmarks.md, "ACL file check"): the per-PUBLISH check of a
//! session whose user section has 20 lines (2 of them `deny`) and 5 patterns, from the
//! session's decision cache and without it (distinct topics, allowed and denied), a SUBSCRIBE
//! check, and compiling a session's ACL at CONNECT in a file of 1 000 users.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ringmq_auth::acl::AclFile;
use ringmq_auth::{AuthFiles, Identity, Snapshot};

fn acl_text() -> String {
    let mut t = String::from("topic read public/#\n");
    for u in 0..1000 {
        t.push_str(&format!("user user{u}\n"));
        for l in 0..18 {
            t.push_str(&format!("topic readwrite site{l}/user{u}/+/data/#\n"));
        }
        t.push_str(&format!("topic deny site0/user{u}/locked/#\n"));
        t.push_str(&format!("topic deny site1/user{u}/locked/#\n"));
    }
    for p in 0..5 {
        t.push_str(&format!("pattern readwrite devices{p}/%c/#\n"));
    }
    t
}

fn bench(c: &mut Criterion) {
    let acl = AclFile::parse(&acl_text(), &mut Vec::new()).unwrap();
    let snapshot = Snapshot {
        files: AuthFiles {
            acl: Some(acl),
            client_ca: None,
        },
        ..Snapshot::allow_all()
    };
    let id = Identity::anonymous("truck-17");
    let perms = snapshot.session_permissions(&id, "truck-17", Some("user500"));

    // Distinct topics, many more than the cache's slots, so nearly every check is a miss.
    let allowed: Vec<Vec<u8>> = (0..1024)
        .map(|i| format!("site17/user500/t{i}/data/rpm").into_bytes())
        .collect();
    let pattern: Vec<Vec<u8>> = (0..1024)
        .map(|i| format!("devices4/truck-17/{i}").into_bytes())
        .collect();
    let denied: Vec<Vec<u8>> = (0..1024)
        .map(|i| format!("site17/user501/t{i}/data/rpm").into_bytes())
        .collect();
    assert!(perms.allow_publish(&allowed[0]) && perms.allow_publish(&pattern[0]));
    assert!(!perms.allow_publish(&denied[0]));
    let mut i = 0usize;
    c.bench_function("acl/allow_publish/uncached_allowed_user_line", |b| {
        b.iter(|| {
            i = (i + 1) % allowed.len();
            black_box(perms.allow_publish(black_box(&allowed[i])))
        })
    });
    c.bench_function("acl/allow_publish/uncached_allowed_pattern", |b| {
        b.iter(|| {
            i = (i + 1) % pattern.len();
            black_box(perms.allow_publish(black_box(&pattern[i])))
        })
    });
    c.bench_function("acl/allow_publish/uncached_denied", |b| {
        b.iter(|| {
            i = (i + 1) % denied.len();
            black_box(perms.allow_publish(black_box(&denied[i])))
        })
    });
    let topic = b"site17/user500/t1/data/rpm";
    c.bench_function("acl/allow_publish/cached", |b| {
        b.iter(|| black_box(perms.allow_publish(black_box(topic))))
    });
    c.bench_function("acl/allow_subscribe/user_section", |b| {
        b.iter(|| black_box(perms.allow_subscribe(black_box(b"site0/user500/+/data/#"))))
    });
    c.bench_function("acl/session_permissions/1000_users_5_patterns", |b| {
        b.iter(|| {
            black_box(snapshot.session_permissions(black_box(&id), "truck-17", Some("user500")))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
