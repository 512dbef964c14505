//! The flow's driver: one task per flow that runs its timers (acks, keepalives, liveness,
//! the flow deadline), keeps a finished flow lingering, and on the connecting side re-dials
//! when no subflow is left and opens extra paths as the policy wants them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::{Conn, Role};
use crate::proto::FlowStatus;

/// How long a finished or failed flow waits for its writers to flush before cutting them.
const LINGER: Duration = Duration::from_secs(2);

impl Conn {
    /// Runs timers and re-dials until the flow is over.
    pub(crate) async fn drive(self: Arc<Self>) {
        loop {
            let deadline = {
                let mut inner = self.lock();
                let now = Instant::now();
                inner.proto.handle_timeout(now);
                self.settle(&mut inner);
                // A client whose last path broke right after the transfer re-dials to
                // deliver its last ACK (see `Inner::final_ack_until`), finished or not.
                let final_ack = self.role == Role::Client && inner.final_ack_until.is_some_and(|until| now < until);
                if let Some(t) = inner.terminal_at {
                    // A finished flow lingers so a peer that lost our last ACK can rejoin.
                    let finished = matches!(inner.proto.status(), FlowStatus::Finished);
                    if inner.has_no_subflow() && !final_ack && (!finished || now >= t + LINGER) {
                        break;
                    }
                    if now >= t + LINGER && !final_ack {
                        inner.cut_subflows();
                        self.quiet.send_replace(true);
                        break;
                    }
                }
                if self.role == Role::Client
                    && (inner.terminal_at.is_none() || final_ack)
                    && inner.needs_subflow(now)
                    && !inner.dialing
                {
                    inner.dialing = true;
                    tokio::spawn(super::dial::redial(self.clone()));
                }
                if let Some(relays) = inner.peer_relays_listed.take() {
                    tokio::spawn(super::conn::learn_peer_relays(Arc::downgrade(&self), relays));
                }
                if let Some((local, to)) = inner.punch_back.take() {
                    tokio::spawn(super::punch::punch_back(self.clone(), local, to));
                }
                let mut d = inner.proto.poll_timeout();
                if let Some(t) = inner.terminal_at {
                    d = Some(d.map_or(t + LINGER, |d| d.min(t + LINGER)));
                } else {
                    for t in [inner.paths.next_retry(now), inner.punch.next_at()].into_iter().flatten() {
                        d = Some(d.map_or(t, |d| d.min(t)));
                    }
                }
                if let Some(t) = inner.final_ack_until.filter(|t| *t > now) {
                    d = Some(d.map_or(t, |d| d.min(t)));
                }
                inner.driver_deadline = d;
                d
            };
            self.ensure_paths();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.driver.notified() => {}
            }
        }
        self.announce_end();
        tracing::debug!(flow = %self.keys.flow_id, "flow driver done");
    }
}
