//! The relay protocol's bytes, as codecs with no I/O.
//!
//! A connection to a relay starts with the same clear header as a subflow (magic `MSKT`,
//! version, kind), with one of three kinds of its own, and then exchanges short messages:
//!
//! ```text
//! message  = len:u8 (1..=255) type:u8 fields        (every field fixed or to the end)
//! addr     = family:u8 (4|6) ip[4|16] port:u16
//!
//! kind 3 REGISTER (a listener's control connection; it stays open)
//!   → header                    ← CHALLENGE  0x01 nonce[32]
//!   → REGISTER 0x02 signing[32] noise[32] sig[64]
//!         sig = Ed25519 over "msocket relay registration v1" ‖ nonce ‖ noise
//!   ← REGISTERED 0x04 observed:addr      |  REFUSED
//!   then, while it lasts:
//!   ← DIAL_BACK 0x10 token[16] client:addr   (a client asks for this listener)
//!   ↔ PING 0x11 n:u64   ↔ PONG 0x12 n:u64    (either end; the other answers)
//!   ← REFUSED, then close (replaced by a newer registration, relay shutting down)
//!
//! kind 4 DIAL (a client that wants to reach a registered listener)
//!   → header, DIAL 0x03 target[32]           target = SHA-256("msocket relay listener key v1" ‖ signing ‖ noise)
//!   ← CONNECTED 0x05 client:addr listener:addr  |  REFUSED, then close
//!   after CONNECTED the relay splices the two connections: the flow's own opening
//!   (NEW_FLOW or JOIN, which the client may send right behind DIAL) and its sealed
//!   records pass through untouched
//!
//! kind 5 ACCEPT (the listener's connection answering a DIAL_BACK)
//!   → header, ACCEPT 0x08 token[16]
//!   ← ACCEPTED 0x06 listener:addr client:addr  |  REFUSED, then close
//!   then spliced to the client's connection, whose opening arrives next
//!
//! REFUSED = 0x07 code:u8 reason:utf8 (the rest; codes in [`RelayRefusal`])
//! ```
//!
//! Why this shape: the listener proves its key by signing a fresh nonce, so nobody can
//! register for a key they do not hold, and a signature cannot be replayed to another
//! connection. Listeners are registered by the hash of both their keys, which a client
//! knows from the signed name record; an impostor who signs with its own key under the
//! victim's Noise key registers a different hash. The relay never learns more than it
//! needs to splice: the flow's Noise session runs end to end inside the spliced bytes.
//! Both ends learn the addresses the relay saw (`observed`, `client`, `listener`), which
//! is what TCP hole punching needs.
//!
//! Every decoder is bounded: a message is at most 256 bytes, and a reader reads exactly
//! the bytes a message has, so nothing behind it (the spliced stream) is consumed.

use std::net::SocketAddr;

use bytes::BufMut;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::identity::{verify_signature, Identity, PublicIdentity};
use crate::session::opening::{self, Progress};
use crate::wire::{put_socket_addr, DecodeError, Reader};

/// The header kind of a listener's control connection.
pub const KIND_REGISTER: u8 = 3;
/// The header kind of a client's request to be spliced to a listener.
pub const KIND_DIAL: u8 = 4;
/// The header kind of a listener's connection answering a dial-back.
pub const KIND_ACCEPT: u8 = 5;

/// Length of a relay header (the subflow header's).
pub const HEADER_LEN: usize = 6;
/// The longest message body.
pub const MAX_MESSAGE_LEN: usize = 255;
/// What a listener signs, before the nonce and its Noise key.
const REGISTRATION_CONTEXT: &[u8] = b"msocket relay registration v1";

/// A token naming one pending dial.
pub type Token = [u8; 16];
/// How a relay knows a listener: SHA-256 over its signing and Noise keys.
pub type ListenerKey = [u8; 32];

/// What a listener key hashes before the keys.
const LISTENER_KEY_CONTEXT: &[u8] = b"msocket relay listener key v1";

/// The key a relay registers `public` under.
pub fn listener_key(public: &PublicIdentity) -> ListenerKey {
    let mut h = Sha256::new();
    h.update(LISTENER_KEY_CONTEXT);
    h.update(public.signing);
    h.update(public.noise);
    h.finalize().into()
}

