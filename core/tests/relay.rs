//! Flows through relays, end to end on loopback with the real relay (`msocketd`'s, run
//! in-process): a listener that publishes no address of its own is reached through its
//! relay; the relay carries only ciphertext; a relay dying moves the flow to another;
//! both ends moving keep a relayed flow. Every transfer is checked by SHA-256.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msocket::relay::RelayUrl;
use msocket::{Endpoint, FlowEvent};
use msocket_test_support::msocketd::relay_server::{RelayHandle, RelayLimits, RelayServer};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn relay(host: u8) -> RelayHandle {
    let server = RelayServer::bind(&format!("127.0.0.{host}:0"), RelayLimits::default()).await.expect("bind a relay");
    server.spawn()
}

fn url(addr: SocketAddr) -> RelayUrl {
    addr.to_string().parse().unwrap()
}

/// A listener on `127.0.0.<host>` registered at `relays`, publishing no address of its own.
fn relay_only_listener(names: &Arc<dyn msocket::name::NameService>, seed: u8, host: u8, relays: &[SocketAddr]) -> Endpoint {
    endpoint_with(names, seed, host, |c| {
        c.relays = relays.iter().copied().map(url).collect();
        c.relay_only = true;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_publishes_no_address_is_reached_through_its_relay() {
    init_tracing();
    let names = memory_names();
    let relay = relay(60).await;
    let server = relay_only_listener(&names, 1, 61, &[relay.local_addr()]);
    let client = endpoint(&names, 2, 62);
    let mut listener = within(10, "listen", server.listen("hidden.test")).await.unwrap();
    assert_eq!(server.registered_relays(), vec![relay.local_addr().to_string()]);
    let record = names.lookup("hidden.test").await.unwrap().record;
    assert!(record.addrs.is_empty(), "a relay-only listener published {:?}", record.addrs);
    assert_eq!(record.relays, vec![relay.local_addr().to_string()]);

    let (c, s) = within(10, "pair", pair(&client, &mut listener, "hidden.test")).await;
    let paths = c.paths();
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert!(paths[0].relayed && paths[0].remote == relay.local_addr(), "{paths:?}");
    assert!(s.paths().iter().all(|p| p.relayed), "{:?}", s.paths());
    let (c, s) = round_trip(c, s, 3_000_000, 1_000_000, 7).await;
    within(10, "client closed", c.closed()).await.unwrap();
    within(10, "server closed", s.closed()).await.unwrap();
    let stats = relay.stats();
    let carried = stats.bytes_client_to_listener + stats.bytes_listener_to_client;
    assert!(carried >= 4_000_000, "the relay carried {carried} bytes");
}

/// Writes `bytes` in 100 kB pieces every 10 ms (load, so that a move or a failure lands
/// mid-stream), says when the first 1 MB is out, then finishes and reads to the end.
async fn paced_exchange(flow: msocket::Flow, bytes: Vec<u8>, started: tokio::sync::oneshot::Sender<()>) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(flow);
    let write = async move {
        let mut started = Some(started);
        for (i, chunk) in bytes.chunks(100_000).enumerate() {
            w.write_all(chunk).await.expect("write");
            if i == 10 {
                let _ = started.take().map(|s| s.send(()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        w.shutdown().await.expect("shutdown");
    };
    let read = async move {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.expect("read");
        got
    };
    tokio::join!(write, read).1
}

/// A TCP forwarder that keeps every byte it passes, both ways, of every connection.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start(host: u8, to: SocketAddr) -> Recorder {
        let listener = TcpListener::bind(format!("127.0.0.{host}:0")).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(to).await else { return };
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    tokio::join!(copy_keeping(ir, ow, kept.clone()), copy_keeping(or, iw, kept));
                });
            }
        });
        Recorder { addr, seen }
    }
}

