//! Property test: whatever the network does — kills, delays, duplicates, copies across
//! subflows — both streams arrive exactly once, in order, and the flow finishes.
//!
//! The generator runs from a fixed seed so CI is reproducible; set `PROPTEST_CASES` and
//! `MSOCKET_PROP_SEED` to explore further. Failures found that way become regression tests below.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::harness::{Rng, Sim};
use crate::proto::{FlowConfig, PathPolicy};

const SEED: u64 = 0x6d73_6f63_6b65_7401;

#[derive(Debug, Clone)]
struct Kill {
    at_ms: u64,
    notice_a: Option<u64>,
    notice_b: Option<u64>,
}

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    a_len: usize,
    b_len: usize,
    a_sizes: Vec<usize>,
    b_sizes: Vec<usize>,
    delay_ms: u64,
    second_link: bool,
    /// The second link is a standby (the client's choice, told to the server by frame).
    standby: bool,
    bandwidth: Option<u64>,
    small_windows: bool,
    kills: Vec<Kill>,
    reconnect_ms: u64,
    dup_pct: u32,
    cross_pct: u32,
    /// The client's scheduling policy, and another one it switches to at a time.
    policy: PathPolicy,
    switch: Option<(u64, PathPolicy)>,
}

fn policy() -> impl Strategy<Value = PathPolicy> {
    proptest::sample::select(PathPolicy::ALL.to_vec())
}

fn kill() -> impl Strategy<Value = Kill> {
    (
        0u64..6000,
        proptest::option::of(0u64..1500),
        proptest::option::of(0u64..1500),
    )
        .prop_map(|(at_ms, notice_a, notice_b)| Kill {
            at_ms,
            notice_a,
            notice_b,
        })
}

prop_compose! {
    fn case()(
        seed in any::<u64>(),
        a_len in 0usize..400_000,
        b_len in 0usize..400_000,
        a_sizes in proptest::collection::vec(1usize..70_000, 1..6),
        b_sizes in proptest::collection::vec(1usize..5_000, 1..6),
        delay_ms in 1u64..150,
        second_link in any::<bool>(),
        standby in any::<bool>(),
        bandwidth in proptest::option::of(200_000u64..5_000_000),
        small_windows in any::<bool>(),
        kills in proptest::collection::vec(kill(), 0..5),
        reconnect_ms in 0u64..2000,
        dup_pct in 0u32..30,
        cross_pct in 0u32..30,
        policy in policy(),
        switch in proptest::option::of((0u64..6000, policy())),
    ) -> Case {
        Case { seed, a_len, b_len, a_sizes, b_sizes, delay_ms, second_link, standby, bandwidth, small_windows, kills, reconnect_ms, dup_pct, cross_pct, policy, switch }
    }
}

fn run(c: Case) {
    let cfg = if c.small_windows {
        FlowConfig {
            send_buffer: 100_000,
            recv_window: 70_000,
            max_data_frame: 9_000,
            ..FlowConfig::default()
        }
    } else {
        FlowConfig::default()
    };
    let mut sim = Sim::new(cfg);
    let mut rng = Rng::new(c.seed);
    sim.rng = Rng::new(c.seed.rotate_left(17));
    sim.bandwidth = c.bandwidth;
    sim.dup_pct = c.dup_pct;
    sim.cross_pct = c.cross_pct;
    sim.unsent_hints = true;
    sim.default_delay = Duration::from_millis(c.delay_ms);
    sim.auto_reconnect = Some(Duration::from_millis(c.reconnect_ms));
    sim.send(
        0,
        (0..c.a_len).map(|_| rng.next() as u8).collect(),
        c.a_sizes,
        true,
    );
    sim.send(
        1,
        (0..c.b_len).map(|_| rng.next() as u8).collect(),
        c.b_sizes,
        true,
    );
    sim.ends[0].set_policy(c.policy);
    sim.add_link(Duration::from_millis(c.delay_ms));
    if c.second_link {
        let link = sim.add_link(Duration::from_millis(1 + rng.below(200)));
        if c.standby {
            let id = sim.links[link].ids[0];
            sim.ends[0].set_standby(id, true);
        }
    }
    let mut kills = c.kills;
    kills.sort_by_key(|k| k.at_ms);
    let mut switch = c.switch;
    for k in kills {
        if let Some((at, policy)) = switch.filter(|(at, _)| *at <= k.at_ms) {
            sim.run_until(Duration::from_millis(at));
            sim.ends[0].set_policy(policy);
            switch = None;
        }
        sim.run_until(Duration::from_millis(k.at_ms));
        let live = sim.live_links();
        if live.is_empty() {
            continue;
        }
        let link = live[rng.below(live.len() as u64) as usize];
        sim.kill_link(
            link,
            [
                k.notice_a.map(Duration::from_millis),
                k.notice_b.map(Duration::from_millis),
            ],
        );
    }
    if let Some((at, policy)) = switch {
        sim.run_until(Duration::from_millis(at));
        sim.ends[0].set_policy(policy);
    }
    let ok = sim.run_to_completion(Duration::from_secs(900));
    assert!(
        ok,
        "not finished at {:?}: {:?} / {:?}, received {} / {}",
        sim.elapsed(),
        sim.ends[0].status(),
        sim.ends[1].status(),
        sim.apps[1].received.len(),
        sim.apps[0].received.len()
    );
    sim.assert_complete();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        rng_seed: RngSeed::Fixed(
            std::env::var("MSOCKET_PROP_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(SEED),
        ),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn streams_survive_any_network(c in case()) {
        run(c);
    }
}

/// The client finished while its last ACK (of the server's FIN) was on a path that then
/// went silent: the finished side must keep detecting dead paths so it reconnects and the
/// server learns its FIN arrived.
#[test]
fn regression_last_ack_lost_on_a_silent_path() {
    run(Case {
        seed: 9920370832174177852,
        a_len: 235299,
        b_len: 296254,
        a_sizes: vec![1],
        b_sizes: vec![1],
        delay_ms: 30,
        second_link: false,
        standby: false,
        bandwidth: Some(2416496),
        small_windows: true,
        kills: vec![Kill {
            at_ms: 391,
            notice_a: None,
            notice_b: None,
        }],
        reconnect_ms: 241,
        dup_pct: 22,
        cross_pct: 17,
        policy: PathPolicy::Backup,
        switch: None,
    });
}
