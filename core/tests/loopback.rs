//! End-to-end tests over real loopback sockets: flows, moves of either or both ends,
//! pre-lookup and connect-time moves. Every test compares SHA-256 of what was sent and
//! what was received.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msocket::name::{MemoryNameService, NameFuture, NameService, SignedRecord};
use msocket::FlowEvent;
use support::*;
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_cross_both_ways_and_the_flow_finishes() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 1, 31);
    let client = endpoint(&names, 2, 32);
    let mut listener = server.listen("plain.test").await.unwrap();
    let (c, s) = within(10, "pair", pair(&client, &mut listener, "plain.test")).await;
    let (c, s) = round_trip(c, s, 3_000_000, 1_000_000, 1).await;
    // Both ends ended and read everything: both flows finish cleanly and go quiet.
    within(10, "client closed", c.closed()).await.unwrap();
    within(10, "server closed", s.closed()).await.unwrap();
    assert_eq!(c.paths().len(), 0);
}

/// A name service that keeps the addresses of every record it served (to lookups and
/// watches), to tell whether a client learned an address from the name service.
#[derive(Debug, Default)]
struct Served {
    inner: MemoryNameService,
    served: Mutex<Vec<Vec<SocketAddr>>>,
}

impl Served {
    fn note(&self, record: &SignedRecord) {
        self.served.lock().unwrap().push(record.record.addrs.clone());
    }

    fn served_listing(&self, addr: SocketAddr) -> bool {
        self.served.lock().unwrap().iter().any(|addrs| addrs.contains(&addr))
    }
}

impl NameService for Served {
    fn register<'a>(&'a self, record: &'a SignedRecord) -> NameFuture<'a, ()> {
        self.inner.register(record)
    }

    fn lookup<'a>(&'a self, name: &'a str) -> NameFuture<'a, SignedRecord> {
        Box::pin(async move {
            let r = self.inner.lookup(name).await?;
            self.note(&r);
            Ok(r)
        })
    }

    fn watch<'a>(&'a self, name: &'a str, after_seq: u64, wait: Duration) -> NameFuture<'a, Option<SignedRecord>> {
        Box::pin(async move {
            let r = self.inner.watch(name, after_seq, wait).await?;
            if let Some(r) = &r {
                self.note(r);
            }
            Ok(r)
        })
    }
}

