// The title is the doc line on `pub mod energy` in lib.rs. With an outer doc line rustdoc
// resolves these docs' links from the crate root, hence the link definitions at the end.

//! # Why
//!
//! A phone pays for the network mostly in radio energy, and what it pays depends less on
//! the bytes than on *when* they move. An LTE radio woken for one 60-byte keepalive spends
//! about a quarter of a second promoting and then stays up for more than eleven seconds in
//! case more comes (the tail): about 12.7 J for nothing, against 0.05 J on Wi-Fi. A policy
//! question such as "keep a standby subflow on cellular" or "use cellular alongside Wi-Fi
//! for throughput" is therefore an energy question. This module starts with the measured
//! power parameters of the radios.
//!
//! Like the protocol core ([`proto`](crate::proto)) it does no I/O and reads no clock:
//! every call takes the time, so results are deterministic and tests run in virtual time.
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
//! plus tail is 0.038 J for Wi-Fi and 12.59 J for LTE; the packet's own active time adds
//! a little.
//!
//! Layout, one concept per file: `radio` ([`Radio`], [`RadioParams`]).
//!
//! [`Radio`]: crate::energy::Radio
//! [`RadioParams`]: crate::energy::RadioParams

mod radio;

#[cfg(test)]
mod tests;

pub use radio::{Radio, RadioParams};
