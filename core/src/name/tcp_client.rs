//! The client of msocket's own name server.
//!
//! Each registration and lookup uses a fresh TCP connection. They are rare (at startup,
//! when an address changes, when a peer is looked up), so the extra round trip costs
//! little, and it avoids keeping a pooled connection that silently died when the phone
//! changed networks: every request starts from the current network state.
//!
//! Watches are different: every open flow keeps one parked on its peer's name, all the
//! time. All the watches of a client (of a `TcpNameClient` and its clones) share one
//! connection per local address ([`watches`]); the server answers them by id, in any
//! order, and acknowledges each parked watch at once, so a dead connection is noticed
//! within the client's timeout rather than after a minute-long wait.
//!
//! Every connection is an authenticated channel to the server's key
//! ([`protocol::secure`](super::protocol::secure)): the first request rides in the
//! handshake's first message and its answer in the second, so a lookup still takes one
//! round trip after the TCP handshake, and nobody on the path can forge, alter or replay
//! an answer. A server string `host:port#FINGERPRINT` pins the server's key: a server
//! holding another is refused ([`NameError::ServerKeyMismatch`]).

mod watches;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use super::protocol::secure::ClientConnection;
use super::protocol::{watch_wait_ms, Request, Response, CONNECTION_ID, FIRST_ID, MAX_WATCH_WAIT};
use crate::identity::Fingerprint;
use super::{
    deadline_after, unix_now, validate_name, ExchangeStep, NameError, NameFuture, NameService, SignedRecord,
    WATCH_POLL_INTERVAL,
};

/// A [`NameService`] reached over TCP at `host:port`, speaking [`super::protocol`].
#[derive(Debug, Clone)]
pub struct TcpNameClient {
    /// `host:port`: where to connect, and how errors name the server.
    addr: String,
    /// The server string as given (with its `#FINGERPRINT`, if any).
    given: String,
    /// The pinned server key, or why the pin given cannot be used.
    pin: Result<Option<Fingerprint>, String>,
    timeout: Duration,
    /// The local address every connection leaves from, if pinned.
    local: Option<IpAddr>,
    /// The connections carrying the watches (shared by clones).
    watches: Arc<watches::Connections>,
}

impl TcpNameClient {
    /// A client of the server at `server`: `host:port`, or `host:port#FINGERPRINT` to
    /// accept only a server whose key has that fingerprint (32 to 64 hex digits, as
    /// `msocketd name` prints it). `timeout` bounds each request as a whole: name
    /// resolution, connect, handshake, send and response. A watch may take its `wait` on
    /// top of that. A fingerprint that does not parse fails every request with
    /// [`NameError::BadUrl`] (never silently unpinned).
    pub fn new(server: String, timeout: Duration) -> Self {
        let (addr, pin) = match server.split_once('#') {
            Some((addr, fingerprint)) => (
                addr.to_string(),
                fingerprint.parse::<Fingerprint>().map(Some).map_err(|e| e.to_string()),
            ),
            None => (server.clone(), Ok(None)),
        };
        TcpNameClient { addr, given: server, pin, timeout, local: None, watches: Arc::default() }
    }

    /// A client of the server at `server` (`host:port`) that accepts only a server whose
    /// keys have the fingerprint `pin`.
    pub fn pinned(server: String, pin: Fingerprint, timeout: Duration) -> Self {
        TcpNameClient { given: format!("{server}#{pin}"), addr: server, pin: Ok(Some(pin)), timeout, local: None, watches: Arc::default() }
    }

    /// The same client, with every connection leaving from the local address `ip` (a
    /// watch from another address, [`NameService::watch_from`], still leaves from that).
    pub fn bind_to(mut self, ip: IpAddr) -> Self {
        self.local = Some(ip);
        self
    }

    /// The server's address, as given.
    pub fn server(&self) -> &str {
        &self.given
    }

    /// The pinned fingerprint, if any.
    fn pin(&self) -> Result<Option<&Fingerprint>, NameError> {
        match &self.pin {
            Ok(pin) => Ok(pin.as_ref()),
            Err(reason) => Err(NameError::BadUrl { url: self.given.clone(), reason: reason.clone() }),
        }
    }

