//! One connection to the relay, from its header to its end: a listener's control
//! connection (REGISTER), a client's dial (DIAL) or a listener's answer to a dial-back
//! (ACCEPT); see `relay_protocol` for the messages.
//!
//! The header and the first message must arrive within the handshake timeout, and are
//! read exactly (`read_header`, `read_message`): a client may send its flow's opening
//! right behind its DIAL, and those bytes must stay in the socket for the splice. A
//! refusal is written, the connection shut down for writing, and what the peer still
//! sends is read and dropped for a moment (at most [`LINGER_BYTES`]), so that closing
//! with unread bytes does not reset the connection before the peer read why.
//!
//! The dial's task does the splice: the ACCEPT's task finds the pending dial by its
//! token and hands its connection over, so a splice is one task holding both sockets.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use msocket::unstable::relay_protocol::{
    listener_key, read_header, read_message, verify_registration, ListenerKey, Message, ReadError, RelayRefusal,
    KIND_ACCEPT, KIND_DIAL, KIND_REGISTER, MAX_MESSAGE_LEN,
};
use msocket::unstable::Progress;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::limits::{Admitted, Source};
use super::metrics::{ControlEnd, EarlyClose};
use super::registry::{Answer, DialBack, SpliceSlot};
use super::splice::{self, Mover};
use super::Shared;

/// How long a refused connection is read from after its refusal, at most.
const LINGER: Duration = Duration::from_secs(1);
/// How many bytes a refused connection is read from after its refusal, at most.
const LINGER_BYTES: usize = 64 * 1024;
/// How long a dial whose ACCEPT arrived just as it gave up waits for it.
const HANDOVER: Duration = Duration::from_secs(1);

/// A listener key as logs show it: its first 8 bytes in hex.
fn short(key: &ListenerKey) -> String {
    hex::encode(&key[..8])
}

