//! The kernel's interfaces as netlink describes them, kept current message by message.
//!
//! Links and addresses arrive separately (and an address may in principle be announced
//! before its link), so they are kept apart and joined when a snapshot is taken. Every
//! update is idempotent and sets state rather than toggling it, which is what lets the
//! watcher apply events that were queued during a dump after that dump without ending up
//! wrong.

use std::collections::BTreeMap;
use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;

use crate::watch::interface::{Classifier, Interface, InterfaceKind};
use crate::watch::usable::is_usable_ip;
use crate::watch::{MAX_ADDRS, MAX_INTERFACES};

#[derive(Clone, Debug)]
struct Link {
    name: String,
    up: bool,
    loopback: bool,
}

/// Links and their usable addresses, by interface index.
#[derive(Clone, Debug, Default)]
pub(crate) struct Table {
    links: BTreeMap<u32, Link>,
    addrs: BTreeMap<u32, Vec<IpAddr>>,
}

impl Table {
    /// Applies one message; others than link and address news are ignored.
    pub(crate) fn apply(&mut self, msg: &RouteNetlinkMessage) {
        match msg {
            RouteNetlinkMessage::NewLink(m) => self.new_link(m),
            RouteNetlinkMessage::DelLink(m) => {
                self.links.remove(&m.header.index);
                self.addrs.remove(&m.header.index);
            }
            RouteNetlinkMessage::NewAddress(m) => self.new_addr(m),
            RouteNetlinkMessage::DelAddress(m) => {
                if let Some(ip) = address_of(m) {
                    self.remove_addr(m.header.index, ip);
                }
            }
            _ => {}
        }
    }

    fn new_link(&mut self, m: &LinkMessage) {
        let index = m.header.index;
        if !self.links.contains_key(&index) && self.links.len() >= MAX_INTERFACES {
            tracing::warn!(index, "too many interfaces; ignoring this one");
            return;
        }
        let name = m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
            .or_else(|| self.links.get(&index).map(|l| l.name.clone()))
            .unwrap_or_else(|| format!("if{index}"));
        let flags = m.header.flags;
        let link = Link {
            name,
            // Administratively up *and* with a carrier: only then can packets flow.
            up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running),
            loopback: flags.contains(LinkFlags::Loopback),
        };
        self.links.insert(index, link);
    }

    fn new_addr(&mut self, m: &AddressMessage) {
        let Some(ip) = address_of(m) else { return };
        let index = m.header.index;
        // The kernel announces an address again when its flags change: one that became
        // tentative (duplicate address detection running or failed) or deprecated
        // (preferred lifetime over) must not be used for new subflows any more.
        let flags = m
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Flags(f) => Some(*f),
                _ => None,
            })
            .unwrap_or_else(|| AddressFlags::from_bits_retain(u32::from(m.header.flags.bits())));
        let unusable = AddressFlags::Tentative | AddressFlags::Deprecated | AddressFlags::Dadfailed;
        if flags.intersects(unusable) || !is_usable_ip(ip, true) {
            self.remove_addr(index, ip);
            return;
        }
        if !self.addrs.contains_key(&index) && self.addrs.len() >= MAX_INTERFACES {
            tracing::warn!(index, "addresses on too many interfaces; ignoring this one");
            return;
        }
        let list = self.addrs.entry(index).or_default();
        if list.contains(&ip) {
            return;
        }
        if list.len() >= MAX_ADDRS {
            tracing::warn!(index, %ip, "too many addresses on one interface; ignoring this one");
            return;
        }
        list.push(ip);
    }

    fn remove_addr(&mut self, index: u32, ip: IpAddr) {
        if let Some(list) = self.addrs.get_mut(&index) {
            list.retain(|a| *a != ip);
            if list.is_empty() {
                self.addrs.remove(&index);
            }
        }
    }

    /// The interfaces now, by index. Addresses of links not (yet) known are left out.
    pub(crate) fn interfaces(&self, classifier: &Classifier) -> Vec<Interface> {
        self.links
            .iter()
            .map(|(&index, link)| {
                let (kind, metered) = if link.loopback && !classifier.overrides(&link.name) {
                    (InterfaceKind::Loopback, false)
                } else {
                    classifier.classify(&link.name)
                };
                Interface {
                    name: link.name.clone(),
                    index,
                    kind,
                    metered,
                    up: link.up,
                    addrs: self.addrs.get(&index).cloned().unwrap_or_default(),
                    // The kernel does not know it; the platform reports it (see `nat64`).
                    nat64: None,
                }
            })
            .collect()
    }
}

