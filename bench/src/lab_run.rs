//! The network-lab harness shared by the scenario tests (`cli/tests/lab_scenarios.rs`)
//! and `msocket bench mobility`: a [`PhoneLab`], the real name server in the `core`
//! namespace, a server endpoint in `server` and a phone endpoint in `phone`, each on its
//! own thread with its own tokio runtime (its sockets live in its namespace), both
//! following their interfaces with the netlink watcher.
//!
//! The runtimes talk to the calling thread only through [`Recv`] (bytes received, with
//! the time of every read, and a condition variable to wait on) and the outcome of their
//! task. Every wait is bounded; nothing sleeps to synchronise (the senders *pace* their
//! writes with timers so that a stream is still running when a move happens, which is
//! load, not synchronisation).
//!
//! Linux only, and everything needs root (see `lab/README.md`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use msocket::name::{NameFuture, NameService, SignedRecord, TcpNameClient};
use msocket::{Endpoint, EndpointConfig, Flow, FlowEvent, Identity, PathPolicy};
use msocket_lab::{LabConfig, NsTask, PhoneLab};
use msocket_test_support::{data, sha256};
use msocketd::name_server::NameServer;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the name server listens (in `core`, which never moves).
pub const NAMES_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 100, 1);
pub const NAMES_PORT: u16 = 7450;
/// The name the server endpoint serves.
pub const SERVICE: &str = "files.lab";
/// Bound on one step (a lab build, a connect, a stretch of streaming).
pub const STEP: Duration = Duration::from_secs(30);

/// What one side sends: `len` bytes of `data(len, seed)`, in `chunk`s, chunk `i` due at
/// `i × pace` after the first (a stream that lasts, so moves land in the middle of it; a
/// writer held up by an outage catches up, as a live source would). A zero `pace` sends
/// as fast as the flow takes it.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub len: usize,
    pub seed: u64,
    pub chunk: usize,
    pub pace: Duration,
    /// Keep the write side open until the peer's stream has ended (a client waiting for
    /// its download), instead of finishing it once `len` bytes are written.
    pub linger: bool,
}

impl Plan {
    /// About 2 MB/s: 32 KiB every 16 ms.
    pub fn paced(len: usize, seed: u64) -> Plan {
        Plan { len, seed, chunk: 32 * 1024, pace: Duration::from_millis(16), linger: false }
    }
    /// As fast as the flow takes it, in 64 KiB writes.
    pub fn bulk(len: usize, seed: u64) -> Plan {
        Plan { len, seed, chunk: 64 * 1024, pace: Duration::ZERO, linger: false }
    }
    /// Sends nothing and finishes only after the peer did: the side that downloads.
    pub fn receive_only() -> Plan {
        Plan { linger: true, ..Plan::bulk(0, 0) }
    }
    /// `bytes_per_sec`, in writes every 10 ms.
    pub fn rate(len: usize, seed: u64, bytes_per_sec: u64) -> Plan {
        let pace = Duration::from_millis(10);
        let chunk = (bytes_per_sec as f64 * pace.as_secs_f64()).round().max(1.0) as usize;
        Plan { len, seed, chunk, pace, linger: false }
    }
    /// When chunk `i` is due, counted from the first.
    pub fn due(&self, start: tokio::time::Instant, i: usize) -> tokio::time::Instant {
        start + self.pace * i as u32
    }
    pub fn expected_sha(&self) -> [u8; 32] {
        sha256(&data(self.len, self.seed))
    }
}

/// Bytes received by one side, with the time of every read: the test thread waits on it
/// and measures recovery from it.
#[derive(Default, Debug)]
pub struct Recv {
    state: Mutex<RecvState>,
    cv: Condvar,
}

#[derive(Default, Debug)]
struct RecvState {
    bytes: u64,
    arrivals: Vec<(Instant, u64)>,
    done: bool,
}

/// How a receiver fared after a move at time `t`.
#[derive(Debug, Clone, Copy)]
pub struct Recovery {
    /// From the move to the first byte read after it (may be data that was in flight).
    pub first_byte: Duration,
    /// The outage: the first gap between reads, ending after the move, of at least the
    /// threshold given (zero if none), or the gap before the read that first delivered a
    /// byte written after the move, if that read came first.
    pub stall: Duration,
    /// The longest gap between two reads that ended after the move.
    pub longest_stall: Duration,
    /// From the move to the read that ended the outage, or that first delivered a byte
    /// written after the move if that came sooner: the recovery time.
    pub resumed: Duration,
}

