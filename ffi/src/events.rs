//! Delivering a flow's events to the app's [`FlowListener`].
//!
//! Each listener gets a thread of its own that waits for the flow's next event and calls
//! the app. A thread rather than a runtime task: the app's callback may take its time
//! (update a UI model, log), and a runtime worker blocked in foreign code would hold up
//! every flow's sockets. Events stay in order because one thread delivers them. The
//! thread ends when the listener is replaced or removed, after the flow's `Closed` event,
//! or when the flow is gone; whatever the callback throws (or a panic on the way) is
//! logged and never reaches the host.

use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::error::{panic_message, CallbackError, MsocketError};
use crate::types::FlowEvent;
use crate::FlowListener;

/// A running delivery thread; dropping it stops the thread (without waiting for a
/// callback in progress), [`detach`](Self::detach) lets it run to the flow's end.
pub(crate) struct EventPump {
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl EventPump {
    /// Starts delivering `events` to `listener`.
    pub(crate) fn start(
        runtime: Handle,
        mut events: msocket::FlowEvents,
        listener: Box<dyn FlowListener>,
    ) -> Result<EventPump, MsocketError> {
        let (stop, mut stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("msocket-events".into())
            .spawn(move || {
                crate::runtime::mark_callback_thread();
                loop {
                    let next = runtime.block_on(async {
                        // Stopped means told to stop; a pump detached (its sender dropped
                        // unsent) runs on to the end of the flow's events.
                        let stop = async {
                            if stopped.wait_for(|s| *s).await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        };
                        tokio::select! {
                            biased;
                            () = stop => None,
                            ev = events.next() => ev,
                        }
                    });
                    let Some(ev) = next else { return };
                    let Some(ev) = FlowEvent::from_core(ev) else { continue };
                    let last = matches!(ev, FlowEvent::Closed { .. });
                    deliver(&*listener, ev);
                    if last {
                        return;
                    }
                }
            })
            .map_err(|e| MsocketError::Io(format!("cannot start the event thread: {e}")))?;
        Ok(EventPump { stop: Some(stop), thread: Some(thread) })
    }

    /// Lets the thread deliver until the flow's `Closed` event (or the flow's end).
    pub(crate) fn detach(mut self) {
        self.stop.take();
    }
}

impl Drop for EventPump {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        // Not joined: the thread may be inside the app's callback, which may itself be
        // what is dropping this pump.
        self.thread.take();
    }
}

/// Calls the listener once; its failures are logged.
fn deliver(listener: &dyn FlowListener, ev: FlowEvent) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listener.on_event(ev))) {
        Ok(Ok(())) => {}
        Ok(Err(CallbackError::Failed { reason })) => {
            tracing::warn!(reason, "the app's flow listener failed on an event");
        }
        Err(payload) => {
            tracing::warn!(panic = panic_message(&*payload), "a flow event could not be delivered");
        }
    }
}
