//! The configuration file itself: readable, TOML, known keys, values in range (the broker's
//! own parser and validation, so `check` and startup never disagree).

use std::path::Path;

use ringmq::config::{Config, ConfigError};

use super::Report;

/// Loads the configuration; `None` (after reporting why) when it does not load, since the files
/// it names cannot be known then. Validation stops at its first problem, so one error at most.
pub(super) fn check_config(config_path: Option<&Path>, report: &mut Report) -> Option<Config> {
    let file = config_path.unwrap_or(Path::new("<embedded default>"));
    match super::load(config_path) {
        Ok(config) => Some(config),
        Err(ConfigError::Invalid { path, key, problem }) => {
            report.error(&path, key, problem);
            None
        }
        Err(other) => {
            // "FILE: problem" (toml's problem names the line, the column and the key).
            let text = other.to_string();
            let prefix = format!("{}: ", file.display());
            let problem = text.strip_prefix(&prefix).unwrap_or(&text);
            report.error(file, "", problem.trim_end().replace('\n', "\n    "));
            None
        }
    }
}
