//! Who gets in: listener allow-lists, replayed handshakes, floods of idle connections.
//! Each test performs the attack over real loopback sockets, then shows honest peers are
//! still served (data checked by SHA-256).

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use msocket::{Error, Fingerprint, Identity};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;

fn fingerprint(seed: u8) -> Fingerprint {
    Identity::from_seed([seed; 32]).public().fingerprint().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_with_an_allow_list_refuses_strangers_and_names_its_peers() {
    init_tracing();
    let names = memory_names();
    let server = endpoint_with(&names, 40, 110, |c| c.allowed_peers = Some(vec![fingerprint(41)]));
    let mut listener = server.listen("vault.box").await.unwrap();

    let stranger = endpoint(&names, 42, 112);
    match within(10, "stranger", stranger.connect("vault.box")).await {
        Err(Error::NotAllowed { name, addr }) => {
            assert_eq!(name, "vault.box");
            assert_eq!(addr, server.published_addrs()[0]);
        }
        other => panic!("expected NotAllowed, got {other:?}"),
    }
    assert!(listener_is_empty(&mut listener), "a stranger's flow reached the listener");

    let friend = endpoint(&names, 41, 111);
    let (c, s) = within(10, "friend", pair(&friend, &mut listener, "vault.box")).await;
    assert_eq!(s.peer(), friend.public(), "the listener sees the friend's keys");
    assert_eq!(s.peer().fingerprint(), friend.public().fingerprint());
    assert_eq!(c.peer(), server.public());
    round_trip(c, s, 100_000, 100_000, 40).await;
}

/// A TCP proxy for one connection that keeps a copy of what the client sent.
async fn recording_proxy(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind((lo(120), 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(target).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n @ 1..) = cr.read(&mut buf).await {
                record.lock().unwrap().extend_from_slice(&buf[..n]);
                if sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
    });
    (addr, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_first_handshake_message_replayed_creates_nothing() {
    init_tracing();
    let test_names = TestNames::new();
    let names = test_names.dyn_arc();
    let server = endpoint(&names, 43, 113);
    let mut listener = server.listen("victim.box").await.unwrap();
    let target = server.published_addrs()[0];

    // The client's first flow passes an observer that keeps its bytes.
    let (proxy, captured) = recording_proxy(target).await;
    let server_id = Identity::from_seed([43; 32]);
    test_names.lie(signed_record(&server_id, "victim.box", vec![proxy], 1));
    let client = endpoint(&names, 44, 114);
    let (c, s) = within(10, "honest flow", pair(&client, &mut listener, "victim.box")).await;

    // The opening: a 6-byte clear header, a 2-byte length, the first handshake message.
    let opening = {
        let bytes = captured.lock().unwrap();
        let len = u16::from_be_bytes([bytes[6], bytes[7]]) as usize;
        bytes[..8 + len].to_vec()
    };
    // From ten sources, so the per-source handshake rate limit does not hide the replays.
    for i in 0..300 {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(lo(150 + (i % 10) as u8), 0)).unwrap();
        let mut raw = sock.connect(target).await.unwrap();
        raw.write_all(&opening).await.unwrap();
        // A sealed refusal comes back (the replayer cannot read it), then the close.
        let mut answer = Vec::new();
        within(5, "refusal", raw.read_to_end(&mut answer)).await.unwrap();
        assert!(answer.len() > 2, "replay {i}: no answer at all");
    }
    assert!(listener_is_empty(&mut listener), "a replayed handshake created a flow");
    assert_eq!(s.peer(), client.public());

    // The victim's key still opens flows (its timestamps keep growing).
    test_names.lie(signed_record(&server_id, "victim.box", vec![target], 2));
    let (c2, s2) = within(10, "after the replays", pair(&client, &mut listener, "victim.box")).await;
    round_trip(c2, s2, 10_000, 10_000, 42).await;
    round_trip(c, s, 10_000, 10_000, 43).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_clock_went_back_retries_above_the_latest_handshake_seen() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 45, 115);
    let mut listener = server.listen("clock.box").await.unwrap();
    // Another process with the same key, whose clock is far ahead, opened a flow first.
    let ahead = endpoint(&names, 46, 116);
    ahead.set_handshake_clock_for_tests(u64::MAX / 2);
    let (c, s) = within(10, "clock ahead", pair(&ahead, &mut listener, "clock.box")).await;
    round_trip(c, s, 1_000, 1_000, 44).await;
    // This one's wall clock is behind: refused once as a replay, then it retries above.
    let behind = endpoint(&names, 46, 117);
    let (c, s) = within(10, "clock behind", pair(&behind, &mut listener, "clock.box")).await;
    round_trip(c, s, 1_000, 1_000, 45).await;
}

/// An attacker at `127.0.0.<host>` that keeps `n` idle TCP connections open to `target`,
/// re-opening each one the listener closes; `full` is notified at the first re-opening.
fn flood(target: SocketAddr, host: u8, n: usize, full: Arc<Notify>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut held = tokio::task::JoinSet::new();
        let mut opened = 0;
        loop {
            while held.len() < n {
                let sock = TcpSocket::new_v4().unwrap();
                sock.bind(SocketAddr::new(lo(host), 0)).unwrap();
                let Ok(mut conn) = sock.connect(target).await else { continue };
                opened += 1;
                if opened > n {
                    full.notify_one();
                }
                held.spawn(async move {
                    let mut b = [0u8; 1];
                    let _ = conn.read(&mut b).await;
                });
            }
            held.join_next().await;
            // An attacker paces itself a little so the test machine stays usable.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_many_sources_block_neither_new_flows_nor_resumptions() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 47, 118);
    let mut listener = server.listen("busy.box").await.unwrap();
    let target = server.published_addrs()[0];
    let client = endpoint(&names, 48, 119);
    let (mut c, mut s) = within(10, "before the flood", pair(&client, &mut listener, "busy.box")).await;

    // Ten sources hold 32 idle connections each (the per-source cap), more than the 256
    // openings the listener reads at once, and re-open every one that is closed.
    let full = Arc::new(Notify::new());
    let attackers: Vec<_> = (130..140).map(|host| flood(target, host, 32, full.clone())).collect();
    // The listener is full once it had to drop an idle connection.
    within(10, "the flood fills the listener", full.notified()).await;

    // A new flow still opens, and the old one resumes after its client moves.
    let other = endpoint(&names, 49, 121);
    let (c2, s2) = within(10, "new flow during the flood", pair(&other, &mut listener, "busy.box")).await;
    round_trip(c2, s2, 50_000, 50_000, 46).await;
    client.set_local_ips(vec![lo(122)]).await.unwrap();
    let bytes = data(300_000, 47);
    within(10, "write after the move", c.write_all(&bytes)).await.unwrap();
    let mut got = vec![0u8; bytes.len()];
    within(15, "read after the resumption", s.read_exact(&mut got)).await.unwrap();
    assert_eq!(sha256(&got), sha256(&bytes));
    assert!(c.paths().iter().any(|p| p.local.ip() == lo(122)), "the flow did not resume from the new address");
    for a in attackers {
        a.abort();
    }
    round_trip(c, s, 10_000, 10_000, 48).await;
}
