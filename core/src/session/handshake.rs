//! The Noise IK handshake that opens a flow.
//!
//! IK fits a named peer: the initiator already holds the responder's static key (from the
//! responder's signed name record), so one round trip authenticates both ends and the
//! initiator's identity travels encrypted. The first message's payload names the service
//! the initiator wants (one endpoint may listen on several names); the reply's payload
//! accepts or refuses it.

use std::sync::Arc;

use hkdf::Hkdf;
use sha2::Sha256;

use super::FlowId;
use crate::identity::Identity;

const NOISE_PARAMS: &str = "Noise_IK_25519_AESGCM_SHA256";
const PROLOGUE: &[u8] = b"msocket v1 flow handshake";
/// Bound on a handshake message (two keys, tags and a name fit well within it).
pub(crate) const MAX_HANDSHAKE_MSG: usize = 1024;

const STATUS_ACCEPTED: u8 = 0;
const STATUS_UNKNOWN_NAME: u8 = 1;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("handshake message malformed or not for our key ({0})")]
    Noise(String),
    #[error("handshake payload malformed")]
    Payload,
    #[error("peer does not serve the name {0:?}")]
    UnknownName(String),
}

fn noise(e: snow::Error) -> HandshakeError {
    HandshakeError::Noise(e.to_string())
}

/// What both ends hold once the handshake is done.
pub(crate) struct SessionKeys {
    /// AES-256-GCM keys of the Noise transport phase, one per direction. Used directly
    /// (not through snow) so records are sealed and opened in place.
    pub(crate) send: ring::aead::LessSafeKey,
    pub(crate) recv: ring::aead::LessSafeKey,
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

fn aes_key(raw: &[u8; 32]) -> ring::aead::LessSafeKey {
    let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, raw).expect("32-byte AES-256 key");
    ring::aead::LessSafeKey::new(key)
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
        send: aes_key(&send),
        recv: aes_key(&recv),
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
            _ => Err(HandshakeError::Payload),
        }
    }
}

/// The accepting side, after reading the first message.
pub(crate) struct Responder {
    hs: snow::HandshakeState,
    /// The service name the initiator asked for.
    pub(crate) name: String,
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
        if rest.len() != len as usize {
            return Err(HandshakeError::Payload);
        }
        let name = std::str::from_utf8(rest).map_err(|_| HandshakeError::Payload)?.to_string();
        Ok(Responder { hs, name })
    }

    /// Accepts: returns the reply to send and the session.
    pub(crate) fn accept(mut self) -> Result<(Vec<u8>, Arc<SessionKeys>), HandshakeError> {
        let msg = self.reply(STATUS_ACCEPTED)?;
        Ok((msg, finish(self.hs)?))
    }

    /// Refuses because the name is not served here: returns the reply to send.
    pub(crate) fn refuse_unknown_name(mut self) -> Result<Vec<u8>, HandshakeError> {
        self.reply(STATUS_UNKNOWN_NAME)
    }

    fn reply(&mut self, status: u8) -> Result<Vec<u8>, HandshakeError> {
        let mut msg = vec![0u8; MAX_HANDSHAKE_MSG];
        let n = self.hs.write_message(&[status], &mut msg).map_err(noise)?;
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
        let (init, m1) = Initiator::start(&client, &server.public().noise, "svc").unwrap();
        let resp = Responder::read(&server, &m1).unwrap();
        assert_eq!(resp.name, "svc");
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
        let (_, m1) = Initiator::start(&client, &server.public().noise, "svc").unwrap();
        assert!(matches!(Responder::read(&impostor, &m1), Err(HandshakeError::Noise(_))));
    }

    #[test]
    fn impostor_reply_fails_and_refusal_is_reported() {
        let client = Identity::from_seed([1; 32]);
        let server = Identity::from_seed([2; 32]);
        let (init, m1) = Initiator::start(&client, &server.public().noise, "svc").unwrap();
        let resp = Responder::read(&server, &m1).unwrap();
        let refusal = resp.refuse_unknown_name().unwrap();
        assert_eq!(init.finish(&refusal).unwrap_err(), HandshakeError::UnknownName("svc".into()));

        let (init, _) = Initiator::start(&client, &server.public().noise, "svc").unwrap();
        assert!(matches!(init.finish(&[0u8; 64]), Err(HandshakeError::Noise(_))));
        assert!(Responder::read(&server, b"short").is_err());
    }
}
