//! Two phones behind NATs and a public core with a name server and relays: the topology
//! for flows that must go through a relay, and for TCP hole punching between NATs.
//!
//! ```text
//!  phone A  wifi0 192.168.1.2 ─[a]─ home-A ─ 172.16.1.2 ──────────────────────────[u]─┐
//!           cell0 10.64.1.2   ─[a]─ cell-A ─ 100.64.1.2 ─ carrier-A ─ 172.16.11.2 ─[u]─┤
//!                                                                                     core ─┬─ services 172.16.100.10 (names)
//!  phone B  wifi0 192.168.2.2 ─[a]─ home-B ─ 172.16.2.2 ──────────────────────────[u]─┤      │           .11, .12 (relays)
//!           cell0 10.64.2.2   ─[a]─ cell-B ─ 100.64.2.2 ─ carrier-B ─ 172.16.12.2 ─[u]─┘      └─ public   172.16.200.10
//! ```
//!
//! `[a]` is a phone's access link and `[u]` an access network's uplink into the core; each
//! passes through an [`Emulator`] in a link namespace unless its spec is `unlimited` (then
//! it is a plain veth). Delay on the uplinks matters for hole punching: the two ends' SYNs
//! must cross between the NATs, and a NAT that sees the other end's SYN before its own
//! went out answers it with a reset.
//!
//! Each phone is built like [`crate::PhoneLab`]'s: Wi-Fi behind a home router, cellular
//! behind the operator — here a carrier-grade NAT in two steps, the phone's cell router
//! translating into the shared space 100.64.0.0/10 and the carrier's router translating
//! again to a public address — with source-based policy routing (`from <wifi subnet>
//! lookup 100`, `from <cell subnet> lookup 200`, each table ending in `unreachable
//! default`), Wi-Fi preferred for unbound sockets, and the same moves (an address removed,
//! a link down).
//!
//! Every router's translation is chosen per router ([`Nat`]): `PortPreserving` is a plain
//! nftables `masquerade`, which keeps a connection's source port while it is free: one
//! local port maps to one public port whatever the destination (endpoint-independent
//! mapping, what hole punching needs); `Symmetric` is `masquerade fully-random`, a new
//! random port per connection; `None` routes the private subnet instead (the upstream
//! router learns a route to it). Like a real NAT, none of them lets an unsolicited
//! connection in: filtering depends on the address and port the inside dialed.
//!
//! What a NAT does with a connection attempt from outside that matches no mapping is
//! chosen too ([`Unsolicited`]). By default it drops it silently, as RFC 5382 (NAT
//! behaviour for TCP, REQ-4) asks precisely so that simultaneous opens can work: the other
//! end's SYN may arrive before ours went out. A Linux router left alone answers it with a
//! reset instead (its own TCP stack owns the public address), and that reset, translated
//! back by the other NAT, closes the other end's mapping before our SYN arrives there.
//!
//! Filters: with [`TwoPhoneConfig::block_udp`] (the default) every router drops UDP it
//! forwards (counted: [`TwoPhoneLab::udp_dropped`]); with [`PhoneNet::only_tcp_443`] a
//! phone's home and cell routers forward nothing from the phone but TCP to port 443 (a
//! hotel or corporate network; counted: [`TwoPhoneLab::filtered`]).
//!
//! The core holds no default route and no route to any private subnet behind a NAT, so a
//! client dialing a NATed phone's private address gets "network unreachable" at once, as
//! on the Internet.

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Instant;

use tracing::info;

use crate::emu::{EmuHandle, EmuOptions, Emulator};
use crate::netns::{next_seq, Netns};
use crate::phone::{install_access_routes, Access};
use crate::spec::LinkSpec;
use crate::{Error, Result};

/// Where the name server of the services host listens (its own address).
pub const NAMES_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 100, 10);
/// The services host's relay addresses, one per relay, so that one relay can be killed
/// (or captured) alone.
pub const RELAY_ADDRS: [Ipv4Addr; 2] = [Ipv4Addr::new(172, 16, 100, 11), Ipv4Addr::new(172, 16, 100, 12)];
/// The public host (no NAT, no filter): a client on the Internet.
pub const PUBLIC_HOST_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 10);

