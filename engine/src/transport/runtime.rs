//! The I/O around the sans-IO core: shard threads, each a monoio runtime pinned to a core,
//! with its own SO_REUSEPORT listener per configured address, a task per plain connection
//! (`plain_pump`) and a reader and a writer task per TLS or WebSocket connection
//! (`layer_pump`), an inbox task for the mesh, and a tick task for timers.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::net::{ListenerOpts, TcpListener};
use tracing::{debug, error, info, warn};

use crate::config::{Config, Driver, ListenerProtocol};
use crate::ids::ConnId;
use crate::ops::metrics::{Health, Metrics, ShardHandle};
use crate::ops::stall::{PulseHandle, Pulses};
use crate::proto::{Handled, Input, ShardCore};
use crate::shard::mesh::Mesh;
use crate::transport::accept::AcceptGuard;
use crate::transport::host::Host;
use crate::transport::layer::{Bare, Tls};
use crate::transport::layer_pump;
use crate::transport::plain_pump::connection;
use crate::transport::proxy::{ProxyListener, spawn_after_header};
use crate::transport::tls::ListenerTls;
use crate::transport::turn::{TurnGate, next_turn};
use crate::transport::ws::{WsConfig, WsServer};

pub(crate) type Core = Rc<RefCell<Host>>;

/// Read buffer size of a TLS or WebSocket connection (grows to fit a large packet); plain
/// connections read into the shard's arena instead (`plain_pump`).
pub(crate) const READ_CHUNK: usize = 512;
/// Mesh messages handled per loop turn before yielding to connections.
const MESH_BATCH: usize = 1024;
const TICK: Duration = Duration::from_millis(250);
/// How often a full destination inbox is retried.
const MESH_RETRY: Duration = Duration::from_millis(1);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("shard {shard}: cannot listen on {addr}: {source}")]
    Bind {
        shard: usize,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("shard {shard}: cannot start the {driver:?} runtime: {source}")]
    Runtime {
        shard: usize,
        driver: Driver,
        source: std::io::Error,
    },
    #[error("cannot spawn shard thread: {0}")]
    Thread(std::io::Error),
    #[error("{0}")]
    Registry(crate::ops::reload::LoadError),
    #[error("TLS listener: {0}")]
    Tls(crate::transport::tls::TlsError),
    #[error("{0}")]
    AuthPool(crate::authpool::PoolError),
    #[error("shard {0} stopped during startup")]
    Lost(usize),
    #[error("{0}")]
    Storage(String),
    #[error("metrics.bind {addr}: cannot listen: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// A running server: its shard threads.
#[derive(Debug)]
pub struct Server {
    /// Shard threads are not joined: a runtime torn down with operations still queued in
    /// io_uring (a listener's accept) can wait for them forever. Each shard reports here when
    /// its shutdown has finished instead.
    stopped: mpsc::Receiver<usize>,
    shutdown: Shutdown,
    shutdown_timeout: Duration,
    pub shards: usize,
    pub driver: Driver,
    /// Every shard's counters and gauges (also served by the HTTP endpoint, if configured).
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Each shard's pulse, for the systemd watchdog ([`Server::notify_ready`]).
    pulses: Pulses,
    /// The `STATUS=` line sent with `READY=1`.
    ready_status: String,
}

