//! The clear header that opens every subflow, and the exchanges that follow it.
//!
//! ```text
//! header    = magic "MSKT"  version:u8 (1)  kind:u8
//! kind 1 NEW_FLOW: → len:u16 noise_msg1     ← len:u16 noise_msg2
//! kind 2 JOIN:     → flow_id[16] join_seq:u64 mac[16]
//!                  ← 0 mac[16]  (accepted)  |  code:u8 len:u8 reason (refused, then close)
//! ```
//! After that, both directions carry sealed records (see `session::record`). Every read
//! here is bounded in size and, by the caller, in time.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::session::join::{self, JoinRefusal, JOIN_LEN, MAC_LEN};
use crate::session::FlowId;

pub(crate) const MAGIC: &[u8; 4] = b"MSKT";
pub(crate) const VERSION: u8 = 1;
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
pub(crate) fn join_request(key: &[u8; 32], flow: &FlowId, seq: u64) -> Vec<u8> {
    let mut out = header(Kind::Join).to_vec();
    out.extend_from_slice(&join::request(key, flow, seq));
    out
}

pub(crate) async fn read_join(r: &mut (impl AsyncRead + Unpin)) -> io::Result<[u8; JOIN_LEN]> {
    let mut body = [0u8; JOIN_LEN];
    r.read_exact(&mut body).await?;
    Ok(body)
}

pub(crate) fn join_accept(key: &[u8; 32], flow: &FlowId, seq: u64) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&join::accept_mac(key, flow, seq));
    out
}

pub(crate) fn join_refuse(why: JoinRefusal) -> Vec<u8> {
    let reason = why.to_string();
    let mut out = vec![why as u8, reason.len() as u8];
    out.extend_from_slice(reason.as_bytes());
    out
}

/// The server's answer to a JOIN, as the client reads it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JoinAnswerError {
    #[error("join refused: {0}")]
    Refused(String),
    #[error("join reply not authenticated (not our peer)")]
    BadMac,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl JoinAnswerError {
    /// Whether the flow can never be joined again (the peer no longer knows it).
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(self, JoinAnswerError::Refused(r) if r == &JoinRefusal::UnknownFlow.to_string())
    }
}

pub(crate) async fn read_join_answer(
    r: &mut (impl AsyncRead + Unpin),
    key: &[u8; 32],
    flow: &FlowId,
    seq: u64,
) -> Result<(), JoinAnswerError> {
    let status = r.read_u8().await?;
    if status == 0 {
        let mut tag = [0u8; MAC_LEN];
        r.read_exact(&mut tag).await?;
        return if join::verify_accept(key, flow, seq, &tag) { Ok(()) } else { Err(JoinAnswerError::BadMac) };
    }
    let len = r.read_u8().await? as usize;
    let mut reason = vec![0u8; len];
    r.read_exact(&mut reason).await?;
    let known = JoinRefusal::from_code(status).map(|w| w.to_string());
    Err(JoinAnswerError::Refused(known.unwrap_or_else(|| String::from_utf8_lossy(&reason).into_owned())))
}
