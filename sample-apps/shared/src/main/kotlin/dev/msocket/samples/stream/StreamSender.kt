/*
 * The sending end of a stream: a live source that makes one chunk every [chunkMs] of
 * media at [bitrateKbps], whether or not the network keeps up. Chunks wait in a queue of
 * [queueMs] of media while the flow cannot take them (an outage, a slow path); past that
 * the source skips chunks and says so, as a live camera would. The sender dialed the
 * flow, so it decides the flow's path policy: the user switches it here, or the player
 * asks for a switch and the sender applies it.
 */
package dev.msocket.samples.stream

import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.delay
import kotlinx.coroutines.launch
import kotlinx.coroutines.sync.Mutex
import kotlinx.coroutines.sync.withLock
import dev.msocket.PathPolicy
import dev.msocket.PeerFlow
import dev.msocket.ffi.MsocketException
import dev.msocket.samples.FormatException
import dev.msocket.samples.LineReader

class StreamSender(
    private val flow: PeerFlow,
    val bitrateKbps: Int,
    /** How long the stream lasts, in seconds of media. */
    val seconds: Int,
    private val onReport: (StreamReport) -> Unit,
    /** Things worth a line of their own ("policy now energy, asked by the player"). */
    private val onNote: (String) -> Unit,
    val chunkMs: Int = 100,
    val queueMs: Int = 10_000,
) {
    private val writing = Mutex()
    private val chunkBytes = (bitrateKbps.toLong() * chunkMs / 8).toInt()
    private val uses = PathUse(sending = true)
    @Volatile private var sent = 0
    @Volatile private var skipped = 0

    init {
        require(bitrateKbps in 8..200_000) { "bitrate $bitrateKbps kbit/s is outside 8 to 200000" }
        require(seconds in 1..86_400) { "a stream of $seconds s" }
        require(chunkMs in 10..1000 && chunkBytes in 1..StreamFrame.MAX_BODY - 14) { "chunks of $chunkMs ms at $bitrateKbps kbit/s" }
    }

    /** Switches the flow's policy now and tells the player. */
    suspend fun setPolicy(policy: PathPolicy) {
        flow.policy = policy
        write(StreamFrame.Policy(policy))
    }

    /** Streams to the end, waits until the player has every byte, and sums up. */
    suspend fun run(): StreamSummary = coroutineScope {
        val started = TimeSource.Monotonic.markNow()
        write(StreamFrame.Policy(flow.policy))
        val queue = Channel<StreamFrame.Chunk>(queueMs / chunkMs)
        val control = launch { control() }
        val writer = launch {
            for (c in queue) {
                write(c)
                sent++
            }
        }
        var lastAcked = flow.bytesAckedOrNull() ?: 0
        val reporter = launch {
            var tick = 1
            while (true) {
                delay(started.elapsedNow().let { (tick * 1000L).milliseconds - it }.coerceAtLeast(0.milliseconds))
                val acked = flow.bytesAckedOrNull() ?: lastAcked
                onReport(report(started.elapsedNow().inWholeMilliseconds, (acked - lastAcked) * 8 / 1000))
                lastAcked = acked
                tick++
            }
        }
        val total = seconds * 1000 / chunkMs
        for (seq in 0 until total) {
            val due = (seq.toLong() * chunkMs).milliseconds
            delay((due - started.elapsedNow()).coerceAtLeast(0.milliseconds))
            val chunk = StreamFrame.chunk(seq, chunkMs, System.currentTimeMillis(), chunkBytes)
            if (!queue.trySend(chunk).isSuccess) skipped++
        }
        queue.close()
        writer.join()
        write(StreamFrame.End(sent, skipped))
        flow.finish(60.seconds)
        reporter.cancel()
        control.cancel()
        uses.sampleOf(flow)
        val acked = flow.bytesAckedOrNull() ?: lastAcked
        StreamSummary("send", sent, skipped, 0, emptyList(), null, null, acked, uses.totals(), flow.policyOrNull(), flow.energyOrNull())
    }

    private fun report(elapsedMs: Long, rateKbps: Long): StreamReport {
        val shares = uses.sampleOf(flow)
        return StreamReport(elapsedMs, rateKbps, null, null, 0, 0, shares, flow.policyOrNull(), flow.energyOrNull(), sent, skipped)
    }

    /** The player's requests: `POLICY <name>`. */
    private suspend fun control() {
        val lines = LineReader.of(flow, 256, 3600.seconds)
        while (true) {
            val line = try {
                lines.next()
            } catch (e: MsocketException.Timeout) {
                continue
            } ?: return
            val policy = try {
                if (!line.startsWith("POLICY ")) throw FormatException("unknown request \"${line.take(40)}\"")
                StreamFrame.parsePolicy(line.removePrefix("POLICY "))
            } catch (e: FormatException) {
                onNote("ignored a request from the player: ${e.message}")
                continue
            }
            setPolicy(policy)
            onNote("policy now ${StreamFrame.policyName(policy)} (asked by the player)")
        }
    }

    private suspend fun write(frame: StreamFrame) = writing.withLock { flow.send(frame.encode(), 60.seconds) }
}
