//! The durable name service behind `msocketd name`.
//!
//! Records live in a [redb] file ([`store`]): one table from name to encoded
//! [`SignedRecord`], and two indexes (records by expiry, names per key). Each registration
//! is one write transaction that reads the current record, applies the rules
//! ([`NameRules::check_update`], with this server's grace period and longest lifetime),
//! the per-key quota and the cap on stored names, and stores the new one, so concurrent
//! registrations of a name are serialised by the database and the rules are checked
//! against what is actually stored. The transaction is committed with immediate
//! durability before the client hears `Ok`: a record acknowledged to a phone survives a
//! crash or `kill -9` of the server.
//!
//! Registrations cost a signature check and an `fsync`, and every stored name costs disk,
//! so they are limited ([`limits`]): a token bucket per client source (IPv4 address or
//! IPv6 /64) and per signing key, refused as `RateLimited` with the time to wait; at most
//! [`StoreLimits::names_per_key`] names per key (`QuotaExceeded`) and
//! [`StoreLimits::max_names`] names in all (`ServerFull`). Names that lapsed (their
//! record expired and the grace period after it passed) are deleted every
//! [`GC_INTERVAL`], and at once when a registration finds the store full.
//!
//! redb's calls block (a durable commit waits for `fsync`), so they run on tokio's
//! blocking pool rather than on the async workers, where a slow disk would stall every
//! other connection. Semaphores bound how many run at once, separately for lookups
//! ([`MAX_STORE_OPS`]), registrations ([`MAX_STORE_WRITES`]) and the store reads of
//! watches ([`MAX_WATCH_READS`]), so a flood of one kind cannot pile up blocking threads
//! or make the others wait.
//!
//! The network side speaks [`msocket::unstable::name_protocol`]: every connection is a
//! Noise channel authenticated by the server's key ([`NameServer::with_identity`];
//! `msocketd name` keeps it in a key file), so no one on the path can forge, alter or
//! replay an answer; requests carry ids and are answered in any order, so one connection
//! carries a client's lookups and all its watches at once (`connection.rs`). Every wait is bounded: a connection with nothing in
//! flight that sends nothing, or dribbles one request out, for [`IDLE_TIMEOUT`] is closed,
//! as is one whose answer cannot be written within [`WRITE_TIMEOUT`]. Malformed input
//! earns a `Refused(malformed)` answer and the end of that connection, never of the
//! process.
//!
//! Connections and parked watches are limited per client source and in all
//! ([`ConnectionLimits`], `admission.rs`). The accept loop never stops accepting: a
//! client over a limit is told `Busy` at once (a lookup once waited 69 s in the listen
//! backlog while a thousand parked watches, one connection each, held every slot), and a
//! full server closes the oldest connection of the source holding the most to admit a
//! newcomer from a source holding fewer.
//!
//! `Watch` is a long poll: a client holding a flow to a name parks a watch and hears
//! about a new record as soon as it is stored, instead of polling. The server acknowledges
//! a parked watch at once (`Watching`). Each successful registration fires a per-name
//! [`ChangeNotifier`] once its transaction is durably committed, so a woken watcher always
//! finds the record in the store. A watch is held at most [`MAX_WATCH_WAIT`]
//! (configurable), and a parked watch does not read the store or hold a store permit;
//! `Cancel` drops it, and so does its client closing the connection. At shutdown parked
//! watches are answered `Unchanged` and their connections closed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use msocket::name::{unix_now, ChangeNotifier, NameError, NameRules, SignedRecord};
use msocket::unstable::name_protocol::secure::ServerConnection;
use msocket::unstable::name_protocol::{Request, Response, CONNECTION_ID, MAX_WATCH_WAIT};
use msocket::{Identity, PublicIdentity};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How long, by default, a connection may stay silent (or take to deliver one request)
/// before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing one response may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once, by default ([`ConnectionLimits`]).
pub const MAX_CONNECTIONS: usize = admission::MAX_CONNECTIONS;
/// Most lookups in flight at once in the store (each holds a blocking thread).
pub const MAX_STORE_OPS: usize = 16;
/// Most registrations in flight at once in the store (they commit one after another).
pub const MAX_STORE_WRITES: usize = 4;
/// Most store reads for watches at once: watches never take the lookups' threads.
pub const MAX_WATCH_READS: usize = 8;
/// How long a refused connection may take to hear why.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Refused connections being told why at once; beyond this they are simply closed.
const MAX_REFUSALS: usize = 64;
/// How long shutdown waits for connections to finish their current request.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often lapsed names are deleted and refilled rate-limit buckets dropped.
pub const GC_INTERVAL: Duration = Duration::from_secs(600);

