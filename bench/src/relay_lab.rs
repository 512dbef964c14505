//! Relay figures from the network lab ([`msocket_lab::TwoPhoneLab`]: two phones behind
//! NATs, a public core with the services host), for `msocket bench relay --lab`: what
//! loopback cannot show — real NATs, hole punching between them, a relay dying under a
//! flow that crosses NATs.
//!
//! The name server and the relays (`msocketd`'s, in process) run in the services
//! namespace, each relay on its own address so one can be killed; the endpoints run in the
//! phones' namespaces, each on a runtime of its own, pinned to the address of the network
//! a measurement is about (`EndpointConfig::local_ips`). Phone A and phone B alike: Wi-Fi
//! behind a port-preserving home NAT, cellular behind a symmetric carrier-grade NAT (both
//! steps).
//!
//! - **direct_mbps / relayed_mbps**: `bytes` from phone B's Wi-Fi to phone A's Wi-Fi, once
//!   over a flow that went direct by hole punching (both NATs port-preserving), once over a
//!   flow through relay 1 (the listener relay-only, so it stays relayed): the same lab
//!   path, with and without the relay, three times each, interleaved; medians. Timed from
//!   the first write to the last byte's arrival; SHA-256 checked (a mismatch is an
//!   error). In a lab with `unlimited` links
//!   (plain veths): the link emulators, four in series on this path, would otherwise be
//!   the bottleneck (about 350 Mbit/s on two cores) and hide the relay's cost.
//!
//! The other figures come from a second lab whose links have delays — access "2ms",
//! uplinks into the core "5ms" — so that the SYNs of a simultaneous open take realistic
//! time to cross:
//!
//! - **holepunch**: every combination of {port-preserving, symmetric} for the listener
//!   (phone A) and the client (phone B), four flows at once: whether a direct path opened
//!   within [`DIRECT_WAIT`] of the relayed connect (the first attempt and the retry due 5 s
//!   later), and when; then 4 MB each way, checked by SHA-256.
//! - **failover_ms**: a relay-only listener registered at both relays streams 64 KiB every
//!   5 ms to the client; once a quarter arrived, the relay carrying the flow is killed (its
//!   runtime dropped: every socket closed at once, as SIGKILL would); from the kill to the
//!   read that ends the longest gap between the client's reads after it.
//!
//! Linux only; needs root (see `lab/README.md`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use msocket::name::NameService;
use msocket::relay::RelayUrl;
use msocket::{Endpoint, Flow, FlowEvent, Identity};
use msocket_lab::{Access, Nat, NsTask, Phone, PhoneNet, TwoPhoneConfig, TwoPhoneLab, NAMES_ADDR, RELAY_ADDRS};
use msocket_test_support::data;
use msocketd::name_server::NameServer;
use msocketd::relay_server::{RelayLimits, RelayServer};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::lab_run::{lab_config, lab_ready, Recv, STEP};

/// One NAT combination: the listener's NAT and the client's, whether hole punching opened
/// a direct path (and how long after the relayed connect), and whether the data that
/// followed arrived intact both ways.
#[derive(Debug, Clone, Serialize)]
pub struct NatCase {
    pub listener: String,
    pub client: String,
    pub direct: bool,
    pub time_to_direct_ms: Option<u64>,
    pub sha_ok: bool,
}

/// What [`run_relay_lab`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct RelayLabFigures {
    /// Bulk throughput over a punched (direct) flow, Mbit/s.
    pub direct_mbps: f64,
    /// Bulk throughput over a relayed flow on the same lab path, Mbit/s.
    pub relayed_mbps: f64,
    pub holepunch: Vec<NatCase>,
    /// From killing the relay that carried a flow to the end of the longest gap in the
    /// client's reads after it (None: the flow never resumed).
    pub failover_ms: Option<u64>,
}

