//! The Mosquitto `acl_file` syntax, line by line (mosquitto.conf(5), "acl_file"):
//!
//! ```text
//! # comment
//! topic [read|write|readwrite|deny] FILTER   # before any `user` line: anonymous clients
//! user NAME                                  # the following `topic` lines are NAME's
//! pattern [read|write|readwrite|deny] FILTER # every client, with %c and %u substituted
//! ```
//!
//! As Mosquitto 2.0 reads it: the access word is optional (read and write) and is only taken
//! as one when text follows it, so `topic read` names the topic `read`; the filter is the rest
//! of the line, spaces included; a user name is the rest of its line. Deviations, all
//! refusing less than Mosquitto would or nothing it accepts: tabs separate words as spaces
//! do, and a comment may be indented. Every problem names its line.

use ringmq_codec::topic::{parse_shared, validate_topic_filter};

use super::{
    ACL_ENTRIES_MAX, ACL_LINE_BYTES_MAX, ACL_PATTERNS_MAX, ACL_USERS_MAX, AclAccess, AclError,
    AclFile, Rule,
};

/// Parses the text of an ACL file; `warnings` collects what Mosquitto would warn about
/// (a pattern using neither `%c` nor `%u`).
pub(super) fn parse(text: &[u8], warnings: &mut Vec<String>) -> Result<AclFile, AclError> {
    let mut acl = AclFile::default();
    let mut user: Option<String> = None;
    let mut entries = 0usize;
    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let err = |problem: String| AclError { line, problem };
        if raw.len() > ACL_LINE_BYTES_MAX {
            return Err(err(format!("line longer than {ACL_LINE_BYTES_MAX} bytes")));
        }
        let Ok(raw) = std::str::from_utf8(raw) else {
            return Err(err("not UTF-8".into()));
        };
        let content = raw.trim_matches(is_blank);
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let (keyword, rest) = split_word(content);
        match keyword {
            "topic" | "pattern" => {
                entries += 1;
                if entries > ACL_ENTRIES_MAX {
                    return Err(err(format!(
                        "more than {ACL_ENTRIES_MAX} topic and pattern lines"
                    )));
                }
                let rule = rule(rest).map_err(err)?;
                if keyword == "pattern" {
                    if acl.patterns.len() >= ACL_PATTERNS_MAX {
                        return Err(err(format!(
                            "more than {ACL_PATTERNS_MAX} pattern lines (each is expanded at every CONNECT)"
                        )));
                    }
                    if !rule.filter.contains("%c") && !rule.filter.contains("%u") {
                        warnings.push(format!(
                            "line {line}: pattern {:?} contains neither %c nor %u",
                            rule.filter
                        ));
                    }
                    acl.patterns.push(rule);
                } else {
                    match &user {
                        None => acl.anonymous.push(rule),
                        Some(name) => {
                            if !acl.users.contains_key(name) && acl.users.len() >= ACL_USERS_MAX {
                                return Err(err(format!("more than {ACL_USERS_MAX} users")));
                            }
                            acl.users.entry(name.clone()).or_default().push(rule);
                        }
                    }
                }
            }
            "user" => {
                if rest.is_empty() {
                    return Err(err("`user` without a user name".into()));
                }
                user = Some(rest.to_owned());
            }
            other => {
                return Err(err(format!(
                    "unknown keyword {other:?}: a line is `topic`, `pattern`, `user` or a `#` comment"
                )));
            }
        }
    }
    Ok(acl)
}

/// The blanks Mosquitto trims (`isspace`) and separates words with (a space; a tab here too).
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\x0b' | '\x0c')
}

/// The first word and the rest of `text` (both trimmed).
fn split_word(text: &str) -> (&str, &str) {
    match text.find(is_blank) {
        None => (text, ""),
        Some(i) => (&text[..i], text[i..].trim_matches(is_blank)),
    }
}

/// `[ACCESS] FILTER` of a `topic` or `pattern` line.
fn rule(rest: &str) -> Result<Rule, String> {
    if rest.is_empty() {
        return Err("empty topic".into());
    }
    let (first, after) = split_word(rest);
    let (access, filter) = if after.is_empty() {
        (AclAccess::ReadWrite, first)
    } else {
        let access = match first {
            "read" => AclAccess::Read,
            "write" => AclAccess::Write,
            "readwrite" => AclAccess::ReadWrite,
            "deny" => AclAccess::Deny,
            other => {
                return Err(format!(
                    "invalid access type {other:?}: use read, write, readwrite or deny"
                ));
            }
        };
        (access, after)
    };
    validate_topic_filter(filter.as_bytes())
        .map_err(|e| format!("invalid topic filter {filter:?}: {e}"))?;
    if matches!(parse_shared(filter.as_bytes()), Ok(Some(_))) {
        return Err(format!(
            "{filter:?}: an ACL names topics; a `$share/` subscription is checked by the filter after its group"
        ));
    }
    Ok(Rule {
        access,
        filter: filter.to_owned(),
    })
}
