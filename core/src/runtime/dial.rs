//! The connecting side: opening a flow by name, and re-dialing after its paths died.
//!
//! Connection attempts *race* (like RFC 8305's Happy Eyeballs): every (local address,
//! peer address) pair is a candidate, one attempt starts every [`ATTEMPT_DELAY`] while the
//! earlier ones are still trying (at once when one failed), and the first TCP connection
//! that opens wins. A stale candidate — the peer's old address after it moved, or our own
//! path that silently died while its address stayed — then costs a quarter second instead
//! of a whole `io_timeout`.
//!
//! Re-dialing races the addresses the peer was last reached at (or announced in ADDRS),
//! since after our own move they are still right, with a fresh lookup started at the same
//! time, whose addresses (a peer that moved too) go to the front of the queue. Between
//! rounds it backs off (10 ms doubling to 1 s) but wakes at once when our own addresses
//! change. It stops when a subflow is back or the flow ended (the flow deadline ends it).
//! Opening a flow races the looked-up addresses the same way while watching the name for
//! a newer record (the peer may move while we connect), and looks it up again if neither
//! a newer record nor an answer came within [`RELOOKUP_AFTER`].

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::conn::{Conn, FlowOwner, Role, Route};
use super::reader::JoinCheck;
use super::host::Host;
use super::header::{read_exchange, ExchangeError};
use crate::session::opening::{self, JOIN_WINDOW};
use super::{ConnectFailure, Error};
use crate::name::{NameError, NameRecord};
use crate::trust::PeerName;
use crate::relay::wire::{listener_key, ListenerKey};
use crate::session::{admission, HandshakeError, Initiator};
use super::relay_dial;

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a connection attempt runs alone before the next candidate starts too.
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);
/// When opening a flow: look the name up again if no address answered within this.
const RELOOKUP_AFTER: Duration = Duration::from_secs(1);
/// How long direct attempts run alone before the peer's relays are tried too (at once
/// when every direct attempt failed): a direct path is cheaper for everyone, and a peer
/// behind NAT costs only this much more.
const RELAY_HEAD_START: Duration = Duration::from_millis(300);

/// Where a flow's peer may be dialed: its own addresses, and the relays it listed.
#[derive(Debug, Default, Clone)]
pub(crate) struct Candidates {
    pub(crate) direct: Vec<SocketAddr>,
    pub(crate) relays: Vec<SocketAddr>,
}

impl Candidates {
    /// The candidates of a (checked) name record: its addresses, and its relays resolved.
    async fn of(host: &Host, record: &NameRecord, limit: Duration) -> Candidates {
        let relays = relay_dial::resolve(host, &record.relays, limit).await;
        Candidates { direct: record.addrs.clone(), relays }
    }

    fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.relays.is_empty()
    }

    /// Leaves out `shunned` addresses, unless nothing else would be left.
    fn without(mut self, shunned: &[SocketAddr]) -> Candidates {
        let kept = Candidates {
            direct: self.direct.iter().copied().filter(|a| !shunned.contains(a)).collect(),
            relays: self.relays.iter().copied().filter(|a| !shunned.contains(a)).collect(),
        };
        if !kept.is_empty() {
            self = kept;
        }
        self
    }
}

/// The connection that won a race.
struct Won {
    stream: TcpStream,
    /// The peer's address, or the relay's for a relayed path.
    addr: SocketAddr,
    /// The JOIN it opened with.
    seq: Option<u64>,
    route: Route,
}

enum Attempt {
    /// The peer at this address answered but does not serve the name: no use retrying.
    UnknownAt(SocketAddr),
    /// The peer at this address does not accept our key: no use retrying.
    NotAllowedAt(SocketAddr),
    Failed(ConnectFailure),
}

