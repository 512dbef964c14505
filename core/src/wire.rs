//! Checked reading of big-endian wire data.
//!
//! Every decoder in the crate reads untrusted bytes; `bytes::Buf` panics on underflow, so
//! decoders use this reader, which turns every short or oversized field into an error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::BufMut;

/// Why a decoder refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("input truncated while reading {0}")]
    Truncated(&'static str),
    /// A field holds a value the format does not allow.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// A length or count is over its bound.
    #[error("{0} too long")]
    TooLong(&'static str),
    /// Bytes were left over after the last field.
    #[error("trailing bytes after {0}")]
    Trailing(&'static str),
}

/// A cursor over untrusted input.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Errors unless everything was read.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(what))
        }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    /// A `u8`.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A `u16`-length-prefixed byte string of at most `max` bytes.
    pub fn short_bytes(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u16(what)? as usize;
        if len > max {
            return Err(DecodeError::TooLong(what));
        }
        self.bytes(len, what)
    }

    /// A `u16`-length-prefixed UTF-8 string of at most `max` bytes.
    pub fn short_str(&mut self, max: usize, what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.short_bytes(max, what)?).map_err(|_| DecodeError::Invalid(what))
    }

    /// A socket address as written by [`put_socket_addr`].
    pub fn socket_addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8("address family")? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>("IPv4 address")?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>("IPv6 address")?)),
            _ => return Err(DecodeError::Invalid("address family")),
        };
        Ok(SocketAddr::new(ip, self.u16("port")?))
    }
}

/// Writes a `u16`-length-prefixed byte string. The caller bounds `data` to `u16::MAX`.
pub fn put_short_bytes(out: &mut impl BufMut, data: &[u8]) {
    debug_assert!(data.len() <= u16::MAX as usize);
    out.put_u16(data.len() as u16);
    out.put_slice(data);
}

/// Writes a socket address: family (4 or 6), address, port.
pub fn put_socket_addr(out: &mut impl BufMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.put_u8(4);
            out.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.put_u8(6);
            out.put_slice(&ip.octets());
        }
    }
    out.put_u16(addr.port());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        let mut r = Reader::new(&[0, 5, 1, 2]);
        assert_eq!(r.short_bytes(10, "x"), Err(DecodeError::Truncated("x")));
        let mut r = Reader::new(&[0, 5, 1, 2, 3, 4, 5]);
        assert_eq!(r.short_bytes(4, "x"), Err(DecodeError::TooLong("x")));
    }

    #[test]
    fn socket_addrs_round_trip() {
        for a in ["127.0.0.9:80", "[::1]:7450"] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut out = Vec::new();
            put_socket_addr(&mut out, &addr);
            let mut r = Reader::new(&out);
            assert_eq!(r.socket_addr().unwrap(), addr);
            assert!(r.is_empty());
        }
    }
}
