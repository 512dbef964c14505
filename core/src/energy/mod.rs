// The title is the doc line on `pub mod energy` in lib.rs. With an outer doc line rustdoc
// resolves these docs' links from the crate root, hence the link definitions at the end.

//! # Why
//!
//! A phone pays for the network mostly in radio energy, and what it pays depends less on
//! the bytes than on *when* they move. An LTE radio woken for one 60-byte keepalive spends
//! about a quarter of a second promoting and then stays up for more than eleven seconds in
//! case more comes (the tail): about 12.7 J for nothing, against 0.05 J on Wi-Fi. A policy
//! question such as "keep a standby subflow on cellular" or "use cellular alongside Wi-Fi
//! for throughput" is therefore an energy question, and this module answers it with a
//! number: the SDK can report joules per path (and per flow, summed over its paths), and
//! benchmarks can compare schedules on the same traces.
//!
//! Like the protocol core it does no I/O and reads no clock:
//! every call takes the time, so results are deterministic and tests run in virtual time.
//!
//! # Model
//!
//! Per radio, a state machine in the manner of Huang et al., "A Close Examination of
//! Performance and Power Characteristics of 4G LTE Networks" (MobiSys 2012), whose
//! measured parameters [`RadioParams::LTE`] and [`RadioParams::WIFI`] carry:
//!
//! - **Idle**: no marginal power.
//! - **Promoting**: activity that finds the radio idle wakes it; for the promotion time it
//!   draws the promotion power and moves no data.
//! - **Active**: data moves, and for one [`ACTIVE_BIN`] (100 ms) after the last byte. The
//!   radio draws `P = α_u·up + α_d·down + β` (mW, throughputs in Mbit/s averaged over
//!   100 ms bins), which integrates to α per bit plus β per second active: the meter
//!   charges exactly that.
//! - **Tail**: after the active period the radio stays up for the tail time at the tail
//!   power, then goes idle. Activity during the tail goes straight back to active, with no
//!   second promotion.
//!
//! # Limits
//!
//! - **Marginal energy only**: what the radio adds to an idle phone, not the screen, CPU or
//!   the idle-state paging the phone pays anyway.
//! - **One measurement study**: one early LTE phone on one operator's network, and one
//!   Wi-Fi network. Operators configure the tail (its inactivity timers) differently and
//!   newer modems differ, so compare policies with these numbers rather than predict a
//!   battery's life. Some values could not be checked at all (see Sources).
//! - **The tail is flat**: LTE spends it in short and long DRX cycles, waking briefly to
//!   listen; the model uses the measured average power over the whole tail instead.
//! - **Linear in throughput** and blind to signal strength.
//! - **Time comes from the caller's reports**: a large transfer reported in one call is
//!   charged its per-bit energy in full but only one bin of base power. Report at least
//!   once per bin while data moves.
//! - **One meter per radio**: two paths over one interface share a radio and a tail.
//!
//! # Sources
//!
//! J. Huang, F. Qian, A. Gerber, Z. M. Mao, S. Sen and O. Spatscheck, "A Close Examination
//! of Performance and Power Characteristics of 4G LTE Networks", ACM MobiSys 2012,
//! pp. 225–238, which measured a phone on a commercial LTE network. Table 3 holds the
//! state-machine parameters (promotion, tail), Table 4 the throughput model. The copies
//! of the paper at hand showed only its abstract, so each value was checked against
//! public texts and code that quote it:
//!
//! | value | used | checked against |
//! |---|---|---|
//! | LTE tail time | 11.576 s | two texts quoting the paper, one naming Table 3 |
//! | LTE tail power | 1060 mW | a text quoting the paper |
//! | LTE promotion power | 1210.7 mW | simulation code that prints the paper's LTE numbers |
//! | LTE promotion time | 260.1 ms | **not confirmed**: the commonly cited value |
//! | LTE α_u | 438.39 mW/(Mbit/s) | three sources, two naming Table 4 |
//! | LTE α_d | 51.97 mW/(Mbit/s) | two sources |
//! | LTE β | 1288.04 mW | a text quoting Table 4 |
//! | Wi-Fi α_u, α_d | 283.17, 137.01 mW/(Mbit/s) | **not confirmed**: commonly cited |
//! | Wi-Fi β | 132.86 mW | **not confirmed**: commonly cited |
//! | Wi-Fi promotion | 79.1 ms at 124.4 mW | **not confirmed**: commonly cited |
//! | Wi-Fi tail | 238.1 ms at 119.3 mW | **not confirmed**: commonly cited |
//!
//! A sentence of the paper, quoted in one of those texts, cross-checks the rest: "if only
//! one packet is transferred, the energy usage considering both promotion and tail energy
//! for LTE, 3G and WiFi is 12.76 J, 7.38 J and 0.04 J". With the values above promotion
//! plus tail is 0.038 J for Wi-Fi and 12.59 J for LTE; this model adds one 100 ms active
//! bin for the packet itself, giving 0.052 J and 12.71 J.
//!
//! Layout, one concept per file: `radio` ([`Radio`], [`RadioParams`]), `machine` (the state
//! machine, [`RadioState`]), `breakdown` ([`EnergyBreakdown`]), `meter` ([`EnergyMeter`],
//! the per-path meter on `Instant`s), `trace` ([`estimate`] for recorded traces).
//!
//! [`RadioParams::LTE`]: crate::energy::RadioParams::LTE
//! [`RadioParams::WIFI`]: crate::energy::RadioParams::WIFI
//! [`ACTIVE_BIN`]: crate::energy::ACTIVE_BIN
//! [`Radio`]: crate::energy::Radio
//! [`RadioParams`]: crate::energy::RadioParams
//! [`RadioState`]: crate::energy::RadioState
//! [`EnergyBreakdown`]: crate::energy::EnergyBreakdown
//! [`EnergyMeter`]: crate::energy::EnergyMeter
//! [`estimate`]: crate::energy::estimate

mod breakdown;
mod machine;
mod meter;
mod radio;
mod trace;

#[cfg(test)]
mod tests;

pub use breakdown::EnergyBreakdown;
pub use machine::{RadioState, ACTIVE_BIN};
pub use meter::EnergyMeter;
pub use radio::{Radio, RadioParams};
pub use trace::estimate;
