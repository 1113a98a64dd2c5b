//! `compare`: start each broker in turn on a free loopback port, run the same scenarios
//! against it, stop it, and write the broker-level section of docs/benchmarks.md (tables,
//! ratios to the baseline, the command to reproduce, machine info) and an SVG bar chart.

mod broker;
mod markdown;
mod svg;
pub mod tls;

use std::path::Path;

use clap::Parser;
use serde::Serialize;

pub use broker::{BrokerSpec, RunningBroker};

use crate::cli::{Cli, Command, CompareArgs};
use crate::config::{self, LoadConfig};
use crate::flood::{self, FloodConfig};
use crate::report::{Report, si};
use crate::run;
use crate::sysinfo::{self, MachineInfo};

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("--broker {arg:?}: {why}")]
    BadBroker { arg: String, why: String },
    #[error("--scenarios: unknown scenario {0:?} (known: {known})", known = SCENARIO_IDS.join(", "))]
    UnknownScenario(String),
    #[error("cannot start {name}: {why}")]
    Start { name: String, why: String },
    #[error("i/o: {0}")]
    Io(std::io::Error),
    #[error("cannot write {path}: {why}")]
    Write { path: String, why: String },
}

/// What a scenario's headline number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Connect rate and memory per idle connection.
    Connections,
    /// Delivered messages per second (as fast as the broker sustains).
    Throughput,
    /// Latency percentiles at a fixed rate.
    Latency,
}

/// One scenario of a comparison: a `ringmq-bench` command line without the broker address.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioDef {
    pub id: &'static str,
    pub title: &'static str,
    pub kind: Kind,
    pub args: Vec<String>,
    /// Run against each broker's TLS listener (`-S --cacertfile` with certificates made for
    /// the comparison); the probe still uses the plain listener.
    #[serde(default)]
    pub tls: bool,
}

const SCENARIO_IDS: [&str; 10] = [
    "conn",
    "p2p-qos0",
    "p2p-tls",
    "p2p-qos1",
    "fan-in-qos0",
    "fan-out-qos0",
    "latency",
    "p2p-open",
    "fan-in-open",
    "flood",
];

impl ScenarioDef {
    /// The flood runs its own clients (threads with blocking sockets), not the load threads.
    pub fn is_flood(&self) -> bool {
        self.args.first().is_some_and(|a| a == "flood")
    }
}

fn def(id: &'static str, title: &'static str, kind: Kind, args: &str) -> ScenarioDef {
    ScenarioDef {
        id,
        title,
        kind,
        args: args.split_whitespace().map(str::to_string).collect(),
        tls: false,
    }
}

/// A scenario run over each broker's TLS listener.
fn def_tls(id: &'static str, title: &'static str, kind: Kind, args: &str) -> ScenarioDef {
    ScenarioDef {
        tls: true,
        ..def(id, title, kind, args)
    }
}

