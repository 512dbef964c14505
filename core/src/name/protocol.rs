//! The wire protocol of msocket's own name server (`msocketd name`).
//!
//! A client opens a TCP connection and sends requests, each with an id of its choice; the
//! server answers each request with its id, in any order, so one connection carries many
//! requests at once: a client's watches (long polls that wait up to a minute) share one
//! connection, and a lookup never waits behind them. Every message, in both directions, is
//! one frame, and every connection is an authenticated channel ([`secure`]): the client's
//! first frame is a Noise hello carrying its first request, the server's first frame the
//! welcome carrying the first answer, and every later frame one sealed message:
//!
//! ```text
//! frame    = length:u32 bytes:[u8; length]        length <= 65536 (MAX_MESSAGE_LEN)
//! bytes    = first frame: version:u8 (=3) kind:u8 noise handshake message (see secure)
//!            later frames: a Noise transport message
//! message  = version:u8 (=3) tag:u8 id:u32 payload       (what hello, welcome and the
//!                                                         transport messages carry)
//!
//! requests (client -> server)          id: 1 and up, unique among the client's requests
//!                                          in flight on the connection
//!   tag 1  Register  payload = signed record (see name::SignedRecord encoding)
//!   tag 2  Lookup    payload = name_len:u16 name:[u8; name_len]     (name_len <= 253)
//!   tag 3  Watch     payload = name_len:u16 name:[u8; name_len] after_seq:u64 wait_ms:u32
//!   tag 4  Cancel    payload = empty             (id: a watch in flight; no answer)
//!
//! responses (server -> client)         id: the request's; 0 for the connection as a whole
//!   tag 1  Ok        payload = empty                 (register succeeded, durably stored)
//!   tag 2  Record    payload = signed record         (lookup succeeded; watch: a record
//!                                                     with seq > after_seq is stored)
//!   tag 3  NotFound  payload = empty                 (lookup: no record for the name)
//!   tag 4  Refused   payload = code:u8 current_seq:u64 msg_len:u16 msg:[u8; msg_len]
//!                                                    (msg: UTF-8, <= 1024 bytes)
//!   tag 5  Unchanged payload = empty                 (watch: nothing newer came in time)
//!   tag 6  Watching  payload = empty                 (watch: parked; the answer follows)
//!
//! refusal codes: 1 bad signature   2 stale (current_seq = the registered seq)
//!                3 key mismatch    4 expired        5 invalid name
//!                6 malformed       7 internal error
//!                8 lifetime too long (current_seq = the longest lifetime allowed, in s)
//!                9 rate limited (current_seq = milliseconds to wait before retrying)
//!               10 quota exceeded: the key holds the most names allowed (current_seq = that many)
//!               11 server full: it stores the most names it may (current_seq = that many)
//!               12 busy: too many connections or watches, from this client's address or
//!                  in all (current_seq = the limit)
//!               13 unsupported version (current_seq = the version the server speaks)
//! ```
//!
//! All integers are big-endian; `current_seq` is 0 unless the code says otherwise. Unknown
//! refusal codes are kept and reported as a generic refusal, so servers can add codes. A
//! body with trailing bytes, an unknown version or tag, a request id of 0 or of a request
//! still in flight, or a frame over the limit is malformed: the server answers
//! `Refused(malformed)` (with the request's id when it could read one, else 0) and closes
//! the connection. A refusal with id 0 refuses the whole connection (the server is busy,
//! or speaks another version), and the server closes it.
//!
//! Every request but `Cancel` gets exactly one final answer: `Ok`, `Record`, `NotFound`,
//! `Unchanged` or `Refused`. A `Watch` that cannot be answered at once is first
//! acknowledged with `Watching`, so a client learns within a round trip that its
//! connection still works, whatever the watch then waits. A client that sees neither
//! within its timeout treats the connection as dead.
//!
//! `Watch` is a long poll, so a client holding a flow to a name learns within half a round
//! trip that the name's owner moved, without polling `Lookup`. The server answers `Record`
//! as soon as it holds a live record for the name whose seq is above `after_seq` (at once
//! if it already does), or `Unchanged` once `min(wait_ms, MAX_WATCH_WAIT)` passed without
//! one. A name with no record, or only an expired one, simply waits: watch never answers
//! `NotFound`. `Cancel` withdraws a parked watch (the client lost interest); an answer
//! already on its way may still arrive and is ignored. A server that is shutting down
//! answers parked watches `Unchanged` and closes.
//!
//! A client of version 1 (requests in order, no ids, no channel) or 2 (ids, no channel)
//! gets a `Refused` with code 13 and a message saying what to do, in its own version's
//! layout ([`other_version_refusal`]), then the connection is closed; a client of this
//! version meeting an older server reports that server's refusal of its hello as a refusal
//! naming the server's version ([`other_version_answer`]).
//!
//! Records served by the server are *not* trusted: clients verify them (signature, name,
//! expiry) themselves. The channel makes sure that what they verify is what the server
//! sent them, now: no on-path forgery of `NotFound`, `Ok` or an old record.

