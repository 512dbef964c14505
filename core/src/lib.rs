//! msocket: one encrypted byte stream to a *named* peer that survives moves of either end.
//!
//! The crate is layered like the system it implements:
//! - [`proto`]: the flow protocol as a deterministic, I/O-free state machine (frames,
//!   sequence numbers and acks, retransmission after a subflow dies, reassembly, resume,
//!   liveness timers). Time is passed in; nothing here touches a socket or a clock.
//! - `session`: the Noise IK handshake, the record layer (frames packed into numbered,
//!   sealed records; the replay window), and a subflow's opening exchange with the MAC
//!   that lets a new subflow join an existing flow, all without I/O.
//! - [`name`]: signed name records and the clients of the name services.
//! - the tokio runtime ([`Endpoint`], [`Flow`]) that owns sockets and timers and drives
//!   the state machine.

/// Energy estimates: how many joules a path's radio spends carrying a flow (sans-IO).
pub mod energy;
pub mod identity;
pub mod name;
pub mod proto;
mod runtime;
mod session;
pub mod watch;
pub mod wire;

pub use identity::{Identity, IdentityError, PublicIdentity};
pub use proto::{FlowConfig, FlowError, FlowStats, PathState};
pub use runtime::{
    BlockingFlow, ConnectFailure, Endpoint, EndpointConfig, Error, Flow, FlowEvent, FlowEvents, IoOperation, Listener, NetworkFollower, NetworkSource, Path, PathLossReason, PathPolicy,
    RawSocket, SocketBinder,
};
