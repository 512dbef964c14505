//! Plain TCP and Linux MPTCP in the lab, the benchmarks' baselines: a server in the
//! `server` namespace and a phone bound to one of its addresses, each streaming a
//! [`Plan`] while reading what the other sends.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use msocket_lab::{Access, Netns, NsTask};
use msocket_test_support::data;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::lab_run::{Plan, Recv, Scene, STEP};

/// `IPPROTO_MPTCP`.
const IPPROTO_MPTCP: i32 = 262;
/// Where the TCP and MPTCP servers listen in the `server` namespace.
pub const RAW_PORT: u16 = 7460;

/// What is wrong with the phone's last MPTCP connection, if anything: it fell back to
/// TCP, no subflow joined, or the counters could not be read.
pub fn mptcp_note(phone: &Netns) -> Option<String> {
    match mptcp_counters(phone) {
        Some((0, joins)) => Some(format!("MPTCP fell back to TCP (joins {joins})")),
        Some((_, 0)) => Some("MPTCP: no subflow joined".into()),
        Some(_) => None,
        None => Some("MPTCP counters unreadable".into()),
    }
}

/// The phone's `MPTcpExt` counters MPCapableSYNACKRX and MPJoinSynAckRx.
fn mptcp_counters(ns: &Netns) -> Option<(u64, u64)> {
    let text = ns.run("cat", &["/proc/net/netstat"]).ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("MPTcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let get = |key: &str| {
        let i = names.split_whitespace().position(|n| n == key)?;
        values.split_whitespace().nth(i)?.parse::<u64>().ok()
    };
    Some((get("MPCapableSYNACKRX")?, get("MPJoinSynAckRx")?))
}

/// MPTCP on both ends: limits, the phone's two addresses as `subflow` endpoints, and
/// `net.mptcp.enabled` checked in both namespaces.
pub fn mptcp_setup(scene: &Scene) -> Result<(), String> {
    let lab = &scene.lab;
    for ns in [lab.phone(), lab.server()] {
        let enabled = ns.run("sysctl", &["-n", "net.mptcp.enabled"]).map_err(|e| format!("MPTCP: {e}"))?;
        if enabled.trim() != "1" {
            ns.sysctl("net.mptcp.enabled", "1")
                .map_err(|e| format!("net.mptcp.enabled is {} and cannot be set: {e}", enabled.trim()))?;
        }
        ns.ip(&["mptcp", "limits", "set", "subflow", "2", "add_addr_accepted", "2"])
            .map_err(|e| format!("MPTCP limits: {e}"))?;
    }
    for access in [Access::Wifi, Access::Cell] {
        let addr = lab.phone_addr(access).ok_or("the phone has no address")?.to_string();
        lab.phone()
            .ip(&["mptcp", "endpoint", "add", &addr, "dev", access.ifname(), "subflow"])
            .map_err(|e| format!("MPTCP endpoint: {e}"))?;
    }
    Ok(())
}

/// What a raw (TCP or MPTCP) side did, visible while it runs.
#[derive(Default)]
pub struct RawCounters {
    pub written: AtomicU64,
    pub error: Mutex<Option<String>>,
    /// When the phone's connect returned.
    pub connected: Mutex<Option<Instant>>,
}

