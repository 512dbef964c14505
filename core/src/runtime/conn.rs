//! A flow's shared state and the tasks that drive it.
//!
//! The sans-IO [`FlowState`] sits behind one mutex, shared by the application's [`Flow`]
//! handle, two tasks per subflow and one driver task:
//! - the subflow **reader** reads a record, opens it *outside* the lock (so decryption on
//!   one core overlaps encryption on the other), then feeds its frames in;
//! - the subflow **writer** takes frames out under the lock, seals them outside it and
//!   writes them; it sleeps on a `Notify` until the state machine has something for it;
//! - the **driver** runs timers (acks, keepalives, liveness, the flow deadline) and, on the
//!   connecting side, re-dials when the flow has no subflow left.
//!
//! After every change, [`Conn::settle`] turns the state machine's events into wake-ups and
//! application events. Critical sections never await.
//!
//! [`Flow`]: super::Flow

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch, Notify};

use super::endpoint::EndpointInner;
use super::events::{FlowEvent, IoOperation, PathLossReason};
use super::header::{read_exchange, ExchangeError};
use super::read_slabs::ReadSlabs;
use super::unsent::SentLog;
use crate::energy::EnergyMeter;
use crate::proto::{self, FlowState, FlowStatus, SubflowId};
use crate::session::records::{self, Batch, BatchLimit, Delivery, OpenError, Packer, PacketNumbers, Receiver, RECORD_HEADER_LEN};
use crate::session::join::JoinRefusal;
use crate::session::opening::{decode_join_answer, JoinAnswerError, JoinSent};
use crate::session::{ReplayWindow, SessionKeys};

/// How long a finished or failed flow waits for its writers to flush before cutting them.
const LINGER: Duration = Duration::from_secs(2);
/// Records a writer seals per batch (bounds latency and memory per wake-up).
const RECORDS_PER_BATCH: usize = 8;
/// Bytes a writer seals per batch, at most (plus one record), while its socket takes
/// every batch without waiting; what it holds beyond the socket's low-water mark is
/// committed to its path (see `socket.rs`), and a frame made after it (an ACK) waits
/// behind it. A socket that makes the writer wait halves the batch, down to
/// [`MIN_BATCH_BYTES`]; one that takes a full batch at once doubles it: large batches
/// (fewer wake-ups and system calls) where the path is fast, little queued ahead of ACKs
/// where it is not.
const MAX_BATCH_BYTES: usize = 512 * 1024;
/// A new writer's batch limit, and the least it shrinks to.
const MIN_BATCH_BYTES: usize = 32 * 1024;
/// The least room a read is given (small records, such as ACKs, arrive whole in one read).
const MIN_READ: usize = 4096;

/// Which end of the flow this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// We connected: we re-dial when the flow loses its last subflow.
    Client,
    /// We accepted: we wait for the client to join again.
    Server,
}

/// Control of one subflow's tasks.
struct Sub {
    local: SocketAddr,
    remote: SocketAddr,
    /// Packs this subflow's records (their size grows as its connection warms up).
    packer: Packer,
    /// Modelled energy of this path's radio (None: its interface's kind is unknown).
    energy: Option<EnergyMeter>,
    wake: Arc<Notify>,
    kill: watch::Sender<bool>,
    /// Which DATA went into which part of the socket's stream.
    sent: SentLog,
    /// The socket's `TCP_NOTSENT_LOWAT`, which follows the path's rate (see `socket.rs`).
    notsent_lowat: u32,
}

