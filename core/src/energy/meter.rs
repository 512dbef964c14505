//! The energy meter of one path.

use std::time::{Duration, Instant};

use super::machine::Machine;
use super::{EnergyBreakdown, RadioParams, RadioState};

/// Estimates the energy one path's radio uses, from the bytes it carries and when.
///
/// Feed it every send and receive with [`on_bytes`](Self::on_bytes), and the time with
/// [`advance`](Self::advance) when you want a reading; [`joules`](Self::joules) is the
/// energy used up to the latest time passed in. It never reads a clock, so a test or a
/// benchmark can drive it in virtual time. Times earlier than the latest one seen are
/// taken as the latest one (bytes still count), so callers need not order their calls
/// perfectly.
///
/// ```
/// use std::time::{Duration, Instant};
/// use msocket::energy::{EnergyMeter, RadioParams, RadioState};
///
/// let t0 = Instant::now();
/// let mut lte = EnergyMeter::new(RadioParams::LTE, t0);
/// lte.on_bytes(t0, 60, 0); // one keepalive wakes the radio
/// assert_eq!(lte.state(), RadioState::Promoting);
/// lte.advance(t0 + Duration::from_secs(30));
/// assert_eq!(lte.state(), RadioState::Idle);
/// assert!((lte.joules() - 12.71).abs() < 0.01); // promotion, one active bin and the tail
/// ```
///
/// One meter per radio a path uses. Two paths over the same interface share its radio;
/// metered separately each pays its own tail, so meter the interface then, and split its
/// energy between flows by their bytes if needed.
#[derive(Clone, Debug)]
pub struct EnergyMeter {
    origin: Instant,
    machine: Machine,
}

impl EnergyMeter {
    /// A meter for a radio that is idle at `now`.
    pub fn new(params: RadioParams, now: Instant) -> EnergyMeter {
        EnergyMeter {
            origin: now,
            machine: Machine::new(params, Duration::ZERO),
        }
    }

    /// `sent` bytes went out and `received` bytes came in at `now`. Zero bytes is not
    /// activity (it only advances time).
    pub fn on_bytes(&mut self, now: Instant, sent: u64, received: u64) {
        self.machine.on_bytes(self.offset(now), sent, received);
    }

    /// Accounts for the time up to `now` (the tail running out, for instance).
    pub fn advance(&mut self, now: Instant) {
        self.machine.advance(self.offset(now));
    }

    /// Energy used up to the latest time passed in, in joules. Finite, never negative,
    /// never decreasing.
    pub fn joules(&self) -> f64 {
        self.machine.energy().total()
    }

    /// The same energy split by what the radio was doing.
    pub fn breakdown(&self) -> EnergyBreakdown {
        self.machine.energy()
    }

    /// The radio's state at the latest time passed in.
    pub fn state(&self) -> RadioState {
        self.machine.state()
    }

    /// When the radio goes idle if no more bytes come: advancing to it books the rest of
    /// the tail. The latest time passed in, if the radio is idle already.
    pub fn idle_at(&self) -> Instant {
        let now = self.now();
        // At most a promotion, a bin and a tail away (each phase is capped at an hour);
        // only an `Instant` at the very end of its range could fail to hold it.
        now.checked_add(self.machine.idle_at().saturating_sub(self.machine.now()))
            .unwrap_or(now)
    }

    /// The latest time passed in.
    pub fn now(&self) -> Instant {
        // The machine's time is the offset of an `Instant` passed in (or zero), so adding
        // it back cannot overflow.
        self.origin + self.machine.now()
    }

    fn offset(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
    }
}
