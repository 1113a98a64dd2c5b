//! A validated load configuration and the plan of clients it implies.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use ringmq_codec::{ProtocolVersion, QoS};
use serde::Serialize;

use crate::cli::{FloodArgs, LoadArgs, ProbeArgs};
use crate::flood::FloodConfig;
use crate::probe::ProbeConfig;
use crate::target::{self, Routes, Target, TargetError};
use crate::template;
use crate::tls::{TlsError, TlsOptions, TlsSetup};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Conn,
    P2p,
    FanIn,
    FanOut,
    Latency,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Conn => "conn",
            Scenario::P2p => "p2p",
            Scenario::FanIn => "fan-in",
            Scenario::FanOut => "fan-out",
            Scenario::Latency => "latency",
        }
    }

    fn default_topic(self) -> &'static str {
        match self {
            Scenario::Conn => "bench/conn/%i",
            Scenario::P2p => "bench/p2p/%i",
            Scenario::FanIn => "bench/fanin/%i",
            Scenario::FanOut => "bench/fanout",
            Scenario::Latency => "bench/lat/%i",
        }
    }
}

/// Publishing rate per publisher when `latency` is run without `--rate`.
pub const DEFAULT_LATENCY_RATE: f64 = 100.0;
/// Group name of fan-in's shared subscription.
pub const SHARE_GROUP: &str = "bench";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot resolve {host}:{port}: {reason}")]
    Resolve {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("--clients must be at least 1")]
    NoClients,
    #[error("--shared must be at least 1")]
    EmptyShareGroup,
    #[error("--rate must be a finite number ≥ 0, got {0}")]
    BadRate(f64),
    #[error("--duration must be a finite number > 0, got {0}")]
    BadDuration(f64),
    #[error("--threads must be at least 1")]
    NoThreads,
    #[error("--auth-method and --auth-data need MQTT 5 (-V 5)")]
    AuthNeedsV5,
    #[error("{0} needs --ssl")]
    TlsOptionWithoutSsl(&'static str),
    #[error(
        "--ssl needs --cacertfile to verify the broker's certificate, or --insecure to skip that (so does an mqtts:// or wss:// target)"
    )]
    SslWithoutTrust,
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "--probe speaks plain MQTT over TCP: the first target must be mqtt:// without --ssl, or give --probe-target"
    )]
    ProbeOverTls,
    #[error("{0} must be at least 1")]
    ZeroSetting(&'static str),
    #[error("--batch must be at least 1")]
    EmptyBatch,
    #[error("--read-buffer must be at least 1")]
    NoReadBuffer,
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub scenario: Scenario,
    /// The first target's address (the probe's).
    pub addr: SocketAddr,
    /// Every target (`-h a,b`, `--target URL`) and source address (`--ifaddr`), and which
    /// client uses which.
    pub routes: Routes,
    pub clients: u32,
    pub interval_ms: u64,
    pub topic: String,
    pub sub_topic: Option<String>,
    pub qos: QoS,
    pub payload_size: usize,
    pub limit: u64,
    pub rate: f64,
    pub inflight: u16,
    /// End-to-end window at maximum rate; 0 = open loop.
    pub window: u64,
    pub duration: Duration,
    pub drain: Duration,
    pub protocol: ProtocolVersion,
    pub keep_alive_secs: u16,
    pub threads: usize,
    pub pin: bool,
    pub connect_concurrency: u32,
    pub shared: Option<u32>,
    pub broker_pid: Option<u32>,
    pub client_id_prefix: String,
    /// `--client-id` template (`%i`: the connection number); `None`: `{prefix}-{role}{index}`.
    pub client_id: Option<String>,
    /// `-u`, `-P`, `--auth-data`: templates, `%i` the connection number, expanded once per
    /// client when it connects ([`crate::wire::Credentials`]).
    pub username: Option<String>,
    pub password: Option<String>,
    pub auth_method: Option<String>,
    pub auth_data: Option<String>,
    /// `--ssl`: how clients set up TLS; `None` is plain TCP.
    pub tls: Option<Arc<TlsSetup>>,
    pub label: Option<String>,
    pub quiet: bool,
    /// `--probe`: the liveness probe runs during the whole run.
    pub probe: Option<ProbeConfig>,
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl LoadConfig {
    pub fn from_args(scenario: Scenario, args: &LoadArgs) -> Result<LoadConfig, ConfigError> {
        let mut routes = routes(args)?;
        for target in routes.targets_mut() {
            target.set_server_name(args.sni.as_deref())?;
        }
        let addr = routes.first().addr;
        if args.clients == 0 {
            return Err(ConfigError::NoClients);
        }
        if args.shared == Some(0) {
            return Err(ConfigError::EmptyShareGroup);
        }
        if !args.rate.is_finite() || args.rate < 0.0 {
            return Err(ConfigError::BadRate(args.rate));
        }
        if !args.duration_secs.is_finite() || args.duration_secs <= 0.0 {
            return Err(ConfigError::BadDuration(args.duration_secs));
        }
        let threads = args.threads.unwrap_or_else(default_threads);
        if threads == 0 {
            return Err(ConfigError::NoThreads);
        }
        let protocol = protocol_of(args.protocol_version);
        if !protocol.is_v5() && (args.auth_method.is_some() || args.auth_data.is_some()) {
            return Err(ConfigError::AuthNeedsV5);
        }
        let tls = tls_setup(args, &routes)?;
        let probe_addr = match &args.probe_target {
            Some(t) => Target::parse(t, args.port, false)?,
            None => routes.first().clone(),
        };
        if args.probe && (probe_addr.tls || probe_addr.transport != target::Transport::Mqtt) {
            return Err(ConfigError::ProbeOverTls);
        }
        let client_id_prefix = args
            .client_id_prefix
            .clone()
            .unwrap_or_else(|| format!("rb{}", std::process::id()));
        let probe = args
            .probe
            .then(|| {
                probe_config(
                    &args.probe_opts,
                    probe_addr.addr,
                    protocol,
                    &client_id_prefix,
                )
            })
            .transpose()?;
        let rate = if scenario == Scenario::Latency && args.rate == 0.0 {
            DEFAULT_LATENCY_RATE
        } else {
            args.rate
        };
        Ok(LoadConfig {
            scenario,
            addr,
            routes,
            clients: args.clients,
            interval_ms: args.interval_ms,
            topic: args
                .topic
                .clone()
                .unwrap_or_else(|| scenario.default_topic().to_string()),
            sub_topic: args.sub_topic.clone(),
            qos: if args.qos == 1 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            },
            payload_size: args.payload_size,
            limit: args.limit,
            rate,
            inflight: args.inflight,
            window: if rate > 0.0 { 0 } else { args.window },
            duration: Duration::from_secs_f64(args.duration_secs),
            drain: Duration::from_millis(args.drain_ms),
            protocol,
            keep_alive_secs: args.keep_alive_secs,
            threads,
            pin: args.pin,
            connect_concurrency: args.connect_concurrency.max(1),
            shared: args.shared,
            broker_pid: args.broker_pid,
            client_id_prefix,
            client_id: args.client_id.clone(),
            username: args.username.clone(),
            password: args.password.clone(),
            auth_method: args.auth_method.clone(),
            auth_data: args.auth_data.clone(),
            tls,
            label: args.label.clone(),
            quiet: args.quiet,
            probe,
        })
    }
}

