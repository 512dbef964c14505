//! A flow's shared state.
//!
//! The sans-IO [`FlowState`] sits behind one mutex, shared by the application's [`Flow`]
//! handle, two tasks per subflow and one driver task:
//! - the subflow **reader** (`reader.rs`) reads records, opens them *outside* the lock (so
//!   decryption on one core overlaps encryption on the other), then feeds their frames in;
//! - the subflow **writer** (`writer.rs`) takes records out under the lock, seals them
//!   outside it and writes them; it sleeps on a `Notify` until the state machine has
//!   something for it;
//! - the **driver** (`driver.rs`) runs timers (acks, keepalives, liveness, the flow
//!   deadline) and, on the connecting side, re-dials when the flow has no subflow left.
//!
//! This file holds what they share: the state, subflows joining and leaving, and
//! [`Conn::settle`], which after every change turns the state machine's events into
//! wake-ups and application events. Critical sections never await.
//!
//! [`Flow`]: super::Flow

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch, Notify};

use super::host::Host;
use super::events::{FlowEvent, PathLossReason};
use super::reader::{reader, JoinCheck};
use super::unsent::SentLog;
use super::writer::writer;
use crate::energy::EnergyMeter;
use crate::identity::PublicIdentity;
use crate::proto::{self, FlowState, FlowStatus, SubflowId};
use crate::session::records::{Batch, BatchLimit, Packer, PacketNumbers, Receiver};
use crate::session::opening::JoinsSeen;
use crate::session::{FlowId, SessionKeys};

/// Which end of the flow this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// We connected: we re-dial when the flow loses its last subflow.
    Client,
    /// We accepted: we wait for the client to join again.
    Server,
}

/// How a subflow reaches the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Direct,
    /// Spliced by a relay, which saw our end of it at `ours` and the peer's at `peers`
    /// (the addresses hole punching dials from and to).
    Relayed { ours: SocketAddr, peers: SocketAddr },
}

impl Route {
    pub(crate) fn is_relayed(self) -> bool {
        matches!(self, Route::Relayed { .. })
    }
}

/// Control of one subflow's tasks.
struct Sub {
    local: SocketAddr,
    remote: SocketAddr,
    /// Direct, or through a relay (`remote` is then the relay's address).
    route: Route,
    /// 0 for the handshake's subflow, else the join sequence it came with (copies of one
    /// JOIN share it).
    token: u64,
    /// A fresh record arrived on it: the peer holds the flow's keys at this end of it.
    proven: bool,
    /// Packs this subflow's records (their size grows as its connection warms up).
    packer: Packer,
    /// Modelled energy of this path's radio (None: its interface's kind is unknown).
    energy: Option<EnergyMeter>,
    /// The kind of the local interface it leaves from, when the subflow came up (None:
    /// no known interface held its local address).
    interface: Option<crate::watch::InterfaceKind>,
    wake: Arc<Notify>,
    kill: watch::Sender<bool>,
    /// Which DATA went into which part of the socket's stream.
    sent: SentLog,
    /// The socket's `TCP_NOTSENT_LOWAT`, which follows the path's rate (see `socket.rs`).
    notsent_lowat: u32,
}

/// Client: the relays the peer now lists (ADDRS), resolved, replace the known ones.
pub(super) async fn learn_peer_relays(conn: Weak<Conn>, relays: Vec<String>) {
    let Some(host) = conn.upgrade().and_then(|c| c.host.upgrade()) else { return };
    let resolved = super::relay_dial::resolve(&host, &relays, host.config.io_timeout).await;
    if resolved.is_empty() && !relays.is_empty() {
        return; // none resolves now: the ones known may still work
    }
    if let Some(conn) = conn.upgrade() {
        let mut inner = conn.lock();
        if resolved != inner.peer_relays {
            tracing::debug!(flow = %conn.keys.flow_id, relays = ?resolved, "the peer's relays changed");
            inner.peer_relays = resolved;
            inner.paths.changed();
        }
    }
}

/// How long a client that lost its last path right after the transfer keeps re-dialing to
/// deliver its last acknowledgement.
const FINAL_ACK_REDIAL: Duration = Duration::from_secs(10);

