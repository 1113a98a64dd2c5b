//! Counts heap allocations: decoding a v5 PUBLISH with properties, reading its user
//! properties, and encoding a `PublishHeader` into a buffer with room must allocate nothing.
//!
//! This test binary has a single test so no other thread allocates while it counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use core::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use common::hex;
use ringmq_codec::*;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to `System` unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.load(Ordering::Relaxed)
}

const ROUNDS: usize = 10_000;

/// QoS 0, topic "s/t", topic alias 3, correlation data, two user properties, payload.
const QOS0: &str = "30 27 0003 732f74 1a 23 0003 09 0004 01020304 26 0001 61 0001 31
                    26 0002 6262 0002 3232 7061796c6f6164";
/// QoS 1 (packet id 9), same properties.
const QOS1: &str = "32 29 0003 732f74 0009 1a 23 0003 09 0004 01020304 26 0001 61 0001 31
                    26 0002 6262 0002 3232 7061796c6f6164";

/// Sums what it reads so the work cannot be optimized away.
fn consume(packet: &Packet) -> usize {
    let Packet::Publish(p) = packet else {
        panic!("not a PUBLISH: {packet:?}")
    };
    let mut sum = p.topic.len() + p.payload.len();
    sum += p.properties.correlation_data.as_ref().map_or(0, Bytes::len);
    sum += usize::from(p.properties.topic_alias.map_or(0, NonZeroU16::get));
    for (k, v) in p.properties.user_properties.iter() {
        sum += k.len() + v.len();
    }
    sum
}

#[test]
fn publish_decode_and_header_encode_do_not_allocate() {
    // The counter sees allocations at all (so a zero below means something).
    let before = allocations();
    let probe = std::hint::black_box(vec![1u8; 16]);
    drop(probe);
    assert!(allocations() > before);

    let limits = Limits::default();
    for (name, hex_str) in [("QoS 0", QOS0), ("QoS 1", QOS1)] {
        let frame = hex(hex_str);
        // Pre-fill the receive buffer with warm-up + counted frames.
        let mut buf = BytesMut::with_capacity(frame.len() * (ROUNDS + 1));
        for _ in 0..=ROUNDS {
            buf.extend_from_slice(&frame);
        }
        // Warm-up: the first split of a fresh BytesMut turns its Vec into a shared buffer
        // (one allocation, once per connection buffer, not per packet).
        let first = decode(&mut buf, &limits, ProtocolVersion::V5)
            .unwrap()
            .unwrap();
        let expected = consume(&first);
        assert_eq!(expected, 3 + 7 + 4 + 3 + 2 + 4);
        assert_eq!(first.name(), "PUBLISH");
        drop(first);

        let before = allocations();
        let mut total = 0;
        for _ in 0..ROUNDS {
            let packet = decode(&mut buf, &limits, ProtocolVersion::V5)
                .unwrap()
                .unwrap();
            total += consume(&packet);
        }
        let delta = allocations() - before;
        assert!(buf.is_empty());
        assert_eq!(total, expected * ROUNDS);
        assert_eq!(
            delta, 0,
            "{name}: decoding {ROUNDS} PUBLISH packets allocated {delta} times"
        );
    }

    // Encoding headers into a buffer reserved up front.
    let frame = hex(QOS1);
    let mut buf = BytesMut::from(&frame[..]);
    let Some(Packet::Publish(p)) = decode(&mut buf, &limits, ProtocolVersion::V5).unwrap() else {
        panic!()
    };
    let ids = [NonZeroU32::new(42).unwrap()];
    let header = PublishHeader {
        dup: false,
        qos_pid: QosPid::AtLeastOnce(NonZeroU16::new(77).unwrap()),
        retain: false,
        topic: p.topic.as_bytes(),
        topic_alias: NonZeroU16::new(5),
        message_expiry_secs: Some(60),
        subscription_ids: &ids,
        forwarded: Some(&p.properties),
    };
    let len = header
        .packet_len(ProtocolVersion::V5, p.payload.len())
        .unwrap();
    let header_len = len - p.payload.len();
    let mut out = BytesMut::with_capacity(header_len * ROUNDS);
    let before = allocations();
    for _ in 0..ROUNDS {
        header
            .encode(ProtocolVersion::V5, p.payload.len(), &mut out)
            .unwrap();
    }
    let delta = allocations() - before;
    assert_eq!(out.len(), header_len * ROUNDS);
    assert_eq!(
        delta, 0,
        "encoding {ROUNDS} PUBLISH headers allocated {delta} times"
    );

    // And the header is right: header + payload decodes to the forwarded message.
    let mut one = out.split_to(header_len);
    one.extend_from_slice(&p.payload);
    let Some(Packet::Publish(q)) = decode(&mut one, &limits, ProtocolVersion::V5).unwrap() else {
        panic!()
    };
    assert_eq!(q.topic, p.topic);
    assert_eq!(q.payload, p.payload);
    assert_eq!(q.properties.user_properties, p.properties.user_properties);
    assert_eq!(
        q.properties.subscription_ids.iter().collect::<Vec<_>>(),
        ids.to_vec()
    );
    assert_eq!(q.properties.topic_alias, NonZeroU16::new(5));
    assert_eq!(q.properties.message_expiry_secs, Some(60));
}
