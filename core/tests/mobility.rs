//! End-to-end mobility tests over real loopback sockets: moves before and during connect,
//! a name-service outage across a move, a peer that is gone for good (the flow deadline),
//! many moves in a row under a two-way transfer, and the blocking wrapper. Every data test
//! compares SHA-256 of what was sent and what was received.

mod support;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use msocket::{FlowEvent, Listener};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_moved_before_the_first_lookup_is_reached_at_its_new_address() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 1, 90);
    let mut listener = server.listen("early.test").await.unwrap();
    let old = server.published_addrs();
    server.set_local_ips(vec![lo(91)]).await.unwrap();
    let new = server.published_addrs();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].ip(), lo(91));
    // The old listener's task is aborted and its socket closes when that task next runs:
    // a loaded machine still took a connection there right after the move.
    within(10, "the old listener closes", async {
        while tokio::net::TcpStream::connect(old[0]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(names.lookup("early.test").await.unwrap().record.addrs, new);

    let client = endpoint(&names, 2, 93);
    let (c, s) = within(10, "pair", pair(&client, &mut listener, "early.test")).await;
    round_trip(c, s, 1_000_000, 500_000, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_moving_while_a_client_connects_is_still_reached() {
    init_tracing();
    let test_names = TestNames::new();
    let names = test_names.dyn_arc();
    let server = endpoint(&names, 3, 94);
    let mut listener = server.listen("racing.test").await.unwrap();
    let client = endpoint(&names, 4, 95);
    let mut lookups = test_names.lookups();
    for round in 0..6u8 {
        let to = vec![lo(150 + round)];
        let mover = {
            let server = server.clone();
            let mut lookups = lookups.clone();
            let seen = *lookups.borrow_and_update();
            async move {
                match round % 3 {
                    // Right after the client's lookup returned the old address.
                    0 => {
                        lookups.wait_for(|n| *n > seen).await.unwrap();
                    }
                    // Before the client gets going.
                    1 => {}
                    // After a few scheduler turns: somewhere inside the dial or handshake.
                    _ => {
                        for _ in 0..(round as usize * 3) {
                            tokio::task::yield_now().await;
                        }
                    }
                }
                server.set_local_ips(to).await.unwrap();
            }
        };
        let connect = async {
            let (c, s) = tokio::join!(client.connect("racing.test"), listener.accept());
            (c.expect("connect"), s.expect("accept"))
        };
        let ((c, s), ()) = within(20, "connect during a move", async { tokio::join!(connect, mover) }).await;
        assert_eq!(server.published_addrs()[0].ip(), lo(150 + round));
        round_trip(c, s, 300_000, 150_000, round as u64).await;
        lookups.borrow_and_update();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_resumes_after_a_name_service_outage_across_a_server_move() {
    init_tracing();
    let test_names = TestNames::new();
    let names = test_names.dyn_arc();
    let server = endpoint(&names, 5, 100);
    let client = endpoint(&names, 6, 101);
    let mut listener = server.listen("outage.test").await.unwrap();
    let (c, mut s) = within(10, "pair", pair(&client, &mut listener, "outage.test")).await;
    let mut events = s.events();
    let len = 6_000_000;
    let sent = data(len, 5);
    let writer = tokio::spawn(send_all(c, sent.clone()));
    let mut got = vec![0u8; len / 3];
    within(20, "first third", s.read_exact(&mut got)).await.unwrap();

    // The name service goes dark, then the server moves: its old address is gone and its
    // new one cannot be published. The client can find it by no means until the service
    // is back.
    test_names.set_down(true);
    let failed = *test_names.failed_lookups().borrow();
    let moved = server.set_local_ips(vec![lo(102)]).await;
    assert!(moved.is_err(), "publishing during the outage should report the failure");
    assert_eq!(server.published_addrs()[0].ip(), lo(102), "the listener moved all the same");
    let outage_start = Instant::now();
    // The outage lasts until the client has failed its re-lookups eight times (about 1.3 s
    // of its back-off).
    within(20, "client re-lookups during the outage", test_names.failed_lookups().wait_for(|n| *n >= failed + 8))
        .await
        .unwrap();
    let dark = outage_start.elapsed();
    test_names.set_down(false);

    let ev = wait_event(&mut events, "resume after the outage", |e| matches!(e, FlowEvent::Resumed { .. })).await;
    let FlowEvent::Resumed { outage } = ev else { unreachable!() };
    assert!(outage >= dark, "outage {outage:?} shorter than the time the name service was down {dark:?}");
    let (rest, _s) = within(30, "rest", read_all(s)).await;
    got.extend_from_slice(&rest);
    within(20, "writer", writer).await.unwrap();
    assert_eq!(sha256(&got), sha256(&sent));
}

/// Runs the server on a runtime of its own, so the test can kill it like a process.
/// Returns the runtime and how many bytes the server read so far.
async fn server_in_own_runtime(
    names: &Arc<dyn msocket::name::NameService>,
    name: &'static str,
) -> (tokio::runtime::Runtime, watch::Receiver<u64>) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (progress, progress_rx) = watch::channel(0u64);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let names = names.clone();
    rt.spawn(async move {
        let server = endpoint(&names, 7, 104);
        let mut listener: Listener = server.listen(name).await.unwrap();
        ready_tx.send(()).unwrap();
        let mut s = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = s.read(&mut buf).await {
            progress.send_modify(|p| *p += n as u64);
        }
        // Keep the endpoint and the flow alive until the runtime is killed.
        std::future::pending::<()>().await;
        drop((server, listener, s));
    });
    ready_rx.await.unwrap();
    (rt, progress_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gone_for_good_fails_the_flow_at_its_deadline() {
    init_tracing();
    let names = memory_names();
    let (server_rt, mut progress) = server_in_own_runtime(&names, "gone.test").await;
    let deadline = Duration::from_secs(2);
    let client = endpoint_with(&names, 8, 105, |c| c.flow.flow_deadline = deadline);
    let mut c = within(10, "connect", client.connect("gone.test")).await.unwrap();
    let mut events = c.events();
    let first = data(100_000, 8);
    c.write_all(&first).await.unwrap();
    within(10, "server got the first bytes", progress.wait_for(|n| *n == first.len() as u64)).await.unwrap();

    // The server process dies: every task and socket of its runtime is gone, and nothing
    // listens on its address any more.
    let killed = Instant::now();
    server_rt.shutdown_background();

    let mut buf = [0u8; 16];
    let err = within(10, "read fails", c.read(&mut buf)).await.expect_err("read after the peer died");
    let took = killed.elapsed();
    eprintln!("read failed after {took:?}: {err}");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(took >= deadline - Duration::from_millis(200), "failed before the deadline: {took:?}");
    assert!(took <= deadline + Duration::from_millis(1500), "failed too late: {took:?}");
    let err = c.write(b"more").await.expect_err("write after the deadline");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    let err = c.shutdown().await.expect_err("shutdown after the deadline");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    match wait_event(&mut events, "closed event", |e| matches!(e, FlowEvent::Closed { .. })).await {
        FlowEvent::Closed { error: Some(why), .. } => eprintln!("closed: {why}"),
        other => panic!("expected a failed close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_alternating_moves_during_a_two_way_transfer() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 9, 106);
    let client = endpoint(&names, 10, 107);
    let mut listener = server.listen("many.test").await.unwrap();
    let (c, s) = within(10, "pair", pair(&client, &mut listener, "many.test")).await;
    let len: usize = 20_000_000;
    let up = data(len, 9);
    let down = data(len, 10);
    let mut c_events = c.events();
    let (c_progress, mut c_seen) = watch::channel(0u64);
    let (s_progress, mut s_seen) = watch::channel(0u64);
    // The last quarter each way goes only after the last move, so the flow must come back
    // after every move. Without that hold a loaded machine got to its last move after
    // the transfer had ended (the flow's events ended before the path changed).
    let (release, held) = watch::channel(false);
    let client_side = tokio::spawn(exchange(c, up.clone(), c_progress, held.clone()));
    let server_side = tokio::spawn(exchange(s, down.clone(), s_progress, held));

    let moves = 10u64;
    for i in 0..moves {
        // Spread the moves over the first half of the transfer, beyond what the send
        // buffer and receive window (4 MiB each) can hold, so a move usually finds data
        // in flight both ways.
        let mark = (i + 1) * len as u64 / (2 * moves);
        within(30, "progress before the next move", async {
            c_seen.wait_for(|n| *n >= mark).await.unwrap();
            s_seen.wait_for(|n| *n >= mark).await.unwrap();
        })
        .await;
        if i % 2 == 0 {
            client.set_local_ips(vec![lo(160 + i as u8)]).await.unwrap();
        } else {
            server.set_local_ips(vec![lo(180 + i as u8)]).await.unwrap();
        }
        // The move cut the flow's path (the client loses it either way) and the flow got a
        // new one — after the loss (an outage, then Resumed), or before it when the
        // server's new record reached the client first (no outage at all).
        let (mut lost, mut added) = (false, false);
        while !(lost && added) {
            let ev = wait_event(&mut c_events, "the path changed in the move", |e| {
                matches!(e, FlowEvent::PathLost { .. } | FlowEvent::PathAdded { .. })
            })
            .await;
            lost |= matches!(ev, FlowEvent::PathLost { .. });
            added |= matches!(ev, FlowEvent::PathAdded { .. });
        }
    }
    release.send_replace(true);
    let got_down = within(60, "client side", client_side).await.unwrap();
    let got_up = within(60, "server side", server_side).await.unwrap();
    assert_eq!(got_up.len(), len);
    assert_eq!(got_down.len(), len);
    assert_eq!(sha256(&got_up), sha256(&up), "client → server bytes differ");
    assert_eq!(sha256(&got_down), sha256(&down), "server → client bytes differ");
}

#[test]
fn a_blocking_flow_on_a_std_thread_writes_and_reads() {
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let names = memory_names();
    let (c, s, _endpoints) = rt.block_on(async {
        let server = endpoint(&names, 11, 108);
        let client = endpoint(&names, 12, 109);
        let mut listener = server.listen("blocking.test").await.unwrap();
        let (c, s) = within(10, "pair", pair(&client, &mut listener, "blocking.test")).await;
        (c, s, (server, client, listener))
    });
    let up = data(2_000_000, 11);
    let down = data(700_000, 12);
    // The server echoes nothing: it reads everything, then answers with `down`.
    let down2 = down.clone();
    let server = rt.spawn(async move {
        let (got, s) = read_all(s).await;
        send_all(s, down2).await;
        got
    });
    let mut blocking = c.into_blocking(rt.handle().clone());
    blocking.set_timeout(Some(Duration::from_secs(20)));
    let up2 = up.clone();
    let thread = std::thread::spawn(move || {
        for chunk in up2.chunks(100_000) {
            blocking.write_all(chunk).unwrap();
        }
        blocking.flush().unwrap();
        blocking.shutdown().unwrap();
        let mut got = Vec::new();
        blocking.read_to_end(&mut got).unwrap();
        // A read at the end of the stream returns 0 at once, not after the timeout.
        assert_eq!(blocking.read(&mut [0u8; 8]).unwrap(), 0);
        got
    });
    let got_down = thread.join().expect("blocking thread");
    let got_up = rt.block_on(async { within(20, "server", server).await.unwrap() });
    assert_eq!(sha256(&got_up), sha256(&up));
    assert_eq!(sha256(&got_down), sha256(&down));
}

#[test]
fn a_blocking_read_honours_its_timeout() {
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let names = memory_names();
    let (c, s, _endpoints) = rt.block_on(async {
        let server = endpoint(&names, 13, 110);
        let client = endpoint(&names, 14, 111);
        let mut listener = server.listen("timeout.test").await.unwrap();
        let (c, s) = within(10, "pair", pair(&client, &mut listener, "timeout.test")).await;
        (c, s, (server, client, listener))
    });
    let mut blocking = c.into_blocking(rt.handle().clone());
    let timeout = Duration::from_millis(300);
    blocking.set_timeout(Some(timeout));
    let thread = std::thread::spawn(move || {
        let started = Instant::now();
        let err = blocking.read(&mut [0u8; 8]).expect_err("nothing was sent");
        let took = started.elapsed();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(took >= timeout && took < timeout + Duration::from_secs(2), "{took:?}");
        // The flow survives a timed-out read.
        let msg = data(50_000, 13);
        blocking.write_all(&msg).unwrap();
        blocking.shutdown().unwrap();
        msg
    });
    let msg = thread.join().expect("blocking thread");
    let (got, _s) = rt.block_on(async { within(10, "read", read_all(s)).await });
    assert_eq!(sha256(&got), sha256(&msg));
}
