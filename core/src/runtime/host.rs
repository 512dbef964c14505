//! What a flow needs of the endpoint that owns it, and nothing more.
//!
//! Flows sit below their endpoint: the endpoint creates them, keeps them by id and tells
//! them when its addresses change. A flow reaches back only through a [`Host`]: to dial
//! from the endpoint's current local addresses (through the application's socket binder),
//! to look its peer's name up again against the keys pinned for it, to learn which radio an
//! address uses; and it reports its start and end through a `FlowOwner` (see `conn.rs`).
//! Every record a flow acts on passes [`Host::check_record`]: the name service is not
//! trusted to say whose a name is (see [`crate::trust`]).
//! So `runtime/` reads as a one-way chain: sockets → host → flow tasks → flow handle →
//! endpoint → network following.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};

use tokio::net::TcpStream;
use tokio::sync::watch;

use super::config::EndpointConfig;
use super::Error;
use crate::energy::Radio;
use crate::identity::Identity;
use crate::name::NameRecord;
use crate::trust::{PeerName, Pin};
use crate::watch::{Interface, InterfaceKind};

/// The identity, configuration and local network view an endpoint shares with its flows.
pub(crate) struct Host {
    pub(crate) identity: Identity,
    pub(crate) config: EndpointConfig,
    net: Mutex<LocalNet>,
    /// Bumped whenever local addresses change; re-dialers wake on it.
    net_changed: watch::Sender<u64>,
    /// Serialises the check-then-pin of records, so two flows to one name agree.
    pinning: Mutex<()>,
    /// The timestamp of this endpoint's latest handshake (see `session/admission.rs`).
    pub(crate) handshake_clock: std::sync::atomic::AtomicU64,
}

/// The endpoint's local addresses and the interfaces behind them.
#[derive(Default)]
struct LocalNet {
    /// Best first (empty: the system chooses).
    ips: Vec<IpAddr>,
    /// The interfaces last seen by a followed network watcher.
    interfaces: Vec<Interface>,
}

impl LocalNet {
    /// The NAT64 prefix of the interface that has `ip`, if it has one.
    fn nat64_for(&self, ip: IpAddr) -> Option<crate::watch::Nat64Prefix> {
        self.interfaces.iter().find(|i| i.addrs.contains(&ip)).and_then(|i| i.nat64)
    }
}

impl Host {
    pub(crate) fn new(identity: Identity, config: EndpointConfig) -> Host {
        let net = LocalNet { ips: config.local_ips.clone(), interfaces: Vec::new() };
        Host {
            identity,
            config,
            net: Mutex::new(net),
            net_changed: watch::channel(0).0,
            pinning: Mutex::new(()),
            handshake_clock: Default::default(),
        }
    }

    fn net(&self) -> MutexGuard<'_, LocalNet> {
        self.net.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Our local addresses, best first (empty: the system chooses).
    pub(crate) fn local_ips(&self) -> Vec<IpAddr> {
        self.net().ips.clone()
    }

    /// Our local addresses that can reach `addr`, best first (`[None]`: let the system
    /// choose, when no local address is configured): those of its family, or for an IPv4
    /// peer without an IPv4 address at hand, the IPv6 ones behind a NAT64
    /// ([`dial_tcp_between`](Self::dial_tcp_between) translates the peer's address).
    pub(crate) fn local_ips_for(&self, addr: SocketAddr) -> Vec<Option<IpAddr>> {
        let net = self.net();
        let mut ips: Vec<Option<IpAddr>> =
            net.ips.iter().copied().filter(|ip| ip.is_ipv4() == addr.is_ipv4()).map(Some).collect();
        if ips.is_empty() && addr.is_ipv4() {
            ips = net.ips.iter().copied().filter(|ip| net.nat64_for(*ip).is_some()).map(Some).collect();
        }
        if ips.is_empty() { vec![None] } else { ips }
    }

    /// The peer address a connection from `local` to `remote` stands for: `remote`, or
    /// the IPv4 address a NAT64 address embeds (what the peer published, and what the
    /// flow's path logic compares with its addresses).
    pub(crate) fn peer_address(&self, local: SocketAddr, remote: SocketAddr) -> SocketAddr {
        let (IpAddr::V6(_), SocketAddr::V6(v6)) = (local.ip(), remote) else { return remote };
        match self.net().nat64_for(local.ip()).and_then(|prefix| prefix.extract(*v6.ip())) {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => remote,
        }
    }

    /// Where to connect to reach `addr` from `local`: `addr` itself, or for an IPv4 peer
    /// from an IPv6 address behind a NAT64, its synthesized IPv6 address.
    fn route(&self, local: Option<SocketAddr>, addr: SocketAddr) -> SocketAddr {
        match (local.map(|l| l.ip()), addr) {
            (Some(ip @ IpAddr::V6(_)), SocketAddr::V4(v4)) => match self.net().nat64_for(ip) {
                Some(prefix) => SocketAddr::new(IpAddr::V6(prefix.synthesize(*v4.ip())), v4.port()),
                None => addr,
            },
            _ => addr,
        }
    }

