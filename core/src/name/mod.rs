//! Signed name records and the clients of the name services.
//!
//! A peer is reached by *name*, not by address: its addresses change every time the phone
//! moves, so it publishes a [`NameRecord`] (its keys, current addresses and relays) to a
//! name service and re-publishes whenever something changes. Whoever connects looks the
//! name up and learns where to go and which keys to expect in the handshake.
//!
//! The name service is trusted for *availability only*. Every record is signed by the
//! Ed25519 key it carries ([`SignedRecord`]), and every client verifies the signature, the
//! name and the expiry itself before using a record, so a lying or compromised server can
//! hide a record or serve an older one, but cannot point a name at someone else's keys.
//!
//! Ownership is first come, first served: the first registration binds a name to its
//! signing key, and later records for that name must be signed by the same key and carry a
//! strictly higher sequence number ([`check_update`]), until a grace period
//! ([`NAME_GRACE`]) after the key's last record expired. These rules live in one pure
//! function so the in-process store ([`MemoryNameService`]) and the durable server store
//! cannot drift apart.
//!
//! A client holding a flow to a name must learn quickly when that name's owner moves, so
//! services offer [`NameService::watch`]: a long poll that answers as soon as a newer
//! record is registered. Stores push the change through a [`ChangeNotifier`]; a service
//! that cannot push still works, through the trait's default implementation, which polls
//! [`NameService::lookup`].
//!
//! Services are used through the object-safe [`NameService`] trait; [`connect_url`] turns
//! a configuration string into one.

mod notify;
#[doc(hidden)]
pub mod protocol;
mod record;
mod tcp_client;
mod url;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

pub use notify::{ChangeNotifier, Subscription};
pub use record::{
    validate_name, NameRecord, SignedRecord, MAX_ADDRS, MAX_NAME_LEN, MAX_RELAYS, MAX_RELAY_LEN,
    RECORD_VERSION,
};
pub use tcp_client::TcpNameClient;
pub use url::{connect_url, DEFAULT_NAMES_URL};
pub(crate) use url::check_host_port;

use crate::wire::DecodeError;

/// What went wrong while publishing, looking up or checking a name record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// No record is registered under the name.
    #[error("name {0:?} is not registered")]
    NotFound(String),
    /// The name is not a valid msocket name.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The record's signature does not verify under the key it carries (or the record is
    /// not the one that was asked for).
    #[error("record signature does not verify")]
    BadSignature,
    /// A record with an equal or higher sequence number is already registered.
    #[error("stale record: sequence {offered} is not above the registered {current}")]
    Stale {
        /// The sequence number of the registered record.
        current: u64,
        /// The sequence number of the refused record.
        offered: u64,
    },
    /// The name is bound to another signing key.
    #[error("the name is registered to a different signing key")]
    KeyMismatch,
    /// The record's expiry time has passed.
    #[error("record has expired")]
    Expired,
    /// The record would live longer than name services allow: a record that never
    /// expires would hold its name for good.
    #[error("record lifetime over the maximum of {} s", .max.as_secs())]
    LifetimeTooLong {
        /// The longest lifetime allowed.
        max: Duration,
    },
    /// The name server refused a registration because this client (its address) or this
    /// signing key registered too often; it may be retried after `retry_after`.
    #[error("name server rate limit reached: retry in {} ms", .retry_after.as_millis())]
    RateLimited {
        /// How long to wait before registering again.
        retry_after: Duration,
    },
    /// The record's signing key already holds as many names as the name server allows.
    #[error("the signing key already holds {max} names, the most this name server allows")]
    QuotaExceeded {
        /// The most names one key may hold.
        max: u64,
    },
    /// The name server holds as many names as it may store: a new name is refused.
    #[error("the name server is full: it holds its maximum of {max} names")]
    ServerFull {
        /// The most names the server stores.
        max: u64,
    },
    /// The name server is at a limit on connections or parked watches (for this client's
    /// address, or in all); the message says which. Retry later.
    #[error("name server busy: {0}")]
    Busy(String),
    /// The exchange with the name server failed authentication: an answer was altered on
    /// the way, replayed from another connection, or did not come from an msocket name
    /// server. Never read as an answer.
    #[error("name server {server}: {reason} (tampered with on the way, or not an msocket name server)")]
    Unauthenticated {
        /// The server's address.
        server: String,
        /// What failed.
        reason: String,
    },
    /// The name server's key is not the one pinned for it (`host:port#FINGERPRINT`).
    #[error("name server {server} holds the key {found}, not the pinned {expected}")]
    ServerKeyMismatch {
        /// The server's address.
        server: String,
        /// The pinned fingerprint.
        expected: String,
        /// The fingerprint of the key the server proved it holds.
        found: String,
    },
    /// Bytes that are not a valid record or message, or a record over its bounds.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The name server could not be reached.
    #[error("name server {server} unreachable: {step} failed: {kind}")]
    Unreachable {
        /// The server's address.
        server: String,
        /// Which step of the exchange failed.
        step: ExchangeStep,
        /// How it failed (`UnexpectedEof`: the server closed the connection).
        kind: std::io::ErrorKind,
    },
    /// The name server did not answer in time.
    #[error("name server {server} did not answer within {after:?}")]
    Timeout {
        /// The server's address.
        server: String,
        /// The time allowed.
        after: Duration,
    },
    /// The name server refused the request for a reason not covered above.
    #[error("name server refused: {0}")]
    Refused(String),
    /// The record store failed.
    #[error("name store failure: {0}")]
    Store(String),
    /// A name service URL that cannot be used.
    #[error("bad name service URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A step of a request to a name server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExchangeStep {
    /// Connecting to it.
    Connect,
    /// Sending the request.
    Send,
    /// Receiving the response.
    Receive,
}

