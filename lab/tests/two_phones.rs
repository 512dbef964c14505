//! The two-phone topology: each kind of NAT maps ports as it says, private addresses are
//! unreachable from outside, UDP is dropped, a 443-only network lets only TCP 443 out,
//! moves work, and nothing is left behind.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use msocket_lab::probe::{connect_from, connect_until, EchoServer};
use msocket_lab::{Access, Nat, Phone, PhoneNet, TwoPhoneConfig, TwoPhoneLab, PUBLIC_HOST_ADDR, RELAY_ADDRS};

fn exists(name: &str) -> bool {
    std::path::Path::new("/var/run/netns").join(name).exists()
}

/// Connects from `bind` to the echo server (bounded) and returns the local port, and what
/// the server saw as the source.
fn observed(lab: &TwoPhoneLab, phone: Phone, bind: Ipv4Addr, echo: &EchoServer, to: SocketAddr) -> (u16, SocketAddr) {
    let before = echo.peers().len();
    let local = run_in(lab.phone(phone), SECS_30, move || async move {
        let s = connect_until(Some(IpAddr::V4(bind)), to, SECS_30).await.expect("connect to the echo server");
        s.local_addr().unwrap().port()
    });
    let seen = echo.wait_for_peers(before + 1, SECS_30).expect("the echo server saw the connection");
    (local, seen[before])
}

