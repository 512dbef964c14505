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

use super::config::EndpointConfig;
use super::conn::{Conn, FlowOwner, Role, Route};
use super::host::Host;
use super::events::FlowEvent;
use super::flow::Flow;
use super::follow::NetworkFollower;
use super::header::{read_exchange, ExchangeError};
use super::Error;
use crate::identity::{Identity, PublicIdentity};
use crate::name::{self, NameRecord, SignedRecord};
use crate::session::join::JoinRefusal;
use crate::session::opening::{self, Admitted, ExpectedJoins, JoinTarget, Opening};
use crate::session::admission::{Admission, AdmissionLimits, AdmissionRefusal, OpeningId};
use crate::session::{FlowId, HandshakeError, Refusal, Responder};
use crate::relay::RelayUrl;
use crate::trust::PeerName;
use crate::watch::{Classifier, Interface, NetworkState, WatchError};

struct State {
    port: u16,
    listeners: Vec<(SocketAddr, AbortHandle)>,
    services: HashMap<String, mpsc::Sender<Flow>>,
    flows: HashMap<FlowId, Weak<Conn>>,
    /// Flows peers opened to us, with the peer's Noise key, as counted by admission.
    accepted: HashMap<FlowId, [u8; 32]>,
    /// The JOINs expected for those flows, by identifier.
    joins: ExpectedJoins,
    refresh: Option<AbortHandle>,
    /// The follower of the system's network that the endpoint started by itself.
    system_follower: Option<NetworkFollower>,
    /// The application chose a network to follow: the endpoint starts none of its own.
    app_follows: bool,
    /// One registration per configured relay, while listening.
    relay_links: Vec<RelayLink>,
}

/// A configured relay's registration.
struct RelayLink {
    url: RelayUrl,
    task: AbortHandle,
    /// It holds a live registration now (and is listed in our records).
    registered: bool,
    /// It succeeded or failed at least once.
    tried: bool,
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

    /// The relays that hold a live registration of ours.
    fn registered_relays(&self) -> Vec<String> {
        self.relay_links.iter().filter(|l| l.registered).map(|l| l.url.to_string()).collect()
    }

    /// Addresses peers can reach our listeners on (none when only relays may be used).
    fn published_addrs(&self, relay_only: bool) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        if relay_only {
            return out;
        }
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
    /// Itself, for the tasks it starts from `&self`.
    me: Weak<EndpointInner>,
    /// What the endpoint shares with its flows.
    host: Arc<Host>,
    state: Mutex<State>,
    record_seq: AtomicU64,
    /// Wakes the refresh task after a publish failed, so it retries soon instead of at
    /// the next periodic refresh (held in an `Arc` so the task can wait on it without
    /// keeping the endpoint alive).
    republish: Arc<Notify>,
    /// Set once the system's network is followed (or that was found impossible).
    system_follow: tokio::sync::OnceCell<()>,
    /// Our listeners take JOINs in SYNs (TCP Fast Open); our JOIN answers say so.
    takes_fast_open: std::sync::atomic::AtomicBool,
    /// Who may open what (see `session/admission.rs`).
    admission: Mutex<Admission>,
    /// The tasks reading openings, to drop the ones admission evicts.
    openings: Mutex<HashMap<OpeningId, AbortHandle>>,
    /// The clock admission's rate limits run on.
    started: std::time::Instant,
    /// Signalled whenever a relay registration succeeds or fails.
    relays_tried: Notify,
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
        for link in state.relay_links.drain(..) {
            link.task.abort();
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
        write!(f, "Endpoint({})", self.inner.host.identity.public().fingerprint())
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
    /// (see [`NetworkSource`](crate::NetworkSource)), when it first listens or connects.
    pub fn new(identity: Identity, config: EndpointConfig) -> Endpoint {
        let state = State {
            port: config.listen_port,
            listeners: Vec::new(),
            services: HashMap::new(),
            flows: HashMap::new(),
            accepted: HashMap::new(),
            joins: ExpectedJoins::default(),
            refresh: None,
            system_follower: None,
            app_follows: false,
            relay_links: Vec::new(),
        };
        Endpoint {
            inner: Arc::new_cyclic(|me| EndpointInner {
                me: me.clone(),
                host: Arc::new(Host::new(identity, config)),
                state: Mutex::new(state),
                record_seq: AtomicU64::new(0),
                republish: Arc::new(Notify::new()),
                system_follow: tokio::sync::OnceCell::new(),
                relays_tried: Notify::new(),
                takes_fast_open: std::sync::atomic::AtomicBool::new(false),
                admission: Mutex::new(Admission::new(AdmissionLimits::default())),
                openings: Mutex::new(HashMap::new()),
                started: std::time::Instant::now(),
            }),
        }
    }

    /// This endpoint's public keys.
    pub fn public(&self) -> PublicIdentity {
        self.inner.host.identity.public()
    }

    /// The keys allowed to open flows to this endpoint (`None`: any), as configured.
    pub fn allowed_peers(&self) -> Option<&[crate::Fingerprint]> {
        self.inner.host.config.allowed_peers.as_deref()
    }

    /// Moves this endpoint's handshake clock to `timestamp` (tests that play a second
    /// process of the same key, or a clock that went backwards). Not part of the API.
    #[doc(hidden)]
    pub fn set_handshake_clock_for_tests(&self, timestamp: u64) {
        self.inner.host.handshake_clock.store(timestamp, Ordering::SeqCst);
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
            if st.relay_links.is_empty() {
                for url in &self.inner.host.config.relays {
                    let task = tokio::spawn(super::relay_link::keep_registered(Arc::downgrade(&self.inner), url.clone()));
                    st.relay_links.push(RelayLink { url: url.clone(), task: task.abort_handle(), registered: false, tried: false });
                }
            }
        }
        let listener = Listener { name: name.to_string(), rx, ep: Arc::downgrade(&self.inner) };
        self.inner.first_relay_outcomes().await;
        self.inner.publish(name).await?;
        Ok(listener)
    }

