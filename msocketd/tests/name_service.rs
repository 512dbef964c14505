//! The name server in-process, driven through `TcpNameClient`, through the protocol's
//! channel by hand (`Conn`), and through raw sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use msocket::name::protocol::secure::{Channel, ClientHello, ServerConnection};
use msocket::name::protocol::{read_message, write_message, RefuseCode, Request, Response};
use msocket::name::{unix_now, NameError, NameRecord, NameService, SignedRecord, TcpNameClient};
use msocket::Identity;
use msocketd::name_server::{NameServer, IDLE_TIMEOUT, SHUTDOWN_GRACE};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);

struct TestServer {
    addr: SocketAddr,
    server: Arc<NameServer>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> TestServer {
        TestServer::start_with(|server| server).await
    }

    async fn start_with(configure: impl FnOnce(NameServer) -> NameServer) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let server = NameServer::open(dir.path().join("names.redb")).unwrap();
        let server = Arc::new(configure(server));
        // Bound before serving: clients can connect as soon as this returns.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(Arc::clone(&server).serve(listener, async move {
            let _ = stopped.await;
        }));
        TestServer { addr, server, stop: Some(stop), task, _dir: dir }
    }

    fn client(&self) -> TcpNameClient {
        TcpNameClient::new(self.addr.to_string(), WAIT)
    }

    /// A plain TCP connection to the server.
    async fn tcp(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// A connection that speaks the protocol by hand: encoded requests in, answers out.
    async fn raw(&self) -> Conn {
        Conn::new(self.tcp().await)
    }

    /// Waits until exactly `n` watches are parked on the server. Synchronises on the
    /// server's own count rather than on a guessed delay.
    async fn parked(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.server.parked_watches() != n {
            assert!(tokio::time::Instant::now() < deadline, "never saw {n} parked watches");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn shut_down(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("server did not stop in time")
            .unwrap();
    }
}

fn record(seed: u8, name: &str, seq: u64, expires: u64) -> SignedRecord {
    let id = Identity::from_seed([seed; 32]);
    let p = id.public();
    let record = NameRecord {
        name: name.into(),
        signing_key: p.signing,
        noise_key: p.noise,
        addrs: vec![SocketAddr::from(([192, 0, 2, seed], 4000 + seq as u16))],
        relays: vec![format!("relay{seq}.example:7451")],
        seq,
        expires,
    };
    SignedRecord::sign(record, &id).unwrap()
}

fn later() -> u64 {
    unix_now() + 3600
}

/// The client's side of the protocol by hand: each encoded request goes in the hello (the
/// first) or sealed in the channel; answers come out decoded. Unlike `TcpNameClient` it
/// sends whatever body it is given.
struct Conn {
    stream: TcpStream,
    hello: Option<ClientHello>,
    channel: Option<Channel>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn { stream, hello: None, channel: None }
    }

    /// Sends an encoded request: in the hello if it is the first (the next must wait for
    /// the welcome), else sealed.
    async fn send(&mut self, body: &[u8]) {
        let frame = match (&self.hello, &self.channel) {
            (_, Some(channel)) => channel.seal(body).unwrap(),
            (None, None) => {
                let (hello, first) = ClientHello::new(body).unwrap();
                self.hello = Some(hello);
                first
            }
            (Some(_), None) => panic!("a second request before the welcome"),
        };
        write_message(&mut self.stream, &frame).await.unwrap();
    }

    /// The next frame, opened: `None` once the server closed the connection.
    async fn receive(&mut self) -> Option<Vec<u8>> {
        let frame = tokio::time::timeout(WAIT, read_message(&mut self.stream)).await.expect("no answer in time").ok()?;
        Some(match self.hello.take() {
            Some(hello) => {
                let welcome = hello.finish(&frame, None).unwrap();
                self.channel = Some(welcome.channel);
                welcome.response
            }
            None => self.channel.as_ref().expect("an answer before any request").open(&frame).unwrap(),
        })
    }
}

/// Sends an encoded request on `conn`.
async fn send(conn: &mut Conn, body: &[u8]) {
    conn.send(body).await
}

/// Reads one response, bounded in time.
async fn response(conn: &mut Conn) -> Response {
    tagged_response(conn).await.1
}

/// Reads one response with its id, bounded in time.
async fn tagged_response(conn: &mut Conn) -> (u32, Response) {
    let body = conn.receive().await.expect("the server closed the connection");
    Response::decode_tagged(&body).unwrap()
}

/// Waits for the server to close the connection (EOF or reset), bounded in time.
async fn closed(conn: &mut Conn) -> bool {
    conn.receive().await.is_none()
}

/// Waits for the server to close a plain TCP connection, bounded in time; true if it
/// closed it without sending a byte.
async fn closed_silently(stream: &mut TcpStream) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("the server kept the connection") {
        Ok(n) => n == 0,
        Err(_) => true,
    }
}

#[tokio::test]
async fn register_then_lookup_then_update() {
    let server = TestServer::start().await;
    let client: Arc<dyn NameService> = Arc::new(server.client());
    let first = record(1, "alice.example", 1, later());
    client.register(&first).await.unwrap();
    assert_eq!(client.lookup("alice.example").await.unwrap(), first);

    let second = record(1, "alice.example", 2, later());
    assert_ne!(first.record.addrs, second.record.addrs);
    client.register(&second).await.unwrap();
    assert_eq!(client.lookup("alice.example").await.unwrap(), second);
    server.shut_down().await;
}

#[tokio::test]
async fn forged_records_are_refused_and_not_stored() {
    let server = TestServer::start().await;
    let client = server.client();
    let mut forged = record(1, "alice", 1, later());
    forged.record.addrs = vec!["203.0.113.66:1".parse().unwrap()];
    assert_eq!(client.register(&forged).await, Err(NameError::BadSignature));

    // Mallory's signature on a record carrying Alice's keys.
    let mallory = Identity::from_seed([66; 32]);
    let mut stolen = record(1, "alice", 1, later());
    stolen.signature = mallory.sign(b"anything");
    assert_eq!(client.register(&stolen).await, Err(NameError::BadSignature));

    assert_eq!(client.lookup("alice").await, Err(NameError::NotFound("alice".into())));
    server.shut_down().await;
}

/// Small-order keys "sign" anything under a lax Ed25519 check: the identity point with
/// R = identity and s = 0 for every message, the all-zero key with the all-zero signature
/// for about one message in four. Both are refused and nothing is stored.
#[tokio::test]
async fn records_signed_by_small_order_keys_are_refused() {
    let server = TestServer::start().await;
    let client = server.client();
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    for seq in 1..=8 {
        let mut squat = record(1, "alice", seq, later());
        squat.record.signing_key = identity_point;
        squat.signature = [0; 64];
        squat.signature[..32].copy_from_slice(&identity_point);
        assert_eq!(client.register(&squat).await, Err(NameError::BadSignature), "identity key, seq {seq}");
        let mut zero = record(1, "alice", seq, later());
        zero.record.signing_key = [0; 32];
        zero.signature = [0; 64];
        assert_eq!(client.register(&zero).await, Err(NameError::BadSignature), "zero key, seq {seq}");
    }
    assert_eq!(client.lookup("alice").await, Err(NameError::NotFound("alice".into())));
    // The name is still free for its real owner.
    client.register(&record(1, "alice", 1, later())).await.unwrap();
    server.shut_down().await;
}