/// The mutable part of a flow.
pub(crate) struct Inner {
    pub(crate) proto: FlowState,
    subflows: HashMap<SubflowId, Sub>,
    /// Numbers of the records we send, on every subflow.
    packet_numbers: PacketNumbers,
    /// The records we took, on every subflow.
    receiver: Receiver,
    pub(crate) read_waker: Option<Waker>,
    pub(crate) write_waker: Option<Waker>,
    pub(crate) shutdown_waker: Option<Waker>,
    /// Set once the flow finished or failed.
    terminal_at: Option<Instant>,
    driver_deadline: Option<Instant>,
    pub(crate) dialing: bool,
    /// Client: how long the next re-dial waits before its first attempt. Grows each time a
    /// re-dial attached a subflow that died before the peer said anything on it (an address
    /// that accepts and closes, a refused join); back to zero once a record is heard.
    pub(crate) redial_pause: Duration,
    /// Client: the last join sequence used.
    pub(crate) join_seq: u64,
    /// Server: the join sequence numbers accepted (a JOIN's is never accepted twice).
    pub(crate) joins_seen: ReplayWindow,
    /// Client: the peer's last JOIN answer said its host takes JOINs in SYNs.
    pub(crate) peer_fast_open: bool,
    /// Where the peer was last reachable (client side re-dials these first).
    pub(crate) peer_addrs: Vec<SocketAddr>,
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

    pub(crate) fn subflow_ids_and_locals(&self) -> Vec<(SubflowId, SocketAddr)> {
        self.subflows.iter().map(|(id, s)| (*id, s.local)).collect()
    }
}

/// One flow, shared by its handle and its tasks.
pub(crate) struct Conn {
    inner: Mutex<Inner>,
    pub(crate) keys: Arc<SessionKeys>,
    driver: Notify,
    pub(crate) role: Role,
    /// The service name this flow was opened for.
    pub(crate) name: String,
    pub(crate) endpoint: Weak<EndpointInner>,
    events: broadcast::Sender<FlowEvent>,
    /// Becomes true once the flow is over and every subflow has flushed and closed.
    quiet: watch::Sender<bool>,
}

