//! Where clients connect to and from: the targets (`-h host1,host2`, `--target URL`, with a
//! transport each: `mqtt://`, `mqtts://`, `ws://`, `wss://`) and the source addresses
//! (`--ifaddr 127.0.0.2,127.0.0.3`), and the TCP connect that binds a source address first.
//!
//! What it is for: one machine opening more connections than one source address allows
//! (about 28 000 ephemeral ports towards one destination), and spreading clients over several
//! listeners or brokers, as emqtt-bench's `--ifaddr` and host lists do.
//!
//! What it must never do: pick a route per message. Routes are chosen once per client when it
//! connects ([`Routes::target_for`], [`Routes::source_for`]): round-robin, deterministic.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use monoio::net::TcpStream;

/// How bytes travel to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// MQTT over TCP (`mqtt://`, or a bare `host`).
    Mqtt,
    /// MQTT over WebSocket (`ws://host:port/path`): subprotocol `mqtt`, binary frames.
    Ws,
}

/// One place clients connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// The host as written: the WebSocket `Host` header and the default TLS server name.
    pub host: String,
    pub transport: Transport,
    /// `mqtts://` or `wss://` (or `--ssl` for every target).
    pub tls: bool,
    /// WebSocket request path (default `/mqtt`).
    pub path: String,
    /// TLS targets: the name sent as SNI and verified (`--sni`, else this target's host); set
    /// by [`Target::set_server_name`].
    pub server_name: Option<rustls_pki_types::ServerName<'static>>,
}

/// The WebSocket path when a `ws://` URL names none (ringmq's and EMQX's default).
pub const DEFAULT_WS_PATH: &str = "/mqtt";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("target {target:?}: unknown scheme {scheme:?} (mqtt, mqtts, ws or wss)")]
    Scheme { target: String, scheme: String },
    #[error("target {target:?}: bad port {port:?}")]
    Port { target: String, port: String },
    #[error("target {target:?}: a path only makes sense for ws:// and wss://")]
    PathWithoutWs { target: String },
    #[error("cannot resolve {host}:{port}: {reason}")]
    Resolve {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("--ifaddr {0:?} is not an IP address")]
    BadSource(String),
    #[error("--ifaddr {source_addr} and target {target} are not of the same IP family")]
    Family {
        source_addr: IpAddr,
        target: SocketAddr,
    },
    #[error("no target given")]
    NoTarget,
}

impl Target {
    /// Parses `host`, `host:port`, `[v6]:port` or `scheme://host[:port][/path]`;
    /// `default_port` applies when no port is written. `ssl` (`--ssl`) turns every target into
    /// its TLS form.
    pub fn parse(text: &str, default_port: u16, ssl: bool) -> Result<Target, TargetError> {
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, text),
        };
        let (transport, tls) = match scheme.as_deref() {
            None | Some("mqtt") | Some("tcp") => (Transport::Mqtt, false),
            Some("mqtts") | Some("ssl") => (Transport::Mqtt, true),
            Some("ws") => (Transport::Ws, false),
            Some("wss") => (Transport::Ws, true),
            Some(other) => {
                return Err(TargetError::Scheme {
                    target: text.to_string(),
                    scheme: other.to_string(),
                });
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        if !path.is_empty() && transport != Transport::Ws {
            return Err(TargetError::PathWithoutWs {
                target: text.to_string(),
            });
        }
        let (host, port) = split_host_port(authority);
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| TargetError::Port {
                target: text.to_string(),
                port: p.to_string(),
            })?,
            None => default_port,
        };
        let addr = resolve(host, port)?;
        Ok(Target {
            addr,
            host: host.to_string(),
            transport,
            tls: tls || ssl,
            path: if path.is_empty() {
                DEFAULT_WS_PATH.to_string()
            } else {
                path.to_string()
            },
            server_name: None,
        })
    }

    /// For a TLS target: the server name to send and verify, `sni` (`--sni`) or this
    /// target's host. An invalid name is an error naming it.
    pub fn set_server_name(&mut self, sni: Option<&str>) -> Result<(), crate::tls::TlsError> {
        if !self.tls {
            return Ok(());
        }
        let name = sni.unwrap_or(&self.host).to_string();
        let parsed = rustls_pki_types::ServerName::try_from(name.clone()).map_err(|e| {
            crate::tls::TlsError::ServerName {
                name,
                reason: e.to_string(),
            }
        })?;
        self.server_name = Some(parsed);
        Ok(())
    }

    /// `mqtt://127.0.0.1:1883`, `wss://localhost:8443/mqtt`: how reports name it.
    pub fn url(&self) -> String {
        let scheme = match (self.transport, self.tls) {
            (Transport::Mqtt, false) => "mqtt",
            (Transport::Mqtt, true) => "mqtts",
            (Transport::Ws, false) => "ws",
            (Transport::Ws, true) => "wss",
        };
        let path = match self.transport {
            Transport::Ws => self.path.as_str(),
            Transport::Mqtt => "",
        };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// `host:port` for the WebSocket `Host` header.
    pub fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.addr.port())
        } else {
            format!("{}:{}", self.host, self.addr.port())
        }
    }
}

