//! The result of one load run, as JSON and as a human-readable table.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::probe::ProbeReport;
use crate::stats::LatencySummary;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectStats {
    pub attempted: u64,
    pub ok: u64,
    pub failed: u64,
    /// Of `failed`: the TLS handshake failed or the client's certificate did not load.
    #[serde(default)]
    pub tls_failed: u64,
    /// From the first attempt to the last client settled.
    pub elapsed_secs: f64,
    /// Successful connections per second over `elapsed_secs`.
    pub per_sec: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerStats {
    pub rss_before_bytes: Option<u64>,
    pub rss_after_bytes: Option<u64>,
    /// (after − before) / connections, for `conn`.
    pub rss_per_connection_bytes: Option<f64>,
    /// Broker CPU time (user + system) spent during the measured part of the run.
    pub cpu_secs: Option<f64>,
    /// `cpu_secs` over the measured wall time, in percent of one core.
    pub cpu_percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub label: Option<String>,
    /// The target(s): `127.0.0.1:1883`-style for one plain target, else URLs, comma-separated.
    pub broker: String,
    /// `--ifaddr`: the source addresses the connections were bound to, round-robin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_addresses: Vec<String>,
    /// Connected over TLS (`--ssl`).
    #[serde(default)]
    pub tls: bool,
    pub protocol_level: u8,
    pub qos: u8,
    pub payload_bytes: usize,
    pub publishers: u32,
    pub subscribers: u32,
    pub idle_clients: u32,
    pub threads: usize,
    /// Target messages/s per publisher; 0 = as fast as possible.
    pub rate_per_publisher: f64,
    /// End-to-end window at maximum rate (0: open loop or fixed rate).
    pub window: u64,
    pub connections: ConnectStats,
    /// Seconds spent publishing (conn: holding).
    pub duration_secs: f64,
    pub published: u64,
    pub publish_rate: f64,
    pub acked: u64,
    pub delivered: u64,
    pub expected: u64,
    /// Deliveries per second, from the start of publishing to the last delivery.
    pub delivery_rate: f64,
    /// delivered / expected (1.0 when nothing was expected).
    pub delivery_ratio: f64,
    /// Messages the end-to-end window stopped waiting for (counted lost).
    pub written_off: u64,
    /// Deliveries of messages sent before this run (ignored).
    pub stale: u64,
    pub latency: Option<LatencySummary>,
    pub broker_process: Option<BrokerStats>,
    /// The load generator's own CPU use over the measured part, in percent of one core: near
    /// `threads × 100` means the generator, not the broker, may be the limit.
    pub bench_cpu_percent: Option<f64>,
    pub disconnected: u64,
    pub decode_errors: u64,
    pub refused: u64,
    /// The liveness probe (`--probe`, always on in `compare` and `flood`).
    #[serde(default)]
    pub probe: Option<ProbeReport>,
    /// Open-loop flood only: the longest time nothing was delivered while publishers wrote.
    #[serde(default)]
    pub longest_delivery_gap_ms: Option<f64>,
}

/// 1234567 → "1 234 567".
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// A rate with three significant figures and a k/M suffix: 123456.0 → "123k".
pub fn si(value: f64) -> String {
    let (v, suffix) = if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}{suffix}")
}

/// Bytes as KiB/MiB with one decimal.
pub fn bytes(n: f64) -> String {
    if n.abs() >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if n.abs() >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else if n.abs() >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}

/// Microseconds, switching to milliseconds above 10 ms.
pub fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// The flood's longest delivery gap: sampled every `resolution_ms`, so a gap shorter than
/// one sample shows as `< N ms` rather than a misleading 0.
pub fn delivery_gap(ms: f64, resolution_ms: u64) -> String {
    if ms < resolution_ms as f64 {
        format!("< {resolution_ms} ms")
    } else {
        micros(ms * 1e3)
    }
}

