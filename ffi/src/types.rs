//! The plain data of the foreign API and its conversions to and from the core's types.
//!
//! Addresses cross the boundary as text (`192.0.2.7`, `192.0.2.7:7450`): both Kotlin and
//! Swift print and parse them natively, and a malformed one is refused here, with its
//! position in the input, instead of deep in the core. Durations cross as integer
//! milliseconds or microseconds. Everything the platform pushes is checked against
//! bounds, so a buggy caller gets an error, not an endpoint holding unbounded state.

use std::net::IpAddr;

use msocket::watch::{Interface, InterfaceKind as CoreKind};

use crate::error::MsocketError;

/// At most this many interfaces in one network snapshot.
pub const MAX_INTERFACES: usize = 256;
/// At most this many addresses per interface.
pub const MAX_ADDRESSES: usize = 64;
/// Longest interface name accepted (Linux allows 15 bytes; platforms may say more).
pub const MAX_INTERFACE_NAME: usize = 64;

/// The UDL's `PathPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathPolicy {
    Backup,
    Performance,
    Energy,
    Redundant,
}

impl From<PathPolicy> for msocket::PathPolicy {
    fn from(p: PathPolicy) -> Self {
        match p {
            PathPolicy::Backup => msocket::PathPolicy::Backup,
            PathPolicy::Performance => msocket::PathPolicy::Performance,
            PathPolicy::Energy => msocket::PathPolicy::Energy,
            PathPolicy::Redundant => msocket::PathPolicy::Redundant,
        }
    }
}

impl From<msocket::PathPolicy> for PathPolicy {
    fn from(p: msocket::PathPolicy) -> Self {
        match p {
            msocket::PathPolicy::Backup => PathPolicy::Backup,
            msocket::PathPolicy::Performance => PathPolicy::Performance,
            msocket::PathPolicy::Energy => PathPolicy::Energy,
            msocket::PathPolicy::Redundant => PathPolicy::Redundant,
            other => {
                tracing::warn!(policy = ?other, "a path policy this SDK version does not name; reported as Backup");
                PathPolicy::Backup
            }
        }
    }
}

/// The UDL's `InterfaceKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceKind {
    Wifi,
    Cellular,
    Ethernet,
    Other,
}

impl From<InterfaceKind> for CoreKind {
    fn from(k: InterfaceKind) -> Self {
        match k {
            InterfaceKind::Wifi => CoreKind::Wifi,
            InterfaceKind::Cellular => CoreKind::Cellular,
            InterfaceKind::Ethernet => CoreKind::Ethernet,
            InterfaceKind::Other => CoreKind::Other,
        }
    }
}

impl From<CoreKind> for InterfaceKind {
    /// The kinds the UDL names as they are; the host's own loopback, and kinds a later
    /// core may add, are `Other` (a loopback path is no link an app could show as Wi-Fi,
    /// cellular or Ethernet).
    fn from(k: CoreKind) -> Self {
        match k {
            CoreKind::Wifi => InterfaceKind::Wifi,
            CoreKind::Cellular => InterfaceKind::Cellular,
            CoreKind::Ethernet => InterfaceKind::Ethernet,
            _ => InterfaceKind::Other,
        }
    }
}

/// The UDL's `PathState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathState {
    Joining,
    Active,
    Standby,
    Stalled,
}

impl From<msocket::PathState> for PathState {
    fn from(s: msocket::PathState) -> Self {
        match s {
            msocket::PathState::Joining => PathState::Joining,
            msocket::PathState::Active => PathState::Active,
            msocket::PathState::Standby => PathState::Standby,
            msocket::PathState::Stalled => PathState::Stalled,
            other => {
                tracing::warn!(state = ?other, "a path state this SDK version does not name; reported as Active");
                PathState::Active
            }
        }
    }
}

/// The UDL's `NetworkInterface`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInterface {
    pub name: String,
    pub index: u32,
    pub kind: InterfaceKind,
    pub metered: bool,
    pub up: bool,
    pub addresses: Vec<String>,
    pub nat64_prefix: Option<String>,
}

/// Parses an IP address given as text; `what` says where it came from.
pub(crate) fn parse_ip(text: &str, what: &str) -> Result<IpAddr, MsocketError> {
    text.trim()
        .parse()
        .map_err(|_| MsocketError::InvalidArgument(format!("{what}: {text:?} is not an IP address")))
}

