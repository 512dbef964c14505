//! Socket options of subflows.
//!
//! A byte handed to a subflow's socket is committed to that path: if the path dies, the
//! flow re-sends it elsewhere, after the peer said what it has, and the peer reads nothing
//! beyond the gap until then. The kernel would happily queue megabytes of unsent data per
//! socket (send-buffer autotuning), so a hand-off would first have to re-send all of it.
//! `TCP_NOTSENT_LOWAT` keeps the unsent part small: the socket reports itself writable
//! only while less than [`NOTSENT_LOWAT`] bytes wait unsent, and the rest stays in the
//! flow's send buffer, uncommitted, free to take whichever path is alive.

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

/// Unsent bytes a subflow's socket may hold before it stops taking more.
pub(crate) const NOTSENT_LOWAT: u32 = 128 * 1024;

/// Applies the subflow options to a connected socket; failures are logged, not fatal
/// (an older kernel without the option still carries the flow).
pub(crate) fn tune_subflow(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    if let Err(e) = set_notsent_lowat(stream, NOTSENT_LOWAT) {
        tracing::debug!(error = %e, "TCP_NOTSENT_LOWAT not set");
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
fn set_notsent_lowat(stream: &TcpStream, bytes: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const TCP_NOTSENT_LOWAT: libc::c_int = 25;
    #[cfg(target_vendor = "apple")]
    const TCP_NOTSENT_LOWAT: libc::c_int = 0x201;
    let value = bytes as libc::c_int;
    // SAFETY: a valid socket descriptor, and a pointer to a c_int with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_NOTSENT_LOWAT,
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
}