impl Recv {
    pub fn new() -> Arc<Recv> {
        Arc::new(Recv::default())
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, RecvState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn add(&self, n: usize) {
        let mut st = self.lock();
        st.bytes += n as u64;
        let b = st.bytes;
        st.arrivals.push((Instant::now(), b));
        self.cv.notify_all();
    }
    pub fn finish(&self) {
        self.lock().done = true;
        self.cv.notify_all();
    }
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
    /// Waits until at least `n` bytes arrived; false on timeout or when the stream ended
    /// first.
    pub fn wait_bytes(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while st.bytes < n && !st.done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.cv.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        st.bytes >= n
    }
    /// Waits until more than `n` bytes arrived (bounded); returns when.
    pub fn wait_more_than(&self, n: u64, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(&(t, _)) = st.arrivals.iter().find(|(_, b)| *b > n) {
                return Some(t);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || st.done {
                return None;
            }
            st = self.cv.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
    /// Every gap between two successive reads (the time the later read ended it, and the
    /// gap), in order.
    pub fn gaps(&self) -> Vec<(Instant, Duration)> {
        let st = self.lock();
        st.arrivals.windows(2).map(|w| (w[1].0, w[1].0 - w[0].0)).collect()
    }
    /// When the last read happened (None: nothing arrived).
    pub fn last_read(&self) -> Option<Instant> {
        self.lock().arrivals.last().map(|(at, _)| *at)
    }
    /// Recovery after a move at `t` (None: nothing arrived after it). The first gap of at
    /// least `min_stall` between reads that ends after `t` is the outage the move caused
    /// (reads right after `t` may be data that was already in flight); recovery is the
    /// read that ended it, or the first read after `t` if there was no such gap. Later
    /// gaps (a new path's slow start) are not the outage; so once a read delivered a byte
    /// the sender wrote after `t` (beyond `written_at_t`, which could not have been in
    /// flight before it), the stream has recovered, whatever gaps follow.
    pub fn recovery(&self, t: Instant, min_stall: Duration, written_at_t: Option<u64>) -> Option<Recovery> {
        let st = self.lock();
        let first = st.arrivals.iter().position(|(at, _)| *at > t)?;
        let mut prev = if first == 0 { t } else { st.arrivals[first - 1].0 };
        let mut longest = Duration::ZERO;
        let mut outage = None;
        for &(at, _) in &st.arrivals[first..] {
            let gap = at.saturating_duration_since(prev);
            longest = longest.max(gap);
            if outage.is_none() && gap >= min_stall {
                outage = Some((gap, at));
            }
            prev = at;
        }
        let (mut stall, mut resumed_at) = outage.unwrap_or((Duration::ZERO, st.arrivals[first].0));
        let fresh = written_at_t.and_then(|w| st.arrivals[first..].iter().position(|(_, b)| *b > w));
        if let Some(i) = fresh.map(|k| first + k).filter(|&i| st.arrivals[i].0 < resumed_at) {
            // Delivered a new byte before the first long gap: that gap was no outage.
            let at = st.arrivals[i].0;
            let prev = if i == 0 { t } else { st.arrivals[i - 1].0.max(t) };
            stall = at.saturating_duration_since(prev);
            resumed_at = at;
        }
        // A look at the reads around the stall, for whoever studies a slow recovery.
        if std::env::var_os("MSOCKET_BENCH_ARRIVALS").is_some() {
            let reads: Vec<String> = st.arrivals[first.saturating_sub(3)..]
                .iter()
                .take(40)
                .map(|(at, b)| format!("{:.0}ms:{}kB", at.saturating_duration_since(t).as_secs_f64() * 1e3, b / 1000))
                .collect();
            eprintln!("reads after the move (time: bytes so far): {}", reads.join(" "));
        }
        Some(Recovery {
            first_byte: st.arrivals[first].0 - t,
            stall,
            longest_stall: longest,
            resumed: resumed_at.saturating_duration_since(t),
        })
    }
}

/// What one side's task saw.
#[derive(Debug)]
pub struct Outcome {
    /// How long `connect` (or `accept`) took.
    pub connect_took: Duration,
    /// When `connect` (or `accept`) returned.
    pub connected_at: Instant,
    /// The first write or shutdown error.
    pub write_error: Option<std::io::Error>,
    /// The first read error.
    pub read_error: Option<std::io::Error>,
    pub received_len: u64,
    pub received_sha: [u8; 32],
    /// What `Flow::closed` said (None: it did not resolve in time, or was not awaited).
    pub closed: Option<Result<(), String>>,
    /// The flow's events, with the time each was seen.
    pub events: Vec<(Instant, FlowEvent)>,
    /// When the write side ended (acknowledged, or failed).
    pub write_done: Option<Instant>,
    pub read_done: Option<Instant>,
    /// The flow's modelled radio energy at the end.
    pub energy_joules: Option<f64>,
}

impl Outcome {
    pub fn print_events(&self, who: &str, t0: Instant) {
        for (at, ev) in &self.events {
            let rel = if *at >= t0 {
                format!("+{:>6} ms", (*at - t0).as_millis())
            } else {
                format!("-{:>6} ms", (t0 - *at).as_millis())
            };
            println!("  {who:6} {rel}  {ev:?}");
        }
    }
}

/// Sends `plan` on `flow` (then finishes it) while reading what the peer sends, both at
/// once; records every read in `recv` and counts what the flow took in `written`. Errors
/// are reported, not panicked on.
pub async fn stream(flow: Flow, plan: Plan, recv: Arc<Recv>, written: Arc<AtomicU64>, connect_took: Duration) -> Outcome {
    let connected_at = Instant::now();
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut ev_rx = flow.events();
    let ev_log = events.clone();
    let ev_task = tokio::spawn(async move {
        while let Some(ev) = ev_rx.next().await {
            ev_log.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), ev));
        }
    });
    let closed = flow.closed();
    let (mut r, mut w) = tokio::io::split(flow);
    let (peer_done, peer_done_rx) = tokio::sync::oneshot::channel::<()>();
    let send = async move {
        let bytes = data(plan.len, plan.seed);
        let mut err = None;
        let start = tokio::time::Instant::now();
        for (i, chunk) in bytes.chunks(plan.chunk).enumerate() {
            if !plan.pace.is_zero() {
                tokio::time::sleep_until(plan.due(start, i)).await;
            }
            if let Err(e) = w.write_all(chunk).await {
                err = Some(e);
                break;
            }
            written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        if plan.linger {
            let _ = peer_done_rx.await;
        }
        if err.is_none() {
            if let Err(e) = w.shutdown().await {
                err = Some(e);
            }
        }
        (err, Instant::now(), w)
    };
    let recv2 = recv.clone();
    let receive = async move {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut len = 0u64;
        let err = loop {
            match r.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    len += n as u64;
                    recv2.add(n);
                }
                Err(e) => break Some(e),
            }
        };
        recv2.finish();
        let _ = peer_done.send(());
        (err, len, <[u8; 32]>::from(hasher.finalize()), Instant::now(), r)
    };
    let ((write_error, write_done, w), (read_error, received_len, received_sha, read_done, r)) =
        tokio::join!(send, receive);
    let clean = write_error.is_none() && read_error.is_none();
    // After a clean exchange, wait (bounded) until the flow finished and its last frames
    // left, so dropping the runtime does not cut the peer's last acknowledgement.
    let closed = if clean {
        tokio::time::timeout(Duration::from_secs(10), closed).await.ok().map(|r| r.map_err(|e| e.to_string()))
    } else {
        None
    };
    let energy_joules = r.unsplit(w).energy_joules();
    // The flow handle is gone: the event stream ends once the flow's tasks are done.
    let _ = tokio::time::timeout(Duration::from_millis(200), ev_task).await;
    let events = std::mem::take(&mut *events.lock().unwrap_or_else(|p| p.into_inner()));
    recv.finish();
    Outcome {
        connect_took,
        connected_at,
        write_error,
        read_error,
        received_len,
        received_sha,
        closed,
        events,
        write_done: Some(write_done),
        read_done: Some(read_done),
        energy_joules,
    }
}

