//! Who is registered, which dials wait for their listener, and how many splices run.
//!
//! One table under one lock, so every decision (admit a dial, turn it into a splice,
//! replace a registration) sees consistent counts:
//!
//! * registrations by listener key, oldest first. A key holds at most
//!   `registrations_per_key` control connections; a newer one pushes the oldest out (it is
//!   told `Replaced`), because a phone that moved registers again before its old connection
//!   is known dead, and the newest must win. Dial-backs go to the newest;
//! * pending dials by token, counted per listener key and per client source;
//! * splices, counted per client source. A pending dial counts against the splice caps
//!   too, so dials admitted together can never become more splices than allowed.
//!
//! Entries are freed by guards ([`Registration`], [`PendingDial`], [`SpliceSlot`]) that
//! the connection tasks hold: however a task ends, its counts go with it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use msocket::unstable::relay_protocol::{ListenerKey, RelayRefusal, Token};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::limits::{Admitted, RelayLimits, Source};

/// A dial-back for a control connection to send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DialBack {
    pub(crate) token: Token,
    pub(crate) client: SocketAddr,
}

/// The listener's connection answering a dial-back, handed to the waiting dial.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) stream: TcpStream,
    /// The accepting connection's address as the relay sees it.
    pub(crate) observed: SocketAddr,
    /// Its place among the open connections.
    pub(crate) admitted: Admitted,
    /// The splice the dial became.
    pub(crate) slot: SpliceSlot,
}

#[derive(Debug)]
struct Live {
    serial: u64,
    dial_backs: mpsc::Sender<DialBack>,
    /// Fired when a newer registration pushes this one out.
    replaced: Option<oneshot::Sender<()>>,
}

#[derive(Debug)]
struct Waiting {
    target: ListenerKey,
    source: Source,
    answer: oneshot::Sender<Answer>,
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<ListenerKey, VecDeque<Live>>,
    registrations: usize,
    pending: HashMap<Token, Waiting>,
    pending_per_key: HashMap<ListenerKey, usize>,
    pending_per_source: HashMap<Source, usize>,
    splices: usize,
    splices_per_source: HashMap<Source, usize>,
    serial: u64,
}

fn up<K: std::hash::Hash + Eq>(table: &mut HashMap<K, usize>, key: K) {
    *table.entry(key).or_insert(0) += 1;
}

fn down<K: std::hash::Hash + Eq>(table: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = table.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            table.remove(key);
        }
    }
}

/// The relay's registrations, pending dials and splices.
#[derive(Debug)]
pub(crate) struct Registry {
    limits: RelayLimits,
    state: Mutex<State>,
}

/// Why a dial was refused, with words for the log and the client.
pub(crate) type Refusal = (RelayRefusal, String);

