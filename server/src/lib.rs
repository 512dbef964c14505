//! The msocket CLI.

pub mod cli;
#[cfg(target_os = "linux")]
pub mod lab_run;
