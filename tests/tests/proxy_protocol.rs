//! The PROXY protocol through the real binary: listeners with `proxy_protocol = true` take the
//! client's address from a v1 or v2 header (seen by the per-IP quota and in the log), refuse a
//! connection without a valid header, and work under WebSocket too (the header precedes the
//! upgrade request).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringmq_codec::*;
use ringmq_tests::pki::Pki;
use ringmq_tests::*;

struct ProxyBroker {
    child: Child,
    mqtt: u16,
    ws: u16,
    mqtts: u16,
    pki: Pki,
    http: u16,
    log: PathBuf,
}

impl Drop for ProxyBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- broker log ----\n{}", read_text(&self.log));
        }
    }
}

impl ProxyBroker {
    /// A plain, a `ws` and an `mqtts` listener, all with `proxy_protocol`, one connection per
    /// client address, a one-second header timeout, and the metrics endpoint.
    fn start() -> ProxyBroker {
        let pki = Pki::new();
        let dir = temp_dir("proxy");
        let (mqtt, ws, mqtts, http) = (free_port(), free_port(), free_port(), free_port());
        let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
        let shards = std::env::var("RINGMQ_TEST_SHARDS").unwrap_or_else(|_| "2".to_owned());
        let config = format!(
            "[server]\nshards = {shards}\n\
             [[listener]]\nbind = \"127.0.0.1:{mqtt}\"\nproxy_protocol = true\n\
             [[listener]]\nbind = \"127.0.0.1:{ws}\"\nprotocol = \"ws\"\nproxy_protocol = true\n\
             [[listener]]\nbind = \"127.0.0.1:{mqtts}\"\nprotocol = \"mqtts\"\nproxy_protocol = true\n\
             cert = \"{cert}\"\nkey = \"{key}\"\n\
             [limits]\nmax_connections_per_ip = 1\nconnect_timeout_secs = 1\n\
             [metrics]\nbind = \"127.0.0.1:{http}\"\nsys_interval_secs = 0\n"
        );
        let path = dir.join("ringmq.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.join("broker.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(broker_binary());
        cmd.arg("--config").arg(&path);
        if let Ok(driver) = std::env::var("RINGMQ_TEST_DRIVER") {
            cmd.arg("--driver").arg(driver);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let b = ProxyBroker {
            child,
            mqtt,
            ws,
            mqtts,
            pki,
            http,
            log,
        };
        // Readiness through the metrics endpoint: a probe connection to a proxy listener would
        // itself be a connection without a header.
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_get(b.http, "/ready").0 != 200 {
            assert!(Instant::now() < deadline, "broker did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        b
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.mqtt))
    }

    /// The value of one sample of the metrics scrape (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        let (status, body) = http_get(self.http, "/metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// `GET path` (status, body); status 0 when nothing listens yet.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

fn v1(source: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {source} 127.0.0.1 {port} 1883\r\n").into_bytes()
}

fn v2_inet6(source: Ipv6Addr, port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0, 36 + 7]);
    h.extend_from_slice(&source.octets());
    h.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&1883u16.to_be_bytes());
    // A TLV (PP2_TYPE_UNIQUE_ID, 4 bytes), to be skipped.
    h.extend_from_slice(&[0x05, 0, 4, 1, 2, 3, 4]);
    h
}

/// Sends `header`, then CONNECT, in one write (as a balancer forwards a client's first
/// segment), and returns the client with its CONNACK.
fn connect_through(b: &ProxyBroker, header: &[u8], id: &str) -> (Client, ConnAck) {
    let mut c = Client::open(b.addr(), ProtocolVersion::V5);
    let mut first = bytes::BytesMut::from(header);
    ringmq_codec::encode(&Opts::v5(id).into_packet(), ProtocolVersion::V5, &mut first).unwrap();
    c.send_raw(&first).unwrap();
    match c.recv(WAIT) {
        Some(Packet::ConnAck(ack)) => (c, ack),
        other => panic!("[{id}] expected CONNACK, got {other:?}"),
    }
}

