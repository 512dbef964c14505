// A player's buffer, without a clock of its own (times are passed in, in milliseconds),
// so the same logic runs live and under test (the rules of PlayoutBuffer.kt, held to
// sample-apps/testdata/playout.txt). Playback starts once `targetMs` of media is held;
// media then drains in real time; when it runs dry the player stalls, and plays again
// once the buffer is full again (rebuffer to the target, then go). A stall's length is
// from the moment the buffer ran dry to the moment it was full again, worked out exactly
// from the times given, not sampled.

public enum PlayoutError: Error, Equatable {
    /// A buffer target or a chunk of no media.
    case empty
}

public struct PlayoutBuffer: Sendable {
    public enum State: String, Sendable {
        case starting, playing, stalled, done
    }

    public let targetMs: Int64
    public private(set) var state = State.starting
    private var heldMs: Int64 = 0
    private var at: Int64?
    private var firstAt: Int64?
    private var stallStart: Int64 = 0
    private var ended = false
    /// Finished stalls, in order.
    public private(set) var stalls: [Int64] = []
    /// Time from the first chunk to the start of playback; nil before it starts.
    public private(set) var startupMs: Int64?
    /// Media played so far.
    public private(set) var playedMs: Int64 = 0

    public init(targetMs: Int64) throws {
        guard targetMs > 0 else { throw PlayoutError.empty }
        self.targetMs = targetMs
    }

    /// Media held at `now`.
    public mutating func bufferedMs(_ now: Int64) -> Int64 {
        advance(now)
        return heldMs
    }

    /// The stall going on at `now`, 0 if none.
    public mutating func currentStallMs(_ now: Int64) -> Int64 {
        advance(now)
        return state == .stalled ? now - stallStart : 0
    }

    /// The longest stall, the current one included.
    public mutating func longestStallMs(_ now: Int64) -> Int64 {
        max(stalls.max() ?? 0, currentStallMs(now))
    }

    /// A chunk of `durationMs` of media arrived at `now`.
    public mutating func add(_ durationMs: Int64, now: Int64) throws {
        guard durationMs > 0 else { throw PlayoutError.empty }
        if firstAt == nil { firstAt = now }
        advance(now)
        heldMs += durationMs
        if heldMs >= targetMs { play(now) }
    }

    /// The stream ended at `now`: whatever is held plays out, nothing more is waited for.
    public mutating func end(_ now: Int64) {
        advance(now)
        ended = true
        if heldMs > 0 {
            play(now)
        } else if state != .done {
            finish(now)
        }
    }

    private mutating func play(_ now: Int64) {
        switch state {
        case .starting: startupMs = now - (firstAt ?? now)
        case .stalled: stalls.append(now - stallStart)
        case .playing, .done: return
        }
        state = .playing
    }

    private mutating func finish(_ now: Int64) {
        if state == .stalled { stalls.append(now - stallStart) }
        state = .done
    }

    /// Drains media from the last time given to `now`.
    private mutating func advance(_ now: Int64) {
        if let at, now < at { return } // a caller's clock went back: ignore
        if state == .playing, let at {
            let elapsed = now - at
            if elapsed >= heldMs {
                let dry = at + heldMs
                playedMs += heldMs
                heldMs = 0
                if ended {
                    state = .done
                } else {
                    state = .stalled
                    stallStart = dry
                }
            } else {
                heldMs -= elapsed
                playedMs += elapsed
            }
        }
        at = now
    }
}