impl std::fmt::Display for ExchangeStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExchangeStep::Connect => "connect",
            ExchangeStep::Send => "send",
            ExchangeStep::Receive => "receive",
        })
    }
}

impl From<DecodeError> for NameError {
    fn from(e: DecodeError) -> Self {
        NameError::Malformed(e.to_string())
    }
}

/// The boxed future every [`NameService`] method returns (boxed so the trait stays
/// object-safe and can be shared as `Arc<dyn NameService>`).
pub type NameFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, NameError>> + Send + 'a>>;

/// A place where signed name records are published and looked up.
pub trait NameService: Send + Sync + std::fmt::Debug {
    /// Publishes a record (first registration binds the name to the record's signing key).
    fn register<'a>(&'a self, record: &'a SignedRecord) -> NameFuture<'a, ()>;
    /// Looks a name up. Implementations return only records whose signature, name and
    /// expiry they verified.
    fn lookup<'a>(&'a self, name: &'a str) -> NameFuture<'a, SignedRecord>;

    /// Waits up to `wait` for a record of `name` with a sequence number above
    /// `after_seq`: `Ok(Some(record))` as soon as there is one (at once if there already
    /// is), `Ok(None)` once `wait` has passed without one. A name with no record, or only
    /// an expired one, is "no record yet" and waits. Records are verified like
    /// [`lookup`](Self::lookup)'s. A zero `wait` checks once.
    ///
    /// The default implementation polls [`lookup`](Self::lookup) every
    /// [`WATCH_POLL_INTERVAL`], so services that cannot push changes need not implement
    /// it; the services in this crate push, and answer within moments of a registration.
    /// Lookup errors other than "not found" and "expired" end the watch with that error.
    fn watch<'a>(
        &'a self,
        name: &'a str,
        after_seq: u64,
        wait: Duration,
    ) -> NameFuture<'a, Option<SignedRecord>> {
        Box::pin(poll_watch(self, name, after_seq, wait))
    }

    /// [`watch`](Self::watch) from the local address `from`, for services reached over a
    /// connection: a phone's watch follows its best network, since one left on cellular
    /// after Wi-Fi came back would wake that radio at every renewal. The default ignores
    /// `from`.
    fn watch_from<'a>(
        &'a self,
        name: &'a str,
        after_seq: u64,
        wait: Duration,
        from: Option<IpAddr>,
    ) -> NameFuture<'a, Option<SignedRecord>> {
        let _ = from;
        self.watch(name, after_seq, wait)
    }
}