use std::time::Duration;

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::record::{SignedRecord, MAX_NAME_LEN};
use super::NameError;
use crate::wire::{put_short_bytes, DecodeError, Reader};

pub mod secure;

/// Protocol version byte that starts every message body and the first frame of each
/// direction ([`secure`]).
pub const PROTOCOL_VERSION: u8 = 3;
/// The id of answers about the connection as a whole (no request has it).
pub const CONNECTION_ID: u32 = 0;
/// The id [`Request::encode`] and [`Response::encode`] use: a connection that carries one
/// request.
pub const FIRST_ID: u32 = 1;
/// Largest message body accepted, in bytes.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Longest refusal message, in bytes (longer ones are cut when encoding).
pub const MAX_REFUSAL_MESSAGE_LEN: usize = 1024;
/// Longest a server holds a `Watch` before answering `Unchanged`, whatever `wait_ms` asked
/// for. Clients that want to wait longer send another watch.
pub const MAX_WATCH_WAIT: Duration = Duration::from_secs(60);

const REQ_REGISTER: u8 = 1;
const REQ_LOOKUP: u8 = 2;
const REQ_WATCH: u8 = 3;
const REQ_CANCEL: u8 = 4;
const RESP_OK: u8 = 1;
const RESP_RECORD: u8 = 2;
const RESP_NOT_FOUND: u8 = 3;
const RESP_REFUSED: u8 = 4;
const RESP_UNCHANGED: u8 = 5;
const RESP_WATCHING: u8 = 6;

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Publish a record.
    Register(SignedRecord),
    /// Look a name up.
    Lookup(String),
    /// Wait for a record of `name` with a sequence number above `after_seq`.
    Watch {
        /// The watched name.
        name: String,
        /// Only records with a higher sequence number answer the watch (0: any record).
        after_seq: u64,
        /// How long the client is willing to wait, in milliseconds (the server caps it at
        /// [`MAX_WATCH_WAIT`]).
        wait_ms: u32,
    },
    /// Withdraw the watch in flight with this request's id (no answer).
    Cancel,
}

impl Request {
    /// A watch waiting up to `wait` (see [`watch_wait_ms`]).
    pub fn watch(name: &str, after_seq: u64, wait: Duration) -> Request {
        Request::Watch { name: name.to_string(), after_seq, wait_ms: watch_wait_ms(wait) }
    }
}

/// The `wait_ms` field for `wait`: rounded up to whole milliseconds, so the server never
/// gives up before the client does, and saturated at what the field holds.
pub fn watch_wait_ms(wait: Duration) -> u32 {
    let nanos = wait.as_nanos();
    let millis = nanos / 1_000_000 + u128::from(nanos % 1_000_000 != 0);
    u32::try_from(millis).unwrap_or(u32::MAX)
}

/// Why the server refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseCode {
    /// The record's signature does not verify.
    BadSignature,
    /// The record's seq is not above the registered one.
    Stale,
    /// The name is bound to another key.
    KeyMismatch,
    /// The record has expired.
    Expired,
    /// The name is not valid.
    InvalidName,
    /// The request could not be parsed.
    Malformed,
    /// The server failed (e.g. its store).
    Internal,
    /// The record would live longer than the server allows.
    LifetimeTooLong,
    /// The client (by address) or the record's key registered too often.
    RateLimited,
    /// The record's key holds the most names the server allows.
    QuotaExceeded,
    /// The server stores the most names it may.
    ServerFull,
    /// Too many connections or watches, from the client's address or in all.
    Busy,
    /// The server speaks another protocol version.
    UnsupportedVersion,
    /// A code this version does not know.
    Other(u8),
}

impl RefuseCode {
    /// The code's byte on the wire.
    pub fn to_u8(self) -> u8 {
        match self {
            RefuseCode::BadSignature => 1,
            RefuseCode::Stale => 2,
            RefuseCode::KeyMismatch => 3,
            RefuseCode::Expired => 4,
            RefuseCode::InvalidName => 5,
            RefuseCode::Malformed => 6,
            RefuseCode::Internal => 7,
            RefuseCode::LifetimeTooLong => 8,
            RefuseCode::RateLimited => 9,
            RefuseCode::QuotaExceeded => 10,
            RefuseCode::ServerFull => 11,
            RefuseCode::Busy => 12,
            RefuseCode::UnsupportedVersion => 13,
            RefuseCode::Other(c) => c,
        }
    }

