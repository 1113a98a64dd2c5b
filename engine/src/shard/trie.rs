//! The subscription index: a trie of topic filters, walked by a topic name's levels.
//!
//! Routing a PUBLISH asks "which filters match this topic?", so the trie is keyed by filter
//! levels and [`FilterTrie::for_each_match`] walks it with the topic's levels: at each node it
//! follows the exact child of the next level (one hash lookup), the node's `+` child, and
//! reports the node's `#` value. The cost is O(topic levels × `+` branches actually stored),
//! independent of the number of filters, and the walk allocates nothing.
//!
//! `+` and `#` are kept out of the hash map (a `+` child pointer and a `#` value slot per node)
//! so that a wildcard never costs a lookup and the `$` rule [MQTT-4.7.2-1] is a check on the
//! root only.
//!
//! Depth: matching, removal and [`FilterTrie::for_each`] recurse once per filter level, so the
//! stack they use grows with the deepest stored filter. The engine must bound topic levels
//! (names and filters) before they reach this module; with any sane bound (hundreds of levels)
//! this is a few KiB of stack.
//!
//! Filters are stored as given and are expected to be valid (the codec validates them): `+` is
//! a wildcard wherever it is a whole level, `#` only as the last level. An invalid filter does
//! not panic: a `#` elsewhere is stored as an ordinary level that no topic name can match.

use std::fmt;

use rustc_hash::FxHashMap;

/// Topic-filter trie: one value per distinct filter (filters as given: `a/+/c`, `a/#`, `#`).
pub struct FilterTrie<V> {
    root: Node<V>,
    len: usize,
}

struct Node<V> {
    /// Value of the filter that ends at this node.
    value: Option<V>,
    /// Value of the filter `{this node's path}/#` (`#` itself at the root).
    multi: Option<V>,
    /// The `+` child.
    single: Option<Box<Node<V>>>,
    /// Children by exact level.
    children: FxHashMap<Box<[u8]>, Node<V>>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Node {
            value: None,
            multi: None,
            single: None,
            children: FxHashMap::default(),
        }
    }

    /// Whether the node holds nothing and can be pruned.
    fn is_empty(&self) -> bool {
        self.value.is_none()
            && self.multi.is_none()
            && self.single.is_none()
            && self.children.is_empty()
    }
}

