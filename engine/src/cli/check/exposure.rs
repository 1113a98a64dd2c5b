//! Valid but risky settings: what is reachable from the network without encryption or without
//! authentication.

use std::net::SocketAddr;
use std::path::Path;

use ringmq::config::{Config, ListenerProtocol};

use super::Report;

/// Whether `addr` is reachable only from this machine.
fn local_only(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}

pub(super) fn check_exposure(file: &Path, config: &Config, report: &mut Report) {
    let anonymous = config.anonymous_allowed();
    for (i, l) in config.listeners.iter().enumerate() {
        if local_only(l.bind) {
            continue;
        }
        let reach = if l.bind.ip().is_unspecified() {
            "every network interface"
        } else {
            "the network"
        };
        if matches!(l.protocol, ListenerProtocol::Mqtt | ListenerProtocol::Ws) {
            report.warning(
                file,
                format!("listener[{i}].protocol"),
                format!(
                    "plain {} on {} is reachable from {reach}: user names, passwords, tokens and messages cross it unencrypted (use mqtts or wss, or bind to 127.0.0.1)",
                    l.protocol.name(),
                    l.bind
                ),
            );
        }
        if anonymous {
            let why = match config.allow_anonymous {
                Some(true) => "allow_anonymous = true",
                _ => "no [auth] registry is configured",
            };
            report.warning(
                file,
                "allow_anonymous",
                format!(
                    "clients without credentials may connect on {} from {reach} ({why}): every topic is open to them",
                    l.bind
                ),
            );
        }
    }
    if let Some(bind) = config.metrics.bind
        && !local_only(bind)
    {
        report.warning(
            file,
            "metrics.bind",
            format!(
                "the metrics endpoint has no authentication and listens on {bind}: bind it to 127.0.0.1 or a management network"
            ),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::cli::check::Severity;

    fn warnings(toml: &str) -> Vec<String> {
        let config = Config::from_toml(toml, Path::new("t.toml")).unwrap();
        let mut r = Report::default();
        check_exposure(Path::new("t.toml"), &config, &mut r);
        assert_eq!(r.count(Severity::Error), 0);
        r.diagnostics.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn loopback_listeners_are_quiet() {
        assert!(warnings("[[listener]]\nbind = \"127.0.0.1:1883\"\n").is_empty());
        assert!(warnings("[[listener]]\nbind = \"[::1]:1883\"\n").is_empty());
    }

    #[test]
    fn plain_mqtt_on_all_interfaces_with_anonymous_access_warns_twice() {
        let w = warnings("[[listener]]\nbind = \"0.0.0.0:1883\"\n");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("warning: t.toml: listener[0].protocol: plain mqtt on 0.0.0.0:1883"),
            "{w:?}"
        );
        assert!(
            w[1].contains("allow_anonymous: clients without credentials"),
            "{w:?}"
        );
    }

    #[test]
    fn exposed_tls_listener_without_anonymous_access_is_quiet() {
        let w = warnings(
            "allow_anonymous = false\n[[listener]]\nbind = \"0.0.0.0:8883\"\nprotocol = \"mqtts\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn exposed_metrics_endpoint_warns() {
        let w = warnings("[metrics]\nbind = \"0.0.0.0:9100\"\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("metrics.bind"), "{w:?}");
    }
}
