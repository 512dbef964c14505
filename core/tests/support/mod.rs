//! Shared helpers for the loopback integration tests.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use msocket::name::{MemoryNameService, NameService};
use msocket::{Endpoint, EndpointConfig, Flow, Identity};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

pub fn lo(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))
}

/// An endpoint on `127.0.0.<host>` with short timers suited to tests.
pub fn endpoint(names: &Arc<dyn NameService>, seed: u8, host: u8) -> Endpoint {
    let mut config = EndpointConfig::new(names.clone());
    config.local_ips = vec![lo(host)];
    config.flow.flow_deadline = Duration::from_secs(20);
    config.connect_timeout = Duration::from_secs(10);
    Endpoint::bind(Identity::from_seed([seed; 32]), config).unwrap()
}

pub fn memory_names() -> Arc<dyn NameService> {
    Arc::new(MemoryNameService::new())
}

/// Deterministic test data.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Connects `client` to `name` served by `listener`; returns (client flow, server flow).
pub async fn pair(client: &Endpoint, listener: &mut msocket::Listener, name: &str) -> (Flow, Flow) {
    let (c, s) = tokio::join!(client.connect(name), listener.accept());
    (c.expect("connect"), s.expect("accept"))
}

/// Writes `bytes` then finishes; returns once the peer acknowledged everything.
pub async fn send_all(mut flow: Flow, bytes: Vec<u8>) -> Flow {
    for chunk in bytes.chunks(50_000) {
        flow.write_all(chunk).await.expect("write");
    }
    flow.shutdown().await.expect("shutdown");
    flow
}

/// Reads to the end of the stream.
pub async fn read_all(mut flow: Flow) -> (Vec<u8>, Flow) {
    let mut out = Vec::new();
    flow.read_to_end(&mut out).await.expect("read");
    (out, flow)
}

/// Bounds a test step.
pub async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f).await.unwrap_or_else(|_| panic!("{what}: timed out after {secs}s"))
}