/// How long a relayed flow is given to go direct: the first attempt (3 s) and the retry
/// 5 s after it, with a margin.
pub const DIRECT_WAIT: Duration = Duration::from_secs(15);
const NAMES_PORT: u16 = 7450;
const RELAY_PORT: u16 = 443;
/// Bytes each way after a hole-punching case decided.
const CASE_BYTES: usize = 4 << 20;
const CHUNK: usize = 256 * 1024;
/// The failover stream: this much every [`FAILOVER_PACE`], at most [`FAILOVER_BYTES`].
const FAILOVER_CHUNK: usize = 64 * 1024;
const FAILOVER_PACE: Duration = Duration::from_millis(5);
const FAILOVER_BYTES: u64 = 16 << 20;
const FLOW_DEADLINE: Duration = Duration::from_secs(30);
/// Bulk transfers of each kind, interleaved; the medians are reported.
const BULK_TRIALS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Builds the labs, measures (see the module docs), tears them down. `bytes`: each bulk
/// transfer's size (six of them; the failover stream carries at most 16 MiB of it).
pub fn run_relay_lab(bytes: u64) -> Result<RelayLabFigures, String> {
    lab_ready()?;
    if bytes == 0 {
        return Err("the relay lab needs bytes > 0".into());
    }
    let (relayed_mbps, direct_mbps) = {
        let world = World::start(false)?;
        let (mut relayed, mut direct) = (Vec::new(), Vec::new());
        for trial in 0..BULK_TRIALS {
            eprintln!("relay lab: bulk {}/{BULK_TRIALS}, relayed and direct ({bytes} bytes each)", trial + 1);
            relayed.push(world.bulk(&format!("bulk-relayed-{trial}.lab"), true, bytes)?);
            direct.push(world.bulk(&format!("bulk-direct-{trial}.lab"), false, bytes)?);
        }
        (median(relayed), median(direct))
    };
    let world = World::start(true)?;
    eprintln!("relay lab: hole punching, four NAT combinations at once");
    let holepunch = world.holepunch()?;
    eprintln!("relay lab: failover");
    let failover_ms = world.failover(bytes.min(FAILOVER_BYTES))?;
    Ok(RelayLabFigures { direct_mbps, relayed_mbps, holepunch, failover_ms })
}

/// The lab, the name server and the relays.
struct World {
    // Drop order: the servers' runtimes end before the lab's namespaces go.
    names: Option<NsTask<()>>,
    relays: Mutex<[Option<NsTask<()>>; 2]>,
    lab: TwoPhoneLab,
    _db: tempfile::TempDir,
    next_seed: AtomicU64,
}

impl Drop for World {
    fn drop(&mut self) {
        self.relays.lock().unwrap_or_else(|p| p.into_inner()).iter_mut().for_each(|r| drop(r.take()));
        drop(self.names.take());
    }
}

fn relay_url(i: usize) -> RelayUrl {
    format!("{}:{RELAY_PORT}", RELAY_ADDRS[i]).parse().expect("a relay address")
}

/// Where each NAT kind is, on either phone.
fn access_of(nat: Nat) -> Access {
    match nat {
        Nat::Symmetric => Access::Cell,
        _ => Access::Wifi,
    }
}

