//! Per-subflow state: liveness, RTT, and what this subflow owes the peer.
//!
//! A subflow is one TCP connection. TCP already retransmits, so the flow protocol never
//! re-sends on a live subflow; what it must decide is *when a subflow is dead*. TCP's own
//! timeouts are minutes long, far too slow for a phone walking out of Wi-Fi. So each
//! subflow watches for replies: once it sent something that demands one (DATA is acked
//! within the peer's ack delay, PING is answered at once) and hears nothing for
//! `dead_path_timeout`, it is dead and its unacked data moves to another subflow.
//! Halfway there it sends a PING, so a quiet-but-alive peer is not mistaken for a dead one.
//! Idle subflows PING every `keepalive_interval` to keep NAT bindings and detect death.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::ranges::RangeSet;
use super::{FlowConfig, SubflowId, SubflowStats};

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
    pub ack_deadline: Option<Instant>,
    pub ack_now: bool,
    pub unacked_bytes: u64,
    pub window_update: bool,
    pub close: Option<(u16, String)>,
    pub addrs: Option<(Vec<std::net::SocketAddr>, Vec<String>)>,
    /// Kept as a standby: DATA only while no active subflow is heard (set by either end).
    pub standby: bool,
    /// A STANDBY frame to send, telling the peer.
    pub standby_out: Option<bool>,
    /// Units sent on this subflow and not yet acknowledged.
    pub in_flight: RangeSet,
    pub srtt: Option<Duration>,
    pub stats: SubflowStats,
}

impl Subflow {
    pub fn new(id: SubflowId, now: Instant, ends_outage: bool) -> Self {
        Subflow {
            id,
            token: None,
            heard: false,
            ends_outage,
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
            ack_deadline: None,
            ack_now: false,
            unacked_bytes: 0,
            window_update: false,
            close: None,
            addrs: None,
            standby: false,
            standby_out: None,
            in_flight: RangeSet::new(),
            srtt: None,
            stats: SubflowStats::default(),
        }
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
                let sample = now.saturating_duration_since(sent);
                self.srtt = Some(match self.srtt {
                    None => sample,
                    Some(s) => (s * 7 + sample) / 8,
                });
                self.stats.srtt = self.srtt;
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
        if let Some(since) = self.awaiting_since {
            consider(since + cfg.dead_path_timeout);
            if !self.half_ping_sent && !self.in_flight.is_empty() {
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
        if let Some(since) = self.awaiting_since {
            if since + cfg.dead_path_timeout <= now {
                return true;
            }
            if !self.half_ping_sent
                && !self.in_flight.is_empty()
                && since + cfg.dead_path_timeout / 2 <= now
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
