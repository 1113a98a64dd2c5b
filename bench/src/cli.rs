//! Command-line interface, in the spirit of emqtt-bench: `-h host -p port -c clients ...`.
//!
//! `-h` is the host (as in emqtt-bench and mosquitto_pub), so help is `--help` only.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::config::Scenario;

#[derive(Debug, Parser)]
#[command(
    name = "ringmq-bench",
    version,
    about = "Load generator and comparison harness for MQTT brokers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect N clients, hold them idle, report the connect rate and (with --broker-pid) the
    /// broker's memory per idle connection.
    Conn(LoadArgs),
    /// N publisher/subscriber pairs, one topic per pair.
    P2p(LoadArgs),
    /// N publishers to one subscriber (or a shared-subscription group of --shared G).
    FanIn(LoadArgs),
    /// One publisher to N subscribers of the same topic.
    FanOut(LoadArgs),
    /// Publisher/subscriber pairs at a fixed rate; reports the latency distribution.
    Latency(LoadArgs),
    /// Open-loop flood from plain blocking-socket clients (issue 12's shape): N publishers
    /// writing batches of QoS 0 PUBLISHes to their own topic as fast as TCP allows, one
    /// subscriber per topic reading into a 1 MiB buffer; the liveness probe runs throughout.
    Flood(FloodArgs),
    /// Start each broker in turn, run the same scenarios, write a markdown report and SVG chart.
    Compare(CompareArgs),
    /// Persistent sessions (Clean Start 0 + expiry, or 3.1.1 clean session 0), QoS 1 or 2:
    /// subscribers go away and come back; losses, duplicates, PUBACK latency, and with
    /// --metrics ringmq's fsyncs per second and records per fsync.
    Persist(crate::persist::args::PersistArgs),
    /// The recovery data set: create N persistent sessions (in waves), queue M QoS 1 messages
    /// for them, and (phase verify, after a restart) check each is delivered once.
    PersistFill(crate::persist::args::FillArgs),
}

impl Command {
    /// A load scenario and its options, or the command back when it is not one (`flood`,
    /// `compare`).
    pub fn into_load(self) -> Result<(Scenario, LoadArgs), Box<Command>> {
        match self {
            Command::Conn(a) => Ok((Scenario::Conn, a)),
            Command::P2p(a) => Ok((Scenario::P2p, a)),
            Command::FanIn(a) => Ok((Scenario::FanIn, a)),
            Command::FanOut(a) => Ok((Scenario::FanOut, a)),
            Command::Latency(a) => Ok((Scenario::Latency, a)),
            other @ (Command::Flood(_)
            | Command::Compare(_)
            | Command::Persist(_)
            | Command::PersistFill(_)) => Err(Box::new(other)),
        }
    }
}

/// The liveness probe's options (see `crate::probe`).
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Milliseconds between two probes (each: new connection, CONNECT/CONNACK,
    /// PINGREQ/PINGRESP, close).
    #[arg(
        long = "probe-interval-ms",
        default_value_t = 250,
        help_heading = "Liveness probe"
    )]
    pub probe_interval_ms: u64,
    /// A probe without CONNACK or PINGRESP after this many milliseconds has failed.
    #[arg(
        long = "probe-timeout-ms",
        default_value_t = 2000,
        help_heading = "Liveness probe"
    )]
    pub probe_timeout_ms: u64,
    /// The run is flagged when a probe failed or its slowest answer took longer than this.
    #[arg(
        long = "probe-threshold-ms",
        default_value_t = 1000,
        help_heading = "Liveness probe"
    )]
    pub probe_threshold_ms: u64,
}

