//! Property tests of the topic utilities: matching against filters derived from the topic,
//! and filter containment checked exactly against a brute-force search for a counterexample.

use proptest::prelude::*;
use ringmq_codec::topic::{
    filter_contains, levels, matches, parse_shared, validate_topic_filter, validate_topic_name,
};

/// Literal levels: the empty level, `$`-led levels and levels that are prefixes of each other
/// are where the corner cases are.
const LITERALS: &[&str] = &["a", "b", "", "$s", "sport", "sports", "ab"];

fn literal() -> impl Strategy<Value = String> {
    prop::sample::select(LITERALS).prop_map(str::to_owned)
}

/// A valid topic name of 1..=5 levels.
fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(literal(), 1..=5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a topic name is not empty", |t| !t.is_empty())
}

/// A valid topic filter of 1..=4 levels, `+` anywhere, optionally ending in `#`.
fn filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![3 => literal(), 1 => Just("+".to_owned())];
    (prop::collection::vec(level, 0..=3), any::<bool>()).prop_map(|(mut levels, hash)| {
        if hash || levels.is_empty() {
            levels.push("#".to_owned());
        }
        let f = levels.join("/");
        if f.is_empty() { "+".to_owned() } else { f }
    })
}

/// Whether `matches(inner, t) ⇒ matches(outer, t)` for every topic. Searching topics of at
/// most one level more than the longer filter, over the filters' literals plus a fresh plain
/// and a fresh `$` literal, is exhaustive: any counterexample maps onto one of these.
fn contains_by_search(outer: &str, inner: &str) -> bool {
    let mut alphabet: Vec<&str> = vec!["fresh", "$fresh"];
    for level in levels(outer.as_bytes()).chain(levels(inner.as_bytes())) {
        let level = std::str::from_utf8(level).unwrap_or_default();
        if level != "+" && level != "#" && !alphabet.contains(&level) {
            alphabet.push(level);
        }
    }
    let depth = levels(outer.as_bytes())
        .count()
        .max(levels(inner.as_bytes()).count())
        + 1;
    let mut indices = vec![0usize];
    loop {
        let t: Vec<&str> = indices.iter().map(|&i| alphabet[i]).collect();
        let t = t.join("/");
        if !t.is_empty()
            && matches(inner.as_bytes(), t.as_bytes())
            && !matches(outer.as_bytes(), t.as_bytes())
        {
            return false;
        }
        // Next topic in (length, lexicographic) order.
        let mut pos = indices.len();
        loop {
            if pos == 0 {
                if indices.len() == depth {
                    return true;
                }
                indices = vec![0; indices.len() + 1];
                break;
            }
            pos -= 1;
            indices[pos] += 1;
            if indices[pos] < alphabet.len() {
                break;
            }
            indices[pos] = 0;
        }
    }
}