impl Report {
    /// The human-readable table printed at the end of a run.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut broker = match &self.label {
            Some(label) => format!("{label} at {}", self.broker),
            None => self.broker.clone(),
        };
        if self.tls {
            broker.push_str(" over TLS");
        }
        let rate = if self.rate_per_publisher > 0.0 {
            format!("{} msg/s per publisher", si(self.rate_per_publisher))
        } else if self.window > 0 {
            format!("max rate (window {})", self.window)
        } else {
            "max rate (open loop)".to_string()
        };
        if self.publishers == 0 && self.subscribers == 0 {
            let _ = writeln!(
                s,
                "{} — {broker}, MQTT level {}, {} idle clients, {} threads",
                self.scenario, self.protocol_level, self.idle_clients, self.threads
            );
        } else {
            let _ = writeln!(
                s,
                "{} — {broker}, MQTT level {}, QoS {}, {} B payload, {} pub / {} sub, {rate}, {} threads",
                self.scenario,
                self.protocol_level,
                self.qos,
                self.payload_bytes,
                self.publishers,
                self.subscribers,
                self.threads
            );
        }
        let c = &self.connections;
        let tls_failed = if c.tls_failed > 0 {
            format!(" ({} in TLS)", group_digits(c.tls_failed))
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  {:<12} {} ok, {} failed{tls_failed} in {:.2} s ({} conn/s)",
            "connections",
            group_digits(c.ok),
            group_digits(c.failed),
            c.elapsed_secs,
            si(c.per_sec)
        );
        let _ = writeln!(s, "  {:<12} {:.2} s", "duration", self.duration_secs);
        if self.publishers > 0 {
            let _ = writeln!(
                s,
                "  {:<12} {:>12} msgs  {:>8} msg/s",
                "published",
                group_digits(self.published),
                si(self.publish_rate)
            );
            let _ = writeln!(
                s,
                "  {:<12} {:>12} msgs  {:>8} msg/s  ratio {:.2} % of {}",
                "delivered",
                group_digits(self.delivered),
                si(self.delivery_rate),
                self.delivery_ratio * 100.0,
                group_digits(self.expected)
            );
            if self.qos > 0 {
                let _ = writeln!(s, "  {:<12} {:>12}", "acked", group_digits(self.acked));
            }
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(
                s,
                "  {:<12} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
                "latency",
                micros(l.p50_us),
                micros(l.p90_us),
                micros(l.p99_us),
                micros(l.p999_us),
                micros(l.max_us),
                group_digits(l.count)
            );
        }
        if let Some(b) = &self.broker_process {
            let mut line = String::new();
            if let (Some(before), Some(after)) = (b.rss_before_bytes, b.rss_after_bytes) {
                let _ = write!(
                    line,
                    "RSS {} → {}",
                    bytes(before as f64),
                    bytes(after as f64)
                );
            }
            if let Some(per) = b.rss_per_connection_bytes {
                let _ = write!(line, " ({} per connection)", bytes(per));
            }
            if let (Some(cpu), Some(pct)) = (b.cpu_secs, b.cpu_percent) {
                let _ = write!(line, "  CPU {cpu:.2} s ({pct:.0} % of a core)");
            }
            let _ = writeln!(s, "  {:<12} {}", "broker", line.trim());
        }
        if let Some(pct) = self.bench_cpu_percent {
            let _ = writeln!(
                s,
                "  {:<12} CPU {pct:.0} % of a core ({} threads)",
                "generator", self.threads
            );
        }
        if let Some(probe) = &self.probe {
            probe.render(&mut s);
        }
        let _ = writeln!(
            s,
            "  {:<12} {} disconnected, {} undecodable, {} refused, {} written off, {} stale",
            "errors",
            self.disconnected,
            self.decode_errors,
            self.refused,
            self.written_off,
            self.stale
        );
        if let Some(verdict) = self.probe.as_ref().and_then(ProbeReport::verdict) {
            let _ = writeln!(s, "!!! {verdict}");
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Report {
        Report {
            scenario: "p2p".into(),
            label: Some("mosquitto".into()),
            broker: "127.0.0.1:1883".into(),
            source_addresses: Vec::new(),
            tls: false,
            protocol_level: 5,
            qos: 1,
            payload_bytes: 64,
            publishers: 50,
            subscribers: 50,
            idle_clients: 0,
            threads: 2,
            rate_per_publisher: 0.0,
            window: 1000,
            connections: ConnectStats {
                attempted: 100,
                ok: 100,
                failed: 0,
                tls_failed: 0,
                elapsed_secs: 0.05,
                per_sec: 2000.0,
            },
            duration_secs: 10.0,
            published: 1_234_567,
            publish_rate: 123_456.7,
            acked: 1_234_567,
            delivered: 1_234_000,
            expected: 1_234_567,
            delivery_rate: 123_400.0,
            delivery_ratio: 1_234_000.0 / 1_234_567.0,
            written_off: 0,
            stale: 0,
            latency: Some(LatencySummary {
                count: 1_234_000,
                mean_us: 210.0,
                p50_us: 180.0,
                p90_us: 320.0,
                p99_us: 900.0,
                p999_us: 2500.0,
                max_us: 15_300.0,
            }),
            broker_process: Some(BrokerStats {
                rss_before_bytes: Some(5 * 1024 * 1024),
                rss_after_bytes: Some(7 * 1024 * 1024),
                rss_per_connection_bytes: None,
                cpu_secs: Some(9.5),
                cpu_percent: Some(95.0),
            }),
            bench_cpu_percent: Some(80.0),
            disconnected: 0,
            decode_errors: 0,
            refused: 0,
            probe: None,
            longest_delivery_gap_ms: None,
        }
    }

    #[test]
    fn digit_grouping() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1 000");
        assert_eq!(group_digits(1_234_567), "1 234 567");
    }

    #[test]
    fn si_suffixes() {
        assert_eq!(si(0.0), "0.00");
        assert_eq!(si(950.0), "950");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(123_456.0), "123k");
        assert_eq!(si(2_500_000.0), "2.50M");
    }

    #[test]
    fn byte_and_time_units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(3.5 * 1024.0), "3.5 KiB");
        assert_eq!(bytes(5.0 * 1024.0 * 1024.0), "5.0 MiB");
        assert_eq!(bytes(24.0 * 1024.0 * 1024.0 * 1024.0), "24.0 GiB");
        assert_eq!(micros(180.4), "180 µs");
        assert_eq!(micros(15_300.0), "15.3 ms");
    }

    #[test]
    fn table_shows_rates_ratio_and_percentiles() {
        let text = sample().render();
        assert!(
            text.starts_with("p2p — mosquitto at 127.0.0.1:1883, MQTT level 5, QoS 1"),
            "{text}"
        );
        assert!(
            text.contains("published       1 234 567 msgs      123k msg/s"),
            "{text}"
        );
        assert!(text.contains("ratio 99.95 % of 1 234 567"), "{text}");
        assert!(
            text.contains("p50 180 µs  p90 320 µs  p99 900 µs  p99.9 2500 µs  max 15.3 ms"),
            "{text}"
        );
        assert!(
            text.contains("RSS 5.0 MiB → 7.0 MiB  CPU 9.50 s (95 % of a core)"),
            "{text}"
        );
        assert!(text.contains("acked"), "{text}");
        assert!(
            text.contains("generator    CPU 80 % of a core (2 threads)"),
            "{text}"
        );
    }

    #[test]
    fn idle_table_has_no_message_rows() {
        let mut r = sample();
        r.scenario = "conn".into();
        r.publishers = 0;
        r.subscribers = 0;
        r.idle_clients = 10_000;
        r.broker_process = Some(BrokerStats {
            rss_before_bytes: Some(10 << 20),
            rss_after_bytes: Some(20 << 20),
            rss_per_connection_bytes: Some(1048.576),
            cpu_secs: None,
            cpu_percent: None,
        });
        let text = r.render();
        assert!(
            text.starts_with(
                "conn — mosquitto at 127.0.0.1:1883, MQTT level 5, 10000 idle clients, 2 threads"
            ),
            "{text}"
        );
        assert!(!text.contains("published"), "{text}");
        assert!(
            text.contains("RSS 10.0 MiB → 20.0 MiB (1.0 KiB per connection)"),
            "{text}"
        );
    }

    #[test]
    fn tls_runs_say_so_and_count_tls_failures() {
        let mut r = sample();
        r.tls = true;
        r.connections.failed = 3;
        r.connections.tls_failed = 2;
        let text = r.render();
        assert!(
            text.starts_with("p2p — mosquitto at 127.0.0.1:1883 over TLS, MQTT level 5"),
            "{text}"
        );
        assert!(text.contains("100 ok, 3 failed (2 in TLS) in"), "{text}");
        assert!(!sample().render().contains("in TLS"));
    }

    #[test]
    fn reports_without_tls_fields_still_load() {
        let mut json = serde_json::to_value(sample()).unwrap_or_else(|e| panic!("{e}"));
        let Some(obj) = json.as_object_mut() else {
            panic!("a report is an object")
        };
        obj.remove("tls");
        if let Some(c) = obj.get_mut("connections").and_then(|c| c.as_object_mut()) {
            c.remove("tls_failed");
        }
        let back: Report = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, sample());
    }

    #[test]
    fn a_failed_probe_is_loud_and_old_reports_still_load() {
        let mut r = sample();
        r.probe = Some(crate::probe::ProbeReport {
            probes: 10,
            failed: 2,
            interval_ms: 250,
            timeout_ms: 2000,
            slow_threshold_ms: 1000,
            worst_us: Some(900.0),
            p50_us: Some(300.0),
            p99_us: Some(900.0),
            worst_connack_us: Some(900.0),
            worst_pingresp_us: Some(100.0),
            errors: vec!["at 1.25 s: no CONNACK within 2000 ms".into()],
            flagged: true,
        });
        let text = r.render();
        assert!(
            text.contains("probe        10 probes every 250 ms, 2 failed; worst 900 µs"),
            "{text}"
        );
        assert!(
            text.contains("at 1.25 s: no CONNACK within 2000 ms"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "!!! LIVENESS: 2 of 10 probes got no answer within 2000 ms — the broker stopped answering new clients during the run\n"
            ),
            "{text}"
        );
        assert!(!sample().render().contains("probe"));
        // A report written before the probe existed has neither field.
        let mut json = serde_json::to_value(sample()).unwrap_or_else(|e| panic!("{e}"));
        let Some(obj) = json.as_object_mut() else {
            panic!("a report is an object")
        };
        obj.remove("probe");
        obj.remove("longest_delivery_gap_ms");
        let back: Report = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, sample());
    }

    #[test]
    fn json_round_trips() {
        let report = sample();
        let json = serde_json::to_string(&report).unwrap_or_else(|e| panic!("{e}"));
        let back: Report = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, report);
        assert!(json.contains("\"delivery_rate\":123400.0"));
    }
}
