//! Topic names and filters: validation, matching, containment, shared subscriptions.
//!
//! Everything works on bytes of already-validated UTF-8 and allocates nothing.

use crate::DecodeError;

/// Checks a topic name: at least one byte [MQTT-4.7.3-1], no `+` or `#` [MQTT-4.7.0-1]
/// (error names [MQTT-3.3.2-2]), at most 65 535 bytes. (UTF-8 validity is checked by `Str`.)
pub fn validate_topic_name(topic: &[u8]) -> Result<(), DecodeError> {
    let _ = topic;
    todo!("topic helper implements")
}

/// Checks a topic filter: non-empty [MQTT-4.7.3-1]; `#` only alone as the last level
/// [MQTT-4.7.1-1]; `+` only as a whole level [MQTT-4.7.1-2]. `$share/{group}/{filter}` is
/// checked with [`parse_shared`] rules too.
pub fn validate_topic_filter(filter: &[u8]) -> Result<(), DecodeError> {
    let _ = filter;
    todo!("topic helper implements")
}

/// A shared subscription filter `$share/{ShareName}/{filter}` split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    pub group: &'a [u8],
    pub filter: &'a [u8],
}

/// `Ok(Some(..))` for a well-formed shared subscription, `Ok(None)` for an ordinary filter,
/// an error for `$share/` forms that break [MQTT-4.8.2-1] (share name non-empty, without `+`,
/// `#` or `/`) or [MQTT-4.8.2-2] (a filter must follow).
pub fn parse_shared(filter: &[u8]) -> Result<Option<SharedFilter<'_>>, DecodeError> {
    let _ = filter;
    todo!("topic helper implements")
}

/// Whether `filter` matches `topic`; a topic starting with `$` is not matched by a filter
/// starting with a wildcard [MQTT-4.7.2-1]. Both arguments must be valid.
pub fn matches(filter: &[u8], topic: &[u8]) -> bool {
    let _ = (filter, topic);
    todo!("topic helper implements")
}

/// Whether every topic `inner` can match is also matched by `outer` (filter containment, for
/// authorizing subscriptions): `a/+/c` is within `a/#`, but `a/#` is not within `a/+/#`'s
/// sibling `a/b/#`.
pub fn filter_contains(outer: &[u8], inner: &[u8]) -> bool {
    let _ = (outer, inner);
    todo!("topic helper implements")
}

/// The levels of a topic or filter (split on `/`, empty levels kept).
pub fn levels(topic: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    topic.split(|&b| b == b'/')
}