impl Server {
    /// Starts every shard and returns once all are listening (or the first failure).
    pub fn start(config: Config) -> Result<Server, StartError> {
        let shards = config.server.shard_count();
        // First: a fallback to epoll is the first log line (transport/probe.rs).
        let driver = crate::transport::probe::choose_driver(config.server.driver);
        // Shards bind with SO_REUSEPORT, which would let a second ringmq (or anything else
        // with SO_REUSEPORT) share a port silently and take half its connections. A bind
        // without it first fails while anyone listens there. Bind only, never listen: a
        // listening socket here would take connections in its backlog and reset them.
        for l in &config.listeners {
            if l.bind.port() != 0
                && let Err(source) = bind_only_settled(l.bind)
            {
                return Err(StartError::Bind {
                    shard: 0,
                    addr: l.bind,
                    source,
                });
            }
        }
        let metrics = Arc::new(Metrics::for_config(shards, &config.listeners));
        let health = Arc::new(Health::default());
        // Bound before anything else starts, so a taken address stops startup cleanly.
        if let Some(addr) = config.metrics.bind {
            crate::ops::metrics::spawn_http(addr, metrics.clone(), health.clone())
                .map_err(|source| StartError::Metrics { addr, source })?;
            info!(%addr, "metrics endpoint listening (/metrics, /health, /ready)");
        }
        let loaded =
            crate::ops::reload::load_snapshot(&config, 1, None).map_err(StartError::Registry)?;
        let auth = ringmq_auth::SharedSnapshot::new(loaded.snapshot);
        let auth_pool = crate::authpool::AuthPool::start(&config, shards, auth.clone())
            .map_err(StartError::AuthPool)?;
        if let Some(pool) = &auth_pool {
            let _ = metrics.auth_pool.set(Arc::new(pool.clone()));
        }
        // One TLS configuration per listener, shared by the shards and swapped by reloads.
        let mut tls = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            tls.push(match (l.protocol.is_tls(), &l.cert, &l.key) {
                (true, Some(cert), Some(key)) => Some(Arc::new(
                    ListenerTls::load(cert, key, l.client_certificate).map_err(StartError::Tls)?,
                )),
                (true, _, _) => {
                    return Err(StartError::Tls(crate::transport::tls::TlsError::Missing {
                        bind: l.bind,
                    }));
                }
                (false, _, _) => None,
            });
        }
        let reloadable = config
            .listeners
            .iter()
            .zip(&tls)
            .filter_map(|(l, t)| t.clone().map(|t| (l.bind, t)))
            .collect();
        crate::ops::reload::spawn_reloader(
            config.clone(),
            auth.clone(),
            loaded.fetcher,
            reloadable,
            metrics.clone(),
        )
        .map_err(StartError::Thread)?;
        // The store is opened (directory, lock, shard count) before any shard starts; each
        // shard recovers its log before its listeners open (`transport/storage.rs`).
        let (exchange, mut shard_storage) =
            match crate::transport::storage::open(&config, shards, driver, &metrics)? {
                Some((x, per_shard)) => (Some(x), per_shard.into_iter().map(Some).collect()),
                None => (None, Vec::new()),
            };
        let mesh = Mesh::new(shards, config.limits.shard_queue_capacity);
        let pulses = Pulses::new(shards);
        let shutdown = Shutdown(health.clone());
        let (stopped_tx, stopped_rx) = mpsc::channel();
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        // One startup channel per shard: a shard that ends without reporting (a panic) drops
        // its sender, and the disconnected channel names it.
        let mut ready = Vec::with_capacity(shards);
        let mut threads = Vec::with_capacity(shards);
        for shard in 0..shards {
            let (ready_tx, ready_rx) = mpsc::channel();
            ready.push(ready_rx);
            let setup = ShardSetup {
                shard,
                config: config.clone(),
                mesh: mesh.clone(),
                auth: auth.clone(),
                auth_pool: auth_pool.clone(),
                tls: tls.clone(),
                metrics: ShardHandle::new(metrics.clone(), shard),
                pulse: pulses.handle(shard),
                shutdown: shutdown.clone(),
                ready: ready_tx,
                stopped: stopped_tx.clone(),
                storage: shard_storage.get_mut(shard).and_then(Option::take),
            };
            let core_id = if config.server.pin_cores && !cores.is_empty() {
                cores.get(shard % cores.len()).copied()
            } else {
                None
            };
            let handle = std::thread::Builder::new()
                .name(format!("ringmq-shard-{shard}"))
                .spawn(move || {
                    if let Some(id) = core_id {
                        core_affinity::set_for_current(id);
                    }
                    run_shard(setup, driver);
                })
                .map_err(StartError::Thread)?;
            threads.push(handle);
        }
        if let Some(exchange) = exchange {
            exchange.coordinate()?;
        }
        for (shard, ready_rx) in ready.iter().enumerate() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(StartError::Lost(shard)),
            }
        }
        let watchdog_pulses = pulses.clone();
        if config.server.stall_threshold_ms > 0 {
            let threshold = Duration::from_millis(u64::from(config.server.stall_threshold_ms));
            let stop = shutdown.clone();
            crate::ops::stall::spawn_watchdog(
                pulses,
                mesh.clone(),
                metrics.clone(),
                threshold,
                stop,
            )
            .map_err(StartError::Thread)?;
        }
        info!(shards, ?driver, listeners = ?config.listeners.iter().map(|l| l.bind).collect::<Vec<_>>(), "ringmq listening");
        health
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        drop(threads);
        Ok(Server {
            stopped: stopped_rx,
            shutdown,
            shutdown_timeout: Duration::from_secs(u64::from(config.limits.shutdown_timeout_secs)),
            shards,
            driver,
            metrics,
            health,
            pulses: watchdog_pulses,
            ready_status: format!(
                "serving {} listener(s) on {shards} shard(s), {driver:?} driver",
                config.listeners.len()
            ),
        })
    }

    /// systemd (`Type=notify`): sends `READY=1` and starts the watchdog pings (when
    /// `WATCHDOG_USEC` asks for them). Every listener is bound once `start` returns, and work
    /// that must finish before clients are served (storage recovery) belongs in `start`.
    /// Call it once the stop signals are handled, so that a SIGTERM right after `READY=1`
    /// drains instead of killing the process.
    pub fn notify_ready(&self) -> std::io::Result<()> {
        crate::ops::notify::ready(&self.ready_status);
        crate::ops::notify::spawn_watchdog(self.pulses.clone(), self.shutdown.clone())
    }

    /// Blocks until every shard thread ends.
    /// Blocks until every shard has finished a graceful shutdown (bounded by the shutdown
    /// timeout once a shutdown began), or a shard thread died.
    pub fn join(self) {
        let mut remaining = self.shards;
        let mut deadline: Option<Instant> = None;
        while remaining > 0 {
            if deadline.is_none() && self.shutdown.requested() {
                deadline = Some(Instant::now() + self.shutdown_timeout + Duration::from_secs(2));
            }
            let wait = match deadline {
                Some(at) => at.saturating_duration_since(Instant::now()),
                None => Duration::from_millis(200),
            };
            match self.stopped.recv_timeout(wait) {
                Ok(_) => remaining -= 1,
                Err(mpsc::RecvTimeoutError::Timeout)
                    if deadline.is_some_and(|at| Instant::now() >= at) =>
                {
                    warn!(remaining, "shards did not stop within the shutdown timeout");
                    return;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    error!("a shard thread ended unexpectedly");
                    return;
                }
            }
        }
    }

    /// Starts a graceful shutdown: shards stop accepting, send DISCONNECT 0x8B (Server
    /// shutting down) to v5 clients, flush, and stop within `limits.shutdown_timeout_secs`.
    pub fn shutdown(&self) {
        self.shutdown.begin();
    }

    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }
}

