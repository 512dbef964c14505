//! The Noise IK handshake that opens a flow.
//!
//! IK fits a named peer: the initiator already holds the responder's static key (from the
//! responder's signed name record), so one round trip authenticates both ends and the
//! initiator's identity travels encrypted. The first message's payload names the service
//! the initiator wants (one endpoint may listen on several names), completes the
//! initiator's public identity with its signing key (so the responder can compute the
//! fingerprint users know it by: the Noise key is authenticated by the handshake, and a
//! claimed signing key only yields a fingerprint of its own), and carries a timestamp that
//! grows with every handshake of that key, so a captured first message replayed later is
//! recognised (as WireGuard does; see `admission.rs`). The reply's payload accepts or
//! refuses.

use std::sync::Arc;

use hkdf::Hkdf;
use sha2::Sha256;

use super::records::RecordKeys;
use super::FlowId;
use crate::identity::{Identity, PublicIdentity};

const NOISE_PARAMS: &str = "Noise_IK_25519_AESGCM_SHA256";
const PROLOGUE: &[u8] = b"msocket v2 flow handshake";
/// Bound on a handshake message (two keys, tags and a name fit well within it).
pub(crate) const MAX_HANDSHAKE_MSG: usize = 1024;

const STATUS_ACCEPTED: u8 = 0;
const STATUS_UNKNOWN_NAME: u8 = 1;
const STATUS_NOT_ALLOWED: u8 = 2;
const STATUS_BUSY: u8 = 3;
const STATUS_REPLAYED: u8 = 4;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("handshake message malformed or not for our key ({0})")]
    Noise(String),
    #[error("handshake payload malformed")]
    Payload,
    #[error("peer does not serve the name {0:?}")]
    UnknownName(String),
    #[error("the peer does not accept flows from this key")]
    NotAllowed,
    #[error("the peer has too many flows open to take another now")]
    Busy,
    #[error("the peer saw a later handshake timestamp of this key ({latest})")]
    Replayed { latest: u64 },
}

/// Why a responder refuses a handshake it could read, as the initiator learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    UnknownName,
    NotAllowed,
    Busy,
    /// The timestamp was not above `latest`, this key's latest.
    Replayed { latest: u64 },
}

fn noise(e: snow::Error) -> HandshakeError {
    HandshakeError::Noise(e.to_string())
}

/// What both ends hold once the handshake is done.
pub(crate) struct SessionKeys {
    /// Record keys, one schedule per direction, from the Noise transport keys. Used
    /// directly (not through snow) so records are sealed and opened in place, under a key
    /// per epoch of packet numbers.
    pub(crate) send: RecordKeys,
    pub(crate) recv: RecordKeys,
    pub(crate) flow_id: FlowId,
    pub(crate) join_key: [u8; 32],
    /// The peer's Noise static key (authenticated by the handshake).
    pub(crate) remote_static: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionKeys(flow {})", self.flow_id)
    }
}

fn finish(mut hs: snow::HandshakeState) -> Result<Arc<SessionKeys>, HandshakeError> {
    let hk = Hkdf::<Sha256>::new(Some(b"msocket session"), hs.get_handshake_hash());
    let mut flow_id = [0u8; 16];
    hk.expand(b"flow id", &mut flow_id).expect("valid HKDF length");
    let mut join_key = [0u8; 32];
    hk.expand(b"join key", &mut join_key).expect("valid HKDF length");
    let remote_static: [u8; 32] = hs
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or(HandshakeError::Payload)?;
    if !hs.is_handshake_finished() {
        return Err(HandshakeError::Payload);
    }
    // Noise's Split(): the first key protects initiator → responder.
    let (k1, k2) = hs.dangerously_get_raw_split();
    let (send, recv) = if hs.is_initiator() { (k1, k2) } else { (k2, k1) };
    Ok(Arc::new(SessionKeys {
        send: RecordKeys::new(&send),
        recv: RecordKeys::new(&recv),
        flow_id: FlowId(flow_id),
        join_key,
        remote_static,
    }))
}

fn builder() -> snow::Builder<'static> {
    snow::Builder::new(NOISE_PARAMS.parse().expect("valid Noise parameters"))
}

