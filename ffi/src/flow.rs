//! The app's handle on a flow: blocking send and receive with timeouts, from any thread.
//!
//! A mobile app reads on one thread and writes on another, and closes from a third (the
//! UI's). The core's [`msocket::Flow`] is `AsyncRead + AsyncWrite` behind `&mut`, so the
//! handle keeps it in a mutex that is held only while one poll runs — never across a wait
//! — which lets a receive and a send wait at the same time (each registers its own waker
//! in the core, as `tokio::io::split` would). Closing takes the flow out of the mutex and
//! signals every waiting call, which fails with `Closed` at once instead of waiting out
//! its timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::error::{from_flow_io, guard, MsocketError};
use crate::events::EventPump;
use crate::runtime::{self, block_on};
use crate::types::{FlowStats, PathInfo, PathPolicy};
use crate::FlowListener;

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
    closed: watch::Sender<bool>,
    pump: Mutex<Option<EventPump>>,
}

impl Flow {
    pub(crate) fn new(flow: msocket::Flow) -> Flow {
        Flow {
            name: flow.name().to_string(),
            id: flow.id(),
            peer_fingerprint: flow.peer().fingerprint(),
            flow: Mutex::new(Some(flow)),
            closed: watch::channel(false).0,
            pump: Mutex::new(None),
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

    /// Waits for `op` to finish, for `timeout_ms`, or for the flow to be closed.
    fn wait<T>(
        &self,
        what: &str,
        timeout_ms: u32,
        op: impl std::future::Future<Output = Result<T, MsocketError>>,
    ) -> Result<T, MsocketError> {
        let mut closed = self.closed.subscribe();
        block_on(what, timeout_ms, async {
            tokio::select! {
                r = op => r,
                _ = closed.wait_for(|c| *c) => Err(self.closed_error()),
            }
        })
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
    pub fn send(&self, data: Vec<u8>, timeout_ms: u32) -> Result<(), MsocketError> {
        guard("send", || {
            let taken = AtomicU64::new(0);
            let all = async {
                let mut rest: &[u8] = &data;
                while !rest.is_empty() {
                    let n = std::future::poll_fn(|cx| match self.lock().as_mut() {
                        Some(flow) => Pin::new(flow).poll_write(cx, rest).map(|r| r.map_err(from_flow_io)),
                        None => Poll::Ready(Err(self.closed_error())),
                    })
                    .await?;
                    rest = &rest[n..];
                    taken.fetch_add(n as u64, Ordering::Relaxed);
                }
                Ok(())
            };
            match self.wait("send", timeout_ms, all) {
                Err(MsocketError::Timeout(_)) => Err(MsocketError::Timeout(format!(
                    "send did not finish within {timeout_ms} ms: the flow took {} of {} bytes (the peer is slow \
                     to read, or no path works)",
                    taken.load(Ordering::Relaxed),
                    data.len()
                ))),
                other => other,
            }
        })
    }

    /// Up to `max_bytes` bytes, or None at the end of the peer's stream (see the UDL).
    pub fn receive(&self, max_bytes: u32, timeout_ms: u32) -> Result<Option<Vec<u8>>, MsocketError> {
        guard("receive", || {
            if max_bytes == 0 {
                return Err(MsocketError::InvalidArgument("receive: max_bytes must be at least 1".into()));
            }
            let mut buf = vec![0u8; max_bytes.min(MAX_RECEIVE) as usize];
            let n = self.wait("receive", timeout_ms, async {
                std::future::poll_fn(|cx| match self.lock().as_mut() {
                    Some(flow) => {
                        let mut rb = ReadBuf::new(&mut buf);
                        match Pin::new(flow).poll_read(cx, &mut rb) {
                            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
                            Poll::Ready(Err(e)) => Poll::Ready(Err(from_flow_io(e))),
                            Poll::Pending => Poll::Pending,
                        }
                    }
                    None => Poll::Ready(Err(self.closed_error())),
                })
                .await
            })?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some(buf))
        })
    }

    /// Ends our stream and waits until the peer acknowledged everything.
    pub fn finish(&self, timeout_ms: u32) -> Result<(), MsocketError> {
        guard("finish", || {
            self.wait("finish", timeout_ms, async {
                std::future::poll_fn(|cx| match self.lock().as_mut() {
                    Some(flow) => Pin::new(flow).poll_shutdown(cx).map(|r| r.map_err(from_flow_io)),
                    None => Poll::Ready(Err(self.closed_error())),
                })
                .await
            })
        })
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

    /// Sends events from now on to `listener` (None: stop).
    pub fn set_listener(&self, listener: Option<Box<dyn FlowListener>>) -> Result<(), MsocketError> {
        guard("set_listener", || {
            let mut pump = self.pump.lock().unwrap_or_else(|p| p.into_inner());
            // The old listener stops before the new one starts, so no event reaches both.
            pump.take();
            if let Some(listener) = listener {
                let events = self.with(|f| f.events())?;
                *pump = Some(EventPump::start(runtime::handle()?, events, listener)?);
            }
            Ok(())
        })
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        // The event thread ends on its own after the Closed event; a flow dropped by the
        // app without release() keeps delivering until then, like one closed explicitly.
        if let Some(pump) = self.pump.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            pump.detach();
        }
    }
}
