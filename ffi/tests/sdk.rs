//! The SDK surface driven from plain threads, as Kotlin and Swift drive it: real
//! endpoints on loopback, a real name server (msocketd's, in process), blocking calls
//! with timeouts, callbacks, pushed network snapshots, and bad input.
//!
//! Nothing here sleeps to synchronise: every wait is on a channel or a blocking call,
//! bounded by a timeout.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msocket_ffi::{
    CallbackError, Endpoint, EndpointOptions, Flow, FlowEvent, FlowListener, InterfaceKind, MsocketError,
    NetworkInterface, PathPolicy, SocketBinder,
};
use msocket_test_support::{data, sha256, LocalNameServer};

const T: u32 = 10_000;
const WAIT: Duration = Duration::from_secs(10);

fn options(names: &LocalNameServer) -> EndpointOptions {
    EndpointOptions {
        names_url: names.url(),
        name_timeout_ms: 5_000,
        connect_timeout_ms: 10_000,
        flow_deadline_ms: 20_000,
        policy: PathPolicy::Backup,
        standby_paths: true,
        use_loopback: false,
        local_addresses: Vec::new(),
        listen_port: 0,
        allowed_peers: None,
        relays: Vec::new(),
        relay_only: false,
    }
}

fn key(byte: u8) -> Vec<u8> {
    vec![byte; 32]
}

fn server(names: &LocalNameServer, seed: u8) -> Endpoint {
    let mut o = options(names);
    o.local_addresses = vec!["127.0.0.1".into()];
    Endpoint::new(key(seed), o, None, None).unwrap()
}

/// Collects a flow's events on a channel.
struct Events(Mutex<mpsc::Sender<FlowEvent>>);

impl FlowListener for Events {
    fn on_event(&self, event: FlowEvent) -> Result<(), CallbackError> {
        let _ = self.0.lock().unwrap().send(event);
        Ok(())
    }
}

fn listen_events(flow: &Flow) -> mpsc::Receiver<FlowEvent> {
    let (tx, rx) = mpsc::channel();
    flow.set_listener(Some(Box::new(Events(Mutex::new(tx))))).unwrap();
    rx
}

/// The first event matching `want`, within [`WAIT`].
fn wait_event(rx: &mpsc::Receiver<FlowEvent>, what: &str, want: impl Fn(&FlowEvent) -> bool) -> FlowEvent {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) if want(&ev) => return ev,
            Ok(_) => {}
            Err(e) => panic!("no {what} event within {WAIT:?}: {e}"),
        }
    }
}

