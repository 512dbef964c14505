//! The real `msocket` binary end to end: help and argument errors, keygen, error
//! messages, netcat-style pipes, ssh-ProxyCommand-style use, TCP forwarding, the demo and
//! the benchmark. Every child process is killed when its guard drops, so a failing test
//! leaves nothing running; every wait is bounded; readiness is read from the children's
//! own "listening"/"forwarding" lines, never guessed with sleeps.

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use msocket_test_support::{data, sha256};

/// Bound on any single wait for a child (readiness, a line, an exit).
const WAIT: Duration = Duration::from_secs(60);
const MB: usize = 1_000_000;

fn msocket() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_msocket"));
    // Hermetic: the caller's environment must not choose our key or name service.
    cmd.env_remove("MSOCKET_KEY")
        .env_remove("MSOCKET_NAMES")
        .env_remove("MSOCKET_PINS")
        .env_remove("MSOCKET_ALLOW_FILE")
        .env("RUST_LOG", "warn");
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    cmd
}

/// A running child: killed and reaped when dropped. Its stderr is collected line by
/// line (for readiness lines and for failure messages).
struct Proc {
    what: String,
    child: Option<Child>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    /// Spawns `cmd` with stderr piped; stdin and stdout are as the caller set them.
    fn spawn(what: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        Proc {
            what: what.to_string(),
            child: Some(child),
            lines,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) until the stderr reader reached the end of the pipe, which follows
    /// the exit: only then does [`stderr`](Self::stderr) hold all the child wrote.
    fn wait_stderr_end(&self) {
        let deadline = Instant::now() + WAIT;
        while self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
        {}
    }

    /// Waits (bounded) for a stderr line starting with `prefix`; returns it.
    fn wait_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no {prefix:?} line; stderr:\n{}",
                    self.what,
                    self.stderr()
                ),
            }
        }
    }

    fn take_stdin(&mut self) -> ChildStdin {
        self.child
            .as_mut()
            .unwrap()
            .stdin
            .take()
            .expect("stdin not piped")
    }

    fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.child
            .as_mut()
            .unwrap()
            .stdout
            .take()
            .expect("stdout not piped")
    }

    /// Waits (bounded) for the child to exit by itself; kills it and panics otherwise.
    fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.take().expect("already waited");
        match msocket_test_support::wait_with_timeout(child, WAIT) {
            Some(status) => status,
            None => panic!("{} did not exit within {WAIT:?}; stderr:\n{}", self.what, self.stderr()),
        }
    }

    /// Waits for exit 0.
    fn expect_success(&mut self) {
        let status = self.wait_exit();
        assert!(
            status.success(),
            "{} exited with {status}; stderr:\n{}",
            self.what,
            self.stderr()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a short-lived command printed.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion (bounded), collecting its output.
fn run(what: &str, mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped());
    let mut p = Proc::spawn(what, cmd);
    let stdout = read_all(p.take_stdout());
    let status = p.wait_exit();
    let stdout = String::from_utf8(stdout.join().unwrap()).unwrap();
    p.wait_stderr_end();
    Output {
        status,
        stdout,
        stderr: p.stderr(),
    }
}

fn read_all(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Reads to the end, returning (bytes, SHA-256).
fn hash_all(mut r: impl Read + Send + 'static) -> JoinHandle<(usize, [u8; 32])> {
    std::thread::spawn(move || {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0;
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    h.update(&buf[..k]);
                    n += k;
                }
            }
        }
        (n, h.finalize().into())
    })
}


fn assert_clean_failure(out: &Output, what: &str) {
    assert!(
        !out.status.success(),
        "{what}: exited 0; stdout:\n{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains("panicked"),
        "{what} panicked:\n{}",
        out.stderr
    );
    assert!(!out.stderr.trim().is_empty(), "{what}: no message");
}

/// A running `msocketd name` on a temporary database.
struct Names {
    _proc: Proc,
    url: String,
    /// The server's key fingerprint, as it printed it.
    fingerprint: String,
    dir: tempfile::TempDir,
}

impl Names {
    /// The pin file of this test's clients (not the user's, whose pins would outlive the
    /// test's keys).
    fn pins(&self) -> std::path::PathBuf {
        self.dir.path().join("client-pins")
    }
}

