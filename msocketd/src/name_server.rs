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
//! other connection. A semaphore bounds how many run at once, so a flood of requests
//! cannot pile up blocking threads.
//!
//! The network side speaks [`msocket::unstable::name_protocol`]. Every wait is bounded: a
//! connection that sends nothing, or dribbles one request out, for [`IDLE_TIMEOUT`] is
//! closed, as is one whose response
//! cannot be written within [`WRITE_TIMEOUT`], and at most [`MAX_CONNECTIONS`] are served
//! at once. Malformed input earns a `Refused(malformed)` answer and the end of that
//! connection, never of the process.
//!
//! `Watch` is a long poll: a client holding a flow to a name parks a watch on its own
//! connection and hears about a new record as soon as it is stored, instead of polling.
//! Each successful registration fires a per-name [`ChangeNotifier`] once its transaction
//! is durably committed, so a woken watcher always finds the record in the store. A watch
//! is held at most [`MAX_WATCH_WAIT`] (configurable), and a parked watch does not read
//! the store or hold a store permit. The idle timeout covers only the wait for a request,
//! so a parked watch is never cut by it; the timer starts again after the answer. Memory
//! is bounded: a connection holds at most one watch, and a watch whose client closes the
//! connection is dropped at once (the server watches the socket while the watch is
//! parked), so nothing outlives its connection. At shutdown parked watches are answered
//! `Unchanged` and their connections closed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use msocket::unstable::name_protocol::{
    read_message, write_message, FrameError, Request, Response, MAX_WATCH_WAIT,
};
use msocket::name::{unix_now, validate_name, ChangeNotifier, NameError, NameRules, SignedRecord};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long, by default, a connection may stay silent (or take to deliver one request)
/// before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing one response may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most database operations in flight at once (each holds a blocking thread).
pub const MAX_STORE_OPS: usize = 16;
/// How long shutdown waits for connections to finish their current request.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often lapsed names are deleted and refilled rate-limit buckets dropped.
pub const GC_INTERVAL: Duration = Duration::from_secs(600);

pub mod limits;
pub mod store;

pub use limits::{RateLimits, Source};
pub use store::StoreLimits;

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
    store: Store,
    limiter: Limiter,
    store_ops: Semaphore,
    idle_timeout: Duration,
    watch_cap: Duration,
    max_connections: usize,
    /// Wakes parked watches; fired after each committed registration.
    changes: ChangeNotifier,
}

