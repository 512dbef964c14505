//! Tunables of a flow.
//!
//! Defaults are chosen for phones: keepalives rare enough to let the radio sleep but
//! frequent enough for common NAT binding timeouts, and a dead-path timeout short enough
//! that a Wi-Fi → cellular hand-off stalls the stream for about a second, not a minute.

use std::time::Duration;

/// Configuration of one flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// Bytes kept until acknowledged; `write` blocks beyond it. Default 4 MiB.
    pub send_buffer: usize,
    /// Reassembly bound, advertised as window. Default 4 MiB; at least
    /// the initial window (64 KiB) is used.
    pub recv_window: usize,
    /// Largest DATA payload sent. Default 60 KiB; clamped to `1..=MAX_DATA_LEN`.
    pub max_data_frame: usize,
    /// An idle subflow sends a PING this often. Default 25 s.
    pub keepalive_interval: Duration,
    /// A standby subflow (idle by design) PINGs this often instead. Default 120 s: each
    /// PING on an idle cellular radio costs a promotion and a tail (about 12.7 J of LTE by
    /// the energy model, so every 25 s would be about 0.5 Wh an hour), while NAT
    /// mappings of established TCP connections are meant to last far longer (RFC 5382
    /// asks for at least 2 h 4 min). A standby whose mapping did expire is found dead
    /// when it takes over, and the flow re-dials.
    pub standby_keepalive_interval: Duration,
    /// A subflow waiting this long for any reply is dead. Default 1.5 s.
    pub dead_path_timeout: Duration,
    /// The flow fails after having no live subflow this long. Default 300 s.
    pub flow_deadline: Duration,
    /// Longest delay before acknowledging DATA. Default 5 ms.
    pub ack_delay: Duration,
    /// A subflow takes no more DATA while what it has unacknowledged exceeds this many of
    /// its base round trips (plus `ack_delay`) at its delivery rate (at least 64 KiB; 0:
    /// no bound). TCP
    /// alone would fill every buffer on the path (a router's queue can hold seconds of
    /// data), and whatever sits there is lost in a hand-off and delays the other paths'
    /// data at the receiver. Default 4.
    pub max_in_flight_rtts: u32,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            send_buffer: 4 << 20,
            recv_window: 4 << 20,
            max_data_frame: 60 * 1024,
            keepalive_interval: Duration::from_secs(25),
            standby_keepalive_interval: Duration::from_secs(120),
            dead_path_timeout: Duration::from_millis(1500),
            flow_deadline: Duration::from_secs(300),
            ack_delay: Duration::from_millis(5),
            max_in_flight_rtts: 4,
        }
    }
}
