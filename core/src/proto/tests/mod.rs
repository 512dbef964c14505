//! End-to-end tests of [`FlowState`](super::FlowState) pairs over a simulated network
//! under virtual time.

mod harness;
mod prop;
mod scenarios;
