//! TCP Fast Open for subflows that join a flow.
//!
//! After a move, a subflow to the peer's new address costs a TCP handshake before its JOIN
//! can even leave: one round trip in which nothing of the flow moves. With Fast Open the
//! JOIN rides the SYN, the peer admits the subflow when the SYN arrives and answers with
//! the flow's data right behind its SYN-ACK, so the data comes back one round trip after
//! the dial instead of two.
//!
//! Cookies are not used: a cookie belongs to one server address, and the case that matters
//! is a peer at an address never seen before. Without a cookie a forged SYN can carry a
//! JOIN, but a JOIN is only ever admitted with its MAC and a sequence number never admitted
//! before (within the last 8192), so a replay or a forgery is refused exactly as on a
//! normal connection; the listener's Fast Open queue (`QUEUE`) bounds what such SYNs can
//! hold. New flows (the Noise handshake) never ride a SYN.
//!
//! Everything falls back by itself: a kernel without Fast Open, a server host that has not
//! enabled it (`net.ipv4.tcp_fastopen` needs bit `0x2` there), or a middlebox that strips
//! or drops SYN data (the kernel then sends the bytes after the handshake, and stops trying
//! Fast Open for a while if SYNs with data vanish) all give an ordinary connection with the
//! same bytes on it.

use std::io;
use std::net::SocketAddr;

use socket2::Socket;

#[cfg(any(target_os = "linux", target_os = "android"))]
use super::socket::set_tcp_option as set;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Pending Fast Open connections a listener holds (beyond it, SYN data waits for the
/// handshake).
#[cfg(any(target_os = "linux", target_os = "android"))]
const QUEUE: libc::c_int = 64;

/// Lets a listening socket (before `listen`) take data in SYNs without a cookie. Returns
/// whether it will: the host must enable Fast Open for servers too. Peers learn it from
/// our JOIN answers and only then send JOINs in SYNs: a SYN whose data the server ignores
/// leaves the client's connection recovering a "loss" it never had, which was measured to
/// starve a fresh subflow for hundreds of milliseconds or more.
pub(crate) fn allow_on_listener(socket: &impl std::os::fd::AsRawFd) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let fd = socket.as_raw_fd();
        if let Err(e) = set(fd, libc::TCP_FASTOPEN, QUEUE).and_then(|()| set(fd, libc::TCP_FASTOPEN_NO_COOKIE, 1)) {
            tracing::debug!(error = %e, "TCP Fast Open not enabled on a listener");
            return false;
        }
        // Bit 0x2 of net.ipv4.tcp_fastopen: servers may take data in SYNs (read in this
        // thread's network namespace).
        const TFO_SERVER_ENABLE: u32 = 2;
        let sysctl = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_fastopen").ok();
        let enabled = sysctl.and_then(|v| v.trim().parse::<u32>().ok()).is_some_and(|v| v & TFO_SERVER_ENABLE != 0);
        if !enabled {
            tracing::debug!("TCP Fast Open for servers is off on this host (net.ipv4.tcp_fastopen lacks 0x2); JOINs follow handshakes");
        }
        enabled
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = socket;
        false
    }
}

/// Connects `socket` (non-blocking, bound if it should be) to `addr` and sends `early`:
/// in the SYN when `fast` (the peer's host takes data in SYNs) and the system offers Fast
/// Open, right after the handshake otherwise. Returns once the connection is established
/// and `early` handed to it.
pub(crate) async fn connect(socket: Socket, addr: SocketAddr, early: &[u8], fast: bool) -> io::Result<TcpStream> {
    let fast = fast && !early.is_empty() && request(&socket);
    let mut sent = 0;
    match socket.connect(&addr.into()) {
        // Fast Open defers the SYN to the first send, which carries `early`.
        Ok(()) if fast => match socket.send(early) {
            Ok(n) => sent = n,
            Err(e) if in_progress(&e) => {} // the SYN left without data
            Err(e) => return Err(e),
        },
        Ok(()) => {}
        Err(e) if in_progress(&e) => {}
        Err(e) => return Err(e),
    }
    let mut stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    // Writable once established (or failed: the error is then pending).
    stream.writable().await?;
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    stream.peer_addr()?;
    if sent < early.len() {
        stream.write_all(&early[sent..]).await?;
    }
    tracing::trace!(%addr, in_syn = sent, "connected");
    Ok(stream)
}

/// Whether the peer acknowledged data sent in our SYN on `stream`.
pub(crate) fn syn_data_acked(stream: &TcpStream) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        const TCPI_OPT_SYN_DATA: u8 = 32;
        // SAFETY: `info` is a writable tcp_info and `len` its size; the kernel writes at
        // most `len` bytes.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(stream.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len)
        };
        rc == 0 && info.tcpi_options & TCPI_OPT_SYN_DATA != 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        false
    }
}

fn in_progress(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EINPROGRESS)
}

/// Asks for Fast Open without a cookie on a socket about to connect; false where the
/// system does not offer it.
fn request(socket: &Socket) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        match set(fd, libc::TCP_FASTOPEN_CONNECT, 1).and_then(|()| set(fd, libc::TCP_FASTOPEN_NO_COOKIE, 1)) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "TCP Fast Open not available; the JOIN follows the handshake");
                false
            }
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = socket;
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn client_socket() -> Socket {
        let s = Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, Some(socket2::Protocol::TCP)).unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    #[tokio::test]
    async fn the_early_bytes_arrive_first_whether_or_not_they_rode_the_syn() {
        // This host may not enable Fast Open for servers (net.ipv4.tcp_fastopen & 2): the
        // bytes then follow the handshake, and must arrive the same.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        allow_on_listener(&socket);
        let listener = socket.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        let dial = tokio::spawn(async move {
            let mut s = connect(client_socket(), addr, b"JOIN then more", true).await.unwrap();
            s.write_all(b" and the rest").await.unwrap();
            s.shutdown().await.unwrap();
            syn_data_acked(&s)
        });
        let (mut peer, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"JOIN then more and the rest");
        let rode = dial.await.unwrap();
        println!("the early bytes rode the SYN: {rode}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error_not_a_hang() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        // The listener is gone: nothing listens on that port now.
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), connect(client_socket(), port, b"JOIN", true)).await;
        let err = r.expect("answered in time").expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    }
}
