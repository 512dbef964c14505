//! `msocket`: encrypted byte streams to named peers that survive moves of either end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use msocket::PathPolicy;
use msocket_bench::BenchError;
use msocket_cli::{self as cli, CliError, Common};

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
        #[command(flatten)]
        allow: cli::Allow,
        #[command(flatten)]
        relays: cli::Relays,
    },
    /// Open a flow to NAME and copy stdin to it and it to stdout (usable as an ssh
    /// ProxyCommand: `ssh -o ProxyCommand='msocket connect %h' host`).
    Connect {
        /// The name to connect to: NAME, whose keys are pinned at the first connection
        /// (see --pins), or NAME#FINGERPRINT, whose record must carry the keys with that
        /// fingerprint (this also re-pins the name: how to accept a peer's new keys).
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Accept TCP connections on LOCAL and carry each over its own flow to NAME (which
    /// runs `msocket listen NAME --to ...`), giving unmodified programs mobility.
    Forward {
        /// Local address to accept TCP connections on, e.g. 127.0.0.1:2222.
        local: SocketAddr,
        /// The name to carry them to (NAME or NAME#FINGERPRINT, as for connect).
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
    /// Measure msocket: throughput and latency on loopback, hand-offs in a network lab,
    /// relays.
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
    /// Wi-Fi and cellular at once in a network lab (needs root): every path policy side
    /// by side with single-path TCP on each link and Linux MPTCP.
    #[command(long_about = "Wi-Fi and cellular at once, in a network lab built in Linux network \
namespaces (needs root; lab/setup.sh installs what it uses). The phone has Wi-Fi (--wifi) and \
cellular (--cell), both behind NAT; the server sends, the phone receives. Workloads:\n\n\
  bulk        a download of --bytes as fast as it goes: completion time, and aggregation \
efficiency = goodput / (Wi-Fi rate + cellular rate)\n\
  bulk-lossy  the same over --lossy-wifi\n\
  streaming   --stream-mbit for --stream-secs; Wi-Fi goes down for --outage-secs in the \
middle: stalls (gaps between reads of at least --stall-ms) and energy\n\
  handoff     an 8 s stream; Wi-Fi goes down for good at half time, cellular up: the longest \
gap between reads within 3 s after (repeated --handoff-reps times)\n\n\
Systems: msocket (once per --policies entry), mptcp (IPPROTO_MPTCP, the kernel's default \
scheduler, both phone addresses as subflow endpoints), tcp-wifi and tcp-cell (one TCP \
connection bound to that link; not run for handoff). Energy: the phone's wifi0 and cell0 \
byte counters, sampled every 100 ms, through the radio model (Wi-Fi and LTE parameters of \
Huang et al., MobiSys 2012), full tails charged; msocket's own estimate is energy_j_flow. \
Every run builds a fresh lab.")]
    Multipath(MultipathArgs),
    /// Flows through a relay against direct ones on loopback: throughput, latency, idle
    /// flows one relay holds and its memory for them, many flows at once, relay CPU,
    /// failover between relays, time to go direct by hole punching.
    #[command(long_about = "Flows through a relay against direct ones, measured side by side in one \
run on loopback. The relays are the real `msocketd relay` binary (found beside msocket, else on PATH, \
or --msocketd), each in a process of its own, so its memory and CPU time are read from /proc/PID. \
Every transfer is checked by SHA-256 (a mismatch fails the run). The figures (JSON keys):\n\n\
  direct_mbps, relayed_mbps, relayed_over_direct\n\
      bulk: --bytes from a client to a listener over a direct flow and over a flow through a relay \
(a relay-only listener, which publishes no address), --trials times each, interleaved; medians; timed \
from the first write until the receiver holds the last byte (target relayed_over_direct >= 0.8). \
Interleaved with them, the same over plain TCP, direct and through a bare splice of the same relay \
(tcp_direct_mbps, tcp_relayed_mbps): what the relay's hop costs without msocket; and the CPU \
seconds per Gbit of this process's two ends in each case (ends_cpu_s_per_gbit_*)\n\
  rr_p50_direct_us, rr_p50_relayed_us, rr_p50_ratio\n\
      a 64-byte request and its echo, --round-trips times (after 200 warm-up rounds), alternating \
between a direct and a relayed flow; p50 (and p99)\n\
  flows_held, relay_kib_per_flow\n\
      --held idle relayed flows opened through a fresh relay and left idle; the relay's resident \
memory (VmRSS) after a warm-up batch and again once all are open, the difference per flow (target: \
10,000 flows at <= 10 KiB each); every flow then carries 32 bytes to show it is alive. --held-ends \
says who holds the other ends: full endpoints (default; client endpoints with addresses of their \
own, 50 flows each, to one relay-only listener) or raw relay-protocol clients. The open-file limit \
is raised for it (beyond the hard limit only with CAP_SYS_RESOURCE) and reported (nofile_limit); an \
idle splice holds 6 descriptors in the relay, so when the limit cannot fit --held, what fits is held \
and held_note says why\n\
  active_flows, active_aggregate_mbps\n\
      --active relayed flows through one relay, each sending --active-bytes at once; all bytes over \
the time until the last arrived (and, for comparison, as many direct flows: active_direct_aggregate_mbps)\n\
  relay_cpu_s_per_gbit\n\
      the relay process's CPU time over the relayed bulk transfers and the active flows, per Gbit \
it says it carried (its metrics page): its CPU-time clock (clock_getcpuclockid, all threads, ns); \
utime + stime from /proc/PID/stat (10 ms ticks) beside it as relay_cpu_s_per_gbit_proc_stat\n\
  failover_ms\n\
      a relay-only listener registered at two relays; a flow through it streams 16 KiB every ms; \
the relay carrying it is killed (SIGKILL) mid-transfer; from the kill to the read that ends the \
longest gap between the receiver's reads after it (target <= 2000)\n\
  time_to_direct_ms\n\
      the client is shown an unreachable address for the listener (as behind a NAT) and its relay, \
so it starts relayed; from the relayed connect to the direct path hole punching opens\n\
  holepunch_success, lab\n\
      with --lab (root, network namespaces; lab/setup.sh installs what it uses): two phones behind \
NATs, each NAT combination (listener/client: port-preserving or symmetric), whether hole punching \
went direct; and the lab's direct (punched) and relayed throughput over the same path (--lab-bytes), \
failover when a relay dies, time to direct per case; null otherwise, with lab_note\n\n\
A connect of the many-flow phases refused because its lookup returned a record older than one the \
client had already accepted (the listener republished meanwhile) is tried again and listed in \
connect_retries.")]
    Relay(RelayArgs),
}

/// `msocket bench relay`'s options (see its long help).
#[derive(clap::Args, Debug)]
struct RelayArgs {
    /// Bytes per bulk transfer.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Bulk transfers of each kind (direct, relayed), interleaved; medians are reported.
    #[arg(long, default_value_t = 5)]
    trials: usize,
    /// Request/response round trips of each kind.
    #[arg(long, default_value_t = 2000)]
    round_trips: usize,
    /// Idle relayed flows held at once by one relay.
    #[arg(long, default_value_t = 10_000)]
    held: usize,
    /// Who holds the idle flows' ends: endpoints (full msocket flows) or raw
    /// (relay-protocol clients, no flow inside).
    #[arg(long, default_value = "endpoints", value_parser = ["endpoints", "raw"])]
    held_ends: String,
    /// Relayed flows sending at once.
    #[arg(long, default_value_t = 100)]
    active: usize,
    /// Bytes each of the active flows sends.
    #[arg(long, default_value_t = 8 << 20)]
    active_bytes: u64,
    /// The msocketd binary (default: beside msocket, else on PATH).
    #[arg(long, value_name = "PATH")]
    msocketd: Option<PathBuf>,
    /// The relays' --splice-buffer (bytes per direction of a splice, e.g. 1M; default:
    /// the relay's own, 64K).
    #[arg(long, value_name = "SIZE")]
    splice_buffer: Option<String>,
    /// Also run the NAT lab (needs root): hole punching per NAT combination.
    #[arg(long)]
    lab: bool,
    /// Bytes per bulk transfer in the NAT lab (its failover stream carries at most
    /// 16 MiB of it).
    #[arg(long, default_value_t = 64 << 20)]
    lab_bytes: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `msocket bench multipath`'s options (see its long help).
#[derive(clap::Args, Debug)]
struct MultipathArgs {
    /// Workloads (comma-separated): bulk, bulk-lossy, streaming, handoff.
    #[arg(long, value_delimiter = ',', default_value = "bulk,bulk-lossy,streaming,handoff")]
    workloads: Vec<String>,
    /// Systems (comma-separated): msocket, mptcp, tcp-wifi, tcp-cell.
    #[arg(long, value_delimiter = ',', default_value = "msocket,mptcp,tcp-wifi,tcp-cell")]
    systems: Vec<String>,
    /// msocket's policies to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "performance,energy,backup,redundant")]
    policies: Vec<PathPolicy>,
    /// The Wi-Fi link (rate, one-way delay, loss; see lab/README.md).
    #[arg(long, default_value = "20mbit 10ms")]
    wifi: String,
    /// The cellular link.
    #[arg(long, default_value = "10mbit 40ms")]
    cell: String,
    /// The Wi-Fi link of the bulk-lossy workload.
    #[arg(long, default_value = "20mbit 10ms 2% loss")]
    lossy_wifi: String,
    /// Bytes of a bulk download.
    #[arg(long, default_value_t = 50_000_000)]
    bytes: usize,
    /// The stream's rate, Mbit/s.
    #[arg(long, default_value_t = 4.0)]
    stream_mbit: f64,
    /// The stream's length, seconds.
    #[arg(long, default_value_t = 60)]
    stream_secs: u64,
    /// How long Wi-Fi is down in the middle of the stream, seconds.
    #[arg(long, default_value_t = 10)]
    outage_secs: u64,
    /// A gap between reads at least this long (ms) counts as a stall.
    #[arg(long, default_value_t = 200)]
    stall_ms: u64,
    /// Repetitions of bulk and streaming runs (medians are reported).
    #[arg(long, default_value_t = 1)]
    reps: usize,
    /// Repetitions of each hand-off.
    #[arg(long, default_value_t = 5)]
    handoff_reps: usize,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs kept in files or read by scripts stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
        Command::Listen { name, to, common, allow, relays } => {
            let ep = common.endpoint(false, allow.list(&common.key)?, Some(&relays))?;
            match to {
                Some(to) => cli::pipe::listen_to(&ep, &name, to).await?,
                None => cli::pipe::listen_once(&ep, &name).await?,
            }
        }
        Command::Connect { name, common } => cli::pipe::connect(&common.endpoint(true, None, None)?, &name.parse()?).await?,
        Command::Forward { local, name, common } => {
            cli::pipe::forward(&common.endpoint(true, None, None)?, local, &name.parse()?).await?
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
            msocket_bench::throughput::run(bytes, round_trips, trials, json).await.map_err(bench_failed)?
        }
        Command::Bench {
            which: BenchKind::Mobility { rtts, reps, scenarios, systems, bytes, give_up_secs, cell_extra_ms, json },
        } => mobility(cli_mobility_options(rtts, reps, scenarios, systems, bytes, give_up_secs, cell_extra_ms, json))?,
        Command::Bench { which: BenchKind::Multipath(args) } => multipath(args)?,
        Command::Bench { which: BenchKind::Relay(args) } => relay(args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A benchmark's failure, printed as the CLI prints its own.
fn bench_failed(BenchError(message): BenchError) -> CliError {
    CliError(message)
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
) -> msocket_bench::mobility::Options {
    msocket_bench::mobility::Options {
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
fn mobility(opts: msocket_bench::mobility::Options) -> Result<(), CliError> {
    tokio::task::block_in_place(|| msocket_bench::mobility::run(&opts)).map_err(bench_failed)
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

/// Runs the multipath benchmark on this thread (it blocks on its namespaces' runtimes).
#[cfg(target_os = "linux")]
fn multipath(a: MultipathArgs) -> Result<(), CliError> {
    let link = |what: &str, spec: &str| {
        spec.parse::<msocket_bench::LinkSpec>().map_err(|e| CliError(format!("bench multipath: {what}: {e}")))
    };
    let opts = msocket_bench::multipath::Options {
        workloads: a.workloads,
        systems: a.systems,
        policies: a.policies,
        wifi: link("--wifi", &a.wifi)?,
        cell: link("--cell", &a.cell)?,
        lossy_wifi: link("--lossy-wifi", &a.lossy_wifi)?,
        bytes: a.bytes,
        stream_mbit: a.stream_mbit,
        stream_secs: a.stream_secs,
        outage_secs: a.outage_secs,
        stall: std::time::Duration::from_millis(a.stall_ms),
        reps: a.reps,
        handoff_reps: a.handoff_reps,
        json: a.json,
    };
    tokio::task::block_in_place(|| msocket_bench::multipath::run(&opts)).map_err(bench_failed)
}

#[cfg(not(target_os = "linux"))]
fn multipath(_: MultipathArgs) -> Result<(), CliError> {
    Err(CliError("bench multipath needs Linux (network namespaces)".into()))
}

#[cfg(target_os = "linux")]
async fn relay(o: RelayArgs) -> Result<(), CliError> {
    let opts = msocket_bench::relay::Options {
        bytes: o.bytes,
        trials: o.trials,
        round_trips: o.round_trips,
        held: o.held,
        held_ends: o.held_ends.parse().map_err(|e| CliError(format!("bench relay: --held-ends {e}")))?,
        active: o.active,
        active_bytes: o.active_bytes,
        msocketd: o.msocketd,
        splice_buffer: o.splice_buffer,
        lab: o.lab,
        lab_bytes: o.lab_bytes,
        json: o.json,
    };
    msocket_bench::relay::run(&opts).await.map(drop).map_err(bench_failed)
}

#[cfg(not(target_os = "linux"))]
async fn relay(_: RelayArgs) -> Result<(), CliError> {
    Err(CliError("bench relay needs Linux (/proc, splice(2) in the relay)".into()))
}
