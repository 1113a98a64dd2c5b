//! Authorization, the Event Grid way: client groups (queries over a client's attributes),
//! topic spaces (topic templates), permission bindings (group × space × Publisher/Subscriber),
//! RBAC role assignments for OAUTH2-JWT principals, and JWT claim rules (docs/authorization.md).
//!
//! The registry's sections are parsed once into a [`Policy`]; a session's [`Permissions`] are
//! compiled from it once per CONNECT, re-authentication or reload (templates expanded into
//! concrete filters, claim rules compiled), so the per-PUBLISH check is a walk over a few
//! filters or a cache hit, and allocates nothing.

mod permissions;
pub mod query;
mod template;

use std::collections::HashMap;

use ringmq_codec::topic::filter_contains;
use serde_json::{Map, Value};

pub use permissions::{CLAIM_RULES_SIZE_LIMIT, MAX_CLAIM_RULES, PUBLISH_CACHE_SLOTS, Permissions};
pub use query::{MAX_IN_LIST, MAX_QUERY_CHARS, MAX_QUERY_DEPTH, Query, QueryError};

use crate::{Identity, RegistryError};
use permissions::Access;
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
type Filters = Vec<Box<[u8]>>;

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
        let mut filters: Filters = self
            .spaces
            .iter()
            .zip(spaces)
            .filter(|(_, on)| **on)
            .flat_map(|(space, _)| &space.templates)
            .filter_map(|t| t.expand(identity))
            .map(|f| f.into_bytes().into_boxed_slice())
            .collect();
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
                .any(|(j, outer)| i != j && filter_contains(outer, inner))
        })
        .collect();
    let mut keep = redundant.iter().map(|r| !r);
    filters.retain(|_| keep.next().unwrap_or(true));
}

/// Parses `clientGroups`, `topicSpaces`, `permissionBindings`, `roleAssignments` of the
/// registry root. Unknown keys inside them are reported in `warnings`; other root keys belong
/// to the rest of the registry and are not looked at.
pub fn parse_policy(
    root: &serde_json::Value,
    warnings: &mut Vec<String>,
) -> Result<Policy, RegistryError> {
    let mut policy = Policy::default();
    let mut group_index = HashMap::new();
    for (i, item) in section(root, "clientGroups", MAX_CLIENT_GROUPS)?
        .iter()
        .enumerate()
    {
        let path = format!("clientGroups[{i}]");
        let obj = object(item, &path, &["name", "query", "description"], warnings)?;
        let name = resource_name(obj, &path)?;
        let query_text = string(obj, "query", &path)?;
        let query = query::parse(query_text).map_err(|e| {
            RegistryError::new(
                format!("{path}.query"),
                format!("client group `{name}`: query does not parse {e}"),
            )
        })?;
        if group_index
            .insert(name.to_owned(), policy.groups.len())
            .is_some()
        {
            return Err(duplicate(&path, "client group", name));
        }
        policy.groups.push(ClientGroup {
            name: name.to_owned(),
            query,
        });
    }
    let mut space_index = HashMap::new();
    for (i, item) in section(root, "topicSpaces", MAX_TOPIC_SPACES)?
        .iter()
        .enumerate()
    {
        let path = format!("topicSpaces[{i}]");
        let obj = object(
            item,
            &path,
            &["name", "topicTemplates", "description"],
            warnings,
        )?;
        let name = resource_name(obj, &path)?;
        let templates = topic_templates(obj, &path)?;
        if space_index
            .insert(name.to_owned(), policy.spaces.len())
            .is_some()
        {
            return Err(duplicate(&path, "topic space", name));
        }
        policy.spaces.push(TopicSpace { templates });
    }
    let mut binding_names = HashMap::new();
    for (i, item) in section(root, "permissionBindings", MAX_PERMISSION_BINDINGS)?
        .iter()
        .enumerate()
    {
        let path = format!("permissionBindings[{i}]");
        let allowed = [
            "name",
            "clientGroupName",
            "topicSpaceName",
            "permission",
            "description",
        ];
        let obj = object(item, &path, &allowed, warnings)?;
        let name = resource_name(obj, &path)?;
        if binding_names.insert(name.to_owned(), i).is_some() {
            return Err(duplicate(&path, "permission binding", name));
        }
        let group_name = string(obj, "clientGroupName", &path)?;
        let group = if group_name == ALL_CLIENTS_GROUP {
            GroupRef::All
        } else {
            let i = group_index.get(group_name).ok_or_else(|| {
                RegistryError::new(
                    format!("{path}.clientGroupName"),
                    format!("no client group is named `{group_name}` (nor is it `$all`)"),
                )
            })?;
            GroupRef::Group(*i)
        };
        let space_name = string(obj, "topicSpaceName", &path)?;
        let space = *space_index.get(space_name).ok_or_else(|| {
            RegistryError::new(
                format!("{path}.topicSpaceName"),
                format!("no topic space is named `{space_name}`"),
            )
        })?;
        let permission = match string(obj, "permission", &path)? {
            p if p.eq_ignore_ascii_case("Publisher") => Permission::Publisher,
            p if p.eq_ignore_ascii_case("Subscriber") => Permission::Subscriber,
            other => {
                return Err(RegistryError::new(
                    format!("{path}.permission"),
                    format!("`{other}` is not `Publisher` or `Subscriber`"),
                ));
            }
        };
        policy.bindings.push(Binding {
            group,
            space,
            permission,
        });
    }
    for (i, item) in section(root, "roleAssignments", MAX_ROLE_ASSIGNMENTS)?
        .iter()
        .enumerate()
    {
        let path = format!("roleAssignments[{i}]");
        let allowed = ["principalId", "roleDefinitionName", "scope", "description"];
        let obj = object(item, &path, &allowed, warnings)?;
        let principal_id = string(obj, "principalId", &path)?;
        if principal_id.is_empty() {
            return Err(RegistryError::new(
                format!("{path}.principalId"),
                "is empty",
            ));
        }
        let permission = match string(obj, "roleDefinitionName", &path)? {
            r if r.eq_ignore_ascii_case(PUBLISHER_ROLE) => Permission::Publisher,
            r if r.eq_ignore_ascii_case(SUBSCRIBER_ROLE) => Permission::Subscriber,
            other => {
                return Err(RegistryError::new(
                    format!("{path}.roleDefinitionName"),
                    format!("`{other}` is not `{PUBLISHER_ROLE}` or `{SUBSCRIBER_ROLE}`"),
                ));
            }
        };
        let scope = string(obj, "scope", &path)?;
        let space = parse_scope(scope, &space_index)
            .map_err(|problem| RegistryError::new(format!("{path}.scope"), problem))?;
        policy.roles.push(RoleAssignment {
            principal_id: principal_id.to_owned(),
            permission,
            space,
        });
    }
    Ok(policy)
}

