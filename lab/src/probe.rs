//! Small TCP tools for checking a lab: an echo server that records who connected, and
//! client helpers that bind to a chosen local address (which, with the phone's
//! source-based policy routing, chooses the interface).
//!
//! The server runs in its namespace through [`Netns::spawn_runtime`]; the async client
//! helpers are meant to be awaited inside another `spawn_runtime` future.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::debug;

use crate::netns::{Netns, NsTask};
use crate::{Error, Result};

#[derive(Default)]
struct Peers {
    seen: Mutex<Vec<SocketAddr>>,
    changed: Condvar,
}

/// A TCP echo server inside a namespace; stops when dropped.
pub struct EchoServer {
    port: u16,
    peers: Arc<Peers>,
    _task: NsTask<io::Result<()>>,
}

impl std::fmt::Debug for EchoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoServer")
            .field("port", &self.port)
            .finish()
    }
}

impl EchoServer {
    /// Listens on `0.0.0.0:port` in `ns` (port 0: any) and returns once it is listening.
    pub fn start(ns: &Netns, port: u16) -> Result<EchoServer> {
        let peers = Arc::new(Peers::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<u16>>();
        let task_peers = peers.clone();
        let task = ns.spawn_runtime(move || async move {
            let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            };
            let _ = ready_tx.send(listener.local_addr().map(|a| a.port()));
            loop {
                let (stream, peer) = listener.accept().await?;
                debug!(%peer, "echo: accepted");
                if let Ok(mut seen) = task_peers.seen.lock() {
                    seen.push(peer);
                }
                task_peers.changed.notify_all();
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        })?;
        let timeout = Duration::from_secs(10);
        let port = match ready_rx.recv_timeout(timeout) {
            Ok(Ok(port)) => port,
            Ok(Err(e)) => {
                return Err(crate::io_err(
                    format!("echo server bind port {port} in {}", ns.name()),
                    e,
                ))
            }
            Err(_) => {
                return Err(Error::Timeout {
                    after: timeout,
                    what: format!("echo server in {}", ns.name()),
                })
            }
        };
        Ok(EchoServer {
            port,
            peers,
            _task: task,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Peer addresses of every connection accepted so far, oldest first.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Waits until at least `n` connections were accepted; returns their peer addresses.
    pub fn wait_for_peers(&self, n: usize, timeout: Duration) -> Result<Vec<SocketAddr>> {
        let deadline = Instant::now() + timeout;
        let mut seen = self
            .peers
            .seen
            .lock()
            .map_err(|_| Error::Invalid("echo peer list poisoned".into()))?;
        while seen.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    after: timeout,
                    what: format!("{n} connections to the echo server"),
                });
            }
            seen = self
                .peers
                .changed
                .wait_timeout(seen, left)
                .map_err(|_| Error::Invalid("echo peer list poisoned".into()))?
                .0;
        }
        Ok(seen.clone())
    }
}

/// One TCP connect to `to` from local address `bind` (port chosen by the kernel), bounded
/// by `timeout`.
pub async fn connect_from(
    bind: Option<IpAddr>,
    to: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    match tokio::time::timeout(timeout, socket.connect(to)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect to {to} timed out after {timeout:?}"),
        )),
    }
}

/// Retries [`connect_from`] until it succeeds or `deadline` has passed since the call; for
/// waiting until a path works (routes, ARP, a server starting) without sleeping blindly.
pub async fn connect_until(
    bind: Option<IpAddr>,
    to: SocketAddr,
    deadline: Duration,
) -> io::Result<TcpStream> {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        match connect_from(bind, to, left.min(Duration::from_secs(3))).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() + Duration::from_millis(50) >= end => {
                return Err(e)
            }
            Err(e) => {
                debug!(%to, "connect failed, retrying: {e}");
                // Pace retries of instant failures (e.g. "network unreachable").
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Sends `payload` and reads the same bytes back; returns the elapsed time.
pub async fn echo_round_trip(stream: &mut TcpStream, payload: &[u8]) -> io::Result<Duration> {
    let start = Instant::now();
    stream.write_all(payload).await?;
    let mut back = vec![0u8; payload.len()];
    stream.read_exact(&mut back).await?;
    if back != payload {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "echo returned different bytes",
        ));
    }
    Ok(start.elapsed())
}

/// Streams `len` bytes through an echo server, writing and reading concurrently, and
/// checks every byte; returns the elapsed time.
pub async fn echo_bulk(stream: TcpStream, len: usize) -> io::Result<Duration> {
    let pattern = |i: usize| (i % 251) as u8;
    let start = Instant::now();
    let (mut r, mut w) = stream.into_split();
    let writer = async move {
        let chunk: Vec<u8> = (0..65_536).map(pattern).collect();
        let mut sent = 0;
        while sent < len {
            let n = (len - sent).min(chunk.len());
            // 65536 is a multiple of neither 251 nor vice versa: offset the pattern.
            let off = sent % 251;
            let data: Vec<u8> = (0..n).map(|i| pattern(off + i)).collect();
            w.write_all(&data).await?;
            sent += n;
        }
        w.flush().await?;
        Ok::<_, io::Error>(w)
    };
    let reader = async move {
        let mut got = 0;
        let mut buf = vec![0u8; 65_536];
        while got < len {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("echo closed after {got} of {len} bytes"),
                ));
            }
            if let Some(i) = (0..n).find(|&i| buf[i] != pattern(got + i)) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("byte {} differs", got + i),
                ));
            }
            got += n;
        }
        Ok::<_, io::Error>(())
    };
    let (w, ()) = tokio::try_join!(writer, reader)?;
    drop(w);
    Ok(start.elapsed())
}