/// The interface's own address: `IFA_LOCAL` where present (on point-to-point links
/// `IFA_ADDRESS` is the peer's), otherwise `IFA_ADDRESS`.
fn address_of(m: &AddressMessage) -> Option<IpAddr> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::address::AddressHeaderFlags;

    fn link(index: u32, name: &str, flags: LinkFlags) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::NewLink(m)
    }

    fn addr_msg(index: u32, ip: &str, flags: Option<AddressFlags>) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.index = index;
        let ip: IpAddr = ip.parse().unwrap();
        m.attributes.push(AddressAttribute::Address(ip));
        if ip.is_ipv4() {
            m.attributes.push(AddressAttribute::Local(ip));
        }
        if let Some(f) = flags {
            m.attributes.push(AddressAttribute::Flags(f));
        }
        m
    }

    fn new_addr(index: u32, ip: &str, flags: Option<AddressFlags>) -> RouteNetlinkMessage {
        RouteNetlinkMessage::NewAddress(addr_msg(index, ip, flags))
    }

    fn ips(t: &Table, index: u32) -> Vec<String> {
        t.interfaces(&Classifier::new())
            .into_iter()
            .find(|i| i.index == index)
            .map(|i| i.addrs.iter().map(|a| a.to_string()).collect())
            .unwrap_or_default()
    }

    const UP: LinkFlags = LinkFlags::Up.union(LinkFlags::Running);

    #[test]
    fn links_and_addresses_are_joined_and_classified() {
        let mut t = Table::default();
        t.apply(&link(1, "lo", UP.union(LinkFlags::Loopback)));
        t.apply(&link(4, "wifi0", UP));
        t.apply(&link(5, "cell0", LinkFlags::Up));
        t.apply(&new_addr(4, "192.0.2.10", None));
        t.apply(&new_addr(5, "198.51.100.1", None));
        let got = t.interfaces(&Classifier::new());
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].kind, got[0].up), (InterfaceKind::Loopback, true));
        assert_eq!((got[1].kind, got[1].up, got[1].metered), (InterfaceKind::Wifi, true, false));
        assert_eq!((got[2].kind, got[2].up, got[2].metered), (InterfaceKind::Cellular, false, true), "no carrier");
        assert_eq!(ips(&t, 4), ["192.0.2.10"]);
    }

    #[test]
    fn unusable_addresses_are_skipped_and_become_usable_when_their_flags_clear() {
        let mut t = Table::default();
        t.apply(&link(4, "wifi0", UP));
        t.apply(&new_addr(4, "fe80::1", None));
        t.apply(&new_addr(4, "2001:db8::1", Some(AddressFlags::Tentative)));
        t.apply(&new_addr(4, "2001:db8::2", Some(AddressFlags::Dadfailed)));
        assert!(ips(&t, 4).is_empty());
        t.apply(&new_addr(4, "2001:db8::1", Some(AddressFlags::Permanent)));
        assert_eq!(ips(&t, 4), ["2001:db8::1"]);
        t.apply(&new_addr(4, "2001:db8::1", Some(AddressFlags::Deprecated)));
        assert!(ips(&t, 4).is_empty(), "a deprecated address is withdrawn");
        // Without IFA_FLAGS the header's flag byte counts.
        let mut m = addr_msg(4, "2001:db8::3", None);
        m.header.flags = AddressHeaderFlags::Tentative;
        t.apply(&RouteNetlinkMessage::NewAddress(m));
        assert!(ips(&t, 4).is_empty());
    }

    #[test]
    fn deletions_renames_and_repeats() {
        let mut t = Table::default();
        t.apply(&new_addr(7, "192.0.2.7", None));
        assert!(t.interfaces(&Classifier::new()).is_empty(), "no link yet");
        t.apply(&link(7, "eth7", UP));
        assert_eq!(ips(&t, 7), ["192.0.2.7"], "an address seen before its link is kept");
        t.apply(&new_addr(7, "192.0.2.7", None));
        t.apply(&new_addr(7, "192.0.2.8", None));
        assert_eq!(ips(&t, 7), ["192.0.2.7", "192.0.2.8"]);
        t.apply(&RouteNetlinkMessage::DelAddress(addr_msg(7, "192.0.2.7", None)));
        t.apply(&RouteNetlinkMessage::DelAddress(addr_msg(7, "192.0.2.7", None)));
        assert_eq!(ips(&t, 7), ["192.0.2.8"]);
        t.apply(&link(7, "wlan7", LinkFlags::empty()));
        let got = t.interfaces(&Classifier::new());
        assert_eq!((got[0].name.as_str(), got[0].kind, got[0].up), ("wlan7", InterfaceKind::Wifi, false));
        let mut del = LinkMessage::default();
        del.header.index = 7;
        t.apply(&RouteNetlinkMessage::DelLink(del));
        assert!(t.interfaces(&Classifier::new()).is_empty());
        t.apply(&link(7, "wlan7", UP));
        assert!(ips(&t, 7).is_empty(), "a deleted link's addresses are gone");
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = Table::default();
        for i in 0..(MAX_INTERFACES as u32 + 20) {
            t.apply(&link(i + 1, &format!("veth{i}"), UP));
        }
        for i in 0..(MAX_ADDRS as u32 + 20) {
            t.apply(&new_addr(1, &std::net::Ipv4Addr::from(0xc000_0200 + i).to_string(), None));
        }
        assert_eq!(t.interfaces(&Classifier::new()).len(), MAX_INTERFACES);
        assert_eq!(ips(&t, 1).len(), MAX_ADDRS);
    }

    #[test]
    fn an_app_rule_beats_the_loopback_flag() {
        let mut t = Table::default();
        t.apply(&link(1, "lo", UP.union(LinkFlags::Loopback)));
        let c = Classifier::new().with("lo", InterfaceKind::Other, false);
        assert_eq!(t.interfaces(&c)[0].kind, InterfaceKind::Other);
    }
}
