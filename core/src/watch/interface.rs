//! What an interface is to msocket, and how its kind is guessed.
//!
//! The kind matters beyond display: the order in which addresses are handed to the
//! endpoint (Wi-Fi before Ethernet before cellular), and later which paths a flow may
//! use when energy or a data plan counts. Linux only knows names, so the kind is guessed
//! from the name; the guess is wrong often enough (an iPhone's `en0` is Wi-Fi, vendors
//! invent cellular names) that the app can override it per name with a [`Classifier`].
//! A mobile platform that knows the real type pushes it in directly (see
//! [`PushedNetwork`](super::PushedNetwork)).

use std::net::IpAddr;

/// The kind of link an interface is, as far as msocket can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum InterfaceKind {
    /// A wireless LAN.
    Wifi,
    /// A mobile data connection.
    Cellular,
    /// A wired LAN (and virtual Ethernet).
    Ethernet,
    /// The host itself.
    Loopback,
    /// Anything else (tunnels, bridges, unknown names).
    Other,
}

impl InterfaceKind {
    /// Preference when ordering addresses: lower first. Wi-Fi is preferred over a wired
    /// link on a phone only because a wired link there is rare and often a tether;
    /// cellular comes last because it costs money and energy.
    pub(crate) fn preference(self) -> u8 {
        match self {
            InterfaceKind::Wifi => 0,
            InterfaceKind::Ethernet => 1,
            InterfaceKind::Other => 2,
            InterfaceKind::Cellular => 3,
            InterfaceKind::Loopback => 4,
        }
    }
}

/// One network interface and its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// The operating system's name (`wlan0`, `rmnet_data0`, `en0`).
    pub name: String,
    /// The operating system's index; stable while the interface exists.
    pub index: u32,
    /// What kind of link it is.
    pub kind: InterfaceKind,
    /// Whether traffic on it costs (cellular by default).
    pub metered: bool,
    /// Administratively up and with a carrier: packets can flow.
    pub up: bool,
    /// Its addresses. Watchers leave out the ones that cannot carry a subflow yet or
    /// any more (tentative, deprecated, link-local IPv6); consumers filter again with
    /// [`usable_ips`](super::usable_ips), since pushed snapshots may contain anything.
    pub addrs: Vec<IpAddr>,
    /// The network's NAT64 prefix, when it translates to IPv4 (an IPv6-only cellular
    /// network): IPv4 peers are then dialed through it from this interface's IPv6
    /// addresses, unless an IPv4 address is at hand (see [`Nat64Prefix`](super::Nat64Prefix)).
    pub nat64: Option<super::Nat64Prefix>,
}

/// Guesses an interface's kind and whether it is metered from its name.
///
/// App rules (added with [`Classifier::with`]) come first, the longest matching prefix
/// winning; then the built-in rules:
///
/// | names | kind | metered |
/// |---|---|---|
/// | `wl*`, `wifi*` | Wi-Fi | no |
/// | `rmnet*`, `wwan*`, `ccmni*`, `pdp*`, `cell*` | cellular | yes |
/// | `eth*`, `en*`, `veth*` | Ethernet | no |
/// | `lo` | loopback | no |
/// | anything else | other | no |
#[derive(Clone, Debug, Default)]
pub struct Classifier {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    prefix: String,
    kind: InterfaceKind,
    metered: bool,
}

/// Built-in prefix rules. `lo` is matched exactly (see [`Classifier::classify`]) so that
/// `lowpan0` is not taken for loopback.
const BUILT_IN: &[(&str, InterfaceKind, bool)] = &[
    ("wl", InterfaceKind::Wifi, false),
    ("wifi", InterfaceKind::Wifi, false),
    ("rmnet", InterfaceKind::Cellular, true),
    ("wwan", InterfaceKind::Cellular, true),
    ("ccmni", InterfaceKind::Cellular, true),
    ("pdp", InterfaceKind::Cellular, true),
    ("cell", InterfaceKind::Cellular, true),
    ("eth", InterfaceKind::Ethernet, false),
    ("en", InterfaceKind::Ethernet, false),
    ("veth", InterfaceKind::Ethernet, false),
];

/// Bound on app rules, so a misbehaving caller cannot grow the classifier without end.
const MAX_RULES: usize = 64;

