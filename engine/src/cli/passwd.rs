//! `ringmq passwd`: writes and updates Mosquitto-compatible password files (the format of
//! `mosquitto_passwd` 2.0: `user:$7$101$SALT$HASH`, PBKDF2-HMAC-SHA512), which ringmq reads
//! as `[auth] password_file` and Mosquitto reads as `password_file`.
//!
//! What it must never do: leave a half-written file (it writes a temporary file beside the
//! target and renames it over), or create a file others can read (mode 0600).

use std::io::{BufRead, Write};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ringmq_auth::passwd::{DEFAULT_ITERATIONS, Hash, PasswordFile, update_text};

/// `ringmq passwd [-c] [-b] [-D] FILE USER [PASSWORD]`.
#[derive(Debug, clap::Args)]
pub struct PasswdArgs {
    /// Create the file (replacing one that exists).
    #[arg(short = 'c')]
    pub create: bool,
    /// Take the password from the command line (otherwise it is read from standard input,
    /// one line, twice when it is a terminal).
    #[arg(short = 'b')]
    pub batch: bool,
    /// Delete USER from the file.
    #[arg(short = 'D', conflicts_with_all = ["create", "batch"])]
    pub delete: bool,
    /// PBKDF2 iterations of the new hash (mosquitto_passwd 2.0 uses 101).
    #[arg(short = 'I', long = "iterations", default_value_t = DEFAULT_ITERATIONS)]
    pub iterations: u32,
    pub file: PathBuf,
    pub user: String,
    pub password: Option<String>,
}

/// Runs the subcommand; the exit code is 0 on success, 1 on an error (printed).
pub fn run(args: PasswdArgs) -> ExitCode {
    match passwd(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringmq passwd: {e}");
            ExitCode::from(1)
        }
    }
}

fn passwd(args: &PasswdArgs) -> Result<(), String> {
    let user = &args.user;
    if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
        return Err(format!(
            "user name {user:?}: must be non-empty, without ':' or control characters"
        ));
    }
    if user.len() > 65535 {
        return Err("user name longer than 65535 bytes".into());
    }
    let existing = if args.create {
        String::new()
    } else {
        let text = std::fs::read_to_string(&args.file)
            .map_err(|e| format!("{}: {e} (use -c to create it)", args.file.display()))?;
        // Refuse to rewrite a file ringmq could not read.
        PasswordFile::parse(&text).map_err(|e| format!("{}: {e}", args.file.display()))?;
        text
    };
    let text = if args.delete {
        let mut file = PasswordFile::parse(&existing).map_err(|e| e.to_string())?;
        if !file.remove(user) {
            return Err(format!("user {user:?} is not in {}", args.file.display()));
        }
        existing
            .lines()
            .filter(|l| l.starts_with('#') || l.split_once(':').is_none_or(|(u, _)| u != user))
            .map(|l| format!("{l}\n"))
            .collect()
    } else {
        let password = match (&args.password, args.batch) {
            (Some(p), true) => p.clone(),
            (Some(_), false) => return Err("a password on the command line needs -b".into()),
            (None, true) => return Err("-b needs the password on the command line".into()),
            (None, false) => read_password()?,
        };
        if password.len() > 65535 {
            return Err("password longer than 65535 bytes".into());
        }
        let iterations = NonZeroU32::new(args.iterations)
            .filter(|n| n.get() <= ringmq_auth::passwd::MAX_ITERATIONS)
            .ok_or("iterations must be between 1 and 10000000")?;
        let hash = Hash::new_pbkdf2(password.as_bytes(), iterations)?;
        update_text(&existing, user, &hash)
    };
    write_atomically(&args.file, &text)
}

/// A line from standard input (twice, compared, when it is a terminal).
fn read_password() -> Result<String, String> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let read = |prompt: &str| -> Result<String, String> {
        if tty {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
        }
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let first = read("Password: ")?;
    if tty && read("Reenter password: ")? != first {
        return Err("the passwords do not match".into());
    }
    if first.is_empty() {
        return Err("empty password".into());
    }
    Ok(first)
}

fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let err = |e: std::io::Error| format!("{}: {e}", tmp.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
