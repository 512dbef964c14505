//! End-to-end tests of [`FlowState`](super::FlowState) pairs over a simulated network
//! under virtual time.

// Single-range ACKs and a reversed range are deliberate inputs.
#![allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]

mod harness;
mod memory;
mod prop;
mod scenarios;
mod sched;
