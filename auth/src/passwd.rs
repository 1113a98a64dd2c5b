//! Mosquitto-compatible password files (`mosquitto_passwd`).
//!
//! What it is for: reading the `user:hash` lines Mosquitto's `mosquitto_passwd` writes and
//! checking a CONNECT's user name and password against them, and writing the same format
//! (`ringmq passwd`). Two hash forms are understood:
//! - `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512 (mosquitto_passwd 2.0's default, 101
//!   iterations, a 12-byte salt);
//! - `$6$SALT$HASH`: SHA-512 of the password followed by the salt (mosquitto 1.x).
//!
//! SALT and HASH are standard base64 with padding; HASH is 64 bytes.
//!
//! What it must never do: run on a shard thread on a cache miss (PBKDF2 is slow on purpose:
//! the engine runs [`PasswordFile::verify`] on its authentication pool), compare hashes in
//! variable time, or panic on a hostile file (a line it cannot read is an error naming the
//! line, and the whole file is refused, as Mosquitto refuses it).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;

use aws_lc_rs::{digest, pbkdf2, rand::SecureRandom};
use base64::Engine;

/// `mosquitto_passwd` 2.0's iteration count for new `$7$` lines.
pub const DEFAULT_ITERATIONS: u32 = 101;
/// `mosquitto_passwd`'s salt length for new lines.
pub const SALT_LEN: usize = 12;
/// SHA-512 output length: the hash of every line.
pub const HASH_LEN: usize = 64;
/// Limits on what a file may hold (a file is configuration, but a mistaken one must not
/// take the broker's memory or CPU).
pub const MAX_LINE_LEN: usize = 4096;
pub const MAX_USERS: usize = 1_000_000;
pub const MAX_ITERATIONS: u32 = 10_000_000;
pub const MAX_SALT_LEN: usize = 256;

/// A problem in a password file, naming the line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswdError {
    #[error("line {line}: {problem}")]
    Line { line: usize, problem: String },
    #[error("more than {MAX_USERS} users")]
    TooManyUsers,
    #[error("{0}")]
    Io(String),
}

/// How one user's password is hashed.
#[derive(Clone, PartialEq, Eq)]
pub enum Hash {
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 { salt: Vec<u8>, hash: [u8; HASH_LEN] },
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        hash: [u8; HASH_LEN],
    },
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes stay out of logs.
        match self {
            Hash::Sha512 { .. } => f.write_str("Sha512(..)"),
            Hash::Pbkdf2 { iterations, .. } => write!(f, "Pbkdf2({iterations}, ..)"),
        }
    }
}

impl Hash {
    /// Parses the part after `user:`.
    pub fn parse(text: &str) -> Result<Hash, String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let fields: Vec<&str> = text.split('$').collect();
        let decode_hash = |s: &str| -> Result<[u8; HASH_LEN], String> {
            let bytes = b64
                .decode(s)
                .map_err(|e| format!("the hash is not base64: {e}"))?;
            <[u8; HASH_LEN]>::try_from(bytes.as_slice())
                .map_err(|_| format!("the hash is {} bytes, not {HASH_LEN}", bytes.len()))
        };
        let decode_salt = |s: &str| -> Result<Vec<u8>, String> {
            let salt = b64
                .decode(s)
                .map_err(|e| format!("the salt is not base64: {e}"))?;
            if salt.is_empty() || salt.len() > MAX_SALT_LEN {
                return Err(format!(
                    "the salt is {} bytes (1 to {MAX_SALT_LEN})",
                    salt.len()
                ));
            }
            Ok(salt)
        };
        match fields.as_slice() {
            ["", "6", salt, hash] => Ok(Hash::Sha512 {
                salt: decode_salt(salt)?,
                hash: decode_hash(hash)?,
            }),
            ["", "7", iterations, salt, hash] => {
                let n: u32 = iterations
                    .parse()
                    .map_err(|_| format!("iterations {iterations:?} is not a number"))?;
                let iterations = NonZeroU32::new(n)
                    .filter(|n| n.get() <= MAX_ITERATIONS)
                    .ok_or_else(|| format!("iterations {n} is not in 1..={MAX_ITERATIONS}"))?;
                Ok(Hash::Pbkdf2 {
                    iterations,
                    salt: decode_salt(salt)?,
                    hash: decode_hash(hash)?,
                })
            }
            ["", kind, ..] if *kind == "6" || *kind == "7" => {
                Err(format!("a ${kind}$ hash with the wrong number of fields"))
            }
            _ => Err(
                "not a $6$ or $7$ hash (plain-text passwords are not accepted: hash the file with \
                 `mosquitto_passwd -U` or `ringmq passwd`)"
                    .into(),
            ),
        }
    }

    /// A new `$7$` hash of `password` with a random salt.
    pub fn new_pbkdf2(password: &[u8], iterations: NonZeroU32) -> Result<Hash, String> {
        let mut salt = vec![0u8; SALT_LEN];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| "no random salt: the system random source failed".to_string())?;
        let mut hash = [0u8; HASH_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA512,
            iterations,
            &salt,
            password,
            &mut hash,
        );
        Ok(Hash::Pbkdf2 {
            iterations,
            salt,
            hash,
        })
    }

    /// Whether `password` matches, compared in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Sha512 { salt, hash } => {
                let mut ctx = digest::Context::new(&digest::SHA512);
                ctx.update(password);
                ctx.update(salt);
                let d = ctx.finish();
                aws_lc_rs::constant_time::verify_slices_are_equal(d.as_ref(), hash).is_ok()
            }
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password,
                hash,
            )
            .is_ok(),
        }
    }
}

