//! Bugs the `cores` fuzz target found (fuzz/crashes-found/), each as a small in-process test.
//! Each test reproduces what a fuzz target found, and fails without its fix. (While a bug is
//! open its test is `#[ignore]`d: run them with `cargo test --test fuzz_found
//! -- --ignored`, and drop the `ignore`, and the target's tolerance, with the fix.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::num::NonZeroU16;

use common::*;
use ringmq_codec::*;

/// [MQTT-3.3.4-9]: the server sends at most the client's Receive Maximum QoS 1/2 PUBLISH
/// unacknowledged. A session with two messages in flight (window 100) resumed by a connection
/// announcing Receive Maximum 1 must get one resend, and the second after the first is acked.
/// Found by fuzz/crashes-found/cores-resend-over-receive-maximum: `resume_delivery` resends
/// every in-flight PUBLISH without looking at the new connection's window.
#[test]
fn resend_on_resume_keeps_the_new_receive_maximum() {
    let mut cl = Cluster::new(2);
    let (mut sub, ack) = cl.connect(0, "a", true, 300);
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    cl.subscribe(&mut sub, "#", QoS::AtLeastOnce);
    let (publisher, _) = cl.connect(1, "p", true, 0);
    cl.send(
        &publisher,
        &publish("t/1", b"one", QosPid::AtLeastOnce(pid(1))),
    );
    cl.send(
        &publisher,
        &publish("t/2", b"two", QosPid::AtLeastOnce(pid(2))),
    );
    let got = cl.recv(&mut sub);
    let in_flight = got
        .iter()
        .filter(|p| matches!(p, Packet::Publish(_)))
        .count();
    assert_eq!(
        in_flight, 2,
        "two deliveries in flight, unacknowledged: {got:?}"
    );

    // The session is resumed by a connection that takes one message at a time.
    let mut again = cl.open(1);
    let mut connect = connect_packet("a", ProtocolVersion::V5);
    connect.clean_start = false;
    connect.properties.session_expiry_secs = Some(300);
    connect.properties.receive_maximum = NonZeroU16::new(1);
    cl.send(&again, &Packet::Connect(Box::new(connect)));
    let got = cl.recv(&mut again);
    assert!(
        matches!(got.first(), Some(Packet::ConnAck(a)) if a.session_present),
        "{got:?}"
    );
    let resent = got
        .iter()
        .filter(|p| matches!(p, Packet::Publish(_)))
        .count();
    assert_eq!(resent, 1, "resends beyond Receive Maximum 1: {got:?}");
}

/// A shutdown closes every connection; ending their sessions sends the directory's release
/// to the shard that holds the entry — this one, for some client ids — and that message to
/// itself was left unhandled until the next input (`check_invariants`: "a message to self
/// left unhandled"). Found by the `cores` target (fuzz/crashes-found/cores-shutdown-local).
#[test]
fn shutdown_handles_its_messages_to_itself() {
    for shards in [1, 2] {
        let mut cl = Cluster::new(shards);
        for i in 0..8 {
            let _ = cl.connect(i % shards, &format!("c{i}"), true, 0);
        }
        for shard in 0..shards {
            let _ = cl.input(shard, ringmq::proto::Input::Shutdown);
        }
        cl.pump();
    }
}

/// A released QoS 2 message (PUBREL sent, PUBCOMP not yet in) still holds its packet id at the
/// client: on resume with Receive Maximum 1 it gets its PUBREL, and the other in-flight PUBLISH
/// waits for the PUBCOMP. Found by the `cores` target (fuzz/crashes-found/cores-released-window):
/// the resend counted only PUBLISH packets sent on the new connection.
#[test]
fn a_released_qos2_message_holds_a_slot_on_resume() {
    let mut cl = Cluster::new(2);
    let (mut sub, _) = cl.connect(0, "r", false, 300);
    cl.subscribe(&mut sub, "q/#", QoS::ExactlyOnce);
    let (publisher, _) = cl.connect(1, "p", true, 0);
    for i in 1..=2u16 {
        cl.send(
            &publisher,
            &publish("q/x", b"m", QosPid::ExactlyOnce(pid(i))),
        );
    }
    let ids: Vec<NonZeroU16> = cl
        .recv(&mut sub)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => p.qos_pid.packet_id(),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2);
    // The first is received (PUBREC → PUBREL), the second not acknowledged at all.
    cl.send(
        &sub,
        &Packet::PubRec(PubResp::new(ids[0], ReasonCode::SUCCESS)),
    );
    assert!(matches!(cl.recv_one(&mut sub), Packet::PubRel(_)));
    cl.drop_conn(&sub);

    let mut again = cl.open(0);
    let mut connect = connect_packet("r", ProtocolVersion::V5);
    connect.clean_start = false;
    connect.properties.session_expiry_secs = Some(300);
    connect.properties.receive_maximum = NonZeroU16::new(1);
    let ack = cl.connect_with(&mut again, connect);
    assert!(ack.session_present);
    let got = cl.recv(&mut again);
    assert!(
        matches!(got.as_slice(), [Packet::PubRel(r)] if r.packet_id == ids[0]),
        "only the PUBREL while the released message holds the one slot: {got:?}"
    );
    cl.send(
        &again,
        &Packet::PubComp(PubResp::new(ids[0], ReasonCode::SUCCESS)),
    );
    let got = cl.recv(&mut again);
    assert!(
        matches!(got.as_slice(), [Packet::Publish(p)] if p.dup && p.qos_pid.packet_id() == Some(ids[1])),
        "then the second, resent: {got:?}"
    );
}

