//! The network watcher: tells an endpoint, as soon as possible, which local addresses it
//! has.
//!
//! Why it exists: a flow survives a move only if the endpoint learns of the move. The
//! sooner it does, the sooner subflows on a vanished address are retired, new ones are
//! dialled from the new address and the name record points at it. Waiting for TCP to
//! notice a dead path takes seconds to minutes; the operating system knows at once.
//!
//! Three sources publish the same thing, a [`NetworkState`] on a
//! [`tokio::sync::watch`] channel, so a consumer always sees the latest state and never
//! a backlog (intermediate states may be skipped; the last one never is):
//! - [`netlink`] (Linux): the kernel's address and link events, applied incrementally as
//!   they arrive. No polling, no debounce.
//! - [`poll`]: a portable fallback that lists interfaces every few seconds and publishes
//!   only when the list changed.
//! - [`PushedNetwork`]: the entry point for a mobile platform (Android's
//!   `ConnectivityManager`, iOS's `NWPathMonitor`), which knows more than any name-based
//!   guess (the real link type, whether it is metered) and pushes snapshots in.
//!
//! [`Endpoint::follow_network`](crate::Endpoint::follow_network) consumes any of them;
//! [`Endpoint::watch_network`](crate::Endpoint::watch_network) starts the best one for
//! this system and follows it.

mod interface;
mod nat64;
#[cfg(target_os = "linux")]
#[doc(hidden)]
pub mod netlink;
pub mod poll;
mod push;
mod usable;

use std::io;
use std::time::Instant;

use tokio::sync::watch;

pub use interface::{Classifier, Interface, InterfaceKind};
pub use nat64::{discover_nat64_prefix, Nat64Prefix, Nat64PrefixError};
pub use push::PushedNetwork;
pub use usable::{is_usable_ip, usable_ips, AddrDiff};

/// The interfaces of the host at one moment.
#[derive(Clone, Debug)]
pub struct NetworkState {
    /// Every known interface (also those that are down or without addresses), in the
    /// order the source reported them.
    pub interfaces: Vec<Interface>,
    /// When the change that produced this state was observed (for netlink: when the
    /// kernel's event was read). Consumers measure their reaction time from it.
    pub observed_at: Instant,
}

impl NetworkState {
    /// A state observed now.
    pub fn new(interfaces: Vec<Interface>) -> NetworkState {
        NetworkState { interfaces, observed_at: Instant::now() }
    }
}

/// Why a watcher could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// A netlink socket operation failed or the kernel's answer made no sense.
    #[error("netlink: {what}: {source}")]
    Netlink {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The interfaces could not be listed.
    #[error("listing interfaces: {0}")]
    List(#[source] io::Error),
}

/// At most this many interfaces are tracked; more are ignored (with a warning), so kernel
/// or platform input cannot grow the state without bound.
pub(crate) const MAX_INTERFACES: usize = 256;
/// At most this many addresses are tracked per interface.
pub(crate) const MAX_ADDRS: usize = 64;

/// Cuts a snapshot down to [`MAX_INTERFACES`] interfaces of [`MAX_ADDRS`] addresses.
pub(crate) fn bound(interfaces: &mut Vec<Interface>) {
    if interfaces.len() > MAX_INTERFACES {
        tracing::warn!(count = interfaces.len(), "too many interfaces; ignoring the excess");
        interfaces.truncate(MAX_INTERFACES);
    }
    for i in interfaces.iter_mut() {
        if i.addrs.len() > MAX_ADDRS {
            tracing::warn!(name = %i.name, count = i.addrs.len(), "too many addresses; ignoring the excess");
            i.addrs.truncate(MAX_ADDRS);
        }
    }
}

/// Publishes `interfaces` on `tx` if they differ from the current ones; returns whether
/// it did.
pub(crate) fn publish(tx: &watch::Sender<NetworkState>, interfaces: Vec<Interface>, observed_at: Instant) -> bool {
    tx.send_if_modified(|state| {
        if state.interfaces == interfaces {
            return false;
        }
        *state = NetworkState { interfaces, observed_at };
        true
    })
}

/// Starts the best watcher for this system: [`netlink`] on Linux, [`poll`] every
/// [`poll::DEFAULT_INTERVAL`] elsewhere. The returned receiver already holds the current
/// state; the watcher runs until every receiver is dropped. Needs a tokio runtime.
pub async fn system(classifier: Classifier) -> Result<watch::Receiver<NetworkState>, WatchError> {
    #[cfg(target_os = "linux")]
    {
        netlink::start(classifier).await
    }
    #[cfg(not(target_os = "linux"))]
    {
        poll::start(classifier, poll::DEFAULT_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, addrs: usize) -> Interface {
        Interface {
            name: name.into(),
            index: 1,
            kind: InterfaceKind::Other,
            metered: false,
            up: true,
            addrs: (0..addrs).map(|i| std::net::IpAddr::from([192, 0, 2, i as u8])).collect(),
            nat64: None,
        }
    }

    #[test]
    fn publish_only_on_change() {
        let (tx, mut rx) = watch::channel(NetworkState::new(vec![iface("a", 1)]));
        rx.borrow_and_update();
        assert!(!publish(&tx, vec![iface("a", 1)], Instant::now()));
        assert!(!rx.has_changed().unwrap());
        let at = Instant::now();
        assert!(publish(&tx, vec![iface("a", 2)], at));
        assert!(rx.has_changed().unwrap());
        let state = rx.borrow_and_update();
        assert_eq!(state.interfaces, vec![iface("a", 2)]);
        assert_eq!(state.observed_at, at);
    }

    #[test]
    fn snapshots_are_bounded() {
        let mut list: Vec<Interface> = (0..MAX_INTERFACES + 10).map(|i| iface(&format!("x{i}"), 1)).collect();
        list[0].addrs = (0..MAX_ADDRS + 5).map(|i| std::net::IpAddr::from([10, 0, (i / 256) as u8, i as u8])).collect();
        bound(&mut list);
        assert_eq!(list.len(), MAX_INTERFACES);
        assert_eq!(list[0].addrs.len(), MAX_ADDRS);
    }
}
