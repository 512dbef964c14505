//! What a flow tells the application about its paths: events, why paths end, and each
//! live path's measurements.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::proto::{FlowError, FrameError, ProtocolViolation};

/// A change in a flow's life the application may watch (`Flow::events`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FlowEvent {
    /// A subflow (a TCP connection on one path) joined the flow.
    PathAdded {
        /// Our end of it.
        local: SocketAddr,
        /// The peer's end of it (the relay's address, if relayed).
        remote: SocketAddr,
        /// It runs through a relay, spliced (the flow's encryption is end to end).
        relayed: bool,
        /// The kind of our interface it leaves from (Wi-Fi, cellular ...), as the followed
        /// network watcher reports it; None when no known interface holds `local`.
        interface: Option<crate::watch::InterfaceKind>,
    },
    /// A subflow died; its unacknowledged data will be re-sent on another.
    PathLost {
        /// Our end of it.
        local: SocketAddr,
        /// The peer's end of it.
        remote: SocketAddr,
        /// What ended it.
        reason: PathLossReason,
        /// The kind of our interface it left from, as when it was added (the interface
        /// itself may be gone by now).
        interface: Option<crate::watch::InterfaceKind>,
        /// Modelled radio energy the path used, in joules (None: interface kind unknown).
        energy_joules: Option<f64>,
    },
    /// Data flows again after a time with no usable path.
    Resumed {
        /// How long the flow had no path.
        outage: Duration,
    },
    /// The peer announced new addresses (it moved).
    PeerMoved {
        /// Where it can be reached now.
        addrs: Vec<SocketAddr>,
    },
    /// This endpoint's addresses changed; subflows on vanished addresses were retired.
    Moved {
        /// The addresses now in use.
        addrs: Vec<std::net::IpAddr>,
    },
    /// Hole punching found no direct path to the peer (its NAT or ours maps each
    /// destination to another port, or a firewall drops the SYNs): the flow stays on its
    /// relayed paths. It tries again when the network changes.
    StaysRelayed {
        /// Attempts made.
        attempts: u32,
    },
    /// The flow ended: `None` after both sides finished cleanly, else why it failed.
    Closed {
        /// The error, if the flow failed.
        error: Option<FlowError>,
        /// Modelled radio energy of all the flow's paths, in joules (None: no path ran
        /// over an interface of known kind).
        energy_joules: Option<f64>,
    },
}

/// Why a path (one subflow: a TCP connection between an address of ours and one of the
/// peer's) left the flow. Losing a path loses no data: what it carried unacknowledged goes
/// out on the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathLossReason {
    /// The peer closed the connection between records.
    #[error("the peer closed the subflow")]
    PeerClosed,
    /// The peer's side of the connection ended inside a record.
    #[error("the peer closed the subflow inside a record")]
    PeerClosedMidRecord,
    /// Nothing came back within the dead-path timeout, or the peer reported the path lost.
    #[error("the peer reported it lost, or no reply within the dead-path timeout")]
    Dead,
    /// The local address the path used went away (a network change).
    #[error("local address gone")]
    LocalAddressGone,
    /// The peer's name record no longer lists the address the path went to.
    #[error("the peer's name record no longer lists this address")]
    PeerLeftAddress,
    /// Another path runs between the same addresses, or the path policy leaves this one
    /// nothing to do.
    #[error("another subflow runs the same path, or a better one carries the flow")]
    Redundant,
    /// The flow is over and the path was closed after flushing.
    #[error("the flow is over")]
    FlowOver,
    /// Reading or writing the socket failed.
    #[error("{operation} failed: {kind}")]
    Io {
        /// Which side of the socket failed.
        operation: IoOperation,
        /// How it failed.
        kind: io::ErrorKind,
    },
    /// A record failed authentication: forged, corrupted, or sealed for another flow.
    #[error("a record failed authentication (forged, corrupted or for another flow)")]
    Forged,
    /// An authentic record held frames that do not decode: the peer is broken.
    #[error("malformed frame: {0}")]
    Malformed(FrameError),
    /// The peer sent a frame the protocol does not allow.
    #[error("protocol violation: {0}")]
    Violation(ProtocolViolation),
    /// The peer refused our JOIN with this code (1: it does not know the flow, 2: the JOIN
    /// was not authenticated, 3: its sequence number was used before).
    #[error("join refused (code {code})")]
    JoinRefused {
        /// The refusal's code.
        code: u8,
    },
    /// Whoever answered our JOIN could not prove it holds the flow's keys: not our peer.
    #[error("the join's answer was not authenticated (not our peer)")]
    NotOurPeer,
    /// A record could not be sealed (a bug: records are sized to fit).
    #[error("a record could not be sealed")]
    SealFailed,
}