pub mod admission;
mod connection;
pub mod limits;
pub mod metrics;
pub mod store;

pub use admission::ConnectionLimits;
pub use connection::MAX_IN_FLIGHT;
pub use limits::{RateLimits, Source};
pub use metrics::NameMetrics;
pub use store::StoreLimits;

use admission::Admission;

use limits::Limiter;
use store::{Registered, Store};

/// Why the name server could not start.
#[derive(Debug, thiserror::Error)]
pub enum NameServerError {
    /// The database file could not be opened, created or initialised.
    #[error("cannot open name database {path}: {source}")]
    Open {
        /// The database file.
        path: String,
        /// What redb said.
        #[source]
        source: redb::Error,
    },
    /// No server key could be made (the system's random source failed).
    #[error("cannot make a name server key: {0}")]
    Key(String),
    /// The database's indexes could not be built.
    #[error("cannot index name database {path}: {reason}")]
    Index {
        /// The database file.
        path: String,
        /// What failed.
        reason: String,
    },
}

/// A name server: a record store and the TCP service in front of it.
#[derive(Debug)]
pub struct NameServer {
    /// The key the channel to every client is authenticated with.
    identity: Arc<Identity>,
    store: Store,
    limiter: Limiter,
    /// Blocking-pool permits: lookups, registrations, watches' reads.
    reads: Semaphore,
    writes: Semaphore,
    watch_reads: Semaphore,
    idle_timeout: Duration,
    watch_cap: Duration,
    admission: Arc<Admission>,
    /// Wakes parked watches; fired after each committed registration.
    changes: ChangeNotifier,
    metrics: NameMetrics,
}

impl NameServer {
    /// Opens the database at `path`, creating the file and its table if needed.
    /// Rules, limits and timeouts are the defaults until set with the `with_` methods;
    /// the server's key is a fresh one until set with [`Self::with_identity`].
    pub fn open(path: impl AsRef<Path>) -> Result<NameServer, NameServerError> {
        let identity = Identity::generate().map_err(|e| NameServerError::Key(e.to_string()))?;
        Ok(NameServer {
            identity: Arc::new(identity),
            store: Store::open(path.as_ref())?,
            limiter: Limiter::new(RateLimits::default()),
            reads: Semaphore::new(MAX_STORE_OPS),
            writes: Semaphore::new(MAX_STORE_WRITES),
            watch_reads: Semaphore::new(MAX_WATCH_READS),
            idle_timeout: IDLE_TIMEOUT,
            watch_cap: MAX_WATCH_WAIT,
            admission: Admission::new(ConnectionLimits::default()),
            changes: ChangeNotifier::new(),
            metrics: NameMetrics::default(),
        })
    }

    /// Sets how long a connection may stay silent, or take to deliver one request, before
    /// it is closed (default [`IDLE_TIMEOUT`]).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the longest a `Watch` is held before it is answered `Unchanged`, whatever the
    /// client asked for (default [`MAX_WATCH_WAIT`]).
    pub fn with_watch_cap(mut self, cap: Duration) -> Self {
        self.watch_cap = cap;
        self
    }

    /// Sets how many connections are served at once (default [`MAX_CONNECTIONS`]; at least
    /// 1), with a file-descriptor limit to match. A client's watches share one connection.
    pub fn with_max_connections(mut self, n: usize) -> Self {
        let limits = ConnectionLimits { max_connections: n, ..self.admission.limits };
        self.admission = Admission::new(limits);
        self
    }

