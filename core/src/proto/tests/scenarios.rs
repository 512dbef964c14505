//! Scenario tests: moves, outages, deadlines, flow control, finish and abort.

use std::time::Duration;

use bytes::Bytes;

use super::harness::Sim;
use crate::proto::{
    FlowConfig, FlowError, FlowEvent, FlowState, FlowStatus, Frame, ProtocolViolation, ReadOutcome,
    SubflowId,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed as u32)
                .to_be_bytes()[0]
        })
        .collect()
}

/// A flow with two subflows on which the peer was heard (its resume ACKs arrived).
fn two_heard_subflows(t0: std::time::Instant) -> (FlowState, SubflowId, SubflowId) {
    let mut f = FlowState::new(FlowConfig::default(), t0);
    let (a, b) = (f.add_subflow(t0), f.add_subflow(t0));
    for id in [a, b] {
        f.handle_frame(id, Frame::Ack { cum: 0, ranges: vec![], window: 1 << 20 }, t0).unwrap();
    }
    (f, a, b)
}

/// The peer's ACK (everything below `cum`, nothing beyond) arrives on `id` at `at`;
/// (offset, length) of the DATA frames `id` sends then.
/// A flow that sent 3000 bytes on its only subflow, which went at `t0` with 2000.. still
/// in its socket (never sent).
fn only_path_lost_with_unsent_tail(t0: std::time::Instant) -> FlowState {
    let mut f = FlowState::new(FlowConfig::default(), t0);
    let a = f.add_subflow(t0);
    f.write(&[5; 3000]).unwrap();
    while f.poll_transmit(a, t0, 1100).is_some() {}
    f.remove_subflow_unsent(a, t0, &[2000..3000]);
    f
}

fn data_after_ack(f: &mut FlowState, id: SubflowId, cum: u64, at: std::time::Instant) -> Vec<(u64, usize)> {
    f.handle_frame(id, Frame::Ack { cum, ranges: vec![], window: 1 << 20 }, at).unwrap();
    data_sent(f, id, at)
}

/// (offset, length) of every DATA frame subflow `id` sends now.
fn data_sent(f: &mut FlowState, id: SubflowId, now: std::time::Instant) -> Vec<(u64, usize)> {
    std::iter::from_fn(|| f.poll_transmit(id, now, 1500))
        .filter_map(|fr| match fr {
            Frame::Data { offset, payload, .. } => Some((offset, payload.len())),
            _ => None,
        })
        .collect()
}

/// A sim with `a_len` bytes client→server and `b_len` back, both finishing, one link.
fn transfer(cfg: FlowConfig, a_len: usize, b_len: usize) -> Sim {
    let mut sim = Sim::new(cfg);
    sim.send(0, pattern(a_len, 1), vec![1000, 70_000, 3, 16_384], true);
    sim.send(1, pattern(b_len, 2), vec![50_000, 7], true);
    sim.add_link(ms(20));
    sim
}

fn count(sim: &Sim, side: usize, f: impl Fn(&FlowEvent) -> bool) -> usize {
    sim.events_of(side).filter(|e| f(e)).count()
}

fn resumed_outage(sim: &Sim, side: usize) -> Option<Duration> {
    sim.events_of(side).find_map(|e| match e {
        FlowEvent::Resumed { outage, .. } => Some(*outage),
        _ => None,
    })
}

#[test]
fn clean_transfer_both_ways_finishes() {
    let mut sim = transfer(FlowConfig::default(), 3_000_000, 1_000_000);
    assert!(sim.run_to_completion(Duration::from_secs(10)));
    sim.assert_complete();
    for side in 0..2 {
        let s = sim.ends[side].stats();
        assert_eq!(s.bytes_retransmitted, 0);
        assert_eq!(s.duplicate_bytes_received, 0);
        assert_eq!(s.bytes_sent, s.bytes_written);
        assert_eq!(count(&sim, side, |e| *e == FlowEvent::Finished), 1);
        assert!(
            resumed_outage(&sim, side).is_none(),
            "the first subflow is no resume"
        );
    }
}

#[test]
fn empty_streams_finish_and_finish_is_idempotent() {
    let mut sim = transfer(FlowConfig::default(), 0, 0);
    assert!(sim.run_to_completion(Duration::from_secs(1)));
    sim.assert_complete();
    let end = &mut sim.ends[0];
    assert_eq!(end.finish(), Ok(()));
    assert_eq!(end.write(b"x"), Err(FlowError::WriteAfterFinish));
    assert_eq!(end.read(&mut [0; 4]), Ok(ReadOutcome::Fin));
    assert!(end.is_readable() && end.is_writable());
}

#[test]
fn one_direction_finishing_leaves_the_other_open() {
    let mut sim = transfer(FlowConfig::default(), 10_000, 0);
    sim.apps[1].finish_when_written = false;
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.apps[1].received.len(), 10_000);
    assert!(sim.apps[1].got_fin);
    assert_eq!(sim.ends[0].status(), FlowStatus::Open);
    assert_eq!(sim.ends[1].write(b"late reply"), Ok(10));
    sim.ends[1].finish().unwrap();
    assert!(sim.run_to_completion(Duration::from_secs(3)));
    assert_eq!(sim.apps[0].received, b"late reply");
}

