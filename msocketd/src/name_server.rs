//! The durable name service behind `msocketd name`.
//!
//! Records live in a [redb] file: one table from name to encoded [`SignedRecord`]. Each
//! registration is one write transaction that reads the current record, applies
//! [`check_update`] and stores the new one, so concurrent registrations of a name are
//! serialised by the database and the rules are checked against what is actually stored.
//! The transaction is committed with immediate durability before the client hears `Ok`:
//! a record acknowledged to a phone survives a crash or `kill -9` of the server.
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
use msocket::name::{
    check_update, unix_now, validate_name, ChangeNotifier, NameError, SignedRecord,
};
use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};
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

/// Name → encoded `SignedRecord`.
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

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
}

/// A name server: a record store and the TCP service in front of it.
#[derive(Debug)]
pub struct NameServer {
    db: Database,
    store_ops: Semaphore,
    idle_timeout: Duration,
    watch_cap: Duration,
    max_connections: usize,
    /// Wakes parked watches; fired after each committed registration.
    changes: ChangeNotifier,
}

fn store_error(e: impl Into<redb::Error>) -> NameError {
    NameError::Store(e.into().to_string())
}

impl NameServer {
    /// Opens the database at `path`, creating the file and its table if needed.
    pub fn open(path: impl AsRef<Path>) -> Result<NameServer, NameServerError> {
        let path = path.as_ref();
        let open_error =
            |e: redb::Error| NameServerError::Open { path: path.display().to_string(), source: e };
        let db = Database::create(path).map_err(|e| open_error(e.into()))?;
        // Create the table up front so readers never meet a missing table.
        let txn = db.begin_write().map_err(|e| open_error(e.into()))?;
        txn.open_table(RECORDS).map_err(|e| open_error(e.into()))?;
        txn.commit().map_err(|e| open_error(e.into()))?;
        Ok(NameServer {
            db,
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

    /// How many watches are parked right now (for monitoring and tests).
    pub fn parked_watches(&self) -> usize {
        self.changes.watchers()
    }

    /// Applies the registration rules to `offered` and stores it, durably. Blocking.
    fn register_blocking(&self, offered: &SignedRecord, now: u64) -> Result<(), NameError> {
        let name = offered.record.name.as_str();
        let mut txn = self.db.begin_write().map_err(store_error)?;
        txn.set_durability(Durability::Immediate).map_err(store_error)?;
        {
            let mut table = txn.open_table(RECORDS).map_err(store_error)?;
            let current = match table.get(name).map_err(store_error)? {
                Some(stored) => Some(decode_stored(name, stored.value())?),
                None => None,
            };
            // On refusal the transaction is dropped uncommitted, which aborts it.
            check_update(current.as_ref(), offered, now)?;
            table.insert(name, offered.encode().as_slice()).map_err(store_error)?;
        }
        txn.commit().map_err(store_error)
    }

    /// The verified record registered under `name`. Blocking.
    fn lookup_blocking(&self, name: &str, now: u64) -> Result<SignedRecord, NameError> {
        validate_name(name)?;
        let txn = self.db.begin_read().map_err(store_error)?;
        let table = txn.open_table(RECORDS).map_err(store_error)?;
        let stored = table.get(name).map_err(store_error)?;
        let record = match stored {
            Some(bytes) => decode_stored(name, bytes.value())?,
            None => return Err(NameError::NotFound(name.to_string())),
        };
        // Stored records verified when registered; this re-check catches expiry.
        record.verify(now)?;
        Ok(record)
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

    /// Answers a `Register` or a `Lookup`. (`Watch` needs the connection: see
    /// [`Self::watch`].)
    async fn handle(self: &Arc<Self>, request: Request) -> Response {
        let outcome = match request {
            Request::Register(record) => {
                self.run_store(move |this, now| {
                    let outcome = this.register_blocking(&record, now);
                    let r = &record.record;
                    match &outcome {
                        Ok(()) => {
                            tracing::info!(name = %r.name, seq = r.seq,
                                key = %r.public().fingerprint(), "registered");
                            // Committed durably: watchers woken now will find it.
                            this.changes.notify(&r.name);
                        }
                        Err(e) => tracing::info!(name = %r.name, seq = r.seq, error = %e,
                            "registration refused"),
                    }
                    outcome.map(|()| Response::Ok)
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
                    Ok(request) => (self.handle(request).await, true),
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

fn decode_stored(name: &str, bytes: &[u8]) -> Result<SignedRecord, NameError> {
    SignedRecord::decode(bytes)
        .map_err(|e| NameError::Store(format!("stored record for {name:?} is unreadable: {e}")))
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

    #[test]
    fn store_applies_the_rules_and_keeps_refused_records_out() {
        let dir = tempfile::tempdir().unwrap();
        let server = NameServer::open(dir.path().join("names.redb")).unwrap();
        assert_eq!(server.lookup_blocking("alice", NOW), Err(NameError::NotFound("alice".into())));
        server.register_blocking(&signed(1, "alice", 2), NOW).unwrap();
        assert_eq!(
            server.register_blocking(&signed(1, "alice", 2), NOW),
            Err(NameError::Stale { current: 2, offered: 2 })
        );
        assert_eq!(
            server.register_blocking(&signed(2, "alice", 3), NOW),
            Err(NameError::KeyMismatch)
        );
        assert_eq!(server.lookup_blocking("alice", NOW), Ok(signed(1, "alice", 2)));
        assert_eq!(server.lookup_blocking("alice", NOW + 100), Err(NameError::Expired));
        // Expired, but within the grace period: another key is refused and the owner, back
        // after an hour offline, registers again.
        let hour_later = NOW + 100 + 3600;
        let squat = signed_until(2, "alice", 9, hour_later + 200);
        assert_eq!(server.register_blocking(&squat, hour_later), Err(NameError::KeyMismatch));
        let back = signed_until(1, "alice", 3, hour_later + 200);
        server.register_blocking(&back, hour_later).unwrap();
        assert_eq!(server.lookup_blocking("alice", hour_later), Ok(back));
        // A grace period after its last record expired, the name is free for another key.
        let freed = hour_later + 200 + msocket::name::NAME_GRACE.as_secs();
        let taker = signed_until(2, "alice", 1, freed + 200);
        server.register_blocking(&taker, freed).unwrap();
        assert_eq!(server.lookup_blocking("alice", freed), Ok(taker));
    }

    #[test]
    fn records_survive_reopening_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names.redb");
        {
            let server = NameServer::open(&path).unwrap();
            server.register_blocking(&signed(1, "alice", 5), NOW).unwrap();
            let txn = server.db.begin_write().unwrap();
            txn.open_table(RECORDS).unwrap().insert("broken", &[1u8, 2, 3][..]).unwrap();
            txn.commit().unwrap();
        }
        let server = NameServer::open(&path).unwrap();
        assert_eq!(server.lookup_blocking("alice", NOW), Ok(signed(1, "alice", 5)));
        assert!(matches!(
            server.lookup_blocking("broken", NOW),
            Err(NameError::Store(m)) if m.contains("unreadable")
        ));
    }

    #[tokio::test]
    async fn only_committed_registrations_wake_watchers() {
        let dir = tempfile::tempdir().unwrap();
        let server = Arc::new(NameServer::open(dir.path().join("names.redb")).unwrap());
        let mut watching = server.changes.subscribe("alice");
        let mut other = server.changes.subscribe("bob");
        assert_eq!(server.parked_watches(), 2);
        let record = signed_until(1, "alice", 1, unix_now() + 100);
        assert_eq!(server.handle(Request::Register(record.clone())).await, Response::Ok);
        tokio::time::timeout(Duration::from_secs(5), watching.changed())
            .await
            .expect("registration did not wake the watcher");
        // A refused registration stores nothing and wakes nobody; other names sleep on.
        let refused = server.handle(Request::Register(record)).await;
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
