//! Internals that msocket's own daemon, benchmarks and tests use: the name service's wire
//! protocol and the Linux netlink watcher.
//!
//! **Unstable**: no compatibility promise from one release to the next. Apps use the
//! crate's root API ([`crate::Endpoint`], [`crate::name::NameService`], [`crate::watch`]).

pub use crate::name::protocol as name_protocol;
pub use crate::relay::wire as relay_protocol;
pub use crate::runtime::events::{event_channel, EVENT_BACKLOG};
pub use crate::session::opening::Progress;
#[cfg(target_os = "linux")]
pub use crate::watch::netlink;