impl Conn {
    pub(crate) fn new(
        keys: Arc<SessionKeys>,
        role: Role,
        name: String,
        config: proto::FlowConfig,
        endpoint: Weak<EndpointInner>,
    ) -> Arc<Conn> {
        let (events, _) = broadcast::channel(256);
        let policy = endpoint.upgrade().map(|ep| ep.config.path_policy).unwrap_or_default();
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
                join_seq: 0,
                joins_seen: ReplayWindow::new(),
                peer_fast_open: false,
                peer_addrs: Vec::new(),
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
            endpoint,
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

    pub(crate) fn paths(&self) -> Vec<super::flow::Path> {
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
                super::flow::Path {
                    local: s.local,
                    remote: s.remote,
                    standby: inner.proto.is_standby(*id),
                    state: stats.state,
                    srtt: stats.srtt,
                    delivery_rate: stats.delivery_rate,
                    in_flight: stats.in_flight,
                    bytes_delivered: stats.bytes_delivered,
                    bytes_sent: stats.bytes_sent,
                    bytes_received: stats.bytes_received,
                    energy_joules: s.energy.as_ref().map(EnergyMeter::joules),
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
                            energy_joules,
                        });
                    }
                }
                proto::FlowEvent::Resumed { outage, .. } => self.emit(FlowEvent::Resumed { outage }),
                proto::FlowEvent::PeerAddrs { addrs, .. } => {
                    inner.set_peer_addrs(addrs.clone());
                    self.driver.notify_one();
                    self.emit(FlowEvent::PeerMoved { addrs });
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
    ) {
        super::socket::tune_subflow(&stream);
        let (Ok(local), Ok(remote)) = (stream.local_addr(), stream.peer_addr()) else {
            return;
        };
        let sent = SentLog::new(&stream);
        let handed = sent.handed();
        let (r, w) = stream.into_split();
        let wake = Arc::new(Notify::new());
        let (kill, kill_rx) = watch::channel(false);
        let id = {
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
            let energy = self.endpoint.upgrade().and_then(|ep| ep.radio_for(local.ip()));
            let energy = energy.map(|radio| EnergyMeter::new(radio.params(), Instant::now()));
            let sub = Sub {
                local,
                remote,
                packer: Packer::default(),
                energy,
                wake: wake.clone(),
                kill,
                sent,
                notsent_lowat: super::socket::NOTSENT_LOWAT,
            };
            inner.subflows.insert(id, sub);
            if !inner.peer_addrs.contains(&remote) {
                inner.peer_addrs.insert(0, remote);
            }
            self.assign_standbys(&mut inner);
            inner.paths.changed();
            self.settle(&mut inner);
            id
        };
        tracing::info!(flow = %self.keys.flow_id, %local, %remote, subflow = id.0, "subflow up");
        self.emit(FlowEvent::PathAdded { local, remote });
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
    pub(crate) fn peer_moved(&self, addrs: Vec<SocketAddr>) {
        if addrs.is_empty() {
            return;
        }
        let left: Vec<SubflowId> = {
            let mut inner = self.lock();
            inner.set_peer_addrs(addrs.clone());
            inner.subflows.iter().filter(|(_, s)| !addrs.contains(&s.remote)).map(|(id, _)| *id).collect()
        };
        for id in left {
            self.subflow_gone(id, PathLossReason::PeerLeftAddress);
        }
        self.driver.notify_one();
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
        tracing::info!(flow = %self.keys.flow_id, local = %sub.local, remote = %sub.remote, %reason, "subflow down");
        self.emit(FlowEvent::PathLost { local: sub.local, remote: sub.remote, reason, energy_joules });
        self.settle(&mut inner);
        self.driver.notify_one();
    }

    /// Runs timers and re-dials until the flow is over.
    pub(crate) async fn drive(self: Arc<Self>) {
        loop {
            let deadline = {
                let mut inner = self.lock();
                let now = Instant::now();
                inner.proto.handle_timeout(now);
                self.settle(&mut inner);
                if let Some(t) = inner.terminal_at {
                    // A finished flow lingers so a peer that lost our last ACK can rejoin.
                    let finished = matches!(inner.proto.status(), FlowStatus::Finished);
                    if inner.subflows.is_empty() && (!finished || now >= t + LINGER) {
                        break;
                    }
                    if now >= t + LINGER {
                        for (_, sub) in inner.subflows.drain() {
                            let _ = sub.kill.send(true);
                        }
                        self.quiet.send_replace(true);
                        break;
                    }
                } else if self.role == Role::Client
                    && inner.proto.live_subflows() == 0
                    && inner.proto.needs_path()
                    && !inner.dialing
                {
                    inner.dialing = true;
                    tokio::spawn(super::dial::redial(self.clone()));
                }
                let mut d = inner.proto.poll_timeout();
                if let Some(t) = inner.terminal_at {
                    d = Some(d.map_or(t + LINGER, |d| d.min(t + LINGER)));
                } else if let Some(t) = inner.paths.next_retry(now) {
                    d = Some(d.map_or(t, |d| d.min(t)));
                }
                inner.driver_deadline = d;
                d
            };
            self.ensure_paths();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.driver.notified() => {}
            }
        }
        if let Some(ep) = self.endpoint.upgrade() {
            ep.forget_flow(&self.keys.flow_id);
        }
        tracing::debug!(flow = %self.keys.flow_id, "flow driver done");
    }

    /// Takes up to [`RECORDS_PER_BATCH`] records of frames (and about `batch_bytes`) for
    /// subflow `id`, each with its packet number, to encode and seal once the lock is
    /// released ([`Batch::seal_into`]): the copies and the cipher run outside the lock.
    fn take_records(&self, inner: &mut Inner, id: SubflowId, batch_bytes: usize) -> Batch {
        let now = Instant::now();
        let Inner { proto, subflows, packet_numbers, .. } = inner;
        let Some(sub) = subflows.get_mut(&id) else {
            return Batch::default();
        };
        let limit = BatchLimit { records: RECORDS_PER_BATCH, bytes: batch_bytes };
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

/// The low-water mark subflow `id`'s socket should have now, when it differs by more than
/// a quarter from the one it has (the rate estimate moves all the time).
fn notsent_lowat_change(inner: &mut Inner, id: SubflowId) -> Option<u32> {
    let rate = inner.proto.subflow_stats(id)?.delivery_rate;
    let sub = inner.subflows.get_mut(&id)?;
    let want = super::socket::notsent_lowat_for(rate);
    if want.abs_diff(sub.notsent_lowat) <= sub.notsent_lowat / 4 {
        return None;
    }
    sub.notsent_lowat = want;
    Some(want)
}

/// For a joining client: the JOIN answer to read before any record.
pub(crate) struct JoinCheck {
    pub(crate) seq: u64,
}

async fn killed(kill: &mut watch::Receiver<bool>) {
    let _ = kill.wait_for(|k| *k).await;
}

/// Why a subflow's reader or writer stopped.
enum Stop {
    /// The subflow was retired (and reported) already.
    Retired,
    /// The peer closed its side (end of stream).
    Eof,
    Lost(PathLossReason),
}

/// Reads what the socket holds into the room of the current slab.
async fn read_more(
    r: &mut OwnedReadHalf,
    slabs: &mut ReadSlabs,
    kill: &mut watch::Receiver<bool>,
) -> Result<(), Stop> {
    use bytes::BufMut as _;
    // Reads that never wait take no turn from the runtime's budget on their own.
    tokio::task::consume_budget().await;
    loop {
        let room = slabs.room();
        match r.try_read_buf(&mut slabs.bytes().limit(room)) {
            Ok(0) => return Err(Stop::Eof),
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Stop::Lost(PathLossReason::io(IoOperation::Read, &e))),
        }
        slabs.on_idle(Instant::now());
        tokio::select! {
            res = r.readable() => res.map_err(|e| Stop::Lost(PathLossReason::io(IoOperation::Read, &e)))?,
            _ = killed(kill) => return Err(Stop::Retired),
        }
    }
}

