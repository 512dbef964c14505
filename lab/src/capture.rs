//! Watching what crosses an interface: an `AF_PACKET` capture inside a namespace that
//! counts the TCP traffic of one host (optionally one port) and looks for a byte string
//! in its payloads — to show, for example, that a relay carries a flow and never sees its
//! plaintext.
//!
//! The needle is searched in every TCP payload of the host's traffic, joined to the last
//! `needle.len() - 1` bytes of the same connection and direction seen before, so that an
//! occurrence split between two segments is found too (segments are taken in the order
//! they cross the interface; retransmissions are searched again, which can only find more).
//! Frames the kernel had to drop because the reader fell behind are counted
//! ([`CaptureStats::kernel_drops`]); a capture that dropped frames proves less.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::netns::Netns;
use crate::{io_err, Error, Result};

const ETH_P_ALL: u16 = 0x0003;
const SOL_PACKET: libc::c_int = 263;
const PACKET_STATISTICS: libc::c_int = 6;
const SO_RCVBUFFORCE: libc::c_int = 33;

/// What a [`Capture`] saw of its host's TCP traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames to or from the host (and port) that were captured.
    pub frames: u64,
    /// TCP payload bytes in them, both directions, retransmissions included.
    pub tcp_payload_bytes: u64,
    /// TCP connections (4-tuples, either direction) seen.
    pub connections: u64,
    /// Occurrences of the needle found.
    pub needle_hits: u64,
    /// Where the first occurrence was found (`src -> dst`), if any.
    pub first_hit: Option<String>,
    /// Frames the kernel dropped because the capture's buffer was full.
    pub kernel_drops: u64,
}

/// A running capture; stopped by [`Capture::stop`] (or on drop). Its socket buffer holds up
/// to 256 MiB while the reader falls behind.
#[derive(Debug)]
pub struct Capture {
    stats: Arc<Mutex<CaptureStats>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

type Key = (Ipv4Addr, u16, Ipv4Addr, u16);

impl Capture {
    /// Starts capturing on `dev` of `ns` the TCP traffic to and from `host` (and `port`,
    /// if given), looking for `needle` (at least one byte) in its payloads. Returns once
    /// the capture is running.
    pub fn start(ns: &Netns, dev: &str, host: Ipv4Addr, port: Option<u16>, needle: &[u8]) -> Result<Capture> {
        if needle.is_empty() {
            return Err(Error::Invalid("a capture needs a needle of at least one byte".into()));
        }
        let stats = Arc::new(Mutex::new(CaptureStats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let file = std::fs::File::open(format!("/var/run/netns/{}", ns.name()))
            .map_err(|e| io_err(format!("open namespace {}", ns.name()), e))?;
        let (s, st, dev, needle) = (stats.clone(), stop.clone(), dev.to_string(), needle.to_vec());
        let ns_name = ns.name().to_string();
        let thread = std::thread::Builder::new()
            .name(format!("capture-{dev}"))
            .spawn(move || {
                // SAFETY: setns on a valid namespace fd; affects this thread only.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let e = io_err(format!("setns into {ns_name}"), std::io::Error::last_os_error());
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                // A reader that falls behind loses frames: ahead of the traffic it watches.
                // SAFETY: setpriority on this thread (a tid); failure only leaves it at 0.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -10) };
                let fd = match capture_socket(&dev) {
                    Ok(fd) => fd,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                run(&fd, host, port, &needle, &s, &st);
            })
            .map_err(|e| io_err("spawn the capture thread", e))?;
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Capture { stats, stop, thread: Some(thread) }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Timeout { after: Duration::from_secs(10), what: "the capture to start".into() }),
        }
    }

    /// What it saw so far.
    pub fn stats(&self) -> CaptureStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops capturing (after reading what the kernel still holds) and returns the totals.
    pub fn stop(mut self) -> CaptureStats {
        self.halt();
        self.stats()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.halt();
    }
}

fn capture_socket(dev: &str) -> Result<OwnedFd> {
    let last = |what: &str| io_err(format!("{what} for {dev}"), std::io::Error::last_os_error());
    let cname = std::ffi::CString::new(dev).map_err(|_| Error::Invalid(format!("interface name {dev:?}")))?;
    // SAFETY: plain libc calls on values we own; every result is checked.
    unsafe {
        let ifindex = libc::if_nametoindex(cname.as_ptr());
        if ifindex == 0 {
            return Err(last("if_nametoindex"));
        }
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, ETH_P_ALL.to_be() as i32);
        if fd < 0 {
            return Err(last("AF_PACKET socket"));
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let buf: libc::c_int = 256 << 20;
        if libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, SO_RCVBUFFORCE, (&buf as *const libc::c_int).cast(), 4) != 0 {
            return Err(last("enlarge the capture buffer"));
        }
        // Reads wake up at least every 50 ms, so a stop is noticed.
        let tv = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
        if libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        ) != 0
        {
            return Err(last("set the capture's read timeout"));
        }
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        if libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32) != 0 {
            return Err(last("bind the capture socket"));
        }
        Ok(fd)
    }
}

/// Frames the kernel dropped since the last call (reading resets its counters).
fn kernel_drops(fd: &OwnedFd) -> u64 {
    let mut st = [0u32; 2]; // struct tpacket_stats { tp_packets, tp_drops }
    let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
    // SAFETY: getsockopt into a buffer of the size given.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), SOL_PACKET, PACKET_STATISTICS, st.as_mut_ptr().cast(), &mut len) };
    if rc == 0 {
        u64::from(st[1])
    } else {
        0
    }
}

