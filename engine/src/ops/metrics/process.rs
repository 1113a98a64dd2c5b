//! The `process_*` families every Prometheus client library exports (client_golang's process
//! collector names them): memory, descriptors, CPU time and start time, read from `/proc` at
//! each scrape on the exporter's thread, never on a shard.
//!
//! Hand-written rather than a crate: it is a handful of lines of text parsing, and the crates
//! that do it (`procfs`, `prometheus`'s process feature) bring far more than these six values.
//! Like client_golang's `procfs`, CPU and start times use USER_HZ = 100: the kernel reports
//! `/proc` times in USER_HZ ticks, which is 100 on every architecture Linux exports to user
//! space (reading it with `sysconf` would need unsafe code outside `transport::sys`).

use std::fs;

/// USER_HZ: the unit of the times in `/proc/self/stat`.
const TICKS_PER_SEC: f64 = 100.0;

/// One reading of the process's resources; a field is `None` when its source could not be
/// read (not Linux, `/proc` not mounted), and its family is then left out of the scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    /// The soft limit (`ulimit -n`); `None` also when it is unlimited.
    pub max_fds: Option<u64>,
    /// User and system CPU time.
    pub cpu_seconds: Option<f64>,
    /// Unix time the process started.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads the current process's values from `/proc`.
    pub fn read() -> ProcessStats {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let stat = parse_stat(&stat);
        let boot = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time_secs(&s));
        ProcessStats {
            resident_memory_bytes: status_kib(&status, "VmRSS:").map(|k| k * 1024),
            virtual_memory_bytes: status_kib(&status, "VmSize:").map(|k| k * 1024),
            // The directory's own descriptor, open while it is read, is among them (as in
            // client_golang).
            open_fds: fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.filter(|e| e.is_ok()).count() as u64),
            max_fds: fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|s| max_open_files(&s)),
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / TICKS_PER_SEC),
            start_time_seconds: stat
                .zip(boot)
                .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / TICKS_PER_SEC),
        }
    }
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    /// Ticks after boot.
    start_ticks: u64,
}

/// `pid (comm) state ppid ...`: the command may hold spaces and parentheses, so fields are
/// counted from the last `)`. utime, stime and starttime are fields 14, 15 and 22 (proc(5)).
fn parse_stat(s: &str) -> Option<Stat> {
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// `VmRSS:     1234 kB` → 1234.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// `btime 1700000000` of `/proc/stat`: boot time in Unix seconds.
fn boot_time_secs(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 125 0 0 20 0 \
                    8 0 123456 987654321 2048 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.utime, s.stime, s.start_ticks), (250, 125, 123456));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_limits_and_boot_time_parse() {
        let status = "Name:\tringmq\nVmSize:\t  204800 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(status_kib(status, "VmSize:"), Some(204800));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                40000                files\n";
        assert_eq!(max_open_files(limits), Some(20000));
        let unlimited = "Max open files            unlimited            unlimited            files";
        assert_eq!(max_open_files(unlimited), None);
        assert_eq!(
            boot_time_secs("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_reads_on_linux() {
        let p = ProcessStats::read();
        assert!(p.resident_memory_bytes.unwrap() > 0);
        assert!(p.virtual_memory_bytes.unwrap() >= p.resident_memory_bytes.unwrap());
        assert!(p.open_fds.unwrap() >= 3);
        assert!(p.cpu_seconds.is_some());
        // After 2020-01-01.
        assert!(p.start_time_seconds.unwrap() > 1_577_836_800.0);
    }
}
