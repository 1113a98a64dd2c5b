//! Retained messages: the last retained PUBLISH of each topic, delivered to new subscribers.
//!
//! [`RetainStore`] is the interface the engine uses, so a durable store can replace the
//! in-memory one. [`MemoryRetainStore`] is a trie of exact topic levels: a SUBSCRIBE walks it
//! with the filter's levels (`+` fans out to every child of a level, `#` visits the whole
//! subtree including the parent level's own message), so the cost follows the part of the tree
//! the filter covers, not the number of retained topics.
//!
//! What the store does not decide: a PUBLISH with an empty payload deletes the retained message
//! [MQTT-3.3.1-6] (the engine calls [`RetainStore::remove`]), message expiry, and whether a
//! subscription gets retained messages at all (shared subscriptions, Retain Handling).
//!
//! Depth: walks recurse once per topic level, so the engine must bound topic levels before a
//! topic or filter reaches the store (see the same note in `trie`).

use std::fmt;

use rustc_hash::FxHashMap;

use crate::shard::trie::split_level;

/// A new retained topic was refused because the store holds its maximum number of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("retained message store is full ({max_messages} topics)")]
pub struct RetainFull {
    pub max_messages: usize,
}

/// Where retained messages are kept.
pub trait RetainStore<M> {
    /// Sets (replaces) the retained message of `topic` (a valid topic name). Replacing an
    /// existing topic always succeeds; a new topic beyond the store's bound is refused.
    fn set(&mut self, topic: &[u8], message: M) -> Result<(), RetainFull>;

    /// Removes the retained message of `topic`.
    fn remove(&mut self, topic: &[u8]) -> Option<M>;

    /// Number of retained messages.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with (topic, message) for each retained message whose topic matches `filter`
    /// (a valid, non-shared filter); filters starting with `+` or `#` do not match topics
    /// starting with `$` [MQTT-4.7.2-1].
    fn for_each_matching(&self, filter: &[u8], f: &mut dyn FnMut(&[u8], &M));
}

/// An in-memory [`RetainStore`] holding at most `max_messages` topics.
pub struct MemoryRetainStore<M> {
    root: Node<M>,
    len: usize,
    max_messages: usize,
}

struct Node<M> {
    message: Option<M>,
    children: FxHashMap<Box<[u8]>, Node<M>>,
}

impl<M> Node<M> {
    fn new() -> Self {
        Node {
            message: None,
            children: FxHashMap::default(),
        }
    }

    fn is_empty(&self) -> bool {
        self.message.is_none() && self.children.is_empty()
    }
}

impl<M> MemoryRetainStore<M> {
    /// A store that refuses new topics once it holds `max_messages`.
    pub fn new(max_messages: usize) -> Self {
        MemoryRetainStore {
            root: Node::new(),
            len: 0,
            max_messages,
        }
    }

    pub fn max_messages(&self) -> usize {
        self.max_messages
    }

    /// The retained message of exactly `topic`.
    pub fn get(&self, topic: &[u8]) -> Option<&M> {
        let mut node = &self.root;
        let mut rest = topic;
        loop {
            let (level, next) = split_level(rest);
            node = node.children.get(level)?;
            match next {
                Some(next) => rest = next,
                None => return node.message.as_ref(),
            }
        }
    }

    /// The message slot of `topic`, creating the nodes on its path.
    fn slot_or_create(&mut self, topic: &[u8]) -> &mut Option<M> {
        let mut node = &mut self.root;
        let mut rest = topic;
        loop {
            let (level, next) = split_level(rest);
            // Look up before inserting so an existing level costs no key allocation.
            if !node.children.contains_key(level) {
                node.children.insert(Box::from(level), Node::new());
            }
            node = match node.children.get_mut(level) {
                Some(child) => child,
                None => unreachable!("the level was inserted just above"),
            };
            match next {
                Some(next) => rest = next,
                None => return &mut node.message,
            }
        }
    }

    /// Nodes below the root, to check pruning.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        fn count<M>(node: &Node<M>) -> usize {
            node.children.values().map(|c| 1 + count(c)).sum()
        }
        count(&self.root)
    }
}

