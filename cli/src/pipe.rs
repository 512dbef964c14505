//! netcat-like pipes (`listen`, `connect`) and TCP forwarding (`listen --to`, `forward`).
//!
//! `connect` copies stdin to the flow and the flow to stdout; at the end of stdin it ends
//! its sending side and exits once the peer has ended its side too, so it works as an ssh
//! `ProxyCommand`. Exit status 0 means every byte it sent was acknowledged by the peer.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use msocket::{Endpoint, Flow, PeerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::CliError;

/// Copies `a` to `b` and `b` to `a` until both directions ended; each side's end of
/// stream is passed on with `shutdown`.
pub async fn splice<A, B>(a: A, b: B) -> Result<(u64, u64), CliError>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let up = async {
        let n = tokio::io::copy(&mut ar, &mut bw).await?;
        bw.shutdown().await?;
        Ok::<_, std::io::Error>(n)
    };
    let down = async {
        let n = tokio::io::copy(&mut br, &mut aw).await?;
        aw.shutdown().await?;
        Ok::<_, std::io::Error>(n)
    };
    let (up, down) = tokio::try_join!(up, down)?;
    Ok((up, down))
}

/// stdin/stdout as one duplex stream.
fn stdio() -> impl AsyncRead + AsyncWrite + Unpin {
    tokio::io::join(tokio::io::stdin(), Stdout { inner: tokio::io::stdout(), closed: false })
}

/// Standard output whose `shutdown` really ends the stream: the reader of our stdout
/// sees end of file as soon as the peer has ended its side, while we go on reading stdin.
/// (`tokio::io::Stdout`'s shutdown only flushes, so a pipeline like `msocket listen x |
/// tar x`, or ssh reading a ProxyCommand, would wait until our stdin ended too.)
struct Stdout {
    inner: tokio::io::Stdout,
    closed: bool,
}

impl AsyncWrite for Stdout {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        if !self.closed {
            self.closed = true;
            close_stdout()?;
        }
        Poll::Ready(Ok(()))
    }
}

/// Closes our end of standard output, leaving /dev/null on descriptor 1 so that nothing
/// else can take that descriptor and receive stray output.
#[cfg(unix)]
fn close_stdout() -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    // SAFETY: dup2 on two open descriptors; it atomically replaces descriptor 1.
    if unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(unix))]
fn close_stdout() -> io::Result<()> {
    Ok(())
}

/// How long a finished stdin/stdout flow may take to send its last frames before exit.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Carries one flow on stdin/stdout until both directions ended, then waits (at most
/// [`CLOSE_WAIT`]) until the flow has finished and its last frames have left.
///
/// `splice` returns once our bytes are acknowledged and the peer's end of stream was read,
/// but our own end of stream, and the acknowledgement of the peer's, may still be queued:
/// exiting then would leave the peer waiting for them until its flow deadline (five
/// minutes by default) and then failing.
async fn stdio_flow(flow: Flow) -> Result<(u64, u64), CliError> {
    let closed = flow.closed();
    let counts = splice(stdio(), flow).await?;
    match tokio::time::timeout(CLOSE_WAIT, closed).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!("the flow did not finish within {CLOSE_WAIT:?} after the last byte"),
    }
    Ok(counts)
}

/// `msocket connect NAME`.
pub async fn connect(ep: &Endpoint, peer: &PeerName) -> Result<(), CliError> {
    let flow = ep.connect_to(peer).await?;
    tracing::info!(flow = %flow.id(), %peer, key = %flow.peer().fingerprint(), "connected");
    let (sent, received) = stdio_flow(flow).await?;
    tracing::info!(sent, received, "flow finished");
    Ok(())
}

/// Says who may connect and how peers name this listener with its key.
fn announce(ep: &Endpoint, name: &str, what: &str) {
    eprintln!("peers can connect to {name}#{}", ep.public().fingerprint());
    let relays = ep.registered_relays();
    if !relays.is_empty() {
        eprintln!("reachable through relay(s) {}", relays.join(", "));
    }
    match ep.allowed_peers() {
        Some(list) => eprintln!("accepting flows only from {} allowed key(s)", list.len()),
        None => eprintln!("accepting {what} from anyone who knows the name (restrict with --allow FINGERPRINT)"),
    }
}

/// Logs the peer of an accepted flow (on stderr: who got the data matters).
fn accepted(flow: &Flow) {
    eprintln!("flow {} from {}", flow.id(), flow.peer().fingerprint());
}

/// `msocket listen NAME`: serves one flow on stdin/stdout, then exits.
pub async fn listen_once(ep: &Endpoint, name: &str) -> Result<(), CliError> {
    let mut listener = ep.listen(name).await?;
    eprintln!("listening on {name} at {:?}", ep.published_addrs());
    announce(ep, name, "one flow (it gets stdin)");
    let flow = listener.accept().await?;
    accepted(&flow);
    let (sent, received) = stdio_flow(flow).await?;
    tracing::info!(sent, received, "flow finished");
    Ok(())
}

/// `msocket listen NAME --to ADDR`: every accepted flow becomes a TCP connection to ADDR.
pub async fn listen_to(ep: &Endpoint, name: &str, to: SocketAddr) -> Result<(), CliError> {
    let mut listener = ep.listen(name).await?;
    eprintln!("listening on {name} at {:?}, forwarding to {to}", ep.published_addrs());
    announce(ep, name, &format!("flows to {to}"));
    loop {
        let flow = listener.accept().await?;
        accepted(&flow);
        tokio::spawn(async move {
            let id = flow.id();
            match TcpStream::connect(to).await {
                Ok(tcp) => match splice(tcp, flow).await {
                    Ok((up, down)) => tracing::info!(flow = %id, up, down, "forwarded flow done"),
                    Err(e) => tracing::warn!(flow = %id, error = %e.0, "forwarded flow failed"),
                },
                Err(e) => {
                    tracing::warn!(flow = %id, %to, error = %e, "local service unreachable");
                    flow.abort(&format!("service unreachable: {e}"));
                }
            }
        });
    }
}

/// `msocket forward LOCAL NAME`: every TCP connection to LOCAL rides its own flow.
pub async fn forward(ep: &Endpoint, local: SocketAddr, name: &PeerName) -> Result<(), CliError> {
    let listener = TcpListener::bind(local).await.map_err(|e| CliError(format!("listen on {local}: {e}")))?;
    eprintln!("forwarding {} to {name}", listener.local_addr()?);
    loop {
        let (tcp, peer) = listener.accept().await?;
        let ep = ep.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let flow: Flow = match ep.connect_to(&name).await {
                Ok(f) => f,
                Err(e) => return tracing::warn!(%peer, error = %e, "could not open a flow"),
            };
            match splice(tcp, flow).await {
                Ok((up, down)) => tracing::info!(%peer, up, down, "forwarded connection done"),
                Err(e) => tracing::warn!(%peer, error = %e.0, "forwarded connection failed"),
            }
        });
    }
}
