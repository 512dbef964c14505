/*
 * The Android bridge's logic without Android: kinds and metered flags from transports,
 * snapshots only of fully described networks, losses published at once and gains after
 * the settle time (on a virtual clock), ordering across a hand-off, address matching for
 * socket binding.
 */
package dev.msocket.test

import dev.msocket.InterfaceKind
import dev.msocket.NetworkInterface
import dev.msocket.net.Cancellable
import dev.msocket.net.Capabilities
import dev.msocket.net.Classify
import dev.msocket.net.NetworkSocketBinder
import dev.msocket.net.NetworkTracker
import dev.msocket.net.Scheduler
import dev.msocket.net.Transport
import dev.msocket.net.parseIpLiteral
import java.net.InetAddress
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertNull
import kotlin.test.assertTrue

/** A scheduler on virtual time: tasks run when the test advances the clock. */
class VirtualScheduler : Scheduler {
    private class Task(val at: Long, val run: Runnable, var cancelled: Boolean = false)

    var now = 0L
        private set
    private val tasks = mutableListOf<Task>()

    override fun schedule(delayMillis: Long, task: Runnable): Cancellable {
        val t = Task(now + delayMillis, task)
        tasks += t
        return Cancellable { t.cancelled = true }
    }

    fun advance(millis: Long) {
        val until = now + millis
        while (true) {
            val next = tasks.filter { !it.cancelled && it.at <= until }.minByOrNull { it.at } ?: break
            tasks.remove(next)
            now = next.at
            next.run.run()
        }
        now = until
    }

    val pending: Int get() = tasks.count { !it.cancelled }
}

private fun ip(text: String): InetAddress = parseIpLiteral(text) ?: error("not an IP: $text")

private val WIFI = Capabilities(setOf(Transport.WIFI), notMetered = true)
private val CELL = Capabilities(setOf(Transport.CELLULAR), notMetered = false)

private class Rig {
    val clock = VirtualScheduler()
    val published = mutableListOf<List<NetworkInterface>>()
    val tracker = NetworkTracker(publish = { published += it }, scheduler = clock, settleMillis = 100)

    fun wifi(handle: Long = 100, name: String = "wlan0", vararg addrs: String) {
        tracker.onAvailable(handle)
        tracker.onCapabilitiesChanged(handle, WIFI)
        tracker.onLinkPropertiesChanged(handle, name, 3, addrs.map(::ip))
    }

    fun cell(handle: Long = 200, vararg addrs: String) {
        tracker.onAvailable(handle)
        tracker.onLinkPropertiesChanged(handle, "rmnet_data0", 7, addrs.map(::ip))
        tracker.onCapabilitiesChanged(handle, CELL)
    }

    fun last(): List<NetworkInterface> = published.last()
    fun addresses(): List<String> = last().filter { it.up }.flatMap { it.addresses }
}

