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
    /// Measure msocket: throughput and latency on loopback, hand-offs in a network lab.
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
    /// Hand-offs in a network lab built in Linux network namespaces (needs root): msocket
    /// side by side with plain TCP and Linux MPTCP.
    #[command(long_about = "Hand-offs in a network lab built in Linux network namespaces \
(needs root; lab/setup.sh installs iproute2, nftables, ethtool, conntrack). A phone with Wi-Fi \
and cellular, both behind NAT, streams to a server both ways (--bytes each way, about 2 MB/s) \
and, a quarter through, one move happens:\n\n\
  wifi-to-cell     the phone's Wi-Fi address is removed (cellular already up)\n\
  link-down        the phone's Wi-Fi link goes down (cellular already up)\n\
  server-renumber  the server moves to a new address (its name record follows)\n\
  both-move        the phone's Wi-Fi address goes (cellular already up) and the server moves, at once\n\
  nat-rebind       the Wi-Fi router's NAT takes a new public address, forgets its mappings\n\
  break-before-make  cellular is down from the start; Wi-Fi's address goes, then cellular \
comes up (recovery measured from then)\n\n\
Systems: msocket (a flow, both ends following their interfaces); tcp (one TCP connection from \
the phone's Wi-Fi address); mptcp (IPPROTO_MPTCP on both ends, both phone addresses as \
`subflow` endpoints). An RTT r sets both access links to r/2 one way (plus --cell-extra-ms on \
cellular). Recovery: from the move to the read that ends the outage (the first gap between \
reads of at least max(RTT/2, 32 ms)), slower direction; a system with no progress within --give-up-secs of the move, or whose \
connection fails, died. Every repetition builds a fresh lab; median and max are reported.")]
    Mobility {
        /// Round-trip times to emulate, in ms (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "20,50,100")]
        rtts: Vec<u32>,
        /// Repetitions of every scenario × RTT × system.
        #[arg(long, default_value_t = 10)]
        reps: usize,
        /// Scenarios to run (comma-separated): wifi-to-cell, link-down, server-renumber,
        /// both-move, nat-rebind, break-before-make.
        #[arg(long, value_delimiter = ',', default_value = "wifi-to-cell,link-down,server-renumber,both-move,nat-rebind,break-before-make")]
        scenarios: Vec<String>,
        /// Systems to compare (comma-separated): msocket, tcp, mptcp.
        #[arg(long, value_delimiter = ',', default_value = "msocket,tcp,mptcp")]
        systems: Vec<String>,
        /// Bytes streamed each way per run.
        #[arg(long, default_value_t = 2_000_000)]
        bytes: usize,
        /// Seconds after the move without completion before a run counts as dead.
        #[arg(long, default_value_t = 8)]
        give_up_secs: u64,
        /// Extra one-way delay of the cellular link over Wi-Fi's, in ms.
        #[arg(long, default_value_t = 0)]
        cell_extra_ms: u32,
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
        Command::Bench {
            which: BenchKind::Mobility { rtts, reps, scenarios, systems, bytes, give_up_secs, cell_extra_ms, json },
        } => mobility(cli_mobility_options(rtts, reps, scenarios, systems, bytes, give_up_secs, cell_extra_ms, json))?,
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
#[cfg(target_os = "linux")]
fn cli_mobility_options(
    rtts: Vec<u32>,
    reps: usize,
    scenarios: Vec<String>,
    systems: Vec<String>,
    bytes: usize,
    give_up_secs: u64,
    cell_extra_ms: u32,
    json: bool,
) -> cli::mobility::Options {
    cli::mobility::Options {
        rtts,
        reps,
        scenarios,
        systems,
        bytes,
        give_up: std::time::Duration::from_secs(give_up_secs),
        cell_extra_ms,
        json,
    }
}

/// Runs the lab benchmark on this thread (it blocks on its namespaces' runtimes).
#[cfg(target_os = "linux")]
fn mobility(opts: cli::mobility::Options) -> Result<(), CliError> {
    tokio::task::block_in_place(|| cli::mobility::run(&opts))
}

#[allow(clippy::too_many_arguments)]
#[cfg(not(target_os = "linux"))]
fn cli_mobility_options(
    _: Vec<u32>,
    _: usize,
    _: Vec<String>,
    _: Vec<String>,
    _: usize,
    _: u64,
    _: u32,
    _: bool,
) {
}

#[cfg(not(target_os = "linux"))]
fn mobility(_: ()) -> Result<(), CliError> {
    Err(CliError("bench mobility needs Linux (network namespaces)".into()))
}
