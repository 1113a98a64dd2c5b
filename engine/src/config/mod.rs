//! Configuration: the TOML file, the embedded default and their validation (`validate.rs`).
//!
//! Every limit is a named value with a default. A bad file is a startup error naming the file,
//! the key and the problem; nothing here panics on file content.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod auth_files;
pub mod auth_sources;
mod storage;
mod validate;

pub use storage::{FsyncMode, StorageConfig, open_storage};

/// Which io driver the shards run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    /// io_uring when the kernel allows it, epoll otherwise.
    #[default]
    Auto,
    IoUring,
    Legacy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Shard threads; 0 = one per available core.
    pub shards: usize,
    pub driver: Driver,
    pub log_level: String,
    /// `text` (human-readable lines) or `json` (one JSON object per line, for log shippers).
    pub log_format: LogFormat,
    /// Pin each shard thread to a core.
    pub pin_cores: bool,
    /// Let the heap use transparent huge pages (mimalloc asks the kernel for them). Off: the
    /// resident size then follows what is allocated instead of growing in 2 MiB steps.
    pub transparent_huge_pages: bool,
    /// A shard that has ready work but makes no progress for this long is logged (once per
    /// stall, with what it waits on) and counted in `ringmq_shard_stalls_total`; 0 = off.
    pub stall_threshold_ms: u32,
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl ServerConfig {
    /// The shards the broker runs: `shards`, or one per core (at most `MAX_SHARDS`) for 0.
    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(crate::MAX_SHARDS)
        } else {
            self.shards
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shards: 0,
            driver: Driver::Auto,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            pin_cores: true,
            transparent_huge_pages: false,
            stall_threshold_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    Mqtt,
    /// MQTT over TLS.
    Mqtts,
    /// MQTT over WebSockets (subprotocol `mqtt`, binary frames) on plain TCP.
    Ws,
    /// MQTT over WebSockets over TLS: `ws` inside `mqtts`.
    Wss,
}

impl ListenerProtocol {
    /// Whether the listener speaks TLS (and needs `cert` and `key`).
    pub fn is_tls(self) -> bool {
        matches!(self, ListenerProtocol::Mqtts | ListenerProtocol::Wss)
    }

    /// Whether the listener speaks WebSocket (and serves `path`).
    pub fn is_websocket(self) -> bool {
        matches!(self, ListenerProtocol::Ws | ListenerProtocol::Wss)
    }

    pub fn name(self) -> &'static str {
        match self {
            ListenerProtocol::Mqtt => "mqtt",
            ListenerProtocol::Mqtts => "mqtts",
            ListenerProtocol::Ws => "ws",
            ListenerProtocol::Wss => "wss",
        }
    }
}

/// Whether an `mqtts` or `wss` listener asks for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertificateMode {
    #[default]
    None,
    Optional,
    Required,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub bind: SocketAddr,
    #[serde(default = "default_protocol")]
    pub protocol: ListenerProtocol,
    /// Server certificate chain (PEM), for `mqtts` and `wss`. Relative paths are relative to
    /// the config file. Reloaded on SIGHUP and when the file changes.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM), for `mqtts` and `wss`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub client_certificate: ClientCertificateMode,
    /// `ws` and `wss`: the HTTP path of the endpoint.
    #[serde(default = "default_ws_path")]
    pub path: String,
    /// Every connection starts with a PROXY protocol v1 or v2 header (from HAProxy or a load
    /// balancer), whose client address is used instead of the socket's; a connection without
    /// a valid one within `limits.connect_timeout_secs` is closed.
    #[serde(default)]
    pub proxy_protocol: bool,
}

fn default_ws_path() -> String {
    "/mqtt".to_owned()
}

impl ListenerConfig {
    pub fn plain(bind: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            bind,
            protocol: ListenerProtocol::Mqtt,
            cert: None,
            key: None,
            client_certificate: ClientCertificateMode::None,
            path: default_ws_path(),
            proxy_protocol: false,
        }
    }
}

