//! Going direct: TCP hole punching on relayed flows.
//!
//! A relay splices two TCP connections and sees where each came from: the address and
//! port a NAT gave it. When both NATs map a local port to the same public port whatever
//! the destination (endpoint-independent mapping, what a port-preserving masquerade and
//! most home routers do), each end can reach the other's *public* port from its own
//! *local* port: both dial at once from the local port of their relayed connection
//! (bound again with `SO_REUSEADDR`/`SO_REUSEPORT`) to the port the relay saw of the
//! other, the SYNs cross, each NAT takes the other's SYN as the answer to its own, and
//! the kernels complete a TCP simultaneous open.
//!
//! The connecting end decides: it sends PUNCH (a frame of the flow, so it travels
//! through the relay, sealed) and dials half a relayed round trip later, when the PUNCH
//! has reached the other end, which dials back at once. Early SYNs are refused by the
//! other NAT (no mapping yet), so both keep dialing for [`PUNCH_WINDOW`]. What connects
//! is joined like any subflow (a JOIN, checked by the flow's keys); the path policy then
//! makes the relayed path a standby or retires it. Where the NATs do not allow it (a
//! mapping per destination: symmetric NAT), nothing connects; the flow stays relayed,
//! tries again a few times ([`PunchPlan`]) and reports [`FlowEvent::DirectFailed`]
//! (crate::FlowEvent::DirectFailed) when it gives up. A peer that publishes no address
//! (relay-only: it does not want to be found) is not punched to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::{Conn, Route};
use super::host::Host;
use crate::proto::SubflowId;

/// How long both ends keep dialing each other in one attempt.
pub(crate) const PUNCH_WINDOW: Duration = Duration::from_secs(3);
/// Pause between dials of one attempt (a refused SYN comes back at once).
const REDIAL: Duration = Duration::from_millis(50);
/// Bound on one dial (a SYN the other NAT drops gets no answer).
const DIAL_LIMIT: Duration = Duration::from_millis(500);
/// Waits before the attempts after the first.
const RETRIES: [Duration; 2] = [Duration::from_secs(5), Duration::from_secs(30)];

/// When a relayed flow tries to go direct: at once, then after each of [`RETRIES`]; then
/// it gives up, until the network changes (which may change the NATs too).
#[derive(Debug, Default)]
pub(crate) struct PunchPlan {
    failures: usize,
    running: bool,
    next_at: Option<Instant>,
}

impl PunchPlan {
    /// Whether to start an attempt now (and marks it started).
    pub(crate) fn start(&mut self, now: Instant) -> bool {
        let due = !self.running && self.failures <= RETRIES.len() && self.next_at.is_none_or(|at| now >= at);
        if due {
            self.running = true;
        }
        due
    }

    /// The attempt ended; true if that was the last one.
    pub(crate) fn ended(&mut self, succeeded: bool, now: Instant) -> bool {
        self.running = false;
        if succeeded {
            *self = PunchPlan::default();
            return false;
        }
        self.failures += 1;
        self.next_at = RETRIES.get(self.failures - 1).map(|wait| now + *wait);
        self.next_at.is_none()
    }

    /// When the next attempt is due, if one is.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.next_at.filter(|_| !self.running)
    }

    /// The network changed: a fresh start.
    pub(crate) fn reset(&mut self) {
        let running = self.running;
        *self = PunchPlan { running, ..PunchPlan::default() };
    }

    pub(crate) fn attempts(&self) -> usize {
        self.failures
    }
}

/// A TCP connection between `local` (bound again beside the relayed connection there) and
/// `to`, opened within `window`: dialed again and again (a simultaneous open when the other
/// end dials at the same time), and accepted if `to` dials first. Listening on the port too
/// matters where SYNs cross faster than both ends can dial (and on loopback): a SYN that
/// finds no socket dialing it back is then still taken. Our own dials open our NAT (and
/// firewall) for the other end's SYNs.
async fn open_between(host: &Host, local: SocketAddr, to: SocketAddr, window: Duration) -> Option<tokio::net::TcpStream> {
    let accept = async {
        let listener = match listen_beside(local) {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(%local, error = %e, "cannot listen beside the relayed connection; dialing only");
                return std::future::pending().await;
            }
        };
        loop {
            match listener.accept().await {
                Ok((stream, from)) if from == to => return stream,
                Ok((_, from)) => tracing::debug!(%local, %from, "a stranger dialed the punching port; closed"),
                Err(e) => tracing::trace!(%local, error = %e, "accepting on the punching port failed"),
            }
        }
    };
    let dial = async {
        let mut tries = 0u32;
        loop {
            tries += 1;
            let dial = host.dial_tcp_between(Some(local), to, &[], false, true);
            match tokio::time::timeout(DIAL_LIMIT, dial).await {
                Ok(Ok(stream)) => {
                    tracing::debug!(%local, %to, tries, "punched through");
                    return stream;
                }
                Ok(Err(e)) => tracing::trace!(%local, %to, error = %e, "a punching dial failed"),
                Err(_) => tracing::trace!(%local, %to, "a punching dial got no answer"),
            }
            tokio::time::sleep(REDIAL).await;
        }
    };
    let opened = tokio::time::timeout(window, async {
        tokio::select! {
            s = accept => s,
            s = dial => s,
        }
    })
    .await;
    if opened.is_err() {
        tracing::debug!(%local, %to, "no direct path opened");
    }
    opened.ok()
}