/// The scenarios of `--scenarios default|quick|a,b,c`. Defaults are sized for a 2-core
/// machine that also runs the load generator: each takes at most ~15 s.
///
/// The last three are open loop (issue 12: a freeze hid behind the closed loop and behind
/// ringmq-bench's own write pattern): p2p and fan-in with `--window 0`, and the flood of
/// plain blocking-socket clients writing large batches. Every scenario runs with the liveness
/// probe.
pub fn scenarios(selection: &str) -> Result<Vec<ScenarioDef>, CompareError> {
    let full = vec![
        def(
            "conn",
            "10 000 idle connections",
            Kind::Connections,
            "conn -c 10000 --duration 5",
        ),
        def(
            "p2p-qos0",
            "p2p QoS 0, 50 pairs, max rate",
            Kind::Throughput,
            "p2p -c 50 -q 0 -s 64 --duration 10 --window 200",
        ),
        def_tls(
            "p2p-tls",
            "p2p QoS 0 over TLS, 50 pairs, max rate",
            Kind::Throughput,
            "p2p -c 50 -q 0 -s 64 --duration 10 --window 200",
        ),
        def(
            "p2p-qos1",
            "p2p QoS 1, 50 pairs, max rate",
            Kind::Throughput,
            "p2p -c 50 -q 1 -s 64 --duration 10 --window 200 --inflight 64",
        ),
        def(
            "fan-in-qos0",
            "fan-in QoS 0, 50 publishers → 1 subscriber",
            Kind::Throughput,
            "fan-in -c 50 -q 0 -s 64 --duration 10 --window 200",
        ),
        def(
            "fan-out-qos0",
            "fan-out QoS 0, 1 publisher → 1000 subscribers",
            Kind::Throughput,
            "fan-out -c 1000 -q 0 -s 64 --duration 10 --window 5",
        ),
        def(
            "latency",
            "latency, 50 pairs QoS 0 at half of the baseline's p2p rate",
            Kind::Latency,
            "latency -c 50 -q 0 -s 64 --duration 10",
        ),
        def(
            "p2p-open",
            "p2p QoS 0, 10 pairs, open loop (no window)",
            Kind::Throughput,
            "p2p -c 10 -q 0 -s 64 --duration 5 --window 0",
        ),
        def(
            "fan-in-open",
            "fan-in QoS 0, 10 publishers → 1 subscriber, open loop (no window)",
            Kind::Throughput,
            "fan-in -c 10 -q 0 -s 64 --duration 5 --window 0",
        ),
        def(
            "flood",
            "flood: 10 blocking-socket publishers writing 64-PUBLISH batches → 10 subscribers",
            Kind::Throughput,
            "flood -c 10 -s 64 --batch 64 --duration 5",
        ),
    ];
    let quick = vec![
        def(
            "conn",
            "200 idle connections",
            Kind::Connections,
            "conn -c 200 --duration 1",
        ),
        def(
            "p2p-qos0",
            "p2p QoS 0, 5 pairs",
            Kind::Throughput,
            "p2p -c 5 -q 0 --duration 1 --window 100 --drain-ms 500",
        ),
        def_tls(
            "p2p-tls",
            "p2p QoS 0 over TLS, 5 pairs",
            Kind::Throughput,
            "p2p -c 5 -q 0 --duration 1 --window 100 --drain-ms 500",
        ),
        def(
            "p2p-qos1",
            "p2p QoS 1, 5 pairs",
            Kind::Throughput,
            "p2p -c 5 -q 1 --duration 1 --window 100 --drain-ms 500",
        ),
        def(
            "fan-in-qos0",
            "fan-in QoS 0, 5 → 1",
            Kind::Throughput,
            "fan-in -c 5 -q 0 --duration 1 --window 100 --drain-ms 500",
        ),
        def(
            "fan-out-qos0",
            "fan-out QoS 0, 1 → 20",
            Kind::Throughput,
            "fan-out -c 20 -q 0 --duration 1 --window 10 --drain-ms 500",
        ),
        def(
            "latency",
            "latency, 5 pairs",
            Kind::Latency,
            "latency -c 5 -q 0 --duration 1 --drain-ms 500",
        ),
        def(
            "p2p-open",
            "p2p QoS 0, 5 pairs, open loop",
            Kind::Throughput,
            "p2p -c 5 -q 0 --duration 1 --window 0 --drain-ms 500",
        ),
        def(
            "fan-in-open",
            "fan-in QoS 0, 5 → 1, open loop",
            Kind::Throughput,
            "fan-in -c 5 -q 0 --duration 1 --window 0 --drain-ms 500",
        ),
        def(
            "flood",
            "flood, 5 blocking-socket publishers → 5 subscribers",
            Kind::Throughput,
            "flood -c 5 --duration 2 --drain-ms 500",
        ),
    ];
    // `quick:a,b`: those scenarios in their quick size.
    let (set, selection) = match selection.strip_prefix("quick:") {
        Some(list) => (&quick, list),
        None => (&full, selection),
    };
    match selection {
        "default" => Ok(full),
        "quick" => Ok(quick),
        list => list
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(|id| {
                set.iter()
                    .find(|d| d.id == id)
                    .cloned()
                    .ok_or_else(|| CompareError::UnknownScenario(id.to_string()))
            })
            .collect(),
    }
}

/// One scenario run against one broker.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub broker: String,
    pub scenario: &'static str,
    /// The load command line (with a placeholder port).
    pub command: String,
    pub report: Option<Report>,
    /// Why there is no report, or what went wrong around it (broker crash).
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerInfo {
    pub name: String,
    pub command: String,
    pub version: Option<String>,
    pub protocol_level: u8,
}

/// Everything the markdown and the chart are made from.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub generated_at: String,
    pub machine: MachineInfo,
    pub git_commit: Option<String>,
    pub reproduce: String,
    pub baseline: String,
    pub threads: usize,
    /// /proc/loadavg when the comparison started and ended: other work on the machine skews
    /// the numbers.
    pub load_before: String,
    pub load_after: String,
    pub brokers: Vec<BrokerInfo>,
    pub scenarios: Vec<ScenarioDef>,
    pub outcomes: Vec<Outcome>,
    /// Per-publisher rate used by the latency scenario, and where it came from.
    pub latency_rate: Option<(f64, String)>,
}

