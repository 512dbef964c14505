//! Which addresses can carry a subflow, in which order, and what changed.
//!
//! Kept as pure functions over interface lists so every watcher (netlink, polling, the
//! platform's pushes) and the endpoint agree on one rule, and so the rule is tested
//! without a network.

use std::net::IpAddr;

use super::interface::{Interface, InterfaceKind};

/// Whether `ip` can be a subflow's local address: not unspecified or multicast, and not
/// link-local (`fe80::/10`, `169.254.0.0/16`: such an address only reaches the same link
/// and needs a scope id msocket does not track). Loopback only when `loopback` is set.
pub fn is_usable_ip(ip: IpAddr, loopback: bool) -> bool {
    if ip.is_unspecified() || ip.is_multicast() || (ip.is_loopback() && !loopback) {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_broadcast(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// The addresses an endpoint should use, best first: those of interfaces that are up,
/// usable by [`is_usable_ip`] (loopback interfaces only when `loopback` is set), ordered
/// Wi-Fi, Ethernet, other, cellular, loopback; interfaces of one kind by index, and each
/// interface's addresses in their own order. An address on two interfaces is listed once.
pub fn usable_ips(interfaces: &[Interface], loopback: bool) -> Vec<IpAddr> {
    let mut ordered: Vec<&Interface> =
        interfaces.iter().filter(|i| i.up && (loopback || i.kind != InterfaceKind::Loopback)).collect();
    ordered.sort_by_key(|i| (i.kind.preference(), i.index));
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in ordered.iter().flat_map(|i| i.addrs.iter().copied()) {
        if is_usable_ip(ip, loopback) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// What changed between two address lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddrDiff {
    /// In the new list only.
    pub added: Vec<IpAddr>,
    /// In the old list only.
    pub removed: Vec<IpAddr>,
    /// Same set, other order (the preferred address changed).
    pub reordered: bool,
}

impl AddrDiff {
    /// Compares `old` with `new`.
    pub fn between(old: &[IpAddr], new: &[IpAddr]) -> AddrDiff {
        let added: Vec<IpAddr> = new.iter().filter(|ip| !old.contains(ip)).copied().collect();
        let removed: Vec<IpAddr> = old.iter().filter(|ip| !new.contains(ip)).copied().collect();
        let reordered = added.is_empty() && removed.is_empty() && old != new;
        AddrDiff { added, removed, reordered }
    }

    /// Whether the lists differ at all (in content or order).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && !self.reordered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, index: u32, kind: InterfaceKind, up: bool, addrs: &[&str]) -> Interface {
        Interface {
            name: name.into(),
            index,
            kind,
            metered: kind == InterfaceKind::Cellular,
            up,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            nat64: None,
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn unusable_addresses() {
        for bad in ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "169.254.3.4", "fe80::1", "febf::1", "255.255.255.255"] {
            assert!(!is_usable_ip(bad.parse().unwrap(), true), "{bad}");
        }
        for good in ["192.0.2.1", "2001:db8::1", "fec0::1", "10.0.0.1"] {
            assert!(is_usable_ip(good.parse().unwrap(), false), "{good}");
        }
        assert!(!is_usable_ip("127.0.0.1".parse().unwrap(), false));
        assert!(is_usable_ip("127.0.0.1".parse().unwrap(), true));
        assert!(!is_usable_ip("::1".parse().unwrap(), false));
    }

    #[test]
    fn order_is_wifi_ethernet_other_cellular_and_down_interfaces_are_left_out() {
        let list = vec![
            iface("lo", 1, InterfaceKind::Loopback, true, &["127.0.0.1", "::1"]),
            iface("cell0", 2, InterfaceKind::Cellular, true, &["198.51.100.7", "2001:db8:c::7"]),
            iface("eth0", 3, InterfaceKind::Ethernet, true, &["192.0.2.30"]),
            iface("wifi1", 5, InterfaceKind::Wifi, true, &["192.0.2.51"]),
            iface("wifi0", 4, InterfaceKind::Wifi, true, &["fe80::1", "192.0.2.40", "2001:db8::40"]),
            iface("tun0", 6, InterfaceKind::Other, true, &["203.0.113.6"]),
            iface("wifi2", 7, InterfaceKind::Wifi, false, &["192.0.2.70"]),
        ];
        assert_eq!(
            usable_ips(&list, false),
            ips(&[
                "192.0.2.40",
                "2001:db8::40",
                "192.0.2.51",
                "192.0.2.30",
                "203.0.113.6",
                "198.51.100.7",
                "2001:db8:c::7"
            ])
        );
        let with_lo = usable_ips(&list, true);
        assert_eq!(&with_lo[with_lo.len() - 2..], &ips(&["127.0.0.1", "::1"])[..]);
    }

    #[test]
    fn an_address_on_two_interfaces_is_listed_once_and_input_order_does_not_matter() {
        let a = iface("wifi0", 4, InterfaceKind::Wifi, true, &["192.0.2.1"]);
        let b = iface("eth0", 2, InterfaceKind::Ethernet, true, &["192.0.2.1", "192.0.2.2"]);
        assert_eq!(usable_ips(&[a.clone(), b.clone()], false), ips(&["192.0.2.1", "192.0.2.2"]));
        assert_eq!(usable_ips(&[b, a], false), ips(&["192.0.2.1", "192.0.2.2"]));
        assert!(usable_ips(&[], false).is_empty());
    }

    #[test]
    fn diffs() {
        let old = ips(&["192.0.2.1", "192.0.2.2"]);
        assert!(AddrDiff::between(&old, &old).is_empty());
        let d = AddrDiff::between(&old, &ips(&["192.0.2.2", "192.0.2.3"]));
        assert_eq!(d.added, ips(&["192.0.2.3"]));
        assert_eq!(d.removed, ips(&["192.0.2.1"]));
        assert!(!d.reordered && !d.is_empty());
        let d = AddrDiff::between(&old, &ips(&["192.0.2.2", "192.0.2.1"]));
        assert!(d.reordered && d.added.is_empty() && d.removed.is_empty() && !d.is_empty());
        let d = AddrDiff::between(&[], &old);
        assert_eq!(d.added, old);
    }
}
