//! What the relay holds, and for how long: [`RelayLimits`], the count of open
//! connections per client source ([`Admission`]) and the optional rate limit on dials
//! ([`DialRate`]).
//!
//! A *source* is an IPv4 address or an IPv6 /64 (the name server's [`Source`]): one host
//! usually holds a whole /64, so counting single IPv6 addresses would limit nothing.
//! Every table here holds one entry per source with something open (or, for the rate
//! limit, at most [`MAX_TRACKED`] buckets), so memory is bounded by the limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use crate::name_server::Source;

/// Default for [`RelayLimits::handshake_timeout`].
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`RelayLimits::dial_timeout`].
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`RelayLimits::control_idle`].
pub const CONTROL_IDLE: Duration = Duration::from_secs(600);
/// Default for [`RelayLimits::idle_timeout`].
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default for [`RelayLimits::registrations_per_key`].
pub const REGISTRATIONS_PER_KEY: usize = 4;
/// Default for [`RelayLimits::max_registrations`].
pub const MAX_REGISTRATIONS: usize = 100_000;
/// Default for [`RelayLimits::max_splices`].
pub const MAX_SPLICES: usize = 100_000;
/// Default for [`RelayLimits::max_splices_per_source`].
pub const SPLICES_PER_SOURCE: usize = 1024;
/// Default for [`RelayLimits::max_pending_dials`].
pub const MAX_PENDING_DIALS: usize = 10_000;
/// Default for [`RelayLimits::max_pending_per_key`].
pub const PENDING_PER_KEY: usize = 64;
/// Default for [`RelayLimits::max_pending_per_source`].
pub const PENDING_PER_SOURCE: usize = 256;
/// Default for [`RelayLimits::max_connections`]: room for every splice (two connections
/// each), every registration, and connections still in their handshake.
pub const MAX_CONNECTIONS: usize = 2 * MAX_SPLICES + MAX_REGISTRATIONS + 10_000;
/// Default for [`RelayLimits::max_connections_per_source`].
pub const CONNECTIONS_PER_SOURCE: usize = 4096;
/// Default for [`RelayLimits::splice_buffer`].
pub const SPLICE_BUFFER: usize = 64 * 1024;
/// The smallest splice buffer: one page.
pub const MIN_SPLICE_BUFFER: usize = 4096;
/// The largest splice buffer (Linux's default `fs.pipe-max-size`).
pub const MAX_SPLICE_BUFFER: usize = 1024 * 1024;
/// The longest timeout accepted (a year: longer ones mean "never", and would overflow
/// the clock's arithmetic).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
/// Most dial rate buckets kept; beyond this a new source is refused `RateLimited`.
pub const MAX_TRACKED: usize = 100_000;

/// The relay's caps and timeouts. Every count is at least 1 ([`RelayLimits::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// How long a new connection may take to send its header and first message (and a
    /// listener its signed registration).
    pub handshake_timeout: Duration,
    /// How long a client's dial waits for the listener's ACCEPT before `NoAnswer`.
    pub dial_timeout: Duration,
    /// A control connection that sends nothing (not even a PING or PONG) for this long is
    /// closed.
    pub control_idle: Duration,
    /// A splice with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once, of every kind.
    pub max_connections: usize,
    /// Connections open at once from one source.
    pub max_connections_per_source: usize,
    /// Control connections registered at once.
    pub max_registrations: usize,
    /// Control connections registered at once for one listener key; a newer one replaces
    /// the oldest.
    pub registrations_per_key: usize,
    /// Dials waiting for their listener's ACCEPT, in all.
    pub max_pending_dials: usize,
    /// Dials waiting, per listener key.
    pub max_pending_per_key: usize,
    /// Dials waiting, per client source.
    pub max_pending_per_source: usize,
    /// Splices at once (dials waiting count as the splices they will become).
    pub max_splices: usize,
    /// Splices at once per client source (dials waiting included).
    pub max_splices_per_source: usize,
    /// Dials per minute (and burst) from one client source; 0: no rate limit.
    pub dials_per_source: u32,
    /// Bytes buffered per direction of a splice (the size of its pipe on Linux; of its
    /// copy buffer, while bytes move, elsewhere). Between [`MIN_SPLICE_BUFFER`] and
    /// [`MAX_SPLICE_BUFFER`].
    pub splice_buffer: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            dial_timeout: DIAL_TIMEOUT,
            control_idle: CONTROL_IDLE,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_connections_per_source: CONNECTIONS_PER_SOURCE,
            max_registrations: MAX_REGISTRATIONS,
            registrations_per_key: REGISTRATIONS_PER_KEY,
            max_pending_dials: MAX_PENDING_DIALS,
            max_pending_per_key: PENDING_PER_KEY,
            max_pending_per_source: PENDING_PER_SOURCE,
            max_splices: MAX_SPLICES,
            max_splices_per_source: SPLICES_PER_SOURCE,
            dials_per_source: 0,
            splice_buffer: SPLICE_BUFFER,
        }
    }
}

