//! The SDK surface driven as Kotlin and Swift drive it: real endpoints on loopback, a
//! real name server (msocketd's, in process), async calls with timeouts and cancellation,
//! pulled events, callbacks, pushed network snapshots, and bad input. The tests await the
//! calls on a runtime of their own, as the foreign side polls them from its threads.
//!
//! Nothing here sleeps to synchronise: every wait is on an event or a call, bounded by a
//! timeout.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use msocket_ffi::{
    CallbackError, CancelToken, Endpoint, Flow, FlowEvent, InterfaceKind, MsocketError,
    NetworkInterface, PathPolicy, SocketBinder,
};
use msocket_test_support::{data, sha256, LocalNameServer};

use common::{options, wait_event, T, WAIT};


fn key(byte: u8) -> Vec<u8> {
    vec![byte; 32]
}

fn server(names: &LocalNameServer, seed: u8) -> Endpoint {
    let mut o = options(names);
    o.local_addresses = vec!["127.0.0.1".into()];
    Endpoint::new(key(seed), o, None, None).unwrap()
}

/// Up to `max` received bytes, as the Kotlin and Swift layers' `receive` takes them.
async fn receive(flow: &Arc<Flow>, max: u32, timeout_ms: u32) -> Result<Option<Vec<u8>>, MsocketError> {
    loop {
        if flow.clone().await_received(max, timeout_ms, None).await? == 0 {
            return Ok(None);
        }
        let chunk = flow.take_received(max)?;
        if !chunk.is_empty() {
            return Ok(Some(chunk));
        }
    }
}

async fn receive_all(flow: &Arc<Flow>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = receive(flow, 64 * 1024, T).await.unwrap() {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Receives exactly `n` bytes.
async fn receive_exactly(flow: &Arc<Flow>, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(receive(flow, 100_000, T).await.unwrap().expect("the stream ended early"));
    }
    out
}

/// Opens a flow from `client` to `name` served by `server`; returns (client, server) flows.
async fn pair(client: &Endpoint, server: &Endpoint, name: &str) -> (Arc<Flow>, Arc<Flow>, Arc<msocket_ffi::Listener>) {
    let listener = server.listen(name.into(), T, None).await.unwrap();
    let accepting = accept_one(&listener);
    let c = client.connect(name.into(), T, None).await.unwrap();
    let s = accepting.await.unwrap().unwrap();
    (c, s, listener)
}

#[tokio::test]
async fn a_flow_carries_bytes_both_ways_and_finishes() {
    let names = LocalNameServer::start();
    let srv = server(&names, 1);
    let cli = Endpoint::new(key(2), options(&names), None, None).unwrap();
    let (c, s, _l) = pair(&cli, &srv, "bytes.test").await;
    assert_eq!(c.id(), s.id());
    assert_eq!(s.name(), "bytes.test");
    assert_eq!((cli.open_flows(), srv.open_flows()), (1, 1));

    let up = data(300_000, 1);
    let sender = {
        let (c, up) = (c.clone(), up.clone());
        tokio::spawn(async move {
            c.clone().send(up, T, None).await.unwrap();
            c.finish(T, None).await.unwrap();
        })
    };
    let got = receive_all(&s).await;
    sender.await.unwrap();
    assert_eq!(sha256(&got), sha256(&up));

    let down = data(100_000, 2);
    s.clone().send(down.clone(), T, None).await.unwrap();
    s.clone().finish(T, None).await.unwrap();
    assert_eq!(sha256(&receive_all(&c).await), sha256(&down));
    assert_eq!(receive(&c, 10, T).await.unwrap(), None, "the end of the stream stays the end");

    let stats = c.stats().unwrap();
    assert_eq!((stats.bytes_written, stats.bytes_read), (300_000, 100_000));
    // The events since the flow opened, ending with Closed, after which the stream ends.
    let closed = wait_event(&c, "closed", |e| matches!(e, FlowEvent::Closed { .. })).await;
    assert!(matches!(closed, FlowEvent::Closed { error: None, .. }), "{closed:?}");
    assert_eq!(c.clone().next_event(None).await, Ok(None), "the events end after Closed");
    assert_eq!(c.clone().next_event(None).await, Ok(None));
    let counted = tokio::time::timeout(WAIT, cli.open_flows_changed(1, None)).await.expect("the count did not drop");
    assert_eq!(counted, Ok(0), "a closed flow is not open");
    c.release();
    assert!(matches!(c.clone().send(vec![1], T, None).await, Err(MsocketError::Closed(m)) if m.contains("closed")));
    assert!(matches!(c.paths(), Err(MsocketError::Closed(_))));
}

#[tokio::test]
async fn receive_times_out_and_release_wakes_a_waiting_receive() {
    let names = LocalNameServer::start();
    let srv = server(&names, 3);
    let cli = Endpoint::new(key(4), options(&names), None, None).unwrap();
    let (c, _s, listener) = pair(&cli, &srv, "wait.test").await;
    let started = std::time::Instant::now();
    assert!(matches!(receive(&c, 100, 50).await, Err(MsocketError::Timeout(m)) if m.contains("50 ms")));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(receive(&c, 0, 50).await, Err(MsocketError::InvalidArgument(_))));

    let waiting = tokio::spawn(receive_owned(c.clone(), 60_000));
    // Whether the receive is already waiting or not yet started, it fails with Closed
    // at once instead of waiting its minute.
    c.release();
    assert!(matches!(waiting.await.unwrap(), Err(MsocketError::Closed(_))));
    assert_eq!(cli.open_flows(), 0, "a released flow is not open");

    let accepting = {
        let listener = listener.clone();
        tokio::spawn(async move { listener.accept(60_000, None).await })
    };
    listener.release();
    assert!(matches!(accepting.await.unwrap(), Err(MsocketError::Closed(_))));
    assert!(matches!(listener.accept(10, None).await, Err(MsocketError::Closed(_))));
}

