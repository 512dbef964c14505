//! `msocket bench multipath`: Wi-Fi and cellular at once, in the network lab (Linux,
//! root), each path policy side by side with single-path TCP on each link and Linux MPTCP.
//!
//! The phone has Wi-Fi (default `20mbit 10ms`) and cellular (`10mbit 40ms`), both behind
//! NAT; the server sends, the phone receives. Workloads:
//!
//! - `bulk`: a download of `--bytes` as fast as it goes. Completion = from the phone's
//!   connect returning to its last read; aggregation efficiency = goodput over the sum of
//!   the two links' rates.
//! - `bulk-lossy`: the same with a lossy Wi-Fi link (default `20mbit 10ms 2% loss`).
//! - `streaming`: `--stream-mbit` for `--stream-secs`, written every 10 ms; in the middle
//!   Wi-Fi goes down (link down) for `--outage-secs`, then comes back. A stall is a gap
//!   of at least `--stall-ms` between two reads of the phone.
//! - `handoff`: a shorter stream; halfway, Wi-Fi goes down for good while cellular is up
//!   (make-before-break). The outage is the longest gap between reads that ends within
//!   three seconds of the event: what the application sees of the hand-off.
//!
//! Energy: a sampler in the phone's namespace reads `wifi0`'s and `cell0`'s byte counters
//! every 100 ms (the model's bin) and feeds them to the radio model of `msocket::energy`
//! (Wi-Fi and LTE), each radio charged its full tail at the end. Every system is charged
//! the same way, from what its packets really did on each interface; msocket's own
//! estimate (from its subflows' bytes) is reported beside it as `energy_j_flow`.
//!
//! Every run builds a fresh lab and tears it down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use msocket::energy::{EnergyMeter, RadioParams};
use msocket::PathPolicy;
use msocket_lab::{Access, LabConfig, LinkSpec, Netns, NsTask};
use serde::Serialize;

use crate::figures::{median, ms, round};
use crate::lab_run::{lab_ready, Plan, Recv, Scene, STEP};
use crate::raw::{mptcp_note, mptcp_setup, raw_phone, raw_server, RAW_PORT};
use crate::BenchError;

/// Workloads, in the order run.
pub const WORKLOADS: [&str; 4] = ["bulk", "bulk-lossy", "streaming", "handoff"];
/// Systems, in the order run.
pub const SYSTEMS: [&str; 4] = ["msocket", "mptcp", "tcp-wifi", "tcp-cell"];
/// How long the hand-off workload streams; Wi-Fi goes at half time.
const HANDOFF_STREAM: Duration = Duration::from_secs(8);
/// The hand-off's outage is the longest gap between reads ending this soon after it.
const HANDOFF_WINDOW: Duration = Duration::from_secs(3);
/// The energy sampler's period: the radio model's bin.
const SAMPLE: Duration = Duration::from_millis(100);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub workloads: Vec<String>,
    pub systems: Vec<String>,
    pub policies: Vec<PathPolicy>,
    pub wifi: LinkSpec,
    pub cell: LinkSpec,
    pub lossy_wifi: LinkSpec,
    /// Bytes of a bulk download.
    pub bytes: usize,
    pub stream_mbit: f64,
    pub stream_secs: u64,
    pub outage_secs: u64,
    /// A gap between reads at least this long is a stall.
    pub stall: Duration,
    pub reps: usize,
    pub handoff_reps: usize,
    pub json: bool,
}

