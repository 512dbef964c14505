/*
 * What the chat screens show, as one immutable value, and how each ChatLine of the engine
 * changes it. The reduction is plain Kotlin (no Android, no Compose), so what the user sees
 * for a sequence of lines is decided in one place.
 */
package dev.msocket.samples.android.chat

import dev.msocket.samples.chat.ChatLine
import dev.msocket.samples.chat.Contact
import dev.msocket.samples.chat.Message
import dev.msocket.samples.fmt

/** What the user typed on the set-up screen. */
data class ChatSettings(
    val me: String = "",
    val namesUrl: String = "",
    /** Relays (`HOST:PORT`), separated by commas or spaces. */
    val relays: String = "",
) {
    val relayList: List<String> get() = relays.split(',', ' ', '\n').map { it.trim() }.filter { it.isNotEmpty() }
}

enum class Phase { SETUP, STARTING, RUNNING }

/** One row of a conversation. */
sealed interface ChatItem {
    /** Stable within a conversation (a list key). */
    val key: String

    /** A message; [delivered]: the peer's app stored it (ours only). */
    data class Bubble(val message: Message, val delivered: Boolean) : ChatItem {
        override val key get() = "${if (message.outgoing) "out" else "in"}-${message.seq}"
    }

    /** What happened to the connection (a path, a move, an outage), in small grey text. */
    data class Note(val id: Long, val text: String) : ChatItem {
        override val key get() = "note-$id"
    }
}

data class ChatUiState(
    val phase: Phase = Phase.SETUP,
    val settings: ChatSettings = ChatSettings(),
    /** Why the last start failed. */
    val setupError: String? = null,
    /** `NAME#FINGERPRINT`, what others add to reach this user; null until listening. */
    val me: String? = null,
    val contacts: List<Contact> = emptyList(),
    /** Contacts with a flow up now. */
    val online: Set<String> = emptySet(),
    val conversations: Map<String, List<ChatItem>> = emptyMap(),
    /** A message for the user once (a snackbar); [ChatViewModel.messageShown] clears it. */
    val message: String? = null,
    private val notes: Long = 0,
) {
    fun conversation(contact: String): List<ChatItem> = conversations[contact].orEmpty()

    /** The state after the engine said [line]. */
    fun after(line: ChatLine): ChatUiState = when (line) {
        is ChatLine.Ready -> copy(me = line.me)
        is ChatLine.Earlier -> append(line.contact, ChatItem.Bubble(line.message, line.delivered))
        is ChatLine.Sent -> append(line.contact, ChatItem.Bubble(line.message, delivered = false))
        is ChatLine.Received -> append(line.contact, ChatItem.Bubble(line.message, delivered = false))
        is ChatLine.Delivered -> copy(
            conversations = conversations + (
                line.contact to conversation(line.contact).map {
                    if (it is ChatItem.Bubble && it.message.outgoing && it.message.seq == line.seq) it.copy(delivered = true) else it
                }
                ),
        )
        is ChatLine.Online -> copy(online = online + line.contact)
            .note(line.contact, if (line.paths.isEmpty()) "connected" else "connected via ${line.paths.joinToString(", ") { it.split(' ').take(2).joinToString(" ") }}")
        is ChatLine.Offline -> copy(online = online - line.contact).note(line.contact, "disconnected: ${line.why}")
        is ChatLine.PathAdded -> note(line.contact, "path added: ${line.path}")
        is ChatLine.PathLost -> note(line.contact, "path lost: ${line.path} (${line.why})")
        is ChatLine.Moved -> note(line.contact, "this phone moved to ${line.addresses.joinToString(", ")}")
        is ChatLine.PeerMoved -> note(line.contact, "${line.contact} moved to ${line.addresses.joinToString(", ")}")
        is ChatLine.Resumed -> note(line.contact, fmt("resumed after %.1f s without a path", line.outageMs / 1000.0))
        is ChatLine.StaysRelayed -> note(line.contact, "no direct path after ${line.attempts} attempts: staying relayed")
        is ChatLine.Pinned -> copy(contacts = withContact(line.contact))
            .note(line.contact.name, "${line.contact.name} is a new contact, key ${line.contact.fingerprint}")
        is ChatLine.Refused -> copy(message = "refused a peer: ${line.why}")
        is ChatLine.Problem -> line.contact?.let { note(it, line.what) } ?: copy(message = line.what)
    }

    /** [contact] added to, or replacing its namesake in, the contact list. */
    fun withContact(contact: Contact): List<Contact> =
        (contacts.filter { it.name != contact.name } + contact).sortedBy { it.name }

    private fun append(contact: String, item: ChatItem) =
        copy(conversations = conversations + (contact to conversation(contact) + item))

    private fun note(contact: String, text: String) =
        copy(notes = notes + 1).append(contact, ChatItem.Note(notes, text))
}