/// Why a relay refused, as its REFUSED message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RelayRefusal {
    /// No listener with the dialed keys is registered at this relay.
    #[error("no listener with these keys is registered at the relay")]
    NotRegistered,
    /// The relay is at one of its limits (splices, pending dials, connections).
    #[error("the relay is busy")]
    Busy,
    /// The listener did not answer the dial-back in time.
    #[error("the listener did not answer through the relay in time")]
    NoAnswer,
    /// A registration's signature does not verify for the keys it names.
    #[error("the registration's signature does not verify")]
    BadSignature,
    /// This control connection was replaced by a newer registration of the same keys.
    #[error("replaced by a newer registration of the same keys")]
    Replaced,
    /// An ACCEPT named no pending dial (it timed out, or the client left).
    #[error("no pending dial has this token")]
    UnknownToken,
    /// Too many requests from this source or for these keys; try later.
    #[error("rate limited by the relay")]
    RateLimited,
    /// The relay could not read what was sent.
    #[error("the relay could not read the request")]
    Malformed,
    /// The relay is shutting down.
    #[error("the relay is shutting down")]
    ShuttingDown,
    /// A code this version does not know.
    #[error("refused by the relay (code {0})")]
    Other(u8),
}

impl RelayRefusal {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            RelayRefusal::NotRegistered => 1,
            RelayRefusal::Busy => 2,
            RelayRefusal::NoAnswer => 3,
            RelayRefusal::BadSignature => 4,
            RelayRefusal::Replaced => 5,
            RelayRefusal::UnknownToken => 6,
            RelayRefusal::RateLimited => 7,
            RelayRefusal::Malformed => 8,
            RelayRefusal::ShuttingDown => 9,
            RelayRefusal::Other(c) => c,
        }
    }

    /// The refusal a code stands for.
    pub fn from_code(code: u8) -> RelayRefusal {
        match code {
            1 => RelayRefusal::NotRegistered,
            2 => RelayRefusal::Busy,
            3 => RelayRefusal::NoAnswer,
            4 => RelayRefusal::BadSignature,
            5 => RelayRefusal::Replaced,
            6 => RelayRefusal::UnknownToken,
            7 => RelayRefusal::RateLimited,
            8 => RelayRefusal::Malformed,
            9 => RelayRefusal::ShuttingDown,
            c => RelayRefusal::Other(c),
        }
    }
}

/// One relay message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Relay → listener: sign this.
    Challenge {
        /// Fresh random bytes.
        nonce: [u8; 32],
    },
    /// Listener → relay: its keys and the signed nonce.
    Register {
        /// The listener's keys.
        public: PublicIdentity,
        /// Ed25519 over the registration context, the nonce and the Noise key.
        signature: [u8; 64],
    },
    /// Client → relay: splice me to this listener.
    Dial {
        /// [`listener_key`] of the listener.
        target: ListenerKey,
    },
    /// Relay → listener: registered; this is where your control connection comes from.
    Registered {
        /// The listener's address as the relay sees it.
        observed: SocketAddr,
    },
    /// Relay → client: spliced.
    Connected {
        /// The client's address as the relay sees it.
        client: SocketAddr,
        /// The listener's accepting connection's address as the relay sees it.
        listener: SocketAddr,
    },
    /// Relay → listener (accepting connection): spliced.
    Accepted {
        /// This connection's address as the relay sees it.
        listener: SocketAddr,
        /// The client's address as the relay sees it.
        client: SocketAddr,
    },
    /// Refused; the connection closes after it.
    Refused {
        /// Why.
        why: RelayRefusal,
        /// Words for logs (at most a few dozen bytes).
        reason: String,
    },
    /// Listener → relay: the connection answering the dial-back `token`.
    Accept {
        /// From the DIAL_BACK.
        token: Token,
    },
    /// Relay → listener: a client asks for you; connect back with ACCEPT `token`.
    DialBack {
        /// Names the pending dial.
        token: Token,
        /// The client's address as the relay sees it.
        client: SocketAddr,
    },
    /// Are you there?
    Ping(u64),
    /// Yes.
    Pong(u64),
}

const T_CHALLENGE: u8 = 0x01;
const T_REGISTER: u8 = 0x02;
const T_DIAL: u8 = 0x03;
const T_REGISTERED: u8 = 0x04;
const T_CONNECTED: u8 = 0x05;
const T_ACCEPTED: u8 = 0x06;
const T_REFUSED: u8 = 0x07;
const T_ACCEPT: u8 = 0x08;
const T_DIAL_BACK: u8 = 0x10;
const T_PING: u8 = 0x11;
const T_PONG: u8 = 0x12;

