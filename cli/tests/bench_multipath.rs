//! `msocket bench multipath` end to end, as root, on small workloads: the JSON rows carry
//! their keys, msocket delivers every byte intact, `performance` really puts data on both
//! links while `backup` keeps cellular idle, and a hand-off is measured.
//!
//! Ignored unless asked for (`--include-ignored`); asked for without root (or the lab's
//! tools), it fails saying so.

#![cfg(target_os = "linux")]

mod lab_support;

use std::time::Duration;

use serde_json::Value;

const KEYS: [&str; 8] = [
    "workload",
    "system",
    "policy",
    "completion_s",
    "aggregation_efficiency",
    "stalls",
    "stall_ms",
    "energy_j",
];

fn bench(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["bench", "multipath", "--json"];
    all.extend_from_slice(args);
    let out = lab_support::run_msocket(&all, Duration::from_secs(240));
    assert!(out.status.success(), "msocket {all:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let rows: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let rows = rows.as_array().expect("a JSON array").clone();
    for row in &rows {
        for key in KEYS {
            assert!(row.get(key).is_some(), "row {row} lacks {key}");
        }
    }
    rows
}

fn find<'a>(rows: &'a [Value], workload: &str, system: &str, policy: Option<&str>) -> &'a Value {
    rows.iter()
        .find(|r| r["workload"] == workload && r["system"] == system && r["policy"].as_str() == policy)
        .unwrap_or_else(|| panic!("no row {workload} {system} {policy:?} in {rows:?}"))
}

fn intact(row: &Value) {
    assert_eq!(row["bytes_lost"], 0, "{row}");
    assert_eq!(row["sha256_match"], true, "{row}");
    assert_eq!(row["died_reps"], 0, "{row}");
}

#[test]
#[ignore = "needs root and network namespaces"]
fn bulk_download_per_policy_and_tcp() {
    lab_support::require_lab();
    let rows = bench(&[
        "--workloads",
        "bulk",
        "--bytes",
        "4000000",
        "--systems",
        "msocket,tcp-wifi",
        "--policies",
        "performance,backup",
    ]);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let perf = find(&rows, "bulk", "msocket", Some("performance"));
    let backup = find(&rows, "bulk", "msocket", Some("backup"));
    let tcp = find(&rows, "bulk", "tcp-wifi", None);
    for row in [perf, backup, tcp] {
        intact(row);
        assert!(row["completion_s"].as_f64().is_some_and(|s| s > 0.0), "{row}");
        let eff = row["aggregation_efficiency"].as_f64().expect("bulk rows have an efficiency");
        assert!(eff > 0.0 && eff <= 1.0, "{row}");
        assert!(row["energy_j"].as_f64().is_some_and(|j| j > 0.0), "{row}");
    }
    // Both links carry the download under `performance`; under `backup` cellular only
    // carries its standby subflow's handshake and keepalives.
    let share = |r: &Value| r["cell_share"].as_f64().expect("cell_share");
    assert!(share(perf) > 0.1, "performance left cellular idle: {perf}");
    assert!(share(backup) < 0.02, "backup used cellular: {backup}");
    assert_eq!(share(tcp), 0.0, "{tcp}");
    assert!(perf["energy_j_flow"].as_f64().is_some(), "msocket reports its own estimate: {perf}");
}

#[test]
#[ignore = "needs root and network namespaces"]
fn streaming_outage_and_handoff() {
    lab_support::require_lab();
    let rows = bench(&[
        "--workloads",
        "streaming,handoff",
        "--systems",
        "msocket",
        "--policies",
        "energy,performance",
        "--stream-secs",
        "6",
        "--outage-secs",
        "2",
        "--handoff-reps",
        "1",
    ]);
    assert_eq!(rows.len(), 4, "{rows:?}");
    for row in &rows {
        intact(row);
        assert!(row["stalls"].as_f64().is_some(), "{row}");
        assert!(row["aggregation_efficiency"].is_null(), "only bulk has one: {row}");
    }
    for policy in ["energy", "performance"] {
        let h = find(&rows, "handoff", "msocket", Some(policy));
        let outage = h["outage_ms"].as_f64().unwrap_or_else(|| panic!("no hand-off outage measured: {h}"));
        assert!(outage > 0.0, "{h}");
        assert_eq!(h["surviving_rtt_ms"], 80.0, "{h}");
    }
    // Wi-Fi was down for 2 of the 6 s: cellular carried part of every stream.
    let s = find(&rows, "streaming", "msocket", Some("energy"));
    assert!(s["energy_cell_j"].as_f64().is_some_and(|j| j > 0.0), "{s}");
}