    /// Opens a flow to the endpoint serving `peer`: a name (`alice.phone`), whose keys are
    /// pinned at the first lookup and must match the pin from then on, or a name with the
    /// fingerprint its keys must have (`alice.phone#<fingerprint>`), which also replaces
    /// the pin. See [`crate::trust`].
    pub async fn connect(&self, peer: &str) -> Result<Flow, Error> {
        let peer: PeerName = peer.parse()?;
        self.connect_to(&peer).await
    }

    /// [`connect`](Self::connect) to a parsed [`PeerName`].
    pub async fn connect_to(&self, peer: &PeerName) -> Result<Flow, Error> {
        self.follow_system_network().await;
        let owner: Weak<dyn FlowOwner> = Arc::downgrade(&self.inner) as Weak<dyn FlowOwner>;
        super::dial::connect(&self.inner.host, owner, peer).await.map(Flow::new)
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
            let old_ips = self.inner.host.replace_local_ips(ips.clone());
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
        self.inner.host.network_changed();
        // Peers of live flows learn the new addresses first: that is local work, while
        // publishing waits on the name service.
        self.inner.advertise(&flows);
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

    /// The relays that hold a live registration of this endpoint now (and are listed in
    /// its name records).
    pub fn registered_relays(&self) -> Vec<String> {
        self.inner.lock().registered_relays()
    }

    /// Follows `network` (from any watcher in [`crate::watch`]): on every change, hands
    /// the usable addresses (interfaces up, best first: Wi-Fi, Ethernet, other,
    /// cellular; loopback only with [`EndpointConfig::use_loopback`]) to
    /// [`set_local_ips`](Self::set_local_ips) if they differ from the current ones. The
    /// current state is applied before this returns, so a `connect` or `listen` right
    /// after uses its addresses (names are published in the background). Runs until the
    /// returned handle is dropped or stopped. Needs a tokio runtime.
    ///
    /// The endpoint then stops following the system's network by itself (see
    /// [`NetworkSource`](crate::NetworkSource)): the application's network is the one that
    /// counts.
    pub fn follow_network(&self, network: watch::Receiver<NetworkState>) -> NetworkFollower {
        {
            let mut st = self.inner.lock();
            st.app_follows = true;
            if let Some(own) = st.system_follower.take() {
                tracing::debug!("the application chose a network to follow; the system's is no longer followed");
                own.stop();
            }
        }
        NetworkFollower::start(self, network)
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
        if !self.inner.host.config.follows_system_network() {
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
                let follower = NetworkFollower::start(self, network);
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
        self.inner.host.interfaces()
    }

    pub(super) fn downgrade(&self) -> Weak<EndpointInner> {
        Arc::downgrade(&self.inner)
    }

    pub(super) fn upgrade(inner: &Weak<EndpointInner>) -> Option<Endpoint> {
        inner.upgrade().map(|inner| Endpoint { inner })
    }

    pub(super) fn uses_loopback(&self) -> bool {
        self.inner.host.config.use_loopback
    }

    /// Records the interfaces a watcher reported; returns the local addresses in use.
    pub(super) fn record_interfaces(&self, interfaces: Vec<Interface>) -> Vec<IpAddr> {
        self.inner.host.record_interfaces(interfaces)
    }
}

impl EndpointInner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember_flow(&self, conn: &Arc<Conn>) {
        self.lock().flows.insert(conn.keys.flow_id, Arc::downgrade(conn));
    }

    fn admission(&self) -> MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget_flow(&self, id: &FlowId) {
        let mut st = self.lock();
        st.flows.remove(id);
        st.joins.forget(id);
        if let Some(peer) = st.accepted.remove(id) {
            drop(st);
            self.admission().flow_ended(&peer);
        }
    }

    /// Binds a listening socket on every local address that lacks one.
    fn bind_listeners(self: &Arc<Self>, st: &mut State) -> Result<(), Error> {
        let ips = self.host.local_ips();
        let wanted: Vec<IpAddr> = if ips.is_empty() { vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)] } else { ips };
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
        self.lock().published_addrs(self.host.config.relay_only)
    }

    pub(super) fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// Tells peers of the flows opened to us (of `flows`) where we are now: our addresses
    /// and the relays that hold our registration.
    fn advertise(&self, flows: &[Arc<Conn>]) {
        let (addrs, relays) = {
            let st = self.lock();
            (st.published_addrs(self.host.config.relay_only), st.registered_relays())
        };
        for conn in flows.iter().filter(|c| c.role == Role::Server) {
            let mut inner = conn.lock();
            inner.proto.advertise_addrs(addrs.clone(), relays.clone());
            conn.settle(&mut inner);
        }
    }

    /// A relay registration succeeded or ended: the records list the relays that hold one
    /// (published soon, by the refresh task), and peers of live flows are told.
    pub(super) fn relay_registration(&self, url: &RelayUrl, registered: bool) {
        let (changed, flows) = {
            let mut st = self.lock();
            let Some(link) = st.relay_links.iter_mut().find(|l| l.url == *url) else { return };
            let changed = link.registered != registered;
            link.registered = registered;
            link.tried = true;
            (changed, st.flows.values().filter_map(Weak::upgrade).collect::<Vec<_>>())
        };
        self.relays_tried.notify_waiters();
        if changed {
            self.republish.notify_one();
            self.advertise(&flows);
        }
    }

    /// Waits (at most `io_timeout`) until every relay registration succeeded or failed
    /// once, so that a name's first record lists the relays that work.
    async fn first_relay_outcomes(&self) {
        let wait = async {
            loop {
                let tried = self.relays_tried.notified();
                if self.lock().relay_links.iter().all(|l| l.tried) {
                    return;
                }
                tried.await;
            }
        };
        let _ = tokio::time::timeout(self.host.config.io_timeout, wait).await;
    }

    /// Serves an incoming connection (from `source`, as the relay saw it if relayed): it
    /// takes a place among the openings being read from `source`, which may evict
    /// another's.
    pub(super) fn take_incoming(self: &Arc<Self>, stream: TcpStream, source: SocketAddr, route: Route) {
        let relayed = route.is_relayed();
        let (id, evicted) = match self.admission().opening(source.ip()) {
            Ok(x) => x,
            Err(reason) => {
                tracing::warn!(%source, %reason, relayed, "incoming subflow refused");
                return;
            }
        };
        let mut tasks = self.openings.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(task) = evicted.and_then(|old| tasks.remove(&old)) {
            tracing::info!(%source, "openings pool full: dropped the oldest subflow still opening");
            task.abort();
        }
        let limit = self.host.config.io_timeout;
        let slot = OpeningSlot { ep: Arc::downgrade(self), id };
        // Registered before the task can finish (it unregisters under the same lock).
        let task = tokio::spawn({
            let ep = self.clone();
            async move {
                match tokio::time::timeout(limit, ep.handle_incoming(stream, source, slot, route)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(reason)) => tracing::warn!(%source, %reason, relayed, "incoming subflow refused"),
                    Err(_) => tracing::warn!(%source, relayed, "incoming subflow timed out in its handshake"),
                }
            }
        });
        tasks.insert(id, task.abort_handle());
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
            match self.host.config.names.register(&signed).await {
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
            (seq, st.published_addrs(self.host.config.relay_only))
        };
        let host = &self.host;
        let expires = now + host.config.record_ttl.as_secs();
        let mut record = NameRecord::new(name.to_string(), host.identity.public(), addrs, seq, expires);
        record.relays = self.lock().registered_relays();
        Ok(SignedRecord::sign(record, &host.identity)?)
    }

    /// Whether the initiator of `responder` may open a flow: its handshake is not a replay,
    /// its key is allowed, the name is served here and the flow caps have room (the flow
    /// is then counted). Refusals come with what to tell the peer and what to log.
    fn admit_flow(&self, responder: &Responder) -> Result<mpsc::Sender<Flow>, (Refusal, Refused)> {
        let (name, peer) = (&responder.name, responder.peer);
        match self.admission().fresh(&peer.noise, responder.timestamp) {
            Ok(()) => {}
            Err(e @ AdmissionRefusal::Replayed { latest, .. }) => return Err((Refusal::Replayed { latest }, e.into())),
            Err(e) => return Err((Refusal::Busy, e.into())),
        }
        if let Some(allowed) = &self.host.config.allowed_peers {
            if !allowed.iter().any(|fp| fp.matches(&peer)) {
                let logged = Refused::NotAllowed { name: name.clone(), peer: peer.fingerprint() };
                return Err((Refusal::NotAllowed, logged));
            }
        }
        let Some(tx) = self.lock().services.get(name).cloned() else {
            return Err((Refusal::UnknownName, Refused::NotServed(name.clone())));
        };
        self.admission().flow_started(&peer.noise).map_err(|e| (Refusal::Busy, e.into()))?;
        Ok(tx)
    }

    /// Serves one incoming TCP connection: a new flow or a join. `opening` holds its place
    /// among the openings being read until the opening exchange is in.
    async fn handle_incoming(
        self: Arc<Self>,
        mut stream: TcpStream,
        source: SocketAddr,
        opening: OpeningSlot,
        route: Route,
    ) -> Result<(), Refused> {
        let deadline = (self.host.config.io_timeout / 2).max(Duration::from_secs(1));
        let read = tokio::time::timeout(deadline, read_exchange(&mut stream, opening::decode_opening)).await;
        drop(opening);
        match read.map_err(|_| Refused::OpeningTimedOut(deadline))?? {
            Opening::NewFlow(msg) => {
                let now = self.started.elapsed();
                self.admission().handshake(source.ip(), now)?;
                let responder = Responder::read(&self.host.identity, &msg)?;
                let (name, peer) = (responder.name.clone(), responder.peer);
                let tx = match self.admit_flow(&responder) {
                    Ok(tx) => tx,
                    Err((refusal, logged)) => {
                        let reply = responder.refuse(refusal)?;
                        let _ = stream.write_all(&opening::handshake_message(&[], &reply)).await;
                        return Err(logged);
                    }
                };
                let (reply, keys) = match responder.accept() {
                    Ok(x) => x,
                    Err(e) => {
                        self.admission().flow_ended(&peer.noise);
                        return Err(e.into());
                    }
                };
                {
                    let mut st = self.lock();
                    st.accepted.insert(keys.flow_id, peer.noise);
                    st.joins.expect(keys.flow_id, &keys.join_key, 0);
                }
                tracing::info!(name, peer = %peer.fingerprint(), flow = %keys.flow_id, %source, "accepted a flow");
                // Known before the reply leaves: the client may join a second subflow the
                // moment it has the reply, and a JOIN for a flow we do not know is refused
                // with our signature, which ends the flow.
                let owner: Weak<dyn FlowOwner> = Arc::downgrade(&self) as Weak<dyn FlowOwner>;
                let flow_config = self.host.config.flow.clone();
                let conn = Conn::new(keys, Role::Server, name, peer, flow_config, Arc::downgrade(&self.host), owner);
                conn.announce();
                if let Err(e) = stream.write_all(&opening::handshake_message(&[], &reply)).await {
                    self.forget_flow(&conn.keys.flow_id);
                    return Err(e.into());
                }
                conn.attach(stream, 0, None, None, route);
                tokio::spawn(conn.clone().drive());
                if let Err(mpsc::error::TrySendError::Full(flow) | mpsc::error::TrySendError::Closed(flow)) =
                    tx.try_send(Flow::new(conn))
                {
                    flow.refuse();
                }
                Ok(())
            }
            Opening::Join(request) => {
                if !request.verify_mac1(&self.host.identity.public().noise) {
                    // From someone who does not know our key: not even a refusal.
                    return Err(Refused::JoinMac1);
                }
                let seq = request.seq;
                let conn = {
                    let st = self.lock();
                    st.joins.flow(&request.id, seq).and_then(|f| st.flows.get(&f)).and_then(Weak::upgrade)
                };
                let verdict = match &conn {
                    None => opening::admit_join(&request, None),
                    Some(c) => {
                        let mut inner = c.lock();
                        let target = JoinTarget { join_key: &c.keys.join_key, joins: &mut inner.joins };
                        opening::admit_join(&request, Some(target))
                    }
                };
                let verdict = match (verdict, &conn) {
                    (Ok(Admitted::Copy), Some(c)) if c.join_proven(seq) => Err(JoinRefusal::Replayed),
                    (verdict, _) => verdict,
                };
                match (verdict, conn) {
                    (Ok(admitted), Some(conn)) => {
                        let flow_id = conn.keys.flow_id;
                        if admitted == Admitted::First {
                            self.lock().joins.expect(flow_id, &conn.keys.join_key, seq);
                        } else {
                            tracing::info!(flow = %flow_id, seq, %source, "a copy of a JOIN: the first of its subflows to carry a fresh record keeps it");
                        }
                        let fast_open = self.takes_fast_open.load(Ordering::Relaxed);
                        let ok = opening::join_accept(&conn.keys.join_key, &request.id, seq, fast_open);
                        stream.write_all(&ok).await?;
                        conn.attach(stream, seq, None, Some(request.resume), route);
                        Ok(())
                    }
                    (verdict, conn) => {
                        let why = verdict.err().unwrap_or(JoinRefusal::UnknownFlow);
                        let _ = stream.write_all(&opening::join_refuse(why, &self.host.identity, &request.id, seq)).await;
                        Err(Refused::Join { flow: conn.map(|c| c.keys.flow_id), why })
                    }
                }
            }
        }
    }
}

