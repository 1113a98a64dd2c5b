//! Authentication decided off the shard (`proto/authn_external.rs`), in process on a fake
//! clock: the test plays the pool — it takes the core's requests and hands back results.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ringmq::config::auth_sources::{DEFAULT_ORDER, Source};
use ringmq::proto::Input;
use ringmq::proto::authn_external::{AuthOutcome, AuthRequest, ExternalConfig, ExternalSource};
use ringmq_auth::{Identity, Method};
use ringmq_codec::*;

fn config(max_pending: usize, generation: Arc<AtomicU64>) -> Arc<ExternalConfig> {
    Arc::new(ExternalConfig {
        order: DEFAULT_ORDER.to_vec(),
        webhook: false,
        password_file: true,
        max_pending,
        cache_capacity: 16,
        webhook_cache_ttl: Duration::from_secs(60),
        password_generation: generation,
    })
}

fn cluster(max_pending: usize) -> (Cluster, Arc<AtomicU64>) {
    let mut c = Cluster::new(1);
    let generation = Arc::new(AtomicU64::new(1));
    c.cores[0].set_external_auth(config(max_pending, generation.clone()));
    (c, generation)
}

fn login(id: &str, version: ProtocolVersion, user: &str, pw: &'static [u8]) -> Connect {
    let mut connect = connect_packet(id, version);
    connect.username = Some(Str::copy_from(user).unwrap());
    connect.password = Some(Bytes::from_static(pw));
    connect
}

/// Opens a connection and sends `connect`; returns what came back at once.
fn start(c: &mut Cluster, connect: Connect) -> (Client, Vec<Packet>) {
    let mut client = c.open(0);
    client.version = connect.protocol;
    c.send(&client, &Packet::Connect(Box::new(connect)));
    let back = c.recv(&mut client);
    (client, back)
}

fn requests(c: &mut Cluster) -> Vec<AuthRequest> {
    std::iter::from_fn(|| c.cores[0].poll_auth_request()).collect()
}

fn allow(user: &str, method: Method) -> AuthOutcome {
    AuthOutcome::Allow(Box::new(Identity {
        method,
        ..Identity::anonymous(user)
    }))
}

fn answer(c: &mut Cluster, ticket: u64, outcome: AuthOutcome) {
    let _ = c.input(0, Input::AuthResult { ticket, outcome });
    c.pump();
}

fn connack(packets: &[Packet]) -> &ConnAck {
    match packets.first() {
        Some(Packet::ConnAck(a)) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn a_parked_connect_holds_its_packets_until_the_pool_answers() {
    let (mut c, _) = cluster(8);
    let (mut client, back) = start(&mut c, login("p1", ProtocolVersion::V5, "alice", b"pw"));
    assert!(
        back.is_empty(),
        "no CONNACK before the pool answered: {back:?}"
    );
    let reqs = requests(&mut c);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].source, ExternalSource::PasswordFile);
    assert_eq!(reqs[0].credentials.credentials().username, Some("alice"));
    // A client may send packets before CONNACK: held (nothing answered yet).
    c.send(&client, &subscribe_packet(pid(1), "t/#", QoS::AtLeastOnce));
    assert!(c.recv(&mut client).is_empty());
    assert_eq!(c.cores[0].external_auth_counts().0, 1);
    answer(&mut c, reqs[0].ticket, allow("alice", Method::PasswordFile));
    let back = c.recv(&mut client);
    assert_eq!(connack(&back).reason_code, ReasonCode::SUCCESS);
    assert!(
        matches!(back.get(1), Some(Packet::SubAck(_))),
        "the held SUBSCRIBE is handled after CONNACK: {back:?}"
    );
    assert_eq!(c.cores[0].external_auth_counts().0, 0);
}

