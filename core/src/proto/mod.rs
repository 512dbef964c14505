//! The flow protocol as a sans-IO state machine.
