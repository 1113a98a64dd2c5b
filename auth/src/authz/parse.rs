//! Reading the authorization sections of the registry JSON, every problem located by its path.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::template::Template;
use super::{
    ALL_CLIENTS_GROUP, Binding, ClientGroup, GroupRef, MAX_CLIENT_GROUPS, MAX_NAME_CHARS,
    MAX_PERMISSION_BINDINGS, MAX_ROLE_ASSIGNMENTS, MAX_TOPIC_SPACES, MAX_TOPIC_TEMPLATES,
    PUBLISHER_ROLE, Permission, Policy, RoleAssignment, SUBSCRIBER_ROLE, TopicSpace, query,
};
use crate::RegistryError;

/// Names to indices, for resolving references.
type Index = HashMap<String, usize>;

pub(super) fn policy(root: &Value, warnings: &mut Vec<String>) -> Result<Policy, RegistryError> {
    let mut policy = Policy::default();
    let groups = client_groups(root, &mut policy, warnings)?;
    let spaces = topic_spaces(root, &mut policy, warnings)?;
    permission_bindings(root, &mut policy, &groups, &spaces, warnings)?;
    role_assignments(root, &mut policy, &spaces, warnings)?;
    Ok(policy)
}

fn client_groups(
    root: &Value,
    policy: &mut Policy,
    warnings: &mut Vec<String>,
) -> Result<Index, RegistryError> {
    let mut index = Index::new();
    for (i, item) in section(root, "clientGroups", MAX_CLIENT_GROUPS)?
        .iter()
        .enumerate()
    {
        let entry = Entry::new(
            item,
            format!("clientGroups[{i}]"),
            &["name", "query"],
            warnings,
        )?;
        let name = entry.resource_name()?;
        let query = query::parse(entry.string("query")?).map_err(|e| {
            entry.error(
                "query",
                format!("client group `{name}`: query does not parse {e}"),
            )
        })?;
        if index.insert(name.to_owned(), policy.groups.len()).is_some() {
            return Err(entry.duplicate("client group", name));
        }
        let name = name.to_owned();
        policy.groups.push(ClientGroup { name, query });
    }
    Ok(index)
}

fn topic_spaces(
    root: &Value,
    policy: &mut Policy,
    warnings: &mut Vec<String>,
) -> Result<Index, RegistryError> {
    let mut index = Index::new();
    for (i, item) in section(root, "topicSpaces", MAX_TOPIC_SPACES)?
        .iter()
        .enumerate()
    {
        let allowed = ["name", "topicTemplates"];
        let entry = Entry::new(item, format!("topicSpaces[{i}]"), &allowed, warnings)?;
        let name = entry.resource_name()?;
        let templates = entry.topic_templates()?;
        if index.insert(name.to_owned(), policy.spaces.len()).is_some() {
            return Err(entry.duplicate("topic space", name));
        }
        policy.spaces.push(TopicSpace { templates });
    }
    Ok(index)
}

fn permission_bindings(
    root: &Value,
    policy: &mut Policy,
    groups: &Index,
    spaces: &Index,
    warnings: &mut Vec<String>,
) -> Result<(), RegistryError> {
    let mut names = Index::new();
    let items = section(root, "permissionBindings", MAX_PERMISSION_BINDINGS)?;
    for (i, item) in items.iter().enumerate() {
        let allowed = ["name", "clientGroupName", "topicSpaceName", "permission"];
        let entry = Entry::new(item, format!("permissionBindings[{i}]"), &allowed, warnings)?;
        let name = entry.resource_name()?;
        if names.insert(name.to_owned(), i).is_some() {
            return Err(entry.duplicate("permission binding", name));
        }
        let group = match entry.string("clientGroupName")? {
            ALL_CLIENTS_GROUP => GroupRef::All,
            group => GroupRef::Group(*groups.get(group).ok_or_else(|| {
                let problem = format!("no client group is named `{group}` (nor is it `$all`)");
                entry.error("clientGroupName", problem)
            })?),
        };
        let space_name = entry.string("topicSpaceName")?;
        let space = *spaces.get(space_name).ok_or_else(|| {
            entry.error(
                "topicSpaceName",
                format!("no topic space is named `{space_name}`"),
            )
        })?;
        let permission = match entry.string("permission")? {
            p if p.eq_ignore_ascii_case("Publisher") => Permission::Publisher,
            p if p.eq_ignore_ascii_case("Subscriber") => Permission::Subscriber,
            other => {
                let problem = format!("`{other}` is not `Publisher` or `Subscriber`");
                return Err(entry.error("permission", problem));
            }
        };
        policy.bindings.push(Binding {
            group,
            space,
            permission,
        });
    }
    Ok(())
}

fn role_assignments(
    root: &Value,
    policy: &mut Policy,
    spaces: &Index,
    warnings: &mut Vec<String>,
) -> Result<(), RegistryError> {
    for (i, item) in section(root, "roleAssignments", MAX_ROLE_ASSIGNMENTS)?
        .iter()
        .enumerate()
    {
        let allowed = ["principalId", "roleDefinitionName", "scope"];
        let entry = Entry::new(item, format!("roleAssignments[{i}]"), &allowed, warnings)?;
        let principal_id = entry.string("principalId")?;
        if principal_id.is_empty() {
            return Err(entry.error("principalId", "is empty"));
        }
        let permission = match entry.string("roleDefinitionName")? {
            r if r.eq_ignore_ascii_case(PUBLISHER_ROLE) => Permission::Publisher,
            r if r.eq_ignore_ascii_case(SUBSCRIBER_ROLE) => Permission::Subscriber,
            other => {
                let problem = format!("`{other}` is not `{PUBLISHER_ROLE}` or `{SUBSCRIBER_ROLE}`");
                return Err(entry.error("roleDefinitionName", problem));
            }
        };
        let space = parse_scope(entry.string("scope")?, spaces)
            .map_err(|problem| entry.error("scope", problem))?;
        policy.roles.push(RoleAssignment {
            principal_id: principal_id.to_owned(),
            permission,
            space,
        });
    }
    Ok(())
}