/// A limit that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("relay limit {name}: {reason}")]
pub struct LimitError {
    /// The field (as the command line spells it).
    pub name: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl RelayLimits {
    /// Checks that every count is at least 1, every timeout above zero and at most
    /// [`MAX_TIMEOUT`], and the splice buffer within bounds.
    pub fn check(&self) -> Result<(), LimitError> {
        for (name, n) in [
            ("max-connections", self.max_connections),
            ("max-connections-per-source", self.max_connections_per_source),
            ("max-registrations", self.max_registrations),
            ("registrations-per-key", self.registrations_per_key),
            ("max-pending-dials", self.max_pending_dials),
            ("max-pending-per-key", self.max_pending_per_key),
            ("max-pending-per-source", self.max_pending_per_source),
            ("max-splices", self.max_splices),
            ("max-splices-per-source", self.max_splices_per_source),
        ] {
            if n == 0 {
                return Err(LimitError { name, reason: "must be at least 1".into() });
            }
        }
        for (name, t) in [
            ("handshake-timeout", self.handshake_timeout),
            ("dial-timeout", self.dial_timeout),
            ("control-idle", self.control_idle),
            ("idle-timeout", self.idle_timeout),
        ] {
            if t.is_zero() {
                return Err(LimitError { name, reason: "must be longer than 0".into() });
            }
            if t > MAX_TIMEOUT {
                return Err(LimitError { name, reason: "must be at most 365d".into() });
            }
        }
        if !(MIN_SPLICE_BUFFER..=MAX_SPLICE_BUFFER).contains(&self.splice_buffer) {
            return Err(LimitError {
                name: "splice-buffer",
                reason: format!(
                    "{} bytes is outside {MIN_SPLICE_BUFFER}..={MAX_SPLICE_BUFFER}",
                    self.splice_buffer
                ),
            });
        }
        Ok(())
    }

    /// File descriptors the relay may hold at its limits: one per connection and, on
    /// Linux, a pipe (two descriptors) per direction of every splice.
    pub fn descriptors_needed(&self) -> u64 {
        let pipes = if cfg!(target_os = "linux") { 4 } else { 0 };
        self.max_connections as u64 + pipes * self.max_splices as u64 + 64
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Crowded {
    #[error("{from} has {open} connections open, the most one source may")]
    Source { from: Source, open: usize },
    #[error("the relay holds its maximum of {0} connections")]
    Full(usize),
}

#[derive(Debug, Default)]
struct Counts {
    per_source: HashMap<Source, usize>,
    total: usize,
}

/// Open connections, per source and in all.
#[derive(Debug)]
pub(crate) struct Admission {
    max: usize,
    per_source: usize,
    counts: Mutex<Counts>,
}

impl Admission {
    pub(crate) fn new(limits: &RelayLimits) -> Arc<Admission> {
        Arc::new(Admission {
            max: limits.max_connections,
            per_source: limits.max_connections_per_source,
            counts: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Every operation leaves the counts consistent; a panic elsewhere cannot break them.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `source`, or says why not.
    pub(crate) fn admit(self: &Arc<Self>, source: Source) -> Result<Admitted, Crowded> {
        let mut counts = self.lock();
        if counts.total >= self.max {
            return Err(Crowded::Full(self.max));
        }
        let open = counts.per_source.get(&source).copied().unwrap_or(0);
        if open >= self.per_source {
            return Err(Crowded::Source { from: source, open });
        }
        counts.per_source.insert(source, open + 1);
        counts.total += 1;
        Ok(Admitted { admission: Arc::clone(self), source })
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.lock().total
    }
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    source: Source,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.admission.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(open) = counts.per_source.get_mut(&self.source) {
            *open -= 1;
            if *open == 0 {
                counts.per_source.remove(&self.source);
            }
        }
    }
}

/// A token bucket per source: `rate` dials at once, refilled at `rate` a minute, kept as
/// the time it will be full again (no floating point). Rate 0 lets everything through.
#[derive(Debug)]
pub(crate) struct DialRate {
    rate: u32,
    full_at: Mutex<HashMap<Source, Instant>>,
    limit: usize,
}

impl DialRate {
    pub(crate) fn new(rate: u32) -> DialRate {
        DialRate { rate, full_at: Mutex::default(), limit: MAX_TRACKED }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Source, Instant>> {
        self.full_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one dial from `source`'s bucket; false if it is empty.
    pub(crate) fn take(&self, source: Source, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let per_dial = Duration::from_secs(60) / self.rate;
        let burst = per_dial * (self.rate - 1);
        let mut table = self.lock();
        if !table.contains_key(&source) && table.len() >= self.limit {
            table.retain(|_, full_at| *full_at > now);
            if table.len() >= self.limit {
                return false;
            }
        }
        let full_at = table.entry(source).or_insert(now);
        let from = (*full_at).max(now);
        if from - now > burst {
            return false;
        }
        *full_at = from + per_dial;
        true
    }

    /// Forgets the buckets that have refilled (they are worth no more than missing ones).
    pub(crate) fn prune(&self, now: Instant) {
        self.lock().retain(|_, full_at| *full_at > now);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(last: u8) -> Source {
        Source::of(std::net::IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn the_defaults_pass_and_zeroes_are_refused_by_name() {
        assert_eq!(RelayLimits::default().check(), Ok(()));
        let bad = RelayLimits { max_splices_per_source: 0, ..RelayLimits::default() };
        assert_eq!(bad.check().unwrap_err().name, "max-splices-per-source");
        let bad = RelayLimits { dial_timeout: Duration::ZERO, ..RelayLimits::default() };
        assert_eq!(bad.check().unwrap_err().name, "dial-timeout");
        let bad = RelayLimits { idle_timeout: Duration::from_secs(u64::MAX), ..RelayLimits::default() };
        assert_eq!(bad.check().unwrap_err().name, "idle-timeout");
        let bad = RelayLimits { splice_buffer: 100, ..RelayLimits::default() };
        assert_eq!(bad.check().unwrap_err().name, "splice-buffer");
        assert!(RelayLimits::default().descriptors_needed() > MAX_CONNECTIONS as u64);
    }

    #[test]
    fn connections_are_counted_per_source_and_in_all() {
        let limits = RelayLimits { max_connections: 3, max_connections_per_source: 2, ..RelayLimits::default() };
        let admission = Admission::new(&limits);
        let a1 = admission.admit(source(1)).unwrap();
        let a2 = admission.admit(source(1)).unwrap();
        assert!(matches!(admission.admit(source(1)), Err(Crowded::Source { open: 2, .. })));
        let b1 = admission.admit(source(2)).unwrap();
        assert_eq!(admission.admit(source(3)).unwrap_err(), Crowded::Full(3));
        drop(a1);
        let c1 = admission.admit(source(3)).unwrap();
        assert_eq!(admission.open(), 3);
        drop((a2, b1, c1));
        assert_eq!(admission.open(), 0);
        assert!(admission.lock().per_source.is_empty());
    }

    #[test]
    fn dials_are_rate_limited_per_source_when_asked() {
        let t0 = Instant::now();
        let open = DialRate::new(0);
        assert!((0..1000).all(|_| open.take(source(1), t0)));
        let mut rate = DialRate::new(6);
        for i in 0..6 {
            assert!(rate.take(source(1), t0), "dial {i} of the burst");
        }
        assert!(!rate.take(source(1), t0));
        assert!(rate.take(source(2), t0), "another source has its own bucket");
        // One dial every 10 s after the burst.
        assert!(!rate.take(source(1), t0 + Duration::from_secs(9)));
        assert!(rate.take(source(1), t0 + Duration::from_secs(10)));
        rate.prune(t0 + Duration::from_secs(120));
        assert_eq!(rate.tracked(), 0);
        // A full table refuses new sources until buckets refill.
        rate.limit = 1;
        assert!(rate.take(source(1), t0));
        assert!(!rate.take(source(2), t0));
        assert!(rate.take(source(2), t0 + Duration::from_secs(60)));
    }
}
