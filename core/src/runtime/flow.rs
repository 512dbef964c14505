//! The application's handle on a flow.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::Conn;
use super::error::flow_io_error;
use super::events::{FlowEvents, Path};
use super::Error;
use crate::proto::{FlowStats, FlowStatus, ReadOutcome};
use crate::identity::PublicIdentity;
use crate::session::FlowId;

/// One byte stream to a named peer. Reads and writes go through `AsyncRead` and
/// `AsyncWrite`; `shutdown` sends the end of the stream and resolves once the peer has
/// acknowledged every byte written (so `Ok` means delivered). Dropping the handle finishes
/// the sending side and discards what arrives.
pub struct Flow {
    conn: Arc<Conn>,
    finished: bool,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flow({} to {:?})", self.conn.keys.flow_id, self.conn.name)
    }
}


impl Flow {
    pub(crate) fn new(conn: Arc<Conn>) -> Flow {
        Flow { conn, finished: false }
    }

    /// The service name this flow was opened for.
    pub fn name(&self) -> &str {
        &self.conn.name
    }

    /// A printable identifier of this flow (the same at both ends).
    pub fn id(&self) -> String {
        self.flow_id().to_string()
    }

    pub(crate) fn flow_id(&self) -> FlowId {
        self.conn.keys.flow_id
    }

    /// The identifier this flow's JOIN with sequence `seq` carries in clear. For tests
    /// that play an attacker who observed it on the wire; not part of the supported API.
    #[doc(hidden)]
    pub fn join_id_for_tests(&self, seq: u64) -> [u8; 16] {
        crate::session::join::join_id(&self.conn.keys.join_key, seq)
    }

    /// The peer's Noise public key, authenticated by the handshake.
    pub fn peer_key(&self) -> [u8; 32] {
        self.conn.keys.remote_static
    }

    /// The peer's public keys; `peer().fingerprint()` is what users know it by (and what
    /// allow-lists hold). The Noise key is authenticated by the handshake. On a flow this
    /// end accepted, the signing key is the one the peer claims: it only ever yields the
    /// fingerprint of that claim together with the peer's own Noise key, so no peer can
    /// pass for another's fingerprint.
    pub fn peer(&self) -> PublicIdentity {
        self.conn.peer
    }

    /// Events from now on.
    pub fn events(&self) -> FlowEvents {
        FlowEvents { rx: self.conn.subscribe() }
    }

    /// The live subflows: where each runs, and whether it is a standby.
    pub fn paths(&self) -> Vec<Path> {
        self.conn.paths()
    }

    /// Changes how this flow uses its paths (connecting side; on an accepted flow the
    /// peer decides and this does nothing).
    pub fn set_policy(&self, policy: super::PathPolicy) {
        if self.conn.role == super::conn::Role::Client {
            self.conn.set_policy(policy);
        }
    }

    /// The policy in effect: the one set on the connecting side, which the accepting side
    /// learns from its first frames.
    pub fn policy(&self) -> super::PathPolicy {
        self.conn.lock().proto.policy()
    }

    /// Modelled marginal radio energy of this flow so far, in joules, over its paths
    /// including those already gone (see [`crate::energy`]). None when no path ran over an
    /// interface of known kind.
    pub fn energy_joules(&self) -> Option<f64> {
        self.conn.lock().energy_joules()
    }

    /// Byte counters.
    pub fn stats(&self) -> FlowStats {
        self.conn.lock().proto.stats()
    }

    /// Ends the flow at once with `reason`; the peer's reads and writes fail with it.
    pub fn abort(&self, reason: &str) {
        let mut inner = self.conn.lock();
        inner.proto.abort(crate::proto::CLOSE_APPLICATION, reason);
        self.conn.settle(&mut inner);
    }

    /// Ends a flow nobody will accept: the peer's flow fails with
    /// [`FlowError::NotAccepted`](crate::FlowError::NotAccepted).
    pub(crate) fn refuse(&self) {
        let mut inner = self.conn.lock();
        inner.proto.abort(crate::proto::CLOSE_NOT_ACCEPTED, "not accepted");
        self.conn.settle(&mut inner);
    }