/// Opens a flow to `name`, retrying lookups and addresses until `connect_timeout`.
pub(crate) async fn connect(host: &Arc<Host>, owner: Weak<dyn FlowOwner>, peer: &PeerName) -> Result<Arc<Conn>, Error> {
    let name = peer.name();
    let started = Instant::now();
    let deadline = started + host.config.connect_timeout;
    let mut tried = Vec::new();
    let mut last = ConnectFailure::NoAttempt;
    let mut backoff = FIRST_BACKOFF;
    let mut net = host.network_changes();
    // Addresses whose connection opened but whose handshake failed: another host holds the
    // address now (a listener behind NAT publishes private addresses, which on our network
    // may be anyone's), or it is not the peer. The next rounds try the others first.
    let mut shunned: Vec<SocketAddr> = Vec::new();
    loop {
        match host.lookup_checked(peer).await {
            Ok(record) => {
                let limit = host.config.io_timeout.min(deadline.saturating_duration_since(Instant::now()));
                let candidates = Candidates::of(host, &record, limit).await.without(&shunned);
                if candidates.is_empty() {
                    last = ConnectFailure::NoAddresses;
                }
                for &addr in candidates.direct.iter().chain(&candidates.relays) {
                    if !tried.contains(&addr) {
                        tried.push(addr);
                    }
                }
                // The record may predate a move of the peer: watch for a newer one (it
                // arrives as soon as the name service stores it), and if none came and
                // nothing answered soon, look again; race the addresses it lists as well.
                let relookup = async {
                    let newer = match host.config.names.watch(name, record.seq, RELOOKUP_AFTER).await {
                        Ok(Some(mut signed)) => host.check_record(peer, &signed.record).ok().map(|()| {
                            signed.record.addrs = host.dialable(&signed.record.addrs);
                            signed.record
                        }),
                        _ => None,
                    };
                    let newer = match newer {
                        Some(r) => Ok(r),
                        None => host.lookup_checked(peer).await,
                    };
                    match newer {
                        Ok(r) if r.noise_key == record.noise_key => Candidates::of(host, &r, limit).await.without(&shunned),
                        _ => Candidates::default(),
                    }
                };
                let target = listener_key(&record.public());
                let winner = std::sync::Mutex::new(None);
                let attempt = async {
                    let won = match race(host, &candidates, relookup, false, None, &target).await {
                        Ok(won) => won,
                        Err(why) => return Err(Attempt::Failed(why)),
                    };
                    if !tried.contains(&won.addr) {
                        tried.push(won.addr);
                    }
                    *winner.lock().unwrap_or_else(|p| p.into_inner()) = Some(won.addr);
                    new_flow(host, &owner, name, &record, &candidates.relays, won).await
                };
                if !candidates.is_empty() {
                    match tokio::time::timeout(limit, attempt).await {
                        Ok(Ok(flow)) => return Ok(flow),
                        Ok(Err(Attempt::UnknownAt(addr))) => {
                            return Err(Error::UnknownName { name: name.to_string(), addr })
                        }
                        Ok(Err(Attempt::NotAllowedAt(addr))) => {
                            return Err(Error::NotAllowed { name: name.to_string(), addr })
                        }
                        Ok(Err(Attempt::Failed(why))) => last = why,
                        Err(_) => last = ConnectFailure::TimedOut,
                    }
                    let winner = *winner.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(addr) = winner.filter(|a| !shunned.contains(a)) {
                        tracing::debug!(name, %addr, "a connection opened there but its handshake failed; trying other addresses first");
                        shunned.push(addr);
                    }
                }
            }
            Err(Error::Name(e @ (NameError::Unreachable { .. } | NameError::Timeout { .. }))) => {
                last = ConnectFailure::NameService(Box::new(e));
            }
            Err(e) => return Err(e),
        }
        if Instant::now() + backoff >= deadline {
            return Err(Error::Unreachable { name: name.to_string(), tried, after: started.elapsed(), last });
        }
        tracing::debug!(name, %last, ?backoff, "connect attempt failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = net.changed() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One handshake on a connected stream.
async fn new_flow(
    host: &Arc<Host>,
    owner: &Weak<dyn FlowOwner>,
    name: &str,
    record: &NameRecord,
    relays: &[SocketAddr],
    won: Won,
) -> Result<Arc<Conn>, Attempt> {
    let Won { mut stream, addr, route, .. } = won;
    let (noise_key, signing_key) = (&record.noise_key, &record.signing_key);
    let fail = |e: &dyn std::fmt::Display| Attempt::Failed(ConnectFailure::Handshake { addr, detail: e.to_string() });
    let timestamp = admission::next_timestamp(&host.handshake_clock, 0);
    let (init, msg1) = Initiator::start(&host.identity, noise_key, name, timestamp).map_err(|e| fail(&e))?;
    stream
        .write_all(&opening::new_flow(&msg1))
        .await
        .map_err(|e| Attempt::Failed(ConnectFailure::Connect { addr, kind: e.kind() }))?;
    let msg2 = read_exchange(&mut stream, opening::decode_new_flow_answer).await.map_err(|e| match e {
        // A responder that cannot read our first message (it is not for its key) closes
        // without a word: there is no key to answer under.
        ExchangeError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Attempt::Failed(ConnectFailure::HandshakeClosed { addr })
        }
        ExchangeError::Io(io) => Attempt::Failed(ConnectFailure::Connect { addr, kind: io.kind() }),
        e => fail(&e),
    })?;
    let keys = match init.finish(&msg2) {
        Ok(k) => k,
        Err(HandshakeError::UnknownName(_)) => return Err(Attempt::UnknownAt(addr)),
        Err(HandshakeError::NotAllowed) => return Err(Attempt::NotAllowedAt(addr)),
        Err(HandshakeError::Busy) => return Err(Attempt::Failed(ConnectFailure::PeerBusy { addr })),
        Err(HandshakeError::Replayed { latest }) => {
            // Our clock is behind what the peer saw of our key (it went backwards, or
            // another process with this key is ahead): the next attempt starts above it.
            tracing::info!(%addr, latest, timestamp, "the peer saw a later handshake of this key; retrying above it");
            admission::next_timestamp(&host.handshake_clock, latest);
            return Err(fail(&HandshakeError::Replayed { latest }));
        }
        Err(e) => return Err(fail(&e)),
    };
    let flow_config = host.config.flow.clone();
    let peer = record.public();
    let conn = Conn::new(keys, Role::Client, name.to_string(), peer, flow_config, Arc::downgrade(host), owner.clone());
    {
        let mut inner = conn.lock();
        inner.peer_addrs = record.addrs.clone();
        inner.peer_relays = relays.to_vec();
        inner.peer_signing_key = Some(*signing_key);
    }
    conn.announce();
    conn.attach(stream, 0, None, None, route);
    tokio::spawn(conn.clone().drive());
    super::peer_watch::spawn(&conn, record.seq);
    Ok(conn)
}

/// Brings a flow that lost its last subflow back, until it has one or is over.
pub(crate) async fn redial(conn: Arc<Conn>) {
    if let Some(host) = conn.host.upgrade() {
        let mut net = host.network_changes();
        let pause = conn.lock().redial_pause;
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = net.changed() => {}
            }
        }
        let mut backoff = FIRST_BACKOFF;
        while needs_subflow(&conn) {
            if rejoin_round(&host, &conn).await {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = net.changed() => backoff = FIRST_BACKOFF,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    } else {
        // Nothing can dial for this flow any more. Waiting for the flow deadline instead
        // would have the driver re-spawn this task at once, over and over.
        let mut inner = conn.lock();
        inner.proto.fail_unrecoverable(crate::proto::FlowError::EndpointDropped);
        conn.settle(&mut inner);
    }
    {
        let mut inner = conn.lock();
        inner.dialing = false;
        // Reset by the reader as soon as the peer is heard on the subflow attached here.
        inner.redial_pause = (inner.redial_pause * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
    }
    conn.wake_driver();
}

fn needs_subflow(conn: &Conn) -> bool {
    conn.lock().needs_subflow(Instant::now())
}

/// One round: the known addresses raced with a fresh lookup's. True once a subflow is
/// attached.
async fn rejoin_round(host: &Arc<Host>, conn: &Arc<Conn>) -> bool {
    if !needs_subflow(conn) {
        return true;
    }
    let known = {
        let inner = conn.lock();
        Candidates { direct: inner.peer_addrs.clone(), relays: inner.peer_relays.clone() }
    };
    let lookup = async {
        match host.lookup_checked(&PeerName::checked_earlier(&conn.name)).await {
            Ok(record) if record.noise_key == conn.keys.remote_static => {
                let fresh = Candidates::of(host, &record, host.config.io_timeout).await;
                let mut inner = conn.lock();
                inner.peer_addrs = fresh.direct.clone();
                inner.peer_relays = fresh.relays.clone();
                fresh
            }
            Ok(_) => {
                tracing::warn!(name = %conn.name, "the name now belongs to other keys; not re-dialing it");
                Candidates::default()
            }
            Err(e) => {
                tracing::debug!(name = %conn.name, error = %e, "re-lookup failed");
                Candidates::default()
            }
        }
    };
    match race(host, &known, lookup, true, Some(conn), &listener_key(&conn.peer)).await {
        Ok(Won { stream, addr, seq: Some(seq), route }) => {
            attach_joined(conn, stream, addr, seq, route);
            true
        }
        Ok(Won { addr, seq: None, .. }) => {
            tracing::warn!(%addr, "a re-dial connected without a JOIN; dropped");
            !needs_subflow(conn)
        }
        Err(why) => {
            tracing::debug!(name = %conn.name, %why, "re-dial round failed");
            !needs_subflow(conn)
        }
    }
}

/// Connects to the first candidate that answers: every local address (best first) to
/// each of `first`'s addresses, then those of `more`'s (which go to the front: they are
/// newer). One attempt starts every [`ATTEMPT_DELAY`] while earlier ones are still
/// trying, or at once when one failed; the losers are dropped. The peer's relays (asked
/// for the listener `target`) join the queue after [`RELAY_HEAD_START`], or as soon as
/// nothing direct is left to try. Each attempt is bounded by `io_timeout`. When every
/// attempt failed outright, `wait_for_more` says whether to wait for `more` (a lookup
/// running alongside) or to report the failure at once (the caller retries on its own
/// schedule). With `join`, every attempt opens with a JOIN of that flow (in its SYN where
/// TCP Fast Open works, on a direct path), and the winner's sequence number comes back
/// with it.
async fn race(
    host: &Arc<Host>,
    first: &Candidates,
    more: impl Future<Output = Candidates>,
    wait_for_more: bool,
    join: Option<&Arc<Conn>>,
    target: &ListenerKey,
) -> Result<Won, ConnectFailure> {
    // (local address, address to dial, through a relay)
    type Candidate = (Option<IpAddr>, SocketAddr, bool);
    let mut pending: VecDeque<Candidate> = VecDeque::new();
    let mut relayed: VecDeque<Candidate> = VecDeque::new();
    let mut seen: Vec<Candidate> = Vec::new();
    let mut add = |found: &Candidates, front: bool, pending: &mut VecDeque<Candidate>, relayed: &mut VecDeque<Candidate>| {
        let mut fresh = Vec::new();
        for (addrs, via_relay) in [(&found.direct, false), (&found.relays, true)] {
            for &addr in addrs {
                for local in host.local_ips_for(addr) {
                    if !seen.contains(&(local, addr, via_relay)) {
                        seen.push((local, addr, via_relay));
                        fresh.push((local, addr, via_relay));
                    }
                }
            }
        }
        let (mut relays, direct): (Vec<_>, Vec<_>) = fresh.into_iter().partition(|c| c.2);
        if front {
            for c in direct.into_iter().rev() {
                pending.push_front(c);
            }
        } else {
            pending.extend(direct);
        }
        relays.retain(|c| !relayed.contains(c));
        relayed.extend(relays);
    };
    add(first, false, &mut pending, &mut relayed);
    let mut attempts = JoinSet::new();
    let mut more = std::pin::pin!(more);
    let mut more_done = false;
    let mut next_at = tokio::time::Instant::now();
    let relays_at = next_at + RELAY_HEAD_START;
    let mut last = ConnectFailure::NoAttempt;
    loop {
        let now = tokio::time::Instant::now();
        // Relays join once direct attempts had their head start, or have nothing left.
        if !relayed.is_empty() && (now >= relays_at || (pending.is_empty() && attempts.is_empty())) {
            let relays: Vec<_> = relayed.drain(..).collect();
            for c in relays.into_iter().rev() {
                pending.push_front(c);
            }
        }
        if attempts.is_empty() || now >= next_at {
            if let Some((local, addr, via_relay)) = pending.pop_front() {
                let host = host.clone();
                let join = join.map(|conn| next_join(conn));
                let target = *target;
                attempts.spawn(async move {
                    let seq = join.as_ref().map(|(seq, ..)| *seq);
                    let (early, fast_open) = join.as_ref().map_or((&[][..], false), |(_, bytes, fast)| (bytes.as_slice(), *fast));
                    let dialed = if via_relay {
                        relay_dial::dial_via_relay(&host, local, addr, &target, early).await
                    } else {
                        host.dial_tcp_from(local, addr, early, fast_open, false)
                            .await
                            .map(|s| (s, Route::Direct))
                            .map_err(|e| ConnectFailure::Connect { addr, kind: e.kind() })
                    };
                    (local, addr, dialed.map(|(stream, route)| Won { stream, addr, seq, route }))
                });
                next_at = tokio::time::Instant::now() + ATTEMPT_DELAY;
                continue;
            }
        }
        if attempts.is_empty() && relayed.is_empty() && (more_done || !wait_for_more) {
            return Err(last);
        }
        let wake_at = if pending.is_empty() { relays_at.max(now) } else { next_at };
        tokio::select! {
            Some(joined) = attempts.join_next(), if !attempts.is_empty() => match joined {
                Ok((_, _, Ok(won))) => return Ok(won),
                Ok((local, addr, Err(e))) => {
                    tracing::debug!(?local, %addr, error = %e, "connection attempt failed");
                    last = e;
                    next_at = tokio::time::Instant::now();
                }
                Err(e) => tracing::warn!(error = %e, "a connection attempt's task failed"),
            },
            found = &mut more, if !more_done => {
                more_done = true;
                add(&found, true, &mut pending, &mut relayed);
            }
            _ = tokio::time::sleep_until(wake_at), if !pending.is_empty() || !relayed.is_empty() => {}
            else => return Err(last),
        }
    }
}

/// The next JOIN of `conn`: its sequence number, its bytes (with our resume point, so the
/// peer may send at once), and whether it may ride the SYN (the peer said its host takes
/// that).
///
/// The peer recognises only the JOINs of the [`JOIN_WINDOW`] sequences above the highest it
/// admitted (their identifiers are derived from the sequence), so the sequence cycles
/// through the window above the highest the peer accepted: a long outage, with a dial
/// every second, never runs past what the peer expects. A sequence the peer did admit
/// (its answer lost) is refused as replayed, which costs only that attempt.
pub(super) fn next_join(conn: &Conn) -> (u64, Vec<u8>, bool) {
    let (seq, resume, fast_open) = {
        let mut inner = conn.lock();
        let seq = inner.join_accepted + 1 + inner.joins_since % JOIN_WINDOW;
        inner.joins_since += 1;
        (seq, inner.proto.resume_point(), inner.peer_fast_open)
    };
    (seq, opening::join_request(&conn.keys.join_key, &conn.keys.remote_static, seq, resume), fast_open)
}

/// Attaches a connection that opened with JOIN `seq` as a subflow of `conn`. Its reader
/// checks the peer's answer before any record, so the subflow's first records go out at
/// once, which saves a round trip on resume.
pub(super) fn attach_joined(conn: &Arc<Conn>, stream: TcpStream, addr: SocketAddr, seq: u64, route: Route) {
    tracing::debug!(%addr, seq, ?route, in_syn = super::fast_open::syn_data_acked(&stream), "joined");
    conn.attach(stream, seq, Some(JoinCheck { seq }), None, route);
}

/// Dials `addr` (the peer's, or one of its relays) from `local` with a JOIN of `conn`
/// and attaches the subflow (whether or not the flow has others). False if the flow needs
/// no path or the dial failed.
pub(crate) async fn dial_join(host: &Arc<Host>, conn: &Arc<Conn>, local: Option<IpAddr>, addr: SocketAddr) -> bool {
    let relayed = {
        let inner = conn.lock();
        if conn.role != Role::Client || !inner.proto.needs_path() {
            return false;
        }
        inner.peer_relays.contains(&addr)
    };
    let (seq, join, fast_open) = next_join(conn);
    let dialed = if relayed {
        relay_dial::dial_via_relay(host, local, addr, &listener_key(&conn.peer), &join).await
    } else {
        host.dial_tcp_from(local, addr, &join, fast_open, false)
            .await
            .map(|s| (s, Route::Direct))
            .map_err(|e| ConnectFailure::Connect { addr, kind: e.kind() })
    };
    match dialed {
        Ok((stream, route)) => {
            attach_joined(conn, stream, addr, seq, route);
            true
        }
        Err(e) => {
            tracing::debug!(?local, %addr, error = %e, "extra subflow: connect failed");
            false
        }
    }
}
