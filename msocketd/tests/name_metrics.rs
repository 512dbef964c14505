//! `msocketd name --metrics`: the third start-up line, and the counters on the page.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use msocket::name::{unix_now, NameError, NameRecord, NameService as _, SignedRecord, TcpNameClient};
use msocket::Identity;

const WAIT: Duration = Duration::from_secs(30);

/// Kills the child when dropped, so a failing test leaves no process behind.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: names\r\n\r\n").unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page
}

#[test]
fn the_name_service_serves_its_counters_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_msocketd"))
        .args(["name", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("names.redb"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn msocketd name");
    let stdout = child.stdout.take().unwrap();
    let _child = Reaped(child);
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let next = || lines.recv_timeout(WAIT).expect("msocketd name did not announce itself");
    let listening = next();
    let addr = listening.strip_prefix("msocketd: name service listening on ").expect(&listening).to_string();
    let fingerprint = next();
    let fingerprint = fingerprint.strip_prefix("msocketd: name server key fingerprint ").expect(&fingerprint).to_string();
    let third = next();
    let metrics: SocketAddr = third
        .strip_prefix("msocketd: name metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected third line {third:?}"))
        .parse()
        .unwrap();

    let client = TcpNameClient::new(format!("{addr}#{fingerprint}"), WAIT);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        assert!(matches!(client.lookup("nobody").await, Err(NameError::NotFound(_))));
        let id = Identity::from_seed([1; 32]);
        let record = NameRecord::new("alice", id.public(), vec![], 1, unix_now() + 3600);
        let signed = SignedRecord::sign(record, &id).unwrap();
        client.register(&signed).await.unwrap();
        assert!(matches!(client.register(&signed).await, Err(NameError::Stale { .. })));
    });

    let page = get(metrics, "/metrics");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    for line in [
        "# TYPE msocket_name_requests_total counter",
        "msocket_name_requests_total{kind=\"lookup\"} 1\n",
        "msocket_name_requests_total{kind=\"register\"} 2\n",
        "msocket_name_refusals_total{reason=\"stale\"} 1\n",
        "msocket_name_names_stored 1\n",
        "# TYPE msocket_name_connections gauge",
    ] {
        assert!(page.contains(line), "{line:?} missing from\n{page}");
    }
    let connections: u64 = page
        .lines()
        .find_map(|l| l.strip_prefix("msocket_name_connections_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no connection count in\n{page}"));
    assert!(connections >= 1, "{page}");
}