/// The connecting side, between its first message and the reply.
pub(crate) struct Initiator {
    hs: snow::HandshakeState,
    name: String,
}

impl Initiator {
    /// Starts a handshake to the holder of `remote_noise` for the service `name`; returns
    /// the state and the first message.
    pub(crate) fn start(
        local: &Identity,
        remote_noise: &[u8; 32],
        name: &str,
        timestamp: u64,
    ) -> Result<(Initiator, Vec<u8>), HandshakeError> {
        let mut hs = builder()
            .local_private_key(local.noise_secret())
            .and_then(|b| b.remote_public_key(remote_noise))
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.build_initiator())
            .map_err(noise)?;
        if name.len() > 255 {
            return Err(HandshakeError::Payload);
        }
        let mut payload = vec![name.len() as u8];
        payload.extend_from_slice(name.as_bytes());
        payload.extend_from_slice(&local.public().signing);
        payload.extend_from_slice(&timestamp.to_be_bytes());
        let mut msg = vec![0u8; MAX_HANDSHAKE_MSG];
        let n = hs.write_message(&payload, &mut msg).map_err(noise)?;
        msg.truncate(n);
        Ok((Initiator { hs, name: name.to_string() }, msg))
    }

    /// Reads the responder's reply and derives the session.
    pub(crate) fn finish(mut self, reply: &[u8]) -> Result<Arc<SessionKeys>, HandshakeError> {
        let mut payload = vec![0u8; MAX_HANDSHAKE_MSG];
        let n = self.hs.read_message(reply, &mut payload).map_err(noise)?;
        match payload[..n] {
            [STATUS_ACCEPTED] => finish(self.hs),
            [STATUS_UNKNOWN_NAME] => Err(HandshakeError::UnknownName(self.name)),
            [STATUS_NOT_ALLOWED] => Err(HandshakeError::NotAllowed),
            [STATUS_BUSY] => Err(HandshakeError::Busy),
            [STATUS_REPLAYED, ref latest @ ..] => match <[u8; 8]>::try_from(latest) {
                Ok(latest) => Err(HandshakeError::Replayed { latest: u64::from_be_bytes(latest) }),
                Err(_) => Err(HandshakeError::Payload),
            },
            _ => Err(HandshakeError::Payload),
        }
    }
}

/// The accepting side, after reading the first message.
pub(crate) struct Responder {
    hs: snow::HandshakeState,
    /// The service name the initiator asked for.
    pub(crate) name: String,
    /// The initiator's keys: the Noise key authenticated, the signing key as claimed.
    pub(crate) peer: PublicIdentity,
    /// The initiator's handshake timestamp (see the module docs).
    pub(crate) timestamp: u64,
}

