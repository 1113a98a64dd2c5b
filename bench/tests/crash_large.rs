//! End-to-end: recovery of a larger data set after kill -9 (issue 14). The real `ringmq`
//! binary with `[storage] dir`: 2 000 persistent sessions (MQTT 5, Clean Start 0, an expiry),
//! each subscribed QoS 1 to its own topic and disconnected, hold 40 000 queued QoS 1 messages
//! (20 each) acknowledged with PUBACK; the broker is killed with SIGKILL, restarted on the same
//! directory, and every session must be present and receive each of its messages exactly once.
//! A graceful stop (SIGTERM) and a second restart then show the delivered messages stay gone.
//!
//! Counting assertions only. The work is `ringmq_bench::persist::fill`, the same code as
//! `ringmq-bench persist-fill` (the 100 000-session measurement in docs/benchmarks.md).
//! Honours `RINGMQ_TEST_SHARDS`, `RINGMQ_TEST_DRIVER` and `RINGMQ_BIN` like the tests in tests/.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ringmq_bench::persist::fill::{self, FillConfig};
use ringmq_codec::ProtocolVersion;
use ringmq_tests::{Broker, BrokerOpts, temp_dir};

const SESSIONS: u32 = 2_000;
const PER_SESSION: u64 = 20;

fn opts(store: &std::path::Path) -> BrokerOpts {
    BrokerOpts::new().storage(store, "")
}

fn config(b: &Broker) -> FillConfig {
    FillConfig {
        addr: b.addr(),
        sources: vec![],
        version: ProtocolVersion::V5,
        sessions: SESSIONS,
        messages: u64::from(SESSIONS) * PER_SESSION,
        publishers: 8,
        threads: 16,
        window: 64,
        payload_size: 32,
        expiry_secs: 3600,
        prefix: "large".into(),
        connect_timeout: Duration::from_secs(20),
        quiet: Duration::from_secs(5),
    }
}

#[test]
fn large_data_set_recovers_after_kill9_each_message_once() {
    let store = temp_dir("crash-large-store");
    let mut b = Broker::start(opts(&store));
    let cfg = config(&b);
    let created = fill::create_sessions(&cfg);
    eprint!("{}", created.render("create"));
    assert_eq!(
        created.done,
        u64::from(SESSIONS),
        "{}",
        created.render("create")
    );
    let published = fill::publish(&cfg).unwrap();
    eprint!("{}", published.render("publish"));
    assert_eq!(
        published.done,
        cfg.messages,
        "{}",
        published.render("publish")
    );
    assert_eq!(published.refused, 0);

    b.kill();
    let mut b = Broker::start(opts(&store));
    let cfg = config(&b);
    let verified = fill::verify(&cfg);
    let text = verified.render("verify");
    eprint!("{text}");
    assert_eq!(verified.sessions_absent, 0, "{text}");
    assert_eq!(verified.lost, 0, "{text}");
    assert_eq!(verified.duplicates, 0, "{text}");
    assert_eq!(verified.failed, 0, "{text}");
    assert_eq!(verified.done, cfg.messages, "{text}");

    // Everything was acknowledged by the subscribers: after a graceful restart the sessions
    // are still there and hold nothing.
    let status = b.terminate(Duration::from_secs(20));
    assert!(status.success(), "SIGTERM exit: {status}");
    let b = Broker::start(opts(&store));
    let mut cfg = config(&b);
    cfg.quiet = Duration::from_millis(300);
    cfg.messages = 0;
    let again = fill::verify(&cfg);
    let text = again.render("verify again");
    assert_eq!(again.sessions_absent, 0, "{text}");
    assert_eq!(
        again.done, 0,
        "delivered again after being acknowledged: {text}"
    );
    drop(b);
    let _ = std::fs::remove_dir_all(&store);
}

/// A restart on the same port right after kill -9 must come up: the dead process's io_uring
/// listeners linger for some milliseconds after `wait` returns, and the startup check that no
/// one else listens there refused the restart ("address in use") about every other time before
/// it waited for them (engine/src/transport/runtime.rs, `bind_only_settled`). Ten rounds of
/// kill, wait, respawn at once: the old check fails this with high probability, the fixed one
/// never.
#[test]
fn restart_on_the_same_port_right_after_kill9() {
    use std::process::{Child, Command, Stdio};
    let store = temp_dir("crash-large-port");
    let config = store.join("ringmq.toml");
    let log_dir = store.join("log").display().to_string();
    std::fs::write(&config, format!("[storage]\ndir = {log_dir:?}\n")).unwrap();
    let port = ringmq_tests::free_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let spawn = |round: usize| -> Child {
        let log = std::fs::File::create(store.join(format!("broker-{round}.log"))).unwrap();
        let mut cmd = Command::new(ringmq_tests::broker_binary());
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--shards")
            .arg("2")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Ok(driver) = std::env::var("RINGMQ_TEST_DRIVER") {
            cmd.arg("--driver").arg(driver);
        }
        cmd.spawn().unwrap()
    };
    // Answering CONNECT, not just a TCP connect: the dead process's lingering listener still
    // completes handshakes into its backlog.
    let wait_accepting = |child: &mut Child, round: usize| {
        // Bounded: 200 tries of at most 1 s each.
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(store.join(format!("broker-{round}.log")));
                panic!("round {round}: the restart exited with {status}: {log:?}");
            }
            if let Ok((c, _)) = ringmq_bench::blocking::Session::connect(
                addr,
                ProtocolVersion::V5,
                "port-probe",
                30,
                Duration::from_millis(1000),
            ) {
                return c;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("round {round}: not accepting");
    };
    let mut child = spawn(0);
    for round in 1..=10 {
        // An accepted connection, as a real broker has when it dies.
        let c = wait_accepting(&mut child, round - 1);
        child.kill().unwrap();
        child.wait().unwrap();
        drop(c);
        child = spawn(round);
    }
    let _c = wait_accepting(&mut child, 10);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&store);
}
