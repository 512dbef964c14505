//! Relays: how a peer behind NAT is reached.
//!
//! A phone behind a carrier-grade NAT has no address anyone can dial. So a listener keeps
//! a control connection open to one or more relays (`msocketd relay`), proves its key on
//! it, and lists the relays in its name record. A client that cannot reach the listener
//! directly dials a relay instead and asks for the listener's keys; the relay tells the
//! listener over its control connection, the listener connects back, and the relay splices
//! the two TCP connections. What runs inside is an ordinary subflow — a NEW_FLOW or a JOIN,
//! then sealed records — so a relayed path is just another path of the flow, the Noise
//! session is end to end, and the relay sees ciphertext only.
//!
//! The bytes are in [`wire`]; the listener's side (registrations) and the client's (dialing
//! through a relay) are in the runtime.

#[doc(hidden)]
pub mod wire;

use std::fmt;
use std::str::FromStr;

/// A relay's address as configured and as listed in name records: `HOST:PORT`, where HOST
/// is a DNS name, an IPv4 address or a bracketed IPv6 address (`tcp://` may precede it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelayUrl {
    host_port: String,
}

/// A relay address that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid relay address {url:?}: {reason} (expected HOST:PORT or tcp://HOST:PORT)")]
pub struct RelayUrlError {
    /// What was given.
    pub url: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The longest relay address (a name record's limit on one relay).
pub const MAX_RELAY_URL_LEN: usize = crate::name::MAX_RELAY_LEN;

impl FromStr for RelayUrl {
    type Err = RelayUrlError;

    fn from_str(url: &str) -> Result<RelayUrl, RelayUrlError> {
        let bad = |reason| RelayUrlError { url: url.to_string(), reason };
        let rest = match url.split_once("://") {
            Some(("tcp", rest)) => rest,
            Some(_) => return Err(bad("unknown scheme")),
            None => url,
        };
        if rest.len() > MAX_RELAY_URL_LEN {
            return Err(bad("too long"));
        }
        crate::name::check_host_port(rest).map_err(bad)?;
        Ok(RelayUrl { host_port: rest.to_string() })
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host_port)
    }
}

impl RelayUrl {
    /// `HOST:PORT`.
    pub fn host_port(&self) -> &str {
        &self.host_port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_addresses_parse_in_both_forms_and_nothing_else() {
        assert_eq!("tcp://relay.example:443".parse::<RelayUrl>().unwrap().to_string(), "relay.example:443");
        assert_eq!("192.0.2.1:7451".parse::<RelayUrl>().unwrap().host_port(), "192.0.2.1:7451");
        assert_eq!("[2001:db8::1]:443".parse::<RelayUrl>().unwrap().to_string(), "[2001:db8::1]:443");
        for bad in ["relay.example", "https://relay:443", "relay:0", "relay:99999", "re lay:1", ":443", "a/b:1"] {
            assert!(bad.parse::<RelayUrl>().is_err(), "{bad}");
        }
        assert!(format!("{}:1", "r".repeat(300)).parse::<RelayUrl>().is_err());
    }
}