async fn writer(
    conn: Arc<Conn>,
    id: SubflowId,
    mut w: OwnedWriteHalf,
    handed: Arc<AtomicU64>,
    wake: Arc<Notify>,
    mut kill: watch::Receiver<bool>,
) {
    let mut out = BytesMut::with_capacity(RECORDS_PER_BATCH * (u16::MAX as usize + RECORD_HEADER_LEN));
    let mut batch_bytes = MIN_BATCH_BYTES;
    let reason: PathLossReason = loop {
        out.clear();
        let (records, terminal, new_lowat) = {
            let mut inner = conn.lock();
            if !inner.subflows.contains_key(&id) {
                return;
            }
            let records = conn.take_records(&mut inner, id, batch_bytes);
            conn.settle(&mut inner);
            let new_lowat = notsent_lowat_change(&mut inner, id);
            (records, inner.terminal_at.is_some(), new_lowat)
        };
        if let Some(lowat) = new_lowat {
            super::socket::change_notsent_lowat(w.as_ref(), lowat);
        }
        if records.is_empty() {
            if terminal {
                let _ = w.shutdown().await;
                break PathLossReason::FlowOver;
            }
            tokio::select! {
                _ = wake.notified() => continue,
                _ = killed(&mut kill) => return,
            }
        }
        if let Err(e) = records.seal_into(&conn.keys, &mut out) {
            tracing::error!(error = %e, "sealing a record failed");
            break PathLossReason::SealFailed;
        }
        tracing::trace!(subflow = id.0, bytes = out.len(), "writing records");
        // Counted as it goes, so that a lost subflow can tell what never reached the kernel.
        let write = async {
            let (mut at, mut waited) = (0, false);
            while at < out.len() {
                let n = match w.try_write(&out[at..]) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        waited = true;
                        w.write(&out[at..]).await?
                    }
                    r => r?,
                };
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                at += n;
                handed.fetch_add(n as u64, Ordering::Release);
            }
            Ok::<bool, std::io::Error>(waited)
        };
        tokio::select! {
            r = write => match r {
                // A batch smaller than the limit that went at once says nothing of the path.
                Ok(true) => batch_bytes = (batch_bytes / 2).max(MIN_BATCH_BYTES),
                Ok(false) if out.len() >= batch_bytes => batch_bytes = (batch_bytes * 2).min(MAX_BATCH_BYTES),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "subflow write failed");
                    break PathLossReason::io(IoOperation::Write, &e);
                }
            },
            _ = killed(&mut kill) => return,
        }
    };
    conn.subflow_gone(id, reason);
}

