//! An IPv6-only phone (a cellular network with NAT64, as many carriers run) reaches a
//! peer that published only an IPv4 address: the platform reports the network's NAT64
//! prefix with its snapshot, and msocket dials the address synthesized from it.
//!
//! Everything runs in a network namespace of its own (the phone's IPv6 address, the
//! peer's IPv4 address, and the NAT64 gateway's synthesized address all on its loopback),
//! with a NAT64 gateway in the test: a TCP relay from the synthesized IPv6 address to the
//! IPv4 one, which counts what it carried. A test binary of its own, so that msocket's
//! runtime starts inside the namespace.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use msocket_ffi::{Endpoint, EndpointOptions, Flow, InterfaceKind, NetworkInterface};
use msocket_lab::Netns;
use msocket_test_support::{data, sha256, LocalNameServer};

const T: u32 = 10_000;
const PEER: &str = "192.0.2.1";
const PHONE: &str = "2001:db8:64::2";
const PREFIX: &str = "64:ff9b::/96";
/// 192.0.2.1 under 64:ff9b::/96.
const SYNTHESIZED: &str = "64:ff9b::c000:201";

fn options(names: &LocalNameServer) -> EndpointOptions {
    EndpointOptions { connect_timeout_ms: 10_000, flow_deadline_ms: 20_000, ..EndpointOptions::new(names.url()) }
}

async fn receive_all(flow: &Arc<Flow>) -> Vec<u8> {
    let mut out = Vec::new();
    while flow.clone().await_received(65_536, T, None).await.unwrap() > 0 {
        out.extend(flow.take_received(65_536).unwrap());
    }
    out
}

/// A NAT64 gateway for one address: connections to `[SYNTHESIZED]:port` are carried to
/// `PEER:port`. Returns how many it carried so far.
async fn gateway(port: u16) -> Arc<AtomicUsize> {
    let listener = tokio::net::TcpListener::bind((SYNTHESIZED.parse::<std::net::Ipv6Addr>().unwrap(), port))
        .await
        .expect("bind the gateway to the synthesized address");
    let carried = Arc::new(AtomicUsize::new(0));
    let count = carried.clone();
    tokio::spawn(async move {
        while let Ok((mut inside, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outside) = tokio::net::TcpStream::connect((PEER, port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                }
            });
        }
    });
    carried
}

#[test]
#[ignore = "needs root (a network namespace with its own addresses); CI runs ignored tests as root"]
fn an_ipv6_only_phone_reaches_an_ipv4_only_peer_through_nat64() {
    assert!(msocket_lab::is_root(), "run as root: the test makes a network namespace");
    let ns = Netns::new("nat64").expect("a network namespace");
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "0").unwrap();
    ns.sysctl("net.ipv6.conf.lo.disable_ipv6", "0").unwrap();
    ns.add_addr("lo", PEER.parse().unwrap(), 32).unwrap();
    for v6 in [PHONE, SYNTHESIZED] {
        ns.ip(&["-6", "addr", "add", &format!("{v6}/128"), "dev", "lo", "nodad"]).unwrap();
    }
    let task = ns
        .spawn_runtime(|| async {
            let names = LocalNameServer::start();
            let mut o = options(&names);
            o.local_addresses = vec![PEER.into()];
            let server = Endpoint::new(vec![1; 32], o, None, None).unwrap();
            let listener = server.listen("v4only.test".into(), T, None).await.unwrap();
            let published = server.published_addresses();
            assert_eq!(published.len(), 1, "{published:?}");
            let port: u16 = published[0].rsplit(':').next().unwrap().parse().unwrap();
            let carried = gateway(port).await;

            let phone = Endpoint::new(vec![2; 32], options(&names), None, None).unwrap();
            let cellular = |nat64: Option<&str>| NetworkInterface {
                name: "rmnet0".into(),
                index: 7,
                kind: InterfaceKind::Cellular,
                metered: true,
                up: true,
                addresses: vec![PHONE.into()],
                nat64_prefix: nat64.map(Into::into),
            };
            // A prefix that is not one is refused, naming it.
            let bad = phone.update_network(vec![cellular(Some("64:ff9b::/80"))]);
            assert!(matches!(&bad, Err(msocket_ffi::MsocketError::InvalidArgument(m)) if m.contains("/80")), "{bad:?}");
            phone.update_network(vec![cellular(Some(PREFIX))]).unwrap();

            let accepting = {
                let listener = listener.clone();
                tokio::spawn(async move { listener.accept(T, None).await })
            };
            let c = phone.connect("v4only.test".into(), T, None).await.unwrap();
            let s = accepting.await.unwrap().unwrap();
            assert!(carried.load(Ordering::SeqCst) >= 1, "the flow did not go through the NAT64 gateway");
            // The path is from the phone's IPv6 address to the peer's IPv4 address (what
            // it published), not to the synthesized one.
            let paths = c.paths().unwrap();
            assert!(
                paths.iter().any(|p| p.local.starts_with(&format!("[{PHONE}]:")) && p.remote == published[0]),
                "{paths:?}"
            );

            let up = data(1_000_000, 9);
            let sender = tokio::spawn({
                let (c, up) = (c.clone(), up.clone());
                async move {
                    c.clone().send(up, T, None).await.unwrap();
                    c.finish(T, None).await.unwrap();
                }
            });
            let got = receive_all(&s).await;
            sender.await.unwrap();
            assert_eq!(sha256(&got), sha256(&up));
            c.release();
            s.release();
        })
        .expect("a runtime in the namespace");
    task.join(Duration::from_secs(60)).expect("the test in the namespace");
}
