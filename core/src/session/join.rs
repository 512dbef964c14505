//! Joining an existing flow with a new subflow.
//!
//! The JOIN and its answers are laid out in [`super::opening`]. The MACs are HMAC-SHA256
//! under the flow's join key, which only the two ends of the handshake know: the request's
//! covers the flow, the join sequence and the joiner's resume point; the answer's covers
//! the flow, the sequence and whether the answering host takes JOINs in SYNs. `join_seq`
//! grows with every join, and the server refuses one it has seen, so a captured JOIN cannot
//! be replayed to steal the flow. The reply's MAC proves to the client that it reached the
//! real peer.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::FlowId;

/// Bytes of a JOIN request after the clear subflow header.
pub(crate) const JOIN_LEN: usize = 16 + 8 + 8 + MAC_LEN;
/// Bytes of a MAC.
pub(crate) const MAC_LEN: usize = 16;

/// Why a join was refused (sent to the client as the status byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JoinRefusal {
    #[error("no such flow (it ended, or the peer restarted)")]
    UnknownFlow = 1,
    #[error("join not authenticated")]
    BadMac = 2,
    #[error("join sequence replayed")]
    Replayed = 3,
}

impl JoinRefusal {
    pub(crate) fn from_code(code: u8) -> Option<JoinRefusal> {
        match code {
            1 => Some(JoinRefusal::UnknownFlow),
            2 => Some(JoinRefusal::BadMac),
            3 => Some(JoinRefusal::Replayed),
            _ => None,
        }
    }
}

fn mac(key: &[u8; 32], label: &[u8], flow: &FlowId, seq: u64) -> [u8; MAC_LEN] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(label);
    m.update(&flow.0);
    m.update(&seq.to_be_bytes());
    let full = m.finalize().into_bytes();
    full[..MAC_LEN].try_into().expect("16 bytes")
}

/// The MAC of a JOIN request: over the flow, the sequence and the resume point.
fn request_mac(key: &[u8; 32], flow: &FlowId, seq: u64, resume: u64) -> [u8; MAC_LEN] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(b"msocket join");
    m.update(&flow.0);
    m.update(&seq.to_be_bytes());
    m.update(&resume.to_be_bytes());
    let full = m.finalize().into_bytes();
    full[..MAC_LEN].try_into().expect("16 bytes")
}

/// The JOIN request body for `flow` with sequence `seq`, saying that the joiner's data
/// from its peer is complete up to `resume`.
pub(crate) fn request(key: &[u8; 32], flow: &FlowId, seq: u64, resume: u64) -> [u8; JOIN_LEN] {
    let mut out = [0u8; JOIN_LEN];
    out[..16].copy_from_slice(&flow.0);
    out[16..24].copy_from_slice(&seq.to_be_bytes());
    out[24..32].copy_from_slice(&resume.to_be_bytes());
    out[32..].copy_from_slice(&request_mac(key, flow, seq, resume));
    out
}

/// A JOIN request's fields, not yet checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JoinRequest {
    pub(crate) flow: FlowId,
    pub(crate) seq: u64,
    /// Where the joiner's received data stops: its resume point.
    pub(crate) resume: u64,
    pub(crate) mac: [u8; MAC_LEN],
}

/// Splits a JOIN request into its fields without checking it.
pub(crate) fn parse_request(body: &[u8; JOIN_LEN]) -> JoinRequest {
    let u64_at = |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    JoinRequest {
        flow: FlowId(body[..16].try_into().expect("16 bytes")),
        seq: u64_at(16),
        resume: u64_at(24),
        mac: body[32..].try_into().expect("16 bytes"),
    }
}

impl JoinRequest {
    /// Whether its MAC is right under `key` (constant time).
    pub(crate) fn verify(&self, key: &[u8; 32]) -> bool {
        constant_time_eq(&request_mac(key, &self.flow, self.seq, self.resume), &self.mac)
    }
}

/// The MAC in a JOIN_OK reply; `fast_open` (the answering host takes JOINs in SYNs) is
/// covered too, so nobody on the path can change it.
pub(crate) fn accept_mac(key: &[u8; 32], flow: &FlowId, seq: u64, fast_open: bool) -> [u8; MAC_LEN] {
    let label: &[u8] = if fast_open { b"msocket join ok, fast open" } else { b"msocket join ok" };
    mac(key, label, flow, seq)
}

/// Checks a JOIN_OK reply's MAC in constant time.
pub(crate) fn verify_accept(key: &[u8; 32], flow: &FlowId, seq: u64, fast_open: bool, tag: &[u8; MAC_LEN]) -> bool {
    constant_time_eq(&accept_mac(key, flow, seq, fast_open), tag)
}

fn constant_time_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_macs_bind_key_flow_and_seq() {
        let key = [9u8; 32];
        let flow = FlowId([4; 16]);
        let req = request(&key, &flow, 3, 77);
        let parsed = parse_request(&req);
        assert_eq!((parsed.flow, parsed.seq, parsed.resume), (flow, 3, 77));
        assert!(parsed.verify(&key));
        assert!(!parsed.verify(&[8u8; 32]), "guessed key");
        assert!(!JoinRequest { seq: 4, ..parsed }.verify(&key), "other seq");
        assert!(!JoinRequest { resume: 78, ..parsed }.verify(&key), "other resume point");
        assert!(!JoinRequest { flow: FlowId([5; 16]), ..parsed }.verify(&key), "other flow");
        let tag = parsed.mac;
        for fast_open in [false, true] {
            let ok = accept_mac(&key, &flow, 3, fast_open);
            assert!(verify_accept(&key, &flow, 3, fast_open, &ok));
            assert!(!verify_accept(&key, &flow, 3, !fast_open, &ok), "the fast-open flag cannot be flipped");
            assert!(!verify_accept(&key, &flow, 3, fast_open, &tag), "request MAC is not a reply MAC");
        }
    }
}