impl Comparison {
    pub fn outcome(&self, broker: &str, scenario: &str) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|o| o.broker == broker && o.scenario == scenario)
    }

    pub fn report(&self, broker: &str, scenario: &str) -> Option<&Report> {
        self.outcome(broker, scenario)
            .and_then(|o| o.report.as_ref())
    }
}

/// A headline number of the summary table and the chart.
#[derive(Debug, Clone, Copy)]
pub struct SummaryRow {
    pub scenario: &'static str,
    pub metric: &'static str,
    pub unit: Unit,
    pub higher_is_better: bool,
    pub value: fn(&Report) -> Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    PerSec,
    Bytes,
    Micros,
}

/// The summary rows for the scenarios that were run.
pub fn summary_rows(defs: &[ScenarioDef]) -> Vec<SummaryRow> {
    let rate = |r: &Report| Some(r.delivery_rate);
    let rows = [
        SummaryRow {
            scenario: "conn",
            metric: "connections/s",
            unit: Unit::PerSec,
            higher_is_better: true,
            value: |r| Some(r.connections.per_sec),
        },
        SummaryRow {
            scenario: "conn",
            metric: "broker RSS per idle connection",
            unit: Unit::Bytes,
            higher_is_better: false,
            value: |r| {
                r.broker_process
                    .as_ref()
                    .and_then(|b| b.rss_per_connection_bytes)
            },
        },
        SummaryRow {
            scenario: "p2p-qos0",
            metric: "delivered msg/s",
            unit: Unit::PerSec,
            higher_is_better: true,
            value: rate,
        },
        SummaryRow {
            scenario: "p2p-tls",
            metric: "delivered msg/s over TLS",
            unit: Unit::PerSec,
            higher_is_better: true,
            value: rate,
        },
        SummaryRow {
            scenario: "p2p-qos1",
            metric: "delivered msg/s",
            unit: Unit::PerSec,
            higher_is_better: true,
            value: rate,
        },
        SummaryRow {
            scenario: "fan-in-qos0",
            metric: "delivered msg/s",
            unit: Unit::PerSec,
            higher_is_better: true,
            value: rate,
        },
        SummaryRow {
            scenario: "fan-out-qos0",
            metric: "deliveries/s",
            unit: Unit::PerSec,
            higher_is_better: true,
            value: rate,
        },
        SummaryRow {
            scenario: "latency",
            metric: "p50 latency",
            unit: Unit::Micros,
            higher_is_better: false,
            value: |r| r.latency.map(|l| l.p50_us),
        },
        SummaryRow {
            scenario: "latency",
            metric: "p99 latency",
            unit: Unit::Micros,
            higher_is_better: false,
            value: |r| r.latency.map(|l| l.p99_us),
        },
        SummaryRow {
            scenario: "p2p-open",
            metric: "delivered msg/s",
            unit: Unit::PerSec,
            higher_is_better: true,
            value: rate,
        },
        SummaryRow {
            scenario: "fan-in-open",
            metric: "delivered msg/s",
            unit: Unit::PerSec,
            higher_is_better: true,
            value: rate,
        },
        SummaryRow {
            scenario: "flood",
            metric: "delivered msg/s",
            unit: Unit::PerSec,
            higher_is_better: true,
            value: rate,
        },
    ];
    rows.into_iter()
        .filter(|row| defs.iter().any(|d| d.id == row.scenario))
        .collect()
}

