//! One client connection: requests in, answers out, in any order.
//!
//! Three parts run at once, so nothing waits behind anything else:
//! * a reader task reads frames off the socket (a read cut short would lose bytes, so it
//!   is never cancelled but with the connection) and hands them over one at a time, which
//!   also pushes back on a client that sends faster than it is served;
//! * the connection's loop starts a task per request: a lookup or registration runs on
//!   the store's blocking pool (at most [`MAX_IN_FLIGHT`] per connection), a watch parks
//!   until a registration wakes it or its wait ends;
//! * a writer task sends the answers, each within [`WRITE_TIMEOUT`].
//!
//! The connection is an authenticated channel (`name_protocol::secure`): the first frame
//! is the client's hello, whose request is served like any other; the first answer goes
//! out in the welcome, which sets up the channel; every later frame is sealed. A first
//! frame of an older protocol version gets a refusal in that version's layout.
//!
//! The connection ends when the client closes it (parked watches are dropped at once),
//! sends something malformed (it is told why first), stays silent with nothing in flight
//! for the idle timeout, cannot be written to, must make room for another source's, or
//! the server stops (parked watches are answered `Unchanged` first).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::{Mutex, OnceLock};

use msocket::name::{validate_name, NameError, SignedRecord};
use msocket::unstable::name_protocol::secure::{Channel, ServerHello};
use msocket::unstable::name_protocol::{
    other_version_refusal, read_message, write_message, FrameError, Request, Response, CONNECTION_ID,
};
use msocket::Identity;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::admission::{self, Admission};
use super::{refusal_logged, NameServer, Source, WRITE_TIMEOUT};

/// Most lookups and registrations in progress per connection; further requests wait in
/// the socket.
pub const MAX_IN_FLIGHT: usize = 32;
/// Answers queued for the writer per connection.
const OUT_QUEUE: usize = 64;

/// Why a connection ends.
#[derive(Debug)]
enum End {
    /// Closed by the client, or broken.
    Gone,
    /// Silent too long with nothing in flight.
    Idle,
    /// Sent something that is not a request: told why, then closed.
    Malformed,
    /// Closed to make room for another source's connection.
    Evicted,
    /// The writer could not deliver an answer in time.
    Unwritable,
    /// The server is stopping.
    Stopping,
}

/// What the writer sends.
#[derive(Debug)]
pub(super) enum Out {
    /// A request's answer: in the welcome if it is the first, else sealed.
    Message(Vec<u8>),
    /// Bytes as they are (a refusal for a client of an older version).
    Plain(Vec<u8>),
}

/// The frame carrying `out`: the welcome (which opens `channel`) for the first answer,
/// sealed in `channel` after.
fn seal(out: Out, identity: &Identity, hello: &Mutex<Option<ServerHello>>, channel: &OnceLock<Channel>) -> Result<Vec<u8>, NameError> {
    let body = match out {
        Out::Plain(bytes) => return Ok(bytes),
        Out::Message(body) => body,
    };
    if let Some(open) = channel.get() {
        return open.seal(&body);
    }
    let Some(accepted) = hello.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return Err(NameError::Malformed("an answer before the hello".into()));
    };
    let (welcome, open) = accepted.reply(identity, &body)?;
    // Set before the welcome is written: the client's next message finds the channel.
    let _ = channel.set(open);
    Ok(welcome)
}

/// A request in progress: its id, and the task answering it.
#[derive(Debug)]
struct InFlight {
    id: u32,
    task: AbortHandle,
    watch: bool,
}