const SERVICES_NET: Ipv4Addr = Ipv4Addr::new(172, 16, 100, 0);
const PUBLIC_NET: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 0);

/// How a router translates what it forwards towards the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Nat {
    /// No translation: the upstream router routes the subnet behind this one.
    None,
    /// `masquerade`: a connection keeps its source port while that is free, so a local
    /// port maps to the same public port for every destination (endpoint-independent).
    PortPreserving,
    /// `masquerade fully-random`: every connection gets a new random public port
    /// (a mapping per destination, as a symmetric NAT has).
    Symmetric,
}

impl Nat {
    fn rule(self) -> Option<&'static str> {
        match self {
            Nat::None => None,
            Nat::PortPreserving => Some("masquerade"),
            Nat::Symmetric => Some("masquerade fully-random"),
        }
    }
}

impl std::fmt::Display for Nat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Nat::None => "none",
            Nat::PortPreserving => "port-preserving",
            Nat::Symmetric => "symmetric",
        })
    }
}

/// What a NAT router does with an unsolicited TCP connection attempt from outside (one
/// that matches no mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unsolicited {
    /// Drops it silently (RFC 5382 REQ-4, and most home and carrier NATs).
    Drop,
    /// Answers with a TCP reset (what a Linux router's own stack does without a filter).
    Reset,
}

/// One of the two phones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phone {
    /// Phone A: Wi-Fi 192.168.1.0/24, cellular 10.64.1.0/24.
    A,
    /// Phone B: Wi-Fi 192.168.2.0/24, cellular 10.64.2.0/24.
    B,
}

impl Phone {
    /// Both phones.
    pub const BOTH: [Phone; 2] = [Phone::A, Phone::B];

    fn idx(self) -> usize {
        self as usize
    }
    /// 1 for A, 2 for B: the third octet of the phone's subnets.
    fn n(self) -> u8 {
        self as u8 + 1
    }
    fn tag(self) -> &'static str {
        match self {
            Phone::A => "a",
            Phone::B => "b",
        }
    }
}

/// One phone's networks.
#[derive(Debug, Clone)]
pub struct PhoneNet {
    /// Phone ↔ home router (`unlimited`: a plain veth).
    pub wifi: LinkSpec,
    /// Phone ↔ cell router.
    pub cell: LinkSpec,
    /// The home router's translation (Wi-Fi), to the public address 172.16.N.2.
    pub wifi_nat: Nat,
    /// The phone's cell router's translation, into the carrier's shared space 100.64.N.2.
    pub cell_nat: Nat,
    /// The carrier router's translation, to the public address 172.16.1N.2.
    pub carrier_nat: Nat,
    /// The phone's home and cell routers forward only TCP to port 443 from the phone.
    pub only_tcp_443: bool,
}

impl Default for PhoneNet {
    fn default() -> Self {
        PhoneNet {
            wifi: LinkSpec::unlimited(),
            cell: LinkSpec::unlimited(),
            wifi_nat: Nat::PortPreserving,
            cell_nat: Nat::PortPreserving,
            carrier_nat: Nat::PortPreserving,
            only_tcp_443: false,
        }
    }
}

impl PhoneNet {
    /// Every router of the phone (home, cell, carrier) translating with `nat`.
    pub fn all(nat: Nat) -> PhoneNet {
        PhoneNet { wifi_nat: nat, cell_nat: nat, carrier_nat: nat, ..PhoneNet::default() }
    }
}

/// What to build. `Default`: every link `unlimited`, port-preserving NAT on every router
/// dropping unsolicited connection attempts, UDP dropped, seed 1.
#[derive(Debug, Clone)]
pub struct TwoPhoneConfig {
    /// Phone A's and phone B's networks.
    pub phones: [PhoneNet; 2],
    /// Every access network's uplink into the core (home router ↔ core, carrier ↔ core).
    pub uplink: LinkSpec,
    /// Every router drops the UDP it forwards.
    pub block_udp: bool,
    /// What every translating router does with unsolicited connection attempts.
    pub unsolicited: Unsolicited,
    /// Seed of the emulators' loss and jitter generators.
    pub seed: u64,
}

