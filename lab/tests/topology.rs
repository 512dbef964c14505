//! The phone topology builds, connects, and leaves nothing behind.

mod common;

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use common::*;
use msocket_lab::probe::{connect_until, echo_round_trip, EchoServer};
use msocket_lab::{cleanup_stale, Access, Error, LabConfig, LinkId, Netns, PhoneLab};

fn lab_namespaces(lab: &PhoneLab) -> Vec<String> {
    let mut names: Vec<String> = [
        lab.phone(),
        lab.router(Access::Wifi),
        lab.router(Access::Cell),
        lab.core(),
        lab.server(),
    ]
    .iter()
    .map(|n| n.name().to_string())
    .collect();
    for l in [LinkId::Wifi, LinkId::Cell, LinkId::Server] {
        if let Some(n) = lab.link_ns(l) {
            names.push(n.name().to_string());
        }
    }
    names
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/var/run/netns").join(name).exists()
}

#[test]
#[ignore = "needs root and network namespaces"]
fn builds_and_tears_down() {
    ready();
    let lab = lab(LabConfig {
        server_link: "1ms".parse().unwrap(),
        ..LabConfig::default()
    });
    let names = lab_namespaces(&lab);
    assert_eq!(names.len(), 8, "{names:?}");
    assert!(names.iter().all(|n| exists(n)), "{names:?}");
    assert!(lab.emulator(LinkId::Server).is_some());
    assert_eq!(
        lab.phone_addr(Access::Wifi),
        Some("192.168.1.2".parse().unwrap())
    );
    assert_eq!(
        lab.phone_addr(Access::Cell),
        Some("10.64.0.2".parse().unwrap())
    );
    drop(lab);
    assert!(
        names.iter().all(|n| !exists(n)),
        "left behind: {:?}",
        names.iter().filter(|n| exists(n)).collect::<Vec<_>>()
    );
}

#[test]
#[ignore = "needs root and network namespaces"]
fn tears_down_after_a_panic() {
    ready();
    let mut names = Vec::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let lab = lab(LabConfig::default());
        names = lab_namespaces(&lab);
        assert!(names.iter().all(|n| exists(n)));
        panic!("test body fails while the lab is up");
    }));
    assert!(outcome.is_err());
    assert_eq!(names.len(), 7);
    assert!(
        names.iter().all(|n| !exists(n)),
        "left behind after panic: {names:?}"
    );
}

#[test]
#[ignore = "needs root and network namespaces"]
fn cleanup_stale_removes_namespaces_of_dead_processes_only() {
    ready();
    let _cleaning = common::cleanup_lock();
    // No process can have this pid: Linux pids stay below PID_MAX_LIMIT (2^22). (A pid of
    // a child we ran and reaped is not safe: /proc/<n> also exists for any live thread id,
    // and a sandbox may show another pid namespace's /proc.)
    let dead: u32 = 4_000_000_000;
    let stale = format!("msl{dead}-0-phone");
    let out = std::process::Command::new("ip")
        .args(["netns", "add", &stale])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mine = Netns::new("cleanup-probe").unwrap();
    let removed = cleanup_stale().unwrap();
    assert!(removed.contains(&stale), "{removed:?}");
    assert!(!exists(&stale));
    assert!(
        exists(mine.name()),
        "a live process's namespace was removed"
    );
}

#[test]
#[ignore = "needs root and network namespaces"]
fn runtime_tasks_report_panics_and_timeouts() {
    ready();
    let ns = Netns::new("rt-probe").unwrap();
    // The task really runs inside: it sees the namespace's loopback only.
    let ifaces = run_in(&ns, SECS_30, || async {
        std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default()
    });
    let names: Vec<&str> = ifaces
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(names, ["lo"], "{ifaces}");
    let panicked = ns
        .spawn_runtime(|| async { panic!("inside") })
        .unwrap()
        .join(SECS_30);
    assert!(
        matches!(&panicked, Err(Error::Panicked { message, .. }) if message == "inside"),
        "{panicked:?}"
    );
    let slow = ns
        .spawn_runtime(|| async { tokio::time::sleep(Duration::from_secs(3600)).await })
        .unwrap()
        .join(Duration::from_millis(200));
    assert!(matches!(slow, Err(Error::Timeout { .. })), "{slow:?}");
}

/// Echo from the phone bound to `bind`; returns the peer address the server saw.
fn echo_from(lab: &PhoneLab, server: &EchoServer, bind: IpAddr, n: usize) {
    let to = sa(lab.server_addr(), server.port());
    let rtt = run_in(lab.phone(), SECS_30, move || async move {
        let mut s = connect_until(Some(bind), to, Duration::from_secs(10)).await?;
        assert_eq!(s.local_addr()?.ip(), bind);
        echo_round_trip(&mut s, b"hello through the lab").await
    })
    .expect("echo");
    assert!(rtt < Duration::from_secs(1), "{rtt:?}");
    server
        .wait_for_peers(n, SECS_30)
        .expect("server saw the connection");
}

#[test]
#[ignore = "needs root and network namespaces"]
fn both_interfaces_reach_the_server_through_nat() {
    ready();
    let lab = lab(LabConfig::default());
    let peers = echo_from_both(&lab);
    assert_eq!(
        peers,
        vec![
            IpAddr::from(lab.router_public_addr(Access::Wifi)),
            IpAddr::from(lab.router_public_addr(Access::Cell))
        ]
    );
}

/// Echoes from the phone's Wi-Fi address, then its cellular one; returns the source
/// addresses the server saw, in that order.
fn echo_from_both(lab: &PhoneLab) -> Vec<IpAddr> {
    let server = EchoServer::start(lab.server(), 7000).unwrap();
    echo_from(lab, &server, lab.phone_addr(Access::Wifi).unwrap().into(), 1);
    echo_from(lab, &server, lab.phone_addr(Access::Cell).unwrap().into(), 2);
    server.peers().iter().map(|p| p.ip()).collect()
}

#[test]
#[ignore = "needs root and network namespaces"]
fn without_nat_the_server_sees_the_phone() {
    ready();
    let lab = lab(LabConfig {
        nat_wifi: false,
        nat_cell: false,
        ..LabConfig::default()
    });
    let peers = echo_from_both(&lab);
    assert_eq!(
        peers,
        vec![
            IpAddr::from(lab.phone_addr(Access::Wifi).unwrap()),
            IpAddr::from(lab.phone_addr(Access::Cell).unwrap())
        ]
    );
    assert!(
        lab.nat_rebind(Access::Wifi).is_err(),
        "rebinding without NAT must be refused"
    );
}
