//! A Mosquitto-compatible ACL file (`[auth] acl_file`): per-user `topic` lines, the anonymous
//! section at the top, and `pattern` lines with `%c` (client id) and `%u` (user name) for
//! every client (docs/authorization.md, "ACL file").
//!
//! The file is parsed once per load into an [`AclFile`]; a session's [`SessionAcl`] is
//! compiled from it at CONNECT (and again on re-authentication or reload): its user section is
//! shared with every session of that user (an `Arc` clone), its patterns are substituted once.
//! The PUBLISH check is then a walk over a few compiled filters and allocates nothing.
//!
//! Meaning, as Mosquitto 2.0's `acl_file` check has it: the user's section (the anonymous one
//! for a client without a user name) is looked at first, then the patterns; within each, a
//! matching `deny` line refuses, else a matching line granting the access allows, else the
//! next stage is tried; nothing matching refuses. A user's `topic` allow therefore wins over
//! a `pattern deny`, as in Mosquitto.
//!
//! Subscriptions are where ringmq differs: Mosquitto 2.0 accepts every SUBSCRIBE and drops,
//! message by message, what the client may not read; ringmq decides at SUBSCRIBE (0x87 /
//! 3.1.1 0x80), granting a filter only when every topic it can match is readable — it lies
//! within a read grant and meets no `deny` line. A filter that is only partly readable is
//! refused rather than silently thinned.
//!
//! What it must never do: panic or run unbounded on a hostile file (line length, entries,
//! users and patterns are capped; errors name the line), or let a client name widen its own
//! grant through a pattern (a `%c`/`%u` value containing `+`, `#` or `/` gets nothing from
//! the patterns).

mod parse;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use ringmq_codec::topic::{MAX_TOPIC_LEN, levels, parse_shared};

use crate::authz::Filter;

/// Largest ACL file read.
pub const ACL_FILE_BYTES_MAX: u64 = 16 << 20;
/// Longest line (a topic filter is at most 65 535 bytes).
pub const ACL_LINE_BYTES_MAX: usize = 65_600;
/// Most `topic` and `pattern` lines.
pub const ACL_ENTRIES_MAX: usize = 100_000;
/// Most `user` sections.
pub const ACL_USERS_MAX: usize = 100_000;
/// Most `pattern` lines: each is expanded at every CONNECT.
pub const ACL_PATTERNS_MAX: usize = 1_000;

/// What one line grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclAccess {
    Deny,
    Read,
    Write,
    ReadWrite,
}

impl AclAccess {
    fn grants(self, want: Want) -> bool {
        match want {
            Want::Read => matches!(self, AclAccess::Read | AclAccess::ReadWrite),
            Want::Write => matches!(self, AclAccess::Write | AclAccess::ReadWrite),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Want {
    Read,
    Write,
}

/// One `topic` or `pattern` line as written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: AclAccess,
    filter: String,
}

/// A problem in an ACL file, at a line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct AclError {
    pub line: usize,
    pub problem: String,
}

/// One compiled line of a session.
#[derive(Debug, Clone)]
struct Entry {
    access: AclAccess,
    filter: Filter,
}

/// Compiled lines, `deny` lines first (Mosquitto looks at denials first).
type Entries = Arc<[Entry]>;

fn compile(rules: &[Rule]) -> Entries {
    let mut entries: Vec<Entry> = rules
        .iter()
        .map(|r| Entry {
            access: r.access,
            filter: Filter::new(Box::from(r.filter.as_bytes())),
        })
        .collect();
    entries.sort_by_key(|e| e.access != AclAccess::Deny);
    entries.into()
}

/// A parsed ACL file. Immutable; shared by every shard through the snapshot.
#[derive(Debug, Default)]
pub struct AclFile {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
    /// The sections compiled once, shared by the sessions that use them.
    compiled_anonymous: Option<Entries>,
    compiled_users: HashMap<String, Entries>,
    uses_client_id: bool,
    uses_username: bool,
}

impl AclFile {
    /// Parses ACL text; `warnings` collects non-fatal findings for the log.
    pub fn parse(text: &str, warnings: &mut Vec<String>) -> Result<AclFile, AclError> {
        AclFile::parse_bytes(text.as_bytes(), warnings)
    }

