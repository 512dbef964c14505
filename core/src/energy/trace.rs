//! Energy of a recorded trace, for benchmarks and policy comparisons.

use std::time::Duration;

use super::machine::Machine;
use super::RadioParams;

/// Joules a radio with `params` uses for `trace`, including the tail after its last entry.
///
/// Each entry is `(offset, sent, received)`: bytes sent and received at `offset` from the
/// start of the trace, when the radio is idle. Entries should be in time order; one earlier
/// than its predecessor counts at its predecessor's time. Run it once per path (each path
/// with its own radio's parameters) and add the results to compare, say, a Wi-Fi-first
/// schedule with one that also uses cellular.
///
/// ```
/// use std::time::Duration;
/// use msocket::energy::{estimate, RadioParams};
///
/// // A 60-byte keepalive every 25 s for ten minutes.
/// let trace: Vec<_> = (0..24).map(|i| (Duration::from_secs(25 * i), 60, 60)).collect();
/// let lte = estimate(RadioParams::LTE, &trace);
/// let wifi = estimate(RadioParams::WIFI, &trace);
/// assert!(lte > 300.0 && wifi < 2.0);
/// ```
pub fn estimate(params: RadioParams, trace: &[(Duration, u64, u64)]) -> f64 {
    let mut machine = Machine::new(params, Duration::ZERO);
    for &(at, sent, received) in trace {
        machine.on_bytes(at, sent, received);
    }
    machine.advance(machine.idle_at());
    machine.energy().total()
}