impl Default for TwoPhoneConfig {
    fn default() -> Self {
        TwoPhoneConfig {
            phones: [PhoneNet::default(), PhoneNet::default()],
            uplink: LinkSpec::unlimited(),
            block_udp: true,
            unsolicited: Unsolicited::Drop,
            seed: 1,
        }
    }
}

impl TwoPhoneConfig {
    /// The config of one phone's networks.
    pub fn phone(&mut self, phone: Phone) -> &mut PhoneNet {
        &mut self.phones[phone.idx()]
    }
}

/// The network of one phone's access: (phone subnet, policy table, main-table metric).
fn access_plan(phone: Phone, access: Access) -> (Ipv4Addr, u32, u32) {
    match access {
        Access::Wifi => (Ipv4Addr::new(192, 168, phone.n(), 0), 100, 100),
        Access::Cell => (Ipv4Addr::new(10, 64, phone.n(), 0), 200, 200),
    }
}

fn host(net: Ipv4Addr, h: u8) -> Ipv4Addr {
    let o = net.octets();
    Ipv4Addr::new(o[0], o[1], o[2], h)
}

/// Home router ↔ core (Wi-Fi's public side).
fn home_wan(phone: Phone) -> Ipv4Addr {
    Ipv4Addr::new(172, 16, phone.n(), 0)
}
/// Cell router ↔ carrier (the carrier's shared address space).
fn cgn_net(phone: Phone) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, phone.n(), 0)
}
/// Carrier ↔ core (cellular's public side).
fn carrier_wan(phone: Phone) -> Ipv4Addr {
    Ipv4Addr::new(172, 16, 10 + phone.n(), 0)
}

#[derive(Debug)]
struct State {
    phone_addr: [[Option<Ipv4Addr>; 2]; 2],
    link_up: [[bool; 2]; 2],
}

/// An nftables table of drops, with named counters.
const FILTER_TABLE: &str = "msl_filter";

/// The built topology. Dropping it stops the emulators and deletes every namespace.
#[derive(Debug)]
pub struct TwoPhoneLab {
    // Field order is drop order: emulators stop before their namespaces go.
    /// Per phone, per access (Wi-Fi, cellular): the access link's and the uplink's emulators.
    access_emus: [[Option<Emulator>; 2]; 2],
    uplink_emus: [[Option<Emulator>; 2]; 2],
    state: Mutex<State>,
    config: TwoPhoneConfig,
    phones: [Netns; 2],
    homes: [Netns; 2],
    cells: [Netns; 2],
    carriers: [Netns; 2],
    core: Netns,
    services: Netns,
    public: Netns,
    link_ns: Vec<Netns>,
}

