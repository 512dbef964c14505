//! Subflows cut in the middle of a record by a forwarding proxy (what a NAT that drops its
//! mapping does): the flow re-dials through the proxy, the server sees a new source address,
//! and the stream resumes with nothing lost or duplicated.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use msocket::name::{NameRecord, SignedRecord};
use msocket::Identity;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP forwarder that cuts every connection it carries once `cut_at` bytes have passed
/// through it in total (counting both directions), then forwards new connections normally
/// until the next threshold.
struct Proxy {
    addr: SocketAddr,
    cuts: Arc<AtomicUsize>,
}

async fn start_proxy(upstream: SocketAddr, thresholds: Vec<u64>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.60:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let total = Arc::new(AtomicU64::new(0));
    let cuts = Arc::new(AtomicUsize::new(0));
    let (cut_tx, cut_rx) = watch::channel(0usize);
    let cut_tx = Arc::new(cut_tx);
    let (c, t) = (cuts.clone(), total.clone());
    tokio::spawn(async move {
        loop {
            let Ok((down, _)) = listener.accept().await else { return };
            let Ok(up) = TcpStream::connect(upstream).await else { continue };
            let generation = *cut_rx.borrow();
            let (down_r, down_w) = down.into_split();
            let (up_r, up_w) = up.into_split();
            for (a, b) in [(down_r, up_w), (up_r, down_w)] {
                let (total, cuts, cut_tx, thresholds) = (t.clone(), c.clone(), cut_tx.clone(), thresholds.clone());
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let (mut from, mut to) = (a, b);
                    let mut buf = vec![0u8; 7777];
                    loop {
                        let n = tokio::select! {
                            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                            _ = cut_rx.wait_for(|g| *g > generation) => break,
                        };
                        let before = total.fetch_add(n as u64, Ordering::SeqCst);
                        let k = cuts.load(Ordering::SeqCst);
                        if let Some(&limit) = thresholds.get(k) {
                            if before + n as u64 >= limit {
                                // Forward only part of this read, then cut everything.
                                let part = (limit.saturating_sub(before) as usize).min(n);
                                let _ = to.write_all(&buf[..part]).await;
                                if cuts.compare_exchange(k, k + 1, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                                    cut_tx.send_modify(|g| *g += 1);
                                }
                                break;
                            }
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });
    Proxy { addr, cuts }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_mid_record_lose_and_duplicate_nothing() {
    init_tracing();
    let names = memory_names();
    let server = endpoint(&names, 61, 61);
    let client = endpoint(&names, 62, 62);
    let mut listener = server.listen("cut.test").await.unwrap();
    let real = server.published_addrs();
    // Point the name at the proxy, signed by the server's own key.
    let proxy = start_proxy(real[0], vec![1_000_003, 2_500_007, 4_000_009]).await;
    let id = Identity::from_seed([61; 32]);
    let record = NameRecord::new("cut.test", id.public(), vec![proxy.addr], u64::MAX / 2, msocket::name::unix_now() + 3600);
    names.register(&SignedRecord::sign(record, &id).unwrap()).await.unwrap();

    let (c, s) = within(10, "pair", pair(&client, &mut listener, "cut.test")).await;
    let up = data(3_000_000, 7);
    let down = data(2_000_000, 8);
    let (up2, down2) = (up.clone(), down.clone());
    let (mut cr, mut cw) = tokio::io::split(c);
    let (mut sr, mut sw) = tokio::io::split(s);
    let client_tx = tokio::spawn(async move {
        cw.write_all(&up2).await.unwrap();
        cw.shutdown().await.unwrap();
    });
    let server_tx = tokio::spawn(async move {
        sw.write_all(&down2).await.unwrap();
        sw.shutdown().await.unwrap();
    });
    let mut got_up = Vec::new();
    let mut got_down = Vec::new();
    within(60, "server read", sr.read_to_end(&mut got_up)).await.unwrap();
    within(60, "client read", cr.read_to_end(&mut got_down)).await.unwrap();
    within(30, "client writer", client_tx).await.unwrap();
    within(30, "server writer", server_tx).await.unwrap();
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 3, "every planned cut happened");
    assert_eq!(sha256(&got_up), sha256(&up));
    assert_eq!(sha256(&got_down), sha256(&down));
}