fn names() -> Names {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(msocket_test_support::workspace_binary("msocketd"));
    cmd.args(["name", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("names.redb"));
    cmd.env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut p = Proc::spawn("msocketd", cmd);
    let mut stdout = BufReader::new(p.take_stdout());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..2 {
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let _ = tx.send(line);
        }
    });
    let line = || rx.recv_timeout(WAIT).unwrap_or_else(|_| panic!("msocketd silent; stderr:\n{}", p.stderr()));
    let (first, second) = (line(), line());
    let addr = first
        .trim_end()
        .strip_prefix("msocketd: name service listening on ")
        .unwrap_or_else(|| panic!("unexpected msocketd line {first:?}"));
    let fingerprint = second
        .trim_end()
        .strip_prefix("msocketd: name server key fingerprint ")
        .unwrap_or_else(|| panic!("unexpected msocketd line {second:?}"))
        .to_string();
    Names {
        url: format!("tcp://{addr}"),
        fingerprint,
        _proc: p,
        dir,
    }
}

fn keygen(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("key");
    let mut cmd = msocket();
    cmd.arg("keygen").arg("--key").arg(&key);
    let out = run("keygen", cmd);
    assert!(out.status.success(), "keygen failed: {}", out.stderr);
    key
}

/// `msocket listen NAME` with a fresh key on 127.0.0.2, ready (its "listening" line read).
fn start_listen(
    ns: &Names,
    dir: &Path,
    name: &str,
    extra: &[&str],
    stdin: Stdio,
    stdout: Stdio,
) -> Proc {
    let key = keygen(&dir.join(name));
    let mut cmd = msocket();
    cmd.args(["listen", name, "--bind", "127.0.0.2", "--names", &ns.url])
        .args(extra);
    cmd.arg("--key").arg(key).stdin(stdin).stdout(stdout);
    let p = Proc::spawn("listen", cmd);
    let line = p.wait_line("listening on ");
    assert!(line.contains(name) && line.contains("127.0.0.2:"), "{line}");
    p
}

fn connect_cmd(ns: &Names, name: &str) -> Command {
    let mut cmd = msocket();
    // MSOCKET_NAMES is the documented way to point clients at the name service.
    cmd.args(["connect", name, "--bind", "127.0.0.3"])
        .env("MSOCKET_NAMES", &ns.url)
        .env("MSOCKET_PINS", ns.pins());
    cmd
}

/// A TCP echo server on 127.0.0.1: echoes each connection until its EOF, then closes.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut back = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut conn, &mut back);
                let _ = back.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------
// Help and arguments
// ---------------------------------------------------------------------------------------

fn help(args: &[&str]) -> String {
    let mut cmd = msocket();
    cmd.args(args);
    let out = run("help", cmd);
    assert!(out.status.success(), "{args:?}: {}", out.stderr);
    out.stdout
}

#[test]
fn help_explains_every_command() {
    let top = help(&["--help"]);
    for needle in [
        "keygen",
        "listen",
        "connect",
        "forward",
        "demo",
        "bench",
        "msocketd name",
        "RUST_LOG",
    ] {
        assert!(
            top.contains(needle),
            "msocket --help lacks {needle:?}:\n{top}"
        );
    }
    let keygen = help(&["keygen", "--help"]);
    for needle in [
        "--key",
        "MSOCKET_KEY",
        ".config/msocket/key",
        "never overwrites",
    ] {
        assert!(
            keygen.contains(needle),
            "keygen --help lacks {needle:?}:\n{keygen}"
        );
    }
    for cmd in ["listen", "connect", "forward"] {
        let h = help(&[cmd, "--help"]);
        for needle in [
            "--key",
            "MSOCKET_KEY",
            "--names",
            "MSOCKET_NAMES",
            "tcp://127.0.0.1:7450",
            "--bind",
            "--deadline",
            "[default: 300]",
        ] {
            assert!(h.contains(needle), "{cmd} --help lacks {needle:?}:\n{h}");
        }
    }
    assert!(help(&["listen", "--help"]).contains("--to"));
    assert!(help(&["connect", "--help"]).contains("ProxyCommand"));
    assert!(help(&["forward", "--help"]).contains("LOCAL"));
    let demo = help(&["demo", "--help"]);
    for needle in ["--bytes", "--moves", "SHA-256"] {
        assert!(
            demo.contains(needle),
            "demo --help lacks {needle:?}:\n{demo}"
        );
    }
    let bench = help(&["bench", "throughput", "--help"]);
    for needle in ["--bytes", "--round-trips", "--json"] {
        assert!(
            bench.contains(needle),
            "bench throughput --help lacks {needle:?}:\n{bench}"
        );
    }
    let multipath = help(&["bench", "multipath", "--help"]);
    for needle in ["--workloads", "--policies", "--systems", "aggregation", "handoff", "energy", "--json"] {
        assert!(multipath.contains(needle), "bench multipath --help lacks {needle:?}:\n{multipath}");
    }
    assert!(help(&["--version"]).starts_with("msocket "));
}

