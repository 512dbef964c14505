//! Support for `lab_relay.rs`: the two-phone lab ([`TwoPhoneLab`]) with the real
//! `msocketd name` and `msocketd relay` on the services host, `msocket listen` and
//! `msocket connect` on the phones (or the public host), what each side sends fed to its
//! stdin (paced, or held at a point until the test releases it) and what it prints hashed
//! as it arrives.
//!
//! The child-process guards, the hashing readers and the data files are the real-program
//! tests' ([`super::real_programs_support`]). Rules kept: every wait is bounded, readiness
//! is read from the programs' own lines, nothing sleeps to synchronise (feeders *pace*
//! their writes so that a move lands mid-stream), and whatever runs in the lab's
//! namespaces is killed by pid when the world goes.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use msocket_lab::{Netns, TwoPhoneConfig, TwoPhoneLab, NAMES_ADDR, RELAY_ADDRS};

pub use super::real_programs_support::{hex, logs, msocket_bin, msocketd_bin, Proc, Sink, MB, READY};
pub use msocket_test_support::{data, init_tracing, sha256};

/// What these tests need; also the text of the failure where they cannot run.
pub const NEEDS: &str = "needs root and network namespaces (lab/setup.sh installs the lab's tools: iproute2, nftables, ethtool, conntrack)";

/// The CLI's log filter: info, with the hole-punching attempts and extra paths at debug.
pub const CLI_LOG: &str = "info,msocket::runtime::punch=debug,msocket::runtime::paths=debug";

/// The log lines the tests look for.
pub const WENT_DIRECT: &str = "went direct: a punched path joined the relayed flow";
pub const STAYS_RELAYED: &str = "hole punching failed; the flow stays relayed";
pub const REGISTERED: &str = "registered at the relay";

/// Why the tests cannot run here (None: they can). Installs the lab's tools first.
fn problem() -> Option<String> {
    super::real_programs_support::lab_problem(|| msocket_lab::missing_tools().into_iter().map(String::from).collect())
}

/// Sets a test up; panics, saying what is missing, on a machine that cannot run it.
pub fn ready() {
    static PROBLEM: OnceLock<Option<String>> = OnceLock::new();
    init_tracing();
    if let Some(why) = PROBLEM.get_or_init(problem) {
        panic!("relay lab tests cannot run here ({why}): {NEEDS}")
    }
}

/// One test at a time: each builds a lab of its own, and the machine has few cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------
// Feeding a program's stdin
// ---------------------------------------------------------------------------------------

/// How a [`Feeder`] writes: `chunk` bytes at a time, `pace` between chunks (zero: as fast
/// as the program reads), and, with `hold_at`, a stop once that many bytes are written
/// until [`Feeder::release`].
#[derive(Clone, Copy, Debug)]
pub struct Feed {
    pub chunk: usize,
    pub pace: Duration,
    pub hold_at: Option<usize>,
}

impl Feed {
    /// As fast as the program takes it.
    pub fn bulk() -> Feed {
        Feed { chunk: 256 * 1024, pace: Duration::ZERO, hold_at: None }
    }
    /// `chunk` bytes every `pace` (a stream that lasts, so that a move lands in it).
    pub fn paced(chunk: usize, pace: Duration) -> Feed {
        Feed { chunk, pace, hold_at: None }
    }
    /// As fast as the program takes it, holding after `at` bytes until released.
    pub fn held_at(at: usize) -> Feed {
        Feed { hold_at: Some(at), ..Feed::bulk() }
    }
}

/// Writes a payload to a program's stdin on a thread of its own, then closes it.
pub struct Feeder {
    written: Arc<AtomicU64>,
    release: Option<Sender<()>>,
    thread: Option<JoinHandle<Result<(), String>>>,
    pub len: u64,
    pub sha: [u8; 32],
}

impl Feeder {
    pub fn start(mut stdin: ChildStdin, bytes: Arc<Vec<u8>>, feed: Feed) -> Feeder {
        let written = Arc::new(AtomicU64::new(0));
        let (release, held) = mpsc::channel::<()>();
        let (w, len, sha) = (written.clone(), bytes.len() as u64, sha256(&bytes));
        let thread = std::thread::spawn(move || {
            let mut at = 0;
            while at < bytes.len() {
                if feed.hold_at == Some(at) {
                    // Released, or the test gave up (the sender dropped): go on either way.
                    let _ = held.recv();
                }
                let end = (at + feed.chunk).min(bytes.len());
                let end = feed.hold_at.filter(|h| *h > at && *h < end).unwrap_or(end);
                stdin.write_all(&bytes[at..end]).map_err(|e| format!("write to stdin after {at} bytes: {e}"))?;
                at = end;
                w.store(at as u64, Ordering::SeqCst);
                if !feed.pace.is_zero() {
                    // Pacing the stream (load), not waiting for anything.
                    std::thread::sleep(feed.pace);
                }
            }
            drop(stdin); // end of stream
            Ok(())
        });
        Feeder { written, release: Some(release), thread: Some(thread), len, sha }
    }

