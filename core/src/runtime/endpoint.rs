//! The endpoint: one identity, its listening sockets, its names and its flows.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::AbortHandle;

use super::conn::{Conn, Role};
use super::events::FlowEvent;
use super::flow::Flow;
use super::follow::NetworkFollower;
use super::paths::PathPolicy;
use super::socket::SocketBinder;
use super::header::read_exchange;
use super::Error;
use crate::identity::{Identity, PublicIdentity};
use crate::name::{self, NameRecord, NameService, SignedRecord};
use crate::proto::FlowConfig;
use crate::session::join::JoinRefusal;
use crate::session::opening::{self, JoinTarget, Opening};
use crate::session::{FlowId, Responder};
use crate::watch::{Classifier, Interface, NetworkState, WatchError};

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
    /// ([`Endpoint::follow_network`] with a [`crate::watch::PushedNetwork`], as the
    /// mobile SDK does with the platform's network monitor) or sets addresses itself
    /// ([`Endpoint::set_local_ips`]).
    Application,
}

/// How an endpoint behaves. Every field has a default chosen for phones.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Where names are registered and looked up.
    pub names: Arc<dyn NameService>,
    /// Local addresses to use, pinned: when not empty the endpoint uses these and does
    /// not follow the system's network (it moves only when told, through
    /// [`Endpoint::set_local_ips`] or a network it is told to follow). Empty: the
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
        }
    }

    /// Whether an endpoint with this configuration follows the system's network by
    /// itself.
    pub fn follows_system_network(&self) -> bool {
        self.network == NetworkSource::System && self.local_ips.is_empty()
    }
}

struct State {
    ips: Vec<IpAddr>,
    port: u16,
    listeners: Vec<(SocketAddr, AbortHandle)>,
    services: HashMap<String, mpsc::Sender<Flow>>,
    flows: HashMap<FlowId, Weak<Conn>>,
    refresh: Option<AbortHandle>,
    /// The interfaces last seen by a followed network watcher.
    interfaces: Vec<Interface>,
    /// The follower of the system's network that the endpoint started by itself.
    system_follower: Option<NetworkFollower>,
    /// The application chose a network to follow: the endpoint starts none of its own.
    app_follows: bool,
}

impl State {
    /// Names whose records must follow our addresses: those listened on, and those of
    /// flows peers opened to us (they must find us again after a move even once the
    /// listener is gone).
    fn published_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.services.keys().cloned().collect();
        for conn in self.flows.values().filter_map(Weak::upgrade) {
            if conn.role == Role::Server && !names.contains(&conn.name) {
                names.push(conn.name.clone());
            }
        }
        names
    }

    /// Addresses peers can reach our listeners on.
    fn published_addrs(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for (addr, _) in &self.listeners {
            if addr.ip().is_unspecified() {
                out.extend(interface_ips().into_iter().map(|ip| SocketAddr::new(ip, addr.port())));
            } else {
                out.push(*addr);
            }
        }
        out
    }
}

pub(crate) struct EndpointInner {
    pub(crate) identity: Identity,
    pub(crate) config: EndpointConfig,
    state: Mutex<State>,
    /// Bumped whenever local addresses change; re-dialers wake on it.
    pub(crate) net_changed: watch::Sender<u64>,
    pins: Mutex<HashMap<String, PublicIdentity>>,
    record_seq: AtomicU64,
    /// Wakes the refresh task after a publish failed, so it retries soon instead of at
    /// the next periodic refresh (held in an `Arc` so the task can wait on it without
    /// keeping the endpoint alive).
    republish: Arc<Notify>,
    /// Set once the system's network is followed (or that was found impossible).
    system_follow: tokio::sync::OnceCell<()>,
    /// Our listeners take JOINs in SYNs (TCP Fast Open); our JOIN answers say so.
    takes_fast_open: std::sync::atomic::AtomicBool,
}

impl Drop for EndpointInner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, h) in state.listeners.drain(..) {
            h.abort();
        }
        if let Some(h) = state.refresh.take() {
            h.abort();
        }
    }
}

/// An identity bound to a name service: listens on names and connects to them.
///
/// Flows may outlive every handle of their endpoint, but without it they cannot follow
/// moves: a connected flow that then loses its last path fails instead of re-dialing.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<EndpointInner>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.inner.identity.public().fingerprint())
    }
}

