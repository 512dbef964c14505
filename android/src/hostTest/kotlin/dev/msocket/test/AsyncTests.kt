/*
 * The async API as apps lean on it: waiting calls cancelled from Kotlin return at once
 * and leave the flow as documented, a thousand flows wait at once on a handful of
 * threads, the java.io adapters, the open-flow count, and msocket's logs in a Kotlin
 * sink. Real library, real msocketd; transfers compared by SHA-256.
 */
package dev.msocket.test

import dev.msocket.Endpoint
import dev.msocket.LogLevel
import dev.msocket.LogSink
import dev.msocket.MSocketLog
import dev.msocket.PeerFlow
import dev.msocket.ffi.MsocketException
import java.lang.management.ManagementFactory
import java.security.MessageDigest
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import kotlin.concurrent.thread
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlin.test.fail
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.sync.Semaphore
import kotlinx.coroutines.sync.withPermit
import kotlinx.coroutines.withTimeout

private fun digest(b: ByteArray) = MessageDigest.getInstance("SHA-256").digest(b)

private fun bytes(len: Int, seed: Int) = ByteArray(len) { (it * seed + it / 997).toByte() }

private suspend fun opened(client: Endpoint, server: Endpoint, what: String): Triple<PeerFlow, PeerFlow, dev.msocket.Listener> = coroutineScope {
    val name = uniqueName(what)
    val listener = server.listen(name)
    val accepted = async { listener.accept(10.seconds) }
    Triple(client.connect(name, 10.seconds), accepted.await(), listener)
}