impl<M> RetainStore<M> for MemoryRetainStore<M> {
    fn set(&mut self, topic: &[u8], message: M) -> Result<(), RetainFull> {
        // At the bound only a replacement is allowed; check before creating any node so a
        // refused topic leaves nothing behind.
        if self.len >= self.max_messages && self.get(topic).is_none() {
            return Err(RetainFull {
                max_messages: self.max_messages,
            });
        }
        let slot = self.slot_or_create(topic);
        let is_new = slot.is_none();
        *slot = Some(message);
        if is_new {
            self.len += 1;
        }
        Ok(())
    }

    fn remove(&mut self, topic: &[u8]) -> Option<M> {
        let removed = remove_in(&mut self.root, topic);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    fn len(&self) -> usize {
        self.len
    }

    fn for_each_matching(&self, filter: &[u8], f: &mut dyn FnMut(&[u8], &M)) {
        let mut topic = Vec::with_capacity(filter.len().max(64));
        walk_at(&self.root, Some(filter), 0, &mut topic, f);
    }
}

/// Removes the message of `topic` below `node`, pruning children left empty.
fn remove_in<M>(node: &mut Node<M>, topic: &[u8]) -> Option<M> {
    let (level, next) = split_level(topic);
    let child = node.children.get_mut(level)?;
    let removed = match next {
        Some(next) => remove_in(child, next),
        None => child.message.take(),
    };
    if removed.is_some() && child.is_empty() {
        node.children.remove(level);
    }
    removed
}

/// Reports the messages under `node` (reached by `depth` topic levels, rebuilt in `topic`)
/// whose remaining levels match `filter`; `filter` is `None` once every level is consumed.
fn walk_at<M>(
    node: &Node<M>,
    filter: Option<&[u8]>,
    depth: usize,
    topic: &mut Vec<u8>,
    f: &mut dyn FnMut(&[u8], &M),
) {
    let Some(filter) = filter else {
        if let Some(m) = &node.message {
            f(topic, m);
        }
        return;
    };
    let (level, next) = split_level(filter);
    let base = topic.len();
    if level == b"#" && next.is_none() {
        // `#` matches the parent level itself and everything below it.
        if let Some(m) = &node.message {
            f(topic, m);
        }
        for (child_level, child) in &node.children {
            if depth == 0 && child_level.first() == Some(&b'$') {
                continue; // [MQTT-4.7.2-1]
            }
            append(topic, depth, child_level);
            visit_all(child, depth + 1, topic, f);
            topic.truncate(base);
        }
    } else if level == b"+" {
        for (child_level, child) in &node.children {
            if depth == 0 && child_level.first() == Some(&b'$') {
                continue; // [MQTT-4.7.2-1]
            }
            append(topic, depth, child_level);
            walk_at(child, next, depth + 1, topic, f);
            topic.truncate(base);
        }
    } else if let Some(child) = node.children.get(level) {
        append(topic, depth, level);
        walk_at(child, next, depth + 1, topic, f);
        topic.truncate(base);
    }
}

/// Reports every message in the subtree of `node`.
fn visit_all<M>(node: &Node<M>, depth: usize, topic: &mut Vec<u8>, f: &mut dyn FnMut(&[u8], &M)) {
    if let Some(m) = &node.message {
        f(topic, m);
    }
    let base = topic.len();
    for (level, child) in &node.children {
        append(topic, depth, level);
        visit_all(child, depth + 1, topic, f);
        topic.truncate(base);
    }
}

/// Appends a level to the rebuilt topic; levels after the first are preceded by `/` (the
/// depth, not the buffer length, decides: the first level may be empty, as in `/finance`).
fn append(topic: &mut Vec<u8>, depth: usize, level: &[u8]) {
    if depth > 0 {
        topic.push(b'/');
    }
    topic.extend_from_slice(level);
}

impl<M> fmt::Debug for MemoryRetainStore<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRetainStore")
            .field("len", &self.len)
            .field("max_messages", &self.max_messages)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_of(topics: &[&str]) -> MemoryRetainStore<String> {
        let mut store = MemoryRetainStore::new(1000);
        for topic in topics {
            assert_eq!(store.set(topic.as_bytes(), topic.to_string()), Ok(()));
        }
        store
    }

