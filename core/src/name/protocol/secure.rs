//! The name protocol's authenticated channel: a Noise NX handshake that costs no round
//! trip.
//!
//! Records are signed end to end, but in clear TCP an on-path attacker could still answer
//! `NotFound` for a name that exists, acknowledge a registration the server never saw,
//! or serve an old record (still signed, still unexpired) after its owner moved. So every
//! connection is a Noise channel to the server's long-term key:
//!
//! ```text
//! client's first frame   body = version:u8 (=3) kind:u8 (=1 hello)   noise NX message 1
//!                               -> e                   payload: the first request, in clear
//! server's first frame   body = version:u8 (=3) kind:u8 (=2 welcome) noise NX message 2
//!                               <- e, ee, s, es        payload: signing_key[32] || the
//!                                                      first request's first answer
//! every later frame      body = a Noise transport message (AES-256-GCM, nonces counting
//!                               from 0 in each direction): one request or answer
//! ```
//!
//! `Noise_NX_25519_AESGCM_SHA256`, prologue `"msocket name protocol v3"`. The first
//! request travels with the client's ephemeral key and costs no extra round trip; it is in
//! clear, which is fine because requests carry only public data (names, signed records).
//! Everything the server sends is encrypted and authenticated under keys mixed from the
//! client's fresh ephemeral key and the server's static key, and bound to the whole
//! transcript (the client's request included): a tamperer who changes a request, an
//! answer, or replays an answer from another connection makes the client's decryption
//! fail, which it reports as [`NameError::Unauthenticated`] and never as an answer.
//!
//! The server's static key is its X25519 Noise key; its Ed25519 signing key rides in the
//! welcome so that the client can compute the server's [`Fingerprint`] (a hash of both)
//! and compare it with a pinned one ([`NameError::ServerKeyMismatch`] names both). A
//! client that pins nothing accepts any server key: it still gets a channel no third
//! party can alter, and the records it receives are signed anyway.

use std::sync::{Mutex, MutexGuard};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::identity::{Fingerprint, Identity, PublicIdentity};
use crate::name::{ExchangeStep, NameError};

use super::{read_message, write_message, FrameError, Request, Response, PROTOCOL_VERSION};

const NOISE_PARAMS: &str = "Noise_NX_25519_AESGCM_SHA256";
const PROLOGUE: &[u8] = b"msocket name protocol v3";
/// The kind byte of a client's first frame.
pub const HELLO: u8 = 1;
/// The kind byte of a server's first frame.
pub const WELCOME: u8 = 2;
/// Noise's limit on one message.
const MAX_NOISE_MSG: usize = 65535;
/// The longest request or answer body the channel carries (the Noise limit less the
/// handshake's keys, tags and the server's signing key).
pub const MAX_BODY_LEN: usize = MAX_NOISE_MSG - 32 - 48 - 16 - 32;

fn builder() -> snow::Builder<'static> {
    snow::Builder::new(NOISE_PARAMS.parse().expect("valid Noise parameters"))
}

fn internal(e: snow::Error) -> NameError {
    NameError::Malformed(format!("noise: {e}"))
}

/// An established channel: seals what one side sends, opens what it receives. Shared by
/// a connection's reader and writer.
pub struct Channel {
    state: Mutex<snow::TransportState>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Channel")
    }
}

impl Channel {
    fn new(state: snow::TransportState) -> Channel {
        Channel { state: Mutex::new(state) }
    }

    fn lock(&self) -> MutexGuard<'_, snow::TransportState> {
        // A panic while sealing leaves the state as it was (nonces advance only on
        // success), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The frame body carrying `body`, encrypted and authenticated.
    pub fn seal(&self, body: &[u8]) -> Result<Vec<u8>, NameError> {
        if body.len() > MAX_BODY_LEN {
            return Err(NameError::Malformed(format!("message of {} bytes is too long", body.len())));
        }
        let mut out = vec![0u8; body.len() + 16];
        let n = self.lock().write_message(body, &mut out).map_err(internal)?;
        out.truncate(n);
        Ok(out)
    }

