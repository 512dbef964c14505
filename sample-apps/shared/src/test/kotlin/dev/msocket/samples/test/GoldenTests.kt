/*
 * The golden vectors in sample-apps/testdata (their format: its README), which the Swift
 * version's tests read too: what the Kotlin code writes and reads is what they say, byte
 * for byte, so a Swift chat and a Kotlin chat understand each other.
 */
package dev.msocket.samples.test

import java.io.File
import java.io.IOException
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlinx.coroutines.runBlocking
import dev.msocket.samples.Field
import dev.msocket.samples.FormatException
import dev.msocket.samples.chat.ChatFrame
import dev.msocket.samples.chat.Contact
import dev.msocket.samples.chat.Conversation
import dev.msocket.samples.chat.History
import dev.msocket.samples.chat.Receipt
import dev.msocket.samples.fmt
import dev.msocket.samples.stream.FrameReader
import dev.msocket.samples.stream.PlayoutBuffer
import dev.msocket.samples.stream.StreamFrame

private val testdata = File(System.getProperty("samples.testdata") ?: "sample-apps/testdata")

/** The rows of a vector file: its non-comment lines split at TABs (or [sep]). */
private fun rows(name: String, sep: String = "\t"): List<List<String>> =
    File(testdata, name).readLines().filter { it.isNotEmpty() && !it.startsWith("#") }.map { it.split(sep) }

private fun unhex(h: String): ByteArray =
    if (h == "-") ByteArray(0) else ByteArray(h.length / 2) { h.substring(2 * it, 2 * it + 2).toInt(16).toByte() }

private fun text(h: String) = unhex(h).toString(Charsets.UTF_8)
private fun hex(b: ByteArray) = if (b.isEmpty()) "-" else b.joinToString("") { "%02x".format(it) }

private fun chatValue(f: ChatFrame): String = when (f) {
    is ChatFrame.Hello -> "HELLO ${f.name} ${f.received}"
    is ChatFrame.Msg -> "MSG ${f.seq} ${f.sentAt} ${hex(f.text.toByteArray())}"
    is ChatFrame.Ack -> "ACK ${f.seq}"
}

private fun streamValue(f: StreamFrame): String = when (f) {
    is StreamFrame.Chunk -> "CHUNK ${f.seq} ${f.durationMs} ${f.sentAt} ${f.payload.size} ${if (f.intact()) "intact" else "corrupt"}"
    is StreamFrame.Policy -> "POLICY ${StreamFrame.policyName(f.policy)}"
    is StreamFrame.End -> "END ${f.chunks} ${f.skipped}"
}

private fun frames(bytes: ByteArray): List<StreamFrame> = runBlocking {
    val r = FrameReader(pieces(bytes, 7))
    generateSequence { runBlocking { r.next() } }.toList()
}

/** A conversation with `alice` loaded from [bytes], and the file. */
private fun load(bytes: ByteArray): Pair<Conversation, File> {
    val dir = tempDir()
    val file = File(dir, "alice.log")
    file.writeBytes(bytes)
    return History(dir).with("alice") to file
}