impl std::fmt::Display for Hash {
    /// The file form (`$7$101$SALT$HASH`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b64 = base64::engine::general_purpose::STANDARD;
        match self {
            Hash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", b64.encode(salt), b64.encode(hash))
            }
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                b64.encode(salt),
                b64.encode(hash)
            ),
        }
    }
}

/// A parsed password file: user name → hash.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, Hash>,
}

impl PasswordFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswdError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PasswdError::Io(format!("cannot read {}: {e}", path.display())))?;
        PasswordFile::parse(&text)
    }

    /// Parses the text of a file: `user:hash` lines; empty lines and lines starting with `#`
    /// are skipped. A user name holds no `:`; a user listed twice is an error.
    pub fn parse(text: &str) -> Result<PasswordFile, PasswdError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |problem: String| PasswdError::Line { line, problem };
            if raw.len() > MAX_LINE_LEN {
                return Err(err(format!("longer than {MAX_LINE_LEN} bytes")));
            }
            let l = raw.trim_end_matches('\r');
            if l.trim().is_empty() || l.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = l.split_once(':') else {
                return Err(err("no `:` between user name and hash".into()));
            };
            if user.is_empty() {
                return Err(err("empty user name".into()));
            }
            if user.chars().any(char::is_control) {
                return Err(err("the user name holds a control character".into()));
            }
            let hash = Hash::parse(hash).map_err(|p| err(format!("user {user:?}: {p}")))?;
            if users.len() >= MAX_USERS {
                return Err(PasswdError::TooManyUsers);
            }
            if users.insert(user.to_string(), hash).is_some() {
                return Err(err(format!("user {user:?} is listed twice")));
            }
        }
        Ok(PasswordFile { users })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Whether `user` is listed with `password`. An unknown user costs a hash computation
    /// too, so the time taken does not tell which user names exist.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                let decoy = Hash::Pbkdf2 {
                    iterations: NonZeroU32::MIN.saturating_add(DEFAULT_ITERATIONS - 1),
                    salt: vec![0; SALT_LEN],
                    hash: [0; HASH_LEN],
                };
                let _ = decoy.verify(password);
                false
            }
        }
    }

    /// Sets `user`'s hash (added, or replaced in place).
    pub fn set(&mut self, user: &str, hash: Hash) {
        self.users.insert(user.to_string(), hash);
    }

    /// Removes `user`; whether it was there.
    pub fn remove(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }
}

