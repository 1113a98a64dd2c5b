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
