//! `msocket bench mobility`: hand-offs in the network lab (`msocket-lab`, Linux, root),
//! msocket side by side with a plain TCP connection and Linux MPTCP.
//!
//! For every scenario × RTT × system × repetition a fresh lab is built (phone with Wi-Fi
//! and cellular behind NAT, a server, the name server in `core`), a two-way stream runs
//! (`bytes` each way, paced at about 2 MB/s so that it is still running when the move
//! happens), the move is made once both directions are a quarter through, and each
//! receiver's reads are timed. Recovery = from the moment the move's commands completed
//! to the read that ends the outage — the first gap between reads of at least half an RTT
//! (and 32 ms, two pauses of the paced writer) — for the slower of the two directions.
//! Reads right after the move may be data that was in flight, hence the gap; later gaps
//! (a new path's slow start) are not the outage: a read that delivers a byte written
//! after the move (which cannot have been in flight before it) ends the recovery even if
//! a long gap follows. A system that delivers nothing more within `give_up` after the
//! move, or whose connection fails, "died". Every lab is torn down (namespaces deleted) before the
//! next one is built. With `MSOCKET_BENCH_ARRIVALS` set, each receiver's reads after the
//! move are printed (time since the move: bytes so far), to see where a recovery went.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use msocket_lab::{Access, LabConfig};
use serde::Serialize;

use crate::figures::{median, ms};
use crate::lab_run::{lab_ready, Plan, Recv, Scene, STEP};
use crate::raw::{mptcp_note, mptcp_setup, raw_phone, raw_server, RawSide, RAW_PORT};
use crate::BenchError;

/// Scenarios, in the order run.
pub const SCENARIOS: [&str; 6] = ["wifi-to-cell", "link-down", "server-renumber", "both-move", "nat-rebind", "break-before-make"];
/// Systems, in the order run.
pub const SYSTEMS: [&str; 3] = ["msocket", "tcp", "mptcp"];
/// The renumbered server's address.
const SERVER_MOVED: Ipv4Addr = Ipv4Addr::new(172, 16, 100, 20);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub rtts: Vec<u32>,
    pub reps: usize,
    pub scenarios: Vec<String>,
    pub systems: Vec<String>,
    /// Bytes each way per run.
    pub bytes: usize,
    /// How long after the move a system may take before it counts as dead.
    pub give_up: Duration,
    /// Extra one-way delay of the cellular link over Wi-Fi's, in ms.
    pub cell_extra_ms: u32,
    pub json: bool,
}

/// One scenario × RTT × system, over all repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub rtt_ms: u32,
    pub system: String,
    /// One-way delays configured on the two access links.
    pub wifi_one_way_ms: f64,
    pub cell_one_way_ms: f64,
    pub reps: usize,
    /// Repetitions in which the connection did not recover within `give_up_ms`.
    pub died_reps: usize,
    /// True if any repetition died.
    pub died: bool,
    /// Median and maximum over the repetitions that recovered (null: none did).
    pub recovery_ms_p50: Option<f64>,
    pub recovery_ms_max: Option<f64>,
    pub recovery_rtts_p50: Option<f64>,
    /// Every repetition, in order (null: died).
    pub recovery_ms_all: Vec<Option<f64>>,
    /// The most, over the repetitions, of the bytes written by an application that never
    /// reached the other one (both directions added). For msocket: the whole stream
    /// unless the received SHA-256 equals the sent one.
    pub bytes_lost: u64,
    /// msocket and recovered runs: both directions' SHA-256 matched in every repetition.
    pub sha256_match: Option<bool>,
    /// msocket, server moves: from the move until the name server acknowledged the
    /// server's new record, and recovery counted from then (median over the repetitions).
    pub record_updated_ms_p50: Option<f64>,
    pub recovery_after_record_ms_p50: Option<f64>,
    pub recovery_after_record_rtts_p50: Option<f64>,
    /// msocket, moves of an endpoint's own addresses: from the start of the move's
    /// command to the moment that endpoint had applied the change (its netlink watcher saw
    /// it and its flows acted: subflows retired, peers told), median and maximum.
    pub detect_ms_p50: Option<f64>,
    pub detect_ms_max: Option<f64>,
    pub give_up_ms: u64,
    /// Errors and remarks of the repetitions (connection errors of the dead ones).
    pub notes: Vec<String>,
}

