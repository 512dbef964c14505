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
    /// Applies `network`'s current state before returning (a listener or a connect right
    /// after uses the interfaces' addresses; names are published in the background), then
    /// follows it in the background. Needs a tokio runtime.
    pub(super) fn start(endpoint: &Endpoint, mut network: watch::Receiver<NetworkState>) -> NetworkFollower {
        let offline = apply_current(endpoint, &mut network, false);
        NetworkFollower { task: tokio::spawn(follow_changes(endpoint.downgrade(), network, offline)).abort_handle() }
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

/// Applies every change of `network` from the next one on, until the watcher or the
/// endpoint is gone.
async fn follow_changes(ep: Weak<EndpointInner>, mut network: watch::Receiver<NetworkState>, mut offline: bool) {
    while network.changed().await.is_ok() {
        let Some(endpoint) = Endpoint::upgrade(&ep) else { return };
        offline = apply_current(&endpoint, &mut network, offline);
    }
    tracing::debug!("the network watcher ended; no longer following it");
}

/// Applies the latest state of `network`; returns whether the endpoint is now offline.
fn apply_current(endpoint: &Endpoint, network: &mut watch::Receiver<NetworkState>, offline: bool) -> bool {
    let state = network.borrow_and_update().clone();
    apply(endpoint, state, offline)
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
fn apply(endpoint: &Endpoint, state: NetworkState, offline: bool) -> bool {
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
            // The local part now; the publication in the background, so that a name
            // service that is slow or unreachable from the changing network (a request
            // stuck on a source address that just vanished waits for its whole timeout)
            // does not hold back the next change. Publications carry increasing sequence
            // numbers, so a late one for an older state cannot override a newer one.
            let result = endpoint.apply_local_ips(ips.clone());
            if let Ok(names) = &result {
                let (endpoint, names) = (endpoint.clone(), names.clone());
                tokio::spawn(async move {
                    if let Err(e) = endpoint.publish_names(names).await {
                        tracing::warn!(error = %e, "publishing after a network change failed; retrying in the background");
                    }
                });
            }
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

    /// Keeps the last record registered, for waiting on publications.
    #[derive(Debug)]
    struct Recording {
        store: crate::name::MemoryNameService,
        last: watch::Sender<Option<crate::name::NameRecord>>,
    }

    impl crate::name::NameService for Recording {
        fn register<'a>(&'a self, record: &'a crate::name::SignedRecord) -> crate::name::NameFuture<'a, ()> {
            Box::pin(async move {
                self.store.register(record).await?;
                self.last.send_replace(Some(record.record.clone()));
                Ok(())
            })
        }

        fn lookup<'a>(&'a self, name: &'a str) -> crate::name::NameFuture<'a, crate::name::SignedRecord> {
            self.store.lookup(name)
        }
    }

    async fn published_after(
        rx: &mut watch::Receiver<Option<crate::name::NameRecord>>,
        seq: u64,
    ) -> crate::name::NameRecord {
        let wait = async {
            loop {
                if let Some(r) = rx.borrow_and_update().as_ref().filter(|r| r.seq > seq) {
                    return r.clone();
                }
                rx.changed().await.unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), wait).await.expect("published in time")
    }

    fn lo_iface(name: &str, index: u32, kind: InterfaceKind, up: bool, addrs: &[&str]) -> Interface {
        Interface { name: name.into(), index, kind, metered: kind == InterfaceKind::Cellular, up, addrs: ips(addrs), nat64: None }
    }

    #[tokio::test]
    async fn an_endpoint_follows_pushed_snapshots() {
        use crate::watch::PushedNetwork;
        use crate::{EndpointConfig, Identity};
        use std::sync::Arc;

        let (last, mut published) = watch::channel(None);
        let names = Arc::new(Recording { store: Default::default(), last });
        let mut config = EndpointConfig::new(names);
        config.local_ips = ips(&["127.0.0.61"]);
        config.use_loopback = true; // the test's "Wi-Fi" lives on 127/8
        let ep = Endpoint::new(Identity::from_seed([61; 32]), config);
        let _listener = ep.listen("follow.test").await.unwrap();
        let first = published_after(&mut published, 0).await;
        let port = first.addrs[0].port();

        let wifi = lo_iface("wlan0", 3, InterfaceKind::Wifi, true, &["127.0.0.62"]);
        let cell = lo_iface("rmnet0", 2, InterfaceKind::Cellular, true, &["127.0.0.63"]);
        let net = PushedNetwork::new(vec![cell.clone(), wifi.clone()]);
        let follower = ep.follow_network(net.subscribe());
        let r = published_after(&mut published, first.seq).await;
        let want: Vec<std::net::SocketAddr> =
            ["127.0.0.62", "127.0.0.63"].iter().map(|a| std::net::SocketAddr::new(a.parse().unwrap(), port)).collect();
        assert_eq!(r.addrs, want, "Wi-Fi first, the old address gone, the port kept");
        assert_eq!(ep.interfaces(), vec![cell.clone(), wifi.clone()]);

        // Wi-Fi goes down: only cellular is left.
        let wifi_down = Interface { up: false, ..wifi.clone() };
        net.push(vec![cell.clone(), wifi_down.clone()]);
        let r = published_after(&mut published, r.seq).await;
        assert_eq!(r.addrs, want[1..]);

        // Nothing usable: the endpoint keeps what it had (no publication), and records
        // the interfaces. Then the same address comes back and is applied again, so the
        // name is re-published.
        let cell_down = Interface { up: false, ..cell.clone() };
        let offline = vec![cell_down, Interface { addrs: vec![], ..wifi }];
        net.push(offline.clone());
        // Wait (bounded) until the follower has seen it: the interfaces are recorded.
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while ep.interfaces() != offline {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the follower records the offline state");
        assert_eq!(ep.published_addrs(), want[1..], "kept while offline");
        assert_eq!(published.borrow().as_ref().map(|p| p.seq), Some(r.seq), "nothing published while offline");
        net.push(vec![cell.clone(), offline[1].clone()]);
        let back = published_after(&mut published, r.seq).await;
        assert_eq!(back.addrs, want[1..]);
        assert_eq!(ep.published_addrs(), want[1..]);

        follower.stop();
        net.push(vec![lo_iface("wlan0", 3, InterfaceKind::Wifi, true, &["127.0.0.64"])]);
        // A stopped follower changes nothing: an explicit move is the next publication.
        ep.set_local_ips(ips(&["127.0.0.65"])).await.unwrap();
        let r = published_after(&mut published, back.seq).await;
        assert_eq!(r.addrs, vec![std::net::SocketAddr::new("127.0.0.65".parse().unwrap(), port)]);
    }

    /// Holds the first registration it sees for `first_delay`, the others not at all, so
    /// a later publication overtakes an earlier one on its way to the store.
    #[derive(Debug)]
    struct Overtaking {
        store: crate::name::MemoryNameService,
        first_delay: std::time::Duration,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl crate::name::NameService for Overtaking {
        fn register<'a>(&'a self, record: &'a crate::name::SignedRecord) -> crate::name::NameFuture<'a, ()> {
            Box::pin(async move {
                if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    tokio::time::sleep(self.first_delay).await;
                }
                self.store.register(record).await
            })
        }

        fn lookup<'a>(&'a self, name: &'a str) -> crate::name::NameFuture<'a, crate::name::SignedRecord> {
            self.store.lookup(name)
        }
    }

    #[tokio::test]
    async fn following_and_listening_at_once_never_fight() {
        use crate::watch::PushedNetwork;
        use crate::{EndpointConfig, Identity, NetworkSource};
        use std::sync::Arc;

        for round in 0..20u8 {
            let names = Arc::new(Overtaking {
                store: Default::default(),
                first_delay: std::time::Duration::from_millis(5 + round as u64),
                calls: Default::default(),
            });
            let mut config = EndpointConfig::new(names.clone());
            config.local_ips = ips(&["127.0.0.71"]);
            config.network = NetworkSource::Application;
            config.use_loopback = true;
            let ep = Endpoint::new(Identity::from_seed([71; 32]), config);
            let net = PushedNetwork::new(vec![lo_iface("wlan0", 3, InterfaceKind::Wifi, true, &["127.0.0.72"])]);
            // The listener's publication (held) and the follower's (not held) race.
            let (listener, _follower) = tokio::join!(ep.listen("race.test"), async { ep.follow_network(net.subscribe()) });
            listener.unwrap_or_else(|e| panic!("round {round}: listen failed: {e}"));
            assert_eq!(names.calls.load(std::sync::atomic::Ordering::SeqCst), 2, "round {round}: both published");
            let registered = crate::name::NameService::lookup(&names.store, "race.test").await.unwrap().record;
            assert_eq!(registered.addrs, ep.published_addrs(), "round {round}: the newest addresses are registered");
            assert_eq!(registered.addrs[0].ip(), ips(&["127.0.0.72"])[0]);
        }
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
                nat64: None,
            },
            Interface {
                name: "cell0".into(),
                index: 3,
                kind: InterfaceKind::Cellular,
                metered: true,
                up: false,
                addrs: vec![],
                nat64: None,
            },
        ];
        assert_eq!(summary(&list), "wifi0 (Wifi, up) [192.0.2.1], cell0 (Cellular, metered, down) []");
    }
}
