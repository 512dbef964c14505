//! The relay over real loopback sockets: the tests play the listener (control
//! connection, dial-backs answered with ACCEPT connections) and the client with the
//! protocol's own codecs, and check what each end receives.

use std::future::Future;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use msocket::unstable::relay_protocol::{
    self as rp, ListenerKey, Message, RelayRefusal, Token, KIND_ACCEPT, KIND_DIAL, KIND_REGISTER,
};
use msocket::Identity;
use msocket_test_support::{data, sha256};
use msocketd::relay_server::{RelayHandle, RelayLimits, RelayServer, RelayStats};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// The longest any step may take.
const WAIT: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

/// Polls `done` until it holds (for counts the relay updates just after the peers see
/// the effect); fails after [`WAIT`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    within(what, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

async fn start(limits: RelayLimits) -> RelayHandle {
    msocket_test_support::init_tracing();
    RelayServer::bind("127.0.0.1:0", limits).await.expect("bind the relay").spawn()
}

fn id(seed: u8) -> Identity {
    Identity::from_seed([seed; 32])
}

fn key(identity: &Identity) -> ListenerKey {
    rp::listener_key(&identity.public())
}

async fn read(stream: &mut TcpStream) -> Message {
    within("a relay message", rp::read_message(stream)).await.expect("read a relay message")
}

/// Connects to `relay` from `from` (a loopback address: each is a source of its own).
async fn connect_from(from: [u8; 4], relay: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    within("connect", socket.connect(relay)).await.expect("connect to the relay")
}

fn refusal(message: &Message) -> Option<RelayRefusal> {
    match message {
        Message::Refused { why, .. } => Some(*why),
        _ => None,
    }
}

