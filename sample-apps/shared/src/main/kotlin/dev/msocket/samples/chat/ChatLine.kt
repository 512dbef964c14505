/*
 * What the chat tells its user, as values: the console prints them, the phone apps turn
 * them into bubbles and banners. Every line names the contact it is about.
 */
package dev.msocket.samples.chat

import dev.msocket.samples.fmt

/** Something the user should see. */
sealed class ChatLine {
    /** Listening as [me] (`NAME#FINGERPRINT`, what others add as a contact). */
    data class Ready(val me: String) : ChatLine()
    /** A message of an earlier run, shown again from the history file. */
    data class Earlier(val contact: String, val message: Message, val delivered: Boolean) : ChatLine()
    /** Our message is on disk and on its way. */
    data class Sent(val contact: String, val message: Message) : ChatLine()
    /** The peer's app stored our message [seq]. */
    data class Delivered(val contact: String, val seq: Long) : ChatLine()
    /** A new message of the peer's (shown once: a resend is recognised and dropped). */
    data class Received(val contact: String, val message: Message) : ChatLine()
    /** A flow to [contact] is ready ([dialed]: we opened it) on [paths] ("wifi direct", ...). */
    data class Online(val contact: String, val flowId: String, val dialed: Boolean, val paths: List<String>) : ChatLine()
    /** No flow to [contact] is left. */
    data class Offline(val contact: String, val why: String) : ChatLine()
    /** A path joined the flow: [path] like "wifi 192.168.1.2:40312 -> 172.16.100.11:443 relayed". */
    data class PathAdded(val contact: String, val path: String) : ChatLine()
    data class PathLost(val contact: String, val path: String, val why: String) : ChatLine()
    /** The peer moved to [addresses]. */
    data class PeerMoved(val contact: String, val addresses: List<String>) : ChatLine()
    /** This device moved to [addresses]. */
    data class Moved(val contact: String, val addresses: List<String>) : ChatLine()
    /** Data flows again after an outage of [outageMs]. */
    data class Resumed(val contact: String, val outageMs: Long) : ChatLine()
    /** Hole punching failed: the flow stays relayed. */
    data class StaysRelayed(val contact: String, val attempts: Int) : ChatLine()
    /** A new contact, pinned on first contact. */
    data class Pinned(val contact: Contact) : ChatLine()
    /** A flow refused (a key that does not match the pin, ...). */
    data class Refused(val why: String) : ChatLine()
    /** Something went wrong that the user should know of (and what happens next). */
    data class Problem(val contact: String?, val what: String) : ChatLine()

    /** The line as the console prints it: a fixed word, the contact, then details. */
    fun describe(): String = when (this) {
        is Ready -> "ready     $me"
        is Earlier -> "earlier   $contact ${if (message.outgoing) "out" else "in"} #${message.seq}${if (message.outgoing) if (delivered) " delivered" else " pending" else ""} ${printable(message.text)}"
        is Sent -> "sent      $contact #${message.seq} ${printable(message.text)}"
        is Delivered -> "delivered $contact #$seq"
        is Received -> "received  $contact #${message.seq} ${printable(message.text)}"
        is Online -> "online    $contact flow $flowId ${if (dialed) "(we dialed)" else "(they dialed)"} via ${paths.joinToString(", ").ifEmpty { "no path yet" }}"
        is Offline -> "offline   $contact: $why"
        is PathAdded -> "path+     $contact $path"
        is PathLost -> "path-     $contact $path: $why"
        is PeerMoved -> "moved     $contact peer now at ${addresses.joinToString(", ")}"
        is Moved -> "moved     $contact we are now at ${addresses.joinToString(", ")}"
        is Resumed -> fmt("resumed   $contact after %.1f s without a path", outageMs / 1000.0)
        is StaysRelayed -> "relayed   $contact no direct path after $attempts attempts; staying relayed"
        is Pinned -> "contact   ${contact.name}#${contact.fingerprint} pinned on first contact"
        is Refused -> "refused   $why"
        is Problem -> "problem   ${contact?.let { "$it " } ?: ""}$what"
    }

    private companion object {
        /** Control characters a peer sent are shown, not obeyed by the terminal. */
        fun printable(text: String) = text.map { if (it < ' ' || it == '\u007f') '\ufffd' else it }.joinToString("")
    }
}
