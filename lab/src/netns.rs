//! Named network namespaces that clean up after themselves, and ways to run code in them.
//!
//! Why named namespaces (`ip netns add`) rather than anonymous `unshare`: a named one has a
//! file under `/var/run/netns/`, so real programs can be started in it with `ip netns
//! exec`, any thread can join it with `setns(2)`, and a test process that was killed leaves
//! a visible name behind that [`cleanup_stale`] can find. Names are `msl<pid>-<tag>`; the
//! pid tells `cleanup_stale` whether the owner is still alive.
//!
//! Code runs inside a namespace in two ways:
//! - [`Netns::spawn_runtime`]: a dedicated std thread joins the namespace (a thread's
//!   network namespace decides where its new sockets live) and drives a current-thread
//!   tokio runtime; the runtime's blocking-pool threads join it too, so `spawn_blocking`
//!   and name resolution see the same network.
//! - [`Netns::command`]: a `std::process::Command` prefixed with `ip netns exec`.

use std::ffi::OsStr;
use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::{io_err, Error, Result};

/// Every namespace this crate creates is named `msl<pid>-<tag>`.
pub const NS_PREFIX: &str = "msl";

const NETNS_DIR: &str = "/var/run/netns";

/// A named network namespace, created by [`Netns::new`] and deleted (`ip netns del`) on drop.
///
/// Deleting the name does not kill what runs inside: sockets and threads still in the
/// namespace keep it alive, invisibly, until they close.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates the namespace `msl<pid>-<tag>`, with `lo` up and IPv6 disabled (the lab is
    /// IPv4-only; IPv6 would add router solicitations and DAD traffic to every link).
    ///
    /// `tag` may hold ASCII letters, digits and `-` (at most 40 characters).
    pub fn new(tag: &str) -> Result<Netns> {
        if tag.is_empty()
            || tag.len() > 40
            || !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Error::Invalid(format!(
                "namespace tag {tag:?} must be 1-40 ASCII letters, digits or '-'"
            )));
        }
        let name = format!("{NS_PREFIX}{}-{tag}", std::process::id());
        run_cmd(Command::new("ip").args(["netns", "add", &name]), None)?;
        let ns = Netns {
            path: Path::new(NETNS_DIR).join(&name),
            name,
        };
        debug!(ns = %ns.name, "namespace created");
        ns.ip(&["link", "set", "lo", "up"])?;
        if Path::new("/proc/sys/net/ipv6").exists() {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`: add arguments, then spawn or run it as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args…` inside the namespace; returns its stdout, or an error with the
    /// command line and its stderr when it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        run_cmd(self.command(program).args(args), None)
    }

    /// `ip -n NAME args…`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run_cmd(Command::new("ip").args(["-n", &self.name]).args(args), None)
    }

    /// `tc args…` inside the namespace.
    pub fn tc(&self, args: &[&str]) -> Result<String> {
        self.run("tc", args)
    }

    /// The processes running in this namespace (`ip netns pids`): what a test started in
    /// it with [`Netns::command`], and whatever those forked (daemons' session children
    /// included), so a test can make sure nothing it started outlives it. Threads that
    /// joined the namespace (the emulators', [`Netns::spawn_runtime`]'s) are not listed.
    pub fn pids(&self) -> Result<Vec<u32>> {
        let out = run_cmd(Command::new("ip").args(["netns", "pids", &self.name]), None)?;
        Ok(out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
    }

    /// Loads an nftables script (`nft -f -`) inside the namespace.
    pub fn nft(&self, script: &str) -> Result<()> {
        run_cmd(self.command("nft").args(["-f", "-"]), Some(script)).map(drop)
    }

    /// `sysctl -w key=value` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// A veth pair from `name` here to `peer_name` in `peer`, both up, with checksum
    /// offload, TSO, GSO and GRO off: the link emulator needs that (a packet socket would
    /// otherwise see unfinished checksums and 64 KB super-frames), and it keeps every lab
    /// link alike.
    pub fn veth(&self, name: &str, peer: &Netns, peer_name: &str) -> Result<()> {
        for n in [name, peer_name] {
            if n.is_empty()
                || n.len() > 15
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(Error::Invalid(format!(
                    "interface name {n:?} must be 1-15 of [A-Za-z0-9._-]"
                )));
            }
        }
        self.ip(&[
            "link",
            "add",
            "name",
            name,
            "type",
            "veth",
            "peer",
            "name",
            peer_name,
            "netns",
            peer.name(),
        ])?;
        for (ns, dev) in [(self, name), (peer, peer_name)] {
            ns.run(
                "ethtool",
                &[
                    "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
                ],
            )?;
            ns.ip(&["link", "set", "dev", dev, "up"])?;
        }
        Ok(())
    }

    /// Adds `addr/prefix` to interface `dev`.
    pub fn add_addr(&self, dev: &str, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        if prefix > 32 {
            return Err(Error::Invalid(format!(
                "prefix length /{prefix} is above 32"
            )));
        }
        self.ip(&["addr", "add", &format!("{addr}/{prefix}"), "dev", dev])
            .map(drop)
    }

    /// Makes this namespace a router: IPv4 forwarding on, reverse-path filtering off (the
    /// lab's asymmetric and source-routed paths would trip it).
    pub fn make_router(&self) -> Result<()> {
        self.disable_rp_filter()?;
        self.sysctl("net.ipv4.ip_forward", "1")
    }

    /// Reverse-path filtering off, for existing and future interfaces, and secondary
    /// addresses promoted when the primary is deleted (renumbering keeps routes).
    pub fn disable_rp_filter(&self) -> Result<()> {
        self.run(
            "sysctl",
            &[
                "-q",
                "-w",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv4.conf.all.promote_secondaries=1",
                "net.ipv4.conf.default.promote_secondaries=1",
            ],
        )
        .map(drop)
    }

    /// Makes the *calling thread* join this namespace: its new sockets live here from now
    /// on. Used by the emulator and the runtime threads; the thread never leaves.
    pub(crate) fn enter_current_thread(&self) -> Result<()> {
        let file = File::open(&self.path)
            .map_err(|e| io_err(format!("open {}", self.path.display()), e))?;
        setns(&file, &self.name)
    }

    /// Runs a future on a current-thread tokio runtime inside this namespace, on a new
    /// thread. The result comes back through [`NsTask::join`]. Dropping the [`NsTask`]
    /// cancels the future (servers live as long as their handle).
    pub fn spawn_runtime<F, Fut, T>(&self, f: F) -> Result<NsTask<T>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        // Opened here so a missing namespace is reported to the caller, not the thread.
        let file = Arc::new(
            File::open(&self.path)
                .map_err(|e| io_err(format!("open {}", self.path.display()), e))?,
        );
        let ns = self.name.clone();
        let (result_tx, result_rx) = mpsc::channel::<Result<Option<T>>>();
        let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_ns = ns.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ns-{ns}"))
            .spawn(move || {
                let outcome = run_in_ns(&file, &thread_ns, f, cancel_rx);
                // The receiver may be gone (task dropped): nothing to report then.
                let _ = result_tx.send(outcome);
            })
            .map_err(|e| io_err(format!("spawn thread for namespace {ns}"), e))?;
        Ok(NsTask {
            ns,
            result: result_rx,
            cancel: Some(cancel_tx),
            thread: Some(thread),
        })
    }
}