/// A name service that tells the calling thread after every lookup (for "move right
/// after the phone looked the server up") and when each registration was acknowledged
/// (for "recovery after the record was updated").
#[derive(Debug)]
pub struct HookedNames {
    inner: TcpNameClient,
    after_lookup: Option<Mutex<std::sync::mpsc::Sender<()>>>,
    after_register: Option<Mutex<std::sync::mpsc::Sender<Instant>>>,
}

impl NameService for HookedNames {
    fn register<'a>(&'a self, record: &'a SignedRecord) -> NameFuture<'a, ()> {
        Box::pin(async move {
            let r = self.inner.register(record).await;
            if let (Ok(()), Some(tx)) = (&r, &self.after_register) {
                let _ = tx.lock().unwrap_or_else(|p| p.into_inner()).send(Instant::now());
            }
            r
        })
    }
    fn lookup<'a>(&'a self, name: &'a str) -> NameFuture<'a, SignedRecord> {
        Box::pin(async move {
            let r = self.inner.lookup(name).await;
            if let Some(tx) = &self.after_lookup {
                let _ = tx.lock().unwrap_or_else(|p| p.into_inner()).send(());
            }
            r
        })
    }
    fn watch<'a>(&'a self, name: &'a str, after_seq: u64, wait: Duration) -> NameFuture<'a, Option<SignedRecord>> {
        self.inner.watch(name, after_seq, wait)
    }
    fn watch_from<'a>(
        &'a self,
        name: &'a str,
        after_seq: u64,
        wait: Duration,
        from: Option<IpAddr>,
    ) -> NameFuture<'a, Option<SignedRecord>> {
        self.inner.watch_from(name, after_seq, wait, from)
    }
}