    /// Resolves once the flow is over and every subflow has sent what it owed (our end of
    /// stream, the last acknowledgement) and closed: `Ok` after a clean finish — both sides
    /// ended their streams and everything was acknowledged and read — or the reason it
    /// failed. Does not borrow the flow, so it can be awaited after the flow was handed to
    /// a copy loop; bound it with a timeout, since it waits for the peer as well.
    pub fn closed(&self) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'static {
        let conn = self.conn.clone();
        async move {
            conn.quiet().await;
            match conn.lock().proto.status() {
                FlowStatus::Failed(e) => Err(Error::Flow(e)),
                _ => Ok(()),
            }
        }
    }

    /// A blocking handle for threads outside the async runtime.
    pub fn into_blocking(self, runtime: tokio::runtime::Handle) -> BlockingFlow {
        BlockingFlow { flow: self, runtime, timeout: None }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let mut inner = self.conn.lock();
        inner.app_gone = true;
        let _ = inner.proto.finish();
        self.conn.settle(&mut inner);
    }
}

/// Reads and writes at least this large copy outside the flow's lock (see
/// [`Conn::write_copied`]), which the subflows' tasks need all the time; smaller ones copy
/// under it.
const COPY_BEFORE_LOCK: usize = 16 * 1024;

impl AsyncRead for Flow {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // A large read takes the payloads under the lock and copies them out after it.
        let large = buf.remaining() >= COPY_BEFORE_LOCK;
        let mut chunks = Vec::new();
        let outcome = {
            let mut inner = self.conn.lock();
            let outcome = match large {
                true => inner.proto.read_chunks(buf.remaining(), &mut chunks),
                false => inner.proto.read(buf.initialize_unfilled()),
            };
            match outcome {
                Ok(ReadOutcome::Data(_)) => self.conn.settle(&mut inner),
                Ok(ReadOutcome::Blocked) => inner.read_waker = Some(cx.waker().clone()),
                _ => {}
            }
            outcome
        };
        match outcome {
            Ok(ReadOutcome::Data(n)) => {
                match large {
                    true => chunks.iter().for_each(|chunk| buf.put_slice(chunk)),
                    false => buf.advance(n),
                }
                Poll::Ready(Ok(()))
            }
            Ok(ReadOutcome::Fin) => Poll::Ready(Ok(())),
            Ok(ReadOutcome::Blocked) => Poll::Pending,
            Err(e) => Poll::Ready(Err(flow_io_error(e))),
        }
    }
}

impl AsyncWrite for Flow {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if data.len() >= COPY_BEFORE_LOCK {
            match self.conn.write_copied(data) {
                Ok(0) => {}
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) => return Poll::Ready(Err(flow_io_error(e))),
            }
        }
        let mut inner = self.conn.lock();
        match inner.proto.write(data) {
            Ok(0) => {
                inner.write_waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Ok(n) => {
                self.conn.settle(&mut inner);
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(flow_io_error(e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let conn = self.conn.clone();
        let mut inner = conn.lock();
        if !self.finished {
            if let Err(e) = inner.proto.finish() {
                return Poll::Ready(Err(flow_io_error(e)));
            }
            self.finished = true;
            conn.settle(&mut inner);
        }
        if let FlowStatus::Failed(e) = inner.proto.status() {
            return Poll::Ready(Err(flow_io_error(e)));
        }
        let stats = inner.proto.stats();
        if stats.bytes_acked >= stats.bytes_written {
            return Poll::Ready(Ok(()));
        }
        inner.shutdown_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A [`Flow`] with blocking `Read` and `Write`, for threads that are not async. Calls
/// block the calling thread on the runtime given to [`Flow::into_blocking`]; never call
/// them from inside that runtime.
#[derive(Debug)]
pub struct BlockingFlow {
    flow: Flow,
    runtime: tokio::runtime::Handle,
    timeout: Option<Duration>,
}

impl BlockingFlow {
    /// Bounds every read, write and shutdown (`None`: wait as long as the flow lives).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// The async flow inside.
    pub fn get_ref(&self) -> &Flow {
        &self.flow
    }

    /// Sends the end of the stream and waits until the peer acknowledged every byte.
    pub fn shutdown(&mut self) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let (flow, t) = (&mut self.flow, self.timeout);
        self.runtime.block_on(with_timeout(t, flow.shutdown()))
    }
}

async fn with_timeout<T>(t: Option<Duration>, f: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    match t {
        None => f.await,
        Some(t) => tokio::time::timeout(t, f)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "flow operation timed out"))),
    }
}

impl io::Read for BlockingFlow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use tokio::io::AsyncReadExt;
        let (flow, t) = (&mut self.flow, self.timeout);
        self.runtime.block_on(with_timeout(t, flow.read(buf)))
    }
}

impl io::Write for BlockingFlow {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use tokio::io::AsyncWriteExt;
        let (flow, t) = (&mut self.flow, self.timeout);
        self.runtime.block_on(with_timeout(t, flow.write(buf)))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
