//! Moving bytes between a client's connection and its listener's.
//!
//! On Linux the bytes never enter the relay's memory: each direction has a pipe, and
//! `splice(2)` moves pages from one socket into the pipe and from the pipe into the other
//! socket. The pipe's size (`F_SETPIPE_SZ`, the splice buffer) is the most a direction
//! holds when its receiver is slower than its sender; once it is full the relay stops
//! reading, and TCP's flow control pushes back on the sender. An idle splice holds its
//! two sockets and two empty pipes, and a parked task: no buffer.
//!
//! Both directions run in the splice's one task, driven by tokio's readiness events
//! (`readable()`/`writable()` and `try_io`, which clears a readiness only when the call
//! says `EAGAIN`). A `splice` from a socket into a pipe says `EAGAIN` both when the socket
//! is empty and when the pipe is full, so readiness is cleared through `try_io` only while
//! the pipe is empty, where `EAGAIN` can only mean an empty socket; with bytes in the pipe
//! the call is made directly and the pipe drained before waiting on anything.
//!
//! Elsewhere a plain copy loop does the same with a buffer that exists only while bytes
//! move (dropped whenever the source has nothing to read).
//!
//! Half-close: the end of one direction (EOF) shuts down writing on the other socket and
//! the other direction carries on until it ends too. An error on either closes both. A
//! splice with no byte either way for the idle timeout is closed, as is every splice when
//! the relay stops.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::SpliceEnd;

/// When bytes last moved through a splice, either way.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { start: Instant::now(), last: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last.store(self.start.elapsed().as_millis() as u64, Relaxed);
    }

    /// Completes once nothing moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.start + Duration::from_millis(self.last.load(Relaxed)) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// How a splice moves its bytes.
#[derive(Debug)]
pub(crate) enum Mover {
    /// `splice(2)` through a pipe per direction (client to listener, listener to client).
    #[cfg(target_os = "linux")]
    Pipes(pipe::Pipe, pipe::Pipe),
    /// A copy loop with a buffer of this many bytes while bytes move.
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    Copy(usize),
}

impl Mover {
    /// The mover for a splice buffering `buffer` bytes per direction. On Linux this makes
    /// the two pipes; the flag says the kernel kept a pipe smaller than asked (the user's
    /// pipe memory limit).
    pub(crate) fn new(buffer: usize) -> io::Result<(Mover, bool)> {
        #[cfg(target_os = "linux")]
        {
            let (up, small_up) = pipe::Pipe::new(buffer)?;
            let (down, small_down) = pipe::Pipe::new(buffer)?;
            Ok((Mover::Pipes(up, down), small_up || small_down))
        }
        #[cfg(not(target_os = "linux"))]
        {
            Ok((Mover::Copy(buffer), false))
        }
    }
}

/// Splices `client` and `listener` until both directions end, one fails, nothing moves
/// for `idle`, or `stop` fires (its sender is dropped). Bytes moved are added to
/// `to_listener` and `to_client` as they go.
pub(crate) async fn run(
    client: &TcpStream,
    listener: &TcpStream,
    mover: &Mover,
    idle: Duration,
    to_listener: &AtomicU64,
    to_client: &AtomicU64,
    stop: &mut watch::Receiver<()>,
) -> SpliceEnd {
    let activity = Activity::new();
    let both = async {
        match mover {
            #[cfg(target_os = "linux")]
            Mover::Pipes(up, down) => {
                tokio::try_join!(
                    pipe::pump(client, listener, up, to_listener, &activity),
                    pipe::pump(listener, client, down, to_client, &activity),
                )
            }
            Mover::Copy(buffer) => tokio::try_join!(
                copy(client, listener, *buffer, to_listener, &activity),
                copy(listener, client, *buffer, to_client, &activity),
            ),
        }
    };
    tokio::select! {
        done = both => match done {
            Ok(_) => SpliceEnd::Closed,
            Err(e) => {
                tracing::debug!(error = %e, "splice failed");
                SpliceEnd::Error
            }
        },
        () = activity.idle_for(idle) => SpliceEnd::Idle,
        _ = stop.changed() => SpliceEnd::Shutdown,
    }
}

/// Ends the writing half of `stream`: its peer reads EOF after the bytes sent.
fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write)
}