/// One repetition.
#[derive(Debug, Clone, Default)]
struct Rep {
    recovery: Option<Duration>,
    died: bool,
    bytes_lost: u64,
    sha_ok: Option<bool>,
    note: Option<String>,
    /// msocket: when the server's new record was acknowledged by the name server.
    record_updated: Option<Instant>,
    moved: Option<Instant>,
    /// msocket: how long after the move began the moving endpoint applied it.
    detected: Option<Duration>,
}

/// Runs the benchmark and prints its rows.
pub fn run(opts: &Options) -> Result<(), BenchError> {
    if let Err(e) = lab_ready() {
        return Err(BenchError(format!("bench mobility: {e}; run it as root on Linux (e.g. `sudo msocket bench mobility`)")));
    }
    if opts.reps == 0 || opts.rtts.is_empty() || opts.rtts.contains(&0) || opts.bytes < 64 * 1024 {
        return Err(BenchError("--reps and every --rtts value must be above 0, --bytes at least 65536".into()));
    }
    for s in &opts.scenarios {
        if !SCENARIOS.contains(&s.as_str()) {
            return Err(BenchError(format!("unknown scenario {s:?} (known: {})", SCENARIOS.join(", "))));
        }
    }
    for s in &opts.systems {
        if !SYSTEMS.contains(&s.as_str()) {
            return Err(BenchError(format!("unknown system {s:?} (known: {})", SYSTEMS.join(", "))));
        }
    }
    let mut rows = Vec::new();
    for scenario in &opts.scenarios {
        for &rtt in &opts.rtts {
            for system in &opts.systems {
                let mut reps = Vec::new();
                for rep in 1..=opts.reps {
                    eprint!("{scenario} rtt {rtt} ms {system} rep {rep}/{}: ", opts.reps);
                    let r = match run_rep(scenario, rtt, system, opts) {
                        Ok(r) => r,
                        Err(e) => return Err(BenchError(format!("{scenario} rtt {rtt} ms {system} rep {rep}: {e}"))),
                    };
                    let note = r.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
                    match (r.died, r.recovery) {
                        (true, _) => eprintln!("died, {} bytes lost{note}", r.bytes_lost),
                        (false, Some(d)) => eprintln!("recovered in {} ms, {} bytes lost{note}", d.as_millis(), r.bytes_lost),
                        (false, None) => eprintln!("not measured, {} bytes lost{note}", r.bytes_lost),
                    }
                    reps.push(r);
                }
                rows.push(row(scenario, rtt, system, opts, &reps));
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

fn row(scenario: &str, rtt: u32, system: &str, opts: &Options, reps: &[Rep]) -> Row {
    let ok: Vec<f64> = reps.iter().filter_map(|r| r.recovery).map(ms).collect();
    let max = ok.iter().copied().reduce(f64::max);
    let p50 = median(ok);
    let died_reps = reps.iter().filter(|r| r.died).count();
    let shas: Vec<bool> = reps.iter().filter_map(|r| r.sha_ok).collect();
    let updated: Vec<(Duration, Option<Duration>)> = reps
        .iter()
        .filter_map(|r| Some((r.record_updated? - r.moved?, r.recovery)))
        .collect();
    let after_record = median(updated.iter().filter_map(|(u, rec)| Some(ms(rec.as_ref()?.saturating_sub(*u)))).collect());
    Row {
        scenario: scenario.to_string(),
        rtt_ms: rtt,
        system: system.to_string(),
        wifi_one_way_ms: rtt as f64 / 2.0,
        cell_one_way_ms: rtt as f64 / 2.0 + opts.cell_extra_ms as f64,
        reps: reps.len(),
        died_reps,
        died: died_reps > 0,
        recovery_ms_p50: p50,
        recovery_ms_max: max,
        recovery_rtts_p50: p50.map(|p| rtts(p, rtt)),
        recovery_ms_all: reps.iter().map(|r| r.recovery.map(ms)).collect(),
        bytes_lost: reps.iter().map(|r| r.bytes_lost).max().unwrap_or(0),
        sha256_match: (!shas.is_empty()).then(|| shas.iter().all(|&s| s)),
        record_updated_ms_p50: median(updated.iter().map(|(u, _)| ms(*u)).collect()),
        recovery_after_record_ms_p50: after_record,
        recovery_after_record_rtts_p50: after_record.map(|p| rtts(p, rtt)),
        detect_ms_p50: median(reps.iter().filter_map(|r| r.detected).map(ms).collect()),
        detect_ms_max: reps.iter().filter_map(|r| r.detected).map(ms).reduce(f64::max),
        give_up_ms: opts.give_up.as_millis() as u64,
        notes: reps.iter().filter_map(|r| r.note.clone()).collect(),
    }
}

/// `ms` in round trips, two decimals.
fn rtts(ms: f64, rtt: u32) -> f64 {
    (ms / rtt as f64 * 100.0).round() / 100.0
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<17} {:>6} {:<8} {:>9} {:>9} {:>8} {:>6} {:>11} {:>10}",
        "scenario", "rtt ms", "system", "p50 ms", "max ms", "p50 RTT", "died", "bytes lost", "detect ms"
    );
    let f = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    for r in rows {
        println!(
            "{:<17} {:>6} {:<8} {:>9} {:>9} {:>8} {:>6} {:>11} {:>10}",
            r.scenario,
            r.rtt_ms,
            r.system,
            f(r.recovery_ms_p50, 0),
            f(r.recovery_ms_max, 0),
            f(r.recovery_rtts_p50, 1),
            format!("{}/{}", r.died_reps, r.reps),
            r.bytes_lost,
            f(r.detect_ms_p50, 1)
        );
    }
}

fn lab_config(rtt: u32, cell_extra_ms: u32) -> Result<LabConfig, String> {
    let one_way = |us: u32| format!("{us}us").parse().map_err(|e| format!("link spec: {e}"));
    Ok(LabConfig {
        wifi: one_way(rtt * 500)?,
        cell: one_way(rtt * 500 + cell_extra_ms * 1000)?,
        ..LabConfig::default()
    })
}

/// Makes the scenario's move; returns when its commands completed.
fn make_move(scene: &Scene, scenario: &str) -> Result<Instant, String> {
    make_move_from(scene, scenario).map(|(_, done)| done)
}

/// Makes the scenario's move; returns when its commands started and completed.
fn make_move_from(scene: &Scene, scenario: &str) -> Result<(Instant, Instant), String> {
    let started = Instant::now();
    let lab = &scene.lab;
    let r = match scenario {
        "wifi-to-cell" => lab.del_addr(Access::Wifi).map(|_| ()),
        "link-down" => lab.link_down(Access::Wifi),
        "server-renumber" => lab.renumber_server(SERVER_MOVED).map(|_| ()),
        // Neither end can reach the other's old address.
        "both-move" => lab.del_addr(Access::Wifi).and_then(|_| lab.renumber_server(SERVER_MOVED)).map(|_| ()),
        "nat-rebind" => lab.nat_rebind(Access::Wifi).map(|_| ()),
        // Cellular was down from the start: Wi-Fi goes, then cellular comes up. Measured
        // from the moment the new path is usable.
        "break-before-make" => lab.del_addr(Access::Wifi).and_then(|_| lab.link_up(Access::Cell)),
        other => return Err(format!("unknown scenario {other}")),
    };
    r.map_err(|e| format!("the move failed: {e}"))?;
    Ok((started, Instant::now()))
}

fn run_rep(scenario: &str, rtt: u32, system: &str, opts: &Options) -> Result<Rep, String> {
    let scene = Scene::start(lab_config(rtt, opts.cell_extra_ms)?)?;
    if system == "mptcp" {
        mptcp_setup(&scene)?;
    }
    if scenario == "break-before-make" {
        scene.lab.link_down(Access::Cell).map_err(|e| format!("cellular down: {e}"))?;
    }
    match system {
        "msocket" => msocket_rep(&scene, scenario, rtt, opts),
        "tcp" => raw_rep(&scene, scenario, rtt, opts, false),
        _ => raw_rep(&scene, scenario, rtt, opts, true),
    }
}

/// How long to wait for a run to complete after its move: the give-up time plus the
/// paced stream's own remaining duration.
fn completion_bound(plan: &Plan, give_up: Duration) -> Duration {
    let chunks = plan.len.div_ceil(plan.chunk) as u32;
    give_up + plan.pace * chunks
}

fn msocket_rep(scene: &Scene, scenario: &str, rtt: u32, opts: &Options) -> Result<Rep, String> {
    let len = opts.bytes;
    let (server_plan, phone_plan) = (Plan::paced(len, 11), Plan::paced(len, 22));
    let (registered_tx, registered) = std::sync::mpsc::channel();
    let (server, _) = scene.launch_server(server_plan, opts.give_up, Some(registered_tx))?;
    let phone = scene.launch_phone(phone_plan, opts.give_up, None)?;
    if !ready_to_move(&phone.recv, &server.recv, len as u64) {
        return Err("the flow did not get a quarter through before the move".into());
    }
    let mut rep = Rep::default();
    while registered.try_recv().is_ok() {} // the registrations before the move
    let (move_started, moved) = make_move_from(scene, scenario)?;
    let written = Written::at_move(&server.written, &phone.written);
    let bound = moved + completion_bound(&phone_plan, opts.give_up);
    let left = || bound.saturating_duration_since(Instant::now());
    let complete = phone.recv.wait_bytes(len as u64, left()) && server.recv.wait_bytes(len as u64, left());
    let (p_recv, s_recv) = (phone.recv.clone(), server.recv.clone());
    // The first registration acknowledged since the move began: the record was updated
    // then (possibly before the move's last command returned: counted as 0).
    rep.record_updated = registered.try_iter().find(|at| *at > move_started).map(|at| at.max(moved));
    // A clean end also waits for the flow to close (bounded inside `stream`).
    let phone_out = phone.finish(left() + STEP);
    let server_out = server.finish(left() + STEP);
    let mut notes = Vec::new();
    let mut sha_ok = true;
    for (who, out, plan) in [("phone", &phone_out, server_plan), ("server", &server_out, phone_plan)] {
        match out {
            Ok(o) => {
                for e in [&o.write_error, &o.read_error].into_iter().flatten() {
                    notes.push(format!("{who}: {e}"));
                }
                let matched = o.received_len == plan.len as u64 && o.received_sha == plan.expected_sha();
                sha_ok &= matched;
                if !matched {
                    rep.bytes_lost += plan.len as u64 - o.received_len.min(plan.len as u64);
                    if o.received_len == plan.len as u64 {
                        rep.bytes_lost += plan.len as u64; // same length, different bytes
                    }
                }
            }
            Err(e) => {
                notes.push(format!("{who}: {e}"));
                sha_ok = false;
            }
        }
    }
    if phone_out.is_err() || server_out.is_err() {
        // Nothing known about the hashes: count what the receivers did not get.
        rep.bytes_lost = (len as u64 - p_recv.bytes().min(len as u64)) + (len as u64 - s_recv.bytes().min(len as u64));
    }
    rep.sha_ok = Some(sha_ok);
    rep.moved = Some(moved);
    // The endpoint that moved: the server in a renumbering, the phone otherwise.
    let mover = if scenario == "server-renumber" { &server_out } else { &phone_out };
    if scenario != "nat-rebind" {
        if let Ok(out) = mover {
            rep.detected = out
                .events
                .iter()
                .find(|(at, ev)| *at >= move_started && matches!(ev, msocket::FlowEvent::Moved { .. }))
                .map(|(at, _)| *at - move_started);
        }
    }
    rep.died = !complete || !notes.is_empty();
    if !rep.died {
        rep.recovery = recovery(&p_recv, &s_recv, moved, written, min_stall(rtt, &phone_plan), &mut notes);
    }
    if !notes.is_empty() {
        rep.note = Some(notes.join("; "));
    }
    Ok(rep)
}

/// Waits (bounded by [`STEP`]) until the move may happen: both directions a quarter
/// through, or the faster one three quarters through (some systems ramp one direction far
/// more slowly than the other; the move must land while both still have data to
/// deliver). Waits on the slower direction's arrivals, re-checking the other at least
/// every 20 ms. False if neither happened in time.
fn ready_to_move(phone: &Recv, server: &Recv, len: u64) -> bool {
    let deadline = Instant::now() + STEP;
    loop {
        let (p, s) = (phone.bytes(), server.bytes());
        if p.min(s) >= len / 4 || p.max(s) >= len * 3 / 4 {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let (slower, got) = if p <= s { (phone, p) } else { (server, s) };
        slower.wait_bytes(got + 1, left.min(Duration::from_millis(20)));
    }
}

/// The shortest gap between reads that counts as the move's outage: half a round trip,
/// and at least two of the paced writer's pauses (which a healthy stream shows anyway).
fn min_stall(rtt: u32, plan: &Plan) -> Duration {
    Duration::from_micros(rtt as u64 * 500).max(plan.pace * 2)
}

/// What each end had written when the move's commands completed: bytes beyond that
/// were sent after the move, over whatever path then worked.
#[derive(Debug, Clone, Copy)]
struct Written {
    server: u64,
    phone: u64,
}

impl Written {
    fn at_move(server: &AtomicU64, phone: &AtomicU64) -> Written {
        Written { server: server.load(Ordering::Relaxed), phone: phone.load(Ordering::Relaxed) }
    }
}

/// The slower direction's recovery, over the directions that still had data to deliver
/// after the move (a direction that was already complete has none); a note names a
/// direction that was left out.
fn recovery(
    phone: &Recv,
    server: &Recv,
    moved: Instant,
    written: Written,
    min_stall: Duration,
    notes: &mut Vec<String>,
) -> Option<Duration> {
    let mut worst = None;
    for (dir, recv, sent) in [("server → phone", phone, written.server), ("phone → server", server, written.phone)] {
        match recv.recovery(moved, min_stall, Some(sent)) {
            Some(r) => worst = worst.max(Some(r.resumed)),
            None => notes.push(format!("{dir} was complete before the move: not measured")),
        }
    }
    worst
}

fn raw_rep(scene: &Scene, scenario: &str, rtt: u32, opts: &Options, mptcp: bool) -> Result<Rep, String> {
    let lab = &scene.lab;
    let len = opts.bytes;
    let (server_plan, phone_plan) = (Plan::paced(len, 11), Plan::paced(len, 22));
    let server = raw_server(lab.server(), server_plan, mptcp)?;
    let wifi = lab.phone_addr(Access::Wifi).ok_or("the phone has no Wi-Fi address")?;
    let to = SocketAddr::from((lab.server_addr(), RAW_PORT));
    let started = Instant::now();
    let phone = raw_phone(lab.phone(), wifi, to, phone_plan, mptcp)?;
    if !ready_to_move(&phone.recv, &server.recv, len as u64) {
        let err = |s: &RawSide| s.counters.error();
        return Err(format!(
            "the connection did not get a quarter through before the move (phone: {:?}, server: {:?})",
            err(&phone),
            err(&server)
        ));
    }
    tracing::debug!(
        after_ms = started.elapsed().as_millis() as u64,
        phone_received = phone.recv.bytes(),
        server_received = server.recv.bytes(),
        "moving"
    );
    let moved = make_move(scene, scenario)?;
    let written = Written::at_move(&server.counters.written, &phone.counters.written);
    let bound = moved + completion_bound(&phone_plan, opts.give_up);
    let left = || bound.saturating_duration_since(Instant::now());
    let complete = phone.recv.wait_bytes(len as u64, left()) && server.recv.wait_bytes(len as u64, left());
    let mut rep = Rep::default();
    let lost = |sender: &RawSide, receiver: &RawSide| {
        sender.counters.written.load(Ordering::Relaxed).saturating_sub(receiver.recv.bytes())
    };
    rep.bytes_lost = lost(&server, &phone) + lost(&phone, &server);
    let mut notes: Vec<String> = [("phone", &phone), ("server", &server)]
        .iter()
        .filter_map(|(who, s)| s.counters.error().map(|e| format!("{who}: {e}")))
        .collect();
    if complete {
        // Both received everything; the tasks end right away (each sees the other's FIN).
        let p_sha = phone.task.join(STEP).map_err(|e| format!("phone: {e}"))?;
        let s_sha = server.task.join(STEP).map_err(|e| format!("server: {e}"))?;
        let ok = p_sha == server_plan.expected_sha() && s_sha == phone_plan.expected_sha();
        if !ok {
            notes.push("SHA-256 differs".into());
            rep.bytes_lost = 2 * len as u64;
        }
        rep.sha_ok = Some(ok);
        rep.recovery = recovery(&phone.recv, &server.recv, moved, written, min_stall(rtt, &phone_plan), &mut notes);
        rep.died = !ok;
    } else {
        rep.died = true;
        if notes.is_empty() {
            notes.push(format!("no progress within {} ms of the move", opts.give_up.as_millis()));
        }
        // Dropping the sides cancels their futures and closes their sockets.
    }
    if mptcp {
        // Whether the connection really was MPTCP (not a fallback to TCP) and joined cellular.
        notes.extend(mptcp_note(lab.phone()));
    }
    if !notes.is_empty() {
        rep.note = Some(notes.join("; "));
    }
    Ok(rep)
}