/// `addr` with an IPv4-mapped IPv6 address written as IPv4 (as a dual-stack socket
/// reports IPv4 peers): what the peers are told.
pub(super) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Writes `message` within `limit`.
async fn send(stream: &mut TcpStream, message: &Message, limit: Duration) -> io::Result<()> {
    match tokio::time::timeout(limit, stream.write_all(&message.encode())).await {
        Ok(done) => done,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

/// Tells the peer why it is refused, then closes the connection gracefully (see the
/// module doc), all within the handshake timeout plus [`LINGER`].
///
/// Boxed: a task's memory is the largest state of its future, and a splice's task must
/// stay small while the splice idles for hours, not carry room for a refusal it may
/// never send.
pub(super) fn refuse<'a>(
    shared: &'a Shared,
    mut stream: TcpStream,
    why: RelayRefusal,
    reason: &str,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    let refused = Message::Refused { why, reason: reason.to_string() };
    Box::pin(async move {
        shared.counters.refused(why);
        if send(&mut stream, &refused, shared.limits.handshake_timeout).await.is_err() {
            return;
        }
        close_gracefully(stream).await;
    })
}

/// Shuts `stream` down for writing and reads what the peer still sends, bounded.
async fn close_gracefully(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = vec![0u8; 4096];
        let mut read = 0;
        while read < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

/// Reads relay messages one at a time without ever losing a byte when the read is
/// cancelled (the control loop waits on several things at once): what arrived stays
/// here until the message is whole. It reads no further than the message it needs.
struct MessageReader {
    buf: [u8; 1 + MAX_MESSAGE_LEN],
    len: usize,
}

impl MessageReader {
    fn new() -> MessageReader {
        MessageReader { buf: [0; 1 + MAX_MESSAGE_LEN], len: 0 }
    }

    async fn read(&mut self, stream: &mut TcpStream) -> Result<Message, ReadError> {
        loop {
            match Message::decode(&self.buf[..self.len])? {
                Progress::Done(message) => {
                    self.len = 0;
                    return Ok(message);
                }
                Progress::Need(n) => {
                    let end = n.min(self.buf.len());
                    let got = stream.read(&mut self.buf[self.len..end]).await?;
                    if got == 0 {
                        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                    }
                    self.len += got;
                }
            }
        }
    }
}

/// Serves one admitted connection from `peer` until it ends.
pub(super) async fn serve(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    mut stop: watch::Receiver<()>,
) {
    let peer = canonical(peer);
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + shared.limits.handshake_timeout;
    let kind = match tokio::time::timeout_at(deadline, read_header(&mut stream)).await {
        Ok(Ok(kind)) => kind,
        Ok(Err(e)) => {
            shared.counters.early_close(EarlyClose::BadHeader);
            tracing::debug!(%peer, error = %e, "not a relay connection; closing");
            return;
        }
        Err(_) => {
            shared.counters.early_close(EarlyClose::HandshakeTimeout);
            tracing::debug!(%peer, "no relay header in time; closing");
            return;
        }
    };
    // Everything but the splice itself runs boxed: a task's memory is its future's
    // largest state, and a splice may idle for hours (see `refuse`).
    match kind {
        KIND_REGISTER => Box::pin(control(&shared, stream, peer, deadline, stop)).await,
        KIND_DIAL => {
            if let Some(spliced) = Box::pin(dial(&shared, stream, peer, admitted, deadline, &mut stop)).await {
                run_splice(&shared, &spliced, &mut stop).await;
            }
        }
        KIND_ACCEPT => Box::pin(accept(&shared, stream, peer, admitted, deadline)).await,
        other => {
            shared.counters.early_close(EarlyClose::BadHeader);
            tracing::debug!(%peer, kind = other, "not a relay kind; closing");
        }
    }
}

/// What came first on a connection, after its header.
enum First {
    Message(Message),
    /// Bytes that are no relay message: refused `Malformed`.
    Malformed(String),
    /// Closed, failed or too slow: nothing to answer.
    Gone,
}

/// The first message of a connection, within `deadline`.
async fn first_message(shared: &Shared, stream: &mut TcpStream, peer: SocketAddr, deadline: Instant) -> First {
    match tokio::time::timeout_at(deadline, read_message(stream)).await {
        Ok(Ok(message)) => First::Message(message),
        Ok(Err(ReadError::Io(e))) => {
            tracing::debug!(%peer, error = %e, "connection closed during its handshake");
            First::Gone
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "unreadable relay message");
            First::Malformed(e.to_string())
        }
        Err(_) => {
            shared.counters.early_close(EarlyClose::HandshakeTimeout);
            tracing::debug!(%peer, "handshake not done in time; closing");
            First::Gone
        }
    }
}

/// A listener's control connection: challenge, signed registration, then dial-backs
/// out and pings both ways until it ends.
async fn control(shared: &Shared, mut stream: TcpStream, peer: SocketAddr, deadline: Instant, mut stop: watch::Receiver<()>) {
    let limits = &shared.limits;
    let mut nonce = [0u8; 32];
    if let Err(e) = getrandom::getrandom(&mut nonce) {
        tracing::error!(error = %e, "no random bytes for a challenge");
        return refuse(shared, stream, RelayRefusal::Busy, "the relay cannot make a challenge").await;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if send(&mut stream, &Message::Challenge { nonce }, left).await.is_err() {
        return;
    }
    let (public, signature) = match first_message(shared, &mut stream, peer, deadline).await {
        First::Message(Message::Register { public, signature }) => (public, signature),
        First::Message(other) => {
            tracing::debug!(%peer, message = ?other, "a control connection sent something else than REGISTER");
            shared.counters.registration_refused(RelayRefusal::Malformed);
            return refuse(shared, stream, RelayRefusal::Malformed, "expected REGISTER").await;
        }
        First::Malformed(e) => {
            shared.counters.registration_refused(RelayRefusal::Malformed);
            return refuse(shared, stream, RelayRefusal::Malformed, &e).await;
        }
        First::Gone => return,
    };
    if !verify_registration(&nonce, &public, &signature) {
        shared.counters.registration_refused(RelayRefusal::BadSignature);
        tracing::info!(%peer, key = %short(&listener_key(&public)), "registration refused: bad signature");
        return refuse(shared, stream, RelayRefusal::BadSignature, "the signature does not verify").await;
    }
    let key = listener_key(&public);
    let (registration, mut dial_backs, mut replaced, replacing) = match shared.registry.register(key) {
        Ok(registered) => registered,
        Err((why, reason)) => {
            shared.counters.registration_refused(why);
            tracing::info!(%peer, key = %short(&key), %reason, "registration refused");
            return refuse(shared, stream, why, &reason).await;
        }
    };
    shared.counters.registrations.fetch_add(1, Relaxed);
    tracing::info!(%peer, key = %short(&key), replacing_oldest = replacing, "listener registered");
    if send(&mut stream, &Message::Registered { observed: peer }, limits.handshake_timeout).await.is_err() {
        shared.counters.control_end(ControlEnd::Unwritable);
        return;
    }
    let mut reader = MessageReader::new();
    let mut heard = Instant::now();
    let end = loop {
        tokio::select! {
            _ = stop.changed() => break ControlEnd::Shutdown,
            fired = &mut replaced => match fired {
                Ok(()) => break ControlEnd::Replaced,
                // Dropped without firing: the relay is stopping.
                Err(_) => break ControlEnd::Shutdown,
            },
            Some(DialBack { token, client }) = dial_backs.recv() => {
                if send(&mut stream, &Message::DialBack { token, client }, limits.handshake_timeout).await.is_err() {
                    break ControlEnd::Unwritable;
                }
                tracing::debug!(%peer, key = %short(&key), %client, "dial-back sent");
            }
            message = reader.read(&mut stream) => match message {
                Ok(Message::Ping(n)) => {
                    heard = Instant::now();
                    if send(&mut stream, &Message::Pong(n), limits.handshake_timeout).await.is_err() {
                        break ControlEnd::Unwritable;
                    }
                }
                Ok(Message::Pong(_)) => heard = Instant::now(),
                Ok(other) => {
                    tracing::debug!(%peer, message = ?other, "unexpected message on a control connection");
                    break ControlEnd::Protocol;
                }
                Err(ReadError::Io(_)) => break ControlEnd::Closed,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "unreadable message on a control connection");
                    break ControlEnd::Protocol;
                }
            },
            () = tokio::time::sleep_until(heard + limits.control_idle) => break ControlEnd::Idle,
        }
    };
    drop(registration);
    shared.counters.control_end(end);
    tracing::info!(%peer, key = %short(&key), reason = ?end, "listener control connection ended");
    match end {
        ControlEnd::Replaced => {
            refuse(shared, stream, RelayRefusal::Replaced, "replaced by a newer registration of the same keys").await;
        }
        ControlEnd::Shutdown => refuse(shared, stream, RelayRefusal::ShuttingDown, "the relay is shutting down").await,
        ControlEnd::Protocol => refuse(shared, stream, RelayRefusal::Malformed, "expected PING or PONG").await,
        ControlEnd::Closed | ControlEnd::Idle | ControlEnd::Unwritable => {}
    }
}