#[tokio::test]
async fn bad_input_is_refused_with_a_typed_error() {
    let names = LocalNameServer::start();
    let o = options(&names);
    let err = |r: Result<Endpoint, MsocketError>| r.err().expect("accepted");
    assert!(matches!(err(Endpoint::new(vec![1; 31], o.clone(), None, None)), MsocketError::InvalidArgument(m) if m.contains("31 bytes")));
    let mut bad = o.clone();
    bad.names_url = "http://names.example".into();
    assert!(matches!(err(Endpoint::new(key(5), bad, None, None)), MsocketError::BadUrl(m) if m.contains("scheme")));
    let mut bad = o.clone();
    bad.local_addresses = vec!["not-an-ip".into()];
    assert!(matches!(err(Endpoint::new(key(5), bad, None, None)), MsocketError::InvalidArgument(m) if m.contains("not-an-ip")));
    let mut bad = o.clone();
    bad.connect_timeout_ms = 0;
    assert!(matches!(err(Endpoint::new(key(5), bad, None, None)), MsocketError::InvalidArgument(m) if m.contains("connect_timeout_ms")));

    let ep = Endpoint::new(key(5), o, None, None).unwrap();
    assert!(matches!(ep.connect("nobody.test".into(), T, None).await, Err(MsocketError::NameNotFound(m)) if m.contains("nobody.test")));
    assert!(matches!(ep.connect("Not A Name".into(), T, None).await, Err(MsocketError::InvalidArgument(_))));
    assert!(matches!(ep.listen("".into(), T, None).await, Err(MsocketError::InvalidArgument(_))));
    assert!(matches!(msocket_ffi::key_fingerprint(vec![]), Err(MsocketError::InvalidArgument(_))));
    assert_eq!(msocket_ffi::generate_key().unwrap().len(), 32);
    assert_eq!(msocket_ffi::key_fingerprint(key(5)).unwrap(), ep.fingerprint());

    ep.release();
    assert!(matches!(ep.connect("x.test".into(), T, None).await, Err(MsocketError::Closed(_))));
    assert!(matches!(ep.open_flows_changed(0, None).await, Err(MsocketError::Closed(_))));
    assert!(matches!(ep.update_network(Vec::new()), Err(MsocketError::Closed(_))));
    ep.release();
}

/// Records every socket the core asks the platform to bind.
#[derive(Default)]
struct Binder {
    calls: Mutex<Vec<(i32, String)>>,
}

struct BinderHandle(Arc<Binder>);