/// Accepts the flows peers open to one name.
#[derive(Debug)]
pub struct Listener {
    name: String,
    rx: mpsc::Receiver<Flow>,
    ep: Weak<EndpointInner>,
}

impl Listener {
    /// The next flow a peer opened to this name.
    pub async fn accept(&mut self) -> Result<Flow, Error> {
        self.rx.recv().await.ok_or(Error::Closed)
    }

    /// The name listened on.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(ep) = self.ep.upgrade() {
            ep.lock().services.remove(&self.name);
        }
    }
}

impl Endpoint {
    /// An endpoint for `identity`. Sockets open, and the system's network is followed
    /// (see [`NetworkSource`]), when it first listens or connects.
    pub fn new(identity: Identity, config: EndpointConfig) -> Endpoint {
        let (net_changed, _) = watch::channel(0);
        let state = State {
            ips: config.local_ips.clone(),
            port: config.listen_port,
            listeners: Vec::new(),
            services: HashMap::new(),
            flows: HashMap::new(),
            refresh: None,
            interfaces: Vec::new(),
            system_follower: None,
            app_follows: false,
        };
        Endpoint {
            inner: Arc::new(EndpointInner {
                identity,
                config,
                state: Mutex::new(state),
                net_changed,
                pins: Mutex::new(HashMap::new()),
                record_seq: AtomicU64::new(0),
                republish: Arc::new(Notify::new()),
                system_follow: tokio::sync::OnceCell::new(),
                takes_fast_open: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// This endpoint's public keys.
    pub fn public(&self) -> PublicIdentity {
        self.inner.identity.public()
    }

    /// Starts serving `name`: publishes a signed record with this endpoint's addresses
    /// (and keeps it current as they change) and returns a listener for its flows.
    pub async fn listen(&self, name: &str) -> Result<Listener, Error> {
        name::validate_name(name)?;
        self.follow_system_network().await;
        let (tx, rx) = mpsc::channel(64);
        {
            let mut st = self.inner.lock();
            if st.services.contains_key(name) {
                return Err(Error::AlreadyListening(name.to_string()));
            }
            if st.listeners.is_empty() {
                self.inner.bind_listeners(&mut st)?;
            }
            st.services.insert(name.to_string(), tx);
            if st.refresh.is_none() {
                st.refresh = Some(tokio::spawn(refresh_records(Arc::downgrade(&self.inner))).abort_handle());
            }
        }
        let listener = Listener { name: name.to_string(), rx, ep: Arc::downgrade(&self.inner) };
        self.inner.publish(name).await?;
        Ok(listener)
    }

    /// Opens a flow to the endpoint serving `name`.
    pub async fn connect(&self, name: &str) -> Result<Flow, Error> {
        self.follow_system_network().await;
        super::dial::connect(&self.inner, name).await
    }

    /// Tells the endpoint that its usable local addresses are now `ips` (the network
    /// watcher's and the platform's entry point). Subflows on vanished addresses are
    /// retired at once and re-dialed from the new ones; listening sockets move; names
    /// are re-published and peers told the new addresses.
    pub async fn set_local_ips(&self, ips: Vec<IpAddr>) -> Result<(), Error> {
        let names = self.apply_local_ips(ips)?;
        self.publish_names(names).await
    }

    /// The local part of [`set_local_ips`](Self::set_local_ips): moves listeners, retires
    /// subflows on vanished addresses, tells the peers of live flows our new addresses and
    /// wakes re-dialers. Returns the names to re-publish. Never waits on the network, so a
    /// network follower can apply the next change at once even while a publication of the
    /// previous one is stuck (for instance on a socket whose source address just vanished).
    pub(super) fn apply_local_ips(&self, ips: Vec<IpAddr>) -> Result<Vec<String>, Error> {
        let (flows, services, old_ips) = {
            let mut st = self.inner.lock();
            let old_ips = std::mem::replace(&mut st.ips, ips.clone());
            if !st.listeners.is_empty() {
                let keep: Vec<_> = st.listeners.drain(..).collect();
                for (addr, h) in keep {
                    if ips.is_empty() || ips.contains(&addr.ip()) {
                        st.listeners.push((addr, h));
                    } else {
                        h.abort();
                    }
                }
                self.inner.bind_listeners(&mut st)?;
            }
            let flows: Vec<_> = st.flows.values().filter_map(Weak::upgrade).collect();
            (flows, st.published_names(), old_ips)
        };
        tracing::info!(?ips, "local addresses changed");
        for conn in &flows {
            if !ips.is_empty() {
                for (id, local) in conn.subflow_locals() {
                    if !ips.contains(&local.ip()) {
                        conn.local_address_gone(id);
                    }
                }
            }
            conn.emit(FlowEvent::Moved { addrs: ips.clone() });
            conn.addresses_added(ips.iter().filter(|ip| !old_ips.contains(ip)));
            conn.wake_driver();
        }
        self.inner.net_changed.send_modify(|g| *g += 1);
        // Peers of live flows learn the new addresses first: that is local work, while
        // publishing waits on the name service.
        let addrs = self.inner.published_addrs();
        for conn in flows.iter().filter(|c| c.role == Role::Server) {
            let mut inner = conn.lock();
            inner.proto.advertise_addrs(addrs.clone(), Vec::new());
            conn.settle(&mut inner);
        }
        Ok(services)
    }

    /// Publishes `names` with the current addresses.
    ///
    /// A name service that cannot be reached right now must not leave the old addresses
    /// published for good, nor stop the other names from being published: publish every
    /// name, keep retrying the failures in the background, and report the first failure.
    pub(super) async fn publish_names(&self, names: Vec<String>) -> Result<(), Error> {
        let mut failed = None;
        for name in &names {
            if let Err(e) = self.inner.publish(name).await {
                tracing::warn!(name, error = %e, "publishing the new addresses failed; retrying in the background");
                failed.get_or_insert(e);
            }
        }
        if failed.is_some() {
            self.inner.republish.notify_one();
        }
        failed.map_or(Ok(()), Err)
    }

    /// The addresses this endpoint publishes for its names.
    pub fn published_addrs(&self) -> Vec<SocketAddr> {
        self.inner.published_addrs()
    }

    /// Follows `network` (from any watcher in [`crate::watch`]): on every change, hands
    /// the usable addresses (interfaces up, best first: Wi-Fi, Ethernet, other,
    /// cellular; loopback only with [`EndpointConfig::use_loopback`]) to
    /// [`set_local_ips`](Self::set_local_ips) if they differ from the current ones.
    /// Runs until the returned handle is dropped or stopped. Needs a tokio runtime.
    ///
    /// The endpoint then stops following the system's network by itself (see
    /// [`NetworkSource`]): the application's network is the one that counts.
    pub fn follow_network(&self, network: watch::Receiver<NetworkState>) -> NetworkFollower {
        {
            let mut st = self.inner.lock();
            st.app_follows = true;
            if let Some(own) = st.system_follower.take() {
                tracing::debug!("the application chose a network to follow; the system's is no longer followed");
                own.stop();
            }
        }
        NetworkFollower::spawn(Arc::downgrade(&self.inner), network)
    }

    /// Starts the best network watcher for this system (netlink on Linux, polling
    /// elsewhere; see [`crate::watch::system`]) and follows it, in place of the one the
    /// endpoint follows by default.
    pub async fn watch_network(&self) -> Result<NetworkFollower, WatchError> {
        let network = crate::watch::system(Classifier::new()).await?;
        Ok(self.follow_network(network))
    }

    /// Whether the endpoint follows the system's network by itself right now.
    pub fn follows_system_network(&self) -> bool {
        self.inner.lock().system_follower.as_ref().is_some_and(|f| !f.is_finished())
    }

    /// Starts following the system's network, once, if the configuration asks for it and
    /// the application follows none of its own. The watcher's first state is applied
    /// before this returns, so a listener binds, and a name is published, on the
    /// interfaces' addresses rather than on "any". A system without a usable watcher
    /// keeps the operating system's choices (logged).
    async fn follow_system_network(&self) {
        if !self.inner.config.follows_system_network() {
            return;
        }
        self.inner
            .system_follow
            .get_or_init(|| async {
                if self.inner.lock().app_follows {
                    return;
                }
                let network = match crate::watch::system(Classifier::new()).await {
                    Ok(network) => network,
                    Err(e) => {
                        tracing::warn!(error = %e, "the system's network watcher could not start; polling the interfaces instead");
                        match crate::watch::poll::start(Classifier::new(), crate::watch::poll::DEFAULT_INTERVAL) {
                            Ok(network) => network,
                            Err(e) => {
                                tracing::warn!(error = %e, "the interfaces cannot be listed; moves will not be followed");
                                return;
                            }
                        }
                    }
                };
                let follower = NetworkFollower::start(self, network).await;
                let mut st = self.inner.lock();
                if st.app_follows {
                    follower.stop();
                } else {
                    st.system_follower = Some(follower);
                }
            })
            .await;
    }

    /// The interfaces last seen by a followed network watcher (empty if none is
    /// followed), whether or not they are in use.
    pub fn interfaces(&self) -> Vec<Interface> {
        self.inner.lock().interfaces.clone()
    }

    pub(super) fn downgrade(&self) -> Weak<EndpointInner> {
        Arc::downgrade(&self.inner)
    }

    pub(super) fn upgrade(inner: &Weak<EndpointInner>) -> Option<Endpoint> {
        inner.upgrade().map(|inner| Endpoint { inner })
    }

    pub(super) fn uses_loopback(&self) -> bool {
        self.inner.config.use_loopback
    }

    /// Records the interfaces a watcher reported; returns the local addresses in use.
    pub(super) fn record_interfaces(&self, interfaces: Vec<Interface>) -> Vec<IpAddr> {
        let mut st = self.inner.lock();
        st.interfaces = interfaces;
        st.ips.clone()
    }
}

impl EndpointInner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn forget_flow(&self, id: &FlowId) {
        self.lock().flows.remove(id);
    }

    pub(crate) fn remember_flow(&self, conn: &Arc<Conn>) {
        self.lock().flows.insert(conn.keys.flow_id, Arc::downgrade(conn));
    }

    /// Binds a listening socket on every local address that lacks one.
    fn bind_listeners(self: &Arc<Self>, st: &mut State) -> Result<(), Error> {
        let wanted: Vec<IpAddr> =
            if st.ips.is_empty() { vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)] } else { st.ips.clone() };
        for ip in wanted {
            if st.listeners.iter().any(|(a, _)| a.ip() == ip) {
                continue;
            }
            let (listener, fast_open) = bind_listener(SocketAddr::new(ip, st.port))
                .or_else(|_| bind_listener(SocketAddr::new(ip, 0)))
                .map_err(|e| Error::io(format!("listen on {ip}"), e))?;
            self.takes_fast_open.store(fast_open, Ordering::Relaxed);
            let addr = listener.local_addr().map_err(|e| Error::io("listener address", e))?;
            if st.port == 0 {
                st.port = addr.port();
            }
            tracing::info!(%addr, "listening");
            let task = tokio::spawn(accept_loop(Arc::downgrade(self), listener));
            st.listeners.push((addr, task.abort_handle()));
        }
        Ok(())
    }

    /// Addresses peers can reach our listeners on.
    pub(crate) fn published_addrs(&self) -> Vec<SocketAddr> {
        self.lock().published_addrs()
    }

    /// Publishes (or refreshes) the record of `name` with the current addresses.
    ///
    /// Publications never fight each other. Each takes its sequence number and its
    /// addresses in one step under the state's lock, so a higher number always carries
    /// a newer view of the addresses; the name service keeps the highest. A publication
    /// that arrives after a newer one of ours (they run concurrently: a request stuck on
    /// a vanished source address must not hold back the next) was superseded, which is
    /// success. A newer record of this key that we did not make (a previous run whose
    /// clock was ahead) is overtaken by publishing again above it.
    async fn publish(&self, name: &str) -> Result<(), Error> {
        for _ in 0..2 {
            let signed = self.next_record(name)?;
            let seq = signed.record.seq;
            match self.config.names.register(&signed).await {
                Ok(()) => {
                    tracing::info!(name, addrs = ?signed.record.addrs, seq, "name published");
                    return Ok(());
                }
                Err(name::NameError::Stale { current, .. }) if current <= self.record_seq.load(Ordering::SeqCst) => {
                    tracing::debug!(name, seq, newer = current, "publication superseded by a newer one of ours");
                    return Ok(());
                }
                Err(name::NameError::Stale { current, .. }) => {
                    tracing::info!(name, seq, registered = current, "the name service holds a newer record of this key; publishing above it");
                    let _st = self.lock(); // sequence numbers move only under the state's lock
                    self.record_seq.fetch_max(current, Ordering::SeqCst);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Name(name::NameError::Store(format!("{name}: the registered record kept moving ahead of ours"))))
    }

    /// The signed record of `name` for a publication now: the next sequence number and
    /// the current addresses, taken together.
    fn next_record(&self, name: &str) -> Result<SignedRecord, Error> {
        let now = name::unix_now();
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let (seq, addrs) = {
            let st = self.lock();
            // Time-based sequence numbers stay increasing across restarts without storage.
            let seq = self.record_seq.load(Ordering::SeqCst).max(millis) + 1;
            self.record_seq.store(seq, Ordering::SeqCst);
            (seq, st.published_addrs())
        };
        let record = NameRecord::new(name.to_string(), self.identity.public(), addrs, seq, now + self.config.record_ttl.as_secs());
        Ok(SignedRecord::sign(record, &self.identity)?)
    }

    /// Looks `name` up and checks its keys against the ones seen first.
    pub(crate) async fn lookup_pinned(&self, name: &str) -> Result<NameRecord, Error> {
        let record = self.config.names.lookup(name).await?.record;
        self.check_pin(name, &record)?;
        Ok(record)
    }

    /// Checks a record of `name` against the keys seen first for it (and pins them if
    /// it is the first).
    pub(crate) fn check_pin(&self, name: &str, record: &NameRecord) -> Result<(), Error> {
        let offered = record.public();
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        let pinned = *pins.entry(name.to_string()).or_insert(offered);
        if pinned != offered {
            return Err(Error::KeyChanged {
                name: name.to_string(),
                pinned: pinned.fingerprint(),
                offered: offered.fingerprint(),
            });
        }
        Ok(())
    }

    /// The radio behind local address `ip`, from the interfaces a followed watcher
    /// reported (None: unknown).
    pub(crate) fn radio_for(&self, ip: IpAddr) -> Option<crate::energy::Radio> {
        use crate::energy::Radio;
        use crate::watch::InterfaceKind;
        let st = self.lock();
        let iface = st.interfaces.iter().find(|i| i.addrs.contains(&ip))?;
        match iface.kind {
            InterfaceKind::Wifi => Some(Radio::Wifi),
            InterfaceKind::Cellular => Some(Radio::Lte),
            InterfaceKind::Ethernet | InterfaceKind::Loopback => Some(Radio::Wired),
            InterfaceKind::Other => None,
        }
    }

    /// Our local addresses, best first (empty: the system chooses).
    pub(crate) fn local_ips(&self) -> Vec<IpAddr> {
        self.lock().ips.clone()
    }

    /// Our local addresses of `addr`'s family, best first (`[None]`: let the system
    /// choose, when no local address is configured).
    pub(crate) fn local_ips_for(&self, addr: SocketAddr) -> Vec<Option<IpAddr>> {
        let ips: Vec<Option<IpAddr>> =
            self.lock().ips.iter().copied().filter(|ip| ip.is_ipv4() == addr.is_ipv4()).map(Some).collect();
        if ips.is_empty() { vec![None] } else { ips }
    }

    /// A TCP connection to `addr` from `local` (None: the system chooses) that starts
    /// with `early`: in the SYN with `fast_open` where TCP Fast Open works (see
    /// `fast_open`), right after the handshake otherwise. Bounded by `io_timeout`.
    pub(crate) async fn dial_tcp_from(
        &self,
        local: Option<IpAddr>,
        addr: SocketAddr,
        early: &[u8],
        fast_open: bool,
    ) -> std::io::Result<TcpStream> {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        if let Some(ip) = local {
            sock.bind(&SocketAddr::new(ip, 0).into())?;
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

    /// Serves one incoming TCP connection: a new flow or a join.
    async fn handle_incoming(self: Arc<Self>, mut stream: TcpStream) -> Result<(), String> {
        let opening = read_exchange(&mut stream, opening::decode_opening).await.map_err(|e| e.to_string())?;
        match opening {
            Opening::NewFlow(msg) => {
                let responder = Responder::read(&self.identity, &msg).map_err(|e| e.to_string())?;
                let name = responder.name.clone();
                let Some(tx) = self.lock().services.get(&name).cloned() else {
                    let reply = responder.refuse_unknown_name().map_err(|e| e.to_string())?;
                    let _ = stream.write_all(&opening::handshake_message(&[], &reply)).await;
                    return Err(format!("refused a flow for {name:?}: not served here"));
                };
                let (reply, keys) = responder.accept().map_err(|e| e.to_string())?;
                // Known before the reply leaves: the client may join a second subflow the
                // moment it has the reply, and a JOIN for a flow we do not know is refused
                // with our signature, which ends the flow.
                let conn = Conn::new(keys, Role::Server, name, self.config.flow.clone(), Arc::downgrade(&self));
                self.remember_flow(&conn);
                if let Err(e) = stream.write_all(&opening::handshake_message(&[], &reply)).await {
                    self.forget_flow(&conn.keys.flow_id);
                    return Err(e.to_string());
                }
                conn.attach(stream, 0, None, None);
                tokio::spawn(conn.clone().drive());
                if let Err(mpsc::error::TrySendError::Full(flow) | mpsc::error::TrySendError::Closed(flow)) =
                    tx.try_send(Flow::new(conn))
                {
                    flow.abort("the listener is not accepting");
                }
                Ok(())
            }
            Opening::Join(request) => {
                let (flow_id, seq) = (request.flow, request.seq);
                let conn = self.lock().flows.get(&flow_id).and_then(Weak::upgrade);
                let verdict = match &conn {
                    None => opening::admit_join(&request, None),
                    Some(c) => {
                        let mut inner = c.lock();
                        let target = JoinTarget { join_key: &c.keys.join_key, joins_seen: &mut inner.joins_seen };
                        opening::admit_join(&request, Some(target))
                    }
                };
                match (verdict, conn) {
                    (Ok(()), Some(conn)) => {
                        let fast_open = self.takes_fast_open.load(Ordering::Relaxed);
                        let ok = opening::join_accept(&conn.keys.join_key, &flow_id, seq, fast_open);
                        stream.write_all(&ok).await.map_err(|e| e.to_string())?;
                        conn.attach(stream, seq, None, Some(request.resume));
                        Ok(())
                    }
                    (verdict, _) => {
                        let why = verdict.err().unwrap_or(JoinRefusal::UnknownFlow);
                        let _ = stream.write_all(&opening::join_refuse(why, &self.identity, &flow_id, seq)).await;
                        Err(format!("refused a join for flow {flow_id}: {why}"))
                    }
                }
            }
        }
    }
}

/// A listening socket on `addr`, and whether it takes JOINs in SYNs.
fn bind_listener(addr: SocketAddr) -> std::io::Result<(TcpListener, bool)> {
    let sock = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    let fast_open = super::fast_open::allow_on_listener(&sock);
    Ok((sock.listen(1024)?, fast_open))
}

/// Non-loopback interface addresses, or loopback when there is nothing else.
fn interface_ips() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback() && i.ip().is_ipv4())
        .map(|i| i.ip())
        .collect();
    if ips.is_empty() {
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    ips
}

/// Incoming subflows allowed in their opening exchange at once (per listening socket);
/// more are closed at once, so a flood cannot pile up tasks.
const MAX_PENDING_OPENINGS: usize = 256;

async fn accept_loop(ep: Weak<EndpointInner>, listener: TcpListener) {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_OPENINGS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(ep) = ep.upgrade() else { return };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many subflows opening at once; closing this one");
            continue;
        };
        let limit = ep.config.io_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(limit, ep.handle_incoming(stream)).await {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => tracing::warn!(%peer, reason, "incoming subflow refused"),
                Err(_) => tracing::warn!(%peer, "incoming subflow timed out in its handshake"),
            }
        });
    }
}

