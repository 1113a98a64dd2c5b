//! CONNECT → CONNACK through one shard core when an off-shard source (webhook, password
//! file) decides it from the shard's cache, next to the same CONNECT the embedded default
//! admits without credentials. Each iteration: accept, CONNECT, CONNACK drained, close,
//! release. The pool's side (a webhook call, a PBKDF2 check) is not here: see
//! `ringmq-auth`'s `passwd` bench for the hash itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use ringmq::config::Limits;
use ringmq::config::auth_sources::DEFAULT_ORDER;
use ringmq::proto::authn_external::{AuthOutcome, ExternalConfig};
use ringmq::proto::{Handled, Input, Now, ShardCore};
use ringmq::shard::mesh::Mesh;
use ringmq_auth::{Identity, Method};
use ringmq_codec::*;

fn connect_bytes(user: Option<&str>) -> BytesMut {
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive_secs: 0,
        properties: ConnectProperties::default(),
        client_id: Str::copy_from("bench-client").unwrap(),
        will: None,
        username: user.map(|u| Str::copy_from(u).unwrap()),
        password: user.map(|_| Bytes::from_static(b"secret")),
    };
    let mut b = BytesMut::new();
    encode(
        &Packet::Connect(Box::new(connect)),
        ProtocolVersion::V5,
        &mut b,
    )
    .unwrap();
    b
}

/// One connection's whole life; returns the CONNACK's reason code byte.
fn cycle(core: &mut ShardCore, frame: &BytesMut, now: Now) -> u8 {
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let Handled::Accepted(token) = core.handle(Input::Accept { listener: 0, peer }, now) else {
        panic!("refused");
    };
    let mut b = frame.clone();
    let _ = core.handle(
        Input::Read {
            conn: token.conn,
            bytes: &mut b,
        },
        now,
    );
    if let Some(ticket) = core.poll_auth_request().map(|r| r.ticket) {
        // Cache miss (the first iteration only): answer as the pool would.
        let outcome = AuthOutcome::Allow(Box::new(Identity {
            method: Method::Webhook,
            ..Identity::anonymous("bench")
        }));
        let _ = core.handle(Input::AuthResult { ticket, outcome }, now);
    }
    let mut spare = BytesMut::new();
    let mut code = 0xff;
    if let Some(conn) = core.conn_mut(token.conn)
        && let Some(out) = conn.take_output(&mut spare)
    {
        code = match out {
            ringmq::proto::conn::Output::Buffer(b) => b[3],
            ringmq::proto::conn::Output::Frame(b) => b[3],
        };
    }
    let _ = core.handle(Input::Closed(token.conn), now);
    let _ = core.handle(Input::Release(token.conn), now);
    code
}

fn core(external: Option<(bool, bool)>) -> ShardCore {
    let mesh = Mesh::new(1, 1024);
    let mut core = ShardCore::new(
        0,
        Some(mesh),
        Limits::default(),
        ringmq_auth::SharedSnapshot::new(ringmq_auth::Snapshot::allow_all()),
    );
    if let Some((webhook, password_file)) = external {
        core.set_external_auth(Arc::new(ExternalConfig {
            order: DEFAULT_ORDER.to_vec(),
            webhook,
            password_file,
            max_pending: 1024,
            cache_capacity: 1024,
            webhook_cache_ttl: Duration::from_secs(3600),
            password_generation: Arc::default(),
        }));
    }
    core
}

fn bench(c: &mut Criterion) {
    let now = Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    };
    let mut group = c.benchmark_group("connect");
    let cases = [
        ("anonymous (no external source)", None, None),
        ("webhook, cache hit", Some((true, false)), Some("alice")),
        (
            "password file, cache hit",
            Some((false, true)),
            Some("alice"),
        ),
    ];
    for (name, external, user) in cases {
        let mut core = core(external);
        let frame = connect_bytes(user);
        assert_eq!(cycle(&mut core, &frame, now), 0, "{name}: CONNACK success");
        group.bench_function(name, |b| b.iter(|| cycle(&mut core, &frame, now)));
        if external.is_some() {
            let (_, hits, misses) = core.external_auth_counts();
            assert_eq!(
                misses, 1,
                "{name}: only the first CONNECT missed ({hits} hits)"
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