impl World {
    /// The lab (links with delays, or `unlimited`), the name server, both relays.
    fn start(delays: bool) -> Result<World, String> {
        let spec = |s: &str| s.parse::<msocket_lab::LinkSpec>().map_err(|e| format!("{e}"));
        let (access, uplink) = if delays { (spec("2ms")?, spec("5ms")?) } else { (spec("unlimited")?, spec("unlimited")?) };
        let link = |n: PhoneNet| PhoneNet { wifi: access, cell: access, ..n };
        let phone = PhoneNet { cell_nat: Nat::Symmetric, carrier_nat: Nat::Symmetric, ..PhoneNet::all(Nat::PortPreserving) };
        let config = TwoPhoneConfig { phones: [link(phone.clone()), link(phone)], uplink, ..TwoPhoneConfig::default() };
        let lab = TwoPhoneLab::build(config).map_err(|e| format!("build the two-phone lab: {e}"))?;
        let db = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let path = db.path().join("names.redb");
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let names = lab
            .services()
            .spawn_runtime(move || async move {
                let server = match NameServer::open(path) {
                    Ok(s) => Arc::new(s),
                    Err(e) => return drop(tx.send(Err(format!("open the name database: {e}")))),
                };
                match tokio::net::TcpListener::bind(SocketAddr::from((NAMES_ADDR, NAMES_PORT))).await {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        server.serve(l, std::future::pending::<()>()).await;
                    }
                    Err(e) => drop(tx.send(Err(format!("bind the name server: {e}")))),
                }
            })
            .map_err(|e| format!("start the name server: {e}"))?;
        rx.recv_timeout(STEP).map_err(|_| "the name server did not start in time".to_string())??;
        let world = World { names: Some(names), relays: Mutex::new([None, None]), lab, _db: db, next_seed: AtomicU64::new(1) };
        for i in 0..2 {
            world.start_relay(i)?;
        }
        Ok(world)
    }

    /// Starts relay `i` (again) on its address.
    fn start_relay(&self, i: usize) -> Result<(), String> {
        let addr = format!("{}:{RELAY_PORT}", RELAY_ADDRS[i]);
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let a = addr.clone();
        let task = self
            .lab
            .services()
            .spawn_runtime(move || async move {
                match RelayServer::bind(&a, RelayLimits::default()).await {
                    Ok(server) => {
                        let _ = tx.send(Ok(()));
                        server.serve(std::future::pending::<()>()).await;
                    }
                    Err(e) => drop(tx.send(Err(format!("bind the relay on {a}: {e}")))),
                }
            })
            .map_err(|e| format!("start the relay on {addr}: {e}"))?;
        rx.recv_timeout(STEP).map_err(|_| format!("the relay on {addr} did not start in time"))??;
        self.relays.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(task);
        Ok(())
    }

    /// Kills relay `i`: its runtime is dropped, every socket closed at once.
    fn kill_relay(&self, i: usize) -> Instant {
        let task = self.relays.lock().unwrap_or_else(|p| p.into_inner())[i].take();
        drop(task);
        Instant::now()
    }

    fn seed(&self) -> u8 {
        self.next_seed.fetch_add(1, Ordering::Relaxed) as u8
    }

    /// A listener on `phone` pinned to `ip`, registered at `relays`, serving `name`:
    /// accepts one flow and runs `serve` on it. Returns once the name is published.
    fn listener<F, Fut, T>(&self, name: &str, ip: Ipv4Addr, relays: Vec<RelayUrl>, relay_only: bool, serve: F) -> Result<NsTask<Result<T, String>>, String>
    where
        F: FnOnce(Flow) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, String>> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (owned, seed) = (name.to_string(), self.seed());
        let task = self
            .lab
            .phone(Phone::A)
            .spawn_runtime(move || async move {
                let name = owned;
                let mut config = lab_config(names(), FLOW_DEADLINE);
                config.local_ips = vec![IpAddr::V4(ip)];
                config.relays = relays;
                config.relay_only = relay_only;
                let ep = Endpoint::new(Identity::from_seed([seed; 32]), config);
                let mut listener = match ep.listen(&name).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(format!("listen on {name}: {e}")));
                        return Err(format!("listen on {name}: {e}"));
                    }
                };
                let _ = tx.send(Ok(()));
                let flow = listener.accept().await.map_err(|e| format!("accept on {name}: {e}"))?;
                serve(flow).await
            })
            .map_err(|e| format!("start the listener {name}: {e}"))?;
        rx.recv_timeout(STEP).map_err(|_| "the listener did not publish its name in time".to_string())??;
        Ok(task)
    }

    /// A client on phone B pinned to `ip`: connects to `name` and runs `run` on the flow
    /// (with when `connect` returned).
    fn client<F, Fut, T>(&self, name: &str, ip: Ipv4Addr, run: F) -> Result<NsTask<Result<T, String>>, String>
    where
        F: FnOnce(Flow, Instant) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, String>> + 'static,
        T: Send + 'static,
    {
        let (owned, seed) = (name.to_string(), self.seed());
        self.lab
            .phone(Phone::B)
            .spawn_runtime(move || async move {
                let name = owned;
                let mut config = lab_config(names(), FLOW_DEADLINE);
                config.local_ips = vec![IpAddr::V4(ip)];
                let ep = Endpoint::new(Identity::from_seed([seed; 32]), config);
                let flow = ep.connect(&name).await.map_err(|e| format!("connect to {name}: {e}"))?;
                let connected = Instant::now();
                let out = run(flow, connected).await;
                drop(ep);
                out
            })
            .map_err(|e| format!("start the client of {name}: {e}"))
    }

    fn addr(&self, phone: Phone, access: Access) -> Result<Ipv4Addr, String> {
        self.lab.phone_addr(phone, access).ok_or_else(|| format!("phone {phone:?} has no {access:?} address"))
    }

    /// `bytes` from phone B's Wi-Fi to phone A's, relayed (a relay-only listener) or
    /// direct (once the flow went direct); Mbit/s.
    fn bulk(&self, name: &str, relayed: bool, bytes: u64) -> Result<f64, String> {
        let (a, b) = (self.addr(Phone::A, Access::Wifi)?, self.addr(Phone::B, Access::Wifi)?);
        let seed = u64::from(self.seed());
        let arrived = Arc::new(Mutex::new(None::<Instant>));
        let got = arrived.clone();
        let listener = self.listener(name, a, vec![relay_url(0)], relayed, move |flow| async move {
            let closed = flow.closed();
            let (r, mut w) = tokio::io::split(flow);
            let (len, sha) = receive(r, None).await?;
            *got.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            w.shutdown().await.map_err(|e| format!("finish: {e}"))?;
            let _ = tokio::time::timeout(Duration::from_secs(10), closed).await;
            Ok((len, sha))
        })?;
        let client = self.client(name, b, move |flow, connected| async move {
            if !relayed {
                wait_direct(&flow, connected, DIRECT_WAIT).await.ok_or_else(|| format!("the flow did not go direct within {DIRECT_WAIT:?}"))?;
            }
            let paths = flow.paths();
            if paths.iter().filter(|p| !p.standby).any(|p| p.relayed != relayed) {
                return Err(format!("the flow runs on the wrong kind of path: {paths:?}"));
            }
            let closed = flow.closed();
            let (r, mut w) = tokio::io::split(flow);
            let started = Instant::now();
            let sha = send(&mut w, bytes, seed, None).await?;
            w.shutdown().await.map_err(|e| format!("finish: {e}"))?;
            receive(r, None).await?;
            let _ = tokio::time::timeout(Duration::from_secs(10), closed).await;
            Ok((started, sha))
        })?;
        let limit = STEP + Duration::from_secs(bytes / 1_000_000 + 1);
        let (started, sent_sha) = client.join(limit).map_err(|e| format!("{name}: client: {e}"))??;
        let (len, sha) = listener.join(STEP).map_err(|e| format!("{name}: listener: {e}"))??;
        if len != bytes || sha != sent_sha {
            return Err(format!("{name}: {len} of {bytes} bytes arrived, SHA-256 {}", if sha == sent_sha { "matches" } else { "DIFFERS" }));
        }
        let at = arrived.lock().unwrap_or_else(|p| p.into_inner()).ok_or("the listener never finished")?;
        Ok(bytes as f64 * 8.0 / at.duration_since(started).as_secs_f64() / 1e6)
    }

    /// The four NAT combinations at once.
    fn holepunch(&self) -> Result<Vec<NatCase>, String> {
        let kinds = [Nat::PortPreserving, Nat::Symmetric];
        let mut running = Vec::new();
        for ln in kinds {
            for cn in kinds {
                let name = format!("punch-{ln}-{cn}.lab");
                let (a, b) = (self.addr(Phone::A, access_of(ln))?, self.addr(Phone::B, access_of(cn))?);
                let (down_seed, up_seed) = (u64::from(self.seed()), u64::from(self.seed()));
                let listener = self.listener(&name, a, vec![relay_url(0)], false, move |flow| async move {
                    let closed = flow.closed();
                    let (r, mut w) = tokio::io::split(flow);
                    let (sent, got) = tokio::join!(
                        async {
                            let sha = send(&mut w, CASE_BYTES as u64, down_seed, None).await?;
                            w.shutdown().await.map_err(|e| format!("finish: {e}"))?;
                            Ok::<_, String>(sha)
                        },
                        receive(r, None)
                    );
                    let _ = tokio::time::timeout(Duration::from_secs(10), closed).await;
                    Ok((sent?, got?))
                })?;
                let client = self.client(&name, b, move |flow, connected| async move {
                    let direct = wait_direct(&flow, connected, DIRECT_WAIT).await;
                    let closed = flow.closed();
                    let (r, mut w) = tokio::io::split(flow);
                    let (sent, got) = tokio::join!(
                        async {
                            let sha = send(&mut w, CASE_BYTES as u64, up_seed, None).await?;
                            w.shutdown().await.map_err(|e| format!("finish: {e}"))?;
                            Ok::<_, String>(sha)
                        },
                        receive(r, None)
                    );
                    let _ = tokio::time::timeout(Duration::from_secs(10), closed).await;
                    Ok((direct, sent?, got?))
                })?;
                running.push((ln, cn, listener, client));
            }
        }
        let mut cases = Vec::new();
        for (ln, cn, listener, client) in running {
            let (direct, up_sha, down) = client.join(DIRECT_WAIT + STEP).map_err(|e| format!("{ln}/{cn}: client: {e}"))??;
            let (down_sha, up) = listener.join(STEP).map_err(|e| format!("{ln}/{cn}: listener: {e}"))??;
            let sha_ok = down == (CASE_BYTES as u64, down_sha) && up == (CASE_BYTES as u64, up_sha);
            cases.push(NatCase {
                listener: ln.to_string(),
                client: cn.to_string(),
                direct: direct.is_some(),
                time_to_direct_ms: direct.map(|d| d.as_millis() as u64),
                sha_ok,
            });
        }
        Ok(cases)
    }

    /// A relay-only flow through either relay; the one carrying it is killed mid-stream.
    fn failover(&self, bytes: u64) -> Result<Option<u64>, String> {
        let (a, b) = (self.addr(Phone::A, Access::Wifi)?, self.addr(Phone::B, Access::Wifi)?);
        let seed = u64::from(self.seed());
        let name = "failover.lab";
        let listener = self.listener(name, a, vec![relay_url(0), relay_url(1)], true, move |flow| async move {
            let closed = flow.closed();
            let (r, mut w) = tokio::io::split(flow);
            let sha = send(&mut w, bytes, seed, Some((FAILOVER_CHUNK, FAILOVER_PACE))).await?;
            w.shutdown().await.map_err(|e| format!("finish: {e}"))?;
            receive(r, None).await?;
            let _ = tokio::time::timeout(Duration::from_secs(10), closed).await;
            Ok(sha)
        })?;
        let recv = Recv::new();
        let (carrier_tx, carrier_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let r2 = recv.clone();
        let client = self.client(name, b, move |flow, _| async move {
            if let Some(p) = flow.paths().into_iter().find(|p| p.relayed) {
                let _ = carrier_tx.send(p.remote);
            }
            let closed = flow.closed();
            let (r, mut w) = tokio::io::split(flow);
            let out = receive(r, Some(r2.clone())).await;
            r2.finish();
            w.shutdown().await.map_err(|e| format!("finish: {e}"))?;
            let _ = tokio::time::timeout(Duration::from_secs(10), closed).await;
            out
        })?;
        let carrying = carrier_rx.recv_timeout(STEP).map_err(|_| "the client's flow had no relayed path")?;
        let which = RELAY_ADDRS.iter().position(|ip| IpAddr::V4(*ip) == carrying.ip()).ok_or_else(|| format!("the flow runs through {carrying}, not a relay"))?;
        if !recv.wait_bytes(bytes / 4, STEP) {
            return Err(format!("a quarter of the failover stream did not arrive ({} bytes)", recv.bytes()));
        }
        let killed = self.kill_relay(which);
        let (len, sha) = client.join(STEP * 2).map_err(|e| format!("failover: client: {e}"))??;
        let sent = listener.join(STEP).map_err(|e| format!("failover: listener: {e}"))??;
        // The killed relay comes back for whatever runs next.
        self.start_relay(which)?;
        if len != bytes || sha != sent {
            return Err(format!("failover: {len} of {bytes} bytes arrived, SHA-256 {}", if sha == sent { "matches" } else { "DIFFERS" }));
        }
        let end_of_longest = recv.gaps().into_iter().filter(|(at, _)| *at > killed).max_by_key(|(_, gap)| *gap).map(|(at, _)| at);
        Ok(end_of_longest.map(|at| at.duration_since(killed).as_millis() as u64))
    }
}