impl Registry {
    pub(crate) fn new(limits: RelayLimits) -> Arc<Registry> {
        Arc::new(Registry { limits, state: Mutex::default() })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every operation leaves the table consistent; a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a control connection for `key`. Returns its guard, where its dial-backs
    /// arrive, the signal that it was replaced, and whether an older one was replaced.
    pub(crate) fn register(
        self: &Arc<Self>,
        key: ListenerKey,
    ) -> Result<(Registration, mpsc::Receiver<DialBack>, oneshot::Receiver<()>, bool), Refusal> {
        let mut state = self.lock();
        let held = state.keys.get(&key).map_or(0, VecDeque::len);
        let replacing = held >= self.limits.registrations_per_key;
        if !replacing && state.registrations >= self.limits.max_registrations {
            return Err((
                RelayRefusal::Busy,
                format!("the relay holds its maximum of {} registrations", self.limits.max_registrations),
            ));
        }
        let lives = state.keys.entry(key).or_default();
        if replacing {
            if let Some(mut oldest) = lives.pop_front() {
                if let Some(replaced) = oldest.replaced.take() {
                    let _ = replaced.send(());
                }
            }
        }
        // Room for every dial the key may have waiting.
        let (tx, rx) = mpsc::channel(self.limits.max_pending_per_key.clamp(1, 1024));
        let (replaced_tx, replaced_rx) = oneshot::channel();
        state.serial += 1;
        let serial = state.serial;
        let lives = state.keys.entry(key).or_default();
        lives.push_back(Live { serial, dial_backs: tx, replaced: Some(replaced_tx) });
        if !replacing {
            state.registrations += 1;
        }
        Ok((Registration { registry: Arc::clone(self), key, serial }, rx, replaced_rx, replacing))
    }

    /// Admits a dial from `source` (at `client`) to `target`: checks the caps, hands the
    /// dial-back to the newest live registration of `target` and remembers the dial
    /// under `token`.
    pub(crate) fn dial(
        self: &Arc<Self>,
        target: ListenerKey,
        source: Source,
        client: SocketAddr,
        token: Token,
    ) -> Result<(PendingDial, oneshot::Receiver<Answer>), Refusal> {
        let mut state = self.lock();
        let state = &mut *state;
        if !state.keys.contains_key(&target) {
            return Err((RelayRefusal::NotRegistered, "no listener with these keys is registered here".into()));
        }
        let l = &self.limits;
        let busy = |what: String| Err((RelayRefusal::Busy, what));
        if state.pending.len() >= l.max_pending_dials {
            return busy(format!("{} dials are waiting, the most the relay holds", state.pending.len()));
        }
        if state.pending_per_key.get(&target).copied().unwrap_or(0) >= l.max_pending_per_key {
            return busy(format!("{} dials wait for this listener, the most one may have", l.max_pending_per_key));
        }
        let source_pending = state.pending_per_source.get(&source).copied().unwrap_or(0);
        if source_pending >= l.max_pending_per_source {
            return busy(format!("{source} has {source_pending} dials waiting, the most one source may"));
        }
        if state.splices + state.pending.len() >= l.max_splices {
            return busy(format!("the relay holds its maximum of {} splices", l.max_splices));
        }
        let source_splices = state.splices_per_source.get(&source).copied().unwrap_or(0);
        if source_splices + source_pending >= l.max_splices_per_source {
            return busy(format!("{source} has {} splices, the most one source may", l.max_splices_per_source));
        }
        if state.pending.contains_key(&token) {
            return busy("token collision".into());
        }
        // The newest registration whose task still runs; the dead ones go.
        let Some(lives) = state.keys.get_mut(&target) else {
            return Err((RelayRefusal::NotRegistered, "no listener with these keys is registered here".into()));
        };
        let mut sent = false;
        while let Some(newest) = lives.back() {
            match newest.dial_backs.try_send(DialBack { token, client }) {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return busy("the listener's control connection is not keeping up".into());
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    lives.pop_back();
                    state.registrations -= 1;
                }
            }
        }
        if lives.is_empty() {
            state.keys.remove(&target);
        }
        if !sent {
            return Err((RelayRefusal::NotRegistered, "no listener with these keys is registered here".into()));
        }
        let (tx, rx) = oneshot::channel();
        state.pending.insert(token, Waiting { target, source, answer: tx });
        up(&mut state.pending_per_key, target);
        up(&mut state.pending_per_source, source);
        Ok((PendingDial { registry: Arc::clone(self), token }, rx))
    }

    /// Takes the pending dial `token` names, turning it into a splice: where to hand the
    /// accepting connection, and the splice's slot. None if no dial waits under it.
    pub(crate) fn accept(self: &Arc<Self>, token: &Token) -> Option<(oneshot::Sender<Answer>, SpliceSlot)> {
        let mut state = self.lock();
        let waiting = state.pending.remove(token)?;
        down(&mut state.pending_per_key, &waiting.target);
        down(&mut state.pending_per_source, &waiting.source);
        state.splices += 1;
        up(&mut state.splices_per_source, waiting.source);
        Some((waiting.answer, SpliceSlot { registry: Arc::clone(self), source: waiting.source }))
    }

    /// Registrations, pending dials and splices now.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (state.registrations, state.pending.len(), state.splices)
    }
}

/// A registered control connection; dropping it unregisters it (unless it was replaced).
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    key: ListenerKey,
    serial: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.registry.lock();
        let Some(lives) = state.keys.get_mut(&self.key) else { return };
        if let Some(at) = lives.iter().position(|l| l.serial == self.serial) {
            lives.remove(at);
            if lives.is_empty() {
                state.keys.remove(&self.key);
            }
            state.registrations -= 1;
        }
    }
}

/// A dial waiting for its listener; dropping it forgets the dial if no ACCEPT took it.
#[derive(Debug)]
pub(crate) struct PendingDial {
    registry: Arc<Registry>,
    token: Token,
}

impl PendingDial {
    /// Forgets the dial now: true if it was still waiting, false if an ACCEPT took it (its
    /// answer is then on its way).
    pub(crate) fn cancel(&self) -> bool {
        let mut state = self.registry.lock();
        let Some(waiting) = state.pending.remove(&self.token) else { return false };
        down(&mut state.pending_per_key, &waiting.target);
        down(&mut state.pending_per_source, &waiting.source);
        true
    }
}

impl Drop for PendingDial {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// A running splice's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct SpliceSlot {
    registry: Arc<Registry>,
    source: Source,
}