/// A splice ready to run: both connections told, the pipes made.
struct Spliced {
    client: TcpStream,
    listener: TcpStream,
    /// The client's and the listener's addresses as the relay sees them.
    addrs: (SocketAddr, SocketAddr),
    mover: Mover,
    /// The splice's place and both connections' places, freed when it ends.
    _places: (SpliceSlot, Admitted, Admitted),
}

/// A client's dial: find the listener, call it back, wait for its ACCEPT, tell both
/// ends. The splice to run, unless the dial was refused.
async fn dial(
    shared: &Shared,
    mut client: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    deadline: Instant,
    stop: &mut watch::Receiver<()>,
) -> Option<Spliced> {
    let target = match first_message(shared, &mut client, peer, deadline).await {
        First::Message(Message::Dial { target }) => target,
        First::Message(other) => {
            tracing::debug!(%peer, message = ?other, "a dial connection sent something else than DIAL");
            refuse(shared, client, RelayRefusal::Malformed, "expected DIAL").await;
            return None;
        }
        First::Malformed(e) => {
            refuse(shared, client, RelayRefusal::Malformed, &e).await;
            return None;
        }
        First::Gone => return None,
    };
    shared.counters.dials.fetch_add(1, Relaxed);
    let source = Source::of(peer.ip());
    if !shared.dial_rate.take(source, std::time::Instant::now()) {
        tracing::debug!(%peer, "dial rate limited");
        refuse(shared, client, RelayRefusal::RateLimited, "too many dials from this address; try later").await;
        return None;
    }
    let mut token = [0u8; 16];
    if let Err(e) = getrandom::getrandom(&mut token) {
        tracing::error!(error = %e, "no random bytes for a dial token");
        refuse(shared, client, RelayRefusal::Busy, "the relay cannot make a token").await;
        return None;
    }
    let (pending, mut answer) = match shared.registry.dial(target, source, peer, token) {
        Ok(admitted) => admitted,
        Err((why, reason)) => {
            tracing::debug!(%peer, key = %short(&target), refusal = ?why, %reason, "dial refused");
            refuse(shared, client, why, &reason).await;
            return None;
        }
    };
    tracing::debug!(%peer, key = %short(&target), "dial waiting for its listener");
    let waited = tokio::select! {
        waited = tokio::time::timeout(shared.limits.dial_timeout, &mut answer) => waited,
        _ = stop.changed() => {
            refuse(shared, client, RelayRefusal::ShuttingDown, "the relay is shutting down").await;
            return None;
        }
    };
    let answered = match waited {
        Ok(Ok(answered)) => Some(answered),
        Ok(Err(_)) => None,
        Err(_) if pending.cancel() => {
            tracing::debug!(%peer, key = %short(&target), "the listener did not answer in time");
            let reason = format!("the listener did not answer within {:?}", shared.limits.dial_timeout);
            refuse(shared, client, RelayRefusal::NoAnswer, &reason).await;
            return None;
        }
        // An ACCEPT took the dial as the wait ended: its connection is on its way.
        Err(_) => tokio::time::timeout(HANDOVER, &mut answer).await.ok().and_then(Result::ok),
    };
    drop(pending);
    let Some(answered) = answered else {
        refuse(shared, client, RelayRefusal::NoAnswer, "the listener did not answer").await;
        return None;
    };
    announce(shared, client, peer, admitted, answered).await
}