/// The mutable part of a flow.
pub(crate) struct Inner {
    pub(crate) proto: FlowState,
    subflows: HashMap<SubflowId, Sub>,
    /// Numbers of the records we send, on every subflow.
    packet_numbers: PacketNumbers,
    /// The records we took, on every subflow.
    pub(super) receiver: Receiver,
    pub(crate) read_waker: Option<Waker>,
    pub(crate) write_waker: Option<Waker>,
    pub(crate) shutdown_waker: Option<Waker>,
    /// Set once the flow finished or failed.
    pub(super) terminal_at: Option<Instant>,
    pub(super) driver_deadline: Option<Instant>,
    pub(crate) dialing: bool,
    /// Client: how long the next re-dial waits before its first attempt. Grows each time a
    /// re-dial attached a subflow that died before the peer said anything on it (an address
    /// that accepts and closes, a refused join); back to zero once a record is heard.
    pub(crate) redial_pause: Duration,
    /// Client: the highest join sequence the peer accepted (0: none yet)...
    pub(crate) join_accepted: u64,
    /// ...and the JOINs sent since (see `dial::next_join`).
    pub(crate) joins_since: u64,
    /// Server: the join sequence numbers accepted (a JOIN's is never accepted twice).
    pub(crate) joins: JoinsSeen,
    /// Client: the peer's last JOIN answer said its host takes JOINs in SYNs.
    pub(crate) peer_fast_open: bool,
    /// Where the peer was last reachable (client side re-dials these first).
    pub(crate) peer_addrs: Vec<SocketAddr>,
    /// Client: the relays the peer listed, resolved (re-dialed beside `peer_addrs`).
    pub(crate) peer_relays: Vec<SocketAddr>,
    /// Client: relays the peer just announced, for the driver to resolve.
    pub(super) peer_relays_listed: Option<Vec<String>>,
    /// Client: the transfer is complete, but the last path broke (not closed by the peer)
    /// so soon that the peer may lack our acknowledgement of its end: the peer cannot
    /// dial us, so we re-dial until then to deliver it (a resumed subflow carries it).
    pub(crate) final_ack_until: Option<Instant>,
    /// Client: when to try to go direct from a relayed path.
    pub(super) punch: super::punch::PunchPlan,
    /// Listener: a PUNCH to answer, for the driver: (local end to dial from, address to dial).
    pub(super) punch_back: Option<(SocketAddr, SocketAddr)>,
    /// Client: the peer's Ed25519 key from its name record, which must sign a claim that
    /// it no longer knows the flow before that claim ends the flow.
    pub(crate) peer_signing_key: Option<[u8; 32]>,
    /// The application dropped its handle: received data is discarded.
    pub(crate) app_gone: bool,
    /// Client: standby subflows and subflows to newly announced peer addresses.
    pub(crate) paths: super::paths::Paths,
    /// Modelled joules of the subflows already gone (None: none had a known radio).
    energy_gone: Option<f64>,
    /// Client: how the flow uses its paths.
    pub(crate) policy: super::paths::PathPolicy,
}

impl Inner {
    /// The peer is reachable at `addrs` now; the ones it did not list before are worth a
    /// subflow.
    fn set_peer_addrs(&mut self, addrs: Vec<SocketAddr>) {
        let old = std::mem::replace(&mut self.peer_addrs, addrs);
        self.paths.peer_listed(&old, &self.peer_addrs);
    }

    /// Keeps the modelled energy of a subflow that is going.
    /// Adds a path that is gone to the flow's energy; returns the path's joules.
    fn bank_energy(&mut self, sub: &Sub) -> Option<f64> {
        let mut meter = sub.energy.clone()?;
        meter.advance(Instant::now());
        *self.energy_gone.get_or_insert(0.0) += meter.joules();
        Some(meter.joules())
    }

