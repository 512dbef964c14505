//! msocketd and the msocket CLI.
