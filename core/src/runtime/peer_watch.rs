//! Following the peer's name record while a flow is open (connecting side).
//!
//! A server that moves re-publishes its record and tells its peers over any subflow that
//! still works (ADDRS). When none works — its old address is simply gone — a client would
//! learn of the move only from its own timers: the dead-path timeout (1.5 s) while data
//! is outstanding, the keepalive (25 s) on an idle flow. So each client flow keeps one
//! long-poll watch on the peer's name ([`NameService::watch`]): the name service answers
//! moments after the new record is stored, and the flow at once retires the subflows to
//! addresses the record no longer lists and re-dials the new ones.
//!
//! A watch costs one idle connection to the name service, renewed every
//! [`WATCH_WAIT`]; failures back off up to [`MAX_RETRY`]. The record is checked against
//! the keys pinned for the name and the flow's own peer key before it is believed.
//!
//! [`NameService::watch`]: crate::name::NameService::watch

use std::sync::Arc;
use std::time::Duration;

use super::conn::Conn;
use crate::name::{NameRecord, WATCH_POLL_INTERVAL};
use crate::trust::PeerName;

/// How long one watch request waits for a change (the name server caps it at 60 s).
const WATCH_WAIT: Duration = Duration::from_secs(55);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Watches the peer's name for records newer than `seq` until the flow is over.
pub(crate) fn spawn(conn: &Arc<Conn>, seq: u64) {
    tokio::spawn(watch_peer(conn.clone(), seq));
}

async fn watch_peer(conn: Arc<Conn>, mut seq: u64) {
    let mut retry = FIRST_RETRY;
    loop {
        let Some(host) = conn.host.upgrade() else { return };
        let names = host.config.names.clone();
        let mut net = host.network_changes();
        // From the best local address: the watch follows the flow's network (Wi-Fi when
        // it is back) instead of keeping a radio it no longer needs awake.
        let from = host.local_ips().first().copied();
        drop(host);
        // Our own move may have cut the watch's connection without a word: start over.
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            r = names.watch_from(&conn.name, seq, WATCH_WAIT, from) => r,
            _ = net.changed() => continue,
            _ = conn.quiet() => return,
        };
        match result {
            Ok(Some(signed)) => {
                retry = FIRST_RETRY;
                seq = signed.record.seq;
                follow(&conn, signed.record);
            }
            Ok(None) => {
                retry = FIRST_RETRY;
                // A service that answers "unchanged" at once must not make this spin.
                tokio::time::sleep_until(started + WATCH_POLL_INTERVAL).await;
            }
            Err(e) => {
                tracing::debug!(name = %conn.name, error = %e, ?retry, "watching the peer's name failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = conn.quiet() => return,
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

/// Acts on a newer record of the peer's name.
fn follow(conn: &Arc<Conn>, record: NameRecord) {
    let Some(host) = conn.host.upgrade() else { return };
    if let Err(e) = host.check_record(&PeerName::checked_earlier(&conn.name), &record) {
        tracing::warn!(name = %conn.name, error = %e, "ignoring a record of the peer's name");
        return;
    }
    if record.noise_key != conn.keys.remote_static {
        tracing::warn!(name = %conn.name, "the peer's name now lists another key; the flow keeps its peer");
        return;
    }
    tracing::debug!(name = %conn.name, addrs = ?record.addrs, seq = record.seq, "the peer's record changed");
    conn.peer_moved(host.dialable(&record.addrs), record.relays);
}