/// Streams `len` bytes client → server while `mv` moves ends once the server has read a
/// third; checks the hash, and that the client then added a path from `client_ip` to
/// `server_ip` (the ends' addresses after the move). When the server moved, that path
/// must go to an address of its new name record, served to the client by the name
/// service (the server retires its old subflow before it could announce the move on it).
async fn stream_with_move<F, Fut>(seed: u8, len: usize, client_ip: IpAddr, server_ip: IpAddr, mv: F)
where
    F: FnOnce(msocket::Endpoint, msocket::Endpoint) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    init_tracing();
    let served = Arc::new(Served::default());
    let names: Arc<dyn NameService> = served.clone();
    let server = endpoint(&names, seed, 40 + seed);
    let client = endpoint(&names, seed + 100, 140 + seed);
    let name = format!("move{seed}.test");
    let mut listener = server.listen(&name).await.unwrap();
    let (c, mut s) = within(10, "pair", pair(&client, &mut listener, &name)).await;
    let mut events = c.events();
    let sent = data(len, seed as u64);
    let writer = tokio::spawn(send_all(c, sent.clone()));
    let mut got = vec![0u8; len / 3];
    within(30, "first third", s.read_exact(&mut got)).await.unwrap();
    mv(server.clone(), client.clone()).await;
    let record = served.inner.lookup(&name).await.unwrap().record;
    let event = wait_event(&mut events, "a path between the ends' new addresses", |e| {
        matches!(e, FlowEvent::PathAdded { local, remote, .. } if local.ip() == client_ip && remote.ip() == server_ip)
    })
    .await;
    let FlowEvent::PathAdded { remote, .. } = event else { unreachable!() };
    if server_ip != lo(40 + seed) {
        assert!(record.addrs.contains(&remote), "new path to {remote}, the server's record lists {:?}", record.addrs);
        assert!(served.served_listing(remote), "the client joined {remote} without the name service serving it");
    }
    let (rest, _s) = within(60, "rest", read_all(s)).await;
    got.extend_from_slice(&rest);
    within(30, "writer", writer).await.unwrap();
    assert_eq!(got.len(), sent.len());
    assert_eq!(sha256(&got), sha256(&sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_move_resumes() {
    stream_with_move(1, 8_000_000, lo(201), lo(41), |_s, c| async move {
        c.set_local_ips(vec![lo(201)]).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_move_resumes_after_relookup() {
    stream_with_move(2, 8_000_000, lo(142), lo(202), |s, _c| async move {
        s.set_local_ips(vec![lo(202)]).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_move_resumes() {
    stream_with_move(3, 8_000_000, lo(213), lo(203), |s, c| async move {
        let (a, b) = tokio::join!(s.set_local_ips(vec![lo(203)]), c.set_local_ips(vec![lo(213)]));
        a.unwrap();
        b.unwrap();
    })
    .await;
}

/// A name service whose lookups can be switched off, to show what works without it.
#[derive(Debug)]
struct Switchable {
    inner: msocket::name::MemoryNameService,
    lookups: std::sync::atomic::AtomicBool,
}

impl msocket::name::NameService for Switchable {
    fn register<'a>(&'a self, record: &'a msocket::name::SignedRecord) -> msocket::name::NameFuture<'a, ()> {
        self.inner.register(record)
    }

    fn lookup<'a>(&'a self, name: &'a str) -> msocket::name::NameFuture<'a, msocket::name::SignedRecord> {
        if self.lookups.load(std::sync::atomic::Ordering::SeqCst) {
            self.inner.lookup(name)
        } else {
            Box::pin(async move { Err(msocket::name::NameError::NotFound(name.to_string())) })
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_announced_over_a_surviving_subflow_are_used_without_a_lookup() {
    init_tracing();
    let switch = std::sync::Arc::new(Switchable {
        inner: msocket::name::MemoryNameService::new(),
        lookups: true.into(),
    });
    let names: std::sync::Arc<dyn msocket::name::NameService> = switch.clone();
    let server = endpoint(&names, 71, 71);
    server.set_local_ips(vec![lo(71), lo(72)]).await.unwrap();
    let client = endpoint(&names, 73, 73);
    let mut listener = server.listen("addrs.test").await.unwrap();
    let (c, mut s) = within(10, "pair", pair(&client, &mut listener, "addrs.test")).await;
    let mut client_events = c.events();
    switch.lookups.store(false, std::sync::atomic::Ordering::SeqCst);

    // The subflow's server end (127.0.0.71) survives; 127.0.0.72 is replaced by .74.
    server.set_local_ips(vec![lo(71), lo(74)]).await.unwrap();
    let announced = within(10, "ADDRS", async {
        loop {
            if let Some(FlowEvent::PeerMoved { addrs }) = client_events.next().await {
                break addrs;
            }
        }
    })
    .await;
    let ips: Vec<_> = announced.iter().map(|a| a.ip()).collect();
    assert_eq!(ips, vec![lo(71), lo(74)]);

    // Now the surviving address goes too: the client must re-dial .74 from the ADDRS alone.
    server.set_local_ips(vec![lo(74)]).await.unwrap();
    let sent = data(2_000_000, 74);
    let writer = tokio::spawn(send_all(c, sent.clone()));
    let mut got = Vec::new();
    within(30, "read", s.read_to_end(&mut got)).await.unwrap();
    within(30, "writer", writer).await.unwrap();
    assert_eq!(sha256(&got), sha256(&sent));
}
