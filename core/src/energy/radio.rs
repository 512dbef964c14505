//! Radio kinds and their power parameters. The sources, and how each value was checked,
//! are in the [module docs](super).

use std::time::Duration;

/// The kind of link a path uses, as far as energy is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Radio {
    /// Cellular (4G LTE parameters).
    Lte,
    /// Wi-Fi (802.11, as measured in the same study).
    Wifi,
    /// Ethernet, loopback and anything else powered from the wall: no marginal energy.
    Wired,
}

impl Radio {
    /// The parameters of this kind of radio.
    pub const fn params(self) -> RadioParams {
        match self {
            Radio::Lte => RadioParams::LTE,
            Radio::Wifi => RadioParams::WIFI,
            Radio::Wired => RadioParams::WIRED,
        }
    }
}

/// Power model of one radio: the linear throughput model while active, plus the cost of
/// waking up (promotion) and of staying up after the last packet (tail).
///
/// Powers are *marginal*: above what the phone draws with the radio idle. A power (or
/// slope) that is negative or NaN counts as zero, one above a megawatt as a megawatt, and
/// a promotion or tail longer than an hour as an hour: custom parameters cannot make the
/// meter overflow or produce NaN.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RadioParams {
    /// Uplink cost while active, in mW per Mbit/s sent (α_u).
    pub alpha_up_mw_per_mbps: f64,
    /// Downlink cost while active, in mW per Mbit/s received (α_d).
    pub alpha_down_mw_per_mbps: f64,
    /// Base power while active, whatever the throughput, in mW (β).
    pub beta_mw: f64,
    /// Time from idle until data can flow.
    pub promotion: Duration,
    /// Average power during promotion, in mW.
    pub promotion_mw: f64,
    /// Time the radio stays up after the last activity before it goes idle.
    pub tail: Duration,
    /// Average power during the tail, in mW (DRX cycles averaged into one flat power).
    pub tail_mw: f64,
}

/// Largest power (mW) or power slope (mW per Mbit/s) a parameter may contribute: one
/// megawatt, far above any radio, small enough that no sum of energies overflows.
const MAX_POWER_MW: f64 = 1e9;

/// Longest promotion or tail: an hour, far above any radio.
const MAX_PHASE: Duration = Duration::from_secs(3600);

impl RadioParams {
    /// 4G LTE, from Huang et al., MobiSys 2012, Tables 3 and 4 (the [`energy`](super)
    /// module docs say how each value was checked).
    pub const LTE: RadioParams = RadioParams {
        alpha_up_mw_per_mbps: 438.39,
        alpha_down_mw_per_mbps: 51.97,
        beta_mw: 1288.04,
        // Not confirmed against the paper here; the commonly cited value.
        promotion: Duration::from_micros(260_100),
        promotion_mw: 1210.7,
        tail: Duration::from_millis(11_576),
        tail_mw: 1060.0,
    };

    /// Wi-Fi, from the same study.
    ///
    /// None of these values could be confirmed against the paper here; they are the
    /// commonly cited ones (α_u ≈ 283, α_d ≈ 137, β ≈ 133 mW; promotion ≈ 79 ms at
    /// ≈ 124 mW; tail ≈ 238 ms at ≈ 119 mW). Their promotion plus tail energy, 0.038 J,
    /// agrees with the 0.04 J per single packet that the paper reports for Wi-Fi.
    pub const WIFI: RadioParams = RadioParams {
        alpha_up_mw_per_mbps: 283.17,
        alpha_down_mw_per_mbps: 137.01,
        beta_mw: 132.86,
        promotion: Duration::from_micros(79_100),
        promotion_mw: 124.4,
        tail: Duration::from_micros(238_100),
        tail_mw: 119.3,
    };

    /// No marginal energy at all: wired links are powered from the wall (or at least not
    /// from the phone's radio budget).
    pub const WIRED: RadioParams = RadioParams {
        alpha_up_mw_per_mbps: 0.0,
        alpha_down_mw_per_mbps: 0.0,
        beta_mw: 0.0,
        promotion: Duration::ZERO,
        promotion_mw: 0.0,
        tail: Duration::ZERO,
        tail_mw: 0.0,
    };

    /// Promotion energy plus a full tail, in joules: what one isolated burst costs on top
    /// of its active time. 12.59 J for LTE, 0.038 J for Wi-Fi.
    pub fn wake_joules(&self) -> f64 {
        let p = self.sanitized();
        p.promotion_mw * p.promotion.as_secs_f64() / 1e3 + p.tail_mw * p.tail.as_secs_f64() / 1e3
    }

    /// A copy with every power clamped into `0..=MAX_POWER_MW` (NaN and negative → 0) and
    /// both phases to at most `MAX_PHASE`.
    pub(super) fn sanitized(&self) -> RadioParams {
        fn mw(x: f64) -> f64 {
            if x > 0.0 {
                x.min(MAX_POWER_MW)
            } else {
                // Negative, zero and NaN.
                0.0
            }
        }
        RadioParams {
            alpha_up_mw_per_mbps: mw(self.alpha_up_mw_per_mbps),
            alpha_down_mw_per_mbps: mw(self.alpha_down_mw_per_mbps),
            beta_mw: mw(self.beta_mw),
            promotion: self.promotion.min(MAX_PHASE),
            promotion_mw: mw(self.promotion_mw),
            tail: self.tail.min(MAX_PHASE),
            tail_mw: mw(self.tail_mw),
        }
    }
}
