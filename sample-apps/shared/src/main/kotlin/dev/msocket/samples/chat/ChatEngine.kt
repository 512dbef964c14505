/*
 * The chat: one user, listening on their name, with a conversation per contact.
 *
 * Why it is built this way:
 * - A contact is reached by `NAME#FINGERPRINT`, so the SDK refuses any other key; a peer
 *   that dials us introduces itself (HELLO) and its name is pinned to the key the flow
 *   authenticated.
 * - A flow survives moves, outages and relays by itself; the app only has to handle what
 *   outlives a flow: a restart, or a flow that failed. Each new flow starts with both
 *   sides saying how far they have stored the other's messages, and the sender goes on
 *   from there. Messages carry sequence numbers, so a resend is recognised and never shown
 *   twice, and one that arrives before its predecessor is left for the resend.
 * - "Delivered" is the peer app's ACK, sent once the message is on its disk.
 * - Both sides may dial at once; then two flows live side by side (at most [MAX_LINKS]),
 *   messages go on the newest, and sequence numbers sort the rest out.
 */
package dev.msocket.samples.chat

import java.io.Closeable
import java.io.File
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.time.Duration
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Job
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.delay
import kotlinx.coroutines.isActive
import kotlinx.coroutines.launch
import kotlinx.coroutines.withTimeout
import dev.msocket.Endpoint
import dev.msocket.FlowEvent
import dev.msocket.InterfaceKind
import dev.msocket.Listener
import dev.msocket.PeerFlow
import dev.msocket.ffi.MsocketException
import dev.msocket.samples.FormatException
import dev.msocket.samples.LineReader
import dev.msocket.samples.LineTooLongException
import dev.msocket.samples.label
import dev.msocket.samples.linkName

/** A contact the user never added and who never introduced themselves. */
class UnknownContactException(name: String) : Exception("$name is not a contact; add NAME#FINGERPRINT first")

/**
 * The chat of the user [me] (the name they listen on) on [endpoint], keeping contacts and
 * history under [dir]. Every line for the user goes to [show], from any thread, in the
 * order things happened for each contact. Runs its work in [parent]'s context.
 */
