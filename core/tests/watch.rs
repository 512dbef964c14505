//! The network watcher against a real kernel: a network namespace per test, veth links
//! in it changed with `ip`, and the netlink watcher (and an endpoint following it)
//! running on a thread that entered the namespace. Needs root, so the tests are ignored
//! unless asked for (`--include-ignored`); asked for without root, they fail saying so.
//!
//! Nothing here sleeps to synchronise: every step waits on the watcher's channel (or the
//! name service's record) with a bounded timeout, and prints how long detection took.

#![cfg(target_os = "linux")]

mod support;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use msocket::name::{MemoryNameService, NameFuture, NameService, SignedRecord};
use msocket::watch::{usable_ips, Classifier, Interface, InterfaceKind, NetworkState};
use msocket::{Endpoint, EndpointConfig, Identity};
use support::init_tracing;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

/// Generous bound on detecting one change; real values are printed (well under 10 ms).
const DETECTION_BOUND: Duration = Duration::from_secs(1);
/// Bound on waiting for any one step.
const STEP: Duration = Duration::from_secs(10);

/// Panics, saying what is missing, unless this process can create network namespaces.
fn needs_root_and_netns() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() == 0 };
    assert!(root, "this test needs root and network namespaces: run it as root (after lab/setup.sh)");
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "this test needs network namespaces, and `ip netns list` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("this test needs `ip` (iproute2; run lab/setup.sh as root): {e}"),
    }
}

