//! Who may hold connections and parked watches, and how many.
//!
//! Connections and parked watches are counted per client source (an IPv4 address or an
//! IPv6 /64, [`Source`]) and in all. A source over its share is refused (`Busy`, with the
//! limit); so is a watch over the source's or the server's count. When the server holds
//! its maximum of connections, a newcomer is not left waiting in the listen backlog (where
//! a lookup once waited 69 s behind a thousand parked watches): if some source holds at
//! least two connections more than the newcomer's, that source's oldest connection is
//! closed to make room (its client reconnects; its watches are re-sent), so sources share
//! the connections fairly; otherwise the newcomer is refused `Busy` at once.
//!
//! The table holds one entry per source with a connection open, so it is bounded by the
//! connection limit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use msocket::name::NameError;
use tokio::sync::Notify;

use super::limits::Source;

/// Default for [`ConnectionLimits::max_connections`].
pub const MAX_CONNECTIONS: usize = 1024;
/// Default for [`ConnectionLimits::connections_per_source`].
pub const CONNECTIONS_PER_SOURCE: usize = 64;
/// Default for [`ConnectionLimits::max_watches`].
pub const MAX_WATCHES: usize = 65_536;
/// Default for [`ConnectionLimits::watches_per_source`].
pub const WATCHES_PER_SOURCE: usize = 4096;

/// How many connections and parked watches the server holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, in all (at least 1).
    pub max_connections: usize,
    /// Connections open at once from one source (at least 1).
    pub connections_per_source: usize,
    /// Watches parked at once, in all.
    pub max_watches: usize,
    /// Watches parked at once from one source.
    pub watches_per_source: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: MAX_CONNECTIONS,
            connections_per_source: CONNECTIONS_PER_SOURCE,
            max_watches: MAX_WATCHES,
            watches_per_source: WATCHES_PER_SOURCE,
        }
    }
}

#[derive(Debug, Default)]
struct PerSource {
    /// Open connections, oldest first: (serial, the signal that closes it).
    open: VecDeque<(u64, Arc<Notify>)>,
    watches: usize,
}

#[derive(Debug, Default)]
struct State {
    sources: HashMap<Source, PerSource>,
    connections: usize,
    watches: usize,
    serial: u64,
}

/// The counts, shared by the accept loop and the connections.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) limits: ConnectionLimits,
    state: Mutex<State>,
}

