//! Process lifecycle through the real binary: graceful shutdown on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringmq_codec::ReasonCode;
use ringmq_tests::client::{Client, Opts};
use ringmq_tests::{broker_binary, free_port};

fn start(shards: usize) -> (Child, SocketAddr) {
    let port = free_port();
    let child = Command::new(broker_binary())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--shards",
            &shards.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// SIGTERM: v5 clients get DISCONNECT 0x8B (Server shutting down), 3.1.1 clients are closed,
/// new connections are refused, and the process exits with status 0 within the bound.
#[test]
fn sigterm_disconnects_clients_with_0x8b_and_exits_cleanly() {
    let (mut child, addr) = start(2);
    let mut v5: Vec<Client> = (0..4)
        .map(|i| Client::handshake(addr, Opts::v5(&format!("term-{i}"))).0)
        .collect();
    let mut v3 = Client::handshake(addr, Opts::v3("term-v3")).0;
    signal(&child, "TERM");
    for c in &mut v5 {
        c.expect_disconnect_reason(ReasonCode::SERVER_SHUTTING_DOWN, Duration::from_secs(5));
    }
    v3.expect_closed(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "broker still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "exit status {status:?}\n{log}");
    assert!(log.contains("shutting down gracefully"), "{log}");
}

/// SIGHUP without a registry configured must not kill the broker (its default action would;
/// `systemctl reload` sends it): the broker logs it and keeps serving.
#[test]
fn sighup_without_registry_keeps_serving() {
    let (mut child, addr) = start(1);
    signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "broker exited on SIGHUP"
    );
    let (_c, ack) = Client::handshake(addr, Opts::v5("after-hup"));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    signal(&child, "TERM");
    let _ = child.wait();
}