/// The multipath benchmark checks its options before it builds anything (no root needed
/// to be told what is wrong).
#[test]
fn bench_multipath_explains_bad_options() {
    for (args, says) in [
        (&["--workloads", "nope"][..], "unknown workload \"nope\""),
        (&["--systems", "quic"][..], "unknown system \"quic\""),
        (&["--wifi", "20 parsecs"][..], "--wifi"),
        (&["--cell", "40ms"][..], "needs a rate"),
        (&["--stream-secs", "10", "--outage-secs", "6"][..], "--outage-secs"),
        (&["--reps", "0"][..], "--reps"),
    ] {
        let mut cmd = msocket();
        cmd.args(["bench", "multipath"]).args(args);
        let out = run("msocket", cmd);
        assert_clean_failure(&out, &format!("{args:?}"));
        assert!(out.stderr.contains(says), "{args:?} should say {says:?}:\n{}", out.stderr);
    }
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["--bogus"],
        &["listen"],
        &["connect"],
        &["forward", "not-an-address", "x"],
        &["listen", "x", "--to", "nowhere"],
        &["connect", "x", "--bind", "not-an-ip"],
        &["connect", "x", "--deadline", "soon"],
        &["connect", "x", "--policy", "fast"],
        &["demo", "--bytes", "-5"],
        &["bench", "throughput", "--round-trips", "many"],
        &["bench", "multipath", "--policies", "fast"],
        &["bench", "multipath", "--reps", "many"],
    ];
    for args in cases {
        let mut cmd = msocket();
        cmd.args(*args);
        let out = run("msocket", cmd);
        assert_clean_failure(&out, &format!("{args:?}"));
        assert!(
            out.stderr.contains("Usage") || out.stderr.contains("error:"),
            "{args:?}:\n{}",
            out.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------
// keygen
// ---------------------------------------------------------------------------------------

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    // A missing parent directory is created.
    let key = dir.path().join("sub/dir/key");
    let mut cmd = msocket();
    cmd.arg("keygen").env("MSOCKET_KEY", &key);
    let out = run("keygen", cmd);
    assert!(out.status.success(), "{}", out.stderr);
    let fingerprint = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .unwrap_or_else(|| panic!("no fingerprint line:\n{}", out.stdout));
    assert_eq!(fingerprint.len(), 32, "{fingerprint}");
    assert!(fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(
        out.stdout.contains(&key.display().to_string()),
        "{}",
        out.stdout
    );

    let text = std::fs::read_to_string(&key).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("msocket-key v1"));
    let seed = lines
        .next()
        .unwrap()
        .strip_prefix("seed ")
        .expect("seed line");
    assert_eq!(seed.len(), 64);
    assert!(
        text.contains(&format!("# fingerprint {fingerprint}")),
        "{text}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "key file mode {mode:o}");
    }

    let mut cmd = msocket();
    cmd.arg("keygen").arg("--key").arg(&key);
    let again = run("keygen again", cmd);
    assert_clean_failure(&again, "keygen over an existing key");
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        text,
        "the key was changed"
    );
}

// ---------------------------------------------------------------------------------------
// Error messages
// ---------------------------------------------------------------------------------------

#[test]
fn listen_without_a_key_says_to_run_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let ns = names();
    // Explicit --key, and the default path under $HOME.
    for explicit in [true, false] {
        let mut cmd = msocket();
        cmd.args(["listen", "svc", "--names", &ns.url])
            .env("HOME", dir.path());
        if explicit {
            cmd.arg("--key").arg(dir.path().join("missing.key"));
        }
        let out = run("listen", cmd);
        assert_clean_failure(&out, "listen without a key");
        assert!(out.stderr.contains("msocket keygen"), "{}", out.stderr);
        let shown = if explicit {
            "missing.key"
        } else {
            ".config/msocket/key"
        };
        assert!(out.stderr.contains(shown), "{}", out.stderr);
    }
    // A key file that is not one is refused with the same advice.
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "hello\n").unwrap();
    let mut cmd = msocket();
    cmd.args(["listen", "svc", "--names", &ns.url])
        .arg("--key")
        .arg(&bad);
    let out = run("listen", cmd);
    assert_clean_failure(&out, "listen with a malformed key");
    assert!(out.stderr.contains("malformed"), "{}", out.stderr);
}

