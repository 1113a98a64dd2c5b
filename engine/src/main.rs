//! The `ringmq` server binary.

// Unsafe code lives only in the library's `transport::sys`.
#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ringmq::config::{Config, Driver, ListenerConfig, LogFormat};
use ringmq::transport::runtime::Server;

mod cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ringmq: a thread-per-core MQTT 5.0 and 3.1.1 broker.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Without a command: run the broker.
    #[command(subcommand)]
    command: Option<Command>,
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
    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter); takes
    /// precedence over RUST_LOG, which takes precedence over server.log_level.
    #[arg(long)]
    log_level: Option<String>,
    /// Log line format: text or json (one object per line).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// I/O driver.
    #[arg(long, value_enum)]
    driver: Option<Driver>,
}

/// The commands besides running the broker (engine/src/cli/).
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check a configuration and every file it names (certificates, keys, registry); binds
    /// nothing. Exit status 0 when there is no error, 1 otherwise.
    Check(cli::check::CheckArgs),
    /// Print a certificate's SHA-256 thumbprint as the registry's allowedThumbprints takes it.
    Thumbprint(cli::thumbprint::ThumbprintArgs),
    /// Mint a signed JWT for tests (HMAC secret or PEM private key).
    Token(cli::token::TokenArgs),
    /// Create or update a Mosquitto-compatible password file (`[auth] password_file`).
    Passwd(ringmq::cli::passwd::PasswdArgs),
}

fn main() -> ExitCode {
    // Before the heap grows; turned back on below if the configuration asks for them.
    ringmq::transport::runtime::set_transparent_huge_pages(false);
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check(args)) => return crate::cli::check::run(&args),
        Some(Command::Thumbprint(args)) => return crate::cli::thumbprint::run(&args),
        Some(Command::Token(args)) => return crate::cli::token::run(&args),
        Some(Command::Passwd(args)) => return ringmq::cli::passwd::run(args),
        None => {}
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
    if let Err(e) = crate::cli::logs::init(cli.log_level.as_deref(), &config.server) {
        eprintln!("ringmq: configuration error: {e}");
        return ExitCode::from(2);
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
            // systemd: READY=1 (and watchdog pings) only once SIGTERM drains gracefully.
            if let Err(e) = server.notify_ready() {
                eprintln!("ringmq: cannot start the systemd watchdog thread: {e}");
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
