//! Property test: whatever the network does — kills, delays, duplicates, copies across
//! subflows — both streams arrive exactly once, in order, and the flow finishes.

use std::time::Duration;

use proptest::prelude::*;

use super::harness::{Rng, Sim};
use crate::proto::FlowConfig;

#[derive(Debug, Clone)]
struct Kill {
    at_ms: u64,
    notice_a: Option<u64>,
    notice_b: Option<u64>,
}

fn kill() -> impl Strategy<Value = Kill> {
    (0u64..6000, proptest::option::of(0u64..1500), proptest::option::of(0u64..1500))
        .prop_map(|(at_ms, notice_a, notice_b)| Kill { at_ms, notice_a, notice_b })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn streams_survive_any_network(
        seed in any::<u64>(),
        a_len in 0usize..400_000,
        b_len in 0usize..400_000,
        a_sizes in proptest::collection::vec(1usize..70_000, 1..6),
        b_sizes in proptest::collection::vec(1usize..5_000, 1..6),
        delay_ms in 1u64..150,
        second_link in any::<bool>(),
        bandwidth in proptest::option::of(200_000u64..5_000_000),
        small_windows in any::<bool>(),
        mut kills in proptest::collection::vec(kill(), 0..5),
        reconnect_ms in 0u64..2000,
        dup_pct in 0u32..30,
        cross_pct in 0u32..30,
    ) {
        let cfg = if small_windows {
            FlowConfig { send_buffer: 100_000, recv_window: 70_000, max_data_frame: 9_000, ..FlowConfig::default() }
        } else {
            FlowConfig::default()
        };
        let mut sim = Sim::new(cfg);
        let mut rng = Rng::new(seed);
        sim.rng = Rng::new(seed.rotate_left(17));
        sim.bandwidth = bandwidth;
        sim.dup_pct = dup_pct;
        sim.cross_pct = cross_pct;
        sim.default_delay = Duration::from_millis(delay_ms);
        sim.auto_reconnect = Some(Duration::from_millis(reconnect_ms));
        sim.send(0, (0..a_len).map(|_| rng.next() as u8).collect(), a_sizes, true);
        sim.send(1, (0..b_len).map(|_| rng.next() as u8).collect(), b_sizes, true);
        sim.add_link(Duration::from_millis(delay_ms));
        if second_link {
            sim.add_link(Duration::from_millis(1 + rng.below(200)));
        }
        kills.sort_by_key(|k| k.at_ms);
        for k in kills {
            sim.run_until(Duration::from_millis(k.at_ms));
            let live = sim.live_links();
            if live.is_empty() {
                continue;
            }
            let link = live[rng.below(live.len() as u64) as usize];
            sim.kill_link(link, [k.notice_a.map(Duration::from_millis), k.notice_b.map(Duration::from_millis)]);
        }
        let ok = sim.run_to_completion(Duration::from_secs(900));
        prop_assert!(ok, "not finished at {:?}: {:?} / {:?}, received {} / {}",
            sim.elapsed(), sim.ends[0].status(), sim.ends[1].status(),
            sim.apps[1].received.len(), sim.apps[0].received.len());
        sim.assert_complete();
    }
}
