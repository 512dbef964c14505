//! Extra subflows of a connecting flow, over real loopback sockets: a standby on a second
//! local address that takes over without a handshake, and a peer followed through its
//! name record when its old path goes silent.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use msocket::{FlowEvent, Identity, PathLossReason, PathState};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_subflow_takes_over_without_a_handshake() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 161, 161);
    let client = endpoint_with(&names, 162, 162, |cfg| cfg.local_ips = vec![lo(162), lo(163)]);
    let mut listener = server.listen("standby.test").await.unwrap();
    let (c, s) = within(10, "pair", pair(&client, &mut listener, "standby.test")).await;
    let mut events = c.events();
    // The flow's first subflow is from the best address; the standby joins from the other.
    if c.paths().len() < 2 {
        wait_event(&mut events, "the standby joins", |ev| {
            matches!(ev, FlowEvent::PathAdded { local, .. } if local.ip() == lo(163))
        })
        .await;
    }
    let paths = c.paths();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(!paths[0].standby && paths[0].local.ip() == lo(162), "{paths:?}");
    assert!(paths[1].standby && paths[1].local.ip() == lo(163), "{paths:?}");
    // Until the peer is heard on the active path, the standby may carry data (no active
    // path works yet): a loaded machine once wrote the bulk below before that, and it all
    // went on the standby.
    within(10, "the peer heard on the active path", async {
        while c.paths().iter().map(|p| p.state).ne([PathState::Active, PathState::Standby]) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    // The standby carries nothing but control frames while the active path works.
    let (mut c, mut s) = (c, s);
    let bulk = data(300_000, 12);
    c.write_all(&bulk).await.unwrap();
    let mut got = vec![0u8; bulk.len()];
    within(10, "bulk", s.read_exact(&mut got)).await.unwrap();
    let paths = c.paths();
    assert!(paths[0].bytes_sent >= bulk.len() as u64, "{paths:?}");
    assert!(paths[1].bytes_sent < 1000, "the standby stayed idle: {paths:?}");

    // What happened so far (the standby's own PathAdded may still be queued) is past.
    while events.try_next().is_some() {}
    // The active address goes: the standby carries the flow at once, with no new subflow
    // and no outage.
    client.set_local_ips(vec![lo(163)]).await.unwrap();
    let (c, _s) = round_trip(c, s, 2_000_000, 2_000_000, 7).await;
    let mut seen = Vec::new();
    while let Some(ev) = events.try_next() {
        seen.push(ev);
    }
    assert!(
        seen.iter().any(|ev| matches!(ev, FlowEvent::PathLost { local, .. } if local.ip() == lo(162))),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|ev| matches!(ev, FlowEvent::PathAdded { .. })), "no new subflow was needed: {seen:?}");
    assert!(!seen.iter().any(|ev| matches!(ev, FlowEvent::Resumed { .. })), "no outage: {seen:?}");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_standby_paths_the_flow_keeps_one_subflow() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 164, 164);
    let client = endpoint_with(&names, 165, 165, |cfg| {
        cfg.local_ips = vec![lo(165), lo(166)];
        cfg.standby_paths = false;
    });
    let mut listener = server.listen("single.test").await.unwrap();
    let (c, s) = within(10, "pair", pair(&client, &mut listener, "single.test")).await;
    let mut events = c.events();
    let paths = c.paths();
    let (c, _s) = round_trip(c, s, 300_000, 300_000, 8).await;
    assert_eq!(paths.len(), 1, "{paths:?}");
    while let Some(ev) = events.try_next() {
        assert!(!matches!(ev, FlowEvent::PathAdded { .. }), "an extra subflow: {ev:?}");
    }
    drop(c);
}

