//! `msocket bench mobility` end to end, as root: one scenario at one RTT, one repetition,
//! every system; checks the JSON rows and that msocket lost nothing.
//!
//! Ignored unless asked for (`--include-ignored`); asked for without root (or the lab's
//! tools), it fails saying so.

#![cfg(target_os = "linux")]

mod lab_support;

use std::time::Duration;

const KEYS: [&str; 10] = [
    "scenario",
    "rtt_ms",
    "system",
    "recovery_ms_p50",
    "recovery_ms_max",
    "recovery_rtts_p50",
    "bytes_lost",
    "died",
    "reps",
    "sha256_match",
];

#[test]
#[ignore = "needs root and network namespaces"]
fn bench_mobility_json_wifi_to_cell() {
    lab_support::require_lab();
    let out = lab_support::run_msocket(
        &["bench", "mobility", "--json", "--rtts", "20", "--reps", "1", "--scenarios", "wifi-to-cell"],
        Duration::from_secs(180),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "msocket bench mobility failed: {stderr}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let rows = rows.as_array().expect("a JSON array");
    let systems: Vec<&str> = rows.iter().map(|r| r["system"].as_str().unwrap()).collect();
    assert_eq!(systems, ["msocket", "tcp", "mptcp"]);
    for row in rows {
        for key in KEYS {
            assert!(row.get(key).is_some(), "row {row} lacks {key}");
        }
        assert_eq!(row["scenario"], "wifi-to-cell");
        assert_eq!(row["rtt_ms"], 20);
        assert_eq!(row["reps"], 1);
    }
    let msocket = &rows[0];
    assert_eq!(msocket["bytes_lost"], 0, "{msocket}");
    assert_eq!(msocket["died"], false, "{msocket}");
    assert_eq!(msocket["sha256_match"], true, "{msocket}");
    assert!(msocket["recovery_ms_p50"].as_f64().is_some_and(|v| v > 0.0), "{msocket}");
    assert!(msocket["detect_ms_p50"].as_f64().is_some(), "the phone's move was seen: {msocket}");
    // A TCP connection bound to the removed Wi-Fi address cannot survive.
    let tcp = &rows[1];
    assert_eq!(tcp["died"], true, "{tcp}");
    assert!(tcp["recovery_ms_p50"].is_null(), "{tcp}");
}