/// The end of the stream: EOF or a reset, within [`WAIT`].
async fn closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    within("the relay closing the connection", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// A listener's control connection.
struct Control {
    stream: TcpStream,
    observed: SocketAddr,
}

/// Registers `identity` at `relay`: the challenge, the signed nonce, the answer.
async fn try_register(relay: SocketAddr, identity: &Identity) -> Result<Control, Message> {
    let mut stream = within("connect", TcpStream::connect(relay)).await.unwrap();
    stream.write_all(&rp::header(KIND_REGISTER)).await.unwrap();
    let Message::Challenge { nonce } = read(&mut stream).await else { panic!("no challenge") };
    stream.write_all(&rp::register(identity, &nonce).encode()).await.unwrap();
    match read(&mut stream).await {
        Message::Registered { observed } => Ok(Control { stream, observed }),
        other => Err(other),
    }
}

async fn register(relay: SocketAddr, identity: &Identity) -> Control {
    try_register(relay, identity).await.unwrap_or_else(|m| panic!("registration refused: {m:?}"))
}

impl Control {
    /// The next dial-back (answering pings on the way).
    async fn dial_back(&mut self) -> (Token, SocketAddr) {
        loop {
            match read(&mut self.stream).await {
                Message::DialBack { token, client } => return (token, client),
                Message::Ping(n) => self.stream.write_all(&Message::Pong(n).encode()).await.unwrap(),
                other => panic!("expected a dial-back, got {other:?}"),
            }
        }
    }
}

/// Answers a dial-back: an ACCEPT connection and what the relay said to it.
async fn accept(relay: SocketAddr, token: Token) -> (TcpStream, Message) {
    let mut stream = within("connect", TcpStream::connect(relay)).await.unwrap();
    let mut hello = rp::header(KIND_ACCEPT).to_vec();
    hello.extend_from_slice(&Message::Accept { token }.encode());
    stream.write_all(&hello).await.unwrap();
    let answer = read(&mut stream).await;
    (stream, answer)
}

/// Dials `target` from `from`, with `opening` written in the same write right behind the
/// DIAL: the connection and the relay's answer.
async fn dial_from(from: [u8; 4], relay: SocketAddr, target: ListenerKey, opening: &[u8]) -> (TcpStream, Message) {
    let mut stream = connect_from(from, relay).await;
    let mut hello = rp::header(KIND_DIAL).to_vec();
    hello.extend_from_slice(&Message::Dial { target }.encode());
    hello.extend_from_slice(opening);
    stream.write_all(&hello).await.unwrap();
    let answer = read(&mut stream).await;
    (stream, answer)
}

/// A whole splice: the client dials from `from`, the listener answers its dial-back.
/// (client's end, listener's end)
async fn splice_from(from: [u8; 4], relay: SocketAddr, control: &mut Control, target: ListenerKey, opening: &[u8]) -> (TcpStream, TcpStream) {
    let ((client, connected), (listener, accepted)) = tokio::join!(dial_from(from, relay, target, opening), async {
        let (token, _) = control.dial_back().await;
        accept(relay, token).await
    });
    assert!(matches!(connected, Message::Connected { .. }), "{connected:?}");
    assert!(matches!(accepted, Message::Accepted { .. }), "{accepted:?}");
    (client, listener)
}

const HOME: [u8; 4] = [127, 0, 0, 1];

#[tokio::test]
async fn a_relayed_flow_carries_megabytes_both_ways_and_its_opening_bytes() {
    let relay = start(RelayLimits::default()).await;
    let addr = relay.local_addr();
    let listener_id = id(1);
    let mut control = register(addr, &listener_id).await;
    assert_eq!(control.observed, control.stream.local_addr().unwrap(), "the relay saw the control connection's address");

    // The flow's opening rides right behind the DIAL, in the same segment.
    let opening = b"NEW_FLOW and its Noise handshake message".to_vec();
    let client_from = [127, 0, 0, 3];
    let dialing = dial_from(client_from, addr, key(&listener_id), &opening);
    let answering = async {
        let (token, client_seen) = control.dial_back().await;
        let (stream, accepted) = accept(addr, token).await;
        (client_seen, stream, accepted)
    };
    let ((mut client, connected), (client_seen, mut listener, accepted)) = tokio::join!(dialing, answering);
    let client_addr = client.local_addr().unwrap();
    let listener_addr = listener.local_addr().unwrap();
    assert_eq!(client_seen, client_addr);
    assert_eq!(connected, Message::Connected { client: client_addr, listener: listener_addr });
    assert_eq!(accepted, Message::Accepted { listener: listener_addr, client: client_addr });

    // The opening is the first thing the listener reads.
    let mut got = vec![0u8; opening.len()];
    within("the opening", listener.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, opening);

    let upload = data(5 << 20, 1);
    let download = data(3 << 20, 2);
    let (mut cr, mut cw) = client.split();
    let (mut lr, mut lw) = listener.split();
    let (_, _, got_up, got_down) = within("the transfer", async {
        tokio::join!(
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
        )
    })
    .await;
    assert_eq!(sha256(&got_up), sha256(&upload), "client to listener");
    assert_eq!(sha256(&got_down), sha256(&download), "listener to client");
    eventually("the splice to end", || relay.stats().splices == 0).await;
    let stats = relay.stats();
    assert_eq!(stats.bytes_client_to_listener, (opening.len() + upload.len()) as u64);
    assert_eq!(stats.bytes_listener_to_client, download.len() as u64);
    assert_eq!((stats.dials_total, stats.splices_total, stats.registrations), (1, 1, 1));
    assert_eq!(RelayStats::count(&stats.splice_ends, "closed"), 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn an_impostor_registration_is_refused_and_the_victim_stays_unreachable() {
    let relay = start(RelayLimits::default()).await;
    let addr = relay.local_addr();
    let (victim, impostor) = (id(1), id(2));

    // The victim's keys, signed by the impostor's key.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&rp::header(KIND_REGISTER)).await.unwrap();
    let Message::Challenge { nonce } = read(&mut stream).await else { panic!("no challenge") };
    let Message::Register { signature, .. } = rp::register(&impostor, &nonce) else { unreachable!() };
    stream.write_all(&Message::Register { public: victim.public(), signature }.encode()).await.unwrap();
    assert_eq!(refusal(&read(&mut stream).await), Some(RelayRefusal::BadSignature));
    closed(&mut stream).await;

    // The victim's genuine signature, replayed from another connection's nonce.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&rp::header(KIND_REGISTER)).await.unwrap();
    let Message::Challenge { nonce } = read(&mut stream).await else { panic!("no challenge") };
    let mut other_nonce = nonce;
    other_nonce[0] ^= 1;
    stream.write_all(&rp::register(&victim, &other_nonce).encode()).await.unwrap();
    assert_eq!(refusal(&read(&mut stream).await), Some(RelayRefusal::BadSignature));
    closed(&mut stream).await;

    let (_client, answer) = dial_from(HOME, addr, key(&victim), b"").await;
    assert_eq!(refusal(&answer), Some(RelayRefusal::NotRegistered));
    let stats = relay.stats();
    assert_eq!(RelayStats::count(&stats.registrations_refused, "bad_signature"), 2);
    assert_eq!((stats.registrations, stats.refused(RelayRefusal::NotRegistered)), (0, 1));
}

#[tokio::test]
async fn a_fifth_registration_of_a_key_replaces_the_oldest_and_gets_the_dial_backs() {
    let relay = start(RelayLimits::default()).await;
    let addr = relay.local_addr();
    let phone = id(1);
    let mut controls = Vec::new();
    for _ in 0..4 {
        controls.push(register(addr, &phone).await);
    }
    assert_eq!(relay.stats().registrations, 4);
    let mut newest = register(addr, &phone).await;
    let oldest = &mut controls[0].stream;
    assert_eq!(refusal(&read(oldest).await), Some(RelayRefusal::Replaced));
    closed(oldest).await;
    let stats = relay.stats();
    assert_eq!((stats.registrations, stats.registrations_total), (4, 5));
    assert_eq!(RelayStats::count(&stats.control_ends, "replaced"), 1);

    // The dial-back goes to the newest, and the splice works.
    let (mut client, mut listener) = splice_from(HOME, addr, &mut newest, key(&phone), b"hi").await;
    let mut two = [0u8; 2];
    within("the opening", listener.read_exact(&mut two)).await.unwrap();
    assert_eq!(&two, b"hi");
    listener.write_all(b"yo").await.unwrap();
    within("the answer", client.read_exact(&mut two)).await.unwrap();
    assert_eq!(&two, b"yo");
}

#[tokio::test]
async fn dials_to_unknown_listeners_and_accepts_with_unknown_tokens_are_refused() {
    let relay = start(RelayLimits::default()).await;
    let addr = relay.local_addr();
    let (mut client, answer) = dial_from(HOME, addr, key(&id(9)), b"opening").await;
    assert_eq!(refusal(&answer), Some(RelayRefusal::NotRegistered));
    closed(&mut client).await;
    let (mut stream, answer) = accept(addr, [7; 16]).await;
    assert_eq!(refusal(&answer), Some(RelayRefusal::UnknownToken));
    closed(&mut stream).await;
    let stats = relay.stats();
    assert_eq!((stats.refused(RelayRefusal::NotRegistered), stats.refused(RelayRefusal::UnknownToken)), (1, 1));
}

#[tokio::test]
async fn a_dial_its_listener_never_answers_times_out() {
    let limits = RelayLimits { dial_timeout: Duration::from_millis(300), ..RelayLimits::default() };
    let relay = start(limits).await;
    let addr = relay.local_addr();
    let listener_id = id(1);
    let mut control = register(addr, &listener_id).await;
    let ((mut client, answer), (token, _)) =
        tokio::join!(dial_from(HOME, addr, key(&listener_id), b"x"), control.dial_back());
    assert_eq!(refusal(&answer), Some(RelayRefusal::NoAnswer));
    closed(&mut client).await;
    // Too late: the token is gone.
    let (_late, answer) = accept(addr, token).await;
    assert_eq!(refusal(&answer), Some(RelayRefusal::UnknownToken));
    assert_eq!(relay.stats().pending_dials, 0);
}

#[tokio::test]
async fn dials_beyond_the_splice_caps_are_refused_busy() {
    let limits = RelayLimits { max_splices: 3, max_splices_per_source: 2, ..RelayLimits::default() };
    let relay = start(limits).await;
    let addr = relay.local_addr();
    let listener_id = id(1);
    let target = key(&listener_id);
    let mut control = register(addr, &listener_id).await;
    let first = splice_from(HOME, addr, &mut control, target, b"").await;
    let _second = splice_from(HOME, addr, &mut control, target, b"").await;
    // Two from 127.0.0.1: its share.
    let (_c, answer) = dial_from(HOME, addr, target, b"").await;
    assert_eq!(refusal(&answer), Some(RelayRefusal::Busy));
    // Another source gets the third and last.
    let _third = splice_from([127, 0, 0, 2], addr, &mut control, target, b"").await;
    let (_c, answer) = dial_from([127, 0, 0, 4], addr, target, b"").await;
    assert_eq!(refusal(&answer), Some(RelayRefusal::Busy));
    assert_eq!(relay.stats().splices, 3);
    // One ends: its place is free again.
    drop(first);
    eventually("the closed splice to end", || relay.stats().splices == 2).await;
    let _again = splice_from(HOME, addr, &mut control, target, b"").await;
    assert_eq!(relay.stats().refused(RelayRefusal::Busy), 2);
}

#[tokio::test]
async fn connections_beyond_a_sources_share_are_refused_busy() {
    let limits = RelayLimits { max_connections_per_source: 2, ..RelayLimits::default() };
    let relay = start(limits).await;
    let addr = relay.local_addr();
    let _a = register(addr, &id(1)).await;
    let _b = register(addr, &id(2)).await;
    let mut third = connect_from(HOME, addr).await;
    assert_eq!(refusal(&read(&mut third).await), Some(RelayRefusal::Busy));
    // Another address still gets in.
    let (_c, answer) = dial_from([127, 0, 0, 2], addr, [0; 32], b"").await;
    assert_eq!(refusal(&answer), Some(RelayRefusal::NotRegistered));
}

#[tokio::test]
async fn dials_are_rate_limited_per_source_when_asked() {
    let limits = RelayLimits { dials_per_source: 2, ..RelayLimits::default() };
    let relay = start(limits).await;
    let addr = relay.local_addr();
    for _ in 0..2 {
        let (_c, answer) = dial_from(HOME, addr, [0; 32], b"").await;
        assert_eq!(refusal(&answer), Some(RelayRefusal::NotRegistered));
    }
    let (_c, answer) = dial_from(HOME, addr, [0; 32], b"").await;
    assert_eq!(refusal(&answer), Some(RelayRefusal::RateLimited));
    let (_c, answer) = dial_from([127, 0, 0, 2], addr, [0; 32], b"").await;
    assert_eq!(refusal(&answer), Some(RelayRefusal::NotRegistered));
}

#[tokio::test]
async fn a_half_close_crosses_the_relay_and_the_other_way_carries_on() {
    let relay = start(RelayLimits::default()).await;
    let addr = relay.local_addr();
    let listener_id = id(1);
    let mut control = register(addr, &listener_id).await;
    let (mut client, mut listener) = splice_from(HOME, addr, &mut control, key(&listener_id), b"request").await;
    client.shutdown().await.unwrap();
    let mut request = Vec::new();
    within("the request and its EOF", listener.read_to_end(&mut request)).await.unwrap();
    assert_eq!(request, b"request");
    // The listener still answers, at length, then closes.
    let answer = data(1 << 20, 3);
    listener.write_all(&answer).await.unwrap();
    listener.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("the answer and its EOF", client.read_to_end(&mut got)).await.unwrap();
    assert_eq!(sha256(&got), sha256(&answer));
    eventually("the splice to end", || relay.stats().splices == 0).await;
    assert_eq!(RelayStats::count(&relay.stats().splice_ends, "closed"), 1);
}

#[tokio::test]
async fn an_idle_splice_is_closed_and_a_silent_control_connection_too() {
    let limits = RelayLimits {
        idle_timeout: Duration::from_secs(1),
        control_idle: Duration::from_secs(3),
        ..RelayLimits::default()
    };
    let relay = start(limits).await;
    let addr = relay.local_addr();
    let listener_id = id(1);
    let mut control = register(addr, &listener_id).await;
    let (mut client, mut listener) = splice_from(HOME, addr, &mut control, key(&listener_id), b"").await;
    // Some traffic first: the idle time counts from the last byte.
    client.write_all(b"ping").await.unwrap();
    let mut four = [0u8; 4];
    within("the bytes", listener.read_exact(&mut four)).await.unwrap();
    closed(&mut client).await;
    closed(&mut listener).await;
    eventually("the idle splice to be counted", || RelayStats::count(&relay.stats().splice_ends, "idle") == 1).await;
    // The control connection pings: it is kept while it does, then closed once silent.
    control.stream.write_all(&Message::Ping(7).encode()).await.unwrap();
    assert_eq!(read(&mut control.stream).await, Message::Pong(7));
    closed(&mut control.stream).await;
    eventually("the registration to go", || relay.stats().registrations == 0).await;
    assert_eq!(RelayStats::count(&relay.stats().control_ends, "idle"), 1);
}

#[tokio::test]
async fn anything_but_ping_or_pong_on_a_control_connection_ends_it() {
    let relay = start(RelayLimits::default()).await;
    let addr = relay.local_addr();
    let mut control = register(addr, &id(1)).await;
    control.stream.write_all(&Message::Dial { target: [0; 32] }.encode()).await.unwrap();
    assert_eq!(refusal(&read(&mut control.stream).await), Some(RelayRefusal::Malformed));
    closed(&mut control.stream).await;
    eventually("the registration to go", || relay.stats().registrations == 0).await;
}

#[tokio::test]
async fn garbage_is_closed_without_harm() {
    let limits = RelayLimits { handshake_timeout: Duration::from_secs(1), ..RelayLimits::default() };
    let relay = start(limits).await;
    let addr = relay.local_addr();
    let mut bad_version = rp::header(KIND_DIAL);
    bad_version[4] ^= 0x7f;
    let mut new_flow = rp::header(KIND_DIAL);
    new_flow[5] = 1;
    let mut empty_message = rp::header(KIND_DIAL).to_vec();
    empty_message.push(0);
    let mut unknown_type = rp::header(KIND_ACCEPT).to_vec();
    unknown_type.extend_from_slice(&[1, 0x7e]);
    let mut short_dial = rp::header(KIND_DIAL).to_vec();
    short_dial.extend_from_slice(&[3, 0x03, 1, 2]);
    let cases: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n".to_vec(),
        data(4096, 7),
        bad_version.to_vec(),
        new_flow.to_vec(),
        empty_message,
        unknown_type,
        short_dial,
        rp::header(KIND_REGISTER)[..3].to_vec(),
        Vec::new(),
    ];
    for bytes in &cases {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(bytes).await;
        closed(&mut stream).await;
    }
    assert_eq!(relay.stats().refused(RelayRefusal::Malformed), 3, "the three bad messages behind good headers");
    // A partial message, then the connection goes: nothing is left behind.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut partial = rp::header(KIND_DIAL).to_vec();
    partial.extend_from_slice(&[33, 0x03, 1]);
    stream.write_all(&partial).await.unwrap();
    drop(stream);
    eventually("every connection to close", || relay.stats().connections == 0).await;
    let stats = relay.stats();
    assert!(RelayStats::count(&stats.early_closes, "bad_header") >= 4, "{stats:?}");
    assert!(RelayStats::count(&stats.early_closes, "handshake_timeout") >= 2, "{stats:?}");
    // The relay still serves.
    let listener_id = id(1);
    let mut control = register(addr, &listener_id).await;
    let _splice = splice_from(HOME, addr, &mut control, key(&listener_id), b"").await;
}

#[tokio::test]
async fn shutdown_tells_control_connections_and_closes_splices() {
    let relay = start(RelayLimits::default()).await;
    let addr = relay.local_addr();
    let listener_id = id(1);
    let mut control = register(addr, &listener_id).await;
    let (mut client, mut listener) = splice_from(HOME, addr, &mut control, key(&listener_id), b"").await;
    within("shutdown", relay.shutdown()).await;
    assert_eq!(refusal(&read(&mut control.stream).await), Some(RelayRefusal::ShuttingDown));
    closed(&mut client).await;
    closed(&mut listener).await;
    assert!(TcpStream::connect(addr).await.is_err(), "still listening after shutdown");
}

/// GET `path` from `addr`; the whole answer.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = within("connect to the metrics endpoint", TcpStream::connect(addr)).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = String::new();
    within("the metrics page", stream.read_to_string(&mut answer)).await.unwrap();
    answer
}

#[tokio::test]
async fn the_metrics_endpoint_serves_the_counters() {
    let relay = start(RelayLimits::default()).await;
    let addr = relay.local_addr();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let server = std::sync::Arc::clone(relay.server());
    let render = move || {
        let page = server.metrics_text();
        async move { page }
    };
    tokio::spawn(msocketd::metrics::serve(metrics, render, std::future::pending::<()>()));

    let listener_id = id(1);
    let mut control = register(addr, &listener_id).await;
    let (mut client, mut listener) = splice_from(HOME, addr, &mut control, key(&listener_id), b"12345").await;
    let mut five = [0u8; 5];
    within("the opening", listener.read_exact(&mut five)).await.unwrap();
    let (_c, answer) = dial_from(HOME, addr, [0; 32], b"").await;
    assert_eq!(refusal(&answer), Some(RelayRefusal::NotRegistered));

    let page = http_get(metrics_addr, "/metrics").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    for line in [
        "# TYPE msocket_relay_registrations gauge",
        "msocket_relay_registrations 1\n",
        "msocket_relay_registrations_total 1\n",
        "msocket_relay_splices 1\n",
        "msocket_relay_splices_total 1\n",
        "msocket_relay_dials_total 2\n",
        "msocket_relay_bytes_total{direction=\"client_to_listener\"} 5\n",
        "msocket_relay_refusals_total{code=\"not_registered\"} 1\n",
        "# HELP msocket_relay_bytes_total ",
        "# TYPE msocket_relay_refusals_total counter",
    ] {
        assert!(page.contains(line), "{line:?} missing from\n{page}");
    }
    assert!(http_get(metrics_addr, "/other").await.starts_with("HTTP/1.1 404"));
    client.shutdown().await.unwrap();
}

/// Reads stdout lines of a child on a thread, so each wait can be bounded.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Kills the child when dropped, so a failing test leaves no process behind.
struct Reaped(Option<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn the_binary_announces_its_addresses_relays_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_msocketd"))
        .args(["relay", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--dial-timeout", "2s"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn msocketd relay");
    let lines = lines_of(&mut child);
    let mut child = Reaped(Some(child));
    let first = lines.recv_timeout(WAIT).expect("msocketd relay did not announce its address");
    let addr: SocketAddr = first
        .strip_prefix("msocketd: relay listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .unwrap();
    assert_ne!(addr.port(), 0);
    let second = lines.recv_timeout(WAIT).expect("msocketd relay did not announce its metrics");
    let metrics: SocketAddr = second
        .strip_prefix("msocketd: relay metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected second line {second:?}"))
        .parse()
        .unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let listener_id = id(1);
        let mut control = register(addr, &listener_id).await;
        let (mut client, mut listener) = splice_from(HOME, addr, &mut control, key(&listener_id), b"over the binary").await;
        let mut got = [0u8; 15];
        within("the opening", listener.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"over the binary");
        listener.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        within("the answer", client.read_exact(&mut back)).await.unwrap();
        let page = http_get(metrics, "/metrics").await;
        assert!(page.contains("msocket_relay_splices 1\n"), "{page}");
    });

    let mut process = child.0.take().unwrap();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(process.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut process);
    assert!(status.success(), "msocketd relay exited with {status:?} on SIGTERM");
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("msocketd did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_flags_are_refused_with_their_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_msocketd"))
        .args(["relay", "--listen", "127.0.0.1:0", "--max-splices", "0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max-splices: must be at least 1"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_msocketd")).args(["relay", "--splice-buffer", "2M"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--splice-buffer"));
}

