//! msocket: one encrypted byte stream to a *named* peer that survives moves of either end.
//!
//! The crate is layered like the system it implements:
//! - `proto`: the flow protocol as a deterministic, I/O-free state machine (frames,
//!   sequence numbers and acks, retransmission after a subflow dies, reassembly, resume,
//!   liveness timers). Time is passed in; nothing here touches a socket or a clock.
//! - `session`: the Noise IK handshake, the record layer (frames packed into numbered,
//!   sealed records; the replay window), and a subflow's opening exchange with the MAC
//!   that lets a new subflow join an existing flow, all without I/O.
//! - [`name`]: signed name records and the clients of the name services.
//! - the tokio runtime ([`Endpoint`], [`Flow`]) that owns sockets and timers and drives
//!   the state machine.
//!
//! The public API is what an app needs: [`Endpoint`], [`Flow`], their configuration,
//! events and errors, identities, the name service clients ([`name`]), network watching
//! ([`watch`]) and energy estimates ([`energy`]). The protocol's internals stay private;
//! what msocket's own daemon and tests need of them is in [`unstable`].

#![deny(missing_docs)]

/// Energy estimates: how many joules a path's radio spends carrying a flow (sans-IO).
pub mod energy;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod name;
mod proto;
pub mod relay;
mod runtime;
mod session;
pub mod trust;
pub mod unstable;
pub mod watch;
mod wire;

pub use identity::{Fingerprint, FingerprintError, Identity, IdentityError, PublicIdentity};
pub use trust::{PeerName, PeerNameError};
pub use proto::{FlowConfig, FlowError, FlowStats, FrameError, PathState, ProtocolViolation, SubflowId};
pub use wire::DecodeError;
pub use runtime::{
    BlockingFlow, ConnectFailure, Endpoint, EndpointConfig, Error, Flow, FlowEvent, FlowEvents, IoOperation, Listener, NetworkFollower, NetworkSource, Path, PathLossReason, PathPolicy,
    RawSocket, SocketBinder,
};