/// The targets: every `--target`, else every host of `-h a,b` with `-p`; and `--ifaddr`.
fn routes(args: &LoadArgs) -> Result<Routes, ConfigError> {
    let written: Vec<&str> = if args.targets.is_empty() {
        args.host
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect()
    } else {
        args.targets.iter().map(|t| t.trim()).collect()
    };
    let targets = written
        .into_iter()
        .map(|t| Target::parse(t, args.port, args.ssl))
        .collect::<Result<Vec<_>, _>>()?;
    let sources = target::parse_sources(&args.ifaddr)?;
    Ok(Routes::new(targets, sources)?)
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address".to_string()))
        .map_err(|reason| ConfigError::Resolve {
            host: host.to_string(),
            port,
            reason,
        })
}

fn protocol_of(level: u8) -> ProtocolVersion {
    match level {
        3 => ProtocolVersion::V3_1,
        4 => ProtocolVersion::V3_1_1,
        _ => ProtocolVersion::V5,
    }
}

/// The probe of a run against `addr`: its client ids are `{prefix}-probe-{n}`.
fn probe_config(
    args: &ProbeArgs,
    addr: SocketAddr,
    protocol: ProtocolVersion,
    prefix: &str,
) -> Result<ProbeConfig, ConfigError> {
    for (flag, value) in [
        ("--probe-interval-ms", args.probe_interval_ms),
        ("--probe-timeout-ms", args.probe_timeout_ms),
        ("--probe-threshold-ms", args.probe_threshold_ms),
    ] {
        if value == 0 {
            return Err(ConfigError::ZeroSetting(flag));
        }
    }
    Ok(ProbeConfig {
        addr,
        protocol,
        interval: Duration::from_millis(args.probe_interval_ms),
        timeout: Duration::from_millis(args.probe_timeout_ms),
        slow_threshold: Duration::from_millis(args.probe_threshold_ms),
        client_id_prefix: format!("{prefix}-probe"),
    })
}

