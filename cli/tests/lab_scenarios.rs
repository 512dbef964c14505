//! Scenario tests in the network lab (`msocket-lab`): real moves of real interfaces in
//! Linux network namespaces while a flow streams, with SHA-256 compared end to end. Each
//! prints its recovery time (from the move to the first byte after the longest stall that
//! followed it) and asserts only generous bounds.
//!
//! Needs root and `ip netns` (`lab/setup.sh` installs the tools): the tests are ignored
//! unless asked for (`--include-ignored`), and fail, saying why, where they cannot run.

#![cfg(target_os = "linux")]

mod lab_support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab_support::*;
use msocket_lab::{Access, LinkId};

const MB: usize = 1_000_000;
/// Generous bound on recovering from one move.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);
const DEADLINE: Duration = Duration::from_secs(30);

/// Two-way paced stream of `len` bytes each way; `mv` is called once both directions are
/// a quarter through, makes its moves (it may wait on the receivers between them) and
/// returns when the move to measure was complete. Checks both hashes, prints and returns
/// the recoveries (server → phone, phone → server).
fn two_way_move(
    label: &str,
    scene: &Scene,
    len: usize,
    mv: impl FnOnce(&Scene, &Recv, &Recv) -> Instant,
) -> (Recovery, Recovery) {
    let server_plan = Plan::paced(len, 11);
    let phone_plan = Plan::paced(len, 22);
    let server = scene.start_server(server_plan, DEADLINE);
    let phone = scene.start_phone(phone_plan, DEADLINE, None);
    let quarter = (len / 4) as u64;
    assert!(phone.recv.wait_bytes(quarter, STEP), "[{label}] the phone did not receive a quarter in time");
    assert!(server.recv.wait_bytes(quarter, STEP), "[{label}] the server did not receive a quarter in time");
    let moved_at = mv(scene, &phone.recv, &server.recv);
    let (p_recv, s_recv) = (phone.recv.clone(), server.recv.clone());
    let phone_out = phone.join(STEP * 2);
    let server_out = server.join(STEP);
    check_exchange(label, moved_at, phone_plan, server_plan, &phone_out, &server_out);
    let down = report(label, "server → phone", &p_recv, moved_at);
    let up = report(label, "phone → server", &s_recv, moved_at);
    for (dir, r) in [("server → phone", down), ("phone → server", up)] {
        assert!(r.resumed < RECOVERY_BOUND, "[{label}] {dir} took {:?} to recover", r.resumed);
    }
    (down, up)
}

/// Runs `f` (a move) and returns when it completed, printing how long it took.
fn timed<T>(label: &str, f: impl FnOnce() -> T) -> Instant {
    let started = Instant::now();
    let _ = f();
    let done = Instant::now();
    println!("[{label}] move took {} ms", (done - started).as_millis());
    done
}

/// Waits (bounded) until both directions received `more` bytes beyond what they had.
fn both_flowing(label: &str, phone: &Recv, server: &Recv, more: u64) {
    let (p, s) = (phone.bytes(), server.bytes());
    assert!(phone.wait_bytes(p + more, STEP), "[{label}] server → phone did not resume");
    assert!(server.wait_bytes(s + more, STEP), "[{label}] phone → server did not resume");
}

#[test]
#[ignore = "needs root and network namespaces"]
fn s1_wifi_to_cell_by_address_removal() {
    let scene = Scene::build("20ms", "40ms");
    let label = "s1 del wifi addr";
    two_way_move(label, &scene, 4 * MB, |s, _, _| timed(label, || s.lab.del_addr(Access::Wifi).unwrap()));
}

#[test]
#[ignore = "needs root and network namespaces"]
fn s2_wifi_to_cell_by_link_down() {
    let scene = Scene::build("20ms", "40ms");
    let label = "s2 wifi link down";
    two_way_move(label, &scene, 4 * MB, |s, _, _| timed(label, || s.lab.link_down(Access::Wifi).unwrap()));
}

#[test]
#[ignore = "needs root and network namespaces"]
fn s3_cell_back_to_wifi() {
    let scene = Scene::build("20ms", "40ms");
    let label = "s3 cell → wifi";
    two_way_move(label, &scene, 8 * MB, |s, phone, server| {
        let wifi = s.lab.del_addr(Access::Wifi).unwrap();
        both_flowing(label, phone, server, 256 * 1024);
        s.lab.add_addr(Access::Wifi, wifi).unwrap();
        // Wi-Fi is back; the flow stays on cellular until that goes.
        both_flowing(label, phone, server, 64 * 1024);
        timed(label, || s.lab.del_addr(Access::Cell).unwrap())
    });
}