/// A record that never expires would hold its name for good: refused with the maximum
/// named, nothing stored, and the name's owner registers it afterwards.
#[tokio::test]
async fn records_living_longer_than_the_maximum_are_refused() {
    let server = TestServer::start().await;
    let client = server.client();
    let max = msocket::name::MAX_RECORD_LIFETIME;
    for expires in [u64::MAX, unix_now() + max.as_secs() + 120] {
        let squat = record(7, "alice", 1, expires);
        assert_eq!(client.register(&squat).await, Err(NameError::LifetimeTooLong { max }), "expires {expires}");
    }
    assert_eq!(client.lookup("alice").await, Err(NameError::NotFound("alice".into())));
    let owner = record(1, "alice", 1, unix_now() + max.as_secs() - 120);
    client.register(&owner).await.unwrap();
    assert_eq!(client.lookup("alice").await, Ok(owner));
    server.shut_down().await;
}

#[tokio::test]
async fn stale_sequence_numbers_are_refused() {
    let server = TestServer::start().await;
    let client = server.client();
    let current = record(1, "alice", 5, later());
    client.register(&current).await.unwrap();
    assert_eq!(
        client.register(&record(1, "alice", 5, later())).await,
        Err(NameError::Stale { current: 5, offered: 5 })
    );
    assert_eq!(
        client.register(&record(1, "alice", 4, later())).await,
        Err(NameError::Stale { current: 5, offered: 4 })
    );
    assert_eq!(client.lookup("alice").await.unwrap(), current);
    server.shut_down().await;
}

#[tokio::test]
async fn a_name_bound_to_one_key_refuses_another() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = record(1, "alice", 1, later());
    client.register(&alice).await.unwrap();
    assert_eq!(client.register(&record(2, "alice", 9, later())).await, Err(NameError::KeyMismatch));
    // Another name is free for the second key.
    client.register(&record(2, "bob", 1, later())).await.unwrap();
    assert_eq!(client.lookup("alice").await.unwrap(), alice);
    server.shut_down().await;
}

#[tokio::test]
async fn expired_records_are_refused() {
    let server = TestServer::start().await;
    let client = server.client();
    let expired = record(1, "alice", 1, unix_now().saturating_sub(1));
    assert_eq!(client.register(&expired).await, Err(NameError::Expired));
    assert_eq!(client.lookup("alice").await, Err(NameError::NotFound("alice".into())));
    server.shut_down().await;
}

#[tokio::test]
async fn unknown_names_are_not_found() {
    let server = TestServer::start().await;
    assert_eq!(
        server.client().lookup("nobody.example").await,
        Err(NameError::NotFound("nobody.example".into()))
    );
    server.shut_down().await;
}

#[tokio::test]
async fn one_connection_carries_several_requests() {
    let server = TestServer::start().await;
    let alice = record(1, "alice", 1, later());
    let mut conn = server.raw().await;
    send(&mut conn, &Request::Register(alice.clone()).encode()).await;
    assert_eq!(response(&mut conn).await, Response::Ok);
    send(&mut conn, &Request::Lookup("alice".into()).encode()).await;
    assert_eq!(response(&mut conn).await, Response::Record(alice));
    send(&mut conn, &Request::Lookup("Alice".into()).encode()).await;
    assert!(matches!(
        response(&mut conn).await,
        Response::Refused { code: RefuseCode::InvalidName, message, .. } if message.contains("lowercase")
    ));
    // A refusal for a bad request (not a bad frame) keeps the connection usable.
    send(&mut conn, &Request::Lookup("bob".into()).encode()).await;
    assert_eq!(response(&mut conn).await, Response::NotFound);
    server.shut_down().await;
}

/// Bytes that are not a hello are not answered (no channel, nothing to authenticate an
/// answer with): the connection is closed.
#[tokio::test]
async fn garbage_is_closed_on_and_the_server_keeps_serving() {
    let server = TestServer::start().await;

    // A well-framed body that is not a hello.
    let mut conn = server.tcp().await;
    write_message(&mut conn, b"hello").await.unwrap();
    assert!(closed_silently(&mut conn).await);

    // A length prefix far over the limit.
    let mut conn = server.tcp().await;
    conn.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    assert!(closed_silently(&mut conn).await);

    // A frame cut short by the client closing its side.
    let mut conn = server.tcp().await;
    conn.write_all(&[0, 0, 0, 100, 1, 1, 1]).await.unwrap();
    conn.shutdown().await.unwrap();
    assert!(closed_silently(&mut conn).await);

    // Random bytes.
    let mut conn = server.tcp().await;
    let junk: Vec<u8> = (0..=255u8).rev().cycle().take(3000).collect();
    let _ = conn.write_all(&junk).await;
    assert!(closed_silently(&mut conn).await);

    let alice = record(1, "alice", 1, later());
    let client = server.client();
    client.register(&alice).await.unwrap();
    assert_eq!(client.lookup("alice").await.unwrap(), alice);
    server.shut_down().await;
}

/// A hello or a sealed message that holds no request is refused (malformed), in the
/// channel, and the connection closed.
#[tokio::test]
async fn malformed_requests_in_the_channel_are_refused_then_closed() {
    let server = TestServer::start().await;
    // In the hello.
    let mut conn = server.raw().await;
    send(&mut conn, b"not a request").await;
    assert!(matches!(
        tagged_response(&mut conn).await,
        (0, Response::Refused { code: RefuseCode::Malformed, .. })
    ));
    assert!(closed(&mut conn).await);
    // Later in the channel, with its id.
    let mut conn = server.raw().await;
    send(&mut conn, &Request::Lookup("bob".into()).encode()).await;
    assert_eq!(response(&mut conn).await, Response::NotFound);
    let mut bad = Request::Lookup("bob".into()).encode_tagged(9);
    bad.push(0);
    send(&mut conn, &bad).await;
    assert!(matches!(
        tagged_response(&mut conn).await,
        (9, Response::Refused { code: RefuseCode::Malformed, .. })
    ));
    assert!(closed(&mut conn).await);
    server.shut_down().await;
}

