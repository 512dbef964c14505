//! msocketd: the msocket server daemon.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use msocket::name::NameRules;
use msocket::{Identity, IdentityError};
use msocketd::name_server::{admission, limits, store, ConnectionLimits, NameServer, RateLimits, StoreLimits};
use msocketd::relay_server::{limits as relay_limits, RelayLimits, RelayServer};
use tracing_subscriber::EnvFilter;

/// The msocket server daemon.
///
/// Runs the services msocket peers rely on, one per subcommand. `name` is the name
/// service: it maps peer names to signed records of their keys and current addresses.
/// `relay` reaches peers behind NAT: it splices a client's connection to a listener that
/// keeps a control connection to it.
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
    /// records need the same key and a higher sequence number. Signatures are checked
    /// strictly (small-order keys are refused).
    ///
    /// A record may live at most --max-lifetime (24h). A name stays bound to its key for
    /// --grace (7d) after its record expired, so a phone that was offline gets it back;
    /// after that the name is free for any key, and the record is deleted (every 10
    /// minutes, and at once when the store is full).
    ///
    /// Registrations are limited: each client source (an IPv4 address, or an IPv6 /64)
    /// and each signing key gets a burst of --registrations-per-source (60) and
    /// --registrations-per-key (30), refilled at that many a minute; beyond that they are
    /// refused as "rate limited" with the time to wait. A key holds at most
    /// --names-per-key (32) names ("quota exceeded"), the server at most --max-names
    /// (1,000,000) ("server full"). Durations are written 30s, 90m, 36h or 7d.
    ///
    /// Connections and parked watches are counted per client source and in all
    /// (--max-connections-per-source 64, --max-connections 1024, --max-watches-per-source
    /// 4096, --max-watches 65536); beyond them a client is refused "busy" at once.
    ///
    /// Clients verify every record they receive, so this service is trusted to keep
    /// records available, not to keep them honest. Records are stored durably in the
    /// database file before a registration is acknowledged.
    ///
    /// Every connection is a Noise channel to the server's key (--key): nobody on the path
    /// can forge, alter or replay an answer. Clients that pin the key's fingerprint
    /// (HOST:PORT#FINGERPRINT) refuse any other server.
    ///
    /// Logs go to stderr (filter with RUST_LOG, default "info"). Once listening, two lines
    /// are printed to stdout: "msocketd: name service listening on ADDR" and
    /// "msocketd: name server key fingerprint FINGERPRINT"; with --metrics, a third:
    /// "msocketd: name metrics on http://ADDR/metrics".
    Name(NameArgs),
    /// Run a relay, through which clients reach listeners behind NAT.
    ///
    /// A listener that cannot be dialed (a phone behind a carrier-grade NAT) keeps a
    /// control connection to the relay, proves its keys on it by signing a fresh nonce,
    /// and lists the relay in its name record. A client that cannot reach it directly
    /// dials the relay naming the listener's keys; the relay asks the listener over its
    /// control connection to call back, and splices the client's connection to the
    /// listener's answer. The flow inside is encrypted end to end: the relay holds no key
    /// and sees ciphertext only. Both ends learn the addresses the relay saw.
    ///
    /// A key keeps at most --registrations-per-key (4) control connections; a newer one
    /// replaces the oldest (a phone that moved registers again before its old connection
    /// is known dead), and dial-backs go to the newest. A control connection silent for
    /// --control-idle (10m) is closed; listeners ping every couple of minutes.
    ///
    /// Splices move bytes with splice(2) through a pipe per direction (on Linux): the
    /// bytes never enter the relay's memory, and each direction buffers at most
    /// --splice-buffer (64KiB). A splice costs 6 file descriptors (2 sockets, 2 pipes), so
    /// size `ulimit -n` to the caps (the relay raises its soft limit to the hard one and
    /// warns when that is short). A splice idle for --idle-timeout (10m) is closed.
    ///
    /// Every request over a cap is refused "busy" at once: connections in all and per
    /// client source (an IPv4 address or an IPv6 /64), registrations, dials waiting for
    /// their listener (in all, per listener, per source), splices (in all, per source).
    /// A client source may also be held to --dials-per-source dials a minute.
    ///
    /// Durations are written 30s, 10m, 2h or 1d; sizes as bytes or with K or M (64K).
    /// Logs go to stderr (filter with RUST_LOG, default "info"). Once listening, the first
    /// line on stdout is "msocketd: relay listening on ADDR"; with --metrics a second
    /// follows: "msocketd: relay metrics on http://ADDR/metrics". SIGTERM or SIGINT stops
    /// it: control connections and waiting dials are told, splices closed (their flows
    /// carry on over other paths or dial again).
    Relay(RelayArgs),
}