#[test]
fn refusals_carry_their_reason_codes_in_both_versions() {
    let cases = [
        (
            AuthOutcome::BadCredentials("wrong".into()),
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ),
        (AuthOutcome::Deny("no".into()), ReasonCode::NOT_AUTHORIZED),
        (
            AuthOutcome::Unavailable("down".into()),
            ReasonCode::SERVER_UNAVAILABLE,
        ),
    ];
    for version in [ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        for (outcome, code) in &cases {
            let (mut c, _) = cluster(8);
            let (mut client, _) = start(&mut c, login("r", version, "u", b"x"));
            let ticket = requests(&mut c)[0].ticket;
            answer(&mut c, ticket, outcome.clone());
            let back = c.recv(&mut client);
            assert_eq!(connack(&back).reason_code, *code, "{version:?} {outcome:?}");
            assert!(c.is_closing(&client));
        }
    }
}

#[test]
fn over_the_pending_bound_a_connect_is_refused_at_once() {
    let (mut c, _) = cluster(2);
    let _a = start(&mut c, login("a", ProtocolVersion::V5, "a", b"1"));
    let _b = start(&mut c, login("b", ProtocolVersion::V5, "b", b"1"));
    let (client, back) = start(&mut c, login("c", ProtocolVersion::V3_1_1, "c", b"1"));
    assert_eq!(connack(&back).reason_code, ReasonCode::SERVER_UNAVAILABLE);
    assert!(c.is_closing(&client));
    assert_eq!(requests(&mut c).len(), 2);
}

#[test]
fn a_result_for_a_connection_gone_or_timed_out_is_dropped() {
    let (mut c, _) = cluster(8);
    let (gone, _) = start(&mut c, login("g", ProtocolVersion::V5, "g", b"1"));
    let (mut slow, _) = start(&mut c, login("s", ProtocolVersion::V5, "s", b"1"));
    let reqs = requests(&mut c);
    c.drop_conn(&gone);
    // The slot is reused by a new connection: the old ticket must not touch it.
    let (mut reused, _) = start(&mut c, login("n", ProtocolVersion::V5, "n", b"1"));
    let newer = requests(&mut c);
    assert_eq!(reused.index, gone.index, "the slot is reused");
    answer(&mut c, reqs[0].ticket, allow("g", Method::PasswordFile));
    assert!(
        c.recv(&mut reused).is_empty(),
        "a stale result decided nothing"
    );
    // The connect timeout applies while parked.
    c.advance(Duration::from_secs(3600));
    assert!(c.is_closing(&slow));
    answer(&mut c, reqs[1].ticket, allow("s", Method::PasswordFile));
    assert!(c.recv(&mut slow).is_empty());
    answer(&mut c, newer[0].ticket, allow("n", Method::PasswordFile));
    assert_eq!(
        c.cores[0].external_auth_counts().0,
        0,
        "nothing stays parked"
    );
}

#[test]
fn a_successful_password_check_is_reused_until_the_file_reloads() {
    let (mut c, generation) = cluster(8);
    let (_a, _) = start(&mut c, login("c1", ProtocolVersion::V5, "alice", b"pw"));
    let ticket = requests(&mut c)[0].ticket;
    answer(&mut c, ticket, allow("alice", Method::PasswordFile));
    // Same user and password: decided on the shard, at once.
    let (_b, back) = start(&mut c, login("c2", ProtocolVersion::V5, "alice", b"pw"));
    assert_eq!(connack(&back).reason_code, ReasonCode::SUCCESS);
    assert!(requests(&mut c).is_empty());
    // Another password is not in the cache.
    let (_d, back) = start(&mut c, login("c3", ProtocolVersion::V5, "alice", b"other"));
    assert!(back.is_empty());
    assert_eq!(requests(&mut c).len(), 1);
    // The file reloaded: checked again.
    generation.fetch_add(1, Ordering::AcqRel);
    let (_e, back) = start(&mut c, login("c4", ProtocolVersion::V5, "alice", b"pw"));
    assert!(back.is_empty());
    assert_eq!(requests(&mut c).len(), 1);
    let (_p, hits, misses) = c.cores[0].external_auth_counts();
    assert_eq!((hits, misses), (1, 3));
}