    /// The body a received frame carries; [`NameError::Unauthenticated`] (with an empty
    /// server, for the caller to fill in) if it was not sealed by the other end, in order.
    pub fn open(&self, frame: &[u8]) -> Result<Vec<u8>, NameError> {
        if frame.len() > MAX_NOISE_MSG {
            return Err(unauthenticated("a message over the Noise limit"));
        }
        let mut out = vec![0u8; frame.len()];
        let n = self
            .lock()
            .read_message(frame, &mut out)
            .map_err(|_| unauthenticated("a message failed authentication"))?;
        out.truncate(n);
        Ok(out)
    }
}

fn unauthenticated(reason: &str) -> NameError {
    NameError::Unauthenticated { server: String::new(), reason: reason.to_string() }
}

/// The client's side, between its hello and the server's welcome.
pub struct ClientHello {
    hs: Box<snow::HandshakeState>,
}

impl std::fmt::Debug for ClientHello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientHello")
    }
}

/// What the server's welcome established.
#[derive(Debug)]
pub struct Welcome {
    /// The server's keys (its Noise key proven by the handshake).
    pub server: PublicIdentity,
    /// The answer to the request the hello carried (its first, for a watch).
    pub response: Vec<u8>,
    /// The channel for everything after.
    pub channel: Channel,
}

impl ClientHello {
    /// Starts a handshake whose first message carries `request` (a request body); returns
    /// the state and the first frame's body.
    pub fn new(request: &[u8]) -> Result<(ClientHello, Vec<u8>), NameError> {
        if request.len() > MAX_BODY_LEN {
            return Err(NameError::Malformed(format!("request of {} bytes is too long", request.len())));
        }
        let mut hs = Box::new(builder().prologue(PROLOGUE).and_then(|b| b.build_initiator()).map_err(internal)?);
        // Room for snow's check, which counts a tag even where there is no key yet.
        let mut body = vec![0u8; 2 + 32 + request.len() + 16];
        body[0] = PROTOCOL_VERSION;
        body[1] = HELLO;
        let n = hs.write_message(request, &mut body[2..]).map_err(internal)?;
        body.truncate(2 + n);
        Ok((ClientHello { hs }, body))
    }

    /// Reads the server's first frame: checks that it completes this handshake (it was
    /// made for this hello, by the holder of the key it names) and, if `pin` is given,
    /// that the server's keys have that fingerprint.
    pub fn finish(mut self, frame: &[u8], pin: Option<&Fingerprint>) -> Result<Welcome, NameError> {
        if let Some(refused) = super::other_version_answer(frame) {
            return Err(refused);
        }
        let message = match frame {
            [PROTOCOL_VERSION, WELCOME, message @ ..] if message.len() <= MAX_NOISE_MSG => message,
            _ => return Err(unauthenticated("the first answer is not a name server's welcome")),
        };
        let mut payload = vec![0u8; message.len()];
        let n = self
            .hs
            .read_message(message, &mut payload)
            .map_err(|_| unauthenticated("the welcome failed authentication"))?;
        let noise: [u8; 32] = self
            .hs
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| unauthenticated("the welcome carries no server key"))?;
        let (signing, response) = payload[..n]
            .split_first_chunk::<32>()
            .ok_or_else(|| unauthenticated("the welcome carries no signing key"))?;
        let server = PublicIdentity { signing: *signing, noise };
        if let Some(pin) = pin {
            if !pin.matches(&server) {
                return Err(NameError::ServerKeyMismatch {
                    server: String::new(),
                    expected: pin.to_string(),
                    found: Fingerprint::of(&server).to_string(),
                });
            }
        }
        let response = response.to_vec();
        let channel = Channel::new((*self.hs).into_transport_mode().map_err(internal)?);
        Ok(Welcome { server, response, channel })
    }
}

