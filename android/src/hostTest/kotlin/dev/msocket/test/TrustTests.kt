/*
 * Whom a flow reaches and who may open one, through the Kotlin API against the real
 * library and msocketd: a peer named with its key fingerprint, an allow-listed listener
 * facing a stranger and a friend, and pins kept by a PinStore written in Kotlin (a changed
 * key is refused until the user names the new one; a store that throws fails the connect,
 * not the process). The file store keeps pins across instances in the CLI's format.
 */
package dev.msocket.test

import dev.msocket.Endpoint
import dev.msocket.FilePinStore
import dev.msocket.MSocket
import dev.msocket.MemoryPinStore
import dev.msocket.PinStore
import dev.msocket.PinnedKeys
import dev.msocket.ffi.MsocketException
import java.io.File
import java.io.IOException
import java.nio.file.Files
import java.util.Collections
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.async
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue

/** A PinStore an app would write: here over a map, recording each call, and breakable. */
private class RecordingPins : PinStore {
    val pins = MemoryPinStore()
    val calls: MutableList<String> = Collections.synchronizedList(mutableListOf())
    @Volatile var broken: Exception? = null

    override fun get(name: String): PinnedKeys? {
        calls += "get $name"
        broken?.let { throw it }
        return pins.get(name)
    }

    override fun set(name: String, pin: PinnedKeys) {
        calls += "set $name"
        broken?.let { throw it }
        pins.set(name, pin)
    }

    override fun remove(name: String) {
        calls += "remove $name"
        pins.remove(name)
    }
}

