/*
 * Reading a peer's records off a flow: bytes arrive in pieces of any size, records end at
 * '\n', and a peer that never sends one must not make us buffer without end.
 */
package dev.msocket.samples

import kotlin.time.Duration
import dev.msocket.PeerFlow

/** A line longer than the reader allows, or bytes that are not UTF-8. */
class LineTooLongException(max: Int) : Exception("a line of over $max bytes")

/**
 * Splits what [source] returns into lines of at most [maxLine] bytes (without the '\n').
 * [source] returns the next bytes, or null at the end of the stream.
 */
class LineReader(private val maxLine: Int, private val source: suspend () -> ByteArray?) {
    private var pending = ByteArray(0)
    private var ended = false

    /** The next line; null at the end of the stream (a last line without '\n' is dropped). */
    suspend fun next(): String? {
        while (true) {
            val nl = pending.indexOf('\n'.code.toByte())
            if (nl >= 0) {
                if (nl > maxLine) throw LineTooLongException(maxLine)
                val line = pending.copyOfRange(0, nl)
                pending = pending.copyOfRange(nl + 1, pending.size)
                return line.toString(Charsets.UTF_8)
            }
            if (pending.size > maxLine) throw LineTooLongException(maxLine)
            if (ended) return null
            val more = source()
            if (more == null) ended = true else pending += more
        }
    }

    companion object {
        /** Lines off [flow], each receive waiting at most [timeout]. */
        fun of(flow: PeerFlow, maxLine: Int, timeout: Duration): LineReader =
            LineReader(maxLine) { flow.receive(maxLine + 1, timeout) }
    }
}
