//! One session's compiled permissions: concrete filters and claim rules, checked on every
//! PUBLISH (allocation-free, with a small per-session cache) and SUBSCRIBE.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

use ringmq_codec::topic::{filter_contains, matches, parse_shared};

/// Slots of the per-session publish decision cache (direct-mapped).
pub const PUBLISH_CACHE_SLOTS: usize = 32;
/// Claim rules used per action; further rules are ignored (which can only deny more).
pub const MAX_CLAIM_RULES: usize = 64;
/// Compiled size limit of the claim-rule automaton, in bytes.
pub const CLAIM_RULES_SIZE_LIMIT: usize = 1 << 20;

/// What one session may publish and subscribe to, compiled once per CONNECT (and again on
/// re-authentication or a registry reload) by [`super::Policy::permissions`].
///
/// `Send` but not `Sync`: the publish cache is a `Cell` array, so a `Permissions` belongs to
/// one session on one shard thread and is checked through `&self`.
#[derive(Debug, Clone)]
pub struct Permissions {
    allow_all: bool,
    publish: Access,
    subscribe: Access,
    /// The ACL file's lines for this session (docs/authorization.md, "ACL file"): checked in
    /// addition to the rest, both must allow.
    acl: Option<crate::acl::SessionAcl>,
    cache: PublishCache,
}

/// One concrete filter of a session, with the length of its literal prefix: the bytes before
/// its first wildcard, less the `/` ending them. Every topic the filter matches, and every
/// filter it contains, starts with that prefix (`a/#` matches `a`), so a `memcmp` turns most
/// non-matching filters away before the level-by-level comparison.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Filter {
    bytes: Box<[u8]>,
    prefix_len: usize,
}

impl Filter {
    pub(crate) fn new(bytes: Box<[u8]>) -> Filter {
        let prefix_len = match bytes.iter().position(|&b| b == b'+' || b == b'#') {
            None => bytes.len(),
            Some(i) => i.saturating_sub(1),
        };
        Filter { bytes, prefix_len }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn prefix(&self) -> &[u8] {
        self.bytes.get(..self.prefix_len).unwrap_or_default()
    }

    /// Whether the filter matches `topic` (a valid topic name).
    pub(crate) fn matches(&self, topic: &[u8]) -> bool {
        topic.starts_with(self.prefix()) && matches(&self.bytes, topic)
    }

    /// Whether every topic `inner` (a valid plain filter) matches is matched by this filter.
    pub(crate) fn contains(&self, inner: &[u8]) -> bool {
        inner.starts_with(self.prefix()) && filter_contains(&self.bytes, inner)
    }
}

/// The checks of one action: both must pass.
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    /// Expanded template filters; `None` when bindings do not apply (claim rules in grant mode).
    pub(crate) filters: Option<Vec<Filter>>,
    /// Claim rules; `None` without rules. `Some(None)`: rules were given but none compiled
    /// (or the list was empty), so nothing matches them.
    pub(crate) rules: Option<Option<regex::bytes::Regex>>,
}

impl Access {
    /// Filters and rules; `grant` drops the filters when rules decide alone.
    pub(crate) fn new(filters: Vec<Filter>, rules: Option<&[String]>, grant: bool) -> Access {
        Access {
            filters: (!grant).then_some(filters),
            rules: if grant {
                Some(rules.and_then(compile_rules))
            } else {
                rules.map(compile_rules)
            },
        }
    }

    fn rules_allow(&self, text: &[u8]) -> bool {
        match &self.rules {
            None => true,
            Some(rules) => rules.as_ref().is_some_and(|r| r.is_match(text)),
        }
    }

    fn allow_publish(&self, topic: &[u8]) -> bool {
        let bound = match &self.filters {
            None => true,
            Some(filters) => filters.iter().any(|f| f.matches(topic)),
        };
        bound && self.rules_allow(topic)
    }

    fn allow_subscribe(&self, filter: &[u8]) -> bool {
        let bound = match &self.filters {
            None => true,
            Some(filters) => filters.iter().any(|f| f.contains(filter)),
        };
        bound && self.rules_allow(filter)
    }

    pub(crate) fn filters(&self) -> &[Filter] {
        self.filters.as_deref().unwrap_or_default()
    }
}

