//! `append` allocates nothing in steady state: once the two batch buffers have grown to the
//! batch size, a cycle of appends and a flush allocates nothing per record (the counting
//! allocator below counts the appends of the test thread; the flush is left out: monoio's
//! operation bookkeeping is its own).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringmq_storage::{IoMode, Store, StoreConfig};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; the counters are plain thread-local cells.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn appends_allocate_nothing(io: IoMode) {
    let tmp = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        io,
        segment_bytes: 1 << 20,
        max_disk_bytes: 64 << 20,
        ..StoreConfig::new(tmp.path().join("store"))
    };
    let store = Store::open(config, 1).unwrap();
    let mut rec = store.recover(0).unwrap();
    let payload = [7u8; 200];
    let body = async move {
        let mut counted = 0;
        for round in 0..6 {
            if round >= 2 {
                COUNTING.with(|c| c.set(true));
            }
            for _ in 0..512 {
                rec.log.append(&payload).unwrap();
            }
            COUNTING.with(|c| c.set(false));
            counted += 512 * u64::from(round >= 2);
            while let Some(f) = rec.log.start_flush() {
                let done = f.run().await;
                rec.log.finish_flush(done).unwrap();
            }
        }
        counted
    };
    let counted = match io {
        IoMode::IoUring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .build()
            .unwrap()
            .block_on(body),
        IoMode::Thread => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap()
            .block_on(body),
    };
    assert_eq!(counted, 2048);
    assert_eq!(
        ALLOCATIONS.with(Cell::get),
        0,
        "allocations in {counted} appends"
    );
}

#[test]
fn appends_allocate_nothing_io_uring() {
    appends_allocate_nothing(IoMode::IoUring);
}

#[test]
fn appends_allocate_nothing_legacy() {
    appends_allocate_nothing(IoMode::Thread);
}
