//! The flow protocol as a sans-IO state machine.
//!
//! A *flow* is one reliable, ordered byte stream in each direction between two named
//! peers. It is carried by one or more *subflows* (authenticated TCP connections). Phones
//! move: Wi-Fi goes away, cellular NATs rebind, servers migrate. When that kills a subflow
//! the runtime opens a new one and the flow continues with nothing lost or duplicated.
//!
//! This module is the protocol and nothing else: no sockets, no clock reads, no
//! randomness. The runtime feeds it frames and the current time and asks what to send and
//! when to wake up — the design of `quinn-proto`. That makes every behaviour reproducible
//! in tests running under virtual time, including hour-long outages in microseconds.
//!
//! Layout, one concept per file:
//! - [`frame`](Frame): the wire frames and their checked codec;
//! - `ranges`: the range set both sides use for acknowledgement bookkeeping;
//! - `send`: send buffer, retransmit set, peer window;
//! - `recv`: reassembly and the receive window;
//! - `subflow`: per-subflow liveness, RTT and owed frames;
//! - `sched`: which subflow carries new data under each path policy;
//! - `flow`: [`FlowState`], which ties them together.
//!
//! # Sequence space, FIN and acknowledgements
//!
//! Each direction numbers *units* from 0: payload byte `i` is unit `i`, and the FIN is one
//! extra unit at the final length `L`. DATA `{offset, fin, payload}` covers units
//! `offset .. offset + len (+1 if fin)`; `fin` is only set when `offset + len == L`.
//! ACK `cum` says every unit below `cum` arrived, so `cum == L + 1` means the whole stream
//! including its end. `ranges` report units received beyond `cum` (lowest
//! [`MAX_ACK_RANGES`] ranges). `window` is absolute: payload bytes must lie below it (the FIN
//! unit itself needs no window). Before any ACK arrives a sender may assume
//! [`INITIAL_WINDOW`]; receivers never advertise less.
//!
//! # Resume
//!
//! The first frame each side sends on a new subflow is an ACK: "this is what I have".
//! Units that were in flight on a lost subflow are re-sent only on a subflow whose peer
//! has already spoken (so its ACK pruned them first), and new data waits there too, with
//! two exceptions: the flow's very first subflow sends new data at once, and a subflow we
//! opened that ends an outage sends at once when every unit waiting to be re-sent is known
//! never to have left the lost subflow. A subflow the peer opened carries no DATA until
//! its resume ACK is heard ([`FlowState::set_peer_speaks_first`]), unless it is the flow's
//! only subflow and its JOIN carried the peer's resume point, which then serves as that
//! ACK ([`FlowState::peer_resumes_at`]).

//! # Liveness
//!
//! A subflow that sent DATA or PING and heard nothing at all for `dead_path_timeout` is
//! dead ([`FlowEvent::SubflowDead`]); halfway there it PINGs if data is outstanding. Idle
//! subflows PING every `keepalive_interval`; a new subflow PINGs at once (RTT sample) and
//! makes the older subflows PING too, since a new subflow usually means the peer moved.
//! With no live subflow for `flow_deadline` the flow fails with
//! [`FlowError::DeadlineExceeded`].
//!
//! # Contract with the runtime
//!
//! - Call [`FlowState::add_subflow`] once a subflow is authenticated, then
//!   [`FlowState::poll_transmit`] whenever its socket is writable until it returns `None`
//!   ([`FlowState::wants_transmit`] tells cheaply whether to). Offer at least 64 bytes of
//!   room; a DATA frame uses at most `DATA_HEADER_LEN + max_data_frame` bytes.
//! - Feed every decoded frame to [`FlowState::handle_frame`]. An error condemns only that
//!   subflow: close it and call [`FlowState::remove_subflow`]. Frames still arriving on a
//!   subflow reported as [`FlowEvent::SubflowDead`] get `UnknownSubflow`.
//! - Call [`FlowState::handle_timeout`] at [`FlowState::poll_timeout`], and drain
//!   [`FlowState::poll_event`] after every call into the state machine.
//! - After [`FlowStatus::Finished`] the state machine still answers (ACKs, PONGs, resume
//!   ACKs on new subflows) and still detects dead paths: the peer may not have our ACK of
//!   its FIN yet. Linger (keep or re-establish a subflow) for a while before dropping the
//!   flow, like TCP's TIME_WAIT; a peer that never gets that ACK ends with
//!   `DeadlineExceeded` although every byte was delivered.
//! - After a failure `read` still returns bytes that had arrived in order, then the error;
//!   `write` and `finish` return the error at once; only queued CLOSE frames are sent.

mod config;
mod error;
mod flow;
mod frame;
mod ranges;
mod recv;
mod sched;
mod send;
mod subflow;

#[cfg(test)]
mod tests;

pub use config::FlowConfig;
pub(crate) use recv::{ReadBuffer, READ_BUFFER};
pub use error::{FlowError, ProtocolViolation};
pub use sched::PathPolicy;
pub use flow::{FlowEvent, FlowState, FlowStats, FlowStatus, PathState, ReadOutcome, SubflowId, SubflowStats};
pub use frame::{
    Frame, FrameError, CLOSE_APPLICATION, CLOSE_NOT_ACCEPTED, MAX_ACK_RANGES, MAX_ADDRS, MAX_DATA_LEN, MAX_REASON_LEN, MAX_RELAYS,
    MAX_RELAY_LEN,
};

/// The window a sender may assume before the peer's first ACK, and the least a receiver
/// advertises: 64 KiB.
pub const INITIAL_WINDOW: u64 = 64 * 1024;