#[test]
fn connect_to_an_unregistered_name_fails_fast() {
    let ns = names();
    let out = run("connect", connect_cmd(&ns, "nobody.here"));
    assert_clean_failure(&out, "connect to an unregistered name");
    assert!(
        out.stderr.contains("\"nobody.here\" is not registered"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_bad_names_url_is_explained() {
    for (url, why) in [
        ("http://127.0.0.1:7450", "unknown scheme"),
        ("tcp://127.0.0.1", "missing :PORT"),
        ("dns://x", "not supported"),
    ] {
        for cmd_name in ["connect", "listen"] {
            let mut cmd = msocket();
            cmd.args([cmd_name, "svc", "--names", url]);
            let out = run(cmd_name, cmd);
            assert_clean_failure(&out, url);
            assert!(
                out.stderr.contains("bad name service URL") && out.stderr.contains(why),
                "{url}: {}",
                out.stderr
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Data through the real binaries
// ---------------------------------------------------------------------------------------

#[test]
fn netcat_pipe_connect_to_listen() {
    let ns = names();
    let dir = tempfile::tempdir().unwrap();
    let mut listen = start_listen(
        &ns,
        dir.path(),
        "pipe.up",
        &[],
        Stdio::null(),
        Stdio::piped(),
    );
    let received = hash_all(listen.take_stdout());

    let payload = data(5 * MB, 1);
    let expect = sha256(&payload);
    let mut cmd = connect_cmd(&ns, "pipe.up");
    // Two local addresses, both carrying data.
    cmd.args(["--bind", "127.0.0.4", "--policy", "performance"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut connect = Proc::spawn("connect", cmd);
    let mut stdin = connect.take_stdin();
    let back = hash_all(connect.take_stdout());
    let writer = std::thread::spawn(move || stdin.write_all(&payload)); // dropped: EOF

    connect.expect_success();
    listen.expect_success();
    writer.join().unwrap().unwrap();
    let (n, hash) = received.join().unwrap();
    assert_eq!((n, hash), (5 * MB, expect), "listener's stdout differs");
    assert_eq!(
        back.join().unwrap().0,
        0,
        "connect printed data the listener never sent"
    );
}

#[test]
fn netcat_pipe_listen_to_connect() {
    let ns = names();
    let dir = tempfile::tempdir().unwrap();
    let payload = data(5 * MB, 2);
    let expect = sha256(&payload);
    let mut listen = start_listen(
        &ns,
        dir.path(),
        "pipe.down",
        &[],
        Stdio::piped(),
        Stdio::piped(),
    );
    let mut stdin = listen.take_stdin();
    let writer = std::thread::spawn(move || stdin.write_all(&payload));
    let listener_got = hash_all(listen.take_stdout());

    let mut cmd = connect_cmd(&ns, "pipe.down");
    cmd.stdout(Stdio::piped()); // stdin: /dev/null, so this end sends nothing
    let mut connect = Proc::spawn("connect", cmd);
    let received = hash_all(connect.take_stdout());

    connect.expect_success();
    listen.expect_success();
    writer.join().unwrap().unwrap();
    assert_eq!(
        received.join().unwrap(),
        (5 * MB, expect),
        "connect's stdout differs"
    );
    assert_eq!(listener_got.join().unwrap().0, 0);
}

/// Like `hash_all`, but the result can be waited for with a bound.
fn hash_all_rx(r: impl Read + Send + 'static) -> Receiver<(usize, [u8; 32])> {
    let (tx, rx) = mpsc::channel();
    let h = hash_all(r);
    std::thread::spawn(move || {
        let _ = tx.send(h.join().unwrap());
    });
    rx
}

/// Each end's stdout must end as soon as the peer has ended its side, even while the
/// local stdin is still open (ssh waits for EOF on a ProxyCommand's stdout; `msocket
/// listen x | tar x` must end without the user closing stdin).
#[test]
fn stdout_ends_when_the_peer_ends_while_stdin_stays_open() {
    let ns = names();
    let dir = tempfile::tempdir().unwrap();
    let mut listen = start_listen(
        &ns,
        dir.path(),
        "half.close",
        &[],
        Stdio::piped(),
        Stdio::piped(),
    );
    let mut listen_in = listen.take_stdin();
    let listen_out = hash_all_rx(listen.take_stdout());
    let mut cmd = connect_cmd(&ns, "half.close");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut connect = Proc::spawn("connect", cmd);
    let mut connect_in = connect.take_stdin();
    let connect_out = hash_all_rx(connect.take_stdout());

    // connect -> listen, then connect's stdin ends; listen's stdin stays open.
    let up = data(MB, 3);
    connect_in.write_all(&up).unwrap();
    drop(connect_in);
    let got = listen_out
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("listen's stdout did not end; stderr:\n{}", listen.stderr()));
    assert_eq!(got, (MB, sha256(&up)));

    // listen -> connect, then listen's stdin ends too: both finish.
    let down = data(MB, 4);
    listen_in.write_all(&down).unwrap();
    drop(listen_in);
    let got = connect_out.recv_timeout(WAIT).unwrap_or_else(|_| {
        panic!(
            "connect's stdout did not end; stderr:\n{}",
            connect.stderr()
        )
    });
    assert_eq!(got, (MB, sha256(&down)));
    connect.expect_success();
    listen.expect_success();

    // And the other way round: listen's side ends first while connect's stdin is open.
    let mut listen = start_listen(
        &ns,
        dir.path(),
        "half.close2",
        &[],
        Stdio::piped(),
        Stdio::piped(),
    );
    let mut listen_in = listen.take_stdin();
    let listen_out = hash_all_rx(listen.take_stdout());
    let mut cmd = connect_cmd(&ns, "half.close2");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut connect = Proc::spawn("connect", cmd);
    let connect_in = connect.take_stdin();
    let connect_out = hash_all_rx(connect.take_stdout());
    let d = down.clone();
    let writer = std::thread::spawn(move || listen_in.write_all(&d)); // then EOF
    let got = connect_out.recv_timeout(WAIT).unwrap_or_else(|_| {
        panic!(
            "connect's stdout did not end; stderr:\n{}",
            connect.stderr()
        )
    });
    assert_eq!(got, (MB, sha256(&down)));
    writer.join().unwrap().unwrap();
    drop(connect_in);
    assert_eq!(
        listen_out
            .recv_timeout(WAIT)
            .expect("listen's stdout did not end")
            .0,
        0
    );
    connect.expect_success();
    listen.expect_success();
}

/// A `connect` that only receives must not exit before its end of stream reached the
/// listener: the listener (with a short --deadline, so a lost end of stream shows as a
/// failure within seconds) must exit 0 every time.
#[test]
fn a_receiving_connect_lets_the_listener_finish() {
    let ns = names();
    let dir = tempfile::tempdir().unwrap();
    let payload = data(100_000, 5);
    for round in 0..5 {
        let name = format!("recv.only{round}");
        let extra = ["--deadline", "5"];
        let mut listen = start_listen(
            &ns,
            dir.path(),
            &name,
            &extra,
            Stdio::piped(),
            Stdio::null(),
        );
        let mut listen_in = listen.take_stdin();
        let p = payload.clone();
        let writer = std::thread::spawn(move || listen_in.write_all(&p)); // then EOF
        let mut cmd = connect_cmd(&ns, &name);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut connect = Proc::spawn("connect", cmd);
        let connect_in = connect.take_stdin();
        let got = hash_all_rx(connect.take_stdout())
            .recv_timeout(WAIT)
            .expect("connect's stdout did not end");
        assert_eq!(got, (payload.len(), sha256(&payload)));
        writer.join().unwrap().unwrap();
        drop(connect_in); // connect sends its (empty) side's end now, then exits
        connect.expect_success();
        listen.expect_success();
    }
}

#[test]
fn proxy_command_style_round_trips() {
    let ns = names();
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_server().to_string();
    let _listen = start_listen(
        &ns,
        dir.path(),
        "ssh.box",
        &["--to", &echo],
        Stdio::null(),
        Stdio::null(),
    );

    let mut cmd = connect_cmd(&ns, "ssh.box");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut connect = Proc::spawn("connect", cmd);
    let mut stdin = connect.take_stdin();
    let stdout = connect.take_stdout();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    for i in 0..20 {
        // Interactive: each line must come back before the next one is written.
        let line = format!("SSH-2.0-line {i} {}", "x".repeat(i * 37));
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let got = lines.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!("no echo of line {i}; connect stderr:\n{}", connect.stderr())
        });
        assert_eq!(got, line);
    }
    drop(stdin); // ssh closes the ProxyCommand's stdin when it is done
    connect.expect_success();
    assert!(
        lines.recv_timeout(WAIT).is_err(),
        "data after the last echo"
    );
}

#[test]
fn forward_carries_concurrent_tcp_clients() {
    let ns = names();
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_server().to_string();
    let _listen = start_listen(
        &ns,
        dir.path(),
        "echo.svc",
        &["--to", &echo],
        Stdio::null(),
        Stdio::null(),
    );

    let mut cmd = msocket();
    cmd.args([
        "forward",
        "127.0.0.1:0",
        "echo.svc",
        "--bind",
        "127.0.0.3",
        "--names",
        &ns.url,
    ]);
    cmd.arg("--pins").arg(ns.pins());
    let forward = Proc::spawn("forward", cmd);
    let line = forward.wait_line("forwarding ");
    let local: SocketAddr = line
        .strip_prefix("forwarding ")
        .and_then(|rest| rest.strip_suffix(" to echo.svc"))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .parse()
        .unwrap();
    assert_ne!(local.port(), 0);

    let clients: Vec<_> = (0..4u64)
        .map(|i| {
            std::thread::spawn(move || {
                let payload = data(MB, 100 + i);
                let expect = sha256(&payload);
                let conn = TcpStream::connect(local).unwrap();
                conn.set_read_timeout(Some(WAIT)).unwrap();
                let mut w = conn.try_clone().unwrap();
                let writer = std::thread::spawn(move || {
                    w.write_all(&payload)?;
                    w.shutdown(Shutdown::Write)
                });
                let got = hash_all(conn).join().unwrap();
                writer.join().unwrap().unwrap();
                (got, expect)
            })
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let ((n, hash), expect) = c.join().unwrap();
        assert_eq!(
            (n, hash),
            (MB, expect),
            "client {i}; forward stderr:\n{}",
            forward.stderr()
        );
    }
}

// ---------------------------------------------------------------------------------------
// demo and bench
// ---------------------------------------------------------------------------------------

/// `^demo ok: bytes=8000000 sha256=match moves=5 recovery_ms_p50=[0-9.]+ recovery_ms_max=[0-9.]+$`
fn demo_line_ok(line: &str) -> bool {
    let number = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.');
    let Some(rest) =
        line.strip_prefix("demo ok: bytes=8000000 sha256=match moves=5 recovery_ms_p50=")
    else {
        return false;
    };
    let Some((p50, max)) = rest.split_once(" recovery_ms_max=") else {
        return false;
    };
    number(p50) && number(max)
}

#[test]
fn demo_line_pattern() {
    assert!(demo_line_ok(
        "demo ok: bytes=8000000 sha256=match moves=5 recovery_ms_p50=3.2 recovery_ms_max=10.0"
    ));
    for bad in [
        "demo ok: bytes=8000000 sha256=match moves=5 recovery_ms_p50=3.2 recovery_ms_max=",
        "demo ok: bytes=8000000 sha256=match moves=4 recovery_ms_p50=3.2 recovery_ms_max=1",
        "demo ok: bytes=8000000 sha256=match moves=5 recovery_ms_p50=3.2 recovery_ms_max=1 ",
        "demo ok: bytes=8000000 sha256=match moves=5 recovery_ms_p50=a recovery_ms_max=1",
    ] {
        assert!(!demo_line_ok(bad), "{bad}");
    }
}

#[test]
fn demo_moves_and_matches() {
    let mut cmd = msocket();
    cmd.args(["demo", "--bytes", "8000000", "--moves", "2"]);
    let out = run("demo", cmd);
    assert!(
        out.status.success(),
        "demo failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(
        demo_line_ok(last),
        "last line {last:?}; stdout:\n{}",
        out.stdout
    );
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.contains("recovered in"))
            .count(),
        5,
        "{}",
        out.stdout
    );
}

#[test]
fn bench_throughput_json() {
    let mut cmd = msocket();
    cmd.args([
        "bench",
        "throughput",
        "--bytes",
        "20000000",
        "--round-trips",
        "200",
        "--json",
    ]);
    let out = run("bench", cmd);
    assert!(out.status.success(), "bench failed:\n{}", out.stderr);
    let rows: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", out.stdout));
    let rows = rows.as_array().expect("a JSON array");
    let systems: Vec<&str> = rows
        .iter()
        .map(|r| r["system"].as_str().expect("system"))
        .collect();
    assert_eq!(systems, ["tcp", "tcp+noise", "msocket"]);
    for row in rows {
        for field in [
            "throughput_mbps",
            "rr_latency_us_p50",
            "rr_latency_us_p99",
            "throughput_ratio_vs_tcp",
        ] {
            let v = row[field]
                .as_f64()
                .unwrap_or_else(|| panic!("{field} not a number in {row}"));
            assert!(v.is_finite() && v > 0.0, "{field} = {v} in {row}");
        }
        assert_eq!(row["bytes"].as_u64(), Some(20_000_000));
        let trials = row["throughput_mbps_trials"].as_array().expect("trials");
        let ratios = row["throughput_ratio_vs_tcp_trials"].as_array().expect("ratios per trial");
        assert_eq!(ratios.len(), trials.len(), "one ratio per trial in {row}");
        assert!(ratios.iter().all(|r| r.as_f64().is_some_and(|r| r.is_finite() && r > 0.0)), "{row}");
    }
    assert_eq!(rows[0]["throughput_ratio_vs_tcp"].as_f64(), Some(1.0));
    assert!(rows[0]["throughput_ratio_vs_tcp_trials"].as_array().unwrap().iter().all(|r| r.as_f64() == Some(1.0)));
}

// ---------------------------------------------------------------------------------------
// Trust: pinned and fingerprinted names, allow-lists
// ---------------------------------------------------------------------------------------

/// The `NAME#FINGERPRINT` a listener printed for itself.
fn listener_address(listen: &Proc) -> String {
    let line = listen.wait_line("peers can connect to ");
    line["peers can connect to ".len()..].to_string()
}

/// `msocket connect NAME` with `input` on stdin against the name server at `url`, with
/// the pin file `pins`; returns its output.
fn connect_with(url: &str, pins: &Path, name: &str, input: &'static [u8], extra: &[&str]) -> Output {
    let mut cmd = msocket();
    cmd.args(["connect", name, "--bind", "127.0.0.3", "--names", url]).args(extra);
    cmd.arg("--pins").arg(pins).stdin(Stdio::piped());
    cmd.stdout(Stdio::piped());
    let mut p = Proc::spawn("connect", cmd);
    let mut stdin = p.take_stdin();
    std::thread::spawn(move || stdin.write_all(input));
    let stdout = read_all(p.take_stdout());
    let status = p.wait_exit();
    let stdout = String::from_utf8(stdout.join().unwrap()).unwrap();
    // The exit can come before the stderr reader took the last lines: a loaded machine
    // read a refused connect's stderr as empty.
    p.wait_stderr_end();
    Output { status, stdout, stderr: p.stderr() }
}

#[test]
fn an_impostor_name_server_gets_nothing_from_a_pinned_or_fingerprinted_connect() {
    let ns = names();
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("pins");
    let mut real = start_listen(&ns, dir.path(), "alice.box", &[], Stdio::null(), Stdio::piped());
    let real_address = listener_address(&real);
    assert!(real.wait_line("accepting ").contains("from anyone who knows the name"));
    let real_got = hash_all(real.take_stdout());
    let first = connect_with(&ns.url, &pins, "alice.box", b"hello", &[]);
    assert!(first.status.success(), "first connect: {}", first.stderr);
    real.expect_success();
    assert_eq!(real_got.join().unwrap(), (5, sha256(b"hello")));

    // Another name server, where an impostor serves alice.box under its own keys.
    let evil = names();
    let mut impostor = start_listen(&evil, &dir.path().join("evil"), "alice.box", &[], Stdio::null(), Stdio::piped());
    let impostor_address = listener_address(&impostor);
    let impostor_got = hash_all(impostor.take_stdout());

    // The pinned client refuses, naming both keys and how to accept the new one.
    let out = connect_with(&evil.url, &pins, "alice.box", b"secret", &[]);
    assert_clean_failure(&out, "pinned connect to the impostor");
    let (real_fp, impostor_fp) = (real_address.split_once('#').unwrap().1, impostor_address.split_once('#').unwrap().1);
    assert!(out.stderr.contains(real_fp) && out.stderr.contains(&impostor_address), "{}", out.stderr);
    // A client without pins that names the key refuses too.
    let out = connect_with(&evil.url, &dir.path().join("fresh-pins"), &real_address, b"secret", &[]);
    assert_clean_failure(&out, "fingerprinted connect to the impostor");
    assert!(out.stderr.contains(impostor_fp) && out.stderr.contains(real_fp), "{}", out.stderr);
    // A malformed fingerprint is an argument error.
    let out = connect_with(&evil.url, &pins, "alice.box#1234", b"secret", &[]);
    assert_clean_failure(&out, "short fingerprint");
    assert!(out.stderr.contains("32 to 64 hex digits"), "{}", out.stderr);

    drop(impostor);
    assert_eq!(impostor_got.join().unwrap().0, 0, "the impostor received data");
    let pinned = std::fs::read_to_string(&pins).unwrap();
    assert_eq!(pinned.lines().filter(|l| l.starts_with("alice.box ")).count(), 1, "{pinned}");
}

/// `msocket keygen` into `dir/who.key`; returns the key and its fingerprint.
fn keygen_with_fingerprint(dir: &Path, who: &str) -> (std::path::PathBuf, String) {
    let key = dir.join(format!("{who}.key"));
    let mut cmd = msocket();
    cmd.arg("keygen").arg("--key").arg(&key);
    let out = run("keygen", cmd);
    assert!(out.status.success(), "keygen: {}", out.stderr);
    let fp = out.stdout.lines().find_map(|l| l.strip_prefix("fingerprint ")).expect("fingerprint line");
    (key, fp.to_string())
}

#[test]
fn a_one_shot_listener_with_an_allow_list_hands_its_input_only_to_an_allowed_key() {
    let ns = names();
    let dir = tempfile::tempdir().unwrap();
    let (friend_key, friend_fp) = keygen_with_fingerprint(dir.path(), "friend");
    let mut listen = start_listen(&ns, dir.path(), "secret.box", &["--allow", &friend_fp], Stdio::piped(), Stdio::null());
    assert_eq!(listen.wait_line("accepting "), "accepting flows only from 1 allowed key(s)");
    let mut stdin = listen.take_stdin();
    std::thread::spawn(move || stdin.write_all(b"the secret"));

    // A stranger (a throw-away key) is refused and gets nothing.
    let out = connect_with(&ns.url, &ns.pins(), "secret.box", b"", &[]);
    assert_clean_failure(&out, "stranger");
    assert!(out.stderr.contains("does not accept this endpoint's key"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    // The refusal is logged...
    while !listen.wait_line("").contains("not on the allow-list") {}

    // ...and the friend gets the secret; the listener names its key.
    let key = friend_key.to_str().unwrap();
    let out = connect_with(&ns.url, &ns.pins(), "secret.box", b"", &["--key", key]);
    assert!(out.status.success(), "friend: {}", out.stderr);
    assert_eq!(out.stdout, "the secret");
    assert!(listen.wait_line("flow ").ends_with(&format!(" from {friend_fp}")), "{}", listen.stderr());
    listen.expect_success();

    // An allow file works like --allow; a file that allows nobody is refused at start.
    let allow_file = dir.path().join("allowed");
    std::fs::write(&allow_file, "# nobody\n").unwrap();
    let key = keygen(&dir.path().join("other"));
    let mut cmd = msocket();
    cmd.args(["listen", "other.box", "--bind", "127.0.0.2", "--names", &ns.url, "--allow-file"]).arg(&allow_file);
    cmd.arg("--key").arg(key);
    let out = run("listen with an empty allow file", cmd);
    assert_clean_failure(&out, "empty allow file");
    assert!(out.stderr.contains("lists no fingerprint"), "{}", out.stderr);
}

#[test]
fn a_names_url_may_pin_the_name_servers_key() {
    let ns = names();
    let dir = tempfile::tempdir().unwrap();
    let mut listen = start_listen(&ns, dir.path(), "pinned.names", &[], Stdio::null(), Stdio::piped());
    let got = hash_all(listen.take_stdout());
    let pinned = format!("{}#{}", ns.url, ns.fingerprint);
    let out = connect_with(&pinned, &ns.pins(), "pinned.names", b"over a pinned name server", &[]);
    assert!(out.status.success(), "{}", out.stderr);
    listen.expect_success();
    assert_eq!(got.join().unwrap().0, 25);

    // Another key's fingerprint: every request fails, naming both.
    let other = "0123456789abcdef0123456789abcdef";
    let out = connect_with(&format!("{}#{other}", ns.url), &ns.pins(), "pinned.names", b"", &[]);
    assert_clean_failure(&out, "a name server with another key");
    assert!(out.stderr.contains(other) && out.stderr.contains(&ns.fingerprint), "{}", out.stderr);
}