impl SocketBinder for BinderHandle {
    fn bind_socket(&self, fd: i32, local_address: String) -> Result<(), CallbackError> {
        // The descriptor is a live socket while the call lasts.
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|e| CallbackError::Failed {
            reason: e.to_string(),
        })?;
        assert!(link.to_string_lossy().starts_with("socket:"), "{link:?}");
        self.0.calls.lock().unwrap().push((fd, local_address));
        Ok(())
    }
}

fn wifi(name: &str, index: u32, kind: InterfaceKind, addr: &str) -> NetworkInterface {
    NetworkInterface {
        name: name.into(),
        index,
        kind,
        metered: kind == InterfaceKind::Cellular,
        up: true,
        addresses: vec![addr.into()],
        nat64_prefix: None,
    }
}

#[tokio::test]
async fn pushed_networks_move_the_flow_and_sockets_are_bound() {
    let names = LocalNameServer::start();
    let srv = server(&names, 6);
    let binder = Arc::new(Binder::default());
    let mut o = options(&names);
    o.use_loopback = true;
    let cli = Endpoint::new(key(7), o, Some(Box::new(BinderHandle(binder.clone()))), None).unwrap();
    assert!(cli.update_network(vec![wifi("wlan0", 3, InterfaceKind::Wifi, "127.0.0.2")]).unwrap());
    assert!(!cli.update_network(vec![wifi("wlan0", 3, InterfaceKind::Wifi, "127.0.0.2")]).unwrap(), "same snapshot");
    assert!(matches!(
        cli.update_network(vec![wifi("wlan0", 3, InterfaceKind::Wifi, "127.0.0.256")]),
        Err(MsocketError::InvalidArgument(m)) if m.contains("127.0.0.256")
    ));

    let (c, s, _l) = pair(&cli, &srv, "move.test").await;
    c.set_policy(PathPolicy::Energy).unwrap();
    assert_eq!(c.policy().unwrap(), PathPolicy::Energy);
    let paths = c.paths().unwrap();
    let on_wifi = paths.iter().find(|p| p.local.starts_with("127.0.0.2:")).unwrap_or_else(|| panic!("{paths:?}"));
    assert_eq!(on_wifi.interface_kind, Some(InterfaceKind::Wifi), "the path leaves from the pushed Wi-Fi");
    assert!(binder.calls.lock().unwrap().iter().any(|(_, a)| a == "127.0.0.2"));
    // The server is pinned to its address and was told of no interface.
    let paths = s.paths().unwrap();
    assert!(!paths.is_empty() && paths.iter().all(|p| p.interface_kind.is_none()), "{paths:?}");

    let first = data(50_000, 3);
    c.clone().send(first.clone(), T, None).await.unwrap();
    assert_eq!(sha256(&receive_exactly(&s, 50_000).await), sha256(&first));
    // The move: Wi-Fi now has another address.
    assert!(cli.update_network(vec![wifi("wlan0", 3, InterfaceKind::Wifi, "127.0.0.3")]).unwrap());
    let moved = wait_event(&c, "moved", |e| matches!(e, FlowEvent::Moved { .. })).await;
    assert_eq!(moved, FlowEvent::Moved { addresses: vec!["127.0.0.3".into()] });
    wait_event(&c, "path added", |e| matches!(e, FlowEvent::PathAdded { local, .. } if local.starts_with("127.0.0.3:"))).await;
    let second = data(50_000, 4);
    c.clone().send(second.clone(), T, None).await.unwrap();
    assert_eq!(sha256(&receive_exactly(&s, 50_000).await), sha256(&second));
    let paths = c.paths().unwrap();
    assert!(paths.iter().all(|p| p.local.starts_with("127.0.0.3:")), "{paths:?}");
    assert!(paths.iter().all(|p| p.interface_kind == Some(InterfaceKind::Wifi)), "{paths:?}");
    assert!(binder.calls.lock().unwrap().iter().any(|(_, a)| a == "127.0.0.3"));
    assert!(c.energy_joules().unwrap().is_some_and(|j| j > 0.0), "a Wi-Fi path costs energy");
    s.release();
}

/// Accepts one flow on `listener` in the background.
fn accept_one(listener: &Arc<msocket_ffi::Listener>) -> tokio::task::JoinHandle<Result<Arc<Flow>, MsocketError>> {
    let listener = listener.clone();
    tokio::spawn(async move { listener.accept(T, None).await })
}

