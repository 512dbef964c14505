//! The end of a flow's life: lingering after a clean finish, and flows that outlive their
//! endpoint.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use msocket::name::{NameRecord, SignedRecord};
use msocket::Identity;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP forwarder whose first connection can be made to drop everything the server sends
/// (a path that dies in one direction); later connections forward normally.
struct OneWayProxy {
    addr: SocketAddr,
    freeze: Arc<AtomicBool>,
}

async fn one_way_proxy(ip: &str, upstream: SocketAddr) -> OneWayProxy {
    let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let freeze = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let f = freeze.clone();
    tokio::spawn(async move {
        loop {
            let Ok((down, _)) = listener.accept().await else { return };
            let Ok(up) = TcpStream::connect(upstream).await else { continue };
            let first = count.fetch_add(1, Ordering::SeqCst) == 0;
            let (mut down_r, mut down_w) = down.into_split();
            let (mut up_r, mut up_w) = up.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut down_r, &mut up_w).await;
            });
            let f = f.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match up_r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if first && f.load(Ordering::SeqCst) {
                        continue;
                    }
                    if down_w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    OneWayProxy { addr, freeze }
}

/// The server finishes, but its last ACK (of the client's FIN) is lost with the path. The
/// client re-joins while the server's flow lingers and must get that ACK there: both ends
/// finish cleanly instead of the client being told the flow is unknown once the linger ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_lost_the_last_ack_rejoins_the_lingering_flow_and_finishes() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 141, 141);
    let client = endpoint(&names, 142, 142);
    let mut listener = server.listen("linger.test").await.unwrap();
    let proxy = one_way_proxy("127.0.0.143", server.published_addrs()[0]).await;
    let id = Identity::from_seed([141; 32]);
    let record =
        NameRecord::new("linger.test", id.public(), vec![proxy.addr], u64::MAX / 2, msocket::name::unix_now() + 3600);
    names.register(&SignedRecord::sign(record, &id).unwrap()).await.unwrap();

    let (mut c, mut s) = within(10, "pair", pair(&client, &mut listener, "linger.test")).await;
    // Server → client first, to the end: the server's FIN gets acknowledged.
    s.write_all(b"down").await.unwrap();
    within(10, "server shutdown", s.shutdown()).await.unwrap();
    let mut got = Vec::new();
    within(10, "client read", c.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"down");

    // From now on nothing the server sends on this path arrives.
    proxy.freeze.store(true, Ordering::SeqCst);
    let server_side = tokio::spawn(async move {
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        (got, s)
    });
    c.write_all(b"up").await.unwrap();
    within(10, "client shutdown", c.shutdown()).await.expect("the client's bytes and FIN acknowledged");
    let (got, s) = within(10, "server read", server_side).await.unwrap();
    assert_eq!(got, b"up");
    within(10, "client closed", c.closed()).await.expect("the client finished cleanly");
    within(10, "server closed", s.closed()).await.expect("the server finished cleanly");
}