    /// Modelled joules of the flow's paths so far, gone ones included (None: no path had
    /// an interface of known kind).
    pub(crate) fn energy_joules(&mut self) -> Option<f64> {
        let now = Instant::now();
        let mut total = self.energy_gone;
        for sub in self.subflows.values_mut() {
            if let Some(meter) = sub.energy.as_mut() {
                meter.advance(now);
                *total.get_or_insert(0.0) += meter.joules();
            }
        }
        total
    }

    /// (local, remote) of the live subflows, active ones first.
    pub(crate) fn subflow_ends(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let mut ends: Vec<_> = self.subflows.iter().map(|(id, s)| (self.proto.is_standby(*id), s.local, s.remote)).collect();
        ends.sort_by_key(|e| e.0);
        ends.into_iter().map(|(_, l, r)| (l, r)).collect()
    }

    /// Subflows that repeat an older one's local address and peer address (a re-dial and
    /// a standby dial that raced): the newer ones, to retire.
    pub(crate) fn duplicate_subflows(&self) -> Vec<SubflowId> {
        let mut ids: Vec<_> = self.subflows.keys().copied().collect();
        ids.sort();
        let mut seen = Vec::new();
        let mut extra = Vec::new();
        for id in ids {
            let s = &self.subflows[&id];
            let key = (s.local.ip(), s.remote);
            if seen.contains(&key) {
                extra.push(id);
            } else {
                seen.push(key);
            }
        }
        extra
    }

    /// Client: whether the flow needs a subflow dialed now: it has none, and still has
    /// something to send, acknowledge or receive, or a last acknowledgement to deliver.
    pub(crate) fn needs_subflow(&self, now: Instant) -> bool {
        let final_ack = self.final_ack_until.is_some_and(|until| now < until);
        self.proto.live_subflows() == 0 && (final_ack || self.proto.needs_path())
    }

    /// The relayed subflows: (id, local end, our end and the peer's as the relay saw them).
    pub(crate) fn relayed_subflows(&self) -> Vec<(SubflowId, SocketAddr, SocketAddr, SocketAddr)> {
        let mut out: Vec<_> = self
            .subflows
            .iter()
            .filter_map(|(id, s)| match s.route {
                Route::Relayed { ours, peers } => Some((*id, s.local, ours, peers)),
                Route::Direct => None,
            })
            .collect();
        out.sort_by_key(|(id, ..)| *id);
        out
    }

    pub(crate) fn has_direct_subflow(&self) -> bool {
        self.subflows.values().any(|s| s.route == Route::Direct)
    }

    pub(crate) fn subflow_ids_and_locals(&self) -> Vec<(SubflowId, SocketAddr)> {
        self.subflows.iter().map(|(id, s)| (*id, s.local)).collect()
    }

    /// Whether subflow `id` is still part of the flow (not retired).
    pub(super) fn has_subflow(&self, id: SubflowId) -> bool {
        self.subflows.contains_key(&id)
    }

    pub(super) fn has_no_subflow(&self) -> bool {
        self.subflows.is_empty()
    }

    /// Counts `bytes` received on subflow `id` for its radio's energy.
    pub(super) fn meter_received(&mut self, id: SubflowId, now: Instant, bytes: u64) {
        if let Some(meter) = self.subflows.get_mut(&id).and_then(|s| s.energy.as_mut()) {
            meter.on_bytes(now, 0, bytes);
        }
    }

    /// Cuts every subflow's tasks at once (a lingering flow's time is up).
    pub(super) fn cut_subflows(&mut self) {
        for (_, sub) in self.subflows.drain() {
            let _ = sub.kill.send(true);
        }
    }

    /// The low-water mark subflow `id`'s socket should have now, when it differs by more
    /// than a quarter from the one it has (the rate estimate moves all the time).
    pub(super) fn notsent_lowat_change(&mut self, id: SubflowId) -> Option<u32> {
        let rate = self.proto.subflow_stats(id)?.delivery_rate;
        let sub = self.subflows.get_mut(&id)?;
        let want = super::socket::notsent_lowat_for(rate);
        if want.abs_diff(sub.notsent_lowat) <= sub.notsent_lowat / 4 {
            return None;
        }
        sub.notsent_lowat = want;
        Some(want)
    }
}