fun asyncTests(s: Suite) {
    s.testBlocking("async: a cancelled receive returns at once; the flow goes on and loses no byte") {
        Endpoint(key(40), config("127.0.0.1")).use { server ->
            Endpoint(key(41), config()).use { client ->
                val (c, srv, listener) = opened(client, server, "cancel-receive")
                val waiting = launch(start = CoroutineStart.UNDISPATCHED) { c.receive(timeout = 60.seconds) }
                val started = TimeSource.Monotonic.markNow()
                waiting.cancel()
                waiting.join()
                assertTrue(started.elapsedNow() < 2.seconds, "the cancelled receive took ${started.elapsedNow()}")
                assertTrue(waiting.isCancelled)
                // Documented: the flow is untouched, and what arrives next is all there.
                val up = bytes(500_000, 3)
                launch { srv.send(up); srv.finish() }
                assertContentEquals(digest(up), digest(receiveAll(c)))
                listOf(c, srv, listener).forEach { it.close() }
            }
        }
    }

    s.testBlocking("async: a cancelled connect returns at once and leaves no flow open") {
        val gone = Endpoint(key(42), config("127.0.0.1"))
        val name = uniqueName("cancel-connect")
        gone.listen(name).close()
        gone.close() // its record stays, pointing at a port nobody listens on
        Endpoint(key(43), config().copy(connectTimeout = 60.seconds)).use { client ->
            val connecting = async(start = CoroutineStart.UNDISPATCHED) { client.connect(name, 60.seconds) }
            val started = TimeSource.Monotonic.markNow()
            connecting.cancel()
            val outcome = runCatching { connecting.await() }
            assertTrue(outcome.exceptionOrNull() is CancellationException, "$outcome")
            assertTrue(started.elapsedNow() < 2.seconds, "the cancelled connect took ${started.elapsedNow()}")
            assertEquals(0, client.openFlows.first(), "no flow is left open")
        }
    }

    s.testBlocking("async: a timeout from withTimeout cancels a waiting accept; the listener still accepts") {
        Endpoint(key(44), config("127.0.0.1")).use { server ->
            Endpoint(key(45), config()).use { client ->
                val name = uniqueName("cancel-accept")
                val listener = server.listen(name)
                val started = TimeSource.Monotonic.markNow()
                assertFailsWith<kotlinx.coroutines.TimeoutCancellationException> {
                    withTimeout(100.milliseconds) { listener.accept(60.seconds) }
                }
                assertTrue(started.elapsedNow() < 2.seconds, "took ${started.elapsedNow()}")
                val accepted = async { listener.accept(10.seconds) }
                val c = client.connect(name, 10.seconds)
                val srv = accepted.await()
                c.send(byteArrayOf(7, 8, 9))
                assertContentEquals(byteArrayOf(7, 8, 9), srv.receive(timeout = 10.seconds))
                listOf(c, srv, listener).forEach { it.close() }
            }
        }
    }

    s.testBlocking("async: 1,000 flows wait at once on a handful of threads") {
        val n = 1_000
        // Ten client endpoints, each with a source address of its own: a listener admits
        // at most 512 flows per peer key and rate-limits handshakes per source address.
        val clients = (0 until 10).map { Endpoint(key(60 + it), config("127.0.0.${20 + it}")) }
        Endpoint(key(46), config("127.0.0.1")).use { server ->
            val name = uniqueName("thousand")
            val listener = server.listen(name)
            val accepted = async { List(n) { listener.accept(60.seconds) } }
            // Opened 32 at a time: each open is a name lookup, and the name server caps
            // the connections one address may hold (64).
            val opening = Semaphore(32)
            val flows = (0 until n).map { i ->
                async(Dispatchers.Default) { opening.withPermit { clients[i % 10].connect(name, 60.seconds) } }
            }.awaitAll()
            val servers = accepted.await()
            assertEquals(n, clients.sumOf { it.openFlows.first() })
            val threads = ManagementFactory.getThreadMXBean()
            val before = threads.threadCount
            // Every client flow waits in receive at once.
            val receiving = flows.map { c -> async(Dispatchers.Default, start = CoroutineStart.UNDISPATCHED) { c.receive(timeout = 60.seconds) } }
            val waitingThreads = threads.threadCount
            assertTrue(
                waitingThreads < 100 && waitingThreads - before < 20,
                "$n waiting receives hold threads: $before before, $waitingThreads while waiting",
            )
            assertTrue(receiving.none { it.isCompleted }, "a receive finished with nothing sent")
            // Each server flow sends its own id; each client flow gets exactly its own.
            servers.forEach { srv -> launch(Dispatchers.Default) { srv.send(srv.id.toByteArray()) } }
            val got = receiving.awaitAll()
            val mixedUp = flows.zip(got).count { (c, b) -> c.id != String(b!!) }
            assertEquals(0, mixedUp, "flows that got another's bytes")
            println("        $n flows waiting in receive: $waitingThreads threads in the JVM ($before before)")
            (flows + servers).forEach { it.close() }
            listener.close()
            for (c in clients) withTimeout(30.seconds) { c.openFlows.first { it == 0 } }
        }
        clients.forEach { it.close() }
    }

    s.testBlocking("async: java.io streams carry a flow's bytes; a read past the end is -1") {
        Endpoint(key(48), config("127.0.0.1")).use { server ->
            Endpoint(key(49), config()).use { client ->
                val (c, srv, listener) = opened(client, server, "streams")
                val up = bytes(700_000, 5)
                val writer = thread(name = "writer") {
                    c.outputStream(10.seconds).use { out ->
                        var at = 0
                        while (at < up.size) {
                            val n = minOf(4_096 + at % 3_000, up.size - at)
                            out.write(up, at, n)
                            at += n
                        }
                    }
                }
                val got = srv.inputStream(10.seconds).readBytes()
                writer.join(30_000)
                assertContentEquals(digest(up), digest(got))
                assertEquals(-1, srv.inputStream(1.seconds).read())
                // A read that times out is a SocketTimeoutException, as for a socket.
                assertFailsWith<java.net.SocketTimeoutException> { c.inputStream(50.milliseconds).read() }
                listOf(c, srv, listener).forEach { it.close() }
                assertFailsWith<java.io.IOException> { c.outputStream().write(1) }
            }
        }
    }

    s.testBlocking("async: msocket's logs reach a Kotlin sink at the level set") {
        val records = LinkedBlockingQueue<Triple<LogLevel, String, String>>()
        MSocketLog.setSink(LogSink { level, target, message -> records.put(Triple(level, target, message)) }, LogLevel.DEBUG)
        try {
            Endpoint(key(50), config("127.0.0.1")).use { server ->
                val name = uniqueName("logged")
                server.listen(name).close()
            }
            val deadline = System.nanoTime() + 10_000_000_000L
            while (true) {
                val left = deadline - System.nanoTime()
                val r = records.poll(maxOf(left, 0), TimeUnit.NANOSECONDS) ?: fail("no record from msocket within 10 s")
                assertTrue(r.first <= LogLevel.DEBUG, "$r")
                if (r.second.startsWith("msocket")) break
            }
        } finally {
            MSocketLog.setSink(null)
        }
    }

    s.testBlocking("async: a released endpoint ends its openFlows; calls on it fail Closed") {
        val ep = Endpoint(key(52), config("127.0.0.1"))
        val counts = async(start = CoroutineStart.UNDISPATCHED) { withTimeout(10.seconds) { val seen = mutableListOf<Int>(); ep.openFlows.collect { seen += it }; seen } }
        ep.close()
        assertEquals(listOf(0), counts.await())
        assertFailsWith<MsocketException.Closed> { ep.connect(uniqueName("late")) }
    }
}