    /// Sets the limits on connections and parked watches, in all and per client source
    /// (default [`ConnectionLimits::default`]).
    pub fn with_connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.admission = Admission::new(limits);
        self
    }

    /// How many connections are open right now (for monitoring and tests).
    pub fn open_connections(&self) -> usize {
        self.admission.connections()
    }

    /// Sets the server's key: clients authenticate the server by it, and may pin its
    /// fingerprint. `msocketd name` keeps it in a key file.
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Arc::new(identity);
        self
    }

    /// The server's public keys (their fingerprint is what clients pin).
    pub fn public_key(&self) -> PublicIdentity {
        self.identity.public()
    }

    /// Sets the grace period and the longest record lifetime (default
    /// [`NameRules::default`]).
    pub fn with_rules(mut self, rules: NameRules) -> Self {
        self.store.rules = rules;
        self
    }

    /// Sets the registration rate limits (default [`RateLimits::default`]).
    pub fn with_rate_limits(mut self, limits: RateLimits) -> Self {
        self.limiter = Limiter::new(limits);
        self
    }

    /// Sets the names-per-key quota and the cap on stored names (default
    /// [`StoreLimits::default`]).
    pub fn with_store_limits(mut self, limits: StoreLimits) -> Self {
        self.store.limits = limits;
        self
    }

    /// How many watches are parked right now (for monitoring and tests).
    pub fn parked_watches(&self) -> usize {
        self.changes.watchers()
    }

    /// How many names are stored (lapsed ones not yet deleted included). Blocking.
    pub fn stored_names(&self) -> Result<u64, NameError> {
        self.store.len()
    }

    /// How many names `key` holds (lapsed ones not yet deleted included). Blocking.
    pub fn names_of(&self, key: &[u8; 32]) -> Result<u64, NameError> {
        self.store.names_of(key)
    }

    /// Deletes every name that lapsed by `now_unix` (its record's expiry plus the grace
    /// period), in batches; returns how many. The server runs this every
    /// [`GC_INTERVAL`]. Blocking.
    pub fn collect_garbage(&self, now_unix: u64) -> Result<usize, NameError> {
        let mut total = 0;
        loop {
            let deleted = self.store.collect_garbage(now_unix, store::GC_BATCH)?;
            total += deleted;
            if deleted < store::GC_BATCH {
                return Ok(total);
            }
        }
    }

    /// Registers `offered` from `source` at `now` (Unix seconds): the source's rate limit,
    /// the key's (once the signature verified), then the store's rules and limits. Blocking.
    fn register_blocking(
        &self,
        offered: &SignedRecord,
        source: Source,
        now: u64,
    ) -> Result<Registered, NameError> {
        let at = std::time::Instant::now();
        self.limiter.register_from(source, at).map_err(|retry_after| NameError::RateLimited { retry_after })?;
        // The key's bucket only for records its key signed: nobody may spend another's.
        offered.verify(now)?;
        self.limiter
            .register_by(&offered.record.signing_key, at)
            .map_err(|retry_after| NameError::RateLimited { retry_after })?;
        self.store.register(offered, now)
    }

    /// The verified record registered under `name`. Blocking.
    fn lookup_blocking(&self, name: &str, now: u64) -> Result<SignedRecord, NameError> {
        self.store.lookup(name, now)
    }

    /// Runs `op` on the blocking pool with the current time, holding one of `permits`.
    async fn run_store<T: Send + 'static>(
        self: &Arc<Self>,
        permits: &Semaphore,
        op: impl FnOnce(&NameServer, u64) -> Result<T, NameError> + Send + 'static,
    ) -> Result<T, NameError> {
        let Ok(_permit) = permits.acquire().await else {
            return Err(NameError::Store("server is shutting down".into()));
        };
        let this = Arc::clone(self);
        match tokio::task::spawn_blocking(move || op(&this, unix_now())).await {
            Ok(result) => result,
            Err(join) => {
                tracing::error!(error = %join, "name store task failed");
                Err(NameError::Store("internal error".into()))
            }
        }
    }

    /// Answers a `Register` or a `Lookup` from `peer`. (Watches park: see
    /// `connection.rs`.)
    async fn handle(self: &Arc<Self>, request: Request, peer: SocketAddr) -> Response {
        self.metrics.request(match request {
            Request::Register(_) => metrics::RequestKind::Register,
            _ => metrics::RequestKind::Lookup,
        });
        let outcome = match request {
            Request::Register(record) => {
                let source = Source::of(peer.ip());
                self.run_store(&self.writes, move |this, now| {
                    let outcome = this.register_blocking(&record, source, now);
                    let r = &record.record;
                    match &outcome {
                        Ok(how) => {
                            tracing::info!(name = %r.name, seq = r.seq,
                                key = %r.public().fingerprint(), %source, ?how, "registered");
                            // Committed durably: watchers woken now will find it.
                            this.changes.notify(&r.name);
                        }
                        Err(e) => tracing::info!(name = %r.name, seq = r.seq, %source, error = %e,
                            "registration refused"),
                    }
                    outcome.map(|_| Response::Ok)
                })
                .await
            }
            Request::Lookup(name) => {
                self.run_store(&self.reads, move |this, now| {
                    let outcome = this.lookup_blocking(&name, now);
                    tracing::debug!(%name, found = outcome.is_ok(), "lookup");
                    outcome.map(Response::Record)
                })
                .await
            }
            Request::Watch { .. } | Request::Cancel => {
                Err(NameError::Store("a watch reached the plain request handler".into()))
            }
        };
        match outcome {
            Ok(response) => response,
            Err(NameError::NotFound(_)) => Response::NotFound,
            Err(e) => {
                self.metrics.refusal(&e);
                refusal_logged(&e)
            }
        }
    }

    /// Serves the protocol on `listener` until `shutdown` completes, then stops accepting,
    /// lets open connections finish their current request (up to [`SHUTDOWN_GRACE`]) and
    /// returns.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl std::future::Future) {
        let (stop_tx, stop_rx) = watch::channel(());
        let mut tasks = JoinSet::new();
        let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "name service listening");
        }
        tasks.spawn(Arc::clone(&self).collect_garbage_every(GC_INTERVAL, stop_rx.clone()));
        let tasks = crate::accept::accept_until(&listener, shutdown, "name", tasks, |stream, peer, tasks| {
            self.metrics.connection();
            match self.admission.connect(Source::of(peer.ip())) {
                Ok(admitted) => {
                    let this = Arc::clone(&self);
                    let admission = Arc::clone(&self.admission);
                    tasks.spawn(this.connection(stream, peer, stop_rx.clone(), admitted, admission));
                }
                Err(e) => {
                    self.metrics.refusal(&e);
                    tracing::info!(%peer, error = %e, "connection refused");
                    if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                        let identity = Identity::clone(&self.identity);
                        tasks.spawn(async move {
                            refuse_connection(stream, identity, &e).await;
                            drop(permit);
                        });
                    }
                }
            }
        })
        .await;
        tracing::info!(open_connections = self.admission.connections(), "name service shutting down");
        drop(listener);
        drop(stop_tx);
        crate::accept::drain(tasks, SHUTDOWN_GRACE, "name").await;
    }

    /// Deletes lapsed names and drops refilled rate-limit buckets now and every
    /// `interval`, until the server stops.
    async fn collect_garbage_every(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<()>) {
        loop {
            let this = Arc::clone(&self);
            let collected = tokio::task::spawn_blocking(move || {
                this.limiter.prune(std::time::Instant::now());
                this.collect_garbage(unix_now())
            });
            match collected.await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(deleted = n, "lapsed names deleted"),
                Ok(Err(e)) => tracing::error!(error = %e, "deleting lapsed names failed"),
                Err(e) => tracing::error!(error = %e, "name garbage collection task failed"),
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

}

/// Tells a client whose connection is refused why: `Refused` with id 0 in the welcome
/// to its hello (so the refusal is authenticated like any answer), reads what it sends
/// meanwhile so the close does not reset the connection before it reads the answer, and
/// closes; all within [`REFUSAL_TIMEOUT`].
async fn refuse_connection(stream: TcpStream, identity: Identity, why: &NameError) {
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let mut conn = ServerConnection::new(stream, identity);
        // A hello whose request is malformed is still answered (the refusal is the point);
        // a client of an older version was answered in its own layout.
        if !matches!(conn.receive().await, Err(NameError::Unreachable { .. } | NameError::Refused(_))) {
            let _ = conn.answer(CONNECTION_ID, &Response::refusal(why)).await;
        }
        let mut stream = conn.into_inner();
        stream.shutdown().await.ok()?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await.ok()? > 0 {}
        Some(())
    })
    .await;
}