    fn parse_bytes(text: &[u8], warnings: &mut Vec<String>) -> Result<AclFile, AclError> {
        let mut acl = parse::parse(text, warnings)?;
        acl.compiled_anonymous = (!acl.anonymous.is_empty()).then(|| compile(&acl.anonymous));
        acl.compiled_users = acl
            .users
            .iter()
            .map(|(name, rules)| (name.clone(), compile(rules)))
            .collect();
        acl.uses_client_id = acl.patterns.iter().any(|p| p.filter.contains("%c"));
        acl.uses_username = acl.patterns.iter().any(|p| p.filter.contains("%u"));
        Ok(acl)
    }

    /// Reads and parses an ACL file; the error names the file and line.
    pub fn load(path: &Path) -> Result<(AclFile, Vec<String>), crate::registry::LoadError> {
        let file = path.display().to_string();
        let io = |source| crate::registry::LoadError::Io {
            file: file.clone(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > ACL_FILE_BYTES_MAX {
            return Err(crate::registry::LoadError::File {
                file,
                problem: format!("larger than {ACL_FILE_BYTES_MAX} bytes"),
            });
        }
        let text = std::fs::read(path).map_err(io)?;
        let mut warnings = Vec::new();
        let acl = AclFile::parse_bytes(&text, &mut warnings).map_err(|e| {
            crate::registry::LoadError::Line {
                file,
                line: e.line,
                problem: e.problem,
            }
        })?;
        Ok((acl, warnings))
    }

    /// Number of `user` sections.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// The ACL of one session: `client_id`, and the user name it is checked under (`None`:
    /// the anonymous section; see `Snapshot::acl_username`).
    pub fn session(&self, client_id: &str, username: Option<&str>) -> SessionAcl {
        let user = match username {
            None => self.compiled_anonymous.clone(),
            Some(name) => self.compiled_users.get(name).cloned(),
        };
        SessionAcl {
            user,
            patterns: self.expand_patterns(client_id, username),
        }
    }

    /// The patterns with `%c` and `%u` substituted; `None` when a value the patterns use could
    /// reach beyond its level (it contains `+`, `#` or `/`, or is empty): then the patterns
    /// refuse everything, as Mosquitto does for `+` and `#`.
    fn expand_patterns(&self, client_id: &str, username: Option<&str>) -> Option<Entries> {
        let unsafe_value = |v: &str| v.is_empty() || v.contains(['+', '#', '/', '\0']);
        if self.patterns.is_empty() {
            return Some(Arc::from(Vec::new()));
        }
        if self.uses_client_id && unsafe_value(client_id)
            || self.uses_username && username.is_some_and(unsafe_value)
        {
            return None;
        }
        let mut rules = Vec::with_capacity(self.patterns.len());
        for p in &self.patterns {
            // A `%u` pattern does not apply to a client without a user name (Mosquitto).
            if p.filter.contains("%u") && username.is_none() {
                continue;
            }
            let filter = substitute(&p.filter, client_id, username.unwrap_or_default());
            // Too long to match any valid topic: neither grants nor denies anything.
            if filter.len() > MAX_TOPIC_LEN {
                continue;
            }
            rules.push(Rule {
                access: p.access,
                filter,
            });
        }
        Some(compile(&rules))
    }
}

/// `%c` and `%u` replaced, left to right (`%%c` is `%` followed by the client id).
fn substitute(template: &str, client_id: &str, username: &str) -> String {
    let mut out = String::with_capacity(template.len() + client_id.len() + username.len());
    let mut rest = template;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('c') {
            out.push_str(client_id);
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('u') {
            out.push_str(username);
            rest = tail;
        } else {
            out.push('%');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// One session's ACL, compiled: its user section and its substituted patterns.
#[derive(Debug, Clone)]
pub struct SessionAcl {
    /// The user's (or anonymous) section; `None` when the file has none for this client.
    user: Option<Entries>,
    /// `None`: the patterns refuse everything (an unsafe `%c`/`%u` value).
    patterns: Option<Entries>,
}

impl SessionAcl {
    /// Whether the client may publish to `topic` (a valid topic name). Allocation-free.
    pub fn allow_write(&self, topic: &[u8]) -> bool {
        self.decide(|entries| decide_topic(entries, topic, Want::Write))
    }

    /// Whether the client may receive messages on `topic` (a valid topic name).
    pub fn allow_read(&self, topic: &[u8]) -> bool {
        self.decide(|entries| decide_topic(entries, topic, Want::Read))
    }

    /// Whether the client may subscribe to `filter` (a valid filter; a `$share/{group}/`
    /// prefix is removed): every topic it matches must be readable.
    pub fn allow_subscribe(&self, filter: &[u8]) -> bool {
        let filter = match parse_shared(filter) {
            Ok(Some(shared)) => shared.filter,
            Ok(None) => filter,
            Err(_) => return false,
        };
        self.decide(|entries| decide_filter(entries, filter))
    }

    /// The user stage, then the pattern stage; no decision refuses.
    fn decide(&self, stage: impl Fn(&[Entry]) -> Option<bool>) -> bool {
        if let Some(decided) = self.user.as_deref().and_then(&stage) {
            return decided;
        }
        match &self.patterns {
            None => false,
            Some(entries) => stage(entries).unwrap_or(false),
        }
    }
}

/// A stage's decision for one topic: the first matching `deny` refuses (they come first),
/// else the first matching line granting `want` allows.
fn decide_topic(entries: &[Entry], topic: &[u8], want: Want) -> Option<bool> {
    for e in entries {
        if e.filter.matches(topic) {
            if e.access == AclAccess::Deny {
                return Some(false);
            }
            if e.access.grants(want) {
                return Some(true);
            }
        }
    }
    None
}

/// A stage's decision for a subscription: refused when a `deny` line meets any topic of the
/// filter; granted when one read line contains the whole filter; otherwise undecided (a
/// filter covered only by several lines together is left to the next stage, which can only
/// refuse more).
fn decide_filter(entries: &[Entry], filter: &[u8]) -> Option<bool> {
    let mut denies = entries.iter().take_while(|e| e.access == AclAccess::Deny);
    if denies.any(|e| overlap(e.filter.bytes(), filter)) {
        return Some(false);
    }
    entries
        .iter()
        .any(|e| e.access.grants(Want::Read) && e.filter.contains(filter))
        .then_some(true)
}

/// Whether some topic matches both filters (valid plain filters). May answer true for a pair
/// that shares only the empty topic, which only refuses more.
fn overlap(a: &[u8], b: &[u8]) -> bool {
    let wild = |f: &[u8]| matches!(f.first(), Some(b'+' | b'#'));
    let dollar = |f: &[u8]| f.first() == Some(&b'$');
    // A wildcard-led filter matches no `$` topic [MQTT-4.7.2-1].
    if (wild(a) && dollar(b)) || (wild(b) && dollar(a)) {
        return false;
    }
    let (mut la, mut lb) = (levels(a), levels(b));
    loop {
        match (la.next(), lb.next()) {
            (Some(b"#"), _) | (_, Some(b"#")) => return true,
            (Some(b"+"), Some(_)) | (Some(_), Some(b"+")) => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn acl(text: &str) -> AclFile {
        match AclFile::parse(text, &mut Vec::new()) {
            Ok(a) => a,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    fn err(text: &str) -> AclError {
        match AclFile::parse(text, &mut Vec::new()) {
            Ok(_) => panic!("{text:?} parsed"),
            Err(e) => e,
        }
    }

    const FILE: &str = "\
# anonymous clients
topic read public/#
topic deny public/secret

user alice
topic readwrite alice/#
topic write shared/in
topic deny alice/locked

user bob smith
topic read shared/#

# every client
pattern readwrite devices/%c/#
pattern read users/%u/inbox/#
pattern deny devices/%c/firmware
";

    #[test]
    fn sections_and_precedence() {
        let a = acl(FILE);
        let anon = a.session("dev1", None);
        assert!(anon.allow_read(b"public/news"));
        assert!(!anon.allow_read(b"public/secret"));
        assert!(!anon.allow_write(b"public/news"));
        assert!(anon.allow_subscribe(b"public/news/+"));
        // `public/#` meets the deny line: the whole filter is refused.
        assert!(!anon.allow_subscribe(b"public/#"));
        assert!(!anon.allow_subscribe(b"#"));
        // Patterns apply to anonymous clients too (with %c); %u lines do not.
        assert!(anon.allow_write(b"devices/dev1/temp"));
        assert!(!anon.allow_write(b"devices/dev2/temp"));
        assert!(!anon.allow_write(b"devices/dev1/firmware"));

        let alice = a.session("c-alice", Some("alice"));
        assert!(alice.allow_write(b"alice/x"));
        assert!(alice.allow_write(b"shared/in"));
        assert!(!alice.allow_read(b"shared/in"));
        assert!(!alice.allow_write(b"alice/locked"));
        assert!(!alice.allow_subscribe(b"alice/#"));
        assert!(alice.allow_subscribe(b"alice/+/x"));
        // Anonymous lines are not alice's.
        assert!(!alice.allow_read(b"public/news"));
        assert!(alice.allow_subscribe(b"users/alice/inbox/#"));
        assert!(!alice.allow_subscribe(b"users/bob/inbox/#"));

        // A user name with a space, exact (case-sensitive) lookup.
        let bob = a.session("c-bob", Some("bob smith"));
        assert!(bob.allow_subscribe(b"shared/#"));
        assert!(!a.session("c", Some("Bob Smith")).allow_read(b"shared/x"));
        // A user without a section gets the patterns only.
        let eve = a.session("eve", Some("eve"));
        assert!(!eve.allow_read(b"public/news"));
        assert!(eve.allow_read(b"users/eve/inbox/1"));
    }

    #[test]
    fn user_allow_beats_pattern_deny_like_mosquitto() {
        let a =
            acl("user u\ntopic readwrite devices/c1/firmware\npattern deny devices/%c/firmware\n");
        assert!(
            a.session("c1", Some("u"))
                .allow_write(b"devices/c1/firmware")
        );
        assert!(
            !a.session("c1", Some("v"))
                .allow_write(b"devices/c1/firmware")
        );
    }

    #[test]
    fn deny_wins_whatever_its_position() {
        let a = acl("topic readwrite a/#\ntopic deny a/b\n");
        let s = a.session("c", None);
        assert!(!s.allow_write(b"a/b") && s.allow_write(b"a/c"));
        let a = acl("topic deny a/b\ntopic readwrite a/#\n");
        assert!(!a.session("c", None).allow_write(b"a/b"));
    }

    #[test]
    fn read_write_and_default_access() {
        let a = acl("topic r/# \ntopic read ro\ntopic write wo\ntopic read\n");
        let s = a.session("c", None);
        assert!(s.allow_read(b"r/x") && s.allow_write(b"r/x"));
        assert!(s.allow_read(b"ro") && !s.allow_write(b"ro"));
        assert!(!s.allow_read(b"wo") && s.allow_write(b"wo"));
        // `topic read` alone names the topic `read` (Mosquitto).
        assert!(s.allow_write(b"read"));
        // A filter with spaces.
        let a = acl("topic read a b/c d\n");
        assert!(a.session("c", None).allow_read(b"a b/c d"));
    }

    #[test]
    fn dangerous_names_get_nothing_from_patterns() {
        let a = acl("pattern readwrite d/%c/#\npattern read u/%u\ntopic read open\n");
        for id in ["a/b", "+", "#", "x#", ""] {
            let s = a.session(id, None);
            assert!(!s.allow_write(b"d/a/b/x"), "{id:?}");
            assert!(!s.allow_write(b"d/x/y"), "{id:?}");
            // The anonymous section still applies.
            assert!(s.allow_read(b"open"), "{id:?}");
        }
        assert!(!a.session("ok", Some("a/b")).allow_read(b"u/a/b"));
        assert!(a.session("ok", Some("ab")).allow_read(b"u/ab"));
        // Only the variables the patterns use are checked.
        let only_u = acl("pattern read u/%u\n");
        assert!(only_u.session("a/b", Some("x")).allow_read(b"u/x"));
    }

    #[test]
    fn substitution() {
        assert_eq!(substitute("a/%c/%u/%c", "C", "U"), "a/C/U/C");
        assert_eq!(substitute("dev-%c", "7", ""), "dev-7");
        assert_eq!(substitute("%x/%%c/%", "C", "U"), "%x/%C/%");
        let a = acl("pattern read x/dev-%c\n");
        assert!(a.session("7", None).allow_read(b"x/dev-7"));
    }

    #[test]
    fn dollar_topics() {
        let a = acl("topic read #\ntopic read $SYS/broker/#\n");
        let s = a.session("c", None);
        assert!(s.allow_read(b"a/b"));
        assert!(!s.allow_read(b"$SYS/x"));
        assert!(s.allow_read(b"$SYS/broker/load"));
        assert!(!s.allow_subscribe(b"$SYS/#"));
        assert!(s.allow_subscribe(b"$SYS/broker/+"));
        // A deny led by a wildcard does not meet `$` filters.
        let a = acl("topic read $SYS/#\ntopic deny #\n");
        assert!(a.session("c", None).allow_subscribe(b"$SYS/x"));
    }

    #[test]
    fn shared_subscriptions_are_checked_by_their_filter() {
        let a = acl("topic read jobs/#\n");
        let s = a.session("c", None);
        assert!(s.allow_subscribe(b"$share/g/jobs/+"));
        assert!(!s.allow_subscribe(b"$share/g/other"));
    }

    #[test]
    fn comments_blanks_and_windows_line_ends() {
        let a = acl("# c\r\n\r\n   # indented\r\n\tuser  alice \r\n topic\tread  a/b \r\n");
        assert!(a.session("c", Some("alice")).allow_read(b"a/b"));
        assert_eq!(a.users(), 1);
    }

    #[test]
    fn errors_name_the_line() {
        let e = err("topic read a\n\nbogus line\n");
        assert_eq!(e.line, 3);
        assert!(e.problem.contains("bogus"), "{e}");
        assert_eq!(err("topic\n").line, 1);
        assert!(err("topic bad a/b\n").problem.contains("access type"));
        assert!(err("# x\nuser\n").problem.contains("user name"));
        assert!(
            err("topic read a/#/b\n")
                .problem
                .contains("invalid topic filter")
        );
        assert!(
            err("topic read a+\n")
                .problem
                .contains("invalid topic filter")
        );
        assert!(err("topic read $share/g/a\n").problem.contains("$share"));
        let bad = AclFile::parse_bytes(b"topic a\ntopic b\n\xff\n", &mut Vec::new());
        assert_eq!(bad.map(|_| ()).unwrap_err().line, 3);
        let mut w = Vec::new();
        AclFile::parse("pattern read fixed/topic\n", &mut w).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
    }

    #[test]
    fn hostile_input_is_bounded() {
        let long = format!("topic read {}\n", "a".repeat(ACL_LINE_BYTES_MAX));
        assert!(err(&long).problem.contains("longer"));
        let many = "topic read a\n".repeat(ACL_ENTRIES_MAX + 1);
        let e = err(&many);
        assert_eq!(e.line, ACL_ENTRIES_MAX + 1);
        let patterns = "pattern read a/%c\n".repeat(ACL_PATTERNS_MAX + 1);
        assert!(err(&patterns).problem.contains("pattern"));
        // Binary junk is an error, not a panic.
        for junk in [&b"\0\0\0"[..], b"topic \xc3", b"\xef\xbb\xbftopic a"] {
            let _ = AclFile::parse_bytes(junk, &mut Vec::new());
        }
    }

    #[test]
    fn overlap_is_symmetric_and_sound() {
        let filters = [
            "a", "a/b", "a/+", "a/#", "+/b", "#", "+", "a/b/c", "b/#", "$SYS/#", "$SYS/a", "+/+",
        ];
        let topics = [
            "a", "a/b", "a/c", "b", "b/b", "a/b/c", "$SYS/a", "$SYS/b", "x/b",
        ];
        for x in filters {
            for y in filters {
                let witness = topics.iter().any(|t| {
                    ringmq_codec::topic::matches(x.as_bytes(), t.as_bytes())
                        && ringmq_codec::topic::matches(y.as_bytes(), t.as_bytes())
                });
                let o = overlap(x.as_bytes(), y.as_bytes());
                assert_eq!(o, overlap(y.as_bytes(), x.as_bytes()), "{x} {y}");
                // Sound: a shared topic always means overlap.
                if witness {
                    assert!(o, "{x} {y}");
                }
            }
        }
        assert!(!overlap(b"a/b", b"a/c"));
        assert!(!overlap(b"#", b"$SYS/a"));
        assert!(overlap(b"a/#", b"a"));
    }

    /// Random files from a small vocabulary: parsing never panics, and whatever a session may
    /// subscribe to, it may read every topic of (the SUBSCRIBE rule is sound with respect to
    /// Mosquitto's per-topic rule), checked over every topic of up to 3 levels of `a`, `b`,
    /// `$s`.
    #[test]
    fn random_files_subscribe_is_sound_for_reading() {
        let words = [
            "topic",
            "pattern",
            "user",
            "read",
            "write",
            "readwrite",
            "deny",
            "a",
            "b",
            "$s",
            "+",
            "#",
            "/",
            "%c",
            "%u",
            " ",
            " ",
            "\t",
            "\n",
            "\n",
            "\n",
            "u1",
        ];
        let mut topics = vec![String::new()];
        let mut all_topics = Vec::new();
        for _ in 0..3 {
            let mut next = Vec::new();
            for t in &topics {
                for l in ["a", "b", "$s", "u1", "c1"] {
                    next.push(if t.is_empty() {
                        l.to_owned()
                    } else {
                        format!("{t}/{l}")
                    });
                }
            }
            all_topics.extend(next.iter().cloned());
            topics = next;
        }
        let filters: Vec<String> = all_topics
            .iter()
            .flat_map(|t| {
                let mut v = vec![t.clone(), format!("{t}/#")];
                if let Some((head, _)) = t.rsplit_once('/') {
                    v.push(format!("{head}/+"));
                }
                v
            })
            .chain(["#".to_owned(), "+".to_owned(), "+/a".to_owned()])
            .collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut parsed = 0;
        let levels = ["a", "b", "$s", "+", "#", "%c", "%u", "u1", "c1"];
        let access = ["", "read ", "write ", "readwrite ", "deny "];
        for _ in 0..3000 {
            let mut text = String::new();
            for _ in 0..1 + next(8) {
                match next(8) {
                    0 => text.push_str(["user u1", "user b", "user u 1"][next(3)]),
                    1 => {
                        for _ in 0..next(5) {
                            text.push_str(words[next(words.len())]);
                        }
                    }
                    k => {
                        text.push_str(if k < 5 { "topic " } else { "pattern " });
                        text.push_str(access[next(access.len())]);
                        let filter: Vec<&str> = (0..1 + next(3))
                            .map(|_| levels[next(levels.len())])
                            .collect();
                        text.push_str(&filter.join("/"));
                    }
                }
                text.push('\n');
            }
            let Ok(acl) = AclFile::parse(&text, &mut Vec::new()) else {
                continue;
            };
            parsed += 1;
            for (client, user) in [("c1", None), ("c1", Some("u1")), ("a", Some("b"))] {
                let s = acl.session(client, user);
                for f in &filters {
                    if !s.allow_subscribe(f.as_bytes()) {
                        continue;
                    }
                    for t in &all_topics {
                        if ringmq_codec::topic::matches(f.as_bytes(), t.as_bytes()) {
                            assert!(
                                s.allow_read(t.as_bytes()),
                                "{text:?} {client} {user:?}: subscribe {f} but not read {t}"
                            );
                        }
                    }
                }
            }
        }
        assert!(parsed > 100, "only {parsed} random files parsed");
    }

    #[test]
    fn sessions_share_compiled_user_sections() {
        let a = acl("user u\ntopic read a\n");
        let (s1, s2) = (a.session("1", Some("u")), a.session("2", Some("u")));
        let (Some(x), Some(y)) = (&s1.user, &s2.user) else {
            panic!("no section")
        };
        assert!(Arc::ptr_eq(x, y));
    }
}