    /// The code a wire byte stands for.
    pub fn from_u8(code: u8) -> RefuseCode {
        match code {
            1 => RefuseCode::BadSignature,
            2 => RefuseCode::Stale,
            3 => RefuseCode::KeyMismatch,
            4 => RefuseCode::Expired,
            5 => RefuseCode::InvalidName,
            6 => RefuseCode::Malformed,
            7 => RefuseCode::Internal,
            8 => RefuseCode::LifetimeTooLong,
            9 => RefuseCode::RateLimited,
            10 => RefuseCode::QuotaExceeded,
            11 => RefuseCode::ServerFull,
            12 => RefuseCode::Busy,
            13 => RefuseCode::UnsupportedVersion,
            c => RefuseCode::Other(c),
        }
    }
}

/// The server's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The record was stored.
    Ok,
    /// The record registered under the looked-up name.
    Record(SignedRecord),
    /// No record is registered under the looked-up name.
    NotFound,
    /// No record newer than the watch's `after_seq` arrived within its wait.
    Unchanged,
    /// The watch is parked; its answer follows.
    Watching,
    /// The request was refused.
    Refused {
        /// Why.
        code: RefuseCode,
        /// For [`RefuseCode::Stale`], the registered sequence number; for
        /// [`RefuseCode::LifetimeTooLong`], the longest lifetime allowed in seconds; for
        /// [`RefuseCode::RateLimited`], the milliseconds to wait; for
        /// [`RefuseCode::QuotaExceeded`], [`RefuseCode::ServerFull`] and
        /// [`RefuseCode::Busy`], the limit; for [`RefuseCode::UnsupportedVersion`], the
        /// server's version; else 0.
        current_seq: u64,
        /// Human-readable detail.
        message: String,
    },
}

impl Response {
    /// The refusal a server sends for `err`. Errors that have no code of their own
    /// (a failing store, and client-side errors that should not reach a server) become
    /// [`RefuseCode::Internal`].
    pub fn refusal(err: &NameError) -> Response {
        let (code, current_seq) = match err {
            NameError::BadSignature => (RefuseCode::BadSignature, 0),
            NameError::Stale { current, .. } => (RefuseCode::Stale, *current),
            NameError::KeyMismatch => (RefuseCode::KeyMismatch, 0),
            NameError::Expired => (RefuseCode::Expired, 0),
            NameError::InvalidName { .. } => (RefuseCode::InvalidName, 0),
            NameError::Malformed(_) => (RefuseCode::Malformed, 0),
            NameError::LifetimeTooLong { max } => (RefuseCode::LifetimeTooLong, max.as_secs()),
            NameError::RateLimited { retry_after } => {
                // Rounded up: a client that waits this long finds its registration allowed.
                let millis = retry_after.as_nanos().div_ceil(1_000_000);
                (RefuseCode::RateLimited, u64::try_from(millis).unwrap_or(u64::MAX))
            }
            NameError::QuotaExceeded { max } => (RefuseCode::QuotaExceeded, *max),
            NameError::ServerFull { max } => (RefuseCode::ServerFull, *max),
            NameError::Busy(_) => (RefuseCode::Busy, 0),
            _ => (RefuseCode::Internal, 0),
        };
        Response::Refused { code, current_seq, message: err.to_string() }
    }

    /// The error a client reports for a refusal of a request about `name`, where
    /// `offered_seq` is the seq of the record it tried to register (0 for lookups).
    pub fn refusal_error(
        code: RefuseCode,
        current_seq: u64,
        message: &str,
        name: &str,
        offered_seq: u64,
    ) -> NameError {
        match code {
            RefuseCode::BadSignature => NameError::BadSignature,
            RefuseCode::Stale => NameError::Stale { current: current_seq, offered: offered_seq },
            RefuseCode::KeyMismatch => NameError::KeyMismatch,
            RefuseCode::Expired => NameError::Expired,
            RefuseCode::InvalidName => {
                NameError::InvalidName { name: name.to_string(), reason: message.to_string() }
            }
            RefuseCode::Malformed => NameError::Malformed(format!("server said: {message}")),
            RefuseCode::LifetimeTooLong => NameError::LifetimeTooLong { max: Duration::from_secs(current_seq) },
            RefuseCode::RateLimited => NameError::RateLimited { retry_after: Duration::from_millis(current_seq) },
            RefuseCode::QuotaExceeded => NameError::QuotaExceeded { max: current_seq },
            RefuseCode::ServerFull => NameError::ServerFull { max: current_seq },
            RefuseCode::Busy => NameError::Busy(message.to_string()),
            RefuseCode::UnsupportedVersion => NameError::Refused(format!(
                "the name server speaks name protocol version {current_seq}, this client {PROTOCOL_VERSION}: {message}"
            )),
            RefuseCode::Internal | RefuseCode::Other(_) => NameError::Refused(message.to_string()),
        }
    }
}

