//! The tokio runtime: endpoints, flows, and the tasks that move their bytes.
//!
//! The protocol itself lives in [`crate::proto`] and knows nothing of sockets or clocks;
//! this layer owns both. An [`Endpoint`] binds an identity to a name service, listens on
//! names and connects to them; each [`Flow`] is driven by tasks (see `conn`) that carry
//! sealed records over TCP subflows and re-dial when paths die.

mod config;
mod conn;
mod dial;
mod driver;
mod endpoint;
mod error;
pub(crate) mod events;
mod fast_open;
mod flow;
mod follow;
mod header;
mod host;
mod paths;
mod peer_watch;
mod punch;
mod read_slabs;
mod reader;
mod relay_dial;
mod relay_link;
mod socket;
mod unsent;
mod writer;

pub use config::{EndpointConfig, NetworkSource};
pub use endpoint::{Endpoint, Listener};
pub use error::{ConnectFailure, Error};
pub use events::{FlowEvent, FlowEvents, IoOperation, Path, PathLossReason};
pub use flow::{BlockingFlow, Flow};
pub use paths::PathPolicy;
pub use follow::NetworkFollower;
pub use socket::{RawSocket, SocketBinder};