#[tokio::test]
async fn silent_and_dribbling_clients_are_cut_off() {
    let idle = Duration::from_millis(300);
    let server = TestServer::start_with(|s| s.with_idle_timeout(idle)).await;
    let started = std::time::Instant::now();
    let mut silent = server.tcp().await;
    let mut dribbling = server.tcp().await;
    // Half a length prefix, then nothing: the whole request must arrive in time.
    dribbling.write_all(&[0, 0]).await.unwrap();
    assert!(closed_silently(&mut silent).await);
    assert!(closed_silently(&mut dribbling).await);
    assert!(started.elapsed() >= idle);

    // A fresh client is still served.
    assert!(matches!(server.client().lookup("x").await, Err(NameError::NotFound(_))));
    server.shut_down().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections() {
    let server = TestServer::start().await;
    let mut idle = server.raw().await;
    // Make sure the connection was accepted and is being served.
    send(&mut idle, &Request::Lookup("x".into()).encode()).await;
    assert_eq!(response(&mut idle).await, Response::NotFound);
    let started = std::time::Instant::now();
    server.shut_down().await;
    // Closed on the stop signal, not by the grace-period abort or the idle timeout.
    assert!(started.elapsed() < SHUTDOWN_GRACE.min(IDLE_TIMEOUT));
    assert!(closed(&mut idle).await);
}

/// A one-shot fake name server (with a key of its own, over a genuine channel) answering
/// its first request with `answer`.
async fn fake_server(answer: Response) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        let mut conn = ServerConnection::new(conn, Identity::from_seed([77; 32]));
        if let Ok(Ok((id, _))) = tokio::time::timeout(WAIT, conn.receive()).await {
            let _ = conn.answer(id, &answer).await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn the_client_catches_a_lying_server() {
    let genuine = record(1, "alice", 3, later());

    let mut forged = genuine.clone();
    forged.record.addrs = vec!["203.0.113.66:1".parse().unwrap()];
    let wrong_name = record(1, "mallory", 3, later());
    let expired = record(1, "alice", 3, unix_now().saturating_sub(1));
    let cases = [
        (Response::Record(forged), NameError::BadSignature),
        (Response::Record(wrong_name), NameError::BadSignature),
        (Response::Record(expired), NameError::Expired),
        (Response::Ok, NameError::Malformed("unexpected Ok response".into())),
    ];
    for (answer, expected) in cases {
        let (addr, task) = fake_server(answer).await;
        let client = TcpNameClient::new(addr, WAIT);
        assert_eq!(client.lookup("alice").await, Err(expected));
        task.await.unwrap();
    }

    // The same client path accepts the genuine record.
    let (addr, task) = fake_server(Response::Record(genuine.clone())).await;
    assert_eq!(TcpNameClient::new(addr, WAIT).lookup("alice").await, Ok(genuine));
    task.await.unwrap();
}

// ---- Watch ----

/// Far longer than any watch in these tests should take to answer: a watch with this wait
/// that answers quickly was answered by a push, not by its wait running out.
const LONG_WAIT: Duration = Duration::from_secs(30);
/// "Promptly": well under `LONG_WAIT`, with room for a slow, shared test machine.
const PROMPT: Duration = Duration::from_secs(5);

fn watch(name: &str, after_seq: u64, wait: Duration) -> Vec<u8> {
    Request::watch(name, after_seq, wait).encode()
}

#[tokio::test]
async fn a_watch_answers_at_once_when_a_newer_record_exists() {
    let server = TestServer::start().await;
    let client = server.client();
    client.register(&record(1, "alice", 1, later())).await.unwrap();
    let second = record(1, "alice", 2, later());
    client.register(&second).await.unwrap();

    let started = Instant::now();
    assert_eq!(client.watch("alice", 0, LONG_WAIT).await, Ok(Some(second.clone())));
    assert_eq!(client.watch("alice", 1, LONG_WAIT).await, Ok(Some(second)));
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    server.parked(0).await;
    server.shut_down().await;
}

/// A watch from a given local address connects from it: from another loopback address
/// it is answered as usual; from an address this host does not have it fails at once
/// with a clear error instead of leaving from some other interface.
#[tokio::test]
async fn a_watch_from_a_local_address_connects_from_it() {
    let server = TestServer::start().await;
    let client = server.client();
    let rec = record(1, "alice", 1, later());
    client.register(&rec).await.unwrap();
    let from: std::net::IpAddr = "127.0.0.7".parse().unwrap();
    assert_eq!(client.watch_from("alice", 0, LONG_WAIT, Some(from)).await, Ok(Some(rec)));
    // 192.0.2.1 (TEST-NET-1) is no address of this host: binding to it fails, nothing is sent.
    let foreign = Some("192.0.2.1".parse().unwrap());
    match client.watch_from("alice", 0, LONG_WAIT, foreign).await {
        Err(NameError::Unreachable { step, .. }) => assert_eq!(step, msocket::name::ExchangeStep::Connect),
        other => panic!("a watch from a foreign address: {other:?}"),
    }
    server.shut_down().await;
}

#[tokio::test]
async fn a_parked_watch_is_woken_by_a_registration_from_another_client() {
    let server = TestServer::start().await;
    let publisher = server.client();
    publisher.register(&record(1, "alice", 1, later())).await.unwrap();

    let watcher = server.client();
    let watching = tokio::spawn(async move { watcher.watch("alice", 1, LONG_WAIT).await });
    server.parked(1).await;
    // The server moved: it re-registers with new addresses.
    let moved = record(1, "alice", 2, later());
    let registered_at = Instant::now();
    publisher.register(&moved).await.unwrap();
    let seen = tokio::time::timeout(PROMPT, watching).await.expect("watch not woken").unwrap();
    assert_eq!(seen, Ok(Some(moved)));
    assert!(registered_at.elapsed() < PROMPT);
    server.parked(0).await;
    server.shut_down().await;
}

#[tokio::test]
async fn a_watch_on_an_unregistered_name_waits_for_the_first_record() {
    let server = TestServer::start().await;
    let watcher = server.client();
    let watching = tokio::spawn(async move { watcher.watch("newcomer", 0, LONG_WAIT).await });
    server.parked(1).await;
    let first = record(3, "newcomer", 1, later());
    server.client().register(&first).await.unwrap();
    let seen = tokio::time::timeout(PROMPT, watching).await.expect("watch not woken").unwrap();
    assert_eq!(seen, Ok(Some(first)));
    server.shut_down().await;
}

#[tokio::test]
async fn a_watch_reports_unchanged_when_nothing_changes() {
    let server = TestServer::start().await;
    let client = server.client();
    client.register(&record(1, "alice", 4, later())).await.unwrap();
    let wait = Duration::from_millis(300);

    // The registered record is not newer than what the watcher has.
    let started = Instant::now();
    assert_eq!(client.watch("alice", 4, wait).await, Ok(None));
    assert!(started.elapsed() >= wait);
    assert!(started.elapsed() < PROMPT);
    // A name with no record at all is "unchanged", not "not found".
    let started = Instant::now();
    assert_eq!(client.watch("nobody", 0, wait).await, Ok(None));
    assert!(started.elapsed() >= wait);

    // On the wire: Watching at once, Unchanged after the wait, and the connection stays
    // usable.
    let mut conn = server.raw().await;
    send(&mut conn, &watch("nobody", 0, wait)).await;
    assert_eq!(response(&mut conn).await, Response::Watching);
    assert_eq!(response(&mut conn).await, Response::Unchanged);
    send(&mut conn, &Request::Lookup("alice".into()).encode()).await;
    assert!(matches!(response(&mut conn).await, Response::Record(r) if r.record.seq == 4));
    server.parked(0).await;
    server.shut_down().await;
}

#[tokio::test]
async fn watches_on_invalid_names_are_refused() {
    let server = TestServer::start().await;
    // The client refuses before sending anything...
    let refused = server.client().watch("Alice", 0, LONG_WAIT).await;
    assert!(
        matches!(&refused, Err(NameError::InvalidName { name, reason })
            if name == "Alice" && reason.contains("lowercase")),
        "{refused:?}"
    );
    // ...and so does the server, at once, keeping the connection open.
    let mut conn = server.raw().await;
    let started = Instant::now();
    send(&mut conn, &watch("Alice", 0, LONG_WAIT)).await;
    assert!(matches!(
        response(&mut conn).await,
        Response::Refused { code: RefuseCode::InvalidName, message, .. } if message.contains("lowercase")
    ));
    assert!(started.elapsed() < PROMPT);
    send(&mut conn, &Request::Lookup("bob".into()).encode()).await;
    assert_eq!(response(&mut conn).await, Response::NotFound);
    server.parked(0).await;
    server.shut_down().await;
}

#[tokio::test]
async fn a_forged_record_is_never_returned_by_a_watch() {
    let genuine = record(1, "alice", 3, later());
    let mut forged = genuine.clone();
    forged.record.addrs = vec!["203.0.113.66:1".parse().unwrap()];
    let mallory = Identity::from_seed([66; 32]);
    let mut resigned = genuine.clone();
    resigned.signature = mallory.sign(b"anything");
    let cases = [
        (Response::Record(forged), NameError::BadSignature),
        (Response::Record(resigned), NameError::BadSignature),
        (Response::Record(record(1, "mallory", 3, later())), NameError::BadSignature),
        (Response::Record(record(1, "alice", 3, unix_now().saturating_sub(1))), NameError::Expired),
        (
            Response::Record(record(1, "alice", 2, later())),
            NameError::Malformed("watch for \"alice\" after seq 2 answered with seq 2".into()),
        ),
        (Response::NotFound, NameError::Malformed("unexpected NotFound response".into())),
    ];
    for (answer, expected) in cases {
        let (addr, task) = fake_server(answer).await;
        let client = TcpNameClient::new(addr, WAIT);
        assert_eq!(client.watch("alice", 2, LONG_WAIT).await, Err(expected));
        task.await.unwrap();
    }
    let (addr, task) = fake_server(Response::Record(genuine.clone())).await;
    assert_eq!(
        TcpNameClient::new(addr, WAIT).watch("alice", 2, LONG_WAIT).await,
        Ok(Some(genuine))
    );
    task.await.unwrap();
}

#[tokio::test]
async fn a_watcher_that_hangs_up_leaves_nothing_behind() {
    let server = TestServer::start().await;
    let mut conns = Vec::new();
    for name in ["alice", "alice", "bob"] {
        let mut conn = server.raw().await;
        send(&mut conn, &watch(name, 0, LONG_WAIT)).await;
        conns.push(conn);
    }
    server.parked(3).await;
    drop(conns);
    // Noticed from the socket, long before the watches' own wait would end.
    let started = Instant::now();
    server.parked(0).await;
    assert!(started.elapsed() < PROMPT);
    // The server still serves and pushes.
    let watcher = server.client();
    let watching = tokio::spawn(async move { watcher.watch("alice", 0, LONG_WAIT).await });
    server.parked(1).await;
    server.client().register(&record(1, "alice", 1, later())).await.unwrap();
    assert!(matches!(watching.await.unwrap(), Ok(Some(_))));
    server.shut_down().await;
}

#[tokio::test]
async fn a_parked_watch_outlives_the_idle_timeout() {
    let idle = Duration::from_millis(200);
    let server = TestServer::start_with(|s| s.with_idle_timeout(idle)).await;
    let mut conn = server.raw().await;
    let wait = Duration::from_millis(800);
    let started = Instant::now();
    send(&mut conn, &watch("alice", 0, wait)).await;
    assert_eq!(response(&mut conn).await, Response::Watching);
    assert_eq!(response(&mut conn).await, Response::Unchanged);
    assert!(started.elapsed() >= wait);
    // The idle timer starts again after the answer.
    send(&mut conn, &Request::Lookup("alice".into()).encode()).await;
    assert_eq!(response(&mut conn).await, Response::NotFound);
    assert!(closed(&mut conn).await);
    server.shut_down().await;
}

/// A relay to `server` for one connection; counts the requests (frames: they are sealed)
/// the client sends through it.
async fn request_counting_relay(server: SocketAddr) -> (String, tokio::sync::watch::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (count, counted) = tokio::sync::watch::channel(0);
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_server, mut to_server) = TcpStream::connect(server).await.unwrap().into_split();
        tokio::spawn(async move { tokio::io::copy(&mut from_server, &mut to_client).await });
        while let Ok(body) = read_message(&mut from_client).await {
            count.send_modify(|n| *n += 1);
            if write_message(&mut to_server, &body).await.is_err() {
                break;
            }
        }
    });
    (addr, counted)
}

