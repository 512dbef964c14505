//! The platform's entry point: snapshots pushed in by the app.
//!
//! On a phone the operating system's own connectivity service knows more than msocket
//! can find out from below: the real link type, whether it is metered, which network
//! the system currently validates. The platform layer (Android `ConnectivityManager`
//! callbacks, iOS `NWPathMonitor`, reached over FFI) turns each callback into a full
//! snapshot and pushes it here; the endpoint follows it like any other watcher.

use tokio::sync::watch;

use super::interface::Interface;
use super::{bound, publish, NetworkState};

/// A network state fed by the application.
///
/// Push a full snapshot on every change; consumers see the latest one. Followers stop
/// when this value is dropped, so keep it as long as the endpoint should follow.
#[derive(Debug)]
pub struct PushedNetwork {
    tx: watch::Sender<NetworkState>,
}

impl PushedNetwork {
    /// A pushed network whose state starts as `initial`.
    pub fn new(mut initial: Vec<Interface>) -> PushedNetwork {
        bound(&mut initial);
        PushedNetwork { tx: watch::channel(NetworkState::new(initial)).0 }
    }

    /// Replaces the state with `interfaces` (at most 256 interfaces of 64 addresses are
    /// kept). Returns whether it differed from the previous one; only then are
    /// consumers woken.
    pub fn push(&self, mut interfaces: Vec<Interface>) -> bool {
        bound(&mut interfaces);
        publish(&self.tx, interfaces, std::time::Instant::now())
    }

    /// A receiver of the state, for [`Endpoint::follow_network`](crate::Endpoint::follow_network).
    pub fn subscribe(&self) -> watch::Receiver<NetworkState> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::InterfaceKind;

    #[test]
    fn pushes_reach_subscribers_once_per_change() {
        let wifi = Interface {
            name: "wlan0".into(),
            index: 3,
            kind: InterfaceKind::Wifi,
            metered: false,
            up: true,
            addrs: vec!["192.0.2.1".parse().unwrap()],
            nat64: None,
        };
        let net = PushedNetwork::new(Vec::new());
        let mut rx = net.subscribe();
        assert!(rx.borrow_and_update().interfaces.is_empty());
        assert!(net.push(vec![wifi.clone()]));
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().interfaces, vec![wifi.clone()]);
        assert!(!net.push(vec![wifi]));
        assert!(!rx.has_changed().unwrap());
        drop(net);
        assert!(rx.has_changed().is_err(), "receivers learn that the pusher is gone");
    }
}
