//! The phone topology: a phone with Wi-Fi and cellular interfaces, each behind its own
//! access router (optionally NAT), a core router, and a server.
//!
//! ```text
//!  phone wifi0 192.168.1.2 ─ [l-wifi: p ═emu═ r] ─ lan0 192.168.1.1 r-wifi wan0 172.16.1.2 ─ wifi0 172.16.1.1
//!                                                                                            core
//!  phone cell0 10.64.0.2   ─ [l-cell: p ═emu═ r] ─ lan0 10.64.0.1   r-cell wan0 172.16.2.2 ─ cell0 172.16.2.1
//!                                                                                            srv0 172.16.100.1
//!                                         server eth0 172.16.100.10 ─ [l-srv: s ═emu═ c] ─┘ (if not unlimited)
//! ```
//!
//! Why this shape: every move msocket must survive is one command away. The phone's two
//! interfaces have their own subnets and gateways and **source-based policy routing**
//! (`from <wifi subnet> lookup 100`, `from <cell subnet> lookup 200`), so a socket bound
//! to the Wi-Fi address leaves through `wifi0` whatever the main table prefers, just as a
//! phone OS pins a subflow to a network. Each policy table ends in `unreachable default`,
//! so when an interface loses its address or goes down, sockets bound to it fail instead
//! of leaking out of the other interface with a foreign source address. The main table
//! prefers Wi-Fi (metric 100) over cellular (200) for unbound sockets.
//!
//! The access links carry no ARP: [`PhoneLab`] pins the neighbours on both ends (phone →
//! gateway, router → phone) whenever it installs routes. A cellular bearer is
//! point-to-point and an associated Wi-Fi has resolved its gateway before the address is
//! usable, so a link that comes up carries packets at once; without the pins every
//! hand-off would pay one emulated round trip for ARP before its first SYN.
//!
//! The access links (and the server link, unless it is `unlimited`) pass through an
//! [`Emulator`] in a link namespace, so delay, loss, rate and "the path silently dies"
//! are per-link and changeable at run time. With NAT on, an access router masquerades
//! towards the core, and the core has no route to the private subnets (as on the
//! Internet); with NAT off the core routes them to the routers.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::info;

use crate::emu::{EmuHandle, EmuOptions, Emulator};
use crate::netns::{next_seq, Netns};
use crate::spec::LinkSpec;
use crate::{Error, Result};

/// One of the phone's two networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `wifi0`, behind `r-wifi`.
    Wifi,
    /// `cell0`, behind `r-cell`.
    Cell,
}

impl Access {
    /// The phone's interface on this network.
    pub fn ifname(self) -> &'static str {
        match self {
            Access::Wifi => "wifi0",
            Access::Cell => "cell0",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
    /// Third octet patterns: (phone subnet base, gateway, policy table, main metric, wan /24).
    fn plan(self) -> Plan {
        match self {
            Access::Wifi => Plan {
                subnet: Ipv4Addr::new(192, 168, 1, 0),
                table: 100,
                metric: 100,
                wan: Ipv4Addr::new(172, 16, 1, 0),
            },
            Access::Cell => Plan {
                subnet: Ipv4Addr::new(10, 64, 0, 0),
                table: 200,
                metric: 200,
                wan: Ipv4Addr::new(172, 16, 2, 0),
            },
        }
    }
}

struct Plan {
    subnet: Ipv4Addr,
    table: u32,
    metric: u32,
    wan: Ipv4Addr,
}

fn host(net: Ipv4Addr, h: u8) -> Ipv4Addr {
    let o = net.octets();
    Ipv4Addr::new(o[0], o[1], o[2], h)
}

fn in_24(net: Ipv4Addr, a: Ipv4Addr) -> bool {
    net.octets()[..3] == a.octets()[..3]
}

/// An emulated link of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkId {
    /// phone `wifi0` ↔ `r-wifi`.
    Wifi,
    /// phone `cell0` ↔ `r-cell`.
    Cell,
    /// `core` ↔ `server` (emulated only when its spec is not `unlimited`).
    Server,
}