#[tokio::test]
async fn the_server_caps_the_wait_and_the_client_watches_again() {
    let cap = Duration::from_millis(200);
    let server = TestServer::start_with(|s| s.with_watch_cap(cap)).await;
    let mut conn = server.raw().await;
    let started = Instant::now();
    send(&mut conn, &watch("alice", 0, LONG_WAIT)).await;
    assert_eq!(response(&mut conn).await, Response::Watching);
    assert_eq!(response(&mut conn).await, Response::Unchanged);
    assert!(started.elapsed() >= cap && started.elapsed() < PROMPT);

    // A client asking for longer than the cap gets its whole wait, over several watches,
    // and a registration during any of them still answers it.
    let client = server.client();
    let started = Instant::now();
    assert_eq!(client.watch("alice", 0, Duration::from_millis(700)).await, Ok(None));
    assert!(started.elapsed() >= Duration::from_millis(700));
    let (relay, mut asked) = request_counting_relay(server.addr).await;
    let client = TcpNameClient::new(relay, WAIT);
    let (watched, registered) = tokio::join!(client.watch("alice", 0, LONG_WAIT), async {
        // The first watch was answered `Unchanged` before the second was asked.
        tokio::time::timeout(WAIT, asked.wait_for(|&n| n >= 2))
            .await
            .expect("the client did not watch a second time")
            .unwrap();
        server.parked(1).await;
        server.client().register(&record(1, "alice", 1, later())).await
    });
    registered.unwrap();
    assert!(matches!(watched, Ok(Some(r)) if r.record.seq == 1));
    server.shut_down().await;
}

/// Requests on one connection are answered as they complete, by id: lookups sent behind
/// a parked watch are answered while the watch waits.
#[tokio::test]
async fn requests_behind_a_parked_watch_are_answered_while_it_waits() {
    let server = TestServer::start().await;
    let mut conn = server.raw().await;
    send(&mut conn, &Request::watch("alice", 0, LONG_WAIT).encode_tagged(7)).await;
    assert_eq!(tagged_response(&mut conn).await, (7, Response::Watching));
    let started = Instant::now();
    send(&mut conn, &Request::Lookup("bob".into()).encode_tagged(8)).await;
    send(&mut conn, &Request::Lookup("carol".into()).encode_tagged(9)).await;
    let mut answers = vec![tagged_response(&mut conn).await, tagged_response(&mut conn).await];
    answers.sort_by_key(|(id, _)| *id);
    assert_eq!(answers, [(8, Response::NotFound), (9, Response::NotFound)]);
    assert!(started.elapsed() < PROMPT);
    // The watch is still parked, and is answered by the registration it waits for.
    server.parked(1).await;
    let first = record(1, "alice", 1, later());
    server.client().register(&first).await.unwrap();
    assert_eq!(tagged_response(&mut conn).await, (7, Response::Record(first)));
    server.shut_down().await;
}

#[tokio::test]
async fn shutdown_answers_parked_watches() {
    let server = TestServer::start().await;
    let mut conn = server.raw().await;
    send(&mut conn, &watch("alice", 0, LONG_WAIT)).await;
    assert_eq!(response(&mut conn).await, Response::Watching);
    server.parked(1).await;
    let started = Instant::now();
    server.shut_down().await;
    assert!(started.elapsed() < SHUTDOWN_GRACE);
    assert_eq!(response(&mut conn).await, Response::Unchanged);
    assert!(closed(&mut conn).await);
}

// ---- Ownership, quotas, limits ----