/// [`receive`] of a flow it owns (for spawning).
async fn receive_owned(flow: Arc<Flow>, timeout_ms: u32) -> Result<Option<Vec<u8>>, MsocketError> {
    receive(&flow, 100, timeout_ms).await
}

#[tokio::test]
async fn a_peer_named_with_its_fingerprint_is_reached_only_with_that_key() {
    let names = LocalNameServer::start();
    let srv = server(&names, 20);
    let cli = Endpoint::new(key(21), options(&names), None, None).unwrap();
    let listener = srv.listen("keyed.test".into(), T, None).await.unwrap();

    let accepting = accept_one(&listener);
    let c = cli.connect(format!("keyed.test#{}", srv.fingerprint()), T, None).await.unwrap();
    let s = accepting.await.unwrap().unwrap();
    assert_eq!(c.name(), "keyed.test");
    assert_eq!(c.peer_fingerprint(), srv.fingerprint(), "the client knows whom it reached");
    assert_eq!(s.peer_fingerprint(), cli.fingerprint(), "the server knows who connected");
    // All 64 digits, in capitals, name the same key.
    let public = msocket::Identity::from_seed([20; 32]).public();
    let full: String = sha256(&[public.signing, public.noise].concat()).iter().map(|b| format!("{b:02X}")).collect();
    assert!(full.to_lowercase().starts_with(&srv.fingerprint()));
    let accepting = accept_one(&listener);
    let c2 = cli.connect(format!("keyed.test#{full}"), T, None).await.unwrap();
    accepting.await.unwrap().unwrap();
    c2.release();

    let impostor = msocket_ffi::key_fingerprint(key(22)).unwrap();
    let e = cli.connect(format!("keyed.test#{impostor}"), T, None).await.err().expect("connected to the wrong key");
    assert!(
        matches!(&e, MsocketError::WrongKey(m) if m.contains(&impostor) && m.contains(&srv.fingerprint())),
        "{e:?}"
    );
    let e = cli.connect("keyed.test#abc".into(), T, None).await.err().expect("accepted a bad fingerprint");
    assert!(matches!(&e, MsocketError::InvalidArgument(m) if m.contains("keyed.test#abc") && m.contains("hex digits")), "{e:?}");
    let e = cli.connect(format!("keyed.test#{}", "z".repeat(32)), T, None).await.err().expect("accepted a bad fingerprint");
    assert!(matches!(&e, MsocketError::InvalidArgument(m) if m.contains("'z'")), "{e:?}");
    c.release();
    s.release();
}

#[tokio::test]
async fn an_allow_listed_listener_refuses_a_stranger_and_takes_the_allowed_key() {
    let names = LocalNameServer::start();
    let friend = Endpoint::new(key(31), options(&names), None, None).unwrap();
    let stranger = Endpoint::new(key(32), options(&names), None, None).unwrap();
    let mut o = options(&names);
    o.local_addresses = vec!["127.0.0.1".into()];
    o.allowed_peers = Some(vec![format!(" {} ", friend.fingerprint())]);
    let srv = Endpoint::new(key(30), o.clone(), None, None).unwrap();
    let listener = srv.listen("guarded.test".into(), T, None).await.unwrap();

    let e = stranger.connect("guarded.test".into(), T, None).await.err().expect("a stranger got in");
    assert!(matches!(&e, MsocketError::NotAllowed(m) if m.contains("guarded.test") && m.contains("allow-list")), "{e:?}");
    assert!(matches!(listener.accept(200, None).await, Err(MsocketError::Timeout(_))), "nothing of the stranger reaches accept");

    let accepting = accept_one(&listener);
    let c = friend.connect("guarded.test".into(), T, None).await.unwrap();
    let s = accepting.await.unwrap().unwrap();
    assert_eq!(s.peer_fingerprint(), friend.fingerprint());
    assert_eq!(c.peer_fingerprint(), srv.fingerprint());
    c.clone().send(b"hello".to_vec(), T, None).await.unwrap();
    c.finish(T, None).await.unwrap();
    assert_eq!(receive_all(&s).await, b"hello");

    // A bad fingerprint in the list is refused, naming it.
    let mut bad = o.clone();
    bad.allowed_peers = Some(vec![friend.fingerprint(), "0123".into()]);
    let e = Endpoint::new(key(30), bad, None, None).err().expect("accepted a bad allow-list");
    assert!(matches!(&e, MsocketError::InvalidArgument(m) if m.contains("allowed_peers") && m.contains("\"0123\"")), "{e:?}");
}

