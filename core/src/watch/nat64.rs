//! Reaching IPv4-only peers from an IPv6-only network, through its NAT64.
//!
//! Many cellular networks give phones IPv6 only and translate to IPv4 at a NAT64 gateway
//! (RFC 6146), reached at addresses synthesized from the peer's IPv4 address and the
//! network's NAT64 prefix (RFC 6052). Name lookups of host names get such addresses from
//! DNS64, but a name record lists IP literals, so msocket synthesizes them itself: a peer's
//! IPv4 address is dialed as `prefix + address` from an IPv6 local address whose interface
//! has a NAT64 prefix, when no IPv4 local address exists. (Android's 464XLAT gives an
//! IPv4 address on such networks too, which is then used as any IPv4 address.)
//!
//! The platform reports the prefix (Android's `LinkProperties.getNat64Prefix`), or it is
//! discovered as RFC 7050 describes: the well-known name `ipv4only.arpa` has only IPv4
//! addresses (192.0.0.170 and 192.0.0.171), so an IPv6 address the resolver returns for it
//! was synthesized by DNS64 and holds the prefix ([`Nat64Prefix::from_synthesized`]).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The prefix lengths RFC 6052 defines.
const LENGTHS: [u8; 6] = [32, 40, 48, 56, 64, 96];

/// The IPv4 addresses of `ipv4only.arpa` (RFC 7050).
const WELL_KNOWN: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 0, 170), Ipv4Addr::new(192, 0, 0, 171)];

/// A NAT64 prefix: `64:ff9b::/96`, or a network's own (RFC 6052).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Nat64Prefix {
    prefix: Ipv6Addr,
    len: u8,
}

/// Why a text is not a NAT64 prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Nat64PrefixError {
    /// Not `PREFIX/LENGTH`.
    #[error("{0:?} is not PREFIX/LENGTH (such as 64:ff9b::/96)")]
    Form(String),
    /// The prefix is not an IPv6 address.
    #[error("{0:?} does not start with an IPv6 address")]
    Address(String),
    /// The length is not one RFC 6052 defines.
    #[error("a NAT64 prefix is 32, 40, 48, 56, 64 or 96 bits long (RFC 6052); {0:?} is not")]
    Length(String),
    /// A /96 that sets bits 64 to 71.
    #[error("in {0:?}, bits 64 to 71 must be zero (RFC 6052)")]
    ReservedBits(String),
}

impl Nat64Prefix {
    /// The well-known prefix `64:ff9b::/96`.
    pub const WELL_KNOWN: Nat64Prefix = Nat64Prefix { prefix: Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), len: 96 };

    /// A prefix of `len` bits of `prefix` (its other bits are ignored). None if `len` is
    /// not one of RFC 6052's lengths, or a /96 sets bits 64 to 71 (which every NAT64
    /// address keeps zero).
    pub fn new(prefix: Ipv6Addr, len: u8) -> Option<Nat64Prefix> {
        if !LENGTHS.contains(&len) {
            return None;
        }
        let mut bytes = prefix.octets();
        bytes[usize::from(len / 8)..].fill(0);
        if bytes[8] != 0 {
            return None;
        }
        Some(Nat64Prefix { prefix: Ipv6Addr::from(bytes), len })
    }

    /// The IPv6 address that reaches `v4` through this prefix's NAT64 (RFC 6052 §2.2: the
    /// IPv4 bytes follow the prefix, skipping bits 64 to 71).
    pub fn synthesize(&self, v4: Ipv4Addr) -> Ipv6Addr {
        let mut bytes = self.prefix.octets();
        let mut at = usize::from(self.len / 8);
        for b in v4.octets() {
            if at == 8 {
                at += 1;
            }
            bytes[at] = b;
            at += 1;
        }
        Ipv6Addr::from(bytes)
    }

    /// The IPv4 address `v6` embeds under this prefix, if it is under it.
    pub fn extract(&self, v6: Ipv6Addr) -> Option<Ipv4Addr> {
        let bytes = v6.octets();
        let whole = usize::from(self.len / 8);
        if bytes[..whole] != self.prefix.octets()[..whole] {
            return None;
        }
        let mut out = [0u8; 4];
        let mut at = whole;
        for o in &mut out {
            if at == 8 {
                at += 1;
            }
            *o = bytes[at];
            at += 1;
        }
        Some(Ipv4Addr::from(out))
    }

    /// The prefix of an address DNS64 synthesized for `ipv4only.arpa` (RFC 7050 §3): the
    /// one under which it embeds a well-known address. Longest prefixes are tried first.
    pub fn from_synthesized(v6: Ipv6Addr) -> Option<Nat64Prefix> {
        LENGTHS.iter().rev().find_map(|&len| {
            let prefix = Nat64Prefix::new(v6, len)?;
            let embedded = prefix.extract(v6)?;
            (WELL_KNOWN.contains(&embedded) && prefix.synthesize(embedded) == v6).then_some(prefix)
        })
    }
}