/// Replaces or appends `user`'s line in the text of a file, keeping every other line (and
/// comment) as it was: what `ringmq passwd` writes.
pub fn update_text(text: &str, user: &str, hash: &Hash) -> String {
    let mut out = String::with_capacity(text.len() + 128);
    let mut done = false;
    for l in text.lines() {
        let is_user = l.split_once(':').is_some_and(|(u, _)| u == user) && !l.starts_with('#');
        if is_user {
            if !done {
                out.push_str(&format!("{user}:{hash}\n"));
                done = true;
            }
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if !done {
        out.push_str(&format!("{user}:{hash}\n"));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    // Made by Debian's mosquitto_passwd 2.0.11: `mosquitto_passwd -c -b f alice secret`.
    const MOSQUITTO_7: &str = "alice:$7$101$TPZGGRiBUYv9X1GO$A40thxRe6vOjvrVmg83/xvtehzYb4mwUcWHI/s7IdHMBYvgKlxTsE1qNzy/C0WCFjgHZzmZudAaIU8qn4eaBHg==\n";
    // A mosquitto 1.x `$6$` line for the password "abc" (salt and hash from SHA-512(pw‖salt)).
    fn sha6_line(user: &str, password: &[u8], salt: &[u8]) -> String {
        let mut ctx = digest::Context::new(&digest::SHA512);
        ctx.update(password);
        ctx.update(salt);
        let hash: [u8; HASH_LEN] = ctx.finish().as_ref().try_into().unwrap();
        format!(
            "{user}:{}",
            Hash::Sha512 {
                salt: salt.to_vec(),
                hash
            }
        )
    }

    #[test]
    fn mosquitto_passwd_lines_verify() {
        let f = PasswordFile::parse(MOSQUITTO_7).unwrap();
        assert_eq!(f.len(), 1);
        assert!(f.verify("alice", b"secret"));
        assert!(!f.verify("alice", b"Secret"));
        assert!(!f.verify("bob", b"secret"));
        let f = PasswordFile::parse(&sha6_line("old", b"abc", b"0123456789abcdef")).unwrap();
        assert!(f.verify("old", b"abc"));
        assert!(!f.verify("old", b"abd"));
    }

    #[test]
    fn new_hashes_round_trip_through_the_file_form() {
        let h = Hash::new_pbkdf2(b"pw", NonZeroU32::new(DEFAULT_ITERATIONS).unwrap()).unwrap();
        let text = update_text("# users\n", "u", &h);
        assert!(text.starts_with("# users\nu:$7$101$"));
        let f = PasswordFile::parse(&text).unwrap();
        assert!(f.verify("u", b"pw"));
        let h2 = Hash::new_pbkdf2(b"pw2", NonZeroU32::new(5).unwrap()).unwrap();
        let text = update_text(&text, "u", &h2);
        assert_eq!(text.lines().count(), 2, "replaced in place: {text}");
        let f = PasswordFile::parse(&text).unwrap();
        assert!(f.verify("u", b"pw2") && !f.verify("u", b"pw"));
    }

    #[test]
    fn hostile_lines_are_refused_with_their_line_number() {
        let good = MOSQUITTO_7.trim_end();
        let cases: &[(&str, &str)] = &[
            ("nocolon", "no `:`"),
            (":$7$101$AAAA$AAAA", "empty user name"),
            ("u:plain", "not a $6$ or $7$"),
            ("u:$7$0$AAAA$AAAA", "iterations 0"),
            ("u:$7$99999999999$AAAA$AAAA", "not a number"),
            ("u:$7$4294967295$AAAA$AAAA", "not in 1..="),
            ("u:$7$101$!!!$AAAA", "salt is not base64"),
            ("u:$7$101$$AAAA", "salt is 0 bytes"),
            ("u:$7$101$AAAA$AAAA", "the hash is 3 bytes"),
            ("u:$6$AAAA", "wrong number of fields"),
            ("u:$6$AAAA$AAAA$AAAA", "wrong number of fields"),
            ("u:$7$101$AAAA", "wrong number of fields"),
            ("u:$5$AAAA$AAAA", "not a $6$ or $7$"),
            ("u\u{1}x:$6$AAAA$AAAA", "control character"),
        ];
        for (line, want) in cases {
            let text = format!("{good}\n\n{line}\n");
            match PasswordFile::parse(&text) {
                Err(PasswdError::Line { line: 3, problem }) => {
                    assert!(problem.contains(want), "{line:?}: {problem}")
                }
                other => panic!("{line:?}: {other:?}"),
            }
        }
        let dup = format!("{good}\n{good}\n");
        assert!(matches!(
            PasswordFile::parse(&dup),
            Err(PasswdError::Line { line: 2, .. })
        ));
        let long = format!("u:{}", "A".repeat(MAX_LINE_LEN));
        assert!(PasswordFile::parse(&long).is_err());
        // Comments, blank lines and CRLF endings are fine; a ':' in the hash part is kept.
        let f = PasswordFile::parse(&format!("# c\r\n\r\n{}\r\n", good)).unwrap();
        assert!(f.verify("alice", b"secret"));
    }
}
