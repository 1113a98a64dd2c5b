//! MQTT over WebSockets (`ws` listeners) through the real binary: paho-mqtt 2.x with
//! transport="websockets" (3.1.1 and 5), and handshake refusals seen on the wire.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringmq_tests::{broker_binary, free_port, temp_dir, workspace_root};

struct WsBroker {
    child: Child,
    ws_port: u16,
}

impl Drop for WsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> WsBroker {
    let dir = temp_dir("ws");
    let ws_port = free_port();
    let shards = std::env::var("RINGMQ_TEST_SHARDS").unwrap_or_else(|_| "2".to_owned());
    let config = format!(
        "[server]\nshards = {shards}\n[[listener]]\nbind = \"127.0.0.1:{ws_port}\"\nprotocol = \"ws\"\npath = \"/mqtt\"\n"
    );
    let path = dir.join("ringmq.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(broker_binary());
    cmd.arg("--config").arg(&path);
    if let Ok(driver) = std::env::var("RINGMQ_TEST_DRIVER") {
        cmd.arg("--driver").arg(driver);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", ws_port)).is_err() {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    WsBroker { child, ws_port }
}

/// paho-mqtt over WebSockets, MQTT 3.1.1 and 5: connect, subscribe, QoS 1 messages of 21 B and
/// 100 KB (several frames, several reads) arrive intact.
#[test]
fn paho_over_websockets() {
    let b = start();
    let script = workspace_root().join("tests/py/paho_ws.py");
    let o = Command::new("python3")
        .arg(script)
        .arg("127.0.0.1")
        .arg(b.ws_port.to_string())
        .arg("/mqtt")
        .stdin(Stdio::null())
        .output()
        .expect("python3 with paho-mqtt 2.x");
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("ok: protocol 4") && out.contains("ok: protocol 5"),
        "{out}"
    );
}

fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Handshake refusals come back as HTTP statuses: another path 404, no `mqtt` subprotocol 400;
/// the right request gets 101 with the RFC 6455 accept key and `mqtt`.
#[test]
fn handshake_statuses() {
    let b = start();
    let req = |path: &str, proto: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {proto}\r\n\r\n"
        )
    };
    assert!(http(b.ws_port, &req("/other", "mqtt")).starts_with("HTTP/1.1 404"));
    assert!(http(b.ws_port, &req("/mqtt", "chat")).starts_with("HTTP/1.1 400"));
    let mut s = TcpStream::connect(("127.0.0.1", b.ws_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req("/mqtt", "mqtt").as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: mqtt"),
        "{head}"
    );
}
