// The receiving end of a stream (StreamPlayer.kt's rules): every chunk is checked and
// goes into a `PlayoutBuffer`; once a second a report says what the user would see
// (buffer level, stalls) and what the network does (rate, paths, policy, energy).

import Foundation
import MSocket

public actor StreamPlayer {
    let flow: PeerFlow
    public nonisolated let bufferMs: Int64
    private let onReport: @Sendable (StreamReport) -> Void
    private let onNote: @Sendable (String) -> Void
    private var player: PlayoutBuffer
    private var uses = PathUse(sending: false)
    private let clock = Stopwatch()
    private var policy: PathPolicy?
    private var chunks = 0
    private var lost = 0
    private var corrupt = 0
    private var bytes: Int64 = 0

    public init(flow: PeerFlow, bufferMs: Int64, onReport: @escaping @Sendable (StreamReport) -> Void,
                onNote: @escaping @Sendable (String) -> Void) throws {
        self.flow = flow
        self.bufferMs = bufferMs
        self.onReport = onReport
        self.onNote = onNote
        player = try PlayoutBuffer(targetMs: bufferMs)
    }

    /// Asks the sender (who decides the flow's policy) to switch to `wanted`.
    public func requestPolicy(_ wanted: PathPolicy) async throws {
        try await flow.send(Data("POLICY \(StreamFrame.policyName(wanted))\n".utf8), timeout: 10)
    }

    /// Plays the stream to its end and sums up. Cancelling the task stops it (`.Cancelled`).
    public func run() async throws -> StreamSummary {
        let flow = self.flow
        let frames = FrameReader { try await flow.receive(maxBytes: 256 * 1024, timeout: 3600) }
        let reporter = Task {
            var lastBytes: Int64 = 0
            var tick: Int64 = 1
            while !Task.isCancelled {
                try? await self.clock.sleep(untilMs: tick * 1000)
                if Task.isCancelled { return }
                lastBytes = await self.report(since: lastBytes)
                tick += 1
            }
        }
        defer { reporter.cancel() }
        var next: Int32 = 0
        var end: (chunks: Int32, skipped: Int32)?
        while end == nil {
            guard let frame = try await frames.next() else { throw FormatError("the stream ended without END") }
            switch frame {
            case let .chunk(seq, durationMs, _, payload):
                if seq < next { throw FormatError("chunk \(seq) after chunk \(next - 1)") }
                lost += Int(seq - next)
                next = seq + 1
                if !frame.intact { corrupt += 1 }
                chunks += 1
                bytes += Int64(payload.count)
                try player.add(Int64(durationMs), now: clock.elapsedMs)
            case let .policy(p):
                if let policy, policy != p { onNote("policy now \(StreamFrame.policyName(p))") }
                policy = p
            case let .end(sentChunks, skippedChunks):
                player.end(clock.elapsedMs)
                end = (sentChunks, skippedChunks)
            }
        }
        reporter.cancel()
        if let paths = try? flow.paths() { _ = uses.sample(paths) }
        return StreamSummary(role: "play", chunks: chunks, skipped: Int(end?.skipped ?? 0) + lost, corrupt: corrupt,
                             stalls: player.stalls, bufferMs: bufferMs, startupMs: player.startupMs, bytes: bytes,
                             paths: uses.totals(), policy: policy, energyJoules: (try? flow.energyJoules()) ?? nil)
    }

    /// Reports the second that ends now; returns the byte count it started from next.
    private func report(since lastBytes: Int64) -> Int64 {
        let t = clock.elapsedMs
        let shares = uses.sample((try? flow.paths()) ?? [])
        let stalls = player.stalls.count + (player.currentStallMs(t) > 0 ? 1 : 0)
        onReport(StreamReport(elapsedMs: t, rateKbps: (bytes - lastBytes) * 8 / 1000, bufferMs: player.bufferedMs(t),
                              playing: player.state, stalls: stalls, longestStallMs: player.longestStallMs(t), paths: shares,
                              policy: policy, energyJoules: (try? flow.energyJoules()) ?? nil, chunks: chunks, skipped: lost))
        return bytes
    }
}
