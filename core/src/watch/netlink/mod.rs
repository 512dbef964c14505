//! The Linux watcher: the kernel's own link and address events over rtnetlink.
//!
//! The kernel sends an `RTM_NEWADDR` / `RTM_DELADDR` / `RTM_NEWLINK` / `RTM_DELLINK`
//! message to every socket subscribed to the link and IPv4/IPv6 address groups, inside
//! the very system call that made the change. Reading them costs nothing while nothing
//! happens and gives the change within microseconds, which is why this watcher neither
//! polls nor debounces.
//!
//! Start-up must not miss a change: the event socket subscribes *first*, then a second
//! socket dumps all links and addresses, then every event queued meanwhile is applied on
//! top (see `table` for why that is safe) before the first state is published.
//!
//! What can go wrong is handled without panicking:
//! - the kernel drops events when our receive buffer overflows (`ENOBUFS`), or a message
//!   does not fit our buffer: the state can no longer be trusted, so it is rebuilt with a
//!   fresh dump on the same subscription;
//! - the socket fails otherwise: it is logged and the whole subscription is reopened,
//!   with back-off (100 ms doubling to 10 s);
//! - a message that does not parse is logged and skipped.
//!
//! Memory is bounded: one 64 KiB receive buffer, a kernel-side queue of 256 KiB, and the
//! table's limits.

mod table;

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use self::table::Table;
use super::interface::Classifier;
use super::{publish, NetworkState, WatchError};

/// Receive buffer; the kernel sizes dump datagrams to at most 32 KiB for such readers.
const RECV_BUF: usize = 64 * 1024;
/// Kernel-side queue for events, so a burst (a link going down drops all its IPv6
/// addresses) does not overflow while we are busy.
const SOCKET_QUEUE: usize = 256 * 1024;
/// A dump must finish within this time.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);
/// Dumps interrupted by concurrent changes are retried this many times.
const DUMP_ATTEMPTS: usize = 5;
/// Queued datagrams applied at most in one go before a state is published.
const MAX_BATCH: usize = 64;
/// Queued datagrams applied at most after a dump before the first state is published.
const MAX_DRAIN: usize = 4096;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Subscribes to the kernel's link and address events, publishes the current state and
/// keeps it current in a background task that runs until every receiver is dropped.
/// Needs a tokio runtime; the sockets belong to the network namespace of the calling
/// thread.
pub async fn start(classifier: Classifier) -> Result<watch::Receiver<NetworkState>, WatchError> {
    let events = Events::open()?;
    let mut buf = Vec::with_capacity(RECV_BUF);
    let table = events.resync(&mut buf).await?;
    let (tx, rx) = watch::channel(NetworkState::new(table.interfaces(&classifier)));
    tracing::debug!(interfaces = ?rx.borrow().interfaces, "netlink watcher started");
    tokio::spawn(run(events, table, classifier, tx, buf));
    Ok(rx)
}

