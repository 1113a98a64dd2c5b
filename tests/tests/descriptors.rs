//! Out of file descriptors (issue 12), through the real binary started under `ulimit -n 48`:
//! clients connect until the broker has no descriptor left; from then on a new client is
//! refused (CONNACK 0x97, 3.1.1 return code 0x03, or at worst closed) and never left hanging
//! in the backlog; the connected clients keep being served; the broker logs a few lines, not
//! one per failed `accept`, and counts the failures and refusals in its metrics; and it
//! accepts again by itself once clients leave.
//!
//! One and two shards explicitly (each shard's listener runs out on its own); the driver is
//! `RINGMQ_TEST_DRIVER`'s (the README's test command runs both). Waits are bounds ([`WAIT`]);
//! nothing is timed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringmq_codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use ringmq_tests::{
    Broker, BrokerOpts, Client, Opts, PublishExt, RecvError, WAIT, free_port, msg, text, wait_until,
};

/// The broker's descriptor limit. It needs 17 (one shard) to 24 (two shards) to start with the
/// metrics endpoint, which leaves room for a few dozen clients.
const NOFILE: u64 = 48;
/// Attempts to fill the table before the test gives up: more than the limit, so it is reached.
const FILL_ATTEMPTS_MAX: usize = 2 * NOFILE as usize;
/// How long new clients keep being refused while the table is full: long enough that a
/// broker logging each failed `accept` (~40 lines a second per listener before the fix) would
/// be seen doing it.
const REFUSING: Duration = Duration::from_secs(2);
/// "accept failed" lines allowed in the log over the whole test: the broker writes one per
/// listener per 10 s with a count.
const ACCEPT_FAILED_LINES_MAX: usize = 4;
/// Clients closed to give descriptors back.
const RELEASED: usize = 4;

/// What became of one connection attempt.
#[derive(Debug)]
enum Outcome {
    /// CONNACK Success (boxed: a client is a few hundred bytes).
    Connected(Box<Client>),
    /// CONNACK with this (failure) code, then the close.
    Refused(ReasonCode),
    /// Closed without CONNACK: the broker accepted the connection before the CONNECT arrived.
    Closed,
}

/// Connects and sends CONNECT. A CONNACK or the close must come within [`WAIT`]: a client the
/// broker can neither serve nor refuse must not hang.
fn attempt(b: &Broker, opts: Opts) -> Outcome {
    let mut c = Client::open(b.addr(), opts.connect.protocol);
    c.name = opts.connect.client_id.to_string();
    if c.try_send(&opts.into_packet()).is_err() {
        return Outcome::Closed;
    }
    match c.try_recv(WAIT) {
        Ok(Some(Packet::ConnAck(ack))) if ack.reason_code == ReasonCode::SUCCESS => {
            c.connack = ack;
            Outcome::Connected(Box::new(c))
        }
        Ok(Some(Packet::ConnAck(ack))) => {
            // [MQTT-3.2.2-7] (3.1.1: [MQTT-3.2.2-5]) the server closes after a refusal.
            c.expect_closed(WAIT);
            Outcome::Refused(ack.reason_code)
        }
        Ok(Some(other)) => panic!("[{}] expected CONNACK, got {other:?}", c.name),
        Ok(None) => panic!(
            "[{}] neither CONNACK nor close within {WAIT:?}:\n{}",
            c.name,
            b.log()
        ),
        Err(RecvError::Closed) => Outcome::Closed,
        Err(e) => panic!("[{}] {e:?}", c.name),
    }
}

/// The refusal code a client of `version` must get when the broker is out of descriptors.
fn refusal_code(version: ProtocolVersion) -> ReasonCode {
    if version.is_v5() {
        ReasonCode::QUOTA_EXCEEDED
    } else {
        // 3.1.1 return code 0x03 (Server unavailable), which the codec reads as this v5 code.
        ReasonCode::SERVER_UNAVAILABLE
    }
}

/// Refusals seen, by how they came.
#[derive(Debug, Default)]
struct Refusals {
    v5_connack: usize,
    v3_connack: usize,
    closed: usize,
}

impl Refusals {
    /// Records a refusal of a `version` client; anything else than the expected code fails.
    fn record(&mut self, version: ProtocolVersion, outcome: &Outcome) {
        match outcome {
            Outcome::Refused(code) => {
                assert_eq!(*code, refusal_code(version), "refused with {code:?}");
                if version.is_v5() {
                    self.v5_connack += 1;
                } else {
                    self.v3_connack += 1;
                }
            }
            Outcome::Closed => self.closed += 1,
            Outcome::Connected(_) => {}
        }
    }
}

