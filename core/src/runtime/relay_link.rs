//! The listening side of relays: a registration per configured relay, kept alive.
//!
//! While an endpoint listens, one task per relay holds a control connection: it proves the
//! endpoint's key (a signed nonce), then waits for dial-backs. Each dial-back is a client
//! asking the relay for us: we connect to the relay again with the token, and what arrives
//! on that connection is served like any incoming subflow. The endpoint lists the relays
//! that hold a live registration in its name records, so the task reports every change.
//!
//! A control connection must notice quickly that it died, or peers are sent to a relay
//! that cannot reach us: it is re-made at once when its local address goes away (a move),
//! and otherwise pinged every [`PING_INTERVAL`] (rarely, for the radio's sake; a relay that
//! dies closes its connections, which is noticed at once).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::conn::Route;
use super::endpoint::EndpointInner;
use super::host::Host;
use crate::relay::wire::{self, Message, RelayRefusal};
use crate::relay::RelayUrl;

/// How often an idle control connection is pinged.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(120);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a registration ended or could not be made (logged; the task tries again).
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0} does not resolve")]
    Resolve(String),
    #[error("connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("the relay refused: {why} ({reason})")]
    Refused { why: RelayRefusal, reason: String },
    #[error("the relay sent {0}")]
    Unexpected(String),
    #[error("{0}")]
    Read(#[from] wire::ReadError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("the relay did not answer a ping")]
    Silent,
    #[error("the control connection's local address went away or is no longer the best")]
    Moved,
}

