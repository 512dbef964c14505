//! End-to-end security tests over real loopback sockets: name records that lie, joins by
//! strangers, replayed and tampered records, malformed subflow openings. Every data check
//! compares SHA-256 of what was sent and what was received, and every attack is followed by
//! proof that the attacked endpoint still serves honest peers.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use msocket::unstable::name_protocol::secure::ServerConnection;
use msocket::unstable::name_protocol::{Request, Response};
use msocket::name::{MemoryNameService, NameError, NameService, TcpNameClient};
use msocket::trust::{PinFile, PinStore};
use msocket::{ConnectFailure, Endpoint, Error, Identity, Listener};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAGIC: &[u8] = b"MSKT";
/// The clear header's version.
const VERSION: u8 = 3;
/// A JOIN's body: join id, sequence, resume point, MAC, mac1.
const JOIN_BODY: usize = 16 + 8 + 8 + 16 + 16;

fn subflow_header(version: u8, kind: u8) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.push(version);
    h.push(kind);
    h
}

/// A JOIN with identifier `id`, sequence `seq` and the given MAC, and a mac1 made with
/// the listener's Noise key when the sender knows it (`None`: a scanner's guess).
fn join_bytes(id: [u8; 16], seq: u64, mac: [u8; 16], listener_noise: Option<&[u8; 32]>) -> Vec<u8> {
    use hmac::Mac as _;
    use sha2::Digest as _;
    let mut body = id.to_vec();
    body.extend_from_slice(&seq.to_be_bytes());
    body.extend_from_slice(&0u64.to_be_bytes()); // resume point
    body.extend_from_slice(&mac);
    let mac1 = match listener_noise {
        Some(noise) => {
            let key = sha2::Sha256::new().chain_update(b"msocket join mac1").chain_update(noise).finalize();
            let mut m = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&key).unwrap();
            m.update(&body);
            m.finalize().into_bytes()[..16].to_vec()
        }
        None => data(16, seq).to_vec(),
    };
    let mut out = subflow_header(VERSION, 2);
    out.extend_from_slice(&body);
    out.extend_from_slice(&mac1);
    out
}

/// Reads until the peer closes the connection (EOF or reset); returns what arrived first.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    within(10, "server closes the raw connection", async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("unexpected read error {e}"),
            }
        }
    })
    .await;
    got
}

/// Parses a JOIN refusal: (code, reason). An "unknown flow" refusal (code 1) carries the
/// refusing endpoint's 64-byte signature after the reason.
fn parse_refusal(bytes: &[u8]) -> (u8, String) {
    assert!(bytes.len() >= 2, "no refusal received: {bytes:?}");
    let (code, len) = (bytes[0], bytes[1] as usize);
    assert_ne!(code, 0, "a join without the key was accepted");
    let signature = if code == 1 { 64 } else { 0 };
    assert_eq!(bytes.len(), 2 + len + signature, "refusal then close, nothing else: {bytes:?}");
    (code, String::from_utf8_lossy(&bytes[2..2 + len]).into_owned())
}

/// Proves `listener` still serves: a fresh client opens a flow and bytes cross both ways.
async fn still_serves(names: &Arc<dyn NameService>, listener: &mut Listener, seed: u8, host: u8) {
    let client = endpoint(names, seed, host);
    let name = listener.name().to_string();
    let (c, s) = within(15, "honest client pairs", pair(&client, listener, &name)).await;
    round_trip(c, s, 300_000, 100_000, seed as u64).await;
}

/// A TCP listener that must never be connected to.
fn honeypot(host: u8) -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind(SocketAddr::new(lo(host), 0)).unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

