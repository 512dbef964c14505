//! msocketd and the msocket CLI.

pub mod name_server;