fn receive_all(flow: &Flow) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = flow.receive(64 * 1024, T).unwrap() {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Opens a flow from `client` to `name` served by `server`; returns (client, server) flows.
fn pair(client: &Endpoint, server: &Endpoint, name: &str) -> (Arc<Flow>, Arc<Flow>, Arc<msocket_ffi::Listener>) {
    let listener = server.listen(name.into(), T).unwrap();
    let accepting = {
        let listener = listener.clone();
        std::thread::spawn(move || listener.accept(T))
    };
    let c = client.connect(name.into(), T).unwrap();
    let s = accepting.join().unwrap().unwrap();
    (c, s, listener)
}

#[test]
fn a_flow_carries_bytes_both_ways_and_finishes() {
    let names = LocalNameServer::start();
    let srv = server(&names, 1);
    let cli = Endpoint::new(key(2), options(&names), None, None).unwrap();
    let (c, s, _l) = pair(&cli, &srv, "bytes.test");
    assert_eq!(c.id(), s.id());
    assert_eq!(s.name(), "bytes.test");
    let events = listen_events(&c);

    let up = data(300_000, 1);
    let sender = {
        let (c, up) = (c.clone(), up.clone());
        std::thread::spawn(move || {
            c.send(up, T).unwrap();
            c.finish(T).unwrap();
        })
    };
    let got = receive_all(&s);
    sender.join().unwrap();
    assert_eq!(sha256(&got), sha256(&up));

    let down = data(100_000, 2);
    s.send(down.clone(), T).unwrap();
    s.finish(T).unwrap();
    assert_eq!(receive_all(&c), down);
    assert_eq!(c.receive(10, T).unwrap(), None, "the end of the stream stays the end");

    let stats = c.stats().unwrap();
    assert_eq!((stats.bytes_written, stats.bytes_read), (300_000, 100_000));
    let closed = wait_event(&events, "closed", |e| matches!(e, FlowEvent::Closed { .. }));
    assert!(matches!(closed, FlowEvent::Closed { error: None, .. }), "{closed:?}");
    c.release();
    assert!(matches!(c.send(vec![1], T), Err(MsocketError::Closed(m)) if m.contains("closed")));
    assert!(matches!(c.paths(), Err(MsocketError::Closed(_))));
}

#[test]
fn receive_times_out_and_release_wakes_a_waiting_receive() {
    let names = LocalNameServer::start();
    let srv = server(&names, 3);
    let cli = Endpoint::new(key(4), options(&names), None, None).unwrap();
    let (c, _s, listener) = pair(&cli, &srv, "wait.test");
    let started = std::time::Instant::now();
    assert!(matches!(c.receive(100, 50), Err(MsocketError::Timeout(m)) if m.contains("50 ms")));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(c.receive(0, 50), Err(MsocketError::InvalidArgument(_))));

    let waiting = {
        let c = c.clone();
        std::thread::spawn(move || c.receive(100, 60_000))
    };
    // Whether the receive is already waiting or not yet started, it fails with Closed
    // at once instead of waiting its minute.
    c.release();
    assert!(matches!(waiting.join().unwrap(), Err(MsocketError::Closed(_))));

    let accepting = {
        let listener = listener.clone();
        std::thread::spawn(move || listener.accept(60_000))
    };
    listener.release();
    assert!(matches!(accepting.join().unwrap(), Err(MsocketError::Closed(_))));
    assert!(matches!(listener.accept(10), Err(MsocketError::Closed(_))));
}

#[test]
fn bad_input_is_refused_with_a_typed_error() {
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
    assert!(matches!(ep.connect("nobody.test".into(), T), Err(MsocketError::NameNotFound(m)) if m.contains("nobody.test")));
    assert!(matches!(ep.connect("Not A Name".into(), T), Err(MsocketError::InvalidArgument(_))));
    assert!(matches!(ep.listen("".into(), T), Err(MsocketError::InvalidArgument(_))));
    assert!(matches!(msocket_ffi::key_fingerprint(vec![]), Err(MsocketError::InvalidArgument(_))));
    assert_eq!(msocket_ffi::generate_key().unwrap().len(), 32);
    assert_eq!(msocket_ffi::key_fingerprint(key(5)).unwrap(), ep.fingerprint());

    ep.release();
    assert!(matches!(ep.connect("x.test".into(), T), Err(MsocketError::Closed(_))));
    assert!(matches!(ep.update_network(Vec::new()), Err(MsocketError::Closed(_))));
    ep.release();
}

/// A listener that tries a blocking call from its callback thread.
struct Reentrant {
    flow: Mutex<Option<Arc<Flow>>>,
    result: Mutex<mpsc::Sender<Result<(), MsocketError>>>,
}

impl FlowListener for Reentrant {
    fn on_event(&self, _event: FlowEvent) -> Result<(), CallbackError> {
        if let Some(flow) = self.flow.lock().unwrap().take() {
            let _ = self.result.lock().unwrap().send(flow.send(vec![1], 1000));
        }
        Err(CallbackError::Failed { reason: "listeners may fail; the flow goes on".into() })
    }
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
    }
}

