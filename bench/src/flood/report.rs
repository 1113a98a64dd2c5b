//! The flood's result: JSON, a text table, the problems that make a run suspect, and the
//! common [`Report`] shape the comparison tables are made from.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::FloodConfig;
use crate::probe::ProbeReport;
use crate::report::{BrokerStats, ConnectStats, Report, delivery_gap, group_digits, micros, si};

/// What went wrong with the flood's clients. Errors caused by the run's own shutdown are not
/// counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FloodErrors {
    /// Publishers that could not connect or got no successful CONNACK in time.
    pub publishers_not_connected: u64,
    /// Publishers whose connection failed while publishing.
    pub publishers: u64,
    /// Subscribers whose connection the broker closed or that failed.
    pub subscribers: u64,
    /// Subscribers that received bytes that are not MQTT frames.
    pub decode_errors: u64,
    /// The first few, as text.
    pub messages: Vec<String>,
}

impl FloodErrors {
    pub fn total(&self) -> u64 {
        self.publishers_not_connected + self.publishers + self.subscribers + self.decode_errors
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloodReport {
    pub scenario: String,
    pub label: Option<String>,
    pub broker: String,
    /// `--ifaddr`: the source addresses the connections were bound to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_addresses: Vec<String>,
    pub protocol_level: u8,
    pub publishers: u32,
    pub subscribers: u32,
    pub payload_bytes: usize,
    /// PUBLISH packets per `write_all`.
    pub batch: u32,
    /// One PUBLISH on the wire (publisher 0's topic), so a batch is `batch × packet_bytes`.
    pub packet_bytes: usize,
    /// Seconds the publishers wrote (from the first connect to the stop).
    pub duration_secs: f64,
    /// Messages in batches whose `write_all` completed (the broker's socket buffers hold
    /// some of them: open loop).
    pub published: u64,
    pub publish_rate: f64,
    /// Deliveries counted while the publishers wrote.
    pub delivered_in_run: u64,
    /// Deliveries counted by the end of the drain.
    pub delivered: u64,
    /// `delivered_in_run / duration_secs`: the rate the broker sustained under the flood.
    pub delivery_rate: f64,
    /// `delivered / published` (QoS 0: a broker may drop what a slow subscriber cannot take).
    pub delivery_ratio: f64,
    /// Longest time no subscriber received anything while the publishers wrote.
    pub longest_delivery_gap_ms: f64,
    pub broker_process: Option<BrokerStats>,
    /// The load generator's CPU use in percent of one core.
    pub bench_cpu_percent: Option<f64>,
    pub errors: FloodErrors,
    pub probe: ProbeReport,
}

/// Everything [`super::run`] measured.
#[derive(Debug)]
pub(super) struct Measured<'a> {
    pub cfg: &'a FloodConfig,
    pub packet_bytes: usize,
    pub duration_secs: f64,
    pub published: u64,
    pub delivered_in_run: u64,
    pub delivered: u64,
    pub longest_gap: std::time::Duration,
    pub rss: (Option<u64>, Option<u64>),
    pub broker_cpu_secs: Option<f64>,
    pub bench_cpu_secs: Option<f64>,
    pub cpu_wall_secs: f64,
    pub errors: FloodErrors,
    pub probe: ProbeReport,
}

impl FloodReport {
    pub(super) fn build(m: Measured<'_>) -> FloodReport {
        let cfg = m.cfg;
        let per_sec = |n: u64| {
            if m.duration_secs > 0.0 {
                n as f64 / m.duration_secs
            } else {
                0.0
            }
        };
        let percent = |cpu: Option<f64>| {
            cpu.filter(|_| m.cpu_wall_secs > 0.0)
                .map(|c| c / m.cpu_wall_secs * 100.0)
        };
        FloodReport {
            scenario: "flood".into(),
            label: cfg.label.clone(),
            broker: cfg.addr.to_string(),
            source_addresses: cfg.sources.iter().map(ToString::to_string).collect(),
            protocol_level: cfg.protocol.level(),
            publishers: cfg.publishers,
            subscribers: cfg.publishers,
            payload_bytes: cfg.payload_size,
            batch: cfg.batch,
            packet_bytes: m.packet_bytes,
            duration_secs: m.duration_secs,
            published: m.published,
            publish_rate: per_sec(m.published),
            delivered_in_run: m.delivered_in_run,
            delivered: m.delivered,
            delivery_rate: per_sec(m.delivered_in_run),
            delivery_ratio: if m.published > 0 {
                m.delivered as f64 / m.published as f64
            } else {
                0.0
            },
            longest_delivery_gap_ms: m.longest_gap.as_secs_f64() * 1e3,
            broker_process: cfg.broker_pid.map(|_| BrokerStats {
                rss_before_bytes: m.rss.0,
                rss_after_bytes: m.rss.1,
                rss_per_connection_bytes: None,
                cpu_secs: m.broker_cpu_secs,
                cpu_percent: percent(m.broker_cpu_secs),
            }),
            bench_cpu_percent: percent(m.bench_cpu_secs),
            errors: m.errors,
            probe: m.probe,
        }
    }