/// How long [`bind_only_settled`] waits for a dead process's listeners to go.
const BIND_SETTLE: Duration = Duration::from_secs(1);

/// [`bind_only`], retried for up to [`BIND_SETTLE`] while the address is in use. The listening
/// sockets of a process killed a moment ago (kill -9, a crash) outlive it by some milliseconds
/// because io_uring releases a dead process's files asynchronously, after its parent's `wait`
/// has returned: an immediate restart (a supervisor, a script) was refused "address in use".
/// A live listener there still fails the check, one second later.
fn bind_only_settled(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let deadline = Instant::now() + BIND_SETTLE;
    // Bounded by the deadline.
    loop {
        match bind_only(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// Binds (SO_REUSEADDR, no SO_REUSEPORT) and closes a socket on `addr`, without listening:
/// fails with "address in use" while another socket listens there.
fn bind_only(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

/// Whether the heap may use transparent huge pages (`server.transparent_huge_pages`).
///
/// mimalloc asks for them (madvise) on its arenas: the resident size then grows in 2 MiB
/// steps, each touched huge page counted whole. With 10 000 idle connections on two shards
/// that was ~1.3x what is allocated, plus ~12 MiB at startup (docs/benchmarks.md). Applies to
/// memory touched from the call on, so `main` turns them off first and back on if configured.
pub fn set_transparent_huge_pages(enabled: bool) {
    if let Err(e) = crate::transport::sys::set_transparent_huge_pages(enabled) {
        // Old kernels without PR_SET_THP_DISABLE: the kernel's default stays.
        debug!("cannot set transparent huge pages to {enabled}: {e}");
    }
}

/// Shared by the shards: set once when the server is asked to stop. It is the health's
/// `draining` flag, so `/ready` answers 503 from the moment a graceful stop begins.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<Health>);

impl Shutdown {
    pub fn begin(&self) {
        let was = self
            .0
            .draining
            .swap(true, std::sync::atomic::Ordering::AcqRel);
        if !was {
            crate::ops::notify::stopping();
        }
    }

    pub fn requested(&self) -> bool {
        self.0.draining.load(std::sync::atomic::Ordering::Acquire)
    }
}

type Ready = mpsc::Sender<Result<(), StartError>>;

/// What a shard thread starts with.
struct ShardSetup {
    shard: usize,
    config: Config,
    mesh: Mesh,
    auth: ringmq_auth::SharedSnapshot,
    /// Runs password checks and webhook calls off the shard threads (`authpool.rs`).
    auth_pool: Option<crate::authpool::AuthPool>,
    /// Per listener (same order as `config.listeners`): its TLS configuration, if TLS.
    tls: Vec<Option<Arc<ListenerTls>>>,
    metrics: ShardHandle,
    /// This shard's pulse, watched by the stall detector.
    pulse: PulseHandle,
    shutdown: Shutdown,
    ready: Ready,
    stopped: mpsc::Sender<usize>,
    /// The shard's log, when `[storage] dir` is set.
    storage: Option<crate::transport::storage::ShardStorage>,
}

fn run_shard(setup: ShardSetup, driver: Driver) {
    let (shard, ready) = (setup.shard, setup.ready.clone());
    let result = match driver {
        Driver::Legacy => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(shard_main(setup))),
        _ => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(crate::transport::probe::RING_ENTRIES)
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(shard_main(setup))),
    };
    if let Err(source) = result {
        let _ = ready.send(Err(StartError::Runtime {
            shard,
            driver,
            source,
        }));
    }
}

async fn shard_main(setup: ShardSetup) {
    let ShardSetup {
        shard,
        config,
        mesh,
        auth,
        auth_pool,
        tls,
        metrics,
        pulse,
        shutdown,
        ready,
        stopped,
        storage,
    } = setup;
    let shard_metrics = metrics.clone();
    let mut core = ShardCore::with_metrics(
        shard,
        Some(mesh.clone()),
        config.limits.clone(),
        auth,
        metrics,
    );
    // Recovered and restored before the listeners open.
    let log = match storage {
        Some(s) => match s.recover(shard, &mut core).await {
            Ok(log) => Some(log),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        },
        None => None,
    };
    let mut listeners = Vec::new();
    for (l, tls) in config.listeners.iter().zip(tls) {
        let ws = || {
            Arc::new(crate::transport::ws::WsConfig {
                path: l.path.clone(),
                max_frame_size: (config.limits.max_packet_size as usize)
                    .max(crate::transport::ws::WsConfig::DEFAULT_MAX_FRAME_SIZE),
                max_handshake_size: crate::transport::ws::WsConfig::DEFAULT_MAX_HANDSHAKE_SIZE,
            })
        };
        // `Server::start` loaded a TLS configuration for every TLS listener.
        let transport = match (l.protocol, tls) {
            (ListenerProtocol::Wss, Some(tls)) => Transport::Wss(tls, ws()),
            (ListenerProtocol::Ws, _) => Transport::Ws(ws()),
            (_, Some(tls)) => Transport::Tls(tls),
            (_, None) => Transport::Plain,
        };
        let opts = ListenerOpts::new()
            .reuse_port(true)
            .reuse_addr(true)
            .backlog(4096);
        let proxy = l.proxy_protocol.then(|| {
            let timeout = Duration::from_secs(u64::from(config.limits.connect_timeout_secs.max(1)));
            ProxyListener::new(l.bind.to_string(), timeout)
        });
        match TcpListener::bind_with_config(l.bind, &opts) {
            Ok(listener) => listeners.push((listener, transport, proxy)),
            Err(source) => {
                let _ = ready.send(Err(StartError::Bind {
                    shard,
                    addr: l.bind,
                    source,
                }));
                return;
            }
        }
    }
    if shard == 0 && config.metrics.sys_interval_secs > 0 {
        core.publish_sys_every(Duration::from_secs(u64::from(
            config.metrics.sys_interval_secs,
        )));
    }
    if let Some(pool) = &auth_pool {
        core.set_external_auth(pool.external_config());
    }
    let mut host = Host::new(core);
    if let Some(pool) = &auth_pool {
        host.set_auth_pool(shard, pool.clone());
    }
    let core: Core = Rc::new(RefCell::new(host));
    if let Some(pool) = auth_pool {
        monoio::spawn(auth_result_loop(shard, pool, core.clone()));
    }
    let log = log.map(|recovered| {
        let persist = crate::transport::storage::Persist::new(recovered.log, recovered.drained);
        let log = persist.log();
        core.borrow_mut().set_persist(persist);
        monoio::spawn(crate::transport::storage::flusher(
            core.clone(),
            log.clone(),
        ));
        log
    });
    let gate = match TurnGate::install(pulse.clone()) {
        Ok(gate) => gate,
        Err(source) => {
            let _ = ready.send(Err(StartError::Runtime {
                shard,
                driver: config.server.driver,
                source,
            }));
            return;
        }
    };
    monoio::spawn(gate.run());
    for (number, (listener, transport, proxy)) in listeners.into_iter().enumerate() {
        let metrics = shard_metrics.clone();
        monoio::spawn(accept_loop(
            listener,
            number,
            core.clone(),
            transport,
            metrics,
            proxy,
        ));
    }
    monoio::spawn(tick_loop(core.clone(), mesh.clone(), shutdown, pulse));
    monoio::spawn(mesh_retry_loop(core.clone()));
    let _ = ready.send(Ok(()));
    drop(ready);
    // The inbox is served by a task of its own, not by this (the runtime's main) future:
    // monoio polls its main future again at once whenever it wakes itself, without a driver
    // turn in between, so a main future that yields between batches of a never-empty inbox
    // would starve every connection of the shard.
    monoio::spawn(inbox_loop(shard, mesh, core.clone())).await;
    if let Some(log) = &log {
        // A graceful stop keeps everything: the last records are on disk before the shard
        // reports it has stopped.
        crate::transport::storage::flush_all(&core, log).await;
    }
    debug!(shard, "shard stopped");
    // Reported before the runtime is torn down (see `Server::stopped`).
    let _ = stopped.send(shard);
}

async fn inbox_loop(shard: usize, mesh: Mesh, core: Core) {
    loop {
        // Wakes for messages, and (woken by the tick loop) when a shutdown has finished.
        std::future::poll_fn(|cx| {
            if core.borrow().shutdown_complete(Instant::now()) {
                return Poll::Ready(());
            }
            mesh.poll_readable(shard, cx)
        })
        .await;
        {
            let mut c = core.borrow_mut();
            let _ = c.handle(Input::Inbox { max: MESH_BATCH });
            if c.shutdown_complete(Instant::now()) {
                return;
            }
        }
        // Let connection tasks, the driver and timers run between batches.
        next_turn().await;
    }
}

/// Hands the pool's answers to the core as they come (woken by the pool's workers).
async fn auth_result_loop(shard: usize, pool: crate::authpool::AuthPool, core: Core) {
    loop {
        let (ticket, outcome) = std::future::poll_fn(|cx| pool.poll_result(shard, cx)).await;
        {
            let mut c = core.borrow_mut();
            let _ = c.handle(Input::AuthResult { ticket, outcome });
            // The others that came meanwhile, in one go (bounded by what the pool decided).
            for _ in 0..MESH_BATCH {
                let Some((ticket, outcome)) = pool.try_result(shard) else {
                    break;
                };
                let _ = c.handle(Input::AuthResult { ticket, outcome });
            }
        }
        next_turn().await;
    }
}

async fn tick_loop(core: Core, mesh: Mesh, shutdown: Shutdown, pulse: PulseHandle) {
    loop {
        monoio::time::sleep(TICK).await;
        pulse.progressed();
        let mut c = core.borrow_mut();
        let _ = c.handle(Input::Tick);
        if shutdown.requested() {
            let _ = c.handle(Input::Shutdown);
            // The inbox loop decides when the shard is done; wake it every tick.
            mesh.wake(c.id);
        }
    }
}

/// Retries outgoing mesh messages that a full inbox refused: parked until `flush_mesh` leaves
/// a backlog, then every millisecond until the backlog is gone.
async fn mesh_retry_loop(core: Core) {
    loop {
        std::future::poll_fn(|cx| core.borrow_mut().poll_mesh_backlog(cx)).await;
        loop {
            monoio::time::sleep(MESH_RETRY).await;
            let mut c = core.borrow_mut();
            let _ = c.handle(Input::Inbox { max: 0 });
            if !c.mesh_backlog() {
                break;
            }
        }
    }
}

/// What a listener speaks under MQTT.
#[derive(Debug, Clone)]
enum Transport {
    Plain,
    Tls(Arc<ListenerTls>),
    Ws(Arc<WsConfig>),
    Wss(Arc<ListenerTls>, Arc<WsConfig>),
}

/// Accepts connections of listener `number` (config order, for per-listener metrics); with
/// `proxy`, each connection's PROXY protocol header is read first (`proxy.rs`).
async fn accept_loop(
    listener: TcpListener,
    number: usize,
    core: Core,
    transport: Transport,
    metrics: ShardHandle,
    proxy: Option<Rc<ProxyListener>>,
) {
    let addr = listener
        .local_addr()
        .map_or_else(|_| format!("listener {number}"), |a| a.to_string());
    let mut guard = AcceptGuard::new(addr);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            // The client gave up before we accepted it, or a signal: nothing to wait for.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // Out of descriptors above all: refuse with the reserve, back off (accept.rs).
                guard.failed(e, &listener, &metrics).await;
                continue;
            }
        };
        if !guard.accepted() {
            // The last descriptor: refused, so that the reserve is back for the next one.
            guard.refuse_last(stream, &metrics);
            continue;
        }
        if core.borrow().is_shutting_down() {
            continue; // dropping the stream closes it
        }
        let _ = stream.set_nodelay(true);
        match &proxy {
            None => start_connection(stream, peer, number, &core, &transport),
            Some(proxy) => {
                let (core, transport) = (core.clone(), transport.clone());
                spawn_after_header(proxy, stream, peer, &metrics, move |stream, client| {
                    start_connection(stream, client, number, &core, &transport)
                });
            }
        }
    }
}

