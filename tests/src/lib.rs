//! ringmq-tests: end-to-end tests that start the real `ringmq` binary on loopback and drive it
//! with real clients: the small synchronous client in [`client`] (built on `ringmq-codec`) and
//! third-party ones (`mosquitto_pub`/`mosquitto_sub`, paho-mqtt scripts in `tests/py/`, see
//! [`tools`]).
//!
//! What it must never do: talk to anything but 127.0.0.1, wait without a bound, leave a broker
//! or tool process running after a test, or assert on timing (speed belongs to bench/).
//!
//! Each test starts its own broker on its own free port ([`Broker::start`]). The binary is built
//! once per test process with the same profile as the tests. Environment knobs:
//! - `RINGMQ_TEST_SHARDS`: default shard count (2);
//! - `RINGMQ_TEST_DRIVER`: `--driver` passed to every broker (`auto`, `io-uring`, `legacy`);
//! - `RINGMQ_TEST_LOG_LEVEL`: `--log-level` passed to every broker;
//! - `RINGMQ_BIN`: use this binary instead of building one;
//! - `RINGMQ_TEST_PEER=mosquitto`: run the suite against a local Mosquitto instead, to check the
//!   tests themselves (ringmq-specific expectations then fail, which is expected).

// Tests fail by panicking: unwrap/expect/panic are how an end-to-end test reports a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod client;
pub mod flood;
pub mod pki;
pub mod process;
pub mod tools;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use client::*;

/// How long a test waits for something that must happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test watches for something that must not happen, when no later event can serve as
/// a marker. Kept short: it bounds the suite's run time, not the broker's speed.
pub const QUIET: Duration = Duration::from_millis(500);
/// Bound on a broker's start (spawn until a TCP connect succeeds).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on building the broker binary (once per test process).
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// How a test wants its broker.
#[derive(Debug, Clone, Default)]
pub struct BrokerOpts {
    /// `--shards N`; `None`: `RINGMQ_TEST_SHARDS` or 2.
    pub shards: Option<usize>,
    /// Body of a TOML config file passed with `--config` (no `[[listener]]`: the harness passes
    /// `--listen`).
    pub config: Option<String>,
    /// `RLIMIT_NOFILE` (soft and hard) of the broker process, set by `sh -c 'ulimit -n N && exec
    /// ...'`: for the tests of running out of file descriptors.
    pub nofile_limit: Option<u64>,
}

impl BrokerOpts {
    pub fn new() -> BrokerOpts {
        BrokerOpts::default()
    }

    pub fn shards(mut self, n: usize) -> BrokerOpts {
        self.shards = Some(n);
        self
    }

    /// Adds `[limits]` entries, e.g. `limits("receive_maximum = 2")`.
    pub fn limits(mut self, entries: &str) -> BrokerOpts {
        let mut config = self.config.take().unwrap_or_default();
        config.push_str("\n[limits]\n");
        config.push_str(entries);
        config.push('\n');
        self.config = Some(config);
        self
    }

    /// A raw config body.
    pub fn config(mut self, toml: &str) -> BrokerOpts {
        self.config = Some(toml.to_owned());
        self
    }

    /// Persistence on, in `dir` (`[storage] dir`, plus `entries` of that section): kept across
    /// brokers started with the same directory (crash tests).
    pub fn storage(mut self, dir: &Path, entries: &str) -> BrokerOpts {
        let mut config = self.config.take().unwrap_or_default();
        config.push_str(&format!(
            "\n[storage]\ndir = {:?}\n{entries}\n",
            dir.display().to_string()
        ));
        self.config = Some(config);
        self
    }

    /// Runs the broker with at most `n` open file descriptors.
    pub fn nofile_limit(mut self, n: u64) -> BrokerOpts {
        self.nofile_limit = Some(n);
        self
    }
}

/// A running broker, killed on drop. Its log (stdout and stderr) is printed when the test that
/// owns it panics.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    port: u16,
    dir: PathBuf,
    log_path: PathBuf,
    /// Set by [`Broker::terminate`]: the exit is then expected, not a crash.
    terminated: bool,
}

impl Broker {
    /// A broker with the default options.
    pub fn default_start() -> Broker {
        Broker::start(BrokerOpts::default())
    }