impl NameServer {
    /// Serves one connection from `peer` until it ends (see the module doc).
    pub(super) async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        mut stop: watch::Receiver<()>,
        admitted: admission::Connection,
        admission: Arc<Admission>,
    ) {
        let _ = stream.set_nodelay(true);
        let source = Source::of(peer.ip());
        tracing::debug!(%peer, "connection opened");
        let (mut reader, mut writer) = stream.into_split();

        let hello: Arc<Mutex<Option<ServerHello>>> = Arc::default();
        let channel: Arc<OnceLock<Channel>> = Arc::default();
        let (out, mut answers) = mpsc::channel::<Out>(OUT_QUEUE);
        let mut write_task = {
            let (identity, hello, channel) = (Arc::clone(&self.identity), Arc::clone(&hello), Arc::clone(&channel));
            tokio::spawn(async move {
                while let Some(out) = answers.recv().await {
                    let frame = match seal(out, &identity, &hello, &channel) {
                        Ok(frame) => frame,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "cannot seal an answer; closing");
                            return false;
                        }
                    };
                    if !matches!(tokio::time::timeout(WRITE_TIMEOUT, write_message(&mut writer, &frame)).await, Ok(Ok(()))) {
                        return false;
                    }
                }
                true
            })
        };
        let (frames_tx, mut frames) = mpsc::channel::<Result<Vec<u8>, FrameError>>(1);
        let read_task = tokio::spawn(async move {
            loop {
                let frame = read_message(&mut reader).await;
                let last = frame.is_err();
                if frames_tx.send(frame).await.is_err() || last {
                    return;
                }
            }
        });

        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, InFlight> = HashMap::new();
        let mut ids: HashMap<u32, tokio::task::Id> = HashMap::new();
        let requests = |in_flight: &HashMap<tokio::task::Id, InFlight>| in_flight.values().filter(|r| !r.watch).count();
        // The first frame must be the hello (or a refusable older version).
        let mut first = true;
        let end = loop {
            let idle = in_flight.is_empty();
            let room = requests(&in_flight) < MAX_IN_FLIGHT;
            tokio::select! {
                // The sender is dropped at shutdown.
                _ = stop.changed() => break End::Stopping,
                () = admitted.close.notified() => break End::Evicted,
                written = &mut write_task => {
                    let _ = written;
                    break End::Unwritable;
                }
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let task = match &done {
                        Ok((task, ())) => *task,
                        Err(e) => e.id(),
                    };
                    if let Some(request) = in_flight.remove(&task) {
                        ids.remove(&request.id);
                    }
                }
                () = tokio::time::sleep(self.idle_timeout), if idle => break End::Idle,
                frame = frames.recv(), if room => {
                    let body = match frame {
                        Some(Ok(body)) => body,
                        Some(Err(e @ FrameError::TooLong(_))) => {
                            tracing::warn!(%peer, error = %e, "oversized request; closing");
                            if channel.get().is_some() {
                                let refusal = Response::refusal(&NameError::Malformed(e.to_string()));
                                let _ = out.send(Out::Message(refusal.encode_tagged(CONNECTION_ID))).await;
                            }
                            break End::Malformed;
                        }
                        Some(Err(FrameError::Io(e))) => {
                            tracing::debug!(%peer, error = %e, "connection failed");
                            break End::Gone;
                        }
                        Some(Err(FrameError::Closed)) | None => break End::Gone,
                    };
                    let body = match channel.get() {
                        Some(channel) => match channel.open(&body) {
                            Ok(body) => body,
                            Err(e) => {
                                tracing::warn!(%peer, error = %e, "a message failed authentication; closing");
                                break End::Malformed;
                            }
                        },
                        None if first => {
                            first = false;
                            if let Some(refusal) = other_version_refusal(&body) {
                                tracing::info!(%peer, version = body[0], "client of an older name protocol refused");
                                let _ = out.send(Out::Plain(refusal)).await;
                                break End::Malformed;
                            }
                            match ServerHello::read(&self.identity, &body) {
                                Ok((accepted, request)) => {
                                    *hello.lock().unwrap_or_else(|p| p.into_inner()) = Some(accepted);
                                    request
                                }
                                Err(e) => {
                                    tracing::warn!(%peer, error = %e, "not a name protocol hello; closing");
                                    break End::Malformed;
                                }
                            }
                        }
                        None => {
                            tracing::warn!(%peer, "a second message before the welcome; closing");
                            break End::Malformed;
                        }
                    };
                    let (id, request) = match Request::decode_tagged(&body) {
                        Ok((id, request)) if ids.contains_key(&id) && request != Request::Cancel => {
                            (id, Err(NameError::Malformed(format!("request id {id} is already in flight"))))
                        }
                        Ok((id, request)) => (id, Ok(request)),
                        Err(e) => (Request::peek_id(&body), Err(e)),
                    };
                    let request = match request {
                        Ok(request) => request,
                        Err(e) => {
                            self.metrics.refusal(&e);
                            tracing::warn!(%peer, error = %e, "malformed request; closing");
                            let _ = out.send(Out::Message(Response::refusal(&e).encode_tagged(id))).await;
                            break End::Malformed;
                        }
                    };
                    let (task, watch) = match request {
                        Request::Cancel => {
                            if let Some(request) = ids.get(&id).and_then(|task| in_flight.get(task)) {
                                if request.watch {
                                    tracing::debug!(%peer, id, "watch cancelled");
                                    request.task.abort();
                                }
                            }
                            continue;
                        }
                        Request::Watch { name, after_seq, wait_ms } => {
                            self.metrics.request(super::metrics::RequestKind::Watch);
                            let this = Arc::clone(&self);
                            let (out, stop, admission) = (out.clone(), stop.clone(), Arc::clone(&admission));
                            let task = tasks.spawn(async move {
                                let answer = this.watch(&name, after_seq, wait_ms, id, &out, stop, &admission, source, peer).await;
                                let _ = out.send(Out::Message(answer.encode_tagged(id))).await;
                            });
                            (task, true)
                        }
                        request => {
                            let this = Arc::clone(&self);
                            let out = out.clone();
                            let task = tasks.spawn(async move {
                                let answer = this.handle(request, peer).await;
                                let _ = out.send(Out::Message(answer.encode_tagged(id))).await;
                            });
                            (task, false)
                        }
                    };
                    ids.insert(id, task.id());
                    in_flight.insert(task.id(), InFlight { id, task, watch });
                }
            }
        };
        read_task.abort();
        match end {
            End::Stopping => {
                // Parked watches answer `Unchanged` on the stop signal; requests finish.
                // The server's shutdown grace bounds this.
                while tasks.join_next().await.is_some() {}
            }
            End::Malformed => tasks.shutdown().await,
            End::Gone | End::Idle | End::Evicted | End::Unwritable => {
                tasks.shutdown().await;
                tracing::debug!(%peer, reason = ?end, "connection closing");
            }
        }
        drop(out);
        if !matches!(end, End::Unwritable) {
            // Deliver what is queued (a refusal, the shutdown's answers), then close.
            let _ = tokio::time::timeout(WRITE_TIMEOUT, &mut write_task).await;
        }
        write_task.abort();
        drop(admitted);
        tracing::debug!(%peer, "connection closed");
    }

    /// Answers a `Watch`: at once if the store holds a live record of `name` above
    /// `after_seq`; else acknowledges it (`Watching`) and answers when a registration
    /// brings one, or `Unchanged` after the wait (capped) or at shutdown. Parked watches
    /// are counted per source and in all; over the limits the watch is refused `Busy`.
    #[allow(clippy::too_many_arguments)]
    async fn watch(
        self: &Arc<Self>,
        name: &str,
        after_seq: u64,
        wait_ms: u32,
        id: u32,
        out: &mpsc::Sender<Out>,
        mut stop: watch::Receiver<()>,
        admission: &Arc<Admission>,
        source: Source,
        peer: SocketAddr,
    ) -> Response {
        if let Err(e) = validate_name(name) {
            tracing::debug!(%peer, %name, error = %e, "watch refused");
            return Response::refusal(&e);
        }
        let wait = Duration::from_millis(wait_ms.into()).min(self.watch_cap);
        let now = Instant::now();
        let deadline = now.checked_add(wait).unwrap_or(now);
        // Subscribe before the first check, so a registration in between still wakes us.
        let mut changes = self.changes.subscribe(name);
        let mut parked: Option<admission::Watch> = None;
        loop {
            match self.newer_record(name, after_seq).await {
                Ok(Some(record)) => {
                    tracing::debug!(%peer, %name, seq = record.record.seq, "watch answered");
                    return Response::Record(record);
                }
                Ok(None) => {}
                Err(e) => return refusal_logged(&e),
            }
            if parked.is_none() {
                match admission.watch(source) {
                    Ok(watch) => parked = Some(watch),
                    Err(e) => {
                        self.metrics.refusal(&e);
                        tracing::info!(%peer, %name, error = %e, "watch refused");
                        return Response::refusal(&e);
                    }
                }
                tracing::debug!(%peer, %name, after_seq, ?wait, "watch parked");
                if out.send(Out::Message(Response::Watching.encode_tagged(id))).await.is_err() {
                    return Response::Unchanged;
                }
            }
            tokio::select! {
                () = changes.changed() => {}
                () = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(%peer, %name, "watch unchanged");
                    return Response::Unchanged;
                }
                // The sender is dropped at shutdown: answer now rather than hold it up.
                _ = stop.changed() => return Response::Unchanged,
            }
        }
    }

    /// The live record of `name` above `after_seq`, if the store holds one.
    async fn newer_record(self: &Arc<Self>, name: &str, after_seq: u64) -> Result<Option<SignedRecord>, NameError> {
        let key = name.to_string();
        match self.run_store(&self.watch_reads, move |this, now| this.lookup_blocking(&key, now)).await {
            Ok(record) if record.record.seq > after_seq => Ok(Some(record)),
            // No live record above `after_seq` yet: wait for one.
            Ok(_) | Err(NameError::NotFound(_)) | Err(NameError::Expired) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
