//! Shared set-up of the lab's integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use msocket_lab::{cleanup_stale, is_root, missing_tools, LabConfig, Netns, PhoneLab};

/// Sets a lab test up (logging, stale namespaces removed); panics, saying what is
/// missing, on a machine that cannot run it.
pub fn ready() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    assert!(
        is_root(),
        "this test needs root and network namespaces: run it as root (after lab/setup.sh)"
    );
    let netns = std::process::Command::new("ip").args(["netns", "list"]).output();
    match netns {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "this test needs network namespaces, and `ip netns list` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("this test needs `ip` (iproute2; run lab/setup.sh as root): {e}"),
    }
    let missing = missing_tools();
    assert!(
        missing.is_empty(),
        "missing tools {missing:?}: run lab/setup.sh (as root)"
    );
    let _cleaning = cleanup_lock();
    cleanup_stale().expect("cleanup_stale");
}

/// Serialises [`cleanup_stale`] calls within this test binary, so a test that checks what
/// one call removed is not raced by another test's `ready()`.
pub fn cleanup_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn lab(cfg: LabConfig) -> PhoneLab {
    PhoneLab::build(cfg).expect("build phone lab")
}

pub fn lab_with(wifi: &str) -> PhoneLab {
    lab(LabConfig {
        wifi: wifi.parse().expect("wifi spec"),
        ..LabConfig::default()
    })
}

/// Runs `f` inside `ns` and returns its result, failing the test after `limit`.
pub fn run_in<T, Fut, F>(ns: &Netns, limit: Duration, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    ns.spawn_runtime(f)
        .expect("spawn runtime")
        .join(limit)
        .expect("task in namespace")
}

pub fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// Names of the namespaces this process owns right now.
pub fn my_namespaces() -> Vec<String> {
    let prefix = format!("msl{}-", std::process::id());
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

pub const SECS_30: Duration = Duration::from_secs(30);
