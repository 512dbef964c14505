//! A userspace link emulator: a transparent L2 wire with delay, jitter, loss and rate.
//!
//! Why userspace: the kernel the project runs on has no `netem` (nor `fq`/`fq_codel`), so
//! the usual `tc qdisc add … netem delay 50ms loss 1%` is not available. The emulator sits
//! in its own *link namespace* between two veth ends, `a` and `b`, that carry no addresses:
//! a raw `AF_PACKET` socket on each end reads every frame arriving there and, after the
//! link's treatment, writes it out of the other end. Hosts on either side see one Ethernet
//! segment (ARP works across it), so the emulator needs no knowledge of IP.
//!
//! Per direction, one thread does everything for that direction: read frames, decide
//! their fate, and release them at their due time (`ppoll` with a nanosecond timeout
//! until the head of the delay line is due). For each frame, in this order:
//! 1. blackhole: dropped (the "path silently dies" switch; frames already in flight when
//!    it is switched on are dropped too);
//! 2. loss: dropped with probability `loss` (Bernoulli, from a seeded SplitMix64 per
//!    direction, so a run is reproducible given the same frame sequence);
//! 3. rate: the frame is serialised after the ones before it (`len*8/rate`); if the
//!    backlog waiting for serialisation would exceed `queue_bytes`, it is dropped at the
//!    tail, like a router's buffer;
//! 4. delay and jitter: released at `serialised + delay ± U(jitter)`, but never before
//!    the previous frame: jitter never reorders.
//!
//! Rate is enforced here rather than with `tbf` on the egress veth so that one object,
//! changeable at run time through one [`EmuHandle`], owns every impairment of the link,
//! the queue is drop-tail at a size we choose and can count, and the order "rate, then
//! delay" matches a real access link (serialisation at the bottleneck, then propagation).
//!
//! The veth ends that send into the emulator must have checksum offload, TSO/GSO and GRO
//! off: otherwise the kernel hands a packet socket frames with unfinished checksums or
//! 64 KB super-frames. [`Netns::veth`] does this for every veth it makes; frames too
//! large to forward are counted in [`DirStats::dropped_oversize`].

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::netns::Netns;
use crate::spec::LinkSpec;
use crate::{io_err, Error, Result};

const ETH_P_ALL: u16 = 0x0003;
const SOL_PACKET: libc::c_int = 263;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_OUTGOING: u8 = 4;
const SO_RCVBUFFORCE: libc::c_int = 33;
const SO_SNDBUFFORCE: libc::c_int = 32;
/// Largest frame we read; anything above is a GSO super-frame from a misconfigured veth.
const MAX_FRAME: usize = 65_536;
/// Frames read per wake-up before releasing due frames again (fairness to the sender side).
const READ_BURST: usize = 64;

/// Tunables of an emulator that are not part of the [`LinkSpec`].
#[derive(Debug, Clone, Copy)]
pub struct EmuOptions {
    /// Seed of the loss and jitter generators (each direction derives its own).
    pub seed: u64,
    /// Drop-tail limit of the rate-limited backlog, in bytes (default: 1000 full frames).
    pub queue_bytes: usize,
    /// Bound on frames held in the delay line (memory bound; excess is a queue drop).
    pub max_frames: usize,
}

impl Default for EmuOptions {
    fn default() -> Self {
        EmuOptions {
            seed: 1,
            queue_bytes: 1000 * 1514,
            max_frames: 100_000,
        }
    }
}

/// Counters of one direction of an emulated link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Frames read from the ingress interface.
    pub frames_in: u64,
    /// Frames written to the egress interface.
    pub frames_out: u64,
    /// Bytes written to the egress interface (Ethernet header included).
    pub bytes_out: u64,
    /// Frames dropped by random loss.
    pub dropped_loss: u64,
    /// Frames dropped because the queue was full.
    pub dropped_queue: u64,
    /// Frames dropped while blackholed.
    pub dropped_blackhole: u64,
    /// Frames larger than the emulator forwards (offloads left on).
    pub dropped_oversize: u64,
    /// Frames the egress interface refused (e.g. its peer was down).
    pub send_errors: u64,
}

