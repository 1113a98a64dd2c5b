//! What an idle connection keeps on the heap of the sans-IO core: its `Conn`, its session, the
//! client id and the lookup entries, counted with a counting global allocator (live bytes and
//! live allocations; deterministic, so it may be asserted). The runtime adds the connection's
//! task (see `plain_pump`'s size test); no read buffer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use common::*;
use ringmq_codec::*;

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> (isize, isize) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_ALLOCS.load(Ordering::Relaxed),
    )
}

/// Connections in the measurement, spread over two shards: enough for the slab pages and hash
/// tables to count at their share (the tables have just doubled at this size, their worst
/// case).
const CONNECTIONS: usize = 4000;

/// Bytes one idle MQTT 5 connection may keep in the core, everything included. Measured 871:
/// Conn and Session in their slab pages (~570), the client id, its shared handle and the
/// CONNACK's output buffer (~60), the client-id lookup and directory tables just after they
/// doubled (~230). The bound leaves ~10 % for change, not enough for a boxed part to move back
/// inline (a will is 224 bytes).
const MAX_BYTES_PER_CONNECTION: isize = 940;
/// Live allocations per idle connection: the client id, its shared handle, the output buffer
/// (slab pages and tables are shared by many connections).
const MAX_ALLOCS_PER_CONNECTION: f64 = 3.1;

#[test]
fn an_idle_connection_keeps_little_in_the_core() {
    let mut cl = Cluster::new(2);
    // A walk over every connection after each of 10 000 connects is quadratic; the other
    // in-process tests check the invariants.
    cl.check_invariants = false;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    // Client ids as a fleet would use them, made before measuring.
    let ids: Vec<String> = (0..CONNECTIONS).map(|i| format!("device-{i:06}")).collect();
    let (bytes_before, allocs_before) = live();
    for (i, id) in ids.iter().enumerate() {
        let mut c = cl.open(i % 2);
        cl.send(
            &c,
            &Packet::Connect(Box::new(connect_packet(id, ProtocolVersion::V5))),
        );
        // Write the CONNACK out the way the plain pump does: in place, keeping `out`.
        let conn = cl.cores[c.shard].conn_mut(c.index).unwrap();
        let connack = conn.next_output().to_vec();
        conn.consume_output(connack.len());
        assert!(conn.is_connected(), "{id} connected");
        c.rx.extend_from_slice(&connack);
        clients.push(c);
    }
    let (bytes_after, allocs_after) = live();
    // The CONNACKs were copied out for the check below; they are not the broker's.
    let copied: isize = clients.iter().map(|c| c.rx.capacity() as isize).sum();
    let per_conn = (bytes_after - bytes_before - copied) / CONNECTIONS as isize;
    let allocs = (allocs_after - allocs_before - CONNECTIONS as isize) as f64 / CONNECTIONS as f64;
    for c in &mut clients {
        let p = cl.recv(c);
        assert!(
            matches!(p.as_slice(), [Packet::ConnAck(a)] if a.reason_code == ReasonCode::SUCCESS)
        );
    }
    println!("idle connection: {per_conn} bytes, {allocs:.2} allocations");
    assert!(
        per_conn <= MAX_BYTES_PER_CONNECTION,
        "an idle connection keeps {per_conn} bytes in the core (bound {MAX_BYTES_PER_CONNECTION})"
    );
    assert!(
        allocs <= MAX_ALLOCS_PER_CONNECTION,
        "an idle connection keeps {allocs:.2} allocations in the core (bound {MAX_ALLOCS_PER_CONNECTION})"
    );
}