/// Options shared by all load scenarios.
#[derive(Debug, Clone, Args)]
#[command(disable_help_flag = true)]
pub struct LoadArgs {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// Broker host, or several comma-separated (`-h 10.0.0.1,10.0.0.2`): clients are spread
    /// over them round-robin. Each entry may be a URL as in --target.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port (for hosts and targets that name none).
    #[arg(short = 'p', long, default_value_t = 1883)]
    pub port: u16,
    /// A target URL, repeatable, replacing -h: `mqtt://host:port`, `mqtts://host:port`,
    /// `ws://host:port/path`, `wss://host:port/path` (path default `/mqtt`). Client `i` of its
    /// role (pair `i` in p2p) connects to target `i mod targets`.
    #[arg(long = "target", value_name = "URL")]
    pub targets: Vec<String>,
    /// Source addresses to bind before connecting, comma-separated or repeated
    /// (`--ifaddr 127.0.0.2,127.0.0.3`): connection `n` binds address `n mod count`. One source
    /// address reaches one destination through about 28 000 ports (ip_local_port_range).
    #[arg(long = "ifaddr", value_name = "IP[,IP…]")]
    pub ifaddr: Vec<String>,
    /// Clients: connections (conn), pairs (p2p, latency), publishers (fan-in), subscribers (fan-out).
    #[arg(short = 'c', long, default_value_t = 10)]
    pub clients: u32,
    /// Interval between two connection attempts, in milliseconds (0: as fast as
    /// --connect-concurrency allows).
    #[arg(short = 'i', long = "interval", default_value_t = 0)]
    pub interval_ms: u64,
    /// Topic template; `%i` is replaced by the client index. Default depends on the scenario.
    #[arg(short = 't', long)]
    pub topic: Option<String>,
    /// Subscription filter template (fan-in default: the topic with every `%i` level as `+`).
    #[arg(long)]
    pub sub_topic: Option<String>,
    /// QoS of publishes and subscriptions (0 or 1).
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Payload size in bytes (at least 8 to carry the send timestamp used for latency).
    #[arg(short = 's', long = "size", default_value_t = 64)]
    pub payload_size: usize,
    /// Total messages to publish, spread evenly over the publishers (0: no limit).
    #[arg(short = 'L', long = "limit", default_value_t = 0)]
    pub limit: u64,
    /// Messages per second per publisher (0: as fast as possible; QoS 1 bounded by --inflight).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// QoS 1 in-flight window per publisher (also capped by the broker's Receive Maximum).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=30000))]
    pub inflight: u16,
    /// At maximum rate (--rate 0): at most this many messages published but not yet delivered,
    /// over all publishers, so the run measures what the broker sustains instead of how much
    /// the socket buffers hold (0: no bound, open loop). Stalls of 50 ms without a delivery
    /// write the outstanding messages off as lost.
    #[arg(long, default_value_t = 1000)]
    pub window: u64,
    /// Seconds to publish (conn: seconds to hold the connections).
    #[arg(long = "duration", default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Milliseconds to wait for outstanding deliveries after publishing stops.
    #[arg(long = "drain-ms", default_value_t = 2000)]
    pub drain_ms: u64,
    /// Protocol level: 3 (MQTT 3.1), 4 (3.1.1), 5 (5.0).
    #[arg(short = 'V', long = "protocol-version", default_value_t = 5, value_parser = clap::value_parser!(u8).range(3..=5))]
    pub protocol_version: u8,
    /// Keep alive sent in CONNECT, in seconds; clients ping at half of it when idle. 0 turns
    /// keep alive off (some brokers, e.g. rumqttd, refuse 0).
    #[arg(short = 'k', long = "keepalive", default_value_t = 60)]
    pub keep_alive_secs: u16,
    /// Load-generator threads, each a monoio runtime owning a slice of the clients
    /// (default: the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Pin each load-generator thread to a core.
    #[arg(long)]
    pub pin: bool,
    /// Connection attempts in flight per thread. Kept below common listen backlogs
    /// (mosquitto: 100): an overflowing backlog drops SYNs, which the kernel retries after 1 s,
    /// and the connect rate would then measure the retry timer.
    #[arg(long, default_value_t = 16)]
    pub connect_concurrency: u32,
    /// Fan-in: subscribe through a shared subscription group of this many subscribers.
    #[arg(long)]
    pub shared: Option<u32>,
    /// Broker process id: its RSS (VmRSS) and CPU time are read from /proc before and after.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Client identifier prefix (default: `rb<pid>`): ids are `{prefix}-c{i}` (idle),
    /// `-s{i}` (subscribers), `-p{i}` (publishers).
    #[arg(long)]
    pub client_id_prefix: Option<String>,
    /// Client identifier template replacing the prefix scheme, e.g. `device-%i`; `%i` is the
    /// connection number (unique in the run, as in --certfile).
    #[arg(long = "client-id", value_name = "TEMPLATE")]
    pub client_id: Option<String>,
    /// Username; `%i` is the connection number (`-u 'device-%i'`: per-device users).
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password; `%i` is the connection number.
    #[arg(short = 'P', long)]
    pub password: Option<String>,
    /// MQTT 5 Authentication Method property of CONNECT.
    #[arg(long)]
    pub auth_method: Option<String>,
    /// MQTT 5 Authentication Data property of CONNECT (as UTF-8 text); `%i` is the connection
    /// number.
    #[arg(long)]
    pub auth_data: Option<String>,
    /// Connect over TLS (mqtts; every target, ws:// becoming wss://; an mqtts:// or wss://
    /// target needs no -S). The broker's certificate is verified against --cacertfile
    /// for --sni; one of --cacertfile or --insecure is required (emqtt-bench verifies nothing
    /// by default; ringmq-bench makes that a choice).
    #[arg(short = 'S', long, help_heading = "TLS")]
    pub ssl: bool,
    /// PEM file of the CA certificate(s) the broker's certificate must chain to.
    #[arg(long, value_name = "PEM", help_heading = "TLS")]
    pub cacertfile: Option<String>,
    /// Client certificate chain (PEM) presented to the broker. `%i` is replaced by the
    /// connection number, unique per connection: idle clients and subscribers from 0, then
    /// publishers (p2p -c 50: subscribers 0-49, publishers 50-99). So every connection can
    /// present its own identity; emqtt-bench has one certificate for all clients. Without `%i`
    /// the file is loaded once at startup; with it, by each client as it connects (a missing or
    /// bad file then fails that client, counted as a TLS failure).
    #[arg(long, value_name = "PEM", requires = "keyfile", help_heading = "TLS")]
    pub certfile: Option<String>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of --certfile; `%i` as there.
    #[arg(long, value_name = "PEM", requires = "certfile", help_heading = "TLS")]
    pub keyfile: Option<String>,
    /// Do not verify the broker's certificate (its handshake signature is still checked).
    #[arg(
        long,
        visible_alias = "no-verify",
        conflicts_with = "cacertfile",
        help_heading = "TLS"
    )]
    pub insecure: bool,
    /// Server name sent as SNI and checked against the broker's certificate (default: --host;
    /// an IP address sends no SNI and must be in the certificate's IP SANs).
    #[arg(long, value_name = "NAME", help_heading = "TLS")]
    pub sni: Option<String>,
    /// Broker name shown in the report.
    #[arg(long)]
    pub label: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Run the liveness probe during the run (plain TCP; `compare` always does): a new client
    /// connects and pings every --probe-interval-ms, and the run is flagged when one gets no
    /// answer in time.
    #[arg(long, help_heading = "Liveness probe")]
    pub probe: bool,
    /// Where the probe connects (`host:port`, plain MQTT), when the first target is TLS or
    /// WebSocket: e.g. the broker's plain listener (default: the first target).
    #[arg(long, value_name = "HOST:PORT", help_heading = "Liveness probe")]
    pub probe_target: Option<String>,
    #[command(flatten)]
    pub probe_opts: ProbeArgs,
}