/// The matching rules written the obvious way, level by level, as a reference for `matches`.
fn matches_by_levels(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

proptest! {
    // No regression files: a failure prints its minimal input, which becomes a unit test.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_names_and_filters_are_valid(t in topic(), f in filter()) {
        prop_assert_eq!(validate_topic_name(t.as_bytes()), Ok(()));
        prop_assert_eq!(validate_topic_filter(f.as_bytes()), Ok(()));
        prop_assert_eq!(parse_shared(f.as_bytes()), Ok(None));
    }

    /// A topic matches itself as a filter, and any filter made from it by replacing levels
    /// with `+` or a suffix with `#` — unless the topic starts with `$` and the filter with a
    /// wildcard [MQTT-4.7.2-1].
    #[test]
    fn filters_made_from_the_topic_match_it(
        t in topic(),
        plus in prop::collection::vec(any::<bool>(), 5),
        cut in 0usize..=5,
        hash in any::<bool>(),
    ) {
        prop_assert!(matches(t.as_bytes(), t.as_bytes()));
        let topic_levels: Vec<&str> = t.split('/').collect();
        let mut f: Vec<&str> = topic_levels
            .iter()
            .zip(&plus)
            .map(|(&level, &p)| if p { "+" } else { level })
            .collect();
        if hash {
            // `#` replaces any suffix, the empty suffix included (it matches the parent).
            f.truncate(cut.min(f.len()));
            f.push("#");
        }
        let f = f.join("/");
        prop_assert_eq!(validate_topic_filter(f.as_bytes()), Ok(()));
        let wildcard_led = f.starts_with('+') || f.starts_with('#');
        prop_assert_eq!(matches(f.as_bytes(), t.as_bytes()), !(t.starts_with('$') && wildcard_led));
    }

    /// Changing one literal level of a matching filter, or adding or dropping a level without
    /// `#`, makes it stop matching.
    #[test]
    fn altered_filters_do_not_match(t in topic(), at in 0usize..5, extra in literal()) {
        let topic_levels: Vec<&str> = t.split('/').collect();
        let at = at % topic_levels.len();
        let mut changed = topic_levels.clone();
        changed[at] = "other";
        prop_assert!(!matches(changed.join("/").as_bytes(), t.as_bytes()));
        let mut longer = topic_levels.clone();
        longer.push(&extra);
        prop_assert!(!matches(longer.join("/").as_bytes(), t.as_bytes()));
        let mut plus_longer = topic_levels.clone();
        plus_longer.push("+");
        prop_assert!(!matches(plus_longer.join("/").as_bytes(), t.as_bytes()));
        let shorter = topic_levels[..topic_levels.len() - 1].join("/");
        if !shorter.is_empty() {
            prop_assert!(!matches(shorter.as_bytes(), t.as_bytes()));
        }
    }

    #[test]
    fn matching_agrees_with_the_level_by_level_reference(f in filter(), t in topic()) {
        prop_assert_eq!(matches(f.as_bytes(), t.as_bytes()), matches_by_levels(&f, &t));
    }

    #[test]
    fn containment_is_reflexive(f in filter()) {
        prop_assert!(filter_contains(f.as_bytes(), f.as_bytes()));
        // `#` contains every filter that does not match `$` topics only.
        prop_assert_eq!(filter_contains(b"#", f.as_bytes()), !f.starts_with('$'));
    }

    /// Containment is exact: true iff no topic is matched by `inner` and not by `outer`.
    #[test]
    fn containment_agrees_with_exhaustive_search(outer in filter(), inner in filter()) {
        prop_assert_eq!(
            filter_contains(outer.as_bytes(), inner.as_bytes()),
            contains_by_search(&outer, &inner),
            "outer {:?} inner {:?}", outer, inner
        );
    }

    /// The property an authorizer relies on, on random topics.
    #[test]
    fn containment_implies_matching(outer in filter(), inner in filter(), t in topic()) {
        if filter_contains(outer.as_bytes(), inner.as_bytes()) && matches(inner.as_bytes(), t.as_bytes()) {
            prop_assert!(matches(outer.as_bytes(), t.as_bytes()));
        }
    }

    #[test]
    fn containment_is_transitive(a in filter(), b in filter(), c in filter()) {
        if filter_contains(a.as_bytes(), b.as_bytes()) && filter_contains(b.as_bytes(), c.as_bytes()) {
            prop_assert!(filter_contains(a.as_bytes(), c.as_bytes()));
        }
    }

    /// A shared filter splits into a group and the filter after it, which is validated too.
    #[test]
    fn shared_filters_split(group in "[a-z0-9_]{1,8}", f in filter()) {
        let shared = format!("$share/{group}/{f}");
        prop_assert_eq!(validate_topic_filter(shared.as_bytes()), Ok(()));
        let parts = parse_shared(shared.as_bytes());
        prop_assert!(matches!(parts, Ok(Some(p)) if p.group == group.as_bytes() && p.filter == f.as_bytes()));
    }

    /// The validators never panic, whatever the bytes.
    #[test]
    fn validators_total(bytes in prop::collection::vec(prop::sample::select(b"ab/+#$\0".to_vec()), 0..12)) {
        let name_ok = validate_topic_name(&bytes).is_ok();
        let filter_ok = validate_topic_filter(&bytes).is_ok();
        // A valid name is a valid filter.
        prop_assert!(!name_ok || filter_ok || bytes.starts_with(b"$share/"));
    }
}
