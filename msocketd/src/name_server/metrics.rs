//! The name service's counters, for `msocketd name --metrics`.
//!
//! Only what costs an atomic increment on the request path: connections, requests by
//! kind, refusals by reason. The gauges (open connections, parked watches, stored names)
//! are read at scrape time from what the server keeps anyway.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use msocket::name::NameError;

use super::NameServer;
use crate::metrics::Exposition;

/// The kinds of request, as labelled.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RequestKind {
    Register,
    Lookup,
    Watch,
}

/// Refusal reasons, as labelled, in the order of [`NameMetrics::refusals`].
const REASONS: [&str; 13] = [
    "invalid_name",
    "bad_signature",
    "stale",
    "key_mismatch",
    "expired",
    "lifetime_too_long",
    "rate_limited",
    "quota_exceeded",
    "server_full",
    "busy",
    "malformed",
    "store",
    "other",
];

fn reason_index(e: &NameError) -> usize {
    match e {
        NameError::InvalidName { .. } => 0,
        NameError::BadSignature => 1,
        NameError::Stale { .. } => 2,
        NameError::KeyMismatch => 3,
        NameError::Expired => 4,
        NameError::LifetimeTooLong { .. } => 5,
        NameError::RateLimited { .. } => 6,
        NameError::QuotaExceeded { .. } => 7,
        NameError::ServerFull { .. } => 8,
        NameError::Busy(_) => 9,
        NameError::Malformed(_) => 10,
        NameError::Store(_) => 11,
        _ => 12,
    }
}

/// The name server's counters since it started.
#[derive(Debug, Default)]
pub struct NameMetrics {
    connections: AtomicU64,
    requests: [AtomicU64; 3],
    refusals: [AtomicU64; REASONS.len()],
}

impl NameMetrics {
    pub(crate) fn connection(&self) {
        self.connections.fetch_add(1, Relaxed);
    }

    pub(crate) fn request(&self, kind: RequestKind) {
        self.requests[kind as usize].fetch_add(1, Relaxed);
    }

    /// Counts a refusal sent for `e` (not-found answers are answers, not refusals).
    pub(crate) fn refusal(&self, e: &NameError) {
        self.refusals[reason_index(e)].fetch_add(1, Relaxed);
    }

    /// Connections accepted (admitted or refused) since the server started.
    pub fn connections_total(&self) -> u64 {
        self.connections.load(Relaxed)
    }

    /// Refusals sent with `reason` (a label such as `busy` or `rate_limited`).
    pub fn refusals(&self, reason: &str) -> u64 {
        REASONS.iter().position(|r| *r == reason).map_or(0, |i| self.refusals[i].load(Relaxed))
    }
}

impl NameServer {
    /// The server's counters.
    pub fn metrics(&self) -> &NameMetrics {
        &self.metrics
    }

    /// The server's metrics in the Prometheus text format (reads the store's size on the
    /// blocking pool).
    pub async fn metrics_text(self: &Arc<Self>) -> String {
        let this = Arc::clone(self);
        let stored = tokio::task::spawn_blocking(move || this.stored_names().ok()).await.ok().flatten();
        let m = &self.metrics;
        let mut page = Exposition::new();
        page.counter("msocket_name_connections_total", "Connections accepted, admitted or refused.", m.connections_total());
        page.gauge("msocket_name_connections", "Connections open now.", self.open_connections() as u64);
        page.gauge("msocket_name_watches", "Watches parked now.", self.parked_watches() as u64);
        let samples: Vec<(&str, u64)> =
            ["register", "lookup", "watch"].iter().zip(&m.requests).map(|(k, n)| (*k, n.load(Relaxed))).collect();
        page.counters_by("msocket_name_requests_total", "Requests received, by kind.", "kind", &samples);
        let samples: Vec<(&str, u64)> =
            REASONS.iter().zip(&m.refusals).map(|(r, n)| (*r, n.load(Relaxed))).collect();
        page.counters_by("msocket_name_refusals_total", "Refusals sent, by reason.", "reason", &samples);
        if let Some(stored) = stored {
            page.gauge("msocket_name_names_stored", "Names in the store (lapsed ones not yet deleted included).", stored);
        }
        page.finish()
    }
}
