/*
 * The receiving end of a stream: every chunk is checked and goes into a [PlayoutBuffer];
 * once a second a report says what the user would see (buffer level, stalls) and what the
 * network does (rate, paths, policy, energy).
 */
package dev.msocket.samples.stream

import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.delay
import kotlinx.coroutines.launch
import dev.msocket.PathPolicy
import dev.msocket.PeerFlow
import dev.msocket.samples.FormatException

class StreamPlayer(
    private val flow: PeerFlow,
    val bufferMs: Long,
    private val onReport: (StreamReport) -> Unit,
    private val onNote: (String) -> Unit,
) {
    private val player = PlayoutBuffer(bufferMs)
    private val uses = PathUse(sending = false)
    private val clock = TimeSource.Monotonic.markNow()
    @Volatile private var policy: PathPolicy? = null
    private var chunks = 0
    private var lost = 0
    private var corrupt = 0
    private var bytes = 0L

    private fun now() = clock.elapsedNow().inWholeMilliseconds

    /** Asks the sender (who decides the flow's policy) to switch to [wanted]. */
    suspend fun requestPolicy(wanted: PathPolicy) =
        flow.send("POLICY ${StreamFrame.policyName(wanted)}\n".toByteArray(Charsets.US_ASCII), 10.seconds)

    /** Plays the stream to its end and sums up. */
    suspend fun run(): StreamSummary = coroutineScope {
        val frames = FrameReader { flow.receive(256 * 1024, 3600.seconds) }
        var lastBytes = 0L
        val reporter = launch {
            var tick = 1
            while (true) {
                delay(((tick * 1000L).milliseconds - clock.elapsedNow()).coerceAtLeast(0.milliseconds))
                val b = bytes
                onReport(report((b - lastBytes) * 8 / 1000))
                lastBytes = b
                tick++
            }
        }
        var next = 0
        var end: StreamFrame.End? = null
        while (end == null) {
            when (val f = frames.next() ?: throw FormatException("the stream ended without END")) {
                is StreamFrame.Chunk -> {
                    if (f.seq < next) throw FormatException("chunk ${f.seq} after chunk ${next - 1}")
                    lost += f.seq - next
                    next = f.seq + 1
                    if (!f.intact()) corrupt++
                    chunks++
                    bytes += f.payload.size
                    player.add(f.durationMs.toLong(), now())
                }
                is StreamFrame.Policy -> {
                    if (policy != null && policy != f.policy) onNote("policy now ${StreamFrame.policyName(f.policy)}")
                    policy = f.policy
                }
                is StreamFrame.End -> {
                    player.end(now())
                    end = f
                }
            }
        }
        reporter.cancel()
        uses.sampleOf(flow)
        StreamSummary(
            "play", chunks, end!!.skipped + lost, corrupt, player.stalls, bufferMs, player.startupMs, bytes,
            uses.totals(), policy, flow.energyOrNull(),
        )
    }

    private fun report(rateKbps: Long): StreamReport {
        val t = now()
        val shares = uses.sampleOf(flow)
        val stalls = player.stalls.size + if (player.currentStallMs(t) > 0) 1 else 0
        return StreamReport(t, rateKbps, player.bufferedMs(t), player.state, stalls, player.longestStallMs(t), shares, policy, flow.energyOrNull(), chunks, lost)
    }
}
