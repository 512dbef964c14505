//! Schedulers: which subflow carries which data, per [`PathPolicy`].
//!
//! Every subflow pulls: when its socket has room the runtime asks the flow for a frame on
//! it, so a path takes data as fast as it drains (the runtime keeps little unsent data in
//! each socket). What is left to decide is *whether* a subflow may take data at all, and
//! what else it should carry; that is the policy:
//!
//! - `Backup`: one active path; the others are hot standbys that carry data only while no
//!   active path is heard (and not stalled). Make-before-break hand-offs, one radio busy.
//! - `Energy`: like `Backup` (Wi-Fi first, cellular as a standby), but a standby also
//!   carries data while the active paths cannot keep up with the application's demand.
//! - `Performance`: every path carries data, with one exception for the earliest
//!   completion: a slower path takes data only if it would deliver it before the faster
//!   one could (otherwise the receiver would wait for it, head-of-line blocked).
//! - `Redundant`: like `Performance`, and small writes are also copied onto every other
//!   path, so the first copy to arrive is the one read (latency before bytes).
//!
//! Under every policy a subflow that holds the oldest unacknowledged data and has not
//! delivered anything for a few of its round trips is *stalled*: what it carries is sent
//! again on the others, and it takes no new data until it delivers again.
//!
//! The connecting end chooses the policy and which subflows are standbys; the accepting
//! end learns both from POLICY and STANDBY frames and schedules its own sending the same
//! way.

/// How a flow uses its paths (changeable at run time); see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum PathPolicy {
    /// One path (the best local address) carries the data; the others are hot standbys
    /// that take over at once when it is lost. The default.
    #[default]
    Backup,
    /// Every path carries data, split so the whole arrives soonest.
    Performance,
    /// The best path carries the data; standbys (cellular) join in only while it cannot
    /// carry the demand, or is gone.
    Energy,
    /// Like `Performance`, with small writes copied onto every path.
    Redundant,
}

impl PathPolicy {
    /// Every policy, in wire order.
    pub const ALL: [PathPolicy; 4] = [
        PathPolicy::Backup,
        PathPolicy::Performance,
        PathPolicy::Energy,
        PathPolicy::Redundant,
    ];

    /// The lower-case name used by the CLI and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            PathPolicy::Backup => "backup",
            PathPolicy::Performance => "performance",
            PathPolicy::Energy => "energy",
            PathPolicy::Redundant => "redundant",
        }
    }

    /// Whether worse paths are kept as standbys (no data while a better path works).
    pub fn uses_standbys(self) -> bool {
        matches!(self, PathPolicy::Backup | PathPolicy::Energy)
    }

    pub(crate) fn to_wire(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_wire(v: u8) -> Option<PathPolicy> {
        PathPolicy::ALL.get(v as usize).copied()
    }
}

impl std::str::FromStr for PathPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PathPolicy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown policy {s:?}: expected backup, performance, energy or redundant"))
    }
}

impl std::fmt::Display for PathPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