    /// One request on a fresh connection, in the channel's handshake, bounded by the
    /// client's timeout.
    async fn request(&self, request: &Request) -> Result<Response, NameError> {
        let pin = self.pin()?;
        self.bounded(self.timeout, async {
            let stream = self.connect().await?;
            let mut conn = ClientConnection::new(stream, self.addr.clone(), pin.cloned());
            conn.send(FIRST_ID, request).await?;
            let answer = conn.receive().await.map_err(|e| attribute(e, &self.addr))?;
            match answer {
                (FIRST_ID, response) => Ok(response),
                (CONNECTION_ID, Response::Refused { code, current_seq, message }) => {
                    Err(Response::refusal_error(code, current_seq, &message, "", 0))
                }
                (id, _) => Err(NameError::Malformed(format!("answer to request {id}, which was never sent"))),
            }
        })
        .await
    }

    /// Runs `step`, turning a wait longer than `limit` into [`NameError::Timeout`].
    async fn bounded<T>(
        &self,
        limit: Duration,
        step: impl std::future::Future<Output = Result<T, NameError>>,
    ) -> Result<T, NameError> {
        match tokio::time::timeout(limit, step).await {
            Ok(result) => result,
            Err(_) => Err(NameError::Timeout { server: self.addr.clone(), after: limit }),
        }
    }

    fn unreachable(&self, step: ExchangeStep, kind: std::io::ErrorKind) -> NameError {
        NameError::Unreachable { server: self.addr.clone(), step, kind }
    }

    async fn connect(&self) -> Result<TcpStream, NameError> {
        self.connect_from(self.local).await
    }

    /// Connects from `from` to the server's first address of that family; from any local
    /// address if `from` is None or the server has no address of its family.
    async fn connect_from(&self, from: Option<IpAddr>) -> Result<TcpStream, NameError> {
        let stream = match from {
            Some(ip) => self.connect_bound(ip).await,
            None => TcpStream::connect(self.addr.as_str()).await,
        }
        .map_err(|e| self.unreachable(ExchangeStep::Connect, e.kind()))?;
        // Requests are single small writes; don't let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect_bound(&self, ip: IpAddr) -> std::io::Result<TcpStream> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(self.addr.as_str()).await?.collect();
        let Some(&to) = addrs.iter().find(|a| a.is_ipv4() == ip.is_ipv4()) else {
            return TcpStream::connect(&addrs[..]).await;
        };
        let socket = if ip.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.bind(SocketAddr::new(ip, 0))?;
        socket.connect(to).await
    }

    /// Checks a record the server served for `name`: the name it carries, its signature
    /// and its expiry. The server is trusted for availability, not integrity.
    fn check_served(&self, name: &str, record: SignedRecord) -> Result<SignedRecord, NameError> {
        if record.record.name != name {
            tracing::warn!(server = %self.addr, asked = name,
                got = %record.record.name, "name server returned another name's record");
            return Err(NameError::BadSignature);
        }
        if let Err(e) = record.verify(unix_now()) {
            tracing::warn!(server = %self.addr, name, error = %e,
                "name server returned a record that does not verify");
            return Err(e);
        }
        Ok(record)
    }