/// Keeps the endpoint registered at `relay` until the endpoint is gone (or the task is
/// aborted, when it stops listening).
pub(crate) async fn keep_registered(ep: Weak<EndpointInner>, relay: RelayUrl) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(inner) = ep.upgrade() else { return };
        let host = inner.host().clone();
        drop(inner);
        let mut net = host.network_changes();
        match register(&host, &relay).await {
            Ok((stream, observed)) => {
                tracing::info!(%relay, %observed, "registered at the relay");
                backoff = FIRST_BACKOFF;
                report(&ep, &relay, true);
                let ended = serve(&ep, &host, stream).await;
                tracing::warn!(%relay, reason = %ended, "the relay registration ended; registering again");
                report(&ep, &relay, false);
            }
            Err(e) => {
                tracing::warn!(%relay, error = %e, ?backoff, "registering at the relay failed");
                report(&ep, &relay, false);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = net.changed() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn report(ep: &Weak<EndpointInner>, relay: &RelayUrl, registered: bool) {
    if let Some(inner) = ep.upgrade() {
        inner.relay_registration(relay, registered);
    }
}

/// Connects to `relay` (from our best address of its family) and registers.
async fn register(host: &Host, relay: &RelayUrl) -> Result<(TcpStream, SocketAddr), LinkError> {
    let limit = host.config.io_timeout;
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(limit, tokio::net::lookup_host(relay.host_port())).await {
        Ok(Ok(a)) => a.collect(),
        _ => Vec::new(),
    };
    let mut last = LinkError::Resolve(relay.to_string());
    for addr in addrs.into_iter().take(4) {
        let local = host.local_ips_for(addr)[0];
        let mut stream = match host.dial_tcp_from(local, addr, &wire::header(wire::KIND_REGISTER), false, false).await {
            Ok(s) => s,
            Err(source) => {
                last = LinkError::Connect { addr, source };
                continue;
            }
        };
        let nonce = match within(limit, wire::read_message(&mut stream)).await? {
            Message::Challenge { nonce } => nonce,
            other => return Err(unexpected(other)),
        };
        stream.write_all(&wire::register(&host.identity, &nonce).encode()).await?;
        return match within(limit, wire::read_message(&mut stream)).await? {
            Message::Registered { observed } => Ok((stream, observed)),
            other => Err(unexpected(other)),
        };
    }
    Err(last)
}

async fn within<T>(limit: Duration, f: impl std::future::Future<Output = Result<T, wire::ReadError>>) -> Result<T, LinkError> {
    tokio::time::timeout(limit, f).await.map_err(|_| LinkError::TimedOut(limit))?.map_err(LinkError::from)
}

fn unexpected(m: Message) -> LinkError {
    match m {
        Message::Refused { why, reason } => LinkError::Refused { why, reason },
        other => LinkError::Unexpected(format!("{other:?}")),
    }
}

/// Serves a registered control connection until it fails: answers pings, pings when
/// idle, and answers each dial-back by connecting back.
async fn serve(ep: &Weak<EndpointInner>, host: &Arc<Host>, stream: TcpStream) -> LinkError {
    let (Ok(local), Ok(relay_addr)) = (stream.local_addr(), stream.peer_addr()) else {
        return LinkError::Unexpected("a socket with no address".into());
    };
    let relay_addr = host.peer_address(local, relay_addr);
    let (mut rd, mut wr) = stream.into_split();
    // Reading a message is not cancel-safe: it runs in its own task.
    let (tx, mut rx) = mpsc::channel(8);
    let reader = tokio::spawn(async move {
        loop {
            let m = wire::read_message(&mut rd).await;
            let failed = m.is_err();
            if tx.send(m).await.is_err() || failed {
                return;
            }
        }
    });
    let _reader = AbortOnDrop(reader.abort_handle());
    let mut net = host.network_changes();
    let mut ping: Option<(u64, tokio::time::Instant)> = None;
    let mut next_ping = tokio::time::Instant::now() + PING_INTERVAL;
    let mut nonce = 0u64;
    loop {
        let wake = ping.map_or(next_ping, |(_, due)| due);
        tokio::select! {
            m = rx.recv() => match m {
                Some(Ok(Message::DialBack { token, client })) => {
                    tokio::spawn(accept(ep.clone(), host.clone(), local.ip(), relay_addr, token, client));
                }
                Some(Ok(Message::Ping(n))) => {
                    if let Err(e) = wr.write_all(&Message::Pong(n).encode()).await {
                        return e.into();
                    }
                }
                Some(Ok(Message::Pong(n))) if ping.is_some_and(|(p, _)| p == n) => {
                    ping = None;
                    next_ping = tokio::time::Instant::now() + PING_INTERVAL;
                }
                Some(Ok(Message::Pong(_))) => {}
                Some(Ok(other)) => return unexpected(other),
                Some(Err(e)) => return e.into(),
                None => return LinkError::Unexpected("nothing (the reader stopped)".into()),
            },
            _ = tokio::time::sleep_until(wake) => {
                if ping.is_some() {
                    return LinkError::Silent;
                }
                nonce += 1;
                if let Err(e) = wr.write_all(&Message::Ping(nonce).encode()).await {
                    return e.into();
                }
                ping = Some((nonce, tokio::time::Instant::now() + host.config.io_timeout));
            }
            _ = net.changed() => {
                // Gone, or no longer the best: a control connection left on cellular after
                // Wi-Fi came back would wake that radio at every ping and dial-back.
                let best = host.local_ips_for(relay_addr)[0];
                if best.is_some_and(|ip| ip != local.ip()) {
                    return LinkError::Moved;
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answers a dial-back: connects to the relay with its token and serves what arrives as an
/// incoming subflow from `client`.
async fn accept(ep: Weak<EndpointInner>, host: Arc<Host>, local: IpAddr, relay: SocketAddr, token: wire::Token, client: SocketAddr) {
    let mut request = wire::header(wire::KIND_ACCEPT).to_vec();
    request.extend_from_slice(&Message::Accept { token }.encode());
    let local = host.local_ips().contains(&local).then_some(local).or(host.local_ips_for(relay)[0]);
    let accepted = async {
        let mut stream = host.dial_tcp_from(local, relay, &request, false, true).await?;
        match within(host.config.io_timeout, wire::read_message(&mut stream)).await? {
            Message::Accepted { listener, client } => {
                tracing::debug!(%relay, observed = %listener, %client, "accepted a client through the relay");
                Ok((stream, Route::Relayed { ours: listener, peers: client }))
            }
            other => Err(unexpected(other)),
        }
    };
    match accepted.await {
        Ok((stream, route)) => {
            if let Some(inner) = ep.upgrade() {
                inner.take_incoming(stream, client, route);
            }
        }
        Err(e) => tracing::info!(%relay, %client, error = %e, "answering a dial-back failed"),
    }
}