impl Classifier {
    /// The built-in rules only.
    pub fn new() -> Classifier {
        Classifier::default()
    }

    /// Adds a rule: interfaces whose name starts with `prefix` (or equals it) are of
    /// `kind` and `metered`. Later rules with the same prefix replace earlier ones; past
    /// 64 rules, further ones are ignored.
    pub fn with(mut self, prefix: impl Into<String>, kind: InterfaceKind, metered: bool) -> Classifier {
        let prefix = prefix.into();
        if let Some(rule) = self.rules.iter_mut().find(|r| r.prefix == prefix) {
            rule.kind = kind;
            rule.metered = metered;
        } else if self.rules.len() < MAX_RULES {
            self.rules.push(Rule { prefix, kind, metered });
        } else {
            tracing::warn!(prefix, "too many interface rules; ignoring this one");
        }
        self
    }

    /// The kind of the interface called `name`, and whether it is metered.
    pub fn classify(&self, name: &str) -> (InterfaceKind, bool) {
        let app = self.rules.iter().filter(|r| name.starts_with(r.prefix.as_str())).max_by_key(|r| r.prefix.len());
        if let Some(rule) = app {
            return (rule.kind, rule.metered);
        }
        if name == "lo" {
            return (InterfaceKind::Loopback, false);
        }
        BUILT_IN
            .iter()
            .filter(|(prefix, _, _)| name.starts_with(prefix))
            .max_by_key(|(prefix, _, _)| prefix.len())
            .map_or((InterfaceKind::Other, false), |&(_, kind, metered)| (kind, metered))
    }

    /// Whether an app rule covers `name` (so the operating system's own hints, such as a
    /// loopback flag, must not override it).
    pub(crate) fn overrides(&self, name: &str) -> bool {
        self.rules.iter().any(|r| name.starts_with(r.prefix.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_names() {
        let c = Classifier::new();
        for (name, kind, metered) in [
            ("wlan0", InterfaceKind::Wifi, false),
            ("wlp3s0", InterfaceKind::Wifi, false),
            ("wifi0", InterfaceKind::Wifi, false),
            ("rmnet_data0", InterfaceKind::Cellular, true),
            ("wwan0", InterfaceKind::Cellular, true),
            ("ccmni1", InterfaceKind::Cellular, true),
            ("pdp_ip0", InterfaceKind::Cellular, true),
            ("cell0", InterfaceKind::Cellular, true),
            ("eth0", InterfaceKind::Ethernet, false),
            ("enp0s31f6", InterfaceKind::Ethernet, false),
            ("en0", InterfaceKind::Ethernet, false),
            ("veth12ab", InterfaceKind::Ethernet, false),
            ("lo", InterfaceKind::Loopback, false),
            ("lowpan0", InterfaceKind::Other, false),
            ("tun0", InterfaceKind::Other, false),
            ("", InterfaceKind::Other, false),
        ] {
            assert_eq!(c.classify(name), (kind, metered), "{name}");
        }
    }

    #[test]
    fn app_rules_win_and_the_longest_prefix_decides() {
        let c = Classifier::new()
            .with("en", InterfaceKind::Wifi, false)
            .with("en5", InterfaceKind::Ethernet, true)
            .with("tether", InterfaceKind::Cellular, true);
        assert_eq!(c.classify("en0"), (InterfaceKind::Wifi, false));
        assert_eq!(c.classify("en5"), (InterfaceKind::Ethernet, true));
        assert_eq!(c.classify("tether0"), (InterfaceKind::Cellular, true));
        assert_eq!(c.classify("eth0"), (InterfaceKind::Ethernet, false), "built-in rules still apply");
        assert!(c.overrides("en1"));
        assert!(!c.overrides("eth0"));
    }

    #[test]
    fn a_repeated_prefix_replaces_the_rule_and_rules_are_bounded() {
        let c = Classifier::new().with("x", InterfaceKind::Wifi, false).with("x", InterfaceKind::Cellular, true);
        assert_eq!(c.classify("x0"), (InterfaceKind::Cellular, true));
        let mut c = Classifier::new();
        for i in 0..100 {
            c = c.with(format!("p{i}_"), InterfaceKind::Wifi, false);
        }
        assert_eq!(c.rules.len(), MAX_RULES);
        assert_eq!(c.classify("p99_0"), (InterfaceKind::Other, false));
    }
}