/// First delay before re-trying a failed publish; doubles up to [`MAX_REPUBLISH_RETRY`].
const FIRST_REPUBLISH_RETRY: Duration = Duration::from_millis(100);
const MAX_REPUBLISH_RETRY: Duration = Duration::from_secs(2);

/// Re-publishes every name at half the record lifetime, and soon after a failed publish
/// (with back-off) until the name service takes the records again.
async fn refresh_records(ep: Weak<EndpointInner>) {
    let mut retry: Option<Duration> = None;
    loop {
        let Some((period, kick)) = ep.upgrade().map(|e| (e.config.record_ttl / 2, e.republish.clone())) else {
            return;
        };
        let period = period.max(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(retry.map_or(period, |r| r.min(period))) => {}
            _ = kick.notified() => {
                // A publish just failed elsewhere: retry after the first back-off step.
                retry = Some(FIRST_REPUBLISH_RETRY);
                continue;
            }
        }
        let Some(ep) = ep.upgrade() else { return };
        let names = ep.lock().published_names();
        let mut ok = true;
        for name in names {
            if let Err(e) = ep.publish(&name).await {
                tracing::warn!(name, error = %e, "re-publishing the name record failed");
                ok = false;
            }
        }
        retry = if ok { None } else { Some(retry.map_or(FIRST_REPUBLISH_RETRY, |r| (r * 2).min(MAX_REPUBLISH_RETRY))) };
    }
}
