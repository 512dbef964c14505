//! Support for `real_programs.rs`: the environment check (root, namespaces, the programs),
//! a lab with the real `msocketd` in it, child processes that are killed (with their
//! process group) when their guard drops, and readers that hash what a program prints
//! while the test watches its progress.
//!
//! Rules kept here, as in `cli.rs`: every wait is bounded; readiness is read from the
//! programs' own lines (or, for nginx, which prints none, from a successful request);
//! nothing sleeps to synchronise. Whatever a test started inside the lab's namespaces is
//! killed by pid when the lab goes, even what daemons forked on their own.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead as _, BufReader, BufWriter, Read, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use msocket_lab::{LabConfig, Netns, PhoneLab};
use sha2::{Digest, Sha256};

pub use msocket_bench::lab_run::{NAMES_IP, NAMES_PORT};

/// Bound on a readiness wait (a program's first line, a lab build).
pub const READY: Duration = Duration::from_secs(30);
pub const MB: usize = 1_000_000;

/// What these tests need; also the text of the failure where they cannot run.
pub const NEEDS: &str =
    "needs root, network namespaces and openssh-server, nginx, curl, iperf3 (lab/setup.sh installs them)";

/// The Wi-Fi and cellular links of every test.
pub const WIFI: &str = "20mbit 20ms";
pub const CELL: &str = "20mbit 40ms";

pub fn msocket_bin() -> &'static str {
    env!("CARGO_BIN_EXE_msocket")
}

/// `msocketd`, built by `cargo build --workspace` (another package's binary).
pub fn msocketd_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| msocket_test_support::workspace_binary("msocketd"))
}

pub use msocket_test_support::init_tracing;

/// The full path of `program` (sshd and nginx live in /usr/sbin, which a user's PATH may
/// lack).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

pub fn program(program: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| panic!("{program} is not installed ({NEEDS})"))
}

/// Everything the real-program tests run, beside the lab's own tools.
const PROGRAMS: [&str; 6] = ["sshd", "ssh", "ssh-keygen", "nginx", "curl", "iperf3"];

fn missing() -> Vec<String> {
    let mut m: Vec<String> = msocket_lab::missing_tools().into_iter().map(String::from).collect();
    m.extend(PROGRAMS.iter().filter(|p| find_program(p).is_none()).map(|p| p.to_string()));
    m
}

/// Why the tests cannot run here (None: they can). Installs what is missing first.
fn problem() -> Option<String> {
    lab_problem(missing)
}

/// Why lab tests that need root, namespaces and what `missing` lists cannot run here
/// (None: they can). Runs lab/setup.sh first when something is missing.
pub fn lab_problem(missing: impl Fn() -> Vec<String>) -> Option<String> {
    if !msocket_lab::is_root() {
        return Some("not root: run them as root".into());
    }
    if !missing().is_empty() {
        let setup = concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/setup.sh");
        let _ = Command::new("bash").arg(setup).status();
    }
    let m = missing();
    if !m.is_empty() {
        return Some(format!("missing after lab/setup.sh: {}", m.join(", ")));
    }
    let _ = msocket_lab::cleanup_stale();
    if let Err(e) = Netns::new("probe") {
        return Some(format!("cannot create a network namespace: {e}"));
    }
    None
}

/// Sets a test up; panics, saying what is missing, on a machine that cannot run it.
pub fn ready() {
    static PROBLEM: OnceLock<Option<String>> = OnceLock::new();
    init_tracing();
    if let Some(why) = PROBLEM.get_or_init(problem) {
        panic!("real-program tests cannot run here ({why}): {NEEDS}")
    }
}

/// One test at a time: each builds a lab whose emulators and programs want the machine's
/// two cores, and the throughput comparison is meaningless next to another test.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------