/// Splits off the first level: `("a", Some("b/c"))` for `a/b/c`, `("c", None)` for `c`.
#[inline]
pub(crate) fn split_level(rest: &[u8]) -> (&[u8], Option<&[u8]>) {
    match rest.iter().position(|&b| b == b'/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

impl<V> Default for FilterTrie<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> FilterTrie<V> {
    pub fn new() -> Self {
        FilterTrie {
            root: Node::new(),
            len: 0,
        }
    }

    /// Number of stored filters.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, filter: &[u8]) -> Option<&V> {
        let mut node = &self.root;
        let mut rest = filter;
        loop {
            let (level, next) = split_level(rest);
            if level == b"#" && next.is_none() {
                return node.multi.as_ref();
            }
            node = if level == b"+" {
                node.single.as_deref()?
            } else {
                node.children.get(level)?
            };
            match next {
                Some(next) => rest = next,
                None => return node.value.as_ref(),
            }
        }
    }

    pub fn get_mut(&mut self, filter: &[u8]) -> Option<&mut V> {
        let mut node = &mut self.root;
        let mut rest = filter;
        loop {
            let (level, next) = split_level(rest);
            if level == b"#" && next.is_none() {
                return node.multi.as_mut();
            }
            node = if level == b"+" {
                node.single.as_deref_mut()?
            } else {
                node.children.get_mut(level)?
            };
            match next {
                Some(next) => rest = next,
                None => return node.value.as_mut(),
            }
        }
    }

    /// The filter's value, created with `make` if the filter is not stored yet.
    pub fn get_or_insert_with(&mut self, filter: &[u8], make: impl FnOnce() -> V) -> &mut V {
        let mut node = &mut self.root;
        let mut rest = filter;
        let slot = loop {
            let (level, next) = split_level(rest);
            if level == b"#" && next.is_none() {
                break &mut node.multi;
            }
            node = if level == b"+" {
                node.single.get_or_insert_with(|| Box::new(Node::new()))
            } else {
                // Look up before inserting so an existing level costs no key allocation.
                if !node.children.contains_key(level) {
                    node.children.insert(Box::from(level), Node::new());
                }
                match node.children.get_mut(level) {
                    Some(child) => child,
                    None => unreachable!("the level was inserted just above"),
                }
            };
            match next {
                Some(next) => rest = next,
                None => break &mut node.value,
            }
        };
        if slot.is_none() {
            self.len += 1;
        }
        slot.get_or_insert_with(make)
    }

    /// Removes the filter's value and prunes nodes left empty.
    pub fn remove(&mut self, filter: &[u8]) -> Option<V> {
        let removed = remove_in(&mut self.root, filter);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Calls `f` once for every stored filter matching `topic` (a valid topic name), per MQTT
    /// 4.7: `+` one level (also an empty one), `#` the parent level and everything below,
    /// and filters beginning with `+`/`#` never match topics beginning with `$` [MQTT-4.7.2-1].
    /// Allocates nothing.
    pub fn for_each_match<'a>(&'a self, topic: &[u8], mut f: impl FnMut(&'a V)) {
        let root = &self.root;
        let (level, next) = split_level(topic);
        // Wildcards in the first level never match a `$` topic [MQTT-4.7.2-1].
        if topic.first() != Some(&b'$') {
            if let Some(v) = &root.multi {
                f(v);
            }
            if let Some(single) = &root.single {
                walk(single, next, &mut f);
            }
        }
        if let Some(child) = root.children.get(level) {
            walk(child, next, &mut f);
        }
    }

    /// Visits every (filter, value). Allocates; meant for reloads and debugging, not routing.
    pub fn for_each<'a>(&'a self, mut f: impl FnMut(&[u8], &'a V)) {
        let mut path = Vec::new();
        visit(&self.root, &mut path, true, &mut f);
    }

    /// Nodes below the root, to check pruning.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        fn count<V>(node: &Node<V>) -> usize {
            node.single.as_deref().map_or(0, |s| 1 + count(s))
                + node.children.values().map(|c| 1 + count(c)).sum::<usize>()
        }
        count(&self.root)
    }
}

/// Reports every filter under `node` (reached by the topic levels before `rest`) that matches
/// the rest of the topic; `rest` is `None` once every level has been consumed.
fn walk<'a, V, F: FnMut(&'a V)>(mut node: &'a Node<V>, mut rest: Option<&[u8]>, f: &mut F) {
    loop {
        // `{path}/#` matches the path itself and everything below it.
        if let Some(v) = &node.multi {
            f(v);
        }
        let Some(topic) = rest else {
            if let Some(v) = &node.value {
                f(v);
            }
            return;
        };
        let (level, next) = split_level(topic);
        if let Some(single) = &node.single {
            walk(single, next, f);
        }
        // The exact child continues in this frame: recursion only where a `+` branches.
        match node.children.get(level) {
            Some(child) => {
                node = child;
                rest = next;
            }
            None => return,
        }
    }
}

/// Removes the value of `filter` below `node`, pruning children left empty. Nothing is pruned
/// when nothing was removed: the trie never holds an empty node other than the root.
fn remove_in<V>(node: &mut Node<V>, filter: &[u8]) -> Option<V> {
    let (level, next) = split_level(filter);
    if level == b"#" && next.is_none() {
        return node.multi.take();
    }
    if level == b"+" {
        let child = node.single.as_deref_mut()?;
        let removed = match next {
            Some(next) => remove_in(child, next),
            None => child.value.take(),
        };
        if removed.is_some() && child.is_empty() {
            node.single = None;
        }
        removed
    } else {
        let child = node.children.get_mut(level)?;
        let removed = match next {
            Some(next) => remove_in(child, next),
            None => child.value.take(),
        };
        if removed.is_some() && child.is_empty() {
            node.children.remove(level);
        }
        removed
    }
}

