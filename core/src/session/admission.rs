//! Who may open what on a listening endpoint, decided before any work is spent on them.
//!
//! A listener faces strangers. Three things bound what they can make it do:
//!
//! - **Openings** (TCP connections whose opening exchange is still being read) are capped
//!   per source and in total. When the total is full, an old opening is dropped to make
//!   room rather than the newest refused: the oldest one of the source that holds the most.
//!   An honest client sends its opening right after connecting and holds one or two at a
//!   time, while a flood holds many per source: so the flood's connections are the ones
//!   that go, and an attacker needs more sources than the pool has places to push out an
//!   honest opening. JOINs share this pool only until their few bytes are read, so a flood
//!   of connections cannot keep flows from resuming.
//! - **Handshakes** (the expensive Diffie-Hellman work of a new flow) are rate-limited per
//!   source by a token bucket. TCP's own handshake already proves the source address, so
//!   no cookie round trip is needed to make the limit stick to the real sender.
//! - **Replays.** Each initiator key's handshakes carry growing timestamps; the latest seen
//!   per key is kept (bounded), and a first message whose timestamp is not above it is a
//!   replay: it creates no flow. An honest initiator whose clock went backwards is told the
//!   latest timestamp in a sealed refusal and retries above it (a replayer cannot: it does
//!   not hold the initiator's key).
//! - **Flows** per peer key and in total are capped, so one key cannot take every slot.
//!
//! Everything here is plain state with time passed in; the runtime asks and obeys.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

/// The limits of [`Admission`]. The defaults suit a phone or a small server.
#[derive(Debug, Clone)]
pub(crate) struct AdmissionLimits {
    /// Openings being read at once, in total.
    pub(crate) openings: usize,
    /// Openings being read at once from one source (an IPv4 address or an IPv6 /64).
    pub(crate) openings_per_source: usize,
    /// New-flow handshakes one source may start in a burst...
    pub(crate) handshake_burst: u32,
    /// ...and per second after that.
    pub(crate) handshakes_per_sec: u32,
    /// Live flows with one peer key.
    pub(crate) flows_per_peer: usize,
    /// Live flows in total.
    pub(crate) flows: usize,
    /// Initiator keys whose latest handshake timestamp is remembered.
    pub(crate) remembered_keys: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        AdmissionLimits {
            openings: 256,
            openings_per_source: 32,
            handshake_burst: 64,
            handshakes_per_sec: 32,
            flows_per_peer: 512,
            flows: 8192,
            remembered_keys: 16_384,
        }
    }
}

/// Why an incoming subflow or flow was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AdmissionRefusal {
    #[error("{0} subflows from this source are already opening")]
    SourceOpenings(usize),
    #[error("more than {burst} new flows in a burst (then {per_sec}/s) from this source")]
    HandshakeRate { burst: u32, per_sec: u32 },
    #[error("a replayed handshake (timestamp {offered}, this key's latest is {latest})")]
    Replayed { offered: u64, latest: u64 },
    #[error("{0} flows with this peer key are open")]
    PeerFlows(usize),
    #[error("{0} flows are open")]
    Flows(usize),
}

/// Identifies an opening to the runtime (to drop it when it is evicted).
pub(crate) type OpeningId = u64;

/// The admission state of one endpoint (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Admission {
    limits: AdmissionLimits,
    next_opening: OpeningId,
    /// Openings by id (ids grow, so the first is the oldest), with their source.
    openings: BTreeMap<OpeningId, Source>,
    per_source: HashMap<Source, usize>,
    buckets: HashMap<Source, Bucket>,
    latest: HashMap<[u8; 32], u64>,
    /// The highest timestamp among forgotten keys: a key not remembered must beat it.
    forgotten_floor: u64,
    flows_per_peer: HashMap<[u8; 32], usize>,
    flows: usize,
}

/// A source address, IPv6 cut to its /64 (one subscriber's block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Source(u128);

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(u32::from(v4) as u128),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(u32::from(v4) as u128),
                None => Source((u128::from(v6) >> 64 << 64) | 1 << 32),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Duration,
}

impl Admission {
    pub(crate) fn new(limits: AdmissionLimits) -> Admission {
        Admission { limits, ..Admission::default() }
    }

