/*
 * The Kotlin API against the real native library and a real msocketd name service, on
 * loopback: listen and connect by name, data verified by SHA-256, events as a Kotlin Flow
 * that completes, a network snapshot pushed from Kotlin moving a flow between 127.0.0.x
 * addresses, socket binding, policies and path statistics, cancellation of waiting calls,
 * a thousand flows waiting at once, java.io streams, logs, the interface kind of each path,
 * following the system's network as an option, and bad input answered with
 * exceptions rather than a crash. No sleeps: every wait is a call or a queue poll, each
 * with a timeout.
 */
package dev.msocket.test

import dev.msocket.Endpoint
import dev.msocket.EndpointConfig
import dev.msocket.PeerFlow
import dev.msocket.FlowEvent
import dev.msocket.FlowFailure
import dev.msocket.InterfaceKind
import dev.msocket.MSocket
import dev.msocket.NetworkInterface
import dev.msocket.PathPolicy
import dev.msocket.PathState
import dev.msocket.SocketBinder
import dev.msocket.ffi.MsocketException
import java.nio.file.Files
import java.nio.file.Paths
import java.security.MessageDigest
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlin.test.fail

internal val namesUrl: String
    get() = System.getProperty("msocket.names") ?: error("set -Dmsocket.names=tcp://HOST:PORT (a running msocketd)")

/** Every test uses names of its own, so tests never see each other's records. */
private val serial = AtomicInteger()
internal fun uniqueName(what: String) = "$what-${ProcessHandle.current().pid()}-${serial.incrementAndGet()}.test"

internal fun key(b: Int) = ByteArray(32) { (b * 31 + it).toByte() }

internal fun config(vararg local: String, loopback: Boolean = false) = EndpointConfig(
    namesUrl = namesUrl,
    connectTimeout = 10.seconds,
    flowDeadline = 20.seconds,
    useLoopback = loopback,
    localAddresses = local.toList(),
)

private fun sha256(b: ByteArray) = MessageDigest.getInstance("SHA-256").digest(b)

private fun data(len: Int) = ByteArray(len) { (it * 7 + it / 251).toByte() }

/** Collects a flow's events in the background, for waiting on one. */
private class EventLog(flow: PeerFlow) {
    val queue = LinkedBlockingQueue<FlowEvent>()
    private val scope = CoroutineScope(Dispatchers.Default)

    init {
        scope.launch { flow.events.collect { queue.put(it) } }
    }

    fun stop() = scope.cancel()

    inline fun <reified T : FlowEvent> await(what: String, test: (T) -> Boolean = { true }): T {
        val deadline = System.nanoTime() + 10_000_000_000L
        while (true) {
            val left = deadline - System.nanoTime()
            val ev = queue.poll(maxOf(left, 0), TimeUnit.NANOSECONDS) ?: fail("no $what event within 10 s")
            if (ev is T && test(ev)) return ev
        }
    }
}

internal suspend fun receiveAll(flow: PeerFlow): ByteArray {
    val out = java.io.ByteArrayOutputStream()
    while (true) {
        val chunk = flow.receive(64 * 1024, 10.seconds) ?: return out.toByteArray()
        out.write(chunk)
    }
}

private fun wifi(vararg addrs: String) =
    NetworkInterface(name = "wlan0", index = 3u, kind = InterfaceKind.WIFI, metered = false, up = true, addresses = addrs.toList())

/** Opens a flow from [client] to a fresh name on [server]. */
private suspend fun pair(client: Endpoint, server: Endpoint, what: String): Triple<PeerFlow, PeerFlow, dev.msocket.Listener> = coroutineScope {
    val name = uniqueName(what)
    val listener = server.listen(name)
    val accepted = async { listener.accept(10.seconds) }
    val c = client.connect(name, 10.seconds)
    Triple(c, accepted.await(), listener)
}