/// Hands an accepted connection from `peer` (the client's address) to the core and starts its
/// tasks.
fn start_connection(
    stream: monoio::net::TcpStream,
    peer: std::net::SocketAddr,
    number: usize,
    core: &Core,
    transport: &Transport,
) {
    if core.borrow().is_shutting_down() {
        return; // dropping the stream closes it
    }
    let handled = core.borrow_mut().handle(Input::Accept {
        listener: number,
        peer,
    });
    let Handled::Accepted(token) = handled else {
        return;
    };
    let index = token.conn;
    let core = core.clone();
    match transport {
        Transport::Plain => {
            monoio::spawn(connection(stream, index, core));
        }
        Transport::Ws(ws) => {
            let layer = WsServer::new(ws.clone());
            monoio::spawn(layer_pump::connection(stream, index, core, layer));
        }
        Transport::Tls(tls) => {
            if let Some(session) = tls_session(tls, peer, &core, index) {
                let layer = Tls::new(session, Bare);
                monoio::spawn(layer_pump::connection(stream, index, core, layer));
            }
        }
        Transport::Wss(tls, ws) => {
            if let Some(session) = tls_session(tls, peer, &core, index) {
                let layer = Tls::new(session, WsServer::new(ws.clone()));
                monoio::spawn(layer_pump::connection(stream, index, core, layer));
            }
        }
    }
}