/// A running program: it and its process group are killed (SIGKILL) and reaped when the
/// guard drops. Its stderr (and, with [`Proc::spawn_both`], stdout) is collected line by
/// line, for readiness lines and for failure messages.
pub struct Proc {
    what: String,
    pid: u32,
    child: Option<Child>,
    exit: Option<Receiver<std::io::Result<ExitStatus>>>,
    status: Option<ExitStatus>,
    lines: Receiver<String>,
    log: Arc<Mutex<String>>,
}

impl Proc {
    /// Spawns `cmd` in a process group of its own, stderr collected; stdin and stdout as
    /// the caller set them.
    pub fn spawn(what: &str, cmd: Command) -> Proc {
        Proc::start(what, cmd, false)
    }

    /// Like [`Proc::spawn`], with stdout collected into the same log (programs that
    /// announce readiness on stdout).
    pub fn spawn_both(what: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped());
        Proc::start(what, cmd, true)
    }

    fn start(what: &str, mut cmd: Command, stdout_too: bool) -> Proc {
        cmd.stderr(Stdio::piped()).process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let mut pipes: Vec<Box<dyn Read + Send>> = vec![Box::new(child.stderr.take().unwrap())];
        if stdout_too {
            pipes.push(Box::new(child.stdout.take().unwrap()));
        }
        for pipe in pipes {
            let (log, tx) = (log.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap_or_else(|p| p.into_inner()).push_str(&format!("{line}\n"));
                    let _ = tx.send(line);
                }
            });
        }
        Proc { what: what.to_string(), pid: child.id(), child: Some(child), exit: None, status: None, lines, log }
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Its log for a failure message (the last 120 lines).
    pub fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(120);
        let cut = if from > 0 { format!("[... {from} earlier lines]\n") } else { String::new() };
        format!("----- {} (pid {}) -----\n{cut}{}", self.what, self.pid, lines[from..].join("\n"))
    }

    /// Waits (bounded) for a logged line for which `want` holds; panics with the log and
    /// `context` (the other programs' logs) if none comes or the program ends first.
    pub fn wait_line_where(&self, desc: &str, timeout: Duration, context: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if want(&line) => return line,
                Ok(_) => {}
                Err(e) => panic!(
                    "{}: no {desc} line within {timeout:?} ({e:?})\n{}\n{context}",
                    self.what,
                    self.tail()
                ),
            }
        }
    }

    /// Waits (bounded) for a line containing `needle`.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        self.wait_line_where(&format!("{needle:?}"), timeout, "", |l| l.contains(needle))
    }

    pub fn take_stdin(&mut self) -> ChildStdin {
        self.child.as_mut().and_then(|c| c.stdin.take()).expect("stdin piped")
    }

    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.as_mut().and_then(|c| c.stdout.take()).expect("stdout piped")
    }

    /// Waits (bounded) for the program to exit by itself; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.status {
            return Some(s);
        }
        if let Some(mut child) = self.child.take() {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(child.wait());
            });
            self.exit = Some(rx);
        }
        let status = self.exit.as_ref()?.recv_timeout(timeout).ok()?;
        let status = status.unwrap_or_else(|e| panic!("wait for {}: {e}", self.what));
        self.status = Some(status);
        Some(status)
    }

    /// Waits for the exit and the end of its output (both bounded); returns the status
    /// (None: still running after `timeout`).
    pub fn finish(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = self.wait_exit(timeout)?;
        // The log readers end at EOF, which follows the exit (unless a grandchild holds
        // the pipe: bounded).
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok() {}
        Some(status)
    }

    /// Kills its process group now and reaps it (idempotent).
    pub fn kill(&mut self) {
        if self.status.is_some() {
            return;
        }
        // Not reaped yet, so the pid (and group id) is still this program's.
        // SAFETY: kill(2) on the process group this guard started.
        unsafe {
            libc::kill(-(self.pid as i32), libc::SIGKILL);
            libc::kill(self.pid as i32, libc::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            self.status = child.wait().ok();
        } else if let Some(rx) = &self.exit {
            self.status = rx.recv_timeout(Duration::from_secs(10)).ok().and_then(Result::ok);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        // MSOCKET_REAL_LOGS=1: every program's log, even when the test passed.
        if std::env::var_os("MSOCKET_REAL_LOGS").is_some() {
            println!("{}", self.tail());
        }
    }
}

/// Log tails of several programs, for a failure message.
pub fn logs(procs: &[&Proc]) -> String {
    procs.iter().map(|p| p.tail()).collect::<Vec<_>>().join("\n")
}

/// Runs `cmd` for at most `limit`, returning (status, stdout, the guard with its log); a
/// program still running then is killed (status None) and what it printed so far returned.
pub fn run_for(what: &str, mut cmd: Command, limit: Duration) -> (Option<ExitStatus>, String, Proc) {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut p = Proc::spawn(what, cmd);
    let mut out = p.take_stdout();
    let printed = Arc::new(Mutex::new(Vec::new()));
    let (sink, (tx, rx)) = (printed.clone(), mpsc::channel());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = out.read(&mut buf) {
            sink.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(());
    });
    let status = p.finish(limit);
    if status.is_none() {
        p.kill();
    }
    let _ = rx.recv_timeout(Duration::from_secs(5));
    let stdout = String::from_utf8_lossy(&printed.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    (status, stdout, p)
}

/// Runs `cmd` to completion (bounded: panics after `timeout`), returning (status, stdout,
/// the guard with its log).
pub fn run(what: &str, cmd: Command, timeout: Duration) -> (ExitStatus, String, Proc) {
    let (status, stdout, p) = run_for(what, cmd, timeout);
    let Some(status) = status else {
        panic!("{what} did not finish within {timeout:?} (killed); stdout:\n{stdout}\n{}", p.tail());
    };
    (status, stdout, p)
}

/// Runs `cmd` and panics with its output unless it exits 0; returns its stdout.
pub fn run_ok(what: &str, cmd: Command, timeout: Duration) -> String {
    let (status, stdout, p) = run(what, cmd, timeout);
    assert!(status.success(), "{what} exited with {status}; stdout:\n{stdout}\n{}", p.tail());
    stdout
}

// ---------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------

pub use msocket_test_support::data;

pub fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `len` bytes of `data(…, seed)` to `path` in 1 MB pieces; returns their SHA-256.
pub fn write_data_file(path: &Path, len: usize, seed: u64) -> [u8; 32] {
    let mut f = BufWriter::new(File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display())));
    let mut h = Sha256::new();
    let mut left = len;
    let mut piece = 0u64;
    while left > 0 {
        let n = left.min(MB);
        let chunk = data(n, seed.wrapping_mul(1_000_003).wrapping_add(piece));
        h.update(&chunk);
        f.write_all(&chunk).unwrap();
        left -= n;
        piece += 1;
    }
    f.flush().unwrap();
    h.finalize().into()
}