/// The largest record the protocol allows: a 253-byte name, 16 IPv6 addresses, 8 relays
/// of 255 bytes, under a key of its own (`n` picks the key and the name).
fn max_size_record(n: u32) -> SignedRecord {
    let mut seed = [0xa5; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    let id = Identity::from_seed(seed);
    let label = |c: char, len: usize| std::iter::repeat_n(c, len).collect::<String>();
    let name = format!("{}.{}.{}.n{:0>60}", label('a', 63), label('b', 63), label('c', 63), n);
    assert_eq!(name.len(), msocket::name::MAX_NAME_LEN);
    let p = id.public();
    let record = NameRecord {
        name,
        signing_key: p.signing,
        noise_key: p.noise,
        addrs: (0..16u16).map(|i| SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, i], 4000 + i))).collect(),
        relays: (0..8).map(|i| format!("{}{i}", label('r', 254))).collect(),
        seq: 1,
        expires: later(),
    };
    SignedRecord::sign(record, &id).unwrap()
}

/// The reviewer's attack: 3,000 maximum-size registrations from one client, each under a
/// fresh key (so no per-key limit applies), as fast as it can. With the default limits
/// only the source's burst (60) and what refilled meanwhile (one a second) are stored;
/// the rest are refused as rate limited, with a time to wait, and stored nowhere. A
/// client at another address registers at once.
#[tokio::test]
async fn a_registration_flood_from_one_source_is_held_to_its_rate() {
    let server = TestServer::start().await;
    let attacker = server.client().bind_to("127.0.0.1".parse().unwrap());
    let records: Vec<SignedRecord> = (0..3000).map(max_size_record).collect();
    assert!(records[0].encode().len() > 2_500, "{} bytes", records[0].encode().len());
    let started = Instant::now();
    let (mut accepted, mut limited) = (0u64, 0u64);
    for record in &records {
        match attacker.register(record).await {
            Ok(()) => accepted += 1,
            Err(NameError::RateLimited { retry_after }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1), "{retry_after:?}");
                limited += 1;
            }
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    let took = started.elapsed();
    let allowed = 60 + took.as_secs() + 1;
    println!("3000 registrations in {took:?}: {accepted} accepted, {limited} rate limited (at most {allowed} allowed)");
    assert!((60..=allowed).contains(&accepted), "{accepted} accepted");
    assert_eq!(accepted + limited, 3000);
    assert_eq!(server.server.stored_names(), Ok(accepted));

    // Another source is not held back by the flood.
    let honest = server.client().bind_to("127.0.0.2".parse().unwrap());
    let phone = record(9, "phone", 1, later());
    honest.register(&phone).await.unwrap();
    assert_eq!(honest.lookup("phone").await, Ok(phone));
    server.shut_down().await;
}

/// An honest phone re-registers on every network change: a burst of ten passes at once.
#[tokio::test]
async fn a_phone_changing_networks_ten_times_registers_every_time() {
    let server = TestServer::start().await;
    let phone = server.client();
    for seq in 1..=10 {
        phone.register(&record(3, "phone", seq, later())).await.unwrap();
    }
    assert!(matches!(phone.lookup("phone").await, Ok(r) if r.record.seq == 10));
    server.shut_down().await;
}

#[tokio::test]
async fn a_key_is_held_to_its_rate_and_its_quota_of_names() {
    use msocketd::name_server::{RateLimits, StoreLimits};
    let server = TestServer::start_with(|s| {
        s.with_rate_limits(RateLimits { per_source: 1000, per_key: 5 })
            .with_store_limits(StoreLimits { names_per_key: 3, max_names: 4 })
    })
    .await;
    let client = server.client();
    for name in ["n1", "n2", "n3"] {
        client.register(&record(1, name, 1, later())).await.unwrap();
    }
    assert_eq!(client.register(&record(1, "n4", 1, later())).await, Err(NameError::QuotaExceeded { max: 3 }));
    // Key 1 has spent its five registrations (the refused one counts).
    client.register(&record(1, "n1", 2, later())).await.unwrap();
    assert!(matches!(client.register(&record(1, "n1", 3, later())).await, Err(NameError::RateLimited { .. })));
    // Another key fills the server.
    client.register(&record(2, "m1", 1, later())).await.unwrap();
    assert_eq!(client.register(&record(2, "m2", 1, later())).await, Err(NameError::ServerFull { max: 4 }));
    assert_eq!(server.server.stored_names(), Ok(4));
    server.shut_down().await;
}

/// Records that lapsed (expired, then the grace period passed) are deleted and their
/// names freed; the server's clock is played forward through `collect_garbage`.
#[tokio::test]
async fn lapsed_names_are_deleted_and_freed() {
    let server = TestServer::start().await;
    let client = server.client();
    let grace = msocket::name::NAME_GRACE.as_secs();
    let soon = unix_now() + 60;
    client.register(&record(1, "alice", 1, soon)).await.unwrap();
    client.register(&record(1, "bob", 1, later())).await.unwrap();
    let key = Identity::from_seed([1; 32]).public().signing;
    assert_eq!(server.server.names_of(&key), Ok(2));
    // Expired a while ago, not lapsed: kept.
    assert_eq!(server.server.collect_garbage(soon + grace - 1), Ok(0));
    // Lapsed: deleted.
    assert_eq!(server.server.collect_garbage(soon + grace), Ok(1));
    assert_eq!(client.lookup("alice").await, Err(NameError::NotFound("alice".into())));
    assert_eq!(server.server.names_of(&key), Ok(1));
    assert_eq!(server.server.stored_names(), Ok(1));
    // The freed name is anyone's.
    let taker = record(2, "alice", 1, later());
    client.register(&taker).await.unwrap();
    assert_eq!(client.lookup("alice").await, Ok(taker));
    server.shut_down().await;
}

// ---- Under load: connections and watches ----

/// The median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Times `n` lookups one after another.
async fn lookup_times(client: &TcpNameClient, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        assert_eq!(client.lookup("looked.up").await.map(|r| r.record.seq), Ok(1));
        times.push(started.elapsed());
    }
    times
}

/// 2,000 watches parked by four clients (four source addresses, 500 each) cost the
/// server four connections and leave a lookup as fast as on an idle server. (A thousand
/// parked watches, one connection each, once made a lookup wait 69 s in the listen
/// backlog.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_parked_watches_leave_lookups_fast() {
    let server = TestServer::start().await;
    let looker = server.client().bind_to("127.0.0.20".parse().unwrap());
    looker.register(&record(1, "looked.up", 1, later())).await.unwrap();
    let normal = lookup_times(&looker, 30).await;

    let mut watches = Vec::new();
    for source in 11..=14u8 {
        let client = server.client().bind_to(std::net::IpAddr::from([127, 0, 0, source]));
        for i in 0..500 {
            let client = client.clone();
            let name = format!("w{source}-{i}");
            watches.push(tokio::spawn(async move { client.watch(&name, 0, LONG_WAIT).await }));
        }
    }
    server.parked(2000).await;
    assert_eq!(server.server.open_connections(), 4, "one connection per client");

    let loaded = lookup_times(&looker, 30).await;
    let (normal_median, loaded_median) = (median(normal.clone()), median(loaded.clone()));
    let loaded_max = loaded.iter().max().copied().unwrap();
    println!(
        "lookup on an idle server: median {normal_median:?}; with 2,000 parked watches: median {loaded_median:?}, max {loaded_max:?}"
    );
    assert!(loaded_max < Duration::from_secs(1), "a lookup took {loaded_max:?}");
    assert!(loaded_median < (normal_median * 10).max(Duration::from_millis(20)), "{loaded_median:?} vs {normal_median:?}");

    // The watches still work: a registration answers its watcher at once.
    let woken = record(2, "w12-7", 1, later());
    looker.register(&woken).await.unwrap();
    let index = 500 + 7;
    let answered = tokio::time::timeout(PROMPT, watches.remove(index)).await.expect("watch not woken").unwrap();
    assert_eq!(answered, Ok(Some(woken)));
    for watch in watches {
        watch.abort();
    }
    // Aborted watches are cancelled: the server forgets them.
    server.parked(0).await;
    server.shut_down().await;
}

