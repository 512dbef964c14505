//! msocketd: the msocket server daemon.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use msocketd::name_server::NameServer;
use tracing_subscriber::EnvFilter;

/// The msocket server daemon.
///
/// Runs the services msocket peers rely on, one per subcommand. `name` is the name
/// service: it maps peer names to signed records of their keys and current addresses.
#[derive(Debug, Parser)]
#[command(name = "msocketd", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the name service, where peers publish and look up signed name records.
    ///
    /// msocket peers are reached by name. Each peer publishes a record naming its keys,
    /// current addresses and relays, signed by its own key, and re-publishes it whenever
    /// it moves. The first record for a name binds the name to its signing key; later
    /// records need the same key and a higher sequence number.
    /// A record may live at most 24 hours; a name stays bound to its key for 7 days after
    /// its record expired; signatures are checked strictly (small-order keys are refused).
    ///
    /// Clients verify every record they receive, so this service is trusted to keep
    /// records available, not to keep them honest. Records are stored durably in the
    /// database file before a registration is acknowledged.
    ///
    /// Logs go to stderr (filter with RUST_LOG, default "info"). Once listening, one line
    /// is printed to stdout: "msocketd: name service listening on ADDR".
    Name(NameArgs),
}

#[derive(Debug, Args)]
struct NameArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free port, printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7450")]
    listen: String,
    /// Database file holding the records (created if missing).
    #[arg(long, value_name = "FILE", default_value = "./msocketd-names.redb")]
    db: PathBuf,
    /// Connections served at once; more wait in the kernel's backlog. Every open flow of
    /// a connecting client parks one watch (a connection) on its peer's name, so size this
    /// (and the process's open-file limit) to the flows you expect.
    #[arg(long, value_name = "N", default_value_t = msocketd::name_server::MAX_CONNECTIONS)]
    max_connections: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs kept in files or read by scripts stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Name(args) => run_name(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("msocketd: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run_name(args: NameArgs) -> Result<(), String> {
    if args.max_connections == 0 {
        return Err("--max-connections must be at least 1".into());
    }
    let server = NameServer::open(&args.db).map_err(|e| e.to_string())?.with_max_connections(args.max_connections);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| format!("listening socket: {e}"))?;
    // Install the handlers before announcing, so a signal sent right after the
    // announcement already means "shut down".
    let shutdown = shutdown_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "msocketd: name service listening on {addr}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    drop(stdout);
    Arc::new(server).serve(listener, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// A future that completes on SIGINT or SIGTERM (Ctrl-C elsewhere).
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
