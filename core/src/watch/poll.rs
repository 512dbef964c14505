//! The portable fallback: list the interfaces every few seconds.
//!
//! Where no event source is available (or before a platform one is wired in), a
//! periodic `getifaddrs` snapshot still lets the endpoint follow moves, only later: on
//! average half the interval after the change. Consumers are woken only when the
//! snapshot differs from the previous one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::interface::{Classifier, Interface, InterfaceKind};
use super::{bound, publish, usable::is_usable_ip, NetworkState, WatchError};

/// How often [`start`] lists the interfaces unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

/// Lists the interfaces now, then every `interval` (at least 10 ms) in a background
/// task that runs until every receiver is dropped. Needs a tokio runtime.
pub fn start(classifier: Classifier, interval: Duration) -> Result<watch::Receiver<NetworkState>, WatchError> {
    let first = snapshot(&classifier)?;
    let (tx, rx) = watch::channel(NetworkState::new(first));
    tokio::spawn(run(tx, classifier, interval.max(Duration::from_millis(10))));
    Ok(rx)
}

async fn run(tx: watch::Sender<NetworkState>, classifier: Classifier, interval: Duration) {
    let classifier = std::sync::Arc::new(classifier);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = ticks.tick() => {}
        }
        let c = classifier.clone();
        match tokio::task::spawn_blocking(move || snapshot(&c)).await {
            Ok(Ok(interfaces)) => {
                let at = Instant::now();
                if publish(&tx, interfaces, at) {
                    tracing::debug!("network state changed (poll)");
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "listing interfaces failed; trying again next interval")
            }
            Err(e) => tracing::warn!(error = %e, "the interface listing task failed"),
        }
    }
}

/// One listing, grouped by interface (ordered by index, then name).
fn snapshot(classifier: &Classifier) -> Result<Vec<Interface>, WatchError> {
    let listed = if_addrs::get_if_addrs().map_err(WatchError::List)?;
    Ok(group(
        classifier,
        listed.into_iter().map(|i| Row {
            loopback: i.is_loopback(),
            up: i.is_oper_up(),
            index: i.index.unwrap_or(0),
            ip: i.ip(),
            name: i.name,
        }),
    ))
}

/// One address of one interface, as `getifaddrs` lists it.
struct Row {
    name: String,
    index: u32,
    up: bool,
    loopback: bool,
    ip: std::net::IpAddr,
}

/// Groups rows into interfaces, leaving out addresses that can never carry a subflow
/// (link-local, multicast, unspecified). An interface with a loopback address is a
/// loopback interface (`lo0` on BSDs) unless an app rule says otherwise.
fn group(classifier: &Classifier, rows: impl Iterator<Item = Row>) -> Vec<Interface> {
    let mut by_name: BTreeMap<(u32, String), Interface> = BTreeMap::new();
    for Row { name, index, up, loopback, ip } in rows {
        let entry = by_name.entry((index, name.clone())).or_insert_with(|| {
            let (kind, metered) = if loopback && !classifier.overrides(&name) {
                (InterfaceKind::Loopback, false)
            } else {
                classifier.classify(&name)
            };
            Interface { name, index, kind, metered, up, addrs: Vec::new(), nat64: None }
        });
        entry.up |= up;
        if is_usable_ip(ip, true) && !entry.addrs.contains(&ip) {
            entry.addrs.push(ip);
        }
    }
    let mut out: Vec<Interface> = by_name.into_values().collect();
    bound(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, index: u32, up: bool, ip: &str) -> Row {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        Row { name: name.into(), index, up, loopback: ip.is_loopback(), ip }
    }

    #[test]
    fn rows_are_grouped_per_interface_and_link_local_is_dropped() {
        let rows = vec![
            row("wlan0", 3, true, "192.0.2.1"),
            row("lo0", 1, true, "127.0.0.1"),
            row("wlan0", 3, true, "fe80::1"),
            row("wlan0", 3, true, "2001:db8::1"),
            row("rmnet0", 4, false, "198.51.100.2"),
        ];
        let got = group(&Classifier::new(), rows.into_iter());
        let names: Vec<&str> = got.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["lo0", "wlan0", "rmnet0"]);
        assert_eq!(got[1].kind, InterfaceKind::Wifi);
        assert_eq!(
            got[1].addrs,
            vec!["192.0.2.1".parse::<std::net::IpAddr>().unwrap(), "2001:db8::1".parse().unwrap()]
        );
        assert_eq!(got[0].kind, InterfaceKind::Loopback);
        assert!(got[2].metered && !got[2].up);
    }

    #[tokio::test]
    async fn the_poller_starts_with_the_current_interfaces() {
        let rx = start(Classifier::new(), Duration::from_secs(60)).unwrap();
        let listed = if_addrs::get_if_addrs().unwrap();
        let state = rx.borrow();
        for i in listed.iter().filter(|i| is_usable_ip(i.ip(), true)) {
            assert!(
                state.interfaces.iter().any(|s| s.name == i.name && s.addrs.contains(&i.ip())),
                "{} {} missing",
                i.name,
                i.ip()
            );
        }
    }
}