#[derive(Debug, Args)]
struct RelayArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free port, printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7451")]
    listen: String,
    /// Serve Prometheus metrics (registrations, dials, splices, bytes, refusals) over
    /// HTTP on this address, at GET /metrics. Off unless given.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// How long a new connection may take to send its header and first message (and a
    /// listener its signed registration). Also bounds every message written.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// How long a dial waits for the listener to call back before it is refused "no
    /// answer".
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    dial_timeout: Duration,
    /// A control connection that sends nothing for this long is closed.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    control_idle: Duration,
    /// A splice with no byte either way for this long is closed.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Control connections one listener key may hold; a newer one replaces the oldest.
    #[arg(long, value_name = "N", default_value_t = relay_limits::REGISTRATIONS_PER_KEY)]
    registrations_per_key: usize,
    /// Control connections registered at once, in all.
    #[arg(long, value_name = "N", default_value_t = relay_limits::MAX_REGISTRATIONS)]
    max_registrations: usize,
    /// Splices at once, in all (dials waiting for their listener count as splices).
    #[arg(long, value_name = "N", default_value_t = relay_limits::MAX_SPLICES)]
    max_splices: usize,
    /// Splices at once whose client is at one source (IPv4 address or IPv6 /64).
    #[arg(long, value_name = "N", default_value_t = relay_limits::SPLICES_PER_SOURCE)]
    max_splices_per_source: usize,
    /// Dials waiting for their listener at once, in all.
    #[arg(long, value_name = "N", default_value_t = relay_limits::MAX_PENDING_DIALS)]
    max_pending_dials: usize,
    /// Dials waiting at once for one listener key.
    #[arg(long, value_name = "N", default_value_t = relay_limits::PENDING_PER_KEY)]
    max_pending_per_key: usize,
    /// Dials waiting at once from one client source.
    #[arg(long, value_name = "N", default_value_t = relay_limits::PENDING_PER_SOURCE)]
    max_pending_per_source: usize,
    /// Connections open at once, of every kind (a splice holds two).
    #[arg(long, value_name = "N", default_value_t = relay_limits::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Connections open at once from one source.
    #[arg(long, value_name = "N", default_value_t = relay_limits::CONNECTIONS_PER_SOURCE)]
    max_connections_per_source: usize,
    /// Dials a minute (and burst) from one client source; beyond it they are refused "rate
    /// limited". 0: no rate limit (the caps above still hold).
    #[arg(long, value_name = "N", default_value_t = 0)]
    dials_per_source: u32,
    /// Bytes buffered per direction of a splice: the size of its pipe (4K to 1M).
    #[arg(long, value_name = "SIZE", default_value = "64K", value_parser = parse_size)]
    splice_buffer: usize,
}

/// Parses `65536`, `64K` (or `64KiB`) or `1M` (or `1MiB`).
fn parse_size(text: &str) -> Result<usize, String> {
    let bad = || format!("{text:?} is not a size: write bytes, or a number and K or M (e.g. 64K)");
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let n: usize = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "" => 1,
        "K" | "k" | "KiB" => 1024,
        "M" | "MiB" => 1024 * 1024,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(|| format!("{text:?} is too large"))
}

