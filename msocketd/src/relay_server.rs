//! The relay behind `msocketd relay`: how a peer behind NAT is reached.
//!
//! A phone behind a carrier-grade NAT cannot be dialed. Its listener keeps a control
//! connection to a relay instead and proves its keys on it (a signed fresh nonce); a
//! client that cannot reach the listener directly dials the relay naming the listener's
//! keys, the relay asks the listener over its control connection to call back, and
//! splices the client's connection to the listener's answer. The flow inside is an
//! ordinary subflow whose Noise session runs end to end: the relay sees ciphertext, and
//! needs no key of its own. The messages are `msocket::unstable::relay_protocol`'s.
//!
//! The parts:
//! * `connection.rs`: one connection from its header to its end (REGISTER, DIAL or
//!   ACCEPT), every step bounded in time;
//! * [`registry`]: registrations by listener key (the newest of a key gets its
//!   dial-backs; a key holds a few, and a newer one replaces the oldest, since a phone
//!   that moved registers again before its old connection is known dead), pending dials
//!   by token, and the counts the caps are checked against;
//! * [`splice`]: the bytes, moved by `splice(2)` through a pipe per direction on Linux,
//!   never entering the relay's memory; an idle splice holds no buffer;
//! * [`limits`]: [`RelayLimits`], connections per source, the dial rate limit;
//! * [`metrics`]: counters, [`RelayStats`], and their Prometheus page.
//!
//! Everything is capped ([`RelayLimits`]): connections in all and per source (an IPv4
//! address or an IPv6 /64), registrations, pending dials in all, per listener and per
//! source, splices in all and per source. A request over a cap is refused `Busy` at once:
//! the accept loop never stops accepting, so nobody waits in the listen backlog behind
//! connections that may stay for hours. Every wait has a timeout: the handshake, the
//! listener's answer to a dial-back, a silent control connection, an idle splice.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msocket::unstable::relay_protocol::RelayRefusal;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinSet;

mod connection;
pub mod limits;
pub mod metrics;
mod registry;
mod splice;

pub use limits::{LimitError, RelayLimits};
pub use metrics::RelayStats;

use limits::{Admission, DialRate, Source};
use metrics::{Counters, EarlyClose};
use registry::Registry;

/// How long shutdown waits for connections to finish telling their peers.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Connections refused at admission being told why at once; beyond this they are
/// simply closed.
const MAX_REFUSALS: usize = 64;
/// How often refilled dial rate buckets are forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// At most one warning about small pipes per this long.
const PIPE_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// A limit cannot be used.
    #[error(transparent)]
    Limits(#[from] LimitError),
    /// The address could not be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    limits: RelayLimits,
    registry: Arc<Registry>,
    admission: Arc<Admission>,
    dial_rate: DialRate,
    counters: Counters,
    last_pipe_warning: Mutex<Option<std::time::Instant>>,
}

impl Shared {
    /// Counts a pipe the kernel kept small, and warns now and then.
    fn pipe_size_refused(&self) {
        self.counters.pipe_size_refused.fetch_add(1, Relaxed);
        let now = std::time::Instant::now();
        let mut last = self.last_pipe_warning.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| now.duration_since(at) >= PIPE_WARNING_INTERVAL) {
            *last = Some(now);
            tracing::warn!(
                "splice pipes are smaller than --splice-buffer: the user's pipe memory limit is reached \
                 (raise fs.pipe-user-pages-soft, or run with CAP_SYS_RESOURCE)"
            );
        }
    }
}

/// A relay bound to its address, ready to serve.
#[derive(Debug)]
pub struct RelayServer {
    listener: Mutex<Option<TcpListener>>,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

impl RelayServer {
    /// Listens on `addr` (port 0 picks a free port) with `limits`.
    pub async fn bind(addr: &str, limits: RelayLimits) -> Result<RelayServer, RelayError> {
        limits.check()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| RelayError::Bind { addr: addr.to_string(), source })?;
        Self::from_listener(listener, limits)
    }

