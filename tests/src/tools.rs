//! Third-party clients as child processes: `mosquitto_pub`, `mosquitto_sub` and the paho-mqtt
//! scripts in `tests/py/`. Every wait is bounded, every child is killed on drop, and a missing
//! tool is a test failure that says what to install (never a skipped test).

use std::fs::File;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Broker, read_text, temp_dir};

/// How long a tool may run before it is killed and the test fails.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

/// The format mosquitto_sub prints each message in (`-F`): one line, `|`-separated, starting
/// with `MSG|` so debug lines (`-d`) are told apart.
/// Fields: topic, qos, retain, user properties (`k:v k:v`), content type, response topic,
/// correlation data, message expiry, payload.
pub const SUB_FORMAT: &str = "MSG|%t|%q|%r|%P|%C|%R|%D|%E|%p";

/// A message as printed by mosquitto_sub with [`SUB_FORMAT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubLine {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub user_props: String,
    pub content_type: String,
    pub response_topic: String,
    pub correlation_data: String,
    pub message_expiry: String,
    pub payload: String,
}

/// A running tool, killed on drop.
#[derive(Debug)]
pub struct Tool {
    child: Option<Child>,
    what: String,
    stdout: PathBuf,
    stderr: PathBuf,
    dir: PathBuf,
}

/// What a finished (or killed) tool printed.
#[derive(Debug)]
pub struct ToolOutput {
    pub what: String,
    /// `None` when it was killed at the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    /// Panics with everything the tool printed unless it exited with status 0.
    pub fn assert_success(&self) -> &ToolOutput {
        if !self.status.is_some_and(|s| s.success()) {
            panic!("{self}");
        }
        self
    }

    /// The `MSG|` lines of a mosquitto_sub run with [`SUB_FORMAT`].
    pub fn messages(&self) -> Vec<SubLine> {
        parse_sub_lines(&self.stdout)
    }

    /// The stdout lines that are not mosquitto debug lines.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.lines().map(str::to_owned).collect()
    }
}

impl std::fmt::Display for ToolOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => format!("killed after {TOOL_TIMEOUT:?}"),
        };
        write!(
            f,
            "{} ({status})\n--- stdout:\n{}\n--- stderr:\n{}\n---",
            self.what, self.stdout, self.stderr
        )
    }
}

/// Parses the `MSG|` lines of mosquitto_sub output.
pub fn parse_sub_lines(stdout: &str) -> Vec<SubLine> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("MSG|"))
        .map(|rest| {
            let f: Vec<&str> = rest.splitn(9, '|').collect();
            let field = |i: usize| f.get(i).copied().unwrap_or_default().to_owned();
            SubLine {
                topic: field(0),
                qos: field(1).parse().unwrap_or(255),
                retain: field(2) == "1",
                user_props: field(3),
                content_type: field(4),
                response_topic: field(5),
                correlation_data: field(6),
                message_expiry: field(7),
                payload: field(8),
            }
        })
        .collect()
}