/// `[auth]`: where identities and permissions come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The registry file (docs/registry.md); relative to the config file. Without it, no
    /// authentication is configured and `allow_anonymous` decides.
    pub registry: Option<PathBuf>,
    /// Tolerance, in seconds, on certificate notBefore/notAfter (tokens have their own
    /// `clockSkewSeconds` in the registry).
    #[serde(default = "default_clock_skew")]
    pub clock_skew_secs: u32,
    /// Mosquitto-style ACL file (`topic`/`user`/`pattern` lines); see config/auth_files.rs.
    #[serde(default)]
    pub acl_file: Option<PathBuf>,
    /// PEM bundle of CAs: any client certificate chaining to one is accepted.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// PEM CRLs of the `client_ca` CAs.
    #[serde(default)]
    pub client_crl: Option<PathBuf>,
    /// The certificate field a `client_ca` certificate is named by (default `subject-cn`).
    #[serde(default)]
    pub certificate_identity: Option<auth_files::CertificateIdentityName>,
    /// PEM CAs trusted for the registry's JWKS endpoints (those without their own `caPem`),
    /// instead of the public web roots.
    #[serde(default)]
    pub jwks_ca_file: Option<PathBuf>,
    /// A Mosquitto password file (`auth_sources.rs`); relative to the config file.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `[auth.webhook]`: webhook authentication (`auth_sources.rs`).
    #[serde(default)]
    pub webhook: Option<auth_sources::WebhookConfig>,
    /// The order sources are tried in; default `auth_sources::DEFAULT_ORDER`.
    #[serde(default)]
    pub order: Option<Vec<auth_sources::Source>>,
    /// `[auth.pool]`: the threads that run password checks and webhook calls.
    #[serde(default)]
    pub pool: auth_sources::PoolConfig,
}

fn default_clock_skew() -> u32 {
    60
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            registry: None,
            clock_skew_secs: default_clock_skew(),
            acl_file: None,
            client_ca: None,
            client_crl: None,
            certificate_identity: None,
            jwks_ca_file: None,
            password_file: None,
            webhook: None,
            order: None,
            pool: auth_sources::PoolConfig::default(),
        }
    }
}

/// `[metrics]`: the HTTP endpoint (`/metrics`, `/health`, `/ready`) and `$SYS` topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint; none = no endpoint. It has no authentication: bind it to
    /// loopback or a management network.
    pub bind: Option<SocketAddr>,
    /// Seconds between `$SYS/broker/...` publications (retained, by shard 0); 0 = none.
    pub sys_interval_secs: u32,
}

/// Mosquitto's `sys_interval` default.
pub const DEFAULT_SYS_INTERVAL_SECS: u32 = 10;

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            bind: None,
            sys_interval_secs: DEFAULT_SYS_INTERVAL_SECS,
        }
    }
}

fn default_protocol() -> ListenerProtocol {
    ListenerProtocol::Mqtt
}

/// Limits, each with the default documented in docs/configuration.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest packet the server accepts (bytes, fixed header included).
    pub max_packet_size: u32,
    /// The server's Receive Maximum: QoS 1/2 PUBLISHes a client may have unacknowledged.
    pub receive_maximum: u16,
    /// Server → client in-flight window (further capped by the client's Receive Maximum).
    pub max_inflight: u16,
    /// Messages queued per session while offline or while the in-flight window is full.
    pub max_queued_messages: usize,
    /// Payload bytes queued per session.
    pub max_queued_bytes: usize,
    /// Topic aliases a client may use towards the server.
    pub topic_alias_maximum: u16,
    /// Levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Bytes in a topic name or filter.
    pub max_topic_length: usize,
    pub max_subscriptions_per_client: usize,
    /// A larger client keep alive is lowered to this and sent as Server Keep Alive.
    pub max_keep_alive_secs: u16,
    /// A larger requested session expiry is lowered to this.
    pub max_session_expiry_secs: u32,
    /// Open connections in all (counted across shards).
    pub max_connections: usize,
    /// Open connections per client IP, across shards; 0 = unlimited.
    pub max_connections_per_ip: u32,
    /// New connections per second per client IP; 0 = unlimited.
    pub max_connection_rate_per_ip: u32,
    /// Connections one IP may open at once before the rate applies; 0 = one second's worth.
    pub connection_rate_burst_per_ip: u32,
    /// PUBLISH packets per second per connection; 0 = unlimited.
    pub max_publish_rate: u32,
    /// PUBLISH packets a connection may send at once before the rate applies; 0 = one
    /// second's worth.
    pub publish_rate_burst: u32,
    /// PUBLISH bytes (whole packets) per second per connection; 0 = unlimited.
    pub max_publish_bandwidth: u32,
    /// PUBLISH bytes a connection may send at once before the bandwidth applies; 0 = one
    /// second's worth.
    pub publish_bandwidth_burst: u32,
    /// Connections over a connection quota kept open (in all, divided among shards) to read
    /// their CONNECT and answer CONNACK 0x97; beyond this they are closed at once.
    pub max_pending_refusals: usize,
    pub max_client_id_len: usize,
    pub max_retained_messages: usize,
    /// Messages buffered per destination shard when its queue is full (QoS 0 beyond: dropped).
    pub shard_queue_capacity: usize,
    /// Seconds a connection may take to send CONNECT.
    pub connect_timeout_secs: u16,
    /// Seconds a graceful shutdown (SIGTERM) may take to flush before the process exits.
    pub shutdown_timeout_secs: u16,
    /// Limits of `APPLICATION` clients (back-end consumers of many devices, as a JWT's client
    /// type says); the values above apply to `DEVICE` clients.
    pub application: ApplicationLimits,
}