#[test]
fn client_address_change() {
    let mut sim = transfer(FlowConfig::default(), 2_000_000, 2_000_000);
    sim.bandwidth = Some(1_000_000);
    sim.run_until(ms(500));
    // The client's interface went away: its runtime notices at once; the server is never
    // told and must find out by itself.
    sim.kill_link(0, [Some(ms(0)), None]);
    sim.run_until(ms(600));
    sim.add_link(ms(30));
    assert!(sim.run_to_completion(Duration::from_secs(30)));
    sim.assert_complete();
    assert!(sim.ends[0].stats().bytes_retransmitted > 0);
    let outage = resumed_outage(&sim, 0).expect("client resumed");
    assert!(outage >= ms(100) && outage < ms(300), "{outage:?}");
    assert_eq!(
        count(&sim, 1, |e| matches!(e, FlowEvent::SubflowDead { .. })),
        1,
        "server found the dead path"
    );
    assert_eq!(sim.ends[0].stats().subflows_lost, 1);
}

#[test]
fn a_lost_subflow_is_abandoned_so_the_peer_resends_at_once() {
    let mut sim = transfer(FlowConfig::default(), 2_000_000, 2_000_000);
    sim.bandwidth = Some(1_000_000);
    sim.run_until(ms(500));
    // The client's address vanished: its runtime retires the subflow at once; no FIN can
    // reach the server, which would otherwise wait out its dead-path timeout (1.5 s).
    sim.kill_link(0, [Some(ms(0)), None]);
    sim.run_until(ms(600));
    sim.add_link(ms(30));
    sim.run_until(ms(700));
    let dead_at = sim
        .events
        .iter()
        .find(|(_, side, e)| *side == 1 && matches!(e, FlowEvent::SubflowDead { .. }))
        .map(|(t, _, _)| *t)
        .expect("the server retired its end of the lost subflow");
    // Told over the new subflow: its set-up (at 600 ms) plus one 30 ms crossing.
    assert!(dead_at >= ms(600) && dead_at <= ms(640), "{dead_at:?}");
    assert!(sim.run_to_completion(Duration::from_secs(30)));
    sim.assert_complete();
    assert!(sim.ends[1].stats().bytes_retransmitted > 0, "the server re-sent what the lost subflow held");
}

#[test]
fn abandon_for_an_unknown_or_own_subflow_is_ignored() {
    let mut sim = transfer(FlowConfig::default(), 100_000, 100_000);
    sim.run_until(ms(100));
    let id = sim.links[0].ids[1];
    let now = sim.now;
    sim.ends[1].handle_frame(id, Frame::Abandon { token: 99 }, now).unwrap();
    sim.ends[1].handle_frame(id, Frame::Abandon { token: 0 }, now).unwrap();
    assert_eq!(sim.ends[1].live_subflows(), 1);
    assert!(sim.run_to_completion(Duration::from_secs(30)));
    sim.assert_complete();
}

#[test]
fn server_address_change_is_announced_then_followed() {
    let mut sim = transfer(FlowConfig::default(), 1_000_000, 3_000_000);
    sim.bandwidth = Some(2_000_000);
    sim.run_until(ms(300));
    let new_addr: std::net::SocketAddr = "198.51.100.7:7450".parse().unwrap();
    sim.ends[1].advertise_addrs(vec![new_addr], vec!["relay.example".into()]);
    sim.run_until(ms(500));
    let addrs = sim.events_of(0).find_map(|e| match e {
        FlowEvent::PeerAddrs { addrs, relays } => Some((addrs.clone(), relays.clone())),
        _ => None,
    });
    assert_eq!(
        addrs,
        Some((vec![new_addr], vec!["relay.example".to_string()]))
    );
    // The server moves: it drops the old subflow at once; the client's TCP reports an
    // error 200 ms later; the client dials the new address.
    sim.kill_link(0, [Some(ms(200)), Some(ms(0))]);
    sim.run_until(ms(750));
    sim.add_link(ms(25));
    assert!(sim.run_to_completion(Duration::from_secs(30)));
    sim.assert_complete();
    assert!(resumed_outage(&sim, 0).is_some() && resumed_outage(&sim, 1).is_some());
}

#[test]
fn both_ends_move_at_once() {
    let mut sim = transfer(FlowConfig::default(), 2_000_000, 2_000_000);
    sim.bandwidth = Some(1_500_000);
    sim.run_until(ms(400));
    sim.kill_link(0, [Some(ms(0)), Some(ms(200))]);
    sim.run_until(ms(700));
    sim.add_link(ms(60));
    assert!(sim.run_to_completion(Duration::from_secs(30)));
    sim.assert_complete();
    let (a, b) = (
        resumed_outage(&sim, 0).unwrap(),
        resumed_outage(&sim, 1).unwrap(),
    );
    assert!(a > b, "the client lost its subflow first: {a:?} vs {b:?}");
    for side in 0..2 {
        assert!(sim.ends[side].stats().bytes_retransmitted > 0);
    }
}

