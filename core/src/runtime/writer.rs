//! A subflow's writer: takes records from the flow under its lock, seals them outside
//! it, and writes them to the socket, counting what reached the kernel so a lost subflow
//! can tell what never left.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{watch, Notify};

use super::conn::Conn;
use super::events::{IoOperation, PathLossReason};
use super::reader::killed;
use crate::proto::SubflowId;
use crate::session::records::{BatchLimit, RECORD_HEADER_LEN};

/// Records a writer seals per batch (bounds latency and memory per wake-up).
const RECORDS_PER_BATCH: usize = 8;
/// Bytes a writer seals per batch, at most (plus one record), while its socket takes
/// every batch without waiting; what it holds beyond the socket's low-water mark is
/// committed to its path (see `socket.rs`), and a frame made after it (an ACK) waits
/// behind it. A socket that makes the writer wait halves the batch, down to
/// [`MIN_BATCH_BYTES`]; one that takes a full batch at once doubles it: large batches
/// (fewer wake-ups and system calls) where the path is fast, little queued ahead of ACKs
/// where it is not.
const MAX_BATCH_BYTES: usize = 512 * 1024;
/// A new writer's batch limit, and the least it shrinks to.
const MIN_BATCH_BYTES: usize = 32 * 1024;

pub(super) async fn writer(
    conn: Arc<Conn>,
    id: SubflowId,
    mut w: OwnedWriteHalf,
    handed: Arc<AtomicU64>,
    wake: Arc<Notify>,
    mut kill: watch::Receiver<bool>,
) {
    let mut out = BytesMut::with_capacity(RECORDS_PER_BATCH * (u16::MAX as usize + RECORD_HEADER_LEN));
    let mut batch_bytes = MIN_BATCH_BYTES;
    let reason: PathLossReason = loop {
        out.clear();
        let (records, terminal, new_lowat) = {
            let mut inner = conn.lock();
            if !inner.has_subflow(id) {
                return;
            }
            let limit = BatchLimit { records: RECORDS_PER_BATCH, bytes: batch_bytes };
            let records = conn.take_records(&mut inner, id, limit);
            conn.settle(&mut inner);
            let new_lowat = inner.notsent_lowat_change(id);
            (records, inner.terminal_at.is_some(), new_lowat)
        };
        if let Some(lowat) = new_lowat {
            super::socket::change_notsent_lowat(w.as_ref(), lowat);
        }
        if records.is_empty() {
            if terminal {
                let _ = w.shutdown().await;
                break PathLossReason::FlowOver;
            }
            tokio::select! {
                _ = wake.notified() => continue,
                _ = killed(&mut kill) => return,
            }
        }
        if let Err(e) = records.seal_into(&conn.keys, &mut out) {
            tracing::error!(error = %e, "sealing a record failed");
            break PathLossReason::SealFailed;
        }
        tracing::trace!(subflow = id.0, bytes = out.len(), "writing records");
        // Counted as it goes, so that a lost subflow can tell what never reached the kernel.
        let write = async {
            let (mut at, mut waited) = (0, false);
            while at < out.len() {
                let n = match w.try_write(&out[at..]) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        waited = true;
                        w.write(&out[at..]).await?
                    }
                    r => r?,
                };
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                at += n;
                handed.fetch_add(n as u64, Ordering::Release);
            }
            Ok::<bool, std::io::Error>(waited)
        };
        tokio::select! {
            r = write => match r {
                // A batch smaller than the limit that went at once says nothing of the path.
                Ok(true) => batch_bytes = (batch_bytes / 2).max(MIN_BATCH_BYTES),
                Ok(false) if out.len() >= batch_bytes => batch_bytes = (batch_bytes * 2).min(MAX_BATCH_BYTES),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "subflow write failed");
                    break PathLossReason::io(IoOperation::Write, &e);
                }
            },
            _ = killed(&mut kill) => return,
        }
    };
    conn.subflow_gone(id, reason);
}