    /// (topic passed to `f`, message) for each call, sorted; the two must agree.
    fn matching(store: &MemoryRetainStore<String>, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        store.for_each_matching(filter.as_bytes(), &mut |topic, m| {
            assert_eq!(topic, m.as_bytes(), "topic rebuilt wrongly");
            out.push(m.clone());
        });
        out.sort();
        out
    }

    fn sorted(topics: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = topics.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    const TOPICS: [&str; 12] = [
        "sport",
        "sport/",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player2",
        "sport/golf",
        "/finance",
        "finance",
        "$SYS/monitor/Clients",
        "$SYS",
        "a/$SYS",
    ];

    #[test]
    fn multi_level_wildcard() {
        let store = store_of(&TOPICS);
        assert_eq!(
            matching(&store, "sport/tennis/player1/#"),
            sorted(&["sport/tennis/player1", "sport/tennis/player1/ranking"])
        );
        // "sport/#" includes "sport" itself.
        assert_eq!(
            matching(&store, "sport/#"),
            sorted(&[
                "sport",
                "sport/",
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player2",
                "sport/golf",
            ])
        );
        // "#" is everything except $ topics.
        let mut all: Vec<&str> = TOPICS
            .iter()
            .copied()
            .filter(|t| !t.starts_with('$'))
            .collect();
        all.sort();
        assert_eq!(matching(&store, "#"), sorted(&all));
    }

    #[test]
    fn single_level_wildcard() {
        let store = store_of(&TOPICS);
        assert_eq!(
            matching(&store, "sport/tennis/+"),
            sorted(&["sport/tennis/player1", "sport/tennis/player2"])
        );
        assert_eq!(
            matching(&store, "sport/+"),
            sorted(&["sport/", "sport/tennis", "sport/golf"])
        );
        assert_eq!(matching(&store, "+"), sorted(&["sport", "finance"]));
        assert_eq!(
            matching(&store, "+/+"),
            sorted(&["sport/", "sport/tennis", "sport/golf", "/finance", "a/$SYS"])
        );
        assert_eq!(matching(&store, "/+"), sorted(&["/finance"]));
        assert_eq!(
            matching(&store, "+/tennis/#"),
            sorted(&[
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player2",
            ])
        );
    }

    #[test]
    fn dollar_topics_and_exact_filters() {
        let store = store_of(&TOPICS);
        assert_eq!(
            matching(&store, "$SYS/#"),
            sorted(&["$SYS", "$SYS/monitor/Clients"])
        );
        assert_eq!(
            matching(&store, "$SYS/monitor/+"),
            sorted(&["$SYS/monitor/Clients"])
        );
        assert!(matching(&store, "+/monitor/Clients").is_empty());
        assert_eq!(matching(&store, "a/+"), sorted(&["a/$SYS"]));
        assert_eq!(matching(&store, "sport/tennis"), sorted(&["sport/tennis"]));
        assert!(matching(&store, "sport/tennis/player3").is_empty());
        assert!(matching(&store, "a").is_empty());
    }

    #[test]
    fn set_replace_remove_prune() {
        let mut store = store_of(&["keep"]);
        let nodes_before = store.node_count();
        for topic in TOPICS {
            store.set(topic.as_bytes(), format!("{topic}-1")).ok();
            assert_eq!(store.set(topic.as_bytes(), topic.to_string()), Ok(()));
        }
        assert_eq!(store.len(), 1 + TOPICS.len());
        assert_eq!(
            store.get(b"sport/tennis").map(String::as_str),
            Some("sport/tennis")
        );
        assert_eq!(store.get(b"sport/tennis/player3"), None);
        assert_eq!(store.get(b"sport/tennis/player1/ranking/x"), None);
        assert_eq!(store.remove(b"sport/tennis/player3"), None);
        assert_eq!(store.remove(b"sport/tennis/player1/ranking/x"), None);
        assert_eq!(store.remove(b"nothing"), None);
        for topic in TOPICS {
            assert_eq!(store.remove(topic.as_bytes()).as_deref(), Some(topic));
            assert_eq!(store.remove(topic.as_bytes()), None);
        }
        assert_eq!(store.len(), 1);
        assert_eq!(store.node_count(), nodes_before);
        assert_eq!(matching(&store, "#"), sorted(&["keep"]));
        assert_eq!(store.remove(b"keep").as_deref(), Some("keep"));
        assert_eq!(store.node_count(), 0);
        assert!(store.is_empty());
    }

    #[test]
    fn bound_refuses_only_new_topics() {
        let mut store = MemoryRetainStore::new(2);
        assert_eq!(store.set(b"a/b", 1), Ok(()));
        assert_eq!(store.set(b"a/c", 2), Ok(()));
        let nodes = store.node_count();
        assert_eq!(store.set(b"a/d/e", 3), Err(RetainFull { max_messages: 2 }));
        // The refused topic left no node behind.
        assert_eq!(store.node_count(), nodes);
        // A prefix of a stored topic is a new topic too.
        assert_eq!(store.set(b"a", 3), Err(RetainFull { max_messages: 2 }));
        assert_eq!(store.set(b"a/b", 10), Ok(()));
        assert_eq!(store.get(b"a/b"), Some(&10));
        assert_eq!(store.len(), 2);
        assert_eq!(store.remove(b"a/c"), Some(2));
        assert_eq!(store.set(b"a/d/e", 3), Ok(()));
        assert_eq!(store.len(), 2);

        let mut zero = MemoryRetainStore::new(0);
        assert_eq!(zero.set(b"a", ()), Err(RetainFull { max_messages: 0 }));
        assert!(zero.is_empty());
    }

    #[test]
    fn works_through_the_trait_object() {
        let mut store: Box<dyn RetainStore<u32>> = Box::new(MemoryRetainStore::new(10));
        assert_eq!(store.set(b"x/y", 1), Ok(()));
        let mut seen = Vec::new();
        store.for_each_matching(b"x/+", &mut |topic, m| seen.push((topic.to_vec(), *m)));
        assert_eq!(seen, vec![(b"x/y".to_vec(), 1)]);
        assert_eq!(store.remove(b"x/y"), Some(1));
        assert!(store.is_empty());
    }

    /// xorshift64*: a small deterministic generator, so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const LEVELS: [&str; 5] = ["a", "b", "", "$s", "c$"];

    fn random_topic(rng: &mut Rng) -> String {
        let n = 1 + rng.below(4);
        (0..n)
            .map(|_| LEVELS[rng.below(LEVELS.len())])
            .collect::<Vec<_>>()
            .join("/")
    }

    fn random_filter(rng: &mut Rng) -> String {
        let n = rng.below(4);
        let mut levels: Vec<&str> = (0..n)
            .map(|_| match rng.below(4) {
                0 => "+",
                _ => LEVELS[rng.below(LEVELS.len())],
            })
            .collect();
        if n == 0 || rng.below(3) == 0 {
            levels.push("#");
        }
        levels.join("/")
    }

    #[test]
    fn matching_brute_force() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut total_matches = 0;
        for round in 0..40 {
            let mut store = MemoryRetainStore::new(usize::MAX);
            let mut stored: Vec<String> = Vec::new();
            for _ in 0..(1 + rng.below(80)) {
                let topic = random_topic(&mut rng);
                if store.get(topic.as_bytes()).is_none() {
                    stored.push(topic.clone());
                }
                assert_eq!(store.set(topic.as_bytes(), topic.clone()), Ok(()));
            }
            for _ in 0..rng.below(30) {
                let topic = random_topic(&mut rng);
                let removed = store.remove(topic.as_bytes());
                let was_stored = stored.iter().position(|t| *t == topic);
                assert_eq!(removed.is_some(), was_stored.is_some(), "{topic}");
                if let Some(i) = was_stored {
                    stored.swap_remove(i);
                }
            }
            assert_eq!(store.len(), stored.len());
            for _ in 0..200 {
                let filter = random_filter(&mut rng);
                let mut expect: Vec<String> = stored
                    .iter()
                    .filter(|t| ringmq_codec::topic::matches(filter.as_bytes(), t.as_bytes()))
                    .cloned()
                    .collect();
                expect.sort();
                total_matches += expect.len();
                assert_eq!(
                    matching(&store, &filter),
                    expect,
                    "round {round}, filter {filter:?}"
                );
            }
        }
        // The comparison is not vacuous: plenty of (filter, topic) pairs matched.
        assert!(total_matches > 1000, "{total_matches}");
    }
}
