//! msocket-lab: a network lab in Linux network namespaces, so msocket's tests and
//! benchmarks can make *real* hand-offs happen instead of simulating them.
//!
//! msocket's promise is that a flow survives the phone losing its Wi-Fi address, the
//! carrier's NAT rebinding, or a path silently dying. Loopback tests can only pretend;
//! the kernel behaviours that matter (an address vanishing under a bound socket, source
//! routing choosing an interface, a NAT mapping being forgotten, a SYN lost on a slow
//! link) only happen on real interfaces. This crate builds them, cheaply and privately,
//! out of network namespaces and veth pairs:
//!
//! - [`Netns`]: a named namespace that is deleted on drop, helpers that run `ip`, `nft`,
//!   `tc`, `sysctl` inside it with errors that carry the command and its stderr, and
//!   [`Netns::spawn_runtime`] to run a tokio future with its sockets inside it.
//! - [`Emulator`]: a userspace L2 wire with delay, jitter, loss and rate, because the
//!   kernel this project runs on has no `netem`. Its [`EmuHandle`] changes the link at
//!   run time (e.g. [`EmuHandle::set_blackhole`]: the path silently dies).
//! - [`LinkSpec`]: links written as strings such as `"10mbit 40ms 0.5% loss"`.
//! - [`PhoneLab`]: the phone topology (Wi-Fi and cellular access routers with optional
//!   NAT, a core router, a server) and the *moves* scenarios need.
//! - [`TwoPhoneLab`]: two such phones behind NATs of a chosen kind (port-preserving,
//!   symmetric, none; carrier-grade on cellular), a public core with a services host (a
//!   name server, two relays) and a public host, UDP dropped, optionally only TCP 443
//!   allowed out of one phone's networks: relays and hole punching.
//! - [`capture`]: an `AF_PACKET` capture that counts a host's TCP traffic and looks for
//!   a byte string in it (a relay must never see plaintext).
//! - [`probe`]: a TCP echo server and client helpers for connectivity checks.
//!
//! Everything needs root (namespaces, raw sockets). Every namespace is named
//! `msl<pid>-…`, so [`cleanup_stale`] can remove what a killed test process left behind.

pub mod capture;
mod emu;
mod netns;
mod phone;
pub mod probe;
mod spec;
mod two_phones;

pub use emu::{DirStats, EmuHandle, EmuOptions, EmuStats, Emulator};
pub use netns::{cleanup_stale, is_root, missing_tools, Netns, NsTask, NS_PREFIX};
pub use phone::{Access, LabConfig, LinkId, PhoneLab};
pub use spec::{LinkSpec, SpecError};
pub use two_phones::{
    Nat, Phone, PhoneNet, TwoPhoneConfig, TwoPhoneLab, Unsolicited, NAMES_ADDR, PUBLIC_HOST_ADDR,
    RELAY_ADDRS,
};

use std::time::Duration;

/// What went wrong in the lab. Messages name the command, namespace or argument.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The full command line.
        command: String,
        /// How it exited.
        status: String,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// A command could not be started at all (usually: the program is not installed).
    #[error("could not start `{command}`: {source} (run lab/setup.sh to install the lab's tools)")]
    Spawn {
        /// The full command line.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A link specification did not parse.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// An argument was out of range or did not fit the topology.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Something did not happen within its time limit.
    #[error("timed out after {after:?}: {what}")]
    Timeout {
        /// The limit.
        after: Duration,
        /// What was awaited.
        what: String,
    },
    /// A task running inside a namespace panicked.
    #[error("task in namespace {ns} panicked: {message}")]
    Panicked {
        /// The namespace's name.
        ns: String,
        /// The panic message, if it was a string.
        message: String,
    },
}

/// Result with the lab's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(what: impl Into<String>, source: std::io::Error) -> Error {
    Error::Io {
        what: what.into(),
        source,
    }
}
