//! `msocket bench relay`: flows through a relay against direct ones, in one run on
//! loopback, with the relay as the real `msocketd relay` binary in processes of its own
//! (so that its memory and CPU time are its own, read from `/proc/PID`).
//!
//! What is measured, in the order run:
//!
//! - **bulk**: `bytes` from a client to a listener over a direct flow and over a flow
//!   through relay A (a relay-only listener: it publishes no address), `trials` times,
//!   the two interleaved (the order swapped every trial); medians. Timed from the first
//!   write until the receiver holds the last byte (in a buffer touched beforehand, so
//!   page faults are not timed); SHA-256 of what arrived checked after the clock stops.
//!   The same transfers run over plain TCP, direct and through a bare splice of relay A
//!   (raw relay-protocol ends, no msocket inside), interleaved with them: what the relay's
//!   hop costs on this machine by itself. This process's own CPU time (both ends, and the
//!   kernel's loopback work done in their threads) is read over each transfer too, so
//!   that where a relayed byte's CPU goes can be seen beside the relay's.
//! - **request/response**: a 64-byte request and its 64-byte echo, `round_trips` times
//!   after 200 warm-up rounds, alternating between a direct and a relayed flow; p50, p99.
//! - **active flows**: `active` relayed flows through relay A, all sending `active_bytes`
//!   at once; aggregate = all bytes over the time until the last byte arrived. Then as
//!   many direct flows the same way, for comparison.
//! - **relay CPU**: relay A's process CPU time over the relayed bulk transfers and the
//!   active flows, per Gbit the relay says it carried (its own metrics page, both
//!   directions). The time is the process's CPU-time clock (`clock_getcpuclockid`: user +
//!   system of all its threads, in ns); utime + stime from `/proc/PID/stat` (10 ms ticks)
//!   is reported beside it as a cross-check. Loopback TCP's receive work runs in softirq
//!   context, mostly charged to the sending endpoints, not to the relay.
//! - **idle flows held**: a fresh relay B; `held` relayed flows opened and left idle; B's
//!   resident memory (`VmRSS` in `/proc/PID/status`) read after a warm-up batch and again
//!   once all are open; per flow = the difference over `held`. Every flow then carries 32
//!   bytes (checked) to show it is alive. The flows come from client endpoints with
//!   addresses and keys of their own, 50 flows each (an endpoint admits 64 new flows in a
//!   burst from one source, then 32 a second), to one relay-only listener; or, with
//!   [`HeldEnds::Raw`], from raw relay-protocol connections. The open-file limit is raised
//!   for that (beyond the hard limit only with CAP_SYS_RESOURCE; the relay inherits it);
//!   an idle splice holds six descriptors in the relay, and when the limit cannot fit
//!   `held` the benchmark holds what fits and says so.
//! - **failover**: a relay-only listener registered at relays C and D; a flow through it
//!   streams 16 KiB every millisecond; once 1 MiB has arrived the relay carrying it is killed
//!   (SIGKILL). Failover = from the kill to the read that ends the longest gap between the
//!   receiver's reads after it.
//! - **time to direct**: a listener with an address and relay A; the client is shown an
//!   address of the listener it cannot reach (as behind a NAT) and the listener's relay,
//!   so it starts relayed; then hole punching (PUNCH through the relay, both ends dial)
//!   opens a direct path. Measured from the relayed connect returning to the direct
//!   path's arrival; then data is sent and the relayed path's share of it reported.
//! - **lab** (`--lab`, root): the two-phone lab of network namespaces
//!   ([`crate::relay_lab`]): direct (punched) against relayed throughput over the same lab
//!   path, hole punching per NAT combination ("listener/client": port-preserving or
//!   symmetric), failover when a relay dies. Without `--lab` these are null, with a note.
//!
//! Every transfer is checked by SHA-256; a mismatch fails the benchmark.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use msocket::name::{MemoryNameService, NameFuture, NameService, SignedRecord};
use msocket::relay::RelayUrl;
use msocket::unstable::relay_protocol::{self as rp, Message, KIND_ACCEPT, KIND_DIAL, KIND_REGISTER};
use msocket::{Endpoint, EndpointConfig, Flow, FlowEvent, Identity};
use msocket_test_support::data;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::figures::round;
use crate::BenchError;

/// Bound on every single step (a connect, a registration, a relay's start).
const WAIT: Duration = Duration::from_secs(30);
const RR_SIZE: usize = 64;
const WARMUP: usize = 200;
/// Bytes per write and at most per read of a bulk transfer.
const CHUNK: usize = 256 * 1024;
/// Flows being opened at once while many are opened.
const OPEN_AT_ONCE: usize = 32;
/// The failover stream: this much every [`FAILOVER_PACE`], [`FAILOVER_BYTES`] in all; the
/// carrying relay is killed once [`FAILOVER_KILL_AT`] bytes have arrived.
const FAILOVER_CHUNK: usize = 16 * 1024;
const FAILOVER_PACE: Duration = Duration::from_millis(1);
const FAILOVER_BYTES: usize = 4 << 20;
const FAILOVER_KILL_AT: usize = 1 << 20;
/// How long the flow may take to go direct before the figure is reported missing.
const DIRECT_WAIT: Duration = Duration::from_secs(20);
/// Bytes sent once the punched flow is direct.
const AFTER_DIRECT_BYTES: usize = 4 << 20;
/// Bytes each held flow carries once all are open.
const HELD_PROBE: usize = 32;
/// The name the punching client is lied to about.
const PUNCH_NAME: &str = "punch.bench";
/// An address nothing listens on, shown to the punching client as the listener's.
const UNREACHABLE: &str = "127.0.0.250:9";
/// Descriptors an idle splice holds in the relay: two sockets and two pipes.
const RELAY_FDS_PER_SPLICE: u64 = 6;
/// Descriptors kept free of held flows, in the relay and here (listeners, the runtime,
/// connections being opened).
const FD_RESERVE: u64 = 500;
/// What relay CPU time is.
const CPU_SOURCE: &str = "the msocketd relay process's CPU-time clock (clock_getcpuclockid(PID): user+system of all its \
threads, ns), cross-checked by utime+stime from /proc/PID/stat (relay_cpu_s_per_gbit_proc_stat)";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bytes per bulk transfer.
    pub bytes: u64,
    /// Bulk transfers per kind (direct, relayed), interleaved.
    pub trials: usize,
    /// Request/response round trips per kind.
    pub round_trips: usize,
    /// Idle relayed flows to hold at once.
    pub held: usize,
    /// Who holds them: full endpoints, or raw relay-protocol clients.
    pub held_ends: HeldEnds,
    /// Relayed flows sending at once.
    pub active: usize,
    /// Bytes each of them sends.
    pub active_bytes: u64,
    /// The `msocketd` binary; default: beside this program, else on PATH.
    pub msocketd: Option<PathBuf>,
    /// The relays' `--splice-buffer` (their default when None).
    pub splice_buffer: Option<String>,
    /// Also run the NAT lab (root).
    pub lab: bool,
    /// Bytes per bulk transfer in the NAT lab.
    pub lab_bytes: u64,
    /// One JSON object instead of text.
    pub json: bool,
}

/// Who holds the idle flows' ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldEnds {
    /// Two msocket endpoints (a relay-only listener and a client): real flows.
    Endpoints,
    /// Raw relay-protocol connections (REGISTER, DIAL, ACCEPT) with no flow inside.
    Raw,
}

impl std::str::FromStr for HeldEnds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "endpoints" => Ok(HeldEnds::Endpoints),
            "raw" => Ok(HeldEnds::Raw),
            _ => Err(format!("{s:?}: expected endpoints or raw")),
        }
    }
}

impl HeldEnds {
    fn describe(self) -> &'static str {
        match self {
            HeldEnds::Endpoints => {
                "endpoints: full msocket flows from client endpoints with addresses and keys of their own, 50 flows \
                 each (an endpoint admits 64 new flows in a burst, then 32/s, from one source), to one relay-only listener"
            }
            HeldEnds::Raw => "raw relay-protocol clients (REGISTER/DIAL/ACCEPT), no msocket flow inside",
        }
    }
}

/// Figures of the NAT lab, when it ran.
#[derive(Debug, Clone, Serialize)]
pub struct LabFigures {
    pub direct_mbps: f64,
    pub relayed_mbps: f64,
    pub relayed_over_direct: f64,
    pub failover_ms: Option<u64>,
    /// NAT combination ("listener/client") → milliseconds until direct (null: stayed relayed).
    pub time_to_direct_ms: BTreeMap<String, Option<u64>>,
    /// NAT combination → whether every transfer's SHA-256 matched.
    pub sha256_ok: BTreeMap<String, bool>,
}