    /// What makes this run suspect, loudest first: the probe's verdict, deliveries that
    /// stopped, clients that failed. Empty for a healthy run.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(verdict) = self.probe.verdict() {
            out.push(verdict);
        }
        if self.delivered_in_run == 0 {
            out.push("NO DELIVERIES while the publishers wrote".to_string());
        } else if self.longest_delivery_gap_ms > self.probe.slow_threshold_ms as f64 {
            out.push(format!(
                "DELIVERIES STOPPED for {} while the publishers wrote",
                micros(self.longest_delivery_gap_ms * 1e3)
            ));
        }
        let e = &self.errors;
        if e.total() > 0 {
            out.push(format!(
                "client errors: {} publishers not connected, {} publisher and {} subscriber \
                 connections failed, {} undecodable streams",
                e.publishers_not_connected, e.publishers, e.subscribers, e.decode_errors
            ));
        }
        out
    }

    /// The human-readable table printed at the end of a run.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let broker = match &self.label {
            Some(label) => format!("{label} at {}", self.broker),
            None => self.broker.clone(),
        };
        let _ = writeln!(
            s,
            "flood — {broker}, MQTT level {}, QoS 0, {} B payload, {} pub / {} sub, open loop, \
             {} packets ({}) per write",
            self.protocol_level,
            self.payload_bytes,
            self.publishers,
            self.subscribers,
            self.batch,
            crate::report::bytes((self.batch as usize * self.packet_bytes) as f64)
        );
        let _ = writeln!(s, "  {:<12} {:.2} s", "duration", self.duration_secs);
        let _ = writeln!(
            s,
            "  {:<12} {:>12} msgs  {:>8} msg/s",
            "published",
            group_digits(self.published),
            si(self.publish_rate)
        );
        let _ = writeln!(
            s,
            "  {:<12} {:>12} msgs  {:>8} msg/s  (by the end of the drain: {}, {:.2} % of published)",
            "delivered",
            group_digits(self.delivered_in_run),
            si(self.delivery_rate),
            group_digits(self.delivered),
            self.delivery_ratio * 100.0
        );
        let _ = writeln!(
            s,
            "  {:<12} longest gap without a delivery: {}",
            "",
            delivery_gap(self.longest_delivery_gap_ms, super::SAMPLE_MS)
        );
        self.probe.render(&mut s);
        if let Some(b) = &self.broker_process
            && let (Some(cpu), Some(pct)) = (b.cpu_secs, b.cpu_percent)
        {
            let _ = writeln!(
                s,
                "  {:<12} CPU {cpu:.2} s ({pct:.0} % of a core)",
                "broker"
            );
        }
        if let Some(pct) = self.bench_cpu_percent {
            let _ = writeln!(s, "  {:<12} CPU {pct:.0} % of a core", "generator");
        }
        let e = &self.errors;
        let _ = writeln!(
            s,
            "  {:<12} {} publishers not connected, {} publisher / {} subscriber connections failed, {} undecodable",
            "errors", e.publishers_not_connected, e.publishers, e.subscribers, e.decode_errors
        );
        for m in &e.messages {
            let _ = writeln!(s, "  {:<12} {m}", "");
        }
        for p in self.problems() {
            let _ = writeln!(s, "!!! {p}");
        }
        s
    }

    /// The flood in the shape of the load scenarios' report, for the comparison tables:
    /// published, delivered (while publishing) and their rates, errors as disconnects and
    /// undecodable frames, the probe, no latency (flood payloads carry no timestamp).
    pub fn to_report(&self) -> Report {
        let clients = u64::from(self.publishers) + u64::from(self.subscribers);
        let not_connected = self.errors.publishers_not_connected;
        Report {
            scenario: self.scenario.clone(),
            label: self.label.clone(),
            broker: self.broker.clone(),
            source_addresses: self.source_addresses.clone(),
            tls: false,
            protocol_level: self.protocol_level,
            qos: 0,
            payload_bytes: self.payload_bytes,
            publishers: self.publishers,
            subscribers: self.subscribers,
            idle_clients: 0,
            threads: clients as usize,
            rate_per_publisher: 0.0,
            window: 0,
            connections: ConnectStats {
                attempted: clients,
                ok: clients.saturating_sub(not_connected),
                failed: not_connected,
                tls_failed: 0,
                elapsed_secs: 0.0,
                per_sec: 0.0,
            },
            duration_secs: self.duration_secs,
            published: self.published,
            publish_rate: self.publish_rate,
            acked: 0,
            delivered: self.delivered,
            // QoS 0 open loop: nothing is owed; what arrived is the measure.
            expected: 0,
            delivery_rate: self.delivery_rate,
            delivery_ratio: self.delivery_ratio,
            written_off: 0,
            stale: 0,
            latency: None,
            broker_process: self.broker_process.clone(),
            bench_cpu_percent: self.bench_cpu_percent,
            disconnected: self.errors.publishers + self.errors.subscribers,
            decode_errors: self.errors.decode_errors,
            refused: 0,
            probe: Some(self.probe.clone()),
            longest_delivery_gap_ms: Some(self.longest_delivery_gap_ms),
        }
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn healthy_probe() -> ProbeReport {
        ProbeReport {
            probes: 40,
            failed: 0,
            interval_ms: 250,
            timeout_ms: 2000,
            slow_threshold_ms: 1000,
            worst_us: Some(1500.0),
            p50_us: Some(300.0),
            p99_us: Some(1400.0),
            worst_connack_us: Some(1500.0),
            worst_pingresp_us: Some(200.0),
            errors: vec![],
            flagged: false,
        }
    }

    pub(crate) fn sample() -> FloodReport {
        FloodReport {
            scenario: "flood".into(),
            label: Some("ringmq".into()),
            broker: "127.0.0.1:1883".into(),
            source_addresses: Vec::new(),
            protocol_level: 5,
            publishers: 10,
            subscribers: 10,
            payload_bytes: 64,
            batch: 64,
            packet_bytes: 82,
            duration_secs: 10.0,
            published: 2_000_000,
            publish_rate: 200_000.0,
            delivered_in_run: 1_000_000,
            delivered: 1_100_000,
            delivery_rate: 100_000.0,
            delivery_ratio: 0.55,
            longest_delivery_gap_ms: 40.0,
            broker_process: None,
            bench_cpu_percent: Some(90.0),
            errors: FloodErrors::default(),
            probe: healthy_probe(),
        }
    }

    #[test]
    fn a_healthy_run_has_no_problems() {
        let r = sample();
        assert!(r.problems().is_empty(), "{:?}", r.problems());
        let text = r.render();
        assert!(
            text.starts_with("flood — ringmq at 127.0.0.1:1883, MQTT level 5, QoS 0, 64 B payload, 10 pub / 10 sub, open loop, 64 packets (5.1 KiB) per write"),
            "{text}"
        );
        assert!(
            text.contains("delivered       1 000 000 msgs      100k msg/s"),
            "{text}"
        );
        assert!(
            text.contains("40 probes every 250 ms, 0 failed; worst 1500 µs (CONNACK 1500 µs, PINGRESP 200 µs), p50 300 µs, p99 1400 µs"),
            "{text}"
        );
        assert!(!text.contains("!!!"), "{text}");
    }

    #[test]
    fn a_freeze_is_loud() {
        let mut r = sample();
        r.probe.failed = 12;
        r.probe.flagged = true;
        r.probe.errors = vec!["at 2.25 s: no CONNACK within 2000 ms".into()];
        r.longest_delivery_gap_ms = 7_000.0;
        r.errors.publishers_not_connected = 4;
        let problems = r.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("LIVENESS: 12 of 40 probes got no answer within 2000 ms"));
        assert_eq!(
            problems[1],
            "DELIVERIES STOPPED for 7000.0 ms while the publishers wrote"
        );
        let text = r.render();
        assert!(text.contains("!!! LIVENESS: "), "{text}");
        assert!(
            text.contains("at 2.25 s: no CONNACK within 2000 ms"),
            "{text}"
        );
        r.delivered_in_run = 0;
        assert!(r.problems().iter().any(|p| p.starts_with("NO DELIVERIES")));
    }

    #[test]
    fn the_common_report_carries_the_probe_and_the_gap() {
        let r = sample().to_report();
        assert_eq!(r.scenario, "flood");
        assert_eq!(r.delivery_rate, 100_000.0);
        assert_eq!(r.window, 0);
        assert_eq!(r.probe, Some(healthy_probe()));
        assert_eq!(r.longest_delivery_gap_ms, Some(40.0));
    }

    #[test]
    fn json_round_trips() {
        let r = sample();
        let json = serde_json::to_string(&r).unwrap_or_else(|e| panic!("{e}"));
        let back: FloodReport = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, r);
        assert!(json.contains("\"flagged\":false"), "{json}");
    }
}