#[test]
#[ignore = "needs root and network namespaces"]
fn nats_filters_moves_and_teardown() {
    ready();
    let mut config = TwoPhoneConfig { uplink: "1ms".parse().unwrap(), ..TwoPhoneConfig::default() };
    *config.phone(Phone::A) = PhoneNet { wifi: "1ms".parse().unwrap(), ..PhoneNet::all(Nat::PortPreserving) };
    *config.phone(Phone::B) = PhoneNet { only_tcp_443: true, ..PhoneNet::all(Nat::Symmetric) };
    let lab = TwoPhoneLab::build(config).expect("build the two-phone lab");
    let names: Vec<String> = lab.namespaces().iter().map(|n| n.name().to_string()).collect();
    assert_eq!(names.len(), 11 + 1 + 4, "{names:?}"); // 11 hosts, A's Wi-Fi link, 4 uplinks
    assert!(names.iter().all(|n| exists(n)));

    let echo = EchoServer::start(lab.public_host(), 7000).expect("echo server on the public host");
    let echo443 = EchoServer::start(lab.public_host(), 443).expect("echo server on port 443");
    let to = SocketAddr::from((PUBLIC_HOST_ADDR, 7000));
    let to443 = SocketAddr::from((PUBLIC_HOST_ADDR, 443));

    // Port-preserving: home NAT and both carrier-grade steps keep the port.
    let a_wifi = lab.phone_addr(Phone::A, Access::Wifi).unwrap();
    let (port, seen) = observed(&lab, Phone::A, a_wifi, &echo, to);
    assert_eq!(seen, SocketAddr::from((lab.public_addr(Phone::A, Access::Wifi).unwrap(), port)));
    assert_eq!(seen.ip(), IpAddr::from(Ipv4Addr::new(172, 16, 1, 2)));
    let a_cell = lab.phone_addr(Phone::A, Access::Cell).unwrap();
    let (port, seen) = observed(&lab, Phone::A, a_cell, &echo, to);
    assert_eq!(seen, SocketAddr::from((Ipv4Addr::new(172, 16, 11, 2), port)), "carrier-grade NAT, two port-preserving steps");

    // Symmetric: a random port per connection (checked over three, as a random port may
    // equal the local one once).
    let b_wifi = lab.phone_addr(Phone::B, Access::Wifi).unwrap();
    let mut same = 0;
    for _ in 0..3 {
        let (port, seen) = observed(&lab, Phone::B, b_wifi, &echo443, to443);
        assert_eq!(seen.ip(), IpAddr::from(Ipv4Addr::new(172, 16, 2, 2)));
        same += usize::from(seen.port() == port);
    }
    assert!(same < 3, "a symmetric NAT kept the port three times");

    // 443 only on phone B: another port is dropped (counted), 443 passes.
    let before = lab.filtered(Phone::B).unwrap();
    let refused = run_in(lab.phone(Phone::B), SECS_30, move || async move {
        connect_from(Some(IpAddr::V4(b_wifi)), to, Duration::from_millis(500)).await.map(drop)
    });
    assert!(refused.is_err(), "phone B reached port 7000 on a 443-only network");
    assert!(lab.filtered(Phone::B).unwrap() > before);
    assert_eq!(lab.filtered(Phone::A).unwrap(), 0);

    // A private address behind NAT is unreachable from outside, at once.
    let a_private = SocketAddr::from((a_wifi, 7000));
    let err = run_in(lab.public_host(), SECS_30, move || async move {
        connect_from(None, a_private, Duration::from_secs(5)).await.map(drop)
    })
    .expect_err("the public host reached phone A's private address");
    assert_ne!(err.kind(), std::io::ErrorKind::TimedOut, "unreachable should be said, not timed out: {err}");

    // UDP is dropped (and counted) on the way out.
    let before = lab.udp_dropped().unwrap();
    run_in(lab.phone(Phone::A), SECS_30, move || async move {
        let s = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
        for _ in 0..3 {
            s.send_to(b"udp", (RELAY_ADDRS[0], 9999)).await.unwrap();
        }
    });
    let deadline = std::time::Instant::now() + SECS_30;
    while lab.udp_dropped().unwrap() < before + 3 {
        assert!(std::time::Instant::now() < deadline, "UDP drops not counted");
        // Polling a counter, bounded.
        std::thread::sleep(Duration::from_millis(10));
    }

    // Moves: Wi-Fi's address goes (bound sockets fail), cellular stays, Wi-Fi comes back.
    lab.del_addr(Phone::A, Access::Wifi).unwrap();
    let gone = run_in(lab.phone(Phone::A), SECS_30, move || async move {
        connect_from(Some(IpAddr::V4(a_wifi)), to, Duration::from_secs(2)).await.map(drop)
    });
    assert!(gone.is_err());
    let (_, seen) = observed(&lab, Phone::A, a_cell, &echo, to);
    assert_eq!(seen.ip(), IpAddr::from(Ipv4Addr::new(172, 16, 11, 2)));
    lab.add_addr(Phone::A, Access::Wifi, Ipv4Addr::new(192, 168, 1, 3)).unwrap();
    let (_, seen) = observed(&lab, Phone::A, Ipv4Addr::new(192, 168, 1, 3), &echo, to);
    assert_eq!(seen.ip(), IpAddr::from(Ipv4Addr::new(172, 16, 1, 2)));
    lab.link_down(Phone::A, Access::Cell).unwrap();
    lab.link_up(Phone::A, Access::Cell).unwrap();
    let (_, seen) = observed(&lab, Phone::A, a_cell, &echo, to);
    assert_eq!(seen.ip(), IpAddr::from(Ipv4Addr::new(172, 16, 11, 2)));

    drop((echo, echo443));
    drop(lab);
    assert!(names.iter().all(|n| !exists(n)), "left behind: {:?}", names.iter().filter(|n| exists(n)).collect::<Vec<_>>());
}

#[test]
#[ignore = "needs root and network namespaces"]
fn tears_down_after_a_panic() {
    ready();
    let mut names = Vec::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = TwoPhoneLab::build(TwoPhoneConfig::default()).expect("build the two-phone lab");
        names = lab.namespaces().iter().map(|n| n.name().to_string()).collect();
        assert!(names.iter().all(|n| exists(n)));
        panic!("test body fails while the lab is up");
    }));
    assert!(outcome.is_err());
    assert_eq!(names.len(), 11, "unlimited links: no link namespaces");
    assert!(names.iter().all(|n| !exists(n)), "left behind after panic: {names:?}");
}