/// Checks and converts one platform snapshot.
pub(crate) fn interfaces_to_core(list: Vec<NetworkInterface>) -> Result<Vec<Interface>, MsocketError> {
    if list.len() > MAX_INTERFACES {
        return Err(MsocketError::InvalidArgument(format!(
            "{} interfaces in one snapshot; at most {MAX_INTERFACES} are accepted",
            list.len()
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    for (n, i) in list.into_iter().enumerate() {
        if i.name.is_empty() || i.name.len() > MAX_INTERFACE_NAME || i.name.chars().any(char::is_control) {
            return Err(MsocketError::InvalidArgument(format!(
                "interface {n}: name {:?} must be 1 to {MAX_INTERFACE_NAME} bytes of printable text",
                i.name
            )));
        }
        if i.addresses.len() > MAX_ADDRESSES {
            return Err(MsocketError::InvalidArgument(format!(
                "interface {}: {} addresses; at most {MAX_ADDRESSES} are accepted",
                i.name,
                i.addresses.len()
            )));
        }
        let addrs = i
            .addresses
            .iter()
            .map(|a| parse_ip(a, &format!("interface {}", i.name)))
            .collect::<Result<Vec<_>, _>>()?;
        let nat64 = match &i.nat64_prefix {
            Some(p) => Some(p.parse::<msocket::watch::Nat64Prefix>().map_err(|e| {
                MsocketError::InvalidArgument(format!("interface {}: nat64_prefix: {e}", i.name))
            })?),
            None => None,
        };
        out.push(Interface { name: i.name, index: i.index, kind: i.kind.into(), metered: i.metered, up: i.up, addrs, nat64 });
    }
    Ok(out)
}

/// The UDL's `PathInfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct PathInfo {
    pub local: String,
    pub remote: String,
    pub state: PathState,
    pub standby: bool,
    pub relayed: bool,
    pub srtt_us: Option<u64>,
    pub delivery_rate: Option<u64>,
    pub in_flight: u64,
    pub bytes_delivered: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub energy_joules: Option<f64>,
    pub interface_kind: Option<InterfaceKind>,
}

impl From<msocket::Path> for PathInfo {
    fn from(p: msocket::Path) -> Self {
        PathInfo {
            local: p.local.to_string(),
            remote: p.remote.to_string(),
            state: p.state.into(),
            standby: p.standby,
            relayed: p.relayed,
            srtt_us: p.srtt.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            delivery_rate: p.delivery_rate,
            in_flight: p.in_flight,
            bytes_delivered: p.bytes_delivered,
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            energy_joules: p.energy_joules,
            interface_kind: p.interface.map(InterfaceKind::from),
        }
    }
}

/// The UDL's `FlowStats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowStats {
    pub bytes_written: u64,
    pub bytes_sent: u64,
    pub bytes_retransmitted: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub bytes_read: u64,
    pub paths_added: u64,
    pub paths_lost: u64,
    pub stalls: u64,
}

impl From<msocket::FlowStats> for FlowStats {
    fn from(s: msocket::FlowStats) -> Self {
        FlowStats {
            bytes_written: s.bytes_written,
            bytes_sent: s.bytes_sent,
            bytes_retransmitted: s.bytes_retransmitted,
            bytes_acked: s.bytes_acked,
            bytes_received: s.bytes_received,
            bytes_read: s.bytes_read,
            paths_added: s.subflows_added,
            paths_lost: s.subflows_lost,
            stalls: s.stalls,
        }
    }
}

/// The UDL's `PathLossReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathLossReason {
    PeerClosed,
    Dead,
    LocalAddressGone,
    PeerLeftAddress,
    Redundant,
    FlowOver,
    Io,
    Forged,
    ProtocolError,
    JoinRefused,
    NotOurPeer,
    Other,
}

impl From<&msocket::PathLossReason> for PathLossReason {
    fn from(r: &msocket::PathLossReason) -> Self {
        use msocket::PathLossReason as R;
        match r {
            R::PeerClosed | R::PeerClosedMidRecord => PathLossReason::PeerClosed,
            R::Dead => PathLossReason::Dead,
            R::LocalAddressGone => PathLossReason::LocalAddressGone,
            R::PeerLeftAddress => PathLossReason::PeerLeftAddress,
            R::Redundant => PathLossReason::Redundant,
            R::FlowOver => PathLossReason::FlowOver,
            R::Io { .. } => PathLossReason::Io,
            R::Forged => PathLossReason::Forged,
            R::Malformed(_) | R::Violation(_) => PathLossReason::ProtocolError,
            R::JoinRefused { .. } => PathLossReason::JoinRefused,
            R::NotOurPeer => PathLossReason::NotOurPeer,
            _ => PathLossReason::Other,
        }
    }
}

/// The UDL's `FlowFailure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowFailure {
    NoPath,
    PeerAborted,
    LocallyAborted,
    PeerForgotFlow,
    EndpointDropped,
    NotAccepted,
    Other,
}