fn assert_untouched(honeypot: &std::net::TcpListener) {
    match honeypot.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("a forged record was used: {from} connected to its address"),
        Err(e) => panic!("honeypot accept: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_another_identitys_keys_fails_and_the_listener_keeps_serving() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 1, 51);
    let mut listener = server.listen("keys.test").await.unwrap();

    // The misled client's name service holds a validly signed record for the name that
    // points at the real listener but carries an impostor's keys.
    let impostor = Identity::from_seed([77; 32]);
    let lying: Arc<dyn NameService> = Arc::new(MemoryNameService::new());
    lying.register(&signed_record(&impostor, "keys.test", server.published_addrs(), 1)).await.unwrap();
    let misled = endpoint_with(&lying, 2, 52, |c| c.connect_timeout = Duration::from_secs(2));

    let started = Instant::now();
    let err = within(10, "misled connect", misled.connect("keys.test")).await.unwrap_err();
    let took = started.elapsed();
    eprintln!("misled connect failed after {took:?}: {err}");
    match &err {
        Error::Unreachable { name, tried, last, .. } => {
            assert_eq!(name, "keys.test");
            assert_eq!(tried, &server.published_addrs());
            // The real listener cannot read a handshake for another key and closes.
            assert!(
                matches!(last, ConnectFailure::HandshakeClosed { addr } if tried.contains(addr)),
                "the error should say the handshake failed: {last:?}"
            );
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(took < Duration::from_secs(4), "connect_timeout not honoured: {took:?}");

    // No flow was accepted for the impostor's handshakes, and the listener still serves.
    assert!(listener_is_empty(&mut listener), "a flow was accepted for a handshake with the wrong keys");
    still_serves(&names, &mut listener, 3, 53).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_record_is_refused_by_the_memory_service_and_never_used() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 4, 54);
    let mut listener = server.listen("forge.test").await.unwrap();
    let (pot, pot_addr) = honeypot(55);
    let attacker = Identity::from_seed([66; 32]);

    // The real record, re-pointed at the attacker's address and keys: the signature breaks.
    let mut forged = names.lookup("forge.test").await.unwrap();
    forged.record.addrs = vec![pot_addr];
    forged.record.noise_key = attacker.public().noise;
    forged.record.seq += 1_000;
    assert_eq!(names.register(&forged).await, Err(NameError::BadSignature));
    // A fresh name under a record with a corrupted signature.
    let mut fresh = signed_record(&attacker, "fresh-forge.test", vec![pot_addr], 1);
    fresh.signature[0] ^= 1;
    assert_eq!(names.register(&fresh).await, Err(NameError::BadSignature));

    let client = endpoint(&names, 5, 56);
    match within(10, "connect to the unregistered name", client.connect("fresh-forge.test")).await {
        Err(Error::Name(NameError::NotFound(n))) => assert_eq!(n, "fresh-forge.test"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // The name still leads to the real server.
    assert_eq!(names.lookup("forge.test").await.unwrap().record.addrs, server.published_addrs());
    let name = "forge.test";
    let (c, s) = within(10, "pair", pair(&client, &mut listener, name)).await;
    assert_eq!(c.peer_key(), server.public().noise);
    round_trip(c, s, 200_000, 66_666, 4).await;
    assert_untouched(&pot);
}

/// A name server (speaking the protocol properly, with a key of its own) that answers
/// every lookup with a record it forged for the name asked.
async fn lying_name_server(ip: IpAddr, pot: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let attacker = Identity::from_seed([99; 32]);
    let victim = Identity::from_seed([98; 32]);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let (attacker, victim) = (attacker.clone(), victim.clone());
            tokio::spawn(async move {
                let mut conn = ServerConnection::new(s, attacker.clone());
                let Ok((id, request)) = conn.receive().await else { return };
                let response = match request {
                    Request::Lookup(name) if name.starts_with("badsig") => {
                        // The victim's record, re-pointed at the attacker: signature broken.
                        let mut r = signed_record(&victim, &name, vec!["192.0.2.7:7".parse().unwrap()], 5);
                        r.record.addrs = vec![pot];
                        r.record.noise_key = attacker.public().noise;
                        Response::Record(r)
                    }
                    // A validly signed record, but for another name.
                    Request::Lookup(_) => Response::Record(signed_record(&attacker, "other.test", vec![pot], 5)),
                    _ => Response::Ok,
                };
                let _ = conn.answer(id, &response).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_name_client_refuses_forged_and_misnamed_records() {
    init_tracing();
    let (pot, pot_addr) = honeypot(57);
    let server = lying_name_server(lo(58), pot_addr).await;
    let names: Arc<dyn NameService> = Arc::new(TcpNameClient::new(server.to_string(), Duration::from_secs(2)));

    assert_eq!(names.lookup("badsig.test").await, Err(NameError::BadSignature));
    assert_eq!(names.lookup("victim.test").await, Err(NameError::BadSignature));

    let client = endpoint(&names, 6, 59);
    for name in ["badsig.test", "victim.test"] {
        match within(10, "connect", client.connect(name)).await {
            Err(Error::Name(NameError::BadSignature)) => {}
            other => panic!("{name}: expected a bad-signature error, got {other:?}"),
        }
    }
    assert_untouched(&pot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_records_are_refused() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 7, 60);
    let mut listener = server.listen("stale.test").await.unwrap();
    let current = names.lookup("stale.test").await.unwrap();
    let id = Identity::from_seed([7; 32]);
    let elsewhere = vec!["192.0.2.9:9".parse().unwrap()];
    for seq in [1, current.record.seq - 1, current.record.seq] {
        match names.register(&signed_record(&id, "stale.test", elsewhere.clone(), seq)).await {
            Err(NameError::Stale { current: c, offered }) => {
                assert_eq!((c, offered), (current.record.seq, seq));
            }
            other => panic!("seq {seq}: expected Stale, got {other:?}"),
        }
    }
    assert_eq!(names.lookup("stale.test").await.unwrap(), current, "a refused record replaced the current one");
    still_serves(&names, &mut listener, 8, 61).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_keys_after_the_first_lookup_fail_with_key_changed() {
    init_tracing();
    let test_names = TestNames::new();
    let names = test_names.dyn_arc();
    let server = endpoint(&names, 9, 62);
    let mut listener = server.listen("pin.test").await.unwrap();
    let client = endpoint(&names, 10, 63);
    let (c, s) = within(10, "first pair", pair(&client, &mut listener, "pin.test")).await;
    round_trip(c, s, 100_000, 33_333, 9).await;

    // A compromised name service now serves a validly signed record under other keys.
    let usurper = Identity::from_seed([88; 32]);
    test_names.lie(signed_record(&usurper, "pin.test", server.published_addrs(), u64::MAX / 2));
    match within(10, "connect after the keys changed", client.connect("pin.test")).await {
        Err(Error::KeyChanged { name, pinned, offered }) => {
            assert_eq!(name, "pin.test");
            assert_eq!(pinned, server.public().fingerprint());
            assert_eq!(offered, usurper.public().fingerprint());
        }
        other => panic!("expected KeyChanged, got {other:?}"),
    }
}

/// A client whose pins live in `pins` (a file shared across "runs", like the CLI's).
fn client_with_pins(names: &Arc<dyn NameService>, seed: u8, host: u8, pins: &std::path::Path) -> Endpoint {
    let pins = Arc::new(PinFile::new(pins));
    endpoint_with(names, seed, host, |c| c.pins = pins)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_name_service_cannot_redirect_a_pinned_or_fingerprinted_name() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("pins");
    let test_names = TestNames::new();
    let names = test_names.dyn_arc();
    let server = endpoint(&names, 30, 90);
    let mut listener = server.listen("alice.box").await.unwrap();
    let first_run = client_with_pins(&names, 31, 91, &pins);
    let (c, s) = within(10, "first run", pair(&first_run, &mut listener, "alice.box")).await;
    round_trip(c, s, 10_000, 10_000, 1).await;
    drop(first_run);

    // The impostor listens under the name with its own keys, and the name service (now
    // compromised, or another one) serves its record.
    let impostor_names = memory_names();
    let impostor = endpoint(&impostor_names, 32, 92);
    let mut impostor_listener = impostor.listen("alice.box").await.unwrap();
    test_names.lie(impostor_names.lookup("alice.box").await.unwrap());

    // A later run of the client with the same pin file refuses, naming both keys and
    // the way to accept the new one.
    let second_run = client_with_pins(&names, 33, 93, &pins);
    match within(10, "second run", second_run.connect("alice.box")).await {
        Err(e @ Error::KeyChanged { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&server.public().fingerprint()), "{text}");
            let accept = format!("alice.box#{}", impostor.public().fingerprint());
            assert!(text.contains(&accept), "{text}");
        }
        other => panic!("expected KeyChanged, got {other:?}"),
    }
    // A client without pins that names the key it expects refuses too.
    let fresh = endpoint(&names, 34, 94);
    let with_key = format!("alice.box#{}", server.public().fingerprint());
    match within(10, "named key", fresh.connect(&with_key)).await {
        Err(Error::WrongKey { name, expected, offered }) => {
            assert_eq!(name, "alice.box");
            assert_eq!(expected, server.public().fingerprint());
            assert_eq!(offered, impostor.public().fingerprint());
        }
        other => panic!("expected WrongKey, got {other:?}"),
    }
    assert!(listener_is_empty(&mut impostor_listener), "the impostor got a flow");
    // The pin is unchanged by the refusals.
    let pin = PinFile::new(&pins).get("alice.box").unwrap().unwrap();
    assert_eq!(pin.keys, server.public());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naming_the_new_key_accepts_a_peers_new_keys_and_repins_them() {
    init_tracing();
    let test_names = TestNames::new();
    let names = test_names.dyn_arc();
    let old = endpoint(&names, 35, 95);
    let mut old_listener = old.listen("bob.tv").await.unwrap();
    let client = endpoint(&names, 36, 96);
    let (c, s) = within(10, "old keys", pair(&client, &mut old_listener, "bob.tv")).await;
    round_trip(c, s, 1_000, 1_000, 2).await;

    // Bob reinstalled: new keys under the same name.
    let new_names = memory_names();
    let new = endpoint(&new_names, 37, 97);
    let mut new_listener = new.listen("bob.tv").await.unwrap();
    test_names.lie(new_names.lookup("bob.tv").await.unwrap());
    assert!(matches!(client.connect("bob.tv").await, Err(Error::KeyChanged { .. })));
    let accept = format!("bob.tv#{}", new.public().fingerprint());
    let (c, s) = within(10, "named new key", pair(&client, &mut new_listener, &accept)).await;
    round_trip(c, s, 1_000, 1_000, 3).await;
    // From now on the plain name means the new keys.
    let (c, s) = within(10, "plain name after", pair(&client, &mut new_listener, "bob.tv")).await;
    round_trip(c, s, 1_000, 1_000, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_older_than_one_already_seen_is_refused() {
    init_tracing();
    let test_names = TestNames::new();
    let names = test_names.dyn_arc();
    let server = endpoint(&names, 38, 98);
    let mut listener = server.listen("carol.tv").await.unwrap();
    let old = names.lookup("carol.tv").await.unwrap();
    server.set_local_ips(vec![lo(99)]).await.unwrap();
    let client = endpoint(&names, 39, 100);
    let (c, s) = within(10, "after the move", pair(&client, &mut listener, "carol.tv")).await;
    round_trip(c, s, 1_000, 1_000, 5).await;
    let current = names.lookup("carol.tv").await.unwrap().record.seq;
    assert!(current > old.record.seq);

    // The name service replays the record from before the move (validly signed).
    test_names.lie(old.clone());
    match within(10, "rolled back", client.connect("carol.tv")).await {
        Err(Error::StaleRecord { name, seen, offered }) => {
            assert_eq!((name.as_str(), seen, offered), ("carol.tv", current, old.record.seq));
        }
        other => panic!("expected StaleRecord, got {other:?}"),
    }
}

/// A lookup answered with the record before the one a watch already delivered (the peer
/// re-published while the answer was on its way) is not an attack: it is asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_overtaken_by_a_newer_record_is_asked_again() {
    init_tracing();
    let test_names = TestNames::new();
    let names = test_names.dyn_arc();
    let server = endpoint(&names, 40, 101);
    let mut listener = server.listen("dave.tv").await.unwrap();
    let old = names.lookup("dave.tv").await.unwrap();
    server.set_local_ips(vec![lo(102)]).await.unwrap();
    let client = endpoint(&names, 41, 103);
    let (c, s) = within(10, "first flow", pair(&client, &mut listener, "dave.tv")).await;
    round_trip(c, s, 1_000, 1_000, 6).await;
    test_names.serve_late_once(old);
    let (c, s) = within(10, "second flow", pair(&client, &mut listener, "dave.tv")).await;
    round_trip(c, s, 1_000, 1_000, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_with_guessed_or_stolen_flow_ids_are_refused_and_the_flow_is_unaffected() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 11, 64);
    let client = endpoint(&names, 12, 65);
    let mut listener = server.listen("join.test").await.unwrap();
    let (mut c, mut s) = within(10, "pair", pair(&client, &mut listener, "join.test")).await;
    let target = server.published_addrs()[0];

    // Some bytes first, so the flow is in use when attacked.
    let first = data(200_000, 11);
    within(10, "first write", c.write_all(&first)).await.unwrap();
    let mut got = vec![0u8; first.len()];
    within(10, "first read", s.read_exact(&mut got)).await.unwrap();
    assert_eq!(sha256(&got), sha256(&first));
    let received_before = s.stats().bytes_received;

    // A scanner that does not know the server's key gets no answer at all (no signature
    // that would tell it whose host this is).
    let noise = server.public().noise;
    for seed in 0..4u64 {
        let mut raw = TcpStream::connect(target).await.unwrap();
        let id: [u8; 16] = data(16, 1000 + seed).try_into().unwrap();
        raw.write_all(&join_bytes(id, 1, [0; 16], None)).await.unwrap();
        assert!(read_until_closed(&mut raw).await.is_empty(), "a scanner got an answer");
    }
    // Guessed identifiers from someone who knows the key: the server knows no such flow.
    for seed in 0..4u64 {
        let mut raw = TcpStream::connect(target).await.unwrap();
        let id: [u8; 16] = data(16, 1000 + seed).try_into().unwrap();
        raw.write_all(&join_bytes(id, 1, [0; 16], Some(&noise))).await.unwrap();
        let (code, reason) = parse_refusal(&read_until_closed(&mut raw).await);
        assert_eq!(code, 1, "guessed id: {reason}");
    }

    // The identifiers of the client's next joins (as seen on the wire) with MACs made up
    // without the key, including one with the highest join sequence: refused, and they must
    // not poison the flow's join sequence.
    for (seq, mac_seed, code) in [(1u64, 1u64, 2u8), (2, 2, 2), (u64::MAX, 3, 1)] {
        let stolen = c.join_id_for_tests(seq);
        assert_eq!(stolen, s.join_id_for_tests(seq));
        let mut raw = TcpStream::connect(target).await.unwrap();
        let mac: [u8; 16] = data(16, mac_seed).try_into().unwrap();
        raw.write_all(&join_bytes(stolen, seq, mac, Some(&noise))).await.unwrap();
        let mut answer = [0u8; 2];
        within(5, "refusal", raw.read_exact(&mut answer)).await.unwrap();
        assert_eq!(answer[0], code, "stolen id, seq {seq}: expected refusal code {code}");
        let mut reason = vec![0u8; answer[1] as usize];
        raw.read_exact(&mut reason).await.unwrap();
        if code == 1 {
            let mut signature = [0u8; 64];
            raw.read_exact(&mut signature).await.unwrap();
        }
        // Garbage shaped like sealed records after the refusal goes nowhere: the server
        // has closed the connection.
        let mut junk = 60u16.to_be_bytes().to_vec();
        junk.extend_from_slice(&7u64.to_be_bytes());
        junk.extend_from_slice(&data(60, seq));
        let _ = raw.write_all(&junk).await;
        assert!(read_until_closed(&mut raw).await.is_empty(), "bytes after a refusal");
    }

    assert_eq!(s.paths().len(), 1, "a stranger's subflow was attached");
    assert_eq!(c.paths().len(), 1);
    assert_eq!(s.stats().bytes_received, received_before, "a stranger's bytes reached the flow");

    // The real client can still join after a move: the forged seq u64::MAX was not recorded.
    let mut events = s.events();
    client.set_local_ips(vec![lo(66)]).await.unwrap();
    let second = data(500_000, 12);
    within(10, "second write", c.write_all(&second)).await.unwrap();
    let mut got = vec![0u8; second.len()];
    within(15, "second read after the rejoin", s.read_exact(&mut got)).await.unwrap();
    assert_eq!(sha256(&got), sha256(&second));
    let mut rejoined = false;
    while let Some(ev) = events.try_next() {
        if let msocket::FlowEvent::PathAdded { remote, .. } = ev {
            rejoined |= remote.ip() == lo(66);
        }
    }
    assert!(rejoined, "the client's new subflow never joined");
    round_trip(c, s, 100_000, 33_333, 13).await;
}

/// What the record-level proxy does to the first connection's client → server records.
#[derive(Clone, Copy, PartialEq)]
enum Mischief {
    /// Re-sends copies of earlier records.
    Replay,
    /// Flips one bit in one record.
    Tamper,
}

struct Proxy {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    injected: Arc<AtomicUsize>,
    /// The opening (header and body) of every JOIN that passed, as an observer keeps it.
    joins: tokio::sync::watch::Receiver<Vec<Vec<u8>>>,
}

/// A man in the middle that understands the framing (not the crypto) of subflows.
async fn proxy(ip: IpAddr, target: SocketAddr, mischief: Option<Mischief>) -> Proxy {
    let l = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let injected = Arc::new(AtomicUsize::new(0));
    let (seen, joins) = tokio::sync::watch::channel(Vec::new());
    let seen = Arc::new(seen);
    let (conns, inj) = (connections.clone(), injected.clone());
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = l.accept().await else { return };
            let index = conns.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(target).await else { return };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
                let _ = cw.shutdown().await;
            });
            let (inj, seen) = (inj.clone(), seen.clone());
            tokio::spawn(async move {
                let mischief = mischief.filter(|_| index == 0);
                let _ = pump_records(&mut cr, &mut sw, mischief, &inj, &seen).await;
                let _ = sw.shutdown().await;
            });
        }
    });
    Proxy { addr, connections, injected, joins }
}

async fn pump_records(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    mischief: Option<Mischief>,
    injected: &AtomicUsize,
    joins: &tokio::sync::watch::Sender<Vec<Vec<u8>>>,
) -> std::io::Result<()> {
    let mut header = [0u8; 6];
    from.read_exact(&mut header).await?;
    to.write_all(&header).await?;
    if header[5] == 1 {
        let len = from.read_u16().await?;
        let mut msg = vec![0u8; len as usize];
        from.read_exact(&mut msg).await?;
        to.write_u16(len).await?;
        to.write_all(&msg).await?;
    } else {
        let mut join = [0u8; JOIN_BODY];
        from.read_exact(&mut join).await?;
        to.write_all(&join).await?;
        joins.send_modify(|seen| seen.push([&header[..], &join[..]].concat()));
    }
    let mut first_data: Option<Vec<u8>> = None;
    let mut data_records = 0;
    loop {
        let mut rec = vec![0u8; 10];
        from.read_exact(&mut rec).await?;
        let len = u16::from_be_bytes([rec[0], rec[1]]) as usize;
        rec.resize(10 + len, 0);
        from.read_exact(&mut rec[10..]).await?;
        let is_data = len > 4096;
        if is_data {
            data_records += 1;
        }
        match mischief {
            Some(Mischief::Tamper) if is_data && data_records == 5 => {
                rec[10 + len / 2] ^= 0x20;
                injected.fetch_add(1, Ordering::SeqCst);
                to.write_all(&rec).await?;
            }
            Some(Mischief::Replay) if is_data && (data_records == 5 || data_records == 12) => {
                to.write_all(&rec).await?;
                // The same record again at once, and the first data record much later.
                to.write_all(&rec).await?;
                to.write_all(first_data.as_ref().unwrap()).await?;
                injected.fetch_add(2, Ordering::SeqCst);
            }
            _ => to.write_all(&rec).await?,
        }
        if is_data && first_data.is_none() {
            first_data = Some(rec);
        }
    }
}

/// A server, a proxy in front of it, and a client whose name service points at the proxy
/// (with a record the test signs with the server's key, so the handshake still succeeds).
async fn through_proxy(seed: u8, host: u8, mischief: Mischief) -> (Endpoint, Listener, Endpoint, Proxy, String) {
    let names = memory_names();
    let server = endpoint(&names, seed, host);
    let name = format!("mitm{seed}.test");
    let listener = server.listen(&name).await.unwrap();
    let proxy = proxy(lo(host + 1), server.published_addrs()[0], Some(mischief)).await;
    let via: Arc<dyn NameService> = Arc::new(MemoryNameService::new());
    let server_id = Identity::from_seed([seed; 32]);
    via.register(&signed_record(&server_id, &name, vec![proxy.addr], 1)).await.unwrap();
    let client = endpoint(&via, seed + 1, host + 2);
    (server, listener, client, proxy, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_records_never_reach_the_application() {
    init_tracing();
    let (_server, mut listener, client, proxy, name) = through_proxy(13, 70, Mischief::Replay).await;
    let (c, s) = within(10, "pair", pair(&client, &mut listener, &name)).await;
    let mut s_events = s.events();
    let sent = data(3_000_000, 13);
    let writer = tokio::spawn(send_all(c, sent.clone()));
    let (got, s) = within(30, "read", read_all(s)).await;
    let c = within(30, "writer", writer).await.unwrap();
    assert_eq!(proxy.injected.load(Ordering::SeqCst), 4, "the proxy did not replay");
    assert_eq!(sha256(&got), sha256(&sent));
    // The copies authenticate (they are genuine records) but were dropped by the replay
    // window before the flow saw them: no duplicate payload, and no subflow was lost.
    let (cs, ss) = (c.stats(), s.stats());
    assert_eq!(cs.bytes_retransmitted, 0, "retransmissions would blur the duplicate count");
    assert_eq!(ss.duplicate_bytes_received, 0, "replayed DATA reached the flow");
    assert_eq!(ss.subflows_lost, 0);
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 1);
    while let Some(ev) = s_events.try_next() {
        assert!(!matches!(ev, msocket::FlowEvent::PathLost { .. }), "replays cost a subflow: {ev:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_record_costs_its_subflow_and_the_flow_heals() {
    init_tracing();
    let (_server, mut listener, client, proxy, name) = through_proxy(15, 74, Mischief::Tamper).await;
    let (c, s) = within(10, "pair", pair(&client, &mut listener, &name)).await;
    let sent = data(3_000_000, 15);
    let writer = tokio::spawn(send_all(c, sent.clone()));
    let (got, s) = within(30, "read", read_all(s)).await;
    within(30, "writer", writer).await.unwrap();
    assert_eq!(proxy.injected.load(Ordering::SeqCst), 1, "the proxy did not tamper");
    assert_eq!(sha256(&got), sha256(&sent), "tampered bytes reached the application");
    assert!(s.stats().subflows_lost >= 1, "the tampered subflow was not dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_join_replayed_is_refused_and_the_flow_is_unaffected() {
    init_tracing();
    // The client has two addresses, so its standby subflow joins through the observer,
    // which keeps a copy of the JOIN (sequence numbers may arrive out of order, but none
    // is accepted twice).
    let names = memory_names();
    let server = endpoint(&names, 19, 82);
    let mut listener = server.listen("capture.test").await.unwrap();
    let target = server.published_addrs()[0];
    let observer = proxy(lo(83), target, None).await;
    let via: Arc<dyn NameService> = Arc::new(MemoryNameService::new());
    via.register(&signed_record(&Identity::from_seed([19; 32]), "capture.test", vec![observer.addr], 1)).await.unwrap();
    let client = endpoint_with(&via, 20, 84, |cfg| cfg.local_ips = vec![lo(84), lo(85)]);
    let (mut c, mut s) = within(10, "pair", pair(&client, &mut listener, "capture.test")).await;
    let mut events = c.events();
    if c.paths().len() < 2 {
        wait_event(&mut events, "the standby joins", |ev| matches!(ev, msocket::FlowEvent::PathAdded { .. })).await;
    }
    let mut joins = observer.joins.clone();
    let captured = within(10, "the observer sees the JOIN", joins.wait_for(|j| !j.is_empty())).await.unwrap()[0].clone();
    // The original was admitted, and spoke (so it is the joiner's), before the copy is
    // replayed: until then a copy would be taken as a candidate too.
    let mut server_events = s.events();
    while s.paths().len() < 2 {
        wait_event(&mut server_events, "the server admits the standby", |ev| {
            matches!(ev, msocket::FlowEvent::PathAdded { .. })
        })
        .await;
    }
    within(10, "the standby speaks", async {
        while s.paths().iter().any(|p| p.state == msocket::PathState::Joining) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    for attempt in 0..2 {
        let mut raw = TcpStream::connect(target).await.unwrap();
        raw.write_all(&captured).await.unwrap();
        let (code, reason) = parse_refusal(&read_until_closed(&mut raw).await);
        assert_eq!(code, 3, "replay {attempt}: expected a replayed-sequence refusal, got {reason}");
    }
    // The flow carries on, on both of its paths.
    let bulk = data(300_000, 19);
    within(10, "write after the replays", c.write_all(&bulk)).await.unwrap();
    let mut got = vec![0u8; bulk.len()];
    within(10, "read after the replays", s.read_exact(&mut got)).await.unwrap();
    assert_eq!(sha256(&got), sha256(&bulk));
    assert_eq!(c.paths().len(), 2, "{:?}", c.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_subflow_openings_are_refused_and_the_endpoint_keeps_serving() {
    init_tracing();
    let names = memory_names();
    let io_timeout = Duration::from_secs(1);
    let server = endpoint_with(&names, 17, 78, |c| c.io_timeout = io_timeout);
    let mut listener = server.listen("malformed.test").await.unwrap();
    let target = server.published_addrs()[0];

    let new_flow = |len: u16, body: Vec<u8>| {
        let mut b = subflow_header(VERSION, 1);
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&body);
        b
    };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("bad magic", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false),
        ("unknown version", subflow_header(VERSION + 1, 1), false),
        ("an older version", subflow_header(VERSION - 1, 2), false),
        ("unknown kind", subflow_header(VERSION, 9), false),
        ("handshake over the limit", new_flow(60_000, data(200, 1)), false),
        ("half a header then close", b"MSK".to_vec(), true),
        ("NEW_FLOW with random Noise bytes", new_flow(96, data(96, 2)), false),
        ("NEW_FLOW with a short Noise message", new_flow(96, data(10, 3)), true),
        ("JOIN cut short", {
            let mut b = subflow_header(VERSION, 2);
            b.extend_from_slice(&[5; 10]);
            b
        }, true),
    ];
    for (what, bytes, half_close) in cases {
        let mut raw = TcpStream::connect(target).await.unwrap();
        raw.write_all(&bytes).await.unwrap();
        if half_close {
            raw.shutdown().await.unwrap();
        }
        let answer = read_until_closed(&mut raw).await;
        assert!(answer.is_empty(), "{what}: the server answered {answer:?}");
    }
    // A connection that says nothing is cut after the I/O timeout, not held forever.
    let mut silent = TcpStream::connect(target).await.unwrap();
    let started = Instant::now();
    assert!(read_until_closed(&mut silent).await.is_empty());
    let held = started.elapsed();
    assert!(held >= io_timeout - Duration::from_millis(100), "cut too early: {held:?}");
    assert!(held < io_timeout + Duration::from_secs(2), "held too long: {held:?}");

    assert!(listener_is_empty(&mut listener));
    still_serves(&names, &mut listener, 18, 79).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_the_listener_does_not_serve_is_unknown_name() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 19, 80);
    let mut listener = server.listen("served.test").await.unwrap();
    // The server's own key signs a record for a name it does not listen on.
    let server_id = Identity::from_seed([19; 32]);
    names.register(&signed_record(&server_id, "unserved.test", server.published_addrs(), 1)).await.unwrap();
    let client = endpoint(&names, 20, 81);
    let started = Instant::now();
    match within(10, "connect", client.connect("unserved.test")).await {
        Err(Error::UnknownName { name, addr }) => {
            assert_eq!(name, "unserved.test");
            assert_eq!(addr, server.published_addrs()[0]);
        }
        other => panic!("expected UnknownName, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2), "UnknownName should not be retried");
    assert!(listener_is_empty(&mut listener));
    still_serves(&names, &mut listener, 21, 82).await;
}

/// Answers every connection on `addr` with a JOIN refusal claiming the flow is unknown,
/// signed by nobody in particular; counts the refusals sent.
async fn lying_refuser(addr: SocketAddr) -> tokio::sync::watch::Receiver<u32> {
    // The endpoint's old listener closes as soon as its task is next polled.
    let mut tries = 0;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if tries < 10_000 => {
                tries += 1;
                let _ = e;
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("the old address stays taken: {e}"),
        }
    };
    let (count_tx, count) = tokio::sync::watch::channel(0u32);
    let count_tx = Arc::new(count_tx);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            // Each connection on its own: one that never sends its opening (a losing
            // connection attempt) must not hold up the next.
            let count_tx = count_tx.clone();
            tokio::spawn(async move {
                let mut opening = [0u8; 6 + JOIN_BODY];
                if conn.read_exact(&mut opening).await.is_err() {
                    return;
                }
                let reason = b"no such flow";
                let mut refusal = vec![1u8, reason.len() as u8];
                refusal.extend_from_slice(reason);
                refusal.extend_from_slice(&[0x5a; 64]);
                if conn.write_all(&refusal).await.is_ok() {
                    count_tx.send_modify(|n| *n += 1);
                }
            });
        }
    });
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_unknown_flow_claim_does_not_end_the_flow() {
    init_tracing();
    let names = TestNames::new();
    let dyn_names = names.dyn_arc();
    let server = endpoint(&dyn_names, 151, 151);
    let client = endpoint(&dyn_names, 152, 152);
    let mut listener = server.listen("claim.test").await.unwrap();
    let (mut c, mut s) = within(10, "pair", pair(&client, &mut listener, "claim.test")).await;
    let old = server.published_addrs()[0];

    // The server moves while lookups fail, and a stranger takes its old address and port,
    // answering the client's re-dials with "unknown flow" it cannot prove.
    names.set_down(true);
    server.set_local_ips(vec![lo(153)]).await.ok();
    let mut refusals = lying_refuser(old).await;
    within(20, "the client met the lying refusal", refusals.wait_for(|n| *n >= 1)).await.unwrap();

    // Once the name service answers again the client finds the server, and the flow goes
    // on with every byte: the unproven claim did not end it.
    names.set_down(false);
    let sent = data(500_000, 151);
    c.write_all(&sent).await.unwrap();
    c.shutdown().await.unwrap();
    let mut got = Vec::new();
    within(30, "server read", s.read_to_end(&mut got)).await.unwrap();
    assert_eq!(sha256(&got), sha256(&sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_unknown_flow_answer_ends_the_flow_at_once() {
    init_tracing();
    let names = memory_names();
    // The server runs on a runtime of its own, so "the process restarts" can be played by
    // shutting that runtime down and starting the same identity again on the same port.
    let server_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (port_tx, port_rx) = tokio::sync::oneshot::channel();
    let n = names.clone();
    server_rt.spawn(async move {
        let server = endpoint(&n, 154, 154);
        let mut listener = server.listen("restart.test").await.unwrap();
        port_tx.send(server.published_addrs()[0].port()).unwrap();
        let s = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
        drop((server, listener, s));
    });
    let port = within(10, "server up", port_rx).await.unwrap();
    let client = endpoint(&names, 155, 155);
    let mut c = within(10, "connect", client.connect("restart.test")).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    server_rt.shutdown_background();

    // The same identity comes back on the same address, without the flow.
    let restarted = endpoint_with(&names, 154, 154, |cfg| cfg.listen_port = port);
    let _listener = restarted.listen("restart.test").await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let err = within(10, "the flow fails", c.read(&mut buf)).await.unwrap_err();
    let why = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(matches!(why, Some(Error::Flow(msocket::FlowError::PeerForgotFlow))), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "failed at once, not at the 20 s deadline");
}

/// An observer on the path that, for every JOIN passing through, first delivers a copy of
/// it on a connection of its own (and keeps that connection), then lets the original
/// through. Returns its address and the observer's connections.
async fn copying_observer(ip: IpAddr, target: SocketAddr) -> (SocketAddr, Arc<tokio::sync::Mutex<Vec<TcpStream>>>) {
    let l = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let copies = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let kept = copies.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let mut opening = vec![0u8; 6];
                cr.read_exact(&mut opening).await?;
                if opening[5] == 2 {
                    opening.resize(6 + JOIN_BODY, 0);
                    cr.read_exact(&mut opening[6..]).await?;
                    let mut copy = TcpStream::connect(target).await?;
                    copy.write_all(&opening).await?;
                    let mut accepted = [0u8; 17];
                    copy.read_exact(&mut accepted).await?;
                    if accepted[0] & !4 == 0 {
                        kept.lock().await.push(copy);
                    }
                }
                let server = TcpStream::connect(target).await?;
                let (mut sr, mut sw) = server.into_split();
                sw.write_all(&opening).await?;
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                });
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
                sw.shutdown().await
            });
        }
    });
    (addr, copies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observers_copy_of_a_join_delivered_first_does_not_displace_the_joiner() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 23, 86);
    let mut listener = server.listen("copied.test").await.unwrap();
    let (observer, copies) = copying_observer(lo(87), server.published_addrs()[0]).await;
    let via: Arc<dyn NameService> = Arc::new(MemoryNameService::new());
    via.register(&signed_record(&Identity::from_seed([23; 32]), "copied.test", vec![observer], 1)).await.unwrap();
    let client = endpoint(&via, 24, 88);
    let (mut c, mut s) = within(10, "pair", pair(&client, &mut listener, "copied.test")).await;
    let mut c_events = c.events();

    // The client moves: its new subflow joins through the observer, whose copy of the JOIN
    // reaches the server first.
    client.set_local_ips(vec![lo(89)]).await.unwrap();
    let up = data(400_000, 23);
    within(10, "write after the move", c.write_all(&up)).await.unwrap();
    let mut got = vec![0u8; up.len()];
    within(15, "read after the move", s.read_exact(&mut got)).await.unwrap();
    assert_eq!(sha256(&got), sha256(&up));
    let down = data(400_000, 24);
    within(10, "server writes", s.write_all(&down)).await.unwrap();
    let mut got = vec![0u8; down.len()];
    within(15, "client reads", c.read_exact(&mut got)).await.unwrap();
    assert_eq!(sha256(&got), sha256(&down));
    assert!(!copies.lock().await.is_empty(), "the observer never copied a JOIN");

    // The server dropped the copy once the joiner's subflow spoke (what it had sent there,
    // sealed, went again on the joiner's); the client never saw a refusal and kept the
    // observer's address (its path to the peer).
    let mut copy = copies.lock().await.remove(0);
    within(10, "the copy is closed", read_until_closed(&mut copy)).await;
    assert_eq!(s.paths().len(), 1, "{:?}", s.paths());
    while let Some(ev) = c_events.try_next() {
        assert!(!matches!(ev, msocket::FlowEvent::PathLost { reason: msocket::PathLossReason::JoinRefused { .. }, .. }), "{ev:?}");
    }
    round_trip(c, s, 100_000, 100_000, 25).await;
}