pub fn names_client() -> TcpNameClient {
    TcpNameClient::new(format!("{NAMES_IP}:{NAMES_PORT}"), Duration::from_secs(3))
}

/// Endpoint configuration for the lab: the real name server, bounded timers, and
/// otherwise what every user gets (the endpoint follows its namespace's interfaces by
/// itself).
pub fn lab_config(names: Arc<dyn NameService>, flow_deadline: Duration) -> EndpointConfig {
    let mut config = EndpointConfig::new(names);
    config.flow.flow_deadline = flow_deadline;
    config.connect_timeout = Duration::from_secs(20);
    config
}

/// Whether the lab can run here: root, and the tools `lab/setup.sh` installs. Also
/// removes namespaces a killed earlier run left behind. The error says what is missing.
pub fn lab_ready() -> Result<(), String> {
    if !msocket_lab::is_root() {
        return Err("the network lab needs root (it creates network namespaces)".into());
    }
    let missing = msocket_lab::missing_tools();
    if !missing.is_empty() {
        return Err(format!("the network lab needs {} (run lab/setup.sh)", missing.join(", ")));
    }
    let _ = msocket_lab::cleanup_stale();
    Ok(())
}

/// A built lab with the name server running in `core`.
pub struct Scene {
    pub lab: PhoneLab,
    names: Option<NsTask<()>>,
    _db: tempfile::TempDir,
}

