//! `msocket demo`: mobility end to end on one machine, no root needed.
//!
//! A name server (the real one, on a temporary database), a listening endpoint and a
//! connecting endpoint run in this process on loopback. While the client streams data to
//! the server, each end moves between 127.0.0.x addresses. Each endpoint follows a network
//! the demo pushes interface snapshots into, the same path a followed system network or a
//! phone's network monitor takes: a move is a new snapshot in which the interface has a
//! new address, and the endpoint withdraws the old one (listeners closed, subflows on it
//! cut), re-publishes its names and tells its peers. The client re-dials, re-looks-up when
//! the server moved, and the flow resumes. At the end the SHA-256 of what was sent and what
//! was received must match.
//!
//! A move's recovery time runs from the move until the receiver gets new data over the
//! network again: a new subflow has joined the flow and the receiver's received-bytes
//! counter has grown past its value at the end of the move. The sender is held one
//! segment ahead of the moves, so there is always new data to show the recovery.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use msocket::name::{NameService, TcpNameClient};
use msocket::watch::{Interface, InterfaceKind, PushedNetwork};
use msocket::{Endpoint, EndpointConfig, Flow, FlowEvent, FlowEvents, Identity, NetworkFollower, NetworkSource};
use msocketd::name_server::NameServer;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

const NAME: &str = "demo.server";
/// The whole demo must finish within this.
const DEMO_TIMEOUT: Duration = Duration::from_secs(300);
/// One move must recover within this.
const MOVE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the demo measured.
#[derive(Debug)]
pub struct DemoReport {
    pub bytes: u64,
    pub recoveries: Vec<Duration>,
}

impl DemoReport {
    /// The contract line the demo ends with.
    pub fn summary_line(&self) -> String {
        let mut ms: Vec<f64> = self.recoveries.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let p50 = ms.get(ms.len().saturating_sub(1) / 2).copied().unwrap_or(0.0);
        let max = ms.last().copied().unwrap_or(0.0);
        format!(
            "demo ok: bytes={} sha256=match moves={} recovery_ms_p50={p50:.1} recovery_ms_max={max:.1}",
            self.bytes,
            self.recoveries.len()
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Move {
    Client,
    Server,
    Both,
}

fn loopback(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))
}

/// The one interface of a demo host, with its address `127.0.0.host`.
fn interface(host: u8) -> Vec<Interface> {
    vec![Interface {
        name: "demo0".into(),
        index: 1,
        kind: InterfaceKind::Wifi,
        metered: false,
        up: true,
        addrs: vec![loopback(host)],
        nat64: None,
    }]
}

/// One side of the demo: its endpoint and the network it follows.
struct Host {
    endpoint: Endpoint,
    network: PushedNetwork,
    _follower: NetworkFollower,
}

impl Host {
    fn new(names: &Arc<dyn NameService>, host: u8) -> Result<Host, String> {
        let mut config = EndpointConfig::new(names.clone());
        // The first address is the interface's; pushes move it from then on.
        config.local_ips = vec![loopback(host)];
        config.network = NetworkSource::Application;
        config.use_loopback = true;
        config.flow.flow_deadline = Duration::from_secs(60);
        let endpoint =
            Endpoint::new(Identity::generate().map_err(|e| e.to_string())?, config);
        let network = PushedNetwork::new(interface(host));
        let _follower = endpoint.follow_network(network.subscribe());
        Ok(Host { endpoint, network, _follower })
    }

    /// The interface takes `127.0.0.host` instead of its address.
    fn move_to(&self, host: u8) {
        self.network.push(interface(host));
    }
}

/// Waits until `events` report that the endpoint applied a move (its old subflows are
/// retired by then).
async fn moved(events: &mut FlowEvents) -> Result<(), String> {
    loop {
        match events.next().await {
            Some(FlowEvent::Moved { .. }) => return Ok(()),
            Some(_) => {}
            None => return Err("the flow ended during a move".into()),
        }
    }
}

/// Runs the demo: `bytes` streamed, `moves` moves of each end plus one of both.
pub async fn run(bytes: u64, moves: usize) -> Result<DemoReport, String> {
    // Every move needs new data after it (see `run_inner`): at least one byte a segment.
    let least = 2 * moves as u64 + 3;
    if bytes < least {
        return Err(format!("--bytes must be at least {least} for {moves} moves"));
    }
    tokio::time::timeout(DEMO_TIMEOUT, run_inner(bytes, moves))
        .await
        .unwrap_or_else(|_| Err(format!("did not finish within {DEMO_TIMEOUT:?}")))
}

async fn run_inner(bytes: u64, moves: usize) -> Result<DemoReport, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let server = Arc::new(NameServer::open(dir.path().join("names.redb")).map_err(|e| e.to_string())?);
    let ns_listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let ns_addr = ns_listener.local_addr().map_err(|e| e.to_string())?;
    let (stop_names, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(ns_listener, async move {
        let _ = stopped.await;
    }));
    let names: Arc<dyn NameService> = Arc::new(TcpNameClient::new(ns_addr.to_string(), Duration::from_secs(5)));
    eprintln!("name service on {ns_addr}");

    let (mut server_host, mut client_host) = (11u8, 101u8);
    let server = Host::new(&names, server_host)?;
    let client = Host::new(&names, client_host)?;
    let mut listener = server.endpoint.listen(NAME).await.map_err(|e| format!("listen: {e}"))?;
    let accept = tokio::spawn(async move { listener.accept().await });
    let client_flow = client.endpoint.connect(NAME).await.map_err(|e| format!("connect: {e}"))?;
    let mut client_events = client_flow.events();
    let server_flow = accept.await.map_err(|e| e.to_string())?.map_err(|e| format!("accept: {e}"))?;
    eprintln!("flow {} up: client {} -> server {}", client_flow.id(), loopback(client_host), loopback(server_host));

