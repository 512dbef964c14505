//! The connecting side of a relayed path: asking a relay the peer listed to splice us to it.
//!
//! The relay's answer comes before anything of the peer's, so the flow's opening (a JOIN,
//! or the first handshake message) is sent right behind the request and costs no round
//! trip of its own; once the relay said CONNECTED the socket is an ordinary subflow to the
//! peer. See [`crate::relay`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

use super::conn::Route;
use super::host::Host;
use super::ConnectFailure;
use crate::relay::wire::{self, ListenerKey, Message};
use crate::relay::RelayUrl;

/// Dials `relay` from `local` (None: the system chooses), asks it for the listener
/// `target` and sends `early` behind the request. Bounded by the endpoint's `io_timeout`
/// for the connection and again for the relay's answer (which waits on the listener).
pub(crate) async fn dial_via_relay(
    host: &Host,
    local: Option<IpAddr>,
    relay: SocketAddr,
    target: &ListenerKey,
    early: &[u8],
) -> Result<(TcpStream, Route), ConnectFailure> {
    let mut request = wire::header(wire::KIND_DIAL).to_vec();
    request.extend_from_slice(&Message::Dial { target: *target }.encode());
    request.extend_from_slice(early);
    let mut stream = host
        .dial_tcp_from(local, relay, &request, false, true)
        .await
        .map_err(|e| ConnectFailure::Connect { addr: relay, kind: e.kind() })?;
    let protocol = |detail: String| ConnectFailure::Handshake { addr: relay, detail: format!("the relay {detail}") };
    match tokio::time::timeout(host.config.io_timeout, wire::read_message(&mut stream)).await {
        Err(_) => Err(ConnectFailure::TimedOut),
        Ok(Ok(Message::Connected { client, listener })) => {
            tracing::debug!(%relay, observed = %client, peer = %listener, "spliced to the peer through a relay");
            Ok((stream, Route::Relayed { ours: client, peers: listener }))
        }
        Ok(Ok(Message::Refused { why, reason })) => {
            tracing::debug!(%relay, %why, reason, "the relay refused to splice");
            Err(ConnectFailure::Relay { relay, why })
        }
        Ok(Ok(other)) => Err(protocol(format!("answered a dial with {other:?}"))),
        Ok(Err(wire::ReadError::Io(e))) => Err(ConnectFailure::Connect { addr: relay, kind: e.kind() }),
        Ok(Err(e)) => Err(protocol(format!("sent what the relay protocol does not allow: {e}"))),
    }
}

/// The addresses of the relays a peer listed that we may dial: each parsed, resolved
/// (within `limit`), and checked like the peer's own addresses ([`Host::dialable`]).
/// Unusable entries are skipped (and logged): a peer's word is not trusted.
pub(crate) async fn resolve(host: &Host, relays: &[String], limit: Duration) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for relay in relays.iter().take(crate::name::MAX_RELAYS) {
        let url: RelayUrl = match relay.parse() {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(%e, "a listed relay is not a relay address; skipped");
                continue;
            }
        };
        let resolved = tokio::time::timeout(limit, tokio::net::lookup_host(url.host_port())).await;
        match resolved {
            Ok(Ok(addrs)) => out.extend(addrs.take(2)),
            Ok(Err(e)) => tracing::debug!(relay = %url, error = %e, "a listed relay does not resolve"),
            Err(_) => tracing::debug!(relay = %url, "resolving a listed relay timed out"),
        }
    }
    host.dialable(&out)
}