#[test]
fn pushed_networks_move_the_flow_and_sockets_are_bound() {
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

    let (c, s, _l) = pair(&cli, &srv, "move.test");
    c.set_policy(PathPolicy::Energy).unwrap();
    assert_eq!(c.policy().unwrap(), PathPolicy::Energy);
    let events = listen_events(&c);
    let paths = c.paths().unwrap();
    assert!(paths.iter().any(|p| p.local.starts_with("127.0.0.2:")), "{paths:?}");
    assert!(binder.calls.lock().unwrap().iter().any(|(_, a)| a == "127.0.0.2"));

    // A callback that calls a waiting method is refused, and a failing callback is no
    // harm: the flow still works.
    let (tx, rx) = mpsc::channel();
    let reentrant = Reentrant { flow: Mutex::new(Some(c.clone())), result: Mutex::new(tx) };
    s.set_listener(Some(Box::new(reentrant))).unwrap();

    c.send(data(50_000, 3), T).unwrap();
    let mut got = 0;
    while got < 50_000 {
        got += s.receive(100_000, T).unwrap().unwrap().len();
    }
    // The move: Wi-Fi now has another address.
    assert!(cli.update_network(vec![wifi("wlan0", 3, InterfaceKind::Wifi, "127.0.0.3")]).unwrap());
    let moved = wait_event(&events, "moved", |e| matches!(e, FlowEvent::Moved { .. }));
    assert_eq!(moved, FlowEvent::Moved { addresses: vec!["127.0.0.3".into()] });
    wait_event(&events, "path added", |e| matches!(e, FlowEvent::PathAdded { local, .. } if local.starts_with("127.0.0.3:")));
    c.send(data(50_000, 4), T).unwrap();
    let mut got = 0;
    while got < 50_000 {
        got += s.receive(100_000, T).unwrap().unwrap().len();
    }
    let paths = c.paths().unwrap();
    assert!(paths.iter().all(|p| p.local.starts_with("127.0.0.3:")), "{paths:?}");
    assert!(binder.calls.lock().unwrap().iter().any(|(_, a)| a == "127.0.0.3"));
    assert!(c.energy_joules().unwrap().is_some_and(|j| j > 0.0), "a Wi-Fi path costs energy");
    s.release();
    let refused = rx.recv_timeout(WAIT).expect("the server's listener ran");
    assert!(matches!(refused, Err(MsocketError::WrongThread(_))), "{refused:?}");
}

/// Accepts one flow on `listener` in the background.
fn accept_one(listener: &Arc<msocket_ffi::Listener>) -> std::thread::JoinHandle<Result<Arc<Flow>, MsocketError>> {
    let listener = listener.clone();
    std::thread::spawn(move || listener.accept(T))
}

#[test]
fn a_peer_named_with_its_fingerprint_is_reached_only_with_that_key() {
    let names = LocalNameServer::start();
    let srv = server(&names, 20);
    let cli = Endpoint::new(key(21), options(&names), None, None).unwrap();
    let listener = srv.listen("keyed.test".into(), T).unwrap();

    let accepting = accept_one(&listener);
    let c = cli.connect(format!("keyed.test#{}", srv.fingerprint()), T).unwrap();
    let s = accepting.join().unwrap().unwrap();
    assert_eq!(c.name(), "keyed.test");
    assert_eq!(c.peer_fingerprint(), srv.fingerprint(), "the client knows whom it reached");
    assert_eq!(s.peer_fingerprint(), cli.fingerprint(), "the server knows who connected");
    // All 64 digits, in capitals, name the same key.
    let public = msocket::Identity::from_seed([20; 32]).public();
    let full: String = sha256(&[public.signing, public.noise].concat()).iter().map(|b| format!("{b:02X}")).collect();
    assert!(full.to_lowercase().starts_with(&srv.fingerprint()));
    let accepting = accept_one(&listener);
    let c2 = cli.connect(format!("keyed.test#{full}"), T).unwrap();
    accepting.join().unwrap().unwrap();
    c2.release();

    let impostor = msocket_ffi::key_fingerprint(key(22)).unwrap();
    let e = cli.connect(format!("keyed.test#{impostor}"), T).err().expect("connected to the wrong key");
    assert!(
        matches!(&e, MsocketError::WrongKey(m) if m.contains(&impostor) && m.contains(&srv.fingerprint())),
        "{e:?}"
    );
    let e = cli.connect("keyed.test#abc".into(), T).err().expect("accepted a bad fingerprint");
    assert!(matches!(&e, MsocketError::InvalidArgument(m) if m.contains("keyed.test#abc") && m.contains("hex digits")), "{e:?}");
    let e = cli.connect(format!("keyed.test#{}", "z".repeat(32)), T).err().expect("accepted a bad fingerprint");
    assert!(matches!(&e, MsocketError::InvalidArgument(m) if m.contains("'z'")), "{e:?}");
    c.release();
    s.release();
}

