//! Joining an existing flow with a new subflow.
//!
//! The JOIN and its answers are laid out in [`super::opening`]. The MACs are HMAC-SHA256
//! under the flow's join key, which only the two ends of the handshake know: the request's
//! covers the join's identifier, its sequence and the joiner's resume point; the answer's
//! covers the identifier, the sequence and whether the answering host takes JOINs in SYNs.
//! `join_seq` grows with every join, and the server admits each sequence once (and at most
//! a copy or two of that very JOIN, see `admit_join`), so a captured JOIN cannot be replayed
//! to steal the flow. The reply's MAC proves to the client that it reached the real peer.
//!
//! The flow is not named in clear: each JOIN carries an identifier derived from the join
//! key and its sequence ([`join_id`]), which the listener looks up among the identifiers it
//! expects. So the JOINs of one phone's Wi-Fi and cellular paths share nothing an observer
//! could link (as QUIC rotates connection IDs). A second MAC, `mac1`, keyed by the
//! listener's public Noise key (as WireGuard's), shows the joiner knows whom it talks to:
//! a scanner that does not gets no answer at all, and in particular no signed one.

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

/// Bytes of a JOIN request after the clear subflow header.
pub(crate) const JOIN_LEN: usize = ID_LEN + 8 + 8 + MAC_LEN + MAC_LEN;
/// Bytes of a MAC.
pub(crate) const MAC_LEN: usize = 16;
/// Bytes of a join identifier.
pub(crate) const ID_LEN: usize = 16;

/// A JOIN's identifier: names the flow to its listener, and to nobody else.
pub(crate) type JoinId = [u8; ID_LEN];

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

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        m.update(part);
    }
    m.finalize().into_bytes()[..MAC_LEN].try_into().expect("16 bytes")
}

/// The identifier of the flow's JOIN with sequence `seq`.
pub(crate) fn join_id(key: &[u8; 32], seq: u64) -> JoinId {
    hmac(key, &[b"msocket join id", &seq.to_be_bytes()])
}

/// The MAC of a JOIN request: over the identifier, the sequence and the resume point.
fn request_mac(key: &[u8; 32], id: &JoinId, seq: u64, resume: u64) -> [u8; MAC_LEN] {
    hmac(key, &[b"msocket join", id, &seq.to_be_bytes(), &resume.to_be_bytes()])
}

/// `mac1` over the rest of a JOIN, keyed by the listener's public Noise key.
fn mac1(listener_noise: &[u8; 32], body: &[u8]) -> [u8; MAC_LEN] {
    let key = Sha256::new().chain_update(b"msocket join mac1").chain_update(listener_noise).finalize();
    hmac(&key, &[body])
}

/// The JOIN request body with sequence `seq` to the listener whose Noise key is
/// `listener_noise`, saying that the joiner's data from its peer is complete up to `resume`.
pub(crate) fn request(key: &[u8; 32], listener_noise: &[u8; 32], seq: u64, resume: u64) -> [u8; JOIN_LEN] {
    let id = join_id(key, seq);
    let mut out = [0u8; JOIN_LEN];
    out[..ID_LEN].copy_from_slice(&id);
    out[16..24].copy_from_slice(&seq.to_be_bytes());
    out[24..32].copy_from_slice(&resume.to_be_bytes());
    out[32..48].copy_from_slice(&request_mac(key, &id, seq, resume));
    let tag = mac1(listener_noise, &out[..48]);
    out[48..].copy_from_slice(&tag);
    out
}

/// A JOIN request's fields, not yet checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JoinRequest {
    pub(crate) id: JoinId,
    pub(crate) seq: u64,
    /// Where the joiner's received data stops: its resume point.
    pub(crate) resume: u64,
    pub(crate) mac: [u8; MAC_LEN],
    pub(crate) mac1: [u8; MAC_LEN],
}