#[test]
fn killed_subflow_loses_frames_in_flight_and_another_link_takes_over() {
    let mut sim = transfer(FlowConfig::default(), 3_000_000, 500_000);
    sim.bandwidth = Some(2_000_000);
    sim.add_link(ms(80));
    sim.run_until(ms(700));
    assert!(
        sim.links[0].pipes.iter().any(|p| !p.queue.is_empty()),
        "frames in flight"
    );
    sim.kill_link(0, [Some(ms(0)), Some(ms(10))]);
    assert!(sim.run_to_completion(Duration::from_secs(30)));
    sim.assert_complete();
    assert!(sim.ends[0].stats().bytes_retransmitted > 0);
    // The other subflow never went away, so this was no outage.
    assert!(resumed_outage(&sim, 0).is_none());
}

#[test]
fn resume_after_five_minute_outage() {
    let cfg = FlowConfig {
        flow_deadline: Duration::from_secs(600),
        ..FlowConfig::default()
    };
    let mut sim = transfer(cfg, 2_000_000, 1_000_000);
    sim.bandwidth = Some(1_000_000);
    sim.run_until(ms(800));
    sim.kill_link(0, [Some(ms(0)), Some(ms(0))]);
    sim.run_until(ms(800) + Duration::from_secs(300));
    assert_eq!(sim.ends[0].status(), FlowStatus::Open);
    sim.add_link(ms(40));
    assert!(sim.run_to_completion(Duration::from_secs(400)));
    sim.assert_complete();
    let outage = resumed_outage(&sim, 0).unwrap();
    assert!(
        outage >= Duration::from_secs(300) && outage < Duration::from_secs(301),
        "{outage:?}"
    );
}

#[test]
fn deadline_expiry_fails_both_ends() {
    let mut sim = transfer(FlowConfig::default(), 1_000_000, 1_000_000);
    sim.bandwidth = Some(1_000_000);
    sim.run_until(ms(500));
    sim.kill_link(0, [Some(ms(0)), Some(ms(100))]);
    sim.run_until(Duration::from_secs(400));
    for side in 0..2 {
        let FlowStatus::Failed(FlowError::DeadlineExceeded { after }) = sim.ends[side].status()
        else {
            panic!("side {side}: {:?}", sim.ends[side].status());
        };
        assert_eq!(after, Duration::from_secs(300));
        assert!(matches!(
            sim.ends[side].write(b"x"),
            Err(FlowError::DeadlineExceeded { .. })
        ));
        assert_eq!(sim.ends[side].poll_timeout(), None);
        assert_eq!(
            count(&sim, side, |e| matches!(
                e,
                FlowEvent::Failed(FlowError::DeadlineExceeded { .. })
            )),
            1
        );
    }
    // Bytes received before the failure can still be read, then the error.
    let end = &mut sim.ends[1];
    let mut buf = vec![0; 4 << 20];
    loop {
        match end.read(&mut buf) {
            Ok(ReadOutcome::Data(_)) => {}
            other => {
                assert!(
                    matches!(other, Err(FlowError::DeadlineExceeded { .. })),
                    "{other:?}"
                );
                break;
            }
        }
    }
}

#[test]
fn deadline_counts_from_creation_when_never_connected() {
    let t0 = std::time::Instant::now();
    let mut f = FlowState::new(FlowConfig::default(), t0);
    assert_eq!(f.poll_timeout(), Some(t0 + Duration::from_secs(300)));
    f.handle_timeout(t0 + Duration::from_secs(300));
    assert_eq!(
        f.status(),
        FlowStatus::Failed(FlowError::DeadlineExceeded {
            after: Duration::from_secs(300)
        })
    );
}

#[test]
fn silent_path_death_is_detected_and_recovered() {
    let mut sim = transfer(FlowConfig::default(), 2_000_000, 2_000_000);
    sim.bandwidth = Some(1_000_000);
    sim.auto_reconnect = Some(ms(50));
    sim.run_until(ms(500));
    sim.blackhole(0);
    assert!(sim.run_to_completion(Duration::from_secs(30)));
    sim.assert_complete();
    for side in 0..2 {
        let dead_at = sim
            .events
            .iter()
            .find(|(_, s, e)| *s == side && matches!(e, FlowEvent::SubflowDead { .. }))
            .map(|(t, _, _)| *t)
            .unwrap_or_else(|| panic!("side {side} never noticed"));
        // Data was outstanding, so within the dead-path timeout (+ the probe for the server).
        assert!(
            dead_at <= ms(500 + 1500 + 1600),
            "side {side} at {dead_at:?}"
        );
    }
    assert!(sim.links.len() >= 2);
}

/// When `side` first reported a dead subflow.
fn first_death(sim: &Sim, side: usize) -> Option<Duration> {
    sim.events
        .iter()
        .find(|(_, s, e)| *s == side && matches!(e, FlowEvent::SubflowDead { .. }))
        .map(|(t, _, _)| *t)
}

#[test]
fn a_receiver_with_nothing_to_send_notices_a_silent_path_death() {
    // Server (side 1) streams to the client (side 0), which sends nothing and has no
    // standby: only the silence of the DATA it was receiving can tell it.
    let mut sim = Sim::new(FlowConfig::default());
    sim.send(0, Vec::new(), Vec::new(), true);
    sim.send(1, pattern(3_000_000, 3), vec![16_384], true);
    sim.bandwidth = Some(1_000_000);
    sim.auto_reconnect = Some(ms(50));
    sim.add_link(ms(20));
    sim.run_until(ms(500));
    assert!(sim.received(0) > 0 && sim.received(0) < 3_000_000);
    sim.blackhole(0);
    assert!(sim.run_to_completion(Duration::from_secs(30)));
    sim.assert_complete();
    let dead_at = first_death(&sim, 0).expect("the receiver noticed");
    let rtt = ms(40);
    assert!(dead_at <= ms(500) + FlowConfig::default().dead_path_timeout + rtt, "noticed at {dead_at:?}");
}