/// A TCP forwarder whose first connection can be made to drop everything the client sends
/// (`freeze`), then be reset on both sides (`cut`); later connections forward normally.
struct AckEatingProxy {
    addr: SocketAddr,
    freeze: Arc<AtomicBool>,
    first: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl AckEatingProxy {
    async fn start(ip: &str, upstream: SocketAddr) -> AckEatingProxy {
        let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let freeze = Arc::new(AtomicBool::new(false));
        let first = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (f, handles) = (freeze.clone(), first.clone());
        tokio::spawn(async move {
            let mut count = 0;
            loop {
                let Ok((down, _)) = listener.accept().await else { return };
                let Ok(up) = TcpStream::connect(upstream).await else { continue };
                count += 1;
                let eats = count == 1;
                // Closing the first connection resets it, as a path that breaks does.
                if eats {
                    socket2::SockRef::from(&down).set_linger(Some(Duration::ZERO)).unwrap();
                    socket2::SockRef::from(&up).set_linger(Some(Duration::ZERO)).unwrap();
                }
                let f = f.clone();
                // One task owns both sockets (whole, so that ending it resets them rather
                // than closing them cleanly).
                let task = tokio::spawn(async move {
                    let (mut down, mut up) = (down, up);
                    let (mut down_r, mut down_w) = down.split();
                    let (mut up_r, mut up_w) = up.split();
                    let to_server = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match down_r.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if eats && f.load(Ordering::SeqCst) {
                                continue;
                            }
                            if up_w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let to_client = tokio::io::copy(&mut up_r, &mut down_w);
                    let _ = tokio::join!(to_server, to_client);
                });
                if eats {
                    handles.lock().unwrap().push(task.abort_handle());
                }
            }
        });
        AckEatingProxy { addr, freeze, first }
    }

    fn cut(&self) {
        for h in self.first.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

/// The client's transfer is complete, but its last ACK (of the server's FIN) is lost, and
/// then the path breaks. The server cannot dial a client: the client re-dials to deliver that ACK, so
/// both finish cleanly instead of the server's `shutdown` failing at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_last_ack_was_lost_redials_to_deliver_it() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 144, 144);
    let client = endpoint(&names, 145, 145);
    let mut listener = server.listen("lastack.test").await.unwrap();
    let proxy = AckEatingProxy::start("127.0.0.146", server.published_addrs()[0]).await;
    let id = Identity::from_seed([144; 32]);
    let record =
        NameRecord::new("lastack.test", id.public(), vec![proxy.addr], u64::MAX / 2, msocket::name::unix_now() + 3600);
    names.register(&SignedRecord::sign(record, &id).unwrap()).await.unwrap();

    let (mut c, mut s) = within(10, "pair", pair(&client, &mut listener, "lastack.test")).await;
    c.write_all(b"up").await.unwrap();
    within(10, "client shutdown", c.shutdown()).await.unwrap();
    let mut got = Vec::new();
    within(10, "server read", s.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"up");

    // From now on nothing the client sends on this path arrives: its ACK of the server's
    // FIN is lost.
    proxy.freeze.store(true, Ordering::SeqCst);
    s.write_all(b"down, all of it").await.unwrap();
    let server_side = tokio::spawn(async move {
        let done = s.shutdown().await;
        (done, s)
    });
    // The FIN rides the same record as the bytes: once the first are in, the transfer is
    // complete, while the application has not read it all (so the path is still open).
    let mut got = [0u8; 4];
    within(10, "client read", c.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"down");
    proxy.cut();
    // The flows' deadline is 20 s: a server left waiting would fail there.
    let (done, s) = within(10, "server shutdown", server_side).await.unwrap();
    done.expect("the server's FIN acknowledged");
    let mut rest = Vec::new();
    within(10, "client reads the end", c.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(rest, b", all of it");
    within(10, "server closed", s.closed()).await.expect("the server finished cleanly");
    within(10, "client closed", c.closed()).await.expect("the client finished cleanly");
}

/// A TCP forwarder for the first connection only; once `cut` is set it drops that one and
/// from then on accepts every connection and closes it at once (a load balancer with no
/// backend, or a server shedding load), counting them.
struct SlammingProxy {
    addr: SocketAddr,
    cut: Arc<tokio::sync::watch::Sender<bool>>,
    slammed: Arc<AtomicUsize>,
}

async fn slamming_proxy(ip: &str, upstream: SocketAddr) -> SlammingProxy {
    let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(tokio::sync::watch::channel(false).0);
    let slammed = Arc::new(AtomicUsize::new(0));
    let (c, n) = (cut.clone(), slammed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((down, _)) = listener.accept().await else { return };
            if *c.borrow() {
                n.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let Ok(up) = TcpStream::connect(upstream).await else { continue };
            let mut cut = c.subscribe();
            tokio::spawn(async move {
                let (mut down, mut up) = (down, up);
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                    _ = cut.wait_for(|c| *c) => {}
                }
            });
        }
    });
    SlammingProxy { addr, cut, slammed }
}

/// A peer address that accepts TCP and closes at once must not be re-dialed in a tight
/// loop: every attempt "attaches" (the JOIN is sent and the answer read later), so the
/// re-dialer used to start over without any back-off, thousands of times a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_address_that_closes_every_connection_is_redialed_with_backoff() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 144, 144);
    let client = endpoint(&names, 145, 145);
    let mut listener = server.listen("slam.test").await.unwrap();
    let proxy = slamming_proxy("127.0.0.146", server.published_addrs()[0]).await;
    let id = Identity::from_seed([144; 32]);
    let record =
        NameRecord::new("slam.test", id.public(), vec![proxy.addr], u64::MAX / 2, msocket::name::unix_now() + 3600);
    names.register(&SignedRecord::sign(record, &id).unwrap()).await.unwrap();
    let (mut c, _s) = within(10, "pair", pair(&client, &mut listener, "slam.test")).await;
    c.write_all(b"something to deliver").await.unwrap();

