/* The history and contacts files: what is stored survives a reload, what breaks them is refused. */
package dev.msocket.samples.test

import java.io.File
import java.io.IOException
import java.nio.file.Files
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertTrue
import dev.msocket.samples.FormatException
import dev.msocket.samples.chat.Contact
import dev.msocket.samples.chat.ContactBook
import dev.msocket.samples.chat.History
import dev.msocket.samples.chat.KeyMismatchException
import dev.msocket.samples.chat.Receipt

fun tempDir(): File = Files.createTempDirectory("msocket-samples-").toFile().also { it.deleteOnExit() }

fun historyTests(s: Suite) {
    s.test("a conversation stores ours and theirs once each, in order, and reloads the same") {
        val dir = tempDir()
        val h = History(dir)
        val c = h.with("bob.chat")
        assertEquals(1, c.add("hello", 10).seq)
        assertEquals(2, c.add("two words\nand a line", 11).seq)
        assertEquals(Receipt.STORED, c.receive(1, 20, "hi"))
        assertEquals(Receipt.DUPLICATE, c.receive(1, 20, "hi"))
        assertEquals(Receipt.OUT_OF_ORDER, c.receive(3, 22, "three"))
        assertEquals(Receipt.STORED, c.receive(2, 21, "two"))
        assertEquals(1L..1L, c.acknowledge(1))
        assertTrue(c.acknowledge(1).isEmpty())
        assertFailsWith<FormatException> { c.acknowledge(3) }
        val before = c.all
        h.close()
        val again = History(dir).with("bob.chat")
        assertEquals(before, again.all)
        assertEquals(2, again.lastSent)
        assertEquals(2, again.lastReceived)
        assertEquals(1, again.delivered)
        assertEquals(listOf(2L), again.ownAfter(1).map { it.seq })
        assertEquals(listOf("bob.chat"), History(dir).contacts())
    }

    s.test("a torn last record (a crash mid-write) is dropped and the file stays usable") {
        val dir = tempDir()
        History(dir).with("carol").apply {
            add("kept", 1)
            close()
        }
        val file = File(dir, "carol.log")
        file.appendText("out 2 5 half-writ")
        val c = History(dir).with("carol")
        assertEquals(1, c.lastSent)
        assertEquals(2, c.add("next", 6).seq)
        c.close()
        assertEquals(listOf("kept", "next"), History(dir).with("carol").all.map { it.text })
    }

    s.test("a history file that lies is refused with its line, not half-loaded") {
        for (bad in listOf("out 2 1 skipped-one", "in 1 x y", "delivered 5", "what 1", "out 1 1 bad%zz")) {
            val dir = tempDir()
            File(dir, "dave.log").writeText("# msocket-chat 1 dave\n$bad\n")
            val e = assertFailsWith<IOException>(bad) { History(dir).with("dave") }
            assertTrue(e.message!!.contains("line 2"), e.message)
        }
    }

    s.test("contacts pin a name to a key: the same key again is fine, another is refused unless typed") {
        val dir = tempDir()
        val file = File(dir, "contacts")
        val book = ContactBook(file)
        val bob = Contact("bob", "0".repeat(32))
        assertTrue(book.pin(bob))
        assertFalse(book.pin(bob))
        val other = Contact("bob", "1".repeat(32))
        assertFailsWith<KeyMismatchException> { book.pin(other) }
        assertEquals(bob, ContactBook(file).get("bob"))
        assertTrue(book.pin(other, replace = true))
        assertEquals(other, ContactBook(file).get("bob"))
        file.appendText("mallory not-a-fingerprint\n")
        assertFailsWith<IOException> { ContactBook(file) }
    }
}