/// A TLS session with the listener's current configuration (a reload since the last accept
/// takes effect here). On failure the connection's slot is released.
fn tls_session(
    tls: &ListenerTls,
    peer: std::net::SocketAddr,
    core: &Core,
    index: ConnId,
) -> Option<rustls::ServerConnection> {
    match rustls::ServerConnection::new(tls.current()) {
        Ok(session) => Some(session),
        Err(e) => {
            warn!(%peer, "TLS session setup failed: {e}");
            let _ = core.borrow_mut().handle(Input::Release(index));
            None
        }
    }
}

/// How long a connection the server ended keeps reading, and discarding, after its last
/// packet and FIN. Closing a socket with unread input makes the kernel answer with a reset,
/// and a client still sending (a publisher over its quota, above all) then sees a write error
/// before it reads the DISCONNECT or CONNACK that says why; while the server reads, the
/// client's writes succeed until it has read the reason and closed. Bounded in time and bytes.
pub(crate) const LINGER: Duration = Duration::from_secs(1);
pub(crate) const LINGER_BYTES: usize = 256 * 1024;

/// Set by a connection's reader when input has ended (the client closed, or the socket was
/// shut down); wakes the writer waiting in [`finish_writes`].
#[derive(Debug, Default)]
pub(crate) struct ReadDone {
    done: std::cell::Cell<bool>,
    waker: RefCell<Option<std::task::Waker>>,
}