/// Why an incoming subflow was not taken (logged; the client learns what the protocol
/// lets it: a refused JOIN's code, a sealed handshake refusal, or a closed socket).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("opening exchange: {0}")]
    Opening(#[from] ExchangeError),
    #[error("no opening exchange within {0:?}")]
    OpeningTimedOut(Duration),
    #[error("{0}")]
    Admission(#[from] AdmissionRefusal),
    #[error("a flow for {name:?} from {peer}: not on the allow-list")]
    NotAllowed { name: String, peer: String },
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("a flow for {0:?}: not served here")]
    NotServed(String),
    #[error("a join for flow {}: {why}", flow.map_or("(unknown)".to_string(), |f| f.to_string()))]
    Join { flow: Option<FlowId>, why: JoinRefusal },
    #[error("a join from someone who does not know our key (bad mac1): closed without an answer")]
    JoinMac1,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl FlowOwner for EndpointInner {
    fn flow_started(&self, conn: &Arc<Conn>) {
        self.remember_flow(conn);
    }

    fn flow_ended(&self, id: &FlowId) {
        self.forget_flow(id);
    }

    fn incoming(&self, stream: TcpStream, source: SocketAddr) {
        if let Some(me) = self.me.upgrade() {
            me.take_incoming(stream, source, Route::Direct);
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

/// An opening's place in admission's pool, given back when dropped (read, failed, or
/// evicted with its task).
struct OpeningSlot {
    ep: Weak<EndpointInner>,
    id: OpeningId,
}

impl Drop for OpeningSlot {
    fn drop(&mut self) {
        if let Some(ep) = self.ep.upgrade() {
            ep.admission().opening_done(self.id);
            ep.openings.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
        }
    }
}

async fn accept_loop(weak: Weak<EndpointInner>, listener: TcpListener) {
    loop {
        let (stream, source) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(ep) = weak.upgrade() else { return };
        ep.take_incoming(stream, source, Route::Direct);
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
        let Some((period, kick)) = ep.upgrade().map(|e| (e.host.config.record_ttl / 2, e.republish.clone())) else {
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