    /// A TCP connection from `source` was accepted. Returns its id and, when the pool was
    /// full, the opening to drop for it.
    pub(crate) fn opening(&mut self, source: IpAddr) -> Result<(OpeningId, Option<OpeningId>), AdmissionRefusal> {
        let source = Source::from(source);
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.limits.openings_per_source {
            return Err(AdmissionRefusal::SourceOpenings(from_source));
        }
        let id = self.next_opening;
        self.next_opening += 1;
        self.openings.insert(id, source);
        *self.per_source.entry(source).or_default() += 1;
        let evicted = if self.openings.len() > self.limits.openings {
            // The newcomer counts: a source that floods makes room from its own.
            let most = self.per_source.values().copied().max().unwrap_or(0);
            let victim = self.openings.iter().find(|(_, s)| self.per_source.get(s) == Some(&most)).map(|(&id, _)| id);
            victim.inspect(|&id| self.opening_done(id))
        } else {
            None
        };
        Ok((id, evicted))
    }

    /// The opening `id` was read (or failed, or was dropped): it leaves the pool.
    pub(crate) fn opening_done(&mut self, id: OpeningId) {
        let Some(source) = self.openings.remove(&id) else { return };
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// Openings being read now.
    #[cfg(test)]
    pub(crate) fn openings(&self) -> usize {
        self.openings.len()
    }

    /// `source` wants to start a new-flow handshake at `now` (any monotonic clock).
    pub(crate) fn handshake(&mut self, source: IpAddr, now: Duration) -> Result<(), AdmissionRefusal> {
        let (burst, per_sec) = (self.limits.handshake_burst, self.limits.handshakes_per_sec);
        if self.buckets.len() > 4 * self.limits.openings {
            // Full buckets carry no information: forget them, so the map stays bounded.
            let full = f64::from(burst);
            self.buckets.retain(|_, b| b.tokens + (now.saturating_sub(b.at)).as_secs_f64() * f64::from(per_sec) < full);
        }
        let bucket = self.buckets.entry(Source::from(source)).or_insert(Bucket { tokens: f64::from(burst), at: now });
        let refill = now.saturating_sub(bucket.at).as_secs_f64() * f64::from(per_sec);
        bucket.tokens = (bucket.tokens + refill).min(f64::from(burst));
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(AdmissionRefusal::HandshakeRate { burst, per_sec });
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// The handshake of `key` carries `timestamp`: fresh (remembered as the latest), or a
    /// replay (refused with the latest, for an honest initiator to retry above).
    pub(crate) fn fresh(&mut self, key: &[u8; 32], timestamp: u64) -> Result<(), AdmissionRefusal> {
        let latest = self.latest.get(key).copied().unwrap_or(self.forgotten_floor);
        if timestamp <= latest {
            return Err(AdmissionRefusal::Replayed { offered: timestamp, latest });
        }
        if !self.latest.contains_key(key) && self.latest.len() >= self.limits.remembered_keys {
            // Forget the key with the oldest handshake; anything it sent before is covered
            // by the floor from now on.
            if let Some((&oldest, &ts)) = self.latest.iter().min_by_key(|(_, &ts)| ts) {
                self.latest.remove(&oldest);
                self.forgotten_floor = self.forgotten_floor.max(ts);
            }
        }
        self.latest.insert(*key, timestamp);
        Ok(())
    }

    /// A flow with `peer` is about to start: counted, or refused over a cap.
    pub(crate) fn flow_started(&mut self, peer: &[u8; 32]) -> Result<(), AdmissionRefusal> {
        if self.flows >= self.limits.flows {
            return Err(AdmissionRefusal::Flows(self.flows));
        }
        let n = self.flows_per_peer.entry(*peer).or_default();
        if *n >= self.limits.flows_per_peer {
            return Err(AdmissionRefusal::PeerFlows(*n));
        }
        *n += 1;
        self.flows += 1;
        Ok(())
    }

    /// A flow counted by [`flow_started`](Self::flow_started) ended.
    pub(crate) fn flow_ended(&mut self, peer: &[u8; 32]) {
        if let Some(n) = self.flows_per_peer.get_mut(peer) {
            *n -= 1;
            if *n == 0 {
                self.flows_per_peer.remove(peer);
            }
            self.flows -= 1;
        }
    }
}

/// The timestamp for this endpoint's next handshake: wall-clock nanoseconds, but always
/// above the previous one and above `at_least` (a responder's latest, after a refusal).
pub(crate) fn next_timestamp(previous: &std::sync::atomic::AtomicU64, at_least: u64) -> u64 {
    use std::sync::atomic::Ordering;
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64);
    let mut prev = previous.load(Ordering::Relaxed);
    loop {
        let next = wall.max(prev.saturating_add(1)).max(at_least.saturating_add(1));
        match previous.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(now) => prev = now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn small() -> AdmissionLimits {
        AdmissionLimits {
            openings: 4,
            openings_per_source: 2,
            handshake_burst: 3,
            handshakes_per_sec: 2,
            flows_per_peer: 2,
            flows: 3,
            remembered_keys: 2,
        }
    }

    #[test]
    fn a_full_opening_pool_drops_the_oldest_of_its_heaviest_source() {
        let mut a = Admission::new(small());
        let (honest, none) = a.opening(ip(1)).unwrap();
        assert_eq!(none, None);
        let (flood1, _) = a.opening(ip(2)).unwrap();
        let (flood2, _) = a.opening(ip(2)).unwrap();
        assert_eq!(a.opening(ip(2)), Err(AdmissionRefusal::SourceOpenings(2)));
        a.opening(ip(3)).unwrap();
        // Full: a newcomer takes the place of the heaviest source's oldest, not the
        // honest opening, though that one is older.
        let (_, evicted) = a.opening(ip(4)).unwrap();
        assert_eq!(evicted, Some(flood1));
        assert_eq!(a.openings(), 4);
        a.opening_done(flood1); // already gone: no effect
        assert_eq!(a.openings(), 4);
        let (_, evicted) = a.opening(ip(2)).unwrap();
        assert_eq!(evicted, Some(flood2));
        // Every source holds one now: the oldest goes.
        let (_, evicted) = a.opening(ip(5)).unwrap();
        assert_eq!(evicted, Some(honest));
    }

    #[test]
    fn ipv6_sources_are_counted_per_64() {
        let mut a = Admission::new(small());
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        a.opening(one).unwrap();
        a.opening(same_64).unwrap();
        assert!(a.opening(one).is_err());
        a.opening(other_64).unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(Source::from(mapped), Source::from(ip(1)));
        assert_ne!(Source::from(IpAddr::from([0u8, 0, 0, 1])), Source::from("::1".parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn handshakes_are_rate_limited_per_source() {
        let mut a = Admission::new(small());
        let t = Duration::from_secs(100);
        for _ in 0..3 {
            a.handshake(ip(1), t).unwrap();
        }
        assert!(matches!(a.handshake(ip(1), t), Err(AdmissionRefusal::HandshakeRate { .. })));
        a.handshake(ip(2), t).unwrap();
        // Half a second refills one token (2/s).
        a.handshake(ip(1), t + Duration::from_millis(500)).unwrap();
        assert!(a.handshake(ip(1), t + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn replayed_handshakes_are_refused_even_after_their_key_was_forgotten() {
        let mut a = Admission::new(small());
        let (k1, k2, k3) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        a.fresh(&k1, 10).unwrap();
        assert_eq!(a.fresh(&k1, 10), Err(AdmissionRefusal::Replayed { offered: 10, latest: 10 }));
        assert!(a.fresh(&k1, 9).is_err());
        a.fresh(&k1, 11).unwrap();
        a.fresh(&k2, 20).unwrap();
        // A third key: k1 (oldest handshake, 11) is forgotten, its replays still refused.
        a.fresh(&k3, 5).unwrap();
        assert_eq!(a.fresh(&k1, 11), Err(AdmissionRefusal::Replayed { offered: 11, latest: 11 }));
        a.fresh(&k1, 12).unwrap();
        assert!(a.fresh(&k2, 20).is_err());
    }

    #[test]
    fn flows_are_capped_per_peer_and_in_total() {
        let mut a = Admission::new(small());
        let (p, q) = ([1u8; 32], [2u8; 32]);
        a.flow_started(&p).unwrap();
        a.flow_started(&p).unwrap();
        assert_eq!(a.flow_started(&p), Err(AdmissionRefusal::PeerFlows(2)));
        a.flow_started(&q).unwrap();
        assert_eq!(a.flow_started(&q), Err(AdmissionRefusal::Flows(3)));
        a.flow_ended(&p);
        a.flow_started(&q).unwrap();
        a.flow_ended(&[9; 32]); // never counted: no effect
        assert_eq!(a.flow_started(&p), Err(AdmissionRefusal::Flows(3)));
    }

    #[test]
    fn timestamps_grow_and_beat_a_responders_latest() {
        let prev = std::sync::atomic::AtomicU64::new(0);
        let a = next_timestamp(&prev, 0);
        let b = next_timestamp(&prev, 0);
        assert!(b > a);
        let c = next_timestamp(&prev, u64::MAX / 2);
        assert_eq!(c, u64::MAX / 2 + 1);
    }
}