/// An app's pin store: a map, and every call it got.
#[derive(Default)]
struct AppPins {
    pins: Mutex<std::collections::HashMap<String, msocket_ffi::PinnedKeys>>,
    calls: Mutex<Vec<String>>,
}

struct PinsHandle(Arc<AppPins>);

impl msocket_ffi::PinStore for PinsHandle {
    fn get(&self, name: String) -> Result<Option<msocket_ffi::PinnedKeys>, CallbackError> {
        self.0.calls.lock().unwrap().push(format!("get {name}"));
        Ok(self.0.pins.lock().unwrap().get(&name).cloned())
    }
    fn set(&self, name: String, pin: msocket_ffi::PinnedKeys) -> Result<(), CallbackError> {
        self.0.calls.lock().unwrap().push(format!("set {name}"));
        self.0.pins.lock().unwrap().insert(name, pin);
        Ok(())
    }
    fn remove(&self, name: String) -> Result<(), CallbackError> {
        self.0.calls.lock().unwrap().push(format!("remove {name}"));
        self.0.pins.lock().unwrap().remove(&name);
        Ok(())
    }
}

#[tokio::test]
async fn an_app_pin_store_pins_the_first_key_and_a_changed_key_is_refused() {
    // The pins outlive endpoints (as app storage outlives the process); the second name
    // service hands the same name to another key, as an impostor would.
    let store = Arc::new(AppPins::default());
    let names = LocalNameServer::start();
    let other_names = LocalNameServer::start();
    let srv = server(&names, 40);
    let impostor = server(&other_names, 41);
    let _l = srv.listen("pinned.test".into(), T, None).await.unwrap();
    let impostor_listener = impostor.listen("pinned.test".into(), T, None).await.unwrap();

    let cli = Endpoint::new(key(42), options(&names), None, Some(Box::new(PinsHandle(store.clone())))).unwrap();
    let c = cli.connect("pinned.test".into(), T, None).await.unwrap();
    assert!(store.calls.lock().unwrap().contains(&"set pinned.test".to_string()), "{:?}", store.calls.lock().unwrap());
    let pin = store.pins.lock().unwrap()["pinned.test"].clone();
    assert_eq!(msocket_ffi::pinned_fingerprint(pin.clone()).unwrap(), srv.fingerprint());
    assert!(pin.seq > 0);
    c.release();
    cli.release();

    let cli = Endpoint::new(key(42), options(&other_names), None, Some(Box::new(PinsHandle(store.clone())))).unwrap();
    let e = cli.connect("pinned.test".into(), T, None).await.err().expect("connected to a changed key");
    let hint = format!("pinned.test#{}", impostor.fingerprint());
    assert!(
        matches!(&e, MsocketError::KeyChanged(m) if m.contains(&srv.fingerprint()) && m.contains(&hint)),
        "{e:?}"
    );
    assert_eq!(store.pins.lock().unwrap()["pinned.test"], pin, "the pin stands");

    // Naming the new key accepts it: the pin is replaced.
    let accepting = accept_one(&impostor_listener);
    let c = cli.connect(hint, T, None).await.unwrap();
    accepting.await.unwrap().unwrap();
    assert_eq!(c.peer_fingerprint(), impostor.fingerprint());
    let repinned = store.pins.lock().unwrap()["pinned.test"].clone();
    assert_eq!(msocket_ffi::pinned_fingerprint(repinned).unwrap(), impostor.fingerprint());

    // A pin the store mangled fails the connect with PinStore, saying what is wrong.
    store.pins.lock().unwrap().get_mut("pinned.test").unwrap().signing_key.truncate(5);
    let e = cli.connect("pinned.test".into(), T, None).await.err().expect("connected past a broken pin");
    assert!(matches!(&e, MsocketError::PinStore(m) if m.contains("signing_key is 5 bytes")), "{e:?}");
}

