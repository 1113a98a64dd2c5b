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
