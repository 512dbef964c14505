/*
 * A flow as the app holds it: suspend send and receive, events as a Flow that completes
 * after Closed, and java.io streams for code that wants them.
 */
package dev.msocket

import java.io.Closeable
import java.io.IOException
import java.io.InputStream
import java.io.InterruptedIOException
import java.io.OutputStream
import java.util.concurrent.atomic.AtomicBoolean
import kotlin.time.Duration
import kotlin.time.Duration.Companion.microseconds
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.runBlocking
import dev.msocket.ffi.MsocketException
import dev.msocket.ffi.Flow as FfiFlow
import dev.msocket.ffi.FlowEvent as FfiFlowEvent

/** A change in a flow's life. */
sealed class FlowEvent {
    /**
     * A path (a TCP subflow on one interface) joined the flow; [interfaceKind] is the kind of
     * interface it leaves from (null: no followed network holds [local]).
     */
    data class PathAdded(
        val local: String,
        val remote: String,
        val relayed: Boolean,
        val interfaceKind: InterfaceKind? = null,
    ) : FlowEvent()
    /**
     * A path died ([reason]; [detail] in words); its unacknowledged data goes out on another.
     * [interfaceKind] is the kind of interface it left from, as when it was added.
     */
    data class PathLost(
        val local: String,
        val remote: String,
        val reason: PathLossReason,
        val detail: String,
        val energyJoules: Double?,
        val interfaceKind: InterfaceKind? = null,
    ) : FlowEvent()
    /** Data flows again after [outage] without a usable path. */
    data class Resumed(val outage: Duration) : FlowEvent()
    /** The peer moved to [addresses]. */
    data class PeerMoved(val addresses: List<String>) : FlowEvent()
    /** This device's usable addresses are now [addresses]. */
    data class Moved(val addresses: List<String>) : FlowEvent()
    /** Hole punching found no direct path after [attempts] tries: the flow stays relayed. */
    data class StaysRelayed(val attempts: Int) : FlowEvent()
    /**
     * The flow ended; [failure] (why) and [error] (in words) are null after a clean finish
     * of both sides.
     */
    data class Closed(val failure: FlowFailure?, val error: String?, val energyJoules: Double?) : FlowEvent()
    /**
     * The app fell more than 256 events behind (nobody collected [PeerFlow.events] for a
     * while) and the [count] oldest it had not taken were dropped. [Closed] never is.
     */
    data class EventsDropped(val count: Long) : FlowEvent()

    internal companion object {
        fun from(e: FfiFlowEvent): FlowEvent = when (e) {
            is FfiFlowEvent.PathAdded -> PathAdded(e.local, e.remote, e.relayed, e.interfaceKind)
            is FfiFlowEvent.PathLost -> PathLost(e.local, e.remote, e.reason, e.detail, e.energyJoules, e.interfaceKind)
            is FfiFlowEvent.Resumed -> Resumed(e.outageMs.toLong().milliseconds)
            is FfiFlowEvent.PeerMoved -> PeerMoved(e.addresses)
            is FfiFlowEvent.Moved -> Moved(e.addresses)
            is FfiFlowEvent.StaysRelayed -> StaysRelayed(e.attempts.toInt())
            is FfiFlowEvent.Closed -> Closed(e.failure, e.error, e.energyJoules)
            is FfiFlowEvent.EventsDropped -> EventsDropped(e.count.toLong())
        }
    }
}

/** One live path of a flow and its measurements. */
data class FlowPath(
    val local: String,
    val remote: String,
    val state: PathState,
    val standby: Boolean,
    /** It runs through a relay ([remote] is the relay's address). */
    val relayed: Boolean,
    val srtt: Duration?,
    /** Bytes per second the peer acknowledged from this path, once measured. */
    val deliveryRate: Long?,
    val inFlight: Long,
    val bytesDelivered: Long,
    val bytesSent: Long,
    val bytesReceived: Long,
    /** Modelled radio energy so far (null: the interface's kind is unknown). */
    val energyJoules: Double?,
    /**
     * The kind of the local interface this path leaves from (Wi-Fi or cellular, for
     * showing which one carries the flow), as reported when the path came up; null when
     * the endpoint knows no interface with [local]'s address (no network was reported).
     * The host's own loopback interface is [InterfaceKind.OTHER].
     */
    val interfaceKind: InterfaceKind? = null,
)