/// A role assignment's scope: `/` or a namespace resource id (`.../namespaces/<ns>`) is the
/// whole namespace (`None`); `/topicSpaces/<name>`, or a resource id ending so, one space.
fn parse_scope(scope: &str, spaces: &HashMap<String, usize>) -> Result<Option<usize>, String> {
    let segments: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
    if !scope.starts_with('/') {
        return Err(format!("scope `{scope}` does not start with `/`"));
    }
    match segments.as_slice() {
        [] => Ok(None),
        [.., kind, name] if kind.eq_ignore_ascii_case("topicSpaces") => spaces
            .get(*name)
            .map(|i| Some(*i))
            .ok_or_else(|| format!("no topic space is named `{name}`")),
        [.., kind, _] if kind.eq_ignore_ascii_case("namespaces") => Ok(None),
        _ => Err(format!(
            "scope `{scope}` is not `/`, `/topicSpaces/<name>` or a namespace or topic space resource id"
        )),
    }
}

fn section<'a>(root: &'a Value, key: &str, max: usize) -> Result<&'a [Value], RegistryError> {
    match root.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) if items.len() > max => Err(RegistryError::new(
            key,
            format!("{} entries, at most {max} allowed", items.len()),
        )),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(RegistryError::new(key, "must be an array")),
    }
}

fn object<'a>(
    value: &'a Value,
    path: &str,
    allowed: &[&str],
    warnings: &mut Vec<String>,
) -> Result<&'a Map<String, Value>, RegistryError> {
    let obj = value
        .as_object()
        .ok_or_else(|| RegistryError::new(path, "must be an object"))?;
    for key in obj.keys().filter(|k| !allowed.contains(&k.as_str())) {
        warnings.push(format!("`{path}.{key}`: unknown key, ignored"));
    }
    Ok(obj)
}

fn string<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a str, RegistryError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(RegistryError::new(
            format!("{path}.{key}"),
            "must be a string",
        )),
        None => Err(RegistryError::new(format!("{path}.{key}"), "is missing")),
    }
}

/// A group, space or binding name: 1 to 128 letters, digits, `-`, `_` or `.` (so `$all` stays
/// reserved).
fn resource_name<'a>(obj: &'a Map<String, Value>, path: &str) -> Result<&'a str, RegistryError> {
    let name = string(obj, "name", path)?;
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(valid) {
        return Err(RegistryError::new(
            format!("{path}.name"),
            format!("`{name}`: a name is 1 to {MAX_NAME_CHARS} letters, digits, `-`, `_` or `.`"),
        ));
    }
    Ok(name)
}

fn topic_templates(obj: &Map<String, Value>, path: &str) -> Result<Vec<Template>, RegistryError> {
    let key_path = format!("{path}.topicTemplates");
    let items = match obj.get("topicTemplates") {
        Some(Value::Array(items)) => items,
        Some(_) => return Err(RegistryError::new(key_path, "must be an array of strings")),
        None => return Err(RegistryError::new(key_path, "is missing")),
    };
    if items.is_empty() || items.len() > MAX_TOPIC_TEMPLATES {
        return Err(RegistryError::new(
            key_path,
            format!(
                "{} templates: 1 to {MAX_TOPIC_TEMPLATES} allowed",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let item_path = format!("{key_path}[{i}]");
            let source = item
                .as_str()
                .ok_or_else(|| RegistryError::new(&*item_path, "must be a string"))?;
            Template::parse(source)
                .map_err(|e| RegistryError::new(item_path, format!("template `{source}`: {e}")))
        })
        .collect()
}

fn duplicate(path: &str, what: &str, name: &str) -> RegistryError {
    RegistryError::new(
        format!("{path}.name"),
        format!("a {what} named `{name}` is already defined"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(root: Value) -> Result<Policy, RegistryError> {
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
    fn scopes() {
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
        let mut f: Vec<Box<[u8]>> = ["a/#", "a/b", "a/+/c", "b/+", "b/c"]
            .iter()
            .map(|s| Box::from(s.as_bytes()))
            .collect();
        prune_contained(&mut f);
        let left: Vec<&[u8]> = f.iter().map(|f| &**f).collect();
        assert_eq!(left, [&b"a/#"[..], b"b/+"]);
    }
}
