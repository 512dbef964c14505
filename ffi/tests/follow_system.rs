//! A desktop app's endpoint (`follow_system_network`) follows the machine's interfaces by
//! itself, as the Rust API does: it publishes their addresses, keeps its names and flows
//! on them as addresses come and go, and tells which kind of interface each path leaves
//! from. A pushed snapshot (`update_network`) then takes over for good; an endpoint with
//! the default options follows nothing.
//!
//! Everything runs in a network namespace of its own: a "Wi-Fi" (`wifi0`) and a "cellular"
//! (`cell0`) link, both veth pairs, whose kinds the core's watcher guesses from their
//! names, and the peer on an address of the namespace's loopback interface, which the
//! watcher leaves out. A test binary of its own, so that msocket's runtime (and with it
//! the netlink watcher) starts inside the namespace. Every wait is on an event or a call,
//! bounded.

mod common;

use std::sync::Arc;
use std::time::Duration;

use msocket_ffi::{Endpoint, EndpointOptions, Flow, FlowEvent, InterfaceKind, NetworkInterface, PathInfo};
use msocket_lab::Netns;
use msocket_test_support::{data, sha256, LocalNameServer};

use common::{options, wait_event, T};

const WIFI: &str = "10.1.0.2";
const CELL: &str = "10.2.0.2";
/// The peer's address, on the namespace's loopback interface.
const PEER: &str = "10.9.0.1";

/// The path of `flow` whose local end is `local`.
fn path_from(flow: &Flow, local: &str) -> PathInfo {
    let paths = flow.paths().unwrap();
    paths.iter().find(|p| p.local == local).cloned().unwrap_or_else(|| panic!("no path from {local}: {paths:?}"))
}

async fn receive_exactly(flow: &Arc<Flow>, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < n {
        assert!(flow.clone().await_received(65_536, T, None).await.unwrap() > 0, "the stream ended early");
        out.extend(flow.take_received(65_536).unwrap());
    }
    out
}

/// Sends `len` bytes from `from` to `to` and checks they arrived whole.
async fn transfer(from: &Arc<Flow>, to: &Arc<Flow>, len: usize, seed: u64) {
    let sent = data(len, seed);
    let sender = tokio::spawn({
        let (from, sent) = (from.clone(), sent.clone());
        async move { from.send(sent, T, None).await.unwrap() }
    });
    let got = receive_exactly(to, len).await;
    sender.await.unwrap();
    assert_eq!(sha256(&got), sha256(&sent));
}

/// Adds a veth pair `name`/`name`p to the namespace, both ends up (so the link runs).
fn link(ns: &Netns, name: &str) {
    let peer = format!("{name}p");
    ns.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]).unwrap();
    ns.ip(&["link", "set", &peer, "up"]).unwrap();
    ns.ip(&["link", "set", name, "up"]).unwrap();
}

