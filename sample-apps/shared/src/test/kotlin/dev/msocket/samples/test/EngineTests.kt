/*
 * The chat engine end to end on loopback: two users with real endpoints and the real
 * name service, one of them restarted; a pinned name claimed with another key; a peer that
 * breaks the protocol.
 */
package dev.msocket.samples.test

import java.io.File
import java.util.Collections
import java.util.concurrent.atomic.AtomicInteger
import kotlin.test.assertEquals
import kotlin.test.assertTrue
import kotlin.time.Duration
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.delay
import dev.msocket.Endpoint
import dev.msocket.EndpointConfig
import dev.msocket.samples.KeyFile
import dev.msocket.samples.chat.ChatEngine
import dev.msocket.samples.chat.ChatLine

private val namesUrl: String get() = System.getProperty("msocket.names") ?: error("set -Dmsocket.names=tcp://HOST:PORT")
private val serial = AtomicInteger()
private fun unique(what: String) = "$what-${ProcessHandle.current().pid()}-${serial.incrementAndGet()}.test"

/** One user: an endpoint on [address] with the key kept in [dir], and its engine's lines. */
private class User(val me: String, val dir: File, address: String, scope: CoroutineScope) {
    val lines: MutableList<ChatLine> = Collections.synchronizedList(ArrayList())
    val endpoint = Endpoint(
        KeyFile.loadOrCreate(File(dir, "key")),
        EndpointConfig(namesUrl = namesUrl, connectTimeout = 10.seconds, flowDeadline = 20.seconds, localAddresses = listOf(address)),
    )
    val chat = ChatEngine(endpoint, me, dir, scope, show = { lines += it }, maxBackoff = 1.seconds)
    val id get() = "$me#${endpoint.fingerprint}"

    inline fun <reified T : ChatLine> all(): List<T> = synchronized(lines) { lines.filterIsInstance<T>() }

    fun close() {
        chat.close()
        endpoint.close()
    }
}

/** Waits (bounded, polling) until [ok]; fails saying [what] and showing [lines] if not. */
private suspend fun waitFor(what: String, lines: () -> Any, timeout: Duration = 30.seconds, ok: () -> Boolean) {
    val started = TimeSource.Monotonic.markNow()
    while (!ok()) {
        check(started.elapsedNow() < timeout) { "no $what within $timeout; lines: ${lines()}" }
        delay(20)
    }
}

fun engineTests(s: Suite) {
    s.testBlocking("two users chat; every message arrives once, in order, and is marked delivered, across a restart") {
        val (aliceName, bobName) = unique("alice") to unique("bob")
        val (aliceDir, bobDir) = tempDir() to tempDir()
        val alice = User(aliceName, aliceDir, "127.0.0.1", this)
        var bob = User(bobName, bobDir, "127.0.0.2", this)
        bob.chat.start()
        alice.chat.start()
        alice.chat.add(bob.id)
        for (i in 1..20) alice.chat.send(bobName, "a-$i")
        waitFor("bob pinning alice", { bob.lines }) { bob.all<ChatLine.Pinned>().isNotEmpty() }
        for (i in 1..20) bob.chat.send(aliceName, "b-$i")
        waitFor("all delivered", { alice.lines + bob.lines }) {
            alice.all<ChatLine.Delivered>().size == 20 && bob.all<ChatLine.Delivered>().size == 20
        }
        val firstRun = bob.all<ChatLine.Received>()
        bob.close()
        for (i in 21..30) alice.chat.send(bobName, "a-$i")
        bob = User(bobName, bobDir, "127.0.0.2", this)
        bob.chat.start()
        assertEquals(40, bob.all<ChatLine.Earlier>().size, "the history shown after the restart")
        waitFor("the rest delivered after bob's restart", { alice.lines + bob.lines }) { alice.all<ChatLine.Delivered>().size == 30 }
        val received = (firstRun + bob.all<ChatLine.Received>()).map { it.message.seq to it.message.text }
        assertEquals((1..30).map { it.toLong() to "a-$it" }, received)
        assertEquals((1..30).map { it.toLong() }, alice.all<ChatLine.Delivered>().map { it.seq })
        assertEquals((1..20).map { it.toLong() to "b-$it" }, alice.all<ChatLine.Received>().map { it.message.seq to it.message.text })
        assertTrue(alice.all<ChatLine.Online>().size >= 2, "alice reconnected to the restarted bob")
        alice.close()
        bob.close()
    }

    s.testBlocking("a pinned name claimed with another key is refused and nothing of it is stored") {
        val (aliceName, bobName) = unique("alice") to unique("bob")
        val alice = User(aliceName, tempDir(), "127.0.0.1", this)
        val bob = User(bobName, tempDir(), "127.0.0.2", this)
        alice.chat.start()
        bob.chat.start()
        bob.chat.add(alice.id)
        bob.chat.send(aliceName, "hello from the real bob")
        waitFor("alice storing bob's message", { alice.lines }) { alice.all<ChatLine.Received>().size == 1 }
        // Another key, introducing itself by bob's name (it listens on a name of its own).
        val mallory = User(unique("mallory"), tempDir(), "127.0.0.3", this)
        mallory.chat.add(alice.id)
        val raw = mallory.endpoint.connect(alice.id)
        raw.send("HELLO 1 $bobName 0\nMSG 1 1 i-am-bob\n".toByteArray())
        waitFor("alice refusing the impostor", { alice.lines }) { alice.all<ChatLine.Refused>().isNotEmpty() }
        assertTrue(alice.all<ChatLine.Refused>()[0].why.contains(bobName))
        assertEquals(listOf("hello from the real bob"), alice.all<ChatLine.Received>().map { it.message.text })
        assertEquals(null, runCatching { raw.receive(timeout = 5.seconds) }.getOrNull(), "the impostor's flow was not ended")
        raw.close()
        listOf(alice, bob, mallory).forEach { it.close() }
    }

    s.testBlocking("a peer that breaks the protocol is cut off with a line saying so") {
        val aliceName = unique("alice")
        val alice = User(aliceName, tempDir(), "127.0.0.1", this)
        alice.chat.start()
        val eve = User(unique("eve"), tempDir(), "127.0.0.4", this)
        val raw = eve.endpoint.connect(alice.id)
        raw.send("HELLO 1 ${eve.me} 0\nMSG 2 1 skipped-one\nthis is not a record\n".toByteArray())
        waitFor("alice dropping eve", { alice.lines }) { alice.all<ChatLine.Offline>().any { it.why.contains("protocol error") } }
        assertEquals(emptyList(), alice.all<ChatLine.Received>())
        raw.close()
        alice.close()
        eve.close()
    }
}
