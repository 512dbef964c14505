/*
 * What the stream shows once a second, and what it sums up at the end. The console prints
 * them as `key=value` words (stable, for scripts); the phone apps show the same values.
 */
package dev.msocket.samples.stream

import dev.msocket.samples.fmt
import dev.msocket.PathPolicy

/** One second of a stream, seen from one end. */
data class StreamReport(
    val elapsedMs: Long,
    /** Media bytes delivered in the last second, in kbit/s (sender: acknowledged; player: received). */
    val rateKbps: Long,
    /** Media held by the player (null at the sender). */
    val bufferMs: Long?,
    val playing: PlayoutBuffer.State?,
    val stalls: Int,
    val longestStallMs: Long,
    /** Where the last second's bytes went. */
    val paths: List<Share>,
    val policy: PathPolicy?,
    val energyJoules: Double?,
    val chunks: Int,
    val skipped: Int,
) {
    fun describe(): String = buildString {
        append(fmt("t=%.1fs rate=%dkbit/s", elapsedMs / 1000.0, rateKbps))
        if (bufferMs != null) append(fmt(" buffer=%.1fs", bufferMs / 1000.0))
        if (playing != null) append(" state=${playing.name.lowercase()} stalls=$stalls longest_stall=${longestStallMs}ms")
        append(" paths=${paths.describe()}")
        append(" policy=${policy?.let(StreamFrame::policyName) ?: "?"}")
        append(" energy=${energyJoules?.let { fmt("%.2fJ", it) } ?: "?"}")
        append(" chunks=$chunks skipped=$skipped")
    }
}

/** How a whole stream went, seen from one end. */
data class StreamSummary(
    val role: String,
    val chunks: Int,
    /** Chunks the sender could not send in time (its queue was full) or the player never got. */
    val skipped: Int,
    /** Chunks whose bytes were not what was sent (always 0 unless something is broken). */
    val corrupt: Int,
    val stalls: List<Long>,
    val bufferMs: Long?,
    val startupMs: Long?,
    val bytes: Long,
    val paths: List<Share>,
    val policy: PathPolicy?,
    val energyJoules: Double?,
) {
    fun describe(): String = buildString {
        append("summary role=$role chunks=$chunks skipped=$skipped corrupt=$corrupt")
        bufferMs?.let { append(" stalls=${stalls.size} longest_stall_ms=${stalls.maxOrNull() ?: 0} total_stall_ms=${stalls.sum()} buffer_ms=$it") }
        startupMs?.let { append(" startup_ms=$it") }
        append(" bytes=$bytes")
        append(" path_bytes=${if (paths.isEmpty()) "none" else paths.joinToString(",") { "${it.path}:${it.bytes}" }}")
        append(" policy=${policy?.let(StreamFrame::policyName) ?: "?"}")
        append(" energy_j=${energyJoules?.let { fmt("%.3f", it) } ?: "?"}")
    }
}