/// Makes the splice's pipes and tells both ends that they are spliced.
async fn announce(
    shared: &Shared,
    mut client: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    answered: Answer,
) -> Option<Spliced> {
    let Answer { stream: mut listener, observed, admitted: listener_admitted, slot } = answered;
    let limits = &shared.limits;
    let mover = match Mover::new(limits.splice_buffer) {
        Ok((mover, small)) => {
            if small {
                shared.pipe_size_refused();
            }
            mover
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot make a splice's pipes (out of file descriptors? raise ulimit -n)");
            let reason = "the relay is out of resources";
            tokio::join!(
                refuse(shared, listener, RelayRefusal::Busy, reason),
                refuse(shared, client, RelayRefusal::Busy, reason),
            );
            return None;
        }
    };
    if send(&mut listener, &Message::Accepted { listener: observed, client: peer }, limits.handshake_timeout)
        .await
        .is_err()
    {
        refuse(shared, client, RelayRefusal::NoAnswer, "the listener's connection failed").await;
        return None;
    }
    if send(&mut client, &Message::Connected { client: peer, listener: observed }, limits.handshake_timeout)
        .await
        .is_err()
    {
        return None;
    }
    shared.counters.splices.fetch_add(1, Relaxed);
    tracing::debug!(client = %peer, listener = %observed, "spliced");
    Some(Spliced { client, listener, addrs: (peer, observed), mover, _places: (slot, admitted, listener_admitted) })
}