#[tokio::test]
async fn cancelled_receives_lose_no_byte() {
    let names = LocalNameServer::start();
    let srv = server(&names, 50);
    let cli = Endpoint::new(key(51), options(&names), None, None).unwrap();
    let (c, s, _l) = pair(&cli, &srv, "cancel.test").await;

    // A receive cancelled by its token fails with Cancelled at once.
    let token = Arc::new(CancelToken::new());
    let waiting = tokio::spawn({
        let (s, token) = (s.clone(), token.clone());
        async move { s.await_received(100, 60_000, Some(token)).await }
    });
    token.cancel();
    assert!(matches!(waiting.await.unwrap(), Err(MsocketError::Cancelled(m)) if m.contains("receive")));

    // Receives dropped at every point of their wait (as a cancelled coroutine drops them)
    // while 2 MB stream in: every byte still arrives once, in order.
    let up = data(2_000_000, 5);
    let sender = tokio::spawn({
        let (c, up) = (c.clone(), up.clone());
        async move {
            for chunk in up.chunks(10_000) {
                c.clone().send(chunk.to_vec(), T, None).await.unwrap();
            }
            c.finish(T, None).await.unwrap();
        }
    });
    let mut got = Vec::new();
    let (mut dropped, mut n) = (0, 0u64);
    loop {
        n += 1;
        let call = s.clone().await_received(7_000, T, None);
        match n % 3 {
            // Started, then dropped at once: its task may be waiting, or may have just
            // taken bytes from the core.
            0 => {
                let mut call = Box::pin(call);
                if let Some(r) = futures_poll_once(call.as_mut()) {
                    if r.unwrap() == 0 {
                        break;
                    }
                }
                drop(call);
                dropped += 1;
            }
            // Dropped by a deadline while it waits, or run to the end.
            1 => match tokio::time::timeout(Duration::from_millis(1), call).await {
                Err(_) => dropped += 1,
                Ok(r) => {
                    if r.unwrap() == 0 {
                        break;
                    }
                }
            },
            _ => {
                if call.await.unwrap() == 0 {
                    break;
                }
            }
        }
        got.extend(s.take_received(7_000).unwrap());
    }
    sender.await.unwrap();
    assert!(dropped > 10, "only {dropped} receives were dropped: the test did not test");
    assert_eq!(got.len(), up.len());
    assert_eq!(sha256(&got), sha256(&up));
}

#[tokio::test]
async fn a_connect_dropped_after_the_flow_opened_leaves_nothing_open() {
    let names = LocalNameServer::start();
    let srv = server(&names, 52);
    let cli = Endpoint::new(key(53), options(&names), None, None).unwrap();
    let listener = srv.listen("dropped.test".into(), T, None).await.unwrap();
    let accepting = accept_one(&listener);

    // The connect runs (its work is on the SDK's runtime) but nobody takes its result:
    // polled once to start it, then dropped after the server accepted the flow.
    let mut connecting = Box::pin(cli.connect("dropped.test".into(), T, None));
    assert!(futures_poll_once(connecting.as_mut()).is_none());
    let accepted = accepting.await.unwrap().unwrap();
    // The client's side of the flow exists once it is counted; its connect has not been
    // polled since it started.
    let counted = tokio::time::timeout(WAIT, cli.open_flows_changed(0, None)).await.expect("the flow was never counted");
    assert_eq!(counted, Ok(1));
    drop(connecting);

    // The flow the dropped connect opened is closed: the server sees its end, and the
    // client counts no open flow.
    let end = tokio::time::timeout(WAIT, receive(&accepted, 100, T)).await.expect("the server's flow did not end");
    assert!(matches!(end, Ok(None) | Err(MsocketError::FlowFailed(_) | MsocketError::PeerAborted(_))), "{end:?}");
    let open = tokio::time::timeout(WAIT, async {
        let mut seen = cli.open_flows();
        while seen != 0 {
            seen = cli.open_flows_changed(seen, None).await.unwrap();
        }
    });
    open.await.expect("the client still counts the dropped flow as open");

    // A connect cancelled by its token fails with Cancelled.
    let token = Arc::new(CancelToken::new());
    token.cancel();
    let r = cli.connect("dropped.test".into(), T, Some(token)).await.err();
    assert!(matches!(&r, Some(MsocketError::Cancelled(m)) if m.contains("connect")), "{r:?}");
}

/// Polls `fut` once with a waker that does nothing.
fn futures_poll_once<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> Option<F::Output> {
    match fut.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
