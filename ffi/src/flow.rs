//! The app's handle on a flow: async send and receive with timeouts, from any thread.
//!
//! A mobile app reads in one coroutine and writes in another, and closes from a third (the
//! UI's). The core's [`msocket::Flow`] is `AsyncRead + AsyncWrite` behind `&mut`, so the
//! handle keeps it in a mutex that is held only while one poll runs — never across a wait
//! — which lets a receive and a send wait at the same time (each registers its own waker
//! in the core, as `tokio::io::split` would). Closing takes the flow out of the mutex and
//! signals every waiting call, which fails with `Closed` at once instead of waiting out
//! its timeout. Each waiting call runs through [`runtime::call`], so cancelling it on the
//! foreign side drops it here.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::error::{from_flow_io, guard, MsocketError};
use crate::events::{EventStream, OpenFlow, OpenFlows};
use crate::runtime::{self, call, call_until_released, CancelToken};
use crate::types::{FlowEvent, FlowStats, PathInfo, PathPolicy};

/// Most bytes one `receive` returns, whatever the app asks for: the flow's receive window,
/// so a single call can empty it, while a wild `max_bytes` cannot make us allocate
/// gigabytes.
pub const MAX_RECEIVE: u32 = 4 * 1024 * 1024;

/// The UDL's `Flow`.
pub struct Flow {
    name: String,
    id: String,
    peer_fingerprint: String,
    flow: Mutex<Option<msocket::Flow>>,
    /// Bytes taken from the core and not yet by the app (at most one `await_received`'s
    /// worth: it reads only into an empty buffer).
    received: Mutex<Vec<u8>>,
    closed: watch::Sender<bool>,
    events: EventStream,
    open: Arc<OpenFlow>,
}