impl DirStats {
    /// Frames dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_queue + self.dropped_blackhole + self.dropped_oversize
    }
}

/// Counters of both directions: `a_to_b` carries frames that arrived on interface `a`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmuStats {
    /// Frames from `a` towards `b` (in [`crate::PhoneLab`]: phone/core side towards the router/server side).
    pub a_to_b: DirStats,
    /// Frames from `b` towards `a`.
    pub b_to_a: DirStats,
}

impl EmuStats {
    /// Drops in both directions.
    pub fn dropped(&self) -> u64 {
        self.a_to_b.dropped() + self.b_to_a.dropped()
    }
}

#[derive(Default)]
struct Counters {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_queue: AtomicU64,
    dropped_blackhole: AtomicU64,
    dropped_oversize: AtomicU64,
    send_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> DirStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirStats {
            frames_in: g(&self.frames_in),
            frames_out: g(&self.frames_out),
            bytes_out: g(&self.bytes_out),
            dropped_loss: g(&self.dropped_loss),
            dropped_queue: g(&self.dropped_queue),
            dropped_blackhole: g(&self.dropped_blackhole),
            dropped_oversize: g(&self.dropped_oversize),
            send_errors: g(&self.send_errors),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[derive(Clone, Copy)]
struct Params {
    spec: LinkSpec,
    blackhole: bool,
}

struct Shared {
    name: String,
    params: Mutex<Params>,
    dirs: [Counters; 2],
}

impl Shared {
    fn params(&self) -> Params {
        // A poisoned lock only means a setter panicked mid-assignment of a Copy value.
        *self.params.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Changes and observes a running [`Emulator`]; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct EmuHandle(Arc<Shared>);

impl std::fmt::Debug for EmuHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.0.params();
        f.debug_struct("EmuHandle")
            .field("name", &self.0.name)
            .field("spec", &p.spec.to_string())
            .field("blackhole", &p.blackhole)
            .finish()
    }
}

impl EmuHandle {
    /// The link's current behaviour.
    pub fn spec(&self) -> LinkSpec {
        self.0.params().spec
    }

    /// Changes delay, jitter, loss and rate from the next frame on (both directions).
    pub fn set_spec(&self, spec: LinkSpec) {
        info!(link = %self.0.name, %spec, "link changed");
        self.0.params.lock().unwrap_or_else(|p| p.into_inner()).spec = spec;
    }

    /// Drops every frame, including those in flight, while `on`: the path silently dies.
    pub fn set_blackhole(&self, on: bool) {
        info!(link = %self.0.name, on, "blackhole");
        self.0
            .params
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .blackhole = on;
    }

    /// Whether the link is blackholed.
    pub fn is_blackholed(&self) -> bool {
        self.0.params().blackhole
    }

    /// Counters so far.
    pub fn stats(&self) -> EmuStats {
        EmuStats {
            a_to_b: self.0.dirs[0].snapshot(),
            b_to_a: self.0.dirs[1].snapshot(),
        }
    }

    /// The emulator's name (`namespace:a<->b`).
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

/// A running emulator; stops (and joins its threads) on drop.
#[derive(Debug)]
pub struct Emulator {
    handle: EmuHandle,
    stop: OwnedFd,
    threads: Vec<JoinHandle<()>>,
}

impl Emulator {
    /// Starts forwarding between interfaces `a` and `b` of `ns` (which should hold no
    /// addresses). Brings both up in promiscuous mode with offloads off.
    pub fn start(
        ns: &Netns,
        a: &str,
        b: &str,
        spec: LinkSpec,
        opts: EmuOptions,
    ) -> Result<Emulator> {
        if a == b {
            return Err(Error::Invalid(format!(
                "emulator needs two different interfaces, got {a} twice"
            )));
        }
        for dev in [a, b] {
            ns.ip(&["link", "set", "dev", dev, "up", "promisc", "on"])?;
            ns.run(
                "ethtool",
                &[
                    "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
                ],
            )?;
        }
        let name = format!("{}:{a}<->{b}", ns.name());
        let (fa, fb) = open_sockets(ns, a, b)?;
        // SAFETY: eventfd has no preconditions; the result is checked below.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(io_err(
                "eventfd for the emulator",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: efd is a fresh, owned descriptor.
        let stop = unsafe { OwnedFd::from_raw_fd(efd) };
        let shared = Arc::new(Shared {
            name: name.clone(),
            params: Mutex::new(Params {
                spec,
                blackhole: false,
            }),
            dirs: [Counters::default(), Counters::default()],
        });
        let (fa, fb) = (Arc::new(fa), Arc::new(fb));
        let mut emu = Emulator {
            handle: EmuHandle(shared.clone()),
            stop,
            threads: Vec::new(),
        };
        for dir in 0..2usize {
            let (rx, tx) = if dir == 0 {
                (fa.clone(), fb.clone())
            } else {
                (fb.clone(), fa.clone())
            };
            let shared = shared.clone();
            let stop_fd = emu.stop.as_raw_fd();
            let thread = std::thread::Builder::new()
                .name(format!("emu-{}", if dir == 0 { "ab" } else { "ba" }))
                .spawn(move || pump(dir, &rx, &tx, stop_fd, &shared, opts))
                .map_err(|e| io_err(format!("spawn emulator thread for {name}"), e))?;
            emu.threads.push(thread);
        }
        info!(link = %emu.handle.name(), %spec, "emulator started");
        Ok(emu)
    }

    /// A handle to change the link or read its counters; stays valid after the stop.
    pub fn handle(&self) -> EmuHandle {
        self.handle.clone()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // SAFETY: writing 8 bytes to our own eventfd; it stays readable, so both threads wake.
        let one: u64 = 1;
        unsafe { libc::write(self.stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        debug!(link = %self.handle.name(), stats = ?self.handle.stats(), "emulator stopped");
    }
}

/// Opens the two packet sockets from a thread inside `ns` (a socket belongs to the
/// namespace of the thread that creates it; the workers then need not switch).
fn open_sockets(ns: &Netns, a: &str, b: &str) -> Result<(OwnedFd, OwnedFd)> {
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter_current_thread()?;
            Ok((packet_socket(a)?, packet_socket(b)?))
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Invalid("socket-opening thread panicked".into())))
    })
}

fn packet_socket(dev: &str) -> Result<OwnedFd> {
    let last = |what: &str| io_err(format!("{what} for {dev}"), std::io::Error::last_os_error());
    let cname = std::ffi::CString::new(dev)
        .map_err(|_| Error::Invalid(format!("interface name {dev:?}")))?;
    // SAFETY: plain libc calls on values we own; every result is checked.
    unsafe {
        let ifindex = libc::if_nametoindex(cname.as_ptr());
        if ifindex == 0 {
            return Err(last("if_nametoindex"));
        }
        // Protocol 0: receive nothing until bound to the one interface.
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(last("AF_PACKET socket"));
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        if libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            return Err(last("bind packet socket"));
        }
        let one: libc::c_int = 1;
        let buf: libc::c_int = 4 << 20;
        let set = |level, opt, v: &libc::c_int| {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                opt,
                (v as *const libc::c_int).cast(),
                4,
            ) == 0
        };
        if !set(SOL_PACKET, PACKET_IGNORE_OUTGOING, &one) {
            // Older kernels: outgoing frames are filtered by sll_pkttype in `pump` anyway.
            debug!(dev, "PACKET_IGNORE_OUTGOING not supported");
        }
        if !set(libc::SOL_SOCKET, SO_RCVBUFFORCE, &buf)
            || !set(libc::SOL_SOCKET, SO_SNDBUFFORCE, &buf)
        {
            return Err(last("enlarge packet socket buffers"));
        }
        Ok(fd)
    }
}