#[test]
#[ignore = "needs root and network namespaces"]
fn s4_server_renumbered() {
    let scene = Scene::build("20ms", "40ms");
    let label = "s4 server renumbered";
    two_way_move(label, &scene, 6 * MB, |s, _, _| {
        timed(label, || s.lab.renumber_server("172.16.100.20".parse().unwrap()).unwrap())
    });
}

#[test]
#[ignore = "needs root and network namespaces"]
fn s5_both_ends_move_at_once() {
    let scene = Scene::build("20ms", "40ms");
    let label = "s5 both move";
    two_way_move(label, &scene, 6 * MB, |s, _, _| {
        timed(label, || {
            s.lab.del_addr(Access::Wifi).unwrap();
            s.lab.renumber_server("172.16.100.30".parse().unwrap()).unwrap();
        })
    });
}

#[test]
#[ignore = "needs root and network namespaces"]
fn s6_nat_rebinding() {
    let scene = Scene::build("20ms", "40ms");
    let label = "s6 nat rebind";
    two_way_move(label, &scene, 4 * MB, |s, _, _| timed(label, || s.lab.nat_rebind(Access::Wifi).unwrap()));
}

/// A two-way exchange without a move during it; checks the hashes, returns the phone's
/// connect time.
fn exchange_after(label: &str, scene: &Scene, server: Side, phone: Side, server_plan: Plan, phone_plan: Plan, t0: Instant) -> Duration {
    let phone_out = phone.join(STEP * 2);
    let server_out = server.join(STEP);
    check_exchange(label, t0, phone_plan, server_plan, &phone_out, &server_out);
    println!("[{label}] phone connected in {} ms; server now at {}", phone_out.connect_took.as_millis(), scene.lab.server_addr());
    phone_out.connect_took
}

#[test]
#[ignore = "needs root and network namespaces"]
fn s7a_server_renumbered_before_the_first_lookup() {
    let scene = Scene::build("20ms", "40ms");
    let label = "s7a pre-lookup renumber";
    let (server_plan, phone_plan) = (Plan::paced(2 * MB, 71), Plan::paced(2 * MB, 72));
    let server = scene.start_server(server_plan, DEADLINE);
    let t0 = timed(label, || scene.lab.renumber_server("172.16.100.40".parse().unwrap()).unwrap());
    let phone = scene.start_phone(phone_plan, DEADLINE, None);
    let took = exchange_after(label, &scene, server, phone, server_plan, phone_plan, t0);
    assert!(took < Duration::from_secs(15), "[{label}] connect took {took:?}");
}

#[test]
#[ignore = "needs root and network namespaces"]
fn s7b_server_renumbered_while_the_phone_connects() {
    let scene = Scene::build("20ms", "40ms");
    let label = "s7b connect-time renumber";
    let (server_plan, phone_plan) = (Plan::paced(2 * MB, 73), Plan::paced(2 * MB, 74));
    let server = scene.start_server(server_plan, DEADLINE);
    let (looked_up, lookups) = std::sync::mpsc::channel();
    let phone = scene.start_phone(phone_plan, DEADLINE, Some(looked_up));
    // Right after the phone's first lookup returned the old address: it is dialing it now.
    lookups.recv_timeout(STEP).expect("the phone looked the server up");
    let t0 = timed(label, || scene.lab.renumber_server("172.16.100.41".parse().unwrap()).unwrap());
    let took = exchange_after(label, &scene, server, phone, server_plan, phone_plan, t0);
    assert!(took < Duration::from_secs(15), "[{label}] connect took {took:?}");
}

#[test]
#[ignore = "needs root and network namespaces"]
fn s8_sixty_second_outage_of_every_path() {
    let scene = Scene::build("20ms", "40ms");
    let label = "s8 60 s outage";
    let deadline = Duration::from_secs(120);
    let (server_plan, phone_plan) = (Plan::paced(4 * MB, 81), Plan::paced(4 * MB, 82));
    let server = scene.start_server(server_plan, deadline);
    let phone = scene.start_phone(phone_plan, deadline, None);
    assert!(phone.recv.wait_bytes(MB as u64, STEP));
    assert!(server.recv.wait_bytes(MB as u64, STEP));
    scene.lab.blackhole(LinkId::Wifi, true).unwrap();
    scene.lab.blackhole(LinkId::Cell, true).unwrap();
    let dark = Instant::now();
    // The outage itself: its length is the scenario, not a synchronisation.
    std::thread::sleep(Duration::from_secs(60));
    let (p, s) = (phone.recv.bytes(), server.recv.bytes());
    scene.lab.blackhole(LinkId::Wifi, false).unwrap();
    scene.lab.blackhole(LinkId::Cell, false).unwrap();
    let back = Instant::now();
    println!("[{label}] outage {} ms; received during it: phone {p}, server {s} bytes", (back - dark).as_millis());
    let (p_recv, s_recv) = (phone.recv.clone(), server.recv.clone());
    let phone_out = phone.join(STEP * 2);
    let server_out = server.join(STEP);
    check_exchange(label, back, phone_plan, server_plan, &phone_out, &server_out);
    let down = report(label, "server → phone (from the end of the outage)", &p_recv, back);
    let up = report(label, "phone → server (from the end of the outage)", &s_recv, back);
    for r in [down, up] {
        assert!(r.first_byte < RECOVERY_BOUND, "[{label}] took {:?} to recover after the outage", r.first_byte);
    }
}