/// The flood a `flood` command line asks for.
pub fn flood_config(args: &FloodArgs) -> Result<FloodConfig, ConfigError> {
    let addr = resolve(&args.host, args.port)?;
    if args.clients == 0 {
        return Err(ConfigError::NoClients);
    }
    if args.batch == 0 {
        return Err(ConfigError::EmptyBatch);
    }
    if args.read_buffer_bytes == 0 {
        return Err(ConfigError::NoReadBuffer);
    }
    if !args.duration_secs.is_finite() || args.duration_secs <= 0.0 {
        return Err(ConfigError::BadDuration(args.duration_secs));
    }
    if args.connect_timeout_ms == 0 {
        return Err(ConfigError::ZeroSetting("--connect-timeout-ms"));
    }
    let protocol = protocol_of(args.protocol_version);
    let mut cfg = FloodConfig::new(addr);
    if let Some(prefix) = &args.client_id_prefix {
        cfg.client_id_prefix = prefix.clone();
    }
    if let Some(prefix) = &args.topic_prefix {
        cfg.topic_prefix = prefix.clone();
    }
    cfg.probe = probe_config(&args.probe_opts, addr, protocol, &cfg.client_id_prefix)?;
    Ok(FloodConfig {
        publishers: args.clients,
        duration: Duration::from_secs_f64(args.duration_secs),
        payload_size: args.payload_size,
        batch: args.batch,
        read_buffer_bytes: args.read_buffer_bytes,
        protocol,
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        drain: Duration::from_millis(args.drain_ms),
        broker_pid: args.broker_pid,
        label: args.label.clone(),
        quiet: args.quiet,
        sources: target::parse_sources(&args.ifaddr)?,
        ..cfg
    })
}