#[derive(Debug, Args)]
struct NameArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free port, printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7450")]
    listen: String,
    /// Database file holding the records (created if missing).
    #[arg(long, value_name = "FILE", default_value = "./msocketd-names.redb")]
    db: PathBuf,
    /// The server's key file, which authenticates every connection to clients (created
    /// with a new key, mode 0600, if missing). Default: msocketd-name.key beside the
    /// database. Clients pin its fingerprint with HOST:PORT#FINGERPRINT.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Connections served at once (size the process's open-file limit to match). A
    /// client's watches share one connection. When all are in use, a newcomer takes the
    /// oldest connection of the address holding the most, or is refused "busy".
    #[arg(long, value_name = "N", default_value_t = admission::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Connections open at once from one client source (IPv4 address or IPv6 /64).
    #[arg(long, value_name = "N", default_value_t = admission::CONNECTIONS_PER_SOURCE)]
    max_connections_per_source: usize,
    /// Watches parked at once, in all. Every open flow of a connecting client parks one
    /// on its peer's name.
    #[arg(long, value_name = "N", default_value_t = admission::MAX_WATCHES)]
    max_watches: usize,
    /// Watches parked at once from one client source.
    #[arg(long, value_name = "N", default_value_t = admission::WATCHES_PER_SOURCE)]
    max_watches_per_source: usize,
    /// How long a name stays bound to its key after its record expired (at least 1d).
    /// After that another key may take it and the record is deleted.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    grace: Duration,
    /// The longest a record may live: its expiry at most this far ahead (at least 1h,
    /// the lifetime of the records msocket endpoints publish).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    max_lifetime: Duration,
    /// Registrations per minute (and burst) from one client source: an IPv4 address or an
    /// IPv6 /64.
    #[arg(long, value_name = "N", default_value_t = limits::REGISTRATIONS_PER_SOURCE)]
    registrations_per_source: u32,
    /// Registrations per minute (and burst) signed by one key.
    #[arg(long, value_name = "N", default_value_t = limits::REGISTRATIONS_PER_KEY)]
    registrations_per_key: u32,
    /// Most names one signing key may hold.
    #[arg(long, value_name = "N", default_value_t = store::NAMES_PER_KEY)]
    names_per_key: u64,
    /// Most names the server stores; new names are refused beyond it.
    #[arg(long, value_name = "N", default_value_t = store::MAX_NAMES)]
    max_names: u64,
    /// Serve Prometheus metrics (connections, requests by kind, refusals by reason, names
    /// stored) over HTTP on this address, at GET /metrics. Off unless given.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

/// Parses `30s`, `90m`, `36h` or `7d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: write a whole number and a unit, s, m, h or d (e.g. 7d, 36h)");
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(unit_at);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        _ => return Err(bad()),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(|| format!("{text:?} is too long"))
}