impl From<Access> for LinkId {
    fn from(a: Access) -> LinkId {
        match a {
            Access::Wifi => LinkId::Wifi,
            Access::Cell => LinkId::Cell,
        }
    }
}

/// What to build. `Default`: every link `unlimited`, NAT on both routers, seed 1.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The Wi-Fi access link (phone ↔ r-wifi).
    pub wifi: LinkSpec,
    /// The cellular access link (phone ↔ r-cell).
    pub cell: LinkSpec,
    /// The core ↔ server link; `unlimited` means a plain veth without an emulator.
    pub server_link: LinkSpec,
    /// Masquerade on r-wifi towards the core.
    pub nat_wifi: bool,
    /// Masquerade on r-cell towards the core.
    pub nat_cell: bool,
    /// Seed of the emulators' loss/jitter generators.
    pub seed: u64,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            wifi: LinkSpec::unlimited(),
            cell: LinkSpec::unlimited(),
            server_link: LinkSpec::unlimited(),
            nat_wifi: true,
            nat_cell: true,
            seed: 1,
        }
    }
}

#[derive(Debug)]
struct State {
    phone_addr: [Option<Ipv4Addr>; 2],
    link_up: [bool; 2],
    public: [Ipv4Addr; 2],
    next_public: [u8; 2],
    /// Whether each access router translates addresses now.
    nat: [bool; 2],
    server: Ipv4Addr,
}

/// An access router's address translation towards the core.
const MASQUERADE: &str = "table ip msl_nat {\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"wan0\" masquerade\n  }\n}\n";

/// The built topology. Dropping it stops the emulators and deletes every namespace.
#[derive(Debug)]
pub struct PhoneLab {
    // Field order is drop order: emulators stop before their namespaces go.
    emus: [Option<Emulator>; 3],
    state: Mutex<State>,
    config: LabConfig,
    phone: Netns,
    routers: [Netns; 2],
    core: Netns,
    server: Netns,
    link_ns: [Option<Netns>; 3],
}

const CORE_SERVER_NET: Ipv4Addr = Ipv4Addr::new(172, 16, 100, 0);
const SERVER_HOST: u8 = 10;