fun apiTests(s: Suite) {
    s.test("api: keys and version") {
        val k = MSocket.generateKey()
        assertEquals(32, k.size)
        assertEquals(32, MSocket.fingerprint(k).length)
        assertEquals(MSocket.fingerprint(key(1)), MSocket.fingerprint(key(1)))
        assertTrue(MSocket.version.isNotEmpty())
    }

    s.test("api: bad input is an exception, not a crash") {
        val e = assertFailsWith<MsocketException.InvalidArgument> { Endpoint(ByteArray(5), config()) }
        assertTrue(e.message!!.contains("5 bytes"), e.message)
        assertFailsWith<MsocketException.InvalidArgument> { MSocket.fingerprint(ByteArray(0)) }
        val url = assertFailsWith<MsocketException.BadUrl> { Endpoint(key(1), config().copy(namesUrl = "http://x:1")) }
        assertTrue(url.message!!.contains("http://x:1"), url.message)
        assertFailsWith<MsocketException.BadUrl> { Endpoint(key(1), config().copy(namesUrl = "")) }
        assertFailsWith<MsocketException.InvalidArgument> { Endpoint(key(1), config("300.1.1.1")) }
        assertFailsWith<MsocketException.InvalidArgument> { Endpoint(key(1), config().copy(listenPort = 70000)) }
        assertFailsWith<MsocketException.InvalidArgument> { Endpoint(key(1), config().copy(connectTimeout = (-1).seconds)) }
        Endpoint(key(1), config()).use { ep ->
            val unknown = assertFailsWith<MsocketException.NameNotFound> { runBlocking { ep.connect(uniqueName("nobody")) } }
            assertTrue(unknown.message!!.contains("nobody"), unknown.message)
            assertFailsWith<MsocketException.InvalidArgument> { runBlocking { ep.connect("Not A Name") } }
            assertFailsWith<MsocketException.InvalidArgument> { ep.updateNetwork(listOf(wifi("192.0.2.999"))) }
            assertFailsWith<MsocketException.InvalidArgument> { ep.updateNetwork(listOf(wifi().copy(name = ""))) }
        }
    }

    s.testBlocking("api: connect and listen by name; bytes both ways, verified by SHA-256") {
        Endpoint(key(2), config("127.0.0.1")).use { server ->
            Endpoint(key(3), config()).use { client ->
                val (c, srv, listener) = pair(client, server, "bytes")
                assertEquals(c.id, srv.id)
                val events = EventLog(c)
                val up = data(1_000_000)
                val down = data(300_000).reversedArray()
                coroutineScope {
                    launch { c.send(up); c.finish() }
                    launch { srv.send(down); srv.finish() }
                    val got = async { receiveAll(srv) }
                    val back = async { receiveAll(c) }
                    assertContentEquals(sha256(up), sha256(got.await()))
                    assertContentEquals(sha256(down), sha256(back.await()))
                }
                assertNull(c.receive(), "the end of the stream stays the end")
                val stats = c.stats()
                assertEquals(1_000_000uL, stats.bytesWritten)
                assertEquals(300_000uL, stats.bytesRead)
                val closed = events.await<FlowEvent.Closed>("closed")
                assertNull(closed.failure)
                assertNull(closed.error)
                listOf(c, srv, listener).forEach { it.close() }
            }
        }
    }

    s.testBlocking("api: closed and timed-out calls throw typed exceptions") {
        Endpoint(key(4), config("127.0.0.1")).use { server ->
            Endpoint(key(5), config()).use { client ->
                val (c, srv, listener) = pair(client, server, "closed")
                assertFailsWith<MsocketException.Timeout> { c.receive(timeout = 50.milliseconds) }
                assertFailsWith<MsocketException.InvalidArgument> { c.receive(maxBytes = 0) }
                val waiting = async { runCatching { c.receive(timeout = 60.seconds) } }
                c.close()
                assertTrue(waiting.await().exceptionOrNull() is MsocketException.Closed, "close wakes a waiting receive")
                assertFailsWith<MsocketException.Closed> { c.send(byteArrayOf(1)) }
                assertFailsWith<MsocketException.Closed> { c.paths() }
                c.close() // idempotent
                srv.abort("test over")
                listener.close()
                assertFailsWith<MsocketException.Closed> { listener.accept(1.seconds) }
            }
            server.close()
            assertFailsWith<MsocketException.Closed> { server.listen(uniqueName("late")) }
        }
    }

    s.testBlocking("api: events are a Flow that completes after Closed; one collector at a time") {
        Endpoint(key(6), config("127.0.0.1")).use { server ->
            Endpoint(key(7), config()).use { client ->
                val (c, srv, listener) = pair(client, server, "events")
                // Both start collecting before the abort (UNDISPATCHED runs them to their
                // first suspension now).
                val all = async(start = CoroutineStart.UNDISPATCHED) { withTimeout(10.seconds) { srv.events.toList() } }
                // A second collector while the first runs is refused, not split.
                val second = async(start = CoroutineStart.UNDISPATCHED) { runCatching { srv.events.first() } }
                c.abort("goodbye from the client")
                val events = all.await()
                val closed = events.last() as FlowEvent.Closed
                assertEquals(1, events.count { it is FlowEvent.Closed }, "$events")
                assertEquals(FlowFailure.PEER_ABORTED, closed.failure)
                assertTrue(closed.error!!.contains("goodbye from the client"), closed.error)
                val refused = second.await().exceptionOrNull()
                assertTrue(refused is IllegalStateException, "$refused")
                // Collected again after Closed: nothing more, at once.
                assertEquals(emptyList(), withTimeout(5.seconds) { srv.events.toList() })
                assertFailsWith<MsocketException.PeerAborted> { srv.receive(timeout = 5.seconds) }
                listOf(c, srv, listener).forEach { it.close() }
            }
        }
    }

    s.testBlocking("api: a network snapshot pushed from Kotlin moves the flow; sockets are bound") {
        val bound = LinkedBlockingQueue<Pair<Int, String>>()
        val binder = SocketBinder { fd, local ->
            // The descriptor is a live socket for the length of the call.
            val link = Files.readSymbolicLink(Paths.get("/proc/self/fd/$fd")).toString()
            check(link.startsWith("socket:")) { "fd $fd is $link" }
            bound.put(fd to local)
        }
        Endpoint(key(8), config("127.0.0.1")).use { server ->
            Endpoint(key(9), config(loopback = true), binder).use { client ->
                assertTrue(client.updateNetwork(listOf(wifi("127.0.0.2"))))
                val (c, srv, listener) = pair(client, server, "move")
                val events = EventLog(c)
                assertTrue(c.paths().any { it.local.startsWith("127.0.0.2:") }, "${c.paths()}")
                assertTrue(bound.any { it.second == "127.0.0.2" }, "$bound")

                val first = data(200_000)
                c.send(first)
                val got = java.io.ByteArrayOutputStream()
                while (got.size() < first.size) got.write(srv.receive(timeout = 10.seconds)!!)

                // The phone's Wi-Fi got a new address; the old one is gone.
                assertTrue(client.updateNetwork(listOf(wifi("127.0.0.3"))))
                assertEquals(listOf("127.0.0.3"), events.await<FlowEvent.Moved>("moved").addresses)
                events.await<FlowEvent.PathAdded>("path added") { it.local.startsWith("127.0.0.3:") }
                val second = data(200_000).reversedArray()
                c.send(second)
                c.finish()
                while (true) got.write(srv.receive(timeout = 10.seconds) ?: break)
                assertContentEquals(sha256(first + second), sha256(got.toByteArray()))
                assertTrue(c.paths().all { it.local.startsWith("127.0.0.3:") }, "${c.paths()}")
                assertTrue(bound.any { it.second == "127.0.0.3" }, "$bound")
                assertTrue((c.energyJoules ?: 0.0) > 0.0, "a Wi-Fi path costs energy: ${c.energyJoules}")
                listOf(c, srv, listener).forEach { it.close() }
            }
        }
    }

    s.testBlocking("api: a policy is set and path statistics are read") {
        Endpoint(key(10), config("127.0.0.1")).use { server ->
            Endpoint(key(11), config(loopback = true)).use { client ->
                client.updateNetwork(listOf(
                    wifi("127.0.0.4"),
                    NetworkInterface("rmnet0", 7u, InterfaceKind.CELLULAR, metered = true, up = true, addresses = listOf("127.0.0.5")),
                ))
                val (c, srv, listener) = pair(client, server, "policy")
                val events = EventLog(c)
                assertEquals(PathPolicy.BACKUP, c.policy)
                // The standby on cellular joins right after the flow opens.
                if (c.paths().size < 2) events.await<FlowEvent.PathAdded>("standby") { it.local.startsWith("127.0.0.5:") }
                c.policy = PathPolicy.PERFORMANCE
                assertEquals(PathPolicy.PERFORMANCE, c.policy)
                val bulk = data(2_000_000)
                coroutineScope {
                    launch { c.send(bulk); c.finish() }
                    assertContentEquals(sha256(bulk), sha256(receiveAll(srv)))
                }
                assertEquals(PathPolicy.PERFORMANCE, srv.policy, "the accepting side learns the policy")
                val paths = c.paths()
                assertTrue(paths.size >= 2, "$paths")
                val wifiPath = paths.first { it.local.startsWith("127.0.0.4:") }
                assertEquals(InterfaceKind.WIFI, wifiPath.interfaceKind, "$wifiPath")
                assertEquals(InterfaceKind.CELLULAR, paths.first { it.local.startsWith("127.0.0.5:") }.interfaceKind, "$paths")
                // The server was told of no interface: it cannot say which one its path uses.
                assertTrue(srv.paths().all { it.interfaceKind == null }, "${srv.paths()}")
                assertTrue(wifiPath.state in setOf(PathState.ACTIVE, PathState.STALLED, PathState.STANDBY), "$wifiPath")
                assertNotNull(wifiPath.srtt, "RTT measured: $wifiPath")
                assertTrue(paths.sumOf { it.bytesSent } > 2_000_000, "$paths")
                assertTrue(paths.all { it.energyJoules != null }, "kinds known, so energy is modelled: $paths")
                assertTrue((c.energyJoules ?: 0.0) > 0.0)
                for (p in PathPolicy.entries) {
                    c.policy = p
                    assertEquals(p, c.policy)
                }
                listOf(c, srv, listener).forEach { it.close() }
            }
        }
    }

    s.testBlocking("api: followSystemNetwork is off by default, reaches the library, and yields to pins and pushes") {
        assertFalse(config().followSystemNetwork)
        assertFalse(config().toFfi().followSystemNetwork)
        assertTrue(config().copy(followSystemNetwork = true).toFfi().followSystemNetwork)
        // Pinned addresses win over following the system.
        Endpoint(key(14), config("127.0.0.1").copy(followSystemNetwork = true)).use { pinned ->
            val listener = pinned.listen(uniqueName("pinned"))
            val published = pinned.publishedAddresses
            assertTrue(published.size == 1 && published[0].startsWith("127.0.0.1:"), "$published")
            listener.close()
        }
        // A pushed snapshot wins over the system's network: the listener binds where it says.
        Endpoint(key(15), config(loopback = true).copy(followSystemNetwork = true)).use { desk ->
            assertTrue(desk.updateNetwork(listOf(wifi("127.0.0.7"))))
            val listener = desk.listen(uniqueName("pushed"))
            val published = desk.publishedAddresses
            assertTrue(published.size == 1 && published[0].startsWith("127.0.0.7:"), "$published")
            listener.close()
        }
    }

    s.testBlocking("api: a socket binder that throws fails one subflow, not the process") {
        val calls = AtomicInteger()
        val flaky = SocketBinder { _, _ -> if (calls.getAndIncrement() == 0) throw java.io.IOException("network went away") }
        Endpoint(key(12), config("127.0.0.1")).use { server ->
            Endpoint(key(13), config(loopback = true), flaky).use { client ->
                client.updateNetwork(listOf(wifi("127.0.0.6")))
                val (c, srv, listener) = pair(client, server, "flaky")
                assertTrue(calls.get() >= 2, "the first socket failed, another was tried")
                c.send(byteArrayOf(1, 2, 3))
                assertContentEquals(byteArrayOf(1, 2, 3), srv.receive(timeout = 10.seconds))
                listOf(c, srv, listener).forEach { it.close() }
            }
        }
    }
}