/// Runs the comparison and writes its outputs.
pub fn compare(args: &CompareArgs) -> Result<(), CompareError> {
    sysinfo::raise_nofile_limit();
    let mut specs = args
        .brokers
        .iter()
        .map(|b| BrokerSpec::parse(b))
        .collect::<Result<Vec<_>, _>>()?;
    // The baseline runs first: the latency scenario's rate is derived from its p2p result.
    specs.sort_by_key(|s| s.name != args.baseline);
    let defs = scenarios(&args.scenarios)?;
    let dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("ringmq-bench-compare-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(CompareError::Io)?;
    let threads = args.threads.unwrap_or_else(config::default_threads);
    let mut cmp = Comparison {
        generated_at: utc_now(),
        machine: MachineInfo::detect(),
        git_commit: git_commit(),
        reproduce: args
            .reproduce
            .clone()
            .unwrap_or_else(|| reproduce_line(args)),
        baseline: args.baseline.clone(),
        threads,
        load_before: sysinfo::load_average(),
        load_after: String::new(),
        brokers: specs
            .iter()
            .map(|s| BrokerInfo {
                name: s.name.clone(),
                command: s.command.clone(),
                version: broker::version(s),
                protocol_level: s.protocol_level.unwrap_or(5),
            })
            .collect(),
        scenarios: defs.clone(),
        outcomes: Vec::new(),
        latency_rate: None,
    };
    let tls_files = if defs.iter().any(|d| d.tls) {
        Some(tls::TlsFiles::generate(&dir)?)
    } else {
        None
    };
    for spec in &specs {
        for def in &defs {
            let files = tls_files.as_ref().filter(|_| def.tls);
            let outcome = run_one(&mut cmp, spec, def, &dir, threads, args.quiet, files);
            eprintln!("{}", one_line(&outcome));
            cmp.outcomes.push(outcome);
        }
    }
    cmp.load_after = sysinfo::load_average();
    let svg_path = args
        .svg
        .clone()
        .unwrap_or_else(|| args.out.with_file_name("benchmarks.svg"));
    let svg_text = svg::chart(&cmp);
    write(&svg_path, &svg_text)?;
    let existing = std::fs::read_to_string(&args.out).unwrap_or_default();
    let svg_rel = relative_to(&svg_path, &args.out);
    let section = markdown::section(&cmp, &svg_rel);
    write(&args.out, &markdown::splice(&existing, &section))?;
    if let Some(json) = &args.json {
        crate::write_json(json, &cmp).map_err(|e| CompareError::Write {
            path: json.display().to_string(),
            why: e.to_string(),
        })?;
    }
    eprintln!(
        "wrote {} and {} (broker logs in {})",
        args.out.display(),
        svg_path.display(),
        dir.display()
    );
    Ok(())
}

fn run_one(
    cmp: &mut Comparison,
    spec: &BrokerSpec,
    def: &ScenarioDef,
    dir: &Path,
    threads: usize,
    quiet: bool,
    tls: Option<&tls::TlsFiles>,
) -> Outcome {
    let mut argv: Vec<String> = def.args.clone();
    if def.kind == Kind::Latency {
        let (rate, _) = latency_rate(cmp, def);
        argv.extend(["--rate".to_string(), format!("{rate:.1}")]);
    }
    let level = spec.protocol_level.unwrap_or(5);
    argv.extend(["-V".to_string(), level.to_string()]);
    // The flood always probes; the load scenarios are asked to.
    if !def.is_flood() {
        argv.push("--probe".to_string());
    }
    let command = match tls {
        Some(_) => format!(
            "ringmq-bench {} -p TLS_PORT -S --cacertfile CA --probe-target 127.0.0.1:PORT --broker-pid PID",
            argv.join(" ")
        ),
        None => format!("ringmq-bench {} -p PORT --broker-pid PID", argv.join(" ")),
    };
    let mut outcome = Outcome {
        broker: spec.name.clone(),
        scenario: def.id,
        command,
        report: None,
        problem: None,
    };
    eprintln!("== {} / {}", spec.name, def.id);
    let mut broker = match RunningBroker::start(spec, dir, def.id, tls) {
        Ok(b) => b,
        Err(e) => {
            outcome.problem = Some(e.to_string());
            return outcome;
        }
    };
    let mut full = vec!["ringmq-bench".to_string()];
    full.extend(argv);
    match (tls, broker.tls_port) {
        (Some(files), Some(tls_port)) => full.extend([
            "-p".into(),
            tls_port.to_string(),
            "-S".into(),
            "--cacertfile".into(),
            files.ca.display().to_string(),
            "--probe-target".into(),
            format!("127.0.0.1:{}", broker.port),
        ]),
        _ => full.extend(["-p".into(), broker.port.to_string()]),
    }
    full.extend([
        "--broker-pid".into(),
        broker.pid().to_string(),
        "--label".into(),
        spec.name.clone(),
    ]);
    // The flood's threads are its clients, one each; --threads is the load scenarios'.
    if !def.is_flood() {
        full.extend(["--threads".into(), threads.to_string()]);
    }
    if quiet {
        full.push("--quiet".into());
    }
    match execute(&full) {
        Ok(report) => outcome.report = Some(report),
        Err(e) => outcome.problem = Some(e),
    }
    // ringmq's stall detector logs each stall (ready work, no progress for
    // server.stall_threshold_ms) at warn level; a compare run must see none.
    let stalls = broker.log_count(STALL_LOG_LINE);
    if stalls > 0 {
        let note = format!("broker logged {stalls} shard stall(s)");
        outcome.problem = Some(match outcome.problem.take() {
            Some(p) => format!("{p}; {note}"),
            None => note,
        });
    }
    if !broker.alive() {
        let note = format!(
            "broker exited during the run; log tail:\n{}",
            broker.log_tail()
        );
        outcome.problem = Some(match outcome.problem.take() {
            Some(p) => format!("{p}; {note}"),
            None => note,
        });
    }
    broker.stop();
    outcome
}

/// What ringmq's stall detector logs (engine/src/stall.rs), counted in every broker's log.
const STALL_LOG_LINE: &str = "shard stalled";

/// Per-publisher rate for the latency scenario: half the baseline's p2p QoS 0 delivery rate,
/// spread over the latency scenario's publishers.
fn latency_rate(cmp: &mut Comparison, def: &ScenarioDef) -> (f64, String) {
    if let Some(known) = &cmp.latency_rate {
        return known.clone();
    }
    let pairs: f64 = def
        .args
        .windows(2)
        .find(|w| w[0] == "-c")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(1.0);
    let source = cmp
        .report(&cmp.baseline, "p2p-qos0")
        .map(|r| (r.delivery_rate, cmp.baseline.clone()))
        .or_else(|| {
            cmp.outcomes
                .iter()
                .find(|o| o.scenario == "p2p-qos0")
                .and_then(|o| {
                    o.report
                        .as_ref()
                        .map(|r| (r.delivery_rate, o.broker.clone()))
                })
        });
    let chosen = match source {
        Some((rate, from)) if rate > 0.0 => (
            (rate / 2.0 / pairs).max(1.0),
            format!(
                "half of {from}'s p2p QoS 0 rate ({} msg/s) = {} msg/s in total",
                si(rate),
                si(rate / 2.0)
            ),
        ),
        _ => (
            config::DEFAULT_LATENCY_RATE,
            "no p2p QoS 0 result to derive it from: the default rate".to_string(),
        ),
    };
    cmp.latency_rate = Some(chosen.clone());
    chosen
}

/// What a scenario's command line asks for.
#[derive(Debug)]
// Made once per scenario run: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Load(LoadConfig),
    Flood(FloodConfig),
}