impl Admission {
    pub(crate) fn new(limits: ConnectionLimits) -> Arc<Admission> {
        let limits = ConnectionLimits {
            max_connections: limits.max_connections.max(1),
            connections_per_source: limits.connections_per_source.max(1),
            ..limits
        };
        Arc::new(Admission { limits, state: Mutex::default() })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every operation leaves the counts consistent; a panic elsewhere cannot break them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `source`, closing another source's oldest to make room if
    /// the server is full and that source holds more than its share; or says why not.
    pub(crate) fn connect(self: &Arc<Self>, source: Source) -> Result<Connection, NameError> {
        let mut state = self.lock();
        let mine = state.sources.get(&source).map_or(0, |s| s.open.len());
        if mine >= self.limits.connections_per_source {
            return Err(NameError::Busy(format!(
                "{source} has {mine} connections open, the most one address may"
            )));
        }
        if state.connections >= self.limits.max_connections {
            let heaviest = state
                .sources
                .iter()
                .max_by_key(|(_, s)| s.open.len())
                .map(|(&s, p)| (s, p.open.len()));
            match heaviest {
                Some((victim, theirs)) if theirs > mine + 1 => {
                    let entry = state.sources.get_mut(&victim).expect("the heaviest source is in the table");
                    if let Some((_, close)) = entry.open.pop_front() {
                        close.notify_one();
                        state.connections -= 1;
                        tracing::info!(%victim, %source, "server full: closing the oldest connection of the source holding the most");
                    }
                    remove_if_unused(&mut state, victim);
                }
                _ => {
                    return Err(NameError::Busy(format!(
                        "the name server serves its maximum of {} connections",
                        self.limits.max_connections
                    )))
                }
            }
        }
        state.serial += 1;
        let serial = state.serial;
        let close = Arc::new(Notify::new());
        state.sources.entry(source).or_default().open.push_back((serial, Arc::clone(&close)));
        state.connections += 1;
        Ok(Connection { admission: Arc::clone(self), source, serial, close })
    }

    /// Admits a parked watch from `source`, or says why not.
    pub(crate) fn watch(self: &Arc<Self>, source: Source) -> Result<Watch, NameError> {
        let mut state = self.lock();
        if state.watches >= self.limits.max_watches {
            return Err(NameError::Busy(format!(
                "the name server holds its maximum of {} parked watches",
                self.limits.max_watches
            )));
        }
        let entry = state.sources.entry(source).or_default();
        if entry.watches >= self.limits.watches_per_source {
            return Err(NameError::Busy(format!(
                "{source} has {} watches parked, the most one address may",
                entry.watches
            )));
        }
        entry.watches += 1;
        state.watches += 1;
        Ok(Watch { admission: Arc::clone(self), source })
    }

    /// Connections open (in all, from the busiest source).
    pub(crate) fn connections(&self) -> usize {
        self.lock().connections
    }
}

fn remove_if_unused(state: &mut State, source: Source) {
    if state.sources.get(&source).is_some_and(|s| s.open.is_empty() && s.watches == 0) {
        state.sources.remove(&source);
    }
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Connection {
    admission: Arc<Admission>,
    source: Source,
    serial: u64,
    /// Notified when the connection must close to make room for another source's.
    pub(crate) close: Arc<Notify>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        if let Some(entry) = state.sources.get_mut(&self.source) {
            // Absent if it was already closed (and uncounted) to make room.
            if let Some(at) = entry.open.iter().position(|(serial, _)| *serial == self.serial) {
                entry.open.remove(at);
                state.connections -= 1;
            }
        }
        remove_if_unused(&mut state, self.source);
    }
}

/// An admitted parked watch; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Watch {
    admission: Arc<Admission>,
    source: Source,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        state.watches -= 1;
        if let Some(entry) = state.sources.get_mut(&self.source) {
            entry.watches -= 1;
        }
        remove_if_unused(&mut state, self.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(last: u8) -> Source {
        Source::of(std::net::IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn sources_get_their_share_and_a_full_server_makes_room_fairly() {
        let admission = Admission::new(ConnectionLimits {
            max_connections: 4,
            connections_per_source: 3,
            max_watches: 10,
            watches_per_source: 10,
        });
        let a: Vec<_> = (0..3).map(|_| admission.connect(source(1)).unwrap()).collect();
        assert!(matches!(admission.connect(source(1)), Err(NameError::Busy(m)) if m.contains("192.0.2.1 has 3")));
        let b = admission.connect(source(2)).unwrap();
        assert_eq!(admission.connections(), 4);
        // Full. Source 3 holds none, source 1 three: its oldest connection makes room.
        let c = admission.connect(source(3)).unwrap();
        assert_eq!(admission.connections(), 4);
        {
            let closed = a[0].close.notified();
            tokio::pin!(closed);
            assert!(closed.as_mut().enable(), "the oldest connection of source 1 was not told to close");
        }
        // Dropping the closed one afterwards does not count it twice.
        drop(a);
        assert_eq!(admission.connections(), 2);
        // Now each of the two holds one: a third source finds room...
        let d = admission.connect(source(4)).unwrap();
        let e = admission.connect(source(5)).unwrap();
        // ...but a fifth in a full server where nobody holds two more is refused.
        assert!(matches!(admission.connect(source(6)), Err(NameError::Busy(m)) if m.contains("maximum of 4")));
        drop((b, c, d, e));
        assert_eq!(admission.connections(), 0);
        assert!(admission.lock().sources.is_empty());
    }

    #[test]
    fn watches_are_counted_per_source_and_in_all() {
        let admission = Admission::new(ConnectionLimits {
            max_connections: 10,
            connections_per_source: 10,
            max_watches: 3,
            watches_per_source: 2,
        });
        let w1 = admission.watch(source(1)).unwrap();
        let w2 = admission.watch(source(1)).unwrap();
        assert!(matches!(admission.watch(source(1)), Err(NameError::Busy(m)) if m.contains("2 watches")));
        let w3 = admission.watch(source(2)).unwrap();
        assert!(matches!(admission.watch(source(3)), Err(NameError::Busy(m)) if m.contains("maximum of 3")));
        drop(w1);
        let w4 = admission.watch(source(3)).unwrap();
        drop((w2, w3, w4));
        assert!(admission.lock().sources.is_empty());
        assert_eq!(admission.lock().watches, 0);
    }
}