    /// Serves on a listener already bound.
    pub fn from_listener(listener: TcpListener, limits: RelayLimits) -> Result<RelayServer, RelayError> {
        limits.check()?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| RelayError::Bind { addr: "the listening socket".into(), source })?;
        Ok(RelayServer {
            listener: Mutex::new(Some(listener)),
            local_addr,
            shared: Arc::new(Shared {
                limits,
                registry: Registry::new(limits),
                admission: Admission::new(&limits),
                dial_rate: DialRate::new(limits.dials_per_source),
                counters: Counters::default(),
                last_pipe_warning: Mutex::new(None),
            }),
        })
    }

    /// The address the relay listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The limits in force.
    pub fn limits(&self) -> &RelayLimits {
        &self.shared.limits
    }

    /// What the relay holds now and has done since it started.
    pub fn stats(&self) -> RelayStats {
        let s = &self.shared;
        RelayStats::collect(&s.counters, s.admission.open(), s.registry.counts())
    }

    /// [`Self::stats`] in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.stats().render()
    }

    /// Serves until `shutdown` completes; then stops accepting, tells control
    /// connections and waiting dials that the relay is shutting down, closes every
    /// splice, and returns once they are gone (after [`SHUTDOWN_GRACE`] at most). Serves
    /// once: a second call returns at once.
    pub async fn serve(&self, shutdown: impl Future) {
        let Some(listener) = self.listener.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            tracing::warn!("the relay is already served");
            return;
        };
        let shared = &self.shared;
        let (stop_tx, stop_rx) = watch::channel(());
        let refusing = Arc::new(Semaphore::new(MAX_REFUSALS));
        let mut tasks = JoinSet::new();
        tracing::info!(addr = %self.local_addr, "relay listening");
        if shared.limits.dials_per_source > 0 {
            tasks.spawn(prune_every(Arc::clone(shared), stop_rx.clone()));
        }
        let tasks = crate::accept::accept_until(&listener, shutdown, "relay", tasks, |stream, peer, tasks| {
            shared.counters.connections.fetch_add(1, Relaxed);
            match shared.admission.admit(Source::of(peer.ip())) {
                Ok(admitted) => {
                    tasks.spawn(connection::serve(Arc::clone(shared), stream, peer, admitted, stop_rx.clone()));
                }
                Err(crowded) => {
                    shared.counters.early_close(EarlyClose::Crowded);
                    tracing::debug!(%peer, reason = %crowded, "connection refused");
                    if let Ok(permit) = Arc::clone(&refusing).try_acquire_owned() {
                        let shared = Arc::clone(shared);
                        tasks.spawn(async move {
                            connection::refuse(&shared, stream, RelayRefusal::Busy, &crowded.to_string()).await;
                            drop(permit);
                        });
                    }
                }
            }
        })
        .await;
        drop(listener);
        let stats = self.stats();
        tracing::info!(connections = stats.connections, registrations = stats.registrations, splices = stats.splices,
            "relay shutting down");
        drop(stop_tx);
        crate::accept::drain(tasks, SHUTDOWN_GRACE, "relay").await;
    }

    /// Serves on a task of its own; the handle stops it.
    pub fn spawn(self) -> RelayHandle {
        let server = Arc::new(self);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let server = Arc::clone(&server);
            async move {
                server
                    .serve(async {
                        let _ = stopped.await;
                    })
                    .await;
            }
        });
        RelayHandle { server, stop: Some(stop), task: Some(task) }
    }
}

/// Forgets refilled dial rate buckets every [`PRUNE_INTERVAL`] until the relay stops.
async fn prune_every(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => shared.dial_rate.prune(std::time::Instant::now()),
        }
    }
}

/// A relay serving on its own task ([`RelayServer::spawn`]). Dropping the handle stops
/// the relay too (without waiting for it).
#[derive(Debug)]
pub struct RelayHandle {
    server: Arc<RelayServer>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RelayHandle {
    /// The address the relay listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// What the relay holds now and has done since it started.
    pub fn stats(&self) -> RelayStats {
        self.server.stats()
    }

    /// The relay itself (for its metrics page, say).
    pub fn server(&self) -> &Arc<RelayServer> {
        &self.server
    }

    /// Stops the relay and waits until it stopped ([`RelayServer::serve`]).
    pub async fn shutdown(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}