/// One workload × system × policy, over its repetitions (medians unless said otherwise).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: String,
    pub system: String,
    /// msocket: its path policy; mptcp: "default" (the kernel's scheduler); tcp: null.
    pub policy: Option<String>,
    pub wifi: String,
    pub cell: String,
    pub reps: usize,
    /// Repetitions that failed (an error, a SHA-256 mismatch, or no completion in time).
    pub died_reps: usize,
    /// From the phone's connect returning to its last read, seconds.
    pub completion_s: Option<f64>,
    pub completion_s_all: Vec<Option<f64>>,
    /// Application bytes received over the completion time, Mbit/s.
    pub goodput_mbps: Option<f64>,
    /// Bulk workloads: goodput over the sum of both links' rates.
    pub aggregation_efficiency: Option<f64>,
    /// Gaps between reads of at least `stall_threshold_ms`: count and summed length.
    pub stalls: Option<f64>,
    pub stall_ms: Option<f64>,
    pub stall_threshold_ms: u64,
    /// The longest gap between two reads.
    pub max_gap_ms: Option<f64>,
    /// Hand-off: the longest gap between reads that ended within 3 s of Wi-Fi going down
    /// (median and maximum), and the surviving (cellular) link's configured RTT.
    pub outage_ms: Option<f64>,
    pub outage_ms_max: Option<f64>,
    /// Hand-off: from Wi-Fi going down to the read that ended that gap (the gap less the
    /// time since the read before the event), median and in RTTs of the surviving link.
    pub resume_ms: Option<f64>,
    pub resume_rtts: Option<f64>,
    pub surviving_rtt_ms: Option<f64>,
    /// Modelled radio energy of the phone (Wi-Fi + LTE, full tails), joules.
    pub energy_j: Option<f64>,
    pub energy_wifi_j: Option<f64>,
    pub energy_cell_j: Option<f64>,
    /// msocket's own estimate from its subflows (Flow::energy_joules).
    pub energy_j_flow: Option<f64>,
    /// Share of the phone's interface bytes (both directions) that crossed cellular.
    pub cell_share: Option<f64>,
    /// The most, over the repetitions, of the bytes sent that never arrived intact.
    pub bytes_lost: u64,
    /// Every repetition delivered exactly what was sent (SHA-256).
    pub sha256_match: bool,
    pub notes: Vec<String>,
}

/// One repetition.
#[derive(Debug, Default)]
struct Rep {
    completion: Option<Duration>,
    received: u64,
    stalls: usize,
    stall: Duration,
    max_gap: Duration,
    outage: Option<Duration>,
    resume: Option<Duration>,
    radios: RadioUse,
    energy_flow: Option<f64>,
    bytes_lost: u64,
    /// Everything sent arrived, intact (SHA-256); a repetition that did not died.
    sha_ok: bool,
    notes: Vec<String>,
}

/// Runs the benchmark and prints its rows.
pub fn run(opts: &Options) -> Result<(), BenchError> {
    check(opts).map_err(|e| BenchError(format!("bench multipath: {e}")))?;
    if let Err(e) = lab_ready() {
        return Err(BenchError(format!("bench multipath: {e}; run it as root on Linux (e.g. `sudo msocket bench multipath`)")));
    }
    let mut rows = Vec::new();
    for workload in &opts.workloads {
        for system in &opts.systems {
            if workload == "handoff" && system.starts_with("tcp") {
                continue; // one path: nothing to hand off to
            }
            let policies: Vec<Option<PathPolicy>> = match system.as_str() {
                "msocket" => opts.policies.iter().copied().map(Some).collect(),
                _ => vec![None],
            };
            for policy in policies {
                let n = if workload == "handoff" { opts.handoff_reps } else { opts.reps };
                let mut reps = Vec::new();
                for rep in 1..=n {
                    let label = format!("{workload} {system}{} rep {rep}/{n}", policy.map(|p| format!(" {p}")).unwrap_or_default());
                    eprint!("{label}: ");
                    let r = run_rep(workload, system, policy, opts).map_err(|e| BenchError(format!("{label}: {e}")))?;
                    eprintln!("{}", summary(&r));
                    reps.push(r);
                }
                rows.push(row(workload, system, policy, opts, &reps));
            }
        }
    }
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    Ok(())
}

fn check(opts: &Options) -> Result<(), String> {
    for w in &opts.workloads {
        if !WORKLOADS.contains(&w.as_str()) {
            return Err(format!("unknown workload {w:?} (known: {})", WORKLOADS.join(", ")));
        }
    }
    for s in &opts.systems {
        if !SYSTEMS.contains(&s.as_str()) {
            return Err(format!("unknown system {s:?} (known: {})", SYSTEMS.join(", ")));
        }
    }
    for (what, link) in [("--wifi", &opts.wifi), ("--cell", &opts.cell), ("--lossy-wifi", &opts.lossy_wifi)] {
        if link.rate_bps().is_none() {
            return Err(format!("{what} {link} needs a rate (aggregation is measured against it)"));
        }
    }
    if opts.reps == 0 || opts.handoff_reps == 0 {
        return Err("--reps and --handoff-reps must be at least 1".into());
    }
    if opts.bytes < 1 << 20 {
        return Err("--bytes must be at least 1 MiB".into());
    }
    if !(opts.stream_mbit > 0.0 && opts.stream_mbit <= 1000.0) {
        return Err("--stream-mbit must be above 0 and at most 1000".into());
    }
    if opts.stream_secs < 4 || opts.outage_secs * 2 > opts.stream_secs {
        return Err("--stream-secs must be at least 4 and at least twice --outage-secs".into());
    }
    Ok(())
}

