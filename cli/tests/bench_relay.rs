//! `msocket bench relay` end to end with small sizes: the real binary, running the real
//! `msocketd relay` binary as its relays; checks the JSON object's keys and that every
//! figure is sane (non-zero, ratios finite). Needs msocketd built (`cargo build
//! --workspace`, as `ci/test` does first).

#![cfg(target_os = "linux")]

use std::process::{Command, Stdio};
use std::time::Duration;

/// Bound on the whole run.
const LIMIT: Duration = Duration::from_secs(300);

/// Runs `msocket` with `args`; its output, or a failure after [`LIMIT`].
fn run_msocket(args: &[&str]) -> std::process::Output {
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
    match rx.recv_timeout(LIMIT) {
        Ok(out) => out.expect("wait for msocket"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of the child this test started (its relays die
            // with it: they are started with a parent-death signal).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("msocket {args:?} did not finish within {LIMIT:?}");
        }
    }
}

fn number(figures: &serde_json::Value, key: &str) -> f64 {
    figures[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in {figures}"))
}

#[test]
fn bench_relay_json_has_every_figure() {
    let msocketd = msocket_test_support::workspace_binary("msocketd");
    let msocketd = msocketd.to_str().expect("a UTF-8 path");
    let out = run_msocket(&[
        "bench",
        "relay",
        "--json",
        "--bytes",
        "4000000",
        "--trials",
        "2",
        "--round-trips",
        "100",
        "--held",
        "200",
        "--active",
        "8",
        "--active-bytes",
        "500000",
        "--msocketd",
        msocketd,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "msocket bench relay failed:\n{stderr}");
    let f: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)));
    for key in [
        "direct_mbps",
        "relayed_mbps",
        "relayed_over_direct",
        "rr_p50_direct_us",
        "rr_p50_relayed_us",
        "rr_p50_ratio",
        "relay_kib_per_flow",
        "active_aggregate_mbps",
        "active_direct_aggregate_mbps",
        "relay_cpu_s_per_gbit",
        "failover_ms",
        "time_to_direct_ms",
    ] {
        let v = number(&f, key);
        assert!(v.is_finite() && v > 0.0, "{key} = {v} in {f}");
    }
    for key in ["relayed_over_direct", "rr_p50_ratio", "active_relayed_over_direct"] {
        let v = number(&f, key);
        assert!(v < 100.0, "{key} = {v}: not a plausible ratio in {f}");
    }
    assert_eq!(f["flows_held"].as_u64(), Some(200), "{f}");
    assert_eq!(f["active_flows"].as_u64(), Some(8), "{f}");
    assert!(f["nofile_limit"].as_u64().is_some_and(|n| n > 0), "{f}");
    assert!(f["held_ends"].as_str().is_some_and(|s| s.starts_with("endpoints")), "{f}");
    assert!(f["relay_cpu_source"].as_str().is_some_and(|s| s.contains("/proc/PID/stat")), "{f}");
    assert_eq!(f["direct_mbps_trials"].as_array().map(Vec::len), Some(2), "{f}");
    assert_eq!(f["sha256_ok"], true, "{f}");
    assert!(f["connect_retries"].is_array(), "{f}");
    assert!(f["failover_ms"].as_f64().is_some_and(|v| v <= 2000.0), "failover above 2 s: {f}");
    // Without --lab the lab's figures are null, and the output says how to get them.
    assert!(f.get("holepunch_success").is_some_and(|v| v.is_null()), "{f}");
    assert!(f.get("lab").is_some_and(|v| v.is_null()), "{f}");
    assert!(f["lab_note"].as_str().is_some_and(|s| s.contains("--lab")), "{f}");
}

#[test]
fn bench_relay_help_explains_every_figure() {
    let out = Command::new(env!("CARGO_BIN_EXE_msocket")).args(["bench", "relay", "--help"]).output().expect("run msocket");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "direct_mbps",
        "relayed_over_direct",
        "rr_p50_ratio",
        "flows_held",
        "relay_kib_per_flow",
        "active_aggregate_mbps",
        "relay_cpu_s_per_gbit",
        "failover_ms",
        "time_to_direct_ms",
        "holepunch_success",
        "VmRSS",
        "/proc/PID/stat",
        "SIGKILL",
        "--lab",
        "--lab-bytes",
        "--msocketd",
        "--held-ends",
    ] {
        assert!(help.contains(needle), "bench relay --help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn bench_relay_refuses_zero_sizes() {
    let out = Command::new(env!("CARGO_BIN_EXE_msocket"))
        .args(["bench", "relay", "--held", "0"])
        .stdin(Stdio::null())
        .output()
        .expect("run msocket");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("must be above 0"), "{stderr}");
}