async fn copy_keeping(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, kept: Arc<Mutex<Vec<u8>>>) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        kept.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_sees_ciphertext_only() {
    init_tracing();
    let names = memory_names();
    let relay = relay(63).await;
    // Everything to and from the relay passes the recorder, which stands in its place.
    let recorder = Recorder::start(64, relay.local_addr()).await;
    let server = relay_only_listener(&names, 3, 65, &[recorder.addr]);
    let client = endpoint(&names, 4, 66);
    let mut listener = within(10, "listen", server.listen("secret.test")).await.unwrap();
    let (mut c, mut s) = within(10, "pair", pair(&client, &mut listener, "secret.test")).await;
    assert!(c.paths()[0].relayed);
    const MARKER: &[u8] = b"the-marker-that-must-never-be-seen-by-a-relay";
    let mut message = Vec::new();
    for _ in 0..2000 {
        message.extend_from_slice(MARKER);
    }
    let echo = tokio::spawn(async move {
        let mut got = vec![0u8; message.len()];
        s.read_exact(&mut got).await.unwrap();
        s.write_all(&got).await.unwrap();
        s.shutdown().await.unwrap();
        (got, s)
    });
    let mut sent = Vec::new();
    for _ in 0..2000 {
        sent.extend_from_slice(MARKER);
    }
    within(10, "send", c.write_all(&sent)).await.unwrap();
    c.shutdown().await.unwrap();
    let (got, _s) = within(10, "echo", echo).await.unwrap();
    let (back, _c) = within(10, "read back", read_all(c)).await;
    assert_eq!(sha256(&got), sha256(&sent));
    assert_eq!(sha256(&back), sha256(&sent));
    let seen = recorder.seen.lock().unwrap().clone();
    assert!(seen.len() > 2 * sent.len(), "the recorder saw {} bytes: the flow did not pass it", seen.len());
    assert!(!seen.windows(MARKER.len()).any(|w| w == MARKER), "plaintext crossed the relay");
    // Nor does the relay learn the name the client asked for.
    assert!(!seen.windows(b"secret.test".len()).any(|w| w == b"secret.test"), "the name crossed the relay in clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_dying_mid_transfer_moves_the_flow_to_the_other_relay() {
    init_tracing();
    let names = memory_names();
    let first = relay(67).await;
    let second = relay(68).await;
    let server = relay_only_listener(&names, 5, 69, &[first.local_addr(), second.local_addr()]);
    let client = endpoint(&names, 6, 70);
    let mut listener = within(10, "listen", server.listen("twice.test")).await.unwrap();
    let mut registered = server.registered_relays();
    registered.sort();
    let mut want = vec![first.local_addr().to_string(), second.local_addr().to_string()];
    want.sort();
    assert_eq!(registered, want);
    let (c, s) = within(10, "pair", pair(&client, &mut listener, "twice.test")).await;
    let carrier = c.paths()[0].remote;
    let (dying, surviving) = if carrier == first.local_addr() { (first, second) } else { (second, first) };
    let surviving_addr = surviving.local_addr();
    let mut events = c.events();

    let up = data(6_000_000, 11);
    let down = data(2_000_000, 12);
    let (sixth, sixth_out) = tokio::sync::oneshot::channel();
    let (ignored, _) = tokio::sync::oneshot::channel();
    let client_side = tokio::spawn(paced_exchange(c, up.clone(), sixth));
    let server_side = tokio::spawn(paced_exchange(s, down.clone(), ignored));
    within(10, "a megabyte sent", sixth_out).await.unwrap();
    let killed = std::time::Instant::now();
    dying.shutdown().await;
    let moved = wait_event(&mut events, "a path through the other relay", |e| {
        matches!(e, FlowEvent::PathAdded { remote, relayed: true, .. } if *remote == surviving_addr)
    })
    .await;
    println!("{moved:?} {:?} after the relay died", killed.elapsed());
    let got_down = within(30, "client side", client_side).await.unwrap();
    let got_up = within(30, "server side", server_side).await.unwrap();
    assert_eq!(sha256(&got_up), sha256(&up), "client → server bytes differ");
    assert_eq!(sha256(&got_down), sha256(&down), "server → client bytes differ");
    // The listener's record lists only the relay that is left.
    let record = within(10, "the record drops the dead relay", async {
        loop {
            let r = names.lookup("twice.test").await.unwrap();
            if r.record.relays == vec![surviving_addr.to_string()] {
                return r;
            }
            names.watch("twice.test", r.record.seq, Duration::from_secs(5)).await.unwrap();
        }
    })
    .await;
    assert_eq!(server.registered_relays(), vec![surviving_addr.to_string()], "{record:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_move_while_talking_through_a_relay() {
    init_tracing();
    let names = memory_names();
    let relay = relay(71).await;
    let server = relay_only_listener(&names, 7, 72, &[relay.local_addr()]);
    let client = endpoint(&names, 8, 73);
    let mut listener = within(10, "listen", server.listen("roaming.test")).await.unwrap();
    let (c, s) = within(10, "pair", pair(&client, &mut listener, "roaming.test")).await;
    let mut events = c.events();
    let up = data(4_000_000, 21);
    let down = data(4_000_000, 22);
    let (started, started_out) = tokio::sync::oneshot::channel();
    let (ignored, _) = tokio::sync::oneshot::channel();
    let client_side = tokio::spawn(paced_exchange(c, up.clone(), started));
    let server_side = tokio::spawn(paced_exchange(s, down.clone(), ignored));
    within(10, "a megabyte sent", started_out).await.unwrap();
    // Both move at once: neither old address works any more.
    let (a, b) = tokio::join!(client.set_local_ips(vec![lo(74)]), server.set_local_ips(vec![lo(75)]));
    a.unwrap();
    let _ = b; // the record is re-published as the registration comes back
    wait_event(&mut events, "a path from the new address", |e| {
        matches!(e, FlowEvent::PathAdded { local, relayed: true, .. } if local.ip() == lo(74))
    })
    .await;
    let got_down = within(30, "client side", client_side).await.unwrap();
    let got_up = within(30, "server side", server_side).await.unwrap();
    assert_eq!(sha256(&got_up), sha256(&up), "client → server bytes differ");
    assert_eq!(sha256(&got_down), sha256(&down), "server → client bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reachable_listener_is_reached_directly_though_it_has_a_relay() {
    init_tracing();
    let names = memory_names();
    let relay = relay(76).await;
    let server = endpoint_with(&names, 9, 77, |c| c.relays = vec![url(relay.local_addr())]);
    let client = endpoint(&names, 10, 78);
    let mut listener = within(10, "listen", server.listen("near.test")).await.unwrap();
    let (c, s) = within(10, "pair", pair(&client, &mut listener, "near.test")).await;
    assert!(!c.paths()[0].relayed, "{:?}", c.paths());
    round_trip(c, s, 100_000, 100_000, 31).await;
    assert_eq!(relay.stats().splices_total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_flow_goes_direct_by_hole_punching() {
    init_tracing();
    let names = TestNames::new();
    let relay = relay(79).await;
    let server = endpoint_with(&names.dyn_arc(), 11, 80, |c| c.relays = vec![url(relay.local_addr())]);
    let client = endpoint(&names.dyn_arc(), 12, 81);
    let mut listener = within(10, "listen", server.listen("punch.test")).await.unwrap();
    // The client learns an address of the listener it cannot reach (as behind a NAT),
    // and its relay: it starts relayed, then punches through to the address the relay saw.
    let mut record = names.dyn_arc().lookup("punch.test").await.unwrap().record;
    record.addrs = vec!["127.0.0.250:9".parse().unwrap()];
    record.seq = u64::MAX / 2;
    names.lie(msocket::name::SignedRecord::sign(record, &msocket::Identity::from_seed([11; 32])).unwrap());
    let started = std::time::Instant::now();
    let (c, s) = within(10, "pair", pair(&client, &mut listener, "punch.test")).await;
    let mut events = c.events();
    let relayed_at = started.elapsed();
    if c.paths().iter().all(|p| p.relayed) {
        wait_event(&mut events, "a direct path", |e| matches!(e, FlowEvent::PathAdded { relayed: false, .. })).await;
    }
    let direct_at = started.elapsed();
    println!("relayed after {relayed_at:?}, direct after {direct_at:?}");
    let paths = c.paths();
    let direct = paths.iter().find(|p| !p.relayed).expect("a direct path");
    assert_eq!(direct.remote.ip(), lo(80), "{paths:?}");
    assert!(!direct.standby, "{paths:?}");
    assert!(paths.iter().filter(|p| p.relayed).all(|p| p.standby), "the relayed path is the standby: {paths:?}");
    let (c, _s) = round_trip(c, s, 2_000_000, 2_000_000, 41).await;
    let carried = c.paths().iter().filter(|p| p.relayed).map(|p| p.bytes_sent).sum::<u64>();
    assert!(carried < 200_000, "the relayed standby carried {carried} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_at_a_published_address_does_not_keep_a_client_from_the_relay() {
    init_tracing();
    let names = TestNames::new();
    let relay = relay(82).await;
    let server = endpoint_with(&names.dyn_arc(), 13, 83, |c| c.relays = vec![url(relay.local_addr())]);
    let client = endpoint(&names.dyn_arc(), 14, 84);
    let mut listener = within(10, "listen", server.listen("stranger.test")).await.unwrap();
    // On the client's network, the listener's (private) address belongs to another host,
    // which takes connections and closes them.
    let stranger = TcpListener::bind("127.0.0.85:0").await.unwrap();
    let stranger_addr = stranger.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = stranger.accept().await {
            drop(s);
        }
    });
    let mut record = names.dyn_arc().lookup("stranger.test").await.unwrap().record;
    record.addrs = vec![stranger_addr];
    record.seq = u64::MAX / 2;
    names.lie(msocket::name::SignedRecord::sign(record, &msocket::Identity::from_seed([13; 32])).unwrap());
    let (c, s) = within(10, "pair", pair(&client, &mut listener, "stranger.test")).await;
    assert!(c.paths().iter().any(|p| p.relayed || p.remote.ip() == lo(83)), "{:?}", c.paths());
    round_trip(c, s, 100_000, 100_000, 51).await;
}