/// Everything measured; the JSON object printed.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Bulk over a direct flow, Mbit/s (median of the trials).
    pub direct_mbps: f64,
    /// Bulk over a flow through the relay, Mbit/s (median).
    pub relayed_mbps: f64,
    /// relayed_mbps / direct_mbps (target ≥ 0.8).
    pub relayed_over_direct: f64,
    pub direct_mbps_trials: Vec<f64>,
    pub relayed_mbps_trials: Vec<f64>,
    /// Each trial's relayed over the direct one run moments apart.
    pub relayed_over_direct_trials: Vec<f64>,
    /// The same bulk transfers over plain TCP, direct and through a bare splice of the same
    /// relay (raw relay-protocol ends, no msocket): what the relay's hop itself costs here.
    pub tcp_direct_mbps: f64,
    pub tcp_relayed_mbps: f64,
    pub tcp_relayed_over_direct: f64,
    pub tcp_direct_mbps_trials: Vec<f64>,
    pub tcp_relayed_mbps_trials: Vec<f64>,
    /// CPU seconds per Gbit of this process (both ends, with the kernel's work done in
    /// their threads) during the bulk transfers: msocket direct and relayed, plain TCP
    /// direct and spliced. Beside relay_cpu_s_per_gbit, where a relayed byte's CPU goes.
    pub ends_cpu_s_per_gbit_direct: f64,
    pub ends_cpu_s_per_gbit_relayed: f64,
    pub tcp_ends_cpu_s_per_gbit_direct: f64,
    pub tcp_ends_cpu_s_per_gbit_relayed: f64,
    pub bytes: u64,
    pub trials: usize,
    /// 64-byte request/response, µs.
    pub rr_p50_direct_us: f64,
    pub rr_p50_relayed_us: f64,
    pub rr_p50_ratio: f64,
    pub rr_p99_direct_us: f64,
    pub rr_p99_relayed_us: f64,
    pub round_trips: usize,
    /// Idle relayed flows held at once by one relay (each checked alive afterwards).
    pub flows_held: usize,
    pub flows_held_asked: usize,
    /// Who held the flows' ends.
    pub held_ends: String,
    /// Relay resident memory per held flow, KiB (target ≤ 10).
    pub relay_kib_per_flow: f64,
    pub relay_rss_kib_before: u64,
    pub relay_rss_kib_after: u64,
    pub held_warmup_flows: usize,
    /// This process's resident memory per held flow (both ends), KiB.
    pub ends_kib_per_flow: f64,
    /// The kernel's slab growth per held flow, KiB (whole machine: every socket of both
    /// ends and the relay, and anything else running).
    pub kernel_slab_kib_per_flow: f64,
    pub held_open_s: f64,
    /// Why fewer flows than asked were held.
    pub held_note: Option<String>,
    /// Descriptors the relay had open with every flow held, and per held flow; the same
    /// per flow in this process (both ends).
    pub relay_fds: usize,
    pub relay_fds_per_flow: f64,
    pub ends_fds_per_flow: f64,
    /// RLIMIT_NOFILE (soft) of this process and of the relays it starts.
    pub nofile_limit: u64,
    pub active_flows: usize,
    pub active_aggregate_mbps: f64,
    /// The same number of direct flows at once, right after, for comparison.
    pub active_direct_aggregate_mbps: f64,
    pub active_relayed_over_direct: f64,
    pub active_bytes_per_flow: u64,
    /// Relay CPU seconds per Gbit relayed, over all relayed bulk bytes.
    pub relay_cpu_s_per_gbit: f64,
    /// The same over the single-flow trials only, and over the active flows only.
    pub relay_cpu_s_per_gbit_single: f64,
    pub relay_cpu_s_per_gbit_active: f64,
    /// The same figure from utime + stime in `/proc/PID/stat` (10 ms ticks: coarse for
    /// small runs), as a cross-check.
    pub relay_cpu_s_per_gbit_proc_stat: f64,
    /// The relay's CPU seconds and the Gbit it carried, over which the figure is taken.
    pub relay_cpu_s: f64,
    pub relay_gbit: f64,
    pub relay_cpu_source: String,
    /// From killing the carrying relay to data flowing again, ms (target ≤ 2000).
    pub failover_ms: Option<f64>,
    /// The longest gap between the receiver's reads after the kill, ms.
    pub failover_gap_ms: Option<f64>,
    /// The stream's pace: one 16 KiB write this often, ms (the resolution of failover_ms).
    pub failover_pace_ms: f64,
    pub failover_note: Option<String>,
    /// From the relayed connect returning to a direct (punched) path, ms.
    pub time_to_direct_ms: Option<f64>,
    /// The relayed connect itself, ms.
    pub relayed_connect_ms: f64,
    /// Frame bytes the relayed path sent while the direct one carried the next transfer.
    pub relayed_bytes_after_direct: Option<u64>,
    pub time_to_direct_note: Option<String>,
    /// Every transfer's SHA-256 matched (a mismatch fails the run instead).
    pub sha256_ok: bool,
    /// Connects of the many-flow phases refused because their lookup returned a record
    /// older than one the client had already accepted (the listener republished while it
    /// connected): each was tried again; the errors, so that none passes unseen.
    pub connect_retries: Vec<String>,
    /// NAT combination ("listener/client") → whether hole punching went direct (--lab).
    pub holepunch_success: Option<BTreeMap<String, bool>>,
    pub lab: Option<LabFigures>,
    pub lab_note: Option<String>,
    /// The relay binary run.
    pub msocketd: String,
    /// The relays' splice buffer per direction (null: their default, 64 KiB).
    pub splice_buffer: Option<String>,
}

