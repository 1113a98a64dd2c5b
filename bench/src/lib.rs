//! ringmq-bench: a thread-per-core MQTT load generator (in the spirit of emqtt-bench) and a
//! harness that runs the same scenarios against several brokers and writes the comparison to
//! docs/benchmarks.md.
//!
//! What it is for: measuring brokers from the outside — connect rate, memory per idle
//! connection, messages/s published and delivered, delivery ratio and latency percentiles.
//! It speaks MQTT 5, 3.1.1 and 3.1 through ringmq-codec, so it also exercises the codec.
//!
//! What it must never do: send load anywhere it was not told to (every run is bounded in time
//! and, with `-L`, in messages), or panic on anything a broker sends — a bad frame or a closed
//! connection is counted and reported.

pub mod blocking;
pub mod cli;
pub mod client;
pub mod clock;
pub mod compare;
pub mod config;
pub mod framing;
pub mod outbox;
pub mod probe;
pub mod report;
pub mod run;
pub mod sockets;
pub mod stats;
pub mod sysinfo;
pub mod template;
pub mod tls;
pub mod transport;
pub mod wire;

use std::path::Path;

use cli::Cli;
use config::LoadConfig;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Run(#[from] run::RunError),
    #[error(transparent)]
    Compare(#[from] compare::CompareError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Runs a parsed command line.
pub fn execute(cli: Cli) -> Result<(), BenchError> {
    let (scenario, args) = match cli.command.into_load() {
        Ok(load) => load,
        Err(a) => return Ok(compare::compare(&a)?),
    };
    let cfg = LoadConfig::from_args(scenario, &args)?;
    let report = run::run(&cfg)?;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), BenchError> {
    let write_err = |source| BenchError::Write {
        path: path.display().to_string(),
        source,
    };
    let text =
        serde_json::to_string_pretty(value).map_err(|e| write_err(std::io::Error::other(e)))?;
    std::fs::write(path, text + "\n").map_err(write_err)
}
