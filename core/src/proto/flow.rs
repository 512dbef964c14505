//! [`FlowState`]: the flow protocol state machine tying send buffer, reassembly and
//! subflows together.
//!
//! The runtime drives it with four kinds of calls: application calls (`write`, `read`,
//! `finish`, `abort`), subflow lifecycle (`add_subflow`, `remove_subflow`), input
//! (`handle_frame`, `handle_timeout`) and output (`poll_transmit`, `poll_timeout`,
//! `poll_event`). All of them are cheap and none blocks, reads a clock or does I/O.
//!
//! Frame priority on a subflow: CLOSE; the resume ACK (first frame on every subflow);
//! PONGs; an owed ACK (due, window update, or piggybacked ahead of data); PING; ADDRS;
//! retransmissions (only once the peer was heard on this subflow); new data; FIN.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::frame::{check_ack, clamp_str, ACK_HEADER_LEN, ACK_RANGE_LEN, CLOSE_NOT_ACCEPTED, DATA_HEADER_LEN};
use super::ranges::RangeSet;
use super::recv::{ReadBuffer, RecvBuffer};
use super::sched::{slower_path_helps, stall_after, Demand, PathEstimate, REDUNDANT_LIMIT};
use super::send::{Segment, SendBuffer};
use super::subflow::Subflow;
use super::{
    FlowConfig, FlowError, Frame, PathPolicy, ProtocolViolation, INITIAL_WINDOW, MAX_ACK_RANGES, MAX_ADDRS,
    MAX_DATA_LEN, MAX_REASON_LEN, MAX_RELAYS, MAX_RELAY_LEN,
};

/// Identifies a subflow within a flow; assigned in increasing order as subflows join.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubflowId(pub u64);

/// Result of [`FlowState::read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were copied.
    Data(usize),
    /// Nothing to read yet.
    Blocked,
    /// The peer finished and every byte was read.
    Fin,
}

/// Where the flow stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowStatus {
    Open,
    /// Both directions finished, all acknowledged, all read.
    Finished,
    Failed(FlowError),
}

/// The least a subflow may have unacknowledged, whatever its rate and RTT.
const IN_FLIGHT_FLOOR: u64 = 64 * 1024;
/// Lost subflows remembered for ABANDON until a subflow can carry the news.
const MAX_ABANDONED: usize = 16;
/// Bounds on how long re-sends wait for the peer's ACK after we lost a subflow (twice the
/// round trip of the remaining ones).
const RESEND_HOLD_MIN: Duration = Duration::from_millis(20);
const RESEND_HOLD_MAX: Duration = Duration::from_millis(500);

/// Something the runtime should know about.
#[derive(Clone, Debug, PartialEq)]
pub enum FlowEvent {
    SubflowAdded(SubflowId),
    /// Liveness timeout, or the peer reported the subflow lost (ABANDON): already removed
    /// from the flow; the runtime closes its socket.
    SubflowDead {
        id: SubflowId,
    },
    /// First frame heard on a subflow added while the flow had no live subflow.
    Resumed {
        id: SubflowId,
        outage: Duration,
    },
    /// The peer moved (only the latest unpolled one is kept).
    PeerAddrs {
        addrs: Vec<SocketAddr>,
        relays: Vec<String>,
    },
    /// The peer dials `to` from `from` now, to open a direct path (see [`Frame::Punch`]);
    /// it came on subflow `id` (only the latest unpolled one is kept).
    PunchRequested {
        id: SubflowId,
        from: SocketAddr,
        to: SocketAddr,
    },
    /// Hint: `read` has something new.
    Readable,
    /// Hint: `write` accepts bytes again.
    Writable,
    Finished,
    Failed(FlowError),
}

/// Flow counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Bytes the application wrote.
    pub bytes_written: u64,
    /// DATA payload bytes sent, retransmissions included.
    pub bytes_sent: u64,
    /// DATA payload bytes sent again (a path was lost or stalled).
    pub bytes_retransmitted: u64,
    /// Bytes cumulatively acknowledged by the peer.
    pub bytes_acked: u64,
    /// Payload bytes received for the first time.
    pub bytes_received: u64,
    /// Bytes the application read.
    pub bytes_read: u64,
    /// Payload bytes that arrived again (copies sent on two paths, re-sent data).
    pub duplicate_bytes_received: u64,
    /// Subflows that joined the flow.
    pub subflows_added: u64,
    /// Subflows removed by the runtime or declared dead.
    pub subflows_lost: u64,
    /// Times a subflow stalled and its data was sent again on the others.
    pub stalls: u64,
    /// DATA payload bytes copied onto a second path (`Redundant`).
    pub bytes_copied: u64,
}

/// Subflow counters; bytes are encoded frame bytes (all frame types).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubflowStats {
    pub srtt: Option<Duration>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub frames_sent: u64,
    pub frames_received: u64,
    /// Payload bytes the peer acknowledged while they were in flight here.
    pub bytes_delivered: u64,
    /// Delivery rate in bytes per second, once measured under load.
    pub delivery_rate: Option<u64>,
    /// Bytes sent here and not yet acknowledged.
    pub in_flight: u64,
    pub state: PathState,
}

/// What a subflow does for its flow now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PathState {
    /// The peer has not been heard on it yet.
    #[default]
    Joining,
    /// It may carry data.
    Active,
    /// A hot spare: no data while an active path works (or, under `Energy`, keeps up).
    Standby,
    /// It held the oldest data and delivered nothing for several round trips: that data
    /// went out on the others, and it carries none until it is heard from again.
    Stalled,
}

