//! The SDK's own tokio runtime, and how the foreign side's async calls run on it.
//!
//! The waiting calls (`connect`, `accept`, `receive`, ...) are UniFFI async functions: a
//! Kotlin `suspend` or Swift `async` call that holds no thread while it waits. UniFFI
//! polls their futures from whatever thread the foreign side wakes on, where no tokio
//! reactor runs, so each call's real work is spawned onto one small multi-thread runtime
//! the SDK owns for the whole process ([`call`]), and the foreign side only awaits its
//! join handle. That handle aborts the task when it is dropped, which is how cancellation
//! reaches the core: a cancelled coroutine makes UniFFI drop the future, the task is
//! aborted at its next await, and whatever the operation held (a half-open connection, a
//! flow not yet handed out) is dropped with it.
//!
//! Swift's generated code never drops the future when its Task is cancelled, so every
//! waiting call also takes an optional [`CancelToken`] the Swift layer trips from
//! `withTaskCancellationHandler`; the call then fails with `Cancelled` at once.
//!
//! One runtime rather than one per endpoint: a phone app has few endpoints, and idle
//! worker threads cost memory and wake-ups.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{panic_message, MsocketError};

/// Worker threads of the runtime (see the module docs).
const WORKERS: usize = 2;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The process's runtime, started on first use.
pub(crate) fn handle() -> Result<Handle, MsocketError> {
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name("msocket")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start msocket's runtime: {e}"))
    });
    match rt {
        Ok(rt) => Ok(rt.handle().clone()),
        Err(e) => Err(MsocketError::Io(e.clone())),
    }
}

/// A timeout in milliseconds, as the foreign API passes it.
pub(crate) fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

/// Cancels the waiting calls it was passed to (the UDL's `CancelToken`). Once cancelled
/// it stays cancelled: calls that get it later fail at once.
pub struct CancelToken {
    cancelled: watch::Sender<bool>,
}

impl Default for CancelToken {
    fn default() -> Self {
        CancelToken::new()
    }
}

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken { cancelled: watch::channel(false).0 }
    }

    /// Makes every call waiting with this token fail with `Cancelled`. Idempotent.
    pub fn cancel(&self) {
        self.cancelled.send_replace(true);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }

    /// Resolves once the token is cancelled.
    fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.cancelled.subscribe();
        async move {
            // The sender lives as long as the token, which the caller holds.
            let _ = rx.wait_for(|c| *c).await;
        }
    }
}

/// A spawned call's handle that aborts the task when dropped unfinished.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Runs `op` on the SDK's runtime for at most `timeout_ms` (0: only what is ready at
/// once), until `cancel` is tripped, or until the returned future is dropped (which aborts
/// it). `what` names the operation in errors.
pub(crate) async fn call<T: Send + 'static>(
    what: &'static str,
    timeout_ms: u32,
    cancel: Option<Arc<CancelToken>>,
    op: impl Future<Output = Result<T, MsocketError>> + Send + 'static,
) -> Result<T, MsocketError> {
    let cancelled = cancel.map(|c| c.cancelled());
    let task = handle()?.spawn(async move {
        let cancelled = async {
            match cancelled {
                Some(c) => c.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = cancelled => Err(MsocketError::Cancelled(format!("{what} was cancelled"))),
            r = tokio::time::timeout(millis(timeout_ms), op) => r.unwrap_or_else(|_| {
                Err(MsocketError::Timeout(format!("{what} did not finish within {timeout_ms} ms")))
            }),
        }
    });
    match AbortOnDrop(task).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            tracing::error!(what, panic = panic_message(&*payload), "a call panicked");
            Err(MsocketError::Internal(format!("{what} panicked: {}", panic_message(&*payload))))
        }
        Err(_) => Err(MsocketError::Cancelled(format!("{what} was cancelled: msocket's runtime is shutting down"))),
    }
}

/// [`call`], failing with `released` as soon as `closed` turns true: the endpoint, listener
/// or flow the call waits on was released, and whoever waits on it must hear so at once.
pub(crate) async fn call_until_released<T: Send + 'static>(
    what: &'static str,
    timeout_ms: u32,
    cancel: Option<Arc<CancelToken>>,
    mut closed: watch::Receiver<bool>,
    released: MsocketError,
    op: impl Future<Output = Result<T, MsocketError>> + Send + 'static,
) -> Result<T, MsocketError> {
    call(what, timeout_ms, cancel, async move {
        tokio::select! {
            r = op => r,
            _ = closed.wait_for(|c| *c) => Err(released),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A minimal executor (a thread parker), standing in for the foreign side's: any will
    /// do, since the work itself runs on the SDK's runtime.
    fn run<T>(fut: impl Future<Output = T>) -> T {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Arc::new(Unpark(std::thread::current())).into();
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }

    #[test]
    fn calls_are_bounded_and_zero_means_ready_only() {
        assert_eq!(run(call("ready", 0, None, async { Ok(7) })), Ok(7));
        let r: Result<(), _> = run(call("never", 20, None, std::future::pending()));
        assert_eq!(r, Err(MsocketError::Timeout("never did not finish within 20 ms".into())));
    }

    #[test]
    fn a_tripped_token_fails_the_call_and_drops_its_work() {
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let token = Arc::new(CancelToken::new());
        let held = SetOnDrop(dropped.clone());
        let waiting = call("receive", 60_000, Some(token.clone()), async move {
            let _held = held;
            std::future::pending::<Result<(), MsocketError>>().await
        });
        let canceller = {
            let token = token.clone();
            std::thread::spawn(move || token.cancel())
        };
        assert_eq!(run(waiting), Err(MsocketError::Cancelled("receive was cancelled".into())));
        canceller.join().unwrap();
        assert!(dropped.load(Ordering::SeqCst), "the cancelled work was not dropped");
        // A token cancelled before the call fails it at once.
        assert!(matches!(run(call("send", 60_000, Some(token), std::future::pending::<Result<(), _>>())), Err(MsocketError::Cancelled(_))));
    }

    #[test]
    fn dropping_the_call_aborts_its_task() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        struct Signal(std::sync::mpsc::Sender<()>);
        impl Drop for Signal {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let signal = Signal(tx);
        let mut fut = Box::pin(call("accept", 60_000, None, async move {
            let _signal = signal;
            std::future::pending::<Result<(), MsocketError>>().await
        }));
        // Poll once so the task is spawned and running, then drop the call.
        let waker = std::task::Waker::noop();
        assert!(fut.as_mut().poll(&mut Context::from_waker(waker)).is_pending());
        drop(fut);
        rx.recv_timeout(Duration::from_secs(10)).expect("the aborted task's state was not dropped");
    }

    #[test]
    fn a_panic_is_an_internal_error() {
        let r: Result<(), _> = run(call("stats", 1_000, None, async { panic!("boom") }));
        assert!(matches!(&r, Err(MsocketError::Internal(m)) if m.contains("boom")), "{r:?}");
    }
}
