//! The msocket CLI.

pub mod cli;