/// The client-id directory orders the claims of a client id; its answers to the shard that
/// holds the session must arrive in that order. A claim answered "the session is here"
/// (`ClaimedLocal`) travelled in the priority lane and a later claim's `Takeover` in the data
/// lane, so when the priority lane was full the takeover overtook it: the shard handed the
/// session away, then the late answer made it a fresh one for the earlier connection — two
/// live connections and two sessions for one client id, and the directory's next move put
/// both on one shard (`check_invariants`: "session N: not found by its client id"). Found by
/// the `cores` target (fuzz/crashes-found/cores-open-client-id-index).
#[test]
fn directory_answers_to_a_shard_keep_their_order() {
    let limits = ringmq::config::Limits {
        // The smallest inbox the configuration allows: 16 priority messages fill it.
        shard_queue_capacity: 16,
        ..Default::default()
    };
    let mut cl = Cluster::with_limits(3, limits);
    // A client id whose directory is shard 1; its session lives on shard 0.
    let id = (0..)
        .map(|i| format!("x{i}"))
        .find(|id| cl.cores[0].directory_shard(id.as_bytes()).slot() == 1)
        .unwrap();
    let mut resumed = connect_packet(&id, ProtocolVersion::V5);
    resumed.clean_start = false;
    resumed.properties.session_expiry_secs = Some(300);
    let mut first = cl.open(0);
    assert!(!cl.connect_with(&mut first, resumed.clone()).session_present);

    let (filler, _) = cl.connect(2, "filler", true, 0);

    // From here on the mesh moves only as told.
    // The second connection on shard 0 claims the session (a claim to shard 1).
    let mut earlier = cl.open(0);
    earlier.version = ProtocolVersion::V5;
    read(
        &mut cl,
        &earlier,
        &Packet::Connect(Box::new(resumed.clone())),
    );
    // Shard 2 fills shard 0's priority lane with 16 interest updates.
    let filters = (0..16)
        .map(|i| SubscribeFilter {
            filter: Str::copy_from(&format!("fill/{i}")).unwrap(),
            options: SubscriptionOptions::default(),
        })
        .collect();
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        subscription_id: None,
        user_properties: UserProperties::new(),
        filters,
    });
    read(&mut cl, &filler, &subscribe);
    assert_eq!(
        cl.mesh.priority_len(0),
        16,
        "shard 0's priority lane is full"
    );
    // Shard 1 (the directory) answers the claim: the session is on shard 0 already.
    let _ = cl.input(1, ringmq::proto::Input::Inbox { max: usize::MAX });
    // A connection on shard 1 claims it next: the directory sends shard 0 a takeover.
    let mut later = cl.open(1);
    later.version = ProtocolVersion::V5;
    read(&mut cl, &later, &Packet::Connect(Box::new(resumed)));
    cl.pump();

    // The directory saw the earlier claim first: that connection gets the session, and is
    // then taken over by the later one, which resumes it. One connection lives.
    let got = cl.recv(&mut earlier);
    assert!(
        matches!(got.as_slice(), [Packet::ConnAck(a), Packet::Disconnect(d)]
            if a.session_present && d.reason_code == ReasonCode::SESSION_TAKEN_OVER),
        "the earlier connection resumes, then is taken over: {got:?}"
    );
    assert!(cl.is_closing(&earlier));
    let got = cl.recv(&mut later);
    assert!(
        matches!(got.as_slice(), [Packet::ConnAck(a)] if a.session_present),
        "the later connection resumes the one session: {got:?}"
    );
    assert!(!cl.is_closing(&later));
    // The session moves back to shard 0 with the next connection there: one session stays.
    let mut again = cl.open(0);
    let mut resume = connect_packet(&id, ProtocolVersion::V5);
    resume.clean_start = false;
    resume.properties.session_expiry_secs = Some(300);
    assert!(cl.connect_with(&mut again, resume).session_present);
}

/// Hands `p` to the core as the client's bytes without pumping the mesh.
fn read(cl: &mut Cluster, c: &Client, p: &Packet) {
    let mut buf = bytes::BytesMut::new();
    encode(p, c.version, &mut buf).unwrap();
    let _ = cl.input(
        c.shard,
        ringmq::proto::Input::Read {
            conn: c.index,
            bytes: &mut buf,
        },
    );
}