/// SplitMix64: tiny, seedable, good enough for Bernoulli loss and uniform jitter.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// When a frame read at `now` leaves the emulator, or `None` when the queue is full.
/// Pure, so the timing model is unit-tested without sockets.
struct Timing {
    link_free: Instant,
    last_release: Instant,
}

impl Timing {
    fn new(now: Instant) -> Timing {
        Timing {
            link_free: now,
            last_release: now,
        }
    }

    fn schedule(
        &mut self,
        now: Instant,
        len: usize,
        spec: &LinkSpec,
        queue_bytes: usize,
        rng: &mut Rng,
    ) -> Option<Instant> {
        let serialised = match spec.rate_bps() {
            Some(rate) => {
                let backlog =
                    self.link_free.saturating_duration_since(now).as_secs_f64() * rate as f64 / 8.0;
                if backlog + len as f64 > queue_bytes as f64 {
                    return None;
                }
                let tx_ns = (len as u128 * 8 * 1_000_000_000 / rate as u128) as u64;
                let done = self.link_free.max(now) + Duration::from_nanos(tx_ns);
                self.link_free = done;
                done
            }
            None => now,
        };
        let delay = spec.delay().as_nanos() as i128;
        let jitter = spec.jitter().as_nanos() as i128;
        let offset = if jitter > 0 {
            ((rng.unit() * 2.0 - 1.0) * jitter as f64) as i128
        } else {
            0
        };
        let total = Duration::from_nanos((delay + offset).max(0) as u64);
        let at = (serialised + total).max(self.last_release);
        self.last_release = at;
        Some(at)
    }
}

