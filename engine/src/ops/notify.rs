//! systemd's notification protocol (sd_notify(3)) for `Type=notify` units: `READY=1` once the
//! broker serves, `STOPPING=1` when a graceful stop begins, and `WATCHDOG=1` every half
//! `WATCHDOG_USEC` while every shard makes progress.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the Unix socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). std has all of it
//! (`UnixDatagram`, abstract addresses through `SocketAddrExt`), so it is written here rather
//! than taken from a crate: no unsafe, no dependency, about forty lines.
//!
//! The watchdog reads the stall detector's pulses ([`Pulses`]): each shard bumps its pulse at
//! every loop turn and at every 250 ms tick, so a shard whose pulse has not moved for
//! [`STUCK_AFTER`] is stuck (blocked in a system call, spinning without yielding), and the
//! ping is withheld — systemd then restarts the broker after `WatchdogSec`. A shard that is
//! merely busy still turns, and still pings.
//!
//! What it must never do: block or slow a shard (it reads atomics on its own thread), or fail
//! the broker when there is no systemd (no `$NOTIFY_SOCKET`: every call does nothing).

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::ops::stall::Pulses;
use crate::transport::runtime::Shutdown;

/// A shard whose pulse has not moved for this long is stuck: twelve of its 250 ms ticks.
pub const STUCK_AFTER: Duration = Duration::from_secs(3);
/// Shortest interval between pings, however small `WATCHDOG_USEC` is.
const PING_INTERVAL_MIN: Duration = Duration::from_millis(50);

/// Sends `state` (newline-separated `KEY=VALUE` lines) to `$NOTIFY_SOCKET`. Returns whether
/// it was sent: `Ok(false)` when the variable is not set (not started by systemd).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let addr = socket_addr(value.as_encoded_bytes())?;
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// `$NOTIFY_SOCKET` as an address: `/path`, or `@name` for the abstract namespace.
fn socket_addr(value: &[u8]) -> io::Result<SocketAddr> {
    match value.first() {
        Some(b'/') => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(value))
        }
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&value[1..])
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither a path nor @abstract (vsock: is not supported)",
        )),
    }
}

/// Sends `state`, logging a failure (systemd would then time the start out, or kill the unit
/// for a missed watchdog: the log says why).
fn send(state: &str) {
    match notify(state) {
        Ok(true) => debug!(state, "systemd notified"),
        Ok(false) => {}
        Err(e) => warn!(state, "cannot notify systemd through NOTIFY_SOCKET: {e}"),
    }
}

/// The broker serves: sent by [`Server::notify_ready`](crate::transport::runtime::Server::notify_ready)
/// once every listener is bound, everything that must happen before clients are served
/// (storage recovery) is done, and SIGTERM is handled.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}"));
}

/// A graceful stop began (SIGTERM): connections are being drained.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=draining connections");
}

/// Half of `WATCHDOG_USEC` when systemd asks for pings of this process (`WATCHDOG_PID`, when
/// set, names it).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| (Duration::from_micros(usec) / 2).max(PING_INTERVAL_MIN))
}

/// Starts the watchdog thread when systemd asked for pings; ends when a stop begins.
pub(crate) fn spawn_watchdog(pulses: Pulses, shutdown: Shutdown) -> io::Result<()> {
    let Some(interval) = watchdog_interval() else {
        return Ok(());
    };
    info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog: pinging while every shard makes progress"
    );
    std::thread::Builder::new()
        .name("ringmq-watchdog".into())
        .spawn(move || {
            let mut liveness = Liveness::new(pulses.progress().count(), Instant::now());
            let mut withheld = false;
            loop {
                if shutdown.requested() {
                    return;
                }
                let progress: Vec<u64> = pulses.progress().collect();
                match liveness.observe(&progress, Instant::now()) {
                    None => {
                        if std::mem::take(&mut withheld) {
                            info!("systemd watchdog: every shard progresses again, pinging");
                        }
                        send("WATCHDOG=1");
                    }
                    Some(shard) if !withheld => {
                        withheld = true;
                        warn!(
                            shard,
                            "systemd watchdog: shard made no progress for {STUCK_AFTER:?}, \
                             withholding the ping (systemd restarts the unit after WatchdogSec)"
                        );
                    }
                    Some(_) => {}
                }
                std::thread::sleep(interval);
            }
        })
        .map(drop)
}

/// Whether every shard is alive, from samples of their progress counts. A pure function of
/// the samples and the time, tested with a fake clock.
#[derive(Debug)]
pub(crate) struct Liveness {
    /// Per shard: the count last seen and when it last changed.
    shards: Vec<(u64, Instant)>,
}

impl Liveness {
    pub(crate) fn new(shards: usize, now: Instant) -> Liveness {
        Liveness {
            shards: vec![(0, now); shards],
        }
    }

    /// Takes a sample at `now`; returns a shard stuck for [`STUCK_AFTER`], if any.
    pub(crate) fn observe(&mut self, progress: &[u64], now: Instant) -> Option<usize> {
        debug_assert_eq!(progress.len(), self.shards.len(), "one count per shard");
        let mut stuck = None;
        for (shard, (&count, seen)) in progress.iter().zip(self.shards.iter_mut()).enumerate() {
            if count != seen.0 {
                *seen = (count, now);
            } else if stuck.is_none() && now.saturating_duration_since(seen.1) >= STUCK_AFTER {
                stuck = Some(shard);
            }
        }
        stuck
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_without_progress_for_the_window_is_stuck_until_it_moves() {
        let t0 = Instant::now();
        let mut l = Liveness::new(2, t0);
        assert_eq!(l.observe(&[1, 1], t0 + Duration::from_millis(500)), None);
        // Shard 1 stops; shard 0 goes on.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.observe(&[2, 1], t1 + STUCK_AFTER / 2), None);
        assert_eq!(l.observe(&[3, 1], t1 + STUCK_AFTER), Some(1));
        assert_eq!(l.observe(&[4, 1], t1 + STUCK_AFTER * 2), Some(1));
        // It moves again: alive.
        assert_eq!(l.observe(&[5, 2], t1 + STUCK_AFTER * 2), None);
    }

    #[test]
    fn shards_that_tick_are_alive_however_long_it_runs() {
        let t0 = Instant::now();
        let mut l = Liveness::new(3, t0);
        for i in 1..100u64 {
            let now = t0 + Duration::from_millis(250) * i as u32;
            assert_eq!(l.observe(&[i, i * 7, i + 1], now), None);
        }
    }

    #[test]
    fn socket_addresses_path_and_abstract() {
        let p = socket_addr(b"/run/systemd/notify").unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let a = socket_addr(b"@ringmq-test").unwrap();
        use std::os::linux::net::SocketAddrExt;
        assert_eq!(a.as_abstract_name(), Some(&b"ringmq-test"[..]));
        assert!(socket_addr(b"vsock:2:1234").is_err());
        assert!(socket_addr(b"").is_err());
    }

    #[test]
    fn datagram_reaches_a_bound_socket() {
        let dir = std::env::temp_dir().join(format!("ringmq-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let addr = socket_addr(path.as_os_str().as_encoded_bytes()).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"READY=1", &addr)
            .unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
