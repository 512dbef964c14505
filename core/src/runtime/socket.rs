//! Socket options of subflows.
//!
//! A byte handed to a subflow's socket is committed to that path: if the path dies, the
//! flow re-sends it elsewhere, after the peer said what it has, and the peer reads nothing
//! beyond the gap until then. The kernel would happily queue megabytes of unsent data per
//! socket (send-buffer autotuning), so a hand-off would first have to re-send all of it.
//! `TCP_NOTSENT_LOWAT` keeps the unsent part small: the socket reports itself writable
//! only while less than [`NOTSENT_LOWAT`] bytes wait unsent, and the rest stays in the
//! flow's send buffer, uncommitted, free to take whichever path is alive.
//!
//! On a very fast path that bound throttles: 128 KiB is a tenth of a millisecond on
//! loopback, and a writer that must wait for room every tenth of a millisecond spends
//! its time waking up (a third of the throughput, measured). So the bound follows the
//! path's delivery rate, about [`UNSENT_TIME`] of its data ([`notsent_lowat_for`]), up to
//! [`MAX_NOTSENT_LOWAT`]: a path below 1 Gbit/s keeps the floor.

use std::net::IpAddr;

use tokio::net::TcpStream;

/// Binds each outgoing subflow's socket to a network before it connects: the platform's
/// way of saying "this socket goes over cellular" when routing by source address alone
/// is not enough — Android's `Network.bindSocket`, `IP_BOUND_IF` on Apple systems,
/// `SO_BINDTODEVICE` on Linux. Set it as [`EndpointConfig::socket_binder`](super::EndpointConfig::socket_binder).
pub trait SocketBinder: Send + Sync + std::fmt::Debug + 'static {
    /// Called with the socket's descriptor, already bound to `local` but not connected.
    /// An error fails this one subflow (the flow tries its other paths).
    fn bind(&self, socket: RawSocket, local: IpAddr) -> std::io::Result<()>;
}

/// A socket descriptor as the platform sees it.
#[cfg(unix)]
pub type RawSocket = std::os::fd::RawFd;
/// A socket descriptor as the platform sees it.
#[cfg(windows)]
pub type RawSocket = std::os::windows::io::RawSocket;

/// Unsent bytes a subflow's socket may hold before it stops taking more, at least.
pub(crate) const NOTSENT_LOWAT: u32 = 128 * 1024;
/// ... and at most.
const MAX_NOTSENT_LOWAT: u32 = 1024 * 1024;
/// How much of a path's data its socket may hold unsent.
const UNSENT_TIME: std::time::Duration = std::time::Duration::from_millis(1);

/// The low-water mark for a path that delivers `rate` bytes per second (None: not
/// measured yet).
pub(crate) fn notsent_lowat_for(rate: Option<u64>) -> u32 {
    let unsent = rate.map_or(0, |r| (r as f64 * UNSENT_TIME.as_secs_f64()) as u64);
    unsent.clamp(NOTSENT_LOWAT as u64, MAX_NOTSENT_LOWAT as u64) as u32
}

/// Applies the subflow options to a connected socket; failures are logged, not fatal
/// (an older kernel without the option still carries the flow).
pub(crate) fn tune_subflow(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    if let Err(e) = set_notsent_lowat(stream, NOTSENT_LOWAT) {
        tracing::debug!(error = %e, "TCP_NOTSENT_LOWAT not set");
    }
}

/// Changes a subflow's low-water mark as its rate changes; a failure only leaves the old one.
pub(crate) fn change_notsent_lowat(stream: &TcpStream, bytes: u32) {
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    if let Err(e) = set_notsent_lowat(stream, bytes) {
        tracing::debug!(error = %e, bytes, "TCP_NOTSENT_LOWAT not changed");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
    let _ = (stream, bytes);
}

#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
fn set_notsent_lowat(stream: &TcpStream, bytes: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const TCP_NOTSENT_LOWAT: libc::c_int = 25;
    #[cfg(target_vendor = "apple")]
    const TCP_NOTSENT_LOWAT: libc::c_int = 0x201;
    set_tcp_option(stream.as_raw_fd(), TCP_NOTSENT_LOWAT, bytes as libc::c_int)
}

/// Sets a TCP-level integer option on socket `fd`.
#[cfg(unix)]
pub(crate) fn set_tcp_option(fd: std::os::fd::RawFd, option: libc::c_int, value: libc::c_int) -> std::io::Result<()> {
    // SAFETY: a socket descriptor the caller owns, and a pointer to a c_int of that size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_low_water_mark_is_set() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        tune_subflow(&stream);
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        use std::os::fd::AsRawFd;
        // SAFETY: as above, with a writable c_int and its length.
        let rc = unsafe {
            libc::getsockopt(stream.as_raw_fd(), libc::IPPROTO_TCP, 25, (&mut value as *mut libc::c_int).cast(), &mut len)
        };
        assert_eq!(rc, 0);
        assert_eq!(value as u32, NOTSENT_LOWAT);
        assert!(stream.nodelay().unwrap());
    }

    #[test]
    fn the_low_water_mark_grows_only_on_very_fast_paths() {
        assert_eq!(notsent_lowat_for(None), NOTSENT_LOWAT);
        // Cellular, Wi-Fi, even gigabit: the floor.
        for mbit in [20u64, 100, 1000] {
            assert_eq!(notsent_lowat_for(Some(mbit * 1_000_000 / 8)), NOTSENT_LOWAT, "{mbit} Mbit/s");
        }
        assert_eq!(notsent_lowat_for(Some(500_000_000)), 500_000);
        assert_eq!(notsent_lowat_for(Some(10_000_000_000)), MAX_NOTSENT_LOWAT, "loopback");
    }
}