/// The server's side, between a client's hello and its welcome.
pub struct ServerHello {
    hs: Box<snow::HandshakeState>,
}

impl std::fmt::Debug for ServerHello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerHello")
    }
}

impl ServerHello {
    /// Reads a client's first frame (a hello of this version, see
    /// [`other_version_refusal`](super::other_version_refusal) for the others); returns
    /// the handshake and the request it carries.
    pub fn read(identity: &Identity, frame: &[u8]) -> Result<(ServerHello, Vec<u8>), NameError> {
        let message = match frame {
            [PROTOCOL_VERSION, HELLO, message @ ..] if message.len() <= MAX_NOISE_MSG => message,
            _ => return Err(NameError::Malformed("the first message is not a hello".into())),
        };
        let mut hs = Box::new(
            builder()
                .local_private_key(identity.noise_secret())
                .and_then(|b| b.prologue(PROLOGUE))
                .and_then(|b| b.build_responder())
                .map_err(internal)?,
        );
        let mut request = vec![0u8; message.len()];
        let n = hs
            .read_message(message, &mut request)
            .map_err(|e| NameError::Malformed(format!("hello: {e}")))?;
        request.truncate(n);
        Ok((ServerHello { hs }, request))
    }

    /// The welcome carrying `response` (the first answer), and the channel.
    pub fn reply(mut self, identity: &Identity, response: &[u8]) -> Result<(Vec<u8>, Channel), NameError> {
        if response.len() > MAX_BODY_LEN {
            return Err(NameError::Malformed(format!("answer of {} bytes is too long", response.len())));
        }
        let mut payload = Vec::with_capacity(32 + response.len());
        payload.extend_from_slice(&identity.public().signing);
        payload.extend_from_slice(response);
        let mut body = vec![0u8; 2 + MAX_NOISE_MSG];
        body[0] = PROTOCOL_VERSION;
        body[1] = WELCOME;
        let n = self.hs.write_message(&payload, &mut body[2..]).map_err(internal)?;
        body.truncate(2 + n);
        Ok((body, Channel::new((*self.hs).into_transport_mode().map_err(internal)?)))
    }
}

/// One connection seen from the client, for tools and tests that speak the protocol
/// directly (one request at a time; [`TcpNameClient`](crate::name::TcpNameClient) is the
/// real client): the first request goes in the hello, the first answer comes in the
/// welcome, everything after is sealed. Callers bound each step with a timeout.
pub struct ClientConnection<S> {
    stream: S,
    server: String,
    pin: Option<Fingerprint>,
    state: ClientState,
    server_key: Option<PublicIdentity>,
}