    /// Bytes the program took so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Lets a held feeder go on.
    pub fn release(&mut self) {
        if let Some(r) = self.release.take() {
            let _ = r.send(());
        }
    }

    /// Waits (bounded) until everything was written and stdin closed.
    pub fn join(&mut self, timeout: Duration) -> Result<(), String> {
        self.release();
        let Some(t) = self.thread.take() else { return Ok(()) };
        let deadline = Instant::now() + timeout;
        while !t.is_finished() {
            if Instant::now() >= deadline {
                self.thread = Some(t);
                return Err(format!("the feeder had written {} of {} bytes after {timeout:?}", self.written(), self.len));
            }
            std::thread::sleep(Duration::from_millis(20)); // polling a thread, bounded
        }
        t.join().map_err(|_| "the feeder panicked".to_string())?
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        // A held feeder goes on (into a program that is gone: it ends at the broken pipe).
        self.release();
    }
}

/// `len` bytes of the deterministic test data for `seed`, shared with a feeder.
pub fn payload(len: usize, seed: u64) -> Arc<Vec<u8>> {
    Arc::new(data(len, seed))
}

// ---------------------------------------------------------------------------------------
// One end of a flow: a program, what it is fed, what it prints
// ---------------------------------------------------------------------------------------

/// `msocket listen` or `msocket connect` with its stdin fed and its stdout hashed.
pub struct End {
    pub proc: Proc,
    pub feeder: Feeder,
    pub sink: Arc<Sink>,
}

impl End {
    fn start(what: &str, mut cmd: Command, bytes: Arc<Vec<u8>>, feed: Feed) -> End {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut proc = Proc::spawn(what, cmd);
        let feeder = Feeder::start(proc.take_stdin(), bytes, feed);
        let sink = Sink::hash(proc.take_stdout());
        End { proc, feeder, sink }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// The first log line containing `needle`, if any.
    pub fn line(&self, needle: &str) -> Option<String> {
        self.log().lines().find(|l| l.contains(needle)).map(str::to_string)
    }

    /// Every "subflow up" line: (local, remote, relayed).
    pub fn subflows(&self) -> Vec<(String, String, bool)> {
        self.log()
            .lines()
            .filter(|l| l.contains("subflow up"))
            .map(|l| (field(l, "local="), field(l, "remote="), field(l, "relayed=") == "true"))
            .collect()
    }
}

/// The value of `key=value` in a log line ("" if absent).
pub fn field(line: &str, key: &str) -> String {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)).unwrap_or("").to_string()
}

/// How a flow between two [`End`]s ended: bytes and SHA-256 each way, checked.
pub struct Outcome {
    pub to_client: (u64, [u8; 32]),
    pub to_listener: (u64, [u8; 32]),
    pub took: Duration,
}

/// Waits (bounded) until both ends have received everything the other sent and exited
/// successfully; panics, with every program's log, if not. Checks lengths and SHA-256
/// both ways.
pub fn finish(w: &World, label: &str, listener: &mut End, client: &mut End, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let context = |l: &End, c: &End| w.logs(&[l, c]);
    let progress = |l: &End, c: &End| {
        format!(
            "listener fed {} of {} bytes, received: {}; client fed {} of {} bytes, received: {}",
            l.feeder.written(),
            l.feeder.len,
            l.sink.progress(),
            c.feeder.written(),
            c.feeder.len,
            c.sink.progress()
        )
    };
    let to_client = client.sink.wait_end(timeout);
    let to_listener = listener.sink.wait_end(timeout.saturating_sub(started.elapsed()));
    let (Some(to_client), Some(to_listener)) = (to_client, to_listener) else {
        panic!("[{label}] the flow did not carry everything within {timeout:?}: {}\n{}", progress(listener, client), context(listener, client));
    };
    for who in ["listener", "client"] {
        let end = if who == "listener" { &mut *listener } else { &mut *client };
        if let Err(e) = end.feeder.join(Duration::from_secs(10)) {
            panic!("[{label}] {who}'s stdin: {e}\n{}", context(listener, client));
        }
    }
    let took = started.elapsed();
    let statuses: Vec<Option<ExitStatus>> = [&mut *listener, &mut *client].into_iter().map(|e| e.proc.finish(Duration::from_secs(15))).collect();
    let check = |what: &str, got: (u64, [u8; 32]), sent: &Feeder| {
        assert_eq!(got.0, sent.len, "[{label}] {what}: length differs: {}\n{}", progress(listener, client), context(listener, client));
        assert!(got.1 == sent.sha, "[{label}] {what}: SHA-256 {} differs from what was sent ({})\n{}", hex(&got.1), hex(&sent.sha), context(listener, client));
    };
    check("listener -> client", to_client, &listener.feeder);
    check("client -> listener", to_listener, &client.feeder);
    for (status, who) in statuses.iter().zip(["listener", "client"]) {
        assert!(status.is_some_and(|s| s.success()), "[{label}] {who} exited with {status:?}\n{}", context(listener, client));
    }
    Outcome { to_client, to_listener, took }
}

