//! systemd's notification protocol through the real binary, against a Unix datagram socket
//! the test binds and passes as `NOTIFY_SOCKET` (as systemd does for `Type=notify`): `READY=1`
//! once clients are served, `WATCHDOG=1` pings every half `WATCHDOG_USEC`, `STOPPING=1` when
//! SIGTERM starts the drain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpStream;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use ringmq_tests::process::{RawBroker, broker_command};
use ringmq_tests::*;

const START: Duration = Duration::from_secs(10);

/// The next datagram, or `None` after `timeout`.
fn recv(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv on the notify socket: {e}"),
    }
}

/// Datagrams until one contains `line` (as a whole line); returns those before it.
fn recv_until(socket: &UnixDatagram, line: &str, b: &RawBroker, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(msg) = recv(socket, left.max(Duration::from_millis(1))) else {
            panic!(
                "no {line:?} within {timeout:?} (got {before:?}):\n{}",
                b.log()
            );
        };
        if msg.lines().any(|l| l == line) {
            return before;
        }
        before.push(msg);
    }
}

/// READY=1 comes when the listener accepts (a connection right after it succeeds at the
/// first attempt, and MQTT works), then WATCHDOG=1 pings, then STOPPING=1 on SIGTERM, and the
/// broker exits cleanly.
#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = temp_dir("notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let (mut cmd, port) = broker_command();
    // 200 ms: a ping every 100 ms.
    cmd.env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000");
    let mut b = RawBroker::spawn(cmd, port);
    let first = recv(&socket, START).unwrap_or_else(|| panic!("no READY=1:\n{}", b.log()));
    assert!(first.lines().any(|l| l == "READY=1"), "first: {first:?}");
    assert!(first.contains("STATUS="), "{first:?}");
    // Ready means serving: the very first connection attempt succeeds.
    TcpStream::connect(b.addr()).unwrap_or_else(|e| panic!("connect after READY=1: {e}"));
    Client::connect(b.addr(), Opts::v5("after-ready")).ping();
    // Watchdog pings, at least three.
    for _ in 0..3 {
        let skipped = recv_until(&socket, "WATCHDOG=1", &b, START);
        assert!(skipped.is_empty(), "unexpected: {skipped:?}");
    }
    b.terminate();
    // Pings sent before the signal may still be queued; STOPPING=1 follows them.
    let before = recv_until(&socket, "STOPPING=1", &b, START);
    assert!(before.iter().all(|m| m == "WATCHDOG=1"), "{before:?}");
    let status = b.wait_exit(START).expect("broker exits after SIGTERM");
    assert!(status.success(), "{status}\n{}", b.log());
}

/// `NOTIFY_SOCKET=@name` is an abstract socket (what systemd passes in some containers).
#[test]
fn abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("ringmq-test-notify-{}", std::process::id());
    let socket =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    let (mut cmd, port) = broker_command();
    cmd.env("NOTIFY_SOCKET", format!("@{name}"));
    let b = RawBroker::spawn(cmd, port);
    let first = recv(&socket, START).unwrap_or_else(|| panic!("no READY=1:\n{}", b.log()));
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    // No WATCHDOG_USEC: no pings (the next datagram is the stop).
    let mut b = b;
    b.terminate();
    let before = recv_until(&socket, "STOPPING=1", &b, START);
    assert!(before.is_empty(), "{before:?}");
}

/// `WATCHDOG_PID` naming another process: the pings are not ours to send.
#[test]
fn watchdog_pid_of_another_process_means_no_pings() {
    let dir = temp_dir("notify-pid");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let (mut cmd, port) = broker_command();
    cmd.env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "100000")
        .env("WATCHDOG_PID", "1");
    let mut b = RawBroker::spawn(cmd, port);
    let first = recv(&socket, START).unwrap_or_else(|| panic!("no READY=1:\n{}", b.log()));
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    // Pings would come every 50 ms; the stop is the marker that ends the watch.
    std::thread::sleep(QUIET);
    b.terminate();
    let before = recv_until(&socket, "STOPPING=1", &b, START);
    assert!(before.is_empty(), "pings for another process: {before:?}");
}