/// Whoever keeps the flows by id (the endpoint, to route JOINs and address changes to
/// them): told when a flow starts and when it is over.
pub(crate) trait FlowOwner: Send + Sync {
    fn flow_started(&self, conn: &Arc<Conn>);
    fn flow_ended(&self, id: &FlowId);
    /// Serves a connection that opened directly to us from `source` (a punched path).
    fn incoming(&self, stream: TcpStream, source: SocketAddr);
}

impl Conn {
    /// Hands a connection that opened directly from `source` to the endpoint, which
    /// serves it like any incoming subflow.
    pub(crate) fn hand_to_owner(&self, stream: TcpStream, source: SocketAddr) {
        if let Some(owner) = self.owner.upgrade() {
            owner.incoming(stream, source);
        }
    }

    /// Client: a hole punching attempt ended; true if it was the last one (the flow
    /// stays relayed, and says so).
    pub(crate) fn punch_ended(&self, joined: bool, now: Instant) -> bool {
        let (gave_up, attempts) = {
            let mut inner = self.lock();
            let gave_up = inner.punch.ended(joined, now);
            inner.paths.changed();
            (gave_up, inner.punch.attempts())
        };
        if gave_up {
            self.emit(FlowEvent::StaysRelayed { attempts: attempts as u32 });
        }
        self.driver.notify_one();
        gave_up
    }

    /// Registers the flow with its owner.
    pub(crate) fn announce(self: &Arc<Self>) {
        if let Some(owner) = self.owner.upgrade() {
            owner.flow_started(self);
        }
    }

    /// Tells the owner the flow is over.
    pub(super) fn announce_end(&self) {
        if let Some(owner) = self.owner.upgrade() {
            owner.flow_ended(&self.keys.flow_id);
        }
    }
}

/// One flow, shared by its handle and its tasks.
pub(crate) struct Conn {
    inner: Mutex<Inner>,
    pub(crate) keys: Arc<SessionKeys>,
    pub(super) driver: Notify,
    pub(crate) role: Role,
    /// The service name this flow was opened for.
    pub(crate) name: String,
    /// The peer's keys: from its name record (we connected) or its handshake (we
    /// accepted: the Noise key authenticated, the signing key as the peer claims it).
    pub(crate) peer: PublicIdentity,
    /// What the flow needs of its endpoint: dialing, lookups, the local network.
    pub(crate) host: Weak<Host>,
    owner: Weak<dyn FlowOwner>,
    events: broadcast::Sender<FlowEvent>,
    /// Becomes true once the flow is over and every subflow has flushed and closed.
    pub(super) quiet: watch::Sender<bool>,
}