#[test]
fn help_explains_the_relay() {
    let out = Command::new(env!("CARGO_BIN_EXE_msocketd")).args(["relay", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "behind NAT",
        "127.0.0.1:7451",
        "--metrics",
        "--handshake-timeout",
        "--dial-timeout",
        "--control-idle",
        "--idle-timeout",
        "--registrations-per-key",
        "--max-registrations",
        "--max-splices",
        "--max-splices-per-source",
        "--max-pending-dials",
        "--max-pending-per-key",
        "--max-pending-per-source",
        "--max-connections",
        "--max-connections-per-source",
        "--dials-per-source",
        "--splice-buffer",
        "ulimit -n",
        "msocketd: relay listening on ADDR",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
}

/// Relayed throughput on loopback, one flow each way at once, against the same transfer
/// over a plain connection. Run with `cargo test -p msocketd --release --test relay --
/// --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn relayed_throughput() {
    let relay = start(RelayLimits::default()).await;
    let addr = relay.local_addr();
    let listener_id = id(1);
    let mut control = register(addr, &listener_id).await;
    let (client, listener) = splice_from(HOME, addr, &mut control, key(&listener_id), b"").await;
    let size: usize = 1 << 30;
    let relayed = transfer(client, listener, size).await;
    let direct_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpStream::connect(direct_listener.local_addr().unwrap()).await.unwrap();
    let (b, _) = direct_listener.accept().await.unwrap();
    let direct = transfer(a, b, size).await;
    let rate = |t: Duration| size as f64 * 8.0 / t.as_secs_f64() / 1e9;
    println!(
        "1 GiB one way: relayed {:.2} Gbit/s ({relayed:?}), direct {:.2} Gbit/s ({direct:?})",
        rate(relayed),
        rate(direct)
    );
    assert_eq!(relay.stats().bytes_client_to_listener, size as u64);
}

/// Sends `size` bytes from `from` to `to`; how long until the last arrived.
async fn transfer(mut from: TcpStream, mut to: TcpStream, size: usize) -> Duration {
    let chunk = vec![7u8; 1 << 20];
    let started = std::time::Instant::now();
    let send = async move {
        for _ in 0..size / chunk.len() {
            from.write_all(&chunk).await.unwrap();
        }
        from.shutdown().await.unwrap();
    };
    let receive = async move {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        loop {
            match to.read(&mut buf).await.unwrap() {
                0 => return got,
                n => got += n,
            }
        }
    };
    let (sent, got) = within("the transfer", async { tokio::join!(tokio::spawn(send), receive) }).await;
    sent.expect("the sender");
    assert_eq!(got, size);
    started.elapsed()
}

/// A process's resident memory in bytes, from /proc.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// The kernel's slab memory in bytes (the whole machine's), from /proc/meminfo.
fn slab() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("Slab:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("Slab in /proc/meminfo");
    kib * 1024
}

/// Raises this process's open-file limit to at least `want` if it may (root may raise
/// the hard limit too); the limit in force.
fn raise_open_files(want: u64) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct they are given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        let wanted = libc::rlimit { rlim_cur: want.max(limit.rlim_cur), rlim_max: want.max(limit.rlim_max) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            let soft = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// Opens `count` more splices to `target` into `held`. Clients come from many loopback
/// addresses: one address has too few ports for them all.
async fn open_splices(count: usize, held: &mut Vec<(TcpStream, TcpStream)>, relay: SocketAddr, control: &mut Control, target: ListenerKey) {
    let start = held.len();
    for i in start..start + count {
        let from = [127, 0, (i / 200 % 250) as u8 + 1, (i % 200) as u8 + 2];
        held.push(splice_from(from, relay, control, target, b"").await);
    }
}

/// What an idle relayed flow costs the relay: the real binary holds N idle splices
/// (MSOCKET_IDLE_SPLICES, default 10,000) and its resident memory is read before and
/// after. Needs about 2N + 100 open files here and 6N + 100 in the relay (raised when
/// run as root). Run with `cargo test -p msocketd --release --test relay -- --ignored
/// --nocapture idle_splices`.
#[test]
#[ignore = "holds thousands of connections; run by hand to measure"]
fn idle_splices_cost_the_relay_little_memory() {
    let asked: usize = std::env::var("MSOCKET_IDLE_SPLICES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let warm = 200;
    let files = raise_open_files(8 * (asked + warm) as u64 + 1000);
    // Where the open-file limit cannot be raised far enough, as many as fit (and say so).
    let fit = (files.saturating_sub(200) / 6) as usize;
    let n = asked.min(fit.saturating_sub(warm));
    assert!(n >= 1000, "open-file limit {files} leaves room for {n} splices only");
    if n < asked {
        println!("open-file limit {files}: holding {n} idle splices of the {asked} asked");
    }
    let cap = (n + warm + 100).to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_msocketd"))
        .args(["relay", "--listen", "127.0.0.1:0", "--max-splices", &cap, "--max-splices-per-source", &cap])
        .args(["--max-connections-per-source", &(3 * (n + warm)).to_string(), "--max-pending-per-key", "1024"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn msocketd relay");
    let lines = lines_of(&mut child);
    let pid = child.id();
    let _child = Reaped(Some(child));
    let first = lines.recv_timeout(WAIT).expect("msocketd relay did not announce its address");
    let addr: SocketAddr = first.strip_prefix("msocketd: relay listening on ").expect(&first).parse().unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let listener_id = id(1);
        let mut control = register(addr, &listener_id).await;
        let target = key(&listener_id);
        let mut held = Vec::with_capacity(n + warm);
        open_splices(warm, &mut held, addr, &mut control, target).await;
        let (rss_before, slab_before) = (rss_of(pid), slab());
        open_splices(n, &mut held, addr, &mut control, target).await;
        let (rss_after, slab_after) = (rss_of(pid), slab());
        let per_splice = rss_after.saturating_sub(rss_before) / n as u64;
        let slab_per_splice = slab_after.saturating_sub(slab_before) / n as u64;
        println!(
            "{n} idle splices: relay RSS {} KiB -> {} KiB, {per_splice} bytes per splice; \
             kernel slab (whole machine, both ends' sockets too) {slab_per_splice} bytes per splice",
            rss_before / 1024,
            rss_after / 1024
        );
        assert!(per_splice <= 10 * 1024, "{per_splice} bytes of relay memory per idle splice");
        drop(held);
    });
}
