//! The link emulator enforces delay, rate and loss, and blackholes on demand.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use msocket_lab::probe::{connect_from, connect_until, echo_bulk, echo_round_trip, EchoServer};
use msocket_lab::{Access, LinkId, PhoneLab};

fn wifi(lab: &PhoneLab) -> IpAddr {
    lab.phone_addr(Access::Wifi).unwrap().into()
}

/// (connect time, best echo RTT of 5) from `bind`.
fn rtts(lab: &PhoneLab, server: &EchoServer, bind: IpAddr) -> (Duration, Duration) {
    let to = sa(lab.server_addr(), server.port());
    run_in(lab.phone(), SECS_30, move || async move {
        // The first connect also waits for ARP across the link: measure a second one.
        drop(
            connect_until(Some(bind), to, Duration::from_secs(10))
                .await
                .expect("path works"),
        );
        let t = std::time::Instant::now();
        let mut s = connect_from(Some(bind), to, Duration::from_secs(5))
            .await
            .expect("connect");
        let connect = t.elapsed();
        let mut best = Duration::MAX;
        for _ in 0..5 {
            best = best.min(echo_round_trip(&mut s, b"ping").await.expect("echo"));
        }
        (connect, best)
    })
}

#[test]
#[ignore = "needs root and network namespaces"]
fn delay_sets_the_round_trip_time_and_can_change_at_run_time() {
    ready();
    let lab = lab_with("50ms");
    let server = EchoServer::start(lab.server(), 7000).unwrap();
    let (connect, echo) = rtts(&lab, &server, wifi(&lab));
    for rtt in [connect, echo] {
        assert!(
            rtt >= Duration::from_millis(100) && rtt < Duration::from_millis(200),
            "{connect:?} {echo:?}"
        );
    }
    // The cellular link is not delayed.
    let (_, cell) = rtts(&lab, &server, lab.phone_addr(Access::Cell).unwrap().into());
    assert!(cell < Duration::from_millis(50), "{cell:?}");
    lab.set_link(LinkId::Wifi, "10ms".parse().unwrap()).unwrap();
    let (_, echo) = rtts(&lab, &server, wifi(&lab));
    assert!(
        echo >= Duration::from_millis(20) && echo < Duration::from_millis(100),
        "{echo:?}"
    );
}

#[test]
#[ignore = "needs root and network namespaces"]
fn rate_limits_a_bulk_transfer() {
    ready();
    let lab = lab_with("10mbit");
    let server = EchoServer::start(lab.server(), 7000).unwrap();
    let (bind, to) = (wifi(&lab), sa(lab.server_addr(), server.port()));
    let took = run_in(lab.phone(), Duration::from_secs(60), move || async move {
        let s = connect_until(Some(bind), to, Duration::from_secs(10))
            .await
            .expect("connect");
        echo_bulk(s, 2_000_000).await.expect("transfer")
    });
    // 2 MB is 16 Mbit: at least 1.6 s at 10 Mbit/s (each direction limited separately).
    assert!(
        took >= Duration::from_millis(1500),
        "{took:?}: rate not enforced"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    let stats = lab.emulator(LinkId::Wifi).unwrap().stats();
    assert!(
        stats.a_to_b.bytes_out >= 2_000_000 && stats.b_to_a.bytes_out >= 2_000_000,
        "{stats:?}"
    );
    assert_eq!(
        stats.a_to_b.dropped_oversize + stats.b_to_a.dropped_oversize,
        0
    );
}

#[test]
#[ignore = "needs root and network namespaces"]
fn transfers_finish_through_heavy_loss_and_drops_are_counted() {
    ready();
    let lab = lab_with("0ms 30% loss");
    let server = EchoServer::start(lab.server(), 7000).unwrap();
    let (bind, to) = (wifi(&lab), sa(lab.server_addr(), server.port()));
    run_in(lab.phone(), Duration::from_secs(120), move || async move {
        let s = connect_until(Some(bind), to, Duration::from_secs(60))
            .await
            .expect("connect");
        echo_bulk(s, 100_000).await.expect("transfer despite loss")
    });
    let stats = lab.emulator(LinkId::Wifi).unwrap().stats();
    assert!(
        stats.a_to_b.dropped_loss > 0 && stats.b_to_a.dropped_loss > 0,
        "{stats:?}"
    );
    let rate = stats.a_to_b.dropped_loss as f64 / stats.a_to_b.frames_in as f64;
    assert!(
        (0.15..0.45).contains(&rate),
        "loss rate {rate} far from 30%: {stats:?}"
    );
}

#[test]
#[ignore = "needs root and network namespaces"]
fn blackhole_silences_a_path_until_lifted() {
    ready();
    let lab = lab_with("unlimited");
    let server = EchoServer::start(lab.server(), 7000).unwrap();
    let (bind, cell, to) = (
        wifi(&lab),
        IpAddr::from(lab.phone_addr(Access::Cell).unwrap()),
        sa(lab.server_addr(), server.port()),
    );
    rtts(&lab, &server, bind);
    lab.blackhole(LinkId::Wifi, true).unwrap();
    let blocked = run_in(lab.phone(), SECS_30, move || async move {
        connect_from(Some(bind), to, Duration::from_secs(1))
            .await
            .map(drop)
    });
    assert_eq!(blocked.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    run_in(lab.phone(), SECS_30, move || async move {
        connect_from(Some(cell), to, Duration::from_secs(5))
            .await
            .expect("cell unaffected")
    });
    assert!(
        lab.emulator(LinkId::Wifi)
            .unwrap()
            .stats()
            .a_to_b
            .dropped_blackhole
            > 0
    );
    lab.blackhole(LinkId::Wifi, false).unwrap();
    run_in(lab.phone(), SECS_30, move || async move {
        connect_until(Some(bind), to, Duration::from_secs(10))
            .await
            .expect("restored")
    });
    assert!(
        lab.blackhole(LinkId::Server, true).is_err(),
        "unlimited server link has no emulator"
    );
}