async fn reader(
    conn: Arc<Conn>,
    id: SubflowId,
    r: OwnedReadHalf,
    mut kill: watch::Receiver<bool>,
    join: Option<JoinCheck>,
) {
    let mut r = r;
    let stop: Stop = async {
        if let Some(check) = join {
            let peer_signing_key = conn.lock().peer_signing_key;
            let sent = JoinSent {
                join_key: &conn.keys.join_key,
                flow: &conn.keys.flow_id,
                seq: check.seq,
                peer_signing_key: peer_signing_key.as_ref(),
            };
            let answer = tokio::select! {
                a = read_exchange(&mut r, |b| Ok::<_, Infallible>(decode_join_answer(b, &sent))) => a,
                _ = killed(&mut kill) => return Stop::Retired,
            };
            match answer {
                Err(ExchangeError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Stop::Eof,
                Err(ExchangeError::Io(e)) => return Stop::Lost(PathLossReason::io(IoOperation::Read, &e)),
                Err(ExchangeError::Decode(never)) => match never {},
                Ok(Ok(accepted)) => conn.lock().peer_fast_open = accepted.fast_open,
                Ok(Err(e)) => {
                    let mut inner = conn.lock();
                    if e.is_fatal() {
                        inner.proto.fail_unrecoverable(proto::FlowError::PeerForgotFlow);
                        conn.settle(&mut inner);
                    } else if let Some(remote) = inner.subflows.get(&id).map(|s| s.remote) {
                        // Whoever answers there now is not our peer: re-dial elsewhere (a
                        // fresh lookup) rather than there again.
                        inner.peer_addrs.retain(|a| *a != remote);
                    }
                    return Stop::Lost(match e {
                        JoinAnswerError::BadMac => PathLossReason::NotOurPeer,
                        JoinAnswerError::Refused(_, code) => PathLossReason::JoinRefused { code },
                        JoinAnswerError::UnknownFlow { .. } => PathLossReason::JoinRefused { code: JoinRefusal::UnknownFlow as u8 },
                    });
                }
            }
        }
        let mut slabs = ReadSlabs::new();
        loop {
            // Room for the rest of the record under way (or a header), and whatever else
            // the socket holds: several records per system call when the flow is busy.
            let missing = records::bytes_wanted(slabs.bytes());
            slabs.make_room(missing.max(MIN_READ), Instant::now());
            match read_more(&mut r, &mut slabs, &mut kill).await {
                Ok(()) => {}
                Err(Stop::Eof) if !slabs.bytes().is_empty() => return Stop::Lost(PathLossReason::PeerClosedMidRecord),
                Err(stop) => return stop,
            }
            // Open every complete record outside the lock, so decryption on one core
            // overlaps encryption on the other; a bad one ends the subflow after the
            // good ones before it are in.
            let mut opened = Vec::new();
            let mut fault = None;
            while let Some(record) = records::split_record(slabs.bytes()) {
                match records::open(&conn.keys, record) {
                    Ok(record) => opened.push(record),
                    Err(OpenError::Forged) => {
                        fault = Some(PathLossReason::Forged);
                        break;
                    }
                    Err(OpenError::Malformed(e)) => {
                        fault = Some(PathLossReason::Malformed(e));
                        break;
                    }
                }
            }
            if !opened.is_empty() {
                let mut inner = conn.lock();
                if !inner.subflows.contains_key(&id) {
                    return Stop::Retired;
                }
                inner.redial_pause = Duration::ZERO;
                for record in opened {
                    let now = Instant::now();
                    let wire_len = record.wire_len as u64;
                    let Inner { proto, receiver, .. } = &mut *inner;
                    match receiver.deliver(proto, id, record, now) {
                        Ok(Delivery::Fresh) => {}
                        Ok(Delivery::Replayed) => continue,
                        Err(v) => {
                            conn.settle(&mut inner);
                            return Stop::Lost(PathLossReason::Violation(v));
                        }
                    }
                    if let Some(meter) = inner.subflows.get_mut(&id).and_then(|s| s.energy.as_mut()) {
                        meter.on_bytes(now, 0, wire_len);
                    }
                }
                conn.settle(&mut inner);
            }
            if let Some(why) = fault {
                return Stop::Lost(why);
            }
        }
    }
    .await;
    match stop {
        Stop::Retired => {}
        Stop::Eof => conn.subflow_gone(id, PathLossReason::PeerClosed),
        Stop::Lost(reason) => conn.subflow_gone(id, reason),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::AsyncReadExt;
    use crate::proto::Frame;
    use crate::session::records::TAG_LEN;
    use crate::session::session_pair;

    fn resident_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
    }

    /// Seals `frames` as one record with packet number `pn`.
    fn record(keys: &SessionKeys, pn: u64, frames: &[Frame]) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.resize(RECORD_HEADER_LEN, 0);
        for f in frames {
            f.encode(&mut out);
        }
        out.resize(out.len() + TAG_LEN, 0);
        keys.seal_record(pn, &mut out).unwrap();
        out.to_vec()
    }

    /// A peer sends one byte out of order per ~300 KiB of duplicate data. What the flow
    /// keeps is 400 bytes (plus the first in-order segment); what it holds in memory must
    /// stay near that, not one whole read buffer per kept byte.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_few_kept_bytes_do_not_pin_whole_read_buffers() {
        let (peer_keys, keys) = session_pair();
        let conn = Conn::new(keys, Role::Server, "svc".into(), proto::FlowConfig::default(), Weak::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        conn.attach(ours, 0, None, None);
        let (mut from_conn, mut to_conn) = peer.into_split();
        tokio::spawn(async move {
            let mut sink = vec![0u8; 64 * 1024];
            while let Ok(1..) = from_conn.read(&mut sink).await {}
        });

        const SEGMENT: usize = 60_000;
        let first = Frame::Data { offset: 0, fin: false, payload: Bytes::from(vec![7u8; SEGMENT]) };
        let mut pn = 0;
        to_conn.write_all(&record(&peer_keys, pn, std::slice::from_ref(&first))).await.unwrap();
        let before = resident_bytes();
        const KEPT: u64 = 400;
        for i in 0..KEPT {
            pn += 1;
            let kept = Frame::Data { offset: SEGMENT as u64 + 1 + 2 * i, fin: false, payload: Bytes::from_static(b"x") };
            to_conn.write_all(&record(&peer_keys, pn, &[kept, first.clone()])).await.unwrap();
            for _ in 0..4 {
                pn += 1;
                to_conn.write_all(&record(&peer_keys, pn, std::slice::from_ref(&first))).await.unwrap();
            }
        }
        let want = SEGMENT as u64 + KEPT;
        for _ in 0..1000 {
            if conn.lock().proto.stats().bytes_received == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(conn.lock().proto.stats().bytes_received, want);
        let grown = resident_bytes().saturating_sub(before);
        eprintln!("resident memory grew by {} KiB", grown / 1024);
        assert!(grown < 40 << 20, "{} MiB held for {} bytes kept", grown >> 20, want);
    }
}
