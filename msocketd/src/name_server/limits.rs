//! Rate limits on registrations: a token bucket per client source and per signing key.
//!
//! A *source* is the client's IPv4 address, or the /64 prefix of its IPv6 address (one
//! host usually holds a whole /64, so counting single IPv6 addresses would limit
//! nothing). Each bucket holds up to `N` registrations and refills at `N` per minute, so
//! an honest phone that re-registers on every network change passes a burst of `N` at
//! once, while a flood from one source is held to `N` a minute.
//!
//! The per-source bucket is taken first, before any work; the per-key bucket only once the
//! record's signature verified, so nobody can spend another key's registrations by
//! sending garbage that names it.
//!
//! Memory is bounded: a bucket that has refilled is worth no more than a missing one and
//! is dropped by `Limiter::prune`; each table holds at most [`MAX_TRACKED`] buckets, and
//! when that many are all in use a new source or key is refused (rate limited) rather than
//! tracked. Every function takes the time, so tests need no sleeps.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most buckets kept per table (sources, keys).
pub const MAX_TRACKED: usize = 100_000;

/// Default registrations per minute (and burst) per source.
pub const REGISTRATIONS_PER_SOURCE: u32 = 60;
/// Default registrations per minute (and burst) per signing key.
pub const REGISTRATIONS_PER_KEY: u32 = 30;

/// How many registrations a source and a key may make: each a burst of that many, refilled
/// at that many a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Registrations per minute per source (IPv4 address or IPv6 /64); at least 1.
    pub per_source: u32,
    /// Registrations per minute per signing key; at least 1.
    pub per_key: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits { per_source: REGISTRATIONS_PER_SOURCE, per_key: REGISTRATIONS_PER_KEY }
    }
}

/// Where a request comes from, as far as limits are concerned: an IPv4 address or an IPv6
/// /64 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// The source of a client at `ip`.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Source(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// A token bucket of `capacity` tokens refilled at `capacity` per minute, kept as the
/// time it will be full again (the generic cell rate algorithm: exact, no floating point).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    full_at: Instant,
}

impl Bucket {
    fn full(now: Instant) -> Bucket {
        Bucket { full_at: now }
    }

    /// Takes a token, or says how long until there is one.
    fn take(&mut self, capacity: u32, now: Instant) -> Result<(), Duration> {
        let per_token = Duration::from_secs(60) / capacity.max(1);
        let burst = per_token * (capacity.max(1) - 1);
        let full_at = self.full_at.max(now);
        let ahead = full_at - now;
        if ahead > burst {
            return Err(ahead - burst);
        }
        self.full_at = full_at + per_token;
        Ok(())
    }

    fn is_full(&self, now: Instant) -> bool {
        self.full_at <= now
    }
}

