//! Per-subflow state: liveness, RTT, and what this subflow owes the peer.
//!
//! A subflow is one TCP connection. TCP already retransmits, so the flow protocol never
//! re-sends on a live subflow; what it must decide is *when a subflow is dead*. TCP's own
//! timeouts are minutes long, far too slow for a phone walking out of Wi-Fi. So each
//! subflow watches for replies: once it sent something that demands one (DATA is acked
//! within the peer's ack delay, PING is answered at once) and hears nothing for
//! `dead_path_timeout`, it is dead and its unacked data moves to another subflow.
//! Halfway there it sends a PING, so a quiet-but-alive peer is not mistaken for a dead one.
//! A subflow that was *receiving* DATA expects more just as a sender expects ACKs: if it
//! falls silent, the same clock runs from the last frame heard, so an end with nothing of
//! its own to send notices a silently dead path too (a PONG to its probe says the peer
//! merely paused). Idle subflows PING every `keepalive_interval` to keep NAT bindings and
//! detect death.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::ranges::RangeSet;
use super::{FlowConfig, SubflowId, SubflowStats};

/// A delivery-rate sample spans at least this (or the RTT, if longer).
const RATE_SPAN_MIN: Duration = Duration::from_millis(20);

/// PONGs owed beyond this are dropped (a peer flooding PINGs gets the latest answers).
const MAX_PENDING_PONGS: usize = 4;

#[derive(Debug)]
pub(crate) struct Subflow {
    pub id: SubflowId,
    /// The name both ends give this subflow (set by the runtime), so one end can tell the
    /// other that it lost it.
    pub token: Option<u64>,
    /// The peer's first frame was heard (its resume ACK), so re-sends may use this subflow.
    pub heard: bool,
    /// Added while the flow had no live subflow: its first frame heard ends the outage.
    pub ends_outage: bool,
    /// The peer opened it and speaks first (its resume ACK is on the way or already
    /// here): DATA waits for that, whatever else holds.
    pub peer_speaks_first: bool,
    pub last_heard: Instant,
    pub last_sent: Instant,
    /// When the oldest still-unanswered reply-eliciting frame was sent.
    pub awaiting_since: Option<Instant>,
    pub half_ping_sent: bool,
    pub ping_pending: bool,
    pub ping_out: Option<(u64, Instant)>,
    pub pongs: VecDeque<u64>,
    /// The resume ACK (first frame) is still to be sent.
    pub resume_ack_pending: bool,
    /// DATA arrived here and was not yet acknowledged here.
    pub ack_owed: bool,
    /// The peer was sending DATA here (and has not finished): more is expected, so a
    /// silence counts towards this subflow's death until a PONG shows the peer paused.
    pub receiving: bool,
    pub ack_deadline: Option<Instant>,
    pub ack_now: bool,
    pub unacked_bytes: u64,
    pub window_update: bool,
    pub close: Option<(u16, String)>,
    pub addrs: Option<(Vec<std::net::SocketAddr>, Vec<String>)>,
    /// A PUNCH to send: (from, to).
    pub punch: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// Kept as a standby: DATA only while no active subflow is heard (set by either end).
    pub standby: bool,
    /// A STANDBY frame to send, telling the peer.
    pub standby_out: Option<bool>,
    /// Units sent on this subflow and not yet acknowledged.
    pub in_flight: RangeSet,
    pub srtt: Option<Duration>,
    /// The least RTT sampled: the path's round trip without its queues.
    pub min_rtt: Option<Duration>,
    pub stats: SubflowStats,
    /// A POLICY frame to send, telling the peer the flow's policy.
    pub policy_out: bool,
    /// A DEMAND frame to send, telling the peer whether our paths keep up (`Energy`).
    pub demand_out: bool,
    /// Units acknowledged while in flight here: what this path delivered.
    pub delivered: u64,
    /// Delivery rate in bytes per second (smoothed over samples of at least one RTT).
    pub rate: Option<f64>,
    /// Start of the current rate sample: (when, `delivered` then).
    rate_mark: Option<(Instant, u64)>,
    /// When this subflow last delivered, or started carrying data again.
    pub last_progress: Instant,
    /// It held the oldest unacknowledged data and delivered nothing for a while: that
    /// data went out again elsewhere, and it takes none until the peer is heard on it.
    pub stalled: bool,
    /// Copies of new data sent on another subflow, to send here too (`Redundant`).
    pub dup: RangeSet,
}

