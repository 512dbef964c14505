/*
 * The stream's records. Sender to receiver, binary (media is bytes):
 *
 *   [type u8][length u32][body]          big-endian, body at most MAX_BODY bytes
 *   type 1 CHUNK   seq u32, duration-ms u16, sent-at-ms u64, payload
 *   type 2 POLICY  the path policy now in effect, in ASCII ("backup")
 *   type 3 END     chunks sent u32, chunks skipped u32 (the sender fell behind)
 *
 * Receiver to sender, one line each: `POLICY <name>` asks the sender to switch (the
 * connecting side decides a flow's policy).
 *
 * A chunk's payload is a pattern derived from its sequence number, so the receiver checks
 * every byte it plays.
 */
package dev.msocket.samples.stream

import java.nio.ByteBuffer
import dev.msocket.PathPolicy
import dev.msocket.samples.FormatException

sealed class StreamFrame {
    class Chunk(val seq: Int, val durationMs: Int, val sentAt: Long, val payload: ByteArray) : StreamFrame() {
        /** Whether [payload] is the pattern of [seq]. */
        fun intact(): Boolean = payload.indices.all { payload[it] == patternByte(seq, it) }
    }
    data class Policy(val policy: PathPolicy) : StreamFrame()
    data class End(val chunks: Int, val skipped: Int) : StreamFrame()

    fun encode(): ByteArray {
        val (type, body) = when (this) {
            is Chunk -> 1 to ByteBuffer.allocate(14 + payload.size).putInt(seq).putShort(durationMs.toShort()).putLong(sentAt).put(payload).array()
            is Policy -> 2 to policyName(policy).toByteArray(Charsets.US_ASCII)
            is End -> 3 to ByteBuffer.allocate(8).putInt(chunks).putInt(skipped).array()
        }
        return ByteBuffer.allocate(5 + body.size).put(type.toByte()).putInt(body.size).put(body).array()
    }

    companion object {
        const val MAX_BODY = 1 shl 20

        /** A chunk of [size] bytes for [seq], with its pattern. */
        fun chunk(seq: Int, durationMs: Int, sentAt: Long, size: Int) =
            Chunk(seq, durationMs, sentAt, ByteArray(size) { patternByte(seq, it) })

        private fun patternByte(seq: Int, i: Int): Byte = (seq * 31 + i * 7 + (i shr 8)).toByte()

        /** The frame of [type] with [body]; [FormatException] if it is not one. */
        fun decode(type: Int, body: ByteArray): StreamFrame {
            val b = ByteBuffer.wrap(body)
            return when (type) {
                1 -> {
                    if (body.size < 14) throw FormatException("a CHUNK of ${body.size} bytes")
                    val seq = b.int
                    val duration = b.short.toInt() and 0xffff
                    val sentAt = b.long
                    if (seq < 0 || duration == 0) throw FormatException("CHUNK $seq of $duration ms")
                    Chunk(seq, duration, sentAt, body.copyOfRange(14, body.size))
                }
                2 -> Policy(parsePolicy(body.toString(Charsets.US_ASCII)))
                3 -> {
                    if (body.size != 8) throw FormatException("an END of ${body.size} bytes")
                    End(b.int, b.int)
                }
                else -> throw FormatException("unknown record type $type")
            }
        }

        fun policyName(p: PathPolicy): String = p.name.lowercase()

        /** The policy "backup", "performance", "energy" or "redundant" names. */
        fun parsePolicy(name: String): PathPolicy =
            PathPolicy.entries.firstOrNull { policyName(it) == name.trim().lowercase() }
                ?: throw FormatException("\"${name.take(40)}\" is not a policy (${PathPolicy.entries.joinToString(", ") { policyName(it) }})")
    }
}

/**
 * Splits what [source] returns (null: end of stream) into frames, holding at most one
 * frame's bytes.
 */
class FrameReader(private val source: suspend () -> ByteArray?) {
    private var buf = ByteArray(0)
    private var ended = false

    /** The next frame; null at a clean end of stream. */
    suspend fun next(): StreamFrame? {
        while (true) {
            if (buf.size >= 5) {
                val type = buf[0].toInt() and 0xff
                val len = ByteBuffer.wrap(buf, 1, 4).int
                if (len < 0 || len > StreamFrame.MAX_BODY) throw FormatException("a record of $len bytes (at most ${StreamFrame.MAX_BODY})")
                if (buf.size >= 5 + len) {
                    val body = buf.copyOfRange(5, 5 + len)
                    buf = buf.copyOfRange(5 + len, buf.size)
                    return StreamFrame.decode(type, body)
                }
            }
            if (ended) {
                if (buf.isNotEmpty()) throw FormatException("the stream ended inside a record")
                return null
            }
            val more = source()
            if (more == null) ended = true else buf += more
        }
    }
}