/// Runs everything and prints the figures.
pub async fn run(opts: &Options) -> Result<Figures, BenchError> {
    if opts.bytes == 0 || opts.trials == 0 || opts.round_trips == 0 || opts.held == 0 || opts.active == 0 || opts.active_bytes == 0 {
        return Err(BenchError(
            "--bytes, --trials, --round-trips, --held, --active and --active-bytes must be above 0".into(),
        ));
    }
    let bytes = usize::try_from(opts.bytes).map_err(|_| BenchError("--bytes is too large".into()))?;
    let active_bytes = usize::try_from(opts.active_bytes).map_err(|_| BenchError("--active-bytes is too large".into()))?;
    let msocketd = find_msocketd(opts.msocketd.as_deref())?;
    let warm = (opts.held / 20).clamp(10, 200);
    let splices = opts.held + warm + 100;
    // Six descriptors a splice in the relay (it inherits this limit); both ends of every
    // held flow here.
    let want = RELAY_FDS_PER_SPLICE * splices as u64 + FD_RESERVE;
    let nofile = raise_open_files(want);
    eprintln!("open-file limit (RLIMIT_NOFILE): {nofile}");
    let fit = (nofile.saturating_sub(FD_RESERVE) / RELAY_FDS_PER_SPLICE).saturating_sub(warm as u64) as usize;
    let held_n = opts.held.min(fit);
    let fd_note = (held_n < opts.held).then(|| {
        format!(
            "{} flows asked, {held_n} held: the open-file limit is {nofile}{} and an idle splice holds {RELAY_FDS_PER_SPLICE} \
             descriptors in the relay (2 sockets, 2 pipes), so one relay process fits about {held_n} beside the warm-up \
             and {FD_RESERVE} in reserve",
            opts.held,
            if has_cap_sys_resource() { "" } else { " and cannot be raised here (raising the hard limit needs CAP_SYS_RESOURCE, which this process lacks)" }
        )
    });
    if let Some(note) = &fd_note {
        eprintln!("{note}");
    }
    if held_n == 0 {
        return Err(BenchError(format!("the open-file limit {nofile} leaves no room for held flows")));
    }
    let mut relay_args = relay_args(splices);
    if let Some(size) = &opts.splice_buffer {
        relay_args.extend(["--splice-buffer".to_string(), size.clone()]);
    }

    let names = Arc::new(BenchNames::default());
    let dyn_names: Arc<dyn NameService> = names.clone();
    let relay_a = RelayProcess::start(&msocketd, &relay_args).await?;
    eprintln!("relay A (bulk, latency, active flows, punching) at {}, pid {}", relay_a.addr, relay_a.pid);
    let direct_listener = endpoint(&dyn_names, 21, 21, &[], false)?;
    let relayed_listener = endpoint(&dyn_names, 22, 22, &[relay_a.addr], true)?;
    let client = endpoint(&dyn_names, 23, 23, &[], false)?;
    let mut direct_l = within(WAIT, "listen (direct)", direct_listener.listen("direct.bench")).await??;
    let mut relayed_l = within(WAIT, "listen (relay-only)", relayed_listener.listen("relayed.bench")).await??;
    if relayed_listener.registered_relays().is_empty() {
        return Err(BenchError("the relay-only listener did not register at relay A".into()));
    }

    // Bulk, interleaved.
    let payload = Arc::new(data(bytes, 1));
    let payload_sha = sha256_of(&payload);
    let mut sink = vec![1u8; bytes];
    let (mut direct_trials, mut relayed_trials) = (Vec::new(), Vec::new());
    let (mut tcp_direct_trials, mut tcp_relayed_trials) = (Vec::new(), Vec::new());
    let (mut single_cpu, mut single_bytes) = (Cpu::default(), 0u64);
    // This process's CPU seconds (both ends) over the transfers: [direct, relayed].
    let (mut ends_cpu, mut tcp_ends_cpu) = ([0.0f64; 2], [0.0f64; 2]);
    let mut raw = RawHolder::new(relay_a.addr).await?;
    for trial in 1..=opts.trials {
        let order: [bool; 2] = if trial % 2 == 1 { [false, true] } else { [true, false] };
        // The same through plain TCP and a bare splice of the same relay: what the relay's
        // hop costs without msocket.
        for relayed in order {
            eprintln!("trial {trial}/{}: bulk over plain TCP {} ...", opts.trials, if relayed { "spliced by the relay" } else { "direct" });
            let (a, b) = if relayed { raw.splice().await? } else { tcp_pair().await? };
            let (mbps, back, _, cpu) = bulk(a, b, payload.clone(), payload_sha, sink).await?;
            sink = back;
            if relayed {
                tcp_relayed_trials.push(mbps);
                tcp_ends_cpu[1] += cpu;
            } else {
                tcp_direct_trials.push(mbps);
                tcp_ends_cpu[0] += cpu;
            }
        }
        for relayed in order {
            eprintln!("trial {trial}/{}: bulk {} ...", opts.trials, if relayed { "relayed" } else { "direct" });
            let (a, b) = if relayed {
                pair(&client, &mut relayed_l, "relayed.bench").await?
            } else {
                pair(&client, &mut direct_l, "direct.bench").await?
            };
            check_route(&a, relayed)?;
            let cpu0 = relay_a.cpu()?;
            let carried0 = relay_a.bytes_relayed().await?;
            let (mbps, back, _, cpu) = bulk(a, b, payload.clone(), payload_sha, sink).await?;
            sink = back;
            ends_cpu[usize::from(relayed)] += cpu;
            if relayed {
                single_cpu = single_cpu + (relay_a.cpu()? - cpu0);
                single_bytes += relay_a.bytes_relayed().await? - carried0;
                relayed_trials.push(mbps);
            } else {
                direct_trials.push(mbps);
            }
        }
    }
    drop(sink);

    // Request/response, alternating.
    eprintln!("request/response: {} round trips each, alternating ...", opts.round_trips);
    let direct_pair = pair(&client, &mut direct_l, "direct.bench").await?;
    let relayed_pair = pair(&client, &mut relayed_l, "relayed.bench").await?;
    check_route(&direct_pair.0, false)?;
    check_route(&relayed_pair.0, true)?;
    let (rr_direct, rr_relayed) = request_response(direct_pair, relayed_pair, opts.round_trips).await?;

    // Active flows at once.
    eprintln!("{} relayed flows at once, {} bytes each ...", opts.active, opts.active_bytes);
    let active_payload = Arc::new(data(active_bytes, 2));
    let cpu0 = relay_a.cpu()?;
    let carried0 = relay_a.bytes_relayed().await?;
    let mut retried = Vec::new();
    let active_mbps = active_flows(&dyn_names, Some(relay_a.addr), opts.active, active_payload.clone(), &mut retried).await?;
    let active_cpu = relay_a.cpu()? - cpu0;
    let active_carried = relay_a.bytes_relayed().await? - carried0;
    eprintln!("{} direct flows at once, {} bytes each ...", opts.active, opts.active_bytes);
    let active_direct_mbps = active_flows(&dyn_names, None, opts.active, active_payload, &mut retried).await?;
    let per_gbit = |cpu: f64, bytes: u64| if bytes == 0 { 0.0 } else { cpu / (bytes as f64 * 8.0 / 1e9) };

    // Going direct by hole punching, through relay A.
    eprintln!("time to direct: a relayed start, then hole punching ...");
    let punch = time_to_direct(&names, relay_a.addr).await;
    drop((direct_l, relayed_l, direct_listener, relayed_listener, client));
    relay_a.stop().await;

    // Failover between two relays.
    eprintln!("failover: the carrying relay killed mid-transfer ...");
    let failover = failover(&dyn_names, &msocketd, &relay_args).await?;

    // Idle flows held by a fresh relay.
    eprintln!("holding {held_n} idle relayed flows ({}) ...", opts.held_ends.describe());
    let mut held = hold_flows(&dyn_names, &msocketd, &relay_args, held_n, warm, opts.held_ends).await?;
    retried.extend(held.retried.drain(..).map(|e| format!("{HELD_NAME}: {e}")));
    held.note = match (fd_note, held.note) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };

    let (holepunch_success, lab, lab_note) = if opts.lab {
        lab_figures(opts.lab_bytes)
    } else {
        (None, None, Some("run with --lab as root".to_string()))
    };

    let direct_mbps = median(&direct_trials);
    let relayed_mbps = median(&relayed_trials);
    let (rr_d50, rr_r50) = (percentile(&rr_direct, 0.50), percentile(&rr_relayed, 0.50));
    let figures = Figures {
        direct_mbps: round(direct_mbps, 1),
        relayed_mbps: round(relayed_mbps, 1),
        relayed_over_direct: round(relayed_mbps / direct_mbps, 3),
        relayed_over_direct_trials: relayed_trials.iter().zip(&direct_trials).map(|(r, d)| round(r / d, 3)).collect(),
        direct_mbps_trials: direct_trials.iter().map(|v| round(*v, 1)).collect(),
        tcp_direct_mbps: round(median(&tcp_direct_trials), 1),
        tcp_relayed_mbps: round(median(&tcp_relayed_trials), 1),
        tcp_relayed_over_direct: round(median(&tcp_relayed_trials) / median(&tcp_direct_trials), 3),
        tcp_direct_mbps_trials: tcp_direct_trials.iter().map(|v| round(*v, 1)).collect(),
        ends_cpu_s_per_gbit_direct: round(per_gbit(ends_cpu[0], opts.bytes * opts.trials as u64), 4),
        ends_cpu_s_per_gbit_relayed: round(per_gbit(ends_cpu[1], opts.bytes * opts.trials as u64), 4),
        tcp_ends_cpu_s_per_gbit_direct: round(per_gbit(tcp_ends_cpu[0], opts.bytes * opts.trials as u64), 4),
        tcp_ends_cpu_s_per_gbit_relayed: round(per_gbit(tcp_ends_cpu[1], opts.bytes * opts.trials as u64), 4),
        tcp_relayed_mbps_trials: tcp_relayed_trials.iter().map(|v| round(*v, 1)).collect(),
        relayed_mbps_trials: relayed_trials.iter().map(|v| round(*v, 1)).collect(),
        bytes: opts.bytes,
        trials: opts.trials,
        rr_p50_direct_us: round(rr_d50, 1),
        rr_p50_relayed_us: round(rr_r50, 1),
        rr_p50_ratio: round(rr_r50 / rr_d50, 3),
        rr_p99_direct_us: round(percentile(&rr_direct, 0.99), 1),
        rr_p99_relayed_us: round(percentile(&rr_relayed, 0.99), 1),
        round_trips: opts.round_trips,
        flows_held: held.held,
        flows_held_asked: opts.held,
        held_ends: opts.held_ends.describe().to_string(),
        relay_kib_per_flow: round(held.relay_kib_per_flow, 2),
        relay_rss_kib_before: held.rss_before / 1024,
        relay_rss_kib_after: held.rss_after / 1024,
        held_warmup_flows: warm,
        ends_kib_per_flow: round(held.ends_kib_per_flow, 2),
        kernel_slab_kib_per_flow: round(held.slab_kib_per_flow, 2),
        held_open_s: round(held.open_s, 2),
        held_note: held.note,
        relay_fds: held.relay_fds,
        relay_fds_per_flow: round(held.relay_fds_per_flow, 2),
        ends_fds_per_flow: round(held.ends_fds_per_flow, 2),
        nofile_limit: nofile,
        active_flows: opts.active,
        active_aggregate_mbps: round(active_mbps, 1),
        active_direct_aggregate_mbps: round(active_direct_mbps, 1),
        active_relayed_over_direct: round(active_mbps / active_direct_mbps, 3),
        active_bytes_per_flow: opts.active_bytes,
        relay_cpu_s_per_gbit: round(per_gbit((single_cpu + active_cpu).clock, single_bytes + active_carried), 4),
        relay_cpu_s_per_gbit_single: round(per_gbit(single_cpu.clock, single_bytes), 4),
        relay_cpu_s_per_gbit_active: round(per_gbit(active_cpu.clock, active_carried), 4),
        relay_cpu_s_per_gbit_proc_stat: round(per_gbit((single_cpu + active_cpu).stat, single_bytes + active_carried), 4),
        relay_cpu_s: round((single_cpu + active_cpu).clock, 3),
        relay_gbit: round((single_bytes + active_carried) as f64 * 8.0 / 1e9, 3),
        relay_cpu_source: CPU_SOURCE.to_string(),
        failover_ms: failover.failover_ms.map(|v| round(v, 1)),
        failover_gap_ms: failover.gap_ms.map(|v| round(v, 1)),
        failover_pace_ms: FAILOVER_PACE.as_secs_f64() * 1e3,
        failover_note: failover.note,
        time_to_direct_ms: punch.time_to_direct_ms.map(|v| round(v, 1)),
        relayed_connect_ms: round(punch.connect_ms, 1),
        relayed_bytes_after_direct: punch.relayed_bytes_after,
        time_to_direct_note: punch.note,
        sha256_ok: true,
        connect_retries: retried,
        holepunch_success,
        lab,
        lab_note,
        msocketd: msocketd.display().to_string(),
        splice_buffer: opts.splice_buffer.clone(),
    };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        print_text(&figures);
    }
    Ok(figures)
}