/// A listening socket on `local`, beside the connection already there.
fn listen_beside(local: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let sock = if local.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    #[cfg(unix)]
    sock.set_reuseport(true)?;
    sock.bind(local)?;
    sock.listen(4)
}

/// Client: one attempt to open a direct path beside relayed subflow `id` (whose local
/// end is `local`, seen by the relay as `ours`, with the peer's seen as `peers`).
pub(crate) async fn punch(conn: Arc<Conn>, id: SubflowId, local: SocketAddr, ours: SocketAddr, peers: SocketAddr) {
    let Some(host) = conn.host.upgrade() else { return };
    let started = Instant::now();
    let half_rtt = {
        let mut inner = conn.lock();
        inner.proto.punch(id, ours, peers);
        let srtt = inner.proto.subflow_stats(id).and_then(|s| s.srtt);
        conn.settle(&mut inner);
        srtt.unwrap_or_default() / 2
    };
    tokio::time::sleep(half_rtt).await;
    let joined = match open_between(&host, local, peers, PUNCH_WINDOW).await {
        Some(mut stream) => {
            let (seq, join, _) = super::dial::next_join(&conn);
            match tokio::io::AsyncWriteExt::write_all(&mut stream, &join).await {
                Ok(()) => {
                    super::dial::attach_joined(&conn, stream, peers, seq, Route::Direct);
                    true
                }
                Err(e) => {
                    tracing::debug!(%peers, error = %e, "the punched connection failed at once");
                    false
                }
            }
        }
        None => false,
    };
    let gave_up = conn.punch_ended(joined, Instant::now());
    if joined {
        tracing::info!(flow = %conn.keys.flow_id, %peers, after = ?started.elapsed(), "went direct: a punched path joined the relayed flow");
    } else if gave_up {
        tracing::info!(flow = %conn.keys.flow_id, %peers, "hole punching failed; the flow stays relayed");
    }
}

/// Listener: answers a PUNCH by dialing `to` from `local` (the local end of the relayed
/// subflow the relay saw as the address the PUNCH names); what connects is served like an
/// incoming subflow (the client's JOIN follows).
pub(crate) async fn punch_back(conn: Arc<Conn>, local: SocketAddr, to: SocketAddr) {
    let Some(host) = conn.host.upgrade() else { return };
    if let Some(stream) = open_between(&host, local, to, PUNCH_WINDOW).await {
        conn.hand_to_owner(stream, to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_back_off_then_give_up_until_the_network_changes() {
        let t0 = Instant::now();
        let mut plan = PunchPlan::default();
        assert!(plan.start(t0));
        assert!(!plan.start(t0), "one attempt at a time");
        assert!(!plan.ended(false, t0));
        assert_eq!(plan.next_at(), Some(t0 + RETRIES[0]));
        assert!(!plan.start(t0 + Duration::from_secs(1)));
        assert!(plan.start(t0 + RETRIES[0]));
        assert!(!plan.ended(false, t0 + RETRIES[0]));
        let t1 = t0 + RETRIES[0] + RETRIES[1];
        assert!(plan.start(t1));
        assert!(plan.ended(false, t1), "the third failure is the last");
        assert_eq!(plan.next_at(), None);
        assert!(!plan.start(t1 + Duration::from_secs(3600)));
        assert_eq!(plan.attempts(), 3);
        plan.reset();
        assert!(plan.start(t1), "a new network, a new chance");
        assert!(!plan.ended(true, t1));
        assert_eq!(plan.attempts(), 0);
    }
}