    proxy.cut.send_replace(true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attempts = proxy.slammed.load(Ordering::SeqCst);
    eprintln!("{attempts} re-dials in one second");
    assert!(attempts >= 1, "the client never re-dialed");
    assert!(attempts <= 30, "{attempts} re-dials in one second: no back-off");
}

/// CPU time the calling thread used so far.
#[cfg(target_os = "linux")]
fn thread_cpu() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A client flow that outlives its endpoint and then loses its path can never re-dial: it
/// must fail at once and say why, not spin its driver (which re-spawned a re-dialer that
/// found no endpoint and woke the driver again) until the flow deadline.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_client_flow_that_outlives_its_endpoint_fails_when_its_path_dies_without_spinning() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 147, 147);
    let client = endpoint(&names, 148, 148);
    let mut listener = server.listen("orphan.test").await.unwrap();
    let proxy = slamming_proxy("127.0.0.149", server.published_addrs()[0]).await;
    let id = Identity::from_seed([147; 32]);
    let record =
        NameRecord::new("orphan.test", id.public(), vec![proxy.addr], u64::MAX / 2, msocket::name::unix_now() + 3600);
    names.register(&SignedRecord::sign(record, &id).unwrap()).await.unwrap();
    let (mut c, _s) = within(10, "pair", pair(&client, &mut listener, "orphan.test")).await;
    c.write_all(b"something to deliver").await.unwrap();
    drop(client);

    proxy.cut.send_replace(true);
    within(5, "path lost", async {
        while !c.paths().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Everything of this test runs on this thread (current-thread runtime).
    let before = thread_cpu();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used = thread_cpu() - before;
    eprintln!("{used:?} of CPU in 500 ms without a path");
    assert!(used < Duration::from_millis(150), "{used:?} of CPU in 500 ms: the flow spins");
    let err = within(2, "the flow fails", c.closed()).await.expect_err("no endpoint to re-dial with");
    assert!(matches!(err, msocket::Error::Flow(msocket::FlowError::EndpointDropped)), "{err}");
}

/// A listener that does not accept: once its queue (64 flows) is full, a further flow is
/// refused with CLOSE code 2 and the client's flow ends with `NotAccepted`, not with an
/// abort that looks like the peer application's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_nobody_accepts_ends_with_not_accepted() {
    let names = memory_names();
    let server = endpoint(&names, 170, 170);
    let _listener = server.listen("full.test").await.unwrap();
    let client = endpoint(&names, 171, 171);
    let mut flows = Vec::new();
    let mut ends = tokio::task::JoinSet::new();
    for _ in 0..65 {
        let flow = within(10, "connect", client.connect("full.test")).await.unwrap();
        ends.spawn(flow.closed());
        flows.push(flow);
    }
    // The queued flows stay open: the first to end is the one past the queue.
    let first = within(10, "a flow refused", ends.join_next()).await.unwrap().unwrap();
    assert!(matches!(first, Err(msocket::Error::Flow(msocket::FlowError::NotAccepted))), "{first:?}");
    drop(flows);
}
