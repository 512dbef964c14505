//! Scenario tests in the network lab (`msocket-lab`): real moves of real interfaces in
//! Linux network namespaces while a flow streams, with SHA-256 compared end to end. Each
//! prints its recovery time (from the move to the first byte after the longest stall that
//! followed it) and asserts only generous bounds.
//!
//! Needs root and `ip netns` (`lab/setup.sh` installs the tools); otherwise each test
//! prints `skipped: needs root and ip netns` and returns.

#![cfg(target_os = "linux")]

mod lab_support;

use std::time::{Duration, Instant};

use lab_support::*;
use msocket_lab::Access;

const MB: usize = 1_000_000;
/// Generous bound on recovering from one move.
const RECOVERY_BOUND: Duration = Duration::from_secs(15);
const DEADLINE: Duration = Duration::from_secs(30);

/// Two-way paced stream; `mv` is called once both directions are a quarter through and
/// returns when the move is complete; checks hashes, prints and returns the recoveries
/// (phone side receiving, server side receiving).
fn two_way_move(label: &str, scene: &Scene, len: usize, mv: impl FnOnce(&Scene)) -> (Recovery, Recovery) {
    let server_plan = Plan::paced(len, 11);
    let phone_plan = Plan::paced(len, 22);
    let server = scene.start_server(server_plan, DEADLINE);
    let phone = scene.start_phone(phone_plan, DEADLINE, None);
    let quarter = (len / 4) as u64;
    assert!(phone.recv.wait_bytes(quarter, STEP), "[{label}] the phone did not receive a quarter in time");
    assert!(server.recv.wait_bytes(quarter, STEP), "[{label}] the server did not receive a quarter in time");
    let started = Instant::now();
    mv(scene);
    let moved_at = Instant::now();
    println!("[{label}] move took {} ms", (moved_at - started).as_millis());
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

#[test]
fn s1_wifi_to_cell_by_address_removal() {
    let Some(scene) = Scene::build("20ms", "40ms") else { return };
    two_way_move("s1 del wifi addr", &scene, 4 * MB, |s| {
        s.lab.del_addr(Access::Wifi).unwrap();
    });
}
