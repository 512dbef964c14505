//! The radio state machine and the integration of its power over time.
//!
//! Time is a [`Duration`] since an origin chosen by the caller, so this runs without a
//! clock: [`EnergyMeter`](super::EnergyMeter) maps `Instant`s onto it and
//! [`estimate`](super::estimate) feeds it trace offsets directly.

use std::time::Duration;

use super::{EnergyBreakdown, RadioParams};

/// How long the radio stays active after the last byte, and the window over which
/// throughput is measured.
///
/// While active the radio draws `α_u·up + α_d·down + β`, the throughputs averaged over
/// windows of this length. Integrated, that is α per bit plus β per second active, which
/// is how it is charged: per bit as bytes are reported, β for the time active. Bytes less
/// than a bin apart keep the radio active; the tail starts one bin after the last of
/// them. 100 ms follows bursts closely yet keeps the packets of one burst in one active
/// period.
pub const ACTIVE_BIN: Duration = Duration::from_millis(100);

/// What the radio is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RadioState {
    /// Asleep; costs nothing in this (marginal) model.
    Idle,
    /// Waking up after activity found it idle; data waits for the promotion to end.
    Promoting,
    /// Moving data, or less than [`ACTIVE_BIN`] after the last byte.
    Active,
    /// Up after the active period, waiting for more before going idle.
    Tail,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Idle,
    /// Ends at `until`, then the radio is active for a bin.
    Promoting {
        until: Duration,
    },
    /// Active until `until` (a bin after the last byte) unless more bytes come.
    Active {
        until: Duration,
    },
    /// Goes idle at `until`.
    Tail {
        until: Duration,
    },
}

/// One radio's state and the energy it has used, on a time line of offsets.
#[derive(Clone, Debug)]
pub(super) struct Machine {
    params: RadioParams,
    /// Energy has been integrated up to here; earlier times are treated as this one.
    now: Duration,
    phase: Phase,
    energy: EnergyBreakdown,
}

/// Joules used by `mw` milliwatts during `dt`.
fn joules(mw: f64, dt: Duration) -> f64 {
    mw * dt.as_secs_f64() / 1e3
}

impl Machine {
    /// An idle radio at offset `now`.
    pub(super) fn new(params: RadioParams, now: Duration) -> Machine {
        Machine {
            params: params.sanitized(),
            now,
            phase: Phase::Idle,
            energy: EnergyBreakdown::default(),
        }
    }

    /// The latest time seen.
    pub(super) fn now(&self) -> Duration {
        self.now
    }

    pub(super) fn energy(&self) -> EnergyBreakdown {
        self.energy
    }

    pub(super) fn state(&self) -> RadioState {
        match self.phase {
            Phase::Idle => RadioState::Idle,
            Phase::Promoting { .. } => RadioState::Promoting,
            Phase::Active { .. } => RadioState::Active,
            Phase::Tail { .. } => RadioState::Tail,
        }
    }

    /// When the radio will be idle if nothing else happens (the latest time seen if it
    /// already is).
    pub(super) fn idle_at(&self) -> Duration {
        let p = &self.params;
        match self.phase {
            Phase::Idle => self.now,
            Phase::Promoting { until } => until.saturating_add(ACTIVE_BIN).saturating_add(p.tail),
            Phase::Active { until } => until.saturating_add(p.tail),
            Phase::Tail { until } => until,
        }
    }

    /// Accounts for time passing up to `to`; a `to` before the latest time seen changes
    /// nothing.
    pub(super) fn advance(&mut self, to: Duration) {
        let to = to.max(self.now);
        // Each pass either reaches `to` or moves one phase on (promoting → active → tail
        // → idle, which ends it), so this loop runs at most four times.
        loop {
            let p = &self.params;
            match self.phase {
                Phase::Idle => {
                    self.now = to;
                    return;
                }
                Phase::Promoting { until } => {
                    let end = to.min(until);
                    self.energy.promotion += joules(p.promotion_mw, end - self.now);
                    self.now = end;
                    if end < until {
                        return;
                    }
                    self.phase = Phase::Active {
                        until: until.saturating_add(ACTIVE_BIN),
                    };
                }
                Phase::Active { until } => {
                    let end = to.min(until);
                    self.energy.active += joules(p.beta_mw, end - self.now);
                    self.now = end;
                    if end < until {
                        return;
                    }
                    self.phase = Phase::Tail {
                        until: until.saturating_add(p.tail),
                    };
                }
                Phase::Tail { until } => {
                    let end = to.min(until);
                    self.energy.tail += joules(p.tail_mw, end - self.now);
                    self.now = end;
                    if end < until {
                        return;
                    }
                    self.phase = Phase::Idle;
                }
            }
        }
    }

    /// Bytes sent and received at `at` (or at the latest time seen, if `at` is earlier).
    /// Zero bytes is no activity: the radio is not woken.
    pub(super) fn on_bytes(&mut self, at: Duration, sent: u64, received: u64) {
        self.advance(at);
        if sent == 0 && received == 0 {
            return;
        }
        let p = &self.params;
        // α in mW per Mbit/s is mJ per Mbit: joules = α · bits / 10⁹.
        self.energy.data += (p.alpha_up_mw_per_mbps * sent as f64
            + p.alpha_down_mw_per_mbps * received as f64)
            * 8.0
            / 1e9;
        self.phase = match self.phase {
            Phase::Idle => Phase::Promoting {
                until: self.now.saturating_add(p.promotion),
            },
            // The bytes go out once the promotion ends, which opens a bin.
            promoting @ Phase::Promoting { .. } => promoting,
            Phase::Active { .. } | Phase::Tail { .. } => Phase::Active {
                until: self.now.saturating_add(ACTIVE_BIN),
            },
        };
        // A zero promotion ends at once.
        self.advance(self.now);
    }
}
