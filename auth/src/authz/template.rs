//! Topic templates: topic filters with `${client.authenticationName}` and
//! `${client.attributes.<key>}` variables, expanded per client into concrete filters.
//!
//! A variable fills a whole level or part of one, never more: a value that is empty, contains
//! `/`, `+`, `#` or U+0000, or would make the filter start with `$` where the template does
//! not, makes that template grant nothing to that client (a name like `a/#` must not widen
//! its own grant). So does a variable without a single value: a missing attribute or an array
//! (Event Grid substitutes single values only). Integers substitute as decimal, booleans as
//! `true`/`false`.

use std::fmt::Write as _;

use ringmq_codec::topic::{MAX_TOPIC_LEN, parse_shared, validate_topic_filter};

use crate::{AttrValue, Identity};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    AuthenticationName,
    Attribute(String),
}

/// A parsed, validated topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

const AUTH_NAME_VAR: &str = "client.authenticationName";
const ATTRIBUTE_VAR: &str = "client.attributes.";

impl Template {
    /// Parses and validates a template; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        let mut literal = String::new();
        while let Some(start) = rest.find("${") {
            literal.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(format!(
                    "`${{` at byte {} is not closed with `}}`",
                    source.len() - rest.len() + start
                ));
            };
            let var = &after[..end];
            let part = if var == AUTH_NAME_VAR {
                Part::AuthenticationName
            } else if let Some(key) = var.strip_prefix(ATTRIBUTE_VAR) {
                if key.is_empty()
                    || !key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!(
                        "`${{{var}}}`: an attribute name is letters, digits, `_` and `-`"
                    ));
                }
                Part::Attribute(key.to_owned())
            } else {
                return Err(format!(
                    "unknown variable `${{{var}}}`: use `${{client.authenticationName}}` or `${{client.attributes.<name>}}`"
                ));
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        let template = Template { parts };
        // Any value a variable may take is one non-wildcard piece of a level: check the
        // template as a filter with a placeholder in place of each variable.
        let placeholder = template.placeholder();
        validate_topic_filter(placeholder.as_bytes()).map_err(|e| e.to_string())?;
        if matches!(parse_shared(placeholder.as_bytes()), Ok(Some(_))) {
            return Err("a template cannot be a `$share/` filter".into());
        }
        Ok(template)
    }

    /// The concrete filter this template grants `identity`, or `None` when it grants nothing.
    #[cfg(test)]
    pub fn expand(&self, identity: &Identity) -> Option<String> {
        let mut out = String::new();
        self.expand_into(identity, &mut out).then_some(out)
    }

    /// Writes the concrete filter this template grants `identity` into `out` (cleared first;
    /// a scratch buffer reused across templates) and returns true, or returns false when it
    /// grants nothing.
    pub fn expand_into(&self, identity: &Identity, out: &mut String) -> bool {
        out.clear();
        if self.render_into(identity, out).is_none() {
            return false;
        }
        let starts_with_variable = !matches!(self.parts.first(), Some(Part::Literal(_)));
        out.len() <= MAX_TOPIC_LEN && !(starts_with_variable && out.starts_with('$'))
    }

    /// The template with `v` for each variable.
    fn placeholder(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                _ => out.push('v'),
            }
        }
        out
    }

    /// Renders with the client's values, formatting integer and boolean attributes.
    fn render_into(&self, identity: &Identity, out: &mut String) -> Option<()> {
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::AuthenticationName => {
                    out.push_str(safe_value(&identity.authentication_name)?)
                }
                Part::Attribute(key) => match identity.attributes.get(key)? {
                    AttrValue::String(s) => out.push_str(safe_value(s)?),
                    AttrValue::Integer(i) => write!(out, "{i}").ok()?,
                    AttrValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                    AttrValue::Array(_) => return None,
                },
            }
        }
        Some(())
    }
}

/// A substituted value may be part of one level only, and not a wildcard.
fn safe_value(value: &str) -> Option<&str> {
    let unsafe_byte = |b: &u8| matches!(b, b'/' | b'+' | b'#' | 0);
    (!value.is_empty() && !value.as_bytes().iter().any(unsafe_byte)).then_some(value)
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use crate::AttrValue as V;

    fn client(name: &str, attrs: &[(&str, V)]) -> Identity {
        let mut id = Identity::anonymous(name);
        for (k, v) in attrs {
            id.attributes.insert((*k).to_owned(), v.clone());
        }
        id
    }

    fn expand(template: &str, id: &Identity) -> Option<String> {
        match Template::parse(template) {
            Ok(t) => t.expand(id),
            Err(e) => panic!("{template:?}: {e}"),
        }
    }

    #[test]
    fn variables_fill_levels_and_parts_of_levels() {
        let id = client(
            "truck-17",
            &[
                ("zone", V::String("eu".into())),
                ("year", V::Integer(2023)),
                ("ev", V::Bool(true)),
                ("tags", V::Array(vec![V::String("a".into())])),
            ],
        );
        let cases = [
            (
                "fleet/${client.attributes.zone}/${client.authenticationName}/#",
                Some("fleet/eu/truck-17/#"),
            ),
            (
                "fleet/dev-${client.authenticationName}-x/+",
                Some("fleet/dev-truck-17-x/+"),
            ),
            (
                "y/${client.attributes.year}/${client.attributes.ev}",
                Some("y/2023/true"),
            ),
            ("${client.authenticationName}", Some("truck-17")),
            ("static/+/#", Some("static/+/#")),
            ("t/${client.attributes.tags}", None),
            ("t/${client.attributes.missing}", None),
        ];
        for (t, want) in cases {
            assert_eq!(expand(t, &id).as_deref(), want, "{t}");
        }
    }

    #[test]
    fn unsafe_values_grant_nothing() {
        for name in ["a/b", "+", "#", "a+", "", "$SYS"] {
            let id = client(name, &[]);
            assert_eq!(
                expand("${client.authenticationName}/x", &id),
                None,
                "{name:?}"
            );
        }
        // `$` is fine inside a level and where the template itself starts with a literal.
        let id = client("$x", &[]);
        assert_eq!(
            expand("d/${client.authenticationName}", &id).as_deref(),
            Some("d/$x")
        );
    }

    #[test]
    fn invalid_templates() {
        for t in [
            "",
            "a/#/b",
            "a/b#",
            "a/+${client.authenticationName}",
            "a/${client.authenticationName}#",
            "a/${client.name}",
            "a/${client.attributes.}",
            "a/${client.authenticationName",
            "$share/g/a",
        ] {
            assert!(Template::parse(t).is_err(), "{t:?}");
        }
        assert!(Template::parse("$SYS/${client.authenticationName}/#").is_ok());
    }
}
