//! What the foreign-interface tests share: their bounds, endpoint options and the wait
//! for a flow event.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use msocket_ffi::{EndpointOptions, Flow, FlowEvent};
use msocket_test_support::LocalNameServer;

/// The timeout (ms) of every call the tests make.
pub const T: u32 = 10_000;
/// The bound on every wait for an event.
pub const WAIT: Duration = Duration::from_secs(10);

/// The options' defaults, with short connect and flow deadlines, for `names`.
pub fn options(names: &LocalNameServer) -> EndpointOptions {
    EndpointOptions { connect_timeout_ms: 10_000, flow_deadline_ms: 20_000, ..EndpointOptions::new(names.url()) }
}

/// The first event of `flow` matching `want`, within [`WAIT`].
pub async fn wait_event(flow: &Arc<Flow>, what: &str, want: impl Fn(&FlowEvent) -> bool) -> FlowEvent {
    let next = async {
        loop {
            match flow.clone().next_event(None).await {
                Ok(Some(ev)) if want(&ev) => return ev,
                Ok(Some(_)) => {}
                other => panic!("the events ended before a {what} event: {other:?}"),
            }
        }
    };
    tokio::time::timeout(WAIT, next).await.unwrap_or_else(|_| panic!("no {what} event within {WAIT:?}"))
}
