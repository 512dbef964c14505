//! What the workspace's tests share, so that every test makes its payloads, starts a name
//! server and finds the workspace's binaries the same way: one deterministic data
//! generator, SHA-256 of a buffer, test logging, msocketd's name server run in process, and
//! the path of a binary another package builds. A test that needs no more than that
//! depends on this crate alone, not on the CLI or the benchmarks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The daemon as a library (its name server and relay run in-process in tests).
pub use msocketd;
use msocketd::name_server::NameServer;
use sha2::{Digest, Sha256};

/// `len` pseudo-random bytes, the same for the same `seed` on every run and machine
/// (xorshift64*, eight bytes per step). Different seeds give unrelated bytes, and
/// `data(n, seed)` is a prefix of `data(m, seed)` when `n <= m`. Fast enough for
/// payloads of many megabytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Sends `tracing` output to the test's captured output, filtered by `RUST_LOG`
/// (default: warnings). Safe to call from every test.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// msocketd's name server on a free loopback port, with a database in a temporary
/// directory, served by a thread and runtime of its own (so both blocking and async tests
/// can use it). Dropping it stops the server.
#[derive(Debug)]
pub struct LocalNameServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LocalNameServer {
    /// Starts the server; panics, saying what failed, when it cannot.
    pub fn start() -> LocalNameServer {
        let dir = tempfile::tempdir().expect("temporary directory for the name database");
        let server = NameServer::open(dir.path().join("names.redb")).expect("open the name database");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the name server to a loopback port");
        let addr = listener.local_addr().expect("the name server's address");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel::<std::io::Result<()>>();
        std::thread::Builder::new()
            .name("name-server".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => return drop(ready.send(Err(e))),
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => return drop(ready.send(Err(e))),
                    };
                    let _ = ready.send(Ok(()));
                    Arc::new(server)
                        .serve(listener, async {
                            let _ = stopped.await;
                        })
                        .await;
                });
                drop(dir);
            })
            .expect("start the name server's thread");
        match started.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("start the name server: {e}"),
            Err(_) => panic!("the name server's thread ended before serving"),
        }
        LocalNameServer { addr, stop: Some(stop) }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL for clients: `tcp://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("tcp://{}", self.addr)
    }
}

impl Drop for LocalNameServer {
    fn drop(&mut self) {
        // The server winds down on its own thread; nobody waits for it.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The path of the workspace binary `name` (e.g. `"msocketd"`), as built for the running
/// test's profile: `target/<profile>/<name>`, the directory above the test executable's
/// `deps/`. Cargo tells a test where its own package's binaries are
/// (`CARGO_BIN_EXE_<name>`), but not another package's, and does not build those for it:
/// they must have been built already (`cargo build --workspace`, as `ci/test` does first).
/// Panics, saying so, when the binary is missing.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("no target directory above {}", exe.display()));
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// Waits up to `limit` for `child` to exit. A child still running then is killed and
/// `None` returned, so a test that expects an exit fails with its own message instead of
/// hanging.
pub fn wait_with_timeout(mut child: std::process::Child, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(limit) {
        Ok(status) => status.ok(),
        Err(_) => {
            // Not reaped yet (the waiter has not returned), so the pid is still the child's.
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_deterministic_and_prefix_stable() {
        assert_eq!(data(1000, 7), data(1000, 7));
        assert_eq!(data(13, 7)[..], data(1000, 7)[..13]);
        assert_ne!(data(64, 1), data(64, 2));
        assert!(data(0, 3).is_empty());
        assert_eq!(data(5, 3).len(), 5);
    }

    #[tokio::test]
    async fn the_local_name_server_answers_and_starts_inside_a_runtime() {
        use msocket::name::{NameError, NameService as _, TcpNameClient};
        let names = LocalNameServer::start();
        assert!(names.url().starts_with("tcp://127.0.0.1:"), "{}", names.url());
        let client = TcpNameClient::new(names.addr().to_string(), std::time::Duration::from_secs(5));
        assert_eq!(client.lookup("nobody.test").await, Err(NameError::NotFound("nobody.test".into())));
    }

    #[test]
    fn sha256_of_nothing() {
        let hex: String = sha256(b"").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