/// Buckets by some key, at most [`MAX_TRACKED`] of them.
#[derive(Debug)]
struct Buckets<K> {
    capacity: u32,
    table: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Copy> Buckets<K> {
    fn new(capacity: u32) -> Self {
        Buckets { capacity: capacity.max(1), table: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Bucket>> {
        // Every operation leaves the map consistent; a panic elsewhere cannot break it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, key: K, now: Instant, limit: usize) -> Result<(), Duration> {
        let mut table = self.lock();
        if !table.contains_key(&key) && table.len() >= limit {
            prune(&mut table, now);
            if table.len() >= limit {
                return Err(Duration::from_secs(1));
            }
        }
        table.entry(key).or_insert_with(|| Bucket::full(now)).take(self.capacity, now)
    }
}

fn prune<K>(table: &mut HashMap<K, Bucket>, now: Instant) {
    table.retain(|_, bucket| !bucket.is_full(now));
}

/// The registration buckets of one server.
#[derive(Debug)]
pub(crate) struct Limiter {
    sources: Buckets<Source>,
    keys: Buckets<[u8; 32]>,
    limit: usize,
}

impl Limiter {
    pub(crate) fn new(limits: RateLimits) -> Limiter {
        Limiter { sources: Buckets::new(limits.per_source), keys: Buckets::new(limits.per_key), limit: MAX_TRACKED }
    }

    /// Takes one registration from `source`'s bucket.
    pub(crate) fn register_from(&self, source: Source, now: Instant) -> Result<(), Duration> {
        self.sources.take(source, now, self.limit)
    }

    /// Takes one registration from `key`'s bucket (call once the record's signature
    /// verified).
    pub(crate) fn register_by(&self, key: &[u8; 32], now: Instant) -> Result<(), Duration> {
        self.keys.take(*key, now, self.limit)
    }

    /// Drops the buckets that have refilled.
    pub(crate) fn prune(&self, now: Instant) {
        prune(&mut self.sources.lock(), now);
        prune(&mut self.keys.lock(), now);
    }

    /// How many buckets are kept (sources, keys).
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> (usize, usize) {
        (self.sources.lock().len(), self.keys.lock().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_sources_are_their_64_prefix_and_mapped_ipv4_is_ipv4() {
        assert_eq!(Source::of(ip("2001:db8:1:2:aaaa::1")), Source::of(ip("2001:db8:1:2:bbbb::9")));
        assert_ne!(Source::of(ip("2001:db8:1:2::1")), Source::of(ip("2001:db8:1:3::1")));
        assert_eq!(Source::of(ip("::ffff:192.0.2.1")), Source::of(ip("192.0.2.1")));
        assert_ne!(Source::of(ip("192.0.2.1")), Source::of(ip("192.0.2.2")));
        assert_eq!(Source::of(ip("2001:db8:1:2:aaaa::1")).to_string(), "2001:db8:1:2::/64");
        assert_eq!(Source::of(ip("192.0.2.1")).to_string(), "192.0.2.1");
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let limiter = Limiter::new(RateLimits { per_source: 10, per_key: 3 });
        let t0 = Instant::now();
        let phone = Source::of(ip("192.0.2.1"));
        for i in 0..10 {
            assert_eq!(limiter.register_from(phone, t0), Ok(()), "registration {i} of the burst");
        }
        // The 11th waits for a token: 6 s at 10 a minute.
        assert_eq!(limiter.register_from(phone, t0), Err(Duration::from_secs(6)));
        // Another source is not affected.
        assert_eq!(limiter.register_from(Source::of(ip("192.0.2.2")), t0), Ok(()));
        // Half way, still refused with the rest of the wait; then one token, not two.
        assert_eq!(limiter.register_from(phone, t0 + Duration::from_secs(3)), Err(Duration::from_secs(3)));
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(limiter.register_from(phone, t1), Ok(()));
        assert!(limiter.register_from(phone, t1).is_err());
        // Keys have buckets of their own.
        let key = [7; 32];
        for _ in 0..3 {
            assert_eq!(limiter.register_by(&key, t0), Ok(()));
        }
        assert_eq!(limiter.register_by(&key, t0), Err(Duration::from_secs(20)));
        assert_eq!(limiter.register_by(&[8; 32], t0), Ok(()));
    }

    #[test]
    fn refilled_buckets_are_forgotten_and_the_tables_are_bounded() {
        let mut limiter = Limiter::new(RateLimits { per_source: 2, per_key: 2 });
        limiter.limit = 3;
        let t0 = Instant::now();
        for last in 1..=3u8 {
            limiter.register_from(Source::of(IpAddr::from([192, 0, 2, last])), t0).unwrap();
        }
        // A fourth source while three buckets are in use: refused, not tracked.
        let fourth = Source::of(ip("192.0.2.4"));
        assert_eq!(limiter.register_from(fourth, t0), Err(Duration::from_secs(1)));
        assert_eq!(limiter.tracked(), (3, 0));
        // A minute later the three have refilled: they make room.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(limiter.register_from(fourth, later), Ok(()));
        assert_eq!(limiter.tracked(), (1, 0));
        limiter.prune(later + Duration::from_secs(60));
        assert_eq!(limiter.tracked(), (0, 0));
    }
}