fn summary(r: &Rep) -> String {
    let mut s = if !r.sha_ok {
        "died".to_string()
    } else {
        format!("{:.2} s", r.completion.map_or(f64::NAN, |d| d.as_secs_f64()))
    };
    s += &format!(
        ", {} stalls ({:.0} ms), max gap {:.0} ms, {:.1} J (Wi-Fi {:.1}, LTE {:.1})",
        r.stalls,
        ms(r.stall),
        ms(r.max_gap),
        r.radios.total(),
        r.radios.wifi_j,
        r.radios.cell_j
    );
    if let (Some(o), Some(r)) = (r.outage, r.resume) {
        s += &format!(", hand-off: gap {:.0} ms, data again {:.0} ms after the event", ms(o), ms(r));
    }
    if !r.notes.is_empty() {
        s += &format!(" ({})", r.notes.join("; "));
    }
    s
}

fn lab_config(workload: &str, opts: &Options) -> LabConfig {
    LabConfig {
        wifi: if workload == "bulk-lossy" { opts.lossy_wifi } else { opts.wifi },
        cell: opts.cell,
        ..LabConfig::default()
    }
}

/// What the server sends in `workload`.
fn server_plan(workload: &str, opts: &Options) -> Plan {
    let rate = (opts.stream_mbit * 1e6 / 8.0) as u64;
    match workload {
        "streaming" => Plan::rate((rate * opts.stream_secs) as usize, 11, rate),
        "handoff" => Plan::rate((rate as f64 * HANDOFF_STREAM.as_secs_f64()) as usize, 11, rate),
        _ => Plan::bulk(opts.bytes, 11),
    }
}

/// How long a run may take before it counts as dead: twice what the slower link needs for
/// it alone (or the stream's own length), plus half a minute.
fn run_bound(plan: &Plan, lab: &LabConfig) -> Duration {
    let slowest = [lab.wifi.rate_bps(), lab.cell.rate_bps()].into_iter().flatten().min().unwrap_or(1_000_000);
    let alone = Duration::from_secs_f64(plan.len as f64 * 8.0 / slowest as f64);
    let paced = plan.pace * plan.len.div_ceil(plan.chunk) as u32;
    alone.max(paced) * 2 + Duration::from_secs(30)
}

/// A running download, whatever the system.
enum Download {
    Msocket { server: crate::lab_run::Side, phone: crate::lab_run::Side },
    Raw { server: crate::raw::RawSide, phone: crate::raw::RawSide, mptcp: bool },
}

impl Download {
    fn recv(&self) -> &Arc<Recv> {
        match self {
            Download::Msocket { phone, .. } => &phone.recv,
            Download::Raw { phone, .. } => &phone.recv,
        }
    }
}

fn start(scene: &Scene, system: &str, policy: Option<PathPolicy>, plan: Plan, bound: Duration) -> Result<Download, String> {
    let lab = &scene.lab;
    let nothing = Plan::receive_only();
    match system {
        "msocket" => {
            let (server, _) = scene.launch_server(plan, bound, None)?;
            let phone = scene.launch_phone_with(nothing, bound, None, policy.unwrap_or_default())?;
            Ok(Download::Msocket { server, phone })
        }
        _ => {
            let mptcp = system == "mptcp";
            if mptcp {
                mptcp_setup(scene)?;
            }
            let access = if system == "tcp-cell" { Access::Cell } else { Access::Wifi };
            let bind = lab.phone_addr(access).ok_or("the phone has no address on the link")?;
            let server = raw_server(lab.server(), plan, mptcp)?;
            let to = (lab.server_addr(), RAW_PORT).into();
            let phone = raw_phone(lab.phone(), bind, to, nothing, mptcp)?;
            Ok(Download::Raw { server, phone, mptcp })
        }
    }
}

/// How a download ended.
struct Finished {
    connected: Option<Instant>,
    received_ok: bool,
    energy_flow: Option<f64>,
    notes: Vec<String>,
}