/// The flow protocol state machine. See the [module docs](super).
#[derive(Debug)]
pub struct FlowState {
    cfg: FlowConfig,
    send: SendBuffer,
    recv: RecvBuffer,
    subflows: BTreeMap<SubflowId, Subflow>,
    next_subflow: u64,
    next_ping: u64,
    status: FlowStatus,
    /// Since when no subflow is live (drives the flow deadline).
    no_live_since: Option<Instant>,
    /// Since when the flow is without a working subflow after having had one (for Resumed).
    outage_since: Option<Instant>,
    /// Highest window sent in an ACK.
    advertised: u64,
    events: VecDeque<FlowEvent>,
    /// Tokens of subflows we lost, to tell the peer (newest kept, at most [`MAX_ABANDONED`]).
    abandoned: VecDeque<u64>,
    /// An ACK went out right before the next ABANDON (so its receiver re-sends exactly
    /// what we lack, not all it had in flight there).
    ack_led_abandon: bool,
    /// After we lost a subflow: units that may have arrived wait here for the peer's next
    /// ACK (or `resend_hold`), since what we know of its receipt is a round trip old and
    /// most of what was in flight likely arrived.
    held: RangeSet,
    resend_hold: Option<Instant>,
    /// New data waits for the same ACK: what never left the lost subflow was not known,
    /// and new data would queue ahead of its re-sends.
    hold_new: bool,
    /// The re-send set may hold units the peer already has (moved there without an ACK
    /// saying they are missing): a new subflow must hear the peer before it sends DATA.
    unsure_resends: bool,
    readable_hint: bool,
    writable_hint: bool,
    write_blocked: bool,
    stats: FlowStats,
    policy: PathPolicy,
    /// We chose the policy (not the peer): tell every subflow's peer end.
    announce_policy: bool,
    demand: Demand,
    /// The peer's DEMAND: its active paths cannot keep up with its writer (`Energy`).
    peer_overflow: bool,
}

impl FlowState {
    /// A flow with no subflow yet; the flow deadline runs from `now`.
    pub fn new(mut config: FlowConfig, now: Instant) -> FlowState {
        config.recv_window = config.recv_window.max(INITIAL_WINDOW as usize);
        config.max_data_frame = config.max_data_frame.clamp(1, MAX_DATA_LEN);
        config.send_buffer = config.send_buffer.max(1);
        let recv = RecvBuffer::new(config.recv_window, INITIAL_WINDOW);
        FlowState {
            send: SendBuffer::new(config.send_buffer, INITIAL_WINDOW),
            advertised: recv.window(),
            recv,
            cfg: config,
            subflows: BTreeMap::new(),
            next_subflow: 0,
            next_ping: 0,
            status: FlowStatus::Open,
            no_live_since: Some(now),
            outage_since: None,
            events: VecDeque::new(),
            abandoned: VecDeque::new(),
            ack_led_abandon: false,
            held: RangeSet::new(),
            resend_hold: None,
            hold_new: false,
            unsure_resends: false,
            readable_hint: false,
            writable_hint: false,
            write_blocked: false,
            stats: FlowStats::default(),
            policy: PathPolicy::default(),
            announce_policy: false,
            demand: Demand::default(),
            peer_overflow: false,
        }
    }

    /// Switches the scheduling policy and tells the peer (POLICY frames), which then
    /// schedules its own sending the same way.
    pub fn set_policy(&mut self, policy: PathPolicy) {
        self.policy = policy;
        self.peer_overflow = false;
        self.announce_policy = true;
        for s in self.subflows.values_mut() {
            s.policy_out = true;
        }
    }

    /// The scheduling policy in effect (ours or the peer's choice).
    pub fn policy(&self) -> PathPolicy {
        self.policy
    }

    /// Whether the policy wants subflows beyond the best path now. `Energy` opens the
    /// others (cellular) only while this end's or the peer's active paths cannot keep up
    /// with the demand (an idle standby costs a radio wake-up at its start and another at
    /// its end); every other policy keeps them all.
    pub fn needs_extra_paths(&self) -> bool {
        self.policy != PathPolicy::Energy || self.demand.overflow || self.peer_overflow
    }

    // ---- application side ----

