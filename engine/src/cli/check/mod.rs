//! `ringmq check [-c FILE]`: loads the configuration, the registry and every file they name
//! (listener certificates and keys, the registry with its CA certificates, CRLs and JWT
//! settings, the password and ACL files, the client CA, the webhook's files, the storage
//! directory), and prints each problem with the file and the key or JSON path. Binds nothing,
//! starts no shard; `--fetch-jwks` is the only network access, and it is opt-in.
//!
//! Exit status: 0 when there is no error (warnings are allowed unless `--deny-warnings`), 1
//! otherwise.
//!
//! To add a kind of file (password files, ACL files, the storage directory): write one
//! function `check_<kind>(config_file, &Config, &mut Report)` in a file of its own beside
//! these, and call it from [`check`]. A function reports every problem it can find, and
//! returns what later checks need (the registry, for the cross-checks).

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use ringmq::config::Config;

mod config;
mod exposure;
mod files;
mod registry;
mod tls;

/// `ringmq check`'s options.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The configuration file to check; without it, the embedded default (what `ringmq` runs
    /// without `--config`).
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
    /// Also fetch every JWKS endpoint of the registry once (the only network access).
    #[arg(long)]
    pub fetch_jwks: bool,
    /// Exit with status 1 on warnings too.
    #[arg(long)]
    pub deny_warnings: bool,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The broker would refuse to start, or would start and fail clients.
    Error,
    /// Valid but risky (exposed without encryption or authentication, about to expire).
    Warning,
}

/// One finding: the file, where in it (a TOML key such as `listener[1].cert`, a JSON path such
/// as `$.clients[3].state`, or nothing for the whole file), and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub location: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{severity}: {}: ", self.file)?;
        if !self.location.is_empty() {
            write!(f, "{}: ", self.location)?;
        }
        f.write_str(&self.message)
    }
}

/// Every finding of one check, in the order found.
#[derive(Debug, Default)]
pub struct Report {
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn error(&mut self, file: &Path, location: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, file, location.into(), message.into());
    }

    pub fn warning(
        &mut self,
        file: &Path,
        location: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(Severity::Warning, file, location.into(), message.into());
    }

    fn push(&mut self, severity: Severity, file: &Path, location: String, message: String) {
        self.diagnostics.push(Diagnostic {
            severity,
            file: file.display().to_string(),
            location,
            message,
        });
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }
}

/// Options of [`check`] beyond the file.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    pub fetch_jwks: bool,
}

/// Checks `config_path` (the embedded default when `None`) and everything it names.
pub fn check(config_path: Option<&Path>, options: CheckOptions) -> Report {
    let mut report = Report::default();
    let file = config_path.unwrap_or(Path::new("<embedded default>"));
    let Some(config) = config::check_config(config_path, &mut report) else {
        return report;
    };
    for (index, listener) in config.listeners.iter().enumerate() {
        tls::check_listener(file, index, listener, &mut report);
    }
    exposure::check_exposure(file, &config, &mut report);
    files::check_auth_files(file, &config, &mut report);
    files::check_storage(file, &config, &mut report);
    if let Some(registry) = registry::check_registry(file, &config, options, &mut report) {
        registry::check_registry_against_listeners(&config, &registry, &mut report);
    }
    report
}

/// Runs `ringmq check`: prints each finding on stdout and a summary line.
pub fn run(args: &CheckArgs) -> ExitCode {
    let options = CheckOptions {
        fetch_jwks: args.fetch_jwks,
    };
    let report = check(args.config.as_deref(), options);
    for d in &report.diagnostics {
        println!("{d}");
    }
    let errors = report.count(Severity::Error);
    let warnings = report.count(Severity::Warning);
    let name = args.config.as_deref().map_or_else(
        || "the embedded default configuration".to_owned(),
        |p| p.display().to_string(),
    );
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    if errors == 0 {
        println!("{name}: OK ({})", plural(warnings, "warning"));
    } else {
        println!(
            "{name}: {}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        );
    }
    if errors > 0 || (args.deny_warnings && warnings > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Loads `config_path` as the broker would; `None`: the embedded default.
fn load(config_path: Option<&Path>) -> Result<Config, ringmq::config::ConfigError> {
    match config_path {
        Some(path) => Config::from_file(path),
        None => Ok(Config::default()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn diagnostic_names_file_location_and_problem() {
        let mut r = Report::default();
        r.error(
            Path::new("ringmq.toml"),
            "listener[1].cert",
            "/x.pem: missing",
        );
        r.warning(Path::new("reg.json"), "", "whole file");
        assert_eq!(
            r.diagnostics[0].to_string(),
            "error: ringmq.toml: listener[1].cert: /x.pem: missing"
        );
        assert_eq!(
            r.diagnostics[1].to_string(),
            "warning: reg.json: whole file"
        );
        assert_eq!(r.count(Severity::Error), 1);
        assert_eq!(r.count(Severity::Warning), 1);
    }

    /// The files deploy/ ships for the container image check clean: no error, and the two
    /// warnings a container config earns (plain MQTT and metrics on every interface).
    #[test]
    fn shipped_container_config_checks_clean() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let r = check(
            Some(&deploy.join("container.toml")),
            CheckOptions::default(),
        );
        assert_eq!(r.count(Severity::Error), 0, "{:?}", r.diagnostics);
        assert_eq!(r.count(Severity::Warning), 2, "{:?}", r.diagnostics);
        let r = check(Some(&deploy.join("ringmq.toml")), CheckOptions::default());
        // Only the TLS files the operator provides are missing.
        let errors: Vec<_> = r
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.location.as_str())
            .collect();
        assert_eq!(
            errors,
            ["listener[0].cert", "listener[0].key"],
            "{:?}",
            r.diagnostics
        );
    }

    #[test]
    fn embedded_default_is_clean() {
        let r = check(None, CheckOptions::default());
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
    }
}