impl From<&msocket::FlowError> for FlowFailure {
    fn from(e: &msocket::FlowError) -> Self {
        use msocket::FlowError as E;
        match e {
            E::DeadlineExceeded { .. } => FlowFailure::NoPath,
            E::PeerAborted { .. } => FlowFailure::PeerAborted,
            E::LocallyAborted { .. } => FlowFailure::LocallyAborted,
            E::PeerForgotFlow => FlowFailure::PeerForgotFlow,
            E::EndpointDropped => FlowFailure::EndpointDropped,
            E::NotAccepted => FlowFailure::NotAccepted,
            _ => FlowFailure::Other,
        }
    }
}

/// The UDL's `FlowEvent`.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowEvent {
    PathAdded { local: String, remote: String, relayed: bool, interface_kind: Option<InterfaceKind> },
    PathLost {
        local: String,
        remote: String,
        reason: PathLossReason,
        detail: String,
        energy_joules: Option<f64>,
        interface_kind: Option<InterfaceKind>,
    },
    Resumed { outage_ms: u64 },
    PeerMoved { addresses: Vec<String> },
    StaysRelayed { attempts: u32 },
    Moved { addresses: Vec<String> },
    Closed { failure: Option<FlowFailure>, error: Option<String>, energy_joules: Option<f64> },
    EventsDropped { count: u64 },
}

