//! Where the joules went.

use std::ops::{Add, AddAssign};

/// Energy split by what the radio was doing, in joules. Every part is finite and never
/// negative.
///
/// The split is what makes policies comparable: a keepalive on LTE is almost all
/// `promotion + tail`, a bulk download almost all `active + data`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EnergyBreakdown {
    /// Waking the radio from idle.
    pub promotion: f64,
    /// Base power (β) while active, whatever the throughput.
    pub active: f64,
    /// The throughput-dependent part (α_u per bit sent, α_d per bit received).
    pub data: f64,
    /// Staying up after the last activity.
    pub tail: f64,
}

impl EnergyBreakdown {
    /// The sum of all parts.
    pub fn total(&self) -> f64 {
        self.promotion + self.active + self.data + self.tail
    }
}

impl Add for EnergyBreakdown {
    type Output = EnergyBreakdown;

    fn add(self, other: EnergyBreakdown) -> EnergyBreakdown {
        EnergyBreakdown {
            promotion: self.promotion + other.promotion,
            active: self.active + other.active,
            data: self.data + other.data,
            tail: self.tail + other.tail,
        }
    }
}

impl AddAssign for EnergyBreakdown {
    fn add_assign(&mut self, other: EnergyBreakdown) {
        *self = *self + other;
    }
}