    /// Replaces the local addresses; returns the previous ones. The endpoint calls this
    /// under its own lock (the order is always endpoint, then host).
    pub(crate) fn replace_local_ips(&self, ips: Vec<IpAddr>) -> Vec<IpAddr> {
        std::mem::replace(&mut self.net().ips, ips)
    }

    /// Records the interfaces a watcher reported; returns the local addresses in use.
    pub(crate) fn record_interfaces(&self, interfaces: Vec<Interface>) -> Vec<IpAddr> {
        let mut net = self.net();
        net.interfaces = interfaces;
        net.ips.clone()
    }

    /// The interfaces last seen by a followed network watcher.
    pub(crate) fn interfaces(&self) -> Vec<Interface> {
        self.net().interfaces.clone()
    }

    /// The radio behind local address `ip`, from the interfaces a followed watcher
    /// reported (None: unknown).
    pub(crate) fn radio_for(&self, ip: IpAddr) -> Option<Radio> {
        match self.interface_kind_for(ip)? {
            InterfaceKind::Wifi => Some(Radio::Wifi),
            InterfaceKind::Cellular => Some(Radio::Lte),
            InterfaceKind::Ethernet | InterfaceKind::Loopback => Some(Radio::Wired),
            _ => None,
        }
    }

    /// The kind of the interface that holds local address `ip`, from the interfaces a
    /// followed watcher reported (None: no known interface holds it).
    pub(crate) fn interface_kind_for(&self, ip: IpAddr) -> Option<InterfaceKind> {
        self.net().interfaces.iter().find(|i| i.addrs.contains(&ip)).map(|i| i.kind)
    }

    /// Wakes whoever waits for a change of local addresses.
    pub(crate) fn network_changed(&self) {
        self.net_changed.send_modify(|g| *g += 1);
    }

    /// Changes of local addresses from now on.
    pub(crate) fn network_changes(&self) -> watch::Receiver<u64> {
        self.net_changed.subscribe()
    }

    /// Looks `peer` up and checks the record (see [`Host::check_record`]); its addresses
    /// are cut to those we may dial ([`Host::dialable`]).
    ///
    /// An answer older than a record already seen (a lookup overtaken by a watch that
    /// delivered the peer's next record) is asked again once before it is an error.
    pub(crate) async fn lookup_checked(&self, peer: &PeerName) -> Result<NameRecord, Error> {
        let mut asked = 0;
        loop {
            let mut record = self.config.names.lookup(peer.name()).await?.record;
            asked += 1;
            match self.check_record(peer, &record) {
                Err(Error::StaleRecord { .. }) if asked == 1 => {}
                Err(e) => return Err(e),
                Ok(()) => {
                    record.addrs = self.dialable(&record.addrs);
                    return Ok(record);
                }
            }
        }
    }

    /// Of the addresses a peer (its ADDRS or its name record) gives, those we may dial:
    /// at most [`MAX_PEER_ADDRS`], none unspecified, multicast, broadcast, link-local or
    /// port 0, and loopback only when this endpoint itself works on loopback. A peer's
    /// word must not make a phone dial its own services or sweep a network.
    pub(crate) fn dialable(&self, addrs: &[SocketAddr]) -> Vec<SocketAddr> {
        let ips = self.local_ips();
        let loopback_ok = self.config.use_loopback || ips.is_empty() || ips.iter().any(IpAddr::is_loopback);
        dialable(addrs, loopback_ok)
    }

    /// Whether a (signature-checked) record may be acted on for `peer`: its keys must have
    /// the fingerprint `peer` names, or else the pinned ones; its sequence number must not
    /// be below one already accepted. A fingerprint given by the user replaces the pin
    /// (that is how a user accepts a peer's new keys); the first record of a name without
    /// either pins its keys.
    pub(crate) fn check_record(&self, peer: &PeerName, record: &NameRecord) -> Result<(), Error> {
        let name = peer.name();
        let offered = record.public();
        let _pinning = self.pinning.lock().unwrap_or_else(|p| p.into_inner());
        let pin = self.config.pins.get(name)?.filter(|pin| {
            // A pin of other keys than the ones the user named is replaced, its seq with it.
            peer.key().is_none_or(|_| pin.keys == offered)
        });
        match (peer.key(), pin) {
            (Some(expected), _) if !expected.matches(&offered) => Err(Error::WrongKey {
                name: name.to_string(),
                expected: expected.to_string(),
                offered: offered.fingerprint(),
            }),
            (None, Some(pin)) if pin.keys != offered => Err(Error::KeyChanged {
                name: name.to_string(),
                pinned: pin.keys.fingerprint(),
                offered: offered.fingerprint(),
            }),
            (_, Some(pin)) if record.seq < pin.seq => {
                Err(Error::StaleRecord { name: name.to_string(), seen: pin.seq, offered: record.seq })
            }
            (_, Some(pin)) if record.seq == pin.seq => Ok(()),
            _ => Ok(self.config.pins.set(name, Pin { keys: offered, seq: record.seq })?),
        }
    }

