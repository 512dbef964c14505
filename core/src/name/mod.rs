//! Signed name records and the clients of the name services.