impl Subflow {
    pub fn new(id: SubflowId, now: Instant, ends_outage: bool) -> Self {
        Subflow {
            id,
            token: None,
            heard: false,
            ends_outage,
            peer_speaks_first: false,
            last_heard: now,
            last_sent: now,
            awaiting_since: None,
            half_ping_sent: false,
            // One PING on add: an RTT sample and an early liveness check.
            ping_pending: true,
            ping_out: None,
            pongs: VecDeque::new(),
            resume_ack_pending: true,
            ack_owed: false,
            receiving: false,
            ack_deadline: None,
            ack_now: false,
            unacked_bytes: 0,
            window_update: false,
            close: None,
            addrs: None,
            punch: None,
            standby: false,
            standby_out: None,
            in_flight: RangeSet::new(),
            srtt: None,
            min_rtt: None,
            stats: SubflowStats::default(),
            policy_out: false,
            demand_out: false,
            delivered: 0,
            rate: None,
            rate_mark: None,
            last_progress: now,
            stalled: false,
            dup: RangeSet::new(),
        }
    }

    /// Stops carrying data: returns what was in flight here, to be sent elsewhere, and
    /// probes the path so that hearing from it again ends the stall.
    pub fn stall(&mut self) -> RangeSet {
        self.stalled = true;
        // A PING already out keeps its place (its PONG is the RTT sample).
        self.ping_pending |= self.ping_out.is_none();
        std::mem::take(&mut self.in_flight)
    }

    /// Since when a reply is due: the oldest unanswered frame that asks for one, or, with
    /// data outstanding here, the last sign of life (a frame heard, or data delivered),
    /// or, while receiving, the last frame heard.
    fn awaiting(&self) -> Option<Instant> {
        let sending = self
            .awaiting_since
            .or_else(|| (!self.in_flight.is_empty()).then(|| self.last_heard.max(self.last_progress)));
        // A probe sent into the silence does not restart the receiver's clock.
        let receiving = self.receiving.then_some(self.last_heard);
        match (sending, receiving) {
            (Some(s), Some(r)) => Some(s.min(r)),
            (s, r) => s.or(r),
        }
    }

    /// Whether a silence halfway to the dead-path timeout deserves a probe: something is
    /// expected here beyond the answer to a PING already sent.
    fn probes_halfway(&self) -> bool {
        !self.in_flight.is_empty() || self.stalled || self.receiving
    }

    /// Units about to be sent here: a subflow that was idle starts its progress clock.
    pub fn on_carry(&mut self, now: Instant, units: std::ops::Range<u64>) {
        if self.in_flight.is_empty() {
            // Busy again after a pause: progress and the next rate sample count from here
            // (a sample spanning the pause would understate the path).
            self.last_progress = now;
            self.rate_mark = Some((now, self.delivered));
        }
        self.in_flight.insert(units);
    }

    /// An ACK covered these units; returns how many of them were in flight here.
    pub fn on_acked(&mut self, now: Instant, cum: u64, ranges: &[std::ops::Range<u64>]) -> u64 {
        let mut n = self.in_flight.remove_below(cum);
        for r in ranges {
            n += self.in_flight.remove(r.clone());
        }
        self.dup.remove_below(cum);
        for r in ranges {
            self.dup.remove(r.clone());
        }
        if n > 0 {
            self.on_delivered(now, n);
        }
        n
    }

    fn on_delivered(&mut self, now: Instant, units: u64) {
        self.last_progress = now;
        self.delivered += units;
        let Some((since, from)) = self.rate_mark else { return };
        let span = now.saturating_duration_since(since);
        if span >= self.srtt.unwrap_or(RATE_SPAN_MIN).max(RATE_SPAN_MIN) {
            let sample = (self.delivered - from) as f64 / span.as_secs_f64();
            self.rate = Some(self.rate.map_or(sample, |r| 0.75 * r + 0.25 * sample));
            self.rate_mark = Some((now, self.delivered));
        }
    }

    /// Whether this subflow already has as much unacknowledged as its path needs: `rtts`
    /// base round trips at its delivery rate, at least `floor`. A round trip here includes
    /// the peer's `ack_delay`, since acknowledgements come no sooner. Unknown figures set
    /// no bound.
    pub fn in_flight_full(&self, cfg: &FlowConfig, floor: u64) -> bool {
        let (Some(rate), Some(rtt)) = (self.rate, self.min_rtt) else { return false };
        if cfg.max_in_flight_rtts == 0 {
            return false;
        }
        let round_trip = (rtt + cfg.ack_delay).as_secs_f64();
        let bound = (rate * round_trip * cfg.max_in_flight_rtts as f64) as u64;
        self.in_flight_bytes() >= bound.max(floor)
    }