    /// A TCP connection to `addr` from `local` (None: the system chooses) that starts
    /// with `early`: in the SYN with `fast_open` where TCP Fast Open works (see
    /// `fast_open`), right after the handshake otherwise. Bounded by `io_timeout`. With
    /// `reusable`, its local port may be bound again while it is open (a relayed path's,
    /// which hole punching dials from).
    pub(crate) async fn dial_tcp_from(
        &self,
        local: Option<IpAddr>,
        addr: SocketAddr,
        early: &[u8],
        fast_open: bool,
        reusable: bool,
    ) -> std::io::Result<TcpStream> {
        self.dial_tcp_between(local.map(|ip| SocketAddr::new(ip, 0)), addr, early, fast_open, reusable).await
    }

    /// [`dial_tcp_from`](Self::dial_tcp_from) from the local address and port `local`.
    pub(crate) async fn dial_tcp_between(
        &self,
        local: Option<SocketAddr>,
        addr: SocketAddr,
        early: &[u8],
        fast_open: bool,
        reusable: bool,
    ) -> std::io::Result<TcpStream> {
        use socket2::{Domain, Protocol, Socket, Type};
        let addr = self.route(local, addr);
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        if reusable {
            sock.set_reuse_address(true)?;
            #[cfg(unix)]
            sock.set_reuse_port(true)?;
        }
        if let Some(local) = local {
            let ip = local.ip();
            sock.bind(&local.into())?;
            if let Some(binder) = &self.config.socket_binder {
                #[cfg(unix)]
                let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
                #[cfg(windows)]
                let raw = std::os::windows::io::AsRawSocket::as_raw_socket(&sock);
                binder.bind(raw, ip)?;
            }
        }
        sock.set_tcp_nodelay(true)?;
        match tokio::time::timeout(self.config.io_timeout, super::fast_open::connect(sock, addr, early, fast_open)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
        }
    }
}

/// The most peer addresses a flow keeps to dial.
pub(crate) const MAX_PEER_ADDRS: usize = 8;

fn dialable(addrs: &[SocketAddr], loopback_ok: bool) -> Vec<SocketAddr> {
    let usable = |a: &SocketAddr| {
        let ip = a.ip();
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        };
        a.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !link_local && (loopback_ok || !ip.is_loopback())
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in addrs.iter().filter(|a| usable(a)) {
        if out.len() == MAX_PEER_ADDRS {
            tracing::warn!(given = addrs.len(), kept = MAX_PEER_ADDRS, "the peer listed more addresses than are dialed");
            break;
        }
        if !out.contains(a) {
            out.push(*a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_cannot_make_us_dial_local_services_or_sweep_a_network() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let given = [
            a("192.0.2.1:443"),
            a("127.0.0.1:22"),
            a("[::1]:22"),
            a("169.254.1.1:80"),
            a("[fe80::1]:80"),
            a("0.0.0.0:80"),
            a("224.0.0.1:80"),
            a("255.255.255.255:80"),
            a("192.0.2.2:0"),
            a("192.0.2.1:443"),
            a("[2001:db8::1]:443"),
        ];
        assert_eq!(dialable(&given, false), [a("192.0.2.1:443"), a("[2001:db8::1]:443")]);
        assert_eq!(dialable(&given, true).len(), 4, "loopback kept for an endpoint on loopback");
        let sweep: Vec<SocketAddr> = (1..=200u8).map(|i| SocketAddr::from(([10, 0, 0, i], 22))).collect();
        assert_eq!(dialable(&sweep, false), sweep[..MAX_PEER_ADDRS]);
    }

    #[test]
    fn a_local_address_has_the_kind_and_radio_of_the_interface_holding_it() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let iface = |name: &str, kind, addrs: &[&str]| Interface {
            name: name.into(),
            index: 1,
            kind,
            metered: false,
            up: true,
            addrs: addrs.iter().map(|a| ip(a)).collect(),
            nat64: None,
        };
        let names = std::sync::Arc::new(crate::name::MemoryNameService::default());
        let host = Host::new(Identity::from_seed([5; 32]), EndpointConfig::new(names));
        assert_eq!(host.interface_kind_for(ip("192.0.2.1")), None, "no interfaces known yet");
        host.record_interfaces(vec![
            iface("wlan0", InterfaceKind::Wifi, &["192.0.2.1", "2001:db8::1"]),
            iface("rmnet0", InterfaceKind::Cellular, &["198.51.100.1"]),
            iface("lo", InterfaceKind::Loopback, &["127.0.0.1"]),
            iface("tun0", InterfaceKind::Other, &["10.8.0.1"]),
        ]);
        let cases = [
            ("2001:db8::1", Some(InterfaceKind::Wifi), Some(Radio::Wifi)),
            ("198.51.100.1", Some(InterfaceKind::Cellular), Some(Radio::Lte)),
            ("127.0.0.1", Some(InterfaceKind::Loopback), Some(Radio::Wired)),
            ("10.8.0.1", Some(InterfaceKind::Other), None),
            ("203.0.113.9", None, None),
        ];
        for (addr, kind, radio) in cases {
            assert_eq!(host.interface_kind_for(ip(addr)), kind, "{addr}");
            assert_eq!(host.radio_for(ip(addr)), radio, "{addr}");
        }
    }
}