    /// The watch itself, on the shared connection from `from`. A server holds each watch
    /// for at most its cap ([`MAX_WATCH_WAIT`] for `msocketd name`), so a longer `wait`
    /// takes several watches in a row.
    async fn watch_on_shared_connection(
        &self,
        name: &str,
        after_seq: u64,
        wait: Duration,
        from: Option<IpAddr>,
    ) -> Result<Option<SignedRecord>, NameError> {
        let deadline = deadline_after(wait);
        let from = from.or(self.local);
        let pin = self.pin()?.cloned();
        let conn = self
            .bounded(self.timeout, self.watches.acquire(from, &self.addr, pin, self.connect_from(from)))
            .await?;
        loop {
            let asked_at = Instant::now();
            let remaining = deadline.saturating_duration_since(asked_at).min(MAX_WATCH_WAIT);
            let wait_ms = watch_wait_ms(remaining);
            // What the server is actually asked for (whole milliseconds, rounded up).
            let ask = Duration::from_millis(wait_ms.into());
            let mut call = conn.call(&Request::Watch { name: name.to_string(), after_seq, wait_ms })?;
            // The server acknowledges at once; silence means the connection is dead.
            let mut answer = match self.bounded(self.timeout, call.next()).await {
                Err(e @ NameError::Timeout { .. }) => {
                    tracing::debug!(server = %self.addr, name, "watch connection silent; closing it");
                    conn.kill();
                    return Err(e);
                }
                answer => answer?,
            };
            if answer == Response::Watching {
                answer = match self.bounded(ask.saturating_add(self.timeout), call.next()).await {
                    Err(e @ NameError::Timeout { .. }) => {
                        conn.kill();
                        return Err(e);
                    }
                    answer => answer?,
                };
            }
            match answer {
                Response::Record(record) => {
                    let record = self.check_served(name, record)?;
                    if record.record.seq <= after_seq {
                        tracing::warn!(server = %self.addr, name, after_seq,
                            seq = record.record.seq, "name server answered a watch with an old record");
                        return Err(NameError::Malformed(format!(
                            "watch for {name:?} after seq {after_seq} answered with seq {}",
                            record.record.seq
                        )));
                    }
                    return Ok(Some(record));
                }
                Response::Unchanged => {
                    // Answered before our deadline (the server's cap is shorter): ask
                    // again, but never more often than the poll interval, so a server
                    // that answers `Unchanged` at once cannot make us spin.
                    tokio::time::sleep_until((asked_at + WATCH_POLL_INTERVAL).min(deadline)).await;
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                Response::Refused { code, current_seq, message } => {
                    return Err(Response::refusal_error(code, current_seq, &message, name, 0))
                }
                other => return Err(unexpected(&other)),
            }
        }
    }
}

impl NameService for TcpNameClient {
    /// Sends the record as is: the server applies the registration rules, so the client
    /// does not check the record first.
    fn register<'a>(&'a self, record: &'a SignedRecord) -> NameFuture<'a, ()> {
        Box::pin(async move {
            let name = &record.record.name;
            tracing::debug!(server = %self.addr, %name, seq = record.record.seq, "registering name");
            match self.request(&Request::Register(record.clone())).await? {
                Response::Ok => Ok(()),
                Response::Refused { code, current_seq, message } => Err(Response::refusal_error(
                    code,
                    current_seq,
                    &message,
                    name,
                    record.record.seq,
                )),
                other => Err(unexpected(&other)),
            }
        })
    }

    /// Verifies the served record (signature, name, expiry): the server is trusted for
    /// availability, not integrity.
    fn lookup<'a>(&'a self, name: &'a str) -> NameFuture<'a, SignedRecord> {
        Box::pin(async move {
            validate_name(name)?;
            tracing::debug!(server = %self.addr, name, "looking name up");
            match self.request(&Request::Lookup(name.to_string())).await? {
                Response::Record(record) => self.check_served(name, record),
                Response::NotFound => Err(NameError::NotFound(name.to_string())),
                Response::Refused { code, current_seq, message } => {
                    Err(Response::refusal_error(code, current_seq, &message, name, 0))
                }
                other => Err(unexpected(&other)),
            }
        })
    }