/// The NAT64 prefix of the network the system resolver asks, found as RFC 7050 says
/// (see the module docs); None when `ipv4only.arpa` resolves to no synthesized address
/// (no DNS64: the network has IPv4, or no NAT64) or does not resolve.
pub async fn discover_nat64_prefix() -> Option<Nat64Prefix> {
    let addrs = tokio::net::lookup_host(("ipv4only.arpa", 0)).await.ok()?;
    addrs
        .filter_map(|a| match a.ip() {
            std::net::IpAddr::V6(v6) => Nat64Prefix::from_synthesized(v6),
            std::net::IpAddr::V4(_) => None,
        })
        .next()
}

impl fmt::Display for Nat64Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.prefix, self.len)
    }
}

impl FromStr for Nat64Prefix {
    type Err = Nat64PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (addr, len) = t.split_once('/').ok_or_else(|| Nat64PrefixError::Form(t.into()))?;
        let addr: Ipv6Addr = addr.parse().map_err(|_| Nat64PrefixError::Address(t.into()))?;
        let len: u8 = len.parse().map_err(|_| Nat64PrefixError::Length(t.into()))?;
        if !LENGTHS.contains(&len) {
            return Err(Nat64PrefixError::Length(t.into()));
        }
        Nat64Prefix::new(addr, len).ok_or_else(|| Nat64PrefixError::ReservedBits(t.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6052 §2.4's examples: 192.0.2.33 under each prefix length.
    #[test]
    fn synthesis_follows_rfc_6052s_examples() {
        let v4 = Ipv4Addr::new(192, 0, 2, 33);
        for (prefix, want) in [
            ("2001:db8::/32", "2001:db8:c000:221::"),
            ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
            ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
            ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
            ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
            ("2001:db8:122:344::/96", "2001:db8:122:344::c000:221"),
            ("64:ff9b::/96", "64:ff9b::c000:221"),
        ] {
            let p: Nat64Prefix = prefix.parse().unwrap();
            let want: Ipv6Addr = want.parse().unwrap();
            assert_eq!(p.synthesize(v4), want, "{prefix}");
            assert_eq!(p.extract(want), Some(v4), "{prefix}");
            assert_eq!(p.to_string(), prefix);
        }
        assert_eq!(Nat64Prefix::WELL_KNOWN, "64:ff9b::/96".parse().unwrap());
    }

    #[test]
    fn a_prefix_is_found_in_a_synthesized_ipv4only_arpa_address() {
        for prefix in ["64:ff9b::/96", "2001:db8:122:344::/64", "2001:db8::/32", "2001:db8:122:300::/56"] {
            let p: Nat64Prefix = prefix.parse().unwrap();
            for wka in WELL_KNOWN {
                assert_eq!(Nat64Prefix::from_synthesized(p.synthesize(wka)), Some(p), "{prefix}");
            }
        }
        assert_eq!(Nat64Prefix::from_synthesized("2001:db8::1".parse().unwrap()), None);
        assert_eq!(Nat64Prefix::from_synthesized(Nat64Prefix::WELL_KNOWN.synthesize(Ipv4Addr::new(192, 0, 2, 1))), None);
    }

    #[test]
    fn bad_prefixes_are_refused_saying_why() {
        assert!(matches!("64:ff9b::".parse::<Nat64Prefix>(), Err(Nat64PrefixError::Form(_))));
        assert!(matches!("192.0.2.0/96".parse::<Nat64Prefix>(), Err(Nat64PrefixError::Address(_))));
        assert!(matches!("64:ff9b::/80".parse::<Nat64Prefix>(), Err(Nat64PrefixError::Length(_))));
        assert!(matches!("64:ff9b::/x".parse::<Nat64Prefix>(), Err(Nat64PrefixError::Length(_))));
        assert!(matches!("2001:db8:0:0:ff00::/96".parse::<Nat64Prefix>(), Err(Nat64PrefixError::ReservedBits(_))));
        // Shorter prefixes end before those bits; what follows the prefix is ignored.
        assert_eq!("2001:db8:0:0:ff00::/64".parse::<Nat64Prefix>().unwrap().to_string(), "2001:db8::/64");
    }
}