    /// Copies up to [`send_capacity`](Self::send_capacity) bytes; `Ok(0)` iff the buffer
    /// is full (or `data` is empty).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, FlowError> {
        self.check_writable()?;
        let n = self.send.write(data);
        if n < data.len() {
            self.write_blocked = true;
        }
        self.stats.bytes_written += n as u64;
        Ok(n)
    }

    /// Like [`FlowState::write`] for bytes already in a chunk of their own, taken without
    /// a copy: all of `chunk`, or nothing when it does not fit in `send_capacity()`.
    pub fn write_chunk(&mut self, chunk: Bytes) -> Result<usize, FlowError> {
        self.check_writable()?;
        let n = self.send.write_chunk(chunk);
        self.stats.bytes_written += n as u64;
        Ok(n)
    }

    /// Why the application may not write now, if it may not.
    fn check_writable(&self) -> Result<(), FlowError> {
        if let FlowStatus::Failed(e) = &self.status {
            return Err(e.clone());
        }
        if self.send.is_finished() {
            return Err(FlowError::WriteAfterFinish);
        }
        Ok(())
    }

    pub fn send_capacity(&self) -> usize {
        if self.status != FlowStatus::Open || self.send.is_finished() {
            return 0;
        }
        self.send.capacity()
    }

    /// No more writes; the FIN follows the last byte. Idempotent.
    pub fn finish(&mut self) -> Result<(), FlowError> {
        if let FlowStatus::Failed(e) = &self.status {
            return Err(e.clone());
        }
        self.send.finish();
        Ok(())
    }

    /// Reads in-order bytes. After the flow failed, bytes already received in order are
    /// still returned first; then the failure.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, FlowError> {
        self.read_with(|recv| recv.read(buf))
    }

    /// Like [`FlowState::read`], but hands over up to `max` in-order bytes as the
    /// received payloads themselves, for a reader that copies them out after releasing a
    /// lock.
    pub fn read_chunks(&mut self, max: usize, out: &mut Vec<Bytes>) -> Result<ReadOutcome, FlowError> {
        self.read_with(|recv| recv.take(max, out))
    }

    fn read_with(&mut self, read: impl FnOnce(&mut RecvBuffer) -> usize) -> Result<ReadOutcome, FlowError> {
        if self.recv.has_ready() {
            let n = read(&mut self.recv);
            self.stats.bytes_read += n as u64;
            if n > 0 {
                self.after_read();
            }
            return Ok(ReadOutcome::Data(n));
        }
        if let FlowStatus::Failed(e) = &self.status {
            return Err(e.clone());
        }
        if self.recv.at_fin() {
            self.check_finished();
            return Ok(ReadOutcome::Fin);
        }
        Ok(ReadOutcome::Blocked)
    }

    fn after_read(&mut self) {
        let window = self.recv.window();
        if window - self.advertised >= (self.cfg.recv_window / 4) as u64 {
            for s in self.subflows.values_mut() {
                s.window_update = true;
            }
        }
        self.check_finished();
    }

    /// Queues CLOSE on every live subflow; the flow fails with `LocallyAborted`. No-op once
    /// the flow is finished or failed. `reason` is cut to [`MAX_REASON_LEN`] bytes.
    pub fn abort(&mut self, code: u16, reason: &str) {
        if self.status != FlowStatus::Open {
            return;
        }
        let reason = clamp_str(reason, MAX_REASON_LEN).to_owned();
        for s in self.subflows.values_mut() {
            s.close = Some((code, reason.clone()));
        }
        self.fail(FlowError::LocallyAborted { code, reason });
    }

    /// Ends the flow for a condition the runtime found that leaves no way to go on
    /// ([`FlowError::PeerForgotFlow`], [`FlowError::EndpointDropped`]). Unlike
    /// [`Self::abort`] nothing is sent: the peer does not know the flow, or no path is
    /// left to tell it. No-op once the flow is finished or failed.
    pub fn fail_unrecoverable(&mut self, err: FlowError) {
        self.fail(err);
    }

    /// Queues one ADDRS on every live subflow (replacing one not yet sent). Lists are cut to
    /// [`MAX_ADDRS`]/[`MAX_RELAYS`]; relay names over [`MAX_RELAY_LEN`] bytes are dropped.
    pub fn advertise_addrs(&mut self, mut addrs: Vec<SocketAddr>, relays: Vec<String>) {
        addrs.truncate(MAX_ADDRS);
        let relays: Vec<String> = relays
            .into_iter()
            .filter(|r| r.len() <= MAX_RELAY_LEN)
            .take(MAX_RELAYS)
            .collect();
        for s in self.subflows.values_mut() {
            s.addrs = Some((addrs.clone(), relays.clone()));
        }
    }

    /// Tells the peer, on subflow `id`, that we dial `to` from `from` now (see
    /// [`Frame::Punch`]).
    pub fn punch(&mut self, id: SubflowId, from: SocketAddr, to: SocketAddr) {
        if let Some(s) = self.subflows.get_mut(&id) {
            s.punch = Some((from, to));
        }
    }

    // ---- subflows ----

    /// Registers an authenticated subflow.
    pub fn add_subflow(&mut self, now: Instant) -> SubflowId {
        let id = SubflowId(self.next_subflow);
        self.next_subflow += 1;
        let ends_outage = self.subflows.is_empty() && self.outage_since.is_some();
        if !matches!(self.status, FlowStatus::Failed(_)) {
            // A new subflow often means the peer moved: probe the old ones so a silently
            // dead path is found within the dead-path timeout, not at the next keepalive.
            for s in self.subflows.values_mut() {
                s.ping_pending = true;
            }
        }
        let mut sub = Subflow::new(id, now, ends_outage);
        sub.policy_out = self.announce_policy;
        // The peer learns on every new subflow whether we need more paths.
        sub.demand_out = self.policy == PathPolicy::Energy;
        self.subflows.insert(id, sub);
        self.no_live_since = None;
        self.stats.subflows_added += 1;
        self.events.push_back(FlowEvent::SubflowAdded(id));
        id
    }

    /// Subflow `id` was opened by the peer, which sends its resume ACK first: it carries
    /// no DATA until that is heard. Costs nothing (the ACK follows the join at once) and
    /// keeps units that surely never arrived from going out ahead of those the ACK will
    /// say were lost too, which the peer needs first.
    pub fn set_peer_speaks_first(&mut self, id: SubflowId) {
        if let Some(sub) = self.subflows.get_mut(&id) {
            sub.peer_speaks_first = true;
        }
    }

    /// Subflow `id`, opened by the peer, came with the peer's resume point: its data from
    /// us is complete up to `cum` (the JOIN carries it, authenticated). When `id` is the
    /// flow's only subflow, that serves as the peer's resume ACK, without selective ranges
    /// or a window: DATA may go at once, the units the peer lacks first, a round trip
    /// before the real resume ACK (which follows the handshake) could arrive. With other
    /// subflows still live here the point is ignored: some may be dead without our knowing
    /// (the peer lost its address; its ABANDON rides behind its resume ACK), and new data
    /// sent now would queue ahead of what they lost. Errors as an ACK would (a point
    /// beyond what was sent).
    pub fn peer_resumes_at(&mut self, id: SubflowId, cum: u64, now: Instant) -> Result<(), ProtocolViolation> {
        if self.subflows.len() != 1 || !self.subflows.contains_key(&id) {
            return Ok(());
        }
        self.handle_frame(id, Frame::Ack { cum, ranges: Vec::new(), window: 0 }, now)
    }

    /// Where our data from the peer is complete: the resume point a JOIN carries.
    pub fn resume_point(&self) -> u64 {
        self.recv.cum()
    }

    /// Names subflow `id` with a token both ends agree on (the runtime uses the join
    /// sequence number), so that losing it can be reported to the peer with ABANDON.
    pub fn set_subflow_token(&mut self, id: SubflowId, token: u64) {
        if let Some(sub) = self.subflows.get_mut(&id) {
            sub.token = Some(token);
        }
    }

    /// Keeps subflow `id` as a standby (or makes it active again) and tells the peer, so
    /// that both ends send DATA on it only while no active subflow is heard: a hot spare
    /// for a hand-off without a handshake. What it has in flight stays in flight.
    pub fn set_standby(&mut self, id: SubflowId, standby: bool) {
        if let Some(sub) = self.subflows.get_mut(&id) {
            if sub.standby != standby {
                sub.standby = standby;
                sub.standby_out = Some(standby);
            }
        }
    }

    /// Whether the peer was heard on subflow `id`.
    pub fn is_heard(&self, id: SubflowId) -> bool {
        self.subflows.get(&id).is_some_and(|s| s.heard)
    }

    /// Whether subflow `id` is a standby (by our choice or the peer's).
    pub fn is_standby(&self, id: SubflowId) -> bool {
        self.subflows.get(&id).is_some_and(|s| s.standby)
    }

    /// The subflow is gone; what it carried unacknowledged is re-sent elsewhere, and the
    /// peer is told (ABANDON on another subflow, now or once there is one), since its end
    /// may not know: a vanished address sends no FIN.
    ///
    /// While other subflows remain, what was in flight on it waits for the peer's next ACK
    /// before it is re-sent (most of it usually arrived), and so does new data.
    pub fn remove_subflow(&mut self, id: SubflowId, now: Instant) {
        self.lose_subflow(id, now, None);
    }

    /// Like [`remove_subflow`](Self::remove_subflow), for a subflow whose path was intact
    /// when it went (its local address was removed: what left is on its way) and whose
    /// socket told which units never left it (`never_sent`, e.g. from its unsent queue):
    /// those cannot have arrived and are re-sent at once, and new data follows them
    /// without waiting; only the units that left wait for the peer's ACK. Not for a path
    /// that broke (a reset, a vanished peer): what was in flight there is mostly lost, and
    /// new data sent ahead of its re-sends would queue in front of what the peer needs
    /// first.
    pub fn remove_subflow_unsent(&mut self, id: SubflowId, now: Instant, never_sent: &[Range<u64>]) {
        self.lose_subflow(id, now, Some(never_sent));
    }

    fn lose_subflow(&mut self, id: SubflowId, now: Instant, never_sent: Option<&[Range<u64>]>) {
        let others = self.subflows.len() > 1;
        let srtt = self.subflows.values().filter(|s| s.id != id).filter_map(|s| s.srtt).max();
        // With other subflows, or knowing what never left, the rest waits for an ACK.
        let hold = others || never_sent.is_some();
        if let Some(sub) = self.subflows.get_mut(&id).filter(|s| hold && !s.in_flight.is_empty()) {
            let mut maybe = std::mem::take(&mut sub.in_flight);
            for r in never_sent.unwrap_or_default() {
                let sure = maybe.split_off(r.clone());
                self.send.on_lost(&sure);
            }
            for r in maybe.iter() {
                self.held.insert(r);
            }
            self.hold_new |= never_sent.is_none();
            let hold = srtt.map_or(RESEND_HOLD_MAX, |r| (r * 2).clamp(RESEND_HOLD_MIN, RESEND_HOLD_MAX));
            self.resend_hold = Some(now + hold);
        }
        if let Some(token) = self.retire(id, now) {
            if self.abandoned.len() == MAX_ABANDONED {
                self.abandoned.pop_front();
            }
            self.abandoned.push_back(token);
        }
    }

    /// Removes subflow `id`; returns its token.
    fn retire(&mut self, id: SubflowId, now: Instant) -> Option<u64> {
        let sub = self.subflows.remove(&id)?;
        self.unsure_resends |= !sub.in_flight.is_empty();
        self.send.on_lost(&sub.in_flight);
        self.stats.subflows_lost += 1;
        if self.subflows.is_empty() {
            self.no_live_since = Some(now);
            if !matches!(self.status, FlowStatus::Failed(_)) && self.outage_since.is_none() {
                self.outage_since = Some(now);
            }
        }
        sub.token
    }

    // ---- input ----

    /// Takes in one frame received on subflow `id`. An error condemns that subflow (the
    /// runtime closes it and calls [`remove_subflow`](Self::remove_subflow)), not the flow.
    pub fn handle_frame(
        &mut self,
        id: SubflowId,
        frame: Frame,
        now: Instant,
    ) -> Result<(), ProtocolViolation> {
        self.handle_frame_from(id, frame, now, None)
    }

    /// Like [`handle_frame`](Self::handle_frame), for a frame whose DATA payload lies in
    /// `buffer` (the record layer knows which buffer each record was read into), so that
    /// reassembly counts what a payload it keeps uncopied really holds.
    pub(crate) fn handle_frame_from(
        &mut self,
        id: SubflowId,
        frame: Frame,
        now: Instant,
        buffer: Option<ReadBuffer>,
    ) -> Result<(), ProtocolViolation> {
        let wire_len = frame.encoded_len();
        let Some(sub) = self.subflows.get_mut(&id) else {
            return Err(ProtocolViolation::UnknownSubflow(id));
        };
        sub.on_heard(now, wire_len);
        if sub.ends_outage {
            sub.ends_outage = false;
            if let Some(since) = self.outage_since.take() {
                self.events.push_back(FlowEvent::Resumed {
                    id,
                    outage: now.saturating_duration_since(since),
                });
            }
        }
        if matches!(self.status, FlowStatus::Failed(_)) {
            return Ok(());
        }
        match frame {
            Frame::Data {
                offset,
                fin,
                payload,
            } => self.on_data(id, offset, fin, payload, now, buffer)?,
            Frame::Ack {
                cum,
                ranges,
                window,
            } => self.on_ack(cum, &ranges, window, now)?,
            Frame::Ping { id: ping } => sub.queue_pong(ping),
            Frame::Pong { id: pong } => sub.on_pong(pong, now),
            Frame::Addrs { mut addrs, relays } => {
                addrs.truncate(MAX_ADDRS);
                let relays = relays.into_iter().take(MAX_RELAYS).collect();
                self.events
                    .retain(|e| !matches!(e, FlowEvent::PeerAddrs { .. }));
                self.events
                    .push_back(FlowEvent::PeerAddrs { addrs, relays });
            }
            Frame::Close { code: CLOSE_NOT_ACCEPTED, .. } => self.fail(FlowError::NotAccepted),
            Frame::Close { code, reason } => {
                let reason = clamp_str(&reason, MAX_REASON_LEN).to_owned();
                self.fail(FlowError::PeerAborted { code, reason });
            }
            Frame::Standby { standby } => sub.standby = standby,
            Frame::Policy { policy } => {
                if policy != self.policy {
                    self.peer_overflow = false;
                }
                self.policy = policy;
            }
            Frame::Demand { overflow } => self.peer_overflow = overflow,
            Frame::Punch { from, to } => {
                self.events.retain(|e| !matches!(e, FlowEvent::PunchRequested { .. }));
                self.events.push_back(FlowEvent::PunchRequested { id, from, to });
            }
            Frame::Abandon { token } => {
                // Tell the peer at once what arrived, so it re-sends only what did not.
                sub.ack_now = true;
                let gone = self.subflows.values().find(|s| s.token == Some(token) && s.id != id).map(|s| s.id);
                if let Some(gone) = gone {
                    tracing::debug!(id = ?gone, token, "the peer lost this subflow");
                    self.retire(gone, now);
                    self.events.push_back(FlowEvent::SubflowDead { id: gone });
                }
            }
        }
        Ok(())
    }

    fn on_data(
        &mut self,
        id: SubflowId,
        offset: u64,
        fin: bool,
        payload: Bytes,
        now: Instant,
        buffer: Option<ReadBuffer>,
    ) -> Result<(), ProtocolViolation> {
        if payload.len() > MAX_DATA_LEN {
            return Err(ProtocolViolation::DataTooLong(payload.len()));
        }
        let len = payload.len() as u64;
        let got = self.recv.receive(offset, payload, fin, buffer)?;
        self.stats.bytes_received += got.new_bytes;
        self.stats.duplicate_bytes_received += got.duplicate_bytes;
        if got.readable {
            self.readable_hint = true;
        }
        let immediate = (64 * 1024).max(self.cfg.recv_window as u64 / 8);
        let cfg = &self.cfg;
        if let Some(sub) = self.subflows.get_mut(&id) {
            sub.on_data(now, len, immediate, fin, cfg);
        }
        self.check_finished();
        Ok(())
    }

    fn on_ack(
        &mut self,
        cum: u64,
        ranges: &[std::ops::Range<u64>],
        window: u64,
        now: Instant,
    ) -> Result<(), ProtocolViolation> {
        check_ack(cum, ranges, window).map_err(|_| ProtocolViolation::BadAckRanges)?;
        let sent = self.send.sent_end();
        let acked = ranges.last().map_or(cum, |r| r.end.max(cum));
        if acked > sent {
            return Err(ProtocolViolation::AckOfUnsent { acked, sent });
        }
        let was_full = self.send.capacity() == 0;
        let freed = self.send.on_ack(cum, ranges, window);
        self.release_held();
        self.unsure_resends = false;
        for s in self.subflows.values_mut() {
            s.on_acked(now, cum, ranges);
        }
        self.stats.bytes_acked = self.send.acked_bytes();
        self.update_demand(now);
        if freed
            && (was_full || self.write_blocked)
            && self.status == FlowStatus::Open
            && !self.send.is_finished()
        {
            self.write_blocked = false;
            self.writable_hint = true;
        }
        self.check_finished();
        Ok(())
    }

    /// Fires due timers: acks, pings, dead subflows, the flow deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.status, FlowStatus::Failed(_)) {
            return;
        }
        let open = self.status == FlowStatus::Open;
        if open && self.needs_path() {
            if let Some(since) = self.no_live_since {
                if since + self.cfg.flow_deadline <= now {
                    self.fail(FlowError::DeadlineExceeded {
                        after: now.saturating_duration_since(since),
                    });
                    return;
                }
            }
        }
        // Without a subflow the held units wait for the next one's resume ACK instead.
        if self.resend_hold.is_some_and(|t| t <= now) && !self.subflows.is_empty() {
            self.unsure_resends |= !self.held.is_empty();
            self.release_held();
        }
        self.update_demand(now);
        if let Some((id, at)) = self.stall_check() {
            if at <= now {
                let sub = self.subflows.get_mut(&id).expect("stall_check names a live subflow");
                let carried = sub.stall();
                self.unsure_resends = true;
                tracing::debug!(?id, units = carried.covered(), "subflow stalled: its data goes out on the others");
                self.send.on_lost(&carried);
                self.stats.stalls += 1;
            }
        }
        let mut dead = Vec::new();
        for s in self.subflows.values_mut() {
            if s.on_timeout(now, &self.cfg) {
                dead.push(s.id);
            }
        }
        for id in dead {
            tracing::debug!(?id, "subflow dead: no reply within the dead-path timeout");
            self.remove_subflow(id, now);
            self.events.push_back(FlowEvent::SubflowDead { id });
        }
    }

    // ---- output ----

    /// Held units go to the re-send set (the peer's ACK, applied first, pruned what
    /// arrived), and new data may go again.
    fn release_held(&mut self) {
        self.send.on_lost(&std::mem::take(&mut self.held));
        self.resend_hold = None;
        self.hold_new = false;
    }

    /// The next frame to send on subflow `id`, at most `max_len` encoded bytes. `None` when
    /// nothing is due or nothing fits (at least 64 bytes always fits every control frame
    /// except a long CLOSE reason or ADDRS list).
    pub fn poll_transmit(&mut self, id: SubflowId, now: Instant, max_len: usize) -> Option<Frame> {
        let failed = matches!(self.status, FlowStatus::Failed(_));
        let data = !failed && self.data_waiting(id);
        let sub = self.subflows.get_mut(&id)?;
        // CLOSE
        if let Some((code, reason)) = sub.close.take() {
            let room = max_len.saturating_sub(5);
            let frame = Frame::Close {
                code,
                reason: clamp_str(&reason, room).to_owned(),
            };
            if frame.encoded_len() <= max_len {
                return Some(self.sent(id, now, frame, false));
            }
            sub.close = Some((code, reason));
            return None;
        }
        if failed {
            return None;
        }
        // Resume ACK, owed ACKs.
        let ack_leads_data = sub.ack_owed && data;
        let ack_fits = max_len >= ACK_HEADER_LEN;
        if sub.resume_ack_pending {
            // The resume ACK must be the first frame on the subflow, whatever the room.
            if !ack_fits {
                return None;
            }
            let frame = self.ack_frame(max_len);
            return Some(self.sent(id, now, frame, false));
        }
        let sub = self.subflows.get_mut(&id)?;
        if let Some(&pong) = sub.pongs.front() {
            if max_len >= 9 {
                sub.pongs.pop_front();
                return Some(self.sent(id, now, Frame::Pong { id: pong }, false));
            }
        }
        if ack_fits && (sub.wants_ack() || ack_leads_data) {
            let frame = self.ack_frame(max_len);
            return Some(self.sent(id, now, frame, false));
        }
        if max_len >= 9 && !self.abandoned.is_empty() {
            if !self.ack_led_abandon && ack_fits {
                self.ack_led_abandon = true;
                let frame = self.ack_frame(max_len);
                return Some(self.sent(id, now, frame, false));
            }
            self.ack_led_abandon = false;
            if let Some(token) = self.abandoned.pop_front() {
                return Some(self.sent(id, now, Frame::Abandon { token }, false));
            }
        }
        let sub = self.subflows.get_mut(&id)?;
        if let Some(standby) = sub.standby_out.take() {
            return Some(self.sent(id, now, Frame::Standby { standby }, false));
        }
        if std::mem::take(&mut sub.policy_out) {
            let policy = self.policy;
            return Some(self.sent(id, now, Frame::Policy { policy }, false));
        }
        if std::mem::take(&mut sub.demand_out) {
            let overflow = self.demand.overflow;
            return Some(self.sent(id, now, Frame::Demand { overflow }, false));
        }
        let sub = self.subflows.get_mut(&id)?;
        if sub.ping_pending && max_len >= 9 {
            sub.ping_pending = false;
            let ping = self.next_ping;
            self.next_ping += 1;
            sub.ping_out = Some((ping, now));
            return Some(self.sent(id, now, Frame::Ping { id: ping }, true));
        }
        if let Some((from, to)) = sub.punch.take() {
            let frame = Frame::Punch { from, to };
            if frame.encoded_len() <= max_len {
                return Some(self.sent(id, now, frame, false));
            }
            sub.punch = Some((from, to));
        }
        if let Some((addrs, relays)) = sub.addrs.take() {
            let frame = Frame::Addrs { addrs, relays };
            if frame.encoded_len() <= max_len {
                return Some(self.sent(id, now, frame, false));
            }
            let Frame::Addrs { addrs, relays } = frame else {
                unreachable!()
            };
            sub.addrs = Some((addrs, relays));
        }
        if max_len < DATA_HEADER_LEN || !data {
            return None;
        }
        let max_payload = (max_len - DATA_HEADER_LEN).min(self.cfg.max_data_frame);
        if let Some(seg) = self.send.next_retransmit(max_payload) {
            self.stats.bytes_retransmitted += seg.payload.len() as u64;
            return Some(self.sent_data(id, now, seg));
        }
        if let Some(seg) = self.next_copy(id, max_payload) {
            self.stats.bytes_copied += seg.payload.len() as u64;
            return Some(self.sent_data(id, now, seg));
        }
        if let Some(seg) = self.send.next_new(max_payload) {
            self.copy_to_others(id, &seg);
            return Some(self.sent_data(id, now, seg));
        }
        None
    }

    /// The next copy owed on subflow `id` (`Redundant`), skipping what was acked.
    fn next_copy(&mut self, id: SubflowId, max_payload: usize) -> Option<Segment> {
        loop {
            let r = self.subflows.get(&id)?.dup.first()?;
            let seg = self.send.copy(r.clone(), max_payload);
            let sub = self.subflows.get_mut(&id)?;
            match seg {
                Some(seg) => {
                    sub.dup.remove(seg.units());
                    return Some(seg);
                }
                None => {
                    sub.dup.remove(r);
                }
            }
        }
    }

    /// `Redundant`: while the flow carries little (an interactive exchange), new data
    /// sent on `id` is also owed on every other path that may carry data.
    fn copy_to_others(&mut self, id: SubflowId, seg: &Segment) {
        if self.policy != PathPolicy::Redundant || self.send.outstanding() + self.send.unsent() > REDUNDANT_LIMIT {
            return;
        }
        let others: Vec<SubflowId> = self
            .subflows
            .values()
            .filter(|o| o.id != id && o.heard && !o.stalled && !self.sidelined(o.id))
            .map(|o| o.id)
            .collect();
        for o in others {
            if let Some(sub) = self.subflows.get_mut(&o) {
                sub.dup.insert(seg.units());
            }
        }
    }

    fn ack_frame(&mut self, max_len: usize) -> Frame {
        let room = (max_len - ACK_HEADER_LEN) / ACK_RANGE_LEN;
        let window = self.recv.window();
        self.advertised = self.advertised.max(window);
        Frame::Ack {
            cum: self.recv.cum(),
            ranges: self.recv.ack_ranges(room.min(MAX_ACK_RANGES)),
            window,
        }
    }

    fn sent_data(&mut self, id: SubflowId, now: Instant, seg: Segment) -> Frame {
        self.stats.bytes_sent += seg.payload.len() as u64;
        if let Some(sub) = self.subflows.get_mut(&id) {
            sub.on_carry(now, seg.units());
        }
        let frame = Frame::Data {
            offset: seg.offset,
            fin: seg.fin,
            payload: seg.payload,
        };
        self.sent(id, now, frame, true)
    }

    fn sent(&mut self, id: SubflowId, now: Instant, frame: Frame, elicits: bool) -> Frame {
        if let Some(sub) = self.subflows.get_mut(&id) {
            if matches!(frame, Frame::Ack { .. }) {
                sub.on_ack_sent();
            }
            sub.on_sent(now, frame.encoded_len(), elicits);
        }
        frame
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) would return a frame (given room).
    pub fn wants_transmit(&self, id: SubflowId) -> bool {
        let Some(sub) = self.subflows.get(&id) else {
            return false;
        };
        if sub.close.is_some() {
            return true;
        }
        if matches!(self.status, FlowStatus::Failed(_)) {
            return false;
        }
        let data = self.data_waiting(id);
        sub.wants_ack()
            || sub.standby_out.is_some()
            || sub.policy_out
            || sub.demand_out
            || !sub.pongs.is_empty()
            || sub.ping_pending
            || sub.addrs.is_some()
            || sub.punch.is_some()
            || !self.abandoned.is_empty()
            || data
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.status, FlowStatus::Failed(_)) {
            return None;
        }
        let open = self.status == FlowStatus::Open;
        let mut t = if open && self.needs_path() {
            self.no_live_since.map(|s| s + self.cfg.flow_deadline)
        } else {
            None
        };
        let demand = if self.policy == PathPolicy::Energy { self.demand.next_change() } else { None };
        let stall = self.stall_check().map(|(_, at)| at);
        let hold = self.resend_hold.filter(|_| !self.subflows.is_empty());
        for x in self.subflows.values().filter_map(|s| s.next_timeout(&self.cfg)).chain(hold).chain(demand).chain(stall) {
            t = Some(t.map_or(x, |t| t.min(x)));
        }
        t
    }

    /// The next event, if any. `Readable`/`Writable` hints come after other events.
    pub fn poll_event(&mut self) -> Option<FlowEvent> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        if std::mem::take(&mut self.readable_hint) {
            return Some(FlowEvent::Readable);
        }
        if std::mem::take(&mut self.writable_hint) {
            return Some(FlowEvent::Writable);
        }
        None
    }

    // ---- inspection ----

    /// `read` would not return `Blocked`.
    pub fn is_readable(&self) -> bool {
        self.recv.has_ready() || self.recv.at_fin() || matches!(self.status, FlowStatus::Failed(_))
    }

    /// `write` would accept bytes or return an error.
    pub fn is_writable(&self) -> bool {
        self.send.is_finished() || self.send.capacity() > 0 || self.status != FlowStatus::Open
    }

    pub fn status(&self) -> FlowStatus {
        self.status.clone()
    }

    pub fn live_subflows(&self) -> usize {
        self.subflows.len()
    }

    pub fn stats(&self) -> FlowStats {
        self.stats.clone()
    }

    pub fn subflow_stats(&self, id: SubflowId) -> Option<SubflowStats> {
        let s = self.subflows.get(&id)?;
        let state = if !s.heard {
            PathState::Joining
        } else if s.stalled {
            PathState::Stalled
        } else if self.sidelined(id) {
            PathState::Standby
        } else {
            PathState::Active
        };
        Some(SubflowStats {
            bytes_delivered: s.delivered,
            delivery_rate: s.rate.map(|r| r as u64),
            in_flight: s.in_flight_bytes(),
            state,
            ..s.stats.clone()
        })
    }

    /// Bytes held by the send buffer (written, not cumulatively acked).
    #[cfg(test)]
    pub fn send_buffered(&self) -> usize {
        self.send.buffered()
    }

    /// Bytes held by reassembly (received, not read).
    #[cfg(test)]
    pub fn recv_buffered(&self) -> usize {
        self.recv.buffered() as usize
    }

    /// What reassembly reckons the bytes it holds cost in memory.
    #[cfg(test)]
    pub fn recv_memory(&self) -> usize {
        self.recv.memory()
    }

    // ---- internals ----

    fn fail(&mut self, err: FlowError) {
        if self.status != FlowStatus::Open {
            return;
        }
        tracing::debug!(%err, "flow failed");
        self.status = FlowStatus::Failed(err.clone());
        self.events.push_back(FlowEvent::Failed(err));
        self.readable_hint = true;
        self.writable_hint = true;
    }

    /// A standby subflow carries no DATA while another, active subflow is heard and not
    /// stalled — under `Energy`, only while that one also keeps up with the demand.
    fn sidelined(&self, id: SubflowId) -> bool {
        self.subflows.get(&id).is_some_and(|s| s.standby)
            && self.subflows.values().any(|o| o.id != id && !o.standby && o.heard && !o.stalled)
            && !(self.policy == PathPolicy::Energy && self.demand.overflow)
    }

    /// Whether subflow `id` has DATA to carry now.
    ///
    /// A subflow the peer has not spoken on yet carries DATA only if it is the flow's very
    /// first, or if we opened it, it ends an outage and everything waiting to be re-sent is known to be
    /// missing (units that never left the lost subflow). Otherwise DATA waits for the peer's first frame there,
    /// its resume ACK: it says where the peer's data stops, so the units it lacks go out
    /// first, in order, and none that it has; new data sent sooner would queue in the
    /// socket ahead of those re-sends, and the receiver would read nothing until they
    /// arrived. For the same reason new data waits while re-sends are held (`hold_new`).
    fn data_waiting(&self, id: SubflowId) -> bool {
        let Some(sub) = self.subflows.get(&id) else { return false };
        if sub.stalled || self.sidelined(id) || sub.in_flight_full(&self.cfg, IN_FLIGHT_FLOOR) {
            return false;
        }
        // The flow's very first subflow; not one left alone when the others were retired.
        let first = self.stats.subflows_added == 1;
        let may_speak = sub.heard
            || (!sub.peer_speaks_first && (first || (sub.ends_outage && !self.unsure_resends && !self.hold_new)));
        if self.send.has_retransmit() {
            return sub.heard || (may_speak && !first);
        }
        if self.hold_new || !may_speak {
            return false;
        }
        !sub.dup.is_empty() || (self.send.has_new() && self.earliest_completion(id))
    }

    /// Whether new data on `id` would arrive no later than on the fastest other path
    /// that may carry data (see [`slower_path_helps`]).
    fn earliest_completion(&self, id: SubflowId) -> bool {
        let estimate = |s: &Subflow| PathEstimate { srtt: s.srtt, rate: s.rate, in_flight: s.in_flight_bytes() };
        let fastest = self
            .subflows
            .values()
            .filter(|o| o.id != id && o.heard && !o.stalled && !self.sidelined(o.id))
            .min_by_key(|o| o.srtt.unwrap_or(Duration::MAX));
        match (self.subflows.get(&id), fastest) {
            (Some(me), Some(fast)) => slower_path_helps(
                estimate(me),
                estimate(fast),
                self.send.unsent(),
                self.cfg.max_data_frame as u64,
            ),
            _ => true,
        }
    }

    /// The subflow holding the oldest unacknowledged unit and when it counts as stalled,
    /// if another subflow could take over its data.
    fn stall_check(&self) -> Option<(SubflowId, Instant)> {
        if self.status != FlowStatus::Open || self.subflows.len() < 2 {
            return None;
        }
        let oldest = self.send.oldest_unacked()?;
        let holder = self.subflows.values().find(|s| s.heard && !s.stalled && s.in_flight.contains(oldest))?;
        self.subflows
            .values()
            .any(|o| o.id != holder.id && o.heard && !o.stalled)
            .then(|| (holder.id, holder.last_progress + stall_after(holder.srtt)))
    }

    /// `Energy`: whether the paths carrying data keep up with what the application
    /// writes; the peer hears (DEMAND) when that changes.
    fn update_demand(&mut self, now: Instant) {
        let before = self.demand.overflow;
        self.track_demand(now);
        if self.demand.overflow != before {
            tracing::debug!(overflow = self.demand.overflow, "demand changed: telling the peer");
            for s in self.subflows.values_mut() {
                s.demand_out = true;
            }
        }
    }

    fn track_demand(&mut self, now: Instant) {
        if self.policy != PathPolicy::Energy {
            self.demand = Demand::default();
            return;
        }
        let rate = self
            .subflows
            .values()
            .filter(|s| !s.standby && s.heard && !s.stalled)
            .filter_map(|s| s.rate)
            .reduce(f64::max);
        self.demand.update(now, self.send.unsent(), Demand::threshold(rate));
    }

    /// Whether the flow still needs a subflow: it is open and something is still to be
    /// sent, acknowledged or received. A flow whose transfer is complete but not yet all
    /// read needs none (and no longer runs the flow deadline).
    pub fn needs_path(&self) -> bool {
        self.status == FlowStatus::Open && !(self.send.fin_acked() && self.recv.fin_received())
    }

    /// Whether both directions are over: our end acknowledged, the peer's received (what
    /// is left is the application reading it, and the peer hearing our last ACK).
    pub fn transfer_complete(&self) -> bool {
        !matches!(self.status, FlowStatus::Failed(_)) && self.send.fin_acked() && self.recv.fin_received()
    }

    fn check_finished(&mut self) {
        if self.status == FlowStatus::Open && self.send.fin_acked() && self.recv.at_fin() {
            self.status = FlowStatus::Finished;
            self.events.push_back(FlowEvent::Finished);
        }
    }
}
