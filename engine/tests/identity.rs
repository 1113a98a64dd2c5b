//! Identity in the sans-IO core, on the harness's injected clocks: X.509 client certificates
//! (handed over as the TLS layer does), CUSTOM-JWT tokens in CONNECT and in AUTH, token expiry
//! on the wall clock, topic-space authorization, the per-name session limit, and registry
//! reloads re-checking live sessions. No sockets and no sleeps: a token expires when the test
//! moves the wall clock past its `exp`.
//!
//! The end-to-end counterpart, tests/tests/identity.rs, proves the wiring around this: client
//! certificates through rustls, mosquitto and paho clients, and the registry file watcher.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::pki::{self, Ca};
use common::*;
use ringmq::config::Limits;
use ringmq_auth::Snapshot;
use ringmq_auth::registry::Registry;
use ringmq_codec::*;
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};

const SECRET: &str = "identity-test-secret-of-at-least-32-bytes";
const ISSUER: &str = "https://issuer.test";
const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V3_1_1;

// ---- the registry ---------------------------------------------------------------------------

/// The registry of the end-to-end tests: certificate clients `truck-17` (in state
/// `truck_state`, publishing and subscribing under its own templated topic) and `dashboard`
/// (an app: anything under `fleet/+/+/telemetry/#`), a gateway checked by SAN DNS name, and
/// CUSTOM-JWT tokens whose `role` claim puts them in the groups.
fn registry(cas: &[(&str, &Ca)], truck_state: &str) -> Value {
    let cas: Vec<Value> = cas
        .iter()
        .map(|(name, ca)| json!({ "name": name, "encodedCertificate": ca.pem() }))
        .collect();
    json!({
        "namespace": { "clientAuthentication": {
            "alternativeAuthenticationNameSources": ["ClientCertificateSubject"],
            "customJwtAuthentication": {
                "tokenIssuer": ISSUER,
                "audience": "ringmq",
                "hmacSecrets": [SECRET],
                "acceptTokenInPassword": true,
                "clientTypeClaims": { "role": "app" }
            }
        }},
        "caCertificates": cas,
        "clients": [
            { "name": "truck-17", "authenticationName": "truck-17", "state": truck_state,
              "clientCertificateAuthentication": { "validationScheme": "SubjectMatchesAuthenticationName" },
              "attributes": { "type": "truck", "zone": "eu" } },
            { "name": "dashboard", "authenticationName": "dashboard",
              "clientCertificateAuthentication": { "validationScheme": "SubjectMatchesAuthenticationName" },
              "attributes": { "type": "app" } },
            { "name": "gateway", "authenticationName": "gw.fleet.test",
              "clientCertificateAuthentication": { "validationScheme": "DnsMatchesAuthenticationName" },
              "attributes": { "type": "truck", "zone": "eu" } }
        ],
        "clientGroups": [
            { "name": "trucks", "query": "attributes.type = 'truck'" },
            { "name": "apps", "query": "attributes.type = 'app' OR attributes.role IN ['sensor', 'app']" }
        ],
        "topicSpaces": [
            { "name": "own-telemetry", "topicTemplates": ["fleet/${client.attributes.zone}/${client.authenticationName}/telemetry/#"] },
            { "name": "all-telemetry", "topicTemplates": ["fleet/+/+/telemetry/#"] }
        ],
        "permissionBindings": [
            { "name": "trucks-pub", "clientGroupName": "trucks", "topicSpaceName": "own-telemetry", "permission": "Publisher" },
            { "name": "trucks-sub", "clientGroupName": "trucks", "topicSpaceName": "own-telemetry", "permission": "Subscriber" },
            { "name": "apps-sub", "clientGroupName": "apps", "topicSpaceName": "all-telemetry", "permission": "Subscriber" },
            { "name": "apps-pub", "clientGroupName": "apps", "topicSpaceName": "all-telemetry", "permission": "Publisher" }
        ]
    })
}

/// The policy a registry file loads into (as `ops::reload::load_snapshot` builds it).
fn snapshot(version: u64, registry: &Value) -> Snapshot {
    let mut warnings = Vec::new();
    let registry = Registry::parse(&registry.to_string(), &mut warnings).unwrap();
    Snapshot {
        version,
        allow_anonymous: false,
        registry: Some(registry),
        files: Default::default(),
    }
}

/// Two shards enforcing `registry`.
fn cluster(registry: &Value) -> Cluster {
    Cluster::with_policy(2, Limits::default(), snapshot(1, registry))
}

// ---- credentials ----------------------------------------------------------------------------

