//! Errors of the flow and of a single subflow.
//!
//! The two are deliberately separate: a [`ProtocolViolation`] condemns the *subflow* that
//! carried the bad frame (the runtime closes it; the flow continues on others, and a
//! tampered path cannot kill the flow), while a [`FlowError`] ends the *flow*.

use std::time::Duration;

use super::SubflowId;

/// Why a flow ended unsuccessfully, or why an operation on it is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// No live subflow for longer than the flow deadline.
    #[error("no live subflow for {after:?}")]
    DeadlineExceeded {
        /// The flow deadline that passed.
        after: Duration,
    },
    /// The peer aborted the flow.
    #[error("peer aborted the flow (code {code}): {reason}")]
    PeerAborted {
        /// The peer's code (1: its application aborted).
        code: u16,
        /// The peer's words (unchecked text).
        reason: String,
    },
    /// This side aborted the flow.
    #[error("flow aborted locally (code {code}): {reason}")]
    LocallyAborted {
        /// The code sent to the peer.
        code: u16,
        /// The words sent to the peer.
        reason: String,
    },
    /// The peer's endpoint did not take the flow: nobody was accepting on the name, or
    /// too many flows were waiting to be accepted there.
    #[error("the peer did not accept the flow (nobody accepting on the name, or too many flows waiting)")]
    NotAccepted,
    /// The peer said, under its identity key, that it does not know the flow: it
    /// restarted, or the flow already ended there. Nothing can resume it.
    #[error("the peer no longer knows this flow (it restarted, or the flow ended there)")]
    PeerForgotFlow,
    /// The flow lost its paths after its endpoint was dropped, so nothing could re-dial.
    #[error("the endpoint was dropped: the flow cannot re-dial")]
    EndpointDropped,
    /// `write` after `finish`.
    #[error("write after finish")]
    WriteAfterFinish,
    /// The flow sealed as many records as its packet numbers allow (2^62): a number is
    /// never used twice under the flow's keys.
    #[error("the flow used up its packet numbers")]
    PacketNumbersExhausted,
    /// So many records failed authentication on the flow's subflows that its keys are
    /// retired: someone is forging them.
    #[error("{count} records failed authentication: the flow's keys are retired")]
    ForgedRecords {
        /// Records that failed.
        count: u64,
    },
}

/// A frame the peer was not allowed to send; the subflow that carried it must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// The subflow is not (or no longer) part of this flow.
    #[error("unknown subflow {0:?}")]
    UnknownSubflow(SubflowId),
    /// DATA beyond the window we advertised.
    #[error("data up to offset {end} beyond advertised window {window}")]
    DataBeyondWindow {
        /// Where the DATA ends.
        end: u64,
        /// The window we advertised.
        window: u64,
    },
    /// A FIN at a different final length than before, or below data already received.
    #[error("stream end moved from {was} to {now}")]
    FinChanged {
        /// The final length said before.
        was: u64,
        /// The final length said now.
        now: u64,
    },
    /// DATA past the final length.
    #[error("data up to offset {end} past the stream end {fin}")]
    DataBeyondFin {
        /// Where the DATA ends.
        end: u64,
        /// The final length.
        fin: u64,
    },
    /// An ACK for units never sent.
    #[error("ack up to unit {acked} but only {sent} units were sent")]
    AckOfUnsent {
        /// Units the ACK covers.
        acked: u64,
        /// Units sent so far.
        sent: u64,
    },
    /// ACK ranges unordered, overlapping or too many.
    #[error("malformed ack ranges")]
    BadAckRanges,
    /// A DATA payload over `MAX_DATA_LEN`.
    #[error("DATA payload of {0} bytes over the maximum")]
    DataTooLong(usize),
    /// An offset over `MAX_OFFSET`.
    #[error("offset over the protocol maximum")]
    OffsetTooLarge,
    /// Out-of-order DATA in so many pieces that holding them would cost more memory than
    /// the receive window allows (twice the window, counting what each piece costs
    /// besides its bytes). Nothing of it was acknowledged: the sender re-sends it.
    #[error("out-of-order data in too many pieces: holding it would take {needed} bytes of memory, over {limit}")]
    ReassemblyMemory {
        /// Memory the pieces would have taken with everything already held.
        needed: u64,
        /// What the receiver allows for the bytes it holds.
        limit: u64,
    },
}
