//! Keeping an endpoint's addresses in step with a network watcher.
//!
//! The watcher says which interfaces exist; this task decides which addresses the
//! endpoint should use (see [`usable_ips`]) and calls
//! [`Endpoint::set_local_ips`] when they change, which retires subflows on vanished
//! addresses, re-dials, moves listeners and re-publishes names. Reading the watch
//! channel means a burst of changes costs one update for the latest state, not one per
//! event.
//!
//! When no usable address is left the endpoint keeps its last ones: an empty list would
//! mean "any address" to `set_local_ips` and publish loopback to peers. Flows ride the
//! outage out on their own timers; when the network returns the addresses are applied
//! even if they are the same as before, so names are re-published and re-dialers woken.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Weak;

use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::endpoint::{Endpoint, EndpointInner};
use crate::watch::{usable_ips, AddrDiff, Interface, NetworkState};

/// Makes an endpoint follow a network watcher; stops when dropped, when
/// [`stop`](NetworkFollower::stop) is called, when the watcher ends, or when the endpoint
/// is dropped. Made by [`Endpoint::follow_network`] and [`Endpoint::watch_network`].
#[derive(Debug)]
pub struct NetworkFollower {
    task: AbortHandle,
}

impl NetworkFollower {
    pub(super) fn spawn(ep: Weak<EndpointInner>, network: watch::Receiver<NetworkState>) -> NetworkFollower {
        NetworkFollower { task: tokio::spawn(follow(ep, network)).abort_handle() }
    }

    /// Stops following; the endpoint keeps the addresses it has.
    pub fn stop(self) {}

    /// Whether the follower has ended (its watcher or its endpoint is gone).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for NetworkFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(ep: Weak<EndpointInner>, mut network: watch::Receiver<NetworkState>) {
    let mut offline = false;
    loop {
        let state = network.borrow_and_update().clone();
        let Some(endpoint) = Endpoint::upgrade(&ep) else {
            return;
        };
        offline = apply(&endpoint, state, offline).await;
        drop(endpoint);
        if network.changed().await.is_err() {
            tracing::debug!("the network watcher ended; no longer following it");
            return;
        }
    }
}

/// What to do with a new network state.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Hand these addresses to the endpoint.
    Apply(Vec<IpAddr>),
    /// Nothing usable: keep the current addresses and remember being offline.
    Offline,
    /// Nothing to do.
    Unchanged,
}

fn decide(current: &[IpAddr], wanted: Vec<IpAddr>, offline: bool) -> Decision {
    if wanted.is_empty() {
        Decision::Offline
    } else if offline || current != wanted.as_slice() {
        Decision::Apply(wanted)
    } else {
        Decision::Unchanged
    }
}

/// Applies one state; returns whether the endpoint is now offline.
async fn apply(endpoint: &Endpoint, state: NetworkState, offline: bool) -> bool {
    let wanted = usable_ips(&state.interfaces, endpoint.uses_loopback());
    let current = endpoint.record_interfaces(state.interfaces.clone());
    match decide(&current, wanted, offline) {
        Decision::Unchanged => {
            tracing::debug!(interfaces = %summary(&state.interfaces), "network changed; addresses did not");
            offline
        }
        Decision::Offline => {
            if !offline {
                tracing::info!(
                    interfaces = %summary(&state.interfaces),
                    keeping = ?current,
                    "no usable address; keeping the current ones until the network returns"
                );
            }
            true
        }
        Decision::Apply(ips) => {
            let diff = AddrDiff::between(&current, &ips);
            let result = endpoint.set_local_ips(ips.clone()).await;
            let took = state.observed_at.elapsed();
            tracing::info!(
                interfaces = %summary(&state.interfaces),
                ?ips,
                added = ?diff.added,
                removed = ?diff.removed,
                took_us = took.as_micros() as u64,
                "network change applied"
            );
            if let Err(e) = result {
                tracing::warn!(error = %e, "applying the network change partly failed");
            }
            false
        }
    }
}

/// `wifi0 (Wifi, up) [192.0.2.1], cell0 (Cellular, metered, down) []`
fn summary(interfaces: &[Interface]) -> String {
    let mut out = String::new();
    for (n, i) in interfaces.iter().enumerate() {
        let sep = if n == 0 { "" } else { ", " };
        let metered = if i.metered { ", metered" } else { "" };
        let up = if i.up { "up" } else { "down" };
        let _ = write!(out, "{sep}{} ({:?}{metered}, {up}) {:?}", i.name, i.kind, i.addrs);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::InterfaceKind;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn decisions() {
        let a = ips(&["192.0.2.1"]);
        let b = ips(&["192.0.2.2", "192.0.2.1"]);
        assert_eq!(decide(&a, a.clone(), false), Decision::Unchanged);
        assert_eq!(decide(&a, b.clone(), false), Decision::Apply(b.clone()));
        assert_eq!(
            decide(&b, ips(&["192.0.2.1", "192.0.2.2"]), false),
            Decision::Apply(ips(&["192.0.2.1", "192.0.2.2"])),
            "order counts"
        );
        assert_eq!(decide(&a, Vec::new(), false), Decision::Offline);
        assert_eq!(decide(&[], Vec::new(), false), Decision::Offline);
        assert_eq!(decide(&a, a.clone(), true), Decision::Apply(a.clone()), "back from an outage: apply even if equal");
        assert_eq!(decide(&[], a.clone(), false), Decision::Apply(a));
    }

    #[test]
    fn summaries_name_kind_state_and_addresses() {
        let list = vec![
            Interface {
                name: "wifi0".into(),
                index: 2,
                kind: InterfaceKind::Wifi,
                metered: false,
                up: true,
                addrs: ips(&["192.0.2.1"]),
            },
            Interface {
                name: "cell0".into(),
                index: 3,
                kind: InterfaceKind::Cellular,
                metered: true,
                up: false,
                addrs: vec![],
            },
        ];
        assert_eq!(summary(&list), "wifi0 (Wifi, up) [192.0.2.1], cell0 (Cellular, metered, down) []");
    }
}