fn finish(download: Download, plan: &Plan, scene: &Scene, limit: Duration) -> Finished {
    let expected = plan.expected_sha();
    let mut notes = Vec::new();
    match download {
        Download::Msocket { server, phone } => {
            let phone_out = phone.finish(limit);
            let server_out = server.finish(limit);
            if let Err(e) = &server_out {
                notes.push(format!("server: {e}"));
            }
            match phone_out {
                Ok(o) => {
                    for e in [&o.write_error, &o.read_error].into_iter().flatten() {
                        notes.push(format!("phone: {e}"));
                    }
                    Finished {
                        connected: Some(o.connected_at),
                        received_ok: o.received_len == plan.len as u64 && o.received_sha == expected,
                        energy_flow: o.energy_joules,
                        notes,
                    }
                }
                Err(e) => {
                    notes.push(format!("phone: {e}"));
                    Finished { connected: None, received_ok: false, energy_flow: None, notes }
                }
            }
        }
        Download::Raw { server, phone, mptcp } => {
            let connected = phone.counters.connected();
            let sha = phone.task.join(limit);
            // The server's task ends once the phone's FIN (sent at once) and its own
            // data are through.
            let _ = server.task.join(limit);
            for (who, side) in [("phone", &phone.counters), ("server", &server.counters)] {
                if let Some(e) = side.error() {
                    notes.push(format!("{who}: {e}"));
                }
            }
            if mptcp {
                notes.extend(mptcp_note(scene.lab.phone()));
            }
            let received_ok = match sha {
                Ok(sha) => sha == expected && phone.recv.bytes() == plan.len as u64,
                Err(e) => {
                    notes.push(format!("phone: {e}"));
                    false
                }
            };
            Finished { connected, received_ok, energy_flow: None, notes }
        }
    }
}

fn run_rep(workload: &str, system: &str, policy: Option<PathPolicy>, opts: &Options) -> Result<Rep, String> {
    let config = lab_config(workload, opts);
    let plan = server_plan(workload, opts);
    let bound = run_bound(&plan, &config);
    let scene = Scene::start(config.clone())?;
    let radios = Radios::start(scene.lab.phone())?;
    let download = start(&scene, system, policy, plan, bound)?;
    let recv = download.recv().clone();
    let began = Instant::now();
    let rate = plan.chunk as f64 / plan.pace.as_secs_f64().max(1e-9);
    let mut event = None;
    match workload {
        "streaming" => {
            let before = (opts.stream_secs - opts.outage_secs) as f64 / 2.0;
            if recv.wait_bytes((rate * before) as u64, bound) {
                scene.lab.link_down(Access::Wifi).map_err(|e| format!("Wi-Fi down: {e}"))?;
                event = Some(Instant::now());
                // The outage itself: a stretch of wall time, the workload's shape.
                std::thread::sleep(Duration::from_secs(opts.outage_secs));
                scene.lab.link_up(Access::Wifi).map_err(|e| format!("Wi-Fi up: {e}"))?;
            }
        }
        "handoff" if recv.wait_bytes((rate * HANDOFF_STREAM.as_secs_f64() / 2.0) as u64, bound) => {
            scene.lab.link_down(Access::Wifi).map_err(|e| format!("Wi-Fi down: {e}"))?;
            event = Some(Instant::now());
        }
        _ => {}
    }
    let left = bound.saturating_sub(began.elapsed());
    let complete = recv.wait_bytes(plan.len as u64, left);
    let done = finish(download, &plan, &scene, STEP);
    let radios = radios.stop();
    drop(scene);

    let mut rep = Rep { energy_flow: done.energy_flow, notes: done.notes, ..Rep::default() };
    match radios {
        Ok(r) => rep.radios = r,
        Err(e) => rep.notes.push(e),
    }
    rep.received = recv.bytes();
    rep.sha_ok = complete && done.received_ok;
    if !complete {
        rep.notes.push(format!("{} of {} bytes within {} s", recv.bytes(), plan.len, bound.as_secs()));
    } else if !done.received_ok {
        rep.notes.push("SHA-256 of what arrived differs from what was sent".into());
    }
    rep.bytes_lost = match (rep.sha_ok, complete) {
        (true, _) => 0,
        (false, true) => plan.len as u64, // all of it arrived, but not intact
        (false, false) => plan.len as u64 - recv.bytes().min(plan.len as u64),
    };
    if let (Some(connected), Some(last)) = (done.connected, recv.last_read()) {
        if complete {
            rep.completion = Some(last.saturating_duration_since(connected));
        }
    }
    let all_gaps = recv.gaps();
    let stalls: Vec<Duration> = all_gaps.iter().map(|(_, g)| *g).filter(|g| *g >= opts.stall).collect();
    rep.stalls = stalls.len();
    rep.stall = stalls.iter().sum();
    rep.max_gap = all_gaps.iter().map(|(_, g)| *g).max().unwrap_or_default();
    if let (Some(at), "handoff") = (event, workload) {
        let longest = all_gaps
            .iter()
            .filter(|(end, _)| *end > at && *end <= at + HANDOFF_WINDOW)
            .max_by_key(|(_, g)| *g);
        rep.outage = longest.map(|(_, g)| *g);
        rep.resume = longest.map(|(end, _)| end.saturating_duration_since(at));
    } else if event.is_none() && workload != "bulk" && workload != "bulk-lossy" {
        rep.notes.push("the stream ended before Wi-Fi could go down".into());
    }
    Ok(rep)
}