/// Flows of one endpoint that each watch their peer's name share one connection to the
/// name server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flows_of_one_client_watch_over_one_connection() {
    use msocket::{Endpoint, EndpointConfig};
    let server = TestServer::start().await;
    let names = |ip: &str| -> Arc<dyn NameService> { Arc::new(server.client().bind_to(ip.parse().unwrap())) };
    let endpoint = |names: Arc<dyn NameService>, seed: u8, ip: &str| {
        let mut config = EndpointConfig::new(names);
        config.local_ips = vec![ip.parse().unwrap()];
        config.connect_timeout = WAIT;
        Endpoint::new(Identity::from_seed([seed; 32]), config)
    };
    let listening = endpoint(names("127.0.0.31"), 31, "127.0.0.31");
    let mut listener = listening.listen("service.test").await.unwrap();
    let accepting = tokio::spawn(async move {
        let mut flows = Vec::new();
        for _ in 0..20 {
            flows.push(listener.accept().await.unwrap());
        }
        flows
    });
    let connecting = endpoint(names("127.0.0.32"), 32, "127.0.0.32");
    let mut flows = Vec::new();
    for _ in 0..20 {
        flows.push(tokio::time::timeout(WAIT, connecting.connect("service.test")).await.unwrap().unwrap());
    }
    let _accepted = tokio::time::timeout(WAIT, accepting).await.unwrap().unwrap();
    // Each connecting flow parks a watch on the listener's name.
    server.parked(20).await;
    // Registrations and lookups came and went on connections of their own; the watches
    // all ride one.
    let deadline = Instant::now() + WAIT;
    while server.server.open_connections() != 1 {
        assert!(Instant::now() < deadline, "{} connections open for 20 watching flows", server.server.open_connections());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(flows);
    server.shut_down().await;
}

/// Reads until the server closes; returns the messages it sent first.
async fn messages_until_closed(conn: &mut Conn) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    while let Some(body) = conn.receive().await {
        messages.push(body);
    }
    messages
}

/// The reviewer's flood: 1,153 connections from one address, each parking a watch. One
/// address gets its share (64 connections) and the rest are refused `Busy` at once,
/// with a reason; a client elsewhere is served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_watch_connections_from_one_address_is_refused_past_its_share() {
    let server = TestServer::start().await;
    let mut admitted = Vec::new();
    let mut refused = 0;
    for i in 0..1153 {
        let mut conn = server.raw().await;
        send(&mut conn, &watch(&format!("n{i}"), 0, LONG_WAIT)).await;
        match tagged_response(&mut conn).await {
            (1, Response::Watching) => admitted.push(conn),
            (0, Response::Refused { code: RefuseCode::Busy, current_seq: _, message }) => {
                assert!(message.contains("127.0.0.1 has 64 connections open"), "{message}");
                assert!(messages_until_closed(&mut conn).await.is_empty());
                refused += 1;
            }
            other => panic!("connection {i}: {other:?}"),
        }
    }
    assert_eq!((admitted.len(), refused), (64, 1153 - 64));
    assert_eq!(server.server.parked_watches(), 64);
    // Another address looks a name up at once.
    let other = server.client().bind_to("127.0.0.2".parse().unwrap());
    let started = Instant::now();
    assert_eq!(other.lookup("n1").await, Err(NameError::NotFound("n1".into())));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    // The flooding address itself hears why, as a typed error.
    let flooder = server.client().bind_to("127.0.0.1".parse().unwrap());
    assert!(matches!(flooder.lookup("n1").await, Err(NameError::Busy(m)) if m.contains("64 connections")));
    server.shut_down().await;
}