/// A forwarder to `upstream` that can be frozen: it then forwards nothing more and closes
/// nothing, like a path that silently died.
async fn freezable_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind((lo(169), 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let frozen = Arc::new(AtomicBool::new(false));
    let f = frozen.clone();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let Ok(up) = TcpStream::connect(upstream).await else { continue };
            let (down_r, down_w) = down.into_split();
            let (up_r, up_w) = up.into_split();
            for (mut from, mut to) in [(down_r, up_w), (up_r, down_w)] {
                let frozen = f.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if frozen.load(Ordering::SeqCst) {
                            // Hold both sockets open, forwarding nothing.
                            std::future::pending::<()>().await;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });
    (addr, frozen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_follows_the_peers_name_record_when_its_path_goes_silent() {
    init_tracing();
    let names = TestNames::new();
    let dyn_names = names.dyn_arc();
    let server = endpoint(&dyn_names, 167, 167);
    let client = endpoint(&dyn_names, 168, 168);
    let mut listener = server.listen("follow.test").await.unwrap();
    let direct = server.published_addrs()[0];
    // The name first points at a forwarder, which later freezes.
    let (via, frozen) = freezable_proxy(direct).await;
    let id = Identity::from_seed([167; 32]);
    let seq = u64::MAX / 2;
    names.lie(signed_record(&id, "follow.test", vec![via], seq));
    let (mut c, mut s) = within(10, "pair", pair(&client, &mut listener, "follow.test")).await;
    let mut events = c.events();
    c.write_all(b"hello").await.unwrap();
    let mut hello = [0u8; 5];
    within(10, "hello", s.read_exact(&mut hello)).await.unwrap();
    assert_eq!(&hello, b"hello");

    // The path goes silent and the record changes. The flow is idle: nothing but the
    // record tells the client (its keepalive is 25 s away, and no data is outstanding
    // for the dead-path timer).
    frozen.store(true, Ordering::SeqCst);
    names.lie(signed_record(&id, "follow.test", vec![direct], seq + 1));
    let lost = wait_event(&mut events, "the silent path is left", |ev| matches!(ev, FlowEvent::PathLost { .. })).await;
    let FlowEvent::PathLost { remote, reason, .. } = lost else { unreachable!() };
    assert_eq!(remote, via);
    assert_eq!(reason, PathLossReason::PeerLeftAddress);
    wait_event(&mut events, "a subflow to the new address", |ev| {
        matches!(ev, FlowEvent::PathAdded { remote, .. } if *remote == direct)
    })
    .await;
    let (_c, _s) = round_trip(c, s, 500_000, 500_000, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_returns_to_the_better_address_when_it_comes_back() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 170, 170);
    let client = endpoint_with(&names, 171, 171, |cfg| cfg.local_ips = vec![lo(171), lo(172)]);
    let mut listener = server.listen("back.test").await.unwrap();
    let (c, s) = within(10, "pair", pair(&client, &mut listener, "back.test")).await;
    let mut events = c.events();
    // Only the worse address is left, then the better one returns (back on Wi-Fi).
    client.set_local_ips(vec![lo(172)]).await.unwrap();
    if c.paths().iter().all(|p| p.local.ip() != lo(172)) {
        wait_event(&mut events, "a subflow from the remaining address", |ev| {
            matches!(ev, FlowEvent::PathAdded { local, .. } if local.ip() == lo(172))
        })
        .await;
    }
    client.set_local_ips(vec![lo(171), lo(172)]).await.unwrap();
    wait_event(&mut events, "a subflow from the better address", |ev| {
        matches!(ev, FlowEvent::PathAdded { local, .. } if local.ip() == lo(171))
    })
    .await;
    // A re-dial may have raced the standby dial from the remaining address: the extra
    // one is retired.
    while c.paths().len() > 2 {
        wait_event(&mut events, "the duplicate path retired", |ev| matches!(ev, FlowEvent::PathLost { .. })).await;
    }
    let paths = c.paths();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(!paths[0].standby && paths[0].local.ip() == lo(171), "the better address carries the flow: {paths:?}");
    assert!(paths[1].standby && paths[1].local.ip() == lo(172), "{paths:?}");
    let (_c, _s) = round_trip(c, s, 500_000, 500_000, 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_on_a_known_radio_report_modelled_energy() {
    use msocket::watch::{Interface, InterfaceKind, NetworkState};
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 173, 173);
    let client = endpoint_with(&names, 174, 174, |cfg| cfg.use_loopback = true);
    // The platform says the client's address is on a cellular interface.
    let cell = Interface {
        name: "rmnet0".into(),
        index: 7,
        kind: InterfaceKind::Cellular,
        metered: true,
        up: true,
        addrs: vec![lo(174)],
        nat64: None,
    };
    let (tx, rx) = tokio::sync::watch::channel(NetworkState::new(vec![cell]));
    let _follower = client.follow_network(rx);
    let mut listener = server.listen("energy.test").await.unwrap();
    let (mut c, mut s) = within(10, "pair", pair(&client, &mut listener, "energy.test")).await;
    let mut events = c.events();
    let bulk = data(100_000, 13);
    c.write_all(&bulk).await.unwrap();
    let mut got = vec![0u8; bulk.len()];
    within(10, "bulk", s.read_exact(&mut got)).await.unwrap();
    // A cellular (LTE) path costs energy; a wired one would cost none, an unknown one has
    // no figure.
    let path = c.paths().into_iter().next().unwrap();
    assert!(path.energy_joules.is_some_and(|j| j > 0.0), "{path:?}");
    let (c, s) = round_trip(c, s, 100_000, 100_000, 14).await;
    // Paths gone with the finished flow still count.
    assert!(c.energy_joules().is_some_and(|j| j >= path.energy_joules.unwrap()), "{:?}", c.energy_joules());
    // The server follows no watcher: its radio is unknown.
    assert_eq!(s.energy_joules(), None);
    // The flow's end reports its energy too.
    let closed = wait_event(&mut events, "closed", |ev| matches!(ev, FlowEvent::Closed { .. })).await;
    let FlowEvent::Closed { error: None, energy_joules: Some(j) } = closed else { panic!("{closed:?}") };
    assert!(j >= path.energy_joules.unwrap(), "{j}");
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_performance_policy_uses_every_path_and_backup_parks_the_others() {
    use msocket::PathPolicy;
    let (_ends, mut c, mut s) = two_paths(176, PathPolicy::Performance).await;
    assert!(c.paths().iter().all(|p| !p.standby), "{:?}", c.paths());
    within(20, "bulk over both paths", send_and_read(&mut c, &mut s, 8_000_000, 15)).await;
    // How much each path takes follows round trips measured on loopback, which a loaded
    // machine stretches: one path got a single 64 KiB probe of the 8 MB. So this checks
    // that both carried data; the split is measured in `proto/tests/sched.rs`.
    let paths = c.paths();
    assert!(paths.iter().all(|p| p.bytes_delivered > 0), "both paths carried data: {paths:?}");

    // Back to one path: the other becomes a standby and carries nothing more.
    c.set_policy(PathPolicy::Backup);
    let before: Vec<u64> = c.paths().iter().map(|p| p.bytes_sent).collect();
    within(20, "bulk over one path", send_and_read(&mut c, &mut s, 4_000_000, 16)).await;
    let paths = c.paths();
    assert!(!paths[0].standby && paths[1].standby, "{paths:?}");
    assert!(paths[0].bytes_sent > before[0] + 4_000_000, "{paths:?}");
    assert!(paths[1].bytes_sent < before[1] + 200_000, "the standby took little: {paths:?} {before:?}");
}

/// A server on 127.0.0.`n` and a client on `n+1` and `n+2` with `policy`, and a flow
/// between them once it runs on both client addresses. The endpoints must outlive it.
async fn two_paths(n: u8, policy: msocket::PathPolicy) -> ((msocket::Endpoint, msocket::Endpoint), msocket::Flow, msocket::Flow) {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, n, n);
    let client = endpoint_with(&names, n + 1, n + 1, |cfg| {
        cfg.local_ips = vec![lo(n + 1), lo(n + 2)];
        cfg.path_policy = policy;
    });
    let service = format!("paths-{n}.test");
    let mut listener = server.listen(&service).await.unwrap();
    let (c, s) = within(10, "pair", pair(&client, &mut listener, &service)).await;
    let mut events = c.events();
    if c.paths().len() < 2 {
        wait_event(&mut events, "the second path", |ev| matches!(ev, FlowEvent::PathAdded { .. })).await;
    }
    ((server, client), c, s)
}

/// Writes `bytes` on `c` while `s` reads them; checks the hash.
async fn send_and_read(c: &mut msocket::Flow, s: &mut msocket::Flow, bytes: usize, seed: u64) {
    let bulk = data(bytes, seed);
    let read = async {
        let mut got = vec![0u8; bulk.len()];
        s.read_exact(&mut got).await.map(|_| got)
    };
    let (w, got) = tokio::join!(c.write_all(&bulk), read);
    w.unwrap();
    assert_eq!(sha256(&got.unwrap()), sha256(&bulk));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundant_copies_small_writes_and_energy_retires_the_idle_path() {
    use msocket::PathPolicy;
    let (_ends, mut c, mut s) = two_paths(179, PathPolicy::Redundant).await;
    // Wait until the peer was heard on both paths (copies go only to such paths), and
    // the server learnt the policy from the client's frames (hearing the server does not
    // mean it has read them: a loaded machine checked too early).
    within(10, "both paths active and the server following", async {
        while !c.paths().iter().all(|p| p.state == PathState::Active) || s.policy() != PathPolicy::Redundant {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    // Small requests and answers go out on both paths, unless the first copy was
    // acknowledged before the second path's writer got to it. On loopback that race is
    // the scheduler's: a loaded 2-core machine copied 9 writes of 20. So this checks
    // that copies are made and dropped at the far end; how many, and what they save
    // when a path fails, is measured deterministically in `proto/tests/sched.rs`.
    for i in 0..20u64 {
        within(10, "request", send_and_read(&mut c, &mut s, 300, 100 + i)).await;
        within(10, "answer", send_and_read(&mut s, &mut c, 300, 200 + i)).await;
    }
    assert!(c.stats().bytes_copied >= 300, "client copies: {:?}", c.stats());
    assert!(s.stats().bytes_copied >= 300, "server copies: {:?}", s.stats());
    // A copy counts when it leaves, and at the far end when it arrives: a loaded machine
    // read the server's count (0) while the client's copies were still on their way.
    within(10, "the copies arrive as duplicates", async {
        while s.stats().duplicate_bytes_received == 0 || c.stats().duplicate_bytes_received == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;

    // Energy: a light load never overflows the best path, so the second one, an idle
    // standby that would cost a radio wake-up at its end, is retired.
    c.set_policy(PathPolicy::Energy);
    within(10, "the server follows", async {
        while s.policy() != PathPolicy::Energy {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    for i in 0..10u64 {
        within(10, "light load", send_and_read(&mut s, &mut c, 20_000, 300 + i)).await;
    }
    within(10, "the second path retired", async {
        while c.paths().len() > 1 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    let paths = c.paths();
    assert_eq!(paths[0].local.ip(), lo(180), "the best address carries the flow: {paths:?}");
    assert_eq!(paths[0].state, PathState::Active, "{paths:?}");
    within(10, "a transfer after", send_and_read(&mut s, &mut c, 100_000, 400)).await;
}

/// The platform's socket-binding hook sees every outgoing subflow before it connects, and
/// a refusal costs that path only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_binder_sees_each_subflow_and_may_refuse_one() {
    use std::net::IpAddr;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Binder {
        seen: Mutex<Vec<IpAddr>>,
        refuse: Option<IpAddr>,
    }
    impl msocket::SocketBinder for Binder {
        fn bind(&self, socket: msocket::RawSocket, local: IpAddr) -> std::io::Result<()> {
            assert!(socket >= 0);
            self.seen.lock().unwrap().push(local);
            if Some(local) == self.refuse {
                return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "network not available"));
            }
            Ok(())
        }
    }

    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 182, 182);
    let binder = Arc::new(Binder { refuse: Some(lo(184)), ..Binder::default() });
    let client = endpoint_with(&names, 183, 183, |cfg| {
        cfg.local_ips = vec![lo(183), lo(184)];
        cfg.socket_binder = Some(binder.clone());
    });
    let mut listener = server.listen("binder.test").await.unwrap();
    let (c, s) = within(10, "pair", pair(&client, &mut listener, "binder.test")).await;
    // The refused address is tried (it is a path), and the flow works over the other.
    within(10, "the binder is asked for both addresses", async {
        loop {
            let seen = binder.seen.lock().unwrap().clone();
            if seen.contains(&lo(183)) && seen.contains(&lo(184)) {
                break;
            }
            drop(seen);
            tokio::task::yield_now().await;
        }
    })
    .await;
    let (c, _s) = round_trip(c, s, 200_000, 200_000, 17).await;
    assert!(c.paths().iter().all(|p| p.local.ip() == lo(183)), "{:?}", c.paths());
}