fn print_text(f: &Figures) {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    println!("relays on loopback; relay = `{}` processes", f.msocketd);
    println!(
        "bulk            direct {:.0} Mbit/s, relayed {:.0} Mbit/s: relayed/direct {:.2} (target >= 0.8; {} trials of {} bytes, medians)",
        f.direct_mbps, f.relayed_mbps, f.relayed_over_direct, f.trials, f.bytes
    );
    println!(
        "bulk, raw TCP   direct {:.0} Mbit/s, spliced by the relay {:.0} Mbit/s: {:.2} (no msocket: the relay's hop alone)",
        f.tcp_direct_mbps, f.tcp_relayed_mbps, f.tcp_relayed_over_direct
    );
    println!(
        "CPU per Gbit    ends (this process): msocket direct {:.3} s, relayed {:.3} s; TCP direct {:.3} s, spliced {:.3} s",
        f.ends_cpu_s_per_gbit_direct, f.ends_cpu_s_per_gbit_relayed, f.tcp_ends_cpu_s_per_gbit_direct, f.tcp_ends_cpu_s_per_gbit_relayed
    );
    println!(
        "request/resp.   p50 direct {:.1} us, relayed {:.1} us: x{:.2}; p99 {:.1} / {:.1} us",
        f.rr_p50_direct_us, f.rr_p50_relayed_us, f.rr_p50_ratio, f.rr_p99_direct_us, f.rr_p99_relayed_us
    );
    println!(
        "held            {} of {} idle flows; relay +{:.2} KiB each (target <= 10; RSS {} -> {} KiB); ends {:.1} KiB each; RLIMIT_NOFILE {}",
        f.flows_held, f.flows_held_asked, f.relay_kib_per_flow, f.relay_rss_kib_before, f.relay_rss_kib_after, f.ends_kib_per_flow, f.nofile_limit
    );
    println!("                held by {}", f.held_ends);
    if let Some(note) = &f.held_note {
        println!("                {note}");
    }
    println!(
        "active          {} relayed flows at once: {:.0} Mbit/s aggregate ({} direct flows: {:.0} Mbit/s; {:.2})",
        f.active_flows, f.active_aggregate_mbps, f.active_flows, f.active_direct_aggregate_mbps, f.active_relayed_over_direct
    );
    println!(
        "relay CPU       {:.4} s per Gbit relayed ({:.3} s over {:.2} Gbit; single flows {:.4}, {} flows {:.4}; /proc/PID/stat says {:.4})",
        f.relay_cpu_s_per_gbit,
        f.relay_cpu_s,
        f.relay_gbit,
        f.relay_cpu_s_per_gbit_single,
        f.active_flows,
        f.relay_cpu_s_per_gbit_active,
        f.relay_cpu_s_per_gbit_proc_stat
    );
    println!(
        "failover        {} ms (target <= 2000; longest gap {} ms; a 16 KiB write every {} ms)",
        opt(f.failover_ms),
        opt(f.failover_gap_ms),
        f.failover_pace_ms
    );
    if let Some(note) = &f.failover_note {
        println!("                {note}");
    }
    println!(
        "time to direct  {} ms after a relayed connect of {:.1} ms",
        opt(f.time_to_direct_ms),
        f.relayed_connect_ms
    );
    if let Some(note) = &f.time_to_direct_note {
        println!("                {note}");
    }
    match (&f.holepunch_success, &f.lab) {
        (Some(cases), lab) => {
            for (case, ok) in cases {
                let after = lab.as_ref().and_then(|l| l.time_to_direct_ms.get(case).copied().flatten());
                match (ok, after) {
                    (true, Some(ms)) => println!("hole punching   {case}: direct after {ms} ms"),
                    (true, None) => println!("hole punching   {case}: direct"),
                    (false, _) => println!("hole punching   {case}: stays relayed"),
                }
            }
            if let Some(lab) = lab {
                println!(
                    "lab             direct {:.0} Mbit/s, relayed {:.0} Mbit/s ({:.2}); failover {} ms",
                    lab.direct_mbps,
                    lab.relayed_mbps,
                    lab.relayed_over_direct,
                    lab.failover_ms.map_or("-".into(), |v| v.to_string())
                );
            }
        }
        (None, _) => println!("lab             not run ({})", f.lab_note.as_deref().unwrap_or("")),
    }
    for e in &f.connect_retries {
        println!("connect retried {e}");
    }
    println!("sha256          every transfer matched");
}

/// The NAT lab's figures (`--lab`; [`crate::relay_lab`]), or why there are none. The lab
/// blocks on its namespaces' runtimes, so it runs beside this task's runtime.
fn lab_figures(bytes: u64) -> (Option<BTreeMap<String, bool>>, Option<LabFigures>, Option<String>) {
    eprintln!("the NAT lab ({bytes} bytes per bulk transfer) ...");
    match tokio::task::block_in_place(|| crate::relay_lab::run_relay_lab(bytes)) {
        Ok(lab) => {
            let case = |c: &crate::relay_lab::NatCase| format!("{}/{}", c.listener, c.client);
            let success = lab.holepunch.iter().map(|c| (case(c), c.direct)).collect();
            let figures = LabFigures {
                direct_mbps: round(lab.direct_mbps, 1),
                relayed_mbps: round(lab.relayed_mbps, 1),
                relayed_over_direct: round(lab.relayed_mbps / lab.direct_mbps, 3),
                failover_ms: lab.failover_ms,
                time_to_direct_ms: lab.holepunch.iter().map(|c| (case(c), c.time_to_direct_ms)).collect(),
                sha256_ok: lab.holepunch.iter().map(|c| (case(c), c.sha_ok)).collect(),
            };
            (Some(success), Some(figures), None)
        }
        Err(e) => (None, None, Some(format!("the NAT lab failed: {e}"))),
    }
}

// ---------------------------------------------------------------------------------------
// The relay processes
// ---------------------------------------------------------------------------------------

/// The flags every relay runs with: caps wide enough for `splices` splices from one source.
fn relay_args(splices: usize) -> Vec<String> {
    let connections = (2 * splices + 1000).to_string();
    let splices = splices.to_string();
    [
        ("--max-splices", splices.as_str()),
        ("--max-splices-per-source", splices.as_str()),
        ("--max-connections", connections.as_str()),
        ("--max-connections-per-source", connections.as_str()),
        ("--max-pending-per-key", "1024"),
        ("--max-pending-per-source", "1024"),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect()
}

/// `msocketd`: the one asked for, else beside this program, else on PATH.
fn find_msocketd(asked: Option<&Path>) -> Result<PathBuf, BenchError> {
    if let Some(path) = asked {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(BenchError(format!("--msocketd {}: no such file", path.display())))
        };
    }
    let name = format!("msocketd{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join(&name)));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|dir| dir.join(&name)).collect::<Vec<_>>())
        .unwrap_or_default();
    beside.into_iter().chain(on_path).find(|p| p.is_file()).ok_or_else(|| {
        BenchError(
            "msocketd not found beside msocket nor on PATH: build it (cargo build --release -p msocketd) \
             or name it with --msocketd PATH"
                .into(),
        )
    })
}

/// A process's CPU time by two sources, seconds.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    clock: f64,
    stat: f64,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu { clock: self.clock - o.clock, stat: self.stat - o.stat }
    }
}

impl std::ops::Add for Cpu {
    type Output = Cpu;
    fn add(self, o: Cpu) -> Cpu {
        Cpu { clock: self.clock + o.clock, stat: self.stat + o.stat }
    }
}

/// An `msocketd relay` child process; killed when dropped.
struct RelayProcess {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl RelayProcess {
    async fn start(bin: &Path, args: &[String]) -> Result<RelayProcess, BenchError> {
        let mut command = tokio::process::Command::new(bin);
        // SAFETY: between fork and exec only prctl(2) runs, which is async-signal-safe. The
        // relay is killed if this process dies first (a killed benchmark leaves no relay).
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .args(["relay", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "error")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError(format!("cannot start {}: {e}", bin.display())))?;
        let pid = child.id().ok_or_else(|| BenchError("the relay exited at once".into()))?;
        let stdout = child.stdout.take().ok_or_else(|| BenchError("no stdout from the relay".into()))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let addr = announced(&mut lines, "its address", "msocketd: relay listening on ", "").await?;
        let metrics = announced(&mut lines, "its metrics", "msocketd: relay metrics on http://", "/metrics").await?;
        // Nothing more is printed; keep the pipe open and drained all the same.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(RelayProcess { child, pid, addr, metrics })
    }

    /// The process's CPU time so far: its CPU-time clock (every thread, living or gone,
    /// user + system, in ns) and utime + stime from `/proc/PID/stat` (in clock ticks).
    fn cpu(&self) -> Result<Cpu, BenchError> {
        Ok(Cpu { clock: self.cpu_clock_seconds()?, stat: self.cpu_seconds()? })
    }

    fn cpu_clock_seconds(&self) -> Result<f64, BenchError> {
        let pid = libc::pid_t::try_from(self.pid).map_err(|_| BenchError("pid out of range".into()))?;
        let mut clock: libc::clockid_t = 0;
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: both calls write only the values they are given.
        let ok = unsafe { libc::clock_getcpuclockid(pid, &mut clock) == 0 && libc::clock_gettime(clock, &mut now) == 0 };
        if !ok {
            return Err(BenchError(format!("cannot read the relay's CPU clock: {}", std::io::Error::last_os_error())));
        }
        Ok(now.tv_sec as f64 + now.tv_nsec as f64 / 1e9)
    }

    /// utime + stime from `/proc/PID/stat`, seconds.
    fn cpu_seconds(&self) -> Result<f64, BenchError> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name (which may hold spaces) in parentheses.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| BenchError("malformed /proc/PID/stat".into()))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| BenchError("malformed /proc/PID/stat".into()));
        // utime and stime are fields 14 and 15 of the line, 12th and 13th after the name.
        let total = ticks(11)? + ticks(12)?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Ok(total as f64 / if hz > 0 { hz as f64 } else { 100.0 })
    }

    fn rss_bytes(&self) -> Result<u64, BenchError> {
        rss_of(self.pid)
    }

    /// Bytes the relay carried, both directions, from its metrics page.
    async fn bytes_relayed(&self) -> Result<u64, BenchError> {
        let page = within(WAIT, "the relay's metrics", async {
            let mut s = TcpStream::connect(self.metrics).await?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n").await?;
            let mut page = String::new();
            s.read_to_string(&mut page).await?;
            Ok::<_, std::io::Error>(page)
        })
        .await??;
        let total: u64 = page
            .lines()
            .filter(|l| l.starts_with("msocket_relay_bytes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        Ok(total)
    }

    /// Kills the relay (SIGKILL) at once.
    fn kill(&mut self) -> Result<(), BenchError> {
        self.child.start_kill().map_err(|e| BenchError(format!("cannot kill the relay: {e}")))
    }

    /// Kills the relay and reaps it.
    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

/// The address on the relay's next stdout line, which starts with `prefix` and ends with `suffix`.
async fn announced(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    what: &str,
    prefix: &str,
    suffix: &str,
) -> Result<SocketAddr, BenchError> {
    let line = within(WAIT, what, lines.next_line())
        .await??
        .ok_or_else(|| BenchError(format!("msocketd relay ended before announcing {what}")))?;
    line.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(suffix))
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| BenchError(format!("unexpected line from msocketd relay: {line:?}")))
}

