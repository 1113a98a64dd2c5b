//! Reading JSON objects with paths: every key read is remembered, and the keys nobody read
//! become warnings (`clients[0].description: ignored (not used by ringmq)`). An ARM-style
//! `properties` wrapper object is looked into as well, so resources exported from Azure
//! (`{"name": …, "properties": {"state": …}}`) read like the flat form.

use serde_json::{Map, Value};

use crate::RegistryError;

/// `parent.key`, or `key` at the root.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// The JSON type of a value, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON object being read.
#[derive(Debug)]
pub(crate) struct Fields<'v> {
    path: String,
    map: &'v Map<String, Value>,
    properties: Option<&'v Map<String, Value>>,
    read: Vec<&'static str>,
}

impl<'v> Fields<'v> {
    pub(crate) fn new(v: &'v Value, path: &str) -> Result<Fields<'v>, RegistryError> {
        let Value::Object(map) = v else {
            return Err(RegistryError::new(
                path,
                format!("expected an object, got {}", kind(v)),
            ));
        };
        let properties = match map.get("properties") {
            Some(Value::Object(p)) => Some(p),
            _ => None,
        };
        Ok(Fields {
            path: path.to_owned(),
            map,
            properties,
            read: Vec::new(),
        })
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The value of `key` and its path; in `properties` when not at the top level.
    pub(crate) fn get(&mut self, key: &'static str) -> Option<(&'v Value, String)> {
        self.read.push(key);
        if let Some(v) = self.map.get(key) {
            return Some((v, join(&self.path, key)));
        }
        let props = self.properties?;
        props
            .get(key)
            .map(|v| (v, join(&join(&self.path, "properties"), key)))
    }

    /// Like [`get`](Self::get), treating `null` as absent.
    pub(crate) fn get_some(&mut self, key: &'static str) -> Option<(&'v Value, String)> {
        self.get(key).filter(|(v, _)| !v.is_null())
    }

    pub(crate) fn string(
        &mut self,
        key: &'static str,
    ) -> Result<Option<(&'v str, String)>, RegistryError> {
        match self.get_some(key) {
            None => Ok(None),
            Some((Value::String(s), path)) => Ok(Some((s.as_str(), path))),
            Some((v, path)) => Err(RegistryError::new(
                path,
                format!("expected a string, got {}", kind(v)),
            )),
        }
    }

    pub(crate) fn array(
        &mut self,
        key: &'static str,
    ) -> Result<Option<(&'v Vec<Value>, String)>, RegistryError> {
        match self.get_some(key) {
            None => Ok(None),
            Some((Value::Array(a), path)) => Ok(Some((a, path))),
            Some((v, path)) => Err(RegistryError::new(
                path,
                format!("expected an array, got {}", kind(v)),
            )),
        }
    }

    /// Warns about every key that was not read.
    pub(crate) fn finish(self, warnings: &mut Vec<String>) {
        let read = &self.read;
        for key in self.map.keys() {
            if key == "properties" && self.properties.is_some() {
                continue;
            }
            if !read.iter().any(|k| k == key) {
                warnings.push(format!(
                    "{}: ignored (not used by ringmq)",
                    join(&self.path, key)
                ));
            }
        }
        if let Some(props) = self.properties {
            let base = join(&self.path, "properties");
            for key in props.keys() {
                if !read.iter().any(|k| k == key) {
                    warnings.push(format!(
                        "{}: ignored (not used by ringmq)",
                        join(&base, key)
                    ));
                }
            }
        }
    }
}
