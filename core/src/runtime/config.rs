//! How an endpoint behaves: its configuration, shared with its flows.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::proto::PathPolicy;
use super::socket::SocketBinder;
use crate::name::NameService;
use crate::proto::FlowConfig;
use crate::identity::Fingerprint;
use crate::relay::RelayUrl;
use crate::trust::{MemoryPins, PinStore};

/// Where an endpoint learns which local addresses it has.
///
/// Following the system's network is the default because a flow survives a move only if
/// its endpoint hears of the move: an endpoint that never learns that Wi-Fi went away
/// keeps writing into a dead path until TCP gives up, minutes later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetworkSource {
    /// The system's network watcher (netlink on Linux, polling elsewhere; see
    /// [`crate::watch::system`]), started by the endpoint itself when it first listens or
    /// connects. Pinned addresses ([`EndpointConfig::local_ips`] not empty) switch it
    /// off. Default.
    #[default]
    System,
    /// The application: it pushes interface snapshots
    /// ([`Endpoint::follow_network`](crate::Endpoint::follow_network) with a [`crate::watch::PushedNetwork`], as the
    /// mobile SDK does with the platform's network monitor) or sets addresses itself
    /// ([`Endpoint::set_local_ips`](crate::Endpoint::set_local_ips)).
    Application,
}

/// How an endpoint behaves. Every field has a default chosen for phones.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Where names are registered and looked up.
    pub names: Arc<dyn NameService>,
    /// Local addresses to use, pinned: when not empty the endpoint uses these and does
    /// not follow the system's network (it moves only when told, through
    /// [`Endpoint::set_local_ips`](crate::Endpoint::set_local_ips) or a network it is told to follow). Empty: the
    /// addresses come from [`network`](Self::network); until they do (or with none
    /// usable) the operating system chooses for outgoing subflows and listeners take
    /// every interface.
    pub local_ips: Vec<IpAddr>,
    /// Where the endpoint learns its addresses when none are pinned. Default
    /// [`NetworkSource::System`]: it follows the system's network by itself.
    pub network: NetworkSource,
    /// Port to listen on (0: any free port, kept across moves when possible).
    pub listen_port: u16,
    /// The flow protocol's buffers and timers.
    pub flow: FlowConfig,
    /// How long `connect` keeps trying before it fails. Default 20 s.
    pub connect_timeout: Duration,
    /// Bound on one TCP connect or subflow handshake. Default 5 s.
    pub io_timeout: Duration,
    /// Lifetime of a published name record; it is re-published at half this. Default 1 h.
    pub record_ttl: Duration,
    /// Whether a followed network watcher may give this endpoint loopback addresses
    /// (for peers on the same host, and tests). Default false.
    pub use_loopback: bool,
    /// Whether a connecting flow keeps a standby subflow on each of its other local
    /// addresses (cellular beside Wi-Fi), idle but for keepalives, so that losing the
    /// active path costs no handshake. Default true.
    pub standby_paths: bool,
    /// How connecting flows use their paths at first (see [`PathPolicy`]; each flow can
    /// change it). Default [`PathPolicy::Backup`].
    pub path_policy: PathPolicy,
    /// Binds each outgoing subflow's socket to its network (see [`SocketBinder`]).
    /// Default none: the source address alone picks the path.
    pub socket_binder: Option<Arc<dyn SocketBinder>>,
    /// Which peers may open flows to this endpoint: `None` (the default) lets any key in;
    /// a list lets in only keys with one of its fingerprints. Others are refused in the
    /// handshake (they learn that, and nothing else) and the refusal is logged; no
    /// application data is exchanged with them.
    pub allowed_peers: Option<Vec<Fingerprint>>,
    /// Where the keys first seen for each looked-up name are kept (see [`crate::trust`]).
    /// Default: in memory, forgotten with the endpoint; the CLI keeps them in a file.
    pub pins: Arc<dyn PinStore>,
    /// Relays (`msocketd relay`) this endpoint registers at while it listens, so that
    /// peers reach it behind NAT (see [`crate::relay`]): each one that holds a live
    /// registration is listed in the name records. Default none. Connecting needs none:
    /// the relays a peer lists are in its record.
    pub relays: Vec<RelayUrl>,
    /// Publish no address of this endpoint: peers reach it only through its relays, and
    /// neither they nor the name service learn where it is. Default false.
    pub relay_only: bool,
}

impl EndpointConfig {
    /// Defaults, with the given name service.
    pub fn new(names: Arc<dyn NameService>) -> EndpointConfig {
        EndpointConfig {
            names,
            local_ips: Vec::new(),
            network: NetworkSource::System,
            listen_port: 0,
            flow: FlowConfig::default(),
            connect_timeout: Duration::from_secs(20),
            io_timeout: Duration::from_secs(5),
            record_ttl: Duration::from_secs(3600),
            use_loopback: false,
            standby_paths: true,
            path_policy: PathPolicy::Backup,
            socket_binder: None,
            allowed_peers: None,
            pins: Arc::new(MemoryPins::default()),
            relays: Vec::new(),
            relay_only: false,
        }
    }

    /// Whether an endpoint with this configuration follows the system's network by
    /// itself.
    pub fn follows_system_network(&self) -> bool {
        self.network == NetworkSource::System && self.local_ips.is_empty()
    }
}
