//! Schedulers: which subflow carries which data, per [`PathPolicy`].
//!
//! Every subflow pulls: when its socket has room the runtime asks the flow for a frame on
//! it, so a path takes data as fast as it drains (the runtime keeps little unsent data in
//! each socket). What is left to decide is *whether* a subflow may take data at all, and
//! what else it should carry; that is the policy:
//!
//! - `Backup`: one active path; the others are hot standbys that carry data only while no
//!   active path is heard (and not stalled). Make-before-break hand-offs, one radio busy.
//! - `Energy`: Wi-Fi first, like `Backup`, but a worse path (cellular) carries data only
//!   while the active paths cannot keep up with the application's demand, and the
//!   connecting end keeps no subflow there at all while they can (DEMAND frames tell it
//!   when the peer's demand overflows; see `FlowState::needs_extra_paths`).
//! - `Performance`: every path carries data, with one exception for the earliest
//!   completion: a slower path takes data only if it would deliver it before the faster
//!   one could (otherwise the receiver would wait for it, head-of-line blocked).
//! - `Redundant`: like `Performance`, and small writes are also copied onto every other
//!   path, so the first copy to arrive is the one read (latency before bytes).
//!
//! Under every policy a subflow that holds the oldest unacknowledged data and has not
//! delivered anything for a few of its round trips is *stalled*: what it carries is sent
//! again on the others, and it takes no new data until it delivers again.
//!
//! The connecting end chooses the policy and which subflows are standbys; the accepting
//! end learns both from POLICY and STANDBY frames and schedules its own sending the same
//! way.

use std::time::{Duration, Instant};

/// How a flow uses its paths (changeable at run time). Under every policy a path that
/// stops delivering for a few of its round trips is stalled: what it carries goes out
/// again on the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub enum PathPolicy {
    /// One path (the best local address) carries the data; the others are hot standbys
    /// that take over at once when it is lost. The default.
    #[default]
    Backup,
    /// Every path carries data, split so the whole arrives soonest.
    Performance,
    /// The best path carries the data; cellular is dialed and carries data only while
    /// the best path cannot carry the demand, or is gone (no idle standby: each one costs
    /// an LTE wake-up when it opens and another when it closes).
    Energy,
    /// Like `Performance`, with small writes copied onto every path.
    Redundant,
}

impl PathPolicy {
    /// Every policy, in wire order.
    pub const ALL: [PathPolicy; 4] = [
        PathPolicy::Backup,
        PathPolicy::Performance,
        PathPolicy::Energy,
        PathPolicy::Redundant,
    ];

    /// The lower-case name used by the CLI and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            PathPolicy::Backup => "backup",
            PathPolicy::Performance => "performance",
            PathPolicy::Energy => "energy",
            PathPolicy::Redundant => "redundant",
        }
    }

    /// Whether worse paths are kept as standbys (no data while a better path works).
    pub fn uses_standbys(self) -> bool {
        matches!(self, PathPolicy::Backup | PathPolicy::Energy)
    }

    pub(crate) fn to_wire(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_wire(v: u8) -> Option<PathPolicy> {
        PathPolicy::ALL.get(v as usize).copied()
    }
}

impl std::str::FromStr for PathPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PathPolicy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown policy {s:?}: expected backup, performance, energy or redundant"))
    }
}

impl std::fmt::Display for PathPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}



/// `Energy`: the backlog must stay at or over the threshold this long before standbys
/// carry data (a burst is not a demand Wi-Fi cannot meet)…
const OVERFLOW_AFTER: Duration = Duration::from_secs(1);
/// …and under a quarter of it this long before they stop again.
const CALM_AFTER: Duration = Duration::from_secs(2);
/// The backlog threshold: what the active paths deliver in this time, at least
/// [`OVERFLOW_MIN_BACKLOG`].
const OVERFLOW_BACKLOG_TIME: Duration = Duration::from_millis(250);
const OVERFLOW_MIN_BACKLOG: u64 = 64 * 1024;
/// `Redundant`: new data is copied while the flow has at most this much unacknowledged
/// or unsent (an interactive exchange, not a bulk transfer).
pub(crate) const REDUNDANT_LIMIT: u64 = 64 * 1024;
/// A subflow holding the oldest unacknowledged data is stalled after delivering nothing
/// for this many of its round trips, and at least [`STALL_MIN`]: longer than a fast
/// retransmit, shorter than TCP's minimum retransmission timeout (200 ms).
const STALL_RTTS: u32 = 3;
const STALL_MIN: Duration = Duration::from_millis(100);

