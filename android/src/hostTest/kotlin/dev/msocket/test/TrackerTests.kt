/*
 * The Android bridge's logic without Android: kinds and metered flags from transports,
 * snapshots only of fully described networks, losses published at once and gains after
 * the settle time (on a virtual clock), ordering across a hand-off, address matching for
 * socket binding; captive portals and unvalidated networks, VPNs, the CLAT address of an
 * IPv6-only network, the cellular request held only while flows are open, typed
 * registration errors, and callbacks after close.
 */
package dev.msocket.test

import dev.msocket.InterfaceKind
import dev.msocket.NetworkInterface
import dev.msocket.net.Cancellable
import dev.msocket.net.Capabilities
import dev.msocket.net.CellularDemand
import dev.msocket.net.Clat
import dev.msocket.net.Classify
import dev.msocket.net.ExecutorScheduler
import dev.msocket.net.InterfaceAddresses
import dev.msocket.net.NetworkBridgeException
import dev.msocket.net.NetworkSocketBinder
import dev.msocket.net.NetworkTracker
import dev.msocket.net.Scheduler
import dev.msocket.net.Transport
import dev.msocket.net.parseIpLiteral
import java.net.InetAddress
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.MutableStateFlow
import kotlin.test.assertIs
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
private val VPN = Capabilities(setOf(Transport.VPN), notMetered = true)

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

    s.test("tracker: a captive portal is reported but never up") {
        val r = Rig()
        r.cell(200, "10.0.0.7")
        r.clock.advance(100)
        r.tracker.onAvailable(100)
        r.tracker.onCapabilitiesChanged(100, WIFI.copy(validated = false, captivePortal = true))
        r.tracker.onLinkPropertiesChanged(100, "wlan0", 3, listOf(ip("192.0.2.7")))
        r.clock.advance(100)
        val wlan = r.last().first { it.name == "wlan0" }
        assertFalse(wlan.up, "the portal answers for everyone: no subflow on it")
        assertEquals(listOf("10.0.0.7"), r.addresses())
        // Signed in: the platform validates it, and it is used.
        r.tracker.onCapabilitiesChanged(100, WIFI)
        r.clock.advance(100)
        assertEquals(listOf("10.0.0.7", "192.0.2.7"), r.addresses())
        // Alone, a captive portal is still not up.
        r.tracker.onLost(200)
        r.tracker.onCapabilitiesChanged(100, WIFI.copy(validated = false, captivePortal = true))
        assertEquals(emptyList(), r.addresses(), "published at once: a loss")
    }

    s.test("tracker: an unvalidated network is up only while no validated one is") {
        val r = Rig()
        r.tracker.onAvailable(100)
        r.tracker.onCapabilitiesChanged(100, WIFI.copy(validated = false))
        r.tracker.onLinkPropertiesChanged(100, "wlan0", 3, listOf(ip("192.0.2.7")))
        r.clock.advance(100)
        assertEquals(listOf("192.0.2.7"), r.addresses(), "alone it is all there is")
        r.cell(200, "10.0.0.7")
        assertEquals(listOf("10.0.0.7"), r.addresses(), "a validated network appeared: the unvalidated one goes down at once")
        r.tracker.onCapabilitiesChanged(100, WIFI)
        r.clock.advance(100)
        assertEquals(listOf("192.0.2.7", "10.0.0.7"), r.addresses(), "validated: used again")
    }

    s.test("tracker: while a VPN is up only the VPN is reported and no socket is bound") {
        val r = Rig()
        r.wifi(100, "wlan0", "192.0.2.7")
        r.cell(200, "10.0.0.7")
        r.clock.advance(100)
        assertEquals(100L, r.tracker.networkFor("192.0.2.7"))
        r.tracker.onAvailable(300)
        r.tracker.onCapabilitiesChanged(300, VPN)
        assertFalse(r.tracker.vpnActive(), "not yet fully described")
        r.tracker.onLinkPropertiesChanged(300, "tun0", 9, listOf(ip("10.8.0.2")))
        assertTrue(r.tracker.vpnActive())
        assertEquals(listOf("tun0"), r.last().map { it.name }, "published at once: the underlying addresses are gone")
        assertEquals(listOf("10.8.0.2"), r.addresses())
        assertEquals(InterfaceKind.OTHER, r.last().single().kind)
        assertNull(r.tracker.networkFor("192.0.2.7"), "binding to Wi-Fi would bypass the VPN")
        assertNull(r.tracker.networkFor("10.8.0.2"), "the system routes into the VPN by itself")
        val bound = mutableListOf<Long>()
        NetworkSocketBinder(r.tracker) { net, _ -> bound += net }.bind(5, "192.0.2.7")
        assertEquals(emptyList(), bound)
        r.tracker.onLost(300)
        assertEquals(listOf("192.0.2.7", "10.0.0.7"), r.addresses(), "the VPN gone: the real networks again")
        assertEquals(100L, r.tracker.networkFor("192.0.2.7"))
    }

    s.test("tracker: an IPv6-only network reports its CLAT address") {
        val system = InterfaceAddresses { name ->
            when (name) {
                "v4-rmnet_data0" -> listOf(ip("192.0.0.4"), ip("fe80::4"))
                "v4-wlan0" -> listOf(ip("192.0.0.5"))
                else -> null
            }
        }
        val v6 = listOf(ip("2001:db8::7"), ip("fe80::7"))
        assertEquals(v6 + ip("192.0.0.4"), Clat.withClat("rmnet_data0", v6, system))
        assertEquals(listOf(ip("10.0.0.7"), ip("2001:db8::7")), Clat.withClat("rmnet_data0", listOf(ip("10.0.0.7"), ip("2001:db8::7")), system), "dual stack: no CLAT")
        assertEquals(v6, Clat.withClat("rmnet_data1", v6, system), "no stacked interface (yet)")
        assertEquals(v6, Clat.withClat(null, v6, system))
        assertEquals(emptyList(), Clat.withClat("wlan0", emptyList(), system), "no address at all: nothing to translate")
        val r = Rig()
        r.tracker.onAvailable(200)
        r.tracker.onCapabilitiesChanged(200, CELL)
        r.tracker.onLinkPropertiesChanged(200, "rmnet_data0", 7, Clat.withClat("rmnet_data0", v6, system))
        r.clock.advance(100)
        assertEquals(listOf("2001:db8:0:0:0:0:0:7", "192.0.0.4"), r.addresses())
        assertEquals(200L, r.tracker.networkFor("192.0.0.4"), "an IPv4 subflow through the CLAT is bound to cellular")
        assertEquals(listOf(ip("127.0.0.1")), InterfaceAddresses.SYSTEM.of("lo")?.filter { it is java.net.Inet4Address }, "the system lookup sees real interfaces")
        assertNull(InterfaceAddresses.SYSTEM.of("v4-no-such-interface"))
    }

    s.test("tracker: an IPv6-only network's NAT64 prefix is reported with it") {
        val r = Rig()
        r.tracker.onAvailable(300)
        r.tracker.onCapabilitiesChanged(300, CELL)
        r.tracker.onLinkPropertiesChanged(300, "rmnet_data2", 9, listOf(ip("2001:db8::9")), "64:ff9b::/96")
        r.clock.advance(100)
        assertEquals("64:ff9b::/96", r.tracker.snapshot().single().nat64Prefix)
        r.tracker.onLinkPropertiesChanged(300, "rmnet_data2", 9, listOf(ip("2001:db8::9")))
        assertNull(r.tracker.snapshot().single().nat64Prefix, "a network that stopped translating says so")
    }

    s.test("tracker: cellular is requested only while flows are open") {
        val flows = MutableStateFlow(0)
        val calls = mutableListOf<String>()
        val errors = mutableListOf<Throwable>()
        var refuse = false
        val demand = CellularDemand(
            openFlows = flows,
            request = { if (refuse) throw NetworkBridgeException.TooManyRequests("no", null); calls += "request" },
            release = { calls += "release" },
            onError = { errors += it },
        )
        val scope = CoroutineScope(Dispatchers.Unconfined)
        demand.start(scope)
        assertEquals(emptyList(), calls, "no flow: no request")
        flows.value = 1
        assertEquals(listOf("request"), calls)
        assertTrue(demand.requested.value)
        flows.value = 3
        flows.value = 2
        assertEquals(listOf("request"), calls, "held while the count stays above 0")
        flows.value = 0
        assertEquals(listOf("request", "release"), calls)
        assertFalse(demand.requested.value)
        refuse = true
        flows.value = 1
        assertEquals(1, errors.size, "a refused request is reported, not thrown")
        assertIs<NetworkBridgeException.TooManyRequests>(errors.single())
        assertFalse(demand.requested.value)
        flows.value = 0
        refuse = false
        flows.value = 1
        assertEquals(listOf("request", "release", "request"), calls, "the next rise tries again")
        demand.close()
        assertEquals(listOf("request", "release", "request", "release"), calls, "close releases a held request")
        demand.close()
        flows.value = 0
        flows.value = 5
        assertEquals(4, calls.size, "nothing after close")
        scope.cancel()
    }

    s.test("tracker: registration failures become typed errors") {
        assertIs<NetworkBridgeException.PermissionDenied>(NetworkBridgeException.from("registerNetworkCallback", SecurityException("ACCESS_NETWORK_STATE")))
        class TooManyRequestsException : RuntimeException()
        val many = NetworkBridgeException.from("requestNetwork", TooManyRequestsException())
        assertIs<NetworkBridgeException.TooManyRequests>(many)
        assertTrue(many.message!!.contains("requestNetwork"), many.message)
        assertIs<NetworkBridgeException.Refused>(NetworkBridgeException.from("requestNetwork", IllegalArgumentException("bad request")))
    }

    s.test("tracker: callbacks after close are ignored; a closed scheduler refuses quietly") {
        val r = Rig()
        r.wifi(100, "wlan0", "192.0.2.7")
        r.clock.advance(100)
        val count = r.published.size
        r.tracker.close()
        r.tracker.close()
        r.tracker.onLost(100)
        r.cell(200, "10.0.0.7")
        r.tracker.republish()
        r.clock.advance(1000)
        assertEquals(count, r.published.size, "nothing published after close")
        val executor = ExecutorScheduler()
        executor.close()
        executor.schedule(10) { error("must not run") }.cancel()
        val live = NetworkTracker(publish = {}, scheduler = executor)
        live.onAvailable(1)
        live.onCapabilitiesChanged(1, WIFI)
        live.onLinkPropertiesChanged(1, "wlan0", 3, listOf(ip("192.0.2.1")))
        assertEquals(1, live.snapshot().size)
    }
}