/// The shortest grace period: a phone offline overnight must get its name back.
const MIN_GRACE: Duration = Duration::from_secs(24 * 3600);
/// The shortest record lifetime: endpoints publish records that live an hour.
const MIN_LIFETIME: Duration = Duration::from_secs(3600);

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
        Command::Relay(args) => run_relay(args).await,
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
    if args.grace < MIN_GRACE {
        return Err(format!(
            "--grace must be at least 1d (got {}s): a phone offline for a night must get its name back",
            args.grace.as_secs()
        ));
    }
    if args.max_lifetime < MIN_LIFETIME {
        return Err(format!(
            "--max-lifetime must be at least 1h (got {}s): msocket endpoints publish records that live an hour",
            args.max_lifetime.as_secs()
        ));
    }
    for (flag, n) in [
        ("--max-connections-per-source", args.max_connections_per_source as u64),
        ("--registrations-per-source", u64::from(args.registrations_per_source)),
        ("--registrations-per-key", u64::from(args.registrations_per_key)),
        ("--names-per-key", args.names_per_key),
        ("--max-names", args.max_names),
    ] {
        if n == 0 {
            return Err(format!("{flag} must be at least 1"));
        }
    }
    let key_path = args.key.clone().unwrap_or_else(|| {
        args.db.parent().map_or_else(|| PathBuf::from(KEY_FILE), |dir| dir.join(KEY_FILE))
    });
    let identity = server_key(&key_path)?;
    let server = NameServer::open(&args.db)
        .map_err(|e| e.to_string())?
        .with_identity(identity)
        .with_connection_limits(ConnectionLimits {
            max_connections: args.max_connections,
            connections_per_source: args.max_connections_per_source,
            max_watches: args.max_watches,
            watches_per_source: args.max_watches_per_source,
        })
        .with_rules(NameRules { grace: args.grace, max_lifetime: args.max_lifetime })
        .with_rate_limits(RateLimits {
            per_source: args.registrations_per_source,
            per_key: args.registrations_per_key,
        })
        .with_store_limits(StoreLimits { names_per_key: args.names_per_key, max_names: args.max_names });
    tracing::info!(grace = ?args.grace, max_lifetime = ?args.max_lifetime,
        registrations_per_source = args.registrations_per_source,
        registrations_per_key = args.registrations_per_key,
        names_per_key = args.names_per_key, max_names = args.max_names,
        max_connections = args.max_connections, max_connections_per_source = args.max_connections_per_source,
        max_watches = args.max_watches, max_watches_per_source = args.max_watches_per_source,
        "name service limits");
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| format!("listening socket: {e}"))?;
    let metrics = bind_metrics(args.metrics.as_deref()).await?;
    // Install the handlers before announcing, so a signal sent right after the
    // announcement already means "shut down".
    let shutdown = shutdown_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let fingerprint = server.public_key().fingerprint();
    tracing::info!(key = %key_path.display(), %fingerprint, "name server key");
    let mut lines = format!("msocketd: name service listening on {addr}\nmsocketd: name server key fingerprint {fingerprint}\n");
    if let Some((_, metrics_addr)) = &metrics {
        lines.push_str(&format!("msocketd: name metrics on http://{metrics_addr}/metrics\n"));
    }
    announce(&lines)?;
    let server = Arc::new(server);
    let render = {
        let server = Arc::clone(&server);
        move || {
            let server = Arc::clone(&server);
            async move { server.metrics_text().await }
        }
    };
    serve_with_metrics(metrics, render, shutdown, |stopping| server.serve(listener, stopping)).await;
    Ok(())
}

async fn run_relay(args: RelayArgs) -> Result<(), String> {
    let limits = RelayLimits {
        handshake_timeout: args.handshake_timeout,
        dial_timeout: args.dial_timeout,
        control_idle: args.control_idle,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        max_connections_per_source: args.max_connections_per_source,
        max_registrations: args.max_registrations,
        registrations_per_key: args.registrations_per_key,
        max_pending_dials: args.max_pending_dials,
        max_pending_per_key: args.max_pending_per_key,
        max_pending_per_source: args.max_pending_per_source,
        max_splices: args.max_splices,
        max_splices_per_source: args.max_splices_per_source,
        dials_per_source: args.dials_per_source,
        splice_buffer: args.splice_buffer,
    };
    limits.check().map_err(|e| format!("--{}: {}", e.name, e.reason))?;
    tracing::info!(?limits, "relay limits");
    check_descriptors(limits.descriptors_needed());
    check_pipe_memory(&limits);
    let server = RelayServer::bind(&args.listen, limits).await.map_err(|e| e.to_string())?;
    let addr = server.local_addr();
    let metrics = bind_metrics(args.metrics.as_deref()).await?;
    let shutdown = shutdown_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let mut lines = format!("msocketd: relay listening on {addr}\n");
    if let Some((_, metrics_addr)) = &metrics {
        lines.push_str(&format!("msocketd: relay metrics on http://{metrics_addr}/metrics\n"));
    }
    announce(&lines)?;
    let server = Arc::new(server);
    let render = {
        let server = Arc::clone(&server);
        move || {
            let page = server.metrics_text();
            async move { page }
        }
    };
    serve_with_metrics(metrics, render, shutdown, |stopping| server.serve(stopping)).await;
    Ok(())
}

