//! The schedulers under virtual time: a phone's Wi-Fi (fast, short RTT) and cellular
//! (slower, longer RTT) paths, each policy, bulk and paced transfers, and paths that stall.
//!
//! Side 0 is the phone (it chooses the policy and the standbys), side 1 the server; most
//! transfers are downloads, so the server's scheduler, which learned the policy from the
//! phone's frames, does the work.

use std::time::Duration;

use super::harness::Sim;
use crate::proto::{FlowConfig, PathPolicy, PathState};

const WIFI_BW: u64 = 2_500_000; // 20 Mbit/s
const CELL_BW: u64 = 1_250_000; // 10 Mbit/s
const WIFI_DELAY: Duration = Duration::from_millis(5);
const CELL_DELAY: Duration = Duration::from_millis(20);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
}

/// A phone with Wi-Fi (link 0) and cellular (link 1), cellular a standby when the policy
/// keeps standbys.
fn phone(policy: PathPolicy) -> Sim {
    let mut sim = Sim::new(FlowConfig::default());
    sim.ends[0].set_policy(policy);
    sim.add_path(WIFI_DELAY, WIFI_BW);
    let cell = sim.add_path(CELL_DELAY, CELL_BW);
    if policy.uses_standbys() {
        let id = sim.links[cell].ids[0];
        sim.ends[0].set_standby(id, true);
    }
    sim
}

/// Payload bytes the server delivered over `link`.
fn delivered(sim: &Sim, link: usize) -> u64 {
    sim.ends[1].subflow_stats(sim.links[link].ids[1]).map_or(0, |s| s.bytes_delivered)
}

/// Downloads `len` bytes; returns the completion time.
fn download(sim: &mut Sim, len: usize) -> Duration {
    sim.send(1, data(len), vec![64 * 1024], true);
    sim.send(0, Vec::new(), vec![], true);
    assert!(sim.run_to_completion(Duration::from_secs(120)), "download did not finish");
    sim.assert_complete();
    sim.elapsed()
}

#[test]
fn performance_aggregates_both_paths() {
    let len = 8 << 20;
    let mut sim = phone(PathPolicy::Performance);
    let took = download(&mut sim, len);
    let efficiency = len as f64 / took.as_secs_f64() / (WIFI_BW + CELL_BW) as f64;
    let (wifi, cell) = (delivered(&sim, 0), delivered(&sim, 1));
    assert!(efficiency > 0.85, "took {took:?}: {efficiency:.2} of the sum of both paths");
    assert!(cell as f64 > 0.2 * len as f64, "cellular carried {cell} of {len}");
    assert!(wifi > cell, "wifi {wifi}, cell {cell}");
}

#[test]
fn backup_keeps_the_standby_idle() {
    let len = 4 << 20;
    let mut sim = phone(PathPolicy::Backup);
    let took = download(&mut sim, len);
    assert_eq!(delivered(&sim, 1), 0, "the standby carried data");
    assert!(took.as_secs_f64() < len as f64 / WIFI_BW as f64 * 1.1, "took {took:?}");
    let cell = sim.links[1].ids[1];
    assert_eq!(sim.ends[1].subflow_stats(cell).unwrap().state, PathState::Standby);
}

/// The earliest-completion rule: a path twenty times slower with a long RTT must not
/// hold up the end of a transfer the fast path could finish alone.
#[test]
fn a_slow_path_does_not_hold_up_the_tail() {
    let len = 2 << 20;
    let alone = {
        let mut sim = Sim::new(FlowConfig::default());
        sim.add_path(WIFI_DELAY, WIFI_BW);
        download(&mut sim, len)
    };
    let mut sim = Sim::new(FlowConfig::default());
    sim.ends[0].set_policy(PathPolicy::Performance);
    sim.add_path(WIFI_DELAY, WIFI_BW);
    sim.add_path(ms(150), WIFI_BW / 20);
    let both = download(&mut sim, len);
    assert!(both <= alone + ms(20), "fast path alone {alone:?}, with the slow one {both:?}");
}

#[test]
fn energy_leaves_cellular_idle_while_wifi_keeps_up() {
    let mut sim = phone(PathPolicy::Energy);
    // A 4 Mbit/s stream: 25 kB every 50 ms for 5 s.
    let chunk = 25_000;
    for i in 0..100 {
        sim.apps[1].data.extend(data(chunk));
        if i == 0 {
            sim.apps[1].write_sizes = vec![chunk];
        }
        sim.run_for(ms(50));
    }
    sim.run_for(ms(500));
    assert_eq!(sim.received(0), 100 * chunk);
    assert_eq!(delivered(&sim, 1), 0, "cellular carried part of a stream Wi-Fi could carry");
    // Neither end asked for more paths: the phone would keep no cellular subflow.
    assert!(!sim.ends[0].needs_extra_paths() && !sim.ends[1].needs_extra_paths());
}

