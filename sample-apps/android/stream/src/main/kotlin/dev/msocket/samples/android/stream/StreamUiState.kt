/*
 * What the stream screens show, and the set-up the user typed (kept as typed, so a field
 * being edited is never rewritten; [StreamSettings.check] turns it into numbers).
 */
package dev.msocket.samples.android.stream

import dev.msocket.PathPolicy
import dev.msocket.samples.fmt
import dev.msocket.samples.stream.StreamFrame
import dev.msocket.samples.stream.StreamReport
import dev.msocket.samples.stream.describe
import dev.msocket.samples.stream.StreamSummary

enum class Role { PLAY, SEND }

enum class Phase { SETUP, CONNECTING, RUNNING, DONE }

data class StreamSettings(
    val role: Role = Role.PLAY,
    /** PLAY: the name to listen on; SEND: the player's `NAME` or `NAME#FINGERPRINT`. */
    val name: String = "",
    val namesUrl: String = "",
    /** Relays (`HOST:PORT`), separated by commas or spaces. */
    val relays: String = "",
    val bitrateKbps: String = "2000",
    val seconds: String = "60",
    val bufferMs: String = "2000",
    /** The policy the sender starts with. */
    val policy: PathPolicy = PathPolicy.BACKUP,
) {
    val relayList: List<String> get() = relays.split(',', ' ', '\n').map { it.trim() }.filter { it.isNotEmpty() }

    /** The numbers, or [IllegalArgumentException] saying which field is wrong. */
    fun check(): StreamParams {
        require(name.isNotBlank()) { if (role == Role.PLAY) "Give the name to listen on" else "Give the player's name" }
        require(namesUrl.isNotBlank()) { "Give the name service's URL" }
        return StreamParams(
            bitrateKbps = number("Bitrate", bitrateKbps, 8..200_000),
            seconds = number("Length", seconds, 1..86_400),
            bufferMs = number("Buffer", bufferMs, 100..60_000).toLong(),
        )
    }

    private fun number(field: String, text: String, range: IntRange): Int {
        val n = text.trim().toIntOrNull() ?: throw IllegalArgumentException("$field: \"$text\" is not a whole number")
        require(n in range) { "$field: $n is outside ${range.first} to ${range.last}" }
        return n
    }
}

data class StreamParams(val bitrateKbps: Int, val seconds: Int, val bufferMs: Long)

data class StreamUiState(
    val phase: Phase = Phase.SETUP,
    val settings: StreamSettings = StreamSettings(),
    val setupError: String? = null,
    /** What the stream is doing, in words ("waiting for a stream as NAME#FP"). */
    val status: String = "",
    /** The latest once-a-second report; null before the first. */
    val report: StreamReport? = null,
    /** How the stream went, once it ended. */
    val summary: StreamSummary? = null,
    /** Policy switches and the like, newest last. */
    val notes: List<String> = emptyList(),
) {
    /** A stream is starting or running (its foreground service should be up). */
    val running: Boolean get() = phase == Phase.CONNECTING || phase == Phase.RUNNING

    /** The notification's title and text while the stream runs. */
    fun notification(): Pair<String, String> {
        val title = when (settings.role) {
            Role.PLAY -> "Playing as ${settings.name.trim()}"
            Role.SEND -> "Sending to ${settings.name.trim()}"
        }
        val r = report ?: return title to status
        val text = buildString {
            append(fmt("%d kbit/s", r.rateKbps))
            r.bufferMs?.let { append(fmt(", buffer %.1f s", it / 1000.0)) }
            if (r.stalls > 0) append(", ${r.stalls} stall${if (r.stalls == 1) "" else "s"}")
            append(", ${r.paths.describe()}")
            r.policy?.let { append(", ${StreamFrame.policyName(it)}") }
        }
        return title to text
    }
}