/**
 * One encrypted, ordered byte stream to a named peer that survives moves of either end
 * (named apart from kotlinx.coroutines' `Flow`, which [events] is). [send] and [receive]
 * may run at the same time from different coroutines.
 */
class PeerFlow internal constructor(private val ffi: FfiFlow) : Closeable {
    val name: String = ffi.name()

    /** The flow's identifier, the same at both ends. */
    val id: String = ffi.id()

    /**
     * The fingerprint of the peer's keys, authenticated by the handshake: on an accepted
     * flow, who connected.
     */
    val peerFingerprint: String = ffi.peerFingerprint()

    private val collecting = AtomicBoolean(false)

    /**
     * The flow's events since it opened, in order; the Flow completes after [FlowEvent.Closed].
     * Events are taken as they are collected, so collect in one place at a time (a second
     * collector while one runs gets [IllegalStateException]); one that stops and starts
     * again goes on where it stopped. Uncollected, the flow keeps its last 256 events and
     * then reports what it dropped ([FlowEvent.EventsDropped]).
     */
    val events: Flow<FlowEvent> = flow {
        check(collecting.compareAndSet(false, true)) { "the events of flow $id are already being collected" }
        try {
            while (true) emit(FlowEvent.from(ffi.nextEvent() ?: break))
        } finally {
            collecting.set(false)
        }
    }

    /**
     * Sends all of [data]; returns once the flow took it (see [finish] for delivery).
     * Cancelled or timed out part-way, the flow keeps what it took (the error says how
     * much; [stats] `bytesWritten` counts it): resend only the rest, or close the flow.
     */
    suspend fun send(data: ByteArray, timeout: Duration = 30.seconds) = ffi.send(data, timeout.toMillisArg("timeout"))

    /**
     * Up to [maxBytes] bytes, or null once the peer finished and everything was read.
     * Cancelled or timed out, it took nothing: the next receive gets those bytes.
     */
    suspend fun receive(maxBytes: Int = 64 * 1024, timeout: Duration = 30.seconds): ByteArray? {
        if (maxBytes < 1) throw MsocketException.InvalidArgument("receive: maxBytes must be at least 1 (got $maxBytes)")
        val ms = timeout.toMillisArg("timeout")
        while (true) {
            if (ffi.awaitReceived(maxBytes.toUInt(), ms) == 0u) return null
            // Empty only if a concurrent receive took the bytes first.
            val chunk = ffi.takeReceived(maxBytes.toUInt())
            if (chunk.isNotEmpty()) return chunk
        }
    }

    /** Ends our stream and waits until the peer acknowledged every byte: success means delivered. */
    suspend fun finish(timeout: Duration = 30.seconds) = ffi.finish(timeout.toMillisArg("timeout"))

    /** Ends the flow at once; the peer's calls fail with [reason]. */
    fun abort(reason: String) = ffi.abort(reason)

    /** How this flow uses its paths (set it on the connecting side). */
    var policy: PathPolicy
        get() = ffi.policy()
        set(value) = ffi.setPolicy(value)

    /** The live paths and their measurements. */
    fun paths(): List<FlowPath> = ffi.paths().map {
        FlowPath(
            local = it.local,
            remote = it.remote,
            state = it.state,
            standby = it.standby,
            relayed = it.relayed,
            srtt = it.srttUs?.toLong()?.microseconds,
            deliveryRate = it.deliveryRate?.toLong(),
            inFlight = it.inFlight.toLong(),
            bytesDelivered = it.bytesDelivered.toLong(),
            bytesSent = it.bytesSent.toLong(),
            bytesReceived = it.bytesReceived.toLong(),
            energyJoules = it.energyJoules,
            interfaceKind = it.interfaceKind,
        )
    }