fn names() -> Arc<dyn NameService> {
    Arc::new(msocket::name::TcpNameClient::new(format!("{NAMES_ADDR}:{NAMES_PORT}"), Duration::from_secs(3)))
}

/// Waits (at most `limit` from `since`) for a direct path on `flow`; how long after
/// `since` it came.
async fn wait_direct(flow: &Flow, since: Instant, limit: Duration) -> Option<Duration> {
    let mut events = flow.events();
    // It may have come before we listened.
    if flow.paths().iter().any(|p| !p.relayed) {
        return Some(since.elapsed());
    }
    let deadline = tokio::time::Instant::from_std(since + limit);
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(FlowEvent::PathAdded { relayed: false, .. })) => return Some(since.elapsed()),
            Ok(Some(FlowEvent::StaysRelayed { .. })) | Ok(None) | Err(_) => return None,
            Ok(Some(_)) => {}
        }
    }
}

/// Writes `len` bytes of test data (pieces of `data(CHUNK, seed + i)`), paced if asked;
/// returns their SHA-256.
async fn send(w: &mut (impl AsyncWriteExt + Unpin), len: u64, seed: u64, pace: Option<(usize, Duration)>) -> Result<[u8; 32], String> {
    let mut h = Sha256::new();
    let (chunk, pace) = pace.unwrap_or((CHUNK, Duration::ZERO));
    let mut at = 0u64;
    let mut i = 0u64;
    let start = tokio::time::Instant::now();
    while at < len {
        let n = (len - at).min(chunk as u64) as usize;
        let piece = data(n, seed.wrapping_mul(1_000_003).wrapping_add(i));
        if !pace.is_zero() {
            tokio::time::sleep_until(start + pace * i as u32).await;
        }
        w.write_all(&piece).await.map_err(|e| format!("write after {at} bytes: {e}"))?;
        h.update(&piece);
        at += n as u64;
        i += 1;
    }
    Ok(h.finalize().into())
}

/// Reads to the end; (bytes, SHA-256). Every read is recorded in `recv`, if given.
async fn receive(mut r: impl AsyncReadExt + Unpin, recv: Option<Arc<Recv>>) -> Result<(u64, [u8; 32]), String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return Ok((len, h.finalize().into())),
            Ok(n) => {
                h.update(&buf[..n]);
                len += n as u64;
                if let Some(recv) = &recv {
                    recv.add(n);
                }
            }
            Err(e) => return Err(format!("read after {len} bytes: {e}")),
        }
    }
}