class ChatEngine(
    private val endpoint: Endpoint,
    val me: String,
    dir: File,
    parent: CoroutineScope,
    private val show: (ChatLine) -> Unit,
    private val clock: () -> Long = System::currentTimeMillis,
    /** Longest wait between attempts to reach a contact with undelivered messages. */
    private val maxBackoff: Duration = 8.seconds,
) : Closeable {
    private val scope = CoroutineScope(parent.coroutineContext + SupervisorJob(parent.coroutineContext[Job]))
    val contacts = ContactBook(File(dir, "contacts"))
    val history = History(File(dir, "history"))
    private val peers = HashMap<String, Peer>()
    private var listener: Listener? = null

    init {
        ChatFrame.checkName(me)
    }

    /**
     * Shows the history, listens on [me] (then says [ChatLine.Ready]), and starts
     * delivering what an earlier run left undelivered.
     */
    suspend fun start() {
        for (name in history.contacts()) {
            val c = history.with(name)
            for (m in c.all) show(ChatLine.Earlier(name, m, m.outgoing && m.seq <= c.delivered))
        }
        val l = endpoint.listen(me)
        listener = l
        show(ChatLine.Ready("$me#${endpoint.fingerprint}"))
        scope.launch { accept(l) }
        for (name in history.contacts()) peer(name).wake()
    }

    /** Adds (or re-keys) the contact `NAME#FINGERPRINT` the user typed. */
    fun add(spec: String): Contact {
        val c = Contact.parse(spec)
        if (c.name == me) throw FormatException("$me is you")
        contacts.pin(c, replace = true)
        return c
    }

    /** Stores [text] for [to] and sends it as soon as a flow is up. */
    fun send(to: String, text: String): Message {
        if (contacts.get(to) == null) throw UnknownContactException(to)
        val m = history.with(to).add(text, clock())
        show(ChatLine.Sent(to, m))
        peer(to).wake()
        return m
    }

    /** Stops listening and closes every flow; the history stays on disk. */
    override fun close() {
        listener?.close()
        scope.cancel()
        synchronized(peers) { peers.values.toList() }.forEach { p -> p.links.forEach { it.flow.close() } }
        history.close()
    }

    private fun peer(name: String): Peer = synchronized(peers) { peers.getOrPut(name) { Peer(name) } }

    private suspend fun accept(l: Listener) {
        while (scope.isActive) {
            val flow = try {
                l.accept(timeout = 1.seconds * 3600)
            } catch (e: MsocketException.Timeout) {
                continue
            } catch (e: MsocketException) {
                if (scope.isActive) show(ChatLine.Problem(null, "no longer accepting: $e"))
                return
            }
            scope.launch { Link(flow, dialed = false).run(null) }
        }
    }

    /** One contact: its flows (newest last) and whoever dials it. */
    private inner class Peer(val name: String) {
        val links = CopyOnWriteArrayList<Link>()
        /** A dial is under way: from the first attempt until its flow joined or failed. */
        private var dialing = false
        val conversation get() = history.with(name)

        fun current(): Link? = links.lastOrNull()

        /** Sends what waits on the newest flow, or dials if there is none and something waits. */
        fun wake() {
            val link = current()
            if (link != null) link.kick() else if (conversation.delivered < conversation.lastSent) dial()
        }

        @Synchronized
        private fun dial() {
            if (dialing) return
            val contact = contacts.get(name) ?: return show(ChatLine.Problem(name, "has undelivered messages but is not a contact"))
            dialing = true
            scope.launch {
                var backoff = 500.milliseconds
                while (isActive && links.isEmpty() && conversation.delivered < conversation.lastSent) {
                    val flow = try {
                        endpoint.connect(contact.toString(), timeout = 30.seconds)
                    } catch (e: MsocketException) {
                        show(ChatLine.Problem(name, "cannot reach: ${e.describe()}; retrying in ${backoff.inWholeMilliseconds} ms"))
                        delay(backoff)
                        backoff = minOf(backoff * 2, maxBackoff)
                        continue
                    }
                    // Runs the flow to its end; it calls dialed() once up (or failed before).
                    Link(flow, dialed = true).run(this@Peer)
                    return@launch
                }
                dialed()
            }
        }

        /** The dial ended: its flow is up, or it gave up. Another may start. */
        @Synchronized
        fun dialed() {
            dialing = false
        }

        fun joined(link: Link) {
            links += link
            while (links.size > MAX_LINKS) links.removeAt(0).flow.close()
        }

        fun left(link: Link, why: String) {
            if (!links.remove(link)) return
            if (links.isEmpty()) {
                show(ChatLine.Offline(name, why))
                wake()
            }
        }
    }

    /** One flow to a contact and the three things it runs: reader, writer, events. */
    private inner class Link(val flow: PeerFlow, val dialed: Boolean) {
        private val kicks = Channel<Unit>(Channel.CONFLATED)
        @Volatile private var ackDue = false
        private var sentUpTo = 0L
        private lateinit var peer: Peer
        /** The peer of this accepted flow was pinned by it (said once the flow is up). */
        private var newContact = false

        fun kick() {
            kicks.trySend(Unit)
        }

        /** Runs the flow to its end; [to] is the contact dialed (null: accepted). */
        suspend fun run(to: Peer?) {
            val lines = LineReader.of(flow, ChatFrame.MAX_LINE, RECEIVE_WAIT)
            var why = "the flow ended"
            try {
                if (to != null) send(ChatFrame.Hello(me, to.conversation.lastReceived))
                val hello = withTimeout(HELLO_WAIT) { lines.next() }?.let { ChatFrame.decode(it) }
                if (hello !is ChatFrame.Hello) throw FormatException("the peer did not start with HELLO")
                peer = to?.also { if (hello.name != it.name) throw FormatException("${it.name} introduced itself as ${hello.name}") }
                    ?: introduce(hello.name) ?: return
                val conversation = peer.conversation
                if (to == null) send(ChatFrame.Hello(me, conversation.lastReceived))
                acknowledged(hello.received)
                sentUpTo = hello.received
                peer.joined(this)
                to?.dialed()
                if (newContact) contacts.get(peer.name)?.let { show(ChatLine.Pinned(it)) }
                show(ChatLine.Online(peer.name, flow.id, dialed, paths()))
                scope.launch { events() }
                scope.launch { writer() }
                kick()
                while (true) {
                    val line = try {
                        lines.next()
                    } catch (e: MsocketException.Timeout) {
                        continue
                    } ?: break
                    when (val frame = ChatFrame.decode(line)) {
                        is ChatFrame.Msg -> {
                            when (conversation.receive(frame.seq, frame.sentAt, frame.text)) {
                                Receipt.STORED -> show(ChatLine.Received(peer.name, Message(false, frame.seq, frame.sentAt, frame.text)))
                                Receipt.DUPLICATE, Receipt.OUT_OF_ORDER -> {}
                            }
                            ackDue = true
                            kick()
                        }
                        is ChatFrame.Ack -> acknowledged(frame.seq)
                        is ChatFrame.Hello -> throw FormatException("a second HELLO")
                    }
                }
                why = "the peer closed the flow"
            } catch (e: FormatException) {
                why = "protocol error: ${e.message}"
                flow.abort("chat protocol error")
            } catch (e: LineTooLongException) {
                why = "protocol error: ${e.message}"
                flow.abort("chat protocol error")
            } catch (e: kotlinx.coroutines.TimeoutCancellationException) {
                why = "no HELLO within $HELLO_WAIT"
            } catch (e: MsocketException) {
                why = e.describe()
            } catch (e: java.io.IOException) {
                // The history could not be written: acknowledge nothing more, say why.
                why = "history file: ${e.message}"
                show(ChatLine.Problem(if (this::peer.isInitialized) peer.name else null, why))
                flow.abort("the peer could not store messages")
            } finally {
                kicks.close()
                flow.close()
                if (this::peer.isInitialized) {
                    peer.left(this, why)
                } else if (to != null) {
                    to.dialed()
                    show(ChatLine.Problem(to.name, "flow failed before HELLO: $why"))
                    scope.launch {
                        delay(RETRY_AFTER_REFUSAL)
                        to.wake()
                    }
                }
            }
        }

        /** The peer of an accepted flow introduced itself as [name]: pins it, or refuses. */
        private fun introduce(name: String): Peer? {
            val presented = Contact(name, flow.peerFingerprint.lowercase())
            if (name == me) {
                show(ChatLine.Refused("a peer introduced itself as $me (us)"))
                flow.abort("that name is ours")
                return null
            }
            try {
                newContact = contacts.pin(presented)
            } catch (e: KeyMismatchException) {
                show(ChatLine.Refused(e.message ?: "key mismatch"))
                flow.abort("key does not match the pinned one")
                return null
            }
            return peer(name)
        }

        private fun acknowledged(upTo: Long) {
            for (seq in peer.conversation.acknowledge(upTo)) show(ChatLine.Delivered(peer.name, seq))
        }

        private suspend fun writer() {
            val conversation = peer.conversation
            try {
                for (k in kicks) {
                    val out = StringBuilder()
                    if (ackDue) {
                        ackDue = false
                        out.append(ChatFrame.Ack(conversation.lastReceived).encode())
                    }
                    if (peer.current() === this) {
                        for (m in conversation.ownAfter(sentUpTo)) {
                            out.append(ChatFrame.Msg(m.seq, m.sentAt, m.text).encode())
                            sentUpTo = m.seq
                            if (out.length > BATCH) break
                        }
                        if (conversation.lastSent > sentUpTo) kick()
                    }
                    if (out.isNotEmpty()) flow.send(out.toString().toByteArray(Charsets.UTF_8), SEND_WAIT)
                }
            } catch (e: MsocketException) {
                // The reader sees the same failure and ends the link.
            }
        }

        private suspend fun events() {
            try {
                flow.events.collect { e ->
                    val line = when (e) {
                        is FlowEvent.PathAdded ->
                            ChatLine.PathAdded(peer.name, describe(e.interfaceKind, e.local, e.remote, e.relayed))
                        is FlowEvent.PathLost -> ChatLine.PathLost(peer.name, describe(e.interfaceKind, e.local, e.remote, null), e.detail)
                        is FlowEvent.PeerMoved -> ChatLine.PeerMoved(peer.name, e.addresses)
                        is FlowEvent.Moved -> ChatLine.Moved(peer.name, e.addresses)
                        is FlowEvent.Resumed -> ChatLine.Resumed(peer.name, e.outage.inWholeMilliseconds)
                        is FlowEvent.StaysRelayed -> ChatLine.StaysRelayed(peer.name, e.attempts)
                        is FlowEvent.Closed, is FlowEvent.EventsDropped -> null
                    }
                    line?.let(show)
                }
            } catch (e: MsocketException) {
                // The flow is gone; the reader reports why.
            }
        }

        /** The flow's paths now, each as "wifi relayed 192.168.1.2:40312 -> 172.16.100.11:443". */
        private fun paths(): List<String> = try {
            flow.paths().map { p -> "${p.label()} ${p.local} -> ${p.remote}" }
        } catch (e: MsocketException) {
            emptyList()
        }

        /** "wifi 192.168.1.2:40312 -> 172.16.100.11:443 relayed" (a lost path: without how). */
        private fun describe(kind: InterfaceKind?, local: String, remote: String, relayed: Boolean?): String {
            val how = relayed?.let { if (it) " relayed" else " direct" } ?: ""
            return "${linkName(kind)} $local -> $remote$how"
        }

        private suspend fun send(frame: ChatFrame) = flow.send(frame.encode().toByteArray(Charsets.UTF_8), SEND_WAIT)
    }

    companion object {
        /** Flows kept to one contact at once (two when both dialed at the same time). */
        const val MAX_LINKS = 2
        private val HELLO_WAIT = 20.seconds
        private val RETRY_AFTER_REFUSAL = 2.seconds
        private val RECEIVE_WAIT = 60.seconds
        private val SEND_WAIT = 60.seconds
        private const val BATCH = 32 * 1024
    }
}

/** An SDK error in the words a user reads. */
fun MsocketException.describe(): String = "${this::class.simpleName}: ${message ?: ""}".trim()