fun trackerTests(s: Suite) {
    s.test("tracker: transports map to kinds and the metered flag") {
        assertEquals(InterfaceKind.WIFI, Classify.kind(setOf(Transport.WIFI)))
        assertEquals(InterfaceKind.CELLULAR, Classify.kind(setOf(Transport.CELLULAR)))
        assertEquals(InterfaceKind.ETHERNET, Classify.kind(setOf(Transport.ETHERNET)))
        assertEquals(InterfaceKind.ETHERNET, Classify.kind(setOf(Transport.USB)))
        assertEquals(InterfaceKind.OTHER, Classify.kind(setOf(Transport.VPN, Transport.WIFI)), "a VPN ranks after real links")
        assertEquals(InterfaceKind.OTHER, Classify.kind(setOf(Transport.BLUETOOTH)))
        assertEquals(InterfaceKind.OTHER, Classify.kind(emptySet()))
        assertTrue(Classify.metered(CELL))
        assertFalse(Classify.metered(WIFI))
        assertTrue(Classify.metered(Capabilities(setOf(Transport.WIFI), notMetered = false)), "a metered hotspot")
    }

    s.test("tracker: a network is reported once fully described, after the settle time") {
        val r = Rig()
        r.tracker.onAvailable(100)
        r.tracker.onCapabilitiesChanged(100, WIFI)
        r.clock.advance(1000)
        assertTrue(r.published.isEmpty(), "no link properties yet: nothing to report")
        r.tracker.onLinkPropertiesChanged(100, "wlan0", 3, listOf(ip("192.0.2.7"), ip("fe80::1")))
        r.clock.advance(99)
        assertTrue(r.published.isEmpty(), "gains wait for the settle time")
        r.clock.advance(1)
        assertEquals(1, r.published.size)
        val wlan = r.last().single()
        assertEquals("wlan0", wlan.name)
        assertEquals(3u, wlan.index)
        assertEquals(InterfaceKind.WIFI, wlan.kind)
        assertFalse(wlan.metered)
        assertTrue(wlan.up)
        assertEquals(listOf("192.0.2.7"), wlan.addresses, "link-local addresses are left out")
    }

    s.test("tracker: a burst of callbacks becomes one snapshot") {
        val r = Rig()
        r.wifi(100, "wlan0", "192.0.2.7")
        r.cell(200, "10.0.0.7", "2001:db8::7")
        assertEquals(1, r.clock.pending)
        r.clock.advance(100)
        assertEquals(1, r.published.size)
        assertEquals(listOf("192.0.2.7", "10.0.0.7", "2001:db8:0:0:0:0:0:7"), r.addresses())
        val cell = r.last()[1]
        assertEquals(InterfaceKind.CELLULAR, cell.kind)
        assertTrue(cell.metered)
    }

    s.test("tracker: a lost network is published at once, its replacement after settling") {
        val r = Rig()
        r.wifi(100, "wlan0", "192.0.2.7")
        r.cell(200, "10.0.0.7")
        r.clock.advance(100)
        // Leaving Wi-Fi: Android may say lost before or after the new network appears.
        r.tracker.onLost(100)
        assertEquals(2, r.published.size, "a loss is not delayed")
        assertEquals(listOf("10.0.0.7"), r.addresses())
        r.wifi(101, "wlan0", "192.0.2.8")
        assertEquals(2, r.published.size)
        r.clock.advance(100)
        assertEquals(listOf("10.0.0.7", "192.0.2.8"), r.addresses())
    }

    s.test("tracker: a gain pending while a loss happens goes out with the loss") {
        val r = Rig()
        r.wifi(100, "wlan0", "192.0.2.7")
        r.clock.advance(100)
        r.cell(200, "10.0.0.7")
        r.tracker.onLost(100)
        assertEquals(listOf("10.0.0.7"), r.addresses(), "the full current state, in order")
        assertEquals(0, r.clock.pending, "nothing left to publish later")
    }

    s.test("tracker: blocked or suspended networks are down at once; unchanged states are not re-sent") {
        val r = Rig()
        r.cell(200, "10.0.0.7")
        r.clock.advance(100)
        r.tracker.onBlockedStatusChanged(200, true)
        assertEquals(2, r.published.size)
        assertFalse(r.last().single().up)
        r.tracker.onBlockedStatusChanged(200, false)
        r.clock.advance(100)
        assertTrue(r.last().single().up)
        r.tracker.onCapabilitiesChanged(200, CELL.copy(notSuspended = false))
        assertFalse(r.last().single().up, "suspended cellular is published at once")
        val count = r.published.size
        r.tracker.onCapabilitiesChanged(200, CELL.copy(notSuspended = false))
        r.clock.advance(1000)
        assertEquals(count, r.published.size, "same state, no new snapshot")
        r.tracker.republish()
        assertEquals(count + 1, r.published.size, "republish sends it anyway")
    }

    s.test("tracker: an address removed from a live network is published at once") {
        val r = Rig()
        r.wifi(100, "wlan0", "192.0.2.7", "2001:db8::7")
        r.clock.advance(100)
        r.tracker.onLinkPropertiesChanged(100, "wlan0", 3, listOf(ip("2001:db8::7")))
        assertEquals(listOf("2001:db8:0:0:0:0:0:7"), r.addresses())
    }

    s.test("tracker: a publisher that throws does not break the tracker") {
        val clock = VirtualScheduler()
        val errors = mutableListOf<Throwable>()
        var calls = 0
        val t = NetworkTracker(publish = { calls++; error("endpoint closed") }, scheduler = clock, onError = { errors += it })
        t.onAvailable(1)
        t.onCapabilitiesChanged(1, WIFI)
        t.onLinkPropertiesChanged(1, null, -5, listOf(ip("192.0.2.1")))
        clock.advance(100)
        assertEquals(1, calls)
        assertEquals(1, errors.size)
        assertEquals("net1", t.snapshot().single().name, "a nameless link gets a stable name")
        assertEquals(0u, t.snapshot().single().index)
    }

    s.test("tracker: sockets are bound to the network owning their address, in any text form") {
        val r = Rig()
        r.wifi(100, "wlan0", "192.0.2.7")
        r.cell(200, "2001:db8::7")
        assertEquals(100L, r.tracker.networkFor("192.0.2.7"))
        assertEquals(200L, r.tracker.networkFor("2001:db8::7"))
        assertEquals(200L, r.tracker.networkFor("2001:DB8:0:0:0:0:0:7"))
        assertNull(r.tracker.networkFor("192.0.2.99"))
        assertNull(r.tracker.networkFor("not.an.address"), "never a DNS lookup")
        assertNull(r.tracker.networkFor(""))
        val bound = mutableListOf<Pair<Long, Int>>()
        val binder = NetworkSocketBinder(r.tracker) { net, fd -> bound += net to fd }
        binder.bind(42, "2001:db8::7")
        binder.bind(43, "198.51.100.1")
        assertEquals(listOf(200L to 42), bound, "an address no network owns is left unbound")
    }
}