/// What a program printed, hashed as it arrives (like `| sha256sum`), with a byte count
/// the test can wait on.
pub struct Sink {
    state: Mutex<SinkState>,
    cv: Condvar,
}

#[derive(Default)]
struct SinkState {
    bytes: u64,
    last: Option<Instant>,
    /// When every read returned.
    reads: Vec<Instant>,
    end: Option<[u8; 32]>,
}

impl Sink {
    /// Starts reading `r` to its end on a thread of its own.
    pub fn hash(mut r: impl Read + Send + 'static) -> Arc<Sink> {
        let sink = Arc::new(Sink { state: Mutex::new(SinkState::default()), cv: Condvar::new() });
        let s = sink.clone();
        std::thread::spawn(move || {
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        h.update(&buf[..n]);
                        let mut st = s.lock();
                        st.bytes += n as u64;
                        let now = Instant::now();
                        st.last = Some(now);
                        st.reads.push(now);
                        drop(st);
                        s.cv.notify_all();
                    }
                }
            }
            s.lock().end = Some(h.finalize().into());
            s.cv.notify_all();
        });
        sink
    }

    fn lock(&self) -> MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// The longest gap between two reads that ends after `t` (the stall a move at `t`
    /// caused; the gap that spans `t` counts). Zero if nothing was read after `t`.
    pub fn longest_gap_after(&self, t: Instant) -> Duration {
        let st = self.lock();
        st.reads.windows(2).filter(|w| w[1] > t).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }

    /// "N bytes, the last read X s ago" (for failure messages).
    pub fn progress(&self) -> String {
        let st = self.lock();
        let last = st.last.map_or("never".to_string(), |t| format!("{:.1} s ago", t.elapsed().as_secs_f64()));
        format!("{} bytes arrived, the last read {last}, stream {}", st.bytes, if st.end.is_some() { "ended" } else { "still open" })
    }

    /// Waits until at least `n` bytes arrived; false on timeout or an earlier end.
    pub fn wait_bytes(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while st.bytes < n && st.end.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self.cv.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        st.bytes >= n
    }

    /// Waits for the end of the stream: (bytes, SHA-256), None on timeout.
    pub fn wait_end(&self, timeout: Duration) -> Option<(u64, [u8; 32])> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while st.end.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self.cv.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        Some((st.bytes, st.end.unwrap()))
    }
}