/// How long a subflow holding the oldest data may deliver nothing before it is stalled.
pub(crate) fn stall_after(srtt: Option<Duration>) -> Duration {
    srtt.map_or(STALL_MIN, |r| (r * STALL_RTTS).max(STALL_MIN))
}

/// `Energy`'s view of demand: whether the active paths keep up with what the
/// application writes, judged by the unsent backlog over time.
#[derive(Debug, Default)]
pub(crate) struct Demand {
    /// Standbys carry data too.
    pub overflow: bool,
    above_since: Option<Instant>,
    below_since: Option<Instant>,
}

impl Demand {
    /// The backlog threshold for active paths delivering `rate` bytes per second.
    pub fn threshold(rate: Option<f64>) -> u64 {
        let by_rate = rate.map_or(0, |r| (r * OVERFLOW_BACKLOG_TIME.as_secs_f64()) as u64);
        by_rate.max(OVERFLOW_MIN_BACKLOG)
    }

    /// Takes in the backlog seen at `now`.
    pub fn update(&mut self, now: Instant, backlog: u64, threshold: u64) {
        if backlog >= threshold {
            self.below_since = None;
            let since = *self.above_since.get_or_insert(now);
            if !self.overflow && now >= since + OVERFLOW_AFTER {
                self.overflow = true;
            }
        } else if backlog < threshold / 4 {
            self.above_since = None;
            let since = *self.below_since.get_or_insert(now);
            if self.overflow && now >= since + CALM_AFTER {
                self.overflow = false;
            }
        } else {
            self.above_since = None;
            self.below_since = None;
        }
    }

    /// When [`update`](Self::update) could next change `overflow` if the backlog holds.
    pub fn next_change(&self) -> Option<Instant> {
        if self.overflow {
            self.below_since.map(|t| t + CALM_AFTER)
        } else {
            self.above_since.map(|t| t + OVERFLOW_AFTER)
        }
    }
}

/// What a slower path whose rate is not known yet may have in flight.
const PROBE: u64 = 64 * 1024;

/// What the earliest-completion rule knows of one path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathEstimate {
    pub srtt: Option<Duration>,
    /// Delivery rate, bytes per second.
    pub rate: Option<f64>,
    /// Bytes sent on it and not yet acknowledged (its queue).
    pub in_flight: u64,
}

/// Earliest completion first: whether a path slower than `fastest` should take the next
/// `segment` bytes, given `unsent` bytes waiting. The fast path would deliver them once
/// its queue and everything waiting ahead went through; the slow one once its own queue
/// did, plus its longer one-way delay. Taking data the fast path would deliver sooner
/// leaves the receiver waiting for the slow path (head-of-line blocking at the end of a
/// transfer, or of every burst). A path not measured yet may carry one probe's worth.
pub(crate) fn slower_path_helps(me: PathEstimate, fastest: PathEstimate, unsent: u64, segment: u64) -> bool {
    let Some(rtt_fast) = fastest.srtt else { return true }; // nothing to compare with yet
    let Some(rtt_me) = me.srtt else { return me.in_flight < PROBE };
    if rtt_me <= rtt_fast {
        return true;
    }
    let Some(rate_fast) = fastest.rate.filter(|r| *r > 0.0) else { return me.in_flight < PROBE };
    let rate_me = match me.rate.filter(|r| *r > 0.0) {
        Some(r) => r,
        // Not measured yet: a probe's worth at a time, at a rate guessed from the RTTs
        // (paths with longer round trips are usually slower; cellular beside Wi-Fi).
        None if me.in_flight < PROBE => rate_fast * rtt_fast.as_secs_f64() / rtt_me.as_secs_f64(),
        None => return false,
    };
    let fast_done = rtt_fast.as_secs_f64() / 2.0 + (fastest.in_flight + unsent) as f64 / rate_fast;
    let me_done = rtt_me.as_secs_f64() / 2.0 + (me.in_flight + segment.min(unsent)) as f64 / rate_me;
    me_done < fast_done
}