    let mut server_events = server_flow.events();
    let (progress_tx, mut progress) = watch::channel((0u64, 0u64));
    let receiver = tokio::spawn(receive(server_flow, progress_tx));
    let mut plan: Vec<Move> = (0..moves).flat_map(|_| [Move::Client, Move::Server]).collect();
    plan.push(Move::Both);
    // The stream is cut into plan.len() + 2 segments; move k happens once the receiver has
    // read `threshold(k)` bytes (the end of segment k). The sender may run one segment
    // ahead of that (so data is in flight during a move) but no further: the segment after
    // it is released only once move k is done, so data is always left to cross the new
    // path and show the recovery, however small `bytes` is and however big the windows.
    let threshold = |k: usize| bytes * (k as u64 + 1) / (plan.len() as u64 + 2);
    let (allowed, allowed_rx) = watch::channel(threshold(1));
    let sender = tokio::spawn(send(client_flow, bytes, allowed_rx));

    let bar = ProgressBar::new(bytes).with_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut recoveries = Vec::new();
    for (k, mv) in plan.iter().enumerate() {
        let due = threshold(k);
        if progress.wait_for(|p| p.0 >= due).await.is_err() {
            break; // the receiver ended: its result below says why
        }
        bar.set_position(progress.borrow().0);
        while server_events.try_next().is_some() {}
        let old = (loopback(client_host), loopback(server_host));
        let started = Instant::now();
        while client_events.try_next().is_some() {}
        let (client_moves, server_moves) = match mv {
            Move::Client => (true, false),
            Move::Server => (false, true),
            Move::Both => (true, true),
        };
        if client_moves {
            client_host += 1;
            client.move_to(client_host);
        }
        if server_moves {
            server_host += 1;
            server.move_to(server_host);
        }
        let applied = async {
            if client_moves {
                moved(&mut client_events).await?;
            }
            if server_moves {
                moved(&mut server_events).await?;
            }
            Ok::<(), String>(())
        };
        tokio::time::timeout(MOVE_TIMEOUT, applied)
            .await
            .map_err(|_| format!("move {} was not applied within {MOVE_TIMEOUT:?}", k + 1))?
            .map_err(|e| format!("move {}: {e}", k + 1))?;
        // The old paths are gone: whatever arrives from here on crossed a new one.
        let base = progress.borrow().1;
        allowed.send_replace(if k + 2 <= plan.len() { threshold(k + 2) } else { bytes });
        let recovered = tokio::time::timeout(MOVE_TIMEOUT, async {
            loop {
                match server_events.next().await {
                    Some(FlowEvent::PathAdded { .. }) => break,
                    Some(_) => {}
                    None => return Err("the flow ended during a move".to_string()),
                }
            }
            progress.wait_for(|p| p.1 > base).await.map_err(|_| "receiver stopped".to_string())?;
            Ok(started.elapsed())
        })
        .await
        .map_err(|_| format!("move {} did not recover within {MOVE_TIMEOUT:?}", k + 1))??;
        let line = format!(
            "move {:2} ({:6}): client {} -> {}, server {} -> {}: recovered in {:.1} ms",
            k + 1,
            format!("{mv:?}").to_lowercase(),
            old.0,
            loopback(client_host),
            old.1,
            loopback(server_host),
            recovered.as_secs_f64() * 1e3
        );
        bar.suspend(|| println!("{line}"));
        recoveries.push(recovered);
    }
    drop(allowed); // a stream cut short must not leave the sender waiting
    let (received_bytes, received) = receiver.await.map_err(|e| e.to_string())??;
    let sent = sender.await.map_err(|e| e.to_string())??;
    if recoveries.len() != plan.len() {
        return Err(format!("the stream ended after {} of {} moves", recoveries.len(), plan.len()));
    }
    bar.finish_and_clear();
    let _ = stop_names.send(());
    if received_bytes != bytes {
        return Err(format!("received {received_bytes} bytes of {bytes}"));
    }
    if sent != received {
        return Err(format!("sha256 mismatch: sent {} received {}", hex::encode(sent), hex::encode(received)));
    }
    eprintln!("sha256 {}", hex::encode(received));
    Ok(DemoReport { bytes, recoveries })
}

/// Deterministic filler bytes (xorshift64*), fast enough not to be the bottleneck.
pub fn fill(state: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Sends `bytes` bytes, never more than `allowed` says yet.
async fn send(mut flow: Flow, bytes: u64, mut allowed: watch::Receiver<u64>) -> Result<[u8; 32], String> {
    let mut hash = Sha256::new();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < bytes {
        let limit = *allowed.wait_for(|&a| a > sent).await.map_err(|_| "the demo stopped".to_string())?;
        let n = (limit.min(bytes) - sent).min(buf.len() as u64) as usize;
        fill(&mut state, &mut buf[..n]);
        flow.write_all(&buf[..n]).await.map_err(|e| format!("send: {e}"))?;
        hash.update(&buf[..n]);
        sent += n as u64;
    }
    flow.shutdown().await.map_err(|e| format!("finishing the stream: {e}"))?;
    Ok(hash.finalize().into())
}

/// Reads to the end, publishing (bytes read, bytes received from the network).
async fn receive(mut flow: Flow, progress: watch::Sender<(u64, u64)>) -> Result<(u64, [u8; 32]), String> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = flow.read(&mut buf).await.map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        total += n as u64;
        progress.send_replace((total, flow.stats().bytes_received));
    }
    flow.shutdown().await.map_err(|e| format!("finishing the return stream: {e}"))?;
    Ok((total, hash.finalize().into()))
}