impl Tool {
    /// Starts `program` with `args`; `install` says how to get it when it is missing.
    pub fn spawn(program: &str, args: &[String], install: &str) -> Tool {
        let dir = temp_dir("tool");
        let stdout = dir.join("stdout");
        let stderr = dir.join("stderr");
        let what = format!("{program} {}", args.join(" "));
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create stdout file"))
            .stderr(File::create(&stderr).expect("create stderr file"));
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                panic!("`{program}` is not installed but this test needs it: {install}")
            }
            Err(e) => panic!("cannot run {what}: {e}"),
        };
        Tool {
            child: Some(child),
            what,
            stdout,
            stderr,
            dir,
        }
    }

    pub fn stdout_so_far(&self) -> String {
        read_text(&self.stdout)
    }

    pub fn stderr_so_far(&self) -> String {
        read_text(&self.stderr)
    }

    /// Waits (bounded) until stdout contains `needle`; panics with the output if it does not.
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout_so_far().contains(needle) {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() >= deadline {
                // The tool may have printed the needle just before exiting.
                if self.stdout_so_far().contains(needle) {
                    return;
                }
                panic!(
                    "{}: {needle:?} not printed within {timeout:?} (exited: {exited})\n--- stdout:\n{}\n--- stderr:\n{}",
                    self.what,
                    self.stdout_so_far(),
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the tool to exit, killing it after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> ToolOutput {
        let deadline = Instant::now() + timeout;
        let mut status = None;
        if let Some(child) = self.child.as_mut() {
            loop {
                match child.try_wait() {
                    Ok(Some(s)) => {
                        status = Some(s);
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        self.child = None;
        ToolOutput {
            what: self.what.clone(),
            status,
            stdout: self.stdout_so_far(),
            stderr: self.stderr_so_far(),
        }
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const MOSQUITTO_INSTALL: &str = "apt-get install -y mosquitto-clients";
const PAHO_INSTALL: &str = "apt-get install -y python3 && pip install 'paho-mqtt>=2,<3'";

fn with_broker(broker: &Broker, args: &[&str]) -> Vec<String> {
    let mut all = vec![
        "-h".to_owned(),
        "127.0.0.1".to_owned(),
        "-p".to_owned(),
        broker.port().to_string(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    all
}

/// Runs `mosquitto_pub` against `broker` with `args` (host and port added) to completion.
pub fn mosquitto_pub(broker: &Broker, args: &[&str]) -> ToolOutput {
    Tool::spawn(
        "mosquitto_pub",
        &with_broker(broker, args),
        MOSQUITTO_INSTALL,
    )
    .wait(TOOL_TIMEOUT)
}

/// Starts `mosquitto_sub` against `broker` with `args` plus `-d -F SUB_FORMAT`, and waits until
/// it has received its SUBACK. Give it `-C n` and `-W secs` so it ends by itself.
///
/// It runs under `stdbuf -oL`: its stdout is a file, which stdio would otherwise buffer until
/// exit, and the SUBACK line is what tells the test it may publish.
pub fn mosquitto_sub(broker: &Broker, args: &[&str]) -> Tool {
    let mut tool = mosquitto_sub_spawn(broker, args);
    tool.wait_for_stdout("received SUBACK", TOOL_TIMEOUT);
    tool
}

/// Starts `mosquitto_sub` like [`mosquitto_sub`] without waiting for its SUBACK: for a resumed
/// session, whose queued messages may arrive (and `-C n` end it) before the SUBACK.
pub fn mosquitto_sub_spawn(broker: &Broker, args: &[&str]) -> Tool {
    let mut all = vec!["-oL".to_owned(), "mosquitto_sub".to_owned()];
    all.extend(with_broker(broker, args));
    all.extend(["-d".to_owned(), "-F".to_owned(), SUB_FORMAT.to_owned()]);
    if std::process::Command::new("mosquitto_sub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        panic!("`mosquitto_sub` is not installed but this test needs it: {MOSQUITTO_INSTALL}");
    }
    Tool::spawn(
        "stdbuf",
        &all,
        "stdbuf is part of GNU coreutils: apt-get install -y coreutils",
    )
}

/// Starts `python3 tests/py/<script>` with `args`. Scripts check that paho-mqtt 2.x is importable
/// and exit 3 with a message otherwise.
pub fn python(script: &str, args: &[&str]) -> Tool {
    let path = crate::workspace_root()
        .join("tests")
        .join("py")
        .join(script);
    let mut all = vec!["-u".to_owned(), path.to_string_lossy().into_owned()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    Tool::spawn("python3", &all, PAHO_INSTALL)
}

/// A message as printed by the paho scripts (`MSG key=value ...`, bytes hex-encoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PyMsg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub user_props: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub message_expiry: Option<u32>,
    pub payload_format: Option<u8>,
    pub sub_ids: Vec<u32>,
}

impl PyMsg {
    pub fn payload_text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex from script"))
        .collect()
}

fn unhex_text(s: &str) -> String {
    String::from_utf8_lossy(&unhex(s)).into_owned()
}

/// Parses the `MSG` lines the paho scripts print.
pub fn parse_py_lines(stdout: &str) -> Vec<PyMsg> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("MSG "))
        .map(|rest| {
            let mut m = PyMsg::default();
            for field in rest.split_whitespace() {
                let Some((key, value)) = field.split_once('=') else {
                    continue;
                };
                match key {
                    "topic" => m.topic = unhex_text(value),
                    "payload" => m.payload = unhex(value),
                    "qos" => m.qos = value.parse().expect("qos"),
                    "retain" => m.retain = value == "1",
                    "up" => {
                        let (k, v) = value.split_once(':').expect("up=name:value");
                        m.user_props.push((unhex_text(k), unhex_text(v)));
                    }
                    "ct" => m.content_type = Some(unhex_text(value)),
                    "rt" => m.response_topic = Some(unhex_text(value)),
                    "cd" => m.correlation_data = Some(unhex(value)),
                    "exp" => m.message_expiry = value.parse().ok(),
                    "pfi" => m.payload_format = value.parse().ok(),
                    "sid" => m.sub_ids.push(value.parse().expect("sid")),
                    _ => {}
                }
            }
            m
        })
        .collect()
}

impl ToolOutput {
    /// The `MSG` lines of a paho script.
    pub fn py_messages(&self) -> Vec<PyMsg> {
        parse_py_lines(&self.stdout)
    }
}

/// Starts `tests/py/paho_sub.py` against `broker` and waits until it is subscribed.
pub fn paho_sub(
    broker: &Broker,
    version: &str,
    topic: &str,
    qos: u8,
    count: usize,
    extra: &[&str],
) -> Tool {
    let port = broker.port().to_string();
    let qos = qos.to_string();
    let count = count.to_string();
    let mut args = vec![
        "--port",
        &port,
        "--version",
        version,
        "--topic",
        topic,
        "--qos",
        &qos,
        "--count",
        &count,
    ];
    args.extend_from_slice(extra);
    let mut tool = python("paho_sub.py", &args);
    tool.wait_for_stdout("SUBSCRIBED", TOOL_TIMEOUT);
    tool
}

/// Runs `tests/py/paho_pub.py` against `broker` to completion and asserts it succeeded.
pub fn paho_pub(
    broker: &Broker,
    version: &str,
    topic: &str,
    qos: u8,
    extra: &[&str],
) -> ToolOutput {
    let port = broker.port().to_string();
    let qos = qos.to_string();
    let mut args = vec![
        "--port",
        &port,
        "--version",
        version,
        "--topic",
        topic,
        "--qos",
        &qos,
    ];
    args.extend_from_slice(extra);
    let out = python("paho_pub.py", &args).wait(TOOL_TIMEOUT);
    out.assert_success();
    out
}
