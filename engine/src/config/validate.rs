//! The checks a parsed configuration must pass that toml cannot express: ranges, keys that
//! need one another, listener settings that must fit the protocol.

use std::path::Path;

use super::{ClientCertificateMode, Config, ConfigError, ListenerConfig};

impl Config {
    /// Range checks toml cannot express.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                key,
                problem: problem.to_owned(),
            })
        };
        let l = &self.limits;
        if l.max_packet_size < 64 {
            return invalid("limits.max_packet_size", "must be at least 64 bytes");
        }
        if l.max_packet_size > ringmq_codec::Limits::PROTOCOL_MAX_PACKET_SIZE {
            return invalid(
                "limits.max_packet_size",
                "exceeds the MQTT maximum of 268435460",
            );
        }
        if l.receive_maximum == 0 {
            return invalid(
                "limits.receive_maximum",
                "must be at least 1 [MQTT-3.2.2.3.3]",
            );
        }
        if l.application.max_inflight == 0 || l.application.max_inflight > 32_768 {
            return invalid(
                "limits.application.max_inflight",
                "must be between 1 and 32768",
            );
        }
        if l.max_inflight == 0 {
            return invalid("limits.max_inflight", "must be at least 1");
        }
        if l.max_topic_levels == 0 {
            return invalid("limits.max_topic_levels", "must be at least 1");
        }
        if l.max_topic_length == 0 || l.max_topic_length > 65_535 {
            return invalid("limits.max_topic_length", "must be between 1 and 65535");
        }
        if l.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1");
        }
        // A burst without its rate would silently do nothing.
        for (burst_key, burst, rate_key, rate) in [
            (
                "limits.connection_rate_burst_per_ip",
                l.connection_rate_burst_per_ip,
                "limits.max_connection_rate_per_ip",
                l.max_connection_rate_per_ip,
            ),
            (
                "limits.publish_rate_burst",
                l.publish_rate_burst,
                "limits.max_publish_rate",
                l.max_publish_rate,
            ),
            (
                "limits.publish_bandwidth_burst",
                l.publish_bandwidth_burst,
                "limits.max_publish_bandwidth",
                l.max_publish_bandwidth,
            ),
        ] {
            if burst > 0 && rate == 0 {
                return invalid(
                    burst_key,
                    &format!("has no effect without `{rate_key}` (0 = unlimited)"),
                );
            }
        }
        if l.max_client_id_len < 23 {
            return invalid(
                "limits.max_client_id_len",
                "must be at least 23 [MQTT-3.1.3-5]",
            );
        }
        if l.shard_queue_capacity < 16 {
            return invalid("limits.shard_queue_capacity", "must be at least 16");
        }
        if self.server.stall_threshold_ms != 0 && self.server.stall_threshold_ms < 10 {
            return invalid(
                "server.stall_threshold_ms",
                "must be 0 (off) or at least 10 (the detector samples every quarter of it)",
            );
        }
        if self.server.shards > crate::MAX_SHARDS {
            return invalid("server.shards", "at most 64 shards are supported");
        }
        if self.auth.clock_skew_secs > 3600 {
            return invalid("auth.clock_skew_secs", "must be at most 3600");
        }
        if self.listeners.is_empty() {
            return invalid("listener", "at least one [[listener]] is required");
        }
        if self.metrics.sys_interval_secs > 86_400 {
            return invalid(
                "metrics.sys_interval_secs",
                "must be at most 86400 (one day); 0 turns $SYS off",
            );
        }
        if let Some(bind) = self.metrics.bind {
            if bind.port() == 0 {
                return invalid(
                    "metrics.bind",
                    "port 0 is not allowed: a scraper needs a known port",
                );
            }
            if self.listeners.iter().any(|l| l.bind == bind) {
                return invalid(
                    "metrics.bind",
                    &format!("{bind} is also an MQTT [[listener]] address"),
                );
            }
        }
        for l in &self.listeners {
            let Err(problem) = l.check() else { continue };
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                key: problem.0,
                problem: format!(
                    "listener {} (protocol = \"{}\"): {}",
                    l.bind,
                    l.protocol.name(),
                    problem.1
                ),
            });
        }
        Ok(())
    }
}

impl ListenerConfig {
    /// The key at fault and the problem, for settings that do not fit the protocol.
    fn check(&self) -> Result<(), (&'static str, &'static str)> {
        let p = self.protocol;
        if p.is_tls() && self.cert.is_none() {
            return Err((
                "listener.cert",
                "a TLS listener needs `cert` (the server certificate chain, PEM)",
            ));
        }
        if p.is_tls() && self.key.is_none() {
            return Err((
                "listener.key",
                "a TLS listener needs `key` (the server's private key, PEM)",
            ));
        }
        if !p.is_tls()
            && (self.cert.is_some()
                || self.key.is_some()
                || self.client_certificate != ClientCertificateMode::None)
        {
            return Err((
                "listener.protocol",
                "`cert`, `key` and `client_certificate` need protocol = \"mqtts\" or \"wss\"",
            ));
        }
        if p.is_websocket() && !self.path.starts_with('/') {
            return Err(("listener.path", "must start with '/'"));
        }
        Ok(())
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
    fn out_of_range_value_names_key() {
        let e = parse("[limits]\nreceive_maximum = 0\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "test.toml: key `limits.receive_maximum`: must be at least 1 [MQTT-3.2.2.3.3]"
        );
        let e = parse("[limits]\nmax_packet_size = 10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.max_packet_size"), "{e}");
    }

    #[test]
    fn quota_burst_without_rate_names_key() {
        let e = parse("[limits]\npublish_bandwidth_burst = 1000\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "test.toml: key `limits.publish_bandwidth_burst`: has no effect without `limits.max_publish_bandwidth` (0 = unlimited)"
        );
        let e = parse("[limits]\nmax_publish_rate = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_publish_rate"), "{e}");
        let e = parse("[limits]\nmax_connections_per_ip = 5000000000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_connections_per_ip"), "{e}");
    }
}
