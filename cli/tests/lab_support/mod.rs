//! Test-side glue for the network-lab scenarios. The harness itself (lab, name server,
//! endpoints in their namespaces, [`Recv`] and recovery measurement) lives in
//! `msocket_bench::lab_run`, shared with `msocket bench mobility`; this adds the check
//! that the lab can run here, test logging and the panicking conveniences the tests use.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use msocket_bench::lab_run::*;

pub use msocket_test_support::init_tracing;

/// Makes sure the lab can run here (installing its tools with `lab/setup.sh` if needed)
/// and removes stale namespaces; panics, saying what is missing, when it cannot.
pub fn require_lab() {
    static PROBLEM: OnceLock<Option<String>> = OnceLock::new();
    let problem = PROBLEM.get_or_init(|| {
        if !msocket_lab::is_root() {
            return Some("not root".into());
        }
        if !msocket_lab::missing_tools().is_empty() {
            let setup = concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/setup.sh");
            let _ = std::process::Command::new("bash").arg(setup).status();
        }
        let missing = msocket_lab::missing_tools();
        if !missing.is_empty() {
            return Some(format!("missing after lab/setup.sh: {}", missing.join(", ")));
        }
        let _ = msocket_lab::cleanup_stale();
        None
    });
    if let Some(why) = problem {
        panic!("this test needs root and network namespaces ({why}): run it as root (after lab/setup.sh)");
    }
}

/// The tests' way of using the harness: panics instead of errors.
pub trait SceneExt: Sized {
    /// Builds the lab (NAT on both access routers) and starts the name server.
    fn build(wifi: &str, cell: &str) -> Self;
    fn start_server(&self, plan: Plan, flow_deadline: Duration) -> Side;
    fn start_phone(&self, plan: Plan, flow_deadline: Duration, after_lookup: Option<std::sync::mpsc::Sender<()>>) -> Side;
}

impl SceneExt for Scene {
    fn build(wifi: &str, cell: &str) -> Scene {
        init_tracing();
        require_lab();
        let config = msocket_lab::LabConfig {
            wifi: wifi.parse().expect("wifi spec"),
            cell: cell.parse().expect("cell spec"),
            ..msocket_lab::LabConfig::default()
        };
        Scene::start(config).expect("build the lab and start the name server")
    }

    fn start_server(&self, plan: Plan, flow_deadline: Duration) -> Side {
        let (side, published) = self.launch_server(plan, flow_deadline, None).expect("start the server");
        println!("server published {published:?}");
        side
    }

    fn start_phone(&self, plan: Plan, flow_deadline: Duration, after_lookup: Option<std::sync::mpsc::Sender<()>>) -> Side {
        self.launch_phone(plan, flow_deadline, after_lookup).expect("start the phone")
    }
}

pub trait SideExt {
    fn join(self, timeout: Duration) -> Outcome;
}

impl SideExt for Side {
    fn join(self, timeout: Duration) -> Outcome {
        self.finish(timeout).expect("the side's task finished")
    }
}

/// Checks a two-way exchange end to end and prints what happened around the move.
pub fn check_exchange(
    label: &str,
    moved_at: Instant,
    phone_plan: Plan,
    server_plan: Plan,
    phone: &Outcome,
    server: &Outcome,
) {
    println!("[{label}] events (relative to the move):");
    phone.print_events("phone", moved_at);
    server.print_events("server", moved_at);
    assert!(phone.write_error.is_none(), "[{label}] phone write failed: {:?}", phone.write_error);
    assert!(phone.read_error.is_none(), "[{label}] phone read failed: {:?}", phone.read_error);
    assert!(server.write_error.is_none(), "[{label}] server write failed: {:?}", server.write_error);
    assert!(server.read_error.is_none(), "[{label}] server read failed: {:?}", server.read_error);
    assert_eq!(server.received_len, phone_plan.len as u64, "[{label}] phone → server length");
    assert_eq!(phone.received_len, server_plan.len as u64, "[{label}] server → phone length");
    assert_eq!(server.received_sha, phone_plan.expected_sha(), "[{label}] phone → server SHA-256 differs");
    assert_eq!(phone.received_sha, server_plan.expected_sha(), "[{label}] server → phone SHA-256 differs");
}

/// Prints and returns the recovery of a receiver after the move.
pub fn report(label: &str, dir: &str, recv: &Recv, moved_at: Instant) -> Recovery {
    let r = recv.recovery(moved_at, Duration::from_millis(30), None).unwrap_or_else(|| panic!("[{label}] {dir}: nothing arrived after the move"));
    println!(
        "[{label}] {dir}: recovery {} ms (outage {} ms, longest stall {} ms; first byte after the move at {} ms)",
        r.resumed.as_millis(),
        r.stall.as_millis(),
        r.longest_stall.as_millis(),
        r.first_byte.as_millis()
    );
    r
}

/// Runs the `msocket` binary with `args` (logs at `warn`), killing it after `limit`;
/// prints its stderr and returns its output.
pub fn run_msocket(args: &[&str], limit: Duration) -> std::process::Output {
    use std::process::{Command, Stdio};
    let child = Command::new(env!("CARGO_BIN_EXE_msocket"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run msocket");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for msocket"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of the child this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("msocket {args:?} did not finish within {limit:?}");
        }
    };
    println!("{}", String::from_utf8_lossy(&out.stderr));
    out
}