/// Options of the `flood` scenario.
#[derive(Debug, Clone, Args)]
#[command(disable_help_flag = true)]
pub struct FloodArgs {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// Broker host.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(short = 'p', long, default_value_t = 1883)]
    pub port: u16,
    /// Source addresses to bind before connecting, comma-separated or repeated: connection
    /// `n` (subscribers first, then publishers) binds address `n mod count`.
    #[arg(long = "ifaddr", value_name = "IP[,IP…]")]
    pub ifaddr: Vec<String>,
    /// Publishers, and as many subscribers (one per topic).
    #[arg(short = 'c', long, default_value_t = 10)]
    pub clients: u32,
    /// Payload size in bytes.
    #[arg(short = 's', long = "size", default_value_t = 64)]
    pub payload_size: usize,
    /// PUBLISH packets per write (one `write_all` of the whole batch).
    #[arg(long, default_value_t = 64)]
    pub batch: u32,
    /// A subscriber's read buffer, in bytes.
    #[arg(long = "read-buffer", default_value_t = 1 << 20)]
    pub read_buffer_bytes: usize,
    /// Topic prefix: publisher i publishes to PREFIX/i (default: `bench/flood/<run id>`,
    /// unique per run, so messages a broker still holds from an earlier run are not counted).
    #[arg(short = 't', long = "topic")]
    pub topic_prefix: Option<String>,
    /// Seconds to publish.
    #[arg(long = "duration", default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Longest wait, in milliseconds, for in-flight deliveries after publishing stops.
    #[arg(long = "drain-ms", default_value_t = 2000)]
    pub drain_ms: u64,
    /// Bound on each client's connect and CONNACK (and SUBSCRIBE/SUBACK), in milliseconds.
    #[arg(long = "connect-timeout-ms", default_value_t = 5000)]
    pub connect_timeout_ms: u64,
    /// Protocol level: 3 (MQTT 3.1), 4 (3.1.1), 5 (5.0).
    #[arg(short = 'V', long = "protocol-version", default_value_t = 5, value_parser = clap::value_parser!(u8).range(3..=5))]
    pub protocol_version: u8,
    /// Broker process id: its CPU time and RSS are read from /proc.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Client identifier prefix (default: `rbflood<run id>`).
    #[arg(long)]
    pub client_id_prefix: Option<String>,
    /// Broker name shown in the report.
    #[arg(long)]
    pub label: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub probe_opts: ProbeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// `name=command`, the command containing `{port}` (and `{config}` for mosquitto and
    /// rumqttd, whose config file is generated). Repeat for each broker.
    #[arg(long = "broker", required = true)]
    pub brokers: Vec<String>,
    /// `default`, `quick` (seconds-long smoke run), a comma-separated list of scenario names,
    /// or `quick:` and a list (those scenarios in their quick size).
    #[arg(long, default_value = "default")]
    pub scenarios: String,
    /// The broker the others are compared with (ratio = other / baseline).
    #[arg(long, default_value = "mosquitto")]
    pub baseline: String,
    /// Markdown file whose broker-level section is (re)written.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out: PathBuf,
    /// SVG chart (default: next to --out, `benchmarks.svg`).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Also write every scenario's raw report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Load-generator threads (default: the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The command line shown in the report as the way to reproduce it.
    #[arg(long)]
    pub reproduce: Option<String>,
    /// Directory for generated broker configs and logs (default: a new temp directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[arg(long)]
    pub quiet: bool,
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        match Cli::try_parse_from(args) {
            Ok(cli) => cli,
            Err(err) => panic!("{args:?} should parse: {err}"),
        }
    }

    #[test]
    fn emqtt_bench_style_short_flags() {
        let cli = parse(&[
            "ringmq-bench",
            "p2p",
            "-h",
            "10.0.0.1",
            "-p",
            "1884",
            "-c",
            "50",
            "-i",
            "5",
            "-t",
            "t/%i",
            "-q",
            "1",
            "-s",
            "256",
            "-L",
            "1000",
            "-V",
            "4",
        ]);
        let Command::P2p(args) = cli.command else {
            panic!("expected p2p")
        };
        assert_eq!(args.host, "10.0.0.1");
        assert_eq!(args.port, 1884);
        assert_eq!(args.clients, 50);
        assert_eq!(args.interval_ms, 5);
        assert_eq!(args.topic.as_deref(), Some("t/%i"));
        assert_eq!(args.qos, 1);
        assert_eq!(args.payload_size, 256);
        assert_eq!(args.limit, 1000);
        assert_eq!(args.protocol_version, 4);
    }

    #[test]
    fn defaults() {
        let cli = parse(&["ringmq-bench", "fan-in"]);
        let Command::FanIn(args) = cli.command else {
            panic!("expected fan-in")
        };
        assert_eq!(args.host, "127.0.0.1");
        assert_eq!(args.port, 1883);
        assert_eq!(args.qos, 0);
        assert_eq!(args.protocol_version, 5);
        assert_eq!(args.rate, 0.0);
        assert_eq!(args.inflight, 64);
        assert_eq!(args.window, 1000);
        assert!(args.threads.is_none());
        assert!(args.shared.is_none());
    }

    #[test]
    fn long_flags_and_auth() {
        let cli = parse(&[
            "ringmq-bench",
            "conn",
            "--broker-pid",
            "42",
            "--duration",
            "2.5",
            "--rate",
            "100",
            "--username",
            "u",
            "--password",
            "p",
            "--auth-method",
            "JWT",
            "--auth-data",
            "tok",
            "--json",
            "/tmp/x.json",
            "--threads",
            "3",
            "--shared",
            "4",
        ]);
        let Command::Conn(args) = cli.command else {
            panic!("expected conn")
        };
        assert_eq!(args.broker_pid, Some(42));
        assert_eq!(args.duration_secs, 2.5);
        assert_eq!(args.rate, 100.0);
        assert_eq!(args.username.as_deref(), Some("u"));
        assert_eq!(args.password.as_deref(), Some("p"));
        assert_eq!(args.auth_method.as_deref(), Some("JWT"));
        assert_eq!(args.auth_data.as_deref(), Some("tok"));
        assert_eq!(args.json, Some(PathBuf::from("/tmp/x.json")));
        assert_eq!(args.threads, Some(3));
        assert_eq!(args.shared, Some(4));
    }

    #[test]
    fn tls_flags_as_emqtt_bench_names_them() {
        let cli = parse(&[
            "ringmq-bench",
            "conn",
            "-S",
            "--cacertfile",
            "ca.pem",
            "--certfile",
            "certs/%i.pem",
            "--keyfile",
            "certs/%i.key",
            "--sni",
            "broker.example",
        ]);
        let Command::Conn(args) = cli.command else {
            panic!("expected conn")
        };
        assert!(args.ssl);
        assert_eq!(args.cacertfile.as_deref(), Some("ca.pem"));
        assert_eq!(args.certfile.as_deref(), Some("certs/%i.pem"));
        assert_eq!(args.keyfile.as_deref(), Some("certs/%i.key"));
        assert_eq!(args.sni.as_deref(), Some("broker.example"));
        assert!(!args.insecure);
        let cli = parse(&["ringmq-bench", "p2p", "--ssl", "--no-verify"]);
        let Command::P2p(args) = cli.command else {
            panic!("expected p2p")
        };
        assert!(args.ssl && args.insecure);
        // A certificate needs its key and the other way round; verification is on or off.
        for bad in [
            &[
                "ringmq-bench",
                "conn",
                "-S",
                "--insecure",
                "--certfile",
                "c.pem",
            ][..],
            &[
                "ringmq-bench",
                "conn",
                "-S",
                "--insecure",
                "--keyfile",
                "c.key",
            ],
            &[
                "ringmq-bench",
                "conn",
                "-S",
                "--insecure",
                "--cacertfile",
                "ca.pem",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_out_of_range_values() {
        assert!(Cli::try_parse_from(["ringmq-bench", "p2p", "-q", "2"]).is_err());
        assert!(Cli::try_parse_from(["ringmq-bench", "p2p", "-V", "6"]).is_err());
        assert!(Cli::try_parse_from(["ringmq-bench", "p2p", "--inflight", "0"]).is_err());
        assert!(Cli::try_parse_from(["ringmq-bench", "p2p", "-c", "many"]).is_err());
    }

    #[test]
    fn compare_takes_several_brokers() {
        let cli = parse(&[
            "ringmq-bench",
            "compare",
            "--broker",
            "ringmq=ringmq --listen 127.0.0.1:{port}",
            "--broker",
            "mosquitto=mosquitto -c {config}",
            "--scenarios",
            "quick",
        ]);
        let Command::Compare(args) = cli.command else {
            panic!("expected compare")
        };
        assert_eq!(args.brokers.len(), 2);
        assert_eq!(args.scenarios, "quick");
        assert_eq!(args.baseline, "mosquitto");
        assert_eq!(args.out, PathBuf::from("docs/benchmarks.md"));
    }

    #[test]
    fn compare_requires_a_broker() {
        assert!(Cli::try_parse_from(["ringmq-bench", "compare"]).is_err());
    }
}