    /// Bytes (units) in flight here.
    pub fn in_flight_bytes(&self) -> u64 {
        self.in_flight.covered()
    }

    /// Any frame arrived.
    /// How long this subflow may stay silent before it PINGs.
    fn keepalive(&self, cfg: &FlowConfig) -> Duration {
        if self.standby {
            cfg.standby_keepalive_interval.max(cfg.keepalive_interval)
        } else {
            cfg.keepalive_interval
        }
    }

    pub fn on_heard(&mut self, now: Instant, wire_len: usize) {
        if self.stalled {
            // The path works again: whatever it carried arrives or was sent elsewhere.
            self.stalled = false;
            self.last_progress = now;
        }
        self.heard = true;
        self.last_heard = now;
        self.awaiting_since = None;
        self.half_ping_sent = false;
        self.stats.frames_received += 1;
        self.stats.bytes_received += wire_len as u64;
    }

    /// A frame went out; `elicits` when the peer must reply to it.
    pub fn on_sent(&mut self, now: Instant, wire_len: usize, elicits: bool) {
        self.last_sent = now;
        if elicits && self.awaiting_since.is_none() {
            self.awaiting_since = Some(now);
        }
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += wire_len as u64;
    }

    pub fn queue_pong(&mut self, id: u64) {
        if self.pongs.len() == MAX_PENDING_PONGS {
            self.pongs.pop_front();
        }
        self.pongs.push_back(id);
    }

    pub fn on_pong(&mut self, id: u64, now: Instant) {
        if let Some((want, sent)) = self.ping_out {
            if want == id {
                self.ping_out = None;
                // The peer answers: a silence in its DATA was a pause, not a dead path.
                self.receiving = false;
                let sample = now.saturating_duration_since(sent);
                self.srtt = Some(match self.srtt {
                    None => sample,
                    Some(s) => (s * 7 + sample) / 8,
                });
                self.stats.srtt = self.srtt;
                self.min_rtt = Some(self.min_rtt.map_or(sample, |m| m.min(sample)));
            }
        }
    }

    /// DATA of `len` bytes arrived; an ACK is owed here.
    pub fn on_data(
        &mut self,
        now: Instant,
        len: u64,
        immediate_after: u64,
        fin: bool,
        cfg: &FlowConfig,
    ) {
        if !self.ack_owed {
            self.ack_owed = true;
            self.ack_deadline = Some(now + cfg.ack_delay);
        }
        self.unacked_bytes += len;
        self.receiving = !fin;
        if fin || self.unacked_bytes >= immediate_after {
            self.ack_now = true;
        }
    }

    /// An ACK went out here.
    pub fn on_ack_sent(&mut self) {
        self.resume_ack_pending = false;
        self.ack_owed = false;
        self.ack_deadline = None;
        self.ack_now = false;
        self.unacked_bytes = 0;
        self.window_update = false;
    }

    pub fn wants_ack(&self) -> bool {
        self.resume_ack_pending || self.ack_now || self.window_update
    }

    /// Earliest instant any of this subflow's timers fires.
    pub fn next_timeout(&self, cfg: &FlowConfig) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if self.ack_owed && !self.ack_now {
            if let Some(d) = self.ack_deadline {
                consider(d);
            }
        }
        if let Some(since) = self.awaiting() {
            consider(since + cfg.dead_path_timeout);
            if !self.half_ping_sent && self.probes_halfway() {
                consider(since + cfg.dead_path_timeout / 2);
            }
        }
        if !self.ping_pending {
            consider(self.last_sent.max(self.last_heard) + self.keepalive(cfg));
        }
        t
    }

    /// Fires due timers. Returns `true` when the subflow is dead.
    pub fn on_timeout(&mut self, now: Instant, cfg: &FlowConfig) -> bool {
        if self.ack_owed && self.ack_deadline.is_some_and(|d| d <= now) {
            self.ack_now = true;
        }
        if let Some(since) = self.awaiting() {
            if since + cfg.dead_path_timeout <= now {
                return true;
            }
            if !self.half_ping_sent && self.probes_halfway() && since + cfg.dead_path_timeout / 2 <= now
            {
                self.half_ping_sent = true;
                self.ping_pending = true;
            }
        }
        if !self.ping_pending && self.last_sent.max(self.last_heard) + self.keepalive(cfg) <= now
        {
            self.ping_pending = true;
        }
        false
    }
}