/// One anchored alternation of the valid rules. A rule that does not compile (or exceeds the
/// size limit) is left out: that can only deny more, in either mode.
fn compile_rules(sources: &[String]) -> Option<regex::bytes::Regex> {
    let valid: Vec<&str> = sources
        .iter()
        .take(MAX_CLAIM_RULES)
        // Compiled alone (not wrapped), so a source with unbalanced parentheses such as
        // `a)|(.*` is refused instead of escaping its group.
        .filter(|s| build(s).is_some())
        .map(String::as_str)
        .collect();
    if valid.is_empty() {
        return None;
    }
    let alternation: Vec<String> = valid.iter().map(|s| format!("(?:{s})")).collect();
    build(&format!("^(?:{})$", alternation.join("|")))
}

fn build(pattern: &str) -> Option<regex::bytes::Regex> {
    regex::bytes::RegexBuilder::new(pattern)
        .size_limit(CLAIM_RULES_SIZE_LIMIT)
        .build()
        .ok()
}

impl Permissions {
    /// Everything allowed (the embedded default without a registry).
    pub fn allow_all() -> Permissions {
        Permissions {
            allow_all: true,
            publish: Access::default(),
            subscribe: Access::default(),
            acl: None,
            cache: PublishCache::new(),
        }
    }

    pub(crate) fn new(publish: Access, subscribe: Access) -> Permissions {
        Permissions {
            allow_all: false,
            publish,
            subscribe,
            acl: None,
            cache: PublishCache::new(),
        }
    }

    /// Whether the session may publish to `topic` (a valid topic name). Allocation-free; the
    /// decision for a recently used topic comes from the session's cache.
    pub fn allow_publish(&self, topic: &[u8]) -> bool {
        if self.is_allow_all() {
            return true;
        }
        let key = self.cache.key(topic);
        if let Some(allowed) = self.cache.lookup(key) {
            return allowed;
        }
        let allowed = (self.allow_all || self.publish.allow_publish(topic))
            && self.acl.as_ref().is_none_or(|acl| acl.allow_write(topic));
        self.cache.store(key, allowed);
        allowed
    }

    /// Whether the session may subscribe to `filter` (a valid filter, possibly
    /// `$share/{group}/{filter}`: the part after the group is checked, bindings and claim
    /// rules alike).
    pub fn allow_subscribe(&self, filter: &[u8]) -> bool {
        if self.is_allow_all() {
            return true;
        }
        let filter = match parse_shared(filter) {
            Ok(Some(shared)) => shared.filter,
            Ok(None) => filter,
            Err(_) => return false,
        };
        (self.allow_all || self.subscribe.allow_subscribe(filter))
            && self
                .acl
                .as_ref()
                .is_none_or(|acl| acl.allow_subscribe(filter))
    }

    /// These permissions narrowed by a session's ACL-file lines: both must allow.
    pub fn with_acl(mut self, acl: crate::acl::SessionAcl) -> Permissions {
        self.acl = Some(acl);
        self.cache = PublishCache::new();
        self
    }

    /// Whether everything is allowed.
    pub fn is_allow_all(&self) -> bool {
        self.allow_all && self.acl.is_none()
    }

    /// The concrete publish filters from bindings and roles (for logs and diagnostics); empty
    /// when claim rules grant alone.
    pub fn publish_filters(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.publish.filters().iter().map(Filter::bytes)
    }

    /// The concrete subscribe filters, as [`Permissions::publish_filters`].
    pub fn subscribe_filters(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.subscribe.filters().iter().map(Filter::bytes)
    }
}

/// A direct-mapped cache of publish decisions keyed by a keyed hash (SipHash with per-process
/// random keys, std's `RandomState`) of the topic. Only the hash is kept, so a hit on a
/// different topic needs a 62-bit collision of a keyed PRF, which a client cannot aim for.
#[derive(Debug, Clone)]
struct PublishCache {
    hasher: RandomState,
    /// `0`: empty; otherwise the key with bit 0 holding the decision.
    slots: [Cell<u64>; PUBLISH_CACHE_SLOTS],
}

impl PublishCache {
    fn new() -> PublishCache {
        PublishCache {
            hasher: RandomState::new(),
            slots: std::array::from_fn(|_| Cell::new(0)),
        }
    }

    /// The topic's key: its hash with bit 0 cleared and bit 1 set (never 0).
    fn key(&self, topic: &[u8]) -> u64 {
        (self.hasher.hash_one(topic) & !0b11) | 0b10
    }