/// The refusal for `err`, logging store failures (the operator must hear of those).
fn refusal_logged(err: &NameError) -> Response {
    if matches!(err, NameError::Store(_)) {
        tracing::error!(error = %err, "name store failed");
    }
    Response::refusal(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use msocket::name::NameRecord;
    use msocket::Identity;

    const NOW: u64 = 1_700_000_000;

    fn signed(seed: u8, name: &str, seq: u64) -> SignedRecord {
        signed_until(seed, name, seq, NOW + 100)
    }

    fn signed_until(seed: u8, name: &str, seq: u64, expires: u64) -> SignedRecord {
        let id = Identity::from_seed([seed; 32]);
        let p = id.public();
        let record = NameRecord::new(name, p, vec![], seq, expires);
        SignedRecord::sign(record, &id).unwrap()
    }

    fn open(dir: &tempfile::TempDir) -> NameServer {
        NameServer::open(dir.path().join("names.redb")).unwrap()
    }

    fn key(seed: u8) -> [u8; 32] {
        Identity::from_seed([seed; 32]).public().signing
    }

    #[test]
    fn store_applies_the_rules_and_keeps_refused_records_out() {
        let dir = tempfile::tempdir().unwrap();
        let server = open(&dir);
        let store = &server.store;
        assert_eq!(store.lookup("alice", NOW), Err(NameError::NotFound("alice".into())));
        assert_eq!(store.register(&signed(1, "alice", 2), NOW), Ok(Registered::NewName));
        assert_eq!(store.register(&signed(1, "alice", 2), NOW), Err(NameError::Stale { current: 2, offered: 2 }));
        assert_eq!(store.register(&signed(2, "alice", 3), NOW), Err(NameError::KeyMismatch));
        assert_eq!(store.lookup("alice", NOW), Ok(signed(1, "alice", 2)));
        assert_eq!(store.lookup("alice", NOW + 100), Err(NameError::Expired));
        // Expired, but within the grace period: another key is refused and the owner, back
        // after an hour offline, registers again.
        let hour_later = NOW + 100 + 3600;
        let squat = signed_until(2, "alice", 9, hour_later + 200);
        assert_eq!(store.register(&squat, hour_later), Err(NameError::KeyMismatch));
        let back = signed_until(1, "alice", 3, hour_later + 200);
        assert_eq!(store.register(&back, hour_later), Ok(Registered::Updated));
        assert_eq!(store.lookup("alice", hour_later), Ok(back));
        // A grace period after its last record expired, the name is free for another key.
        let freed = hour_later + 200 + msocket::name::NAME_GRACE.as_secs();
        let taker = signed_until(2, "alice", 1, freed + 200);
        assert_eq!(store.register(&taker, freed), Ok(Registered::TakenOver));
        assert_eq!(store.lookup("alice", freed), Ok(taker));
        assert_eq!((store.names_of(&key(1)), store.names_of(&key(2))), (Ok(0), Ok(1)));
    }

    #[test]
    fn the_grace_period_and_the_longest_lifetime_are_the_servers() {
        let dir = tempfile::tempdir().unwrap();
        let day = 24 * 3600;
        let rules = NameRules { grace: Duration::from_secs(day), max_lifetime: Duration::from_secs(2 * 3600) };
        let server = open(&dir).with_rules(rules);
        let store = &server.store;
        assert_eq!(
            store.register(&signed_until(1, "alice", 1, NOW + 3 * 3600), NOW),
            Err(NameError::LifetimeTooLong { max: Duration::from_secs(2 * 3600) })
        );
        store.register(&signed_until(1, "alice", 1, NOW + 3600), NOW).unwrap();
        // One second short of a day after expiry the name is still bound; then it is free.
        let lapsed = NOW + 3600 + day;
        assert_eq!(store.register(&signed_until(2, "alice", 1, lapsed + 60), lapsed - 1), Err(NameError::KeyMismatch));
        assert_eq!(store.register(&signed_until(2, "alice", 1, lapsed + 60), lapsed), Ok(Registered::TakenOver));
    }

    #[test]
    fn a_key_holds_at_most_its_quota_of_names_until_one_lapses() {
        let dir = tempfile::tempdir().unwrap();
        let server = open(&dir).with_store_limits(StoreLimits { names_per_key: 3, max_names: 100 });
        let store = &server.store;
        for name in ["a1", "a2"] {
            store.register(&signed(1, name, 1), NOW).unwrap();
        }
        // The third lives longer than the others.
        store.register(&signed_until(1, "a3", 1, NOW + 3600), NOW).unwrap();
        assert_eq!(store.register(&signed(1, "a4", 1), NOW), Err(NameError::QuotaExceeded { max: 3 }));
        // Updates of names it holds are not new names; other keys have quotas of their own.
        store.register(&signed(1, "a1", 2), NOW).unwrap();
        store.register(&signed(2, "b1", 1), NOW).unwrap();
        assert_eq!(store.names_of(&key(1)), Ok(3));
        // Once a1 and a2 lapsed, registering a new name deletes them first and fits.
        let lapsed = NOW + 100 + NameRules::default().grace.as_secs();
        assert_eq!(store.register(&signed_until(1, "a4", 1, lapsed + 60), lapsed), Ok(Registered::NewName));
        assert_eq!(store.names_of(&key(1)), Ok(2));
        assert_eq!(store.lookup("a1", lapsed), Err(NameError::NotFound("a1".into())));
        assert_eq!(store.len(), Ok(2), "a3 and a4 remain; b1 lapsed too and went with them");
    }

    #[test]
    fn a_full_store_refuses_new_names_but_not_updates() {
        let dir = tempfile::tempdir().unwrap();
        let server = open(&dir).with_store_limits(StoreLimits { names_per_key: 10, max_names: 3 });
        let store = &server.store;
        store.register(&signed(1, "n1", 1), NOW).unwrap();
        store.register(&signed(2, "n2", 1), NOW).unwrap();
        store.register(&signed_until(3, "n3", 1, NOW + 3600), NOW).unwrap();
        assert_eq!(store.register(&signed(4, "n4", 1), NOW), Err(NameError::ServerFull { max: 3 }));
        assert_eq!(store.register(&signed(1, "n1", 2), NOW), Ok(Registered::Updated));
        assert_eq!(store.len(), Ok(3));
        // n1 and n2 lapse: the next new name makes room by deleting them.
        let lapsed = NOW + 100 + NameRules::default().grace.as_secs();
        assert_eq!(store.register(&signed_until(4, "n4", 1, lapsed + 60), lapsed), Ok(Registered::NewName));
        assert_eq!(store.len(), Ok(2));
    }

    #[test]
    fn garbage_collection_deletes_lapsed_names_and_frees_them() {
        let dir = tempfile::tempdir().unwrap();
        let server = open(&dir);
        let store = &server.store;
        let grace = NameRules::default().grace.as_secs();
        store.register(&signed_until(1, "early", 1, NOW + 100), NOW).unwrap();
        store.register(&signed_until(1, "late", 1, NOW + 3000), NOW).unwrap();
        store.register(&signed_until(2, "other", 1, NOW + 100), NOW).unwrap();
        // Expired, within the grace period: kept.
        assert_eq!(server.collect_garbage(NOW + 100 + grace - 1), Ok(0));
        assert_eq!(store.len(), Ok(3));
        // "early" and "other" lapsed: deleted, their keys' counts follow.
        assert_eq!(server.collect_garbage(NOW + 100 + grace), Ok(2));
        assert_eq!(store.len(), Ok(1));
        assert_eq!((store.names_of(&key(1)), store.names_of(&key(2))), (Ok(1), Ok(0)));
        let now = NOW + 100 + grace;
        assert_eq!(store.lookup("early", now), Err(NameError::NotFound("early".into())));
        // The freed name is anyone's: another key takes it as a new name.
        assert_eq!(store.register(&signed_until(3, "early", 1, now + 60), now), Ok(Registered::NewName));
        // Nothing more lapsed yet; "late" goes when its turn comes.
        assert_eq!(server.collect_garbage(now), Ok(0));
        assert_eq!(server.collect_garbage(NOW + 3000 + grace), Ok(1));
        assert_eq!(store.lookup("late", now), Err(NameError::NotFound("late".into())));
    }

    #[test]
    fn garbage_collection_works_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let server = open(&dir).with_store_limits(StoreLimits { names_per_key: 5000, max_names: 5000 });
        let n = store::GC_BATCH + 5;
        for i in 0..n {
            server.store.register(&signed(1, &format!("n{i}"), 1), NOW).unwrap();
        }
        let lapsed = NOW + 100 + NameRules::default().grace.as_secs();
        assert_eq!(server.store.collect_garbage(lapsed, store::GC_BATCH), Ok(store::GC_BATCH));
        assert_eq!(server.collect_garbage(lapsed), Ok(5));
        assert_eq!(server.stored_names(), Ok(0));
        assert_eq!(server.names_of(&key(1)), Ok(0));
    }

    #[test]
    fn registrations_are_rate_limited_per_source_and_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let server = open(&dir).with_rate_limits(RateLimits { per_source: 5, per_key: 3 });
        let phone = Source::of("192.0.2.1".parse().unwrap());
        let other = Source::of("192.0.2.2".parse().unwrap());
        // Key 1 registers three times, then its bucket is empty, from any source.
        for seq in 1..=3 {
            server.register_blocking(&signed(1, "alice", seq), phone, NOW).unwrap();
        }
        assert!(matches!(
            server.register_blocking(&signed(1, "alice", 4), other, NOW),
            Err(NameError::RateLimited { retry_after }) if retry_after > Duration::ZERO
        ));
        // A forged record naming key 2 does not spend key 2's registrations...
        let mut forged = signed(2, "bob", 1);
        forged.record.seq = 99;
        for _ in 0..3 {
            assert_eq!(server.register_blocking(&forged, other, NOW), Err(NameError::BadSignature));
        }
        assert_eq!(server.register_blocking(&signed(2, "bob", 1), phone, NOW), Ok(Registered::NewName));
        // ...but every attempt spent its source's: each has sent four of its five.
        server.register_blocking(&signed(3, "carol", 1), other, NOW).unwrap();
        assert!(matches!(server.register_blocking(&signed(4, "dave", 1), other, NOW), Err(NameError::RateLimited { .. })));
        server.register_blocking(&signed(4, "dave", 1), phone, NOW).unwrap();
        assert!(matches!(server.register_blocking(&signed(5, "erin", 1), phone, NOW), Err(NameError::RateLimited { .. })));
    }

    #[test]
    fn records_survive_reopening_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names.redb");
        {
            let server = NameServer::open(&path).unwrap();
            server.store.register(&signed(1, "alice", 5), NOW).unwrap();
            server.store.put_raw("broken", &[1, 2, 3]);
        }
        let server = NameServer::open(&path).unwrap();
        assert_eq!(server.lookup_blocking("alice", NOW), Ok(signed(1, "alice", 5)));
        assert!(matches!(
            server.lookup_blocking("broken", NOW),
            Err(NameError::Store(m)) if m.contains("unreadable")
        ));
    }

    #[test]
    fn a_file_without_indexes_gets_them_built_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names.redb");
        {
            let server = NameServer::open(&path).unwrap();
            server.store.register(&signed(1, "alice", 1), NOW).unwrap();
            server.store.register(&signed(1, "bob", 1), NOW).unwrap();
            server.store.put_raw("broken", &[1, 2, 3]);
            server.store.drop_indexes();
        }
        let server = NameServer::open(&path).unwrap();
        assert_eq!(server.names_of(&key(1)), Ok(2));
        let lapsed = NOW + 100 + NameRules::default().grace.as_secs();
        assert_eq!(server.collect_garbage(lapsed), Ok(2));
        // The unreadable record is left for the operator to look at.
        assert_eq!(server.stored_names(), Ok(1));
    }

    #[tokio::test]
    async fn only_committed_registrations_wake_watchers() {
        let dir = tempfile::tempdir().unwrap();
        let server = Arc::new(NameServer::open(dir.path().join("names.redb")).unwrap());
        let mut watching = server.changes.subscribe("alice");
        let mut other = server.changes.subscribe("bob");
        assert_eq!(server.parked_watches(), 2);
        let record = signed_until(1, "alice", 1, unix_now() + 100);
        let peer: SocketAddr = "192.0.2.1:1".parse().unwrap();
        assert_eq!(server.handle(Request::Register(record.clone()), peer).await, Response::Ok);
        tokio::time::timeout(Duration::from_secs(5), watching.changed())
            .await
            .expect("registration did not wake the watcher");
        // A refused registration stores nothing and wakes nobody; other names sleep on.
        let refused = server.handle(Request::Register(record), peer).await;
        assert!(matches!(refused, Response::Refused { .. }), "{refused:?}");
        let short = Duration::from_millis(100);
        assert!(tokio::time::timeout(short, watching.changed()).await.is_err());
        assert!(tokio::time::timeout(short, other.changed()).await.is_err());
        drop((watching, other));
        assert_eq!(server.parked_watches(), 0);
    }

    #[test]
    fn opening_a_non_database_file_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-db");
        std::fs::write(&path, b"this is not a redb file, not even close to one").unwrap();
        let err = NameServer::open(&path).unwrap_err();
        assert!(err.to_string().contains("not-a-db"), "{err}");
    }
}