/// The per-IP quota (one connection per address) counts the carried address, not the socket's:
/// every client here comes from 127.0.0.1, yet two distinct carried addresses (v1 IPv4, v2
/// IPv6) both connect, and a second connection carrying an address already connected is
/// refused with 0x97; the log names the carried addresses.
#[test]
fn the_carried_address_is_the_clients() {
    let b = ProxyBroker::start();
    let (mut a, ack) = connect_through(&b, &v1("203.0.113.7", 40001), "px-a");
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let six: Ipv6Addr = "2001:db8::42".parse().unwrap();
    let (mut c, ack) = connect_through(&b, &v2_inet6(six, 40002), "px-c");
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    // MQTT after the header works both ways.
    c.subscribe_ok("px/t", QoS::AtLeastOnce);
    assert_eq!(
        a.publish(msg("px/t", "hello").qos(QoS::AtLeastOnce)),
        Some(ReasonCode::SUCCESS)
    );
    assert_eq!(c.expect_publish().payload.as_ref(), b"hello");

    // The same carried address again: over the per-IP quota.
    let (mut again, ack) = connect_through(&b, &v1("203.0.113.7", 40003), "px-a2");
    assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED);
    again.expect_closed(WAIT);
    let (_d, ack) = connect_through(&b, &v1("203.0.113.8", 40004), "px-d");
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let log = read_text(&b.log);
    assert!(log.contains("203.0.113.7"), "{log}");
    assert_eq!(
        b.metric("ringmq_quota_rejections_total{quota=\"connections_per_ip\"}"),
        1.0
    );
}

/// A header split across several writes is waited for; the bytes after it are MQTT.
#[test]
fn a_header_in_pieces_is_read_whole() {
    let b = ProxyBroker::start();
    let mut c = Client::open(b.addr(), ProtocolVersion::V5);
    let header = v2_inet6("2001:db8::7".parse().unwrap(), 1);
    for part in header.chunks(5) {
        c.send_raw(part).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    c.send(&Opts::v5("px-split").into_packet());
    match c.recv(WAIT) {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// A connection that starts with MQTT instead of a header, one with a malformed header, and one
/// that sends nothing are closed without a CONNACK, counted and logged.
#[test]
fn no_or_invalid_header_is_closed() {
    let b = ProxyBroker::start();
    let mut plain = Client::open(b.addr(), ProtocolVersion::V5);
    plain.send(&Opts::v5("px-none").into_packet());
    plain.expect_closed(WAIT);
    let mut bad = Client::open(b.addr(), ProtocolVersion::V5);
    bad.send_raw(b"PROXY TCP4 999.0.0.1 127.0.0.1 1 2\r\n")
        .unwrap();
    bad.expect_closed(WAIT);
    assert!(wait_until(WAIT, || b.metric(
        "ringmq_proxy_protocol_failures_total{reason=\"invalid\"}"
    ) == 2.0));
    // Silent: closed after connect_timeout_secs (1 s).
    let mut silent = Client::open(b.addr(), ProtocolVersion::V5);
    silent.expect_closed(WAIT);
    assert!(wait_until(WAIT, || b.metric(
        "ringmq_proxy_protocol_failures_total{reason=\"timeout\"}"
    ) == 1.0));
    let log = read_text(&b.log);
    assert!(log.contains("PROXY protocol: connection closed"), "{log}");
    // None of them reached MQTT.
    assert_eq!(b.metric("ringmq_packets_sent_total{type=\"connack\"}"), 0.0);
}

/// On a WebSocket listener the header precedes the HTTP upgrade, which then succeeds.
#[test]
fn websocket_after_the_header() {
    let b = ProxyBroker::start();
    let mut s = TcpStream::connect(("127.0.0.1", b.ws)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = v1("198.51.100.9", 5555);
    req.extend_from_slice(
        b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Protocol: mqtt\r\n\r\n",
    );
    s.write_all(&req).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

/// On an `mqtts` listener the header precedes the TLS handshake: Python's `ssl` client sends a
/// v1 header in clear, then handshakes and speaks MQTT 3.1.1; a second connection carrying the
/// same address is over the per-IP quota (CONNACK return code 0x03), so the address the TLS
/// connection counted under is the carried one.
#[test]
fn tls_after_the_header() {
    let b = ProxyBroker::start();
    let script = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
def connect(cid):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"PROXY TCP4 192.0.2.55 127.0.0.1 4242 8883\r\n")
    t = ctx.wrap_socket(s, server_hostname="localhost")
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    t.sendall(bytes([0x10, len(body)]) + body)
    return t, t.recv(4).hex()
first, a = connect(b"px-tls-1")
second, b = connect(b"px-tls-2")
print(a, b)
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(b.mqtts.to_string())
        .arg(b.pki.path("ca.pem"))
        .stdin(Stdio::null())
        .output()
        .expect("python3");
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}");
    assert_eq!(out.trim(), "20020000 20020003", "{out}");
}

/// A v2 `LOCAL` header (a balancer's own health check) and a v1 `UNKNOWN` one carry no client
/// address: the socket's (127.0.0.1) is used, so with one connection per address the second is
/// over the quota.
#[test]
fn local_and_unknown_keep_the_socket_address() {
    let b = ProxyBroker::start();
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    let (_first, ack) = connect_through(&b, local, "px-local");
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let (mut second, ack) = connect_through(&b, b"PROXY UNKNOWN\r\n", "px-unknown");
    assert_eq!(ack.reason_code, ReasonCode::QUOTA_EXCEEDED);
    second.expect_closed(WAIT);
}