impl RawCounters {
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn set_error(&self, e: String) {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
    }
    pub fn connected(&self) -> Option<Instant> {
        *self.connected.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One side of a raw stream: writes `plan` (counting every byte the kernel accepted)
/// while reading into `recv`.
async fn raw_stream<S>(s: S, plan: Plan, recv: Arc<Recv>, counters: Arc<RawCounters>) -> [u8; 32]
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(s);
    let c = counters.clone();
    let (peer_done, peer_done_rx) = tokio::sync::oneshot::channel::<()>();
    let send = async move {
        let bytes = data(plan.len, plan.seed);
        let start = tokio::time::Instant::now();
        for (i, chunk) in bytes.chunks(plan.chunk).enumerate() {
            if !plan.pace.is_zero() {
                tokio::time::sleep_until(plan.due(start, i)).await;
            }
            let mut off = 0;
            while off < chunk.len() {
                match w.write(&chunk[off..]).await {
                    Ok(0) => return Some("write returned 0".to_string()),
                    Ok(n) => {
                        off += n;
                        c.written.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => return Some(format!("write: {e}")),
                }
            }
        }
        if plan.linger {
            let _ = peer_done_rx.await;
        }
        w.shutdown().await.err().map(|e| format!("shutdown: {e}"))
    };
    let receive = async {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let err = loop {
            match r.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    recv.add(n);
                }
                Err(e) => break Some(format!("read: {e}")),
            }
        };
        recv.finish();
        let _ = peer_done.send(());
        (err, <[u8; 32]>::from(hasher.finalize()))
    };
    let (werr, (rerr, sha)) = tokio::join!(send, receive);
    if let Some(e) = werr.or(rerr) {
        counters.set_error(e);
        recv.finish();
    }
    sha
}

fn raw_socket(mptcp: bool) -> std::io::Result<socket2::Socket> {
    let proto = mptcp.then_some(socket2::Protocol::from(IPPROTO_MPTCP));
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, proto.or(Some(socket2::Protocol::TCP)))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// One end of a raw connection, running in its namespace.
pub struct RawSide {
    pub task: NsTask<[u8; 32]>,
    pub recv: Arc<Recv>,
    pub counters: Arc<RawCounters>,
}

/// Listens on [`RAW_PORT`] in `ns`, accepts one connection and streams `plan` on it.
/// Returns once it listens.
pub fn raw_server(ns: &Netns, plan: Plan, mptcp: bool) -> Result<RawSide, String> {
    let (recv, counters) = (Recv::new(), Arc::new(RawCounters::default()));
    let (r, c) = (recv.clone(), counters.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let task = ns
        .spawn_runtime(move || async move {
            let listener = (|| {
                let s = raw_socket(mptcp)?;
                s.set_reuse_address(true)?;
                s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, RAW_PORT)).into())?;
                s.listen(8)?;
                tokio::net::TcpListener::from_std(s.into())
            })();
            let listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("listen on port {RAW_PORT}: {e}")));
                    return [0; 32];
                }
            };
            let _ = ready_tx.send(Ok(()));
            match listener.accept().await {
                Ok((s, _)) => raw_stream(s, plan, r, c).await,
                Err(e) => {
                    c.set_error(format!("accept: {e}"));
                    r.finish();
                    [0; 32]
                }
            }
        })
        .map_err(|e| format!("start the server: {e}"))?;
    ready_rx.recv_timeout(STEP).map_err(|_| "the server did not listen in time".to_string())??;
    Ok(RawSide { task, recv, counters })
}

/// Connects from `bind` to `to` in `ns` and streams `plan`.
pub fn raw_phone(ns: &Netns, bind: Ipv4Addr, to: SocketAddr, plan: Plan, mptcp: bool) -> Result<RawSide, String> {
    let (recv, counters) = (Recv::new(), Arc::new(RawCounters::default()));
    let (r, c) = (recv.clone(), counters.clone());
    let task = ns
        .spawn_runtime(move || async move {
            let connected = async {
                let socket = tokio::net::TcpSocket::from_std_stream(raw_socket(mptcp)?.into());
                socket.bind(SocketAddr::from((bind, 0)))?;
                tokio::time::timeout(STEP, socket.connect(to))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
            };
            match connected.await {
                Ok(s) => {
                    *c.connected.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    raw_stream(s, plan, r, c).await
                }
                Err(e) => {
                    c.set_error(format!("connect to {to}: {e}"));
                    r.finish();
                    [0; 32]
                }
            }
        })
        .map_err(|e| format!("start the phone: {e}"))?;
    Ok(RawSide { task, recv, counters })
}