// ---------------------------------------------------------------------------------------
// The world: the lab with the name service, relays on demand
// ---------------------------------------------------------------------------------------

/// A [`TwoPhoneLab`] with the real `msocketd name` on the services host at
/// [`NAMES_ADDR`], relays started on demand at [`RELAY_ADDRS`], a temporary directory and
/// the test lock. Dropping it kills every process still running in the lab's namespaces,
/// then tears the lab down. Declare it first in a test, so the test's own guards drop
/// before it.
pub struct World {
    pub dir: tempfile::TempDir,
    pub names_url: String,
    names: Proc,
    relays: Mutex<Vec<Proc>>,
    pub lab: TwoPhoneLab,
    started: Instant,
    _serial: MutexGuard<'static, ()>,
}

impl World {
    /// Builds the lab and starts the name service on port `names_port`.
    pub fn start(config: TwoPhoneConfig, names_port: u16) -> World {
        ready();
        let serial = serial();
        let started = Instant::now();
        let lab = TwoPhoneLab::build(config).unwrap_or_else(|e| panic!("build the two-phone lab: {e}"));
        let dir = tempfile::Builder::new().prefix("msocket-relay-lab-").tempdir().expect("temp dir");
        let listen = format!("{NAMES_ADDR}:{names_port}");
        let mut cmd = lab.services().command(msocketd_bin());
        cmd.args(["name", "--listen", &listen, "--db"])
            .arg(dir.path().join("names.redb"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        let names = Proc::spawn_both("msocketd name (services)", cmd);
        names.wait_line("msocketd: name service listening on", READY);
        println!("lab built and msocketd name ready in {} ms", started.elapsed().as_millis());
        World { dir, names_url: format!("tcp://{listen}"), names, relays: Mutex::new(Vec::new()), lab, started, _serial: serial }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Seconds since the world was started (for the test's own timeline).
    pub fn t(&self) -> String {
        format!("{:6.2}s", self.started.elapsed().as_secs_f64())
    }

    /// Starts `msocketd relay` on relay address `i` (0 or 1) and `port`, ready; returns
    /// its HOST:PORT.
    pub fn relay(&self, i: usize, port: u16) -> String {
        let addr = format!("{}:{port}", RELAY_ADDRS[i]);
        let mut cmd = self.lab.services().command(msocketd_bin());
        cmd.args(["relay", "--listen", &addr]).env("RUST_LOG", "info").env("NO_COLOR", "1").stdin(Stdio::null());
        let p = Proc::spawn_both(&format!("msocketd relay {addr} (services)"), cmd);
        p.wait_line(&format!("msocketd: relay listening on {addr}"), READY);
        self.relays.lock().unwrap_or_else(|p| p.into_inner()).push(p);
        addr
    }

    /// Kills (SIGKILL) the relay listening on `addr`; returns when it is gone.
    pub fn kill_relay(&self, addr: &str) -> Instant {
        let mut relays = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        let p = relays.iter_mut().find(|p| p.what().contains(addr)).unwrap_or_else(|| panic!("no relay on {addr}"));
        p.kill();
        Instant::now()
    }

    /// The name service's and every relay's log, for a failure message.
    pub fn daemon_logs(&self) -> String {
        let relays = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = vec![&self.names];
        all.extend(relays.iter());
        logs(&all)
    }

    /// Every log: the given programs' and the daemons'.
    pub fn logs(&self, ends: &[&End]) -> String {
        let own: Vec<&Proc> = ends.iter().map(|e| &e.proc).collect();
        format!("{}\n{}", logs(&own), self.daemon_logs())
    }

    /// `msocket keygen --key DIR/NAME.key`; returns the key's path.
    pub fn keygen(&self, who: &str) -> PathBuf {
        let key = self.path(&format!("{who}.key"));
        let mut cmd = Command::new(msocket_bin());
        cmd.arg("keygen").arg("--key").arg(&key).env_remove("MSOCKET_KEY");
        super::real_programs_support::run_ok("msocket keygen", cmd, READY);
        key
    }

    /// `ip netns exec NS msocket ARGS… --names URL --key KEY`, logging at [`CLI_LOG`].
    pub fn msocket(&self, ns: &Netns, args: &[&str], key: &Path) -> Command {
        let mut cmd = ns.command(msocket_bin());
        cmd.args(args).args(["--names", &self.names_url]).arg("--key").arg(key);
        cmd.env_remove("MSOCKET_KEY")
            .env_remove("MSOCKET_NAMES")
            .env_remove("MSOCKET_POLICY")
            .env_remove("MSOCKET_RELAYS")
            .env("RUST_LOG", CLI_LOG)
            .env("NO_COLOR", "1");
        cmd
    }

    /// `msocket listen NAME --relay R… EXTRA…` in `ns`, sending `bytes` as `feed` says,
    /// ready: its name is published and it says which relays it is reachable through,
    /// which must be `relays`.
    pub fn listen(&self, ns: &Netns, name: &str, relays: &[&str], extra: &[&str], bytes: Arc<Vec<u8>>, feed: Feed) -> End {
        let key = self.keygen(&format!("listener-{name}"));
        let mut args = vec!["listen", name];
        for r in relays {
            args.extend(["--relay", r]);
        }
        args.extend(extra);
        let cmd = self.msocket(ns, &args, &key);
        let end = End::start(&format!("msocket listen {name} ({})", short(ns)), cmd, bytes, feed);
        end.proc.wait_line_where("\"accepting\"", READY, &self.daemon_logs(), |l| l.starts_with("accepting "));
        let log = end.log();
        let listening = log.lines().find(|l| l.starts_with("listening on ")).unwrap_or_default().to_string();
        let reachable = log.lines().find(|l| l.starts_with("reachable through relay(s) ")).unwrap_or_default().to_string();
        assert_eq!(
            reachable,
            format!("reachable through relay(s) {}", relays.join(", ")),
            "the listener is not registered at every relay\n{}\n{}",
            end.proc.tail(),
            self.daemon_logs()
        );
        println!("{} {listening}; {reachable}", self.t());
        end
    }

    /// `msocket connect NAME EXTRA…` in `ns`, sending `bytes` as `feed` says.
    pub fn connect(&self, ns: &Netns, name: &str, extra: &[&str], bytes: Arc<Vec<u8>>, feed: Feed) -> End {
        let key = self.keygen(&format!("client-{name}-{}", short(ns)));
        let mut args = vec!["connect", name];
        args.extend(extra);
        let cmd = self.msocket(ns, &args, &key);
        End::start(&format!("msocket connect {name} ({})", short(ns)), cmd, bytes, feed)
    }
}

/// A namespace's role (its name without the `msl<pid>-<n>-` prefix).
pub fn short(ns: &Netns) -> String {
    ns.name().splitn(3, '-').nth(2).unwrap_or(ns.name()).to_string()
}

impl Drop for World {
    fn drop(&mut self) {
        // Whatever still runs in the lab is ours: kill it by pid, so nothing outlives the
        // test. Our own process is never in these namespaces (only some of its threads).
        let me = std::process::id();
        for ns in self.lab.namespaces() {
            for pid in ns.pids().unwrap_or_default() {
                if pid != me {
                    // SAFETY: kill(2) on a process inside a namespace this test created.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
        for p in self.relays.lock().unwrap_or_else(|p| p.into_inner()).iter_mut() {
            p.kill();
        }
        self.names.kill();
    }
}

/// Waits (bounded) until `end` logged a line containing `needle`; returns it, or None.
pub fn wait_log(end: &End, needle: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = end.line(needle) {
            return Some(l);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // Polling a log another thread appends to, bounded (Proc's line channel has one
        // reader, which other waits may hold).
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until `end` logged any of `needles`; returns the needle and line.
pub fn wait_any(end: &End, needles: &[&'static str], timeout: Duration) -> Option<(&'static str, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        for n in needles {
            if let Some(l) = end.line(n) {
                return Some((n, l));
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20)); // polling a log, bounded
    }
}
