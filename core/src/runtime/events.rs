//! What a flow tells the application about its paths.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::broadcast;

/// A change in a flow's life the application may watch (`Flow::events`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FlowEvent {
    /// A subflow (a TCP connection on one path) joined the flow.
    PathAdded {
        /// Our end of it.
        local: SocketAddr,
        /// The peer's end of it.
        remote: SocketAddr,
    },
    /// A subflow died; its unacknowledged data will be re-sent on another.
    PathLost {
        /// Our end of it.
        local: SocketAddr,
        /// The peer's end of it.
        remote: SocketAddr,
        /// What ended it.
        reason: String,
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
    /// The flow ended: `None` after both sides finished cleanly, else why it failed.
    Closed {
        /// The error, if the flow failed.
        error: Option<String>,
        /// Modelled radio energy of all the flow's paths, in joules (None: no path ran
        /// over an interface of known kind).
        energy_joules: Option<f64>,
    },
}

/// A stream of [`FlowEvent`]s. Events that happened before it was created are not in it;
/// a receiver that falls more than 256 events behind skips the oldest.
#[derive(Debug)]
pub struct FlowEvents {
    pub(crate) rx: broadcast::Receiver<FlowEvent>,
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