#[test]
fn a_pause_of_the_sender_is_no_path_death() {
    // 200 kB, then the sender pauses for a minute without finishing.
    let mut sim = Sim::new(FlowConfig::default());
    sim.send(1, pattern(200_000, 4), vec![16_384], false);
    sim.add_link(ms(100));
    sim.run_until(Duration::from_secs(60));
    assert_eq!(sim.received(0), 200_000);
    assert_eq!(first_death(&sim, 0), None);
    assert_eq!(first_death(&sim, 1), None);
    // One probe after the data stopped, then keepalives: no PING per half-timeout.
    let frames = sim.ends[0].subflow_stats(SubflowId(0)).unwrap().frames_sent;
    let acks_and_probes_bound = 60 + 10;
    assert!(frames <= acks_and_probes_bound, "{frames} frames sent by the receiver");
}

#[test]
fn idle_silent_path_death_is_found_by_keepalive() {
    let mut sim = Sim::new(FlowConfig::default());
    sim.add_link(ms(20));
    sim.run_until(Duration::from_secs(1));
    sim.blackhole(0);
    sim.run_until(Duration::from_secs(40));
    let dead_at = sim
        .events
        .iter()
        .find(|(_, s, e)| *s == 0 && matches!(e, FlowEvent::SubflowDead { .. }))
        .map(|(t, _, _)| *t)
        .expect("keepalive found the dead path");
    assert!(
        dead_at > Duration::from_secs(25) && dead_at <= Duration::from_secs(28),
        "{dead_at:?}"
    );
}

#[test]
fn idle_healthy_flow_keeps_alive_without_false_deaths() {
    let mut sim = Sim::new(FlowConfig::default());
    sim.add_link(ms(200));
    sim.run_until(Duration::from_secs(600));
    assert_eq!(sim.ends[0].live_subflows(), 1);
    assert!(sim
        .events
        .iter()
        .all(|(_, _, e)| !matches!(e, FlowEvent::SubflowDead { .. } | FlowEvent::Failed(_))));
    let frames = sim.ends[0].subflow_stats(SubflowId(0)).unwrap().frames_sent;
    // About one PING (or PONG) per keepalive interval, not a flood.
    assert!((10..=60).contains(&frames), "{frames}");
}

#[test]
fn rtt_is_measured_by_ping() {
    let mut sim = Sim::new(FlowConfig::default());
    sim.add_link(ms(35));
    sim.run_until(Duration::from_secs(1));
    let srtt = sim.ends[0]
        .subflow_stats(SubflowId(0))
        .unwrap()
        .srtt
        .unwrap();
    assert!(srtt >= ms(70) && srtt < ms(80), "{srtt:?}");
}

#[test]
fn flow_control_blocks_the_writer_and_bounds_memory() {
    let cfg = FlowConfig {
        send_buffer: 256 * 1024,
        recv_window: 128 * 1024,
        ..FlowConfig::default()
    };
    let mut sim = transfer(cfg, 4_000_000, 0);
    sim.apps[1].paused = true;
    sim.run_until(Duration::from_secs(90));
    let (a, b) = (&sim.apps[0], &sim.apps[1]);
    assert!(
        a.written <= 128 * 1024 + 256 * 1024,
        "writer blocked: {}",
        a.written
    );
    assert!(a.max_send_buffered <= 256 * 1024);
    assert!(b.max_recv_buffered <= 128 * 1024, "{}", b.max_recv_buffered);
    assert!(!sim.ends[0].is_writable());
    assert!(
        sim.events
            .iter()
            .all(|(_, _, e)| !matches!(e, FlowEvent::SubflowDead { .. })),
        "stall is not death"
    );
    sim.apps[1].paused = false;
    assert!(sim.run_to_completion(Duration::from_secs(200)));
    sim.assert_complete();
    assert!(sim.apps[1].max_recv_buffered <= 128 * 1024);
    assert!(count(&sim, 0, |e| *e == FlowEvent::Writable) > 0);
}

#[test]
fn abort_reaches_the_peer() {
    let mut sim = transfer(FlowConfig::default(), 100_000, 100_000);
    sim.apps[0].finish_when_written = false;
    sim.apps[1].paused = true;
    sim.run_until(ms(300));
    sim.ends[0].abort(7, "going away");
    assert_eq!(
        sim.ends[0].status(),
        FlowStatus::Failed(FlowError::LocallyAborted {
            code: 7,
            reason: "going away".into()
        })
    );
    sim.run_until(ms(400));
    let want = FlowError::PeerAborted {
        code: 7,
        reason: "going away".into(),
    };
    assert_eq!(sim.ends[1].status(), FlowStatus::Failed(want.clone()));
    assert!(sim
        .events_of(1)
        .any(|e| *e == FlowEvent::Failed(want.clone())));
    assert_eq!(sim.ends[1].write(b"x"), Err(want.clone()));
    // The paused reader still gets what arrived before the abort, then the error.
    sim.apps[1].paused = false;
    sim.run_until(ms(500));
    assert_eq!(sim.apps[1].received, pattern(100_000, 1));
    assert_eq!(sim.apps[1].read_err, Some(want));
    assert_eq!(sim.ends[0].poll_timeout(), None);
}

