/*
 * A player's buffer, without a clock of its own (times are passed in, in milliseconds),
 * so the same logic runs live and under test. Playback starts once [targetMs] of media is
 * held; media then drains in real time; when it runs dry the player stalls, and plays
 * again once the buffer is full again (the usual rule of video players: rebuffer to the
 * target, then go). A stall's length is from the moment the buffer ran dry to the moment
 * it was full again, worked out exactly from the times given, not sampled.
 */
package dev.msocket.samples.stream

class PlayoutBuffer(val targetMs: Long) {
    enum class State { STARTING, PLAYING, STALLED, DONE }

    init {
        require(targetMs > 0) { "the buffer must hold some media" }
    }

    var state = State.STARTING
        private set
    private var heldMs = 0L
    private var at = Long.MIN_VALUE
    private var firstAt = Long.MIN_VALUE
    private var stallStart = 0L
    private var ended = false
    private val finished = ArrayList<Long>()

    /** Time from the first chunk to the start of playback; null before it starts. */
    var startupMs: Long? = null
        private set

    /** Media played so far. */
    var playedMs = 0L
        private set

    /** Finished stalls, in order. */
    val stalls: List<Long> get() = finished.toList()

    /** Media held at [now]. */
    fun bufferedMs(now: Long): Long {
        advance(now)
        return heldMs
    }

    /** The stall going on at [now], 0 if none. */
    fun currentStallMs(now: Long): Long {
        advance(now)
        return if (state == State.STALLED) now - stallStart else 0
    }

    /** The longest stall, the current one included. */
    fun longestStallMs(now: Long): Long = maxOf(finished.maxOrNull() ?: 0, currentStallMs(now))

    /** A chunk of [durationMs] of media arrived at [now]. */
    fun add(durationMs: Long, now: Long) {
        require(durationMs > 0) { "a chunk holds some media" }
        if (firstAt == Long.MIN_VALUE) firstAt = now
        advance(now)
        heldMs += durationMs
        if (heldMs >= targetMs) play(now)
    }

    /** The stream ended at [now]: whatever is held plays out, nothing more is waited for. */
    fun end(now: Long) {
        advance(now)
        ended = true
        if (heldMs > 0) play(now) else if (state != State.DONE) finish(now)
    }

    private fun play(now: Long) {
        when (state) {
            State.STARTING -> startupMs = now - firstAt
            State.STALLED -> finished += now - stallStart
            State.PLAYING, State.DONE -> return
        }
        state = State.PLAYING
    }

    private fun finish(now: Long) {
        if (state == State.STALLED) finished += now - stallStart
        state = State.DONE
    }

    /** Drains media from the last time given to [now]. */
    private fun advance(now: Long) {
        if (at != Long.MIN_VALUE && now < at) return // a caller's clock went back: ignore
        if (state == State.PLAYING && at != Long.MIN_VALUE) {
            val elapsed = now - at
            if (elapsed >= heldMs) {
                val dry = at + heldMs
                playedMs += heldMs
                heldMs = 0
                if (ended) {
                    state = State.DONE
                } else {
                    state = State.STALLED
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