fn row(workload: &str, system: &str, policy: Option<PathPolicy>, opts: &Options, reps: &[Rep]) -> Row {
    let config = lab_config(workload, opts);
    let ok: Vec<&Rep> = reps.iter().filter(|r| r.sha_ok).collect();
    let med = |f: &dyn Fn(&Rep) -> Option<f64>| median(ok.iter().filter_map(|r| f(r)).collect());
    let completion = med(&|r| r.completion.map(|d| d.as_secs_f64()));
    let goodput = med(&|r| Some(r.received as f64 * 8.0 / r.completion?.as_secs_f64() / 1e6));
    let link_sum = config.wifi.rate_bps().unwrap_or(0) + config.cell.rate_bps().unwrap_or(0);
    let bulk = workload.starts_with("bulk");
    let outages: Vec<f64> = ok.iter().filter_map(|r| r.outage.map(ms)).collect();
    let resume = median(ok.iter().filter_map(|r| r.resume.map(ms)).collect());
    let surviving_rtt = ms(config.cell.delay() * 2);
    let cell_bytes: u64 = ok.iter().map(|r| r.radios.cell_bytes).sum();
    let all_bytes: u64 = ok.iter().map(|r| r.radios.cell_bytes + r.radios.wifi_bytes).sum();
    Row {
        workload: workload.to_string(),
        system: system.to_string(),
        policy: match system {
            "msocket" => policy.map(|p| p.name().to_string()),
            "mptcp" => Some("default".into()),
            _ => None,
        },
        wifi: config.wifi.to_string(),
        cell: config.cell.to_string(),
        reps: reps.len(),
        died_reps: reps.len() - ok.len(),
        completion_s: completion.map(|c| round(c, 3)),
        completion_s_all: reps.iter().map(|r| r.completion.filter(|_| r.sha_ok).map(|d| round(d.as_secs_f64(), 3))).collect(),
        goodput_mbps: goodput.map(|g| round(g, 2)),
        aggregation_efficiency: goodput.filter(|_| bulk && link_sum > 0).map(|g| round(g * 1e6 / link_sum as f64, 3)),
        stalls: med(&|r| Some(r.stalls as f64)),
        stall_ms: med(&|r| Some(ms(r.stall))),
        stall_threshold_ms: opts.stall.as_millis() as u64,
        max_gap_ms: med(&|r| Some(ms(r.max_gap))),
        outage_ms: median(outages.clone()),
        outage_ms_max: outages.iter().copied().reduce(f64::max),
        resume_ms: resume,
        resume_rtts: resume.filter(|_| surviving_rtt > 0.0).map(|r| round(r / surviving_rtt, 2)),
        surviving_rtt_ms: (workload == "handoff").then_some(surviving_rtt),
        energy_j: med(&|r| Some(round(r.radios.total(), 2))),
        energy_wifi_j: med(&|r| Some(round(r.radios.wifi_j, 2))),
        energy_cell_j: med(&|r| Some(round(r.radios.cell_j, 2))),
        energy_j_flow: med(&|r| r.energy_flow.map(|j| round(j, 2))),
        cell_share: (all_bytes > 0).then(|| round(cell_bytes as f64 / all_bytes as f64, 3)),
        bytes_lost: reps.iter().map(|r| r.bytes_lost).max().unwrap_or(0),
        sha256_match: reps.iter().all(|r| r.sha_ok),
        notes: reps.iter().flat_map(|r| r.notes.clone()).collect(),
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<11} {:<9} {:<12} {:>8} {:>8} {:>6} {:>7} {:>8} {:>9} {:>8} {:>6} {:>5}",
        "workload", "system", "policy", "done s", "Mbit/s", "aggr", "stalls", "stall ms", "outage ms", "energy J", "cell", "died"
    );
    let f = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    for r in rows {
        println!(
            "{:<11} {:<9} {:<12} {:>8} {:>8} {:>6} {:>7} {:>8} {:>9} {:>8} {:>6} {:>5}",
            r.workload,
            r.system,
            r.policy.as_deref().unwrap_or("-"),
            f(r.completion_s, 2),
            f(r.goodput_mbps, 1),
            f(r.aggregation_efficiency, 2),
            f(r.stalls, 0),
            f(r.stall_ms, 0),
            f(r.outage_ms, 0),
            f(r.energy_j, 1),
            f(r.cell_share, 2),
            format!("{}/{}", r.died_reps, r.reps)
        );
    }
}

