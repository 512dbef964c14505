//! The errors the runtime reports to applications.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::name::NameError;
use crate::proto::FlowError;
use crate::trust::{PeerNameError, PinError};

/// What went wrong in an endpoint or flow operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The name service refused or failed.
    #[error("name service: {0}")]
    Name(#[from] NameError),
    /// A name's record now carries other keys than the ones pinned for it.
    #[error(
        "the keys of {name} changed: pinned {pinned}, the name service now offers {offered}; refusing \
         to connect. If {name} really has new keys, connect once to {name}#{offered} to pin them"
    )]
    KeyChanged {
        /// The name.
        name: String,
        /// Fingerprint of the pinned keys.
        pinned: String,
        /// Fingerprint of the keys offered now.
        offered: String,
    },
    /// The name's record carries other keys than the fingerprint the peer was named with.
    #[error("{name}'s record carries the keys {offered}, not {expected} as asked; refusing to connect")]
    WrongKey {
        /// The name.
        name: String,
        /// The fingerprint given with the name.
        expected: String,
        /// Fingerprint of the keys the record carries.
        offered: String,
    },
    /// The name service offered a record of the name older than one already accepted (it
    /// would send us to addresses the peer has left).
    #[error("the name service offered a record of {name} with sequence number {offered}, older than {seen} already seen; refusing it")]
    StaleRecord {
        /// The name.
        name: String,
        /// The highest sequence number accepted before.
        seen: u64,
        /// The sequence number offered.
        offered: u64,
    },
    /// The peer was named wrongly (a bad name or fingerprint).
    #[error(transparent)]
    PeerName(#[from] PeerNameError),
    /// The pin store failed (see [`crate::trust::PinStore`]).
    #[error(transparent)]
    Pins(#[from] PinError),
    /// The peer could not be reached in time.
    #[error("could not reach {name} (tried {tried:?}) within {after:?}: {last}")]
    Unreachable {
        /// The name.
        name: String,
        /// The addresses tried.
        tried: Vec<SocketAddr>,
        /// How long we tried.
        after: Duration,
        /// Why the last attempt failed.
        last: ConnectFailure,
    },
    /// The peer does not serve the name asked for.
    #[error("{name} is not served by the peer at {addr}")]
    UnknownName {
        /// The name.
        name: String,
        /// The address that answered.
        addr: SocketAddr,
    },
    /// The peer does not accept flows from this endpoint's key (it is not on the peer's
    /// allow-list).
    #[error("the peer at {addr} serving {name} does not accept this endpoint's key (not on its allow-list)")]
    NotAllowed {
        /// The name.
        name: String,
        /// The address that refused.
        addr: SocketAddr,
    },
    /// The name is already being listened on by this endpoint.
    #[error("already listening on {0}")]
    AlreadyListening(String),
    /// A local socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// The flow failed.
    #[error(transparent)]
    Flow(#[from] FlowError),
    /// The endpoint was closed.
    #[error("endpoint closed")]
    Closed,
}

/// Why one attempt to open a flow failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// No attempt finished before the time ran out.
    #[error("no attempt finished")]
    NoAttempt,
    /// The name's record lists no addresses (the peer has no usable network now).
    #[error("the name's record lists no addresses")]
    NoAddresses,
    /// Every TCP connection attempt failed; this is how the last one did.
    #[error("{addr}: {kind}")]
    Connect {
        /// The address dialed.
        addr: SocketAddr,
        /// How the connection failed.
        kind: io::ErrorKind,
    },
    /// The peer has as many flows open as it takes (with this key, or in all).
    #[error("{addr}: the peer has too many flows open to take another now")]
    PeerBusy {
        /// The address that refused.
        addr: SocketAddr,
    },
    /// Connecting and the handshake took longer than the endpoint's `io_timeout`.
    #[error("connect or handshake timed out")]
    TimedOut,
    /// The peer closed the connection during the handshake: it does not hold the keys the
    /// name record lists, or it is not an msocket endpoint.
    #[error("{addr}: the peer closed the connection during the handshake (it does not hold the keys the name record lists, or it is not an msocket endpoint)")]
    HandshakeClosed {
        /// The address that closed.
        addr: SocketAddr,
    },
    /// The handshake failed: the peer's answer is malformed or not from the key the name
    /// record lists.
    #[error("{addr}: {detail}")]
    Handshake {
        /// The address that answered.
        addr: SocketAddr,
        /// What was wrong with it.
        detail: String,
    },
    /// The name service could not be asked.
    #[error(transparent)]
    NameService(Box<NameError>),
    /// A relay the peer listed refused to splice us to it.
    #[error("relay {relay}: {why}")]
    Relay {
        /// The relay.
        relay: SocketAddr,
        /// Why it refused.
        why: crate::relay::wire::RelayRefusal,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }
}

/// Maps a flow failure to the `io::Error` that `AsyncRead`/`AsyncWrite` report.
pub(crate) fn flow_io_error(e: FlowError) -> io::Error {
    let kind = match e {
        FlowError::DeadlineExceeded { .. } => io::ErrorKind::TimedOut,
        FlowError::PeerAborted { .. } => io::ErrorKind::ConnectionReset,
        FlowError::LocallyAborted { .. } => io::ErrorKind::ConnectionAborted,
        FlowError::PeerForgotFlow | FlowError::NotAccepted => io::ErrorKind::ConnectionReset,
        FlowError::EndpointDropped => io::ErrorKind::NotConnected,
        FlowError::WriteAfterFinish => io::ErrorKind::BrokenPipe,
        FlowError::PacketNumbersExhausted | FlowError::ForgedRecords { .. } => io::ErrorKind::ConnectionAborted,
    };
    io::Error::new(kind, Error::Flow(e))
}