/// This process's CPU time so far (every thread, user + system), seconds.
fn own_cpu_seconds() -> f64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only the struct it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0 {
        return 0.0;
    }
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

/// A process's resident memory in bytes.
fn rss_of(pid: u32) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    kib_field(&status, "VmRSS:").map(|k| k * 1024).ok_or_else(|| BenchError("no VmRSS in /proc/PID/status".into()))
}

/// How many file descriptors a process has open (0 if unknown).
fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The machine's kernel slab memory in bytes.
fn slab() -> Result<u64, BenchError> {
    let info = std::fs::read_to_string("/proc/meminfo")?;
    kib_field(&info, "Slab:").map(|k| k * 1024).ok_or_else(|| BenchError("no Slab in /proc/meminfo".into()))
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Raises the open-file limit to `want` where allowed (root may raise the hard limit; others
/// get the hard limit at most); the soft limit in force.
fn raise_open_files(want: u64) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < want as libc::rlim_t {
            let wanted = libc::rlimit { rlim_cur: want as libc::rlim_t, rlim_max: limit.rlim_max.max(want as libc::rlim_t) };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                let soft = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
            }
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    #[allow(clippy::useless_conversion)]
    u64::try_from(limit.rlim_cur).unwrap_or(u64::MAX)
}

/// Whether this process may raise its hard limits (CAP_SYS_RESOURCE in its effective set).
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()))
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

// ---------------------------------------------------------------------------------------
// Endpoints and names
// ---------------------------------------------------------------------------------------

fn lo(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))
}

fn url(addr: SocketAddr) -> Result<RelayUrl, BenchError> {
    addr.to_string().parse::<RelayUrl>().map_err(|e| BenchError(e.to_string()))
}

/// An endpoint on `127.0.0.<host>`, registered at `relays` when it listens.
fn endpoint(names: &Arc<dyn NameService>, seed: u8, host: u8, relays: &[SocketAddr], relay_only: bool) -> Result<Endpoint, BenchError> {
    let mut config = EndpointConfig::new(names.clone());
    config.local_ips = vec![lo(host)];
    config.relays = relays.iter().map(|a| url(*a)).collect::<Result<_, _>>()?;
    config.relay_only = relay_only;
    Ok(Endpoint::new(Identity::from_seed([seed; 32]), config))
}

/// In-memory names that can show one name's record with other addresses (what a client
/// behind one NAT learns of a listener behind another: an address it cannot reach).
#[derive(Debug, Default)]
struct BenchNames {
    store: MemoryNameService,
    lie: Mutex<Option<SignedRecord>>,
}

impl BenchNames {
    fn lie_for(&self, name: &str) -> Option<SignedRecord> {
        self.lie.lock().unwrap_or_else(|p| p.into_inner()).clone().filter(|r| r.record.name == name)
    }
}

impl NameService for BenchNames {
    fn register<'a>(&'a self, record: &'a SignedRecord) -> NameFuture<'a, ()> {
        self.store.register(record)
    }

    fn lookup<'a>(&'a self, name: &'a str) -> NameFuture<'a, SignedRecord> {
        match self.lie_for(name) {
            Some(lie) => Box::pin(async move { Ok(lie) }),
            None => self.store.lookup(name),
        }
    }

    fn watch<'a>(&'a self, name: &'a str, after_seq: u64, wait: Duration) -> NameFuture<'a, Option<SignedRecord>> {
        match self.lie_for(name) {
            Some(lie) if lie.record.seq > after_seq => Box::pin(async move { Ok(Some(lie)) }),
            Some(_) => Box::pin(async move {
                tokio::time::sleep(wait).await;
                Ok(None)
            }),
            None => self.store.watch(name, after_seq, wait),
        }
    }
}

async fn within<T>(limit: Duration, what: &str, f: impl std::future::Future<Output = T>) -> Result<T, BenchError> {
    tokio::time::timeout(limit, f).await.map_err(|_| BenchError(format!("{what}: nothing within {limit:?}")))
}

/// A flow from `client` to `name`, and its accepted end.
async fn pair(client: &Endpoint, listener: &mut msocket::Listener, name: &str) -> Result<(Flow, Flow), BenchError> {
    let (c, s) = within(WAIT, "connect", async { tokio::join!(client.connect(name), listener.accept()) }).await?;
    Ok((c?, s?))
}

/// Fails unless the flow runs as asked: through a relay, or not.
fn check_route(flow: &Flow, relayed: bool) -> Result<(), BenchError> {
    let paths = flow.paths();
    if !paths.is_empty() && paths.iter().all(|p| p.relayed == relayed) {
        Ok(())
    } else {
        Err(BenchError(format!("expected a {} flow, got paths {paths:?}", if relayed { "relayed" } else { "direct" })))
    }
}