impl Responder {
    /// Reads an initiator's first message.
    pub(crate) fn read(local: &Identity, msg: &[u8]) -> Result<Responder, HandshakeError> {
        let mut hs = builder()
            .local_private_key(local.noise_secret())
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.build_responder())
            .map_err(noise)?;
        let mut payload = vec![0u8; MAX_HANDSHAKE_MSG];
        let n = hs.read_message(msg, &mut payload).map_err(noise)?;
        let payload = &payload[..n];
        let (&len, rest) = payload.split_first().ok_or(HandshakeError::Payload)?;
        if rest.len() != len as usize + 32 + 8 {
            return Err(HandshakeError::Payload);
        }
        let (name, rest) = rest.split_at(len as usize);
        let (signing, timestamp) = rest.split_at(32);
        let name = std::str::from_utf8(name).map_err(|_| HandshakeError::Payload)?.to_string();
        let noise = hs.get_remote_static().and_then(|k| k.try_into().ok()).ok_or(HandshakeError::Payload)?;
        let peer = PublicIdentity { signing: signing.try_into().expect("32 bytes"), noise };
        let timestamp = u64::from_be_bytes(timestamp.try_into().expect("8 bytes"));
        Ok(Responder { hs, name, peer, timestamp })
    }

    /// Accepts: returns the reply to send and the session.
    pub(crate) fn accept(mut self) -> Result<(Vec<u8>, Arc<SessionKeys>), HandshakeError> {
        let msg = self.reply(&[STATUS_ACCEPTED])?;
        Ok((msg, finish(self.hs)?))
    }

    /// Refuses: returns the reply to send (sealed to the initiator, so only it learns why).
    pub(crate) fn refuse(mut self, why: Refusal) -> Result<Vec<u8>, HandshakeError> {
        match why {
            Refusal::UnknownName => self.reply(&[STATUS_UNKNOWN_NAME]),
            Refusal::NotAllowed => self.reply(&[STATUS_NOT_ALLOWED]),
            Refusal::Busy => self.reply(&[STATUS_BUSY]),
            Refusal::Replayed { latest } => {
                let mut payload = vec![STATUS_REPLAYED];
                payload.extend_from_slice(&latest.to_be_bytes());
                self.reply(&payload)
            }
        }
    }

    fn reply(&mut self, payload: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        let mut msg = vec![0u8; MAX_HANDSHAKE_MSG];
        let n = self.hs.write_message(payload, &mut msg).map_err(noise)?;
        msg.truncate(n);
        Ok(msg)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A completed handshake between two fixed identities.
    pub(crate) fn session_pair() -> (Arc<SessionKeys>, Arc<SessionKeys>) {
        let client = Identity::from_seed([1; 32]);
        let server = Identity::from_seed([2; 32]);
        let (init, m1) = Initiator::start(&client, &server.public().noise, "svc", 7).unwrap();
        let resp = Responder::read(&server, &m1).unwrap();
        assert_eq!(resp.name, "svc");
        assert_eq!((resp.peer, resp.timestamp), (client.public(), 7));
        let (m2, s) = resp.accept().unwrap();
        assert_eq!(s.remote_static, client.public().noise);
        let c = init.finish(&m2).unwrap();
        (c, s)
    }

    #[test]
    fn both_ends_derive_the_same_flow_and_join_key() {
        let (c, s) = session_pair();
        assert_eq!(c.flow_id, s.flow_id);
        assert_eq!(c.join_key, s.join_key);
        assert_eq!(c.remote_static, Identity::from_seed([2; 32]).public().noise);
        let (c2, _) = session_pair();
        assert_ne!(c.flow_id, c2.flow_id, "ephemeral keys make every flow distinct");
    }

    #[test]
    fn wrong_responder_key_fails() {
        let client = Identity::from_seed([1; 32]);
        let server = Identity::from_seed([2; 32]);
        let impostor = Identity::from_seed([3; 32]);
        let (_, m1) = Initiator::start(&client, &server.public().noise, "svc", 7).unwrap();
        assert!(matches!(Responder::read(&impostor, &m1), Err(HandshakeError::Noise(_))));
    }

    #[test]
    fn impostor_reply_fails_and_refusal_is_reported() {
        let client = Identity::from_seed([1; 32]);
        let server = Identity::from_seed([2; 32]);
        let (init, m1) = Initiator::start(&client, &server.public().noise, "svc", 7).unwrap();
        let resp = Responder::read(&server, &m1).unwrap();
        let refusal = resp.refuse(Refusal::UnknownName).unwrap();
        assert_eq!(init.finish(&refusal).unwrap_err(), HandshakeError::UnknownName("svc".into()));
        for (why, error) in [
            (Refusal::NotAllowed, HandshakeError::NotAllowed),
            (Refusal::Busy, HandshakeError::Busy),
            (Refusal::Replayed { latest: 9 }, HandshakeError::Replayed { latest: 9 }),
        ] {
            let (init, m1) = Initiator::start(&client, &server.public().noise, "svc", 8).unwrap();
            let refusal = Responder::read(&server, &m1).unwrap().refuse(why).unwrap();
            assert_eq!(init.finish(&refusal).unwrap_err(), error);
        }

        let (init, _) = Initiator::start(&client, &server.public().noise, "svc", 7).unwrap();
        assert!(matches!(init.finish(&[0u8; 64]), Err(HandshakeError::Noise(_))));
        assert!(Responder::read(&server, b"short").is_err());
    }
}
