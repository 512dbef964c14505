//! A subflow's reader: checks a joined subflow's JOIN answer, then reads records into
//! slabs, opens every whole one outside the flow's lock, and hands their frames to the
//! flow once (the record layer refuses replays).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::watch;

use super::conn::{Conn, Inner};
use super::events::{IoOperation, PathLossReason};
use super::header::{read_exchange, ExchangeError};
use super::read_slabs::ReadSlabs;
use crate::proto::SubflowId;
use crate::session::join::{self, JoinRefusal};
use crate::session::opening::{decode_join_answer, JoinAnswerError, JoinSent};
use crate::session::records::{self, Delivery, OpenError};

/// The least room a read is given (small records, such as ACKs, arrive whole in one read).
const MIN_READ: usize = 4096;

/// For a joining client: the JOIN answer to read before any record.
pub(crate) struct JoinCheck {
    pub(crate) seq: u64,
}

pub(super) async fn killed(kill: &mut watch::Receiver<bool>) {
    let _ = kill.wait_for(|k| *k).await;
}

/// Why a subflow's reader or writer stopped.
enum Stop {
    /// The subflow was retired (and reported) already.
    Retired,
    /// The peer closed its side (end of stream).
    Eof,
    Lost(PathLossReason),
}

/// Reads what the socket holds into the room of the current slab.
async fn read_more(
    r: &mut OwnedReadHalf,
    slabs: &mut ReadSlabs,
    kill: &mut watch::Receiver<bool>,
) -> Result<(), Stop> {
    use bytes::BufMut as _;
    // Reads that never wait take no turn from the runtime's budget on their own.
    tokio::task::consume_budget().await;
    loop {
        let room = slabs.room();
        match r.try_read_buf(&mut slabs.bytes().limit(room)) {
            Ok(0) => return Err(Stop::Eof),
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Stop::Lost(PathLossReason::io(IoOperation::Read, &e))),
        }
        slabs.on_idle(Instant::now());
        tokio::select! {
            res = r.readable() => res.map_err(|e| Stop::Lost(PathLossReason::io(IoOperation::Read, &e)))?,
            _ = killed(kill) => return Err(Stop::Retired),
        }
    }
}