fn sha256_of(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn mismatch(what: &str) -> BenchError {
    BenchError(format!("SHA-256 mismatch: {what}"))
}

/// A bound on moving `bytes` on loopback, however loaded the machine.
fn transfer_limit(bytes: usize) -> Duration {
    WAIT + Duration::from_secs_f64(bytes as f64 / 10e6)
}

// ---------------------------------------------------------------------------------------
// Bulk, request/response, active flows
// ---------------------------------------------------------------------------------------

/// Sends `payload` from `a` to `b` (read into `sink`, touched beforehand); Mbit/s until the
/// last byte arrived. Checks SHA-256 after the clock stopped; gives the sink and the
/// finished sending flow back, and this process's CPU seconds (both ends) over the
/// transfer.
async fn bulk<A, B>(mut a: A, b: B, payload: Arc<Vec<u8>>, sha: [u8; 32], mut sink: Vec<u8>) -> Result<(f64, Vec<u8>, A, f64), BenchError>
where
    A: AsyncWrite + Unpin,
    B: AsyncRead + Unpin + Send + 'static,
{
    let len = payload.len();
    sink.resize(len, 0);
    let reader = tokio::spawn(read_exactly(b, sink));
    let cpu0 = own_cpu_seconds();
    let start = Instant::now();
    within(transfer_limit(len), "the bulk transfer", async {
        for chunk in payload.chunks(CHUNK) {
            a.write_all(chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await??;
    let (b, sink, end) = within(transfer_limit(len), "the bulk receiver", reader).await???;
    let cpu = own_cpu_seconds() - cpu0;
    let mbps = len as f64 * 8.0 / (end - start).as_secs_f64() / 1e6;
    if sha256_of(&sink) != sha {
        return Err(mismatch("bulk transfer"));
    }
    within(WAIT, "the flow's end", a.shutdown()).await??;
    drop(b);
    Ok((mbps, sink, a, cpu))
}

/// Two ends of a plain TCP connection on loopback.
async fn tcp_pair() -> Result<(TcpStream, TcpStream), BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (a, b) = within(WAIT, "a TCP connection", async { tokio::join!(TcpStream::connect(addr), listener.accept()) }).await?;
    Ok((a?, b?.0))
}

/// Reads exactly `sink.len()` bytes into `sink`; the flow, the sink, when the last came.
async fn read_exactly<B: AsyncRead + Unpin>(mut b: B, mut sink: Vec<u8>) -> Result<(B, Vec<u8>, Instant), std::io::Error> {
    let mut got = 0;
    while got < sink.len() {
        let end = (got + 4 * CHUNK).min(sink.len());
        let n = b.read(&mut sink[got..end]).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the stream ended early"));
        }
        got += n;
    }
    Ok((b, sink, Instant::now()))
}

/// Round trips over the direct and the relayed pair by turns; each pair's samples.
async fn request_response(direct: (Flow, Flow), relayed: (Flow, Flow), n: usize) -> Result<(Vec<Duration>, Vec<Duration>), BenchError> {
    let total = n + WARMUP;
    let messages = Arc::new(data(total * RR_SIZE, 3));
    let echo = |mut s: Flow| {
        tokio::spawn(async move {
            let mut hash = Sha256::new();
            let mut buf = [0u8; RR_SIZE];
            for _ in 0..total {
                s.read_exact(&mut buf).await?;
                hash.update(buf);
                s.write_all(&buf).await?;
            }
            Ok::<_, std::io::Error>((s, <[u8; 32]>::from(hash.finalize())))
        })
    };
    let (mut dc, mut rc) = (direct.0, relayed.0);
    let (d_echo, r_echo) = (echo(direct.1), echo(relayed.1));
    let (mut d_samples, mut r_samples) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut d_hash, mut r_hash) = (Sha256::new(), Sha256::new());
    within(transfer_limit(total * RR_SIZE) + Duration::from_secs_f64(total as f64 * 0.01), "request/response", async {
        let mut buf = [0u8; RR_SIZE];
        for i in 0..total {
            let msg = &messages[i * RR_SIZE..(i + 1) * RR_SIZE];
            for k in 0..2 {
                let relayed = (i + k) % 2 == 1;
                let (flow, samples, hash) =
                    if relayed { (&mut rc, &mut r_samples, &mut r_hash) } else { (&mut dc, &mut d_samples, &mut d_hash) };
                let t = Instant::now();
                flow.write_all(msg).await?;
                flow.read_exact(&mut buf).await?;
                let took = t.elapsed();
                hash.update(buf);
                if i >= WARMUP {
                    samples.push(took);
                }
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await??;
    let sent = sha256_of(&messages);
    for (echo, back) in [(d_echo, d_hash), (r_echo, r_hash)] {
        let (_s, got) = within(WAIT, "the echo", echo).await???;
        if got != sent || <[u8; 32]>::from(back.finalize()) != sent {
            return Err(mismatch("request/response"));
        }
    }
    Ok((d_samples, r_samples))
}

/// `count` flows (from client endpoints of their own) through `relay` (or direct, without
/// one) sending `payload` at once; aggregate Mbit/s.
async fn active_flows(
    names: &Arc<dyn NameService>,
    relay: Option<SocketAddr>,
    count: usize,
    payload: Arc<Vec<u8>>,
    retried: &mut Vec<String>,
) -> Result<f64, BenchError> {
    let (name, host, net) = if relay.is_some() { ("active.bench", 24, 200) } else { ("active-direct.bench", 25, 210) };
    let mut set = FlowSet::new(names, relay, name, host, net).await?;
    let opened = set.open(count).await;
    retried.extend(set.retries().into_iter().map(|e| format!("{name}: {e}")));
    opened.map_err(|e| BenchError(format!("opening the active flows: {e}")))?;
    for flow in &set.clients {
        check_route(flow, relay.is_some())?;
    }
    let flows: Vec<(Flow, Flow)> = set.clients.drain(..).zip(set.accepted.drain(..)).collect();
    let sha = sha256_of(&payload);
    let len = payload.len();
    let (go, ready) = tokio::sync::watch::channel(false);
    let mut senders = tokio::task::JoinSet::new();
    let mut readers = tokio::task::JoinSet::new();
    for (mut a, b) in flows {
        let sink = vec![1u8; len];
        readers.spawn(read_exactly(b, sink));
        let (payload, mut ready) = (payload.clone(), ready.clone());
        senders.spawn(async move {
            ready.wait_for(|go| *go).await.map_err(std::io::Error::other)?;
            for chunk in payload.chunks(CHUNK) {
                a.write_all(chunk).await?;
            }
            Ok::<_, std::io::Error>(a)
        });
    }
    let start = Instant::now();
    go.send_replace(true);
    let limit = transfer_limit(len * count);
    let mut last = start;
    let mut ends = Vec::with_capacity(count);
    within(limit, "the active flows", async {
        while let Some(r) = readers.join_next().await {
            let (b, sink, end) = r.map_err(BenchError::from)??;
            if sha256_of(&sink) != sha {
                return Err(mismatch("one of the active flows"));
            }
            last = last.max(end);
            ends.push(b);
        }
        while let Some(s) = senders.join_next().await {
            let mut a = s.map_err(BenchError::from)??;
            within(WAIT, "an active flow's end", a.shutdown()).await??;
        }
        Ok::<_, BenchError>(())
    })
    .await??;
    Ok((len * count) as f64 * 8.0 / (last - start).as_secs_f64() / 1e6)
}

fn median(v: &[f64]) -> f64 {
    crate::figures::median(v.to_vec()).unwrap_or(0.0)
}

fn percentile(samples: &[Duration], q: f64) -> f64 {
    let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    let i = ((us.len() as f64 - 1.0) * q).round() as usize;
    us.get(i).copied().unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------
// Going direct
// ---------------------------------------------------------------------------------------

struct Punch {
    connect_ms: f64,
    time_to_direct_ms: Option<f64>,
    relayed_bytes_after: Option<u64>,
    note: Option<String>,
}

/// A listener with an address and `relay`; the client is shown an unreachable address
/// for it, starts relayed and punches through.
async fn time_to_direct(names: &Arc<BenchNames>, relay: SocketAddr) -> Punch {
    match punch_once(names, relay).await {
        Ok(p) => p,
        Err(BenchError(e)) => Punch { connect_ms: 0.0, time_to_direct_ms: None, relayed_bytes_after: None, note: Some(e) },
    }
}

async fn punch_once(names: &Arc<BenchNames>, relay: SocketAddr) -> Result<Punch, BenchError> {
    let dyn_names: Arc<dyn NameService> = names.clone();
    let server = endpoint(&dyn_names, 51, 51, &[relay], false)?;
    let client = endpoint(&dyn_names, 52, 52, &[], false)?;
    let mut listener = within(WAIT, "listen (punching)", server.listen(PUNCH_NAME)).await??;
    let mut record = within(WAIT, "lookup", dyn_names.lookup(PUNCH_NAME)).await??.record;
    if record.relays.is_empty() {
        return Err(BenchError("the punching listener's record lists no relay".into()));
    }
    record.addrs = vec![UNREACHABLE.parse()?];
    record.seq = u64::MAX / 2;
    *names.lie.lock().unwrap_or_else(|p| p.into_inner()) = Some(SignedRecord::sign(record, &Identity::from_seed([51; 32]))?);
    let started = Instant::now();
    let (c, s) = pair(&client, &mut listener, PUNCH_NAME).await?;
    let connected = Instant::now();
    let mut events = c.events();
    let relayed_start = c.paths().iter().all(|p| p.relayed);
    let direct_at = if relayed_start {
        let wait = async {
            while let Some(ev) = events.next().await {
                match ev {
                    FlowEvent::PathAdded { relayed: false, .. } => return Some(Instant::now()),
                    FlowEvent::StaysRelayed { .. } | FlowEvent::Closed { .. } => return None,
                    _ => {}
                }
            }
            None
        };
        // The direct path may have come between the connect and the subscription.
        let already = c.paths().iter().any(|p| !p.relayed);
        if already {
            Some(Instant::now())
        } else {
            tokio::time::timeout(DIRECT_WAIT, wait).await.ok().flatten()
        }
    } else {
        None
    };
    let connect_ms = (connected - started).as_secs_f64() * 1e3;
    let Some(direct_at) = direct_at else {
        let note = if relayed_start {
            format!("no direct path within {DIRECT_WAIT:?} of the relayed start: {:?}", c.paths())
        } else {
            format!("the flow did not start relayed: {:?}", c.paths())
        };
        return Ok(Punch { connect_ms, time_to_direct_ms: None, relayed_bytes_after: None, note: Some(note) });
    };
    let relayed_before: u64 = c.paths().iter().filter(|p| p.relayed).map(|p| p.bytes_sent).sum();
    let payload = Arc::new(data(AFTER_DIRECT_BYTES, 4));
    let sha = sha256_of(&payload);
    let (_, _, c, _) = bulk(c, s, payload, sha, Vec::new()).await?;
    let relayed_after: u64 = c.paths().iter().filter(|p| p.relayed).map(|p| p.bytes_sent).sum();
    Ok(Punch {
        connect_ms,
        time_to_direct_ms: Some((direct_at - connected).as_secs_f64() * 1e3),
        relayed_bytes_after: Some(relayed_after.saturating_sub(relayed_before)),
        note: None,
    })
}

// ---------------------------------------------------------------------------------------
// Failover
// ---------------------------------------------------------------------------------------

struct Failover {
    failover_ms: Option<f64>,
    gap_ms: Option<f64>,
    note: Option<String>,
}

/// A flow through a relay-only listener registered at two relays; the carrying one is
/// killed once [`FAILOVER_KILL_AT`] bytes have arrived.
async fn failover(names: &Arc<dyn NameService>, bin: &Path, args: &[String]) -> Result<Failover, BenchError> {
    let first = RelayProcess::start(bin, args).await?;
    let second = RelayProcess::start(bin, args).await?;
    let server = endpoint(names, 41, 41, &[first.addr, second.addr], true)?;
    let client = endpoint(names, 42, 42, &[], false)?;
    let mut listener = within(WAIT, "listen (two relays)", server.listen("failover.bench")).await??;
    let registered = server.registered_relays();
    if registered.len() != 2 {
        return Err(BenchError(format!("the listener registered at {registered:?}, not at both relays")));
    }
    let (c, s) = pair(&client, &mut listener, "failover.bench").await?;
    check_route(&c, true)?;
    let carrier = c.paths().first().map(|p| p.remote);
    let (mut dying, surviving) = match carrier {
        Some(a) if a == first.addr => (first, second),
        Some(a) if a == second.addr => (second, first),
        _ => return Err(BenchError(format!("the flow runs through neither relay: {:?}", c.paths()))),
    };
    eprintln!("  carried by {} (pid {}); the other is {}", dying.addr, dying.pid, surviving.addr);
    let mut events = c.events();
    let payload = Arc::new(data(FAILOVER_BYTES, 5));
    let sha = sha256_of(&payload);
    let (kill_now, kill_time) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut s = s;
        let mut got = Vec::with_capacity(FAILOVER_BYTES);
        let mut reads = Vec::new();
        let mut buf = vec![0u8; FAILOVER_CHUNK];
        let mut kill_now = Some(kill_now);
        while got.len() < FAILOVER_BYTES {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the flow ended early"));
            }
            reads.push(Instant::now());
            got.extend_from_slice(&buf[..n]);
            if got.len() >= FAILOVER_KILL_AT {
                if let Some(tx) = kill_now.take() {
                    let _ = tx.send(());
                }
            }
        }
        Ok((s, got, reads))
    });
    let writer = tokio::spawn(async move {
        let mut c = c;
        let mut tick = tokio::time::interval(FAILOVER_PACE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for chunk in payload.chunks(FAILOVER_CHUNK) {
            tick.tick().await;
            c.write_all(chunk).await?;
        }
        Ok::<_, std::io::Error>(c)
    });
    within(WAIT, "the first bytes of the failover stream", kill_time)
        .await?
        .map_err(|_| BenchError("the failover stream failed before the kill".into()))?;
    let killed = Instant::now();
    dying.kill()?;
    let stream_limit = WAIT + FAILOVER_PACE * (FAILOVER_BYTES / FAILOVER_CHUNK) as u32;
    let outcome = match tokio::time::timeout(stream_limit, reader).await {
        Err(_) => {
            let seen: Vec<FlowEvent> = std::iter::from_fn(|| events.try_next()).collect();
            Err(format!("the flow did not finish within {stream_limit:?} of the relay's death; its events: {seen:?}"))
        }
        Ok(r) => match r.map_err(BenchError::from)? {
            Ok(done) => Ok(done),
            Err(e) => Err(format!("the flow failed after the relay's death: {e}")),
        },
    };
    let (_s, got, reads) = match outcome {
        Ok(done) => done,
        Err(note) => {
            writer.abort();
            return Ok(Failover { failover_ms: None, gap_ms: None, note: Some(note) });
        }
    };
    let mut c = within(WAIT, "the failover writer", writer).await???;
    if sha256_of(&got) != sha {
        return Err(mismatch("the flow across the failover"));
    }
    let (failover_ms, gap_ms) = outage_after(&reads, killed);
    let paths = c.paths();
    let note = (!paths.iter().any(|p| p.relayed && p.remote == surviving.addr))
        .then(|| format!("after the failover the flow's paths are {paths:?}"));
    within(WAIT, "the failover flow's end", c.shutdown()).await??;
    // The endpoints go before the relays, so that nobody registers again at them.
    drop((c, listener, server, client));
    dying.stop().await;
    surviving.stop().await;
    Ok(Failover { failover_ms, gap_ms, note })
}

/// From `killed` to the read ending the longest gap between reads after it, and that
/// gap (ms); None if no read came after.
fn outage_after(reads: &[Instant], killed: Instant) -> (Option<f64>, Option<f64>) {
    let mut best: Option<(Duration, Instant, Instant)> = None;
    for w in reads.windows(2) {
        let (prev, next) = (w[0], w[1]);
        if next <= killed {
            continue;
        }
        let gap = next - prev;
        if best.is_none_or(|(g, _, _)| gap > g) {
            best = Some((gap, prev, next));
        }
    }
    match best {
        Some((gap, prev, next)) => {
            let from = prev.max(killed);
            (Some((next - from).as_secs_f64() * 1e3), Some(gap.as_secs_f64() * 1e3))
        }
        None => (None, None),
    }
}

// ---------------------------------------------------------------------------------------
// Idle flows held
// ---------------------------------------------------------------------------------------

struct Held {
    held: usize,
    rss_before: u64,
    rss_after: u64,
    relay_kib_per_flow: f64,
    ends_kib_per_flow: f64,
    slab_kib_per_flow: f64,
    open_s: f64,
    note: Option<String>,
    relay_fds: usize,
    relay_fds_per_flow: f64,
    ends_fds_per_flow: f64,
    retried: Vec<String>,
}

/// A fresh relay holds `warm` flows, then `n` more; its memory is read in between and
/// after. Every flow then carries [`HELD_PROBE`] bytes.
async fn hold_flows(names: &Arc<dyn NameService>, bin: &Path, args: &[String], n: usize, warm: usize, ends: HeldEnds) -> Result<Held, BenchError> {
    let relay = RelayProcess::start(bin, args).await?;
    let mut holder = match ends {
        HeldEnds::Endpoints => Holder::Endpoints(FlowSet::new(names, Some(relay.addr), HELD_NAME, 31, 1).await?),
        HeldEnds::Raw => Holder::Raw(RawHolder::new(relay.addr).await?),
    };
    holder.open(warm).await.map_err(|e| BenchError(format!("opening the warm-up flows: {e}")))?;
    let me = std::process::id();
    let (rss_before, ends_before, slab_before) = (relay.rss_bytes()?, rss_of(me)?, slab()?);
    let (relay_fds_before, ends_fds_before) = (fds_of(relay.pid), fds_of(me));
    let started = Instant::now();
    let opened = holder.open(n).await;
    let open_s = started.elapsed().as_secs_f64();
    let (rss_after, ends_after, slab_after) = (relay.rss_bytes()?, rss_of(me)?, slab()?);
    let (relay_fds_after, ends_fds_after) = (fds_of(relay.pid), fds_of(me));
    let held = holder.len().saturating_sub(warm);
    let fds_per = |before: usize, after: usize| if held == 0 { 0.0 } else { after.saturating_sub(before) as f64 / held as f64 };
    eprintln!("  {held} flows open in {open_s:.1} s; relay RSS {} -> {} KiB", rss_before / 1024, rss_after / 1024);
    let mut note = opened.err().map(|e| format!("only {held} of {n} flows opened: {e}"));
    if let Err(e) = holder.probe().await {
        if e.0.starts_with("SHA-256") {
            return Err(e);
        }
        note = Some(format!("{}the held flows did not all carry their probe: {}", note.map(|n| n + "; ").unwrap_or_default(), e.0));
    }
    let per = |before: u64, after: u64| if held == 0 { 0.0 } else { after.saturating_sub(before) as f64 / held as f64 / 1024.0 };
    let result = Held {
        held,
        rss_before,
        rss_after,
        relay_kib_per_flow: per(rss_before, rss_after),
        ends_kib_per_flow: per(ends_before, ends_after),
        slab_kib_per_flow: per(slab_before, slab_after),
        open_s,
        note,
        retried: holder.retries(),
        relay_fds: relay_fds_after,
        relay_fds_per_flow: fds_per(relay_fds_before, relay_fds_after),
        ends_fds_per_flow: fds_per(ends_fds_before, ends_fds_after),
    };
    drop(holder);
    relay.stop().await;
    Ok(result)
}

enum Holder {
    Endpoints(FlowSet),
    Raw(RawHolder),
}

impl Holder {
    async fn open(&mut self, count: usize) -> Result<(), String> {
        match self {
            Holder::Endpoints(h) => h.open(count).await,
            Holder::Raw(h) => h.open(count).await,
        }
    }

    /// Every held flow carries [`HELD_PROBE`] bytes, checked.
    async fn probe(&mut self) -> Result<(), BenchError> {
        match self {
            Holder::Endpoints(h) => h.probe().await,
            Holder::Raw(h) => h.probe().await,
        }
    }

    fn retries(&self) -> Vec<String> {
        match self {
            Holder::Endpoints(h) => h.retries(),
            Holder::Raw(_) => Vec::new(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Holder::Endpoints(h) => h.clients.len().min(h.accepted.len()),
            Holder::Raw(h) => h.pairs.len(),
        }
    }
}

/// The probe the `i`th held flow carries: its index, then bytes of its own.
fn probe_bytes(i: usize) -> Vec<u8> {
    let mut p = data(HELD_PROBE, i as u64 + 100);
    p[..8].copy_from_slice(&(i as u64).to_le_bytes());
    p
}

const HELD_NAME: &str = "held.bench";
/// Flows one client endpoint opens: an endpoint admits 64 new flows in a burst from one
/// source address (then 32 a second), so many flows come from many clients, each with an
/// address and a key of its own (as many phones would).
const FLOWS_PER_CLIENT: usize = 50;

/// Full endpoints: a (relay-only) listener, and client endpoints on addresses of their own
/// (`127.0.<net>.x` and up) opening [`FLOWS_PER_CLIENT`] flows each, one after another.
struct FlowSet {
    names: Arc<dyn NameService>,
    _server: Endpoint,
    name: String,
    net: u8,
    listener: msocket::Listener,
    endpoints: Vec<Endpoint>,
    /// The client ends and the accepted ends (which accepted end belongs to which client
    /// end the probe finds out).
    clients: Vec<Flow>,
    accepted: Vec<Flow>,
    /// Connects that failed on a stale record and were tried again: why.
    retried: Arc<Mutex<Vec<String>>>,
}

/// Times one client tries again after a connect refused a stale record.
const STALE_RETRIES: usize = 3;

impl FlowSet {
    /// A listener for `name` on `127.0.0.<server_host>`, relay-only at `relay` (or with its
    /// own address and no relay); clients will come from `127.0.<net>.x` and up.
    async fn new(names: &Arc<dyn NameService>, relay: Option<SocketAddr>, name: &str, server_host: u8, net: u8) -> Result<FlowSet, BenchError> {
        let server = match relay {
            Some(relay) => endpoint(names, server_host, server_host, &[relay], true)?,
            None => endpoint(names, server_host, server_host, &[], false)?,
        };
        let listener = within(WAIT, "listen (many flows)", server.listen(name)).await??;
        Ok(FlowSet {
            names: names.clone(),
            _server: server,
            name: name.to_string(),
            net,
            listener,
            endpoints: Vec::new(),
            clients: Vec::new(),
            accepted: Vec::new(),
            retried: Arc::default(),
        })
    }

    /// Connects tried again after a stale record, so far: why.
    fn retries(&self) -> Vec<String> {
        self.retried.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A new client endpoint on an address of its own.
    fn new_client(&mut self) -> Result<Endpoint, BenchError> {
        let k = self.endpoints.len();
        let third = usize::from(self.net) + k / 250;
        let third = u8::try_from(third).map_err(|_| BenchError("too many client endpoints for their addresses".into()))?;
        let ip = IpAddr::V4(Ipv4Addr::new(127, third, 0, 0).to_bits().wrapping_add(1 + (k % 250) as u32).into());
        let mut seed = [0u8; 32];
        seed[0] = 0xC1;
        seed[1] = self.net;
        seed[2..10].copy_from_slice(&(k as u64).to_le_bytes());
        let mut config = EndpointConfig::new(self.names.clone());
        config.local_ips = vec![ip];
        let ep = Endpoint::new(Identity::from_seed(seed), config);
        self.endpoints.push(ep.clone());
        Ok(ep)
    }

    /// Opens `count` more flows (client endpoints [`OPEN_AT_ONCE`] at a time). The
    /// connects run on a local set of this task: they need not be `Send`.
    async fn open(&mut self, count: usize) -> Result<(), String> {
        let local = tokio::task::LocalSet::new();
        local.run_until(self.open_here(count)).await
    }

    async fn open_here(&mut self, count: usize) -> Result<(), String> {
        let gate = Arc::new(tokio::sync::Semaphore::new(OPEN_AT_ONCE));
        let mut connects = tokio::task::JoinSet::new();
        let mut left = count;
        while left > 0 {
            let share = left.min(FLOWS_PER_CLIENT);
            left -= share;
            let client = self.new_client().map_err(|e| e.0)?;
            let (gate, name, retried) = (gate.clone(), self.name.clone(), self.retried.clone());
            connects.spawn_local(async move {
                let _permit = gate.acquire_owned().await;
                let mut flows = Vec::with_capacity(share);
                let mut stale = 0;
                while flows.len() < share {
                    match tokio::time::timeout(WAIT, client.connect(&name)).await {
                        Ok(Ok(flow)) => flows.push(flow),
                        // A lookup that raced a newer record of the listener (pinned by an
                        // earlier flow's watch in between): counted, reported and tried again.
                        Ok(Err(e @ msocket::Error::StaleRecord { .. })) if stale < STALE_RETRIES => {
                            stale += 1;
                            retried.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
                        }
                        Ok(Err(e)) => return (flows, Some(e.to_string())),
                        Err(_) => return (flows, Some(format!("connect: nothing within {WAIT:?}"))),
                    }
                }
                (flows, None)
            });
        }
        let (mut tasks_left, mut connected, start) = (connects.len(), 0, self.accepted.len());
        let mut failure = None;
        while failure.is_none() && (tasks_left > 0 || self.accepted.len() - start < connected) {
            tokio::select! {
                r = connects.join_next(), if tasks_left > 0 => match r {
                    Some(Ok((flows, error))) => {
                        tasks_left -= 1;
                        connected += flows.len();
                        self.clients.extend(flows);
                        failure = error.map(|e| format!("flow {}: {e}", self.clients.len() + 1));
                    }
                    Some(Err(e)) => failure = Some(e.to_string()),
                    None => tasks_left = 0,
                },
                r = tokio::time::timeout(WAIT, self.listener.accept()) => match r {
                    Ok(Ok(flow)) => self.accepted.push(flow),
                    Ok(Err(e)) => failure = Some(format!("accept: {e}")),
                    Err(_) => failure = Some(format!("accept: nothing within {WAIT:?}")),
                },
            }
        }
        connects.abort_all();
        match failure {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    async fn probe(&mut self) -> Result<(), BenchError> {
        let n = self.clients.len().min(self.accepted.len());
        let gate = Arc::new(tokio::sync::Semaphore::new(4 * OPEN_AT_ONCE));
        let mut writes = tokio::task::JoinSet::new();
        for (i, mut flow) in self.clients.drain(..).enumerate() {
            let gate = gate.clone();
            writes.spawn(async move {
                let _permit = gate.acquire_owned().await;
                within(WAIT, "a probe's write", flow.write_all(&probe_bytes(i))).await??;
                Ok::<_, BenchError>(flow)
            });
        }
        let mut reads = tokio::task::JoinSet::new();
        for mut flow in self.accepted.drain(..) {
            let gate = gate.clone();
            reads.spawn(async move {
                let _permit = gate.acquire_owned().await;
                let mut got = [0u8; HELD_PROBE];
                within(WAIT, "a probe's read", flow.read_exact(&mut got)).await??;
                Ok::<_, BenchError>((flow, got))
            });
        }
        let mut arrived: Vec<Option<[u8; HELD_PROBE]>> = vec![None; n];
        let mut failure = None;
        while let Some(r) = reads.join_next().await {
            match r.map_err(BenchError::from).and_then(|r| r) {
                Ok((flow, got)) => {
                    let i = u64::from_le_bytes(got[..8].try_into().unwrap_or_default()) as usize;
                    match arrived.get_mut(i) {
                        Some(slot @ None) => *slot = Some(got),
                        _ => return Err(mismatch(&format!("a held flow's probe names flow {i}"))),
                    }
                    self.accepted.push(flow);
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        while let Some(r) = writes.join_next().await {
            match r.map_err(BenchError::from).and_then(|r| r) {
                Ok(flow) => self.clients.push(flow),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        let (mut sent, mut got) = (Sha256::new(), Sha256::new());
        for (i, a) in arrived.iter().enumerate() {
            if let Some(a) = a {
                sent.update(probe_bytes(i));
                got.update(a);
            }
        }
        if sent.finalize() != got.finalize() {
            return Err(mismatch("the held flows' probes"));
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Raw relay-protocol ends: a control connection registered for a key, and per flow a
/// DIAL connection and the ACCEPT connection answering its dial-back.
struct RawHolder {
    relay: SocketAddr,
    control: TcpStream,
    target: rp::ListenerKey,
    /// (client end, listener end)
    pairs: Vec<(TcpStream, TcpStream)>,
}

const RAW_LISTENER: [u8; 4] = [127, 0, 0, 33];
const RAW_CLIENT: [u8; 4] = [127, 0, 0, 34];

async fn connect_from(from: [u8; 4], to: SocketAddr) -> Result<TcpStream, BenchError> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    Ok(within(WAIT, "connect to the relay", socket.connect(to)).await??)
}

async fn read_message(stream: &mut TcpStream) -> Result<Message, BenchError> {
    Ok(within(WAIT, "a relay message", rp::read_message(stream)).await??)
}

impl RawHolder {
    async fn new(relay: SocketAddr) -> Result<RawHolder, BenchError> {
        let identity = Identity::from_seed([33; 32]);
        let mut control = connect_from(RAW_LISTENER, relay).await?;
        control.write_all(&rp::header(KIND_REGISTER)).await?;
        let Message::Challenge { nonce } = read_message(&mut control).await? else {
            return Err(BenchError("the relay sent no challenge".into()));
        };
        control.write_all(&rp::register(&identity, &nonce).encode()).await?;
        match read_message(&mut control).await? {
            Message::Registered { .. } => {}
            other => return Err(BenchError(format!("registration refused: {other:?}"))),
        }
        Ok(RawHolder { relay, control, target: rp::listener_key(&identity.public()), pairs: Vec::new() })
    }

    async fn open(&mut self, count: usize) -> Result<(), String> {
        for _ in 0..count {
            let pair = self.splice().await.map_err(|e| format!("flow {}: {}", self.pairs.len() + 1, e.0))?;
            self.pairs.push(pair);
        }
        Ok(())
    }

    /// One splice: a DIAL, its dial-back answered by an ACCEPT.
    async fn splice(&mut self) -> Result<(TcpStream, TcpStream), BenchError> {
        let (relay, target) = (self.relay, self.target);
        let dial = async {
            let mut client = connect_from(RAW_CLIENT, relay).await?;
            let mut hello = rp::header(KIND_DIAL).to_vec();
            hello.extend_from_slice(&Message::Dial { target }.encode());
            client.write_all(&hello).await?;
            match read_message(&mut client).await? {
                Message::Connected { .. } => Ok(client),
                other => Err(BenchError(format!("dial refused: {other:?}"))),
            }
        };
        let control = &mut self.control;
        let answer = async {
            let token = loop {
                match read_message(control).await? {
                    Message::DialBack { token, .. } => break token,
                    Message::Ping(n) => control.write_all(&Message::Pong(n).encode()).await?,
                    other => return Err(BenchError(format!("expected a dial-back, got {other:?}"))),
                }
            };
            let mut listener = connect_from(RAW_LISTENER, relay).await?;
            let mut hello = rp::header(KIND_ACCEPT).to_vec();
            hello.extend_from_slice(&Message::Accept { token }.encode());
            listener.write_all(&hello).await?;
            match read_message(&mut listener).await? {
                Message::Accepted { .. } => Ok(listener),
                other => Err(BenchError(format!("accept refused: {other:?}"))),
            }
        };
        let (client, listener) = tokio::join!(dial, answer);
        Ok((client?, listener?))
    }

    async fn probe(&mut self) -> Result<(), BenchError> {
        let (mut sent, mut got) = (Sha256::new(), Sha256::new());
        for (i, (client, listener)) in self.pairs.iter_mut().enumerate() {
            let probe = probe_bytes(i);
            client.write_all(&probe).await?;
            let mut back = [0u8; HELD_PROBE];
            within(WAIT, "a probe's read", listener.read_exact(&mut back)).await??;
            sent.update(&probe);
            got.update(back);
        }
        if sent.finalize() != got.finalize() {
            return Err(mismatch("the held splices' probes"));
        }
        Ok(())
    }
}