fn body(tag: u8, id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.put_u8(PROTOCOL_VERSION);
    out.put_u8(tag);
    out.put_u32(id);
    out
}

/// Reads a body's header: (tag, id, the payload's reader).
fn open_body<'a>(bytes: &'a [u8]) -> Result<(u8, u32, Reader<'a>), NameError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(DecodeError::TooLong("message").into());
    }
    let mut r = Reader::new(bytes);
    let version = r.u8("protocol version")?;
    if version != PROTOCOL_VERSION {
        return Err(NameError::Malformed(format!("unsupported protocol version {version}")));
    }
    let tag = r.u8("message tag")?;
    let id = r.u32("message id")?;
    Ok((tag, id, r))
}

/// The refusal a server sends a client of an older version (1: requests without ids;
/// 2: ids, no channel) in that version's own layout, so it reports it: `Refused` with code
/// 13 (unsupported version), this version, and a message saying what to do. `None` for a
/// first frame of this version (or of none the server knows).
pub fn other_version_refusal(first_frame: &[u8]) -> Option<Vec<u8>> {
    let message = format!("this name server speaks name protocol version {PROTOCOL_VERSION}: update the msocket client");
    let mut out = match first_frame.first() {
        Some(&1) => vec![1, RESP_REFUSED],
        Some(&2) => {
            // Answer the request by its id, as a version-2 client expects.
            let id = first_frame.get(2..6).map_or([0; 4], |b| b.try_into().unwrap_or([0; 4]));
            let mut out = vec![2, RESP_REFUSED];
            out.extend_from_slice(&id);
            out
        }
        _ => return None,
    };
    out.put_u8(RefuseCode::UnsupportedVersion.to_u8());
    out.put_u64(u64::from(PROTOCOL_VERSION));
    put_short_bytes(&mut out, message.as_bytes());
    Some(out)
}

/// What a server of an older version answered our first message with: it did not
/// understand it. `None` if the answer is not from an older server. (Such an answer is
/// not authenticated: all it can do is make the request fail, which anyone on the path
/// can do anyway.)
pub fn other_version_answer(first_answer: &[u8]) -> Option<NameError> {
    let (version, rest) = match first_answer {
        [1, RESP_REFUSED, rest @ ..] => (1, rest),
        [2, RESP_REFUSED, _, _, _, _, rest @ ..] => (2, rest),
        [v @ (1 | 2), ..] => (*v, &[][..]),
        _ => return None,
    };
    let mut r = Reader::new(rest);
    let said = match (r.u8("code"), r.u64("seq"), r.short_str(MAX_REFUSAL_MESSAGE_LEN, "message")) {
        (Ok(_), Ok(_), Ok(message)) => format!(" (it said: {message})"),
        _ => String::new(),
    };
    Some(NameError::Refused(format!(
        "the name server speaks name protocol version {version}, this client {PROTOCOL_VERSION}: update msocketd{said}"
    )))
}

/// Appends a name field. An over-long name is cut one byte past the limit, so it stays
/// over the limit and the server refuses it, without ever overflowing the `u16` length.
fn put_name(out: &mut Vec<u8>, name: &str) {
    put_short_bytes(out, truncate(name, MAX_NAME_LEN + 1).as_bytes());
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Request {
    /// The message body, with id [`FIRST_ID`] (a connection carrying one request).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_tagged(FIRST_ID)
    }

    /// The message body with request id `id`.
    pub fn encode_tagged(&self, id: u32) -> Vec<u8> {
        match self {
            Request::Register(record) => {
                let mut out = body(REQ_REGISTER, id);
                record.encode_into(&mut out);
                out
            }
            Request::Lookup(name) => {
                let mut out = body(REQ_LOOKUP, id);
                put_name(&mut out, name);
                out
            }
            Request::Watch { name, after_seq, wait_ms } => {
                let mut out = body(REQ_WATCH, id);
                put_name(&mut out, name);
                out.put_u64(*after_seq);
                out.put_u32(*wait_ms);
                out
            }
            Request::Cancel => body(REQ_CANCEL, id),
        }
    }

    /// Parses a message body, ignoring its id. Never panics; any defect is
    /// [`NameError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Request, NameError> {
        Request::decode_tagged(bytes).map(|(_, request)| request)
    }

    /// Parses a message body: (id, request). An id of 0 is malformed. Never panics.
    pub fn decode_tagged(bytes: &[u8]) -> Result<(u32, Request), NameError> {
        let (tag, id, mut r) = open_body(bytes)?;
        if id == CONNECTION_ID {
            return Err(NameError::Malformed("request id 0".into()));
        }
        let request = match tag {
            REQ_REGISTER => Request::Register(SignedRecord::decode_from(&mut r)?),
            REQ_LOOKUP => Request::Lookup(r.short_str(MAX_NAME_LEN, "looked-up name")?.to_string()),
            REQ_WATCH => Request::Watch {
                name: r.short_str(MAX_NAME_LEN, "watched name")?.to_string(),
                after_seq: r.u64("watch sequence number")?,
                wait_ms: r.u32("watch wait")?,
            },
            REQ_CANCEL => Request::Cancel,
            _ => return Err(NameError::Malformed(format!("unknown request tag {tag}"))),
        };
        r.finish("request")?;
        Ok((id, request))
    }

    /// The id of a body that is a request of this version, even one whose payload is
    /// malformed (so a refusal can name it); 0 if it has none.
    pub fn peek_id(bytes: &[u8]) -> u32 {
        match open_body(bytes) {
            Ok((_, id, _)) => id,
            Err(_) => CONNECTION_ID,
        }
    }
}

