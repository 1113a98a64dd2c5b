//! `Permissions::allow_publish` allocates nothing: checked with a counting global allocator
//! over cache misses (allowed and denied, more distinct topics than cache slots) and hits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringmq_auth::authz::{PUBLISH_CACHE_SLOTS, parse_policy};
use ringmq_auth::{AttrValue, Identity};
use serde_json::json;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// const-initialised thread-local `Cell`, whose access does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn allow_publish_allocates_nothing_after_warm_up() {
    let root = json!({
        "clientGroups": [{ "name": "trucks", "query": "attributes.type = 'truck'" }],
        "topicSpaces": [{ "name": "t", "topicTemplates": [
            "fleet/${client.attributes.zone}/${client.authenticationName}/telemetry/#",
            "fleet/+/broadcast",
            "cmd/${client.authenticationName}/+/reply"
        ]}],
        "permissionBindings": [
            { "name": "b", "clientGroupName": "trucks", "topicSpaceName": "t", "permission": "Publisher" }
        ]
    });
    let policy = match parse_policy(&root, &mut Vec::new()) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let mut id = Identity::anonymous("truck-17");
    id.attributes
        .insert("type".into(), AttrValue::String("truck".into()));
    id.attributes
        .insert("zone".into(), AttrValue::String("eu".into()));
    // Claim rules too, so the regex path is covered.
    id.pub_rules = Some(vec!["fleet/.*".to_owned(), "cmd/.*".to_owned()].into());
    let perms = policy.permissions(&id);
    let topics: Vec<Vec<u8>> = (0..PUBLISH_CACHE_SLOTS * 8)
        .flat_map(|i| {
            [
                format!("fleet/eu/truck-17/telemetry/{i}"),
                format!("fleet/us/truck-17/telemetry/{i}"),
                format!("cmd/truck-17/{i}/reply"),
            ]
        })
        .map(String::into_bytes)
        .collect();
    // Warm-up: lazily initialised regex caches and the like.
    let mut allowed = 0;
    for t in &topics {
        allowed += usize::from(perms.allow_publish(t));
    }
    let before = allocations();
    let mut allowed_again = 0;
    for _ in 0..3 {
        for t in &topics {
            allowed_again += usize::from(perms.allow_publish(t));
        }
        for _ in 0..10 {
            allowed_again += usize::from(perms.allow_publish(&topics[0]));
        }
    }
    let after = allocations();
    assert_eq!(after - before, 0, "allocations in allow_publish");
    // The counter does see allocations on this thread.
    let boxed = std::hint::black_box(Box::new(after));
    assert_eq!(allocations(), after + 1, "{boxed}");
    assert_eq!(allowed, topics.len() / 3 * 2);
    assert_eq!(allowed_again, 3 * (allowed + 10));
}

/// Compiling a session's permissions allocates a bounded, small number of times (the filters,
/// the lists holding them, the group memo): counted here so a regression shows.
#[test]
fn permissions_compile_allocations_are_bounded() {
    let spaces: Vec<_> = (0..5)
        .map(|s| {
            json!({ "name": format!("s{s}"), "topicTemplates": [
                format!("f{s}/${{client.authenticationName}}/#"),
                format!("g{s}/${{client.attributes.zone}}/+"),
                format!("h{s}/all"),
                format!("i{s}/${{client.attributes.year}}/x"),
            ]})
        })
        .collect();
    let groups: Vec<_> = (0..5)
        .map(|g| json!({ "name": format!("g{g}"), "query": format!("attributes.year >= {g}") }))
        .collect();
    let bindings: Vec<_> = (0..5)
        .map(|i| json!({ "name": format!("b{i}"), "clientGroupName": format!("g{i}"), "topicSpaceName": format!("s{i}"), "permission": "Publisher" }))
        .collect();
    let root =
        json!({ "clientGroups": groups, "topicSpaces": spaces, "permissionBindings": bindings });
    let policy = parse_policy(&root, &mut Vec::new()).unwrap();
    let mut id = Identity::anonymous("truck-17");
    id.attributes
        .insert("zone".into(), AttrValue::String("eu".into()));
    id.attributes
        .insert("year".into(), AttrValue::Integer(2023));
    drop(policy.permissions(&id));
    let before = allocations();
    let perms = policy.permissions(&id);
    let used = allocations() - before;
    assert_eq!(perms.publish_filters().count(), 20);
    // One per filter, plus the filter lists, the scratch buffer, the space and group memos
    // (27 when written).
    assert!(used <= 40, "{used} allocations to compile 20 filters");
    eprintln!("permissions() for 5 groups / 20 filters: {used} allocations");
}