    /** Modelled radio energy of the flow so far, in joules (null: no interface of known kind). */
    val energyJoules: Double? get() = ffi.energyJoules()

    /** Byte counters. */
    fun stats(): FlowStats = ffi.stats()

    /**
     * The received bytes as a blocking [InputStream], for java.io code (on a thread of its
     * own, never the main thread). Each read waits at most [timeout]
     * ([java.net.SocketTimeoutException]); -1 at the end of the peer's stream; an
     * interrupted thread gets [InterruptedIOException]. Other failures are [IOException]s
     * whose cause is the [MsocketException].
     */
    fun inputStream(timeout: Duration = 30.seconds): InputStream = FlowInputStream(this, timeout)

    /**
     * A blocking [OutputStream] into the flow. `write` returns once the flow took the
     * bytes; `flush` does nothing more (the flow sends at once); `close` finishes the
     * stream and waits (at most [timeout]) until the peer acknowledged every byte.
     */
    fun outputStream(timeout: Duration = 30.seconds): OutputStream = FlowOutputStream(this, timeout)

    /**
     * Lets go of the flow: our stream ends, what still arrives is discarded, and waiting
     * and later calls fail with [MsocketException.Closed]. [events] go on until
     * [FlowEvent.Closed].
     */
    override fun close() = ffi.release()
}

/** Runs a suspend call of the flow for a java.io caller, with java.io's errors. */
private fun <T> blockingIo(what: String, call: suspend () -> T): T {
    if (Thread.interrupted()) throw InterruptedIOException("$what: the thread was interrupted")
    return try {
        runBlocking { call() }
    } catch (e: MsocketException.Timeout) {
        throw java.net.SocketTimeoutException("$what: ${e.message}").apply { initCause(e) }
    } catch (e: MsocketException) {
        throw IOException("$what: ${e.message}", e)
    } catch (e: InterruptedException) {
        throw InterruptedIOException("$what: the thread was interrupted").apply { initCause(e) }
    }
}

private class FlowInputStream(private val flow: PeerFlow, private val timeout: Duration) : InputStream() {
    private var chunk = ByteArray(0)
    private var at = 0
    private var ended = false

    override fun read(): Int {
        val one = ByteArray(1)
        return if (read(one, 0, 1) == -1) -1 else one[0].toInt() and 0xff
    }

    override fun read(b: ByteArray, off: Int, len: Int): Int {
        if (off < 0 || len < 0 || len > b.size - off) throw IndexOutOfBoundsException("off $off, len $len, size ${b.size}")
        if (len == 0) return 0
        if (at == chunk.size) {
            if (ended) return -1
            val next = blockingIo("read") { flow.receive(maxOf(len, 16 * 1024), timeout) }
            if (next == null) {
                ended = true
                return -1
            }
            chunk = next
            at = 0
        }
        val n = minOf(len, chunk.size - at)
        System.arraycopy(chunk, at, b, off, n)
        at += n
        return n
    }

    override fun available(): Int = chunk.size - at

    override fun close() = flow.close()
}

private class FlowOutputStream(private val flow: PeerFlow, private val timeout: Duration) : OutputStream() {
    private var closed = false

    override fun write(b: Int) = write(byteArrayOf(b.toByte()), 0, 1)

    override fun write(b: ByteArray, off: Int, len: Int) {
        if (off < 0 || len < 0 || len > b.size - off) throw IndexOutOfBoundsException("off $off, len $len, size ${b.size}")
        if (closed) throw IOException("write: the stream is closed")
        if (len == 0) return
        blockingIo("write") { flow.send(b.copyOfRange(off, off + len), timeout) }
    }

    override fun close() {
        if (closed) return
        closed = true
        blockingIo("close") { flow.finish(timeout) }
    }
}