// ---------------------------------------------------------------------------------------
// The world: a lab with the name service in it
// ---------------------------------------------------------------------------------------

/// A phone lab (Wi-Fi [`WIFI`], cellular [`CELL`], NAT on both) with the real `msocketd`
/// in `core` at [`NAMES_IP`]:[`NAMES_PORT`], a temporary directory, and the test lock.
/// Dropping it kills every process still running in the lab's namespaces, then tears the
/// lab down. Declare it first in a test, so the test's own guards drop before it.
pub struct World {
    pub dir: tempfile::TempDir,
    pub names_url: String,
    names: Proc,
    pub lab: PhoneLab,
    started: Instant,
    _serial: MutexGuard<'static, ()>,
}

impl World {
    pub fn start() -> World {
        Self::start_with(|_| {})
    }

    /// [`start`](Self::start) with the lab's configuration changed by `tune`.
    pub fn start_with(tune: impl FnOnce(&mut LabConfig)) -> World {
        ready();
        let serial = serial();
        let started = Instant::now();
        let mut config =
            LabConfig { wifi: WIFI.parse().expect("wifi spec"), cell: CELL.parse().expect("cell spec"), ..LabConfig::default() };
        tune(&mut config);
        let lab = PhoneLab::build(config).expect("build the lab");
        let dir = tempfile::Builder::new().prefix("msocket-real-").tempdir().expect("temp dir");
        let listen = SocketAddr::from((NAMES_IP, NAMES_PORT));
        let mut cmd = lab.core().command(msocketd_bin());
        cmd.args(["name", "--listen", &listen.to_string(), "--db"])
            .arg(dir.path().join("names.redb"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        let names = Proc::spawn_both("msocketd (core)", cmd);
        names.wait_line("msocketd: name service listening on", READY);
        println!("lab built and msocketd ready in {} ms", started.elapsed().as_millis());
        World { dir, names_url: format!("tcp://{listen}"), names, lab, started, _serial: serial }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn names(&self) -> &Proc {
        &self.names
    }

    /// Seconds since the lab was built (for the test's own timeline).
    pub fn t(&self) -> String {
        format!("{:6.2}s", self.started.elapsed().as_secs_f64())
    }

    /// `msocket keygen --key DIR/NAME.key`; returns the key's path.
    pub fn keygen(&self, who: &str) -> PathBuf {
        let key = self.path(&format!("{who}.key"));
        let mut cmd = Command::new(msocket_bin());
        cmd.arg("keygen").arg("--key").arg(&key).env_remove("MSOCKET_KEY");
        run_ok("msocket keygen", cmd, READY);
        key
    }

    /// `ip netns exec NS msocket ARGS… --names URL --key KEY`, logging at info.
    pub fn msocket(&self, ns: &Netns, args: &[&str], key: &Path) -> Command {
        let mut cmd = ns.command(msocket_bin());
        cmd.args(args).args(["--names", &self.names_url]).arg("--key").arg(key);
        cmd.env_remove("MSOCKET_KEY")
            .env_remove("MSOCKET_NAMES")
            .env_remove("MSOCKET_POLICY")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }

    /// `msocket listen NAME [--to ADDR]` in the server namespace, ready: its "listening
    /// on NAME at [...]" line was read and names the server's address.
    pub fn listen(&self, name: &str, to: Option<SocketAddr>, stdin: Stdio, extra: &[&str]) -> Proc {
        let key = self.keygen(&format!("server-{name}"));
        let mut args = vec!["listen", name];
        let to_s = to.map(|a| a.to_string());
        if let Some(to) = &to_s {
            args.extend(["--to", to]);
        }
        args.extend(extra);
        let mut cmd = self.msocket(self.lab.server(), &args, &key);
        cmd.stdin(stdin);
        let p = Proc::spawn(&format!("msocket listen {name} (server)"), cmd);
        let line = p.wait_line_where("\"listening on\"", READY, &self.names.tail(), |l| l.starts_with("listening on "));
        let server = self.lab.server_addr().to_string();
        assert!(line.contains(name) && line.contains(&server), "listen published the wrong address: {line}\n{}", p.tail());
        println!("{} {line}", self.t());
        p
    }

    /// `msocket forward 127.0.0.1:PORT NAME` in the phone namespace, ready (its
    /// "forwarding" line read).
    pub fn forward(&self, port: u16, name: &str, extra: &[&str]) -> Proc {
        let key = self.keygen("phone-forward");
        let local = format!("127.0.0.1:{port}");
        let mut args = vec!["forward", &local, name];
        args.extend(extra);
        let cmd = self.msocket(self.lab.phone(), &args, &key);
        let p = Proc::spawn(&format!("msocket forward {local} {name} (phone)"), cmd);
        let line = p.wait_line_where("\"forwarding\"", READY, "", |l| l.starts_with("forwarding "));
        assert_eq!(line, format!("forwarding {local} to {name}"), "{}", p.tail());
        println!("{} {line}", self.t());
        p
    }

    /// Waits (bounded) until `http://127.0.0.1:PORT/PATH` answers 200 inside `ns`: nginx
    /// prints nothing when it is ready, so readiness is a request that succeeded.
    pub fn wait_http(&self, ns: &Netns, port: u16, path: &str, server: &Proc) {
        let deadline = Instant::now() + READY;
        let url = format!("http://127.0.0.1:{port}{path}");
        loop {
            let mut cmd = ns.command("curl");
            // --retry-connrefused: curl itself waits between attempts (bounded by
            // --retry-max-time) while the server comes up.
            cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--retry", "50", "--retry-connrefused", "--retry-delay", "0", "--retry-max-time", "10", &url]);
            let (_, code, _) = run("curl (readiness)", cmd, READY);
            if code.trim() == "200" {
                return;
            }
            assert!(Instant::now() < deadline, "{url} never answered 200 (last: {code:?})\n{}", server.tail());
        }
    }

    /// A new Wi-Fi address for the phone (the next host after the one it had first).
    pub fn new_wifi_addr(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 1, 2 + n)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Whatever still runs in the lab (a daemon's session child, a ProxyCommand) is
        // ours: kill it by pid, so nothing outlives the test. Our own process is never in
        // these namespaces (only some of its threads), but is skipped all the same.
        let me = std::process::id();
        for ns in [self.lab.phone(), self.lab.server(), self.lab.core()] {
            for pid in ns.pids().unwrap_or_default() {
                if pid != me {
                    // SAFETY: kill(2) on a process inside a namespace this test created.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
        self.names.kill();
    }
}