/// The TLS setup `--ssl` and its options ask for (files loaded now, so a bad one stops the run
/// before it starts), or `None` for plain TCP.
fn tls_setup(args: &LoadArgs, routes: &Routes) -> Result<Option<Arc<TlsSetup>>, ConfigError> {
    if !args.ssl && !routes.any_tls() {
        let stray = [
            ("--cacertfile", args.cacertfile.is_some()),
            ("--certfile", args.certfile.is_some()),
            ("--keyfile", args.keyfile.is_some()),
            ("--insecure", args.insecure),
            ("--sni", args.sni.is_some()),
        ];
        return match stray.iter().find(|(_, given)| *given) {
            Some((flag, _)) => Err(ConfigError::TlsOptionWithoutSsl(flag)),
            None => Ok(None),
        };
    }
    if args.cacertfile.is_none() && !args.insecure {
        return Err(ConfigError::SslWithoutTrust);
    }
    let options = TlsOptions {
        ca_file: args.cacertfile.clone(),
        cert_file: args.certfile.clone(),
        key_file: args.keyfile.clone(),
        insecure: args.insecure,
        // The default name; each TLS target sends its own (`Target::server_name`).
        server_name: args
            .sni
            .clone()
            .unwrap_or_else(|| routes.first().host.clone()),
    };
    Ok(Some(Arc::new(TlsSetup::new(&options)?)))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubSpec {
    pub index: u32,
    pub filter: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubSpec {
    pub index: u32,
    pub topic: String,
    /// Messages this publisher sends; `None`: until the run ends.
    pub limit: Option<u64>,
}

/// Which clients a run opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub subscribers: Vec<SubSpec>,
    pub publishers: Vec<PubSpec>,
    /// Clients that connect and stay idle (`conn`).
    pub idle: u32,
    /// Deliveries expected per published message.
    pub fanout: u64,
}

impl Plan {
    pub fn new(cfg: &LoadConfig) -> Plan {
        let n = cfg.clients;
        let topic = |i| template::expand(&cfg.topic, i);
        let filter = |i| template::expand(cfg.sub_topic.as_deref().unwrap_or(&cfg.topic), i);
        let (subscribers, publishers, idle, fanout) = match cfg.scenario {
            Scenario::Conn => (vec![], vec![], n, 0),
            Scenario::P2p | Scenario::Latency => {
                let subs = (0..n)
                    .map(|i| SubSpec {
                        index: i,
                        filter: filter(i),
                    })
                    .collect();
                let pubs = (0..n)
                    .map(|i| PubSpec {
                        index: i,
                        topic: topic(i),
                        limit: None,
                    })
                    .collect();
                (subs, pubs, 0, 1)
            }
            Scenario::FanIn => {
                let base = match &cfg.sub_topic {
                    Some(sub) => template::expand(sub, 0),
                    None => template::wildcard_filter(&cfg.topic),
                };
                let subs = match cfg.shared {
                    Some(group) => {
                        let shared = template::shared_filter(SHARE_GROUP, &base);
                        (0..group)
                            .map(|i| SubSpec {
                                index: i,
                                filter: shared.clone(),
                            })
                            .collect()
                    }
                    None => vec![SubSpec {
                        index: 0,
                        filter: base,
                    }],
                };
                let pubs = (0..n)
                    .map(|i| PubSpec {
                        index: i,
                        topic: topic(i),
                        limit: None,
                    })
                    .collect();
                (subs, pubs, 0, 1)
            }
            Scenario::FanOut => {
                let subs = (0..n)
                    .map(|i| SubSpec {
                        index: i,
                        filter: filter(0),
                    })
                    .collect();
                (
                    subs,
                    vec![PubSpec {
                        index: 0,
                        topic: topic(0),
                        limit: None,
                    }],
                    0,
                    u64::from(n),
                )
            }
        };
        let mut plan = Plan {
            subscribers,
            publishers,
            idle,
            fanout,
        };
        plan.split_limit(cfg.limit);
        plan
    }

    /// Spreads a total message limit over the publishers (the first ones get the remainder).
    fn split_limit(&mut self, total: u64) {
        if total == 0 || self.publishers.is_empty() {
            return;
        }
        let n = self.publishers.len() as u64;
        for (i, p) in self.publishers.iter_mut().enumerate() {
            p.limit = Some(total / n + u64::from((i as u64) < total % n));
        }
    }

    /// The part of the plan thread `thread` of `threads` runs: every `threads`-th client.
    pub fn slice(&self, thread: usize, threads: usize) -> Plan {
        let pick = |i: usize| i % threads == thread;
        Plan {
            subscribers: self
                .subscribers
                .iter()
                .enumerate()
                .filter(|(i, _)| pick(*i))
                .map(|(_, s)| s.clone())
                .collect(),
            publishers: self
                .publishers
                .iter()
                .enumerate()
                .filter(|(i, _)| pick(*i))
                .map(|(_, p)| p.clone())
                .collect(),
            idle: (0..self.idle as usize).filter(|i| pick(*i)).count() as u32,
            fanout: self.fanout,
        }
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn config(argv: &[&str]) -> LoadConfig {
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
        let Ok((scenario, args)) = cli.command.into_load() else {
            panic!("not a load command")
        };
        LoadConfig::from_args(scenario, &args).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn p2p_pairs_have_their_own_topic() {
        let plan = Plan::new(&config(&["b", "p2p", "-c", "3", "-t", "t/%i"]));
        let filters: Vec<_> = plan.subscribers.iter().map(|s| s.filter.as_str()).collect();
        let topics: Vec<_> = plan.publishers.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(filters, ["t/0", "t/1", "t/2"]);
        assert_eq!(topics, ["t/0", "t/1", "t/2"]);
        assert_eq!(plan.fanout, 1);
    }

    #[test]
    fn fan_in_subscribes_with_a_wildcard_or_a_share_group() {
        let plan = Plan::new(&config(&["b", "fan-in", "-c", "4"]));
        assert_eq!(
            plan.subscribers,
            [SubSpec {
                index: 0,
                filter: "bench/fanin/+".into()
            }]
        );
        assert_eq!(plan.publishers.len(), 4);
        assert_eq!(plan.publishers[3].topic, "bench/fanin/3");

        let plan = Plan::new(&config(&["b", "fan-in", "-c", "4", "--shared", "2"]));
        assert_eq!(plan.subscribers.len(), 2);
        assert!(
            plan.subscribers
                .iter()
                .all(|s| s.filter == "$share/bench/bench/fanin/+")
        );
    }

    #[test]
    fn fan_out_expects_one_delivery_per_subscriber() {
        let plan = Plan::new(&config(&["b", "fan-out", "-c", "5"]));
        assert_eq!(plan.publishers.len(), 1);
        assert_eq!(plan.subscribers.len(), 5);
        assert!(plan.subscribers.iter().all(|s| s.filter == "bench/fanout"));
        assert_eq!(plan.fanout, 5);
    }

    #[test]
    fn limit_is_spread_over_publishers() {
        let plan = Plan::new(&config(&["b", "p2p", "-c", "3", "-L", "100"]));
        let limits: Vec<_> = plan.publishers.iter().map(|p| p.limit).collect();
        assert_eq!(limits, [Some(34), Some(33), Some(33)]);
        let plan = Plan::new(&config(&["b", "p2p", "-c", "3"]));
        assert!(plan.publishers.iter().all(|p| p.limit.is_none()));
    }

    #[test]
    fn slices_partition_the_clients() {
        let plan = Plan::new(&config(&["b", "p2p", "-c", "5"]));
        let a = plan.slice(0, 2);
        let b = plan.slice(1, 2);
        assert_eq!(a.subscribers.len() + b.subscribers.len(), 5);
        assert_eq!(
            a.publishers.iter().map(|p| p.index).collect::<Vec<_>>(),
            [0, 2, 4]
        );
        assert_eq!(
            b.publishers.iter().map(|p| p.index).collect::<Vec<_>>(),
            [1, 3]
        );
        let conn = Plan::new(&config(&["b", "conn", "-c", "5"]));
        assert_eq!(conn.slice(0, 2).idle + conn.slice(1, 2).idle, 5);
    }

    /// `%i` in every per-client field is the connection number, expanded once per client.
    #[test]
    fn credentials_expand_the_connection_number() {
        use crate::wire::Credentials;
        let cfg = config(&[
            "b",
            "p2p",
            "-u",
            "device-%i",
            "-P",
            "secret-%i",
            "--auth-method",
            "X",
            "--auth-data",
            "tok%i",
            "--client-id",
            "dev-%i",
        ]);
        let creds = Credentials::new(&cfg, 42, || panic!("--client-id is given"));
        assert_eq!(creds.client_id, "dev-42");
        assert_eq!(creds.username.as_deref(), Some("device-42"));
        assert_eq!(creds.password.as_deref(), Some("secret-42"));
        assert_eq!(creds.auth_data.as_deref(), Some("tok42"));
        // Without templates: fixed values, and the default id scheme.
        let cfg = config(&["b", "p2p", "-u", "u", "--client-id-prefix", "x"]);
        let creds = Credentials::new(&cfg, 3, || "x-p3".to_string());
        assert_eq!(creds.client_id, "x-p3");
        assert_eq!(creds.username.as_deref(), Some("u"));
        assert_eq!(creds.password, None);
        assert_eq!(creds.auth_data, None);
    }

    #[test]
    fn several_hosts_targets_and_source_addresses() {
        let cfg = config(&["b", "conn", "-h", "127.0.0.1,localhost", "-p", "1999"]);
        let ports: Vec<u16> = cfg.routes.targets().iter().map(|t| t.addr.port()).collect();
        assert_eq!(ports, [1999, 1999]);
        assert_eq!(cfg.routes.targets()[1].host, "localhost");
        assert_eq!(cfg.addr, cfg.routes.first().addr);
        let cfg = config(&[
            "b",
            "p2p",
            "--target",
            "mqtt://127.0.0.1:1001",
            "--target",
            "ws://127.0.0.1:1002/mqtt",
            "--ifaddr",
            "127.0.0.2,127.0.0.3",
            "--ifaddr",
            "127.0.0.4",
        ]);
        assert_eq!(cfg.routes.targets().len(), 2);
        assert!(cfg.routes.any_ws() && !cfg.routes.any_tls());
        assert_eq!(cfg.routes.sources().len(), 3);
        assert!(cfg.tls.is_none());
        // A TLS target needs a trust decision, as --ssl does; then TLS is set up for it.
        assert!(matches!(
            config_error(&["b", "conn", "--target", "wss://127.0.0.1:1"]),
            ConfigError::SslWithoutTrust
        ));
        let cfg = config(&[
            "b",
            "conn",
            "--target",
            "mqtts://127.0.0.1:1",
            "--target",
            "mqtts://localhost:2",
            "--insecure",
        ]);
        let names: Vec<String> = cfg
            .routes
            .targets()
            .iter()
            .map(|t| format!("{:?}", t.server_name))
            .collect();
        assert!(
            names[0].contains("IpAddress") && names[1].contains("\"localhost\""),
            "{names:?}"
        );
        let cfg = config(&[
            "b",
            "conn",
            "-h",
            "127.0.0.1,localhost",
            "-S",
            "--insecure",
            "--sni",
            "broker.test",
        ]);
        assert!(
            cfg.routes
                .targets()
                .iter()
                .all(|t| format!("{:?}", t.server_name).contains("broker.test"))
        );
        let cfg = config(&["b", "conn", "--target", "wss://localhost:1", "--insecure"]);
        let Some(tls) = cfg.tls else {
            panic!("a wss:// target sets up TLS")
        };
        assert_eq!(tls.options().server_name, "localhost");
        assert!(matches!(
            config_error(&["b", "conn", "--ifaddr", "10.0.0.x"]),
            ConfigError::Target(TargetError::BadSource(_))
        ));
        assert!(matches!(
            config_error(&["b", "conn", "--probe", "--target", "ws://127.0.0.1:1"]),
            ConfigError::ProbeOverTls
        ));
        let cfg = config(&[
            "b",
            "conn",
            "--probe",
            "-S",
            "--insecure",
            "-p",
            "8883",
            "--probe-target",
            "127.0.0.1:1883",
        ]);
        assert_eq!(cfg.probe.map(|p| p.addr.port()), Some(1883));
    }

    #[test]
    fn latency_without_rate_uses_the_default_rate() {
        assert_eq!(config(&["b", "latency"]).rate, DEFAULT_LATENCY_RATE);
        assert_eq!(config(&["b", "latency", "--rate", "7"]).rate, 7.0);
        assert_eq!(config(&["b", "p2p"]).rate, 0.0);
    }

    #[test]
    fn protocol_levels() {
        assert_eq!(
            config(&["b", "p2p", "-V", "3"]).protocol,
            ProtocolVersion::V3_1
        );
        assert_eq!(
            config(&["b", "p2p", "-V", "4"]).protocol,
            ProtocolVersion::V3_1_1
        );
        assert_eq!(config(&["b", "p2p"]).protocol, ProtocolVersion::V5);
    }

    fn config_error(argv: &[&str]) -> ConfigError {
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
        let Command::Conn(args) = cli.command else {
            panic!("expected conn")
        };
        match LoadConfig::from_args(Scenario::Conn, &args) {
            Ok(cfg) => panic!("{argv:?} should be refused, got {cfg:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn tls_options_need_ssl_and_a_trust_decision() {
        assert!(config(&["b", "conn"]).tls.is_none());
        assert!(matches!(
            config_error(&["b", "conn", "--cacertfile", "ca.pem"]),
            ConfigError::TlsOptionWithoutSsl("--cacertfile")
        ));
        assert!(matches!(
            config_error(&["b", "conn", "--insecure"]),
            ConfigError::TlsOptionWithoutSsl("--insecure")
        ));
        assert!(matches!(
            config_error(&["b", "conn", "-S"]),
            ConfigError::SslWithoutTrust
        ));
        let err = config_error(&["b", "conn", "-S", "--cacertfile", "/nonexistent/ca.pem"]);
        assert!(
            err.to_string().contains("/nonexistent/ca.pem"),
            "the message names the file: {err}"
        );
        let Some(tls) = config(&["b", "conn", "-S", "--insecure", "-h", "localhost"]).tls else {
            panic!("--ssl sets up TLS")
        };
        assert_eq!(tls.options().server_name, "localhost");
        assert!(tls.options().insecure);
        let Some(tls) = config(&["b", "conn", "-S", "--insecure", "--sni", "broker.test"]).tls
        else {
            panic!("--ssl sets up TLS")
        };
        assert_eq!(tls.options().server_name, "broker.test");
    }

    #[test]
    fn invalid_values_are_errors() {
        let cli = Cli::try_parse_from(["b", "p2p", "-V", "4", "--auth-method", "x"])
            .unwrap_or_else(|e| panic!("{e}"));
        let Command::P2p(args) = cli.command else {
            panic!()
        };
        assert!(matches!(
            LoadConfig::from_args(Scenario::P2p, &args),
            Err(ConfigError::AuthNeedsV5)
        ));
        let cli = Cli::try_parse_from(["b", "p2p", "-c", "0"]).unwrap_or_else(|e| panic!("{e}"));
        let Command::P2p(args) = cli.command else {
            panic!()
        };
        assert!(matches!(
            LoadConfig::from_args(Scenario::P2p, &args),
            Err(ConfigError::NoClients)
        ));
    }

    #[test]
    fn probe_is_opt_in_and_plain_tcp() {
        assert!(config(&["b", "p2p"]).probe.is_none());
        let Some(probe) = config(&[
            "b",
            "p2p",
            "-V",
            "4",
            "--probe",
            "--probe-interval-ms",
            "100",
            "--client-id-prefix",
            "x",
        ])
        .probe
        else {
            panic!("--probe sets up the probe")
        };
        assert_eq!(probe.interval, Duration::from_millis(100));
        assert_eq!(probe.timeout, Duration::from_secs(2));
        assert_eq!(probe.slow_threshold, Duration::from_secs(1));
        assert_eq!(probe.protocol, ProtocolVersion::V3_1_1);
        assert_eq!(probe.client_id_prefix, "x-probe");
        assert!(matches!(
            config_error(&["b", "conn", "--probe", "-S", "--insecure"]),
            ConfigError::ProbeOverTls
        ));
        assert!(matches!(
            config_error(&["b", "conn", "--probe", "--probe-timeout-ms", "0"]),
            ConfigError::ZeroSetting("--probe-timeout-ms")
        ));
    }

    fn flood(argv: &[&str]) -> Result<FloodConfig, ConfigError> {
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
        let Command::Flood(args) = cli.command else {
            panic!("expected flood")
        };
        flood_config(&args)
    }

    #[test]
    fn flood_flags() {
        let cfg = flood(&["b", "flood", "-p", "1884"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.addr.port(), 1884);
        assert_eq!((cfg.publishers, cfg.batch, cfg.payload_size), (10, 64, 64));
        assert_eq!(cfg.read_buffer_bytes, 1 << 20);
        assert!(cfg.topic_prefix.starts_with("bench/flood/"));
        assert_eq!(cfg.probe.addr, cfg.addr);
        assert_eq!(
            cfg.probe.client_id_prefix,
            format!("{}-probe", cfg.client_id_prefix)
        );
        let cfg = flood(&[
            "b",
            "flood",
            "-c",
            "3",
            "--batch",
            "8",
            "-s",
            "16",
            "-t",
            "t",
            "-V",
            "4",
            "--duration",
            "2.5",
            "--probe-threshold-ms",
            "300",
            "--quiet",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((cfg.publishers, cfg.batch, cfg.payload_size), (3, 8, 16));
        assert_eq!(cfg.topic_prefix, "t");
        assert_eq!(cfg.protocol, ProtocolVersion::V3_1_1);
        assert_eq!(cfg.probe.protocol, ProtocolVersion::V3_1_1);
        assert_eq!(cfg.duration, Duration::from_millis(2500));
        assert_eq!(cfg.probe.slow_threshold, Duration::from_millis(300));
        assert!(cfg.quiet);
        let cfg = flood(&["b", "flood", "--ifaddr", "127.0.0.2,127.0.0.3"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.sources.len(), 2);
        assert!(cfg.sources.iter().all(|s| s.is_loopback()));
        assert!(matches!(
            flood(&["b", "flood", "--ifaddr", "x"]),
            Err(ConfigError::Target(TargetError::BadSource(_)))
        ));
        assert!(matches!(
            flood(&["b", "flood", "-c", "0"]),
            Err(ConfigError::NoClients)
        ));
        assert!(matches!(
            flood(&["b", "flood", "--batch", "0"]),
            Err(ConfigError::EmptyBatch)
        ));
        assert!(matches!(
            flood(&["b", "flood", "--duration", "0"]),
            Err(ConfigError::BadDuration(_))
        ));
    }
}