async fn run(
    mut events: Events,
    mut table: Table,
    classifier: Classifier,
    tx: watch::Sender<NetworkState>,
    mut buf: Vec<u8>,
) {
    loop {
        let received = tokio::select! {
            _ = tx.closed() => return,
            r = events.recv(&mut buf) => r,
        };
        let observed_at = Instant::now();
        let outcome = match received {
            Ok(()) => {
                let mut outcome = apply_datagram(&buf, &mut table);
                for _ in 1..MAX_BATCH {
                    if outcome.is_err() {
                        break;
                    }
                    match events.try_recv(&mut buf) {
                        Ok(true) => outcome = apply_datagram(&buf, &mut table),
                        Ok(false) => break,
                        Err(e) => outcome = Err(e),
                    }
                }
                outcome
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {}
            Err(Failure::Lost(why)) => {
                tracing::warn!(why, "netlink events were lost; re-reading all interfaces");
                match events.resync(&mut buf).await {
                    Ok(t) => table = t,
                    Err(e) => match reopen(&tx, e, &mut buf).await {
                        Some((ev, t)) => (events, table) = (ev, t),
                        None => return,
                    },
                }
            }
            Err(Failure::Socket(e)) => {
                match reopen(&tx, WatchError::Netlink { what: "receive", source: e }, &mut buf).await {
                    Some((ev, t)) => (events, table) = (ev, t),
                    None => return,
                }
            }
        }
        if publish(&tx, table.interfaces(&classifier), observed_at) {
            tracing::debug!(interfaces = ?tx.borrow().interfaces, "network state changed");
        }
    }
}

/// Reopens the subscription after `error`, with back-off, until it works or nobody
/// listens any more (then `None`).
async fn reopen(tx: &watch::Sender<NetworkState>, error: WatchError, buf: &mut Vec<u8>) -> Option<(Events, Table)> {
    tracing::warn!(%error, "netlink watcher failed; reopening");
    let mut backoff = FIRST_BACKOFF;
    loop {
        tokio::select! {
            _ = tx.closed() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        let attempt = async {
            let events = Events::open()?;
            let table = events.resync(buf).await?;
            Ok::<_, WatchError>((events, table))
        };
        match attempt.await {
            Ok(x) => {
                tracing::info!("netlink watcher reopened");
                return Some(x);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "reopening the netlink watcher failed");
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Why events could not be applied.
#[derive(Debug)]
enum Failure {
    /// Events were dropped or cut: the table must be rebuilt.
    Lost(&'static str),
    /// The socket itself failed.
    Socket(io::Error),
}

/// A netlink socket subscribed to link and address events.
struct Events {
    fd: AsyncFd<Socket>,
}

impl Events {
    fn open() -> Result<Events, WatchError> {
        let err = |what| move |source| WatchError::Netlink { what, source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(err("socket"))?;
        let groups = (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        socket.bind(&SocketAddr::new(0, groups)).map_err(err("subscribe"))?;
        if let Err(e) = socket.set_rx_buf_sz(SOCKET_QUEUE) {
            tracing::debug!(error = %e, "could not enlarge the netlink receive queue");
        }
        socket.set_non_blocking(true).map_err(err("non-blocking"))?;
        let fd = register(socket).map_err(err("register with tokio"))?;
        Ok(Events { fd })
    }

    /// Waits for the next datagram and reads it into `buf`.
    async fn recv(&self, buf: &mut Vec<u8>) -> Result<(), Failure> {
        recv_async(&self.fd, buf).await
    }

    /// Reads a datagram into `buf` if one is queued; `Ok(false)` if none is.
    fn try_recv(&self, buf: &mut Vec<u8>) -> Result<bool, Failure> {
        match recv_now(self.fd.get_ref(), buf) {
            Ok(()) => Ok(true),
            Err(Failure::Socket(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A fresh table: dumps links and addresses, then applies the events queued on this
    /// subscription meanwhile. Retried when the kernel reports an interrupted dump.
    async fn resync(&self, buf: &mut Vec<u8>) -> Result<Table, WatchError> {
        let mut last = None;
        for _ in 0..DUMP_ATTEMPTS {
            let mut table = Table::default();
            let dumped = async {
                dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), &mut table, buf).await?;
                dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()), &mut table, buf).await
            };
            match dumped.await {
                Ok(()) => {}
                Err(DumpError::Interrupted) => {
                    last = Some(WatchError::Netlink {
                        what: "dump",
                        source: io::Error::other("interrupted by concurrent changes every time"),
                    });
                    continue;
                }
                Err(DumpError::Failed(e)) => return Err(e),
            }
            // Events queued since we subscribed; a lost one means dumping again. Bounded:
            // under an endless storm the rest is applied by the event loop.
            let mut lost = false;
            for _ in 0..MAX_DRAIN {
                match self.try_recv(buf) {
                    Ok(true) => {
                        if apply_datagram(buf, &mut table).is_err() {
                            lost = true;
                            break;
                        }
                    }
                    Ok(false) => break,
                    Err(Failure::Lost(_)) => {
                        lost = true;
                        break;
                    }
                    Err(Failure::Socket(e)) => return Err(WatchError::Netlink { what: "receive", source: e }),
                }
            }
            if !lost {
                return Ok(table);
            }
            last = Some(WatchError::Netlink { what: "resync", source: io::Error::other("events kept being lost") });
        }
        Err(last.unwrap_or_else(|| WatchError::Netlink { what: "dump", source: io::Error::other("no attempt made") }))
    }
}

/// Hands `socket` to tokio's reactor, for readability only.
fn register(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor: it stays open until the `Socket` is dropped,
    // which the `AsyncFd` does last, and `as_raw_fd` always returns that descriptor.
    unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }.map_err(io::Error::from)
}

/// Reads one datagram into `buf` without waiting.
fn recv_now(socket: &Socket, buf: &mut Vec<u8>) -> Result<(), Failure> {
    buf.clear();
    buf.reserve(RECV_BUF);
    // MSG_TRUNC makes the kernel report the datagram's full length, so a cut one is seen.
    match socket.recv_from(buf, libc::MSG_TRUNC) {
        Ok((n, _)) if n > buf.capacity() => Err(Failure::Lost("a netlink message was larger than the buffer")),
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Err(Failure::Lost("the receive queue overflowed")),
        Err(e) => Err(Failure::Socket(e)),
    }
}

async fn recv_async(fd: &AsyncFd<Socket>, buf: &mut Vec<u8>) -> Result<(), Failure> {
    loop {
        let mut guard = fd.readable().await.map_err(Failure::Socket)?;
        match guard.try_io(|s| match recv_now(s.get_ref(), buf) {
            Err(Failure::Socket(e)) => Err(e),
            other => Ok(other),
        }) {
            Ok(Ok(outcome)) => return outcome,
            Ok(Err(e)) => return Err(Failure::Socket(e)),
            Err(_would_block) => continue,
        }
    }
}

/// Applies every message of one datagram to `table`. Messages that do not parse are
/// skipped; an overrun notice means events were lost.
fn apply_datagram(datagram: &[u8], table: &mut Table) -> Result<(), Failure> {
    for msg in messages(datagram) {
        match msg {
            Ok(m) => match m.payload {
                NetlinkPayload::InnerMessage(inner) => table.apply(&inner),
                NetlinkPayload::Overrun(_) => return Err(Failure::Lost("the kernel reported an overrun")),
                _ => {}
            },
            Err(e) => tracing::warn!(error = %e, "skipping a netlink message that does not parse"),
        }
    }
    Ok(())
}

/// The messages packed in one datagram, each parsed on its own. A malformed length ends
/// the datagram (there is no way to find the next message).
fn messages(datagram: &[u8]) -> impl Iterator<Item = Result<NetlinkMessage<RouteNetlinkMessage>, String>> + '_ {
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        let rest = datagram.get(offset..).filter(|r| !r.is_empty())?;
        let len = match NetlinkBuffer::new_checked(rest) {
            Ok(b) => b.length() as usize,
            Err(e) => {
                offset = datagram.len();
                return Some(Err(format!("bad netlink header: {e}")));
            }
        };
        let Some(bytes) = rest.get(..len).filter(|_| len >= 16) else {
            offset = datagram.len();
            return Some(Err(format!("bad netlink message length {len}")));
        };
        offset = offset.saturating_add(len.saturating_add(3) & !3);
        Some(NetlinkMessage::deserialize(bytes).map_err(|e| e.to_string()))
    })
}

enum DumpError {
    /// The kernel's data changed during the dump (`NLM_F_DUMP_INTR`): do it again.
    Interrupted,
    Failed(WatchError),
}

impl From<WatchError> for DumpError {
    fn from(e: WatchError) -> Self {
        DumpError::Failed(e)
    }
}

/// Asks the kernel for every link or address (per `request`) on a socket of its own and
/// applies the answers to `table`.
async fn dump(request: RouteNetlinkMessage, table: &mut Table, buf: &mut Vec<u8>) -> Result<(), DumpError> {
    let err = |what| move |source| WatchError::Netlink { what, source };
    let socket = Socket::new(NETLINK_ROUTE).map_err(err("socket"))?;
    socket.set_non_blocking(true).map_err(err("non-blocking"))?;
    let fd = register(socket).map_err(err("register with tokio"))?;

    const SEQ: u32 = 1;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = SEQ;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    msg.finalize();
    let mut bytes = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut bytes);
    fd.get_ref().send_to(&bytes, &SocketAddr::new(0, 0), 0).map_err(err("send dump request"))?;
    tracing::trace!(fd = fd.as_raw_fd(), "netlink dump requested");

    let read_all = async {
        loop {
            match recv_async(&fd, buf).await {
                Ok(()) => {}
                Err(Failure::Lost(why)) => {
                    return Err(DumpError::Failed(WatchError::Netlink { what: "dump", source: io::Error::other(why) }))
                }
                Err(Failure::Socket(e)) => return Err(err("dump")(e).into()),
            }
            for m in messages(buf) {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping a netlink dump message that does not parse");
                        continue;
                    }
                };
                if m.header.sequence_number != SEQ {
                    continue;
                }
                if m.header.flags & NLM_F_DUMP_INTR != 0 {
                    return Err(DumpError::Interrupted);
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => table.apply(&inner),
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        let source = e.code.map_or_else(
                            || io::Error::other("error without a code"),
                            |c| io::Error::from_raw_os_error(-c.get()),
                        );
                        return Err(err("dump")(source).into());
                    }
                    _ => {}
                }
            }
        }
    };
    match tokio::time::timeout(DUMP_TIMEOUT, read_all).await {
        Ok(r) => r,
        Err(_) => Err(err("dump")(io::Error::new(io::ErrorKind::TimedOut, "the kernel did not finish")).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::address::AddressAttribute;

    fn encode(msgs: Vec<RouteNetlinkMessage>) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            let mut msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(m));
            msg.finalize();
            let mut bytes = vec![0u8; msg.buffer_len()];
            msg.serialize(&mut bytes);
            while bytes.len() % 4 != 0 {
                bytes.push(0);
            }
            out.extend(bytes);
        }
        out
    }

    fn new_addr(index: u32, ip: &str) -> RouteNetlinkMessage {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.attributes.push(AddressAttribute::Address(ip.parse().unwrap()));
        RouteNetlinkMessage::NewAddress(m)
    }

    #[test]
    fn a_datagram_with_several_messages_is_applied_whole() {
        let mut link = LinkMessage::default();
        link.header.index = 3;
        link.attributes.push(netlink_packet_route::link::LinkAttribute::IfName("wifi0".into()));
        let bytes =
            encode(vec![RouteNetlinkMessage::NewLink(link), new_addr(3, "2001:db8::1"), new_addr(3, "2001:db8::2")]);
        let mut t = Table::default();
        apply_datagram(&bytes, &mut t).unwrap();
        let got = t.interfaces(&Classifier::new());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].addrs.len(), 2);
    }

    #[test]
    fn garbage_never_panics_and_is_skipped() {
        let good = encode(vec![new_addr(3, "192.0.2.1")]);
        // Every truncation and every single-byte corruption of a valid datagram.
        for cut in 0..good.len() {
            let _ = apply_datagram(&good[..cut], &mut Table::default());
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = apply_datagram(&bad, &mut Table::default());
            }
        }
        // A zero length must not loop forever.
        let mut zero = good.clone();
        zero[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(messages(&zero).count(), 1);
        // A bad message followed by a good one: the good one still counts.
        let mut two = encode(vec![new_addr(3, "192.0.2.1")]);
        two[4..6].copy_from_slice(&0x7777u16.to_ne_bytes()); // unknown message type
        two.extend(encode(vec![new_addr(3, "192.0.2.2")]));
        let mut t = Table::default();
        apply_datagram(&two, &mut t).unwrap();
        let mut link = LinkMessage::default();
        link.header.index = 3;
        t.apply(&RouteNetlinkMessage::NewLink(link));
        assert_eq!(t.interfaces(&Classifier::new())[0].addrs, vec!["192.0.2.2".parse::<std::net::IpAddr>().unwrap()]);
    }

    #[tokio::test]
    async fn the_first_state_lists_this_hosts_interfaces() {
        let rx = start(Classifier::new()).await.unwrap();
        let state = rx.borrow();
        let lo = state.interfaces.iter().find(|i| i.kind == crate::watch::InterfaceKind::Loopback).expect("loopback");
        assert!(lo.addrs.contains(&std::net::IpAddr::from([127, 0, 0, 1])), "{:?}", state.interfaces);
        let listed = if_addrs::get_if_addrs().unwrap();
        // IPv4 only: getifaddrs also lists tentative IPv6 addresses, which netlink skips.
        for i in listed.iter().filter(|i| i.ip().is_ipv4() && crate::watch::is_usable_ip(i.ip(), true)) {
            assert!(state.interfaces.iter().any(|s| s.addrs.contains(&i.ip())), "{} missing", i.ip());
        }
    }

    #[test]
    fn an_overrun_notice_means_events_were_lost() {
        let mut msg: NetlinkMessage<RouteNetlinkMessage> =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::Overrun(vec![0; 4]));
        msg.finalize();
        let mut bytes = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut bytes);
        assert!(matches!(apply_datagram(&bytes, &mut Table::default()), Err(Failure::Lost(_))));
    }
}