impl Scene {
    /// Builds the lab described by `config` and starts the name server in `core`.
    pub fn start(config: LabConfig) -> Result<Scene, String> {
        let lab = PhoneLab::build(config).map_err(|e| format!("build the lab: {e}"))?;
        let db = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let path = db.path().join("names.redb");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let names = lab
            .core()
            .spawn_runtime(move || async move {
                let server = match NameServer::open(path) {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("open the name database: {e}")));
                        return;
                    }
                };
                let listener = match tokio::net::TcpListener::bind(SocketAddr::from((NAMES_IP, NAMES_PORT))).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("bind the name server: {e}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                server.serve(listener, std::future::pending::<()>()).await;
            })
            .map_err(|e| format!("start the name server: {e}"))?;
        ready_rx
            .recv_timeout(STEP)
            .map_err(|_| "the name server did not start in time".to_string())??;
        Ok(Scene { lab, names: Some(names), _db: db })
    }

    /// The server endpoint in `server`: listens on [`SERVICE`] (following its interface
    /// with netlink), accepts one flow and streams `plan` on it. Returns once the name is
    /// published, with the published addresses. `after_register`, if given, hears when
    /// every registration of the name was acknowledged.
    pub fn launch_server(
        &self,
        plan: Plan,
        flow_deadline: Duration,
        after_register: Option<std::sync::mpsc::Sender<Instant>>,
    ) -> Result<(Side, Vec<SocketAddr>), String> {
        let (recv, written) = (Recv::new(), Arc::new(AtomicU64::new(0)));
        let (r, w) = (recv.clone(), written.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let task = self
            .lab
            .server()
            .spawn_runtime(move || async move {
                let names: Arc<dyn NameService> = match after_register {
                    Some(tx) => Arc::new(HookedNames {
                        inner: names_client(),
                        after_lookup: None,
                        after_register: Some(Mutex::new(tx)),
                    }),
                    None => Arc::new(names_client()),
                };
                let config = lab_config(names, flow_deadline);
                let ep = Endpoint::new(Identity::from_seed([1; 32]), config);
                let mut listener = ep.listen(SERVICE).await.map_err(|e| format!("listen: {e}"))?;
                following(&ep)?;
                let _ = ready_tx.send(ep.published_addrs());
                let started = Instant::now();
                let flow = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
                Ok(stream(flow, plan, r, w, started.elapsed()).await)
            })
            .map_err(|e| format!("start the server: {e}"))?;
        match ready_rx.recv_timeout(STEP) {
            Ok(published) => Ok((Side { task, recv, written }, published)),
            Err(_) => Err(match task.join(Duration::from_secs(1)) {
                Ok(Err(e)) => format!("server endpoint: {e}"),
                _ => "the server did not publish its name in time".into(),
            }),
        }
    }

    /// The phone endpoint in `phone`: connects to [`SERVICE`] (following its interfaces
    /// with netlink) and streams `plan`. `after_lookup`, if given, hears of every lookup.
    pub fn launch_phone(
        &self,
        plan: Plan,
        flow_deadline: Duration,
        after_lookup: Option<std::sync::mpsc::Sender<()>>,
    ) -> Result<Side, String> {
        self.launch_phone_with(plan, flow_deadline, after_lookup, PathPolicy::default())
    }

    /// [`launch_phone`](Self::launch_phone) with the flow's path policy.
    pub fn launch_phone_with(
        &self,
        plan: Plan,
        flow_deadline: Duration,
        after_lookup: Option<std::sync::mpsc::Sender<()>>,
        policy: PathPolicy,
    ) -> Result<Side, String> {
        let (recv, written) = (Recv::new(), Arc::new(AtomicU64::new(0)));
        let (r, w) = (recv.clone(), written.clone());
        let task = self
            .lab
            .phone()
            .spawn_runtime(move || async move {
                let names: Arc<dyn NameService> = match after_lookup {
                    Some(tx) => Arc::new(HookedNames {
                        inner: names_client(),
                        after_lookup: Some(Mutex::new(tx)),
                        after_register: None,
                    }),
                    None => Arc::new(names_client()),
                };
                let mut config = lab_config(names, flow_deadline);
                config.path_policy = policy;
                let ep = Endpoint::new(Identity::from_seed([2; 32]), config);
                let started = Instant::now();
                let flow = ep.connect(SERVICE).await.map_err(|e| format!("connect: {e}"))?;
                following(&ep)?;
                Ok(stream(flow, plan, r, w, started.elapsed()).await)
            })
            .map_err(|e| format!("start the phone: {e}"))?;
        Ok(Side { task, recv, written })
    }
}

/// Fails unless `ep` follows its namespace's network by itself, as every endpoint does by
/// default: the figures must measure what users get.
fn following(ep: &Endpoint) -> Result<(), String> {
    if ep.follows_system_network() {
        Ok(())
    } else {
        Err("the endpoint does not follow its network by default".into())
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        // The name server's runtime ends before its namespace goes.
        drop(self.names.take());
    }
}

/// One side's running task and what it has received so far.
pub struct Side {
    pub task: NsTask<Result<Outcome, String>>,
    pub recv: Arc<Recv>,
    /// Bytes the side's flow took from its writer so far.
    pub written: Arc<AtomicU64>,
}

impl Side {
    /// Waits (bounded) for the side's task; errors say what failed.
    pub fn finish(self, timeout: Duration) -> Result<Outcome, String> {
        self.task.join(timeout).map_err(|e| e.to_string())?
    }
}
