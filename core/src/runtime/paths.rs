//! The extra subflows of a connecting flow.
//!
//! Re-dialing (`dial.rs`) brings a flow back once it has *no* subflow. This module adds
//! subflows while one still works, so that the next hand-off needs no handshake:
//! - a **standby** on each other local address (cellular beside Wi-Fi): joined at once,
//!   marked STANDBY so both ends keep DATA off it while the active path is heard, and
//!   carrying the flow the moment that path is lost — the make-before-break hand-off;
//! - a subflow to each address the peer **newly announced** (ADDRS, or its name record):
//!   a server that moves with its old address still up is joined at the new one before
//!   the old one goes.
//!
//! The best local address (first in the endpoint's list: unmetered before metered) is the
//! active path; subflows from worse ones are standbys. When a better address appears (back
//! on Wi-Fi) a subflow joins from it and takes over; without standbys
//! (`EndpointConfig::standby_paths` off) the worse subflows are then retired. The `Energy`
//! policy keeps no standby while the best path keeps up with the demand of either end
//! (DEMAND frames): an idle cellular subflow costs a radio wake-up when it opens and
//! another when it closes, about 25 J by the energy model, so cellular is dialed only when
//! Wi-Fi is gone or overflowing, and retired once Wi-Fi carries the flow alone again
//! (while its radio is still in its tail). Only the connecting side decides;
//! the other end follows the STANDBY frames. A local address whose subflows die before
//! the peer is heard on them, or stop answering, backs off (1 s doubling to 1 min) before
//! it is dialed again.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::{Conn, Inner, Role};
pub use crate::proto::PathPolicy;
use crate::proto::SubflowId;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the flow is doing about extra subflows.
#[derive(Debug, Default)]
pub(crate) struct Paths {
    /// Dials under way, by (local address, peer address).
    dialing: Vec<(Option<IpAddr>, SocketAddr)>,
    /// Local addresses whose subflows died: not dialed again before the instant.
    backoff: Vec<(IpAddr, Duration, Instant)>,
    /// Peer addresses announced since the last look, not yet joined.
    fresh: Vec<SocketAddr>,
    /// When [`Conn::ensure_paths`] last looked (None: something changed since). The
    /// driver calls it on every wake-up; it looks again only after a change or a back-off
    /// that ended.
    checked_at: Option<Instant>,
    /// What the policy last said about extra subflows (`FlowState::needs_extra_paths`).
    extra_wanted: bool,
}

impl Paths {
    /// Subflows, addresses or dials changed: the next [`Conn::ensure_paths`] looks again.
    pub(crate) fn changed(&mut self) {
        self.checked_at = None;
    }

    /// Whether [`Conn::ensure_paths`] has anything to look at; marks the look as done.
    fn take_due(&mut self, now: Instant) -> bool {
        let due = match self.checked_at {
            None => true,
            Some(at) => self.backoff.iter().any(|(_, _, until)| at < *until && *until <= now),
        };
        self.checked_at = Some(now);
        due
    }

    /// The peer now lists `addrs` (before: `old`): the new ones are worth a subflow.
    pub(crate) fn peer_listed(&mut self, old: &[SocketAddr], addrs: &[SocketAddr]) {
        for a in addrs {
            if !old.contains(a) && !self.fresh.contains(a) {
                self.fresh.push(*a);
            }
        }
        self.changed();
    }

    /// A subflow from `local` died: back off before dialing from there again (doubling if
    /// the last loss was recent).
    pub(crate) fn lost(&mut self, local: IpAddr, now: Instant) {
        let prev = self.backoff.iter().position(|(ip, ..)| *ip == local).map(|i| self.backoff.swap_remove(i));
        let delay = match prev {
            Some((_, d, until)) if now < until + MAX_BACKOFF => (d * 2).min(MAX_BACKOFF),
            _ => FIRST_BACKOFF,
        };
        self.backoff.push((local, delay, now + delay));
        self.changed();
    }

    fn backing_off(&self, local: IpAddr, now: Instant) -> bool {
        self.backoff.iter().any(|(ip, _, until)| *ip == local && now < *until)
    }