/// What the phone's radios did during a run, by the energy model.
#[derive(Debug, Default, Clone, Copy)]
struct RadioUse {
    wifi_j: f64,
    cell_j: f64,
    /// Bytes through each interface, both directions.
    wifi_bytes: u64,
    cell_bytes: u64,
}

impl RadioUse {
    fn total(&self) -> f64 {
        self.wifi_j + self.cell_j
    }
}

/// The phone's energy sampler: a task in its namespace reading interface counters.
struct Radios {
    task: NsTask<RadioUse>,
    stop: Arc<AtomicBool>,
}

impl Radios {
    fn start(phone: &Netns) -> Result<Radios, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = phone
            .spawn_runtime(move || async move {
                let t0 = Instant::now();
                let mut meters = [EnergyMeter::new(RadioParams::WIFI, t0), EnergyMeter::new(RadioParams::LTE, t0)];
                let mut last = counters();
                let mut total = [0u64; 2];
                let mut tick = tokio::time::interval(SAMPLE);
                // With MSOCKET_BENCH_RADIO set: bytes per interface in each second, to see
                // where the energy went.
                let mut per_second: Vec<[u64; 2]> = Vec::new();
                loop {
                    tick.tick().await;
                    let now = Instant::now();
                    let seen = counters();
                    for i in 0..2 {
                        // A counter that went backwards (an interface re-created) restarts.
                        let rx = seen[i].0.saturating_sub(last[i].0);
                        let tx = seen[i].1.saturating_sub(last[i].1);
                        meters[i].on_bytes(now, tx, rx);
                        total[i] += rx + tx;
                        let second = (now - t0).as_secs() as usize;
                        per_second.resize(per_second.len().max(second + 1), [0; 2]);
                        per_second[second][i] += rx + tx;
                    }
                    last = seen;
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                }
                if std::env::var_os("MSOCKET_BENCH_RADIO").is_some() {
                    let line: Vec<String> =
                        per_second.iter().enumerate().map(|(s, [w, c])| format!("{s}s:{}k/{}", w / 1000, c)).collect();
                    eprintln!("bytes per second (Wi-Fi kB/cellular B): {}", line.join(" "));
                }
                // Each radio pays its whole tail.
                for m in &mut meters {
                    let idle = m.idle_at();
                    m.advance(idle);
                }
                RadioUse { wifi_j: meters[0].joules(), cell_j: meters[1].joules(), wifi_bytes: total[0], cell_bytes: total[1] }
            })
            .map_err(|e| format!("start the energy sampler: {e}"))?;
        Ok(Radios { task, stop })
    }

    fn stop(self) -> Result<RadioUse, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.join(STEP).map_err(|e| format!("the energy sampler failed: {e}"))
    }
}

/// (received, sent) bytes of the phone's `wifi0` and `cell0`, as this thread's network
/// namespace sees them (zeros for an interface that is missing).
fn counters() -> [(u64, u64); 2] {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default();
    let mut out = [(0, 0); 2];
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else { continue };
        let i = match name.trim() {
            n if n == Access::Wifi.ifname() => 0,
            n if n == Access::Cell.ifname() => 1,
            _ => continue,
        };
        let f: Vec<u64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if f.len() >= 9 {
            out[i] = (f[0], f[8]);
        }
    }
    out
}
