//! The one connection that carries all of a client's watches.
//!
//! Every open flow of a client watches its peer's name, so a client with a hundred flows
//! has a hundred watches in progress; one connection each would cost the name server a
//! hundred sockets per client (and used to exhaust its connection limit, which made
//! lookups wait a minute in the listen backlog). Requests carry ids and the server answers
//! in any order, so all of a client's watches share one connection per local address,
//! whose task writes the requests and hands each answer to the watch it belongs to.
//!
//! * The connection is opened by the first watch that needs it (the others wait for that
//!   connect rather than opening their own) and closed once no watch has used it for
//!   [`LINGER`]: a client re-watches at once after a change, so the next watch usually
//!   finds it open.
//! * The server acknowledges a parked watch at once (`Watching`), so a watch that hears
//!   nothing within the client's timeout knows the connection is dead (the phone moved,
//!   the path broke) and [`Connection::kill`]s it: every watch on it fails at once (and is
//!   retried by its owner), and the next one opens a fresh connection.
//! * A watch whose future is dropped sends `Cancel`, so the server forgets it.
//! * The connection is an authenticated channel: the first watch rides in the handshake's
//!   hello, and requests made before the server's welcome wait for it (they can only be
//!   sealed once the channel is up).
//!
//! Memory is bounded by the watches in progress: each holds one entry in its connection's
//! table, removed when answered, cancelled or failed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, OnceCell};
use tokio::task::AbortHandle;

use super::super::protocol::secure::{Channel, ClientHello};
use super::super::protocol::{read_message, write_message, FrameError, Request, Response, CONNECTION_ID};
use super::super::{ExchangeStep, NameError};
use super::attribute;
use crate::identity::Fingerprint;

/// How long a connection with no watch on it stays open for the next one.
pub(super) const LINGER: Duration = Duration::from_secs(1);

/// What the connection's task hands a watch: an answer to its request, or why the
/// connection failed.
pub(super) type Event = Result<Response, NameError>;

/// The connections of one client, by the local address they leave from.
#[derive(Debug, Default)]
pub(super) struct Connections {
    table: Arc<Mutex<HashMap<Option<IpAddr>, Arc<Connection>>>>,
    serial: AtomicU64,
}

type Table = Mutex<HashMap<Option<IpAddr>, Arc<Connection>>>;

fn lock(table: &Table) -> MutexGuard<'_, HashMap<Option<IpAddr>, Arc<Connection>>> {
    // Every operation leaves the map consistent; a panic elsewhere cannot break it.
    table.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connections {
    /// The connection from `from`, opened with `connect` if there is none: one connect
    /// however many watches ask at once; they all get its outcome.
    pub(super) async fn acquire<F>(
        &self,
        from: Option<IpAddr>,
        server: &str,
        pin: Option<Fingerprint>,
        connect: F,
    ) -> Result<User, NameError>
    where
        F: std::future::Future<Output = Result<TcpStream, NameError>>,
    {
        let conn = {
            let mut table = lock(&self.table);
            let conn = table
                .entry(from)
                .or_insert_with(|| {
                    Arc::new(Connection {
                        serial: self.serial.fetch_add(1, Ordering::Relaxed),
                        from,
                        link: OnceCell::new(),
                        users: AtomicUsize::new(0),
                    })
                })
                .clone();
            // Counted under the table's lock: a lingering connection closes only when it
            // sees no user under that lock, so it cannot close under a new one.
            conn.users.fetch_add(1, Ordering::SeqCst);
            conn
        };
        let user = User { conn: Arc::clone(&conn), table: Arc::downgrade(&self.table) };
        let link = conn
            .link
            .get_or_init(|| async {
                match connect.await {
                    Ok(stream) => Ok(Link::start(
                        stream,
                        server.to_string(),
                        pin,
                        Arc::clone(&conn),
                        Arc::downgrade(&self.table),
                    )),
                    Err(e) => {
                        // Forget it, so the next watch tries again.
                        forget(&self.table, &conn);
                        Err(e)
                    }
                }
            })
            .await;
        match link {
            Ok(_) => Ok(user),
            Err(e) => Err(e.clone()),
        }
    }

    /// How many connections are open or opening.
    #[cfg(test)]
    pub(super) fn count(&self) -> usize {
        lock(&self.table).len()
    }
}

/// Removes `conn` from `table` if it is still the entry for its address.
fn forget(table: &Table, conn: &Arc<Connection>) {
    let mut table = lock(table);
    if table.get(&conn.from).is_some_and(|c| c.serial == conn.serial) {
        table.remove(&conn.from);
    }
}

/// One shared connection.
#[derive(Debug)]
pub(super) struct Connection {
    serial: u64,
    from: Option<IpAddr>,
    link: OnceCell<Result<Link, NameError>>,
    /// Watches holding it (see [`User`]).
    users: AtomicUsize,
}