    /// When the earliest back-off ends (for the driver's timer).
    pub(crate) fn next_retry(&self, now: Instant) -> Option<Instant> {
        self.backoff.iter().map(|(_, _, until)| *until).filter(|u| *u > now).min()
    }
}

impl Conn {
    /// Local addresses that are new (or back): they get a fresh chance, whatever their
    /// earlier subflows did.
    pub(crate) fn addresses_added<'a>(&self, ips: impl Iterator<Item = &'a IpAddr>) {
        let mut inner = self.lock();
        for ip in ips {
            inner.paths.backoff.retain(|(b, ..)| b != ip);
        }
        inner.punch.reset();
        inner.paths.changed();
    }

    /// Client: starts the dials for the extra subflows the flow lacks. Called by the
    /// driver; cheap when nothing is missing.
    pub(crate) fn ensure_paths(self: &Arc<Self>) {
        if self.role != Role::Client {
            return;
        }
        let Some(host) = self.host.upgrade() else { return };
        let now = Instant::now();
        let mut inner = self.lock();
        let extra = inner.proto.needs_extra_paths();
        if extra != inner.paths.extra_wanted {
            inner.paths.extra_wanted = extra;
            inner.paths.changed();
        }
        // Subflows beyond the best path: standbys are configured, and the policy wants
        // them now (`Energy` only while the demand overflows the best path).
        let standby = host.config.standby_paths && extra;
        // A hole punching retry that fell due is a reason to look, like a change.
        let punch_due = inner.punch.next_at().is_some_and(|at| at <= now);
        if !(inner.paths.take_due(now) | punch_due) || !inner.proto.needs_path() || inner.proto.live_subflows() == 0 {
            return; // nothing changed, nothing to do, or the re-dialer's job
        }
        self.maybe_punch(&mut inner, now);
        let subs = inner.subflow_ends();
        // The path the flow uses now: its peer address is where standbys go too.
        let Some(&(_, remote)) = subs.first() else { return };
        drop(inner);
        let locals = host.local_ips_for(remote);
        let best = locals.first().copied().flatten();
        let mut inner = self.lock();
        let mut wanted: Vec<(Option<IpAddr>, SocketAddr)> = Vec::new();
        for addr in std::mem::take(&mut inner.paths.fresh) {
            if !subs.iter().any(|(_, r)| *r == addr) {
                wanted.push((best, addr));
            }
        }
        // Every local address gets a subflow (the best one to carry the flow, the others
        // as standbys); without standbys (or extra paths) only the best one does.
        let covered = |ip: &IpAddr| subs.iter().any(|(l, _)| l.ip() == *ip);
        let limit = if standby { locals.len() } else { 1 };
        for ip in locals.iter().take(limit).flatten() {
            if !covered(ip) && !inner.paths.backing_off(*ip, now) {
                wanted.push((Some(*ip), remote));
            }
        }
        for (local, addr) in wanted {
            if inner.paths.dialing.contains(&(local, addr)) {
                continue;
            }
            inner.paths.dialing.push((local, addr));
            tracing::debug!(flow = %self.keys.flow_id, ?local, %addr, "opening an extra subflow");
            tokio::spawn(dial_extra(self.clone(), local, addr));
        }
        // Without standbys (or extra paths), a flow that moved to a better address, or
        // whose demand calmed, leaves the worse ones;
        // and a path opened twice (a re-dial raced a standby dial) is kept once.
        let mut worse: Vec<SubflowId> = match best {
            Some(best) if !standby && covered(&best) => inner
                .subflow_ids_and_locals()
                .into_iter()
                .filter(|(_, l)| l.ip() != best)
                .map(|(id, _)| id)
                .collect(),
            _ => Vec::new(),
        };
        // A relayed path beside a direct one: a standby, or gone when there are none.
        if !standby && inner.has_direct_subflow() {
            worse.extend(inner.relayed_subflows().into_iter().map(|(id, ..)| id));
        }
        worse.extend(inner.duplicate_subflows());
        drop(inner);
        for id in worse {
            self.subflow_gone(id, super::events::PathLossReason::Redundant);
        }
    }

    /// Client: marks every subflow from a worse local address than the best one in use
    /// as a standby, and the others active (the peer is told by STANDBY frames).
    pub(crate) fn assign_standbys(&self, inner: &mut Inner) {
        if self.role != Role::Client {
            return;
        }
        let Some(host) = self.host.upgrade() else { return };
        let order = host.local_ips();
        // Better local addresses first; on one address, direct before relayed.
        let relayed: Vec<SubflowId> = inner.relayed_subflows().into_iter().map(|(id, ..)| id).collect();
        let rank = |id: SubflowId, ip: IpAddr| {
            (order.iter().position(|o| *o == ip).unwrap_or(usize::MAX), relayed.contains(&id))
        };
        let ends = inner.subflow_ids_and_locals();
        let Some(best) = ends.iter().map(|(id, l)| rank(*id, l.ip())).min() else { return };
        for (id, local) in ends {
            let standby = inner.policy.uses_standbys() && rank(id, local.ip()) > best;
            inner.proto.set_standby(id, standby);
        }
    }
}