fun trustTests(s: Suite) {
    s.testBlocking("trust: NAME#FINGERPRINT reaches that key only; bad fingerprints are refused") {
        Endpoint(key(20), config("127.0.0.1")).use { server ->
            Endpoint(key(21), config()).use { client ->
                val name = uniqueName("keyed")
                val listener = server.listen(name)
                val accepted = async { listener.accept(10.seconds) }
                val c = client.connect("$name#${server.fingerprint}", 10.seconds)
                val srv = accepted.await()
                assertEquals(name, c.name)
                assertEquals(server.fingerprint, c.peerFingerprint)
                assertEquals(client.fingerprint, srv.peerFingerprint, "the server knows who connected")

                val other = MSocket.fingerprint(key(22))
                val wrong = assertFailsWith<MsocketException.WrongKey> { client.connect("$name#$other", 10.seconds) }
                assertTrue(wrong.message!!.contains(other) && wrong.message!!.contains(server.fingerprint), wrong.message)
                val short = assertFailsWith<MsocketException.InvalidArgument> { client.connect("$name#abc") }
                assertTrue(short.message!!.contains("hex digits"), short.message)
                assertFailsWith<MsocketException.InvalidArgument> { client.connect("$name#${"g".repeat(32)}") }
                listOf(c, srv, listener).forEach { it.close() }
            }
        }
    }

    s.testBlocking("trust: an allow-list refuses a stranger and admits the allowed key") {
        Endpoint(key(23), config()).use { friend ->
            Endpoint(key(24), config()).use { stranger ->
                val guarded = config("127.0.0.1").copy(allowedPeers = listOf(friend.fingerprint))
                Endpoint(key(25), guarded).use { server ->
                    val name = uniqueName("guarded")
                    val listener = server.listen(name)
                    val refused = assertFailsWith<MsocketException.NotAllowed> { stranger.connect(name, 10.seconds) }
                    assertTrue(refused.message!!.contains(name), refused.message)
                    assertFailsWith<MsocketException.Timeout>("nothing of the stranger reaches accept") {
                        listener.accept(200.milliseconds)
                    }
                    val accepted = async { listener.accept(10.seconds) }
                    val c = friend.connect(name, 10.seconds)
                    val srv = accepted.await()
                    assertEquals(friend.fingerprint, srv.peerFingerprint)
                    c.send("hello".encodeToByteArray())
                    c.finish()
                    assertContentEquals("hello".encodeToByteArray(), receiveAll(srv))
                    listOf(c, srv, listener).forEach { it.close() }
                }
                val bad = assertFailsWith<MsocketException.InvalidArgument> {
                    Endpoint(key(25), config().copy(allowedPeers = listOf(friend.fingerprint, "not-a-key")))
                }
                assertTrue(bad.message!!.contains("not-a-key"), bad.message)
            }
        }
    }

    s.testBlocking("trust: a Kotlin PinStore pins the first key; a changed key is refused until named") {
        val store = RecordingPins()
        Endpoint(key(26), config("127.0.0.1")).use { alice ->
            Endpoint(key(27), config("127.0.0.1")).use { bob ->
                Endpoint(key(28), config(), pins = store).use { client ->
                    val aliceName = uniqueName("alice")
                    val bobName = uniqueName("bob")
                    val aliceListener = alice.listen(aliceName)
                    val bobListener = bob.listen(bobName)

                    client.connect(aliceName, 10.seconds).close()
                    assertTrue("set $aliceName" in store.calls, "${store.calls}")
                    val pin = assertNotNull(store.pins.get(aliceName))
                    assertEquals(alice.fingerprint, pin.fingerprint)
                    assertEquals(32, pin.signingKey.size)
                    assertTrue(pin.seq > 0, "$pin")
                    client.connect(aliceName, 10.seconds).close()

                    // The store remembers other keys for bob's name (as after bob's keys
                    // changed, or an impostor took the name over): refused.
                    store.pins.set(bobName, pin)
                    val changed = assertFailsWith<MsocketException.KeyChanged> { client.connect(bobName, 10.seconds) }
                    val accept = "$bobName#${bob.fingerprint}"
                    assertTrue(changed.message!!.contains(alice.fingerprint) && changed.message!!.contains(accept), changed.message)
                    assertEquals(pin, store.pins.get(bobName), "the pin stands")
                    // Naming the new key accepts it.
                    val accepted = async { bobListener.accept(10.seconds) }
                    client.connect(accept, 10.seconds).close()
                    accepted.await().close()
                    assertEquals(bob.fingerprint, store.pins.get(bobName)?.fingerprint)

                    // A store that throws fails the connect with its reason, and nothing else.
                    store.broken = IOException("storage is full")
                    val failed = assertFailsWith<MsocketException.PinStore> { client.connect(aliceName, 10.seconds) }
                    assertTrue(failed.message!!.contains("storage is full"), failed.message)
                    store.broken = null
                    client.connect(aliceName, 10.seconds).close()
                    listOf(aliceListener, bobListener).forEach { it.close() }
                }
            }
        }
    }

    s.testBlocking("trust: a FilePinStore keeps pins across instances and endpoints") {
        val dir = Files.createTempDirectory("msocket-pins").toFile()
        try {
            val file = File(dir, "app/pins")
            Endpoint(key(29), config("127.0.0.1")).use { server ->
                val name = uniqueName("filed")
                val listener = server.listen(name)
                Endpoint(key(30), config(), pins = FilePinStore(file)).use { it.connect(name, 10.seconds).close() }
                val reopened = FilePinStore(file)
                assertEquals(server.fingerprint, reopened.get(name)?.fingerprint)
                assertTrue(file.readText().startsWith("# msocket pins: NAME SIGNING-KEY NOISE-KEY SEQ\n"), file.readText())
                // Another endpoint with the same file trusts the same key, and only it.
                reopened.set(name, PinnedKeys(ByteArray(32) { 1 }, ByteArray(32) { 2 }, 1))
                Endpoint(key(30), config(), pins = FilePinStore(file)).use { client ->
                    assertFailsWith<MsocketException.KeyChanged> { client.connect(name, 10.seconds) }
                }
                reopened.remove(name)
                assertNull(reopened.get(name))
                listener.close()
            }
            val pin = PinnedKeys(ByteArray(32) { it.toByte() }, ByteArray(32) { (255 - it).toByte() }, 1733356800123)
            assertEquals(pin, PinnedKeys.decode(pin.encode()))
            assertFailsWith<IllegalArgumentException> { PinnedKeys.decode("abc def 1") }
            file.appendText("broken.test 00 11\n")
            val e = assertFailsWith<IOException> { FilePinStore(file).get("x.test") }
            assertTrue(e.message!!.contains("line 2"), e.message)
            val bad = PinnedKeys(ByteArray(31), ByteArray(32), 1)
            assertFailsWith<MsocketException.InvalidArgument> { bad.fingerprint }
        } finally {
            dir.deleteRecursively()
        }
    }
}