    /// Sends `Watch` on the client's shared watch connection and waits up to `wait` plus
    /// the client's timeout for the answer. The served record is verified as [`lookup`](Self::lookup)
    /// verifies, and must be newer than `after_seq`.
    fn watch<'a>(
        &'a self,
        name: &'a str,
        after_seq: u64,
        wait: Duration,
    ) -> NameFuture<'a, Option<SignedRecord>> {
        self.watch_from(name, after_seq, wait, None)
    }

    /// [`watch`](NameService::watch) on a connection from `from`.
    fn watch_from<'a>(
        &'a self,
        name: &'a str,
        after_seq: u64,
        wait: Duration,
        from: Option<IpAddr>,
    ) -> NameFuture<'a, Option<SignedRecord>> {
        Box::pin(async move {
            validate_name(name)?;
            tracing::debug!(server = %self.addr, name, after_seq, ?wait, ?from, "watching name");
            let outcome = self.watch_on_shared_connection(name, after_seq, wait, from).await;
            match &outcome {
                Ok(Some(record)) => tracing::debug!(server = %self.addr, name,
                    seq = record.record.seq, "watched name changed"),
                Ok(None) => tracing::debug!(server = %self.addr, name, "watched name unchanged"),
                Err(e) => tracing::debug!(server = %self.addr, name, error = %e, "watch failed"),
            }
            outcome
        })
    }
}

/// `e` with the server named, for the errors the channel raises without knowing it.
fn attribute(e: NameError, server: &str) -> NameError {
    match e {
        NameError::Unauthenticated { reason, .. } => {
            tracing::warn!(server, %reason, "name server answer failed authentication");
            NameError::Unauthenticated { server: server.to_string(), reason }
        }
        NameError::ServerKeyMismatch { expected, found, .. } => {
            tracing::warn!(server, %expected, %found, "name server holds another key than the pinned one");
            NameError::ServerKeyMismatch { server: server.to_string(), expected, found }
        }
        other => other,
    }
}