/// When the server holds its maximum of connections, a newcomer gets the oldest
/// connection of the address holding the most; when every address holds about as many,
/// it is refused `Busy` at once rather than left waiting.
#[tokio::test]
async fn a_full_server_makes_room_fairly_or_refuses_at_once() {
    use msocketd::name_server::ConnectionLimits;
    let limits = ConnectionLimits { max_connections: 10, connections_per_source: 8, max_watches: 100, watches_per_source: 100 };
    let server = TestServer::start_with(|s| s.with_connection_limits(limits)).await;
    let raw_from = |last: u8| {
        let addr = server.addr;
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from(([127, 0, 0, last], 0))).unwrap();
            let mut conn = Conn::new(socket.connect(addr).await.unwrap());
            send(&mut conn, &watch("parked", 0, LONG_WAIT)).await;
            assert_eq!(response(&mut conn).await, Response::Watching);
            conn
        }
    };
    // 127.0.0.41 holds eight, 127.0.0.42 two: the server is full.
    let mut heavy = Vec::new();
    for _ in 0..8 {
        heavy.push(raw_from(41).await);
    }
    let light = [raw_from(42).await, raw_from(42).await];
    server.parked(10).await;
    // A lookup from a third address: the heavy address's oldest connection makes room.
    let newcomer = server.client().bind_to("127.0.0.43".parse().unwrap());
    let started = Instant::now();
    assert_eq!(newcomer.lookup("x").await, Err(NameError::NotFound("x".into())));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(messages_until_closed(&mut heavy[0]).await.is_empty(), "the oldest heavy connection was not closed");
    server.parked(9).await;
    drop((heavy, light));
    server.shut_down().await;

    // Two addresses holding one each, in a server of two: a third is refused at once.
    let limits = ConnectionLimits { max_connections: 2, connections_per_source: 8, max_watches: 100, watches_per_source: 100 };
    let server = TestServer::start_with(|s| s.with_connection_limits(limits)).await;
    let mut held = Vec::new();
    for last in [51, 52] {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, last], 0))).unwrap();
        let mut conn = Conn::new(socket.connect(server.addr).await.unwrap());
        send(&mut conn, &watch("parked", 0, LONG_WAIT)).await;
        assert_eq!(response(&mut conn).await, Response::Watching);
        held.push(conn);
    }
    let refused = server.client().bind_to("127.0.0.53".parse().unwrap());
    let started = Instant::now();
    match refused.lookup("x").await {
        Err(NameError::Busy(m)) => assert!(m.contains("maximum of 2 connections"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(held);
    server.shut_down().await;
}

/// An address may park only so many watches; the next is refused `Busy` and the
/// connection goes on serving.
#[tokio::test]
async fn watches_past_an_addresss_share_are_refused() {
    use msocketd::name_server::ConnectionLimits;
    let limits = ConnectionLimits { watches_per_source: 10, ..ConnectionLimits::default() };
    let server = TestServer::start_with(|s| s.with_connection_limits(limits)).await;
    let client = server.client();
    let mut watches = Vec::new();
    for i in 0..10 {
        let client = client.clone();
        watches.push(tokio::spawn(async move { client.watch(&format!("n{i}"), 0, LONG_WAIT).await }));
    }
    server.parked(10).await;
    match client.watch("n10", 0, LONG_WAIT).await {
        Err(NameError::Busy(m)) => assert!(m.contains("10 watches parked"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A watch answered at once needs no place: it is served.
    let rec = record(1, "known", 1, later());
    client.register(&rec).await.unwrap();
    assert_eq!(client.watch("known", 0, LONG_WAIT).await, Ok(Some(rec)));
    for watch in watches {
        watch.abort();
    }
    server.parked(0).await;
    server.shut_down().await;
}

#[tokio::test]
async fn a_cancelled_watch_is_forgotten_and_ids_in_flight_cannot_be_reused() {
    let server = TestServer::start().await;
    let mut conn = server.raw().await;
    send(&mut conn, &Request::watch("alice", 0, LONG_WAIT).encode_tagged(5)).await;
    assert_eq!(tagged_response(&mut conn).await, (5, Response::Watching));
    server.parked(1).await;
    send(&mut conn, &Request::Cancel.encode_tagged(5)).await;
    server.parked(0).await;
    // Nothing more about 5; the connection serves on.
    send(&mut conn, &Request::Lookup("alice".into()).encode_tagged(6)).await;
    assert_eq!(tagged_response(&mut conn).await, (6, Response::NotFound));
    // An id still in flight is a protocol error: refused by its id, then closed.
    send(&mut conn, &Request::watch("bob", 0, LONG_WAIT).encode_tagged(7)).await;
    assert_eq!(tagged_response(&mut conn).await, (7, Response::Watching));
    send(&mut conn, &Request::Lookup("bob".into()).encode_tagged(7)).await;
    assert!(matches!(
        tagged_response(&mut conn).await,
        (7, Response::Refused { code: RefuseCode::Malformed, message, .. }) if message.contains("already in flight")
    ));
    assert!(closed(&mut conn).await);
    server.parked(0).await;
    server.shut_down().await;
}

/// Clients of protocol versions 1 and 2 (no channel) hear, in their own layout, that the
/// server speaks another version.
#[tokio::test]
async fn clients_of_older_versions_are_told_to_update() {
    let server = TestServer::start().await;
    // Version 1 Lookup("ab"): version, tag, name.
    let mut conn = server.tcp().await;
    write_message(&mut conn, &[1, 2, 0, 2, b'a', b'b']).await.unwrap();
    let body = tokio::time::timeout(WAIT, read_message(&mut conn)).await.unwrap().unwrap();
    // Version 1 Refused: version, tag 4, code 13 (a code it reports as a refusal), seq.
    assert_eq!(&body[..11], &[1, 4, 13, 0, 0, 0, 0, 0, 0, 0, 3]);
    let message = String::from_utf8_lossy(&body[13..]);
    assert!(message.contains("version 3") && message.contains("update"), "{message}");
    assert!(closed_silently(&mut conn).await);
    // Version 2 Lookup("ab") with id 5: answered by id.
    let mut conn = server.tcp().await;
    write_message(&mut conn, &[2, 2, 0, 0, 0, 5, 0, 2, b'a', b'b']).await.unwrap();
    let body = tokio::time::timeout(WAIT, read_message(&mut conn)).await.unwrap().unwrap();
    assert_eq!(&body[..15], &[2, 4, 0, 0, 0, 5, 13, 0, 0, 0, 0, 0, 0, 0, 3]);
    assert!(closed_silently(&mut conn).await);
    server.shut_down().await;
}

// ---- The authenticated channel ----

/// Which way a frame goes through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    ToServer,
    ToClient,
}

/// What a man in the middle does to a frame: (way, connection number, frame number on
/// that way, the frame) -> the frame it passes on.
type Tamper = Arc<dyn Fn(Way, usize, usize, Vec<u8>) -> Vec<u8> + Send + Sync>;

/// A man in the middle between clients and `server`: relays every connection frame by
/// frame through `tamper`, and logs which way each frame went.
async fn man_in_the_middle(server: SocketAddr, tamper: Tamper) -> (String, Arc<std::sync::Mutex<Vec<(usize, Way)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&log);
    tokio::spawn(async move {
        for conn in 0.. {
            let Ok((client, _)) = listener.accept().await else { return };
            let Ok(upstream) = TcpStream::connect(server).await else { return };
            let (from_client, to_client) = client.into_split();
            let (from_server, to_server) = upstream.into_split();
            for (way, mut from, mut to) in [(Way::ToServer, from_client, to_server), (Way::ToClient, from_server, to_client)] {
                let (tamper, log) = (Arc::clone(&tamper), Arc::clone(&seen));
                tokio::spawn(async move {
                    for frame in 0.. {
                        let Ok(body) = read_message(&mut from).await else { break };
                        log.lock().unwrap().push((conn, way));
                        if write_message(&mut to, &tamper(way, conn, frame, body)).await.is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown().await;
                });
            }
        }
    });
    (addr, log)
}

/// Flips one bit of byte `at` of frame `frame` going `way` (on every connection).
fn flip(way: Way, frame: usize, at: usize) -> Tamper {
    Arc::new(move |w, _, f, mut body| {
        if w == way && f == frame && at < body.len() {
            body[at] ^= 0x01;
        }
        body
    })
}

/// An error, and not one that could be read as an answer.
fn is_detected(outcome: &Result<SignedRecord, NameError>) -> bool {
    !matches!(outcome, Ok(_) | Err(NameError::NotFound(_)))
}

/// Any byte of the server's welcome (which carries the answer) altered on the way: the
/// client detects it, it never reads it as an answer or as "not found".
#[tokio::test]
async fn an_answer_altered_on_the_way_is_detected() {
    let server = TestServer::start().await;
    let alice = record(1, "alice", 1, later());
    server.client().register(&alice).await.unwrap();
    // How long the welcome is, for a lookup of alice and for one of a missing name.
    for (name, found) in [("alice", true), ("nobody", false)] {
        let lengths = Arc::new(std::sync::Mutex::new(Vec::new()));
        let measure = Arc::clone(&lengths);
        let (measuring, _) = man_in_the_middle(server.addr, Arc::new(move |way, _, _, body: Vec<u8>| {
            if way == Way::ToClient {
                measure.lock().unwrap().push(body.len());
            }
            body
        }))
        .await;
        assert_eq!(TcpNameClient::new(measuring, WAIT).lookup(name).await.is_ok(), found);
        let len = lengths.lock().unwrap()[0];
        for at in 0..len {
            let (proxy, _) = man_in_the_middle(server.addr, flip(Way::ToClient, 0, at)).await;
            let outcome = TcpNameClient::new(proxy, WAIT).lookup(name).await;
            assert!(is_detected(&outcome), "{name}, welcome byte {at}: {outcome:?}");
            if at >= 2 {
                assert!(matches!(outcome, Err(NameError::Unauthenticated { .. })), "{name}, welcome byte {at}: {outcome:?}");
            }
        }
    }
    server.shut_down().await;
}

/// A request altered on the way (the hello is not encrypted): the server answers another
/// question, and the client, whose transcript holds its own, refuses the answer.
#[tokio::test]
async fn a_request_altered_on_the_way_is_detected() {
    let server = TestServer::start().await;
    server.client().register(&record(1, "alice", 1, later())).await.unwrap();
    server.client().register(&record(2, "alicf", 1, later())).await.unwrap();
    // The hello: version, kind, the client's ephemeral key (32), then the request.
    let hello_len = 2 + 32 + Request::Lookup("alice".into()).encode().len();
    for at in 0..hello_len {
        let (proxy, _) = man_in_the_middle(server.addr, flip(Way::ToServer, 0, at)).await;
        let outcome = TcpNameClient::new(proxy, Duration::from_secs(2)).lookup("alice").await;
        assert!(is_detected(&outcome), "hello byte {at}: {outcome:?}");
        if at >= 2 {
            assert!(matches!(outcome, Err(NameError::Unauthenticated { .. })), "hello byte {at}: {outcome:?}");
        }
    }
    // The last byte turns "alice" into "alicd"... and one bit more into "alicf", a name
    // that exists: the client still refuses the (genuine) record of the other name.
    let (proxy, _) = man_in_the_middle(server.addr, Arc::new(move |w, _, f, mut body: Vec<u8>| {
        if w == Way::ToServer && f == 0 {
            let last = body.len() - 1;
            body[last] = b'f';
        }
        body
    }))
    .await;
    let outcome = TcpNameClient::new(proxy, WAIT).lookup("alice").await;
    assert!(matches!(outcome, Err(NameError::Unauthenticated { .. })), "{outcome:?}");
    server.shut_down().await;
}

/// Answers substituted by a man in the middle: a forged `NotFound` or `Ok` in clear, and an
/// old answer replayed (the stale record of a server that moved, the `Ok` of an earlier
/// registration). All are detected; none is believed.
#[tokio::test]
async fn substituted_and_replayed_answers_are_detected() {
    let server = TestServer::start().await;
    let client = server.client();
    client.register(&record(1, "alice", 1, later())).await.unwrap();

    // Forged in clear: "not found", "ok".
    for forged in [Response::NotFound, Response::Ok] {
        let body = forged.encode();
        let (proxy, _) = man_in_the_middle(server.addr, Arc::new(move |w, _, _, frame| if w == Way::ToClient { body.clone() } else { frame })).await;
        let via = TcpNameClient::new(proxy, WAIT);
        let looked_up = via.lookup("alice").await;
        assert!(matches!(looked_up, Err(NameError::Unauthenticated { .. })), "{forged:?}: {looked_up:?}");
        // (The registration reached the server; the client cannot know, and says so.)
        let registered = via.register(&record(3, "carol", 1, later())).await;
        assert!(matches!(registered, Err(NameError::Unauthenticated { .. })), "{forged:?}: {registered:?}");
    }

    // Replayed: the proxy keeps the welcome of its first connection and serves it on the
    // later ones, after alice moved to seq 2.
    let kept: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
    let keep = Arc::clone(&kept);
    let (proxy, _) = man_in_the_middle(server.addr, Arc::new(move |w, conn, f, frame| {
        if w != Way::ToClient || f != 0 {
            return frame;
        }
        let mut kept = keep.lock().unwrap();
        if conn == 0 {
            *kept = Some(frame.clone());
            frame
        } else {
            kept.clone().unwrap()
        }
    }))
    .await;
    let via = TcpNameClient::new(proxy, WAIT);
    assert!(matches!(via.lookup("alice").await, Ok(r) if r.record.seq == 1));
    let moved = record(1, "alice", 2, later());
    client.register(&moved).await.unwrap();
    let stale = via.lookup("alice").await;
    assert!(matches!(stale, Err(NameError::Unauthenticated { .. })), "the stale record was served: {stale:?}");
    // The direct path sees the move.
    assert_eq!(client.lookup("alice").await, Ok(moved));
    server.shut_down().await;
}

/// On the shared watch connection, a frame after the welcome altered on the way fails the
/// watch (and every other on that connection) instead of being read.
#[tokio::test]
async fn an_altered_watch_answer_is_detected() {
    let server = TestServer::start().await;
    // Frame 0 to the client is the welcome (Watching), frame 1 the answer.
    let (proxy, _) = man_in_the_middle(server.addr, flip(Way::ToClient, 1, 7)).await;
    let watcher = TcpNameClient::new(proxy, WAIT);
    let watching = tokio::spawn(async move { watcher.watch("alice", 0, LONG_WAIT).await });
    server.parked(1).await;
    server.client().register(&record(1, "alice", 1, later())).await.unwrap();
    let outcome = tokio::time::timeout(PROMPT, watching).await.expect("watch not answered").unwrap();
    assert!(matches!(outcome, Err(NameError::Unauthenticated { .. })), "{outcome:?}");
    server.shut_down().await;
}

/// A client that pins the server's key (`host:port#FINGERPRINT`) works with the server
/// and refuses an impostor holding another key, naming both fingerprints; an unpinned
/// client takes whatever key answers (its records are still checked).
#[tokio::test]
async fn a_pinned_client_refuses_an_impostor() {
    let server = TestServer::start().await;
    let fingerprint = server.server.public_key().fingerprint();
    let pinned = TcpNameClient::new(format!("{}#{fingerprint}", server.addr), WAIT);
    let alice = record(1, "alice", 1, later());
    pinned.register(&alice).await.unwrap();
    assert_eq!(pinned.lookup("alice").await, Ok(alice.clone()));
    assert_eq!(pinned.watch("alice", 0, LONG_WAIT).await, Ok(Some(alice)));
    // All 64 digits pin as well.
    let full: String = {
        let key = server.server.public_key();
        msocket_test_support::sha256(&[key.signing, key.noise].concat()).iter().map(|b| format!("{b:02x}")).collect()
    };
    assert!(full.starts_with(&fingerprint));
    let long = TcpNameClient::new(format!("{}#{full}", server.addr), WAIT);
    assert!(long.lookup("alice").await.is_ok());

    // An impostor (another key) at another address, answering "not found".
    let (impostor, task) = fake_server(Response::NotFound).await;
    let fooled = TcpNameClient::new(format!("{impostor}#{fingerprint}"), WAIT);
    match fooled.lookup("alice").await {
        Err(NameError::ServerKeyMismatch { server: s, expected, found }) => {
            assert_eq!((s.as_str(), expected.as_str()), (impostor.as_str(), fingerprint.as_str()));
            assert_eq!(found, Identity::from_seed([77; 32]).public().fingerprint());
            let shown = NameError::ServerKeyMismatch { server: s, expected, found: found.clone() }.to_string();
            assert!(shown.contains(&fingerprint) && shown.contains(&found), "{shown}");
        }
        other => panic!("{other:?}"),
    }
    task.await.unwrap();
    // Unpinned, the impostor's channel is accepted (and its answer is all it can give).
    let (impostor, task) = fake_server(Response::NotFound).await;
    assert_eq!(TcpNameClient::new(impostor, WAIT).lookup("alice").await, Err(NameError::NotFound("alice".into())));
    task.await.unwrap();
    // A fingerprint that does not parse is refused, never ignored.
    let bad = TcpNameClient::new(format!("{}#xyz", server.addr), WAIT);
    assert!(matches!(bad.lookup("alice").await, Err(NameError::BadUrl { .. })));
    server.shut_down().await;
}

/// The channel costs no round trip: a lookup is one flight to the server (the hello with
/// the request) and one back (the welcome with the answer), as in clear.
#[tokio::test]
async fn a_lookup_takes_one_round_trip() {
    let server = TestServer::start().await;
    server.client().register(&record(1, "alice", 1, later())).await.unwrap();
    let (proxy, log) = man_in_the_middle(server.addr, Arc::new(|_, _, _, body| body)).await;
    let client = TcpNameClient::new(proxy, WAIT);
    assert!(client.lookup("alice").await.is_ok());
    assert_eq!(client.lookup("nobody").await, Err(NameError::NotFound("nobody".into())));
    let log = log.lock().unwrap().clone();
    for conn in 0..2 {
        let ways: Vec<Way> = log.iter().filter(|(c, _)| *c == conn).map(|(_, w)| *w).collect();
        assert_eq!(ways, [Way::ToServer, Way::ToClient], "connection {conn}");
    }
    server.shut_down().await;
}