/// A watch's hold on a connection; released when dropped.
#[derive(Debug)]
pub(super) struct User {
    conn: Arc<Connection>,
    table: Weak<Table>,
}

impl Drop for User {
    fn drop(&mut self) {
        self.conn.users.fetch_sub(1, Ordering::SeqCst);
    }
}

impl User {
    /// Sends `request` with a fresh id; its answers come through the returned [`Call`].
    pub(super) fn call(&self, request: &Request) -> Result<Call, NameError> {
        let Some(Ok(link)) = self.conn.link.get() else {
            return Err(NameError::Store("watch connection used before it was open".into()));
        };
        let id = link.next_id();
        let (events, rx) = mpsc::unbounded_channel();
        link.commands
            .send(Command::Send { id, body: request.encode_tagged(id), events })
            .map_err(|_| link.gone())?;
        Ok(Call { id, rx, commands: link.commands.clone(), server: link.server.clone(), done: false })
    }

    /// Closes the connection at once: every call on it fails, and the next watch opens a
    /// new one. For a connection found dead.
    pub(super) fn kill(&self) {
        if let Some(table) = self.table.upgrade() {
            forget(&table, &self.conn);
        }
        if let Some(Ok(link)) = self.conn.link.get() {
            link.task.abort();
        }
    }
}

/// One request in flight on a shared connection. Dropped before its final answer, it
/// cancels the request.
#[derive(Debug)]
pub(super) struct Call {
    id: u32,
    rx: mpsc::UnboundedReceiver<Event>,
    commands: mpsc::UnboundedSender<Command>,
    server: String,
    done: bool,
}

impl Call {
    /// The next answer. A connection that closed is [`NameError::Unreachable`].
    pub(super) async fn next(&mut self) -> Event {
        match self.rx.recv().await {
            Some(event) => {
                if !matches!(event, Ok(Response::Watching)) {
                    self.done = true;
                }
                event
            }
            None => {
                self.done = true;
                Err(NameError::Unreachable {
                    server: self.server.clone(),
                    step: ExchangeStep::Receive,
                    kind: std::io::ErrorKind::ConnectionAborted,
                })
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.commands.send(Command::Cancel { id: self.id });
        }
    }
}

#[derive(Debug)]
enum Command {
    Send { id: u32, body: Vec<u8>, events: mpsc::UnboundedSender<Event> },
    Cancel { id: u32 },
}

/// An open connection: the way to its task.
#[derive(Debug)]
struct Link {
    commands: mpsc::UnboundedSender<Command>,
    next_id: AtomicU32,
    task: AbortHandle,
    server: String,
}

impl Link {
    fn start(stream: TcpStream, server: String, pin: Option<Fingerprint>, conn: Arc<Connection>, table: Weak<Table>) -> Link {
        let (commands, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(stream, rx, server.clone(), pin, conn, table)).abort_handle();
        Link { commands, next_id: AtomicU32::new(1), task, server }
    }

    /// Ids start at 1 and skip 0 when they wrap (0 names the connection).
    fn next_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != CONNECTION_ID {
                return id;
            }
        }
    }

    fn gone(&self) -> NameError {
        NameError::Unreachable {
            server: self.server.clone(),
            step: ExchangeStep::Send,
            kind: std::io::ErrorKind::ConnectionAborted,
        }
    }
}

/// How long writing one request may take before the connection counts as dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The handshake's progress on a connection.
enum Handshake {
    /// Nothing sent yet: the first request will ride in the hello.
    NotStarted,
    /// The hello is out; requests made meanwhile wait here for the welcome.
    Hello(ClientHello, Vec<Vec<u8>>),
    /// The channel is up.
    Open(Channel),
}

/// Writes one frame, within [`WRITE_TIMEOUT`].
async fn write_frame(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    frame: &[u8],
    server: &str,
) -> Result<(), NameError> {
    match tokio::time::timeout(WRITE_TIMEOUT, write_message(writer, frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(FrameError::Io(e))) => {
            Err(NameError::Unreachable { server: server.to_string(), step: ExchangeStep::Send, kind: e.kind() })
        }
        Ok(Err(e)) => Err(NameError::Malformed(e.to_string())),
        Err(_) => Err(NameError::Unreachable {
            server: server.to_string(),
            step: ExchangeStep::Send,
            kind: std::io::ErrorKind::TimedOut,
        }),
    }
}

/// Sends a request body: in the hello if it is the first, sealed once the channel is up,
/// queued in between.
async fn send(
    handshake: &mut Handshake,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    body: Vec<u8>,
    server: &str,
) -> Result<(), NameError> {
    match handshake {
        Handshake::NotStarted => {
            let (hello, first) = ClientHello::new(&body)?;
            *handshake = Handshake::Hello(hello, Vec::new());
            write_frame(writer, &first, server).await
        }
        Handshake::Hello(_, queued) => {
            queued.push(body);
            Ok(())
        }
        Handshake::Open(channel) => write_frame(writer, &channel.seal(&body)?, server).await,
    }
}

