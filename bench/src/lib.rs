//! msocket's benchmarks, run as `msocket bench throughput|mobility|multipath|relay`, and the
//! network-lab runner they share with the lab scenario tests. A crate of their own so that
//! what only they need (Noise and AES-GCM for the encrypted-TCP baseline, serde for the
//! JSON rows, the network lab) stays out of the CLI's and the daemon's dependencies.
//!
//! Each benchmark prints its table (or JSON with `json`) on stdout and its progress on
//! stderr; a failure is a [`BenchError`] with the message for the user.

#[cfg(target_os = "linux")]
mod figures;
#[cfg(target_os = "linux")]
pub mod lab_run;
#[cfg(target_os = "linux")]
pub mod mobility;
#[cfg(target_os = "linux")]
pub mod multipath;
#[cfg(target_os = "linux")]
mod raw;
#[cfg(target_os = "linux")]
pub mod relay;
#[cfg(target_os = "linux")]
pub mod relay_lab;
pub mod throughput;

/// A link of the lab, as `msocket bench multipath` takes it (`"20mbit 10ms 2% loss"`).
#[cfg(target_os = "linux")]
pub use msocket_lab::LinkSpec;

/// Why a benchmark could not run or failed: the message for the user.
#[derive(Debug)]
pub struct BenchError(pub String);

impl<E: std::fmt::Display> From<E> for BenchError {
    fn from(e: E) -> Self {
        BenchError(e.to_string())
    }
}