impl Flow {
    /// Wraps a flow just opened or accepted; called on the runtime (it counts the flow
    /// among `open_flows`, which watches it there).
    pub(crate) fn new(flow: msocket::Flow, open_flows: &OpenFlows) -> Flow {
        Flow {
            name: flow.name().to_string(),
            id: flow.id(),
            peer_fingerprint: flow.peer().fingerprint(),
            events: EventStream::new(flow.events()),
            open: open_flows.track(&flow),
            flow: Mutex::new(Some(flow)),
            received: Mutex::new(Vec::new()),
            closed: watch::channel(false).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<msocket::Flow>> {
        self.flow.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn closed_error(&self) -> MsocketError {
        MsocketError::Closed(format!("flow {} to {} was closed", self.id, self.name))
    }

    /// Runs `f` on the open flow, inside the runtime (the core may start tasks).
    fn with<T>(&self, f: impl FnOnce(&mut msocket::Flow) -> T) -> Result<T, MsocketError> {
        let runtime = runtime::handle()?;
        let _entered = runtime.enter();
        match self.lock().as_mut() {
            Some(flow) => Ok(f(flow)),
            None => Err(self.closed_error()),
        }
    }

    /// Runs `op` as the waiting call `what` (see [`runtime::call`]), failing it with
    /// `Closed` as soon as the flow is released.
    async fn wait<T: Send + 'static, F>(
        self: Arc<Self>,
        what: &'static str,
        timeout_ms: u32,
        cancel: Option<Arc<CancelToken>>,
        op: impl FnOnce(Arc<Self>) -> F,
    ) -> Result<T, MsocketError>
    where
        F: std::future::Future<Output = Result<T, MsocketError>> + Send + 'static,
    {
        let (closed, released) = (self.closed.subscribe(), self.closed_error());
        call_until_released(what, timeout_ms, cancel, closed, released, op(self)).await
    }

    /// The name this flow was opened for.
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// The flow's identifier, the same at both ends.
    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// The fingerprint of the peer's keys, authenticated by the handshake.
    pub fn peer_fingerprint(&self) -> String {
        self.peer_fingerprint.clone()
    }

    /// Sends all of `data` (see the UDL).
    pub async fn send(
        self: Arc<Self>,
        data: Vec<u8>,
        timeout_ms: u32,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<(), MsocketError> {
        let taken = Arc::new(AtomicU64::new(0));
        let total = data.len();
        let counted = taken.clone();
        let r = self
            .wait("send", timeout_ms, cancel, move |this| async move {
                let mut rest: &[u8] = &data;
                while !rest.is_empty() {
                    let n = std::future::poll_fn(|cx| match this.lock().as_mut() {
                        Some(flow) => Pin::new(flow).poll_write(cx, rest).map(|r| r.map_err(from_flow_io)),
                        None => Poll::Ready(Err(this.closed_error())),
                    })
                    .await?;
                    rest = &rest[n..];
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                }
                Ok(())
            })
            .await;
        match r {
            Err(MsocketError::Timeout(_)) => Err(MsocketError::Timeout(format!(
                "send did not finish within {timeout_ms} ms: the flow took {} of {total} bytes (the peer is slow \
                 to read, or no path works)",
                taken.load(Ordering::Relaxed),
            ))),
            Err(MsocketError::Cancelled(_)) => Err(MsocketError::Cancelled(format!(
                "send was cancelled after the flow took {} of {total} bytes",
                taken.load(Ordering::Relaxed),
            ))),
            other => other,
        }
    }

    /// How many received bytes are ready to take, once some are; 0 at the end of the
    /// peer's stream (see the UDL). What the core hands over goes into the flow's own
    /// buffer in the same step, so a call dropped at any point loses nothing.
    pub async fn await_received(
        self: Arc<Self>,
        max_bytes: u32,
        timeout_ms: u32,
        cancel: Option<Arc<CancelToken>>,
    ) -> Result<u32, MsocketError> {
        if max_bytes == 0 {
            return Err(MsocketError::InvalidArgument("await_received: max_bytes must be at least 1".into()));
        }
        let max = max_bytes.min(MAX_RECEIVE) as usize;
        self.wait("receive", timeout_ms, cancel, move |this| async move {
            std::future::poll_fn(|cx| {
                let mut received = this.received.lock().unwrap_or_else(|p| p.into_inner());
                if !received.is_empty() {
                    return Poll::Ready(Ok(received.len().min(max) as u32));
                }
                let mut flow = this.lock();
                let Some(flow) = flow.as_mut() else { return Poll::Ready(Err(this.closed_error())) };
                received.resize(max, 0);
                let mut rb = ReadBuf::new(&mut received);
                let r = Pin::new(flow).poll_read(cx, &mut rb);
                let n = rb.filled().len();
                received.truncate(n);
                match r {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(n as u32)),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(from_flow_io(e))),
                    Poll::Pending => {
                        // Thousands of flows may wait at once: hold no buffer meanwhile.
                        *received = Vec::new();
                        Poll::Pending
                    }
                }
            })
            .await
        })
        .await
    }

    /// Takes up to `max_bytes` of the bytes [`await_received`](Self::await_received) made
    /// ready (see the UDL).
    pub fn take_received(&self, max_bytes: u32) -> Result<Vec<u8>, MsocketError> {
        let mut received = self.received.lock().unwrap_or_else(|p| p.into_inner());
        if received.is_empty() && self.lock().is_none() {
            return Err(self.closed_error());
        }
        let n = received.len().min(max_bytes as usize);
        if n == received.len() {
            // All of it: the buffer itself goes, so an idle flow keeps none.
            return Ok(std::mem::take(&mut *received));
        }
        Ok(received.drain(..n).collect())
    }

    /// Ends our stream and waits until the peer acknowledged everything.
    pub async fn finish(self: Arc<Self>, timeout_ms: u32, cancel: Option<Arc<CancelToken>>) -> Result<(), MsocketError> {
        self.wait("finish", timeout_ms, cancel, |this| async move {
            std::future::poll_fn(|cx| match this.lock().as_mut() {
                Some(flow) => Pin::new(flow).poll_shutdown(cx).map(|r| r.map_err(from_flow_io)),
                None => Poll::Ready(Err(this.closed_error())),
            })
            .await
        })
        .await
    }

    /// The flow's next event (see the UDL); waits for it without a timeout, since a flow
    /// may go hours without one: cancel the call, or release the flow, to stop waiting.
    pub async fn next_event(self: Arc<Self>, cancel: Option<Arc<CancelToken>>) -> Result<Option<FlowEvent>, MsocketError> {
        call("next_event", u32::MAX, cancel, async move { Ok(self.events.next().await) }).await
    }

    /// Ends the flow at once with `reason`.
    pub fn abort(&self, reason: String) -> Result<(), MsocketError> {
        guard("abort", || {
            // The reason travels in a CLOSE frame; keep it short.
            let reason: String = reason.chars().take(256).collect();
            self.with(|f| f.abort(&reason))
        })
    }

    /// Lets go of the flow; waiting calls fail with `Closed`.
    pub fn release(&self) {
        let flow = self.lock().take();
        self.closed.send_replace(true);
        self.open.done();
        // Dropping finishes our stream and discards what arrives; it never waits.
        let runtime = runtime::handle().ok();
        let _entered = runtime.as_ref().map(|r| r.enter());
        drop(flow);
    }

    /// Changes the path policy (connecting side).
    pub fn set_policy(&self, policy: PathPolicy) -> Result<(), MsocketError> {
        guard("set_policy", || self.with(|f| f.set_policy(policy.into())))
    }

    /// The policy in effect.
    pub fn policy(&self) -> Result<PathPolicy, MsocketError> {
        guard("policy", || self.with(|f| f.policy().into()))
    }

    /// The live paths.
    pub fn paths(&self) -> Result<Vec<PathInfo>, MsocketError> {
        guard("paths", || self.with(|f| f.paths().into_iter().map(PathInfo::from).collect()))
    }

    /// Modelled energy of the flow so far, in joules.
    pub fn energy_joules(&self) -> Result<Option<f64>, MsocketError> {
        guard("energy_joules", || self.with(|f| f.energy_joules()))
    }

    /// Byte counters.
    pub fn stats(&self) -> Result<FlowStats, MsocketError> {
        guard("stats", || self.with(|f| f.stats().into()))
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        // The app let go of it: the core flow finishes in the background, but no longer
        // counts as one the app needs networks for.
        self.open.done();
    }
}