#[test]
fn violations_are_errors_not_panics() {
    let t0 = std::time::Instant::now();
    let mut f = FlowState::new(
        FlowConfig {
            recv_window: 100_000,
            ..FlowConfig::default()
        },
        t0,
    );
    let id = f.add_subflow(t0);
    let data = |offset: u64, fin: bool, n: usize| Frame::Data {
        offset,
        fin,
        payload: Bytes::from(vec![0; n]),
    };
    assert!(matches!(
        f.handle_frame(id, data(99_990, false, 20), t0),
        Err(ProtocolViolation::DataBeyondWindow { .. })
    ));
    assert_eq!(f.handle_frame(id, data(10, true, 5), t0), Ok(()));
    assert!(matches!(
        f.handle_frame(id, data(10, true, 6), t0),
        Err(ProtocolViolation::FinChanged { .. })
    ));
    assert!(matches!(
        f.handle_frame(id, data(14, false, 6), t0),
        Err(ProtocolViolation::DataBeyondFin { .. })
    ));
    assert!(matches!(
        f.handle_frame(id, data(0, false, 70_000), t0),
        Err(ProtocolViolation::DataTooLong(70_000))
    ));
    assert!(matches!(
        f.handle_frame(id, data(u64::MAX - 2, false, 5), t0),
        Err(ProtocolViolation::OffsetTooLarge)
    ));
    let ack = |cum, ranges| Frame::Ack {
        cum,
        ranges,
        window: 1 << 20,
    };
    assert!(matches!(
        f.handle_frame(id, ack(1, vec![]), t0),
        Err(ProtocolViolation::AckOfUnsent { acked: 1, sent: 0 })
    ));
    assert!(matches!(
        f.handle_frame(id, ack(0, vec![5..3]), t0),
        Err(ProtocolViolation::BadAckRanges)
    ));
    assert_eq!(
        f.handle_frame(SubflowId(9), Frame::Ping { id: 1 }, t0),
        Err(ProtocolViolation::UnknownSubflow(SubflowId(9)))
    );
    f.write(b"abc").unwrap();
    while f.poll_transmit(id, t0, 1500).is_some() {}
    assert_eq!(f.handle_frame(id, ack(3, vec![]), t0), Ok(()));
    assert!(matches!(
        f.handle_frame(id, ack(0, vec![2..5]), t0),
        Err(ProtocolViolation::AckOfUnsent { .. })
    ));
    assert_eq!(
        f.status(),
        FlowStatus::Open,
        "violations condemn the subflow, not the flow"
    );
}

#[test]
fn resume_ack_comes_first_and_frames_respect_max_len() {
    let t0 = std::time::Instant::now();
    let mut f = FlowState::new(FlowConfig::default(), t0);
    f.write(&[1; 10_000]).unwrap();
    let id = f.add_subflow(t0);
    assert!(f.wants_transmit(id));
    assert_eq!(f.poll_transmit(id, t0, 10), None, "an ACK needs 18 bytes");
    assert!(matches!(
        f.poll_transmit(id, t0, 100),
        Some(Frame::Ack {
            cum: 0,
            window: 4194304,
            ..
        })
    ));
    let mut total = 0;
    for max in [9, 20, 13, 100, 1000, 5000, 65_000] {
        while let Some(frame) = f.poll_transmit(id, t0, max) {
            assert!(frame.encoded_len() <= max, "{frame:?} > {max}");
            if let Frame::Data { payload, .. } = frame {
                total += payload.len();
            }
        }
    }
    assert_eq!(total, 10_000);
    assert!(!f.wants_transmit(id));
}

#[test]
fn a_subflow_ending_an_outage_waits_for_the_peer_then_resends_first() {
    let t0 = std::time::Instant::now();
    let mut f = FlowState::new(FlowConfig::default(), t0);
    let a = f.add_subflow(t0);
    f.write(&[5; 1000]).unwrap();
    while f.poll_transmit(a, t0, 1500).is_some() {}
    f.remove_subflow(a, t0);
    f.write(&[6; 10]).unwrap();
    let b = f.add_subflow(t0 + ms(10));
    let mut sent = Vec::new();
    while let Some(fr) = f.poll_transmit(b, t0 + ms(10), 1500) {
        sent.push(fr);
    }
    assert!(matches!(sent[0], Frame::Ack { .. }));
    assert!(!sent.iter().any(|fr| matches!(fr, Frame::Data { .. })), "{sent:?}");
    let hello = Frame::Ack { cum: 400, ranges: vec![], window: 1 << 20 };
    f.handle_frame(b, hello, t0 + ms(20)).unwrap();
    let mut data = Vec::new();
    while let Some(fr) = f.poll_transmit(b, t0 + ms(20), 1500) {
        if let Frame::Data { offset, payload, .. } = fr {
            data.push((offset, payload.len()));
        }
    }
    assert_eq!(data, vec![(400, 600), (1000, 10)], "the missing units first, then the new ones");
}