fn run(fd: &OwnedFd, host: Ipv4Addr, port: Option<u16>, needle: &[u8], stats: &Mutex<CaptureStats>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65_536];
    // Per connection and direction: the last `needle.len() - 1` payload bytes seen.
    let mut tails: HashMap<Key, Vec<u8>> = HashMap::new();
    let mut edge = Vec::with_capacity(2 * needle.len());
    // Counted here and published every few frames (the reader must keep up with the
    // kernel: a lock per frame would slow it).
    let mut local = CaptureStats::default();
    let mut unpublished = 0u32;
    let publish = |local: &mut CaptureStats| {
        let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
        s.frames += std::mem::take(&mut local.frames);
        s.tcp_payload_bytes += std::mem::take(&mut local.tcp_payload_bytes);
        s.connections += std::mem::take(&mut local.connections);
        s.needle_hits += std::mem::take(&mut local.needle_hits);
        if s.first_hit.is_none() {
            s.first_hit = local.first_hit.take();
        }
        s.kernel_drops += std::mem::take(&mut local.kernel_drops);
    };
    // Once stopped, what the kernel still holds is read (for at most a second).
    let mut stopped_at: Option<std::time::Instant> = None;
    loop {
        if stopped_at.is_none() && stop.load(Ordering::Relaxed) {
            stopped_at = Some(std::time::Instant::now());
        }
        if stopped_at.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
            break;
        }
        // SAFETY: recv into our buffer, with its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            let idle = matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted);
            publish(&mut local);
            unpublished = 0;
            if !idle || stopped_at.is_some() {
                break;
            }
            continue;
        }
        let frame = &buf[..n as usize];
        let Some((key, payload)) = tcp_of(frame) else { continue };
        let (src, sport, dst, dport) = key;
        let ours = |ip: Ipv4Addr, p: u16| ip == host && port.is_none_or(|want| want == p);
        if !ours(src, sport) && !ours(dst, dport) {
            continue;
        }
        let new_conn = !tails.contains_key(&key) && !tails.contains_key(&(dst, dport, src, sport));
        let tail = tails.entry(key).or_default();
        // Occurrences inside the payload, and those that start in the tail before it.
        let mut hits = count(payload, needle);
        if !tail.is_empty() {
            edge.clear();
            edge.extend_from_slice(tail);
            edge.extend_from_slice(&payload[..payload.len().min(needle.len() - 1)]);
            hits += count(&edge, needle);
        }
        if payload.len() >= needle.len() - 1 {
            tail.clear();
            tail.extend_from_slice(&payload[payload.len() - (needle.len() - 1)..]);
        } else {
            tail.extend_from_slice(payload);
            let cut = tail.len().saturating_sub(needle.len() - 1);
            tail.drain(..cut);
        }
        local.frames += 1;
        local.tcp_payload_bytes += payload.len() as u64;
        local.connections += u64::from(new_conn);
        local.needle_hits += hits;
        if hits > 0 && local.first_hit.is_none() {
            local.first_hit = Some(format!("{src}:{sport} -> {dst}:{dport}"));
        }
        unpublished += 1;
        if unpublished >= 64 {
            publish(&mut local);
            unpublished = 0;
        }
    }
    local.kernel_drops += kernel_drops(fd);
    publish(&mut local);
}

/// The connection (src, sport, dst, dport) and TCP payload of an Ethernet frame, if it
/// carries IPv4 TCP.
fn tcp_of(frame: &[u8]) -> Option<(Key, &[u8])> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    if ip[0] >> 4 != 4 || ip[9] != 6 || ihl < 20 || total < ihl + 20 {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let tcp = &ip[ihl..total];
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < 20 || doff > tcp.len() {
        return None;
    }
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    Some(((src, sport, dst, dport), &tcp[doff..]))
}

/// Occurrences of `needle` in `hay` (overlapping ones counted).
fn count(hay: &[u8], needle: &[u8]) -> u64 {
    if hay.len() < needle.len() {
        return 0;
    }
    let first = needle[0];
    let mut hits = 0;
    for (i, _) in hay[..=hay.len() - needle.len()].iter().enumerate().filter(|(_, b)| **b == first) {
        if &hay[i..i + needle.len()] == needle {
            hits += 1;
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needles_are_counted_and_frames_parsed() {
        assert_eq!(count(b"abcabcab", b"abc"), 2);
        assert_eq!(count(b"aaaa", b"aa"), 3);
        assert_eq!(count(b"ab", b"abc"), 0);
        // Ethernet + IPv4 (20) + TCP (20) + "hi".
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let mut ip = vec![0x45, 0, 0, 42, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&443u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&5555u16.to_be_bytes());
        tcp[12] = 5 << 4;
        f.append(&mut ip);
        f.append(&mut tcp);
        f.extend_from_slice(b"hi");
        let ((src, sport, dst, dport), payload) = tcp_of(&f).unwrap();
        assert_eq!((src, sport, dst, dport), (Ipv4Addr::new(10, 0, 0, 1), 443, Ipv4Addr::new(10, 0, 0, 2), 5555));
        assert_eq!(payload, b"hi");
        f[14 + 9] = 17; // UDP
        assert!(tcp_of(&f).is_none());
    }
}