/// `host:port` → (`host`, `Some(port)`); `[::1]:port` → (`::1`, port); a bare host or IPv6
/// address → (host, None).
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => (authority, None),
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, TargetError> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address".to_string()))
        .map_err(|reason| TargetError::Resolve {
            host: host.to_string(),
            port,
            reason,
        })
}

/// Parses `--ifaddr a,b,c` (each entry may itself hold several addresses, comma-separated).
pub fn parse_sources(entries: &[String]) -> Result<Vec<IpAddr>, TargetError> {
    entries
        .iter()
        .flat_map(|e| e.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| TargetError::BadSource(s.to_string()))
        })
        .collect()
}

/// The targets and source addresses of a run, and which client uses which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    targets: Vec<Target>,
    sources: Vec<IpAddr>,
}

impl Routes {
    /// At least one target; every source address must be of the family of every target (a
    /// socket bound to an IPv4 address cannot reach an IPv6 one).
    pub fn new(targets: Vec<Target>, sources: Vec<IpAddr>) -> Result<Routes, TargetError> {
        if targets.is_empty() {
            return Err(TargetError::NoTarget);
        }
        for source in &sources {
            if let Some(t) = targets
                .iter()
                .find(|t| t.addr.is_ipv4() != source.is_ipv4())
            {
                return Err(TargetError::Family {
                    source_addr: *source,
                    target: t.addr,
                });
            }
        }
        Ok(Routes { targets, sources })
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn targets_mut(&mut self) -> &mut [Target] {
        &mut self.targets
    }

    pub fn sources(&self) -> &[IpAddr] {
        &self.sources
    }

    /// The first target (the probe's, the report's headline).
    pub fn first(&self) -> &Target {
        // `new` refuses an empty list.
        &self.targets[0]
    }

    /// Client `index` of its role (pair `i` of p2p: both its subscriber and its publisher, so
    /// a pair stays on one broker) connects to target `index mod targets`.
    pub fn target_for(&self, index: u32) -> &Target {
        &self.targets[index as usize % self.targets.len()]
    }

    /// Connection number `connection` (unique in the run) binds source `connection mod
    /// sources`, so every source address carries the same share of the connections; `None`
    /// without `--ifaddr` (the kernel picks).
    pub fn source_for(&self, connection: u32) -> Option<IpAddr> {
        if self.sources.is_empty() {
            None
        } else {
            Some(self.sources[connection as usize % self.sources.len()])
        }
    }

    /// Whether any target is reached over TLS.
    pub fn any_tls(&self) -> bool {
        self.targets.iter().any(|t| t.tls)
    }

    /// Whether any target is a WebSocket one.
    pub fn any_ws(&self) -> bool {
        self.targets.iter().any(|t| t.transport == Transport::Ws)
    }

    /// The targets as a report names them: `host:port` for one plain MQTT target (as
    /// before targets had schemes), else the URLs, comma-separated.
    pub fn describe(&self) -> String {
        if let [one] = &self.targets[..]
            && one.transport == Transport::Mqtt
            && !one.tls
        {
            return one.addr.to_string();
        }
        let urls: Vec<String> = self.targets.iter().map(Target::url).collect();
        urls.join(",")
    }
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2+; socket2 has no setter for it): without it,
/// bind(ip, 0) reserves a port for every destination. Best effort: a kernel without the option
/// still binds, with fewer ports.
fn bind_address_no_port(socket: &socket2::Socket) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&one`, a live c_int; the
    // descriptor is the open socket `socket` borrows.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            core::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A socket for `target`, bound to `source`, with its non-blocking connect started. The
/// kernel picks the port at connect time (`IP_BIND_ADDRESS_NO_PORT`), so one source address
/// can reuse a port towards different targets.
fn bound_socket(source: IpAddr, target: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    bind_address_no_port(&socket);
    socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    match socket.connect(&SockAddr::from(target)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket)
}

/// Opens a TCP connection to `target`, from `source` when given (bind before connect).
///
/// monoio's own connect cannot bind first, so a bound socket's connect is started
/// non-blocking, handed to the runtime, and awaited as write readiness; its outcome is then
/// read from `SO_ERROR`. On io_uring monoio expects blocking sockets (its reads would
/// otherwise complete with EAGAIN), so the socket is made blocking again once connected.
pub async fn connect_tcp(source: Option<IpAddr>, target: SocketAddr) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect_addr(target).await;
    };
    let socket = bound_socket(source, target)?;
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    stream.writable(false).await?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    // SAFETY: `fd` is the socket `stream` owns and keeps open for the whole borrow; the
    // ManuallyDrop wrapper never closes it.
    let sock = core::mem::ManuallyDrop::new(unsafe {
        <socket2::Socket as std::os::fd::FromRawFd>::from_raw_fd(fd)
    });
    if let Some(err) = sock.take_error()? {
        return Err(err);
    }
    if !monoio::utils::is_legacy() {
        sock.set_nonblocking(false)?;
    }
    Ok(stream)
}

/// The blocking clients' connect (flood, probe): bind to `source` when given, then connect
/// within `timeout`.
pub fn connect_blocking(
    source: Option<IpAddr>,
    target: SocketAddr,
    timeout: std::time::Duration,
) -> io::Result<std::net::TcpStream> {
    let Some(source) = source else {
        return std::net::TcpStream::connect_timeout(&target, timeout);
    };
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    bind_address_no_port(&socket);
    socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    socket.connect_timeout(&SockAddr::from(target), timeout)?;
    Ok(socket.into())
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    fn target(text: &str) -> Target {
        Target::parse(text, 1883, false).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn target_forms() {
        let t = target("127.0.0.1");
        assert_eq!(
            t.addr,
            "127.0.0.1:1883".parse().unwrap_or_else(|e| panic!("{e}"))
        );
        assert_eq!((t.transport, t.tls), (Transport::Mqtt, false));
        assert_eq!(target("127.0.0.1:1999").addr.port(), 1999);
        assert_eq!(
            target("mqtts://127.0.0.1:8883").url(),
            "mqtts://127.0.0.1:8883"
        );
        let ws = target("ws://localhost:8080");
        assert_eq!((ws.transport, ws.tls), (Transport::Ws, false));
        assert_eq!(ws.path, "/mqtt");
        assert_eq!(ws.host_header(), "localhost:8080");
        let wss = target("WSS://127.0.0.1:8443/custom/path?x=1");
        assert_eq!((wss.transport, wss.tls), (Transport::Ws, true));
        assert_eq!(wss.path, "/custom/path?x=1");
        assert_eq!(wss.url(), "wss://127.0.0.1:8443/custom/path?x=1");
        let v6 = target("[::1]:1884");
        assert_eq!(v6.addr.port(), 1884);
        assert_eq!(v6.host, "::1");
        assert_eq!(target("::1").addr.port(), 1883);
        // --ssl turns every target into its TLS form.
        let t = Target::parse("ws://127.0.0.1:80", 1, true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.url(), "wss://127.0.0.1:80/mqtt");
    }

    #[test]
    fn target_errors() {
        for (text, want) in [
            ("http://127.0.0.1", "unknown scheme"),
            ("127.0.0.1:99999", "bad port"),
            ("mqtt://127.0.0.1:1/path", "only makes sense for ws"),
            ("no-such-host.invalid:1", "cannot resolve"),
        ] {
            match Target::parse(text, 1883, false) {
                Ok(t) => panic!("{text} should be refused, got {t:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{text}: {e}"),
            }
        }
    }

    #[test]
    fn sources_parse_from_lists_and_repeats() {
        let s = parse_sources(&["127.0.0.2,127.0.0.3".into(), " 127.0.0.4 ".into()])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.len(), 3);
        assert_eq!(s[2], IpAddr::from([127, 0, 0, 4]));
        assert!(matches!(
            parse_sources(&["127.0.0.2,nope".into()]),
            Err(TargetError::BadSource(s)) if s == "nope"
        ));
    }

    #[test]
    fn round_robin_over_targets_and_sources() {
        let routes = Routes::new(
            vec![
                target("127.0.0.1:1"),
                target("127.0.0.1:2"),
                target("127.0.0.1:3"),
            ],
            parse_sources(&["127.0.0.2,127.0.0.3".into()]).unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let ports: Vec<u16> = (0..7).map(|i| routes.target_for(i).addr.port()).collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3, 1]);
        let sources: Vec<IpAddr> = (0..5).filter_map(|i| routes.source_for(i)).collect();
        assert_eq!(
            sources,
            [
                [127, 0, 0, 2],
                [127, 0, 0, 3],
                [127, 0, 0, 2],
                [127, 0, 0, 3],
                [127, 0, 0, 2]
            ]
            .map(IpAddr::from)
        );
        assert_eq!(
            routes.describe(),
            "mqtt://127.0.0.1:1,mqtt://127.0.0.1:2,mqtt://127.0.0.1:3"
        );
        let alone =
            Routes::new(vec![target("127.0.0.1")], vec![]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(alone.source_for(5), None);
        assert_eq!(alone.target_for(5).addr.port(), 1883);
        assert_eq!(alone.describe(), "127.0.0.1:1883");
    }

    #[test]
    fn families_must_match_and_a_target_is_required() {
        assert!(matches!(
            Routes::new(vec![], vec![]),
            Err(TargetError::NoTarget)
        ));
        assert!(matches!(
            Routes::new(
                vec![target("127.0.0.1")],
                vec!["::1".parse().unwrap_or(IpAddr::from([0; 16]))]
            ),
            Err(TargetError::Family { .. })
        ));
    }

    /// Bind before connect: the accepting side sees the chosen source address.
    #[test]
    fn blocking_connect_binds_the_source() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let source = IpAddr::from([127, 0, 0, 3]);
        let _client = connect_blocking(Some(source), addr, std::time::Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"));
        let (_server, peer) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(peer.ip(), source);
    }

    /// The same through monoio, on both drivers (io_uring wants the socket blocking again).
    #[test]
    fn monoio_connect_binds_the_source() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let echo = std::thread::spawn(move || {
            let mut peers = Vec::new();
            for _ in 0..2 {
                let (mut s, peer) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
                let mut b = [0u8; 4];
                std::io::Read::read_exact(&mut s, &mut b).unwrap_or_else(|e| panic!("{e}"));
                std::io::Write::write_all(&mut s, &b).unwrap_or_else(|e| panic!("{e}"));
                peers.push(peer.ip());
            }
            peers
        });
        let exchange = |source: IpAddr| async move {
            use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
            let mut s = connect_tcp(Some(source), addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let (r, _) = s.write_all(b"ping".to_vec()).await;
            r.unwrap_or_else(|e| panic!("{e}"));
            let (r, back) = s.read_exact(vec![0u8; 4]).await;
            r.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, b"ping");
        };
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(exchange(IpAddr::from([127, 0, 0, 2])));
        if monoio::utils::detect_uring() {
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .enable_timer()
                .build()
                .unwrap_or_else(|e| panic!("{e}"))
                .block_on(exchange(IpAddr::from([127, 0, 0, 3])));
        } else {
            // No io_uring here: the second exchange on the epoll driver too.
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .unwrap_or_else(|e| panic!("{e}"))
                .block_on(exchange(IpAddr::from([127, 0, 0, 3])));
        }
        let peers = echo.join().unwrap_or_else(|_| panic!("echo thread"));
        assert_eq!(peers, [[127, 0, 0, 2], [127, 0, 0, 3]].map(IpAddr::from));
    }
}
