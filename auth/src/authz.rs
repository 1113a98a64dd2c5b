//! Authorization. STUB — the authorization helper replaces this file.

use crate::{Identity, RegistryError};

/// Client groups, topic spaces, permission bindings and role assignments, compiled.
#[derive(Debug, Default)]
pub struct Policy {}

impl Policy {
    /// The permissions of one client.
    pub fn permissions(&self, identity: &Identity) -> Permissions {
        let _ = identity;
        Permissions { allow_all: false }
    }
}

/// Parses `clientGroups`, `topicSpaces`, `permissionBindings`, `roleAssignments` of the
/// registry root.
pub fn parse_policy(
    root: &serde_json::Value,
    warnings: &mut Vec<String>,
) -> Result<Policy, RegistryError> {
    let _ = (root, warnings);
    Ok(Policy::default())
}

/// What one session may publish and subscribe to, compiled once per CONNECT.
#[derive(Debug, Clone)]
pub struct Permissions {
    allow_all: bool,
}

impl Permissions {
    pub fn allow_all() -> Permissions {
        Permissions { allow_all: true }
    }

    pub fn allow_publish(&self, topic: &[u8]) -> bool {
        let _ = topic;
        self.allow_all
    }

    pub fn allow_subscribe(&self, filter: &[u8]) -> bool {
        let _ = filter;
        self.allow_all
    }
}
