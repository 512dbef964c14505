//! The SDK's own tokio runtime, and how blocking calls wait on it.
//!
//! Apps call in from threads that know nothing of tokio (a Kotlin `Dispatchers.IO`
//! thread, a Swift task's thread), so the SDK owns one small multi-thread runtime for the
//! whole process: two workers carry every endpoint's sockets and timers, and a blocking
//! call parks its caller on [`block_on`] until the work is done or its timeout passes.
//! One runtime rather than one per endpoint: a phone app has few endpoints, and idle
//! worker threads cost memory and wake-ups.
//!
//! Callbacks into the app run on msocket's threads. A callback that called a blocking
//! method would try to run a runtime inside the runtime (which tokio refuses by
//! panicking) or wait on work its own thread must do; [`block_on`] refuses such calls
//! with `WrongThread` instead.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

use crate::error::MsocketError;

/// Worker threads of the runtime (see the module docs).
const WORKERS: usize = 2;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

thread_local! {
    /// Set on threads that run app callbacks (event listeners), where waiting is refused.
    static CALLBACK_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

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

/// Marks the current thread as one that runs app callbacks.
pub(crate) fn mark_callback_thread() {
    CALLBACK_THREAD.with(|c| c.set(true));
}

/// Whether a blocking call may wait on this thread; the error says why not.
fn check_thread(what: &str) -> Result<(), MsocketError> {
    if Handle::try_current().is_ok() || CALLBACK_THREAD.with(|c| c.get()) {
        return Err(MsocketError::WrongThread(format!(
            "{what} waits, so it cannot be called from a msocket callback (event listener or socket binder); \
             call it from a thread of your own"
        )));
    }
    Ok(())
}

/// A timeout in milliseconds, as the foreign API passes it.
pub(crate) fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

/// Runs `fut` on the runtime, blocking the calling thread for at most `timeout_ms`
/// (0: only what is ready at once). `what` names the operation in errors.
pub(crate) fn block_on<T>(
    what: &str,
    timeout_ms: u32,
    fut: impl Future<Output = Result<T, MsocketError>>,
) -> Result<T, MsocketError> {
    check_thread(what)?;
    let handle = handle()?;
    handle.block_on(async {
        match tokio::time::timeout(millis(timeout_ms), fut).await {
            Ok(r) => r,
            Err(_) => Err(MsocketError::Timeout(format!("{what} did not finish within {timeout_ms} ms"))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_bounded_and_zero_means_ready_only() {
        assert_eq!(block_on("ready", 0, async { Ok(7) }), Ok(7));
        let r: Result<(), _> = block_on("never", 20, std::future::pending());
        assert_eq!(r, Err(MsocketError::Timeout("never did not finish within 20 ms".into())));
    }

    #[test]
    fn runtime_and_callback_threads_may_not_wait() {
        let rt = handle().unwrap();
        let inside = rt.block_on(async { tokio::spawn(async { block_on("inner", 10, async { Ok(()) }) }).await.unwrap() });
        assert!(matches!(inside, Err(MsocketError::WrongThread(m)) if m.starts_with("inner waits")));
        let on_callback = std::thread::spawn(|| {
            mark_callback_thread();
            block_on("send", 10, async { Ok(()) })
        })
        .join()
        .unwrap();
        assert!(matches!(on_callback, Err(MsocketError::WrongThread(_))));
    }
}
