/*
 * The chat's records on a flow, one a line:
 *
 *   HELLO 1 <name> <received>     first record each way: who I am (the name I listen on)
 *                                 and the highest of your messages I have stored
 *   MSG <seq> <sent-at-ms> <text> one of my messages; seq counts from 1 per conversation
 *   ACK <seq>                     I stored all your messages up to seq (on disk)
 *
 * The flow already delivers bytes once and in order while it lives; these records exist
 * for what outlives a flow: a restart, a flow that failed after its deadline, a second
 * flow opened while the first still looked alive. Sequence numbers make a message that
 * arrives twice (resent on a new flow) recognisable, and ACK is the app's own receipt,
 * written only once the message is on the peer's disk: that is what "delivered" means.
 */
package dev.msocket.samples.chat

import dev.msocket.samples.Field
import dev.msocket.samples.FormatException

/** One record of the chat protocol. */
sealed class ChatFrame {
    data class Hello(val name: String, val received: Long) : ChatFrame()
    data class Msg(val seq: Long, val sentAt: Long, val text: String) : ChatFrame()
    data class Ack(val seq: Long) : ChatFrame()

    /** The record as one line, '\n' included. */
    fun encode(): String = when (this) {
        is Hello -> "HELLO $VERSION $name $received\n"
        is Msg -> "MSG $seq $sentAt ${Field.encode(text)}\n"
        is Ack -> "ACK $seq\n"
    }

    companion object {
        const val VERSION = 1
        /** The longest record a peer may send (a message of [MAX_TEXT] escaped, with room). */
        const val MAX_LINE = 16 * 1024
        /** The longest message, in characters. */
        const val MAX_TEXT = 2000

        /** The record [line] holds; [FormatException] saying why if it holds none. */
        fun decode(line: String): ChatFrame {
            val f = line.split(' ')
            fun num(i: Int, what: String, min: Long): Long {
                val v = f.getOrNull(i)?.toLongOrNull() ?: throw FormatException("$what is not a number in \"${line.take(80)}\"")
                if (v < min) throw FormatException("$what $v is below $min")
                return v
            }
            fun arity(n: Int) {
                if (f.size != n) throw FormatException("${f[0]} takes ${n - 1} fields, got ${f.size - 1}")
            }
            return when (f[0]) {
                "HELLO" -> {
                    arity(4)
                    if (f[1] != VERSION.toString()) throw FormatException("chat protocol version ${f[1]} is not $VERSION")
                    Hello(checkName(f[2]), num(3, "received", 0))
                }
                "MSG" -> {
                    arity(4)
                    val text = Field.decode(f[3])
                    if (text.length > MAX_TEXT) throw FormatException("a message of ${text.length} characters (at most $MAX_TEXT)")
                    Msg(num(1, "seq", 1), num(2, "sent-at", 0), text)
                }
                "ACK" -> {
                    arity(2)
                    Ack(num(1, "seq", 0))
                }
                else -> throw FormatException("unknown record \"${f[0].take(20)}\"")
            }
        }

        /** [name] if it can be a chat name: ASCII letters, digits, '-', '.', '_', 1 to 253, not all dots. */
        fun checkName(name: String): String {
            val allowed = name.all { it.code < 128 && it.isLetterOrDigit() || it in "-._" }
            if (name.isEmpty() || name.length > 253 || !allowed || name.all { it == '.' }) {
                throw FormatException("\"${name.take(80)}\" is not a name")
            }
            return name
        }
    }
}
