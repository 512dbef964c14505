// The sending end of a stream (StreamSender.kt's rules): a live source that makes one
// chunk every `chunkMs` of media at `bitrateKbps`, whether or not the network keeps up.
// Chunks wait in a queue of `queueMs` of media while the flow cannot take them (an
// outage, a slow path); past that the source skips chunks and says so, as a live camera
// would. The sender dialed the flow, so it decides the flow's path policy: the user
// switches it here, or the player asks for a switch and the sender applies it.

import Foundation
import MSocket

public enum StreamError: Error, Equatable, CustomStringConvertible {
    /// Stream parameters out of range.
    case invalid(String)

    public var description: String {
        switch self {
        case let .invalid(what): return what
        }
    }
}

/// Milliseconds on a monotonic clock since `start`.
struct Stopwatch: Sendable {
    let start = DispatchTime.now().uptimeNanoseconds
    var elapsedMs: Int64 { Int64((DispatchTime.now().uptimeNanoseconds - start) / 1_000_000) }

    /// Sleeps until `ms` after the start (at once if that is past).
    func sleep(untilMs ms: Int64) async throws {
        let wait = ms - elapsedMs
        if wait > 0 { try await Task.sleep(nanoseconds: UInt64(wait) * 1_000_000) }
    }
}

public actor StreamSender {
    let flow: PeerFlow
    public nonisolated let bitrateKbps: Int
    /// How long the stream lasts, in seconds of media.
    public nonisolated let seconds: Int
    public nonisolated let chunkMs: Int
    public nonisolated let queueMs: Int
    private let chunkBytes: Int
    private let onReport: @Sendable (StreamReport) -> Void
    /// Things worth a line of their own ("policy now energy (asked by the player)").
    private let onNote: @Sendable (String) -> Void
    private var uses = PathUse(sending: true)
    private var sent = 0
    private var skipped = 0
    private var produced = 0
    private var taken = 0
    private var writing = false
    private var writeWaiters: [CheckedContinuation<Void, Never>] = []

    public init(flow: PeerFlow, bitrateKbps: Int, seconds: Int, chunkMs: Int = 100, queueMs: Int = 10_000,
                onReport: @escaping @Sendable (StreamReport) -> Void, onNote: @escaping @Sendable (String) -> Void) throws {
        guard (8...200_000).contains(bitrateKbps) else { throw StreamError.invalid("bitrate \(bitrateKbps) kbit/s is outside 8 to 200000") }
        guard (1...86_400).contains(seconds) else { throw StreamError.invalid("a stream of \(seconds) s") }
        let chunkBytes = bitrateKbps * chunkMs / 8
        guard (10...1000).contains(chunkMs), (1...(StreamFrame.maxBody - 14)).contains(chunkBytes) else {
            throw StreamError.invalid("chunks of \(chunkMs) ms at \(bitrateKbps) kbit/s")
        }
        self.flow = flow
        self.bitrateKbps = bitrateKbps
        self.seconds = seconds
        self.chunkMs = chunkMs
        self.queueMs = queueMs
        self.chunkBytes = chunkBytes
        self.onReport = onReport
        self.onNote = onNote
    }

    /// Switches the flow's policy now and tells the player.
    public func setPolicy(_ policy: PathPolicy) async throws {
        try flow.setPolicy(policy)
        try await write(.policy(policy))
    }

    /// Streams to the end, waits until the player has every byte, and sums up.
    public func run() async throws -> StreamSummary {
        let clock = Stopwatch()
        try await write(.policy(try flow.policy()))
        let capacity = max(queueMs / chunkMs, 1)
        var continuation: AsyncStream<StreamFrame>.Continuation?
        let queue = AsyncStream<StreamFrame>(bufferingPolicy: .unbounded) { continuation = $0 }
        let feed = continuation!
        let control = Task { await self.control() }
        let writer = Task { () throws -> Void in
            for await chunk in queue {
                await self.took()
                try await self.write(chunk)
                await self.chunkSent()
            }
        }
        let reporter = Task {
            var lastAcked = Int64(clamping: (try? self.flow.stats().bytesAcked) ?? 0)
            var tick: Int64 = 1
            while !Task.isCancelled {
                try? await clock.sleep(untilMs: tick * 1000)
                if Task.isCancelled { return }
                let acked = Int64(clamping: (try? self.flow.stats().bytesAcked) ?? 0)
                await self.report(clock.elapsedMs, (acked - lastAcked) * 8 / 1000)
                lastAcked = acked
                tick += 1
            }
        }
        defer {
            control.cancel()
            reporter.cancel()
            writer.cancel()
        }
        let total = seconds * 1000 / chunkMs
        for seq in 0..<total {
            try await clock.sleep(untilMs: Int64(seq * chunkMs))
            // The queue holds what the writer has not taken yet (a bounded channel's room).
            if produced - taken >= capacity {
                skipped += 1
                continue
            }
            let sentAt = Int64(Date().timeIntervalSince1970 * 1000)
            produced += 1
            feed.yield(StreamFrame.makeChunk(seq: Int32(seq), durationMs: chunkMs, sentAt: sentAt, size: chunkBytes))
        }
        feed.finish()
        try await writer.value
        try await write(.end(chunks: Int32(sent), skipped: Int32(skipped)))
        try await flow.finish(timeout: 60)
        reporter.cancel()
        control.cancel()
        _ = uses.sample((try? flow.paths()) ?? [])
        return StreamSummary(role: "send", chunks: sent, skipped: skipped, corrupt: 0, stalls: [], bufferMs: nil, startupMs: nil,
                             bytes: Int64(clamping: (try? flow.stats().bytesAcked) ?? 0), paths: uses.totals(),
                             policy: try? flow.policy(), energyJoules: (try? flow.energyJoules()) ?? nil)
    }

    private func chunkSent() { sent += 1 }
    private func took() { taken += 1 }

    private func report(_ elapsedMs: Int64, _ rateKbps: Int64) {
        let shares = uses.sample((try? flow.paths()) ?? [])
        onReport(StreamReport(elapsedMs: elapsedMs, rateKbps: rateKbps, bufferMs: nil, playing: nil, stalls: 0, longestStallMs: 0,
                              paths: shares, policy: try? flow.policy(), energyJoules: (try? flow.energyJoules()) ?? nil,
                              chunks: sent, skipped: skipped))
    }

    /// The player's requests: `POLICY <name>`.
    private func control() async {
        let lines = LineReader(flow: flow, maxLine: 256, timeout: 3600)
        while !Task.isCancelled {
            let line: String?
            do {
                line = try await lines.next()
            } catch MsocketError.Timeout(message: _) {
                continue
            } catch {
                return
            }
            guard let line else { return }
            let policy: PathPolicy
            do {
                guard line.hasPrefix("POLICY ") else { throw FormatError("unknown request \"\(line.prefixString(40))\"") }
                policy = try StreamFrame.parsePolicy(String(line.dropFirst("POLICY ".count)))
            } catch {
                onNote("ignored a request from the player: \(error)")
                continue
            }
            do {
                try await setPolicy(policy)
                onNote("policy now \(StreamFrame.policyName(policy)) (asked by the player)")
            } catch {
                onNote("could not switch the policy: \(describeError(error))")
            }
        }
    }

    /// Sends one frame whole: frames from the writer, the control task and the user never
    /// interleave (an actor alone would let them, across the send's suspension).
    private func write(_ frame: StreamFrame) async throws {
        while writing { await withCheckedContinuation { writeWaiters.append($0) } }
        writing = true
        defer {
            writing = false
            if !writeWaiters.isEmpty { writeWaiters.removeFirst().resume() }
        }
        try await flow.send(frame.encode(), timeout: 60)
    }
}