/// How often the default [`NameService::watch`] looks a name up again.
pub const WATCH_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long a name stays bound to its key after that key's record expired: a phone that
/// was offline (and so did not refresh its record) for up to this long gets its name back,
/// while a name given up for good is free after it.
pub const NAME_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest a registered record may live (its `expires` at most this far ahead of the
/// service's clock). Endpoints publish for an hour and refresh every half hour.
pub const MAX_RECORD_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The tunables of the registration rules ([`check_update`] uses the defaults, a name
/// server may set its own): how long a record may live, and how long a lapsed name stays
/// its key's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameRules {
    /// The longest a record may live ([`MAX_RECORD_LIFETIME`] by default).
    pub max_lifetime: Duration,
    /// How long a name stays bound to its key after its record expired ([`NAME_GRACE`]
    /// by default).
    pub grace: Duration,
}

impl Default for NameRules {
    fn default() -> Self {
        NameRules { max_lifetime: MAX_RECORD_LIFETIME, grace: NAME_GRACE }
    }
}

impl NameRules {
    /// Whether `record`'s name is free again at `now_unix`: its expiry plus the grace
    /// period has passed (a store may then delete it).
    pub fn is_lapsed(&self, record: &NameRecord, now_unix: u64) -> bool {
        now_unix >= record.expires.saturating_add(self.grace.as_secs())
    }

    /// [`check_update`] with these tunables.
    pub fn check_update(
        &self,
        current: Option<&SignedRecord>,
        offered: &SignedRecord,
        now_unix: u64,
    ) -> Result<(), NameError> {
        offered.verify(now_unix)?;
        if offered.record.expires > now_unix.saturating_add(self.max_lifetime.as_secs()) {
            return Err(NameError::LifetimeTooLong { max: self.max_lifetime });
        }
        let Some(current) = current else { return Ok(()) };
        if current.record.name != offered.record.name {
            return Err(NameError::Store(format!(
                "store compared a record for {:?} with one for {:?}",
                current.record.name, offered.record.name
            )));
        }
        let same_key = current.record.signing_key == offered.record.signing_key;
        if !same_key {
            // The name is its key's until the grace period after its record expired is over.
            if self.is_lapsed(&current.record, now_unix) {
                return Ok(());
            }
            return Err(NameError::KeyMismatch);
        }
        if offered.record.seq <= current.record.seq {
            return Err(NameError::Stale { current: current.record.seq, offered: offered.record.seq });
        }
        Ok(())
    }
}

/// The default watch: looks the name up until a newer record shows up or `wait` passes.
async fn poll_watch<S: NameService + ?Sized>(
    service: &S,
    name: &str,
    after_seq: u64,
    wait: Duration,
) -> Result<Option<SignedRecord>, NameError> {
    validate_name(name)?;
    let deadline = deadline_after(wait);
    loop {
        if let Some(record) = newer_than(service.lookup(name).await, after_seq)? {
            return Ok(Some(record));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep_until((now + WATCH_POLL_INTERVAL).min(deadline)).await;
    }
}

/// What a lookup's outcome means to a watch after `after_seq`: a newer record, nothing
/// yet (no record, an expired one, or one not above `after_seq`), or a real failure.
fn newer_than(
    lookup: Result<SignedRecord, NameError>,
    after_seq: u64,
) -> Result<Option<SignedRecord>, NameError> {
    match lookup {
        Ok(record) if record.record.seq > after_seq => Ok(Some(record)),
        Ok(_) | Err(NameError::NotFound(_)) | Err(NameError::Expired) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The instant `wait` from now; a `wait` too long to represent means "in a century".
fn deadline_after(wait: Duration) -> tokio::time::Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = tokio::time::Instant::now();
    now.checked_add(wait).or_else(|| now.checked_add(CENTURY)).unwrap_or(now)
}

/// The registration rules, shared by every store, with the default tunables
/// ([`NameRules`] sets others).
///
/// `offered` must verify at `now_unix`. If `current` holds a record for the name, the
/// offered one must be signed by the same key ([`NameError::KeyMismatch`]) and carry a
/// strictly higher sequence number ([`NameError::Stale`]).
///
/// An *expired* current record no longer binds the name: any key may then take it over,
/// so a name abandoned by its owner does not stay locked forever. The previous owner must
/// keep refreshing its record to keep the name. The same key, however, must still move
/// the sequence number forward even after expiry, so an older record of that key which
/// happens to expire later cannot be replayed over the newer one.
pub fn check_update(
    current: Option<&SignedRecord>,
    offered: &SignedRecord,
    now_unix: u64,
) -> Result<(), NameError> {
    NameRules::default().check_update(current, offered, now_unix)
}

/// Seconds since the Unix epoch by the system clock (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An in-process name service: a map behind a mutex, applying [`check_update`].
///
/// Nothing is persisted; it serves tests and `msocket demo`, where both ends live in one
/// process. Watches are pushed: every registration wakes the watchers of its name.
#[derive(Debug, Default)]
pub struct MemoryNameService {
    records: Mutex<HashMap<String, SignedRecord>>,
    changes: ChangeNotifier,
}

impl MemoryNameService {
    /// An empty service.
    pub fn new() -> Self {
        Self::default()
    }

    fn register_now(&self, offered: &SignedRecord, now: u64) -> Result<(), NameError> {
        let mut records = self.records.lock().map_err(|_| poisoned())?;
        check_update(records.get(&offered.record.name), offered, now)?;
        records.insert(offered.record.name.clone(), offered.clone());
        drop(records);
        self.changes.notify(&offered.record.name);
        Ok(())
    }

    fn lookup_now(&self, name: &str, now: u64) -> Result<SignedRecord, NameError> {
        validate_name(name)?;
        let found = {
            let records = self.records.lock().map_err(|_| poisoned())?;
            records.get(name).cloned()
        };
        let record = found.ok_or_else(|| NameError::NotFound(name.to_string()))?;
        record.verify(now)?;
        Ok(record)
    }
}

fn poisoned() -> NameError {
    NameError::Store("in-memory name table poisoned by a panic".into())
}

impl NameService for MemoryNameService {
    fn register<'a>(&'a self, record: &'a SignedRecord) -> NameFuture<'a, ()> {
        Box::pin(async move { self.register_now(record, unix_now()) })
    }

    fn lookup<'a>(&'a self, name: &'a str) -> NameFuture<'a, SignedRecord> {
        Box::pin(async move { self.lookup_now(name, unix_now()) })
    }

    /// Parks on the name's change notification; every check goes through the same
    /// verification as [`lookup`](NameService::lookup).
    fn watch<'a>(
        &'a self,
        name: &'a str,
        after_seq: u64,
        wait: Duration,
    ) -> NameFuture<'a, Option<SignedRecord>> {
        Box::pin(async move {
            validate_name(name)?;
            let deadline = deadline_after(wait);
            // Subscribe before checking, so a registration in between still wakes us.
            let mut changes = self.changes.subscribe(name);
            loop {
                if let Some(record) = newer_than(self.lookup_now(name, unix_now()), after_seq)? {
                    return Ok(Some(record));
                }
                if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                    return Ok(None);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    const NOW: u64 = 1_700_000_000;

    fn signed(id: &Identity, name: &str, seq: u64, expires: u64) -> SignedRecord {
        let public = id.public();
        let record = NameRecord::new(name, public, vec!["192.0.2.1:4000".parse().unwrap()], seq, expires);
        SignedRecord::sign(record, id).unwrap()
    }

    #[test]
    fn first_registration_needs_only_a_valid_record() {
        let a = Identity::from_seed([1; 32]);
        assert_eq!(check_update(None, &signed(&a, "alice", 1, NOW + 60), NOW), Ok(()));
        let mut forged = signed(&a, "alice", 1, NOW + 60);
        forged.record.seq = 2;
        assert_eq!(check_update(None, &forged, NOW), Err(NameError::BadSignature));
        assert_eq!(
            check_update(None, &signed(&a, "alice", 1, NOW - 1), NOW),
            Err(NameError::Expired)
        );
    }

    #[test]
    fn updates_need_the_same_key_and_a_higher_seq() {
        let a = Identity::from_seed([1; 32]);
        let b = Identity::from_seed([2; 32]);
        let current = signed(&a, "alice", 5, NOW + 60);
        assert_eq!(check_update(Some(&current), &signed(&a, "alice", 6, NOW + 60), NOW), Ok(()));
        assert_eq!(
            check_update(Some(&current), &signed(&a, "alice", 5, NOW + 60), NOW),
            Err(NameError::Stale { current: 5, offered: 5 })
        );
        assert_eq!(
            check_update(Some(&current), &signed(&a, "alice", 4, NOW + 60), NOW),
            Err(NameError::Stale { current: 5, offered: 4 })
        );
        assert_eq!(
            check_update(Some(&current), &signed(&b, "alice", 9, NOW + 60), NOW),
            Err(NameError::KeyMismatch)
        );
    }

    #[test]
    fn a_lapsed_name_stays_its_keys_for_the_grace_period_but_never_takes_the_seq_back() {
        let a = Identity::from_seed([1; 32]);
        let b = Identity::from_seed([2; 32]);
        let grace = NAME_GRACE.as_secs();
        let current = signed(&a, "alice", 5, NOW - grace);
        // The record expired a grace period ago: another key may take the name over.
        assert_eq!(check_update(Some(&current), &signed(&b, "alice", 1, NOW + 60), NOW), Ok(()));
        // An hour after it expired it is still its owner's: the takeover is refused and
        // the owner comes back.
        let lapsed = signed(&a, "alice", 5, NOW - 3600);
        assert_eq!(check_update(Some(&lapsed), &signed(&b, "alice", 1, NOW + 60), NOW), Err(NameError::KeyMismatch));
        assert_eq!(check_update(Some(&lapsed), &signed(&a, "alice", 6, NOW + 60), NOW), Ok(()));
        // The same key may not roll its own seq back.
        assert_eq!(
            check_update(Some(&current), &signed(&a, "alice", 3, NOW + 60), NOW),
            Err(NameError::Stale { current: 5, offered: 3 })
        );
        // One second before the grace period ended the name was still bound.
        assert_eq!(
            check_update(Some(&current), &signed(&b, "alice", 1, NOW + 60), NOW - 1),
            Err(NameError::KeyMismatch)
        );
    }

    #[tokio::test]
    async fn memory_service_applies_the_rules() {
        let svc: std::sync::Arc<dyn NameService> = std::sync::Arc::new(MemoryNameService::new());
        let a = Identity::from_seed([1; 32]);
        let b = Identity::from_seed([2; 32]);
        let far = unix_now() + 3600;

        assert_eq!(svc.lookup("alice").await, Err(NameError::NotFound("alice".into())));
        let first = signed(&a, "alice", 1, far);
        svc.register(&first).await.unwrap();
        assert_eq!(svc.lookup("alice").await.unwrap(), first);

        let second = signed(&a, "alice", 2, far);
        svc.register(&second).await.unwrap();
        assert_eq!(svc.lookup("alice").await.unwrap(), second);

        assert_eq!(svc.register(&first).await, Err(NameError::Stale { current: 2, offered: 1 }));
        assert_eq!(svc.register(&signed(&b, "alice", 3, far)).await, Err(NameError::KeyMismatch));
        assert!(matches!(svc.lookup("Alice").await, Err(NameError::InvalidName { .. })));
        // Refusals left the registered record alone.
        assert_eq!(svc.lookup("alice").await.unwrap(), second);
    }

    #[test]
    fn memory_service_does_not_serve_expired_records() {
        let svc = MemoryNameService::new();
        let a = Identity::from_seed([1; 32]);
        svc.register_now(&signed(&a, "alice", 1, NOW + 10), NOW).unwrap();
        assert!(svc.lookup_now("alice", NOW + 9).is_ok());
        assert_eq!(svc.lookup_now("alice", NOW + 10), Err(NameError::Expired));
    }

    /// A service that only looks up, so `watch` is the trait's polling default.
    #[derive(Debug, Default)]
    struct PollOnly(MemoryNameService);

    impl NameService for PollOnly {
        fn register<'a>(&'a self, record: &'a SignedRecord) -> NameFuture<'a, ()> {
            self.0.register(record)
        }
        fn lookup<'a>(&'a self, name: &'a str) -> NameFuture<'a, SignedRecord> {
            self.0.lookup(name)
        }
    }

    const LONG: Duration = Duration::from_secs(30);
    const SHORT: Duration = Duration::from_millis(200);

    /// The watch contract, for any service. `svc` starts empty.
    async fn watch_contract(svc: &dyn NameService) {
        let a = Identity::from_seed([1; 32]);
        let far = unix_now() + 3600;

        // No record yet: waits, and says "unchanged" once the wait is over.
        let started = tokio::time::Instant::now();
        assert_eq!(svc.watch("alice", 0, SHORT).await, Ok(None));
        assert!(started.elapsed() >= SHORT);

        // A newer record answers at once; one not above `after_seq` does not.
        let first = signed(&a, "alice", 1, far);
        svc.register(&first).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(svc.watch("alice", 0, LONG).await, Ok(Some(first.clone())));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(svc.watch("alice", 1, Duration::ZERO).await, Ok(None));

        // A registration during the wait answers it (the wait is long, so a watch that
        // returns the new record did not merely time out).
        let second = signed(&a, "alice", 2, far);
        let started = tokio::time::Instant::now();
        let (watched, registered) =
            tokio::join!(svc.watch("alice", 1, LONG), svc.register(&second));
        registered.unwrap();
        assert_eq!(watched, Ok(Some(second)));
        assert!(started.elapsed() < Duration::from_secs(5));

        assert!(matches!(svc.watch("Alice", 0, SHORT).await, Err(NameError::InvalidName { .. })));
    }

    #[tokio::test]
    async fn memory_service_watch_is_pushed() {
        let svc = MemoryNameService::new();
        watch_contract(&svc).await;
        // Every watch above has ended, so nothing is left subscribed.
        assert_eq!((svc.changes.watchers(), svc.changes.watched_names()), (0, 0));
    }

    #[tokio::test]
    async fn memory_service_watch_wakes_on_register_while_parked() {
        let svc = std::sync::Arc::new(MemoryNameService::new());
        let a = Identity::from_seed([1; 32]);
        let far = unix_now() + 3600;
        let watcher = {
            let svc = std::sync::Arc::clone(&svc);
            tokio::spawn(async move { svc.watch("alice", 0, LONG).await })
        };
        // Wait until the watch is parked on the name (a condition, not a fixed delay).
        while svc.changes.watchers() == 0 {
            tokio::task::yield_now().await;
        }
        let started = tokio::time::Instant::now();
        let first = signed(&a, "alice", 1, far);
        svc.register(&first).await.unwrap();
        assert_eq!(watcher.await.unwrap(), Ok(Some(first)));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(svc.changes.watchers(), 0);
    }

    #[tokio::test]
    async fn memory_service_watch_skips_expired_records() {
        let svc = MemoryNameService::new();
        let a = Identity::from_seed([1; 32]);
        svc.register_now(&signed(&a, "alice", 1, NOW + 10), NOW).unwrap();
        // The record expired long ago by the real clock: there is no live record yet.
        assert_eq!(svc.watch("alice", 0, Duration::from_millis(50)).await, Ok(None));
    }

    #[tokio::test]
    async fn the_default_watch_polls_lookup() {
        watch_contract(&PollOnly::default()).await;
    }

    #[test]
    fn huge_waits_do_not_overflow() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            assert!(deadline_after(Duration::MAX) > tokio::time::Instant::now());
        });
    }
}
