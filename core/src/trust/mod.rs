//! Who a peer is: names bound to keys by the user, not by the name service.
//!
//! A name server only keeps records available. It may be an impostor, compromised, or
//! simply wrong, and a record is signed by whichever key it carries, so "the record
//! verifies" proves nothing about whose name it is. msocket therefore decides which key a
//! name belongs to from two sources the user controls:
//!
//! - a [`PeerName`] that carries the key: `alice.phone#<fingerprint>`. The record must carry
//!   keys with that fingerprint, and the handshake then proves the peer holds them;
//! - otherwise the key seen the first time the name was looked up, kept in a [`PinStore`]
//!   (ssh's `known_hosts` model). A record with other keys is a hard error that names both
//!   fingerprints and says how to accept the new key (connect once with `NAME#NEW`).
//!
//! Pins also remember the highest record sequence number seen for the name, so a name
//! server cannot roll a moving peer back to addresses it has left.

mod pins;

use std::fmt;
use std::str::FromStr;

pub use pins::{MemoryPins, Pin, PinError, PinFile, PinStore};

use crate::identity::{Fingerprint, FingerprintError};
use crate::name::{validate_name, NameError};

/// A peer as the user names it: a name, optionally bound to the key it must hold.
///
/// Written `NAME` or `NAME#FINGERPRINT` (see [`Fingerprint`] for the digits).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PeerName {
    name: String,
    key: Option<Fingerprint>,
}

/// Why a string is not a [`PeerName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerNameError {
    /// The part before `#` is not a valid name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The part after `#` is not a fingerprint.
    #[error("{peer:?}: {error}")]
    Fingerprint {
        /// The whole string.
        peer: String,
        /// What is wrong with the fingerprint.
        error: FingerprintError,
    },
}

impl PeerName {
    /// The name, without the fingerprint.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fingerprint the peer's keys must have, if one was given.
    pub fn key(&self) -> Option<&Fingerprint> {
        self.key.as_ref()
    }

    /// A name that was validated before (a flow's peer, looked up again): its record is
    /// checked against the pin, which the flow's first lookup set.
    pub(crate) fn checked_earlier(name: &str) -> PeerName {
        PeerName { name: name.to_string(), key: None }
    }

    /// `name` bound to `key`.
    pub fn with_key(name: &str, key: Fingerprint) -> Result<PeerName, PeerNameError> {
        validate_name(name)?;
        Ok(PeerName { name: name.to_string(), key: Some(key) })
    }
}

impl FromStr for PeerName {
    type Err = PeerNameError;

    fn from_str(s: &str) -> Result<PeerName, PeerNameError> {
        let (name, key) = match s.split_once('#') {
            Some((name, fp)) => {
                let key = fp
                    .parse::<Fingerprint>()
                    .map_err(|error| PeerNameError::Fingerprint { peer: s.to_string(), error })?;
                (name, Some(key))
            }
            None => (s, None),
        };
        validate_name(name)?;
        Ok(PeerName { name: name.to_string(), key })
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}#{key}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl fmt::Debug for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerName({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn peer_names_parse_with_and_without_a_key() {
        let public = Identity::from_seed([4; 32]).public();
        let plain: PeerName = "alice.phone".parse().unwrap();
        assert_eq!((plain.name(), plain.key()), ("alice.phone", None));
        let text = format!("alice.phone#{}", public.fingerprint());
        let bound: PeerName = text.parse().unwrap();
        assert_eq!(bound.name(), "alice.phone");
        assert!(bound.key().unwrap().matches(&public));
        assert_eq!(bound.to_string(), text);
        assert!(matches!("alice phone".parse::<PeerName>(), Err(PeerNameError::Name(_))));
        assert!(matches!(
            "alice.phone#abc".parse::<PeerName>(),
            Err(PeerNameError::Fingerprint { error: FingerprintError::Length(3), .. })
        ));
        assert!(matches!(
            format!("#{}", public.fingerprint()).parse::<PeerName>(),
            Err(PeerNameError::Name(_))
        ));
        let twice = format!("alice.phone#{0}#{0}", public.fingerprint());
        assert!(matches!(twice.parse::<PeerName>(), Err(PeerNameError::Fingerprint { .. })));
    }
}