fn pump(
    dir: usize,
    rx: &OwnedFd,
    tx: &OwnedFd,
    stop: libc::c_int,
    shared: &Shared,
    opts: EmuOptions,
) {
    // The default 50 µs timer slack would add up to 50 µs to every release time.
    // SAFETY: prctl(PR_SET_TIMERSLACK) only affects this thread.
    if unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) } != 0 {
        debug!(link = %shared.name, "could not lower timer slack");
    }
    let c = &shared.dirs[dir];
    let mut rng = Rng(opts.seed ^ (0xA5A5_0000_0000_0000u64.wrapping_mul(dir as u64 + 1)));
    let mut timing = Timing::new(Instant::now());
    let mut line: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; MAX_FRAME];
    let mut warned_send = false;
    let mut warned_oversize = false;
    loop {
        // 1. Release everything due.
        let now = Instant::now();
        while line.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, frame)) = line.pop_front() else {
                break;
            };
            if shared.params().blackhole {
                bump(&c.dropped_blackhole);
                continue;
            }
            // SAFETY: sending our own buffer on our own socket.
            let n = unsafe { libc::send(tx.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if n < 0 {
                bump(&c.send_errors);
                if !warned_send {
                    warned_send = true;
                    debug!(link = %shared.name, dir, "send failed: {}", std::io::Error::last_os_error());
                }
            } else {
                bump(&c.frames_out);
                c.bytes_out.fetch_add(frame.len() as u64, Ordering::Relaxed);
            }
        }
        // 2. Sleep until a frame arrives, the head is due, or we are stopped.
        let timeout = line.front().map(|(at, _)| {
            let d = at.saturating_duration_since(Instant::now());
            libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            }
        });
        let mut fds = [
            libc::pollfd {
                fd: rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let tp = timeout
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: fds and tp point to live locals for the duration of the call.
        let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, tp, std::ptr::null()) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            warn!(link = %shared.name, dir, "ppoll failed, emulator direction stops: {e}");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        if fds[0].revents & libc::POLLNVAL != 0 {
            warn!(link = %shared.name, dir, "packet socket closed, emulator direction stops");
            return;
        }
        if fds[0].revents == 0 {
            continue;
        }
        // 3. Read a burst of frames and schedule them.
        for _ in 0..READ_BURST {
            // SAFETY: zeroed sockaddr_ll is valid; buffers are ours and sized as passed.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut sll_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            let n = unsafe {
                libc::recvfrom(
                    rx.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut sll_len,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    _ => {
                        // e.g. ENETDOWN once when the interface goes away; poll decides next.
                        debug!(link = %shared.name, dir, "recv: {e}");
                        break;
                    }
                }
            }
            if sll.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            bump(&c.frames_in);
            let n = n as usize;
            if n > buf.len() {
                bump(&c.dropped_oversize);
                if !warned_oversize {
                    warned_oversize = true;
                    warn!(link = %shared.name, dir, len = n, "oversize frame dropped: turn off TSO/GSO/GRO on the veth");
                }
                continue;
            }
            let p = shared.params();
            if p.blackhole {
                bump(&c.dropped_blackhole);
                continue;
            }
            let loss = p.spec.loss();
            if loss > 0.0 && rng.unit() < loss {
                bump(&c.dropped_loss);
                continue;
            }
            if line.len() >= opts.max_frames {
                bump(&c.dropped_queue);
                continue;
            }
            match timing.schedule(Instant::now(), n, &p.spec, opts.queue_bytes, &mut rng) {
                Some(at) => line.push_back((at, buf[..n].to_vec())),
                None => bump(&c.dropped_queue),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> LinkSpec {
        s.parse().unwrap()
    }

    #[test]
    fn delay_only_adds_the_delay() {
        let t0 = Instant::now();
        let mut t = Timing::new(t0);
        let mut rng = Rng(1);
        let at = t
            .schedule(t0, 1500, &spec("50ms"), 1 << 20, &mut rng)
            .unwrap();
        assert_eq!(at - t0, Duration::from_millis(50));
    }

    #[test]
    fn rate_serialises_back_to_back_frames() {
        let t0 = Instant::now();
        let mut t = Timing::new(t0);
        let mut rng = Rng(1);
        let s = spec("8mbit"); // 1 byte per microsecond
        let a = t.schedule(t0, 1000, &s, 1 << 20, &mut rng).unwrap();
        let b = t.schedule(t0, 1000, &s, 1 << 20, &mut rng).unwrap();
        assert_eq!(a - t0, Duration::from_micros(1000));
        assert_eq!(b - t0, Duration::from_micros(2000));
        // After the link idles, a frame starts at once.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            t.schedule(later, 1000, &s, 1 << 20, &mut rng).unwrap() - later,
            Duration::from_micros(1000)
        );
    }

    #[test]
    fn queue_is_drop_tail() {
        let t0 = Instant::now();
        let mut t = Timing::new(t0);
        let mut rng = Rng(1);
        let s = spec("8mbit");
        assert!(t.schedule(t0, 1000, &s, 2000, &mut rng).is_some());
        assert!(t.schedule(t0, 1000, &s, 2000, &mut rng).is_some());
        assert!(t.schedule(t0, 1000, &s, 2000, &mut rng).is_none());
    }

    #[test]
    fn jitter_stays_in_bounds_and_never_reorders() {
        let t0 = Instant::now();
        let mut t = Timing::new(t0);
        let mut rng = Rng(7);
        let s = spec("50ms 10ms jitter");
        let mut prev = t0;
        let mut spread = (Duration::MAX, Duration::ZERO);
        for i in 0..2_000u64 {
            let now = t0 + Duration::from_millis(i * 5);
            let at = t.schedule(now, 100, &s, 1 << 20, &mut rng).unwrap();
            assert!(at >= prev, "reordered");
            prev = at;
            let d = at - now;
            assert!(d <= Duration::from_millis(60), "{d:?}");
            spread = (spread.0.min(d), spread.1.max(d));
        }
        assert!(
            spread.1 - spread.0 > Duration::from_millis(15),
            "{spread:?}"
        );
    }

    #[test]
    fn rng_is_reproducible_and_roughly_uniform() {
        let draw = |seed| {
            let mut r = Rng(seed);
            (0..100_000).filter(|_| r.unit() < 0.3).count()
        };
        assert_eq!(draw(42), draw(42));
        let n = draw(42);
        assert!((29_000..31_000).contains(&n), "{n}");
    }
}