/// Copies `src` to `dst` until EOF, then shuts `dst` down for writing.
async fn copy(src: &TcpStream, dst: &TcpStream, buffer: usize, moved: &AtomicU64, activity: &Activity) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        src.readable().await?;
        if buf.is_empty() {
            buf = vec![0u8; buffer];
        }
        let n = match src.try_read(&mut buf) {
            Ok(0) => return shutdown_write(dst),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Nothing to read: an idle direction holds no buffer.
                buf = Vec::new();
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        activity.touch();
        let mut sent = 0;
        while sent < n {
            dst.writable().await?;
            match dst.try_write(&buf[sent..n]) {
                Ok(k) => {
                    sent += k;
                    moved.fetch_add(k as u64, Relaxed);
                    activity.touch();
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(target_os = "linux")]
pub(crate) mod pipe {
    use std::io;
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::{shutdown_write, Activity};

    /// A non-blocking pipe, and how many bytes it holds.
    #[derive(Debug)]
    pub(crate) struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        size: usize,
    }

    impl Pipe {
        /// A pipe holding `size` bytes; true beside it if the kernel kept a smaller one.
        pub(crate) fn new(size: usize) -> io::Result<(Pipe, bool)> {
            let mut fds = [0 as libc::c_int; 2];
            // SAFETY: `fds` has room for the two descriptors pipe2 writes.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
            let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            let asked = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
            // SAFETY: fcntl on a descriptor we own, with an integer argument.
            let set = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, asked) };
            if set >= 0 {
                return Ok((Pipe { read, write, size: set as usize }, false));
            }
            // Over the user's pipe memory limit (EPERM): keep what the kernel gave.
            // SAFETY: as above.
            let kept = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
            if kept <= 0 {
                return Err(io::Error::last_os_error());
            }
            Ok((Pipe { read, write, size: kept as usize }, (kept as usize) < size))
        }
    }

    fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        // SAFETY: plain descriptors, no offsets; the kernel moves pages between them.
        let n = unsafe {
            libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Moves `src` to `dst` through `pipe` until EOF, then shuts `dst` down for writing.
    pub(crate) async fn pump(
        src: &TcpStream,
        dst: &TcpStream,
        pipe: &Pipe,
        moved: &AtomicU64,
        activity: &Activity,
    ) -> io::Result<()> {
        let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
        let (pipe_in, pipe_out) = (pipe.write.as_raw_fd(), pipe.read.as_raw_fd());
        let mut held = 0usize;
        let mut eof = false;
        loop {
            // A busy splice must not keep its worker from every other task.
            tokio::task::coop::consume_budget().await;
            let mut src_empty = false;
            if !eof {
                let filled = if held == 0 {
                    // Empty pipe: EAGAIN means an empty socket, and may clear its readiness.
                    src.try_io(Interest::READABLE, || splice(src_fd, pipe_in, pipe.size))
                } else {
                    // EAGAIN may mean a full pipe: leave the socket's readiness alone.
                    splice(src_fd, pipe_in, pipe.size)
                };
                match filled {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        held += n;
                        activity.touch();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => src_empty = held == 0,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let mut dst_full = false;
            while held > 0 {
                match dst.try_io(Interest::WRITABLE, || splice(pipe_out, dst_fd, held)) {
                    Ok(0) => return Err(io::Error::other("the splice pipe ran dry")),
                    Ok(n) => {
                        held -= n.min(held);
                        moved.fetch_add(n as u64, Relaxed);
                        activity.touch();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        dst_full = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if eof && held == 0 {
                return shutdown_write(dst);
            }
            if dst_full {
                dst.writable().await?;
            } else if src_empty {
                src.readable().await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// Two connected pairs: (client's end, relay's end) twice.
    async fn pairs() -> ((TcpStream, TcpStream), (TcpStream, TcpStream)) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let a = TcpStream::connect(addr).await.unwrap();
        let (a_relay, _) = l.accept().await.unwrap();
        let b = TcpStream::connect(addr).await.unwrap();
        let (b_relay, _) = l.accept().await.unwrap();
        ((a, a_relay), (b, b_relay))
    }

    async fn both_ways(mover: Mover) {
        let ((mut client, client_relay), (mut listener, listener_relay)) = pairs().await;
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let (_stop, mut stopped) = watch::channel(());
        let upload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let download: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
        let splice = run(&client_relay, &listener_relay, &mover, Duration::from_secs(30), &up, &down, &mut stopped);
        let ends = async {
            let (mut cr, mut cw) = client.split();
            let (mut lr, mut lw) = listener.split();
            let (_, _, got_up, got_down) = tokio::join!(
                async {
                    cw.write_all(&upload).await.unwrap();
                    cw.shutdown().await.unwrap();
                },
                async {
                    lw.write_all(&download).await.unwrap();
                    lw.shutdown().await.unwrap();
                },
                async {
                    let mut v = Vec::new();
                    lr.read_to_end(&mut v).await.unwrap();
                    v
                },
                async {
                    let mut v = Vec::new();
                    cr.read_to_end(&mut v).await.unwrap();
                    v
                },
            );
            (got_up, got_down)
        };
        let (outcome, (got_up, got_down)) =
            tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(splice, ends) }).await.unwrap();
        assert_eq!(outcome, SpliceEnd::Closed);
        assert!(got_up == upload && got_down == download);
        assert_eq!((up.load(Relaxed), down.load(Relaxed)), (upload.len() as u64, download.len() as u64));
    }

    #[tokio::test]
    async fn the_copy_loop_carries_both_ways_and_half_closes() {
        both_ways(Mover::Copy(4096)).await;
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn pipes_carry_both_ways_and_half_close() {
        both_ways(Mover::new(4096).unwrap().0).await;
        both_ways(Mover::new(64 * 1024).unwrap().0).await;
    }

    #[tokio::test]
    async fn an_idle_splice_ends_and_a_stopped_one_too() {
        let ((_client, client_relay), (_listener, listener_relay)) = pairs().await;
        let (mover, _) = Mover::new(8192).unwrap();
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let (stop, mut stopped) = watch::channel(());
        let idle = Duration::from_millis(200);
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            run(&client_relay, &listener_relay, &mover, idle, &up, &down, &mut stopped),
        )
        .await
        .unwrap();
        assert_eq!(outcome, SpliceEnd::Idle);
        drop(stop);
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            run(&client_relay, &listener_relay, &mover, Duration::from_secs(60), &up, &down, &mut stopped),
        )
        .await
        .unwrap();
        assert_eq!(outcome, SpliceEnd::Shutdown);
    }
}