#[test]
fn order_puts_anonymous_first_when_asked() {
    let mut c = Cluster::new(1);
    let mut cfg = (*config(8, Arc::default())).clone();
    cfg.order = vec![Source::Anonymous, Source::PasswordFile];
    c.cores[0].set_external_auth(Arc::new(cfg));
    // No credentials: decided on the shard (the embedded default admits it).
    let (_a, back) = start(&mut c, connect_packet("anon", ProtocolVersion::V5));
    assert_eq!(connack(&back).reason_code, ReasonCode::SUCCESS);
    assert!(requests(&mut c).is_empty());
}

/// Re-authentication of a webhook identity goes to the pool again; a deny disconnects.
#[test]
fn reauthentication_waits_for_the_pool_and_a_deny_disconnects() {
    let mut c = Cluster::new(1);
    let mut cfg = (*config(8, Arc::default())).clone();
    cfg.webhook = true;
    c.cores[0].set_external_auth(Arc::new(cfg));
    let mut connect = connect_packet("w", ProtocolVersion::V5);
    connect.properties.authentication_method = Some(Str::copy_from("HOOK").unwrap());
    connect.properties.authentication_data = Some(Bytes::from_static(b"t1"));
    let (mut client, _) = start(&mut c, connect);
    let reqs = requests(&mut c);
    assert_eq!(reqs[0].source, ExternalSource::Webhook);
    answer(&mut c, reqs[0].ticket, allow("dev", Method::Webhook));
    assert_eq!(
        connack(&c.recv(&mut client)).reason_code,
        ReasonCode::SUCCESS
    );
    let reauth = |data: &'static [u8]| {
        Packet::Auth(Auth {
            reason_code: ReasonCode::RE_AUTHENTICATE,
            properties: AuthProperties {
                authentication_method: Some(Str::copy_from("HOOK").unwrap()),
                authentication_data: Some(Bytes::from_static(data)),
                ..Default::default()
            },
        })
    };
    c.send(&client, &reauth(b"t2"));
    assert!(c.recv(&mut client).is_empty(), "waits for the pool");
    let reqs = requests(&mut c);
    assert_eq!(
        reqs[0].credentials.credentials().auth_data,
        Some(&b"t2"[..])
    );
    answer(&mut c, reqs[0].ticket, allow("dev", Method::Webhook));
    match c.recv(&mut client).first() {
        Some(Packet::Auth(a)) => assert_eq!(a.reason_code, ReasonCode::SUCCESS),
        other => panic!("expected AUTH, got {other:?}"),
    }
    c.send(&client, &reauth(b"t3"));
    let reqs = requests(&mut c);
    answer(&mut c, reqs[0].ticket, AuthOutcome::Deny("revoked".into()));
    match c.recv(&mut client).first() {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

/// A webhook identity expires like a token: disconnected at `expiration`.
#[test]
fn a_webhook_expiration_disconnects() {
    let mut c = Cluster::new(1);
    let mut cfg = (*config(8, Arc::default())).clone();
    cfg.webhook = true;
    c.cores[0].set_external_auth(Arc::new(cfg));
    let (mut client, _) = start(&mut c, login("e", ProtocolVersion::V5, "u", b"p"));
    let reqs = requests(&mut c);
    let identity = Identity {
        method: Method::Webhook,
        expires_at: Some(c.wall + Duration::from_secs(30)),
        ..Identity::anonymous("dev")
    };
    answer(
        &mut c,
        reqs[0].ticket,
        AuthOutcome::Allow(Box::new(identity)),
    );
    assert_eq!(
        connack(&c.recv(&mut client)).reason_code,
        ReasonCode::SUCCESS
    );
    c.advance(Duration::from_secs(10));
    assert!(!c.is_closing(&client));
    c.advance(Duration::from_secs(30));
    match c.recv(&mut client).first() {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}