/// The side of a socket that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoOperation {
    /// Reading.
    Read,
    /// Writing.
    Write,
}

impl std::fmt::Display for IoOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoOperation::Read => "read",
            IoOperation::Write => "write",
        })
    }
}

impl PathLossReason {
    pub(crate) fn io(operation: IoOperation, e: &io::Error) -> PathLossReason {
        PathLossReason::Io { operation, kind: e.kind() }
    }
}

/// A stream of [`FlowEvent`]s. Events that happened before it was created are not in it;
/// a receiver that falls more than 256 events behind skips the oldest.
#[derive(Debug)]
pub struct FlowEvents {
    pub(crate) rx: broadcast::Receiver<FlowEvent>,
}

/// Events a flow keeps for each receiver that has not taken them; beyond that the oldest
/// are dropped (and the receiver told how many, by [`FlowEvents::next_or_missed`]).
pub const EVENT_BACKLOG: usize = 256;

/// A sender of events and a receiver for it, as a flow makes them (for tests of code that
/// consumes events).
pub fn event_channel() -> (broadcast::Sender<FlowEvent>, FlowEvents) {
    let (tx, rx) = broadcast::channel(EVENT_BACKLOG);
    (tx, FlowEvents { rx })
}

impl FlowEvents {
    /// An event that already happened, without waiting.
    pub fn try_next(&mut self) -> Option<FlowEvent> {
        loop {
            match self.rx.try_recv() {
                Ok(ev) => return Some(ev),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The next event, or `Err(n)` when this receiver fell so far behind that the `n`
    /// oldest events it had not seen were dropped, or `None` once the flow is gone and
    /// every event was seen. The last event, `Closed`, is never dropped.
    pub async fn next_or_missed(&mut self) -> Option<Result<FlowEvent, u64>> {
        match self.rx.recv().await {
            Ok(ev) => Some(Ok(ev)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Err(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event, or `None` once the flow is gone and every event was seen.
    pub async fn next(&mut self) -> Option<FlowEvent> {
        loop {
            match self.rx.recv().await {
                Ok(ev) => return Some(ev),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "flow event receiver lagged");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// One live subflow of a flow, as [`Flow::paths`](crate::Flow::paths) reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// Our end of it.
    pub local: std::net::SocketAddr,
    /// The peer's end of it (the relay's address, if relayed).
    pub remote: std::net::SocketAddr,
    /// It runs through a relay, spliced (the flow's encryption is end to end).
    pub relayed: bool,
    /// Marked a standby by the connecting end (see [`PathPolicy`](super::PathPolicy)).
    pub standby: bool,
    /// What the path does for the flow now: joining, active, standby or stalled.
    pub state: crate::PathState,
    /// Smoothed round-trip time, once measured (PING/PONG).
    pub srtt: Option<std::time::Duration>,
    /// Bytes per second the peer acknowledged from this path, once measured under load.
    pub delivery_rate: Option<u64>,
    /// Bytes sent on this path and not yet acknowledged.
    pub in_flight: u64,
    /// Payload bytes the peer acknowledged while they were in flight on this path.
    pub bytes_delivered: u64,
    /// Frame bytes sent on this path (all frame types).
    pub bytes_sent: u64,
    /// Frame bytes received on this path (all frame types).
    pub bytes_received: u64,
    /// Modelled marginal energy of this path's radio so far, in joules (see
    /// [`crate::energy`]); None when its interface's kind is unknown (no network watcher
    /// followed, or an interface of another kind).
    pub energy_joules: Option<f64>,
    /// The kind of the local interface this path leaves from, as the followed network
    /// watcher reported it when the path came up; None when no known interface holds its
    /// local address (no watcher followed, or the address is not an interface's).
    pub interface: Option<crate::watch::InterfaceKind>,
}