#[test]
fn an_allow_listed_listener_refuses_a_stranger_and_takes_the_allowed_key() {
    let names = LocalNameServer::start();
    let friend = Endpoint::new(key(31), options(&names), None, None).unwrap();
    let stranger = Endpoint::new(key(32), options(&names), None, None).unwrap();
    let mut o = options(&names);
    o.local_addresses = vec!["127.0.0.1".into()];
    o.allowed_peers = Some(vec![format!(" {} ", friend.fingerprint())]);
    let srv = Endpoint::new(key(30), o.clone(), None, None).unwrap();
    let listener = srv.listen("guarded.test".into(), T).unwrap();

    let e = stranger.connect("guarded.test".into(), T).err().expect("a stranger got in");
    assert!(matches!(&e, MsocketError::NotAllowed(m) if m.contains("guarded.test") && m.contains("allow-list")), "{e:?}");
    assert!(matches!(listener.accept(200), Err(MsocketError::Timeout(_))), "nothing of the stranger reaches accept");

    let accepting = accept_one(&listener);
    let c = friend.connect("guarded.test".into(), T).unwrap();
    let s = accepting.join().unwrap().unwrap();
    assert_eq!(s.peer_fingerprint(), friend.fingerprint());
    assert_eq!(c.peer_fingerprint(), srv.fingerprint());
    c.send(b"hello".to_vec(), T).unwrap();
    c.finish(T).unwrap();
    assert_eq!(receive_all(&s), b"hello");

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

#[test]
fn an_app_pin_store_pins_the_first_key_and_a_changed_key_is_refused() {
    // The pins outlive endpoints (as app storage outlives the process); the second name
    // service hands the same name to another key, as an impostor would.
    let store = Arc::new(AppPins::default());
    let names = LocalNameServer::start();
    let other_names = LocalNameServer::start();
    let srv = server(&names, 40);
    let impostor = server(&other_names, 41);
    let _l = srv.listen("pinned.test".into(), T).unwrap();
    let impostor_listener = impostor.listen("pinned.test".into(), T).unwrap();

    let cli = Endpoint::new(key(42), options(&names), None, Some(Box::new(PinsHandle(store.clone())))).unwrap();
    let c = cli.connect("pinned.test".into(), T).unwrap();
    assert!(store.calls.lock().unwrap().contains(&"set pinned.test".to_string()), "{:?}", store.calls.lock().unwrap());
    let pin = store.pins.lock().unwrap()["pinned.test"].clone();
    assert_eq!(msocket_ffi::pinned_fingerprint(pin.clone()).unwrap(), srv.fingerprint());
    assert!(pin.seq > 0);
    c.release();
    cli.release();

    let cli = Endpoint::new(key(42), options(&other_names), None, Some(Box::new(PinsHandle(store.clone())))).unwrap();
    let e = cli.connect("pinned.test".into(), T).err().expect("connected to a changed key");
    let hint = format!("pinned.test#{}", impostor.fingerprint());
    assert!(
        matches!(&e, MsocketError::KeyChanged(m) if m.contains(&srv.fingerprint()) && m.contains(&hint)),
        "{e:?}"
    );
    assert_eq!(store.pins.lock().unwrap()["pinned.test"], pin, "the pin stands");

    // Naming the new key accepts it: the pin is replaced.
    let accepting = accept_one(&impostor_listener);
    let c = cli.connect(hint, T).unwrap();
    accepting.join().unwrap().unwrap();
    assert_eq!(c.peer_fingerprint(), impostor.fingerprint());
    let repinned = store.pins.lock().unwrap()["pinned.test"].clone();
    assert_eq!(msocket_ffi::pinned_fingerprint(repinned).unwrap(), impostor.fingerprint());

    // A pin the store mangled fails the connect with PinStore, saying what is wrong.
    store.pins.lock().unwrap().get_mut("pinned.test").unwrap().signing_key.truncate(5);
    let e = cli.connect("pinned.test".into(), T).err().expect("connected past a broken pin");
    assert!(matches!(&e, MsocketError::PinStore(m) if m.contains("signing_key is 5 bytes")), "{e:?}");
}
