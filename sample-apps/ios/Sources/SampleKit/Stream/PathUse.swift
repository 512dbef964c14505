// Which paths carry the stream: each path's byte counter sampled at every report, the
// differences summed by kind of path ("wifi/direct", "cell/relayed"), so a report says
// where the last second's bytes went and a summary where all of them went.

import MSocket

/// Bytes a kind of path carried, and their part of the whole.
public struct Share: Equatable, Sendable {
    public let path: String
    public let bytes: Int64
    public let percent: Int

    public init(path: String, bytes: Int64, percent: Int) {
        self.path = path
        self.bytes = bytes
        self.percent = percent
    }
}

/// One path's counters at a sample: what `PathUse` needs of a `FlowPath`.
public struct PathCounter: Equatable, Sendable {
    public let local: String
    public let remote: String
    public let kind: InterfaceKind?
    public let relayed: Bool
    public let bytesSent: UInt64
    public let bytesReceived: UInt64

    public init(local: String, remote: String, kind: InterfaceKind?, relayed: Bool, bytesSent: UInt64, bytesReceived: UInt64) {
        self.local = local
        self.remote = remote
        self.kind = kind
        self.relayed = relayed
        self.bytesSent = bytesSent
        self.bytesReceived = bytesReceived
    }

    public init(_ p: FlowPath) {
        self.init(local: p.local, remote: p.remote, kind: p.interfaceKind, relayed: p.relayed,
                  bytesSent: p.bytesSent, bytesReceived: p.bytesReceived)
    }
}

/// Samples of a flow's paths; `sending` counts bytes sent, else bytes received.
public struct PathUse: Sendable {
    private let sending: Bool
    private var last: [String: Int64] = [:]
    private var total: [(String, Int64)] = []

    public init(sending: Bool) { self.sending = sending }

    /// What each kind of path carried since the previous sample.
    public mutating func sample(_ paths: [PathCounter]) -> [Share] {
        var delta: [(String, Int64)] = []
        for p in paths {
            let key = "\(p.local) \(p.remote)"
            let count = Int64(clamping: sending ? p.bytesSent : p.bytesReceived)
            let d = max(count - (last[key] ?? 0), 0)
            last[key] = count
            let kind = pathLabel(kind: p.kind, relayed: p.relayed).replacingOccurrences(of: " ", with: "/")
            Self.merge(&delta, kind, d)
            Self.merge(&total, kind, d)
        }
        return Self.shares(delta)
    }

    /// `sample` of a flow's live paths.
    public mutating func sample(_ paths: [FlowPath]) -> [Share] { sample(paths.map(PathCounter.init)) }

    /// What each kind of path carried over every sample.
    public func totals() -> [Share] { Self.shares(total) }

    /// Adds `d` to `key`'s entry, keeping first-seen order (a LinkedHashMap's).
    private static func merge(_ entries: inout [(String, Int64)], _ key: String, _ d: Int64) {
        if let i = entries.firstIndex(where: { $0.0 == key }) {
            entries[i].1 += d
        } else {
            entries.append((key, d))
        }
    }

    private static func shares(_ bytes: [(String, Int64)]) -> [Share] {
        let sum = bytes.reduce(0) { $0 + $1.1 }
        return bytes.map { Share(path: $0.0, bytes: $0.1, percent: sum == 0 ? 0 : Int($0.1 * 100 / sum)) }
    }
}

/// `wifi/direct:97%,cell/direct:3%` ("none" without paths).
public func describeShares(_ shares: [Share]) -> String {
    shares.isEmpty ? "none" : shares.map { "\($0.path):\($0.percent)%" }.joined(separator: ",")
}
