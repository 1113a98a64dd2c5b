//! The persistent-session scenario's report, and the scrape of ringmq's `ringmq_storage_*`
//! counters from its `/metrics` endpoint.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::report::si;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Sums over shards of ringmq's storage counters at one moment (or, after [`since`], the
/// difference over a run with rates).
///
/// [`since`]: StorageCounters::since
#[derive(Debug, Clone, Default, Serialize)]
pub struct StorageCounters {
    pub records: u64,
    pub fsyncs: u64,
    pub records_synced: u64,
    pub disk_bytes: u64,
    pub snapshots: u64,
    pub full: u64,
    /// Over a run: fsyncs per second, records per fsync.
    pub fsyncs_per_sec: f64,
    pub records_per_fsync: f64,
}

impl StorageCounters {
    /// Parses Prometheus text: sums every sample of the storage families.
    pub fn parse(text: &str) -> StorageCounters {
        let mut c = StorageCounters::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let family = name.split('{').next().unwrap_or(name);
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            let v = v as u64;
            match family {
                "ringmq_storage_records_total" => c.records += v,
                "ringmq_storage_fsyncs_total" => c.fsyncs += v,
                "ringmq_storage_records_synced_total" => c.records_synced += v,
                "ringmq_storage_disk_bytes" => c.disk_bytes += v,
                "ringmq_storage_snapshots_total" => c.snapshots += v,
                "ringmq_storage_full_total" => c.full += v,
                _ => {}
            }
        }
        c
    }

    /// The change from `before` to `self` over `elapsed`.
    pub fn since(&self, before: &StorageCounters, elapsed: Duration) -> StorageCounters {
        let fsyncs = self.fsyncs.saturating_sub(before.fsyncs);
        let synced = self.records_synced.saturating_sub(before.records_synced);
        StorageCounters {
            records: self.records.saturating_sub(before.records),
            fsyncs,
            records_synced: synced,
            disk_bytes: self.disk_bytes,
            snapshots: self.snapshots.saturating_sub(before.snapshots),
            full: self.full.saturating_sub(before.full),
            fsyncs_per_sec: fsyncs as f64 / elapsed.as_secs_f64().max(1e-9),
            records_per_fsync: if fsyncs == 0 {
                0.0
            } else {
                synced as f64 / fsyncs as f64
            },
        }
    }
}

/// `GET /metrics` from `addr` (plain HTTP/1.1, bounded by timeouts) and the storage counters.
pub fn scrape(addr: SocketAddr) -> std::io::Result<StorageCounters> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = Vec::new();
    // Bounded: the server closes (Connection: close) and reads time out.
    s.take(64 << 20).read_to_end(&mut body)?;
    Ok(StorageCounters::parse(&String::from_utf8_lossy(&body)))
}

#[derive(Debug, Clone, Serialize)]
pub struct PersistReport {
    pub broker: String,
    pub protocol: String,
    pub qos: u8,
    pub publishers: u32,
    pub subscribers: u32,
    pub window: u16,
    pub payload_size: usize,
    pub publish_secs: f64,
    pub published: u64,
    /// Acknowledged (PUBACK, or PUBREC for QoS 2) with a success code.
    pub acked: u64,
    /// Acknowledged with an error code (e.g. 0x97 when the log is full).
    pub refused: u64,
    /// Acknowledged messages per second, until the last acknowledgement.
    pub acked_per_sec: f64,
    pub delivered: u64,
    pub foreign: u64,
    /// Acknowledged messages never delivered.
    pub lost: u64,
    /// Deliveries beyond the first (QoS 1 may legitimately redeliver after a reconnect).
    pub duplicates: u64,
    pub with_dup_flag: u64,
    pub reconnects: u64,
    /// Reconnects whose CONNACK said Session Present 0 (the session was lost).
    pub sessions_absent: u64,
    /// Publish → PUBACK (QoS 1) or → PUBREC (QoS 2), microseconds.
    pub ack_latency_us: Percentiles,
    /// ringmq's storage counters over the publishing part (with `--metrics`).
    pub storage: Option<StorageCounters>,
    pub broker_cpu_secs: Option<f64>,
    pub errors: Vec<String>,
}

impl PersistReport {
    pub fn render(&self) -> String {
        let mut o = String::new();
        let l = &self.ack_latency_us;
        let _ = writeln!(
            o,
            "persist: {} pub → {} sub, MQTT {}, QoS {}, window {}, {} B, broker {}",
            self.publishers,
            self.subscribers,
            self.protocol,
            self.qos,
            self.window,
            self.payload_size,
            self.broker
        );
        let _ = writeln!(
            o,
            "  published {} acked {} refused {} in {:.1} s: {} msg/s acked",
            self.published,
            self.acked,
            self.refused,
            self.publish_secs,
            si(self.acked_per_sec)
        );
        let _ = writeln!(
            o,
            "  ack latency µs: p50 {} p90 {} p99 {} p99.9 {} max {}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        let _ = writeln!(
            o,
            "  delivered {} lost {} duplicates {} (DUP flag {}), reconnects {} (session absent {})",
            self.delivered,
            self.lost,
            self.duplicates,
            self.with_dup_flag,
            self.reconnects,
            self.sessions_absent
        );
        if let Some(s) = &self.storage {
            let _ = writeln!(
                o,
                "  storage: {} records, {} fsyncs ({:.0}/s), {:.1} records/fsync, disk {} B, {} snapshots, {} full",
                s.records,
                s.fsyncs,
                s.fsyncs_per_sec,
                s.records_per_fsync,
                s.disk_bytes,
                s.snapshots,
                s.full
            );
        }
        if let Some(c) = self.broker_cpu_secs {
            let _ = writeln!(o, "  broker CPU {c:.2} s");
        }
        if self.lost > 0 || self.sessions_absent > 0 {
            let _ = writeln!(
                o,
                "!!! LOST {} acknowledged messages, {} sessions absent",
                self.lost, self.sessions_absent
            );
        }
        for e in self.errors.iter().take(5) {
            let _ = writeln!(o, "  error: {e}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_sums_storage_families() {
        let text = "# HELP x\nringmq_storage_fsyncs_total{shard=\"0\"} 10\n\
                    ringmq_storage_fsyncs_total{shard=\"1\"} 5\n\
                    ringmq_storage_records_synced_total{shard=\"0\"} 300\n\
                    ringmq_storage_disk_bytes{shard=\"0\"} 4096\nother 7\n";
        let c = StorageCounters::parse(text);
        assert_eq!((c.fsyncs, c.records_synced, c.disk_bytes), (15, 300, 4096));
        let zero = StorageCounters::default();
        let d = c.since(&zero, Duration::from_secs(3));
        assert_eq!(d.fsyncs_per_sec, 5.0);
        assert_eq!(d.records_per_fsync, 20.0);
    }
}
