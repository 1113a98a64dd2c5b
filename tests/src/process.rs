//! A broker process started from a [`Command`] the test builds itself — its own environment
//! (`NOTIFY_SOCKET`, `RUST_LOG`), its own arguments, a `pre_exec` hook — for the tests of the
//! process's surroundings (systemd notifications, logs, the driver fallback), where
//! [`Broker::start`](crate::Broker::start)'s fixed command line does not fit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{broker_binary, free_port, temp_dir};

/// A broker started by [`RawBroker::spawn`], killed on drop; its log (stdout and stderr, in
/// a file: never a terminal) is printed when the test panics.
#[derive(Debug)]
pub struct RawBroker {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    log_path: PathBuf,
}

/// The broker binary with `--listen 127.0.0.1:PORT --shards 1` on a free port, and nothing
/// from the harness's environment knobs: the test adds what it needs.
pub fn broker_command() -> (Command, u16) {
    let port = free_port();
    let mut cmd = Command::new(broker_binary());
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--shards")
        .arg("1")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    (cmd, port)
}

impl RawBroker {
    /// Spawns `cmd` (from [`broker_command`]) with its output to a log file.
    pub fn spawn(mut cmd: Command, port: u16) -> RawBroker {
        let dir = temp_dir("raw-broker");
        let log_path = dir.join("broker.log");
        let log = File::create(&log_path).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        RawBroker {
            child,
            port,
            dir,
            log_path,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Everything the broker printed so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The raw bytes of the log (to look for escape codes).
    pub fn log_bytes(&self) -> Vec<u8> {
        fs::read(&self.log_path).unwrap_or_default()
    }

    /// Waits (bounded) until the broker accepts a TCP connection; panics with its log if it
    /// exits or does not within `timeout`.
    pub fn wait_accepting(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "broker exited with {status} before accepting:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "broker accepted no connection within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until the log contains `needle`; panics with the log if not.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not logged within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (through `kill`, std has no signal API).
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits (bounded) for the process to exit; `None` if it is still running at `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RawBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- broker log {}:\n{}\n---- end",
                self.log_path.display(),
                self.log()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
