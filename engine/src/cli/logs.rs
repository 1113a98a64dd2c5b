//! Where the broker's log filter comes from, and how lines are written to standard error.
//!
//! The filter, first found wins (the usual order: the command line over the environment over
//! the file, as `RUST_LOG` works for every tracing program and `EMQX_LOG__…` variables
//! override emqx.conf):
//! 1. `--log-level`;
//! 2. `RUST_LOG`, when set and not empty;
//! 3. `server.log_level` of the configuration file (default `info`).
//!
//! Colour (ANSI escapes) only when standard error is a terminal and `NO_COLOR` is not set: a
//! file, a pipe or the journal gets plain text.

use std::io::IsTerminal;

use ringmq::config::{LogFormat, ServerConfig};

/// Where the filter in force came from, for the error message of a bad one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterSource {
    CommandLine,
    Environment,
    ConfigFile,
}

impl FilterSource {
    fn name(&self) -> &'static str {
        match self {
            FilterSource::CommandLine => "--log-level",
            FilterSource::Environment => "RUST_LOG",
            FilterSource::ConfigFile => "server.log_level",
        }
    }
}

/// The filter directives and where they came from, by the precedence above.
pub fn choose_filter(
    command_line: Option<&str>,
    rust_log: Option<&str>,
    config_file: &str,
) -> (String, FilterSource) {
    if let Some(level) = command_line {
        return (level.to_owned(), FilterSource::CommandLine);
    }
    if let Some(env) = rust_log.filter(|s| !s.trim().is_empty()) {
        return (env.to_owned(), FilterSource::Environment);
    }
    (config_file.to_owned(), FilterSource::ConfigFile)
}

/// Installs the global subscriber; the error names the setting at fault.
pub fn init(command_line: Option<&str>, server: &ServerConfig) -> Result<(), String> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (mut directives, source) =
        choose_filter(command_line, rust_log.as_deref(), &server.log_level);
    let given = directives.clone();
    // rustls warns about every client that sends an IP address as SNI (mosquitto does);
    // keep its warnings out of a plain level unless the filter names rustls itself.
    if !directives.contains("rustls") {
        directives.push_str(",rustls=error");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .map_err(|e| format!("{} {given:?}: {e}", source.name()))?;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match server.log_format {
        LogFormat::Text => logs.init(),
        // Flattened: the event's fields sit beside `timestamp`, `level` and `target`, as log
        // shippers (Vector, Fluent Bit, Loki) expect; the thread name carries the shard.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_thread_names(true)
            .init(),
    }
    tracing::debug!(filter = %given, from = source.name(), "log filter");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_over_environment_over_file() {
        assert_eq!(
            choose_filter(Some("warn"), Some("debug"), "info"),
            ("warn".to_owned(), FilterSource::CommandLine)
        );
        assert_eq!(
            choose_filter(None, Some("debug"), "info"),
            ("debug".to_owned(), FilterSource::Environment)
        );
        assert_eq!(
            choose_filter(None, Some("  "), "info"),
            ("info".to_owned(), FilterSource::ConfigFile)
        );
        assert_eq!(
            choose_filter(None, None, "trace"),
            ("trace".to_owned(), FilterSource::ConfigFile)
        );
    }
}
