//! Authorization, the Event Grid way: client groups (queries over a client's attributes),
//! topic spaces (topic templates), permission bindings (group × space × Publisher/Subscriber),
//! RBAC role assignments for OAUTH2-JWT principals, and JWT claim rules (docs/authorization.md).
//!
//! The registry's sections are parsed once into a [`Policy`]; a session's [`Permissions`] are
//! compiled from it once per CONNECT, re-authentication or reload (templates expanded into
//! concrete filters, claim rules compiled), so the per-PUBLISH check is a walk over a few
//! filters or a cache hit, and allocates nothing.

mod parse;
mod permissions;
pub mod query;
mod template;

pub use permissions::{CLAIM_RULES_SIZE_LIMIT, MAX_CLAIM_RULES, PUBLISH_CACHE_SLOTS, Permissions};
pub use query::{MAX_IN_LIST, MAX_QUERY_CHARS, MAX_QUERY_DEPTH, Query, QueryError};

use crate::{Identity, RegistryError};
use permissions::Access;
pub(crate) use permissions::Filter;
use template::Template;

/// The built-in client group every client is in.
pub const ALL_CLIENTS_GROUP: &str = "$all";
pub const MAX_CLIENT_GROUPS: usize = 1_000;
pub const MAX_TOPIC_SPACES: usize = 1_000;
/// Templates per topic space (Event Grid's limit).
pub const MAX_TOPIC_TEMPLATES: usize = 10;
pub const MAX_PERMISSION_BINDINGS: usize = 10_000;
pub const MAX_ROLE_ASSIGNMENTS: usize = 10_000;
/// Longest resource name (group, topic space, binding).
pub const MAX_NAME_CHARS: usize = 128;
/// Above this many filters a session's list is not pruned of filters other filters contain
/// (pruning is quadratic).
const PRUNE_FILTERS_MAX: usize = 512;

pub const PUBLISHER_ROLE: &str = "EventGrid TopicSpaces Publisher";
pub const SUBSCRIBER_ROLE: &str = "EventGrid TopicSpaces Subscriber";

/// Concrete topic filters.
type Filters = Vec<Filter>;

/// Publish or subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Publisher,
    Subscriber,
}

#[derive(Debug)]
struct ClientGroup {
    name: String,
    query: Query,
}

#[derive(Debug)]
struct TopicSpace {
    templates: Vec<Template>,
}

/// A binding's group: `$all` or an index into `Policy::groups`.
#[derive(Debug, Clone, Copy)]
enum GroupRef {
    All,
    Group(usize),
}

#[derive(Debug)]
struct Binding {
    group: GroupRef,
    space: usize,
    permission: Permission,
}

#[derive(Debug)]
struct RoleAssignment {
    principal_id: String,
    permission: Permission,
    /// `None`: the whole namespace; otherwise an index into `Policy::spaces`.
    space: Option<usize>,
}

/// Client groups, topic spaces, permission bindings and role assignments, compiled. The
/// default is the empty policy, which grants nothing.
#[derive(Debug, Default)]
pub struct Policy {
    groups: Vec<ClientGroup>,
    spaces: Vec<TopicSpace>,
    bindings: Vec<Binding>,
    roles: Vec<RoleAssignment>,
}

impl Policy {
    /// The permissions of one client.
    pub fn permissions(&self, identity: &Identity) -> Permissions {
        let grant = identity.claim_rules_grant;
        // Claim rules in grant mode decide alone: no need to look at bindings.
        let (publish, subscribe) = if grant {
            (Vec::new(), Vec::new())
        } else {
            self.filters(identity)
        };
        Permissions::new(
            Access::new(publish, identity.pub_rules.as_deref(), grant),
            Access::new(subscribe, identity.sub_rules.as_deref(), grant),
        )
    }

    /// Whether `identity` is in the group called `name` (`$all` included); `None` for an
    /// unknown group.
    pub fn in_group(&self, identity: &Identity, name: &str) -> Option<bool> {
        if name == ALL_CLIENTS_GROUP {
            return Some(true);
        }
        let group = self.groups.iter().find(|g| g.name == name)?;
        Some(group.query.eval(identity))
    }

