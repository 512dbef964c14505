//! Shared helpers for the loopback integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msocket::name::{MemoryNameService, NameError, NameFuture, NameRecord, NameService, SignedRecord};
use msocket::{Endpoint, EndpointConfig, Flow, FlowEvent, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

pub use msocket_test_support::{data, init_tracing, sha256};

pub fn lo(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))
}

/// An endpoint on `127.0.0.<host>` with short timers suited to tests.
pub fn endpoint(names: &Arc<dyn NameService>, seed: u8, host: u8) -> Endpoint {
    let mut config = EndpointConfig::new(names.clone());
    config.local_ips = vec![lo(host)];
    config.flow.flow_deadline = Duration::from_secs(20);
    config.connect_timeout = Duration::from_secs(10);
    Endpoint::new(Identity::from_seed([seed; 32]), config)
}

pub fn memory_names() -> Arc<dyn NameService> {
    Arc::new(MemoryNameService::new())
}

/// Connects `client` to `name` served by `listener`; returns (client flow, server flow).
pub async fn pair(client: &Endpoint, listener: &mut msocket::Listener, name: &str) -> (Flow, Flow) {
    let (c, s) = tokio::join!(client.connect(name), listener.accept());
    (c.expect("connect"), s.expect("accept"))
}

/// Writes `bytes` then finishes; returns once the peer acknowledged everything.
pub async fn send_all(mut flow: Flow, bytes: Vec<u8>) -> Flow {
    for chunk in bytes.chunks(50_000) {
        flow.write_all(chunk).await.expect("write");
    }
    flow.shutdown().await.expect("shutdown");
    flow
}

/// Reads to the end of the stream.
pub async fn read_all(mut flow: Flow) -> (Vec<u8>, Flow) {
    let mut out = Vec::new();
    flow.read_to_end(&mut out).await.expect("read");
    (out, flow)
}

/// Bounds a test step.
pub async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f).await.unwrap_or_else(|_| panic!("{what}: timed out after {secs}s"))
}

/// Like [`endpoint`], then `tune` adjusts the configuration.
pub fn endpoint_with(
    names: &Arc<dyn NameService>,
    seed: u8,
    host: u8,
    tune: impl FnOnce(&mut EndpointConfig),
) -> Endpoint {
    let mut config = EndpointConfig::new(names.clone());
    config.local_ips = vec![lo(host)];
    config.flow.flow_deadline = Duration::from_secs(20);
    config.connect_timeout = Duration::from_secs(10);
    tune(&mut config);
    Endpoint::new(Identity::from_seed([seed; 32]), config)
}

/// A record for `name` signed by `id`, pointing at `addrs`.
pub fn signed_record(id: &Identity, name: &str, addrs: Vec<SocketAddr>, seq: u64) -> SignedRecord {
    let record = NameRecord::new(name, id.public(), addrs, seq, msocket::name::unix_now() + 3600);
    SignedRecord::sign(record, id).unwrap()
}

/// A name service for tests: a [`MemoryNameService`] that can be switched off (every
/// request then fails as if the server were unreachable) and can be made to lie (serve a
/// given, validly signed record instead of the stored one, as a compromised server would).
/// It counts lookups so tests can wait for "the client tried" instead of sleeping.
#[derive(Debug)]
pub struct TestNames {
    store: MemoryNameService,
    down: AtomicBool,
    lies: Mutex<HashMap<String, SignedRecord>>,
    /// Records served once, to the next lookup of their name (an answer overtaken).
    late: Mutex<HashMap<String, SignedRecord>>,
    lookups: watch::Sender<u64>,
    failed_lookups: watch::Sender<u64>,
    /// Wakes watches when a lie is told.
    lied: tokio::sync::Notify,
}

impl TestNames {
    pub fn new() -> Arc<TestNames> {
        Arc::new(TestNames {
            store: MemoryNameService::new(),
            down: AtomicBool::new(false),
            lies: Mutex::new(HashMap::new()),
            late: Mutex::new(HashMap::new()),
            lookups: watch::channel(0).0,
            failed_lookups: watch::channel(0).0,
            lied: tokio::sync::Notify::new(),
        })
    }

