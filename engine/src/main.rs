//! The `ringmq` server binary.

// Unsafe code lives only in the library's `transport::sys`.
#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ringmq::config::{Config, Driver, ListenerConfig, LogFormat};
use ringmq::transport::runtime::Server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ringmq: a thread-per-core MQTT 5.0 and 3.1.1 broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file (see docs/configuration.md). Without it: 127.0.0.1:1883,
    /// anonymous access, one shard per core.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on (repeatable); replaces the listeners of the config file.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Number of shards (threads); 0 = one per core.
    #[arg(long)]
    shards: Option<usize>,
    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long)]
    log_level: Option<String>,
    /// Log line format: text or json (one object per line).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// I/O driver.
    #[arg(long, value_enum)]
    driver: Option<Driver>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create or update a Mosquitto-compatible password file (`[auth] password_file`).
    Passwd(ringmq::cli::passwd::PasswdArgs),
}

fn main() -> ExitCode {
    // Before the heap grows; turned back on below if the configuration asks for them.
    ringmq::transport::runtime::set_transparent_huge_pages(false);
    let cli = Cli::parse();
    if let Some(Command::Passwd(args)) = cli.command {
        return ringmq::cli::passwd::run(args);
    }
    let mut config = match &cli.config {
        Some(path) => match Config::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ringmq: configuration error: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if !cli.listen.is_empty() {
        config.listeners = cli
            .listen
            .iter()
            .map(|&bind| ListenerConfig::plain(bind))
            .collect();
    }
    if let Some(n) = cli.shards {
        config.server.shards = n;
    }
    if let Some(d) = cli.driver {
        config.server.driver = d;
    }
    if let Some(level) = cli.log_level {
        config.server.log_level = level;
    }
    if let Some(format) = cli.log_format {
        config.server.log_format = format;
    }
    let source = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("<command line>"));
    if let Err(e) = config.validate(&source) {
        eprintln!("ringmq: configuration error: {e}");
        return ExitCode::from(2);
    }
    // rustls warns about every client that sends an IP address as SNI (mosquitto does);
    // keep its warnings out of a plain level unless the filter names rustls itself.
    let mut directives = config.server.log_level.clone();
    if !directives.contains("rustls") {
        directives.push_str(",rustls=error");
    }
    let filter = match tracing_subscriber::EnvFilter::try_new(&directives) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "ringmq: configuration error: server.log_level {:?}: {e}",
                config.server.log_level
            );
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.server.log_format {
        LogFormat::Text => logs.init(),
        // Flattened: the event's fields sit beside `timestamp`, `level` and `target`, as log
        // shippers (Vector, Fluent Bit, Loki) expect; the thread name carries the shard.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_thread_names(true)
            .init(),
    }
    if config.server.transparent_huge_pages {
        ringmq::transport::runtime::set_transparent_huge_pages(true);
    }
    match Server::start(config) {
        Ok(server) => {
            if let Err(e) = watch_stop_signals(server.shutdown_handle()) {
                eprintln!("ringmq: cannot install signal handlers: {e}");
                return ExitCode::from(1);
            }
            server.join();
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringmq: {e}");
            ExitCode::from(1)
        }
    }
}

/// SIGTERM or SIGINT starts a graceful shutdown; a second one exits at once.
fn watch_stop_signals(shutdown: ringmq::transport::runtime::Shutdown) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("ringmq-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if shutdown.requested() {
                    tracing::warn!(signal, "second stop signal: exiting without waiting");
                    std::process::exit(1);
                }
                tracing::info!(signal, "stop signal: shutting down gracefully");
                shutdown.begin();
            }
        })?;
    Ok(())
}