fun goldenTests(s: Suite) {
    s.test("golden: field escaping") {
        for (r in rows("field-escape.txt")) when (r[0]) {
            "ok" -> {
                assertEquals(r[2], Field.encode(text(r[1])), r.last())
                assertEquals(text(r[1]), Field.decode(r[2]), r.last())
            }
            "decode" -> assertEquals(text(r[2]), Field.decode(text(r[1])), r.last())
            "rejects" -> assertFailsWith<FormatException>(r.last()) { Field.decode(text(r[1])) }
            else -> error("unknown row ${r[0]}")
        }
    }

    s.test("golden: chat records") {
        for (r in rows("chat-frames.txt")) when (r[0]) {
            "frame" -> {
                val f = ChatFrame.decode(r[1])
                assertEquals(r[2], chatValue(f), r.last())
                assertEquals(r[1] + "\n", f.encode(), r.last())
            }
            "decodes" -> assertEquals(r[2], chatValue(ChatFrame.decode(r[1])), r.last())
            "rejects" -> assertFailsWith<FormatException>(r.last()) { ChatFrame.decode(r[1]) }
            else -> error("unknown row ${r[0]}")
        }
    }

    s.test("golden: contacts") {
        for (r in rows("contacts.txt")) when (r[0]) {
            "ok" -> {
                val c = Contact.parse(r[1])
                assertEquals(Contact(r[2], r[3]), c, r.last())
                assertEquals("${r[2]}#${r[3]}", c.toString())
            }
            "rejects" -> assertFailsWith<FormatException>(r.last()) { Contact.parse(r[1]) }
            else -> error("unknown row ${r[0]}")
        }
    }

    s.test("golden: stream records") {
        for (r in rows("stream-frames.txt")) when (r[0]) {
            "frame", "decodes" -> {
                val got = frames(unhex(r[1]))
                assertEquals(listOf(r[2]), got.map(::streamValue), r.last())
                if (r[0] == "frame") assertContentEquals(unhex(r[1]), got.single().encode(), r.last())
            }
            "rejects" -> assertFailsWith<FormatException>(r.last()) { frames(unhex(r[1])) }
            else -> error("unknown row ${r[0]}")
        }
    }

    s.test("golden: history files loaded, torn and refused") {
        val (torn, tornFile) = load(File(testdata, "history-torn.log").readBytes())
        val expect = File(testdata, "history-torn.expect").readLines().filter { it.isNotBlank() }
        val got = listOf("length ${tornFile.length()}", "lastSent ${torn.lastSent}", "lastReceived ${torn.lastReceived}", "delivered ${torn.delivered}") +
            torn.all.map { "message ${if (it.outgoing) "out" else "in"} ${it.seq} ${it.sentAt} ${hex(it.text.toByteArray())}" }
        assertEquals(expect, got)
        for (r in rows("history-cases.txt")) when (r[0]) {
            "loads" -> {
                val (c, file) = load(unhex(r[1]))
                assertEquals(r[2], "${c.lastSent} ${c.lastReceived} ${c.delivered} ${c.all.size} ${file.length()}", r.last())
            }
            "rejects" -> assertFailsWith<IOException>(r.last()) { load(unhex(r[1])) }
            else -> error("unknown row ${r[0]}")
        }
    }

    s.test("golden: the bytes a conversation writes") {
        val dir = tempDir()
        val c = History(dir).with("bob")
        for (op in rows("history-written.ops", " ")) when (op[0]) {
            "add" -> assertEquals(op[3].toLong(), c.add(text(op[1]), op[2].toLong()).seq)
            "receive" -> assertEquals(Receipt.valueOf(op[4]), c.receive(op[1].toLong(), op[2].toLong(), text(op[3])))
            "ack" -> when (op[2]) {
                "error" -> assertFailsWith<FormatException> { c.acknowledge(op[1].toLong()) }
                "-" -> assertEquals(true, c.acknowledge(op[1].toLong()).isEmpty())
                else -> assertEquals(op[2], c.acknowledge(op[1].toLong()).let { "${it.first}-${it.last}" })
            }
            else -> error("unknown op ${op[0]}")
        }
        c.close()
        assertContentEquals(File(testdata, "history-written.log").readBytes(), File(dir, "bob.log").readBytes())
    }

    s.test("golden: playout buffer scenarios") {
        var p: PlayoutBuffer? = null
        var scenario = ""
        for (r in rows("playout.txt", " ")) when (r[0]) {
            "scenario" -> {
                scenario = r[1]
                p = PlayoutBuffer(r[2].toLong())
            }
            "add" -> p!!.add(r[1].toLong(), r[2].toLong())
            "end" -> p!!.end(r[1].toLong())
            "expect" -> {
                val b = p!!
                val now = r[1].toLong()
                val buffered = b.bufferedMs(now)
                val stall = b.currentStallMs(now)
                val longest = b.longestStallMs(now)
                val got = "expect $now state=${b.state.name.lowercase()} buffered=$buffered stall=$stall longest=$longest " +
                    "played=${b.playedMs} startup=${b.startupMs ?: "-"} stalls=${b.stalls.joinToString(",").ifEmpty { "-" }}"
                assertEquals(r.joinToString(" "), got, scenario)
            }
            else -> error("unknown row ${r[0]}")
        }
    }

    s.test("golden: numbers in reports") {
        for (r in rows("number-format.txt")) assertEquals(r[2], fmt("%.${r[1]}f", r[0].toDouble()), r.joinToString(" "))
    }
}
