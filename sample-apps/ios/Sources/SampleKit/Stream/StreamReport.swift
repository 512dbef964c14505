// What the stream shows once a second, and what it sums up at the end. `describe()` is
// the console's `key=value` wording (StreamReport.kt); the app shows the same values.

import MSocket

/// One second of a stream, seen from one end.
public struct StreamReport: Equatable, Sendable {
    public let elapsedMs: Int64
    /// Media bytes delivered in the last second, in kbit/s (sender: acknowledged; player: received).
    public let rateKbps: Int64
    /// Media held by the player (nil at the sender).
    public let bufferMs: Int64?
    /// The player's state (nil at the sender).
    public let playing: PlayoutBuffer.State?
    public let stalls: Int
    public let longestStallMs: Int64
    /// Where the last second's bytes went.
    public let paths: [Share]
    public let policy: PathPolicy?
    public let energyJoules: Double?
    public let chunks: Int
    public let skipped: Int

    public init(elapsedMs: Int64, rateKbps: Int64, bufferMs: Int64?, playing: PlayoutBuffer.State?, stalls: Int,
                longestStallMs: Int64, paths: [Share], policy: PathPolicy?, energyJoules: Double?, chunks: Int, skipped: Int) {
        self.elapsedMs = elapsedMs
        self.rateKbps = rateKbps
        self.bufferMs = bufferMs
        self.playing = playing
        self.stalls = stalls
        self.longestStallMs = longestStallMs
        self.paths = paths
        self.policy = policy
        self.energyJoules = energyJoules
        self.chunks = chunks
        self.skipped = skipped
    }

    public func describe() -> String {
        var s = "t=\(fixed(Double(elapsedMs) / 1000, 1))s rate=\(rateKbps)kbit/s"
        if let bufferMs { s += " buffer=\(fixed(Double(bufferMs) / 1000, 1))s" }
        if let playing { s += " state=\(playing.rawValue) stalls=\(stalls) longest_stall=\(longestStallMs)ms" }
        s += " paths=\(describeShares(paths))"
        s += " policy=\(policy.map(StreamFrame.policyName) ?? "?")"
        s += " energy=\(energyJoules.map { fixed($0, 2) + "J" } ?? "?")"
        s += " chunks=\(chunks) skipped=\(skipped)"
        return s
    }
}

/// How a whole stream went, seen from one end.
public struct StreamSummary: Equatable, Sendable {
    public let role: String
    public let chunks: Int
    /// Chunks the sender could not send in time (its queue was full) or the player never got.
    public let skipped: Int
    /// Chunks whose bytes were not what was sent (always 0 unless something is broken).
    public let corrupt: Int
    public let stalls: [Int64]
    public let bufferMs: Int64?
    public let startupMs: Int64?
    public let bytes: Int64
    public let paths: [Share]
    public let policy: PathPolicy?
    public let energyJoules: Double?

    public init(role: String, chunks: Int, skipped: Int, corrupt: Int, stalls: [Int64], bufferMs: Int64?, startupMs: Int64?,
                bytes: Int64, paths: [Share], policy: PathPolicy?, energyJoules: Double?) {
        self.role = role
        self.chunks = chunks
        self.skipped = skipped
        self.corrupt = corrupt
        self.stalls = stalls
        self.bufferMs = bufferMs
        self.startupMs = startupMs
        self.bytes = bytes
        self.paths = paths
        self.policy = policy
        self.energyJoules = energyJoules
    }

    public func describe() -> String {
        var s = "summary role=\(role) chunks=\(chunks) skipped=\(skipped) corrupt=\(corrupt)"
        if let bufferMs {
            s += " stalls=\(stalls.count) longest_stall_ms=\(stalls.max() ?? 0) total_stall_ms=\(stalls.reduce(0, +)) buffer_ms=\(bufferMs)"
        }
        if let startupMs { s += " startup_ms=\(startupMs)" }
        s += " bytes=\(bytes)"
        s += " path_bytes=\(paths.isEmpty ? "none" : paths.map { "\($0.path):\($0.bytes)" }.joined(separator: ","))"
        s += " policy=\(policy.map(StreamFrame.policyName) ?? "?")"
        s += " energy_j=\(energyJoules.map { fixed($0, 3) } ?? "?")"
        return s
    }
}