fn unexpected(response: &Response) -> NameError {
    let kind = match response {
        Response::Ok => "Ok",
        Response::Record(_) => "Record",
        Response::NotFound => "NotFound",
        Response::Unchanged => "Unchanged",
        Response::Watching => "Watching",
        Response::Refused { .. } => "Refused",
    };
    NameError::Malformed(format!("unexpected {kind} response"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::protocol::secure::ServerConnection;
    use crate::Identity;

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        // Bind then drop a listener so the port is (very likely) closed.
        let port = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let client = TcpNameClient::new(format!("127.0.0.1:{port}"), Duration::from_secs(5));
        assert!(matches!(client.lookup("alice").await, Err(NameError::Unreachable { .. })));
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // Accept and hold the connection without answering.
        let holder = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let client = TcpNameClient::new(addr.clone(), Duration::from_millis(200));
        assert_eq!(
            client.lookup("alice").await,
            Err(NameError::Timeout { server: addr, after: Duration::from_millis(200) })
        );
        drop(holder);
    }

    #[tokio::test]
    async fn invalid_names_are_refused_locally() {
        // Nothing listens on port 9 of a TEST-NET address; the name check comes first.
        let client = TcpNameClient::new("192.0.2.1:9".into(), Duration::from_secs(5));
        assert!(matches!(client.lookup("Alice").await, Err(NameError::InvalidName { .. })));
    }

    #[tokio::test]
    async fn a_silent_server_times_a_watch_out_within_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let holder = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let client = TcpNameClient::new(addr.clone(), Duration::from_millis(200));
        // No acknowledgement within the timeout: the connection is dead, whatever the wait.
        assert_eq!(
            client.watch("alice", 0, Duration::from_secs(30)).await,
            Err(NameError::Timeout { server: addr, after: Duration::from_millis(200) })
        );
        assert_eq!(client.watches.count(), 0, "the dead connection was kept");
        drop(holder);
    }

    /// What a fake server saw: each request with its id, and each connection it accepted.
    #[derive(Debug)]
    enum Seen {
        Connection,
        Request(u32, Box<Request>),
        Closed,
    }

    /// A server that acknowledges every watch (`Watching`) and never answers it, answers
    /// whatever `answer` says for the others, and reports what it sees. Connections are
    /// closed when `hang_up` fires.
    async fn acknowledging_server(
        answer: fn(&Request) -> Option<Response>,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<Seen>, Arc<tokio::sync::Notify>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (seen, rx) = tokio::sync::mpsc::unbounded_channel();
        let hang_up = Arc::new(tokio::sync::Notify::new());
        let hang = Arc::clone(&hang_up);
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else { return };
                let _ = seen.send(Seen::Connection);
                let (seen, hang) = (seen.clone(), Arc::clone(&hang));
                tokio::spawn(async move {
                    let mut conn = ServerConnection::new(conn, Identity::from_seed([9; 32]));
                    loop {
                        let received = tokio::select! {
                            received = conn.receive() => received,
                            () = hang.notified() => break,
                        };
                        let Ok((id, request)) = received else { break };
                        let reply = match &request {
                            Request::Watch { .. } => Some(Response::Watching),
                            other => answer(other),
                        };
                        let _ = seen.send(Seen::Request(id, Box::new(request)));
                        if let Some(reply) = reply {
                            conn.answer(id, &reply).await.unwrap();
                        }
                    }
                    let _ = seen.send(Seen::Closed);
                });
            }
        });
        (addr, rx, hang_up)
    }

    async fn next_seen(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("the server saw nothing").unwrap()
    }

    #[tokio::test]
    async fn watches_share_one_connection_and_a_dropped_watch_is_cancelled() {
        let (addr, mut seen, hang_up) = acknowledging_server(|_| None).await;
        let client = TcpNameClient::new(addr, Duration::from_secs(5));
        let mut watches = Vec::new();
        for i in 0..10 {
            let client = client.clone();
            watches.push(tokio::spawn(async move { client.watch(&format!("n{i}"), 0, Duration::from_secs(30)).await }));
        }
        let mut ids = std::collections::HashMap::new();
        let mut connections = 0;
        while ids.len() < 10 {
            match next_seen(&mut seen).await {
                Seen::Connection => connections += 1,
                Seen::Request(id, request) => match *request {
                    Request::Watch { name, .. } => assert!(ids.insert(name, id).is_none()),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(connections, 1);
        assert_eq!(client.watches.count(), 1);
        // The owner of n3 loses interest: the server hears a Cancel for its watch.
        watches.remove(3).abort();
        match next_seen(&mut seen).await {
            Seen::Request(id, request) if *request == Request::Cancel => assert_eq!(id, ids["n3"]),
            other => panic!("{other:?}"),
        }
        // The connection breaks: every watch on it fails at once, none waits its minute.
        let started = Instant::now();
        hang_up.notify_waiters();
        for watch in watches {
            let outcome = watch.await.unwrap();
            assert!(matches!(outcome, Err(NameError::Unreachable { step: ExchangeStep::Receive, .. })), "{outcome:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        // The next watch opens a new connection.
        let client2 = client.clone();
        let next = tokio::spawn(async move { client2.watch("n1", 0, Duration::from_secs(30)).await });
        loop {
            match next_seen(&mut seen).await {
                Seen::Closed => {}
                Seen::Connection => break,
                other => panic!("{other:?}"),
            }
        }
        next.abort();
    }

    /// A server that answers every watch on its first connection with `Unchanged` at
    /// once, and reports how many it answered.
    async fn impatient_server() -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let mut conn = ServerConnection::new(conn, Identity::from_seed([9; 32]));
            let mut answered = 0;
            while let Ok((id, request)) = conn.receive().await {
                match request {
                    Request::Watch { .. } => {
                        conn.answer(id, &Response::Unchanged).await.unwrap();
                        answered += 1;
                    }
                    Request::Cancel => {}
                    other => panic!("{other:?}"),
                }
            }
            answered
        });
        (addr, task)
    }

    #[tokio::test]
    async fn an_early_unchanged_is_watched_again_without_spinning() {
        let (addr, server) = impatient_server().await;
        let client = TcpNameClient::new(addr, Duration::from_secs(5));
        let wait = Duration::from_millis(350);
        let started = Instant::now();
        assert_eq!(client.watch("alice", 0, wait).await, Ok(None));
        assert!(started.elapsed() >= wait);
        // The next watch, right after, goes on the same connection: the server accepts
        // only one.
        assert_eq!(client.watch("alice", 0, Duration::from_millis(50)).await, Ok(None));
        drop(client);
        // At most one watch per poll interval, all on the one connection.
        let answered = server.await.unwrap();
        assert!((3..=6).contains(&answered), "{answered} watches");
    }
}