impl PhoneLab {
    /// Builds the topology (about a hundred `ip`/`ethtool`/`sysctl` commands). On error,
    /// whatever was created is torn down again.
    pub fn build(config: LabConfig) -> Result<PhoneLab> {
        let started = Instant::now();
        let seq = next_seq();
        let ns = |role: &str| Netns::new(&format!("{seq}-{role}"));
        let phone = ns("phone")?;
        let routers = [ns("r-wifi")?, ns("r-cell")?];
        let core = ns("core")?;
        let server = ns("server")?;
        let lwifi = ns("l-wifi")?;
        let lcell = ns("l-cell")?;
        let lsrv = if config.server_link.is_unlimited() {
            None
        } else {
            Some(ns("l-srv")?)
        };

        for n in [&phone, &server] {
            n.disable_rp_filter()?;
        }
        // The server host enables TCP Fast Open for servers as well as clients, as
        // docs/OPERATIONS.md advises msocket's servers to: a JOIN then rides the SYN.
        server.sysctl("net.ipv4.tcp_fastopen", "3")?;
        for n in [&routers[0], &routers[1], &core] {
            n.make_router()?;
        }

        // Wires. Link namespaces: `p` faces the phone, `r` the router; `c` core, `s` server.
        phone.veth("wifi0", &lwifi, "p")?;
        lwifi.veth("r", &routers[0], "lan0")?;
        phone.veth("cell0", &lcell, "p")?;
        lcell.veth("r", &routers[1], "lan0")?;
        routers[0].veth("wan0", &core, "wifi0")?;
        routers[1].veth("wan0", &core, "cell0")?;
        match &lsrv {
            Some(l) => {
                core.veth("srv0", l, "c")?;
                l.veth("s", &server, "eth0")?;
            }
            None => core.veth("srv0", &server, "eth0")?,
        }

        // Core and server.
        let server_addr = host(CORE_SERVER_NET, SERVER_HOST);
        core.ip(&[
            "addr",
            "add",
            &format!("{}/24", host(CORE_SERVER_NET, 1)),
            "dev",
            "srv0",
        ])?;
        server.ip(&["addr", "add", &format!("{server_addr}/24"), "dev", "eth0"])?;
        server.ip(&[
            "route",
            "add",
            "default",
            "via",
            &host(CORE_SERVER_NET, 1).to_string(),
        ])?;

        // Access networks.
        let mut public = [Ipv4Addr::UNSPECIFIED; 2];
        for access in [Access::Wifi, Access::Cell] {
            let p = access.plan();
            let r = &routers[access.idx()];
            let core_if = access.ifname();
            core.ip(&[
                "addr",
                "add",
                &format!("{}/24", host(p.wan, 1)),
                "dev",
                core_if,
            ])?;
            r.ip(&[
                "addr",
                "add",
                &format!("{}/24", host(p.wan, 2)),
                "dev",
                "wan0",
            ])?;
            r.ip(&[
                "route",
                "add",
                "default",
                "via",
                &host(p.wan, 1).to_string(),
            ])?;
            r.ip(&[
                "addr",
                "add",
                &format!("{}/24", host(p.subnet, 1)),
                "dev",
                "lan0",
            ])?;
            public[access.idx()] = host(p.wan, 2);
            let nat = match access {
                Access::Wifi => config.nat_wifi,
                Access::Cell => config.nat_cell,
            };
            if nat {
                r.nft(MASQUERADE)?;
            } else {
                core.ip(&[
                    "route",
                    "add",
                    &format!("{}/24", p.subnet),
                    "via",
                    &host(p.wan, 2).to_string(),
                ])?;
            }
            // Phone: policy routing that survives moves (see module docs).
            let table = p.table.to_string();
            phone.ip(&[
                "rule",
                "add",
                "from",
                &format!("{}/24", p.subnet),
                "lookup",
                &table,
                "priority",
                &table,
            ])?;
            phone.ip(&[
                "route",
                "add",
                "unreachable",
                "default",
                "metric",
                "4000",
                "table",
                &table,
            ])?;
        }

        let emu = |n: &Netns, a: &str, b: &str, spec: LinkSpec, salt: u64| {
            Emulator::start(
                n,
                a,
                b,
                spec,
                EmuOptions {
                    seed: config.seed.wrapping_add(salt),
                    ..EmuOptions::default()
                },
            )
        };
        let emus = [
            Some(emu(&lwifi, "p", "r", config.wifi, 0)?),
            Some(emu(&lcell, "p", "r", config.cell, 1)?),
            match &lsrv {
                Some(l) => Some(emu(l, "c", "s", config.server_link, 2)?),
                None => None,
            },
        ];

        let lab = PhoneLab {
            emus,
            state: Mutex::new(State {
                phone_addr: [None, None],
                link_up: [true, true],
                public,
                next_public: [3, 3],
                nat: [config.nat_wifi, config.nat_cell],
                server: server_addr,
            }),
            config,
            phone,
            routers,
            core,
            server,
            link_ns: [Some(lwifi), Some(lcell), lsrv],
        };
        for access in [Access::Wifi, Access::Cell] {
            lab.add_addr(access, host(access.plan().subnet, 2))?;
        }
        info!(elapsed = ?started.elapsed(), phone = %lab.phone.name(), "phone lab built");
        Ok(lab)
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &LabConfig {
        &self.config
    }
    /// The phone's namespace (interfaces `wifi0`, `cell0`).
    pub fn phone(&self) -> &Netns {
        &self.phone
    }
    /// The access router of a network (`lan0` towards the phone, `wan0` towards the core).
    pub fn router(&self, access: Access) -> &Netns {
        &self.routers[access.idx()]
    }
    /// The core router (`wifi0`, `cell0`, `srv0`).
    pub fn core(&self) -> &Netns {
        &self.core
    }
    /// The server's namespace (interface `eth0`).
    pub fn server(&self) -> &Netns {
        &self.server
    }
    /// The namespace holding a link's emulator, if that link is emulated.
    pub fn link_ns(&self, link: LinkId) -> Option<&Netns> {
        self.link_ns[link as usize].as_ref()
    }
    /// The emulator of a link, if that link is emulated.
    pub fn emulator(&self, link: LinkId) -> Option<EmuHandle> {
        self.emus[link as usize].as_ref().map(Emulator::handle)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The phone's current address on a network (`None` after [`PhoneLab::del_addr`]).
    pub fn phone_addr(&self, access: Access) -> Option<Ipv4Addr> {
        self.state().phone_addr[access.idx()]
    }
    /// The phone's default gateway on a network (the access router's `lan0`).
    pub fn gateway(&self, access: Access) -> Ipv4Addr {
        host(access.plan().subnet, 1)
    }
    /// The access router's current address towards the core: what the server sees as the
    /// source of NATed connections.
    pub fn router_public_addr(&self, access: Access) -> Ipv4Addr {
        self.state().public[access.idx()]
    }
    /// The server's current address.
    pub fn server_addr(&self) -> Ipv4Addr {
        self.state().server
    }

    /// Removes the phone's address from an interface (Wi-Fi lost its lease). Sockets bound
    /// to it stop working; returns the removed address.
    pub fn del_addr(&self, access: Access) -> Result<Ipv4Addr> {
        let mut st = self.state();
        let addr = st.phone_addr[access.idx()].ok_or_else(|| {
            Error::Invalid(format!(
                "phone {} has no address to delete",
                access.ifname()
            ))
        })?;
        self.phone
            .ip(&["addr", "del", &format!("{addr}/24"), "dev", access.ifname()])?;
        st.phone_addr[access.idx()] = None;
        info!(iface = access.ifname(), %addr, "phone address deleted");
        Ok(addr)
    }

    /// Gives the phone an address on an interface that has none (a new lease). It must lie
    /// in that network's /24 (`192.168.1.0/24` Wi-Fi, `10.64.0.0/24` cellular), host part
    /// 2..=254. Routes for it are installed when the link is up.
    pub fn add_addr(&self, access: Access, addr: Ipv4Addr) -> Result<()> {
        let p = access.plan();
        let h = addr.octets()[3];
        if !in_24(p.subnet, addr) || !(2..=254).contains(&h) {
            return Err(Error::Invalid(format!(
                "{addr} is not a host address in {}/24 (hosts .2-.254) for {}",
                p.subnet,
                access.ifname()
            )));
        }
        let mut st = self.state();
        if let Some(old) = st.phone_addr[access.idx()] {
            return Err(Error::Invalid(format!(
                "phone {} already has {old}; delete it first",
                access.ifname()
            )));
        }
        self.phone
            .ip(&["addr", "add", &format!("{addr}/24"), "dev", access.ifname()])?;
        st.phone_addr[access.idx()] = Some(addr);
        if st.link_up[access.idx()] {
            self.install_routes(access, addr)?;
        }
        info!(iface = access.ifname(), %addr, "phone address added");
        Ok(())
    }

    fn install_routes(&self, access: Access, addr: Ipv4Addr) -> Result<()> {
        let p = access.plan();
        install_access_routes(
            &self.phone,
            access.ifname(),
            &self.routers[access.idx()],
            "lan0",
            addr,
            p.subnet,
            p.table,
            p.metric,
        )
    }

    /// Takes the phone's interface down (out of range). Its address stays; its routes go.
    pub fn link_down(&self, access: Access) -> Result<()> {
        let mut st = self.state();
        self.phone
            .ip(&["link", "set", "dev", access.ifname(), "down"])?;
        st.link_up[access.idx()] = false;
        info!(iface = access.ifname(), "phone link down");
        Ok(())
    }

    /// Brings the phone's interface back up and restores its routes.
    pub fn link_up(&self, access: Access) -> Result<()> {
        let mut st = self.state();
        self.phone
            .ip(&["link", "set", "dev", access.ifname(), "up"])?;
        st.link_up[access.idx()] = true;
        if let Some(addr) = st.phone_addr[access.idx()] {
            self.install_routes(access, addr)?;
        }
        info!(iface = access.ifname(), "phone link up");
        Ok(())
    }

    /// Moves the server to `new` (in `172.16.100.0/24`, hosts .2-.254); returns the old
    /// address. Connections to the old address die; the name record must follow.
    pub fn renumber_server(&self, new: Ipv4Addr) -> Result<Ipv4Addr> {
        let h = new.octets()[3];
        let mut st = self.state();
        let old = st.server;
        if !in_24(CORE_SERVER_NET, new) || !(2..=254).contains(&h) || new == old {
            return Err(Error::Invalid(format!(
                "{new} is not a new host address in {CORE_SERVER_NET}/24 (hosts .2-.254, current {old})"
            )));
        }
        self.server
            .ip(&["addr", "add", &format!("{new}/24"), "dev", "eth0"])?;
        self.server
            .ip(&["addr", "del", &format!("{old}/24"), "dev", "eth0"])?;
        self.server.ip(&[
            "route",
            "replace",
            "default",
            "via",
            &host(CORE_SERVER_NET, 1).to_string(),
        ])?;
        st.server = new;
        info!(%old, %new, "server renumbered");
        Ok(old)
    }

    /// NAT rebinding: the access router takes a new public address (the next one in its
    /// WAN /24), drops the old one and flushes its connection tracking, so every existing
    /// mapping is forgotten and new packets leave from the new address. Returns it.
    pub fn nat_rebind(&self, access: Access) -> Result<Ipv4Addr> {
        if !self.state().nat[access.idx()] {
            return Err(Error::Invalid(format!(
                "NAT is off on the {access:?} router: nothing to rebind"
            )));
        }
        let p = access.plan();
        let r = &self.routers[access.idx()];
        let mut st = self.state();
        let h = st.next_public[access.idx()];
        if h > 254 {
            return Err(Error::Invalid(format!(
                "the {access:?} router has used every address of {}/24",
                p.wan
            )));
        }
        let (old, new) = (st.public[access.idx()], host(p.wan, h));
        r.ip(&["addr", "add", &format!("{new}/24"), "dev", "wan0"])?;
        r.ip(&["addr", "del", &format!("{old}/24"), "dev", "wan0"])?;
        r.ip(&[
            "route",
            "replace",
            "default",
            "via",
            &host(p.wan, 1).to_string(),
        ])?;
        r.run("conntrack", &["-F"])?;
        st.public[access.idx()] = new;
        st.next_public[access.idx()] = h + 1;
        info!(?access, %old, %new, "NAT rebound");
        Ok(new)
    }

    /// A NAT appears on an access router that had none (a carrier putting its users behind
    /// carrier-grade NAT): from now on it masquerades towards the core, the core forgets its
    /// route to the access subnet (as on the Internet), and the router's connection table is
    /// flushed, so connections already open are translated from their next packet on.
    pub fn nat_on(&self, access: Access) -> Result<()> {
        let p = access.plan();
        let r = &self.routers[access.idx()];
        let mut st = self.state();
        if st.nat[access.idx()] {
            return Err(Error::Invalid(format!("the {access:?} router already translates addresses")));
        }
        r.nft(MASQUERADE)?;
        self.core.ip(&["route", "del", &format!("{}/24", p.subnet)])?;
        r.run("conntrack", &["-F"])?;
        st.nat[access.idx()] = true;
        info!(?access, "NAT switched on");
        Ok(())
    }

    /// Switches a link's blackhole on or off: while on, every frame (both directions, in
    /// flight too) is dropped silently, with no error to either end.
    pub fn blackhole(&self, link: LinkId, on: bool) -> Result<()> {
        self.emu_handle(link)?.set_blackhole(on);
        Ok(())
    }

    /// Changes a link's delay, jitter, loss and rate.
    pub fn set_link(&self, link: LinkId, spec: LinkSpec) -> Result<()> {
        self.emu_handle(link)?.set_spec(spec);
        Ok(())
    }

    /// Makes a phone link flap until `stop` is set: down for `period`, up for `period`,
    /// down again, … (the phone at the edge of a Wi-Fi network's range). Blocks the
    /// calling thread, so run it on a thread of its own (e.g. `std::thread::scope`) while
    /// traffic flows; `stop` is looked at every `period`. The link is left up, routes
    /// restored, even when a step fails. Returns how many times the link went down.
    pub fn flap(&self, access: Access, period: Duration, stop: &AtomicBool) -> Result<u32> {
        let mut downs = 0;
        let mut run = || -> Result<()> {
            while !stop.load(Ordering::SeqCst) {
                self.link_down(access)?;
                downs += 1;
                // Pacing the moves, not waiting for anything.
                std::thread::sleep(period);
                self.link_up(access)?;
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(period);
            }
            Ok(())
        };
        let outcome = run();
        let down = !self.state().link_up[access.idx()];
        if down {
            self.link_up(access)?;
        }
        info!(iface = access.ifname(), downs, "phone link stopped flapping");
        outcome.map(|()| downs)
    }

    fn emu_handle(&self, link: LinkId) -> Result<EmuHandle> {
        self.emulator(link).ok_or_else(|| {
            Error::Invalid(format!(
                "link {link:?} has no emulator (the server link is emulated only when its spec is not \"unlimited\")"
            ))
        })
    }
}

/// Installs a phone's routes for one access network, as every phone of the lab has them
/// (see the module docs): in policy table `table` the subnet route with `addr` as source
/// and `default via <subnet>.1`, in the main table the same default with `metric`, and
/// the neighbours pinned on both ends (the phone's gateway, the router's phone), since
/// the access links carry no ARP. Shared with [`crate::TwoPhoneLab`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn install_access_routes(
    phone: &Netns,
    dev: &str,
    router: &Netns,
    router_dev: &str,
    addr: Ipv4Addr,
    subnet: Ipv4Addr,
    table: u32,
    metric: u32,
) -> Result<()> {
    let (gw, table, metric) = (
        host(subnet, 1).to_string(),
        table.to_string(),
        metric.to_string(),
    );
    let src = addr.to_string();
    let net = format!("{subnet}/24");
    phone.ip(&[
        "route", "replace", &net, "dev", dev, "src", &src, "table", &table,
    ])?;
    phone.ip(&[
        "route", "replace", "default", "via", &gw, "dev", dev, "table", &table,
    ])?;
    phone.ip(&[
        "route", "replace", "default", "via", &gw, "dev", dev, "metric", &metric,
    ])?;
    // No ARP on the access links (see the module docs). A link taken down loses its
    // permanent neighbours too, so they are pinned again here.
    let gw_mac = mac_of(router, router_dev)?;
    let phone_mac = mac_of(phone, dev)?;
    phone.ip(&[
        "neigh", "replace", &gw, "lladdr", &gw_mac, "dev", dev, "nud", "permanent",
    ])?;
    router.ip(&[
        "neigh", "replace", &src, "lladdr", &phone_mac, "dev", router_dev, "nud", "permanent",
    ])?;
    Ok(())
}

/// The link-layer address of `dev` in `ns`.
fn mac_of(ns: &Netns, dev: &str) -> Result<String> {
    let out = ns.ip(&["-o", "link", "show", "dev", dev])?;
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| Error::Invalid(format!("{dev} has no Ethernet address: {out}")))
}
