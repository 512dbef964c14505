//! The real `msocketd` binary: durability across `kill -9`, clean exit on SIGTERM, help.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use msocket::name::{
    unix_now, NameError, NameRecord, NameService as _, SignedRecord, TcpNameClient,
};
use msocket::Identity;

const WAIT: Duration = Duration::from_secs(30);
const LISTENING: &str = "msocketd: name service listening on ";
const FINGERPRINT: &str = "msocketd: name server key fingerprint ";

/// A running `msocketd name`; killed when dropped so a failing test leaves no process.
struct Daemon {
    child: Option<Child>,
    addr: SocketAddr,
    /// The server key's fingerprint, as printed.
    fingerprint: String,
}

impl Daemon {
    fn start(db: &Path) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_msocketd"))
            .args(["name", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn msocketd");
        let stdout = child.stdout.take().unwrap();
        // Read stdout on a thread so the wait for the announcement can be bounded.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut daemon = Daemon { child: Some(child), addr: ([0, 0, 0, 0], 0).into(), fingerprint: String::new() };
        let line = rx.recv_timeout(WAIT).expect("msocketd did not announce its address");
        let addr =
            line.strip_prefix(LISTENING).unwrap_or_else(|| panic!("unexpected line {line:?}"));
        daemon.addr = addr.parse().unwrap();
        assert_ne!(daemon.addr.port(), 0);
        let line = rx.recv_timeout(WAIT).expect("msocketd did not announce its key");
        let fingerprint =
            line.strip_prefix(FINGERPRINT).unwrap_or_else(|| panic!("unexpected line {line:?}"));
        assert!(fingerprint.parse::<msocket::Fingerprint>().is_ok() && fingerprint.len() == 32, "{fingerprint}");
        daemon.fingerprint = fingerprint.to_string();
        daemon
    }

    /// A client that pins the daemon's key, as an operator would with the printed line.
    fn client(&self) -> TcpNameClient {
        TcpNameClient::new(format!("{}#{}", self.addr, self.fingerprint), WAIT)
    }

    fn kill_9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
    }

    /// Waits (bounded) for the process to exit by itself.
    fn wait_exit(mut self) -> ExitStatus {
        let child = self.child.take().unwrap();
        msocket_test_support::wait_with_timeout(child, WAIT)
            .unwrap_or_else(|| panic!("msocketd did not exit within {WAIT:?}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn record(seed: u8, name: &str, seq: u64) -> SignedRecord {
    let id = Identity::from_seed([seed; 32]);
    let p = id.public();
    let record = NameRecord::new(name, p, vec![SocketAddr::from(([198, 51, 100, seed], 5000 + seq as u16))], seq, unix_now() + 3600);
    SignedRecord::sign(record, &id).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn registrations_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("names.redb");
    let rt = runtime();
    let names = [(1u8, "alice", 3u64), (2, "bob", 2), (3, "carol.example", 1), (4, "dave", 5)];

    let daemon = Daemon::start(&db);
    let client = daemon.client();
    // The last record registered for each name, as sent (its expiry is read off the clock,
    // so a record built again a second later would differ).
    let mut latest = Vec::new();
    rt.block_on(async {
        for &(seed, name, last) in &names {
            for seq in 1..=last {
                let signed = record(seed, name, seq);
                client.register(&signed).await.unwrap();
                if seq == last {
                    latest.push(signed);
                }
            }
        }
    });
    let fingerprint = daemon.fingerprint.clone();
    daemon.kill_9();

    // The key file beside the database keeps the server's key across restarts: clients
    // that pinned it keep working.
    let daemon = Daemon::start(&db);
    assert_eq!(daemon.fingerprint, fingerprint);
    let client = daemon.client();
    rt.block_on(async {
        for ((_, name, _), sent) in names.iter().zip(&latest) {
            assert_eq!(&client.lookup(name).await.unwrap(), sent, "{name}");
        }
        // The rules still see the stored state: older seqs and other keys are refused.
        assert_eq!(
            client.register(&record(1, "alice", 2)).await,
            Err(NameError::Stale { current: 3, offered: 2 })
        );
        assert_eq!(client.register(&record(9, "bob", 7)).await, Err(NameError::KeyMismatch));
        client.register(&record(1, "alice", 4)).await.unwrap();
    });
    daemon.kill_9();
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("names.redb"));
    let pid = daemon.child.as_ref().unwrap().id();
    // Serve one request first so shutdown happens with the server fully running.
    runtime().block_on(async {
        assert!(matches!(daemon.client().lookup("x").await, Err(NameError::NotFound(_))));
    });
    let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(sent.success());
    let status = daemon.wait_exit();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn help_explains_the_name_service() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_msocketd")).args(["name", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "signed name records",
        "--listen",
        "--db",
        "127.0.0.1:7450",
        "RUST_LOG",
        "--max-connections",
        "--grace",
        "--max-lifetime",
        "--registrations-per-source",
        "--registrations-per-key",
        "--names-per-key",
        "--max-names",
        "--max-connections-per-source",
        "--max-watches",
        "--max-watches-per-source",
        "--key",
        "FINGERPRINT",
        "rate limited",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_msocketd")).arg("--help").output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("name"));
}

#[test]
fn zero_connections_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_msocketd"))
        .args(["name", "--listen", "127.0.0.1:0", "--max-connections", "0", "--db"])
        .arg(dir.path().join("names.redb"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-connections must be at least 1"), "{err}");
}

/// Runs `msocketd name` with `args` (and a fresh database), expecting it to refuse to
/// start; returns its stderr.
fn refused_start(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_msocketd"))
        .args(["name", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("names.redb"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} started");
    assert!(out.stdout.is_empty(), "{args:?} announced itself");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_grace_period_of_minutes_or_a_bad_limit_is_refused_at_startup() {
    let err = refused_start(&["--grace", "30m"]);
    assert!(err.contains("--grace must be at least 1d (got 1800s)"), "{err}");
    let err = refused_start(&["--grace", "7"]);
    assert!(err.contains("not a duration") && err.contains("7d"), "{err}");
    let err = refused_start(&["--max-lifetime", "10m"]);
    assert!(err.contains("--max-lifetime must be at least 1h"), "{err}");
    for flag in [
        "--max-connections-per-source",
        "--registrations-per-source",
        "--registrations-per-key",
        "--names-per-key",
        "--max-names",
    ] {
        let err = refused_start(&[flag, "0"]);
        assert!(err.contains(&format!("{flag} must be at least 1")), "{err}");
    }
}

#[test]
fn a_bad_key_file_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bad.key");
    std::fs::write(&key, "not a key file\n").unwrap();
    let err = refused_start(&["--key", key.to_str().unwrap()]);
    assert!(err.contains("bad.key") && err.contains("malformed"), "{err}");
}

#[test]
fn a_bad_database_file_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("garbage.redb");
    std::fs::write(&db, b"definitely not a database").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_msocketd"))
        .args(["name", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("garbage.redb"), "{err}");
}
