//! Steady-state QoS 0 publish → route → deliver allocates nothing, on one shard and across
//! shards (counting global allocator; deterministic, so it may be asserted).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use common::*;
use ringmq::proto::Input;
use ringmq_codec::*;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARMUP: usize = 1_000;
const MESSAGES: usize = 10_000;

/// Publishes `n` QoS 0 messages from `publ` and drains the subscribers' output like the
/// writer task does (the buffer is emptied, its capacity kept).
fn run(
    cl: &mut Cluster,
    publ: &Client,
    subs: &mut [Client],
    frame: &[u8],
    n: usize,
    input: &mut BytesMut,
) -> usize {
    let mut delivered = 0;
    for _ in 0..n {
        input.extend_from_slice(frame);
        let _ = cl.input(
            publ.shard,
            Input::Read {
                conn: publ.index,
                bytes: input,
            },
        );
        cl.pump();
        for s in subs.iter_mut() {
            let conn = cl.cores[s.shard].conn_mut(s.index).unwrap();
            if !conn.out.is_empty() {
                delivered += 1;
                conn.out.clear();
            }
        }
    }
    delivered
}

fn scenario(shards: usize, sub_shards: &[usize]) {
    scenario_with(shards, sub_shards, ringmq::config::Limits::default());
}

fn scenario_with(shards: usize, sub_shards: &[usize], limits: ringmq::config::Limits) {
    let mut cl = Cluster::with_limits(shards, limits);
    cl.check_invariants = false;
    let mut subs = Vec::new();
    for (i, &shard) in sub_shards.iter().enumerate() {
        let (mut s, _) = cl.connect(shard, &format!("sub{i}"), true, 0);
        cl.subscribe(&mut s, "fleet/+/telemetry", QoS::AtMostOnce);
        subs.push(s);
    }
    let (publ, _) = cl.connect(0, "pub", true, 0);
    let mut frame = BytesMut::new();
    encode(
        &publish("fleet/truck-17/telemetry", &[7u8; 64], QosPid::AtMostOnce),
        ProtocolVersion::V5,
        &mut frame,
    )
    .unwrap();
    let mut input = BytesMut::with_capacity(4096);

    let warm = run(&mut cl, &publ, &mut subs, &frame, WARMUP, &mut input);
    assert_eq!(warm, WARMUP * subs.len());
    let before = ALLOCS.load(Ordering::Relaxed);
    let delivered = run(&mut cl, &publ, &mut subs, &frame, MESSAGES, &mut input);
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(delivered, MESSAGES * subs.len(), "every message delivered");
    assert_eq!(allocs, 0, "{allocs} allocations for {MESSAGES} messages");
}

// One test function: the allocation counter is global, so the scenarios must not run in
// parallel threads.
#[test]
fn steady_state_qos0_publish_allocates_nothing() {
    // Publisher and subscriber on the same shard.
    scenario(1, &[0]);
    // Across shards: subscribers on two other shards (mesh queues, batching, wake-ups).
    scenario(3, &[1, 2]);
    // Fan-out: several subscribers on the publisher's shard and another.
    scenario(2, &[0, 0, 1, 1]);
    // With the publish rate and bandwidth quotas on (high enough not to trip): the token
    // buckets cost no allocation either.
    let limits = ringmq::config::Limits {
        max_publish_rate: 1_000_000,
        max_publish_bandwidth: 1_000_000_000,
        ..Default::default()
    };
    scenario_with(2, &[1], limits);
}