impl Response {
    /// The message body, with id [`FIRST_ID`] (the answer on a connection that carried
    /// one request).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_tagged(FIRST_ID)
    }

    /// The message body answering request `id`.
    pub fn encode_tagged(&self, id: u32) -> Vec<u8> {
        match self {
            Response::Ok => body(RESP_OK, id),
            Response::Record(record) => {
                let mut out = body(RESP_RECORD, id);
                record.encode_into(&mut out);
                out
            }
            Response::NotFound => body(RESP_NOT_FOUND, id),
            Response::Unchanged => body(RESP_UNCHANGED, id),
            Response::Watching => body(RESP_WATCHING, id),
            Response::Refused { code, current_seq, message } => {
                let mut out = body(RESP_REFUSED, id);
                out.put_u8(code.to_u8());
                out.put_u64(*current_seq);
                put_short_bytes(&mut out, truncate(message, MAX_REFUSAL_MESSAGE_LEN).as_bytes());
                out
            }
        }
    }

    /// Parses a message body, ignoring its id. Never panics; any defect is
    /// [`NameError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Response, NameError> {
        Response::decode_tagged(bytes).map(|(_, response)| response)
    }

    /// Parses a message body: (id, response). Never panics.
    pub fn decode_tagged(bytes: &[u8]) -> Result<(u32, Response), NameError> {
        let (tag, id, mut r) = open_body(bytes)?;
        let response = match tag {
            RESP_OK => Response::Ok,
            RESP_RECORD => Response::Record(SignedRecord::decode_from(&mut r)?),
            RESP_NOT_FOUND => Response::NotFound,
            RESP_UNCHANGED => Response::Unchanged,
            RESP_WATCHING => Response::Watching,
            RESP_REFUSED => Response::Refused {
                code: RefuseCode::from_u8(r.u8("refusal code")?),
                current_seq: r.u64("current sequence number")?,
                message: r.short_str(MAX_REFUSAL_MESSAGE_LEN, "refusal message")?.to_string(),
            },
            _ => return Err(NameError::Malformed(format!("unknown response tag {tag}"))),
        };
        r.finish("response")?;
        Ok((id, response))
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly before a new frame began.
    #[error("connection closed")]
    Closed,
    /// The length prefix is over [`MAX_MESSAGE_LEN`].
    #[error("message of {0} bytes is over the {MAX_MESSAGE_LEN}-byte limit")]
    TooLong(u32),
    /// The connection failed, or closed inside a frame.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame and returns its body. Allocates at most [`MAX_MESSAGE_LEN`] bytes.
/// Callers bound the wait with a timeout.
pub async fn read_message(reader: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    // A clean close is only "closed" before the first byte of a frame.
    let first = reader.read(&mut len[..1]).await?;
    if first == 0 {
        return Err(FrameError::Closed);
    }
    reader.read_exact(&mut len[1..]).await?;
    let len = u32::from_be_bytes(len);
    if len as usize > MAX_MESSAGE_LEN {
        return Err(FrameError::TooLong(len));
    }
    let mut body = vec![0u8; len as usize];
    reader.read_exact(&mut body).await?;
    Ok(body)
}

/// Writes one frame holding `body` and flushes it. Callers bound the wait with a timeout.
pub async fn write_message(
    writer: &mut (impl AsyncWrite + Unpin),
    body: &[u8],
) -> Result<(), FrameError> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l as usize <= MAX_MESSAGE_LEN)
        .ok_or(FrameError::TooLong(u32::try_from(body.len()).unwrap_or(u32::MAX)))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.put_u32(len);
    frame.put_slice(body);
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::NameRecord;
    use crate::Identity;
    use proptest::prelude::*;

    fn record() -> SignedRecord {
        let id = Identity::from_seed([4; 32]);
        let p = id.public();
        let rec = NameRecord {
            name: "bob.example".into(),
            signing_key: p.signing,
            noise_key: p.noise,
            addrs: vec!["198.51.100.2:9".parse().unwrap()],
            relays: vec!["relay:1".into()],
            seq: 7,
            expires: 2_000_000_000,
        };
        SignedRecord::sign(rec, &id).unwrap()
    }

    fn all_requests() -> Vec<Request> {
        vec![
            Request::Register(record()),
            Request::Lookup("bob.example".into()),
            Request::Watch { name: "bob.example".into(), after_seq: 7, wait_ms: 30_000 },
            Request::Watch { name: "b".into(), after_seq: u64::MAX, wait_ms: u32::MAX },
            Request::Watch { name: "b".into(), after_seq: 0, wait_ms: 0 },
            Request::Cancel,
        ]
    }

    fn all_responses() -> Vec<Response> {
        vec![
            Response::Ok,
            Response::Record(record()),
            Response::NotFound,
            Response::Unchanged,
            Response::Watching,
            Response::refusal(&NameError::Stale { current: 9, offered: 3 }),
            Response::Refused {
                code: RefuseCode::Other(200), current_seq: 0, message: "é".into()
            },
        ]
    }

    #[test]
    fn messages_round_trip() {
        for id in [1, 7, u32::MAX] {
            for req in all_requests() {
                assert_eq!(Request::decode_tagged(&req.encode_tagged(id)), Ok((id, req.clone())));
                assert_eq!(Request::peek_id(&req.encode_tagged(id)), id);
            }
        }
        for id in [CONNECTION_ID, 5, u32::MAX] {
            for resp in all_responses() {
                assert_eq!(Response::decode_tagged(&resp.encode_tagged(id)), Ok((id, resp)));
            }
        }
        for req in all_requests() {
            assert_eq!(Request::decode(&req.encode()), Ok(req));
        }
        for resp in all_responses() {
            assert_eq!(Response::decode_tagged(&resp.encode()), Ok((FIRST_ID, resp)));
        }
    }

    #[test]
    fn the_layout_matches_the_documentation() {
        assert_eq!(Response::Ok.encode_tagged(0x0102_0304), [3, 1, 1, 2, 3, 4]);
        assert_eq!(Response::NotFound.encode(), [3, 3, 0, 0, 0, 1]);
        assert_eq!(Response::Watching.encode_tagged(9), [3, 6, 0, 0, 0, 9]);
        assert_eq!(Request::Lookup("ab".into()).encode(), [3, 2, 0, 0, 0, 1, 0, 2, b'a', b'b']);
        assert_eq!(Request::Cancel.encode_tagged(3), [3, 4, 0, 0, 0, 3]);
        let refused = Response::refusal(&NameError::Stale { current: 9, offered: 3 }).encode_tagged(0);
        assert_eq!(&refused[..16], &[3, 4, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9, 0]);
        let mut register = vec![3, 1, 0, 0, 0, 1];
        register.extend(record().encode());
        assert_eq!(Request::Register(record()).encode(), register);
        assert_eq!(Response::Unchanged.encode(), [3, 5, 0, 0, 0, 1]);
        let watch = Request::Watch { name: "ab".into(), after_seq: 0x0102, wait_ms: 0x0304 };
        assert_eq!(
            watch.encode_tagged(2),
            [3, 3, 0, 0, 0, 2, 0, 2, b'a', b'b', 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 3, 4]
        );
    }

    /// Version-1 clients sent `version tag payload` and read answers in order; version-2
    /// clients sent `version tag id payload` in clear.
    #[test]
    fn the_other_versions_hear_a_refusal_they_can_read() {
        // What an old client reads: a Refused of its layout, code 13, this version, a message.
        let v1 = other_version_refusal(&[1, 2, 0, 2, b'a', b'b']).unwrap();
        assert_eq!(&v1[..11], &[1, 4, 13, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert!(String::from_utf8_lossy(&v1[13..]).contains("version 3"));
        let v2 = other_version_refusal(&[2, 2, 0, 0, 0, 9, 0, 2, b'a', b'b']).unwrap();
        assert_eq!(&v2[..15], &[2, 4, 0, 0, 0, 9, 13, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert!(String::from_utf8_lossy(&v2[17..]).contains("update the msocket client"));
        assert_eq!(other_version_refusal(&[3, 1, 0]), None);
        assert_eq!(other_version_refusal(&[]), None);
        // What an old server answers our hello with: it refuses it as malformed.
        let mut v1_answer = vec![1, 4, 6, 0, 0, 0, 0, 0, 0, 0, 0];
        put_short_bytes(&mut v1_answer, b"malformed: unsupported protocol version 3");
        let mut v2_answer = vec![2, 4, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0];
        put_short_bytes(&mut v2_answer, b"malformed: unsupported protocol version 3");
        for (version, answer) in [(1, v1_answer), (2, v2_answer)] {
            match other_version_answer(&answer) {
                Some(NameError::Refused(m)) => {
                    assert!(m.contains(&format!("version {version}")) && m.contains("update msocketd"), "{m}");
                    assert!(m.contains("unsupported protocol version 3"), "{m}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(other_version_answer(&[1]), Some(NameError::Refused(m)) if !m.contains("said")));
        assert_eq!(other_version_answer(&[3, 2, 0]), None);
        // A message of another version is not one of ours.
        assert!(matches!(Request::decode_tagged(&[1, 2, 0, 2, b'a', b'b']), Err(NameError::Malformed(_))));
        assert!(matches!(Request::decode_tagged(&[2, 2, 0, 0, 0, 1, 0, 1, b'a']), Err(NameError::Malformed(_))));
        // And a refusal of the other version maps to a refusal that says so.
        let err = Response::refusal_error(RefuseCode::UnsupportedVersion, 4, "go away", "bob", 0);
        assert!(matches!(&err, NameError::Refused(m) if m.contains("version 4") && m.contains("go away")), "{err}");
    }

    #[test]
    fn watch_waits_are_rounded_up_and_saturated() {
        let ms = |wait: Duration| match Request::watch("a", 1, wait) {
            Request::Watch { wait_ms, after_seq: 1, .. } => wait_ms,
            other => panic!("not a watch: {other:?}"),
        };
        assert_eq!(ms(Duration::ZERO), 0);
        assert_eq!(ms(Duration::from_millis(300)), 300);
        assert_eq!(ms(Duration::from_micros(300_001)), 301);
        assert_eq!(ms(Duration::from_nanos(1)), 1);
        assert_eq!(ms(Duration::from_secs(u64::from(u32::MAX))), u32::MAX);
        assert_eq!(ms(Duration::MAX), u32::MAX);
    }

    #[test]
    fn refusals_map_back_to_the_same_errors() {
        let errors = [
            NameError::BadSignature,
            NameError::Stale { current: 9, offered: 3 },
            NameError::KeyMismatch,
            NameError::Expired,
            NameError::LifetimeTooLong { max: Duration::from_secs(86_400) },
            NameError::RateLimited { retry_after: Duration::from_millis(1_500) },
            NameError::QuotaExceeded { max: 32 },
            NameError::ServerFull { max: 1_000_000 },
        ];
        for err in errors {
            let Response::Refused { code, current_seq, message } = Response::refusal(&err) else {
                panic!("not a refusal");
            };
            assert_eq!(Response::refusal_error(code, current_seq, &message, "bob", 3), err);
        }
        let invalid = validate("Bob");
        let Response::Refused { code, current_seq, message } = Response::refusal(&invalid) else {
            panic!("not a refusal");
        };
        assert_eq!(code, RefuseCode::InvalidName);
        assert!(matches!(
            Response::refusal_error(code, current_seq, &message, "Bob", 0),
            NameError::InvalidName { name, reason } if name == "Bob" && reason.contains("lowercase")
        ));
        for byte in 0..=u8::MAX {
            assert_eq!(RefuseCode::from_u8(byte).to_u8(), byte);
        }
        assert_eq!(RefuseCode::from_u8(9), RefuseCode::RateLimited);
        let soon = Response::refusal(&NameError::RateLimited { retry_after: Duration::from_micros(1) });
        assert!(matches!(soon, Response::Refused { current_seq: 1, .. }), "{soon:?}");
        assert_eq!(RefuseCode::from_u8(11), RefuseCode::ServerFull);
        let store = Response::refusal(&NameError::Store("disk full".into()));
        assert!(matches!(store, Response::Refused { code: RefuseCode::Internal, .. }));
        assert_eq!(
            Response::refusal_error(RefuseCode::Other(99), 0, "new rule", "bob", 0),
            NameError::Refused("new rule".into())
        );
    }

    fn validate(name: &str) -> NameError {
        crate::name::validate_name(name).unwrap_err()
    }

    #[test]
    fn defective_bodies_are_refused() {
        let good = Request::Lookup("bob".into()).encode();
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![2],
            vec![3, 2, 0, 0, 0],                          // id cut short
            vec![4, 2, 0, 0, 0, 1, 0, 0],                 // unknown version
            vec![3, 9, 0, 0, 0, 1],                       // unknown tag
            vec![3, 2, 0, 0, 0, 0, 0, 1, b'a'],           // request id 0
            vec![3, 2, 0, 0, 0, 1, 0, 5, b'a'],           // truncated name
            [good.clone(), vec![0]].concat(),             // trailing byte
            vec![3, 2, 0, 0, 0, 1, 0xff, 0xff],           // name over the bound
            vec![3, 2, 0, 0, 0, 1, 0, 1, 0xff],           // not UTF-8
            vec![3, 4, 0, 0, 0, 1, 0],                    // a cancel with a payload
        ];
        let watch = Request::Watch { name: "bob".into(), after_seq: 1, wait_ms: 2 }.encode();
        // A watch cut anywhere is truncated, one with a byte more has trailing bytes.
        cases.extend((2..watch.len()).map(|n| watch[..n].to_vec()));
        cases.push([watch.clone(), vec![0]].concat());
        cases.push(vec![3, 3, 0, 0, 0, 1, 0xff, 0xff]); // watched name over the bound
        for bytes in &cases {
            assert!(matches!(Request::decode_tagged(bytes), Err(NameError::Malformed(_))), "{bytes:?}");
        }
        // The id of a request with a bad payload can still be named in the refusal.
        assert_eq!(Request::peek_id(&[3, 2, 0, 0, 0, 9, 0, 5, b'a']), 9);
        assert_eq!(Request::peek_id(&[3, 2, 0, 0]), CONNECTION_ID);
        assert!(matches!(Response::decode(&[3, 1, 0, 0, 0, 1, 0]), Err(NameError::Malformed(_))));
        assert!(matches!(Response::decode(&[3, 4, 0, 0, 0, 1, 2]), Err(NameError::Malformed(_))));
        assert!(matches!(Response::decode(&[3, 6, 0, 0, 0, 1, 0]), Err(NameError::Malformed(_))));
        assert!(matches!(Response::decode(&[3, 7, 0, 0, 0, 1]), Err(NameError::Malformed(_))));
        assert!(matches!(Response::decode(&[3, 5, 0, 0]), Err(NameError::Malformed(_))));
        assert!(matches!(
            Response::decode(&vec![2; MAX_MESSAGE_LEN + 1]),
            Err(NameError::Malformed(_))
        ));
    }

    #[test]
    fn overlong_fields_are_cut_so_the_peer_refuses_them() {
        let long = "a".repeat(400);
        let bytes = Request::Lookup(long.clone()).encode();
        assert_eq!(bytes.len(), 6 + 2 + MAX_NAME_LEN + 1);
        assert!(matches!(Request::decode(&bytes), Err(NameError::Malformed(_))));
        let bytes = Request::watch(&long, 1, Duration::from_secs(1)).encode();
        assert_eq!(bytes.len(), 6 + 2 + MAX_NAME_LEN + 1 + 8 + 4);
        assert!(matches!(Request::decode(&bytes), Err(NameError::Malformed(_))));
        let msg = "é".repeat(MAX_REFUSAL_MESSAGE_LEN);
        let resp = Response::Refused { code: RefuseCode::Internal, current_seq: 0, message: msg };
        let Ok(Response::Refused { message, .. }) = Response::decode(&resp.encode()) else {
            panic!("long refusal did not decode");
        };
        assert_eq!(message.len(), MAX_REFUSAL_MESSAGE_LEN);
    }

    #[tokio::test]
    async fn frames_round_trip_and_bounds_hold() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_message(&mut a, b"hello").await.unwrap();
        write_message(&mut a, b"").await.unwrap();
        assert_eq!(read_message(&mut b).await.unwrap(), b"hello");
        assert_eq!(read_message(&mut b).await.unwrap(), b"");

        assert!(matches!(
            write_message(&mut a, &vec![0; MAX_MESSAGE_LEN + 1]).await,
            Err(FrameError::TooLong(_))
        ));
        a.write_all(&(MAX_MESSAGE_LEN as u32 + 1).to_be_bytes()).await.unwrap();
        assert!(matches!(read_message(&mut b).await, Err(FrameError::TooLong(65537))));

        // Closing inside a frame is an I/O error; closing between frames is `Closed`.
        a.write_all(&[0, 0, 0, 9, 1, 2]).await.unwrap();
        drop(a);
        assert!(matches!(read_message(&mut b).await, Err(FrameError::Io(_))));
        assert!(matches!(read_message(&mut b).await, Err(FrameError::Closed)));
    }

    proptest! {
        #[test]
        fn decoding_random_bodies_never_panics(
            mut bytes in prop::collection::vec(any::<u8>(), 0..400),
            tag in 0u8..12,
        ) {
            // Most cases get a valid header (tags 1 to 6) so the payload decoders are
            // exercised.
            if bytes.len() >= 2 && tag < 6 {
                bytes[0] = PROTOCOL_VERSION;
                bytes[1] = tag + 1;
            }
            if let Ok((id, req)) = Request::decode_tagged(&bytes) {
                prop_assert_eq!(req.encode_tagged(id), bytes.clone());
            }
            if let Ok((id, resp)) = Response::decode_tagged(&bytes) {
                prop_assert_eq!(resp.encode_tagged(id), bytes);
            }
        }
    }
}