fn visit<'a, V>(
    node: &'a Node<V>,
    path: &mut Vec<u8>,
    is_root: bool,
    f: &mut impl FnMut(&[u8], &'a V),
) {
    if let Some(v) = &node.value {
        f(path, v);
    }
    let base = path.len();
    let push = |path: &mut Vec<u8>, level: &[u8]| {
        if !is_root {
            path.push(b'/');
        }
        path.extend_from_slice(level);
    };
    if let Some(v) = &node.multi {
        push(path, b"#");
        f(path, v);
        path.truncate(base);
    }
    if let Some(single) = &node.single {
        push(path, b"+");
        visit(single, path, false, f);
        path.truncate(base);
    }
    for (level, child) in &node.children {
        push(path, level);
        visit(child, path, false, f);
        path.truncate(base);
    }
}

impl<V: fmt::Debug> fmt::Debug for FilterTrie<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut entries = Vec::with_capacity(self.len);
        self.for_each(|filter, v| entries.push((String::from_utf8_lossy(filter).into_owned(), v)));
        // Stored filters as a map, in a stable order.
        let mut map = f.debug_map();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (filter, v) in entries {
            map.entry(&filter, v);
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie_of(filters: &[&str]) -> FilterTrie<String> {
        let mut trie = FilterTrie::new();
        for filter in filters {
            trie.get_or_insert_with(filter.as_bytes(), || filter.to_string());
        }
        trie
    }

    /// The stored filters matching `topic`, sorted, each as often as `f` was called for it.
    fn matched(trie: &FilterTrie<String>, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        trie.for_each_match(topic.as_bytes(), |v| out.push(v.clone()));
        out.sort();
        out
    }

    fn sorted(filters: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn spec_4_7_1_2_multi_level_wildcard() {
        let trie = trie_of(&["sport/tennis/player1/#"]);
        for topic in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ] {
            assert_eq!(
                matched(&trie, topic),
                sorted(&["sport/tennis/player1/#"]),
                "{topic}"
            );
        }
        assert!(matched(&trie, "sport/tennis/player2").is_empty());
        assert!(matched(&trie, "sport/tennis").is_empty());

        // "sport/#" also matches the singular "sport", since # includes the parent level.
        let trie = trie_of(&["sport/#"]);
        assert_eq!(matched(&trie, "sport"), sorted(&["sport/#"]));
        assert_eq!(matched(&trie, "sport/"), sorted(&["sport/#"]));
        assert!(matched(&trie, "sports").is_empty());

        // "#" matches every topic not starting with $.
        let trie = trie_of(&["#"]);
        for topic in ["a", "/", "a/b/c", "/finance", ""] {
            assert_eq!(matched(&trie, topic), sorted(&["#"]), "{topic:?}");
        }
    }

    #[test]
    fn spec_4_7_1_3_single_level_wildcard() {
        let trie = trie_of(&["sport/tennis/+"]);
        assert_eq!(
            matched(&trie, "sport/tennis/player1"),
            sorted(&["sport/tennis/+"])
        );
        assert_eq!(
            matched(&trie, "sport/tennis/player2"),
            sorted(&["sport/tennis/+"])
        );
        assert!(matched(&trie, "sport/tennis/player1/ranking").is_empty());
        assert!(matched(&trie, "sport/tennis").is_empty());

        // "sport/+" does not match "sport" but does match "sport/" (an empty level).
        let trie = trie_of(&["sport/+"]);
        assert!(matched(&trie, "sport").is_empty());
        assert_eq!(matched(&trie, "sport/"), sorted(&["sport/+"]));

        // "+/+" and "/+" match "/finance"; "+" does not.
        let trie = trie_of(&["+/+", "/+", "+"]);
        assert_eq!(matched(&trie, "/finance"), sorted(&["+/+", "/+"]));
        assert_eq!(matched(&trie, "finance"), sorted(&["+"]));
        assert_eq!(matched(&trie, ""), sorted(&["+"]));

        let trie = trie_of(&["+/tennis/#"]);
        assert_eq!(matched(&trie, "sport/tennis"), sorted(&["+/tennis/#"]));
        assert_eq!(matched(&trie, "sport/tennis/x/y"), sorted(&["+/tennis/#"]));
        assert!(matched(&trie, "sport/golf").is_empty());
    }

    #[test]
    fn spec_4_7_2_dollar_topics() {
        let trie = trie_of(&[
            "#",
            "+",
            "+/monitor/Clients",
            "$SYS/#",
            "$SYS/monitor/+",
            "+/#",
        ]);
        assert_eq!(
            matched(&trie, "$SYS/monitor/Clients"),
            sorted(&["$SYS/#", "$SYS/monitor/+"])
        );
        assert_eq!(matched(&trie, "$SYS"), sorted(&["$SYS/#"]));
        assert!(matched(&trie, "$other").is_empty());
        // The rule is about the first character of the topic only.
        assert_eq!(matched(&trie, "a/$SYS"), sorted(&["#", "+/#"]),);
        assert_eq!(
            matched(&trie, "x/monitor/Clients"),
            sorted(&["#", "+/#", "+/monitor/Clients"])
        );
    }

    #[test]
    fn overlapping_filters_each_reported_once() {
        let filters = [
            "#", "a/#", "a/b/#", "a/b/c/#", "+/b/c", "a/+/c", "a/b/+", "+/+/+", "a/b/c", "+/#",
        ];
        let trie = trie_of(&filters);
        assert_eq!(trie.len(), filters.len());
        assert_eq!(matched(&trie, "a/b/c"), sorted(&filters));
        assert_eq!(matched(&trie, "a/b"), sorted(&["#", "a/#", "a/b/#", "+/#"]));
    }

    #[test]
    fn get_insert_and_values() {
        let mut trie: FilterTrie<u32> = FilterTrie::new();
        assert!(trie.is_empty());
        *trie.get_or_insert_with(b"a/+/c", || 1) += 10;
        assert_eq!(*trie.get_or_insert_with(b"a/+/c", || 99), 11);
        trie.get_or_insert_with(b"a/#", || 2);
        trie.get_or_insert_with(b"#", || 3);
        trie.get_or_insert_with(b"a", || 4);
        assert_eq!(trie.len(), 4);
        assert_eq!(trie.get(b"a/+/c"), Some(&11));
        assert_eq!(trie.get(b"a/#"), Some(&2));
        assert_eq!(trie.get(b"#"), Some(&3));
        assert_eq!(trie.get(b"a"), Some(&4));
        // Filters are looked up literally, never matched.
        assert_eq!(trie.get(b"a/b/c"), None);
        assert_eq!(trie.get(b"a/+"), None);
        assert_eq!(trie.get(b"+"), None);
        if let Some(v) = trie.get_mut(b"a/#") {
            *v = 20;
        }
        assert_eq!(trie.get(b"a/#"), Some(&20));
        assert_eq!(trie.get_mut(b"b"), None);

        let mut all = Vec::new();
        trie.for_each(|filter, v| all.push((String::from_utf8_lossy(filter).into_owned(), *v)));
        all.sort();
        let expect = [("#", 3), ("a", 4), ("a/#", 20), ("a/+/c", 11)];
        assert_eq!(all, expect.map(|(f, v)| (f.to_string(), v)));
    }

    #[test]
    fn remove_prunes_back_to_start() {
        let mut trie = trie_of(&["keep/this"]);
        let nodes_before = trie.node_count();
        assert_eq!(nodes_before, 2);
        let added = [
            "keep/this/+/deeper/#",
            "keep/+",
            "+/+/x",
            "#",
            "a/b/c/d",
            "a/b",
            "",
            "/",
        ];
        for filter in added {
            trie.get_or_insert_with(filter.as_bytes(), || filter.to_string());
        }
        assert_eq!(trie.len(), 1 + added.len());
        assert!(trie.node_count() > nodes_before);
        assert_eq!(trie.remove(b"not/stored"), None);
        assert_eq!(trie.remove(b"a/b/c"), None);
        assert_eq!(trie.remove(b"keep/this/+"), None);
        for filter in added {
            assert_eq!(trie.remove(filter.as_bytes()).as_deref(), Some(filter));
            assert_eq!(trie.remove(filter.as_bytes()), None);
        }
        assert_eq!(trie.len(), 1);
        assert_eq!(trie.node_count(), nodes_before);
        assert_eq!(matched(&trie, "keep/this"), sorted(&["keep/this"]));
        assert_eq!(trie.remove(b"keep/this").as_deref(), Some("keep/this"));
        assert_eq!(trie.node_count(), 0);
        assert!(trie.is_empty());
    }

    #[test]
    fn invalid_filters_do_not_panic() {
        // Not valid filters, but the trie must stay consistent and never panic on them.
        let trie = trie_of(&["a/#/b", "a+", "#/", "a/b#"]);
        assert_eq!(trie.len(), 4);
        assert_eq!(trie.get(b"a/#/b").map(String::as_str), Some("a/#/b"));
        assert!(matched(&trie, "a/x/b").is_empty());
        assert_eq!(matched(&trie, "a+"), sorted(&["a+"]));
    }

    #[test]
    fn deep_filters() {
        let filter = vec!["+"; 2000].join("/");
        let topic = vec!["x"; 2000].join("/");
        let mut trie = trie_of(&[&filter, "#"]);
        assert_eq!(matched(&trie, &topic).len(), 2);
        assert!(trie.remove(filter.as_bytes()).is_some());
        assert_eq!(trie.node_count(), 0);
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
        let n = 1 + rng.below(4);
        let mut levels: Vec<&str> = (0..n)
            .map(|_| match rng.below(4) {
                0 => "+",
                _ => LEVELS[rng.below(LEVELS.len())],
            })
            .collect();
        if rng.below(3) == 0 {
            levels.push("#");
        }
        levels.join("/")
    }

    #[test]
    fn matches_brute_force() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut total_matches = 0;
        for round in 0..40 {
            let mut trie = FilterTrie::new();
            let mut stored: Vec<String> = Vec::new();
            for _ in 0..(1 + rng.below(60)) {
                let filter = random_filter(&mut rng);
                if trie.get(filter.as_bytes()).is_none() {
                    stored.push(filter.clone());
                }
                trie.get_or_insert_with(filter.as_bytes(), || filter.clone());
            }
            // Remove some again, to check that removal leaves matching intact.
            for _ in 0..rng.below(20) {
                let filter = random_filter(&mut rng);
                let removed = trie.remove(filter.as_bytes());
                let was_stored = stored.iter().position(|f| *f == filter);
                assert_eq!(removed.is_some(), was_stored.is_some(), "{filter}");
                if let Some(i) = was_stored {
                    stored.swap_remove(i);
                }
            }
            assert_eq!(trie.len(), stored.len());
            for _ in 0..200 {
                let topic = random_topic(&mut rng);
                let mut expect: Vec<String> = stored
                    .iter()
                    .filter(|f| ringmq_codec::topic::matches(f.as_bytes(), topic.as_bytes()))
                    .cloned()
                    .collect();
                expect.sort();
                total_matches += expect.len();
                assert_eq!(
                    matched(&trie, &topic),
                    expect,
                    "round {round}, topic {topic:?}"
                );
            }
        }
        // The comparison is not vacuous: plenty of (filter, topic) pairs matched.
        assert!(total_matches > 1000, "{total_matches}");
    }
}