    pub fn dyn_arc(self: &Arc<Self>) -> Arc<dyn NameService> {
        self.clone()
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Serve `record` for its name from now on, whatever is registered.
    pub fn lie(&self, record: SignedRecord) {
        self.lies.lock().unwrap().insert(record.record.name.clone(), record);
        self.lied.notify_waiters();
    }

    /// Serve `record` to the next lookup of its name only (an answer that was overtaken
    /// by a newer record on its way).
    pub fn serve_late_once(&self, record: SignedRecord) {
        self.late.lock().unwrap().insert(record.record.name.clone(), record);
    }

    pub fn lookups(&self) -> watch::Receiver<u64> {
        self.lookups.subscribe()
    }

    pub fn failed_lookups(&self) -> watch::Receiver<u64> {
        self.failed_lookups.subscribe()
    }

    fn unreachable() -> NameError {
        NameError::Unreachable { server: "test names".into(), step: msocket::name::ExchangeStep::Connect, kind: std::io::ErrorKind::ConnectionRefused }
    }
}

impl NameService for TestNames {
    fn register<'a>(&'a self, record: &'a SignedRecord) -> NameFuture<'a, ()> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(Self::unreachable());
            }
            self.store.register(record).await
        })
    }

    fn lookup<'a>(&'a self, name: &'a str) -> NameFuture<'a, SignedRecord> {
        Box::pin(async move {
            self.lookups.send_modify(|n| *n += 1);
            if self.down.load(Ordering::SeqCst) {
                self.failed_lookups.send_modify(|n| *n += 1);
                return Err(Self::unreachable());
            }
            if let Some(r) = self.lies.lock().unwrap().get(name).cloned() {
                return Ok(r);
            }
            if let Some(r) = self.late.lock().unwrap().remove(name) {
                return Ok(r);
            }
            self.store.lookup(name).await
        })
    }

    /// The store's pushed watch, or the lie once one is told (not counted as lookups).
    fn watch<'a>(&'a self, name: &'a str, after_seq: u64, wait: std::time::Duration) -> NameFuture<'a, Option<SignedRecord>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                if self.down.load(Ordering::SeqCst) {
                    return Err(Self::unreachable());
                }
                let lied = self.lied.notified();
                let lie = self.lies.lock().unwrap().get(name).cloned();
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match lie {
                    Some(r) if r.record.seq > after_seq => return Ok(Some(r)),
                    // A lie hides the store: wait for the next one.
                    Some(_) => tokio::select! {
                        _ = tokio::time::sleep(left) => return Ok(None),
                        _ = lied => {}
                    },
                    None => tokio::select! {
                        r = self.store.watch(name, after_seq, left) => return r,
                        _ = lied => {}
                    },
                }
            }
        })
    }
}

/// Sends `out` on `flow` (then finishes it) while reading what the peer sends, both at
/// once; returns the bytes received. `progress` counts the bytes read so far. The last
/// quarter of `out` goes only once `release` says so.
pub async fn exchange(flow: Flow, out: Vec<u8>, progress: watch::Sender<u64>, mut release: watch::Receiver<bool>) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(flow);
    let send = async move {
        let (first, last) = out.split_at(out.len() - out.len() / 4);
        for chunk in first.chunks(64 * 1024) {
            w.write_all(chunk).await.expect("write");
        }
        release.wait_for(|go| *go).await.expect("release");
        for chunk in last.chunks(64 * 1024) {
            w.write_all(chunk).await.expect("write");
        }
        w.shutdown().await.expect("shutdown");
        w
    };
    let recv = async move {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            progress.send_modify(|p| *p += n as u64);
        }
        (got, r)
    };
    let (_w, (got, _r)) = tokio::join!(send, recv);
    got
}


/// Client sends `up_len` bytes and finishes; the server reads them all, then answers with
/// `down_len` bytes and finishes. Checks both hashes; returns both flows, all read.
pub async fn round_trip(c: Flow, s: Flow, up_len: usize, down_len: usize, seed: u64) -> (Flow, Flow) {
    let up = data(up_len, seed);
    let down = data(down_len, seed + 1);
    let (up2, down2) = (up.clone(), down.clone());
    let server = tokio::spawn(async move {
        let (got, s) = read_all(s).await;
        (got, send_all(s, down2).await)
    });
    let c = within(20, "client send", send_all(c, up2)).await;
    let (got_down, c) = within(20, "client read", read_all(c)).await;
    let (got_up, s) = within(20, "server side", server).await.unwrap();
    assert_eq!(sha256(&got_up), sha256(&up), "client → server bytes differ");
    assert_eq!(sha256(&got_down), sha256(&down), "server → client bytes differ");
    (c, s)
}

/// Waits (at most 20 s) for an event matching `want`; returns it.
pub async fn wait_event(events: &mut msocket::FlowEvents, what: &str, want: impl Fn(&FlowEvent) -> bool) -> FlowEvent {
    within(20, what, async {
        loop {
            match events.next().await {
                Some(ev) if want(&ev) => return ev,
                Some(_) => {}
                None => panic!("{what}: the flow's events ended"),
            }
        }
    })
    .await
}

/// Whether `listener` has no flow waiting to be accepted (checked without waiting).
pub fn listener_is_empty(listener: &mut msocket::Listener) -> bool {
    use std::future::Future;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let accept = std::pin::pin!(listener.accept());
    accept.poll(&mut cx).is_pending()
}