enum ClientState {
    Fresh,
    Hello(ClientHello),
    Open(Channel),
    Broken,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientConnection<S> {
    /// A connection over `stream` to the server named `server` (in errors), accepting
    /// only a key with the fingerprint `pin` if given.
    pub fn new(stream: S, server: impl Into<String>, pin: Option<Fingerprint>) -> Self {
        ClientConnection { stream, server: server.into(), pin, state: ClientState::Fresh, server_key: None }
    }

    /// The server's keys, once its welcome arrived.
    pub fn server_key(&self) -> Option<PublicIdentity> {
        self.server_key
    }

    /// Sends `request` with id `id`. The first request opens the channel; the next may
    /// only be sent once the first answer has been received.
    pub async fn send(&mut self, id: u32, request: &Request) -> Result<(), NameError> {
        let body = request.encode_tagged(id);
        let frame = match &self.state {
            ClientState::Fresh => {
                let (hello, first) = ClientHello::new(&body)?;
                self.state = ClientState::Hello(hello);
                first
            }
            ClientState::Open(channel) => channel.seal(&body)?,
            ClientState::Hello(_) => {
                return Err(NameError::Malformed("a second request before the server's welcome".into()))
            }
            ClientState::Broken => return Err(NameError::Malformed("the connection failed before".into())),
        };
        write_message(&mut self.stream, &frame).await.map_err(|e| frame_error(e, &self.server, ExchangeStep::Send))
    }

    /// Receives the next answer.
    pub async fn receive(&mut self) -> Result<(u32, Response), NameError> {
        let frame = read_message(&mut self.stream)
            .await
            .map_err(|e| frame_error(e, &self.server, ExchangeStep::Receive))?;
        let body = match std::mem::replace(&mut self.state, ClientState::Broken) {
            ClientState::Hello(hello) => {
                let welcome = hello.finish(&frame, self.pin.as_ref()).map_err(|e| named(e, &self.server))?;
                self.server_key = Some(welcome.server);
                self.state = ClientState::Open(welcome.channel);
                welcome.response
            }
            ClientState::Open(channel) => {
                let body = channel.open(&frame).map_err(|e| named(e, &self.server))?;
                self.state = ClientState::Open(channel);
                body
            }
            ClientState::Fresh | ClientState::Broken => {
                return Err(named(unauthenticated("an answer to no request"), &self.server))
            }
        };
        Response::decode_tagged(&body)
    }
}

/// One connection seen from the server, for tools and tests that play a name server
/// (`msocketd name` is the real one): the first request comes in the hello, its answer
/// goes in the welcome, everything after is sealed. Answer the first request before
/// receiving the next. Callers bound each step with a timeout.
pub struct ServerConnection<S> {
    stream: S,
    identity: Identity,
    state: ServerState,
}

enum ServerState {
    Fresh,
    Hello(ServerHello),
    Open(Channel),
    Broken,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerConnection<S> {
    /// The server's side of `stream`, holding `identity`.
    pub fn new(stream: S, identity: Identity) -> Self {
        ServerConnection { stream, identity, state: ServerState::Fresh }
    }

    /// Receives the next request; a client of an older version is answered with a
    /// refusal it can read and gets [`NameError::Refused`] here.
    pub async fn receive(&mut self) -> Result<(u32, Request), NameError> {
        let frame = read_message(&mut self.stream)
            .await
            .map_err(|e| frame_error(e, "the client", ExchangeStep::Receive))?;
        let body = match std::mem::replace(&mut self.state, ServerState::Broken) {
            ServerState::Fresh => {
                if let Some(refusal) = super::other_version_refusal(&frame) {
                    let _ = write_message(&mut self.stream, &refusal).await;
                    return Err(NameError::Refused("a client of another protocol version".into()));
                }
                let (hello, request) = ServerHello::read(&self.identity, &frame)?;
                self.state = ServerState::Hello(hello);
                request
            }
            ServerState::Open(channel) => {
                let body = channel.open(&frame).map_err(|e| named(e, "the client"))?;
                self.state = ServerState::Open(channel);
                body
            }
            ServerState::Hello(_) | ServerState::Broken => {
                return Err(NameError::Malformed("a request before the welcome, or after a failure".into()))
            }
        };
        Request::decode_tagged(&body)
    }

    /// The stream, to close it.
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Sends `response` to request `id` (the first goes in the welcome).
    pub async fn answer(&mut self, id: u32, response: &Response) -> Result<(), NameError> {
        let body = response.encode_tagged(id);
        let frame = match std::mem::replace(&mut self.state, ServerState::Broken) {
            ServerState::Hello(hello) => {
                let (welcome, channel) = hello.reply(&self.identity, &body)?;
                self.state = ServerState::Open(channel);
                welcome
            }
            ServerState::Open(channel) => {
                let sealed = channel.seal(&body)?;
                self.state = ServerState::Open(channel);
                sealed
            }
            ServerState::Fresh | ServerState::Broken => {
                return Err(NameError::Malformed("an answer before any request".into()))
            }
        };
        write_message(&mut self.stream, &frame).await.map_err(|e| frame_error(e, "the client", ExchangeStep::Send))
    }
}

fn named(e: NameError, server: &str) -> NameError {
    match e {
        NameError::Unauthenticated { reason, .. } => NameError::Unauthenticated { server: server.to_string(), reason },
        NameError::ServerKeyMismatch { expected, found, .. } => {
            NameError::ServerKeyMismatch { server: server.to_string(), expected, found }
        }
        other => other,
    }
}

fn frame_error(e: FrameError, server: &str, step: ExchangeStep) -> NameError {
    match e {
        FrameError::TooLong(len) => NameError::Malformed(format!("message of {len} bytes is too long")),
        FrameError::Closed => NameError::Unreachable {
            server: server.to_string(),
            step,
            kind: std::io::ErrorKind::UnexpectedEof,
        },
        FrameError::Io(e) => NameError::Unreachable { server: server.to_string(), step, kind: e.kind() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Identity {
        Identity::from_seed([9; 32])
    }

    /// A full exchange: hello with a lookup, welcome with the answer, then one more each way.
    #[test]
    fn a_hello_and_a_welcome_open_a_channel_both_ways() {
        let id = server();
        let lookup = Request::Lookup("alice".into()).encode();
        let (hello, first) = ClientHello::new(&lookup).unwrap();
        let (accepted, request) = ServerHello::read(&id, &first).unwrap();
        assert_eq!(request, lookup);
        let answer = Response::NotFound.encode();
        let (welcome, server_channel) = accepted.reply(&id, &answer).unwrap();
        let pin = Fingerprint::of(&id.public());
        let welcome = hello.finish(&welcome, Some(&pin)).unwrap();
        assert_eq!(welcome.server, id.public());
        assert_eq!(welcome.response, answer);
        let next = Request::Cancel.encode_tagged(4);
        assert_eq!(server_channel.open(&welcome.channel.seal(&next).unwrap()).unwrap(), next);
        let back = Response::Unchanged.encode_tagged(4);
        assert_eq!(welcome.channel.open(&server_channel.seal(&back).unwrap()).unwrap(), back);
    }

    fn exchange(request: &[u8]) -> (ClientHello, Vec<u8>, Vec<u8>) {
        let id = server();
        let (hello, first) = ClientHello::new(request).unwrap();
        let (accepted, _) = ServerHello::read(&id, &first).unwrap();
        let (welcome, _) = accepted.reply(&id, &Response::NotFound.encode()).unwrap();
        (hello, first, welcome)
    }

    #[test]
    fn any_altered_byte_of_the_welcome_fails_authentication() {
        let len = exchange(b"request").2.len();
        for at in 2..len {
            let (hello, _, mut welcome) = exchange(b"request");
            welcome[at] ^= 0x01;
            assert!(matches!(hello.finish(&welcome, None), Err(NameError::Unauthenticated { .. })), "byte {at}");
        }
        // Untouched, it is accepted.
        let (hello, _, welcome) = exchange(b"request");
        assert!(hello.finish(&welcome, None).is_ok());
    }

    #[test]
    fn a_welcome_is_bound_to_its_hello_and_its_request() {
        let id = server();
        // Replayed: another connection's welcome.
        let (_, _, old) = exchange(b"lookup alice");
        let (hello, _, _) = exchange(b"lookup alice");
        assert!(matches!(hello.finish(&old, None), Err(NameError::Unauthenticated { .. })));
        // The request altered on the way: the server answers another question, and the
        // client, whose transcript holds its own, refuses the answer.
        let (hello, mut first) = ClientHello::new(b"lookup alice").unwrap();
        let last = first.len() - 1;
        first[last] ^= 0x01;
        let (accepted, request) = ServerHello::read(&id, &first).unwrap();
        assert_eq!(request, b"lookup alicd");
        let (welcome, _) = accepted.reply(&id, b"not found").unwrap();
        assert!(matches!(hello.finish(&welcome, None), Err(NameError::Unauthenticated { .. })));
    }

    #[test]
    fn a_pinned_client_refuses_another_key_and_names_both() {
        let (hello, first) = ClientHello::new(b"x").unwrap();
        let impostor = Identity::from_seed([66; 32]);
        let (accepted, _) = ServerHello::read(&impostor, &first).unwrap();
        let (welcome, _) = accepted.reply(&impostor, b"").unwrap();
        let pin = Fingerprint::of(&server().public());
        match hello.finish(&welcome, Some(&pin)) {
            Err(NameError::ServerKeyMismatch { expected, found, .. }) => {
                assert_eq!(expected, pin.to_string());
                assert_eq!(found, Fingerprint::of(&impostor.public()).to_string());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sealed_messages_cannot_be_replayed_reordered_or_forged() {
        let id = server();
        let (hello, first) = ClientHello::new(b"hello").unwrap();
        let (accepted, _) = ServerHello::read(&id, &first).unwrap();
        let (welcome, server_channel) = accepted.reply(&id, b"").unwrap();
        let client = hello.finish(&welcome, None).unwrap().channel;
        let one = server_channel.seal(b"one").unwrap();
        let two = server_channel.seal(b"two").unwrap();
        // Out of order: refused, and the channel is done for (the caller closes it).
        assert!(matches!(client.open(&two), Err(NameError::Unauthenticated { .. })));
        assert_eq!(client.open(&one).unwrap(), b"one");
        assert!(matches!(client.open(&one), Err(NameError::Unauthenticated { .. })), "a replay was accepted");
        assert!(matches!(client.open(b"forged by someone"), Err(NameError::Unauthenticated { .. })));
    }

    #[test]
    fn hellos_that_are_not_are_refused_without_panicking() {
        let id = server();
        for frame in [&[][..], &[3], &[3, 1], &[3, 2, 0, 0], &[2, 1, 0, 0], &[3, 1, 1, 2, 3]] {
            assert!(ServerHello::read(&id, frame).is_err(), "{frame:?}");
        }
        let (hello, _) = ClientHello::new(b"x").unwrap();
        assert!(matches!(hello.finish(&[3, 2, 1, 2, 3], None), Err(NameError::Unauthenticated { .. })));
    }
}

#[cfg(test)]
mod connection_tests {
    use super::*;
    use crate::name::protocol::FIRST_ID;

    #[tokio::test]
    async fn a_client_and_a_server_connection_talk() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let id = Identity::from_seed([9; 32]);
        let pin = Fingerprint::of(&id.public());
        let mut client = ClientConnection::new(a, "test", Some(pin));
        let mut server = ServerConnection::new(b, id.clone());
        client.send(FIRST_ID, &Request::Lookup("alice".into())).await.unwrap();
        assert_eq!(server.receive().await.unwrap(), (FIRST_ID, Request::Lookup("alice".into())));
        // Not before the welcome.
        assert!(client.send(2, &Request::Cancel).await.is_err());
        server.answer(FIRST_ID, &Response::NotFound).await.unwrap();
        assert_eq!(client.receive().await.unwrap(), (FIRST_ID, Response::NotFound));
        assert_eq!(client.server_key(), Some(id.public()));
        client.send(2, &Request::Lookup("bob".into())).await.unwrap();
        assert_eq!(server.receive().await.unwrap(), (2, Request::Lookup("bob".into())));
        server.answer(2, &Response::Unchanged).await.unwrap();
        assert_eq!(client.receive().await.unwrap(), (2, Response::Unchanged));
    }

    #[tokio::test]
    async fn an_older_client_is_refused_in_its_own_layout() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut server = ServerConnection::new(b, Identity::from_seed([9; 32]));
        write_message(&mut a, &[2, 2, 0, 0, 0, 1, 0, 1, b'x']).await.unwrap();
        assert!(matches!(server.receive().await, Err(NameError::Refused(_))));
        let answer = read_message(&mut a).await.unwrap();
        assert_eq!(&answer[..7], &[2, 4, 0, 0, 0, 1, 13]);
    }
}