/// Raises the soft limit on open files to the hard one, and warns if that is short of
/// what the relay may hold at its caps.
#[cfg(unix)]
fn check_descriptors(needed: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    // rlim_t is u64 on the systems built for today; the conversion keeps others honest.
    #[allow(clippy::useless_conversion)]
    let have = u64::try_from(limit.rlim_cur).unwrap_or(u64::MAX);
    if have < needed {
        tracing::warn!(open_files = have, needed,
            "the open-file limit is below what the caps allow (a connection takes 1, a splice 6 in all); \
             beyond it connections fail and dials are refused busy: raise ulimit -n (LimitNOFILE=) or lower \
             --max-connections and --max-splices");
    } else {
        tracing::info!(open_files = have, needed, "open-file limit");
    }
}

#[cfg(not(unix))]
fn check_descriptors(_needed: u64) {}

/// Warns when the user's pipe memory limit (`fs.pipe-user-pages-soft`) is below what
/// the splices' pipes may take at the caps: pipes made beyond it stay small.
fn check_pipe_memory(limits: &RelayLimits) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let Some(soft) = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return;
    };
    let pages = 2 * limits.max_splices as u64 * (limits.splice_buffer as u64).div_ceil(4096);
    #[cfg(unix)]
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    #[cfg(not(unix))]
    let root = false;
    if soft != 0 && soft < pages && !root {
        tracing::warn!(pipe_user_pages_soft = soft, needed = pages,
            "past fs.pipe-user-pages-soft pages of pipes, new splices get small pipes (slower, still correct); \
             raise it (sysctl fs.pipe-user-pages-soft=0 lifts it) or run with CAP_SYS_RESOURCE");
    }
}

/// Binds the metrics endpoint, if one was asked for: its listener and address.
async fn bind_metrics(addr: Option<&str>) -> Result<Option<(tokio::net::TcpListener, std::net::SocketAddr)>, String> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("metrics socket: {e}"))?;
    tracing::info!(addr = %bound, "metrics at http://{bound}/metrics");
    Ok(Some((listener, bound)))
}

/// Completes once the sender of `stopped` is dropped.
/// Runs a service (`serve`, given what completes when it should stop) beside its metrics
/// page, if one was asked for, until `shutdown`; the page stops with the service.
async fn serve_with_metrics<F, Fut, S>(
    metrics: Option<(tokio::net::TcpListener, std::net::SocketAddr)>,
    render: F,
    shutdown: impl std::future::Future + Send + 'static,
    serve: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> S,
) where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = String> + Send + 'static,
    S: std::future::Future<Output = ()>,
{
    let (stop, stopped) = tokio::sync::watch::channel(());
    let metrics_task =
        metrics.map(|(listener, _)| tokio::spawn(msocketd::metrics::serve(listener, render, until_stopped(stopped))));
    serve(Box::pin(async move {
        shutdown.await;
        drop(stop);
    }))
    .await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    tracing::info!("stopped");
}

async fn until_stopped(mut stopped: tokio::sync::watch::Receiver<()>) {
    while stopped.changed().await.is_ok() {}
}

/// Prints the start-up lines to stdout in one write, so a reader that takes the first
/// line and goes still finds them all.
fn announce(lines: &str) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(lines.as_bytes()).and_then(|()| stdout.flush()).map_err(|e| format!("stdout: {e}"))
}

/// The server key file's name beside the database, by default.
const KEY_FILE: &str = "msocketd-name.key";

/// The server's key from `path`, made and saved there first if the file does not exist.
fn server_key(path: &std::path::Path) -> Result<Identity, String> {
    match Identity::load(path) {
        Ok(identity) => Ok(identity),
        Err(IdentityError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let identity = Identity::generate().map_err(|e| e.to_string())?;
            identity.save(path).map_err(|e| e.to_string())?;
            tracing::info!(key = %path.display(), fingerprint = %identity.public().fingerprint(),
                "made a new name server key");
            Ok(identity)
        }
        Err(e) => Err(e.to_string()),
    }
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