/// CONNECT as `id` on a new connection of `shard` whose TLS handshake presented `chain`.
fn connect_tls(
    cl: &mut Cluster,
    shard: usize,
    id: &str,
    version: ProtocolVersion,
    chain: Vec<CertificateDer<'static>>,
) -> (Client, ConnAck) {
    let mut c = cl.open(shard);
    cl.set_peer_certificates(&c, chain);
    let ack = cl.connect_with(&mut c, connect_packet(id, version));
    (c, ack)
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An HS256 JWT over `claims` (made here rather than with a JWT library, so the verifier is
/// checked against the format itself).
fn sign(claims: &Value, secret: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signed = format!(
        "{}.{}",
        b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64.encode(claims.to_string())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", b64.encode(tag.as_ref()))
}

/// A token of the registry's issuer for `sub` with claim `role`, expiring `exp_in` seconds
/// after the cluster's wall clock.
fn token(cl: &Cluster, sub: &str, role: &str, exp_in: i64) -> String {
    let now = unix_secs(cl.wall);
    sign(
        &json!({ "sub": sub, "iss": ISSUER, "aud": "ringmq", "iat": now, "exp": now + exp_in, "role": role }),
        SECRET,
    )
}

/// MQTT 5 CONNECT with enhanced authentication: method CUSTOM-JWT, the token as data.
fn jwt_connect(id: &str, token: &str) -> Connect {
    let mut c = connect_packet(id, V5);
    c.properties.authentication_method = Some(Str::from_static("CUSTOM-JWT"));
    c.properties.authentication_data = Some(Bytes::from(token.to_owned()));
    c
}

/// MQTT 3.1.1 CONNECT with the token as the password (the user name is ignored).
fn password_connect(id: &str, token: &str) -> Connect {
    let mut c = connect_packet(id, V3);
    c.username = Some(Str::from_static("any"));
    c.password = Some(Bytes::from(token.to_owned()));
    c
}

fn connect_jwt(cl: &mut Cluster, shard: usize, connect: Connect) -> (Client, ConnAck) {
    let mut c = cl.open(shard);
    let ack = cl.connect_with(&mut c, connect);
    (c, ack)
}

fn reauth(method: &'static str, data: &str) -> Packet {
    Packet::Auth(Auth {
        reason_code: ReasonCode::RE_AUTHENTICATE,
        properties: AuthProperties {
            authentication_method: Some(Str::from_static(method)),
            authentication_data: Some(Bytes::from(data.to_owned())),
            ..Default::default()
        },
    })
}

// ---- expectations ---------------------------------------------------------------------------

/// A refused CONNECT: CONNACK `reason` and the connection closing.
fn assert_refused(cl: &Cluster, c: &Client, ack: &ConnAck, reason: ReasonCode, what: &str) {
    assert_eq!(ack.reason_code, reason, "{what}: {ack:?}");
    assert!(cl.is_closing(c), "{what}: connection closing");
}

/// The 3.1.1 CONNACK return code on the wire.
fn v3_code(ack: &ConnAck) -> u8 {
    ack.reason_code.to_v3_connack()
}

/// The connection got DISCONNECT (last packet) and is closing.
fn expect_disconnect(cl: &mut Cluster, c: &mut Client) -> Disconnect {
    let packets = cl.recv(c);
    assert!(cl.is_closing(c), "closing after {packets:?}");
    match packets.last() {
        Some(Packet::Disconnect(d)) => d.clone(),
        _ => panic!("expected DISCONNECT, got {packets:?}"),
    }
}

/// PINGREQ answered: the connection is up.
fn ping(cl: &mut Cluster, c: &mut Client) {
    cl.send(c, &Packet::PingReq);
    let packets = cl.recv(c);
    assert!(
        matches!(packets.last(), Some(Packet::PingResp)),
        "expected PINGRESP, got {packets:?}"
    );
}

/// The reason code of the acknowledgement of QoS 1 PUBLISH `topic` (packet id 1).
fn publish_qos1(
    cl: &mut Cluster,
    c: &mut Client,
    topic: &'static str,
    payload: &'static [u8],
) -> ReasonCode {
    cl.send(c, &publish(topic, payload, QosPid::AtLeastOnce(pid(1))));
    match cl.recv(c).as_slice() {
        [Packet::PubAck(a)] => a.reason_code,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// The payloads of the PUBLISH packets `c` received (QoS 1 ones acknowledged).
fn received(cl: &mut Cluster, c: &mut Client) -> Vec<Bytes> {
    let mut out = Vec::new();
    for p in cl.recv(c) {
        if let Packet::Publish(p) = p {
            if let QosPid::AtLeastOnce(id) = p.qos_pid {
                cl.send(c, &Packet::PubAck(PubResp::new(id, ReasonCode::SUCCESS)));
            }
            out.push(p.payload);
        }
    }
    out
}

/// Moves the clocks by `d` in steps that keep `c` alive (keep alive is 60 s).
fn advance_pinging(cl: &mut Cluster, c: &mut Client, d: Duration) {
    let step = Duration::from_secs(30);
    let mut left = d;
    while left > Duration::ZERO {
        let now = left.min(step);
        cl.advance(now);
        left -= now;
        if !left.is_zero() {
            ping(cl, c);
        }
    }
}

// ---- X.509 ----------------------------------------------------------------------------------

/// A leaf of a registered CA is accepted, MQTT 5 and 3.1.1; with only the intermediate
/// registered, the leaf sent alone is accepted; with only the root registered, the leaf sent
/// with its intermediate is.
#[test]
fn certificate_chained_to_a_registered_ca_is_accepted() {
    let root = pki::root("fleet root");
    let inter = pki::intermediate("fleet intermediate", &root);
    let direct = pki::leaf("truck-17", &root);
    let mut cl = cluster(&registry(&[("fleet-ca", &root)], "Enabled"));
    for (shard, version) in [(0, V5), (1, V3)] {
        let (c, ack) = connect_tls(&mut cl, shard, "truck", version, vec![direct.clone()]);
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{version:?}");
        // One session per authentication name: end it before the next.
        cl.drop_conn(&c);
    }

    let via_inter = pki::leaf("truck-17", &inter);
    let mut cl = cluster(&registry(&[("fleet-intermediate", &inter)], "Enabled"));
    let (_, ack) = connect_tls(&mut cl, 0, "truck", V5, vec![via_inter.clone()]);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "leaf sent alone");

    let mut cl = cluster(&registry(&[("fleet-ca", &root)], "Enabled"));
    let chain = vec![via_inter, inter.der().clone()];
    let (_, ack) = connect_tls(&mut cl, 1, "truck", V5, chain);
    assert_eq!(
        ack.reason_code,
        ReasonCode::SUCCESS,
        "leaf and intermediate"
    );
}

/// A certificate of a CA the registry does not know, and a name the registry does not list,
/// get 0x86 (3.1.1: 0x04); a disabled client gets 0x87 (3.1.1: 0x05); no certificate and no
/// token on a registry broker: 0x86 (3.1.1: 0x04).
#[test]
fn unknown_ca_unknown_name_and_disabled_client_are_refused() {
    let ca = pki::root("fleet root");
    let rogue = pki::root("rogue CA");
    let mut cl = cluster(&registry(&[("fleet-ca", &ca)], "Disabled"));
    let cases = [
        (
            "rogue CA",
            vec![pki::leaf("truck-17", &rogue)],
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            0x04,
        ),
        (
            "unregistered",
            vec![pki::leaf("stranger", &ca)],
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            0x04,
        ),
        (
            "disabled",
            vec![pki::leaf("truck-17", &ca)],
            ReasonCode::NOT_AUTHORIZED,
            0x05,
        ),
        (
            "no credentials",
            vec![],
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            0x04,
        ),
    ];
    for (what, chain, v5_reason, v3_return) in cases {
        let (c, ack) = connect_tls(&mut cl, 0, "c5", V5, chain.clone());
        assert_refused(&cl, &c, &ack, v5_reason, what);
        assert!(ack.properties.reason_string.is_some(), "{what}: says why");
        let (c, ack) = connect_tls(&mut cl, 1, "c3", V3, chain);
        assert_eq!(v3_code(&ack), v3_return, "{what} 3.1.1: {ack:?}");
        assert!(cl.is_closing(&c), "{what} 3.1.1: connection closing");
    }
}

/// The certificate must satisfy its client's validation scheme: a user name naming another
/// client than the certificate's subject is refused (0x86), and so is a gateway certificate
/// without the SAN DNS name its scheme requires; with it, the gateway is accepted.
#[test]
fn certificate_must_match_its_validation_scheme() {
    let ca = pki::root("fleet root");
    let mut cl = cluster(&registry(&[("fleet-ca", &ca)], "Enabled"));

    // The dashboard's certificate, claiming to be truck-17 through the user name.
    let mut c = cl.open(0);
    cl.set_peer_certificates(&c, vec![pki::leaf("dashboard", &ca)]);
    let mut connect = connect_packet("impostor", V5);
    connect.username = Some(Str::from_static("truck-17"));
    let ack = cl.connect_with(&mut c, connect);
    assert_refused(
        &cl,
        &c,
        &ack,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        "subject mismatch",
    );

    let no_san = pki::leaf("gw.fleet.test", &ca);
    let (c, ack) = connect_tls(&mut cl, 1, "gw", V5, vec![no_san]);
    assert_refused(
        &cl,
        &c,
        &ack,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        "no SAN",
    );
    let wrong_san = pki::leaf_with_dns("gw.fleet.test", "other.fleet.test", &ca);
    let (c, ack) = connect_tls(&mut cl, 1, "gw", V5, vec![wrong_san]);
    assert_refused(
        &cl,
        &c,
        &ack,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        "other SAN",
    );

    let good = pki::leaf_with_dns("gw.fleet.test", "gw.fleet.test", &ca);
    let (_, ack) = connect_tls(&mut cl, 1, "gw", V5, vec![good]);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
}

/// Certificate validity is judged on the injected wall clock: a leaf valid until
/// 2027-02-01 is accepted on the harness's 2027-01-15 and refused (0x86) once the clock has
/// passed its notAfter, even though it was accepted (and cached) before.
#[test]
fn certificate_expiry_follows_the_wall_clock() {
    let ca = pki::root("fleet root");
    let mut params = pki::leaf_params("truck-17");
    params.not_after = rcgen::date_time_ymd(2027, 2, 1);
    let leaf = pki::leaf_with(params, &ca);
    let mut cl = cluster(&registry(&[("fleet-ca", &ca)], "Enabled"));
    let (c, ack) = connect_tls(&mut cl, 0, "truck", V5, vec![leaf.clone()]);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    cl.drop_conn(&c);
    cl.advance(Duration::from_secs(30 * 24 * 3600));
    let (c, ack) = connect_tls(&mut cl, 0, "truck", V5, vec![leaf]);
    assert_refused(
        &cl,
        &c,
        &ack,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        "expired",
    );
}

// ---- topic spaces ---------------------------------------------------------------------------

/// truck-17 publishes only under its own templated topic. Outside it, MQTT 5 gets PUBACK /
/// PUBREC 0x87; 3.1.1, which has no negative acknowledgement, gets a normal PUBACK and the
/// message is dropped. Nothing outside reaches the subscriber and the publisher stays
/// connected.
#[test]
fn publish_outside_the_topic_space_is_refused() {
    let ca = pki::root("fleet root");
    let truck = pki::leaf("truck-17", &ca);
    let mut cl = cluster(&registry(&[("fleet-ca", &ca)], "Enabled"));
    let (mut dash, _) = connect_tls(&mut cl, 1, "dash", V5, vec![pki::leaf("dashboard", &ca)]);
    let ack = cl.subscribe(&mut dash, "fleet/+/+/telemetry/#", QoS::AtLeastOnce);
    assert_eq!(ack.reason_codes, [ReasonCode::GRANTED_QOS_1]);

    let (mut t5, ack) = connect_tls(&mut cl, 0, "t", V5, vec![truck.clone()]);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        publish_qos1(
            &mut cl,
            &mut t5,
            "fleet/eu/truck-17/telemetry/temp",
            b"21.5"
        ),
        ReasonCode::SUCCESS
    );
    assert_eq!(
        publish_qos1(&mut cl, &mut t5, "fleet/eu/truck-99/telemetry/temp", b"x"),
        ReasonCode::NOT_AUTHORIZED
    );
    cl.send(
        &t5,
        &publish(
            "fleet/eu/truck-99/telemetry/temp",
            b"x2",
            QosPid::ExactlyOnce(pid(2)),
        ),
    );
    match cl.recv(&mut t5).as_slice() {
        [Packet::PubRec(r)] => assert_eq!(r.reason_code, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    cl.send(&t5, &publish("elsewhere", b"x0", QosPid::AtMostOnce));
    ping(&mut cl, &mut t5);
    cl.drop_conn(&t5);

    // The same truck over 3.1.1 (the same client id, so the same session).
    let (mut t3, ack) = connect_tls(&mut cl, 0, "t", V3, vec![truck]);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        publish_qos1(&mut cl, &mut t3, "fleet/eu/truck-17/telemetry/rpm", b"900"),
        ReasonCode::SUCCESS
    );
    assert_eq!(
        publish_qos1(&mut cl, &mut t3, "fleet/eu/truck-99/telemetry/rpm", b"y"),
        ReasonCode::SUCCESS,
        "3.1.1: acknowledged normally"
    );
    ping(&mut cl, &mut t3);

    assert_eq!(received(&mut cl, &mut dash), ["21.5", "900"]);
    let denied: u64 = cl
        .cores
        .iter()
        .map(|c| c.metrics().dropped[ringmq::ops::metrics::DropCause::NotAuthorized as usize].get())
        .sum();
    assert_eq!(denied, 4, "every denied publish counted");
}

/// A filter wider than the client's topic space: SUBACK 0x87 (3.1.1: 0x80); a filter within
/// it is granted in the same SUBSCRIBE.
#[test]
fn subscribe_outside_the_topic_space_is_refused() {
    let ca = pki::root("fleet root");
    let dashboard = pki::leaf("dashboard", &ca);
    let mut cl = cluster(&registry(&[("fleet-ca", &ca)], "Enabled"));
    for (shard, version, denied) in [
        (0, V5, ReasonCode::NOT_AUTHORIZED),
        (1, V3, ReasonCode(0x80)),
    ] {
        let (mut c, _) = connect_tls(&mut cl, shard, "dash", version, vec![dashboard.clone()]);
        let mut s = match subscribe_packet(pid(1), "fleet/#", QoS::AtLeastOnce) {
            Packet::Subscribe(s) => s,
            _ => unreachable!(),
        };
        s.filters.push(SubscribeFilter {
            filter: Str::from_static("fleet/eu/+/telemetry/#"),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        });
        cl.send(&c, &Packet::Subscribe(s));
        match cl.recv(&mut c).as_slice() {
            [Packet::SubAck(a)] => {
                assert_eq!(
                    a.reason_codes,
                    [denied, ReasonCode::GRANTED_QOS_1],
                    "{version:?}"
                )
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
        cl.drop_conn(&c);
    }
}

/// A will the client could not publish refuses the CONNECT with 0x87.
#[test]
fn will_outside_the_topic_space_refuses_connect() {
    let ca = pki::root("fleet root");
    let mut cl = cluster(&registry(&[("fleet-ca", &ca)], "Enabled"));
    let mut c = cl.open(0);
    cl.set_peer_certificates(&c, vec![pki::leaf("truck-17", &ca)]);
    let mut connect = connect_packet("t", V5);
    connect.will = Some(Will {
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: Str::from_static("fleet/eu/truck-99/telemetry/status"),
        payload: Bytes::from_static(b"gone"),
        properties: WillProperties::default(),
    });
    let ack = cl.connect_with(&mut c, connect);
    assert_refused(&cl, &c, &ack, ReasonCode::NOT_AUTHORIZED, "will topic");
}

// ---- JWT ------------------------------------------------------------------------------------

/// CUSTOM-JWT enhanced authentication (MQTT 5: CONNACK names the method) and a token as the
/// 3.1.1 password: the `role` claim puts the client in the `apps` group, whose topic space it
/// may publish to; elsewhere PUBACK 0x87.
#[test]
fn custom_jwt_and_password_token_are_accepted() {
    let mut cl = cluster(&registry(&[], "Enabled"));
    let t = token(&cl, "sensor-1", "sensor", 3600);
    let (mut c, ack) = connect_jwt(&mut cl, 0, jwt_connect("s5", &t));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{ack:?}");
    assert_eq!(
        ack.properties
            .authentication_method
            .as_ref()
            .map(Str::as_str),
        Some("CUSTOM-JWT")
    );
    assert_eq!(
        publish_qos1(&mut cl, &mut c, "fleet/eu/s1/telemetry/t", b"x"),
        ReasonCode::SUCCESS
    );
    assert_eq!(
        publish_qos1(&mut cl, &mut c, "elsewhere", b"x"),
        ReasonCode::NOT_AUTHORIZED
    );

    let t = token(&cl, "sensor-2", "sensor", 3600);
    let (mut c, ack) = connect_jwt(&mut cl, 1, password_connect("s3", &t));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{ack:?}");
    assert_eq!(
        publish_qos1(&mut cl, &mut c, "fleet/eu/s2/telemetry/t", b"x"),
        ReasonCode::SUCCESS
    );
}

/// Expired, forged (another secret) and unparseable tokens: 0x86 (3.1.1: 0x04); an
/// authentication method the broker does not know: 0x8C. Expiry is judged on the injected
/// wall clock: the token was valid for an hour when made, and the clock then moved two.
#[test]
fn bad_tokens_are_refused() {
    let mut cl = cluster(&registry(&[], "Enabled"));
    let expired = token(&cl, "sensor-1", "sensor", 3600);
    cl.advance(Duration::from_secs(2 * 3600));
    let now = unix_secs(cl.wall);
    let forged = sign(
        &json!({ "sub": "sensor-1", "iss": ISSUER, "aud": "ringmq", "exp": now + 3600, "role": "sensor" }),
        "not-the-secret-but-just-as-long-as-it",
    );
    for (what, bad) in [
        ("expired", expired.as_str()),
        ("forged", &forged),
        ("garbage", "not-a-token"),
    ] {
        let (c, ack) = connect_jwt(&mut cl, 0, jwt_connect("s5", bad));
        assert_refused(&cl, &c, &ack, ReasonCode::BAD_USER_NAME_OR_PASSWORD, what);
        let (c, ack) = connect_jwt(&mut cl, 1, password_connect("s3", bad));
        assert_eq!(v3_code(&ack), 0x04, "{what} 3.1.1: {ack:?}");
        assert!(cl.is_closing(&c));
    }
    let mut connect = connect_packet("scram", V5);
    connect.properties.authentication_method = Some(Str::from_static("SCRAM-SHA-1"));
    let (c, ack) = connect_jwt(&mut cl, 0, connect);
    assert_refused(
        &cl,
        &c,
        &ack,
        ReasonCode::BAD_AUTHENTICATION_METHOD,
        "unknown method",
    );
}

/// A token that expires while connected: the connection stays up until the wall clock
/// reaches `exp`, then gets DISCONNECT 0x87 "token expired", and its will is published, as
/// for any server-initiated close.
#[test]
fn token_expiry_disconnects_at_exp_and_publishes_the_will() {
    let mut cl = cluster(&registry(&[], "Enabled"));
    let t = token(&cl, "sensor-watcher", "sensor", 3600);
    let (mut watcher, _) = connect_jwt(&mut cl, 1, jwt_connect("watcher", &t));
    cl.subscribe(&mut watcher, "fleet/+/+/telemetry/#", QoS::AtLeastOnce);

    let t = token(&cl, "sensor-expiring", "sensor", 45);
    let mut connect = jwt_connect("expiring", &t);
    connect.will = Some(Will {
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: Str::from_static("fleet/eu/s1/telemetry/status"),
        payload: Bytes::from_static(b"expired"),
        properties: WillProperties::default(),
    });
    let (mut c, ack) = connect_jwt(&mut cl, 0, connect);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);

    advance_pinging(&mut cl, &mut c, Duration::from_secs(44));
    ping(&mut cl, &mut c);
    assert!(received(&mut cl, &mut watcher).is_empty());
    cl.advance(Duration::from_secs(1));
    let d = expect_disconnect(&mut cl, &mut c);
    assert_eq!(d.reason_code, ReasonCode::NOT_AUTHORIZED, "{d:?}");
    assert_eq!(
        d.properties.reason_string.as_ref().map(Str::as_str),
        Some("token expired")
    );
    cl.drop_conn(&c);
    assert_eq!(received(&mut cl, &mut watcher), ["expired"]);
}

/// [MQTT-4.12.1-1] AUTH 0x19 with the same method and a fresh token: AUTH 0x00 naming the
/// method, and the session lives past the first token's expiry until the fresh one's.
#[test]
fn reauthentication_extends_the_session() {
    let mut cl = cluster(&registry(&[], "Enabled"));
    let t = token(&cl, "sensor-re", "sensor", 45);
    let (mut c, ack) = connect_jwt(&mut cl, 0, jwt_connect("re", &t));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    advance_pinging(&mut cl, &mut c, Duration::from_secs(30));

    let fresh = token(&cl, "sensor-re", "sensor", 120);
    cl.send(&c, &reauth("CUSTOM-JWT", &fresh));
    match cl.recv(&mut c).as_slice() {
        [Packet::Auth(a)] => {
            assert_eq!(a.reason_code, ReasonCode::SUCCESS, "{a:?}");
            assert_eq!(
                a.properties.authentication_method.as_ref().map(Str::as_str),
                Some("CUSTOM-JWT")
            );
        }
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }
    // Past the first token's expiry (15 s away), up to just before the fresh one's.
    advance_pinging(&mut cl, &mut c, Duration::from_secs(119));
    ping(&mut cl, &mut c);
    cl.advance(Duration::from_secs(1));
    let d = expect_disconnect(&mut cl, &mut c);
    assert_eq!(
        d.reason_code,
        ReasonCode::NOT_AUTHORIZED,
        "fresh token expired: {d:?}"
    );
}

/// A failed re-authentication disconnects with 0x87; so does a valid token of another
/// identity (the session belongs to one authentication name); another method is a protocol
/// error (0x82), and so is AUTH on a connection that authenticated without a method.
#[test]
fn failed_reauthentication_disconnects() {
    let mut cl = cluster(&registry(&[], "Enabled"));
    let cases: [(&str, &'static str, Option<&str>, ReasonCode); 3] = [
        (
            "bad token",
            "CUSTOM-JWT",
            Some("not-a-token"),
            ReasonCode::NOT_AUTHORIZED,
        ),
        (
            "another identity",
            "CUSTOM-JWT",
            None,
            ReasonCode::NOT_AUTHORIZED,
        ),
        (
            "another method",
            "OAUTH2-JWT",
            Some("x"),
            ReasonCode::PROTOCOL_ERROR,
        ),
    ];
    for (i, (what, method, data, reason)) in cases.into_iter().enumerate() {
        let sub = format!("sensor-{i}");
        let t = token(&cl, &sub, "sensor", 3600);
        let (mut c, ack) = connect_jwt(&mut cl, i % 2, jwt_connect(&sub, &t));
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        let other = token(&cl, "sensor-someone-else", "sensor", 3600);
        cl.send(&c, &reauth(method, data.unwrap_or(&other)));
        let d = expect_disconnect(&mut cl, &mut c);
        assert_eq!(d.reason_code, reason, "{what}: {d:?}");
    }

    let ca = pki::root("fleet root");
    let mut cl = cluster(&registry(&[("fleet-ca", &ca)], "Enabled"));
    let (mut c, _) = connect_tls(&mut cl, 0, "t", V5, vec![pki::leaf("truck-17", &ca)]);
    let fresh = token(&cl, "truck-17", "sensor", 3600);
    cl.send(&c, &reauth("CUSTOM-JWT", &fresh));
    let d = expect_disconnect(&mut cl, &mut c);
    assert_eq!(
        d.reason_code,
        ReasonCode::PROTOCOL_ERROR,
        "no method at CONNECT: {d:?}"
    );
}

/// The client type from the token (clientTypeClaims: role = app → APPLICATION) selects the
/// session limits: with max_inflight 5 for devices and 50 for applications, an application
/// is sent 20 unacknowledged QoS 1 messages, a device 5.
#[test]
fn application_clients_get_their_own_limits() {
    let mut limits = Limits {
        max_inflight: 5,
        ..Limits::default()
    };
    limits.application.max_inflight = 50;
    let mut cl = Cluster::with_policy(2, limits, snapshot(1, &registry(&[], "Enabled")));
    let t = token(&cl, "device-name", "sensor", 3600);
    let (mut device, _) = connect_jwt(&mut cl, 0, jwt_connect("device", &t));
    let t = token(&cl, "app-name", "app", 3600);
    let (mut app, _) = connect_jwt(&mut cl, 1, jwt_connect("app", &t));
    for c in [&mut device, &mut app] {
        cl.subscribe(c, "fleet/+/+/telemetry/#", QoS::AtLeastOnce);
    }
    let t = token(&cl, "publisher-name", "sensor", 3600);
    let (mut publisher, _) = connect_jwt(&mut cl, 0, jwt_connect("publisher", &t));
    for i in 1..=20 {
        cl.send(
            &publisher,
            &publish("fleet/eu/x/telemetry/t", b"m", QosPid::AtLeastOnce(pid(i))),
        );
    }
    assert_eq!(
        cl.recv(&mut publisher).len(),
        20,
        "every publish acknowledged"
    );
    let unacked = |cl: &mut Cluster, c: &mut Client| {
        cl.recv(c)
            .iter()
            .filter(|p| matches!(p, Packet::Publish(_)))
            .count()
    };
    assert_eq!(unacked(&mut cl, &mut device), 5, "device window");
    assert_eq!(unacked(&mut cl, &mut app), 20, "application window");
}

// ---- sessions per authentication name ------------------------------------------------------

/// `maxClientSessionsPerAuthenticationName` (default 1), counted across shards: a second
/// client id with the same certificate identity is refused with 0x97 (3.1.1: 0x03) while the
/// first session lives. A session cannot be taken over by another authentication name (0x87,
/// the original stays up); the same client id and identity takes it over (0x8E to the old
/// connection); once that session ended, the other client id may connect.
#[test]
fn sessions_per_authentication_name_and_foreign_takeover() {
    let ca = pki::root("fleet root");
    let truck = pki::leaf("truck-17", &ca);
    let dashboard = pki::leaf("dashboard", &ca);
    let mut cl = cluster(&registry(&[("fleet-ca", &ca)], "Enabled"));
    let (mut first, ack) = connect_tls(&mut cl, 0, "truck-a", V5, vec![truck.clone()]);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    cl.subscribe(
        &mut first,
        "fleet/eu/truck-17/telemetry/#",
        QoS::AtLeastOnce,
    );

    let (c, ack) = connect_tls(&mut cl, 1, "truck-b", V5, vec![truck.clone()]);
    assert_refused(
        &cl,
        &c,
        &ack,
        ReasonCode::QUOTA_EXCEEDED,
        "second name session",
    );
    let (c, ack) = connect_tls(&mut cl, 1, "truck-b", V3, vec![truck.clone()]);
    assert_eq!(v3_code(&ack), 0x03, "3.1.1: {ack:?}");
    assert!(cl.is_closing(&c));

    let (c, ack) = connect_tls(&mut cl, 1, "truck-a", V5, vec![dashboard.clone()]);
    assert_refused(
        &cl,
        &c,
        &ack,
        ReasonCode::NOT_AUTHORIZED,
        "foreign takeover",
    );
    let (mut dash, _) = connect_tls(&mut cl, 1, "dash", V5, vec![dashboard]);
    assert_eq!(
        publish_qos1(
            &mut cl,
            &mut dash,
            "fleet/eu/truck-17/telemetry/t",
            b"still-connected"
        ),
        ReasonCode::SUCCESS
    );
    assert_eq!(received(&mut cl, &mut first), ["still-connected"]);

    let (second, ack) = connect_tls(&mut cl, 1, "truck-a", V5, vec![truck.clone()]);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "own takeover");
    let d = expect_disconnect(&mut cl, &mut first);
    assert_eq!(d.reason_code, ReasonCode::SESSION_TAKEN_OVER);
    cl.drop_conn(&first);
    cl.drop_conn(&second);
    let (_, ack) = connect_tls(&mut cl, 0, "truck-b", V5, vec![truck]);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "slot released");
}

// ---- registry reloads -----------------------------------------------------------------------

/// A reload that disables a connected client disconnects it with 0x87; the other sessions
/// stay.
#[test]
fn reload_disabling_a_client_disconnects_it() {
    let ca = pki::root("fleet root");
    let mut cl = cluster(&registry(&[("fleet-ca", &ca)], "Enabled"));
    let (mut truck, _) = connect_tls(&mut cl, 0, "truck", V5, vec![pki::leaf("truck-17", &ca)]);
    let (mut dash, _) = connect_tls(&mut cl, 1, "dash", V5, vec![pki::leaf("dashboard", &ca)]);
    cl.reload(snapshot(2, &registry(&[("fleet-ca", &ca)], "Disabled")));
    let d = expect_disconnect(&mut cl, &mut truck);
    assert_eq!(d.reason_code, ReasonCode::NOT_AUTHORIZED, "{d:?}");
    ping(&mut cl, &mut dash);
}

/// A reload that removes a Subscriber binding removes the live subscription (no more
/// deliveries); one that removes a Publisher binding refuses the next publish (0x87). The
/// connections stay: their identities are still valid.
#[test]
fn reload_removing_a_permission_drops_the_subscription() {
    let ca = pki::root("fleet root");
    let mut reg = registry(&[("fleet-ca", &ca)], "Enabled");
    let mut cl = cluster(&reg);
    let (mut dash, _) = connect_tls(&mut cl, 1, "dash", V5, vec![pki::leaf("dashboard", &ca)]);
    cl.subscribe(&mut dash, "fleet/+/+/telemetry/#", QoS::AtLeastOnce);
    let (mut truck, _) = connect_tls(&mut cl, 0, "truck", V5, vec![pki::leaf("truck-17", &ca)]);
    let topic = "fleet/eu/truck-17/telemetry/t";
    assert_eq!(
        publish_qos1(&mut cl, &mut truck, topic, b"before"),
        ReasonCode::SUCCESS
    );
    assert_eq!(received(&mut cl, &mut dash), ["before"]);

    let bindings = reg["permissionBindings"].as_array_mut().unwrap();
    bindings.retain(|b| b["name"] != "apps-sub");
    cl.reload(snapshot(2, &reg));
    assert_eq!(
        publish_qos1(&mut cl, &mut truck, topic, b"after"),
        ReasonCode::SUCCESS
    );
    assert!(
        received(&mut cl, &mut dash).is_empty(),
        "no delivery after the revocation"
    );
    ping(&mut cl, &mut dash);

    let bindings = reg["permissionBindings"].as_array_mut().unwrap();
    bindings.retain(|b| b["name"] != "trucks-pub");
    cl.reload(snapshot(3, &reg));
    assert_eq!(
        publish_qos1(&mut cl, &mut truck, topic, b"denied"),
        ReasonCode::NOT_AUTHORIZED
    );
    ping(&mut cl, &mut truck);
}

/// Reloads without a restart: adding a CA admits its clients; removing a CA disconnects the
/// live sessions that chained to it (0x87); a CRL revoking a certificate disconnects its
/// live session (0x87).
#[test]
fn reload_adds_and_removes_cas_and_revokes_certificates() {
    let ca = pki::root("fleet root");
    let second = pki::root("second CA");
    let truck = pki::leaf_with_serial("truck-17", &ca, 4242);
    let dashboard = pki::leaf("dashboard", &second);
    let mut cl = cluster(&registry(&[("fleet-ca", &ca)], "Enabled"));

    let (c, ack) = connect_tls(&mut cl, 1, "d0", V5, vec![dashboard.clone()]);
    assert_refused(
        &cl,
        &c,
        &ack,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        "CA not registered",
    );
    cl.reload(snapshot(
        2,
        &registry(&[("fleet-ca", &ca), ("second-ca", &second)], "Enabled"),
    ));
    let (mut dash, ack) = connect_tls(&mut cl, 1, "d1", V5, vec![dashboard]);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "the added CA admits");
    let (mut live_truck, ack) = connect_tls(&mut cl, 0, "live-truck", V5, vec![truck]);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);

    // Remove the second CA and revoke the truck's certificate with a CRL of the first.
    let mut reg = registry(&[("fleet-ca", &ca)], "Enabled");
    reg["caCertificates"][0]["crls"] = json!([pki::crl(&ca, &[4242])]);
    cl.reload(snapshot(3, &reg));
    for (what, c) in [
        ("revoked certificate", &mut live_truck),
        ("removed CA", &mut dash),
    ] {
        let d = expect_disconnect(&mut cl, c);
        assert_eq!(d.reason_code, ReasonCode::NOT_AUTHORIZED, "{what}: {d:?}");
    }
}