pub(super) async fn reader(
    conn: Arc<Conn>,
    id: SubflowId,
    r: OwnedReadHalf,
    mut kill: watch::Receiver<bool>,
    join: Option<JoinCheck>,
) {
    let mut r = r;
    let stop: Stop = async {
        if let Some(check) = join {
            let peer_signing_key = conn.lock().peer_signing_key;
            let id_sent = join::join_id(&conn.keys.join_key, check.seq);
            let sent = JoinSent {
                join_key: &conn.keys.join_key,
                id: &id_sent,
                seq: check.seq,
                peer_signing_key: peer_signing_key.as_ref(),
            };
            let answer = tokio::select! {
                a = read_exchange(&mut r, |b| Ok::<_, Infallible>(decode_join_answer(b, &sent))) => a,
                _ = killed(&mut kill) => return Stop::Retired,
            };
            match answer {
                Err(ExchangeError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Stop::Eof,
                Err(ExchangeError::Io(e)) => return Stop::Lost(PathLossReason::io(IoOperation::Read, &e)),
                Err(ExchangeError::Decode(never)) => match never {},
                Ok(Ok(accepted)) => {
                    let mut inner = conn.lock();
                    inner.peer_fast_open = accepted.fast_open;
                    if check.seq > inner.join_accepted {
                        inner.join_accepted = check.seq;
                        inner.joins_since = 0;
                    }
                }
                Ok(Err(e)) => {
                    let mut inner = conn.lock();
                    // Only the peer's signed word ends the flow; any other refusal may be
                    // anyone's (an observer's copy of our JOIN may have been there first),
                    // so it changes nothing but this subflow: the address stays.
                    if e.is_fatal() {
                        inner.proto.fail_unrecoverable(crate::proto::FlowError::PeerForgotFlow);
                        conn.settle(&mut inner);
                    }
                    return Stop::Lost(match e {
                        JoinAnswerError::BadMac => PathLossReason::NotOurPeer,
                        JoinAnswerError::Refused(_, code) => PathLossReason::JoinRefused { code },
                        JoinAnswerError::UnknownFlow { .. } => PathLossReason::JoinRefused { code: JoinRefusal::UnknownFlow as u8 },
                    });
                }
            }
        }
        let mut slabs = ReadSlabs::new();
        loop {
            // Room for the rest of the record under way (or a header), and whatever else
            // the socket holds: several records per system call when the flow is busy.
            let missing = records::bytes_wanted(slabs.bytes());
            slabs.make_room(missing.max(MIN_READ), Instant::now());
            match read_more(&mut r, &mut slabs, &mut kill).await {
                Ok(()) => {}
                Err(Stop::Eof) if !slabs.bytes().is_empty() => return Stop::Lost(PathLossReason::PeerClosedMidRecord),
                Err(stop) => return stop,
            }
            // Open every complete record outside the lock, so decryption on one core
            // overlaps encryption on the other; a bad one ends the subflow after the
            // good ones before it are in.
            let mut opened = Vec::new();
            let mut fault = None;
            while let Some(record) = records::split_record(slabs.bytes()) {
                match records::open(&conn.keys, record) {
                    Ok(record) => opened.push(record),
                    Err(OpenError::Forged) => {
                        fault = Some(PathLossReason::Forged);
                        break;
                    }
                    Err(OpenError::Malformed(e)) => {
                        fault = Some(PathLossReason::Malformed(e));
                        break;
                    }
                }
            }
            if !opened.is_empty() {
                let mut inner = conn.lock();
                if !inner.has_subflow(id) {
                    return Stop::Retired;
                }
                inner.redial_pause = Duration::ZERO;
                let mut copies = Vec::new();
                for record in opened {
                    let now = Instant::now();
                    let wire_len = record.wire_len as u64;
                    let Inner { proto, receiver, .. } = &mut *inner;
                    match receiver.deliver(proto, id, record, now) {
                        Ok(Delivery::Fresh) => copies.extend(conn.proven(&mut inner, id)),
                        Ok(Delivery::Replayed) => continue,
                        Err(v) => {
                            conn.settle(&mut inner);
                            return Stop::Lost(PathLossReason::Violation(v));
                        }
                    }
                    inner.meter_received(id, now, wire_len);
                }
                conn.settle(&mut inner);
                drop(inner);
                for copy in copies {
                    conn.subflow_gone(copy, PathLossReason::NotOurPeer);
                }
            }
            if let Some(why) = fault {
                return Stop::Lost(why);
            }
        }
    }
    .await;
    match stop {
        Stop::Retired => {}
        Stop::Eof => conn.subflow_gone(id, PathLossReason::PeerClosed),
        Stop::Lost(reason) => conn.subflow_gone(id, reason),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::sync::Weak;

    use bytes::{Bytes, BytesMut};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use crate::proto::{self, Frame};
    use crate::runtime::conn::{FlowOwner, Role};
    use crate::session::FlowId;

    /// A flow without an endpoint.
    struct NoOwner;

    impl NoOwner {
        fn none() -> Weak<dyn FlowOwner> {
            Weak::<NoOwner>::new()
        }
    }

    impl FlowOwner for NoOwner {
        fn flow_started(&self, _: &Arc<Conn>) {}
        fn flow_ended(&self, _: &FlowId) {}
        fn incoming(&self, _: TcpStream, _: std::net::SocketAddr) {}
    }
    use crate::session::records::{RECORD_HEADER_LEN, TAG_LEN};
    use crate::session::{session_pair, SessionKeys};

    fn resident_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
    }

    /// Seals `frames` as one record with packet number `pn`.
    fn record(keys: &SessionKeys, pn: u64, frames: &[Frame]) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.resize(RECORD_HEADER_LEN, 0);
        for f in frames {
            f.encode(&mut out);
        }
        out.resize(out.len() + TAG_LEN, 0);
        keys.seal_record(pn, &mut out).unwrap();
        out.to_vec()
    }

    /// A peer sends one byte out of order per ~300 KiB of duplicate data. What the flow
    /// keeps is 400 bytes (plus the first in-order segment); what it holds in memory must
    /// stay near that, not one whole read buffer per kept byte.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_few_kept_bytes_do_not_pin_whole_read_buffers() {
        let (peer_keys, keys) = session_pair();
        let conn = Conn::new(keys, Role::Server, "svc".into(), crate::identity::Identity::from_seed([1; 32]).public(), proto::FlowConfig::default(), Weak::new(), NoOwner::none());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        conn.attach(ours, 0, None, None, crate::runtime::conn::Route::Direct);
        let (mut from_conn, mut to_conn) = peer.into_split();
        tokio::spawn(async move {
            let mut sink = vec![0u8; 64 * 1024];
            while let Ok(1..) = from_conn.read(&mut sink).await {}
        });

        const SEGMENT: usize = 60_000;
        let first = Frame::Data { offset: 0, fin: false, payload: Bytes::from(vec![7u8; SEGMENT]) };
        let mut pn = 0;
        to_conn.write_all(&record(&peer_keys, pn, std::slice::from_ref(&first))).await.unwrap();
        let before = resident_bytes();
        const KEPT: u64 = 400;
        for i in 0..KEPT {
            pn += 1;
            let kept = Frame::Data { offset: SEGMENT as u64 + 1 + 2 * i, fin: false, payload: Bytes::from_static(b"x") };
            to_conn.write_all(&record(&peer_keys, pn, &[kept, first.clone()])).await.unwrap();
            for _ in 0..4 {
                pn += 1;
                to_conn.write_all(&record(&peer_keys, pn, std::slice::from_ref(&first))).await.unwrap();
            }
        }
        let want = SEGMENT as u64 + KEPT;
        for _ in 0..1000 {
            if conn.lock().proto.stats().bytes_received == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(conn.lock().proto.stats().bytes_received, want);
        let grown = resident_bytes().saturating_sub(before);
        eprintln!("resident memory grew by {} KiB", grown / 1024);
        assert!(grown < 40 << 20, "{} MiB held for {} bytes kept", grown >> 20, want);
    }
}
