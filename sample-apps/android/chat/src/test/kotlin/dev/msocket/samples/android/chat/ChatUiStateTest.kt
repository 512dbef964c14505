package dev.msocket.samples.android.chat

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test
import dev.msocket.samples.chat.ChatLine
import dev.msocket.samples.chat.Contact
import dev.msocket.samples.chat.Message

class ChatUiStateTest {
    private fun out(seq: Long, text: String) = Message(true, seq, 1_000 * seq, text)
    private fun inc(seq: Long, text: String) = Message(false, seq, 1_000 * seq, text)
    private fun fold(vararg lines: ChatLine) = lines.fold(ChatUiState()) { s, l -> s.after(l) }
    private fun bubbles(s: ChatUiState, c: String) = s.conversation(c).filterIsInstance<ChatItem.Bubble>()
    private fun notes(s: ChatUiState, c: String) = s.conversation(c).filterIsInstance<ChatItem.Note>().map { it.text }

    @Test
    fun historyThenLiveMessagesInOrder() {
        val s = fold(
            ChatLine.Ready("alice#00112233445566778899aabbccddeeff"),
            ChatLine.Earlier("bob", out(1, "hi"), delivered = true),
            ChatLine.Earlier("bob", inc(1, "hello"), delivered = false),
            ChatLine.Earlier("bob", out(2, "still there?"), delivered = false),
            ChatLine.Sent("bob", out(3, "new")),
            ChatLine.Received("bob", inc(2, "yes")),
        )
        assertEquals("alice#00112233445566778899aabbccddeeff", s.me)
        assertEquals(listOf("hi", "hello", "still there?", "new", "yes"), bubbles(s, "bob").map { it.message.text })
        assertEquals(listOf(true, false, false, false, false), bubbles(s, "bob").map { it.delivered })
        assertTrue(s.conversation("carol").isEmpty())
    }

    @Test
    fun deliveredMarksOnlyOurMessageWithThatNumber() {
        val s = fold(
            ChatLine.Sent("bob", out(1, "a")),
            ChatLine.Sent("bob", out(2, "b")),
            ChatLine.Received("bob", inc(2, "theirs")),
            ChatLine.Sent("carol", out(2, "other contact")),
            ChatLine.Delivered("bob", 2),
        )
        assertEquals(listOf("a" to false, "b" to true, "theirs" to false), bubbles(s, "bob").map { it.message.text to it.delivered })
        assertEquals(listOf(false), bubbles(s, "carol").map { it.delivered })
    }

    @Test
    fun connectionEventsBecomeNotesWithDistinctKeys() {
        val s = fold(
            ChatLine.Online("bob", "f1", dialed = true, paths = listOf("wifi direct 10.0.0.2:4000 -> 10.0.0.3:443")),
            ChatLine.PathAdded("bob", "cell 10.1.0.2:4001 -> 10.0.0.3:443 relayed"),
            ChatLine.PathLost("bob", "wifi 10.0.0.2:4000 -> 10.0.0.3:443 direct", "interface gone"),
            ChatLine.Moved("bob", listOf("10.1.0.2:4001")),
            ChatLine.Resumed("bob", 1_500),
            ChatLine.StaysRelayed("bob", 3),
            ChatLine.Offline("bob", "the peer closed the flow"),
        )
        assertEquals(
            listOf(
                "connected via wifi direct",
                "path added: cell 10.1.0.2:4001 -> 10.0.0.3:443 relayed",
                "path lost: wifi 10.0.0.2:4000 -> 10.0.0.3:443 direct (interface gone)",
                "this phone moved to 10.1.0.2:4001",
                "resumed after 1.5 s without a path",
                "no direct path after 3 attempts: staying relayed",
                "disconnected: the peer closed the flow",
            ),
            notes(s, "bob"),
        )
        val keys = s.conversation("bob").map { it.key }
        assertEquals(keys.size, keys.toSet().size)
        assertTrue(s.online.isEmpty())
        assertEquals(setOf("bob"), fold(ChatLine.Online("bob", "f1", dialed = false, paths = emptyList())).online)
    }

    @Test
    fun pinnedContactsAreAddedSortedAndReplaceTheirNamesake() {
        val s = fold(
            ChatLine.Pinned(Contact("zoe", "aa".repeat(16))),
            ChatLine.Pinned(Contact("bob", "bb".repeat(16))),
            ChatLine.Pinned(Contact("zoe", "cc".repeat(16))),
        )
        assertEquals(listOf("bob" to "bb".repeat(16), "zoe" to "cc".repeat(16)), s.contacts.map { it.name to it.fingerprint })
    }

    @Test
    fun problemsWithoutAContactAndRefusalsAreMessages() {
        assertEquals("no longer accepting", fold(ChatLine.Problem(null, "no longer accepting")).message)
        assertEquals("refused a peer: key mismatch", fold(ChatLine.Refused("key mismatch")).message)
        val s = fold(ChatLine.Problem("bob", "cannot reach: Timeout"))
        assertNull(s.message)
        assertEquals(listOf("cannot reach: Timeout"), notes(s, "bob"))
    }

    @Test
    fun relaysAreSplitOnCommasAndSpaces() {
        assertEquals(listOf("a:1", "b:2", "c:3"), ChatSettings(relays = " a:1, b:2  c:3 ,").relayList)
        assertTrue(ChatSettings(relays = " ").relayList.isEmpty())
    }
}