fn parse_scenario(argv: &[String]) -> Result<Parsed, String> {
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    match cli.command.into_load() {
        Ok((scenario, args)) => LoadConfig::from_args(scenario, &args)
            .map(Parsed::Load)
            .map_err(|e| e.to_string()),
        Err(command) => match *command {
            Command::Flood(args) => config::flood_config(&args)
                .map(Parsed::Flood)
                .map_err(|e| e.to_string()),
            _ => Err("compare cannot nest".to_string()),
        },
    }
}

/// Runs one scenario command line; the flood's report in the common shape.
fn execute(argv: &[String]) -> Result<Report, String> {
    match parse_scenario(argv)? {
        Parsed::Load(cfg) => run::run(&cfg).map_err(|e| e.to_string()),
        Parsed::Flood(cfg) => {
            let report = flood::run(&cfg).map_err(|e| e.to_string())?;
            if !cfg.quiet {
                eprint!("{}", report.render());
            }
            Ok(report.to_report())
        }
    }
}

fn one_line(o: &Outcome) -> String {
    let mut problem = o
        .problem
        .as_deref()
        .map(|p| format!(" — {p}"))
        .unwrap_or_default();
    if let Some(probe) = o.report.as_ref().and_then(|r| r.probe.as_ref()) {
        problem = format!("; probe {}{problem}", probe.summary());
        if let Some(verdict) = probe.verdict() {
            problem.push_str(&format!("\n   !!! {verdict}"));
        }
    }
    match &o.report {
        Some(r) if r.publishers == 0 => format!(
            "   {} / {}: {} connected at {} conn/s, {} per connection{problem}",
            o.broker,
            o.scenario,
            r.connections.ok,
            si(r.connections.per_sec),
            r.broker_process
                .as_ref()
                .and_then(|b| b.rss_per_connection_bytes)
                .map_or("–".to_string(), crate::report::bytes),
        ),
        Some(r) => format!(
            "   {} / {}: published {} msg/s, delivered {} msg/s ({:.2} %), p50 {}, p99 {}{problem}",
            o.broker,
            o.scenario,
            si(r.publish_rate),
            si(r.delivery_rate),
            r.delivery_ratio * 100.0,
            r.latency
                .map_or("–".to_string(), |l| crate::report::micros(l.p50_us)),
            r.latency
                .map_or("–".to_string(), |l| crate::report::micros(l.p99_us)),
        ),
        None => format!("   {} / {}: FAILED{problem}", o.broker, o.scenario),
    }
}