/// `[limits.application]`: larger queues and window for `APPLICATION` clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplicationLimits {
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    pub max_inflight: u16,
}

impl Default for ApplicationLimits {
    fn default() -> Self {
        ApplicationLimits {
            max_queued_messages: 100_000,
            max_queued_bytes: 512 * 1024 * 1024,
            max_inflight: 8192,
        }
    }
}

impl Limits {
    /// The per-IP connection quotas.
    pub fn ip_limits(&self) -> crate::shard::quota::IpLimits {
        crate::shard::quota::IpLimits {
            max_connections: self.max_connections_per_ip,
            rate: crate::shard::quota::Rate::new(
                self.max_connection_rate_per_ip,
                self.connection_rate_burst_per_ip,
            ),
        }
    }

    /// PUBLISH packets per second of one connection.
    pub fn publish_rate(&self) -> crate::shard::quota::Rate {
        crate::shard::quota::Rate::new(self.max_publish_rate, self.publish_rate_burst)
    }

    /// PUBLISH bytes per second of one connection.
    pub fn publish_bandwidth(&self) -> crate::shard::quota::Rate {
        crate::shard::quota::Rate::new(self.max_publish_bandwidth, self.publish_bandwidth_burst)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet_size: 1024 * 1024,
            receive_maximum: 1024,
            max_inflight: 1024,
            max_queued_messages: 10_000,
            max_queued_bytes: 64 * 1024 * 1024,
            topic_alias_maximum: 64,
            max_topic_levels: 32,
            max_topic_length: 1024,
            max_subscriptions_per_client: 1000,
            max_keep_alive_secs: u16::MAX,
            max_session_expiry_secs: u32::MAX,
            max_connections: 1_000_000,
            max_connections_per_ip: 0,
            max_connection_rate_per_ip: 0,
            connection_rate_burst_per_ip: 0,
            max_publish_rate: 0,
            publish_rate_burst: 0,
            max_publish_bandwidth: 0,
            publish_bandwidth_burst: 0,
            max_pending_refusals: 128,
            max_client_id_len: 256,
            max_retained_messages: 1_000_000,
            shard_queue_capacity: 4096,
            connect_timeout_secs: 10,
            shutdown_timeout_secs: 10,
            application: ApplicationLimits::default(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default = "default_listeners", rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub limits: Limits,
    /// Whether clients without credentials may connect. Unset: allowed only when no
    /// registry and no client CA are configured (the embedded default).
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[storage]`: persistence (none without `dir`).
    #[serde(default)]
    pub storage: StorageConfig,
}

fn default_listeners() -> Vec<ListenerConfig> {
    vec![ListenerConfig::plain(SocketAddr::from((
        [127, 0, 0, 1],
        1883,
    )))]
}

impl Default for Config {
    /// The embedded default: 127.0.0.1:1883, anonymous access, one shard per core.
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            listeners: default_listeners(),
            limits: Limits::default(),
            allow_anonymous: None,
            auth: AuthConfig::default(),
            metrics: MetricsConfig::default(),
            storage: StorageConfig::default(),
        }
    }
}

/// A configuration error, naming the file, key and problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {problem}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        problem: String,
    },
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `path` names it in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // toml's error message names the key and line (e.g. "unknown field `foo`").
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        // Paths in the file are relative to the file.
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &mut Option<PathBuf>| {
            if let Some(p) = p.as_mut()
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
        };
        for l in &mut config.listeners {
            resolve(&mut l.cert);
            resolve(&mut l.key);
        }
        resolve(&mut config.auth.registry);
        config.auth.resolve_file_paths(&base);
        auth_sources::resolve_paths(&mut config.auth, &base);
        auth_sources::validate(&config.auth).map_err(|(key, problem)| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            problem,
        })?;
        // Before `dir` is made absolute: an empty `dir` is an error, not the config's folder.
        config.storage.validate(path)?;
        resolve(&mut config.storage.dir);
        config.validate(path)?;
        config.validate_auth_files(path)?;
        Ok(config)
    }

    /// Whether clients without credentials may connect.
    pub fn anonymous_allowed(&self) -> bool {
        // As Mosquitto: any source of credentials (registry, client CA, password file,
        // webhook) turns anonymous access off unless `allow_anonymous` says otherwise.
        self.allow_anonymous.unwrap_or(
            self.auth.registry.is_none()
                && self.auth.client_ca.is_none()
                && self.auth.password_file.is_none()
                && self.auth.webhook.is_none(),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_the_embedded_default() {
        let c = parse("").unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].bind, "127.0.0.1:1883".parse().unwrap());
        assert!(c.anonymous_allowed());
        assert_eq!(c.limits.max_packet_size, 1024 * 1024);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[limits]\nmax_pakcet_size = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("test.toml"), "{e}");
        assert!(e.contains("max_pakcet_size"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = parse("[limits]\nreceive_maximum = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("receive_maximum"), "{e}");
    }

    #[test]
    fn listeners_and_driver_parse() {
        let c = parse(
            "[server]\nshards = 3\ndriver = \"legacy\"\n[[listener]]\nbind = \"0.0.0.0:1999\"\nprotocol = \"mqtt\"\n",
        )
        .unwrap();
        assert_eq!(c.server.shards, 3);
        assert_eq!(c.server.driver, Driver::Legacy);
        assert_eq!(c.listeners[0].bind.port(), 1999);
    }

    #[test]
    fn mqtts_listener_needs_cert_and_key_relative_to_file() {
        let e = parse("[[listener]]\nbind = \"127.0.0.1:8883\"\nprotocol = \"mqtts\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listener.cert"), "{e}");
        let c = Config::from_toml(
            "[[listener]]\nbind = \"127.0.0.1:8883\"\nprotocol = \"mqtts\"\ncert = \"s.pem\"\nkey = \"/abs/s.key\"\nclient_certificate = \"required\"\n[auth]\nregistry = \"reg.json\"\n",
            Path::new("/etc/ringmq/ringmq.toml"),
        )
        .unwrap();
        assert_eq!(
            c.listeners[0].cert.as_deref(),
            Some(Path::new("/etc/ringmq/s.pem"))
        );
        assert_eq!(c.listeners[0].key.as_deref(), Some(Path::new("/abs/s.key")));
        assert_eq!(
            c.listeners[0].client_certificate,
            ClientCertificateMode::Required
        );
        assert_eq!(
            c.auth.registry.as_deref(),
            Some(Path::new("/etc/ringmq/reg.json"))
        );
        let e =
            parse("[[listener]]\nbind = \"127.0.0.1:1883\"\nclient_certificate = \"optional\"\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("listener.protocol"), "{e}");
    }

    #[test]
    fn wss_listener_needs_cert_and_key_and_defaults_its_path() {
        let e =
            parse("[[listener]]\nbind = \"127.0.0.1:8443\"\nprotocol = \"wss\"\nkey = \"k.pem\"\n")
                .unwrap_err()
                .to_string();
        assert_eq!(
            e,
            "test.toml: key `listener.cert`: listener 127.0.0.1:8443 (protocol = \"wss\"): a TLS listener needs `cert` (the server certificate chain, PEM)"
        );
        let e = parse(
            "[[listener]]\nbind = \"127.0.0.1:8443\"\nprotocol = \"wss\"\ncert = \"c.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("key `listener.key`"), "{e}");
        let c = parse(
            "[[listener]]\nbind = \"127.0.0.1:8443\"\nprotocol = \"wss\"\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_certificate = \"required\"\n",
        )
        .unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.protocol, ListenerProtocol::Wss);
        assert_eq!(l.path, "/mqtt");
        assert_eq!(l.client_certificate, ClientCertificateMode::Required);
        let e = parse("[[listener]]\nbind = \"127.0.0.1:8443\"\nprotocol = \"wss\"\ncert = \"c.pem\"\nkey = \"k.pem\"\npath = \"mqtt\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `listener.path`"), "{e}");
        let e =
            parse("[[listener]]\nbind = \"127.0.0.1:8080\"\nprotocol = \"ws\"\ncert = \"c.pem\"\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("key `listener.protocol`"), "{e}");
    }

    #[test]
    fn metrics_section_defaults_and_checks() {
        let c = parse("").unwrap();
        assert_eq!(c.metrics.bind, None);
        assert_eq!(c.metrics.sys_interval_secs, DEFAULT_SYS_INTERVAL_SECS);
        let c = parse("[metrics]\nbind = \"127.0.0.1:9100\"\nsys_interval_secs = 0\n").unwrap();
        assert_eq!(c.metrics.bind, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.metrics.sys_interval_secs, 0);
        let e = parse("[metrics]\nbind = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bind"), "{e}");
        let e = parse("[metrics]\nsys_interval_secs = 100000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.sys_interval_secs"), "{e}");
        let e = parse("[metrics]\nbind = \"127.0.0.1:0\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.bind"), "{e}");
        let e = parse("[metrics]\nbind = \"127.0.0.1:1883\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.bind") && e.contains("listener"), "{e}");
        let e = parse("[metrics]\nport = 9100\n").unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn quota_keys_parse_and_burst_defaults_to_one_second() {
        let c = parse(
            "[limits]\nmax_connections_per_ip = 10\nmax_connection_rate_per_ip = 5\nmax_publish_rate = 100\npublish_rate_burst = 500\nmax_publish_bandwidth = 65536\nmax_pending_refusals = 0\n",
        )
        .unwrap();
        let l = &c.limits;
        assert_eq!(l.ip_limits().max_connections, 10);
        assert_eq!(l.ip_limits().rate, crate::shard::quota::Rate::new(5, 5));
        assert_eq!(l.publish_rate().burst, 500);
        assert_eq!(l.publish_bandwidth().burst, 65536);
        assert_eq!(l.max_pending_refusals, 0);
        let d = parse("").unwrap().limits;
        assert!(d.publish_rate().is_unlimited() && d.publish_bandwidth().is_unlimited());
        assert!(d.ip_limits().rate.is_unlimited());
        assert_eq!(d.max_connections_per_ip, 0);
    }

    #[test]
    fn bad_bind_address_is_an_error() {
        let e = parse("[[listener]]\nbind = \"nonsense\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bind") || e.contains("address"), "{e}");
    }

    /// `[limits.application]` sets the limits of APPLICATION clients apart from the device
    /// ones (engine/tests/identity.rs checks that the core applies them by client type).
    #[test]
    fn application_limits_parse_apart_from_device_limits() {
        let c =
            parse("[limits]\nmax_inflight = 5\n[limits.application]\nmax_inflight = 50\n").unwrap();
        assert_eq!(c.limits.max_inflight, 5);
        assert_eq!(c.limits.application.max_inflight, 50);
        assert_eq!(
            c.limits.application.max_queued_messages,
            ApplicationLimits::default().max_queued_messages
        );
        let e = parse("[limits.application]\nmax_inflight = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.application.max_inflight"), "{e}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod example_tests {
    use super::*;

    /// docs/ringmq.example.toml must stay a valid file with the documented defaults.
    #[test]
    fn example_file_parses_with_defaults() {
        let text = include_str!("../../../docs/ringmq.example.toml");
        let c = Config::from_toml(text, Path::new("ringmq.example.toml")).unwrap();
        let d = Limits::default();
        assert_eq!(c.limits.max_packet_size, d.max_packet_size);
        assert_eq!(c.limits.max_queued_bytes, d.max_queued_bytes);
        assert_eq!(c.limits.shard_queue_capacity, d.shard_queue_capacity);
        assert_eq!(c.limits.connect_timeout_secs, d.connect_timeout_secs);
        assert_eq!(c.limits.max_connections_per_ip, d.max_connections_per_ip);
        assert_eq!(c.limits.max_publish_rate, d.max_publish_rate);
        assert_eq!(c.limits.max_publish_bandwidth, d.max_publish_bandwidth);
        assert_eq!(c.limits.max_pending_refusals, d.max_pending_refusals);
        assert_eq!(c.listeners[0].bind.port(), 1883);
        assert_eq!(c.metrics.bind, MetricsConfig::default().bind);
        assert_eq!(c.metrics.sys_interval_secs, DEFAULT_SYS_INTERVAL_SECS);
        assert_eq!(
            c.server.transparent_huge_pages,
            ServerConfig::default().transparent_huge_pages
        );
    }

    #[test]
    fn transparent_huge_pages_off_unless_asked_for() {
        let off = Config::from_toml("", Path::new("t.toml")).unwrap();
        assert!(!off.server.transparent_huge_pages);
        let on = Config::from_toml(
            "[server]\ntransparent_huge_pages = true\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert!(on.server.transparent_huge_pages);
        let bad = Config::from_toml(
            "[server]\ntransparent_huge_pages = \"yes\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("transparent_huge_pages"), "{bad}");
    }
}