#[test]
fn retransmits_wait_for_the_peer_on_a_new_subflow() {
    let t0 = std::time::Instant::now();
    let mut f = FlowState::new(FlowConfig::default(), t0);
    let a = f.add_subflow(t0);
    // Another subflow stays up (unheard): losing `a` is no outage.
    let _other = f.add_subflow(t0);
    let hello = Frame::Ack { cum: 0, ranges: vec![], window: 1 << 20 };
    f.handle_frame(a, hello, t0).unwrap();
    f.write(&[5; 1000]).unwrap();
    while f.poll_transmit(a, t0, 1500).is_some() {}
    f.remove_subflow(a, t0);
    f.write(&[6; 10]).unwrap();
    let b = f.add_subflow(t0 + ms(10));
    let mut sent = Vec::new();
    while let Some(fr) = f.poll_transmit(b, t0 + ms(10), 1500) {
        sent.push(fr);
    }
    // Resume ACK and PING only: with another subflow up, DATA waits for the peer here.
    assert!(matches!(sent[0], Frame::Ack { .. }));
    let data: Vec<_> = sent
        .iter()
        .filter_map(|fr| match fr {
            Frame::Data { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect();
    assert_eq!(data, Vec::<u64>::new());
    // The peer's resume ACK says it got the first 600 bytes: only the rest is re-sent.
    f.handle_frame(
        b,
        Frame::Ack {
            cum: 600,
            ranges: vec![],
            window: 1 << 20,
        },
        t0 + ms(20),
    )
    .unwrap();
    let mut resent = 0;
    while let Some(fr) = f.poll_transmit(b, t0 + ms(20), 1500) {
        if let Frame::Data {
            offset, payload, ..
        } = fr
        {
            assert!(offset >= 600);
            if offset < 1000 {
                resent += payload.len();
            }
        }
    }
    assert_eq!(resent, 400);
    assert_eq!(f.stats().bytes_retransmitted, 400);
    assert!(matches!(f.poll_event(), Some(FlowEvent::SubflowAdded(_))));
}

#[test]
fn a_standby_subflow_carries_data_only_once_the_active_one_is_gone() {
    let t0 = std::time::Instant::now();
    let mut f = FlowState::new(FlowConfig::default(), t0);
    let (a, b) = (f.add_subflow(t0), f.add_subflow(t0));
    f.set_standby(b, true);
    let hello = || Frame::Ack { cum: 0, ranges: vec![], window: 1 << 20 };
    f.handle_frame(a, hello(), t0).unwrap();
    f.handle_frame(b, hello(), t0).unwrap();
    f.write(&[1; 3000]).unwrap();
    let drain = |f: &mut FlowState, id| {
        let mut frames = Vec::new();
        while let Some(fr) = f.poll_transmit(id, t0 + ms(1), 1500) {
            frames.push(fr);
        }
        frames
    };
    let on_b = drain(&mut f, b);
    assert!(on_b.contains(&Frame::Standby { standby: true }), "the peer is told: {on_b:?}");
    assert!(!on_b.iter().any(|fr| matches!(fr, Frame::Data { .. })), "{on_b:?}");
    assert!(!f.wants_transmit(b));
    let on_a = drain(&mut f, a);
    let sent_a: usize = on_a.iter().map(|fr| if let Frame::Data { payload, .. } = fr { payload.len() } else { 0 }).sum();
    assert_eq!(sent_a, 3000);
    // The active subflow goes. What it carried is re-sent on the standby once the peer's
    // next ACK says what arrived (what we knew is a round trip old).
    f.set_subflow_token(a, 0);
    f.remove_subflow(a, t0 + ms(2));
    let on_b = drain(&mut f, b);
    assert!(matches!(on_b[..], [Frame::Ack { .. }, Frame::Abandon { token: 0 }]), "{on_b:?}");
    assert!(!f.wants_transmit(b), "re-sends wait for the peer's ACK");
    f.handle_frame(b, Frame::Ack { cum: 1000, ranges: vec![], window: 1 << 20 }, t0 + ms(3)).unwrap();
    let on_b = drain(&mut f, b);
    let resent: Vec<u64> = on_b.iter().filter_map(|fr| if let Frame::Data { offset, .. } = fr { Some(*offset) } else { None }).collect();
    assert_eq!(resent.first(), Some(&1000), "{resent:?}");
    assert_eq!(f.stats().bytes_retransmitted, 2000);
    // The peer's STANDBY marks its end too.
    let mut g = FlowState::new(FlowConfig::default(), t0);
    let c = g.add_subflow(t0);
    g.handle_frame(c, Frame::Standby { standby: true }, t0).unwrap();
    assert!(g.is_standby(c));
    g.handle_frame(c, Frame::Standby { standby: false }, t0).unwrap();
    assert!(!g.is_standby(c));
}

#[test]
fn resends_after_a_local_loss_go_without_an_ack_once_the_hold_ends() {
    let t0 = std::time::Instant::now();
    let (mut f, a, b) = two_heard_subflows(t0);
    f.write(&[1; 1000]).unwrap();
    while f.poll_transmit(a, t0, 1500).is_some() {}
    f.remove_subflow(a, t0);
    while f.poll_transmit(b, t0, 1500).is_some() {}
    let hold_end = f.poll_timeout().unwrap();
    assert!(hold_end > t0 && hold_end <= t0 + ms(500), "{:?}", hold_end - t0);
    f.handle_timeout(hold_end);
    let mut resent = 0;
    while let Some(fr) = f.poll_transmit(b, hold_end, 1500) {
        if let Frame::Data { payload, .. } = fr {
            resent += payload.len();
        }
    }
    assert_eq!(resent, 1000);
}

#[test]
fn a_standby_keeps_alive_less_often_than_the_active_path() {
    let t0 = std::time::Instant::now();
    let mut f = FlowState::new(FlowConfig::default(), t0);
    let (a, b) = (f.add_subflow(t0), f.add_subflow(t0));
    f.set_standby(b, true);
    let hello = || Frame::Ack { cum: 0, ranges: vec![], window: 1 << 20 };
    f.handle_frame(a, hello(), t0).unwrap();
    f.handle_frame(b, hello(), t0).unwrap();
    let pings = |f: &mut FlowState, id, at| {
        let mut n = 0;
        while let Some(fr) = f.poll_transmit(id, at, 1500) {
            if let Frame::Ping { id: ping } = fr {
                f.handle_frame(id, Frame::Pong { id: ping }, at).unwrap();
                n += 1;
            }
        }
        n
    };
    // The first PING (RTT sample) and the STANDBY frame go at once.
    pings(&mut f, a, t0);
    pings(&mut f, b, t0);
    let at = t0 + Duration::from_secs(26);
    f.handle_timeout(at);
    assert_eq!((pings(&mut f, a, at), pings(&mut f, b, at)), (1, 0), "after 26 s only the active path pings");
    let at = t0 + Duration::from_secs(121);
    f.handle_timeout(at);
    assert_eq!(pings(&mut f, b, at), 1, "the standby pings after 120 s");
}

#[test]
fn what_never_left_a_lost_subflow_goes_at_once_and_new_data_follows() {
    let t0 = std::time::Instant::now();
    let (mut f, a, b) = two_heard_subflows(t0);
    f.write(&[1; 3000]).unwrap();
    while f.poll_transmit(a, t0, 1100).is_some() {}
    // Units 2000.. were still in the socket's unsent queue when it went.
    f.remove_subflow_unsent(a, t0, &[2000..3000]);
    f.write(&[2; 500]).unwrap();
    let data = data_sent(&mut f, b, t0);
    assert_eq!(data, vec![(2000, 1000), (3000, 500)], "never-sent units first, then new data");
    // What may have arrived waits for the ACK, which says 0..1000 did; 1000..2000 goes.
    let resent = data_after_ack(&mut f, b, 1000, t0 + ms(3));
    assert_eq!(resent, vec![(1000, 1000)]);
}

#[test]
fn a_new_subflow_left_alone_by_retired_ones_waits_for_the_peer() {
    // The peer moved: a subflow to its new address is up but unheard when the old ones
    // are retired (their address left its record) with data in flight that was lost.
    let t0 = std::time::Instant::now();
    let (mut f, a, b) = two_heard_subflows(t0);
    f.write(&[1; 3000]).unwrap();
    while f.poll_transmit(a, t0, 1100).is_some() {}
    let c = f.add_subflow(t0 + ms(5));
    f.remove_subflow_unsent(a, t0 + ms(6), &[]);
    f.remove_subflow_unsent(b, t0 + ms(6), &[]);
    f.write(&[2; 500]).unwrap();
    let early = data_sent(&mut f, c, t0 + ms(6));
    assert_eq!(early, vec![], "new data ahead of the re-sends would block the reader");
    // The peer's resume ACK: nothing of 1000.. arrived; that goes first, then the new data.
    let data = data_after_ack(&mut f, c, 1000, t0 + ms(20));
    assert_eq!(data.first().map(|d| d.0), Some(1000), "{data:?}");
    assert_eq!(data.iter().map(|d| d.1).sum::<usize>(), 2500);
}

#[test]
fn a_subflow_the_peer_opened_waits_for_its_resume_ack_even_after_an_outage() {
    let t0 = std::time::Instant::now();
    // The only path went with 2000.. still unsent; the peer rejoins from elsewhere.
    let mut f = only_path_lost_with_unsent_tail(t0);
    let b = f.add_subflow(t0 + ms(100));
    f.set_peer_speaks_first(b);
    assert_eq!(data_sent(&mut f, b, t0 + ms(100)), vec![], "nothing before the peer's resume ACK");
    // Nothing of 1000.. arrived: it goes first, before what never left.
    let data = data_after_ack(&mut f, b, 1000, t0 + ms(101));
    assert_eq!(data.first().map(|d| d.0), Some(1000), "{data:?}");
    assert_eq!(data.iter().map(|d| d.1).sum::<usize>(), 2000);
}

#[test]
fn a_join_with_its_resume_point_lets_the_only_subflow_send_at_once() {
    let t0 = std::time::Instant::now();
    let mut f = only_path_lost_with_unsent_tail(t0);
    let b = f.add_subflow(t0 + ms(100));
    f.set_peer_speaks_first(b);
    // The JOIN said the peer has everything below 1000: that is its resume ACK.
    f.peer_resumes_at(b, 1000, t0 + ms(100)).unwrap();
    let data = data_sent(&mut f, b, t0 + ms(100));
    assert_eq!(data.first().map(|d| d.0), Some(1000), "what the peer lacks goes first: {data:?}");
    assert_eq!(data.iter().map(|d| d.1).sum::<usize>(), 2000);
    // The real resume ACK that follows changes nothing.
    assert_eq!(data_after_ack(&mut f, b, 1000, t0 + ms(150)), vec![]);
    // A resume point beyond what was sent is an error, as in an ACK.
    let c = f.add_subflow(t0 + ms(200));
    f.remove_subflow(b, t0 + ms(200));
    assert!(f.peer_resumes_at(c, 5000, t0 + ms(200)).is_err());
}

#[test]
fn a_join_resume_point_is_ignored_while_other_subflows_live() {
    let t0 = std::time::Instant::now();
    // The peer lost the path it had (we do not know yet) and joins from elsewhere: until
    // its ACK and ABANDON arrive, nothing new may queue ahead of what the old path lost.
    let (mut f, a, _) = two_heard_subflows(t0);
    f.write(&[7; 3000]).unwrap();
    while f.poll_transmit(a, t0, 1100).is_some() {}
    let c = f.add_subflow(t0 + ms(100));
    f.set_peer_speaks_first(c);
    f.peer_resumes_at(c, 0, t0 + ms(100)).unwrap();
    assert!(!f.is_heard(c), "the JOIN did not count as the peer's first frame");
    assert_eq!(data_sent(&mut f, c, t0 + ms(100)), vec![], "nothing before the peer's resume ACK");
}

#[test]
fn after_an_outage_a_new_subflow_sends_what_surely_is_missing_before_the_peer_speaks() {
    let t0 = std::time::Instant::now();
    // The only path goes; its socket had not sent 2000.. yet. Time passes without a path.
    let mut f = only_path_lost_with_unsent_tail(t0);
    f.handle_timeout(t0 + ms(600));
    f.write(&[6; 10]).unwrap();
    let b = f.add_subflow(t0 + ms(700));
    let sent: Vec<Frame> = std::iter::from_fn(|| f.poll_transmit(b, t0 + ms(700), 1500)).collect();
    assert!(matches!(sent[0], Frame::Ack { .. }), "{sent:?}");
    let data: Vec<(u64, usize)> = sent
        .iter()
        .filter_map(|fr| match fr {
            Frame::Data { offset, payload, .. } => Some((*offset, payload.len())),
            _ => None,
        })
        .collect();
    assert_eq!(data, vec![(2000, 1000), (3000, 10)], "what never left, then new data, at once");
    // The peer's resume ACK: 0..1500 arrived; 1500..2000 was lost in flight and goes now.
    f.handle_frame(b, Frame::Ack { cum: 1500, ranges: vec![2000..3010], window: 1 << 20 }, t0 + ms(720)).unwrap();
    assert_eq!(data_sent(&mut f, b, t0 + ms(720)), vec![(1500, 500)]);
}

/// Records replayed on the path (the same sealed bytes again, on the same subflow) are
/// dropped by the record layer; re-sealed copies of the same data and late copies on
/// another subflow are absorbed by the flow. Both streams arrive whole, once.
#[test]
fn replayed_and_duplicated_records_leave_the_streams_intact() {
    let mut sim = transfer(FlowConfig::default(), 2_000_000, 700_000);
    sim.dup_pct = 30;
    sim.cross_pct = 10;
    sim.bandwidth = Some(5_000_000);
    sim.add_link(ms(30));
    sim.add_link(ms(70));
    assert!(sim.run_to_completion(Duration::from_secs(60)));
    sim.assert_complete();
    assert!(sim.replays_delivered > 5, "{} replays reached a receiver", sim.replays_delivered);
    assert_eq!(sim.fresh_refused, 0);
}

/// Records are sealed under a new key every 4 packet numbers: both streams cross a dozen
/// epochs or more while records are replayed, copied late onto the other path and re-sent after a
/// path dies, so records of old and new epochs arrive out of order on both subflows.
/// Everything arrives, nothing fails to open, and each end keeps only a few epochs' keys.
#[test]
fn keys_change_by_epoch_without_a_round_trip_and_nothing_is_lost() {
    let mut sim = transfer(FlowConfig::default(), 1_500_000, 600_000);
    sim.use_epoch_bits(2);
    sim.dup_pct = 30;
    sim.cross_pct = 20;
    sim.bandwidth = Some(5_000_000);
    let slow = sim.add_link(ms(70));
    sim.run_until(ms(250));
    sim.kill_link(slow, [Some(ms(40)), Some(ms(60))]);
    assert!(sim.run_to_completion(Duration::from_secs(60)));
    sim.assert_complete();
    for side in 0..2 {
        assert!(sim.records_sealed(side) >= 4 * 12, "side {side} sealed {} records", sim.records_sealed(side));
        let (forged, epochs) = sim.receiving_keys(side);
        assert_eq!(forged, 0, "side {side}");
        assert!(!epochs.is_empty() && epochs.len() <= 3, "side {side} keeps {epochs:?}");
    }
    assert!(sim.replays_delivered > 5, "{} replays reached a receiver", sim.replays_delivered);
    assert!(sim.ends.iter().any(|e| e.stats().duplicate_bytes_received > 0), "copies arrived");
}
