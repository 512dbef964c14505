//! The accept loop every service of the daemon runs, and its end.
//!
//! Each service always accepts (a client over a limit hears a refusal at once instead of
//! waiting in the kernel's backlog behind connections that may stay for minutes), hands
//! each connection to a task, and on shutdown gives its connections a grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How long an accept that failed (usually: out of file descriptors) backs off.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts on `listener` until `shutdown` completes, handing each connection to `take`,
/// which spawns what serves it onto `tasks`; finished tasks are reaped as it goes. Returns
/// the tasks still running.
pub(crate) async fn accept_until(
    listener: &TcpListener,
    shutdown: impl Future,
    service: &'static str,
    mut tasks: JoinSet<()>,
    mut take: impl FnMut(TcpStream, SocketAddr, &mut JoinSet<()>),
) -> JoinSet<()> {
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = &mut shutdown => return tasks,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => take(stream, peer, &mut tasks),
            Err(e) => {
                tracing::warn!(service, error = %e, "accept failed");
                tokio::select! {
                    _ = &mut shutdown => return tasks,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Gives `tasks` up to `grace` to finish, then aborts the rest.
pub(crate) async fn drain(mut tasks: JoinSet<()>, grace: Duration, service: &'static str) {
    let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(service, left = tasks.len(), "connections did not finish in time; aborting them");
        tasks.shutdown().await;
    }
}
