//! What never left a subflow's socket.
//!
//! When a path goes (its address vanished), the flow must send again what the peer lacks.
//! What was *in flight* may well have arrived, and the peer's next ACK will say; but what
//! still sat in the socket's unsent queue, or had not even reached the socket, cannot have
//! arrived. Knowing that part lets the flow re-send it at once and carry on with new data,
//! instead of waiting a round trip for the peer's ACK. The kernel tells how many bytes are
//! unsent (`SIOCOUTQNSD`); this log maps the tail of the socket's byte stream back to the
//! DATA units its records carried. A record only partly sent counts as never sent: the
//! peer cannot open a partial record.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Records older than this many bytes of the socket's stream are forgotten: far more
/// than its unsent queue may hold (`NOTSENT_LOWAT` plus one writer batch).
const LOG_SPAN: u64 = 4 << 20;
/// And at most this many of them are kept.
const LOG_RECORDS: usize = 4096;

#[derive(Debug)]
pub(crate) struct SentLog {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fd: std::os::fd::RawFd,
    /// Bytes of sealed records given to the writer, in stream order.
    queued: u64,
    /// Bytes the writer has handed to the kernel (updated by the writer task).
    handed: Arc<AtomicU64>,
    /// (end offset in the socket's stream, DATA units) of recent records.
    records: VecDeque<(u64, Range<u64>)>,
}

impl SentLog {
    pub(crate) fn new(stream: &tokio::net::TcpStream) -> SentLog {
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = stream;
        SentLog {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            fd: std::os::fd::AsRawFd::as_raw_fd(stream),
            queued: 0,
            handed: Arc::new(AtomicU64::new(0)),
            records: VecDeque::new(),
        }
    }

    /// The counter the writer bumps by every byte it hands to the kernel.
    pub(crate) fn handed(&self) -> Arc<AtomicU64> {
        self.handed.clone()
    }

    /// A batch of `len` bytes goes to the writer; `data` lists (end of a record within
    /// the batch, DATA units in that record).
    pub(crate) fn on_batch(&mut self, len: usize, data: impl IntoIterator<Item = (usize, Range<u64>)>) {
        for (end, units) in data {
            self.records.push_back((self.queued + end as u64, units));
        }
        self.queued += len as u64;
        while self
            .records
            .front()
            .is_some_and(|(end, _)| *end + LOG_SPAN < self.queued || self.records.len() > LOG_RECORDS)
        {
            self.records.pop_front();
        }
    }

    /// DATA units in records that have not entirely left the socket; None where the
    /// kernel cannot tell. Call only while the socket is open.
    pub(crate) fn never_sent(&self) -> Option<Vec<Range<u64>>> {
        let in_kernel = unsent_in_kernel(self)?;
        let not_handed = self.queued.saturating_sub(self.handed.load(Ordering::Acquire));
        let boundary = self.queued.saturating_sub(not_handed + in_kernel);
        Some(self.records.iter().filter(|(end, _)| *end > boundary).map(|(_, u)| u.clone()).collect())
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn unsent_in_kernel(log: &SentLog) -> Option<u64> {
    /// `SIOCOUTQNSD`: bytes in the send queue not yet sent (linux/sockios.h).
    const SIOCOUTQNSD: libc::c_ulong = 0x894B;
    let mut value: libc::c_int = 0;
    // SAFETY: `fd` is the subflow's socket, open while its subflow is registered (the
    // caller's contract); the ioctl writes one c_int.
    let rc = unsafe { libc::ioctl(log.fd, SIOCOUTQNSD as _, &mut value as *mut libc::c_int) };
    (rc == 0 && value >= 0).then_some(value as u64)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn unsent_in_kernel(_: &SentLog) -> Option<u64> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unsent_records_map_back_to_their_units() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let mut log = SentLog::new(&stream);
        // Three records in one batch; the writer handed only the first to the kernel,
        // which sent it (loopback, nobody reading yet, but the peer's buffer takes it).
        log.on_batch(300, [(100, 0..90), (200, 90..180), (300, 180..270)]);
        log.handed().fetch_add(100, Ordering::Release);
        assert_eq!(log.never_sent(), Some(vec![90..180, 180..270]));
        log.handed().fetch_add(200, Ordering::Release);
        assert_eq!(log.never_sent(), Some(vec![]));
        // Old records are forgotten.
        log.on_batch(LOG_SPAN as usize + 1, []);
        assert!(log.records.is_empty());
    }
}
