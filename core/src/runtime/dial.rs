//! The connecting side: opening a flow by name, and re-dialing after its paths died.
//!
//! Re-dialing tries the addresses the peer was last reached at (or announced in ADDRS)
//! first, since after our own move they are still right; then a fresh lookup, which finds a
//! peer that moved too. Between rounds it backs off (10 ms doubling to 1 s) but wakes at once
//! when our own addresses change. It stops when a subflow is back or the flow ended (the
//! flow deadline ends it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::conn::{Conn, JoinCheck, Role};
use super::endpoint::EndpointInner;
use super::flow::Flow;
use super::header::{self, Kind};
use super::Error;
use crate::name::{self, NameError};
use crate::session::{HandshakeError, Initiator, MAX_HANDSHAKE_MSG};

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

enum Attempt {
    /// The peer answered but does not serve the name: no use retrying.
    UnknownName,
    Failed(String),
}

/// Opens a flow to `name`, retrying lookups and addresses until `connect_timeout`.
pub(crate) async fn connect(ep: &Arc<EndpointInner>, name: &str) -> Result<Flow, Error> {
    name::validate_name(name)?;
    let started = Instant::now();
    let deadline = started + ep.config.connect_timeout;
    let mut tried = Vec::new();
    let mut last = String::from("no attempt finished");
    let mut backoff = FIRST_BACKOFF;
    let mut net = ep.net_changed.subscribe();
    loop {
        match ep.lookup_pinned(name).await {
            Ok(record) => {
                if record.addrs.is_empty() {
                    last = "the name's record lists no addresses".into();
                }
                for &addr in &record.addrs {
                    if !tried.contains(&addr) {
                        tried.push(addr);
                    }
                    let limit = ep.config.io_timeout.min(deadline.saturating_duration_since(Instant::now()));
                    match tokio::time::timeout(limit, new_flow(ep, name, &record.noise_key, addr, &record.addrs)).await {
                        Ok(Ok(flow)) => return Ok(flow),
                        Ok(Err(Attempt::UnknownName)) => {
                            return Err(Error::UnknownName { name: name.to_string(), addr })
                        }
                        Ok(Err(Attempt::Failed(why))) => last = format!("{addr}: {why}"),
                        Err(_) => last = format!("{addr}: handshake timed out"),
                    }
                }
            }
            Err(Error::Name(e @ (NameError::Unreachable { .. } | NameError::Timeout { .. }))) => {
                last = e.to_string();
            }
            Err(e) => return Err(e),
        }
        if Instant::now() + backoff >= deadline {
            return Err(Error::Unreachable { name: name.to_string(), tried, after: started.elapsed(), last });
        }
        tracing::debug!(name, %last, ?backoff, "connect attempt failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = net.changed() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One handshake on one address.
async fn new_flow(
    ep: &Arc<EndpointInner>,
    name: &str,
    noise_key: &[u8; 32],
    addr: SocketAddr,
    addrs: &[SocketAddr],
) -> Result<Flow, Attempt> {
    let fail = |e: &dyn std::fmt::Display| Attempt::Failed(e.to_string());
    let mut stream = ep.dial_tcp(addr).await.map_err(|e| fail(&e))?;
    let (init, msg1) = Initiator::start(&ep.identity, noise_key, name).map_err(|e| fail(&e))?;
    header::write_handshake(&mut stream, &header::header(Kind::NewFlow), &msg1).await.map_err(|e| fail(&e))?;
    let msg2 = header::read_handshake(&mut stream, MAX_HANDSHAKE_MSG).await.map_err(|e| match e {
        // A responder that cannot read our first message (it is not for its key) closes
        // without a word: there is no key to answer under. Say what that usually means.
        header::HeaderError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => Attempt::Failed(
            "the peer closed the connection during the handshake (it does not hold the keys \
             the name record lists, or it is not an msocket endpoint)"
                .into(),
        ),
        e => fail(&e),
    })?;
    let keys = match init.finish(&msg2) {
        Ok(k) => k,
        Err(HandshakeError::UnknownName(_)) => return Err(Attempt::UnknownName),
        Err(e) => return Err(fail(&e)),
    };
    let conn = Conn::new(keys, Role::Client, name.to_string(), ep.config.flow.clone(), Arc::downgrade(ep));
    conn.lock().peer_addrs = addrs.to_vec();
    ep.remember_flow(&conn);
    conn.attach(stream, None);
    tokio::spawn(conn.clone().drive());
    Ok(Flow::new(conn))
}

/// Brings a flow that lost its last subflow back, until it has one or is over.
pub(crate) async fn redial(conn: Arc<Conn>) {
    if let Some(ep) = conn.endpoint.upgrade() {
        let mut net = ep.net_changed.subscribe();
        let pause = conn.lock().redial_pause;
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = net.changed() => {}
            }
        }
        let mut backoff = FIRST_BACKOFF;
        while needs_subflow(&conn) {
            if rejoin_round(&ep, &conn).await {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = net.changed() => backoff = FIRST_BACKOFF,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    } else {
        // Nothing can dial for this flow any more. Waiting for the flow deadline instead
        // would have the driver re-spawn this task at once, over and over.
        let mut inner = conn.lock();
        inner.proto.abort(0, "the endpoint was dropped: the flow cannot re-dial");
        conn.settle(&mut inner);
    }
    {
        let mut inner = conn.lock();
        inner.dialing = false;
        // Reset by the reader as soon as the peer is heard on the subflow attached here.
        inner.redial_pause = (inner.redial_pause * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
    }
    conn.wake_driver();
}

fn needs_subflow(conn: &Conn) -> bool {
    let inner = conn.lock();
    inner.proto.needs_path() && inner.proto.live_subflows() == 0
}

/// One round: known addresses, then a fresh lookup. True once a subflow is attached.
async fn rejoin_round(ep: &Arc<EndpointInner>, conn: &Arc<Conn>) -> bool {
    let known = conn.lock().peer_addrs.clone();
    for &addr in &known {
        if try_join(ep, conn, addr).await {
            return true;
        }
    }
    match ep.lookup_pinned(&conn.name).await {
        Ok(record) if record.noise_key == conn.keys.remote_static => {
            conn.lock().peer_addrs = record.addrs.clone();
            for &addr in record.addrs.iter().filter(|a| !known.contains(a)) {
                if try_join(ep, conn, addr).await {
                    return true;
                }
            }
        }
        Ok(_) => tracing::warn!(name = %conn.name, "the name now belongs to other keys; not re-dialing it"),
        Err(e) => tracing::debug!(name = %conn.name, error = %e, "re-lookup failed"),
    }
    !needs_subflow(conn)
}

/// Opens a TCP connection to `addr` and sends a JOIN. The subflow is attached at once (its
/// reader checks the answer before any record), which saves a round trip on resume.
async fn try_join(ep: &Arc<EndpointInner>, conn: &Arc<Conn>, addr: SocketAddr) -> bool {
    if conn.role != Role::Client || !needs_subflow(conn) {
        return !needs_subflow(conn);
    }
    let mut stream = match ep.dial_tcp(addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%addr, error = %e, "re-dial failed");
            return false;
        }
    };
    let seq = {
        let mut inner = conn.lock();
        inner.join_seq += 1;
        inner.join_seq
    };
    let request = header::join_request(&conn.keys.join_key, &conn.keys.flow_id, seq);
    if stream.write_all(&request).await.is_err() {
        return false;
    }
    conn.attach(stream, Some(JoinCheck { seq }));
    true
}