impl Conn {
    pub(crate) fn new(
        keys: Arc<SessionKeys>,
        role: Role,
        name: String,
        peer: PublicIdentity,
        config: proto::FlowConfig,
        host: Weak<Host>,
        owner: Weak<dyn FlowOwner>,
    ) -> Arc<Conn> {
        let (events, _) = broadcast::channel(super::events::EVENT_BACKLOG);
        let policy = host.upgrade().map(|h| h.config.path_policy).unwrap_or_default();
        let mut proto = FlowState::new(config, Instant::now());
        if role == Role::Client {
            // The connecting end chooses; the peer learns it with the first frames.
            proto.set_policy(policy);
        }
        Arc::new(Conn {
            inner: Mutex::new(Inner {
                proto,
                subflows: HashMap::new(),
                packet_numbers: PacketNumbers::default(),
                receiver: Receiver::default(),
                read_waker: None,
                write_waker: None,
                shutdown_waker: None,
                terminal_at: None,
                driver_deadline: None,
                dialing: false,
                redial_pause: Duration::ZERO,
                join_accepted: 0,
                joins_since: 0,
                joins: JoinsSeen::new(),
                peer_fast_open: false,
                peer_addrs: Vec::new(),
                peer_relays: Vec::new(),
                peer_relays_listed: None,
                final_ack_until: None,
                punch: Default::default(),
                punch_back: None,
                peer_signing_key: None,
                app_gone: false,
                paths: Default::default(),
                energy_gone: None,
                policy,
            }),
            keys,
            driver: Notify::new(),
            role,
            name,
            peer,
            host,
            owner,
            events,
            quiet: watch::channel(false).0,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug; the state is still the best we have.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<FlowEvent> {
        self.events.subscribe()
    }

    pub(crate) fn emit(&self, ev: FlowEvent) {
        tracing::debug!(flow = %self.keys.flow_id, event = ?ev, "flow event");
        let _ = self.events.send(ev);
    }

    /// Waits until the flow is over and every subflow has flushed and closed.
    pub(crate) async fn quiet(&self) {
        let _ = self.quiet.subscribe().wait_for(|q| *q).await;
    }

    pub(crate) fn wake_driver(&self) {
        self.driver.notify_one();
    }

    pub(crate) fn paths(&self) -> Vec<super::events::Path> {
        let mut inner = self.lock();
        let now = Instant::now();
        for sub in inner.subflows.values_mut() {
            if let Some(meter) = sub.energy.as_mut() {
                meter.advance(now);
            }
        }
        let mut paths: Vec<_> = inner
            .subflows
            .iter()
            .map(|(id, s)| {
                let stats = inner.proto.subflow_stats(*id).unwrap_or_default();
                super::events::Path {
                    local: s.local,
                    remote: s.remote,
                    relayed: s.route.is_relayed(),
                    standby: inner.proto.is_standby(*id),
                    state: stats.state,
                    srtt: stats.srtt,
                    delivery_rate: stats.delivery_rate,
                    in_flight: stats.in_flight,
                    bytes_delivered: stats.bytes_delivered,
                    bytes_sent: stats.bytes_sent,
                    bytes_received: stats.bytes_received,
                    energy_joules: s.energy.as_ref().map(EnergyMeter::joules),
                    interface: s.interface,
                }
            })
            .collect();
        paths.sort_by_key(|p| p.standby);
        paths
    }

    /// Local addresses of the live subflows.
    pub(crate) fn subflow_locals(&self) -> Vec<(SubflowId, SocketAddr)> {
        self.lock().subflow_ids_and_locals()
    }

    /// Turns the state machine's news into wake-ups and application events. Call after
    /// every interaction with `inner.proto`, with the lock held.
    pub(crate) fn settle(&self, inner: &mut Inner) {
        while let Some(ev) = inner.proto.poll_event() {
            match ev {
                proto::FlowEvent::SubflowDead { id } => {
                    if let Some(sub) = inner.subflows.remove(&id) {
                        let _ = sub.kill.send(true);
                        let energy_joules = inner.bank_energy(&sub);
                        inner.paths.changed();
                        inner.paths.lost(sub.local.ip(), Instant::now());
                        self.assign_standbys(inner);
                        self.driver.notify_one();
                        self.emit(FlowEvent::PathLost {
                            local: sub.local,
                            remote: sub.remote,
                            reason: PathLossReason::Dead,
                            interface: sub.interface,
                            energy_joules,
                        });
                    }
                }
                proto::FlowEvent::Resumed { outage, .. } => self.emit(FlowEvent::Resumed { outage }),
                proto::FlowEvent::PeerAddrs { addrs, relays } => {
                    let addrs = self.host.upgrade().map_or_else(Vec::new, |h| h.dialable(&addrs));
                    inner.set_peer_addrs(addrs.clone());
                    self.driver.notify_one();
                    self.emit(FlowEvent::PeerMoved { addrs });
                    if self.role == Role::Client {
                        // Resolved by the driver (names may need DNS).
                        inner.peer_relays_listed = Some(relays);
                    }
                }
                proto::FlowEvent::PunchRequested { id, from, to } => {
                    let host = self.host.upgrade();
                    let relay_only = host.as_ref().is_none_or(|h| h.config.relay_only);
                    let dialable = host.is_some_and(|h| !h.dialable(&[from]).is_empty());
                    let local = inner.subflows.get(&id).and_then(|s| match s.route {
                        Route::Relayed { ours, .. } if ours == to => Some(s.local),
                        _ => None,
                    });
                    match local {
                        Some(local) if self.role == Role::Server && !relay_only && dialable => {
                            inner.punch_back = Some((local, from));
                            self.driver.notify_one();
                        }
                        _ => tracing::debug!(flow = %self.keys.flow_id, %from, %to, relay_only, "a PUNCH not answered"),
                    }
                }
                proto::FlowEvent::Finished => {
                    self.emit(FlowEvent::Closed { error: None, energy_joules: inner.energy_joules() })
                }
                proto::FlowEvent::Failed(e) => self.emit(FlowEvent::Closed {
                    error: Some(e),
                    energy_joules: inner.energy_joules(),
                }),
                _ => {}
            }
        }
        let terminal = !matches!(inner.proto.status(), FlowStatus::Open);
        if terminal && inner.terminal_at.is_none() {
            inner.terminal_at = Some(Instant::now());
            self.driver.notify_one();
        }
        if terminal && inner.subflows.is_empty() {
            self.quiet.send_if_modified(|q| !std::mem::replace(q, true));
        }
        if inner.app_gone {
            let mut sink = [0u8; 16 * 1024];
            while let Ok(proto::ReadOutcome::Data(_)) = inner.proto.read(&mut sink) {}
        }
        if terminal || inner.proto.is_readable() {
            if let Some(w) = inner.read_waker.take() {
                w.wake();
            }
        }
        if terminal || inner.proto.is_writable() {
            if let Some(w) = inner.write_waker.take() {
                w.wake();
            }
        }
        if let Some(w) = inner.shutdown_waker.take() {
            w.wake();
        }
        for (id, sub) in &inner.subflows {
            if terminal || inner.proto.wants_transmit(*id) {
                sub.wake.notify_one();
            }
        }
        if let Some(t) = inner.proto.poll_timeout() {
            if inner.driver_deadline.is_none_or(|d| t < d) {
                inner.driver_deadline = Some(t);
                self.driver.notify_one();
            }
        }
    }

    /// Puts an authenticated TCP connection to work as a subflow of this flow. `token` is
    /// the name both ends give it: 0 for the handshake's subflow, the join sequence for a
    /// joined one (so either end can report it lost with ABANDON).
    pub(crate) fn attach(
        self: &Arc<Self>,
        stream: TcpStream,
        token: u64,
        reader_prefix: Option<JoinCheck>,
        peer_resume: Option<u64>,
        route: Route,
    ) {
        let relayed = route.is_relayed();
        super::socket::tune_subflow(&stream);
        let (Ok(local), Ok(remote)) = (stream.local_addr(), stream.peer_addr()) else {
            return;
        };
        let remote = self.host.upgrade().map_or(remote, |host| host.peer_address(local, remote));
        let sent = SentLog::new(&stream);
        let handed = sent.handed();
        let (r, w) = stream.into_split();
        let wake = Arc::new(Notify::new());
        let (kill, kill_rx) = watch::channel(false);
        let (id, interface) = {
            let mut inner = self.lock();
            // A finished flow still takes subflows while it lingers: a peer that lost our
            // last ACK rejoins to get it (the new subflow's resume ACK carries it).
            if matches!(inner.proto.status(), FlowStatus::Failed(_)) {
                return;
            }
            let id = inner.proto.add_subflow(Instant::now());
            inner.proto.set_subflow_token(id, token);
            if token != 0 && reader_prefix.is_none() {
                // A join the peer dialed: its resume ACK comes first, unless its JOIN
                // already said where the peer's data stops.
                inner.proto.set_peer_speaks_first(id);
                if let Some(at) = peer_resume {
                    if let Err(e) = inner.proto.peer_resumes_at(id, at, Instant::now()) {
                        tracing::warn!(flow = %self.keys.flow_id, error = %e, "a JOIN's resume point makes no sense; waiting for the resume ACK");
                    }
                }
            }
            let host = self.host.upgrade();
            let interface = host.as_ref().and_then(|host| host.interface_kind_for(local.ip()));
            let energy = host.as_ref().and_then(|host| host.radio_for(local.ip()));
            let energy = energy.map(|radio| EnergyMeter::new(radio.params(), Instant::now()));
            let sub = Sub {
                local,
                remote,
                route,
                token,
                proven: false,
                packer: Packer::default(),
                energy,
                interface,
                wake: wake.clone(),
                kill,
                sent,
                notsent_lowat: super::socket::NOTSENT_LOWAT,
            };
            inner.subflows.insert(id, sub);
            // The JOIN that opened it carried our resume point: the peer has our last ACK.
            inner.final_ack_until = None;
            if !relayed && !inner.peer_addrs.contains(&remote) {
                inner.peer_addrs.insert(0, remote);
            }
            self.assign_standbys(&mut inner);
            inner.paths.changed();
            self.settle(&mut inner);
            (id, interface)
        };
        tracing::info!(flow = %self.keys.flow_id, %local, %remote, relayed, ?interface, subflow = id.0, "subflow up");
        self.emit(FlowEvent::PathAdded { local, remote, relayed, interface });
        tokio::spawn(writer(self.clone(), id, w, handed, wake, kill_rx.clone()));
        tokio::spawn(reader(self.clone(), id, r, kill_rx, reader_prefix));
    }

    /// Client: switches how the flow uses its paths; the peer is told by STANDBY frames.
    pub(crate) fn set_policy(&self, policy: super::paths::PathPolicy) {
        let mut inner = self.lock();
        inner.policy = policy;
        inner.proto.set_policy(policy);
        self.assign_standbys(&mut inner);
        self.settle(&mut inner);
    }

    /// Client: the peer's name record now lists `addrs`. Subflows to addresses it no
    /// longer lists are retired at once (the peer left them; waiting for their dead-path
    /// timer would only stall the flow), and re-dials start from the new list.
    /// Relayed subflows stay: the relay still reaches the peer (the relays it lists now
    /// are re-learned as well).
    pub(crate) fn peer_moved(&self, addrs: Vec<SocketAddr>, relays: Vec<String>) {
        self.lock().peer_relays_listed = Some(relays);
        self.driver.notify_one();
        if addrs.is_empty() {
            return;
        }
        let left: Vec<SubflowId> = {
            let mut inner = self.lock();
            inner.set_peer_addrs(addrs.clone());
            inner.subflows.iter().filter(|(_, s)| !s.route.is_relayed() && !addrs.contains(&s.remote)).map(|(id, _)| *id).collect()
        };
        for id in left {
            self.subflow_gone(id, PathLossReason::PeerLeftAddress);
        }
        self.driver.notify_one();
    }

    /// Whether a subflow that came with join `seq` is proven already (a copy of its JOIN
    /// arriving now is not the joiner's).
    pub(crate) fn join_proven(&self, seq: u64) -> bool {
        self.lock().subflows.values().any(|s| s.token == seq && s.proven)
    }

    /// A fresh record arrived on subflow `id`. The first time, other subflows that came
    /// with the same JOIN (copies made on the path) and are not proven are not the
    /// joiner's: they are returned, to be retired.
    pub(crate) fn proven(&self, inner: &mut Inner, id: SubflowId) -> Vec<SubflowId> {
        let Some(sub) = inner.subflows.get_mut(&id).filter(|s| !s.proven) else {
            return Vec::new();
        };
        sub.proven = true;
        let token = sub.token;
        if token == 0 {
            return Vec::new();
        }
        inner
            .subflows
            .iter()
            .filter(|(&other, s)| other != id && s.token == token && !s.proven)
            .map(|(&other, _)| other)
            .collect()
    }

    /// Retires a subflow whose socket failed or closed, or that is no longer wanted.
    pub(crate) fn subflow_gone(&self, id: SubflowId, reason: PathLossReason) {
        self.retire_subflow(id, reason, false);
    }

    /// Retires a subflow whose local address vanished: what left its socket is on its
    /// way to the peer, what did not is re-sent at once.
    pub(crate) fn local_address_gone(&self, id: SubflowId) {
        self.retire_subflow(id, PathLossReason::LocalAddressGone, true);
    }

    fn retire_subflow(&self, id: SubflowId, reason: PathLossReason, path_intact: bool) {
        let mut inner = self.lock();
        let Some(sub) = inner.subflows.remove(&id) else {
            return;
        };
        let _ = sub.kill.send(true);
        let energy_joules = inner.bank_energy(&sub);
        inner.paths.changed();
        // A subflow that died before the peer said a word there (a refused join, a port
        // that accepts and closes) makes its address back off; a working one that broke
        // (its address went, a NAT forgot it) may be replaced at once.
        if !inner.proto.is_heard(id) {
            inner.paths.lost(sub.local.ip(), Instant::now());
        }
        match path_intact.then(|| sub.sent.never_sent()).flatten() {
            Some(never_sent) => {
                let units: u64 = never_sent.iter().map(|r| r.end - r.start).sum();
                tracing::debug!(flow = %self.keys.flow_id, subflow = id.0, units, "units that never left the lost subflow go at once");
                inner.proto.remove_subflow_unsent(id, Instant::now(), &never_sent)
            }
            None => inner.proto.remove_subflow(id, Instant::now()),
        }
        self.assign_standbys(&mut inner);
        // The peer closes subflows only once its flow is over, and answers a JOIN for a
        // flow it finished with a refusal: either way it needs nothing more.
        let peer_closed =
            matches!(reason, PathLossReason::PeerClosed | PathLossReason::FlowOver | PathLossReason::JoinRefused { .. });
        if self.role == Role::Client && inner.subflows.is_empty() && !peer_closed && inner.proto.transfer_complete() {
            let until = Instant::now() + FINAL_ACK_REDIAL;
            tracing::debug!(flow = %self.keys.flow_id, "the last path broke right after the transfer; re-dialing to deliver its last acknowledgement");
            inner.final_ack_until = Some(until);
        }
        tracing::info!(flow = %self.keys.flow_id, local = %sub.local, remote = %sub.remote, %reason, "subflow down");
        self.emit(FlowEvent::PathLost {
            local: sub.local,
            remote: sub.remote,
            reason,
            interface: sub.interface,
            energy_joules,
        });
        self.settle(&mut inner);
        self.driver.notify_one();
    }

    /// Takes records of frames for subflow `id` within `limit`, each with its packet
    /// number, to encode and seal once the lock is released ([`Batch::seal_into`]): the
    /// copies and the cipher run outside the lock.
    pub(super) fn take_records(&self, inner: &mut Inner, id: SubflowId, limit: BatchLimit) -> Batch {
        let now = Instant::now();
        let Inner { proto, subflows, packet_numbers, .. } = inner;
        let Some(sub) = subflows.get_mut(&id) else {
            return Batch::default();
        };
        let batch = sub.packer.pack(proto, id, now, packet_numbers, limit);
        sub.sent.on_batch(batch.sealed_len, batch.data_log.iter().cloned());
        if let Some(meter) = sub.energy.as_mut().filter(|_| !batch.is_empty()) {
            meter.on_bytes(now, batch.sealed_len as u64, 0);
        }
        batch
    }

    /// Copies what fits of `data` into chunks of its own *before* taking the lock, then
    /// appends them to the send buffer: the subflows' writers and readers need the lock
    /// all the time, and should not wait while a large write is copied. Ok(0) when
    /// little or nothing fits now (or the flow cannot take writes): the caller's plain
    /// write then does it, or says why.
    pub(crate) fn write_copied(&self, data: &[u8]) -> Result<usize, proto::FlowError> {
        const CHUNK: usize = 64 * 1024;
        // Only this handle adds to the send buffer: the room can only grow meanwhile.
        let room = self.lock().proto.send_capacity();
        // A sliver of room is filled by the plain write, which gathers small pieces into
        // shared chunks, rather than as a tiny chunk of its own.
        if room < 4096 {
            return Ok(0);
        }
        let chunks: Vec<Bytes> = data[..data.len().min(room)].chunks(CHUNK).map(Bytes::copy_from_slice).collect();
        let mut inner = self.lock();
        let mut written = 0;
        for chunk in chunks {
            written += inner.proto.write_chunk(chunk)?;
        }
        self.settle(&mut inner);
        Ok(written)
    }
}