    fn slot(&self, key: u64) -> &Cell<u64> {
        // The high bits pick the slot; the whole key is compared.
        let index = (key >> 58) as usize % PUBLISH_CACHE_SLOTS;
        &self.slots[index]
    }

    fn lookup(&self, key: u64) -> Option<bool> {
        let entry = self.slot(key).get();
        (entry & !1 == key).then_some(entry & 1 == 1)
    }

    fn store(&self, key: u64, allowed: bool) {
        self.slot(key).set(key | u64::from(allowed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(sources: &[&str]) -> Vec<String> {
        sources.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn rules_are_anchored_and_bad_ones_left_out() {
        let r = rules(&["sensors/.*", "a)|(.*", "(b"]);
        let access = Access::new(Vec::new(), Some(&r), true);
        assert!(access.rules_allow(b"sensors/1"));
        assert!(!access.rules_allow(b"x/sensors/1"));
        assert!(!access.rules_allow(b"b"));
        let none = Access::new(Vec::new(), Some(&rules(&["("])), true);
        assert!(!none.rules_allow(b"anything"));
        let huge = Access::new(Vec::new(), Some(&rules(&["\\w{1000}{1000}"])), true);
        assert!(!huge.rules_allow(b"a"));
    }

    #[test]
    fn cache_remembers_both_decisions() {
        let filters = vec![Filter::new(Box::from(&b"a/+"[..]))];
        let p = Permissions::new(Access::new(filters, None, false), Access::default());
        for _ in 0..3 {
            assert!(p.allow_publish(b"a/b"));
            assert!(!p.allow_publish(b"b/a"));
        }
        let clone = p.clone();
        assert!(clone.allow_publish(b"a/b"));
        assert!(!clone.allow_publish(b"a/b/c"));
    }

    #[test]
    fn literal_prefixes() {
        for (filter, prefix) in [
            ("a/b", "a/b"),
            ("a/#", "a"),
            ("a/+/c", "a"),
            ("+/c", ""),
            ("#", ""),
            ("a/b/+", "a/b"),
            ("/+", ""),
        ] {
            let f = Filter::new(Box::from(filter.as_bytes()));
            assert_eq!(f.prefix(), prefix.as_bytes(), "{filter}");
        }
        let f = Filter::new(Box::from(&b"a/#"[..]));
        assert!(f.matches(b"a") && f.matches(b"a/b") && !f.matches(b"ab"));
        assert!(f.contains(b"a") && f.contains(b"a/+") && !f.contains(b"+/a"));
    }

    /// Every filter and topic of up to 3 levels over a small alphabet: the prefix check never
    /// changes a decision of `matches` or `filter_contains`.
    #[test]
    fn prefix_check_agrees_with_codec_exhaustively() {
        let mut all: Vec<String> = Vec::new();
        let mut level: Vec<String> = vec![String::new()];
        for depth in 0..3 {
            let mut next = Vec::new();
            for prefix in &level {
                for l in ["a", "ab", "", "$s", "+", "#"] {
                    next.push(if depth == 0 {
                        l.to_owned()
                    } else {
                        format!("{prefix}/{l}")
                    });
                }
            }
            all.extend(next.iter().cloned());
            level = next;
        }
        let valid_filter =
            |f: &str| ringmq_codec::topic::validate_topic_filter(f.as_bytes()).is_ok();
        let valid_topic = |t: &str| ringmq_codec::topic::validate_topic_name(t.as_bytes()).is_ok();
        let filters: Vec<&String> = all.iter().filter(|f| valid_filter(f)).collect();
        let topics: Vec<&String> = all.iter().filter(|t| valid_topic(t)).collect();
        for outer in &filters {
            let f = Filter::new(Box::from(outer.as_bytes()));
            for t in &topics {
                assert_eq!(
                    f.matches(t.as_bytes()),
                    matches(outer.as_bytes(), t.as_bytes()),
                    "{outer} {t}"
                );
            }
            for inner in &filters {
                let want = filter_contains(outer.as_bytes(), inner.as_bytes());
                assert_eq!(f.contains(inner.as_bytes()), want, "{outer} {inner}");
            }
        }
    }

    #[test]
    fn permissions_is_send() {
        fn send<T: Send>() {}
        send::<Permissions>();
    }
}
