//! The clear header that opens every subflow, and the exchanges that follow it.
//!
//! ```text
//! header    = magic "MSKT"  version:u8 (1)  kind:u8
//! kind 1 NEW_FLOW: → len:u16 noise_msg1     ← len:u16 noise_msg2
//! kind 2 JOIN:     → flow_id[16] join_seq:u64 resume:u64 mac[16]
//!                  ← 0 mac[16]  (accepted)  |  4 mac[16]  (accepted; this host takes
//!                    JOINs in SYNs: TCP Fast Open)  |  code:u8 len:u8 reason (refused, then
//!                    close; code 1 "unknown flow" adds sig[64], the peer's Ed25519 signature)
//! ```
//! After that, both directions carry sealed records (see `session::records`). Every read
//! here is bounded in size and, by the caller, in time.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::identity::{verify_signature, Identity};
use crate::session::join::{self, JoinRefusal, JOIN_LEN, MAC_LEN};
use crate::session::FlowId;

pub(crate) const MAGIC: &[u8; 4] = b"MSKT";
pub(crate) const VERSION: u8 = 2;
pub(crate) const HEADER_LEN: usize = 6;

/// What a new subflow asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    NewFlow = 1,
    Join = 2,
}

/// Why an incoming subflow's opening was refused before any session existed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error("not a msocket subflow (bad magic)")]
    BadMagic,
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("unknown subflow kind {0}")]
    Kind(u8),
    #[error("handshake message of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("{0}")]
    Io(#[from] io::Error),
}

pub(crate) fn header(kind: Kind) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h[5] = kind as u8;
    h
}

pub(crate) async fn read_header(r: &mut (impl AsyncRead + Unpin)) -> Result<Kind, HeaderError> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h).await?;
    if &h[..4] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if h[4] != VERSION {
        return Err(HeaderError::Version(h[4]));
    }
    match h[5] {
        1 => Ok(Kind::NewFlow),
        2 => Ok(Kind::Join),
        k => Err(HeaderError::Kind(k)),
    }
}

/// Writes a `u16`-length-prefixed handshake message.
pub(crate) async fn write_handshake(w: &mut (impl AsyncWrite + Unpin), prefix: &[u8], msg: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(prefix.len() + 2 + msg.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    w.write_all(&out).await?;
    w.flush().await
}

/// Reads a `u16`-length-prefixed handshake message of at most `max` bytes.
pub(crate) async fn read_handshake(r: &mut (impl AsyncRead + Unpin), max: usize) -> Result<Vec<u8>, HeaderError> {
    let len = r.read_u16().await? as usize;
    if len > max {
        return Err(HeaderError::TooLong(len));
    }
    let mut msg = vec![0u8; len];
    r.read_exact(&mut msg).await?;
    Ok(msg)
}

/// The bytes a client sends to join `flow`: header and JOIN body.
pub(crate) fn join_request(key: &[u8; 32], flow: &FlowId, seq: u64, resume: u64) -> Vec<u8> {
    let mut out = header(Kind::Join).to_vec();
    out.extend_from_slice(&join::request(key, flow, seq, resume));
    out
}

pub(crate) async fn read_join(r: &mut (impl AsyncRead + Unpin)) -> io::Result<[u8; JOIN_LEN]> {
    let mut body = [0u8; JOIN_LEN];
    r.read_exact(&mut body).await?;
    Ok(body)
}

/// Status byte of an accepted JOIN.
const JOIN_OK: u8 = 0;
/// Status byte of an accepted JOIN from a host that takes JOINs in SYNs.
const JOIN_OK_FAST_OPEN: u8 = 4;

pub(crate) fn join_accept(key: &[u8; 32], flow: &FlowId, seq: u64, fast_open: bool) -> Vec<u8> {
    let mut out = vec![if fast_open { JOIN_OK_FAST_OPEN } else { JOIN_OK }];
    out.extend_from_slice(&join::accept_mac(key, flow, seq, fast_open));
    out
}

pub(crate) fn join_refuse(why: JoinRefusal) -> Vec<u8> {
    let reason = why.to_string();
    let mut out = vec![why as u8, reason.len() as u8];
    out.extend_from_slice(reason.as_bytes());
    out
}

/// The words an endpoint signs, with its identity key, to say it does not know a flow.
/// It no longer holds the flow's keys (it restarted, or the flow ended), so only its
/// long-term key can make the refusal believable.
pub(crate) fn unknown_flow_statement(flow: &FlowId, seq: u64) -> Vec<u8> {
    let mut msg = b"msocket unknown flow\0".to_vec();
    msg.extend_from_slice(&flow.0);
    msg.extend_from_slice(&seq.to_be_bytes());
    msg
}

/// A refusal of a JOIN for a flow this endpoint does not know, signed by `identity`.
pub(crate) fn join_refuse_unknown(identity: &Identity, flow: &FlowId, seq: u64) -> Vec<u8> {
    let mut out = join_refuse(JoinRefusal::UnknownFlow);
    out.extend_from_slice(&identity.sign(&unknown_flow_statement(flow, seq)));
    out
}

/// The server's answer to a JOIN, as the client reads it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JoinAnswerError {
    #[error("join refused: {0}")]
    Refused(String),
    /// The peer says it does not know the flow; `proven` when the statement is signed by
    /// the peer's identity key (anyone else may say it, but it then proves nothing).
    #[error("join refused: {}", if *.proven { "the peer no longer knows this flow" } else { "an unproven claim that the flow is unknown" })]
    UnknownFlow { proven: bool },
    #[error("join reply not authenticated (not our peer)")]
    BadMac,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl JoinAnswerError {
    /// Whether the flow can never be joined again: the peer itself said it no longer
    /// knows it.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(self, JoinAnswerError::UnknownFlow { proven: true })
    }
}

/// What an accepted JOIN's answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JoinAccepted {
    /// The peer's host takes JOINs in SYNs (TCP Fast Open): later joins may ride them.
    pub(crate) fast_open: bool,
}

pub(crate) async fn read_join_answer(
    r: &mut (impl AsyncRead + Unpin),
    key: &[u8; 32],
    flow: &FlowId,
    seq: u64,
    peer_signing_key: Option<&[u8; 32]>,
) -> Result<JoinAccepted, JoinAnswerError> {
    let status = r.read_u8().await?;
    if status == JOIN_OK || status == JOIN_OK_FAST_OPEN {
        let fast_open = status == JOIN_OK_FAST_OPEN;
        let mut tag = [0u8; MAC_LEN];
        r.read_exact(&mut tag).await?;
        return if join::verify_accept(key, flow, seq, fast_open, &tag) {
            Ok(JoinAccepted { fast_open })
        } else {
            Err(JoinAnswerError::BadMac)
        };
    }
    let len = r.read_u8().await? as usize;
    let mut reason = vec![0u8; len];
    r.read_exact(&mut reason).await?;
    if JoinRefusal::from_code(status) == Some(JoinRefusal::UnknownFlow) {
        let mut signature = [0u8; 64];
        r.read_exact(&mut signature).await?;
        let proven = peer_signing_key
            .is_some_and(|k| verify_signature(k, &unknown_flow_statement(flow, seq), &signature));
        return Err(JoinAnswerError::UnknownFlow { proven });
    }
    let known = JoinRefusal::from_code(status).map(|w| w.to_string());
    Err(JoinAnswerError::Refused(known.unwrap_or_else(|| String::from_utf8_lossy(&reason).into_owned())))
}