/// Why relay bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayWireError {
    /// The header is not a relay header of this version.
    #[error("not a relay connection: {0}")]
    Header(String),
    /// A message of length 0.
    #[error("empty relay message")]
    Empty,
    /// A message whose type is not known.
    #[error("unknown relay message type {0:#04x}")]
    Type(u8),
    /// A message's fields do not parse.
    #[error("relay message: {0}")]
    Decode(#[from] DecodeError),
}

impl Message {
    /// The message's bytes, with their length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64);
        match self {
            Message::Challenge { nonce } => {
                body.put_u8(T_CHALLENGE);
                body.put_slice(nonce);
            }
            Message::Register { public, signature } => {
                body.put_u8(T_REGISTER);
                body.put_slice(&public.signing);
                body.put_slice(&public.noise);
                body.put_slice(signature);
            }
            Message::Dial { target } => {
                body.put_u8(T_DIAL);
                body.put_slice(target);
            }
            Message::Registered { observed } => {
                body.put_u8(T_REGISTERED);
                put_socket_addr(&mut body, observed);
            }
            Message::Connected { client, listener } => {
                body.put_u8(T_CONNECTED);
                put_socket_addr(&mut body, client);
                put_socket_addr(&mut body, listener);
            }
            Message::Accepted { listener, client } => {
                body.put_u8(T_ACCEPTED);
                put_socket_addr(&mut body, listener);
                put_socket_addr(&mut body, client);
            }
            Message::Refused { why, reason } => {
                body.put_u8(T_REFUSED);
                body.put_u8(why.code());
                let mut end = reason.len().min(MAX_MESSAGE_LEN - 2);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                body.put_slice(&reason.as_bytes()[..end]);
            }
            Message::Accept { token } => {
                body.put_u8(T_ACCEPT);
                body.put_slice(token);
            }
            Message::DialBack { token, client } => {
                body.put_u8(T_DIAL_BACK);
                body.put_slice(token);
                put_socket_addr(&mut body, client);
            }
            Message::Ping(n) => {
                body.put_u8(T_PING);
                body.put_u64(*n);
            }
            Message::Pong(n) => {
                body.put_u8(T_PONG);
                body.put_u64(*n);
            }
        }
        debug_assert!(!body.is_empty() && body.len() <= MAX_MESSAGE_LEN);
        let mut out = Vec::with_capacity(1 + body.len());
        out.put_u8(body.len() as u8);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes the message at the start of `buf` (what follows it is left alone; its
    /// length is [`encode`](Self::encode)'s), or says how many bytes it needs in all.
    pub fn decode(buf: &[u8]) -> Result<Progress<Message>, RelayWireError> {
        let Some(&len) = buf.first() else { return Ok(Progress::Need(1)) };
        let len = len as usize;
        if len == 0 {
            return Err(RelayWireError::Empty);
        }
        let Some(body) = buf.get(1..1 + len) else { return Ok(Progress::Need(1 + len)) };
        Self::decode_body(body).map(Progress::Done)
    }

    fn decode_body(body: &[u8]) -> Result<Message, RelayWireError> {
        let mut r = Reader::new(body);
        let t = r.u8("message type")?;
        let m = match t {
            T_CHALLENGE => Message::Challenge { nonce: r.array("nonce")? },
            T_REGISTER => Message::Register {
                public: PublicIdentity { signing: r.array("signing key")?, noise: r.array("noise key")? },
                signature: r.array("signature")?,
            },
            T_DIAL => Message::Dial { target: r.array("target")? },
            T_REGISTERED => Message::Registered { observed: r.socket_addr()? },
            T_CONNECTED => Message::Connected { client: r.socket_addr()?, listener: r.socket_addr()? },
            T_ACCEPTED => Message::Accepted { listener: r.socket_addr()?, client: r.socket_addr()? },
            T_REFUSED => {
                let why = RelayRefusal::from_code(r.u8("refusal code")?);
                let rest = r.bytes(r.remaining(), "reason")?;
                let reason = std::str::from_utf8(rest).map_err(|_| DecodeError::Invalid("reason (not UTF-8)"))?;
                Message::Refused { why, reason: reason.to_string() }
            }
            T_ACCEPT => Message::Accept { token: r.array("token")? },
            T_DIAL_BACK => Message::DialBack { token: r.array("token")?, client: r.socket_addr()? },
            T_PING => Message::Ping(r.u64("ping")?),
            T_PONG => Message::Pong(r.u64("pong")?),
            t => return Err(RelayWireError::Type(t)),
        };
        r.finish("relay message")?;
        Ok(m)
    }
}

/// The header that starts a relay connection of `kind` ([`KIND_REGISTER`], [`KIND_DIAL`]
/// or [`KIND_ACCEPT`]).
pub fn header(kind: u8) -> [u8; HEADER_LEN] {
    opening::header_of_kind(kind)
}

/// Decodes a relay header: the kind, or how many bytes it needs.
pub fn decode_header(buf: &[u8]) -> Result<Progress<u8>, RelayWireError> {
    match opening::decode_header(buf) {
        Ok(Progress::Done(k @ (KIND_REGISTER | KIND_DIAL | KIND_ACCEPT))) => Ok(Progress::Done(k)),
        Ok(Progress::Done(k)) => Err(RelayWireError::Header(format!("kind {k} is not a relay kind"))),
        Ok(Progress::Need(n)) => Ok(Progress::Need(n)),
        Err(e) => Err(RelayWireError::Header(e.to_string())),
    }
}

/// What a listener signs to register at a relay that sent `nonce`.
fn registration_message(nonce: &[u8; 32], noise: &[u8; 32]) -> Vec<u8> {
    [REGISTRATION_CONTEXT, nonce, noise].concat()
}

/// The REGISTER answering a relay's `nonce`.
pub fn register(identity: &Identity, nonce: &[u8; 32]) -> Message {
    let public = identity.public();
    Message::Register { public, signature: identity.sign(&registration_message(nonce, &public.noise)) }
}

/// Relay: whether a REGISTER proves that its sender holds `public`'s signing key, for
/// this connection's `nonce` (and so that it may be reached under [`listener_key`]).
pub fn verify_registration(nonce: &[u8; 32], public: &PublicIdentity, signature: &[u8; 64]) -> bool {
    verify_signature(&public.signing, &registration_message(nonce, &public.noise), signature)
}

/// Why reading from a relay connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The bytes are not what the protocol allows.
    #[error("{0}")]
    Wire(#[from] RelayWireError),
    /// The connection failed or closed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

async fn read_decoded<T>(
    r: &mut (impl AsyncRead + Unpin),
    decode: impl Fn(&[u8]) -> Result<Progress<T>, RelayWireError>,
) -> Result<T, ReadError> {
    let mut buf = Vec::new();
    loop {
        match decode(&buf)? {
            Progress::Done(v) => return Ok(v),
            Progress::Need(n) => {
                let have = buf.len();
                if n <= have {
                    // A decoder that asks for no more would loop forever.
                    return Err(std::io::Error::other("a relay decoder asked for no more bytes").into());
                }
                buf.resize(n, 0);
                r.read_exact(&mut buf[have..]).await?;
            }
        }
    }
}

/// Reads a relay header (exactly its bytes); the kind. Callers bound it in time.
pub async fn read_header(r: &mut (impl AsyncRead + Unpin)) -> Result<u8, ReadError> {
    read_decoded(r, decode_header).await
}

/// Reads one message (exactly its bytes). Callers bound it in time.
pub async fn read_message(r: &mut (impl AsyncRead + Unpin)) -> Result<Message, ReadError> {
    read_decoded(r, Message::decode).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn all() -> Vec<Message> {
        let id = Identity::from_seed([3; 32]);
        vec![
            Message::Challenge { nonce: [1; 32] },
            register(&id, &[1; 32]),
            Message::Dial { target: listener_key(&id.public()) },
            Message::Registered { observed: addr("192.0.2.1:4000") },
            Message::Connected { client: addr("192.0.2.1:4000"), listener: addr("[2001:db8::1]:443") },
            Message::Accepted { listener: addr("[2001:db8::1]:443"), client: addr("192.0.2.1:4000") },
            Message::Refused { why: RelayRefusal::Busy, reason: "splices at their limit".into() },
            Message::Refused { why: RelayRefusal::Other(200), reason: String::new() },
            Message::Accept { token: [9; 16] },
            Message::DialBack { token: [9; 16], client: addr("198.51.100.7:1") },
            Message::Ping(7),
            Message::Pong(u64::MAX),
        ]
    }

    #[test]
    fn every_message_round_trips_and_asks_for_exactly_its_bytes() {
        for m in all() {
            let bytes = m.encode();
            assert!(bytes.len() <= 1 + MAX_MESSAGE_LEN);
            for cut in 0..bytes.len() {
                match Message::decode(&bytes[..cut]).unwrap() {
                    Progress::Need(n) => assert!(n > cut && n <= bytes.len(), "{m:?} at {cut}: need {n}"),
                    Progress::Done(d) => panic!("{m:?} decoded from {cut} of {} bytes: {d:?}", bytes.len()),
                }
            }
            assert_eq!(Message::decode(&bytes).unwrap(), Progress::Done(m));
        }
    }

    #[test]
    fn malformed_messages_are_refused_not_guessed() {
        assert_eq!(Message::decode(&[0]), Err(RelayWireError::Empty));
        assert_eq!(Message::decode(&[1, 0x7e]), Err(RelayWireError::Type(0x7e)));
        // A PING with a byte too many, a DIAL with one too few.
        assert!(matches!(Message::decode(&[10, T_PING, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Err(RelayWireError::Decode(_))));
        let mut dial = Message::Dial { target: [0; 32] }.encode();
        dial[0] -= 1;
        dial.pop();
        assert!(matches!(Message::decode(&dial), Err(RelayWireError::Decode(_))));
        assert!(matches!(Message::decode(&[8, T_REGISTERED, 5, 1, 2, 3, 4, 0, 1]), Err(RelayWireError::Decode(_))));
        // A long reason is cut to fit, on a character boundary.
        let long = Message::Refused { why: RelayRefusal::Malformed, reason: "é".repeat(300) }.encode();
        assert_eq!(long.len(), 1 + MAX_MESSAGE_LEN - 1);
        assert!(matches!(Message::decode(&long), Ok(Progress::Done(Message::Refused { .. }))));
        assert!(matches!(Message::decode(&[3, T_REFUSED, 2, 0xff]), Err(RelayWireError::Decode(_))), "a reason not in UTF-8");
    }

    #[test]
    fn headers_of_other_kinds_and_versions_are_not_relay_headers() {
        assert_eq!(decode_header(&header(KIND_DIAL)), Ok(Progress::Done(KIND_DIAL)));
        assert_eq!(decode_header(&header(KIND_DIAL)[..3]), Ok(Progress::Need(HEADER_LEN)));
        assert!(decode_header(&opening::header_of_kind(1)).is_err(), "NEW_FLOW goes to an endpoint");
        assert!(decode_header(b"GET / HTTP/1.1").is_err());
        let mut old = header(KIND_REGISTER);
        old[4] = 2;
        assert!(decode_header(&old).is_err());
    }

    #[test]
    fn a_registration_proves_the_signing_key_for_this_nonce_and_these_keys_only() {
        let owner = Identity::from_seed([1; 32]);
        let impostor = Identity::from_seed([2; 32]);
        let nonce = [5; 32];
        let Message::Register { public, signature } = register(&owner, &nonce) else { unreachable!() };
        assert!(verify_registration(&nonce, &public, &signature));
        assert!(!verify_registration(&[6; 32], &public, &signature), "another connection's nonce");
        // The impostor claims the owner's keys with its own signature...
        let Message::Register { signature: forged, .. } = register(&impostor, &nonce) else { unreachable!() };
        assert!(!verify_registration(&nonce, &owner.public(), &forged));
        // ...or the owner's Noise key beside its own signing key: that verifies, but under
        // a listener key no client of the owner dials.
        let mixed = PublicIdentity { signing: impostor.public().signing, noise: owner.public().noise };
        let Message::Register { signature: mixed_sig, .. } = register(&impostor, &nonce) else { unreachable!() };
        let msg = registration_message(&nonce, &owner.public().noise);
        let mixed_sig_for_owner_noise = impostor.sign(&msg);
        assert!(!verify_registration(&nonce, &mixed, &mixed_sig), "signed over its own Noise key");
        assert!(verify_registration(&nonce, &mixed, &mixed_sig_for_owner_noise));
        assert_ne!(listener_key(&mixed), listener_key(&owner.public()));
    }
}
