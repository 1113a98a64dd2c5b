//! The metrics endpoint: a small HTTP/1.1 server for `/metrics`, `/health` and `/ready`. It
//! runs on std threads of its own, never a shard's, and only reads atomics.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::Metrics;

/// Liveness and readiness. `ready` is set once every shard listens; `draining` when a graceful
/// stop begins, so load balancers stop sending new clients before the listeners close.
#[derive(Debug, Default)]
pub struct Health {
    pub ready: AtomicBool,
    pub draining: AtomicBool,
}

impl Health {
    /// Ready for new clients: started and not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed) && !self.draining.load(Relaxed)
    }
}

/// Request line and headers larger than this are answered 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send its whole request head (not per read: a slow sender cannot
/// stretch it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests served at once; beyond it new connections get 503 at once. Keeps a few slow
/// clients from holding the scraper out while bounding threads.
pub const MAX_HTTP_WORKERS: usize = 4;

/// Binds `addr` and serves `/metrics`, `/health` and `/ready` on a std thread for the life of
/// the process. Bind errors are returned here, before any thread starts.
pub fn spawn_http(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> io::Result<JoinHandle<()>> {
    serve_http(TcpListener::bind(addr)?, metrics, health)
}

/// Serves on an already bound listener (tests bind port 0 and read the address first).
pub fn serve_http(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ringmq-metrics".into())
        .spawn(move || accept_loop(listener, metrics, health))
}

fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!("metrics endpoint: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if busy.fetch_add(1, Relaxed) >= MAX_HTTP_WORKERS {
            busy.fetch_sub(1, Relaxed);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = respond(&mut stream, 503, "text/plain", b"busy\n", &[]);
            continue;
        }
        let (metrics, health, worker_busy) = (metrics.clone(), health.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("ringmq-metrics-req".into())
            .spawn(move || {
                if let Err(e) = handle_connection(&mut stream, &metrics, &health) {
                    debug!("metrics endpoint: {e}");
                }
                worker_busy.fetch_sub(1, Relaxed);
            });
        if let Err(e) = spawned {
            busy.fetch_sub(1, Relaxed);
            warn!("metrics endpoint: cannot spawn a request thread: {e}");
        }
    }
}

/// What the request head said, or why it cannot be served.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Request { method: String, path: String },
    Malformed,
    TooLarge,
    TimedOut,
    Closed,
}

fn handle_connection(stream: &mut TcpStream, metrics: &Metrics, health: &Health) -> io::Result<()> {
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let (method, path) = match read_head(stream)? {
        Head::Request { method, path } => (method, path),
        Head::Malformed => return respond(stream, 400, "text/plain", b"bad request\n", &[]),
        Head::TooLarge => {
            return respond(
                stream,
                431,
                "text/plain",
                b"request header fields too large\n",
                &[],
            );
        }
        Head::TimedOut => return respond(stream, 408, "text/plain", b"request timeout\n", &[]),
        Head::Closed => return Ok(()),
    };
    if method != "GET" {
        return respond(
            stream,
            405,
            "text/plain",
            b"method not allowed\n",
            &[("Allow", "GET")],
        );
    }
    // The query string, if any, is ignored.
    let path = path.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            let mut body = String::with_capacity(16 * 1024);
            metrics.render_prometheus(&mut body);
            respond(
                stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
                &[],
            )
        }
        "/health" => respond(stream, 200, "text/plain", b"ok\n", &[]),
        "/ready" if health.is_ready() => respond(stream, 200, "text/plain", b"ready\n", &[]),
        "/ready" if health.draining.load(Relaxed) => {
            respond(stream, 503, "text/plain", b"draining\n", &[])
        }
        "/ready" => respond(stream, 503, "text/plain", b"starting\n", &[]),
        _ => respond(stream, 404, "text/plain", b"not found\n", &[]),
    }
}

/// Reads up to the blank line ending the head, within [`MAX_REQUEST_HEAD`] bytes and
/// [`REQUEST_TIMEOUT`] in all. A body, if any, is not read.
fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = vec![0u8; MAX_REQUEST_HEAD];
    let mut len = 0;
    loop {
        if let Some(end) = head_end(&buf[..len]) {
            return Ok(parse_head(&buf[..end]));
        }
        if len == buf.len() {
            return Ok(Head::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::TimedOut);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[len..]) {
            Ok(0) if len == 0 => return Ok(Head::Closed),
            Ok(0) => return Ok(Head::Malformed),
            Ok(n) => len += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Head::TimedOut);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// End of the head: after `\r\n\r\n` (or `\n\n`, which RFC 9112 lets a server accept).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_head(head: &[u8]) -> Head {
    let Ok(text) = std::str::from_utf8(head) else {
        return Head::Malformed;
    };
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Head::Malformed;
    };
    // Absolute form (`GET http://host/metrics`), which a server must accept (RFC 9112 3.2.2).
    let target = match target.split_once("://") {
        Some(("http" | "https", rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        _ => target,
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    if !token(method) || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Head::Malformed;
    }
    // Every header line must be `name: value` (an empty line ends the head).
    for line in lines.take_while(|l| !l.is_empty()) {
        match line.split_once(':') {
            Some((name, _)) if !name.is_empty() && !name.contains([' ', '\t']) => {}
            _ => return Head::Malformed,
        }
    }
    Head::Request {
        method: method.to_owned(),
        path: target.to_owned(),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_parsing() {
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Head::Request {
                method: "GET".into(),
                path: "/metrics?x=1".into()
            }
        );
        assert_eq!(parse_head(b"GET /metrics\r\n\r\n"), Head::Malformed);
        assert_eq!(
            parse_head(b"GET /metrics HTTP/2.0\r\n\r\n"),
            Head::Malformed
        );
        assert_eq!(
            parse_head(b"GET  /metrics HTTP/1.1\r\n\r\n"),
            Head::Malformed
        );
        assert_eq!(parse_head(b"GET metrics HTTP/1.1\r\n\r\n"), Head::Malformed);
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            Head::Malformed
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }
}