    /// Starts a broker and waits (bounded) until it accepts TCP connections.
    pub fn start(opts: BrokerOpts) -> Broker {
        let mut last_failure = String::new();
        // A port picked free can be taken by someone else before the broker binds it: retry.
        for _attempt in 0..3 {
            match Broker::try_start(&opts) {
                Ok(broker) => return broker,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("broker did not start:\n{last_failure}");
    }

    fn try_start(opts: &BrokerOpts) -> Result<Broker, String> {
        let port = free_port();
        let dir = temp_dir("broker");
        let log_path = dir.join("broker.log");
        let log =
            File::create(&log_path).map_err(|e| format!("create {}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let shards = opts.shards.unwrap_or_else(default_shards);
        let mut cmd = if peer_is_mosquitto() {
            mosquitto_command(port, opts, &dir)
        } else {
            let mut cmd = Command::new(broker_binary());
            cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
            cmd.arg("--shards").arg(shards.to_string());
            if let Ok(driver) = std::env::var("RINGMQ_TEST_DRIVER") {
                cmd.arg("--driver").arg(driver);
            }
            if let Ok(level) = std::env::var("RINGMQ_TEST_LOG_LEVEL") {
                cmd.arg("--log-level").arg(level);
            }
            if let Some(config) = &opts.config {
                let path = dir.join("ringmq.toml");
                fs::write(&path, config).map_err(|e| format!("write {}: {e}", path.display()))?;
                cmd.arg("--config").arg(path);
            }
            cmd
        };
        if let Some(n) = opts.nofile_limit {
            // `exec`: the child is still the broker itself, which `kill` and `wait` expect.
            let mut wrapped = Command::new("sh");
            wrapped
                .arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(cmd.get_program())
                .args(cmd.get_args());
            cmd = wrapped;
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        let child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        let mut broker = Broker {
            child,
            port,
            dir,
            log_path,
            terminated: false,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!(
                    "{cmd:?} exited with {status} before accepting:\n{}",
                    broker.log()
                ));
            }
            if TcpStream::connect_timeout(&broker.addr(), Duration::from_millis(200)).is_ok() {
                return Ok(broker);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{cmd:?} accepted no connection within {START_TIMEOUT:?}:\n{}",
                    broker.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Everything the broker wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// A scratch directory that lives as long as the broker.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the broker process is still running (it must survive anything a peer sends).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM (through `kill -TERM`, std has no signal API) and waits (bounded) for the
    /// process to exit; returns its exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.begin_terminate();
        self.wait_exit(timeout)
    }

    /// SIGKILL (a crash: no shutdown at all), and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.terminated = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM without waiting: the broker starts its graceful shutdown.
    pub fn begin_terminate(&mut self) {
        self.terminated = true;
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");
    }

    /// Waits (bounded) for the process to exit after [`Broker::begin_terminate`].
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "broker still running {timeout:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connects a client with `opts` and expects a successful CONNACK.
    pub fn connect(&self, opts: Opts) -> Client {
        Client::connect(self.addr(), opts)
    }

    /// A v5 client with a clean start and the given id.
    pub fn v5(&self, id: &str) -> Client {
        self.connect(Opts::v5(id))
    }

    /// A 3.1.1 client with a clean session and the given id.
    pub fn v3(&self, id: &str) -> Client {
        self.connect(Opts::v3(id))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let crashed = match self.child.try_wait() {
            Ok(Some(status)) if !self.terminated => Some(status),
            _ => None,
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || crashed.is_some() {
            let log = self.log();
            // The tail is what matters; a whole debug log would drown the test output.
            let tail = tail_chars(&log, 64 * 1024);
            eprintln!(
                "---- broker on port {} (exited before the end: {:?}), log {}:\n{}\n---- end of broker log",
                self.port,
                crashed,
                self.log_path.display(),
                tail
            );
            if crashed.is_some() && !std::thread::panicking() {
                panic!("the broker process died during the test: {crashed:?}");
            }
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn tail_chars(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn default_shards() -> usize {
    std::env::var("RINGMQ_TEST_SHARDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

fn peer_is_mosquitto() -> bool {
    std::env::var("RINGMQ_TEST_PEER").is_ok_and(|p| p == "mosquitto")
}

/// Mosquitto with the closest equivalent of the ringmq limits used by the tests.
fn mosquitto_command(port: u16, opts: &BrokerOpts, dir: &Path) -> Command {
    let mut conf = format!("listener {port} 127.0.0.1\nallow_anonymous true\n");
    if let Some(config) = &opts.config {
        for line in config.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            let mapped = match key {
                "max_packet_size" => "max_packet_size",
                "receive_maximum" => "max_inflight_messages",
                "max_inflight" => "max_inflight_messages",
                "max_queued_messages" => "max_queued_messages",
                "max_keep_alive_secs" => "max_keepalive",
                "topic_alias_maximum" => "max_topic_alias",
                _ => continue,
            };
            conf.push_str(&format!("{mapped} {value}\n"));
        }
    }
    let path = dir.join("mosquitto.conf");
    fs::write(&path, conf).expect("write mosquitto.conf");
    let mut cmd = Command::new("mosquitto");
    cmd.arg("-c").arg(path).arg("-v");
    cmd
}

/// A port nobody listens on now. Ports handed out are remembered so two brokers of one test
/// process never get the same one: with SO_REUSEPORT both could bind it and split the traffic.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if given.insert(port) {
            return port;
        }
    }
}

/// A fresh directory under the system temp dir, unique to this process and call.
pub fn temp_dir(what: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ringmq-tests-{}-{what}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// The workspace root (the tests crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `ringmq` binary, built once per test process with the tests' own profile.
pub fn broker_binary() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(build_broker) {
        Ok(path) => path.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn build_broker() -> Result<PathBuf, String> {
    if let Ok(bin) = std::env::var("RINGMQ_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // Test executables live in target/<profile>/deps/; the binary goes to target/<profile>/.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected test executable path {}", exe.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", "ringmq", "--bin", "ringmq"])
        .current_dir(workspace_root());
    if exe.to_string_lossy().contains("/release/") {
        cmd.arg("--release");
    }
    // Bounded like everything else: a cold build takes about two minutes on two cores, more when
    // other builds hold the target directory's lock.
    let log_dir = temp_dir("build");
    let log_path = log_dir.join("cargo-build.log");
    let log = File::create(&log_path).map_err(|e| format!("create {}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("run {cmd:?}: {e}"))?;
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{cmd:?} did not finish within {BUILD_TIMEOUT:?}:\n{}",
                    read_text(&log_path)
                ));
            }
            Err(e) => return Err(format!("wait for {cmd:?}: {e}")),
        }
    };
    if !status.success() {
        return Err(format!(
            "{cmd:?} failed ({status}):\n{}",
            read_text(&log_path)
        ));
    }
    let _ = fs::remove_dir_all(&log_dir);
    let bin = profile_dir.join("ringmq");
    if !bin.is_file() {
        return Err(format!(
            "{cmd:?} succeeded but {} does not exist",
            bin.display()
        ));
    }
    Ok(bin)
}

/// Reads a whole file as text (for tool outputs), empty if missing.
pub fn read_text(path: &Path) -> String {
    let mut s = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut s);
    }
    String::from_utf8_lossy(&s).into_owned()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the broker binary with `config` as its config file, on a free loopback port, and waits
/// (at most `timeout`) for it to exit: for configurations that must be refused at startup.
/// Returns the file's path and what the process printed; a broker still running at the timeout
/// is killed (status `None`).
pub fn run_broker_with_bad_config(config: &str, timeout: Duration) -> (PathBuf, tools::ToolOutput) {
    let dir = temp_dir("badconfig");
    let path = dir.join("bad-ringmq.toml");
    fs::write(&path, config).expect("write config");
    let args = vec![
        "--config".to_owned(),
        path.to_string_lossy().into_owned(),
        "--listen".to_owned(),
        format!("127.0.0.1:{}", free_port()),
        "--shards".to_owned(),
        "1".to_owned(),
    ];
    let bin = broker_binary();
    let out =
        tools::Tool::spawn(&bin.to_string_lossy(), &args, "cargo build -p ringmq").wait(timeout);
    (path, out)
}

/// A barrier whose `wait` gives up (panics) after `2 × WAIT`: with `std::sync::Barrier`, one
/// test thread that panics before reaching it would leave the others blocked forever.
#[derive(Debug)]
pub struct BoundedBarrier {
    parties: usize,
    /// (arrived in this generation, generation)
    state: Mutex<(usize, u64)>,
    turned: std::sync::Condvar,
}

impl BoundedBarrier {
    pub fn new(parties: usize) -> BoundedBarrier {
        BoundedBarrier {
            parties,
            state: Mutex::new((0, 0)),
            turned: std::sync::Condvar::new(),
        }
    }

    pub fn wait(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let generation = state.1;
        state.0 += 1;
        if state.0 == self.parties {
            *state = (0, generation + 1);
            self.turned.notify_all();
            return;
        }
        let (_state, timeout) = self
            .turned
            .wait_timeout_while(state, WAIT * 2, |s| s.1 == generation)
            .unwrap_or_else(|e| e.into_inner());
        assert!(
            !timeout.timed_out(),
            "not all {} threads reached the barrier within {:?}",
            self.parties,
            WAIT * 2
        );
    }
}