/// Connects v5 clients until one is refused: the descriptor table is full.
fn fill(b: &Broker, refusals: &mut Refusals) -> Vec<Client> {
    let mut held = Vec::new();
    for i in 0..FILL_ATTEMPTS_MAX {
        match attempt(b, Opts::v5(&format!("fill-{i}"))) {
            Outcome::Connected(c) => held.push(*c),
            refused => {
                refusals.record(ProtocolVersion::V5, &refused);
                return held;
            }
        }
    }
    panic!(
        "{FILL_ATTEMPTS_MAX} clients connected under ulimit -n {NOFILE}: the limit was not applied\n{}",
        b.log()
    );
}

/// New clients, v5 and 3.1.1 in turn, for [`REFUSING`]: each must be refused. A broker that
/// got a descriptor back meanwhile may accept one, which is then held like the others.
fn refuse_for_a_while(b: &Broker, held: &mut Vec<Client>, refusals: &mut Refusals) {
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < REFUSING || refusals.v5_connack == 0 || refusals.v3_connack == 0 {
        assert!(
            start.elapsed() < REFUSING + WAIT,
            "no CONNACK refusal of each version within {:?}: {refusals:?}\n{}",
            REFUSING + WAIT,
            b.log()
        );
        let opts = if i % 2 == 0 {
            Opts::v5(&format!("late-{i}"))
        } else {
            Opts::v3(&format!("late-{i}"))
        };
        let version = opts.connect.protocol;
        match attempt(b, opts) {
            Outcome::Connected(c) => held.push(*c),
            refused => refusals.record(version, &refused),
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The clients that got in are served: each is answered a PINGREQ, and a QoS 1 message goes
/// from one to another.
fn still_served(held: &mut [Client]) {
    for c in held.iter_mut() {
        c.ping();
    }
    let [subscriber, publisher, ..] = held else {
        panic!("fewer than two clients got in: {}", held.len());
    };
    subscriber.subscribe_ok("fd/roundtrip", QoS::AtLeastOnce);
    let ack = publisher.publish(msg("fd/roundtrip", "still served").qos(QoS::AtLeastOnce));
    assert_eq!(ack, Some(ReasonCode::SUCCESS));
    assert_eq!(text(&subscriber.expect_publish_acked()), "still served");
}

/// `GET /metrics`: the body.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, WAIT)
        .unwrap_or_else(|e| panic!("connect to the metrics endpoint {addr}: {e}"));
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{raw}");
    body.to_owned()
}

/// The value of the sample `series` (name and labels as exposed).
fn sample(body: &str, series: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no sample {series} in:\n{body}"))
}

fn out_of_descriptors(shards: usize) {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let b = Broker::start(
        BrokerOpts::new()
            .shards(shards)
            .nofile_limit(NOFILE)
            .config(&format!("[metrics]\nbind = \"{metrics}\"\n")),
    );
    let mut refusals = Refusals::default();
    let mut held = fill(&b, &mut refusals);
    refuse_for_a_while(&b, &mut held, &mut refusals);
    still_served(&mut held);

    let log = b.log();
    let accept_failed = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(
        (1..=ACCEPT_FAILED_LINES_MAX).contains(&accept_failed),
        "{accept_failed} \"accept failed\" lines (at most {ACCEPT_FAILED_LINES_MAX} expected, \
         and at least one):\n{log}"
    );

    // Clients leave; the broker accepts again by itself (closing is asynchronous: retried).
    for c in held.drain(..RELEASED) {
        c.disconnect();
    }
    let mut back = None;
    let recovered = wait_until(WAIT, || match attempt(&b, Opts::v5("back")) {
        Outcome::Connected(c) => {
            back = Some(*c);
            true
        }
        refused => {
            refusals.record(ProtocolVersion::V5, &refused);
            false
        }
    });
    assert!(
        recovered,
        "still refused {WAIT:?} after {RELEASED} clients left:\n{}",
        b.log()
    );
    back.unwrap().ping();

    let body = scrape(metrics);
    assert!(sample(&body, "ringmq_accept_errors_total") > 0, "{body}");
    let refused = sample(
        &body,
        "ringmq_connections_refused_total{reason=\"descriptors\"}",
    );
    // Counting: each refusal a client saw, with or without CONNACK, is one in the metric (no
    // other client connected meanwhile).
    let seen = refusals.v5_connack + refusals.v3_connack + refusals.closed;
    assert!(seen > 0);
    assert_eq!(
        refused, seen as u64,
        "ringmq_connections_refused_total{{reason=\"descriptors\"}} against what the clients \
         saw: {refusals:?}"
    );
    eprintln!(
        "{shards} shard(s): {} clients held, refusals {refusals:?}, counted {refused}, \
         {accept_failed} \"accept failed\" lines",
        held.len() + RELEASED
    );
}

/// Issue 12 ("Out of file descriptors"), one shard.
#[test]
fn one_shard_refuses_and_recovers_out_of_descriptors() {
    out_of_descriptors(1);
}

/// Issue 12 ("Out of file descriptors"), two shards: both listeners share the process's table.
#[test]
fn two_shards_refuse_and_recover_out_of_descriptors() {
    out_of_descriptors(2);
}