#[test]
fn energy_adds_cellular_when_wifi_cannot_keep_up_and_drops_it_after() {
    let len = 8 << 20;
    let mut sim = phone(PathPolicy::Energy);
    sim.send(1, data(len), vec![64 * 1024], false);
    sim.run_until(ms(900));
    assert_eq!(delivered(&sim, 1), 0, "cellular joined within the first second");
    assert!(!sim.ends[0].needs_extra_paths(), "the phone heard of demand within the first second");
    let wifi_alone = len as f64 / WIFI_BW as f64;
    let mut done_at = None;
    let mut phone_heard_demand = false;
    sim.run_while(Duration::from_secs(20), |s| {
        // The server's backlog reaches the phone as DEMAND: it wants cellular now.
        phone_heard_demand |= s.ends[0].needs_extra_paths();
        if done_at.is_none() && s.received(0) == len {
            done_at = Some(s.elapsed());
        }
        done_at.is_none() || s.elapsed() < done_at.unwrap() + Duration::from_secs(3)
    });
    let done_at = done_at.expect("download finished");
    assert!(delivered(&sim, 1) > (len / 10) as u64, "cellular carried {}", delivered(&sim, 1));
    assert!(done_at.as_secs_f64() < wifi_alone * 0.9, "took {done_at:?}, Wi-Fi alone {wifi_alone:.2} s");
    assert!(phone_heard_demand, "the server's overflow never reached the phone");
    assert!(!sim.ends[0].needs_extra_paths(), "the phone still wants cellular after the demand ended");
    // Demand gone: cellular is a standby again, and a later burst stays on Wi-Fi.
    let cell = sim.links[1].ids[1];
    assert_eq!(sim.ends[1].subflow_stats(cell).unwrap().state, PathState::Standby);
    let before = delivered(&sim, 1);
    sim.apps[1].data.extend(data(100_000));
    sim.run_for(ms(500));
    assert_eq!(sim.received(0), len + 100_000);
    assert_eq!(delivered(&sim, 1), before);
}

/// A path that goes silent mid-transfer (no event, no reset) stalls the receiver only
/// until the stall rule moves its data, not for the dead-path timeout.
#[test]
fn a_silent_path_is_bypassed_within_a_few_round_trips() {
    for policy in [PathPolicy::Performance, PathPolicy::Backup, PathPolicy::Energy] {
        let mut sim = phone(policy);
        sim.send(1, data(6 << 20), vec![64 * 1024], true);
        sim.send(0, Vec::new(), vec![], true);
        sim.run_until(ms(1000));
        sim.blackhole(0);
        let gap = sim.longest_read_gap(0, Duration::from_secs(60), ms(5));
        assert!(sim.run_to_completion(Duration::from_secs(60)), "{policy}: not finished");
        sim.assert_complete();
        assert!(gap < ms(250), "{policy}: the reader waited {gap:?}");
        assert!(sim.ends[1].stats().stalls >= 1, "{policy}: no stall noticed");
    }
}

/// Lossy Wi-Fi: a path that stalls and recovers is used again once heard from.
#[test]
fn a_stalled_path_carries_data_again_once_heard() {
    let mut sim = phone(PathPolicy::Backup);
    sim.send(1, data(8 << 20), vec![64 * 1024], true);
    sim.send(0, Vec::new(), vec![], true);
    sim.run_until(ms(500));
    sim.links[0].blackhole = true;
    sim.run_until(ms(800));
    sim.links[0].blackhole = false;
    let before = delivered(&sim, 0);
    assert!(sim.run_to_completion(Duration::from_secs(60)));
    sim.assert_complete();
    assert!(delivered(&sim, 0) > before + (1 << 20), "Wi-Fi was not used again");
    let wifi = sim.links[0].ids[1];
    assert_ne!(sim.ends[1].subflow_stats(wifi).unwrap().state, PathState::Stalled);
}

/// Small writes go out on every path: when the fast one silently fails, the copy on
/// the other arrives one slow one-way delay later, with no stall to wait out.
#[test]
fn redundant_copies_small_writes_and_not_bulk() {
    let mut sim = phone(PathPolicy::Redundant);
    sim.send(0, data(0), vec![], false);
    // Requests of 200 bytes every 100 ms, phone to server.
    let mut latencies = Vec::new();
    for i in 0..20 {
        if i == 10 {
            sim.blackhole(0);
        }
        let want = (i + 1) * 200;
        sim.apps[0].data.extend(data(200));
        let start = sim.elapsed();
        sim.run_while(start + ms(1000), |s| s.received(1) < want);
        latencies.push(sim.elapsed() - start);
        sim.run_until(start + ms(100));
    }
    let worst = latencies.iter().max().unwrap();
    assert!(*worst <= CELL_DELAY + ms(5), "request latencies {latencies:?}");
    assert!(sim.ends[0].stats().bytes_copied > 0);
    // A bulk transfer is not copied (beyond its first round trip).
    let mut sim = phone(PathPolicy::Redundant);
    let len = 4 << 20;
    download(&mut sim, len);
    let copied = sim.ends[1].stats().bytes_copied;
    assert!(copied < (len / 50) as u64, "copied {copied} of {len}");
}

#[test]
fn the_server_follows_the_phones_policy_changes() {
    let mut sim = phone(PathPolicy::Backup);
    sim.send(1, data(8 << 20), vec![64 * 1024], true);
    sim.send(0, Vec::new(), vec![], true);
    sim.run_until(ms(500));
    assert_eq!(sim.ends[1].policy(), PathPolicy::Backup);
    assert_eq!(delivered(&sim, 1), 0);
    sim.ends[0].set_policy(PathPolicy::Performance);
    let cell = sim.links[1].ids[0];
    sim.ends[0].set_standby(cell, false);
    sim.run_until(ms(1500));
    assert_eq!(sim.ends[1].policy(), PathPolicy::Performance);
    assert!(delivered(&sim, 1) > 500_000, "cellular carried {}", delivered(&sim, 1));
    assert!(sim.run_to_completion(Duration::from_secs(60)));
    sim.assert_complete();
}