fn run_in_ns<F, Fut, T>(
    file: &Arc<File>,
    ns: &str,
    f: F,
    cancel: tokio::sync::oneshot::Receiver<()>,
) -> Result<Option<T>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    setns(file, ns)?;
    let worker_failed = Arc::new(Mutex::new(None::<String>));
    let (wf, wfile, wns) = (worker_failed.clone(), file.clone(), ns.to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(move || {
            if let Err(e) = setns(&wfile, &wns) {
                error!(ns = %wns, "runtime worker thread could not join the namespace: {e}");
                if let Ok(mut slot) = wf.lock() {
                    *slot = Some(e.to_string());
                }
            }
        })
        .build()
        .map_err(|e| io_err(format!("build tokio runtime in namespace {ns}"), e))?;
    let out = rt.block_on(async move {
        let fut = f();
        tokio::select! {
            biased;
            _ = cancel => None,
            v = fut => Some(v),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Some(msg) = worker_failed.lock().ok().and_then(|mut s| s.take()) {
        return Err(Error::Invalid(format!(
            "a blocking-pool thread ran outside namespace {ns}: {msg}"
        )));
    }
    Ok(out)
}

fn setns(file: &File, ns: &str) -> Result<()> {
    // SAFETY: setns on a valid fd; affects only the calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io_err(
            format!("setns into network namespace {ns}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        match run_cmd(Command::new("ip").args(["netns", "del", &self.name]), None) {
            Ok(_) => debug!(ns = %self.name, "namespace deleted"),
            Err(e) => error!(ns = %self.name, "could not delete namespace: {e}"),
        }
    }
}

/// A future running in a namespace (see [`Netns::spawn_runtime`]).
#[derive(Debug)]
pub struct NsTask<T> {
    ns: String,
    result: mpsc::Receiver<Result<Option<T>>>,
    cancel: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl<T> NsTask<T> {
    /// Waits up to `timeout` for the future's output. On timeout the future is cancelled
    /// and [`Error::Timeout`] returned; a panic inside becomes [`Error::Panicked`].
    pub fn join(mut self, timeout: Duration) -> Result<T> {
        match self.result.recv_timeout(timeout) {
            Ok(Ok(Some(v))) => {
                self.reap();
                Ok(v)
            }
            Ok(Ok(None)) => Err(Error::Invalid(format!("task in {} was cancelled", self.ns))),
            Ok(Err(e)) => Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.cancel.take();
                // Give the cancelled runtime a moment to wind down so its sockets close.
                let _ = self.result.recv_timeout(Duration::from_secs(2));
                Err(Error::Timeout {
                    after: timeout,
                    what: format!("task in namespace {}", self.ns),
                })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let message = match self.thread.take().map(JoinHandle::join) {
                    Some(Err(payload)) => panic_message(&payload),
                    _ => "thread ended without a result".to_string(),
                };
                Err(Error::Panicked {
                    ns: self.ns.clone(),
                    message,
                })
            }
        }
    }

    /// True once the future has finished (or the thread died).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    fn reap(&mut self) {
        if let Some(t) = self.thread.take() {
            // The result was sent as the thread's last act: this join is immediate.
            let _ = t.join();
        }
    }
}

impl<T> Drop for NsTask<T> {
    fn drop(&mut self) {
        // Dropping the sender wakes the runtime's select: the future is dropped, its
        // sockets closed. The thread is not joined: a future that blocks must not hang Drop.
        self.cancel.take();
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs a command, optionally feeding `stdin`; returns stdout or a descriptive error.
pub(crate) fn run_cmd(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let line = command_line(cmd);
    debug!(command = %line, "run");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        command: line.clone(),
        source,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| io_err(format!("write stdin of `{line}`"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| io_err(format!("wait for `{line}`"), e))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// True when running as root (the lab needs it for namespaces and raw sockets).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The lab's external programs that are not installed (`lab/setup.sh` installs them).
pub fn missing_tools() -> Vec<&'static str> {
    ["ip", "nft", "sysctl", "ethtool", "conntrack", "ping"]
        .into_iter()
        .filter(|tool| {
            !std::env::var_os("PATH")
                .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
                .unwrap_or(false)
        })
        .collect()
}

/// Deletes the `msl<pid>-…` namespaces whose owning process no longer exists (left by a
/// test that was killed before its Drop guards ran). Returns the names it deleted.
pub fn cleanup_stale() -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("list {NETNS_DIR}"), e)),
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match run_cmd(Command::new("ip").args(["netns", "del", &name]), None) {
            Ok(_) => {
                info!(ns = %name, pid, "removed stale namespace of a dead process");
                removed.push(name);
            }
            Err(e) => warn!(ns = %name, "could not remove stale namespace: {e}"),
        }
    }
    Ok(removed)
}

/// Process-wide counter so several labs in one test binary get distinct names.
pub(crate) fn next_seq() -> u32 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}
