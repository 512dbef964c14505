// How the samples name a path to a user: the kind of link it leaves from and whether it
// goes through a relay, e.g. "wifi direct" or "cell relayed".

import MSocket

/// "wifi", "cell", "wired", or "other" for `kind` (nil: not known).
public func linkName(_ kind: InterfaceKind?) -> String {
    guard let kind else { return "other" }
    switch kind {
    case .wifi: return "wifi"
    case .cellular: return "cell"
    case .ethernet: return "wired"
    case .other: return "other"
    }
}

/// "wifi direct", "cell relayed", ... for a path of `kind`.
public func pathLabel(kind: InterfaceKind?, relayed: Bool) -> String {
    "\(linkName(kind)) \(relayed ? "relayed" : "direct")"
}

extension FlowPath {
    /// "wifi direct", "cell relayed", ...
    public var label: String { pathLabel(kind: interfaceKind, relayed: relayed) }
}
