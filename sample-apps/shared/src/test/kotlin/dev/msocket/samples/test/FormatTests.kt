/* The samples' text and binary formats: round trips, and refusals of what breaks them. */
package dev.msocket.samples.test

import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking
import dev.msocket.PathPolicy
import dev.msocket.samples.Field
import dev.msocket.samples.FormatException
import dev.msocket.samples.LineReader
import dev.msocket.samples.LineTooLongException
import dev.msocket.samples.chat.ChatFrame
import dev.msocket.samples.chat.Contact
import dev.msocket.samples.stream.FrameReader
import dev.msocket.samples.stream.StreamFrame

/** A source handing out [bytes] in pieces of [piece] bytes, then the end. */
fun pieces(bytes: ByteArray, piece: Int): suspend () -> ByteArray? {
    var at = 0
    return {
        if (at >= bytes.size) null else bytes.copyOfRange(at, minOf(at + piece, bytes.size)).also { at += it.size }
    }
}

fun formatTests(s: Suite) {
    s.test("field escaping round-trips any text and keeps it in one field") {
        for (text in listOf("", "hello", "two words", "100% #1", "tab\tnew\nline\r", "ünïcödé ✓✓ 😀", "%", "#", " ")) {
            val f = Field.encode(text)
            assertTrue(f.isNotEmpty() && f.none { it <= ' ' || it == '#' }, "\"$f\" is not one field")
            assertEquals(text, Field.decode(f))
        }
        assertEquals("a%20b%25c%23", Field.encode("a b%c#"))
    }

    s.test("field decoding refuses what encoding never writes") {
        for (bad in listOf("%4", "%zz", "a b", "x%", "%%")) assertFailsWith<FormatException>(bad) { Field.decode(bad) }
    }

    s.test("chat records round-trip and malformed ones are refused") {
        val frames = listOf(ChatFrame.Hello("alice.chat", 0), ChatFrame.Msg(7, 1_733_000_000_000, "hi there 100%"), ChatFrame.Ack(41))
        for (f in frames) assertEquals(f, ChatFrame.decode(f.encode().removeSuffix("\n")))
        val bad = listOf(
            "", "HELLO 2 alice 0", "HELLO 1 al ice 0", "HELLO 1 .. 0", "HELLO 1 alice -1", "MSG 0 1 x", "MSG 1 1", "MSG 1 1 a b",
            "MSG 1 x y", "ACK", "ACK -3", "NOPE 1", "MSG 1 1 ${"a".repeat(ChatFrame.MAX_TEXT + 1)}",
        )
        for (line in bad) assertFailsWith<FormatException>(line.take(30)) { ChatFrame.decode(line) }
    }

    s.test("contacts parse as NAME#FINGERPRINT only") {
        val fp = "0123456789abcdef0123456789ABCDEF"
        assertEquals(Contact("bob.chat", fp.lowercase()), Contact.parse("bob.chat#$fp"))
        for (bad in listOf("bob", "bob#", "#$fp", "bob#xyz", "bob#$fp#x", "bo b#$fp", "bob#${fp.take(31)}")) {
            assertFailsWith<FormatException>(bad) { Contact.parse(bad) }
        }
    }

    s.test("lines are split whatever the pieces, and a line without end is bounded") {
        runBlocking {
            val text = "one\ntwo\n\nthree\ntorn"
            for (piece in listOf(1, 2, 5, 100)) {
                val r = LineReader(16, pieces(text.toByteArray(), piece))
                assertEquals(listOf("one", "two", "", "three"), generateSequence { runBlocking { r.next() } }.toList())
            }
            val long = LineReader(16, pieces(ByteArray(1000) { 'a'.code.toByte() }, 7))
            assertFailsWith<LineTooLongException> { long.next() }
            val longLine = LineReader(16, pieces("${"b".repeat(17)}\n".toByteArray(), 64))
            assertFailsWith<LineTooLongException> { longLine.next() }
        }
    }

    s.test("stream records round-trip through any split, chunks carry a checked pattern") {
        runBlocking {
            val chunk = StreamFrame.chunk(9, 100, 1234, 3000)
            val all = chunk.encode() + StreamFrame.Policy(PathPolicy.ENERGY).encode() + StreamFrame.End(10, 2).encode()
            for (piece in listOf(1, 3, 1000, 100_000)) {
                val r = FrameReader(pieces(all, piece))
                val c = r.next() as StreamFrame.Chunk
                assertEquals(9, c.seq)
                assertEquals(100, c.durationMs)
                assertEquals(1234, c.sentAt)
                assertTrue(c.intact())
                assertContentEquals(chunk.payload, c.payload)
                assertEquals(StreamFrame.Policy(PathPolicy.ENERGY), r.next())
                assertEquals(StreamFrame.End(10, 2), r.next())
                assertNull(r.next())
            }
            val damaged = chunk.encode().also { it[100] = (it[100] + 1).toByte() }
            assertTrue(!(FrameReader(pieces(damaged, 50)).next() as StreamFrame.Chunk).intact())
        }
    }

    s.test("stream records that break the format are refused, an oversized one before it is read") {
        runBlocking {
            val huge = byteArrayOf(1, 0x7f, 0, 0, 0)
            assertFailsWith<FormatException> { FrameReader(pieces(huge, 5)).next() }
            val truncated = StreamFrame.End(1, 0).encode().copyOf(7)
            assertFailsWith<FormatException> { FrameReader(pieces(truncated, 3)).next() }
            for (body in listOf(byteArrayOf(9, 0, 0, 0, 1, 0), byteArrayOf(2, 0, 0, 0, 4, 'f'.code.toByte(), 'a'.code.toByte(), 's'.code.toByte(), 't'.code.toByte()), byteArrayOf(3, 0, 0, 0, 1, 0))) {
                assertFailsWith<FormatException> { FrameReader(pieces(body, 64)).next() }
            }
            assertFailsWith<FormatException> { StreamFrame.parsePolicy("fastest") }
            assertEquals(PathPolicy.REDUNDANT, StreamFrame.parsePolicy(" Redundant "))
        }
    }
}