/// A role assignment's scope: `/` or a namespace resource id (`.../namespaces/<ns>`) is the
/// whole namespace (`None`); `/topicSpaces/<name>`, or a resource id ending so, one space.
pub(super) fn parse_scope(scope: &str, spaces: &Index) -> Result<Option<usize>, String> {
    if !scope.starts_with('/') {
        return Err(format!("scope `{scope}` does not start with `/`"));
    }
    let segments: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] => Ok(None),
        [.., kind, name] if kind.eq_ignore_ascii_case("topicSpaces") => spaces
            .get(*name)
            .map(|i| Some(*i))
            .ok_or_else(|| format!("no topic space is named `{name}`")),
        [.., kind, _] if kind.eq_ignore_ascii_case("namespaces") => Ok(None),
        _ => Err(format!(
            "scope `{scope}` is not `/`, `/topicSpaces/<name>`, or a namespace or topic space \
             resource id"
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

/// One entry of a section: its fields flat or under an ARM-style `properties` object.
struct Entry<'a> {
    path: String,
    flat: &'a Map<String, Value>,
    properties: Option<&'a Map<String, Value>>,
}

impl<'a> Entry<'a> {
    /// Reads an entry; keys other than `allowed` (and `description`, `properties`) are
    /// reported in `warnings` as ignored.
    fn new(
        value: &'a Value,
        path: String,
        allowed: &[&str],
        warnings: &mut Vec<String>,
    ) -> Result<Entry<'a>, RegistryError> {
        let flat = value
            .as_object()
            .ok_or_else(|| RegistryError::new(&path, "must be an object"))?;
        let properties = match flat.get("properties") {
            None => None,
            Some(Value::Object(p)) => Some(p),
            Some(_) => {
                return Err(RegistryError::new(
                    format!("{path}.properties"),
                    "must be an object",
                ));
            }
        };
        let known = |k: &String| allowed.contains(&k.as_str()) || k == "description";
        for key in flat.keys().filter(|k| !known(k) && *k != "properties") {
            warnings.push(format!("{path}.{key}: ignored (not used by ringmq)"));
        }
        for key in properties
            .iter()
            .flat_map(|p| p.keys())
            .filter(|k| !known(k))
        {
            warnings.push(format!(
                "{path}.properties.{key}: ignored (not used by ringmq)"
            ));
        }
        Ok(Entry {
            path,
            flat,
            properties,
        })
    }

    /// A field and its path (the flat field wins over one under `properties`).
    fn get(&self, key: &str) -> (Option<&'a Value>, String) {
        if let Some(v) = self.flat.get(key) {
            return (Some(v), format!("{}.{key}", self.path));
        }
        match self.properties.and_then(|p| p.get(key)) {
            Some(v) => (Some(v), format!("{}.properties.{key}", self.path)),
            None => (None, format!("{}.{key}", self.path)),
        }
    }

    fn error(&self, key: &str, problem: impl Into<String>) -> RegistryError {
        RegistryError::new(self.get(key).1, problem)
    }

    fn string(&self, key: &str) -> Result<&'a str, RegistryError> {
        match self.get(key) {
            (Some(Value::String(s)), _) => Ok(s),
            (Some(_), path) => Err(RegistryError::new(path, "must be a string")),
            (None, path) => Err(RegistryError::new(path, "is missing")),
        }
    }

    /// A group, space or binding name: 1 to 128 letters, digits, `-`, `_` or `.` (so `$all`
    /// stays reserved).
    fn resource_name(&self) -> Result<&'a str, RegistryError> {
        let name = self.string("name")?;
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(valid) {
            return Err(self.error(
                "name",
                format!(
                    "`{name}`: a name is 1 to {MAX_NAME_CHARS} letters, digits, `-`, `_` or `.`"
                ),
            ));
        }
        Ok(name)
    }

    fn duplicate(&self, what: &str, name: &str) -> RegistryError {
        self.error(
            "name",
            format!("a {what} named `{name}` is already defined"),
        )
    }

    fn topic_templates(&self) -> Result<Vec<Template>, RegistryError> {
        let items = match self.get("topicTemplates") {
            (Some(Value::Array(items)), path) => (items, path),
            (Some(_), path) => return Err(RegistryError::new(path, "must be an array of strings")),
            (None, path) => return Err(RegistryError::new(path, "is missing")),
        };
        let (items, path) = items;
        if items.is_empty() || items.len() > MAX_TOPIC_TEMPLATES {
            let problem = format!(
                "{} templates: 1 to {MAX_TOPIC_TEMPLATES} allowed",
                items.len()
            );
            return Err(RegistryError::new(path, problem));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item_path = format!("{path}[{i}]");
                let source = item
                    .as_str()
                    .ok_or_else(|| RegistryError::new(&*item_path, "must be a string"))?;
                Template::parse(source)
                    .map_err(|e| RegistryError::new(item_path, format!("template `{source}`: {e}")))
            })
            .collect()
    }
}