impl FlowEvent {
    /// The foreign form of a core event; None for kinds this SDK version does not know
    /// (the core may add some), which are skipped rather than misreported.
    pub(crate) fn from_core(ev: msocket::FlowEvent) -> Option<FlowEvent> {
        use msocket::FlowEvent as E;
        Some(match ev {
            E::PathAdded { local, remote, relayed, interface } => FlowEvent::PathAdded {
                local: local.to_string(),
                remote: remote.to_string(),
                relayed,
                interface_kind: interface.map(InterfaceKind::from),
            },
            E::PathLost { local, remote, reason, interface, energy_joules } => FlowEvent::PathLost {
                local: local.to_string(),
                remote: remote.to_string(),
                reason: (&reason).into(),
                detail: reason.to_string(),
                energy_joules,
                interface_kind: interface.map(InterfaceKind::from),
            },
            E::Resumed { outage } => {
                FlowEvent::Resumed { outage_ms: u64::try_from(outage.as_millis()).unwrap_or(u64::MAX) }
            }
            E::PeerMoved { addrs } => FlowEvent::PeerMoved { addresses: addrs.iter().map(ToString::to_string).collect() },
            E::StaysRelayed { attempts } => FlowEvent::StaysRelayed { attempts },
            E::Moved { addrs } => FlowEvent::Moved { addresses: addrs.iter().map(ToString::to_string).collect() },
            E::Closed { error, energy_joules } => FlowEvent::Closed {
                failure: error.as_ref().map(FlowFailure::from),
                error: error.map(|e| e.to_string()),
                energy_joules,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn iface(name: &str, addrs: &[&str]) -> NetworkInterface {
        NetworkInterface {
            name: name.into(),
            index: 3,
            kind: InterfaceKind::Wifi,
            metered: false,
            up: true,
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
            nat64_prefix: None,
        }
    }

    #[test]
    fn policies_round_trip() {
        for p in [PathPolicy::Backup, PathPolicy::Performance, PathPolicy::Energy, PathPolicy::Redundant] {
            assert_eq!(PathPolicy::from(msocket::PathPolicy::from(p)), p);
        }
        for p in msocket::PathPolicy::ALL {
            assert_eq!(msocket::PathPolicy::from(PathPolicy::from(p)), p);
        }
    }

    #[test]
    fn snapshots_convert_with_their_kinds_and_addresses() {
        let mut cell = iface("rmnet_data0", &["10.0.0.7", " 2001:db8::7 "]);
        cell.kind = InterfaceKind::Cellular;
        cell.metered = true;
        let core = interfaces_to_core(vec![iface("wlan0", &["192.0.2.7"]), cell]).unwrap();
        assert_eq!(core[0].kind, CoreKind::Wifi);
        assert_eq!(core[0].addrs, vec!["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(core[1].kind, CoreKind::Cellular);
        assert!(core[1].metered);
        assert_eq!(core[1].addrs[1], "2001:db8::7".parse::<IpAddr>().unwrap());
        assert_eq!(core[1].index, 3);
    }

    #[test]
    fn bad_snapshots_are_refused_with_the_reason() {
        let err = |list| match interfaces_to_core(list) {
            Err(MsocketError::InvalidArgument(m)) => m,
            other => panic!("accepted: {other:?}"),
        };
        assert!(err(vec![iface("wlan0", &["192.0.2.300"])]).contains("interface wlan0: \"192.0.2.300\" is not an IP address"));
        assert!(err(vec![iface("", &[])]).contains("interface 0: name"));
        assert!(err(vec![iface("bad\nname", &[])]).contains("printable"));
        assert!(err(vec![iface(&"x".repeat(65), &[])]).contains("1 to 64"));
        let many: Vec<String> = (0..65).map(|i| format!("10.0.0.{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(err(vec![iface("wlan0", &refs)]).contains("65 addresses"));
        assert!(err((0..257).map(|i| iface(&format!("if{i}"), &[])).collect()).contains("257 interfaces"));
    }

    #[test]
    fn events_convert() {
        let a: std::net::SocketAddr = "127.0.0.2:1000".parse().unwrap();
        let b: std::net::SocketAddr = "127.0.0.1:2000".parse().unwrap();
        assert_eq!(
            FlowEvent::from_core(msocket::FlowEvent::PathAdded {
                local: a,
                remote: b,
                relayed: false,
                interface: Some(msocket::watch::InterfaceKind::Cellular)
            }),
            Some(FlowEvent::PathAdded {
                local: "127.0.0.2:1000".into(),
                remote: "127.0.0.1:2000".into(),
                relayed: false,
                interface_kind: Some(InterfaceKind::Cellular)
            })
        );
        assert_eq!(
            FlowEvent::from_core(msocket::FlowEvent::Resumed { outage: Duration::from_millis(1500) }),
            Some(FlowEvent::Resumed { outage_ms: 1500 })
        );
        assert_eq!(
            FlowEvent::from_core(msocket::FlowEvent::Moved { addrs: vec!["127.0.0.3".parse().unwrap()] }),
            Some(FlowEvent::Moved { addresses: vec!["127.0.0.3".into()] })
        );
        let aborted = msocket::FlowError::PeerAborted { code: 1, reason: "x".into() };
        assert_eq!(
            FlowEvent::from_core(msocket::FlowEvent::Closed { error: Some(aborted.clone()), energy_joules: Some(1.5) }),
            Some(FlowEvent::Closed {
                failure: Some(FlowFailure::PeerAborted),
                error: Some(aborted.to_string()),
                energy_joules: Some(1.5)
            })
        );
        assert_eq!(
            FlowEvent::from_core(msocket::FlowEvent::Closed { error: Some(msocket::FlowError::PeerForgotFlow), energy_joules: None }),
            Some(FlowEvent::Closed {
                failure: Some(FlowFailure::PeerForgotFlow),
                error: Some(msocket::FlowError::PeerForgotFlow.to_string()),
                energy_joules: None
            })
        );
        let lost = msocket::FlowEvent::PathLost {
            local: a,
            remote: b,
            reason: msocket::PathLossReason::Io { operation: msocket::IoOperation::Read, kind: std::io::ErrorKind::ConnectionReset },
            interface: Some(msocket::watch::InterfaceKind::Wifi),
            energy_joules: None,
        };
        let Some(FlowEvent::PathLost { reason, detail, interface_kind, .. }) = FlowEvent::from_core(lost) else { panic!() };
        assert_eq!(interface_kind, Some(InterfaceKind::Wifi));
        assert_eq!(reason, PathLossReason::Io);
        assert!(detail.starts_with("read failed"), "{detail}");
    }

    #[test]
    fn path_measurements_convert() {
        let p = msocket::Path {
            local: "127.0.0.2:1".parse().unwrap(),
            remote: "127.0.0.1:2".parse().unwrap(),
            relayed: false,
            standby: true,
            state: msocket::PathState::Standby,
            srtt: Some(Duration::from_micros(1234)),
            delivery_rate: None,
            in_flight: 5,
            bytes_delivered: 6,
            bytes_sent: 7,
            bytes_received: 8,
            energy_joules: Some(0.25),
            interface: Some(CoreKind::Cellular),
        };
        let info = PathInfo::from(p.clone());
        assert_eq!(info.srtt_us, Some(1234));
        assert_eq!(info.state, PathState::Standby);
        assert_eq!((info.in_flight, info.bytes_delivered, info.bytes_sent, info.bytes_received), (5, 6, 7, 8));
        assert_eq!(info.local, "127.0.0.2:1");
        assert_eq!(info.interface_kind, Some(InterfaceKind::Cellular));
        assert_eq!(PathInfo::from(msocket::Path { interface: None, ..p }).interface_kind, None);
    }

    #[test]
    fn interface_kinds_map_to_the_udls() {
        // The UDL's kinds round-trip; the core's loopback is shown as Other.
        for k in [InterfaceKind::Wifi, InterfaceKind::Cellular, InterfaceKind::Ethernet, InterfaceKind::Other] {
            assert_eq!(InterfaceKind::from(CoreKind::from(k)), k);
        }
        assert_eq!(InterfaceKind::from(CoreKind::Loopback), InterfaceKind::Other);
    }
}
