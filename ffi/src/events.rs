//! A flow's events, pulled by the app one at a time, and the endpoint's count of open
//! flows.
//!
//! Events are pulled (`Flow::next_event`, an async call) rather than pushed through a
//! callback: a push needs a thread per flow to call into the app, and an app with a
//! thousand flows would hold a thousand threads. Pulling holds none while it waits, and
//! the stream ends (`None`) after `Closed`, so a Kotlin `Flow` or a Swift `AsyncSequence`
//! built on it completes.
//!
//! The core keeps the last 256 events per receiver. An app that falls further behind is
//! told, never silently: the next pull returns `EventsDropped` with how many it missed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Mutex};

use crate::types::FlowEvent;

/// The receiving end of one flow's events.
pub(crate) struct EventStream {
    state: Mutex<(msocket::FlowEvents, bool)>,
}

impl EventStream {
    pub(crate) fn new(events: msocket::FlowEvents) -> EventStream {
        EventStream { state: Mutex::new((events, false)) }
    }

    /// The next event; `None` once `Closed` was returned or the flow is gone.
    pub(crate) async fn next(&self) -> Option<FlowEvent> {
        let mut state = self.state.lock().await;
        let (events, done) = &mut *state;
        while !*done {
            match events.next_or_missed().await {
                None => *done = true,
                Some(Err(missed)) => return Some(FlowEvent::EventsDropped { count: missed }),
                Some(Ok(ev)) => {
                    if let Some(ev) = FlowEvent::from_core(ev) {
                        *done = matches!(ev, FlowEvent::Closed { .. });
                        return Some(ev);
                    }
                }
            }
        }
        None
    }
}

/// How many of an endpoint's flows are open, for apps that hold resources (a cellular
/// network request) only while flows need them.
#[derive(Clone)]
pub(crate) struct OpenFlows(Arc<watch::Sender<u32>>);

impl OpenFlows {
    pub(crate) fn new() -> OpenFlows {
        OpenFlows(Arc::new(watch::channel(0).0))
    }

    pub(crate) fn count(&self) -> u32 {
        *self.0.borrow()
    }

    /// Waits until the count differs from `seen`, and returns it.
    pub(crate) async fn changed_from(&self, seen: u32) -> u32 {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so waiting cannot fail.
        let count = rx.wait_for(|c| *c != seen).await.map(|c| *c);
        count.unwrap_or(seen)
    }

    /// Counts `flow` until it closes or [`OpenFlow::done`] is called.
    pub(crate) fn track(&self, flow: &msocket::Flow) -> Arc<OpenFlow> {
        self.0.send_modify(|c| *c += 1);
        let mark = Arc::new(OpenFlow { counter: self.clone(), done: AtomicBool::new(false) });
        let mut events = flow.events();
        let watcher = mark.clone();
        // Spawned from inside the runtime (callers enter it); ends with the flow's events.
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                if matches!(ev, msocket::FlowEvent::Closed { .. }) {
                    break;
                }
            }
            watcher.done();
        });
        mark
    }
}

/// One counted flow.
pub(crate) struct OpenFlow {
    counter: OpenFlows,
    done: AtomicBool,
}

impl OpenFlow {
    /// The flow closed or the app let go of it; counted once.
    pub(crate) fn done(&self) {
        if !self.done.swap(true, Ordering::SeqCst) {
            self.counter.0.send_modify(|c| *c = c.saturating_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msocket::unstable::{event_channel, EVENT_BACKLOG};

    fn block<T>(fut: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(fut)
    }

    #[test]
    fn an_app_that_falls_behind_is_told_how_many_it_missed_and_the_stream_ends_after_closed() {
        let (tx, rx) = event_channel();
        let stream = EventStream::new(rx);
        let behind = EVENT_BACKLOG + 44;
        for i in 0..behind {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], i as u16));
            tx.send(msocket::FlowEvent::PathAdded { local: addr, remote: addr, relayed: false, interface: None }).unwrap();
        }
        tx.send(msocket::FlowEvent::Closed { error: None, energy_joules: None }).unwrap();
        block(async {
            // 300 events and Closed were sent; 256 were kept: 45 missed, said first.
            assert_eq!(stream.next().await, Some(FlowEvent::EventsDropped { count: 45 }));
            for i in 45..behind {
                let Some(FlowEvent::PathAdded { local, .. }) = stream.next().await else { panic!("event {i} is missing") };
                assert_eq!(local, format!("127.0.0.1:{i}"));
            }
            assert!(matches!(stream.next().await, Some(FlowEvent::Closed { error: None, .. })));
            assert_eq!(stream.next().await, None, "the stream ends after Closed");
            tx.send(msocket::FlowEvent::Resumed { outage: std::time::Duration::ZERO }).unwrap();
            assert_eq!(stream.next().await, None, "and stays ended");
        });
    }
}