/// A network namespace, deleted on drop (also when the test fails).
struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace with a veth pair `link`/`link`p, both up, and loopback up.
    fn new(tag: &str, link: &str) -> Netns {
        let name = format!("msock-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.add_link(link);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn add_link(&self, link: &str) {
        let peer = format!("{link}p");
        self.ip(&["link", "add", link, "type", "veth", "peer", "name", &peer]);
        self.ip(&["link", "set", &peer, "up"]);
        self.ip(&["link", "set", link, "up"]);
    }

    /// Runs `ip -n NS args...`; returns when it started and returned.
    fn ip(&self, args: &[&str]) -> Span {
        ip_in(&self.name, args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// When an `ip` command started and when it returned. The kernel queues its event inside
/// the command's system call, so the watcher often reads it before `ip` has even exited:
/// detection latency is at most `observed_at - started`.
#[derive(Clone, Copy)]
struct Span {
    started: Instant,
    returned: Instant,
}

fn ip_in(ns: &str, args: &[&str]) -> Span {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    let started = Instant::now();
    run(&all);
    Span { started, returned: Instant::now() }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn run(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(out.status.success(), "ip {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `body` on a new thread inside namespace `ns`, on a tokio runtime of its own
/// (whose worker threads inherit the namespace), and returns its output.
fn in_netns<T, F, Fut>(ns: &str, body: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: the descriptor is open for the duration of the call; setns only changes
        // this thread's network namespace.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(body())
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn find<'a>(state: &'a NetworkState, name: &str) -> Option<&'a Interface> {
    state.interfaces.iter().find(|i| i.name == name)
}

/// Waits until the watcher's state satisfies `pred`; checks on the way that no unusable
/// address ever shows up. Prints when the watcher read the event (from the start of the
/// `ip` command) and bounds the time from `ip` returning to the test seeing the state.
async fn wait_for(
    rx: &mut watch::Receiver<NetworkState>,
    what: &str,
    span: Span,
    pred: impl Fn(&NetworkState) -> bool,
) -> NetworkState {
    let state = tokio::time::timeout(STEP, async {
        loop {
            {
                let state = rx.borrow_and_update();
                for i in &state.interfaces {
                    for a in &i.addrs {
                        assert!(msocket::watch::is_usable_ip(*a, true), "{what}: unusable address {a} on {}", i.name);
                    }
                }
                if pred(&state) {
                    return state.clone();
                }
            }
            rx.changed().await.expect("the watcher stopped");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not seen within {STEP:?}; last state {:?}", rx.borrow().interfaces));
    let seen = span.returned.elapsed();
    println!(
        "{what}: watcher read the event {} after ip started (ip ran {}); test saw the state {} after ip returned",
        ms(state.observed_at.saturating_duration_since(span.started)),
        ms(span.returned - span.started),
        ms(seen),
    );
    assert!(seen < DETECTION_BOUND, "{what}: detection took {seen:?}");
    state
}

#[tokio::test]
#[ignore = "needs root and network namespaces"]
async fn the_netlink_watcher_follows_addresses_and_links_in_a_namespace() {
    init_tracing();
    needs_root_and_netns();
    let ns = Netns::new("watch", "wifi0");
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = in_netns(&ns.name, move || async move {
        let _ = tx.send(msocket::watch::netlink::start(Classifier::new()).await);
        let _ = stopped.await;
    });
    let mut rx = rx.recv_timeout(STEP).expect("the watcher thread answers").expect("the netlink watcher starts");

    // The first state: wifi0 up, no usable address yet (only link-local, left out).
    let now = Instant::now();
    let first = wait_for(&mut rx, "initial state", Span { started: now, returned: now }, |s| {
        find(s, "wifi0").is_some_and(|i| i.up)
    })
    .await;
    let wifi = find(&first, "wifi0").unwrap();
    assert_eq!((wifi.kind, wifi.metered), (InterfaceKind::Wifi, false));
    assert!(wifi.addrs.is_empty(), "{wifi:?}");
    assert_eq!(find(&first, "lo").map(|i| i.kind), Some(InterfaceKind::Loopback));
    assert!(usable_ips(&first.interfaces, false).is_empty());

    let t = ns.ip(&["addr", "add", "192.0.2.10/24", "dev", "wifi0"]);
    wait_for(&mut rx, "IPv4 address added", t, |s| {
        find(s, "wifi0").is_some_and(|i| i.addrs.contains(&ip("192.0.2.10")))
    })
    .await;

    let t = ns.ip(&["addr", "add", "2001:db8::10/64", "dev", "wifi0", "nodad"]);
    let s = wait_for(&mut rx, "IPv6 address added", t, |s| {
        find(s, "wifi0").is_some_and(|i| i.addrs.contains(&ip("2001:db8::10")))
    })
    .await;
    assert_eq!(usable_ips(&s.interfaces, false), vec![ip("192.0.2.10"), ip("2001:db8::10")]);

    let t = ns.ip(&["link", "set", "wifi0", "down"]);
    let s = wait_for(&mut rx, "link down", t, |s| find(s, "wifi0").is_some_and(|i| !i.up)).await;
    assert!(usable_ips(&s.interfaces, false).is_empty(), "nothing usable on a link that is down");

    let t = ns.ip(&["link", "set", "wifi0", "up"]);
    let s = wait_for(&mut rx, "link up", t, |s| find(s, "wifi0").is_some_and(|i| i.up)).await;
    // The kernel keeps IPv4 addresses over down/up and drops the IPv6 ones.
    assert_eq!(usable_ips(&s.interfaces, false), vec![ip("192.0.2.10")]);

    let t = ns.ip(&["addr", "del", "192.0.2.10/24", "dev", "wifi0"]);
    wait_for(&mut rx, "IPv4 address removed", t, |s| {
        find(s, "wifi0").is_some_and(|i| !i.addrs.contains(&ip("192.0.2.10")))
    })
    .await;

    // A cellular link appears, gets an address, and Wi-Fi stays preferred.
    let started = Instant::now();
    ns.add_link("cell0");
    let t = Span { started, returned: Instant::now() };
    let s = wait_for(&mut rx, "cellular link added", t, |s| find(s, "cell0").is_some_and(|i| i.up)).await;
    let cell = find(&s, "cell0").unwrap();
    assert_eq!((cell.kind, cell.metered), (InterfaceKind::Cellular, true));
    ns.ip(&["addr", "add", "198.51.100.10/24", "dev", "cell0"]);
    let t = ns.ip(&["addr", "add", "192.0.2.11/24", "dev", "wifi0"]);
    let s = wait_for(&mut rx, "addresses on both links", t, |s| usable_ips(&s.interfaces, false).len() == 2).await;
    assert_eq!(usable_ips(&s.interfaces, false), vec![ip("192.0.2.11"), ip("198.51.100.10")], "Wi-Fi first");

    let t = ns.ip(&["link", "del", "cell0"]);
    let s = wait_for(&mut rx, "cellular link deleted", t, |s| find(s, "cell0").is_none()).await;
    assert_eq!(usable_ips(&s.interfaces, false), vec![ip("192.0.2.11")]);

    let _ = stop.send(());
    thread.join().expect("the namespace thread");
}

/// A name service that remembers the addresses of the last record registered.
#[derive(Debug)]
struct Recording {
    store: MemoryNameService,
    published: watch::Sender<(Vec<SocketAddr>, Instant)>,
}

impl NameService for Recording {
    fn register<'a>(&'a self, record: &'a SignedRecord) -> NameFuture<'a, ()> {
        Box::pin(async move {
            self.store.register(record).await?;
            self.published.send_replace((record.record.addrs.clone(), Instant::now()));
            Ok(())
        })
    }

    fn lookup<'a>(&'a self, name: &'a str) -> NameFuture<'a, SignedRecord> {
        self.store.lookup(name)
    }
}

async fn wait_published(
    rx: &mut watch::Receiver<(Vec<SocketAddr>, Instant)>,
    what: &str,
    pred: impl Fn(&[SocketAddr]) -> bool,
) -> (Vec<SocketAddr>, Instant) {
    tokio::time::timeout(STEP, async {
        loop {
            {
                let got = rx.borrow_and_update();
                if pred(&got.0) {
                    return got.clone();
                }
            }
            rx.changed().await.expect("name service gone");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not published within {STEP:?}; last {:?}", rx.borrow().0))
}

#[test]
#[ignore = "needs root and network namespaces"]
fn an_endpoint_follows_its_network_by_default_republishes_its_new_address_and_is_reached_there() {
    init_tracing();
    needs_root_and_netns();
    let ns = Netns::new("e2e", "wifi0");
    ns.ip(&["addr", "add", "192.0.2.20/24", "dev", "wifi0"]);
    let ns_ip = {
        let name = ns.name.clone();
        move |args: &[&str]| ip_in(&name, args)
    };
    let thread = in_netns(&ns.name, move || async move {
        let (published, mut records) = watch::channel((Vec::new(), Instant::now()));
        let names: Arc<dyn NameService> = Arc::new(Recording { store: MemoryNameService::new(), published });
        // The defaults, as every user gets them: the endpoint follows the namespace's
        // network by itself, from its first listen on (its first look is applied before
        // the listener binds, so the first record already has the interface's address).
        let config = EndpointConfig::new(names.clone());
        assert!(config.follows_system_network());
        let server = Endpoint::new(Identity::from_seed([21; 32]), config);
        let mut listener = server.listen("moving.watch.test").await.unwrap();
        assert!(server.follows_system_network(), "listen started following the system's network");

        let old: SocketAddr = "192.0.2.20:0".parse().unwrap();
        let (addrs, _) = wait_published(&mut records, "first address", |a| a.len() == 1 && a[0].ip() == old.ip()).await;
        let port = addrs[0].port();

        // The move: the old address goes (nothing usable is left, so the endpoint keeps
        // it for now), then a new one comes.
        ns_ip(&["addr", "del", "192.0.2.20/24", "dev", "wifi0"]);
        let added = ns_ip(&["addr", "add", "198.51.100.20/24", "dev", "wifi0"]);
        let new_ip: IpAddr = "198.51.100.20".parse().unwrap();
        let (addrs, at) = wait_published(&mut records, "new address", |a| a.len() == 1 && a[0].ip() == new_ip).await;
        let took = at.saturating_duration_since(added.started);
        println!(
            "end to end: new address published {} after ip started (ip ran {})",
            ms(took),
            ms(added.returned - added.started)
        );
        assert!(took < DETECTION_BOUND, "publishing the new address took {took:?}");
        assert_eq!(addrs[0].port(), port, "the listener keeps its port across the move");
        assert_eq!(server.published_addrs(), addrs);
        let wifi = server.interfaces().into_iter().find(|i| i.name == "wifi0").expect("wifi0 recorded");
        assert_eq!(wifi.addrs, vec![new_ip]);
        assert!(tokio::net::TcpStream::connect(SocketAddr::new(old.ip(), port)).await.is_err());

        // A client finds the server at its new address and a flow works.
        let client = Endpoint::new(Identity::from_seed([22; 32]), EndpointConfig::new(names.clone()));
        let (c, s) =
            tokio::time::timeout(STEP, async { tokio::join!(client.connect("moving.watch.test"), listener.accept()) })
                .await
                .expect("connect in time");
        let (mut c, mut s) = (c.expect("connect"), s.expect("accept"));
        c.write_all(b"hello over the new address").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(STEP, s.read_to_end(&mut got)).await.expect("read in time").unwrap();
        assert_eq!(got, b"hello over the new address");
        assert!(client.follows_system_network(), "connect started following the system's network");

        // Pinned addresses switch following off.
        let mut pinned = EndpointConfig::new(names.clone());
        pinned.local_ips = vec![new_ip];
        assert!(!pinned.follows_system_network());
        let pinned = Endpoint::new(Identity::from_seed([23; 32]), pinned);
        let _flow = tokio::time::timeout(STEP, pinned.connect("moving.watch.test")).await.expect("in time").expect("connect");
        assert!(!pinned.follows_system_network());
    });
    thread.join().expect("the namespace thread");
    drop(ns);
}