/// Runs a splice until it ends.
async fn run_splice(shared: &Shared, spliced: &Spliced, stop: &mut watch::Receiver<()>) {
    let counters = &shared.counters;
    let end = splice::run(
        &spliced.client,
        &spliced.listener,
        &spliced.mover,
        shared.limits.idle_timeout,
        &counters.bytes_to_listener,
        &counters.bytes_to_client,
        stop,
    )
    .await;
    counters.splice_end(end);
    let (client, listener) = spliced.addrs;
    tracing::debug!(%client, %listener, how = ?end, "splice ended");
}

/// A listener's answer to a dial-back: hand the connection to the waiting dial.
async fn accept(shared: &Shared, mut stream: TcpStream, peer: SocketAddr, admitted: Admitted, deadline: Instant) {
    let token = match first_message(shared, &mut stream, peer, deadline).await {
        First::Message(Message::Accept { token }) => token,
        First::Message(other) => {
            tracing::debug!(%peer, message = ?other, "an accept connection sent something else than ACCEPT");
            return refuse(shared, stream, RelayRefusal::Malformed, "expected ACCEPT").await;
        }
        First::Malformed(e) => return refuse(shared, stream, RelayRefusal::Malformed, &e).await,
        First::Gone => return,
    };
    let Some((hand_over, slot)) = shared.registry.accept(&token) else {
        tracing::debug!(%peer, "ACCEPT with an unknown token");
        return refuse(shared, stream, RelayRefusal::UnknownToken, "no dial waits with this token").await;
    };
    let answer = Answer { stream, observed: peer, admitted, slot };
    if let Err(returned) = hand_over.send(answer) {
        // The dial ended in the same instant.
        let Answer { stream, slot, .. } = returned;
        drop(slot);
        refuse(shared, stream, RelayRefusal::UnknownToken, "the dial ended").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// An idle splice's memory is mostly its task, whose size is its future's largest
    /// state: everything before the splice is boxed so that this stays the splice's.
    #[tokio::test]
    async fn a_connections_task_is_small() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let server = super::super::RelayServer::from_listener(l, Default::default()).unwrap();
        let shared = Arc::clone(&server.shared);
        let admitted = shared.admission.admit(Source::of([192, 0, 2, 1].into())).unwrap();
        let (_stop, stopped) = watch::channel(());
        let task = serve(Arc::clone(&shared), stream, "192.0.2.1:1".parse().unwrap(), admitted, stopped);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 3 * 1024, "a connection's future takes {size} bytes");
    }

    #[tokio::test]
    async fn the_reader_survives_cancelled_reads_and_never_reads_ahead() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut ours, _) = l.accept().await.unwrap();
        let mut reader = MessageReader::new();
        let ping = Message::Ping(42).encode();
        // Half a message, then a read cancelled while it waits for the rest.
        peer.write_all(&ping[..4]).await.unwrap();
        let cut = tokio::time::timeout(Duration::from_millis(100), reader.read(&mut ours)).await;
        assert!(cut.is_err());
        let mut rest = ping[4..].to_vec();
        rest.extend_from_slice(b"after");
        peer.write_all(&rest).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut ours)).await.unwrap().unwrap();
        assert_eq!(got, Message::Ping(42));
        let mut after = [0u8; 5];
        ours.read_exact(&mut after).await.unwrap();
        assert_eq!(&after, b"after");
        assert_eq!(canonical("[::ffff:192.0.2.1]:5".parse().unwrap()), "192.0.2.1:5".parse().unwrap());
    }
}
