//! `msocket`: encrypted byte streams to named peers that survive moves of either end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use msocket_server::cli::{self, CliError, Common};

#[derive(Parser, Debug)]
#[command(
    name = "msocket",
    version,
    about = "Encrypted byte streams to named peers that survive moves of either end",
    long_about = "msocket carries one encrypted byte stream (a flow) to a peer found by name. The \
flow survives address changes of either end (Wi-Fi to cellular, NAT rebinding, a server that \
moves): it re-dials, re-looks-up the name and resumes with nothing lost or duplicated.\n\n\
Names live in a name service (`msocketd name`); every record is signed by its owner's key.\n\
Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more."
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a key file (one secret from which the signing and Noise keys derive).
    Keygen {
        /// Where to write it (never overwrites an existing file).
        #[arg(long, env = "MSOCKET_KEY", default_value_os_t = cli::default_key_path())]
        key: PathBuf,
    },
    /// Publish NAME and serve flows to it: stdin/stdout for one flow (like `nc -l`), or
    /// with --to every flow handed to a local TCP service.
    Listen {
        /// The name to serve (lowercase, DNS-like: e.g. alice.phone).
        name: String,
        /// Hand every accepted flow to this local TCP address instead of stdin/stdout.
        #[arg(long, value_name = "HOST:PORT")]
        to: Option<SocketAddr>,
        #[command(flatten)]
        common: Common,
    },
    /// Open a flow to NAME and copy stdin to it and it to stdout (usable as an ssh
    /// ProxyCommand: `ssh -o ProxyCommand='msocket connect %h' host`).
    Connect {
        /// The name to connect to.
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Accept TCP connections on LOCAL and carry each over its own flow to NAME (which
    /// runs `msocket listen NAME --to ...`), giving unmodified programs mobility.
    Forward {
        /// Local address to accept TCP connections on, e.g. 127.0.0.1:2222.
        local: SocketAddr,
        /// The name to carry them to.
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Run the self-contained demo on loopback: a name service, a listener and a client
    /// stream data while both ends move between 127.0.0.x addresses; checks SHA-256.
    Demo {
        /// Bytes to stream.
        #[arg(long, default_value_t = 64 << 20)]
        bytes: u64,
        /// Moves of the client and of the server (each); one simultaneous move follows.
        #[arg(long, default_value_t = 5)]
        moves: usize,
    },
    /// Measure msocket against plain TCP and TCP + the same Noise cipher on loopback.
    Bench {
        #[command(subcommand)]
        which: BenchKind,
    },
}

#[derive(Subcommand, Debug)]
enum BenchKind {
    /// Bulk throughput and 64-byte request/response latency.
    Throughput {
        /// Bytes per bulk transfer.
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
        /// Request/response round trips.
        #[arg(long, default_value_t = 5000)]
        round_trips: usize,
        /// Bulk transfers per system (interleaved); the median is reported.
        #[arg(long, default_value_t = 3)]
        trials: usize,
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("msocket: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args.command));
    // Pipes may leave blocking stdin reads behind; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(CliError(msg)) => {
            eprintln!("msocket: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Keygen { key } => cli::keygen(&key)?,
        Command::Listen { name, to, common } => {
            let ep = common.endpoint(false)?;
            match to {
                Some(to) => cli::pipe::listen_to(&ep, &name, to).await?,
                None => cli::pipe::listen_once(&ep, &name).await?,
            }
        }
        Command::Connect { name, common } => cli::pipe::connect(&common.endpoint(true)?, &name).await?,
        Command::Forward { local, name, common } => {
            cli::pipe::forward(&common.endpoint(true)?, local, &name).await?
        }
        Command::Demo { bytes, moves } => {
            return Ok(match cli::demo::run(bytes, moves).await {
                Ok(report) => {
                    println!("{}", report.summary_line());
                    ExitCode::SUCCESS
                }
                Err(reason) => {
                    println!("demo FAILED: {reason}");
                    ExitCode::FAILURE
                }
            })
        }
        Command::Bench { which: BenchKind::Throughput { bytes, round_trips, trials, json } } => {
            cli::bench::throughput(bytes, round_trips, trials, json).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}