impl Conn {
    /// Client: starts an attempt to go direct when the flow runs on relayed paths only,
    /// the peer publishes addresses (a relay-only peer does not want to be found) and
    /// the plan says it is time.
    fn maybe_punch(self: &Arc<Self>, inner: &mut Inner, now: Instant) {
        if inner.has_direct_subflow() || inner.peer_addrs.is_empty() {
            return;
        }
        let Some((id, local, ours, peers)) = inner.relayed_subflows().into_iter().next() else { return };
        // The relay's word, like the peer's, must not make us dial our own services.
        let Some(host) = self.host.upgrade() else { return };
        if host.dialable(&[peers]).is_empty() {
            return;
        }
        if inner.punch.start(now) {
            tracing::debug!(flow = %self.keys.flow_id, %ours, %peers, "trying to go direct");
            tokio::spawn(super::punch::punch(self.clone(), id, local, ours, peers));
        }
    }
}

async fn dial_extra(conn: Arc<Conn>, local: Option<IpAddr>, addr: SocketAddr) {
    let joined = match conn.host.upgrade() {
        Some(host) => super::dial::dial_join(&host, &conn, local, addr).await,
        None => false,
    };
    {
        let mut inner = conn.lock();
        inner.paths.dialing.retain(|d| *d != (local, addr));
        inner.paths.changed();
        if !joined {
            if let Some(ip) = local {
                inner.paths.lost(ip, Instant::now());
            }
        }
    }
    conn.wake_driver();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_back_off_doubling_and_reset_after_a_quiet_spell() {
        let mut p = Paths::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        p.lost(ip, t0);
        assert!(p.backing_off(ip, t0));
        assert_eq!(p.next_retry(t0), Some(t0 + FIRST_BACKOFF));
        p.lost(ip, t0 + Duration::from_millis(1500));
        assert_eq!(p.next_retry(t0 + Duration::from_millis(1500)), Some(t0 + Duration::from_millis(3500)));
        assert!(!p.backing_off(ip, t0 + Duration::from_secs(4)));
        // Long after the last back-off ended, a loss starts over at the first delay.
        let later = t0 + Duration::from_secs(600);
        p.lost(ip, later);
        assert_eq!(p.next_retry(later), Some(later + FIRST_BACKOFF));
    }

    #[test]
    fn a_look_is_due_after_a_change_or_an_ended_back_off_only() {
        let mut p = Paths::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(p.take_due(t0), "a new flow looks once");
        assert!(!p.take_due(t0 + Duration::from_millis(5)), "nothing changed");
        p.lost(ip, t0 + Duration::from_millis(10));
        assert!(p.take_due(t0 + Duration::from_millis(10)), "a loss is a change");
        assert!(!p.take_due(t0 + Duration::from_millis(500)), "still backing off");
        assert!(p.take_due(t0 + Duration::from_millis(1010)), "the back-off ended");
        assert!(!p.take_due(t0 + Duration::from_millis(1100)));
        p.changed();
        assert!(p.take_due(t0 + Duration::from_millis(1200)));
    }

    #[test]
    fn only_newly_listed_peer_addresses_are_fresh() {
        let mut p = Paths::default();
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        p.peer_listed(&[a], &[a, b]);
        p.peer_listed(&[a], &[b]);
        assert_eq!(p.fresh, vec![b]);
    }
}
