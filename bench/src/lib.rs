//! ringmq-bench: a thread-per-core MQTT load generator (in the spirit of emqtt-bench) and a
//! harness that runs the same scenarios against several brokers and writes the comparison to
//! docs/benchmarks.md.
//!
//! What it is for: measuring brokers from the outside — connect rate, memory per idle
//! connection, messages/s published and delivered, delivery ratio and latency percentiles.
//! It speaks MQTT 5, 3.1.1 and 3.1 through ringmq-codec, so it also exercises the codec.
//! And liveness: the open-loop [`flood`] of plain blocking-socket clients and the [`probe`]
//! that connects and pings during a run, so a broker that stops answering is flagged however
//! good its throughput looks.
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
pub mod flood;
pub mod outbox;
pub mod persist;
pub mod probe;
pub mod report;
pub mod run;
pub mod sockets;
pub mod stats;
pub mod sysinfo;
pub mod target;
pub mod template;
pub mod tls;
pub mod transport;
pub mod wire;
pub mod ws;

use std::path::Path;

use cli::{Cli, Command, FloodArgs};
use config::LoadConfig;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Run(#[from] run::RunError),
    #[error(transparent)]
    Compare(#[from] compare::CompareError),
    #[error(transparent)]
    Flood(#[from] flood::FloodError),
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
    #[error("{0}")]
    Args(String),
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
        Err(command) => {
            return match *command {
                Command::Compare(a) => Ok(compare::compare(&a)?),
                Command::Flood(a) => run_flood(&a),
                Command::Persist(a) => run_persist(&a),
                Command::PersistFill(a) => run_fill(&a),
                // into_load returns every other command as a load scenario.
                other => unreachable!("not a load command: {other:?}"),
            };
        }
    };
    let cfg = LoadConfig::from_args(scenario, &args)?;
    let report = run::run(&cfg)?;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

/// `ringmq-bench flood`: runs it, prints the table (with its problems in capitals) and writes
/// the JSON. A flagged run still exits successfully: the report is the result.
fn run_flood(args: &FloodArgs) -> Result<(), BenchError> {
    let cfg = config::flood_config(args)?;
    let report = flood::run(&cfg)?;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

/// `ringmq-bench persist`: runs it, prints the report, writes the JSON.
fn run_persist(args: &persist::args::PersistArgs) -> Result<(), BenchError> {
    crate::sysinfo::raise_nofile_limit();
    let cfg = args.config().map_err(BenchError::Args)?;
    let report = persist::run(&cfg)?;
    print!("{}", report.render());
    if let Some(path) = &args.common.json {
        write_json(path, &report)?;
    }
    Ok(())
}

/// `ringmq-bench persist-fill`: the chosen phases in order, one line each; JSON with all.
fn run_fill(args: &persist::args::FillArgs) -> Result<(), BenchError> {
    crate::sysinfo::raise_nofile_limit();
    let cfg = args.config().map_err(BenchError::Args)?;
    let mut out = std::collections::BTreeMap::new();
    for phase in args.phases.split(',').map(str::trim) {
        let r = match phase {
            "create" => persist::fill::create_sessions(&cfg),
            "publish" => persist::fill::publish(&cfg)?,
            "verify" => persist::fill::verify(&cfg),
            other => return Err(BenchError::Args(format!("unknown phase {other:?}"))),
        };
        print!("{}", r.render(phase));
        out.insert(phase.to_owned(), r);
    }
    if let Some(path) = &args.common.json {
        write_json(path, &out)?;
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
