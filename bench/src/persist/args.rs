//! Command-line options of `ringmq-bench persist` and `ringmq-bench persist-fill`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args};
use ringmq_codec::{ProtocolVersion, QoS};

use super::PersistConfig;
use super::fill::FillConfig;

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// Broker host.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(short = 'p', long, default_value_t = 1883)]
    pub port: u16,
    /// Source addresses to bind before connecting (comma-separated or repeated).
    #[arg(long = "ifaddr", value_name = "IP[,IP…]")]
    pub ifaddr: Vec<String>,
    /// Protocol level: 4 (3.1.1, clean session 0) or 5 (Clean Start 0 + Session Expiry).
    #[arg(short = 'V', long = "protocol-version", default_value_t = 5, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub version: u8,
    /// Session Expiry Interval in seconds (MQTT 5).
    #[arg(short = 'x', long = "session-expiry", default_value_t = 3600)]
    pub expiry_secs: u32,
    /// Payload bytes (at least 20: send time, publisher, sequence number).
    #[arg(short = 's', long = "size", default_value_t = 64)]
    pub payload_size: usize,
    /// Unacknowledged messages per publisher.
    #[arg(long, default_value_t = 32)]
    pub window: u16,
    /// Client id and topic prefix (default: unique per run).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Bound on each connect/CONNACK and SUBSCRIBE/SUBACK, milliseconds.
    #[arg(long = "connect-timeout-ms", default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Common {
    fn addr(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}:{}: {e}", self.host, self.port))?
            .next()
            .ok_or_else(|| format!("{}: no address", self.host))
    }

    fn sources(&self) -> Result<Vec<IpAddr>, String> {
        self.ifaddr
            .iter()
            .flat_map(|s| s.split(','))
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().map_err(|e| format!("--ifaddr {s}: {e}")))
            .collect()
    }

    fn version(&self) -> ProtocolVersion {
        if self.version == 4 {
            ProtocolVersion::V3_1_1
        } else {
            ProtocolVersion::V5
        }
    }

    fn prefix(&self, what: &str) -> String {
        self.prefix.clone().unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() % 100_000_000)
                .unwrap_or(0);
            format!("bench/{what}/{t}")
        })
    }
}

/// `ringmq-bench persist`.
#[derive(Debug, Clone, Args)]
pub struct PersistArgs {
    #[command(flatten)]
    pub common: Common,
    /// Publishers.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub clients: u32,
    /// Subscribers, one topic each (publisher i → topic i mod N); default: as many as
    /// publishers (p2p). 1 = fan-in.
    #[arg(long)]
    pub subscribers: Option<u32>,
    /// QoS 1 or 2.
    #[arg(short = 'q', long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub qos: u8,
    /// Seconds to publish.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Subscribers stay connected this many ms, then go away for --offline-ms and come back.
    #[arg(long = "online-ms", default_value_t = 1000)]
    pub online_ms: u64,
    /// How long a subscriber stays away (0: never leaves).
    #[arg(long = "offline-ms", default_value_t = 500)]
    pub offline_ms: u64,
    /// Bound on the drain after publishing, ms.
    #[arg(long = "drain-ms", default_value_t = 30_000)]
    pub drain_ms: u64,
    /// A subscriber is done draining after this long without a delivery, ms.
    #[arg(long = "quiet-ms", default_value_t = 1000)]
    pub quiet_ms: u64,
    /// ringmq's metrics endpoint (HOST:PORT): storage counters scraped before and after.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Broker pid: its CPU time over the run.
    #[arg(long = "broker-pid")]
    pub broker_pid: Option<u32>,
}

impl PersistArgs {
    pub fn config(&self) -> Result<PersistConfig, String> {
        let c = &self.common;
        let metrics = match &self.metrics {
            None => None,
            Some(m) => Some(
                m.to_socket_addrs()
                    .map_err(|e| format!("--metrics {m}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("--metrics {m}: no address"))?,
            ),
        };
        Ok(PersistConfig {
            addr: c.addr()?,
            sources: c.sources()?,
            version: c.version(),
            publishers: self.clients,
            subscribers: self.subscribers.unwrap_or(self.clients),
            qos: if self.qos == 2 {
                QoS::ExactlyOnce
            } else {
                QoS::AtLeastOnce
            },
            window: c.window,
            payload_size: c.payload_size,
            expiry_secs: c.expiry_secs,
            duration: Duration::from_secs_f64(self.duration.max(0.0)),
            online: Duration::from_millis(self.online_ms),
            offline: Duration::from_millis(self.offline_ms),
            drain: Duration::from_millis(self.drain_ms),
            quiet: Duration::from_millis(self.quiet_ms),
            prefix: c.prefix("persist"),
            metrics,
            broker_pid: self.broker_pid,
            connect_timeout: Duration::from_millis(c.connect_timeout_ms),
        })
    }
}

/// `ringmq-bench persist-fill`.
#[derive(Debug, Clone, Args)]
pub struct FillArgs {
    #[command(flatten)]
    pub common: Common,
    /// Phases to run, comma-separated: create, publish, verify.
    #[arg(long, default_value = "create,publish")]
    pub phases: String,
    /// Persistent sessions, each subscribed to its own topic.
    #[arg(long, default_value_t = 100_000)]
    pub sessions: u32,
    /// QoS 1 messages queued across the sessions (message k → session k mod sessions).
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Publishers.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub clients: u32,
    /// Concurrent connections while creating and verifying sessions.
    #[arg(long, default_value_t = 16)]
    pub threads: u32,
    /// Verify: a session still missing messages gives up after this long without a delivery.
    #[arg(long = "quiet-ms", default_value_t = 5000)]
    pub quiet_ms: u64,
}

impl FillArgs {
    pub fn config(&self) -> Result<FillConfig, String> {
        let c = &self.common;
        let prefix = c
            .prefix
            .clone()
            .ok_or("--prefix is required (the phases may run in different processes)")?;
        Ok(FillConfig {
            addr: c.addr()?,
            sources: c.sources()?,
            version: c.version(),
            sessions: self.sessions.max(1),
            messages: self.messages,
            publishers: self.clients.max(1),
            threads: self.threads.max(1),
            window: c.window,
            payload_size: c.payload_size.max(super::PAYLOAD_HEADER),
            expiry_secs: c.expiry_secs,
            prefix,
            connect_timeout: Duration::from_millis(c.connect_timeout_ms),
            quiet: Duration::from_millis(self.quiet_ms),
        })
    }
}
