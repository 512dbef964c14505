//! msocketd and the msocket CLI.

pub mod cli;
pub mod name_server;