#[test]
#[ignore = "needs root and network namespaces"]
fn an_endpoint_that_follows_the_system_publishes_and_moves_with_its_interfaces() {
    assert!(msocket_lab::is_root(), "run as root: the test makes a network namespace");
    let ns = Arc::new(Netns::new("follow").expect("a network namespace"));
    link(&ns, "wifi0");
    link(&ns, "cell0");
    ns.add_addr("wifi0", WIFI.parse().unwrap(), 24).unwrap();
    ns.add_addr("lo", PEER.parse().unwrap(), 32).unwrap();
    let inside = ns.clone();
    let task = ns
        .spawn_runtime(move || async move {
            let ns = inside;
            let names = LocalNameServer::start();
            let mut o = options(&names);
            o.local_addresses = vec![PEER.into()];
            let peer = Endpoint::new(vec![2; 32], o, None, None).unwrap();

            let desk = Endpoint::new(vec![1; 32], EndpointOptions { follow_system_network: true, ..options(&names) }, None, None)
                .unwrap();
            assert!(!desk.follows_system_network(), "nothing is followed before the first listen or connect");
            let listener = desk.listen("desk.test".into(), T, None).await.unwrap();
            assert!(desk.follows_system_network(), "listen started following the system's network");
            // The watcher's first look is applied before the listener binds: the Wi-Fi
            // address only (loopback is left out).
            let published = desk.published_addresses();
            assert_eq!(published.len(), 1, "{published:?}");
            assert!(published[0].starts_with(&format!("{WIFI}:")), "{published:?}");
            let port = published[0].rsplit(':').next().unwrap().to_string();
            let on = |ip: &str| format!("{ip}:{port}");

            let accepting = {
                let listener = listener.clone();
                tokio::spawn(async move { listener.accept(T, None).await })
            };
            let c = peer.connect("desk.test".into(), T, None).await.unwrap();
            let s = accepting.await.unwrap().unwrap();
            // The desk endpoint knows the interface its path leaves from; the pinned peer
            // follows no network and knows none.
            assert_eq!(path_from(&s, &on(WIFI)).interface_kind, Some(InterfaceKind::Wifi));
            assert!(c.paths().unwrap().iter().all(|p| p.interface_kind.is_none()), "{:?}", c.paths());
            transfer(&c, &s, 200_000, 1).await;

            // Cellular comes up: published after Wi-Fi.
            ns.add_addr("cell0", CELL.parse().unwrap(), 24).unwrap();
            let both = vec![WIFI.to_string(), CELL.to_string()];
            wait_event(&s, "moved onto both", |e| matches!(e, FlowEvent::Moved { addresses } if *addresses == both)).await;
            assert_eq!(desk.published_addresses(), vec![on(WIFI), on(CELL)]);

            // Wi-Fi loses its address: the name and the flow move to cellular.
            ns.ip(&["addr", "del", &format!("{WIFI}/24"), "dev", "wifi0"]).unwrap();
            let cell_only = vec![CELL.to_string()];
            // The Wi-Fi path is retired, before or after the Moved event: its PathLost
            // still names the interface it left from, gone as it is.
            let wifi_lost = |e: &FlowEvent| matches!(e, FlowEvent::PathLost { local, .. } if *local == on(WIFI));
            let seen = std::cell::RefCell::new(None);
            wait_event(&s, "moved onto cellular", |e| {
                if wifi_lost(e) {
                    *seen.borrow_mut() = Some(e.clone());
                }
                matches!(e, FlowEvent::Moved { addresses } if *addresses == cell_only)
            })
            .await;
            let lost = match seen.into_inner() {
                Some(e) => e,
                None => wait_event(&s, "the Wi-Fi path lost", wifi_lost).await,
            };
            let FlowEvent::PathLost { interface_kind, .. } = lost else { unreachable!() };
            assert_eq!(interface_kind, Some(InterfaceKind::Wifi));
            assert_eq!(desk.published_addresses(), vec![on(CELL)], "the listener keeps its port");
            // The peer may have joined on cellular already, while both were published.
            if !s.paths().unwrap().iter().any(|p| p.local == on(CELL)) {
                wait_event(&s, "a path on cellular", |e| matches!(e, FlowEvent::PathAdded { local, .. } if *local == on(CELL)))
                    .await;
            }
            assert_eq!(path_from(&s, &on(CELL)).interface_kind, Some(InterfaceKind::Cellular));
            transfer(&c, &s, 300_000, 2).await;

            // The app pushes a snapshot: it replaces the system's network for good (the
            // system still has the address on cell0, the snapshot calls it Wi-Fi).
            let pushed = NetworkInterface {
                name: "wlan7".into(),
                index: 7,
                kind: InterfaceKind::Wifi,
                metered: false,
                up: true,
                addresses: vec![CELL.into()],
                nat64_prefix: None,
            };
            assert!(desk.update_network(vec![pushed]).unwrap());
            assert!(!desk.follows_system_network(), "update_network stopped the system's watcher");
            assert_eq!(desk.published_addresses(), vec![on(CELL)]);
            transfer(&s, &c, 100_000, 3).await;

            // An endpoint with the default options follows nothing by itself: its path
            // leaves from an interface's address, which it does not know.
            let phone = Endpoint::new(vec![3; 32], options(&names), None, None).unwrap();
            let accepting = {
                let listener = listener.clone();
                tokio::spawn(async move { listener.accept(T, None).await })
            };
            let f = phone.connect("desk.test".into(), T, None).await.unwrap();
            let accepted = accepting.await.unwrap().unwrap();
            assert!(!phone.follows_system_network());
            let paths = f.paths().unwrap();
            assert!(!paths.is_empty() && paths.iter().all(|p| p.interface_kind.is_none()), "{paths:?}");
            // The desk's new path has the kind the pushed snapshot gives its address, not
            // the system's.
            assert_eq!(path_from(&accepted, &on(CELL)).interface_kind, Some(InterfaceKind::Wifi));
            transfer(&f, &accepted, 100_000, 4).await;
            for flow in [c, s, f, accepted] {
                flow.release();
            }
        })
        .expect("a runtime in the namespace");
    task.join(Duration::from_secs(90)).expect("the test in the namespace");
}