impl Drop for SpliceSlot {
    fn drop(&mut self) {
        let mut state = self.registry.lock();
        state.splices -= 1;
        down(&mut state.splices_per_source, &self.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(last: u8) -> Source {
        Source::of(std::net::IpAddr::from([192, 0, 2, last]))
    }

    fn client() -> SocketAddr {
        "192.0.2.9:1000".parse().unwrap()
    }

    #[test]
    fn the_newest_registration_gets_the_dial_backs_and_the_oldest_is_replaced() {
        let limits = RelayLimits { registrations_per_key: 2, ..RelayLimits::default() };
        let registry = Registry::new(limits);
        let key = [1; 32];
        let (r1, _d1, mut replaced1, was) = registry.register(key).unwrap();
        assert!(!was);
        let (r2, mut d2, _x2, _) = registry.register(key).unwrap();
        let (r3, mut d3, _x3, was) = registry.register(key).unwrap();
        assert!(was, "the third replaced the first");
        assert_eq!(replaced1.try_recv(), Ok(()));
        assert_eq!(registry.counts().0, 2);
        drop(r1); // already gone: not counted twice
        assert_eq!(registry.counts().0, 2);
        let (dial, _answer) = registry.dial(key, source(1), client(), [7; 16]).unwrap();
        assert_eq!(d3.try_recv().unwrap().token, [7; 16]);
        assert!(d2.try_recv().is_err());
        // The newest's task ended (its receiver dropped, its guard not yet): the next
        // newest takes the dial-back.
        drop(d3);
        let (_dial2, _) = registry.dial(key, source(1), client(), [8; 16]).unwrap();
        assert_eq!(d2.try_recv().unwrap().token, [8; 16]);
        assert_eq!(registry.counts(), (1, 2, 0));
        drop((r2, r3, dial));
        assert_eq!(registry.counts(), (0, 1, 0));
        assert!(matches!(registry.dial(key, source(1), client(), [9; 16]), Err((RelayRefusal::NotRegistered, _))));
    }

    #[test]
    fn registrations_are_capped_but_replacements_are_not_refused() {
        let limits = RelayLimits { max_registrations: 2, registrations_per_key: 1, ..RelayLimits::default() };
        let registry = Registry::new(limits);
        let _a = registry.register([1; 32]).unwrap();
        let _b = registry.register([2; 32]).unwrap();
        assert!(matches!(registry.register([3; 32]), Err((RelayRefusal::Busy, _))));
        let _a2 = registry.register([1; 32]).unwrap();
        assert_eq!(registry.counts().0, 2);
    }

    #[test]
    fn pending_dials_and_splices_are_capped_and_freed() {
        let limits = RelayLimits {
            max_pending_per_key: 2,
            max_splices_per_source: 3,
            max_splices: 4,
            ..RelayLimits::default()
        };
        let registry = Registry::new(limits);
        let (key, other) = ([1; 32], [2; 32]);
        let (_reg, mut dial_backs, _, _) = registry.register(key).unwrap();
        let (_reg2, mut other_dial_backs, _, _) = registry.register(other).unwrap();
        let (p1, _a1) = registry.dial(key, source(1), client(), [1; 16]).unwrap();
        let (p2, _a2) = registry.dial(key, source(1), client(), [2; 16]).unwrap();
        let busy = registry.dial(key, source(1), client(), [3; 16]).unwrap_err();
        assert_eq!(busy.0, RelayRefusal::Busy, "{}", busy.1);
        assert!(busy.1.contains("wait for this listener"), "{}", busy.1);
        while dial_backs.try_recv().is_ok() {}
        // ACCEPTs turn them into splices; an unknown token finds nothing.
        let (_tx1, s1) = registry.accept(&[1; 16]).unwrap();
        assert!(registry.accept(&[1; 16]).is_none());
        assert!(!p1.cancel(), "taken by the accept");
        let (_tx2, s2) = registry.accept(&[2; 16]).unwrap();
        drop((p1, p2));
        assert_eq!(registry.counts(), (2, 0, 2));
        let (_p3, _) = registry.dial(key, source(1), client(), [3; 16]).unwrap();
        // Two splices and one dial: source 1 is at its three.
        let busy = registry.dial(other, source(1), client(), [4; 16]).unwrap_err();
        assert!(busy.1.contains("192.0.2.1 has 3 splices"), "{}", busy.1);
        let (_p4, _) = registry.dial(other, source(2), client(), [4; 16]).unwrap();
        // Four in all: nobody else.
        let busy = registry.dial(other, source(3), client(), [5; 16]).unwrap_err();
        assert!(busy.1.contains("maximum of 4 splices"), "{}", busy.1);
        drop((s1, s2));
        while other_dial_backs.try_recv().is_ok() {}
        let (p5, _) = registry.dial(other, source(3), client(), [5; 16]).unwrap();
        assert!(p5.cancel());
        assert_eq!(registry.counts(), (2, 2, 0));
    }
}