impl TwoPhoneLab {
    /// Builds the topology (a few hundred `ip`/`nft`/`ethtool` commands, a second or two).
    /// On error, whatever was created is torn down again.
    pub fn build(config: TwoPhoneConfig) -> Result<TwoPhoneLab> {
        let started = Instant::now();
        let seq = next_seq();
        let ns = |role: &str| Netns::new(&format!("{seq}-{role}"));
        let phones = [ns("pa")?, ns("pb")?];
        let homes = [ns("home-a")?, ns("home-b")?];
        let cells = [ns("cell-a")?, ns("cell-b")?];
        let carriers = [ns("carrier-a")?, ns("carrier-b")?];
        let core = ns("core")?;
        let services = ns("services")?;
        let public = ns("public")?;
        let mut link_ns = Vec::new();
        let mut access_emus: [[Option<Emulator>; 2]; 2] = Default::default();
        let mut uplink_emus: [[Option<Emulator>; 2]; 2] = Default::default();

        for n in phones.iter().chain([&services, &public]) {
            n.disable_rp_filter()?;
        }
        for n in homes.iter().chain(&cells).chain(&carriers).chain([&core]) {
            n.make_router()?;
        }

        // A wire from `a`/`a_dev` to `b`/`b_dev`: through an emulator in a link namespace
        // unless the spec is unlimited.
        let mut salt = 0u64;
        let mut wire = |a: &Netns, a_dev: &str, b: &Netns, b_dev: &str, spec: LinkSpec, tag: &str| -> Result<Option<Emulator>> {
            if spec.is_unlimited() {
                a.veth(a_dev, b, b_dev)?;
                return Ok(None);
            }
            let l = ns(&format!("l-{tag}"))?;
            a.veth(a_dev, &l, "x")?;
            l.veth("y", b, b_dev)?;
            salt += 1;
            let emu = Emulator::start(
                &l,
                "x",
                "y",
                spec,
                EmuOptions { seed: config.seed.wrapping_add(salt), ..EmuOptions::default() },
            )?;
            link_ns.push(l);
            Ok(Some(emu))
        };

        // Services and the public host.
        core.veth("svc0", &services, "eth0")?;
        core.add_addr("svc0", host(SERVICES_NET, 1), 24)?;
        for a in [NAMES_ADDR].iter().chain(&RELAY_ADDRS) {
            services.add_addr("eth0", *a, 24)?;
        }
        services.ip(&["route", "add", "default", "via", &host(SERVICES_NET, 1).to_string()])?;
        core.veth("pub0", &public, "eth0")?;
        core.add_addr("pub0", host(PUBLIC_NET, 1), 24)?;
        public.add_addr("eth0", PUBLIC_HOST_ADDR, 24)?;
        public.ip(&["route", "add", "default", "via", &host(PUBLIC_NET, 1).to_string()])?;

        for phone in Phone::BOTH {
            let (i, t) = (phone.idx(), phone.tag());
            let net = &config.phones[i];
            let p = &phones[i];
            let (home, cell, carrier) = (&homes[i], &cells[i], &carriers[i]);

            // Wires: phone ↔ routers (access links), routers ↔ core (uplinks), cell ↔ carrier.
            access_emus[i][0] = wire(p, "wifi0", home, "lan0", net.wifi, &format!("wifi-{t}"))?;
            access_emus[i][1] = wire(p, "cell0", cell, "lan0", net.cell, &format!("cell-{t}"))?;
            uplink_emus[i][0] = wire(home, "wan0", &core, &format!("h{t}"), config.uplink, &format!("up-home-{t}"))?;
            uplink_emus[i][1] = wire(carrier, "wan0", &core, &format!("k{t}"), config.uplink, &format!("up-carrier-{t}"))?;
            cell.veth("wan0", carrier, "lan0")?;

            // Home router.
            let (wifi_net, ..) = access_plan(phone, Access::Wifi);
            home.add_addr("lan0", host(wifi_net, 1), 24)?;
            home.add_addr("wan0", host(home_wan(phone), 2), 24)?;
            home.ip(&["route", "add", "default", "via", &host(home_wan(phone), 1).to_string()])?;
            core.add_addr(&format!("h{t}"), host(home_wan(phone), 1), 24)?;
            match net.wifi_nat.rule() {
                Some(rule) => home.nft(&nat_table(rule, config.unsolicited))?,
                None => route_via(&core, wifi_net, host(home_wan(phone), 2))?,
            }

            // Cell router and carrier: two translations (carrier-grade NAT).
            let (cell_net, ..) = access_plan(phone, Access::Cell);
            cell.add_addr("lan0", host(cell_net, 1), 24)?;
            cell.add_addr("wan0", host(cgn_net(phone), 2), 24)?;
            cell.ip(&["route", "add", "default", "via", &host(cgn_net(phone), 1).to_string()])?;
            carrier.add_addr("lan0", host(cgn_net(phone), 1), 24)?;
            carrier.add_addr("wan0", host(carrier_wan(phone), 2), 24)?;
            carrier.ip(&["route", "add", "default", "via", &host(carrier_wan(phone), 1).to_string()])?;
            core.add_addr(&format!("k{t}"), host(carrier_wan(phone), 1), 24)?;
            match net.cell_nat.rule() {
                Some(rule) => cell.nft(&nat_table(rule, config.unsolicited))?,
                None => route_via(carrier, cell_net, host(cgn_net(phone), 2))?,
            }
            match net.carrier_nat.rule() {
                Some(rule) => carrier.nft(&nat_table(rule, config.unsolicited))?,
                None => {
                    let via = host(carrier_wan(phone), 2);
                    route_via(&core, cgn_net(phone), via)?;
                    if net.cell_nat == Nat::None {
                        route_via(&core, cell_net, via)?;
                    }
                }
            }

            // Filters.
            for r in [home, cell, carrier] {
                let only_443 = net.only_tcp_443 && !std::ptr::eq(r, carrier);
                r.nft(&filter_table(config.block_udp, only_443))?;
            }

            // The phone: policy routing that survives moves (as in PhoneLab).
            for access in [Access::Wifi, Access::Cell] {
                let (subnet, table, _) = access_plan(phone, access);
                let table = table.to_string();
                p.ip(&["rule", "add", "from", &format!("{subnet}/24"), "lookup", &table, "priority", &table])?;
                p.ip(&["route", "add", "unreachable", "default", "metric", "4000", "table", &table])?;
            }
        }
        core.nft(&filter_table(config.block_udp, false))?;

        let lab = TwoPhoneLab {
            access_emus,
            uplink_emus,
            state: Mutex::new(State { phone_addr: [[None; 2]; 2], link_up: [[true; 2]; 2] }),
            config,
            phones,
            homes,
            cells,
            carriers,
            core,
            services,
            public,
            link_ns,
        };
        for phone in Phone::BOTH {
            for access in [Access::Wifi, Access::Cell] {
                lab.add_addr(phone, access, host(access_plan(phone, access).0, 2))?;
            }
        }
        info!(elapsed = ?started.elapsed(), core = %lab.core.name(), "two-phone lab built");
        Ok(lab)
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &TwoPhoneConfig {
        &self.config
    }
    /// A phone's namespace (interfaces `wifi0`, `cell0`).
    pub fn phone(&self, phone: Phone) -> &Netns {
        &self.phones[phone.idx()]
    }
    /// A phone's home router (Wi-Fi): `lan0` towards the phone, `wan0` towards the core.
    pub fn home_router(&self, phone: Phone) -> &Netns {
        &self.homes[phone.idx()]
    }
    /// A phone's cell router: `lan0` towards the phone, `wan0` towards its carrier.
    pub fn cell_router(&self, phone: Phone) -> &Netns {
        &self.cells[phone.idx()]
    }
    /// A phone's carrier router: `lan0` towards the cell router, `wan0` towards the core.
    pub fn carrier(&self, phone: Phone) -> &Netns {
        &self.carriers[phone.idx()]
    }
    /// The core router.
    pub fn core(&self) -> &Netns {
        &self.core
    }
    /// The services host ([`NAMES_ADDR`], [`RELAY_ADDRS`] on `eth0`).
    pub fn services(&self) -> &Netns {
        &self.services
    }
    /// The public host ([`PUBLIC_HOST_ADDR`] on `eth0`).
    pub fn public_host(&self) -> &Netns {
        &self.public
    }
    /// Every namespace of the lab (phones, routers, core, hosts, link namespaces).
    pub fn namespaces(&self) -> Vec<&Netns> {
        let mut all: Vec<&Netns> = self.phones.iter().chain(&self.homes).chain(&self.cells).chain(&self.carriers).collect();
        all.extend([&self.core, &self.services, &self.public]);
        all.extend(&self.link_ns);
        all
    }
    /// The emulator of a phone's access link, if it is emulated.
    pub fn access_emulator(&self, phone: Phone, access: Access) -> Option<EmuHandle> {
        self.access_emus[phone.idx()][access_idx(access)].as_ref().map(Emulator::handle)
    }
    /// The emulator of an access network's uplink into the core, if it is emulated.
    pub fn uplink_emulator(&self, phone: Phone, access: Access) -> Option<EmuHandle> {
        self.uplink_emus[phone.idx()][access_idx(access)].as_ref().map(Emulator::handle)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A phone's current address on a network (`None` after [`TwoPhoneLab::del_addr`]).
    pub fn phone_addr(&self, phone: Phone, access: Access) -> Option<Ipv4Addr> {
        self.state().phone_addr[phone.idx()][access_idx(access)]
    }

    /// The address the Internet sees for a phone's network: the home router's or the
    /// carrier's public address, or further in where a router does not translate.
    pub fn public_addr(&self, phone: Phone, access: Access) -> Option<Ipv4Addr> {
        let net = &self.config.phones[phone.idx()];
        match access {
            Access::Wifi if net.wifi_nat != Nat::None => Some(host(home_wan(phone), 2)),
            Access::Cell if net.carrier_nat != Nat::None => Some(host(carrier_wan(phone), 2)),
            Access::Cell if net.cell_nat != Nat::None => Some(host(cgn_net(phone), 2)),
            _ => self.phone_addr(phone, access),
        }
    }

    /// The translation of the router in front of a phone's network that faces the core
    /// (the home router, the carrier) and of the cell router: `(first, second)`, the second
    /// `None` on Wi-Fi.
    pub fn nats(&self, phone: Phone, access: Access) -> (Nat, Option<Nat>) {
        let net = &self.config.phones[phone.idx()];
        match access {
            Access::Wifi => (net.wifi_nat, None),
            Access::Cell => (net.cell_nat, Some(net.carrier_nat)),
        }
    }

    /// Removes a phone's address from an interface (the network is gone: Wi-Fi lost its
    /// lease). Sockets bound to it stop working; returns the removed address.
    pub fn del_addr(&self, phone: Phone, access: Access) -> Result<Ipv4Addr> {
        let mut st = self.state();
        let slot = &mut st.phone_addr[phone.idx()][access_idx(access)];
        let addr = slot.ok_or_else(|| Error::Invalid(format!("phone {phone:?} {} has no address to delete", access.ifname())))?;
        self.phone(phone).ip(&["addr", "del", &format!("{addr}/24"), "dev", access.ifname()])?;
        *slot = None;
        info!(?phone, iface = access.ifname(), %addr, "phone address deleted");
        Ok(addr)
    }

    /// Gives a phone an address on an interface that has none (a new lease), host .2-.254
    /// of that network's /24; its routes are installed when the link is up.
    pub fn add_addr(&self, phone: Phone, access: Access, addr: Ipv4Addr) -> Result<()> {
        let (subnet, table, metric) = access_plan(phone, access);
        let h = addr.octets()[3];
        if subnet.octets()[..3] != addr.octets()[..3] || !(2..=254).contains(&h) {
            return Err(Error::Invalid(format!(
                "{addr} is not a host address in {subnet}/24 (hosts .2-.254) for phone {phone:?} {}",
                access.ifname()
            )));
        }
        let mut st = self.state();
        let a = access_idx(access);
        if let Some(old) = st.phone_addr[phone.idx()][a] {
            return Err(Error::Invalid(format!("phone {phone:?} {} already has {old}; delete it first", access.ifname())));
        }
        let p = self.phone(phone);
        p.ip(&["addr", "add", &format!("{addr}/24"), "dev", access.ifname()])?;
        st.phone_addr[phone.idx()][a] = Some(addr);
        if st.link_up[phone.idx()][a] {
            install_access_routes(p, access.ifname(), self.first_router(phone, access), "lan0", addr, subnet, table, metric)?;
        }
        info!(?phone, iface = access.ifname(), %addr, "phone address added");
        Ok(())
    }

    /// Takes a phone's interface down (out of range). Its address stays; its routes go.
    pub fn link_down(&self, phone: Phone, access: Access) -> Result<()> {
        let mut st = self.state();
        self.phone(phone).ip(&["link", "set", "dev", access.ifname(), "down"])?;
        st.link_up[phone.idx()][access_idx(access)] = false;
        info!(?phone, iface = access.ifname(), "phone link down");
        Ok(())
    }

    /// Brings a phone's interface back up and restores its routes.
    pub fn link_up(&self, phone: Phone, access: Access) -> Result<()> {
        let mut st = self.state();
        let p = self.phone(phone);
        p.ip(&["link", "set", "dev", access.ifname(), "up"])?;
        let a = access_idx(access);
        st.link_up[phone.idx()][a] = true;
        if let Some(addr) = st.phone_addr[phone.idx()][a] {
            let (subnet, table, metric) = access_plan(phone, access);
            install_access_routes(p, access.ifname(), self.first_router(phone, access), "lan0", addr, subnet, table, metric)?;
        }
        info!(?phone, iface = access.ifname(), "phone link up");
        Ok(())
    }

    /// Switches the blackhole of a phone's access link (it must be emulated): while on,
    /// every frame is dropped silently, the address and link kept.
    pub fn blackhole(&self, phone: Phone, access: Access, on: bool) -> Result<()> {
        let emu = self.access_emulator(phone, access).ok_or_else(|| {
            Error::Invalid(format!("phone {phone:?} {} has no emulator (its link spec is \"unlimited\")", access.ifname()))
        })?;
        emu.set_blackhole(on);
        Ok(())
    }

    /// UDP packets the routers dropped so far (every router's count).
    pub fn udp_dropped(&self) -> Result<u64> {
        let mut total = 0;
        for r in self.homes.iter().chain(&self.cells).chain(&self.carriers).chain([&self.core]) {
            total += counter(r, "udp_drops")?;
        }
        Ok(total)
    }

    /// Packets a phone's home and cell routers dropped because they were not TCP to port
    /// 443 (zero unless the phone's network allows only that).
    pub fn filtered(&self, phone: Phone) -> Result<u64> {
        Ok(counter(&self.homes[phone.idx()], "not_443")? + counter(&self.cells[phone.idx()], "not_443")?)
    }

    fn first_router(&self, phone: Phone, access: Access) -> &Netns {
        match access {
            Access::Wifi => &self.homes[phone.idx()],
            Access::Cell => &self.cells[phone.idx()],
        }
    }
}

fn access_idx(access: Access) -> usize {
    match access {
        Access::Wifi => 0,
        Access::Cell => 1,
    }
}

fn route_via(ns: &Netns, subnet: Ipv4Addr, via: Ipv4Addr) -> Result<()> {
    ns.ip(&["route", "add", &format!("{subnet}/24"), "via", &via.to_string()]).map(drop)
}

/// A router's translation towards `wan0`, and what becomes of unsolicited TCP connection
/// attempts addressed to it from there (new or invalid in conntrack's eyes: a SYN that
/// matches no mapping, or one that meets a mapping a reset just closed).
fn nat_table(rule: &str, unsolicited: Unsolicited) -> String {
    let inbound = match unsolicited {
        Unsolicited::Drop => "    iifname \"wan0\" meta l4proto tcp ct state new,invalid drop\n",
        Unsolicited::Reset => "",
    };
    format!(
        "table ip msl_nat {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"wan0\" {rule}\n  }}\n  chain input {{\n    type filter hook input priority filter; policy accept;\n{inbound}  }}\n}}\n"
    )
}

/// The drops of a router: UDP (when blocked) and, on a phone's network that allows only
/// TCP to port 443, everything else the phone sends. Both counted.
fn filter_table(block_udp: bool, only_443: bool) -> String {
    let mut rules = String::new();
    if block_udp {
        rules.push_str("    meta l4proto udp counter name \"udp_drops\" drop\n");
    }
    if only_443 {
        rules.push_str("    iifname \"lan0\" tcp dport 443 accept\n");
        rules.push_str("    iifname \"lan0\" counter name \"not_443\" drop\n");
    }
    format!(
        "table ip {FILTER_TABLE} {{\n  counter udp_drops {{ }}\n  counter not_443 {{ }}\n  chain forward {{\n    type filter hook forward priority filter; policy accept;\n{rules}  }}\n}}\n"
    )
}

/// The packets a named counter of the filter table counted.
fn counter(ns: &Netns, name: &str) -> Result<u64> {
    let out = ns.run("nft", &["list", "counter", "ip", FILTER_TABLE, name])?;
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::Invalid(format!("no packet count in `nft list counter ip {FILTER_TABLE} {name}`: {out}")))
}