/// The `msocket` binary's stderr lines, read on a thread.
fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            println!("  msocket: {line}");
            let _ = tx.send(line);
        }
    });
    rx
}

#[test]
#[ignore = "needs root and network namespaces"]
fn s9_peer_process_killed() {
    let scene = Scene::build("20ms", "40ms");
    let label = "s9 peer killed";
    let bin = env!("CARGO_BIN_EXE_msocket");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let out = Command::new(bin).arg("keygen").arg("--key").arg(&key).output().unwrap();
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    let names = format!("tcp://{NAMES_IP}:{NAMES_PORT}");
    let mut child = scene
        .lab
        .server()
        .command(bin)
        .args(["listen", SERVICE, "--names", &names, "--deadline", "10", "--key"])
        .arg(&key)
        .env("RUST_LOG", "warn")
        .env_remove("MSOCKET_KEY")
        .env_remove("MSOCKET_NAMES")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let lines = stderr_lines(&mut child);
    let mut stdout = child.stdout.take().unwrap();
    let mut child = Kill(child);
    let deadline = Instant::now() + STEP;
    loop {
        let line = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("the listener is ready");
        if line.starts_with("listening on") {
            break;
        }
    }
    // What the server process writes to stdout: what it received.
    let received = Recv::new();
    let r = received.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            r.add(n);
        }
        r.finish();
    });
    let flow_deadline = Duration::from_secs(10);
    let phone = scene.start_phone(Plan::paced(16 * MB, 91), flow_deadline, None);
    assert!(received.wait_bytes(MB as u64, STEP), "[{label}] the server process received 1 MB");
    let killed = timed(label, || child.0.kill().unwrap());
    let _ = child.0.wait();
    let out = phone.join(flow_deadline + STEP);
    out.print_events("phone", killed);
    let err = out.write_error.as_ref().expect("the phone's write fails");
    let failed = out.write_done.unwrap() - killed;
    println!("[{label}] phone's write failed {} ms after the kill: {err} ({:?})", failed.as_millis(), err.kind());
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "[{label}] {err}");
    assert!(failed < flow_deadline + Duration::from_secs(5), "[{label}] took {failed:?}");
    assert!(failed >= flow_deadline - Duration::from_secs(1), "[{label}] failed before its deadline: {failed:?}");
}

#[test]
#[ignore = "needs root and network namespaces"]
fn s10_silent_death_of_wifi() {
    let scene = Scene::build("20ms", "40ms");
    let label = "s10 wifi silently dead";
    let server_plan = Plan::paced(6 * MB, 101);
    let phone_plan = Plan::paced(6 * MB, 102);
    let server = scene.start_server(server_plan, DEADLINE);
    let phone = scene.start_phone(phone_plan, DEADLINE, None);
    assert!(phone.recv.wait_bytes(MB as u64, STEP));
    assert!(server.recv.wait_bytes(MB as u64, STEP));
    // No netlink event anywhere: the Wi-Fi keeps its address, frames just vanish.
    let dark = timed(label, || scene.lab.blackhole(LinkId::Wifi, true).unwrap());
    let (p_recv, s_recv) = (phone.recv.clone(), server.recv.clone());
    let phone_out = phone.join(STEP * 2);
    let server_out = server.join(STEP);
    check_exchange(label, dark, phone_plan, server_plan, &phone_out, &server_out);
    let detected = phone_out
        .events
        .iter()
        .find(|(at, ev)| *at > dark && matches!(ev, msocket::FlowEvent::PathLost { .. }))
        .map(|(at, _)| *at - dark)
        .expect("the phone noticed the dead path");
    println!("[{label}] the phone detected the dead path after {} ms", detected.as_millis());
    assert!(detected < Duration::from_secs(5), "[{label}] detection took {detected:?}");
    let down = report(label, "server → phone", &p_recv, dark);
    let up = report(label, "phone → server", &s_recv, dark);
    for r in [down, up] {
        assert!(r.resumed < RECOVERY_BOUND, "[{label}] took {:?} to recover", r.resumed);
    }
}
