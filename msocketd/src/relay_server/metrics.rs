//! The relay's counters: atomics bumped where things happen, read as a [`RelayStats`]
//! snapshot (for tests and benchmarks) or rendered for Prometheus.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use msocket::unstable::relay_protocol::RelayRefusal;

use crate::metrics::Exposition;

/// Refusal codes as labelled; index = code (0 for codes this version does not know).
const REFUSALS: [&str; 10] = [
    "other",
    "not_registered",
    "busy",
    "no_answer",
    "bad_signature",
    "replaced",
    "unknown_token",
    "rate_limited",
    "malformed",
    "shutting_down",
];

/// Why a connection was closed before it did anything, as labelled.
const CLOSES: [&str; 3] = ["bad_header", "handshake_timeout", "crowded"];

/// How a splice ended, as labelled.
const SPLICE_ENDS: [&str; 4] = ["closed", "error", "idle", "shutdown"];

/// Why a registration was refused, as labelled.
const REGISTRATION_REFUSALS: [&str; 3] = ["bad_signature", "busy", "malformed"];

/// How a control connection ended, as labelled.
const CONTROL_ENDS: [&str; 6] = ["closed", "replaced", "idle", "protocol", "unwritable", "shutdown"];

/// Why a connection was closed early.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EarlyClose {
    BadHeader = 0,
    HandshakeTimeout = 1,
    Crowded = 2,
}

/// How a splice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpliceEnd {
    /// Both directions ended with EOF.
    Closed = 0,
    /// A socket failed.
    Error = 1,
    /// Nothing moved for the idle timeout.
    Idle = 2,
    /// The relay is stopping.
    Shutdown = 3,
}

/// How a control connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlEnd {
    Closed = 0,
    Replaced = 1,
    Idle = 2,
    Protocol = 3,
    Unwritable = 4,
    Shutdown = 5,
}

/// Counters since the relay started.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) early_closes: [AtomicU64; CLOSES.len()],
    pub(crate) registrations: AtomicU64,
    pub(crate) registrations_refused: [AtomicU64; REGISTRATION_REFUSALS.len()],
    pub(crate) control_ends: [AtomicU64; CONTROL_ENDS.len()],
    pub(crate) dials: AtomicU64,
    pub(crate) splices: AtomicU64,
    pub(crate) splice_ends: [AtomicU64; SPLICE_ENDS.len()],
    pub(crate) bytes_to_listener: AtomicU64,
    pub(crate) bytes_to_client: AtomicU64,
    pub(crate) refusals: [AtomicU64; REFUSALS.len()],
    pub(crate) pipe_size_refused: AtomicU64,
}

impl Counters {
    pub(crate) fn refused(&self, why: RelayRefusal) {
        let code = usize::from(why.code());
        self.refusals[if code < REFUSALS.len() { code } else { 0 }].fetch_add(1, Relaxed);
    }

