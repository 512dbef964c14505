//! The moves scenarios need: address loss, NAT rebinding, link down/up, server renumbering.

mod common;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use msocket_lab::probe::{connect_from, connect_until, echo_round_trip, EchoServer};
use msocket_lab::{Access, LabConfig, PhoneLab};
use tokio::net::TcpStream;

/// Connects from `bind` and proves the path with one echo; returns a runtime-independent
/// socket so it can outlive this task and be used again after a move.
fn open(lab: &PhoneLab, bind: Ipv4Addr, to: SocketAddr) -> std::net::TcpStream {
    run_in(lab.phone(), SECS_30, move || async move {
        let mut s = connect_until(Some(bind.into()), to, Duration::from_secs(10)).await?;
        echo_round_trip(&mut s, b"before the move").await?;
        s.into_std()
    })
    .expect("connection before the move")
}

/// One echo on an existing connection, bounded by `limit`.
fn echo_again(
    lab: &PhoneLab,
    s: std::net::TcpStream,
    limit: Duration,
) -> io::Result<std::net::TcpStream> {
    run_in(lab.phone(), SECS_30, move || async move {
        let mut s = TcpStream::from_std(s)?;
        match tokio::time::timeout(limit, echo_round_trip(&mut s, b"after the move")).await {
            Ok(r) => r.map(|_| ())?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "echo timed out")),
        }
        s.into_std()
    })
}

fn try_connect(
    lab: &PhoneLab,
    bind: Option<Ipv4Addr>,
    to: SocketAddr,
    limit: Duration,
) -> io::Result<SocketAddr> {
    run_in(lab.phone(), SECS_30, move || async move {
        connect_from(bind.map(IpAddr::from), to, limit)
            .await?
            .local_addr()
    })
}

#[test]
#[ignore = "needs root and network namespaces"]
fn deleting_the_wifi_address_breaks_wifi_and_spares_cell() {
    ready();
    let lab = lab(LabConfig::default());
    let server = EchoServer::start(lab.server(), 7000).unwrap();
    let to = sa(lab.server_addr(), server.port());
    let (wifi, cell) = (
        lab.phone_addr(Access::Wifi).unwrap(),
        lab.phone_addr(Access::Cell).unwrap(),
    );
    let on_wifi = open(&lab, wifi, to);
    let on_cell = open(&lab, cell, to);

    assert_eq!(lab.del_addr(Access::Wifi).unwrap(), wifi);
    assert_eq!(lab.phone_addr(Access::Wifi), None);
    assert!(
        echo_again(&lab, on_wifi, Duration::from_secs(2)).is_err(),
        "wifi connection survived its address"
    );
    let bind = try_connect(&lab, Some(wifi), to, Duration::from_secs(2)).unwrap_err();
    assert_eq!(bind.kind(), io::ErrorKind::AddrNotAvailable, "{bind}");
    let on_cell =
        echo_again(&lab, on_cell, Duration::from_secs(5)).expect("cell connection unaffected");
    // Unbound sockets now leave through cellular.
    assert_eq!(
        try_connect(&lab, None, to, Duration::from_secs(5))
            .unwrap()
            .ip(),
        IpAddr::from(cell)
    );

    // A new lease on Wi-Fi works again, with its policy routes.
    let new = Ipv4Addr::new(192, 168, 1, 3);
    lab.add_addr(Access::Wifi, new).unwrap();
    drop(open(&lab, new, to));
    drop(on_cell);
    assert!(
        lab.add_addr(Access::Wifi, Ipv4Addr::new(192, 168, 1, 4))
            .is_err(),
        "second address refused"
    );
    assert!(
        lab.add_addr(Access::Cell, Ipv4Addr::new(192, 168, 1, 9))
            .is_err(),
        "wrong subnet refused"
    );
    assert!(lab.del_addr(Access::Wifi).is_ok() && lab.del_addr(Access::Wifi).is_err());
}

#[test]
#[ignore = "needs root and network namespaces"]
fn nat_rebinding_changes_the_source_the_server_sees() {
    ready();
    let lab = lab(LabConfig::default());
    let server = EchoServer::start(lab.server(), 7000).unwrap();
    let to = sa(lab.server_addr(), server.port());
    let wifi = lab.phone_addr(Access::Wifi).unwrap();
    let before = lab.router_public_addr(Access::Wifi);
    let old_conn = open(&lab, wifi, to);
    assert_eq!(
        server.wait_for_peers(1, SECS_30).unwrap()[0].ip(),
        IpAddr::from(before)
    );

    let after = lab.nat_rebind(Access::Wifi).unwrap();
    assert_ne!(after, before);
    assert_eq!(lab.router_public_addr(Access::Wifi), after);
    drop(open(&lab, wifi, to));
    let peers = server.wait_for_peers(2, SECS_30).unwrap();
    assert_eq!(peers[1].ip(), IpAddr::from(after), "{peers:?}");
    // The old mapping is gone: the old connection's next segment arrives from a new
    // source, the server resets it.
    assert!(
        echo_again(&lab, old_conn, Duration::from_secs(3)).is_err(),
        "connection survived NAT rebinding"
    );
    assert_ne!(lab.nat_rebind(Access::Wifi).unwrap(), after);
}

#[test]
#[ignore = "needs root and network namespaces"]
fn link_down_and_up() {
    ready();
    let lab = lab(LabConfig::default());
    let server = EchoServer::start(lab.server(), 7000).unwrap();
    let to = sa(lab.server_addr(), server.port());
    let wifi = lab.phone_addr(Access::Wifi).unwrap();
    drop(open(&lab, wifi, to));
    lab.link_down(Access::Wifi).unwrap();
    assert!(
        try_connect(&lab, Some(wifi), to, Duration::from_secs(2)).is_err(),
        "connected over a downed link"
    );
    assert_eq!(
        try_connect(&lab, None, to, Duration::from_secs(5))
            .unwrap()
            .ip(),
        IpAddr::from(lab.phone_addr(Access::Cell).unwrap())
    );
    lab.link_up(Access::Wifi).unwrap();
    drop(open(&lab, wifi, to));
    assert_eq!(
        try_connect(&lab, None, to, Duration::from_secs(5))
            .unwrap()
            .ip(),
        IpAddr::from(wifi),
        "wifi preferred again"
    );
}

#[test]
#[ignore = "needs root and network namespaces"]
fn server_renumbering() {
    ready();
    let lab = lab(LabConfig::default());
    let server = EchoServer::start(lab.server(), 7000).unwrap();
    let old = lab.server_addr();
    let cell = lab.phone_addr(Access::Cell).unwrap();
    drop(open(&lab, cell, sa(old, server.port())));
    let new = Ipv4Addr::new(172, 16, 100, 20);
    assert_eq!(lab.renumber_server(new).unwrap(), old);
    assert_eq!(lab.server_addr(), new);
    assert!(try_connect(
        &lab,
        Some(cell),
        sa(old, server.port()),
        Duration::from_secs(1)
    )
    .is_err());
    drop(open(&lab, cell, sa(new, server.port())));
    assert!(
        lab.renumber_server(Ipv4Addr::new(10, 0, 0, 1)).is_err(),
        "outside the server subnet"
    );
    assert!(lab.renumber_server(new).is_err(), "same address");
}
