/*
 * A conversation on disk: an append-only log, one record a line, synced before anything
 * that depends on it happens. Our own message is written before it is sent (a restart
 * resends what was never acknowledged); a peer's message is written before it is
 * acknowledged (acknowledged means it survives a crash). So a message is never lost, and
 * its sequence number keeps it from being stored twice.
 *
 *   # msocket-chat 1 <contact>
 *   out <seq> <sent-at-ms> <text>     a message of ours
 *   in <seq> <sent-at-ms> <text>      a message of the peer's
 *   delivered <seq>                   the peer stored ours up to seq
 *
 * A crash can leave a torn last line; loading drops it (whatever it held was not yet
 * acknowledged to anyone, so it comes again or is resent).
 */
package dev.msocket.samples.chat

import java.io.File
import java.io.FileOutputStream
import java.io.IOException
import java.io.RandomAccessFile
import dev.msocket.samples.Field
import dev.msocket.samples.FormatException

/** One message of a conversation, ours ([outgoing]) or the peer's. */
data class Message(val outgoing: Boolean, val seq: Long, val sentAt: Long, val text: String)

/** What became of a peer's message handed to [Conversation.receive]. */
enum class Receipt {
    /** New, and now on disk. */
    STORED,
    /** Stored before (a resend). */
    DUPLICATE,
    /** Not the next one: an earlier message is missing (it comes on the next flow). */
    OUT_OF_ORDER,
}

/** The conversation with one contact, in memory and in its log file. */
class Conversation internal constructor(val contact: String, private val file: File) {
    private val messages = ArrayList<Message>()
    private var out: FileOutputStream

    /** The highest sequence number of our messages. */
    var lastSent = 0L
        private set

    /** The highest sequence number of the peer's messages stored (all below it are too). */
    var lastReceived = 0L
        private set

    /** Our messages up to this one are on the peer's disk. */
    var delivered = 0L
        private set

    init {
        file.absoluteFile.parentFile?.mkdirs()
        if (file.exists()) load() else file.writeText("# msocket-chat 1 $contact\n")
        out = FileOutputStream(file, true)
    }

    /** Every message, in the order this side stored them. */
    @get:Synchronized
    val all: List<Message> get() = messages.toList()

    /** Our message [seq]. */
    @Synchronized
    fun own(seq: Long): Message? = messages.firstOrNull { it.outgoing && it.seq == seq }

    /** Our messages after [seq], in order. */
    @Synchronized
    fun ownAfter(seq: Long): List<Message> = messages.filter { it.outgoing && it.seq > seq }

    /** Stores a new message of ours (on disk before this returns). */
    @Synchronized
    fun add(text: String, now: Long): Message {
        require(text.length <= ChatFrame.MAX_TEXT) { "a message is at most ${ChatFrame.MAX_TEXT} characters" }
        val m = Message(true, lastSent + 1, now, text)
        append("out ${m.seq} ${m.sentAt} ${Field.encode(text)}")
        messages += m
        lastSent = m.seq
        return m
    }

    /** Stores the peer's message [seq] if it is the next one. */
    @Synchronized
    fun receive(seq: Long, sentAt: Long, text: String): Receipt {
        if (seq <= lastReceived) return Receipt.DUPLICATE
        if (seq != lastReceived + 1) return Receipt.OUT_OF_ORDER
        append("in $seq $sentAt ${Field.encode(text)}")
        messages += Message(false, seq, sentAt, text)
        lastReceived = seq
        return Receipt.STORED
    }

    /**
     * The peer acknowledged ours up to [upTo]: returns the sequence numbers newly delivered.
     * [FormatException] if it acknowledges one we never sent.
     */
    @Synchronized
    fun acknowledge(upTo: Long): LongRange {
        if (upTo > lastSent) throw FormatException("the peer acknowledged message $upTo; the last sent is $lastSent")
        if (upTo <= delivered) return LongRange.EMPTY
        append("delivered $upTo")
        val newly = delivered + 1..upTo
        delivered = upTo
        return newly
    }

    @Synchronized
    fun close() = out.close()

    private fun append(record: String) {
        out.write("$record\n".toByteArray(Charsets.UTF_8))
        out.flush()
        out.fd.sync()
    }

    private fun load() {
        if (file.length() > MAX_BYTES) throw IOException("history file $file is over $MAX_BYTES bytes")
        val bytes = file.readBytes()
        val end = bytes.lastIndexOf('\n'.code.toByte()) + 1
        if (end < bytes.size) {
            // A torn last record (a crash while writing it): drop it.
            RandomAccessFile(file, "rw").use { it.setLength(end.toLong()) }
        }
        bytes.copyOfRange(0, end).toString(Charsets.UTF_8).lines().forEachIndexed { i, line ->
            if (line.isEmpty() || line.startsWith("#")) return@forEachIndexed
            try {
                apply(line.split(' '))
            } catch (e: FormatException) {
                throw IOException("history file $file, line ${i + 1}: ${e.message}")
            }
        }
    }

    private fun apply(f: List<String>) {
        fun num(i: Int): Long = f.getOrNull(i)?.toLongOrNull() ?: throw FormatException("field ${i + 1} is not a number")
        when (f[0]) {
            "out", "in" -> {
                if (f.size != 4) throw FormatException("${f[0]} takes 3 fields")
                val m = Message(f[0] == "out", num(1), num(2), Field.decode(f[3]))
                val last = if (m.outgoing) lastSent else lastReceived
                if (m.seq != last + 1) throw FormatException("message ${m.seq} follows ${last}")
                messages += m
                if (m.outgoing) lastSent = m.seq else lastReceived = m.seq
            }
            "delivered" -> {
                if (f.size != 2) throw FormatException("delivered takes 1 field")
                val upTo = num(1)
                if (upTo > lastSent || upTo < delivered) throw FormatException("delivered $upTo out of range")
                delivered = upTo
            }
            else -> throw FormatException("unknown record \"${f[0].take(20)}\"")
        }
    }

    private companion object {
        const val MAX_BYTES = 256L shl 20
    }
}

/** Every conversation of one user, a file each under [dir]. */
class History(private val dir: File) {
    private val open = HashMap<String, Conversation>()

    /** The conversation with [contact] (created empty if new). */
    @Synchronized
    fun with(contact: String): Conversation =
        open.getOrPut(contact) { Conversation(ChatFrame.checkName(contact), File(dir, "$contact.log")) }

    /** The contacts with a conversation on disk. */
    @Synchronized
    fun contacts(): List<String> =
        (dir.listFiles { f -> f.name.endsWith(".log") }?.map { it.name.removeSuffix(".log") } ?: emptyList()).sorted()

    @Synchronized
    fun close() = open.values.forEach { it.close() }
}