fn write(path: &Path, text: &str) -> Result<(), CompareError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| CompareError::Write {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
    }
    std::fs::write(path, text).map_err(|e| CompareError::Write {
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

/// `svg`'s path as seen from the directory of `doc` (for the markdown image link).
fn relative_to(svg: &Path, doc: &Path) -> String {
    match (svg.parent(), doc.parent()) {
        (Some(a), Some(b)) if a == b => svg
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        _ => svg.display().to_string(),
    }
}

fn reproduce_line(args: &CompareArgs) -> String {
    let mut line = String::from("ringmq-bench compare");
    for b in &args.brokers {
        line.push_str(&format!(" --broker '{b}'"));
    }
    line.push_str(&format!(
        " --scenarios {} --out {}",
        args.scenarios,
        args.out.display()
    ));
    line
}

/// The commit measured: `RINGMQ_COMMIT` when set (a build from an exported tree has no .git),
/// else `git rev-parse --short HEAD`.
fn git_commit() -> Option<String> {
    if let Ok(commit) = std::env::var("RINGMQ_COMMIT")
        && !commit.trim().is_empty()
    {
        return Some(commit.trim().to_string());
    }
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DD HH:MM UTC` (proleptic Gregorian).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn scenario_selection() {
        let all = scenarios("default").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.iter().map(|d| d.id).collect::<Vec<_>>(), SCENARIO_IDS);
        let some = scenarios("latency, p2p-qos0").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            some.iter().map(|d| d.id).collect::<Vec<_>>(),
            ["latency", "p2p-qos0"]
        );
        assert!(matches!(
            scenarios("p2p,nope"),
            Err(CompareError::UnknownScenario(_))
        ));
        let small = scenarios("quick:p2p-tls").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(small.len(), 1);
        assert!(small[0].tls && small[0].args.contains(&"5".to_string()));
        assert_eq!(scenarios("quick").unwrap_or_default().len(), 10);
        let quick: Vec<_> = scenarios("quick")
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(
            quick, SCENARIO_IDS,
            "quick runs the same scenarios, smaller"
        );
    }

    #[test]
    fn every_scenario_command_parses() {
        for def in scenarios("default")
            .unwrap_or_default()
            .into_iter()
            .chain(scenarios("quick").unwrap_or_default())
        {
            let mut argv = vec!["ringmq-bench".to_string()];
            argv.extend(def.args.clone());
            argv.extend(["-p".into(), "1".into()]);
            if !def.is_flood() {
                argv.push("--probe".into());
            }
            if def.tls {
                argv.extend(
                    ["-S", "--insecure", "--probe-target", "127.0.0.1:2"].map(String::from),
                );
            }
            match parse_scenario(&argv) {
                Ok(Parsed::Load(cfg)) => {
                    assert!(!def.is_flood(), "{}", def.id);
                    assert_eq!(cfg.routes.any_tls(), def.tls, "{}", def.id);
                    assert!(cfg.probe.is_some(), "{}: compare always probes", def.id);
                    if def.id.ends_with("-open") {
                        assert_eq!(cfg.window, 0, "{}: open loop", def.id);
                    }
                }
                Ok(Parsed::Flood(cfg)) => assert!(def.is_flood() && cfg.publishers > 0),
                Err(e) => panic!("{}: {e}", def.id),
            }
        }
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(format_utc(1_795_369_383), "2026-11-22 17:43 UTC");
    }

    #[test]
    fn svg_link_is_relative_when_side_by_side() {
        assert_eq!(
            relative_to(
                Path::new("docs/benchmarks.svg"),
                Path::new("docs/benchmarks.md")
            ),
            "benchmarks.svg"
        );
        assert_eq!(
            relative_to(Path::new("/x/c.svg"), Path::new("docs/b.md")),
            "/x/c.svg"
        );
    }
}
