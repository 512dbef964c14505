//! Session security: one Noise handshake per flow, then every record sealed on its own.
//!
//! A flow outlives the TCP connections that carry it, so its keys cannot belong to any one
//! connection. The Noise IK handshake runs once, on the flow's first subflow; its transport
//! keys then seal every record on every later subflow. Each record carries its packet
//! number in clear and uses it as the AEAD nonce, so records can arrive on any subflow, in
//! any order, and a record re-sent on another subflow is just a new record. The
//! [`ReplayWindow`] refuses a packet number seen before. A new subflow proves it belongs to
//! the flow with a MAC keyed from the handshake ([`join`]), so knowing a flow id is not
//! enough to attach to, resume or hijack a flow.

pub(crate) mod admission;
mod handshake;
pub(crate) mod join;
pub(crate) mod opening;
pub(crate) mod records;
mod replay;

pub(crate) use handshake::{HandshakeError, Initiator, Refusal, Responder, SessionKeys, MAX_HANDSHAKE_MSG};
pub(crate) use replay::ReplayWindow;
#[cfg(test)]
pub(crate) use handshake::tests::session_pair;

/// Identifies a flow on the wire (derived from the handshake hash, so both ends agree
/// without sending it, and nobody can choose it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub [u8; 16]);

impl std::fmt::Debug for FlowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", hex::encode(&self.0[..6]))
    }
}

impl std::fmt::Display for FlowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}