    /// The expanded publish and subscribe filters of `identity`.
    fn filters(&self, identity: &Identity) -> (Filters, Filters) {
        let mut publish = vec![false; self.spaces.len()];
        let mut subscribe = vec![false; self.spaces.len()];
        let mut member: Vec<Option<bool>> = vec![None; self.groups.len()];
        for binding in &self.bindings {
            let is_member = match binding.group {
                GroupRef::All => true,
                GroupRef::Group(i) => match member.get(i).copied().flatten() {
                    Some(known) => known,
                    None => {
                        let known = self.groups.get(i).is_some_and(|g| g.query.eval(identity));
                        if let Some(slot) = member.get_mut(i) {
                            *slot = Some(known);
                        }
                        known
                    }
                },
            };
            if is_member {
                mark(
                    &mut publish,
                    &mut subscribe,
                    binding.permission,
                    Some(binding.space),
                );
            }
        }
        if let Some(principal) = identity.principal_id.as_deref() {
            for role in self.roles.iter().filter(|r| r.principal_id == principal) {
                mark(&mut publish, &mut subscribe, role.permission, role.space);
            }
        }
        (
            self.expand(identity, &publish),
            self.expand(identity, &subscribe),
        )
    }

    fn expand(&self, identity: &Identity, spaces: &[bool]) -> Filters {
        let templates = self
            .spaces
            .iter()
            .zip(spaces)
            .filter(|(_, on)| **on)
            .flat_map(|(space, _)| &space.templates);
        let mut filters = Filters::with_capacity(templates.clone().count());
        // One scratch buffer, one exact-size allocation per filter.
        let mut scratch = String::new();
        for template in templates {
            if template.expand_into(identity, &mut scratch) {
                filters.push(Filter::new(Box::from(scratch.as_bytes())));
            }
        }
        filters.sort();
        filters.dedup();
        prune_contained(&mut filters);
        filters
    }
}

fn mark(
    publish: &mut [bool],
    subscribe: &mut [bool],
    permission: Permission,
    space: Option<usize>,
) {
    let target = match permission {
        Permission::Publisher => publish,
        Permission::Subscriber => subscribe,
    };
    match space {
        None => target.fill(true),
        Some(i) => {
            if let Some(slot) = target.get_mut(i) {
                *slot = true;
            }
        }
    }
}

/// Drops filters another filter of the list contains: they grant nothing more, for publish
/// (a topic one matches the other does) or subscribe (containment is transitive).
fn prune_contained(filters: &mut Filters) {
    if filters.len() < 2 || filters.len() > PRUNE_FILTERS_MAX {
        return;
    }
    let redundant: Vec<bool> = filters
        .iter()
        .enumerate()
        .map(|(i, inner)| {
            filters
                .iter()
                .enumerate()
                .any(|(j, outer)| i != j && outer.contains(inner.bytes()))
        })
        .collect();
    let mut keep = redundant.iter().map(|r| !r);
    filters.retain(|_| keep.next().unwrap_or(true));
}

/// Parses `clientGroups`, `topicSpaces`, `permissionBindings`, `roleAssignments` of the
/// registry root. Unknown keys inside their entries are reported in `warnings`; other root
/// keys belong to the rest of the registry and are not looked at. Entries may be flat or
/// ARM-style, with their fields in a `properties` object (as exported from Azure).
pub fn parse_policy(
    root: &serde_json::Value,
    warnings: &mut Vec<String>,
) -> Result<Policy, RegistryError> {
    parse::policy(root, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(root: serde_json::Value) -> Result<Policy, RegistryError> {
        parse_policy(&root, &mut Vec::new())
    }

    #[test]
    fn empty_root_grants_nothing() {
        let policy = parse(serde_json::json!({})).unwrap_or_default();
        let p = policy.permissions(&Identity::anonymous("c"));
        assert!(!p.allow_publish(b"a"));
        assert!(!p.allow_subscribe(b"#"));
    }

    #[test]
    fn policy_is_shareable_between_shards() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Policy>();
    }

    #[test]
    fn scopes() {
        use parse::parse_scope;
        use std::collections::HashMap;
        let spaces = HashMap::from([("telemetry".to_owned(), 3)]);
        for (scope, want) in [
            ("/", Ok(None)),
            ("/topicSpaces/telemetry", Ok(Some(3))),
            (
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.EventGrid/namespaces/ns/topicSpaces/telemetry",
                Ok(Some(3)),
            ),
            (
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.EventGrid/namespaces/ns",
                Ok(None),
            ),
        ] {
            assert_eq!(parse_scope(scope, &spaces), want, "{scope}");
        }
        for bad in [
            "",
            "topicSpaces/telemetry",
            "/topicSpaces/other",
            "/foo",
            "/topicSpaces",
        ] {
            assert!(parse_scope(bad, &spaces).is_err(), "{bad}");
        }
    }

    #[test]
    fn pruning_keeps_only_outermost_filters() {
        let mut f: Filters = ["a/#", "a/b", "a/+/c", "b/+", "b/c"]
            .iter()
            .map(|s| Filter::new(Box::from(s.as_bytes())))
            .collect();
        prune_contained(&mut f);
        let left: Vec<&[u8]> = f.iter().map(Filter::bytes).collect();
        assert_eq!(left, [&b"a/#"[..], b"b/+"]);
    }
}