/// Splits a JOIN request into its fields without checking it.
pub(crate) fn parse_request(body: &[u8; JOIN_LEN]) -> JoinRequest {
    let u64_at = |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    JoinRequest {
        id: body[..ID_LEN].try_into().expect("16 bytes"),
        seq: u64_at(16),
        resume: u64_at(24),
        mac: body[32..48].try_into().expect("16 bytes"),
        mac1: body[48..].try_into().expect("16 bytes"),
    }
}

impl JoinRequest {
    /// Whether its MAC is right under `key` (constant time).
    pub(crate) fn verify(&self, key: &[u8; 32]) -> bool {
        constant_time_eq(&request_mac(key, &self.id, self.seq, self.resume), &self.mac)
    }

    /// Whether its sender knows `own_noise`, our public Noise key (constant time).
    pub(crate) fn verify_mac1(&self, own_noise: &[u8; 32]) -> bool {
        let mut body = [0u8; 48];
        body[..ID_LEN].copy_from_slice(&self.id);
        body[16..24].copy_from_slice(&self.seq.to_be_bytes());
        body[24..32].copy_from_slice(&self.resume.to_be_bytes());
        body[32..].copy_from_slice(&self.mac);
        constant_time_eq(&mac1(own_noise, &body), &self.mac1)
    }
}

/// The MAC in a JOIN_OK reply; `fast_open` (the answering host takes JOINs in SYNs) is
/// covered too, so nobody on the path can change it.
pub(crate) fn accept_mac(key: &[u8; 32], id: &JoinId, seq: u64, fast_open: bool) -> [u8; MAC_LEN] {
    let label: &[u8] = if fast_open { b"msocket join ok, fast open" } else { b"msocket join ok" };
    hmac(key, &[label, id, &seq.to_be_bytes()])
}

/// Checks a JOIN_OK reply's MAC in constant time.
pub(crate) fn verify_accept(key: &[u8; 32], id: &JoinId, seq: u64, fast_open: bool, tag: &[u8; MAC_LEN]) -> bool {
    constant_time_eq(&accept_mac(key, id, seq, fast_open), tag)
}

fn constant_time_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_macs_bind_key_id_and_seq() {
        let key = [9u8; 32];
        let listener = [5u8; 32];
        let req = request(&key, &listener, 3, 77);
        let parsed = parse_request(&req);
        assert_eq!((parsed.id, parsed.seq, parsed.resume), (join_id(&key, 3), 3, 77));
        assert!(parsed.verify(&key) && parsed.verify_mac1(&listener));
        assert!(!parsed.verify_mac1(&[6u8; 32]), "mac1 for another listener");
        assert!(!parsed.verify(&[8u8; 32]), "guessed key");
        assert!(!JoinRequest { seq: 4, ..parsed }.verify(&key), "other seq");
        assert!(!JoinRequest { seq: 4, ..parsed }.verify_mac1(&listener), "mac1 covers the seq");
        assert!(!JoinRequest { resume: 78, ..parsed }.verify(&key), "other resume point");
        assert!(!JoinRequest { id: join_id(&key, 4), ..parsed }.verify(&key), "other id");
        let tag = parsed.mac;
        for fast_open in [false, true] {
            let ok = accept_mac(&key, &parsed.id, 3, fast_open);
            assert!(verify_accept(&key, &parsed.id, 3, fast_open, &ok));
            assert!(!verify_accept(&key, &parsed.id, 3, !fast_open, &ok), "the fast-open flag cannot be flipped");
            assert!(!verify_accept(&key, &parsed.id, 3, fast_open, &tag), "request MAC is not a reply MAC");
        }
    }

    #[test]
    fn join_ids_differ_per_join_and_per_flow() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let ids: std::collections::HashSet<JoinId> =
            (1..=64).flat_map(|seq| [join_id(&a, seq), join_id(&b, seq)]).collect();
        assert_eq!(ids.len(), 128, "no two joins share an identifier");
    }
}