impl ReadDone {
    pub(crate) fn set(&self) {
        self.done.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// The writer's end of a connection. After a clean flush: FIN, then wait (at most [`LINGER`])
/// for the reader to see the client close; then, or at once after a write error, shut both
/// directions, which ends a read still pending.
pub(crate) async fn finish_writes(
    fd: std::os::fd::BorrowedFd<'_>,
    flushed: bool,
    read_done: &ReadDone,
) {
    if flushed {
        crate::transport::sys::shutdown_write(fd);
        let mut deadline = std::pin::pin!(monoio::time::sleep(LINGER));
        std::future::poll_fn(|cx| {
            if read_done.done.get() || deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            *read_done.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }
    crate::transport::sys::shutdown_socket(fd);
}

/// Backpressure, before each read of connection `index`: while the shards it publishes to
/// cannot keep up, read nothing more from it, so it is slowed by TCP instead of growing the
/// outbox (`ShardCore::conn_throttled`); other connections are read as usual. Woken by the
/// retry timer, which fires every driver turn (`turn.rs`).
pub(crate) async fn wait_while_throttled(core: &Core, index: ConnId) {
    while core.borrow_mut().conn_throttled(index, Instant::now()) {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The connection's reader and writer have both ended: free its slot in the core.
pub(crate) fn release_connection(core: &Core, index: ConnId) {
    let _ = core.borrow_mut().handle(Input::Release(index));
}