/// The connection's task: writes requests, routes answers, closes when unused or broken.
async fn run(
    stream: TcpStream,
    mut commands: mpsc::UnboundedReceiver<Command>,
    server: String,
    pin: Option<Fingerprint>,
    conn: Arc<Connection>,
    table: Weak<Table>,
) {
    let (mut reader, mut writer) = stream.into_split();
    // Frames are read on a task of their own: a read cut short by `select!` would lose
    // the bytes it had.
    let (frames_tx, mut frames) = mpsc::channel::<Result<Vec<u8>, FrameError>>(16);
    let read_task = tokio::spawn(async move {
        loop {
            let frame = read_message(&mut reader).await;
            let failed = frame.is_err();
            if frames_tx.send(frame).await.is_err() || failed {
                return;
            }
        }
    });
    let _stop_reading = AbortOnDrop(read_task.abort_handle());
    let mut handshake = Handshake::NotStarted;
    let mut pending: HashMap<u32, mpsc::UnboundedSender<Event>> = HashMap::new();
    let unreachable = |step, kind| NameError::Unreachable { server: server.clone(), step, kind };
    let failure: NameError = loop {
        let idle = pending.is_empty();
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Send { id, body, events }) => {
                    pending.insert(id, events);
                    if let Err(e) = send(&mut handshake, &mut writer, body, &server).await {
                        break e;
                    }
                }
                Some(Command::Cancel { id }) => {
                    if pending.remove(&id).is_some() {
                        if let Err(e) = send(&mut handshake, &mut writer, Request::Cancel.encode_tagged(id), &server).await {
                            break e;
                        }
                    }
                }
                // Every handle is gone: nobody can watch on it any more.
                None => return,
            },
            frame = frames.recv() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(FrameError::Io(e))) => break unreachable(ExchangeStep::Receive, e.kind()),
                    Some(Err(FrameError::TooLong(len))) => {
                        break NameError::Malformed(format!("answer of {len} bytes is too long"))
                    }
                    Some(Err(FrameError::Closed)) | None => {
                        break unreachable(ExchangeStep::Receive, std::io::ErrorKind::UnexpectedEof)
                    }
                };
                let body = match std::mem::replace(&mut handshake, Handshake::NotStarted) {
                    Handshake::Open(channel) => {
                        let body = channel.open(&frame);
                        handshake = Handshake::Open(channel);
                        match body {
                            Ok(body) => body,
                            Err(e) => break attribute(e, &server),
                        }
                    }
                    Handshake::Hello(hello, queued) => {
                        let welcome = match hello.finish(&frame, pin.as_ref()) {
                            Ok(welcome) => welcome,
                            Err(e) => break attribute(e, &server),
                        };
                        tracing::trace!(%server, key = %welcome.server.fingerprint(), "watch channel open");
                        handshake = Handshake::Open(welcome.channel);
                        let mut flushed = Ok(());
                        for body in queued {
                            flushed = send(&mut handshake, &mut writer, body, &server).await;
                            if flushed.is_err() {
                                break;
                            }
                        }
                        if let Err(e) = flushed {
                            break e;
                        }
                        welcome.response
                    }
                    Handshake::NotStarted => {
                        break attribute(
                            NameError::Unauthenticated { server: String::new(), reason: "the server spoke first".into() },
                            &server,
                        )
                    }
                };
                match Response::decode_tagged(&body) {
                    Ok((CONNECTION_ID, Response::Refused { code, current_seq, message })) => {
                        break Response::refusal_error(code, current_seq, &message, "", 0);
                    }
                    Ok((id, response)) => {
                        let last = !matches!(response, Response::Watching);
                        if let Some(events) = pending.get(&id) {
                            let _ = events.send(Ok(response));
                            if last {
                                pending.remove(&id);
                            }
                        }
                        // Else an answer to a cancelled request: ignored.
                    }
                    Err(e) => {
                        tracing::warn!(%server, error = %e, "name server sent a malformed answer; closing the watch connection");
                        break e;
                    }
                }
            }
            () = tokio::time::sleep(LINGER), if idle => {
                // Unused for a while: close, unless a watch took it meanwhile.
                let Some(table) = table.upgrade() else { return };
                let mut table = lock(&table);
                if conn.users.load(Ordering::SeqCst) == 0 {
                    if table.get(&conn.from).is_some_and(|c| c.serial == conn.serial) {
                        table.remove(&conn.from);
                    }
                    return;
                }
            }
        }
    };
    tracing::debug!(%server, error = %failure, watches = pending.len(), "watch connection failed");
    if let Some(table) = table.upgrade() {
        forget(&table, &conn);
    }
    for (_, events) in pending {
        let _ = events.send(Err(failure.clone()));
    }
}

struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