impl NameServer {
    /// Opens the database at `path`, creating the file and its table if needed.
    /// Rules, limits and timeouts are the defaults until set with the `with_` methods.
    pub fn open(path: impl AsRef<Path>) -> Result<NameServer, NameServerError> {
        Ok(NameServer {
            store: Store::open(path.as_ref())?,
            limiter: Limiter::new(RateLimits::default()),
            store_ops: Semaphore::new(MAX_STORE_OPS),
            idle_timeout: IDLE_TIMEOUT,
            watch_cap: MAX_WATCH_WAIT,
            max_connections: MAX_CONNECTIONS,
            changes: ChangeNotifier::new(),
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
    /// 1). Every connecting flow of a client parks one watch on its peer's name, so a
    /// busy service wants more than the default, and a file-descriptor limit to match.
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
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

    /// Runs `op` on the blocking pool with the current time, holding one of the
    /// [`MAX_STORE_OPS`] permits.
    async fn run_store<T: Send + 'static>(
        self: &Arc<Self>,
        op: impl FnOnce(&NameServer, u64) -> Result<T, NameError> + Send + 'static,
    ) -> Result<T, NameError> {
        let Ok(_permit) = self.store_ops.acquire().await else {
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

    /// Answers a `Register` or a `Lookup` from `peer`. (`Watch` needs the connection: see
    /// [`Self::watch`].)
    async fn handle(self: &Arc<Self>, request: Request, peer: SocketAddr) -> Response {
        let outcome = match request {
            Request::Register(record) => {
                let source = Source::of(peer.ip());
                self.run_store(move |this, now| {
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
                self.run_store(move |this, now| {
                    let outcome = this.lookup_blocking(&name, now);
                    tracing::debug!(%name, found = outcome.is_ok(), "lookup");
                    outcome.map(Response::Record)
                })
                .await
            }
            Request::Watch { .. } => {
                Err(NameError::Store("watch reached the plain request handler".into()))
            }
        };
        match outcome {
            Ok(response) => response,
            Err(NameError::NotFound(_)) => Response::NotFound,
            Err(e) => refusal_logged(&e),
        }
    }

    /// Answers a `Watch`: at once if the store holds a live record of `name` above
    /// `after_seq`, else when a registration brings one, else `Unchanged` after the wait
    /// (capped) or at shutdown. `None` means the client closed the connection while the
    /// watch was parked, so there is nobody to answer.
    ///
    /// While parked, the socket is watched for the client going away. A client may
    /// pipeline its next request behind the watch; once bytes arrive the socket is left
    /// alone (they are read after the answer), and the wait is bounded by the cap alone.
    async fn watch(
        self: &Arc<Self>,
        name: String,
        after_seq: u64,
        wait_ms: u32,
        stream: &TcpStream,
        stop: &mut watch::Receiver<()>,
        peer: SocketAddr,
    ) -> Option<Response> {
        if let Err(e) = validate_name(&name) {
            tracing::debug!(%peer, %name, error = %e, "watch refused");
            return Some(Response::refusal(&e));
        }
        let wait = Duration::from_millis(wait_ms.into()).min(self.watch_cap);
        let now = Instant::now();
        let deadline = now.checked_add(wait).unwrap_or(now);
        // Subscribe before the first check, so a registration in between still wakes us.
        let mut changes = self.changes.subscribe(&name);
        let mut peer_sent_more = false;
        tracing::debug!(%peer, %name, after_seq, ?wait, "watch");
        loop {
            let key = name.clone();
            match self.run_store(move |this, now| this.lookup_blocking(&key, now)).await {
                Ok(record) if record.record.seq > after_seq => {
                    tracing::debug!(%peer, %name, seq = record.record.seq, "watch answered");
                    return Some(Response::Record(record));
                }
                // No live record above `after_seq` yet: wait for one.
                Ok(_) | Err(NameError::NotFound(_)) | Err(NameError::Expired) => {}
                Err(e) => return Some(refusal_logged(&e)),
            }
            tokio::select! {
                () = changes.changed() => {}
                () = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(%peer, %name, "watch unchanged");
                    return Some(Response::Unchanged);
                }
                // The sender is dropped at shutdown: answer now rather than hold it up.
                _ = stop.changed() => return Some(Response::Unchanged),
                gone = peer_gone(stream), if !peer_sent_more => {
                    if gone {
                        tracing::debug!(%peer, %name, "watcher went away");
                        return None;
                    }
                    peer_sent_more = true;
                }
            }
        }
    }

    /// Serves the protocol on `listener` until `shutdown` completes, then stops accepting,
    /// lets open connections finish their current request (up to [`SHUTDOWN_GRACE`]) and
    /// returns.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl std::future::Future) {
        let connections = Arc::new(Semaphore::new(self.max_connections));
        let (stop_tx, stop_rx) = watch::channel(());
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "name service listening");
        }
        tasks.spawn(Arc::clone(&self).collect_garbage_every(GC_INTERVAL, stop_rx.clone()));
        loop {
            while tasks.try_join_next().is_some() {}
            // Take a connection slot before accepting: at the limit, clients queue in the
            // kernel's backlog instead of costing us memory.
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = Arc::clone(&connections).acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let this = Arc::clone(&self);
                    tasks.spawn(this.connection(stream, peer, stop_rx.clone(), permit));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
        tracing::info!(open_connections = tasks.len(), "name service shutting down");
        drop(listener);
        drop(stop_tx);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(left = tasks.len(), "connections did not finish in time; aborting them");
            tasks.shutdown().await;
        }
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

    /// Serves one connection: requests one after another until the client closes, goes
    /// idle, misbehaves, or the server stops.
    async fn connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
        mut stop: watch::Receiver<()>,
        _permit: OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        tracing::debug!(%peer, "connection opened");
        loop {
            let read = tokio::select! {
                // The sender is dropped at shutdown; between requests is a clean place to stop.
                _ = stop.changed() => break,
                read = tokio::time::timeout(self.idle_timeout, read_message(&mut stream)) => read,
            };
            let (response, keep_open) = match read {
                Err(_) => {
                    tracing::debug!(%peer, "connection idle; closing");
                    break;
                }
                Ok(Err(FrameError::Closed)) => break,
                Ok(Err(FrameError::Io(e))) => {
                    tracing::debug!(%peer, error = %e, "connection failed");
                    break;
                }
                Ok(Err(e @ FrameError::TooLong(_))) => {
                    tracing::warn!(%peer, error = %e, "oversized request; closing");
                    (Response::refusal(&NameError::Malformed(e.to_string())), false)
                }
                Ok(Ok(body)) => match Request::decode(&body) {
                    Ok(Request::Watch { name, after_seq, wait_ms }) => {
                        match self.watch(name, after_seq, wait_ms, &stream, &mut stop, peer).await {
                            Some(response) => (response, true),
                            None => break,
                        }
                    }
                    Ok(request) => (self.handle(request, peer).await, true),
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "malformed request; closing");
                        (Response::refusal(&e), false)
                    }
                },
            };
            let written =
                tokio::time::timeout(WRITE_TIMEOUT, write_message(&mut stream, &response.encode()))
                    .await;
            if !matches!(written, Ok(Ok(()))) {
                tracing::debug!(%peer, "could not write response; closing");
                break;
            }
            if !keep_open {
                break;
            }
        }
        tracing::debug!(%peer, "connection closed");
    }
}

/// The refusal for `err`, logging store failures (the operator must hear of those).
fn refusal_logged(err: &NameError) -> Response {
    if matches!(err, NameError::Store(_)) {
        tracing::error!(error = %err, "name store failed");
    }
    Response::refusal(err)
}

/// Completes when the peer has closed its side or reset the connection (`true`), or has
/// sent more bytes (`false`), without consuming anything.
async fn peer_gone(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte).await {
        Ok(0) | Err(_) => true,
        Ok(_) => false,
    }
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