    pub(crate) fn early_close(&self, why: EarlyClose) {
        self.early_closes[why as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn registration_refused(&self, why: RelayRefusal) {
        let at = match why {
            RelayRefusal::BadSignature => 0,
            RelayRefusal::Busy => 1,
            _ => 2,
        };
        self.registrations_refused[at].fetch_add(1, Relaxed);
    }

    pub(crate) fn control_end(&self, how: ControlEnd) {
        self.control_ends[how as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn splice_end(&self, how: SpliceEnd) {
        self.splice_ends[how as usize].fetch_add(1, Relaxed);
    }
}

fn load<const N: usize>(labels: &[&'static str; N], values: &[AtomicU64; N]) -> Vec<(&'static str, u64)> {
    labels.iter().zip(values).map(|(l, v)| (*l, v.load(Relaxed))).collect()
}

/// What the relay holds now and has done since it started.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelayStats {
    /// Connections open now, of every kind.
    pub connections: u64,
    /// Connections accepted since start (admitted or not).
    pub connections_total: u64,
    /// Connections closed before they did anything, by why (`bad_header`,
    /// `handshake_timeout`, `crowded`).
    pub early_closes: Vec<(&'static str, u64)>,
    /// Control connections registered now.
    pub registrations: u64,
    /// Registrations accepted since start.
    pub registrations_total: u64,
    /// Registrations refused, by reason (`bad_signature`, `busy`, `malformed`).
    pub registrations_refused: Vec<(&'static str, u64)>,
    /// Control connections ended, by how (`closed`, `replaced`, `idle`, `protocol`,
    /// `unwritable`, `shutdown`).
    pub control_ends: Vec<(&'static str, u64)>,
    /// Dials received (a DIAL message read) since start.
    pub dials_total: u64,
    /// Dials waiting for their listener now.
    pub pending_dials: u64,
    /// Splices running now.
    pub splices: u64,
    /// Splices started since start.
    pub splices_total: u64,
    /// Splices ended, by how (`closed`, `error`, `idle`, `shutdown`).
    pub splice_ends: Vec<(&'static str, u64)>,
    /// Bytes relayed from clients to listeners.
    pub bytes_client_to_listener: u64,
    /// Bytes relayed from listeners to clients.
    pub bytes_listener_to_client: u64,
    /// REFUSED messages sent, by code (`not_registered`, `busy`, `no_answer`, ...).
    pub refusals: Vec<(&'static str, u64)>,
    /// Splice pipes that kept the kernel's default size because the requested one was
    /// refused (the user's pipe memory limit; see `fs.pipe-user-pages-soft`).
    pub pipe_size_refused: u64,
}

impl RelayStats {
    /// The count under `label` in one of the labelled lists (0 if absent).
    pub fn count(list: &[(&'static str, u64)], label: &str) -> u64 {
        list.iter().find(|(l, _)| *l == label).map_or(0, |(_, n)| *n)
    }

    /// REFUSED messages sent with `why`.
    pub fn refused(&self, why: RelayRefusal) -> u64 {
        let code = usize::from(why.code());
        self.refusals.get(if code < REFUSALS.len() { code } else { 0 }).map_or(0, |(_, n)| *n)
    }

    pub(crate) fn collect(c: &Counters, connections: usize, (registrations, pending, splices): (usize, usize, usize)) -> RelayStats {
        RelayStats {
            connections: connections as u64,
            connections_total: c.connections.load(Relaxed),
            early_closes: load(&CLOSES, &c.early_closes),
            registrations: registrations as u64,
            registrations_total: c.registrations.load(Relaxed),
            registrations_refused: load(&REGISTRATION_REFUSALS, &c.registrations_refused),
            control_ends: load(&CONTROL_ENDS, &c.control_ends),
            dials_total: c.dials.load(Relaxed),
            pending_dials: pending as u64,
            splices: splices as u64,
            splices_total: c.splices.load(Relaxed),
            splice_ends: load(&SPLICE_ENDS, &c.splice_ends),
            bytes_client_to_listener: c.bytes_to_listener.load(Relaxed),
            bytes_listener_to_client: c.bytes_to_client.load(Relaxed),
            refusals: load(&REFUSALS, &c.refusals),
            pipe_size_refused: c.pipe_size_refused.load(Relaxed),
        }
    }

    /// The stats in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut p = Exposition::new();
        p.gauge("msocket_relay_connections", "Connections open now, of every kind.", self.connections);
        p.counter("msocket_relay_connections_total", "Connections accepted, admitted or not.", self.connections_total);
        p.counters_by(
            "msocket_relay_early_closes_total",
            "Connections closed before they did anything, by why.",
            "reason",
            &self.early_closes,
        );
        p.gauge("msocket_relay_registrations", "Listener control connections registered now.", self.registrations);
        p.counter("msocket_relay_registrations_total", "Registrations accepted.", self.registrations_total);
        p.counters_by(
            "msocket_relay_registrations_refused_total",
            "Registrations refused, by reason.",
            "reason",
            &self.registrations_refused,
        );
        p.counters_by(
            "msocket_relay_control_ends_total",
            "Control connections ended, by how.",
            "reason",
            &self.control_ends,
        );
        p.counter("msocket_relay_dials_total", "Dials received.", self.dials_total);
        p.gauge("msocket_relay_pending_dials", "Dials waiting for their listener now.", self.pending_dials);
        p.gauge("msocket_relay_splices", "Splices running now.", self.splices);
        p.counter("msocket_relay_splices_total", "Splices started.", self.splices_total);
        p.counters_by("msocket_relay_splice_ends_total", "Splices ended, by how.", "reason", &self.splice_ends);
        p.counters_by(
            "msocket_relay_bytes_total",
            "Bytes relayed, by direction.",
            "direction",
            &[("client_to_listener", self.bytes_client_to_listener), ("listener_to_client", self.bytes_listener_to_client)],
        );
        p.counters_by("msocket_relay_refusals_total", "REFUSED messages sent, by code.", "code", &self.refusals);
        p.counter(
            "msocket_relay_pipe_size_refused_total",
            "Splice pipes left at the kernel's default size (pipe memory limit reached).",
            self.pipe_size_refused,
        );
        p.finish()
    }
}
