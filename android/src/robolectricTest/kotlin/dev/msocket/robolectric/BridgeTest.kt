/*
 * AndroidNetworkBridge against the Android framework (Robolectric, API 24, 26, 29, 34)
 * and a real endpoint: the real libmsocket_ffi.so through JNA, a real `msocketd name`
 * (its URL in the system property `msocket.names`), a real listener on loopback.
 *
 * The tests play ConnectivityManager: they call the callback the bridge registered with
 * Robolectric's Network, NetworkCapabilities and LinkProperties objects, as the platform
 * would, and check what reaches the endpoint (the addresses it publishes, the paths its
 * flows take), which sockets Network.bindSocket got, and what the bridge asks of
 * ConnectivityManager. Networks use loopback addresses (127.0.0.x, the endpoint has
 * useLoopback). The settle timer runs on a clock the test advances, so the first
 * snapshot reaches the endpoint before `advance` returns; later moves are awaited as the
 * flow's events. Every transfer is compared by SHA-256.
 */
package dev.msocket.robolectric

import android.content.Context
import android.net.ConnectivityManager
import android.net.LinkAddress
import android.net.LinkProperties
import android.net.Network
import android.net.NetworkCapabilities
import android.net.NetworkRequest
import android.os.Build
import dev.msocket.Endpoint
import dev.msocket.EndpointConfig
import dev.msocket.PeerFlow
import dev.msocket.FlowEvent
import dev.msocket.android.AndroidNetworkBridge
import dev.msocket.net.Cancellable
import dev.msocket.net.InterfaceAddresses
import dev.msocket.net.NetworkBridgeException
import dev.msocket.net.Scheduler
import java.io.ByteArrayOutputStream
import java.io.File
import java.net.InetAddress
import java.security.MessageDigest
import java.util.concurrent.atomic.AtomicInteger
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.After
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RuntimeEnvironment
import org.robolectric.annotation.Config
import org.robolectric.annotation.Implementation
import org.robolectric.annotation.Implements
import org.robolectric.shadow.api.Shadow
import org.robolectric.shadows.ShadowConnectivityManager
import org.robolectric.shadows.ShadowNetwork
import org.robolectric.shadows.ShadowNetworkCapabilities

/** ConnectivityManager that refuses registrations with [refuse] when it is set. */
@Implements(ConnectivityManager::class)
class RefusingConnectivityManager : ShadowConnectivityManager() {
    @Implementation
    override fun registerNetworkCallback(request: NetworkRequest, callback: ConnectivityManager.NetworkCallback) {
        refuse?.let { throw it }
        super.registerNetworkCallback(request, callback)
    }

    @Implementation
    override fun requestNetwork(request: NetworkRequest, callback: ConnectivityManager.NetworkCallback) {
        refuse?.let { throw it }
        super.requestNetwork(request, callback)
    }

    companion object {
        @Volatile
        var refuse: RuntimeException? = null
    }
}

/** A settle timer that fires when the test says so. */
class ManualClock : Scheduler {
    private val due = mutableListOf<Pair<Runnable, BooleanArray>>()

    @Synchronized
    override fun schedule(delayMillis: Long, task: Runnable): Cancellable {
        val cancelled = booleanArrayOf(false)
        due += task to cancelled
        return Cancellable { synchronized(this) { cancelled[0] = true } }
    }

    /** Runs every task scheduled so far (the settle time has passed). */
    fun advance() {
        val now = synchronized(this) { due.toList().also { due.clear() } }
        for ((task, cancelled) in now) if (!synchronized(this) { cancelled[0] }) task.run()
    }
}

private val namesUrl: String
    get() = System.getProperty("msocket.names") ?: error("set -Dmsocket.names=tcp://HOST:PORT (a running msocketd)")
private val serial = AtomicInteger()
private fun uniqueName(what: String) = "$what-${ProcessHandle.current().pid()}-${Build.VERSION.SDK_INT}-${serial.incrementAndGet()}.test"
private fun key(b: Int) = ByteArray(32) { (b * 37 + it).toByte() }
private fun sha256(b: ByteArray): ByteArray = MessageDigest.getInstance("SHA-256").digest(b)
private fun data(len: Int, seed: Int) = ByteArray(len) { (it * 13 + it / 509 + seed).toByte() }

private fun config(vararg local: String, loopback: Boolean = false) = EndpointConfig(
    namesUrl = namesUrl,
    connectTimeout = 10.seconds,
    flowDeadline = 20.seconds,
    useLoopback = loopback,
    localAddresses = local.toList(),
)

/** The inode of the TCP socket from [local] to [remote] (`IP:PORT`, IPv4), from /proc/net/tcp. */
private fun socketInode(local: String, remote: String): String? {
    fun hex(address: String): String {
        val b = InetAddress.getByName(address.substringBeforeLast(':')).address.map { it.toInt() and 0xff }
        return "%02X%02X%02X%02X:%04X".format(b[3], b[2], b[1], b[0], address.substringAfterLast(':').toInt())
    }
    return File("/proc/net/tcp").readLines().drop(1).map { it.trim().split(Regex("\\s+")) }
        .firstOrNull { it[1] == hex(local) && it[2] == hex(remote) }?.get(9)
}

@RunWith(MsocketTestRunner::class)
@Config(
    sdk = [24, 26, 29, 34],
    manifest = Config.NONE,
    shadows = [RecordingNetwork::class, DetachableParcelFileDescriptor::class, RefusingConnectivityManager::class],
)
class BridgeTest {
    private val context: Context get() = RuntimeEnvironment.getApplication()
    private val connectivity get() = context.getSystemService(Context.CONNECTIVITY_SERVICE) as ConnectivityManager
    private val shadowCm get() = Shadow.extract<ShadowConnectivityManager>(connectivity)
    private val closeLater = mutableListOf<AutoCloseable>()
    private val clock = ManualClock()

    @Before
    fun clean() {
        RecordingNetwork.binds.clear()
        RefusingConnectivityManager.refuse = null
    }

    @After
    fun closeAll() {
        closeLater.asReversed().forEach { runCatching { it.close() } }
    }

    private fun <T : AutoCloseable> T.closing(): T = also { closeLater += it }

    private fun bridge(
        keepCellular: Boolean = false,
        interfaces: InterfaceAddresses = InterfaceAddresses.SYSTEM,
    ) = AndroidNetworkBridge(
        context,
        keepCellular = keepCellular,
        interfaces = interfaces,
        dispatcher = Dispatchers.Unconfined,
        scheduler = clock,
        onError = { fail("the bridge reported $it") },
    ).closing()

    /** The callback the bridge registered for every network. */
    private fun networkCallback(): ConnectivityManager.NetworkCallback = shadowCm.networkCallbacks.single()

    private fun caps(transport: Int, validated: Boolean = true, captive: Boolean = false, metered: Boolean = false): NetworkCapabilities {
        val caps = ShadowNetworkCapabilities.newInstance()
        val shadow = Shadow.extract<ShadowNetworkCapabilities>(caps)
        shadow.addTransportType(transport)
        shadow.addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
        if (!metered) shadow.addCapability(NetworkCapabilities.NET_CAPABILITY_NOT_METERED)
        if (validated) shadow.addCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED)
        if (captive) shadow.addCapability(NetworkCapabilities.NET_CAPABILITY_CAPTIVE_PORTAL)
        if (Build.VERSION.SDK_INT >= 28) shadow.addCapability(NetworkCapabilities.NET_CAPABILITY_NOT_SUSPENDED)
        if (transport == NetworkCapabilities.TRANSPORT_VPN) {
            shadow.removeCapability(NetworkCapabilities.NET_CAPABILITY_NOT_VPN)
        } else {
            shadow.addCapability(NetworkCapabilities.NET_CAPABILITY_NOT_VPN)
        }
        return caps
    }

    private fun link(name: String, vararg addresses: String) = LinkProperties().apply {
        interfaceName = name
        for (a in addresses) addLinkAddress(LinkAddress(InetAddress.getByName(a), if (a.contains(':')) 128 else 8))
    }

    /** Delivers a network the way Android O and later do: available, capabilities, link properties. */
    private fun deliver(netId: Int, caps: NetworkCapabilities, lp: LinkProperties): Network {
        val network = ShadowNetwork.newInstance(netId)
        val cb = networkCallback()
        cb.onAvailable(network)
        cb.onCapabilitiesChanged(network, caps)
        cb.onLinkPropertiesChanged(network, lp)
        return network
    }

    private fun shadowOf(network: Network) = Shadow.extract<ShadowNetwork>(network)

    /** A server on 127.0.0.1 listening on a fresh name, and that name. */
    private suspend fun server(): Pair<Endpoint, dev.msocket.Listener> {
        val server = Endpoint(key(1), config("127.0.0.1")).closing()
        return server to server.listen(uniqueName("server")).closing()
    }

    private suspend fun connect(phone: Endpoint, listener: dev.msocket.Listener): Pair<PeerFlow, PeerFlow> = coroutineScope {
        val accepted = async { listener.accept(10.seconds) }
        val c = phone.connect(listener.name, 10.seconds).closing()
        c to accepted.await().closing()
    }

    /** Waits (10 s at most) until [flow]'s events, from where they were last read, include one matching each of [tests]. */
    private suspend fun awaitEvents(flow: PeerFlow, vararg tests: (FlowEvent) -> Boolean) {
        val seen = BooleanArray(tests.size)
        withTimeout(10_000) {
            flow.events.first { e ->
                tests.forEachIndexed { i, t -> if (t(e)) seen[i] = true }
                seen.all { it }
            }
        }
    }

    private suspend fun receiveAll(flow: PeerFlow): ByteArray {
        val out = ByteArrayOutputStream()
        while (true) out.write(flow.receive(64 * 1024, 10.seconds) ?: return out.toByteArray())
    }

    /** The binds recorded for the socket of [flow]'s path from [localIp]. */
    private fun bindsOfPath(flow: PeerFlow, localIp: String): List<Bind> {
        val path = flow.paths().firstOrNull { it.local.startsWith("$localIp:") } ?: throw AssertionError("no path from $localIp: ${flow.paths()}")
        val inode = socketInode(path.local, path.remote) ?: throw AssertionError("no socket ${path.local} -> ${path.remote} in /proc/net/tcp")
        return RecordingNetwork.binds.filter { it.target == "socket:[$inode]" }
    }

    @Test
    fun networksReachTheEndpointAndSocketsAreBoundToThem() = runBlocking {
        val (_, listener) = server()
        val bridge = bridge()
        val phone = Endpoint(key(2), config(loopback = true), bridge.socketBinder).closing()
        bridge.start(phone)
        val wifi = deliver(100, caps(NetworkCapabilities.TRANSPORT_WIFI), link("wlan0", "127.0.0.2"))
        clock.advance()
        val own = phone.listen(uniqueName("phone")).closing()
        assertTrue("${phone.publishedAddresses}", phone.publishedAddresses.isNotEmpty() && phone.publishedAddresses.all { it.startsWith("127.0.0.2:") })

        val (c, srv) = connect(phone, listener)
        val first = bindsOfPath(c, "127.0.0.2")
        assertEquals("Network.bindSocket got the path's own socket, on the Wi-Fi network", listOf(100), first.map { it.netId })
        assertTrue(shadowOf(wifi).boundSocketCount() >= 1)
        assertTrue("msocket's socket stays open after binding: ${c.paths()}", descriptorTarget(first.single().fd) == first.single().target)

        val one = data(300_000, 1)
        val two = data(300_000, 2)
        val received = async(Dispatchers.IO) { receiveAll(srv) }
        c.send(one)
        // Leaving Wi-Fi for another network: lost first, the new one after.
        networkCallback().onLost(wifi)
        deliver(101, caps(NetworkCapabilities.TRANSPORT_WIFI), link("wlan0", "127.0.0.3"))
        clock.advance()
        awaitEvents(
            c,
            { it is FlowEvent.Moved && it.addresses == listOf("127.0.0.3") },
            { it is FlowEvent.PathAdded && it.local.startsWith("127.0.0.3:") },
        )
        assertTrue("${phone.publishedAddresses}", phone.publishedAddresses.isNotEmpty() && phone.publishedAddresses.all { it.startsWith("127.0.0.3:") })
        assertEquals("the new path's socket was bound to the new network", listOf(101), bindsOfPath(c, "127.0.0.3").map { it.netId })
        c.send(two)
        c.finish()
        assertArrayEquals(sha256(one + two), sha256(received.await()))
        own.close()
    }

    @Test
    fun beforeOreoANetworkIsDescribedFromOnAvailableAlone() = runBlocking {
        val bridge = bridge()
        val phone = Endpoint(key(3), config(loopback = true), bridge.socketBinder).closing()
        bridge.start(phone)
        val network = ShadowNetwork.newInstance(110)
        shadowCm.setNetworkCapabilities(network, caps(NetworkCapabilities.TRANSPORT_WIFI))
        shadowCm.setLinkProperties(network, link("wlan0", "127.0.0.4"))
        networkCallback().onAvailable(network)
        clock.advance()
        if (Build.VERSION.SDK_INT < Build.VERSION_CODES.O) {
            assertEquals(listOf("127.0.0.4"), bridge.tracker.snapshot().flatMap { it.addresses })
            val own = phone.listen(uniqueName("preo")).closing()
            assertTrue("${phone.publishedAddresses}", phone.publishedAddresses.isNotEmpty() && phone.publishedAddresses.all { it.startsWith("127.0.0.4:") })
            own.close()
        } else {
            // From O on, the platform follows onAvailable with both; asking would only race them.
            assertEquals(emptyList<Any>(), bridge.tracker.snapshot())
            networkCallback().onCapabilitiesChanged(network, caps(NetworkCapabilities.TRANSPORT_WIFI))
            networkCallback().onLinkPropertiesChanged(network, link("wlan0", "127.0.0.4"))
            clock.advance()
            assertEquals(listOf("127.0.0.4"), bridge.tracker.snapshot().flatMap { it.addresses })
        }
    }

    @Test
    fun aCaptivePortalIsNotUsed() = runBlocking {
        val (_, listener) = server()
        val bridge = bridge()
        val phone = Endpoint(key(4), config(loopback = true), bridge.socketBinder).closing()
        bridge.start(phone)
        val portal = deliver(120, caps(NetworkCapabilities.TRANSPORT_WIFI, validated = false, captive = true), link("wlan0", "127.0.0.5"))
        val cell = deliver(121, caps(NetworkCapabilities.TRANSPORT_CELLULAR, metered = true), link("rmnet_data0", "127.0.0.6"))
        clock.advance()
        val own = phone.listen(uniqueName("portal")).closing()
        assertTrue("${phone.publishedAddresses}", phone.publishedAddresses.isNotEmpty() && phone.publishedAddresses.all { it.startsWith("127.0.0.6:") })
        val (c, srv) = connect(phone, listener)
        assertTrue("${c.paths()}", c.paths().isNotEmpty() && c.paths().all { it.local.startsWith("127.0.0.6:") })
        assertEquals(0, shadowOf(portal).boundSocketCount())
        assertEquals(listOf(121), bindsOfPath(c, "127.0.0.6").map { it.netId })
        val bytes = data(200_000, 3)
        val received = async(Dispatchers.IO) { receiveAll(srv) }
        c.send(bytes)
        c.finish()
        assertArrayEquals(sha256(bytes), sha256(received.await()))
        assertTrue(shadowOf(cell).boundSocketCount() >= 1)
        // Alone, the portal is still not up (an unvalidated network alone would be).
        networkCallback().onLost(cell)
        assertEquals(listOf(false), bridge.tracker.snapshot().map { it.up })
        own.close()
    }

    @Test
    fun whileAVpnIsUpTrafficFollowsItAndNoSocketIsBound() = runBlocking {
        val (_, listener) = server()
        val bridge = bridge()
        val phone = Endpoint(key(5), config(loopback = true), bridge.socketBinder).closing()
        bridge.start(phone)
        val wifi = deliver(130, caps(NetworkCapabilities.TRANSPORT_WIFI), link("wlan0", "127.0.0.8"))
        val vpn = deliver(131, caps(NetworkCapabilities.TRANSPORT_VPN), link("tun0", "127.0.0.9"))
        clock.advance()
        assertEquals(listOf("tun0"), bridge.tracker.snapshot().map { it.name })
        val own = phone.listen(uniqueName("vpn")).closing()
        assertTrue("${phone.publishedAddresses}", phone.publishedAddresses.isNotEmpty() && phone.publishedAddresses.all { it.startsWith("127.0.0.9:") })
        val (c, srv) = connect(phone, listener)
        assertTrue("${c.paths()}", c.paths().isNotEmpty() && c.paths().all { it.local.startsWith("127.0.0.9:") })
        assertEquals("a bound socket would bypass the VPN", 0, shadowOf(wifi).boundSocketCount() + shadowOf(vpn).boundSocketCount())
        assertEquals(emptyList<Bind>(), RecordingNetwork.binds)
        val bytes = data(200_000, 4)
        val received = async(Dispatchers.IO) { receiveAll(srv) }
        c.send(bytes)
        c.finish()
        assertArrayEquals(sha256(bytes), sha256(received.await()))
        own.close()
    }

    @Test
    fun anIpv6OnlyNetworkReportsItsClatAddressForIpv4Peers() = runBlocking {
        val (_, listener) = server()
        // The host has no v4-rmnet_data0: the stacked interface's address is given here.
        val bridge = bridge(interfaces = { name -> if (name == "v4-rmnet_data0") listOf(InetAddress.getByName("127.0.0.10")) else null })
        val phone = Endpoint(key(6), config(loopback = true), bridge.socketBinder).closing()
        bridge.start(phone)
        deliver(140, caps(NetworkCapabilities.TRANSPORT_CELLULAR, metered = true), link("rmnet_data0", "::1"))
        clock.advance()
        assertEquals(listOf("0:0:0:0:0:0:0:1", "127.0.0.10"), bridge.tracker.snapshot().single().addresses)
        val (c, srv) = connect(phone, listener)
        assertEquals("the IPv4 subflow through the CLAT is bound to cellular", listOf(140), bindsOfPath(c, "127.0.0.10").map { it.netId })
        val bytes = data(100_000, 5)
        val received = async(Dispatchers.IO) { receiveAll(srv) }
        c.send(bytes)
        c.finish()
        assertArrayEquals(sha256(bytes), sha256(received.await()))
    }

    @Test
    fun cellularIsRequestedOnlyWhileFlowsAreOpen() = runBlocking {
        // The transitions, on a count the test drives.
        val driven = bridge(keepCellular = true)
        val phone = Endpoint(key(7), config(loopback = true), driven.socketBinder).closing()
        val openFlows = MutableStateFlow(0)
        driven.start(phone, openFlows)
        assertEquals("only the callback for every network", 1, shadowCm.networkCallbacks.size)
        assertFalse(driven.cellularRequested.value)
        openFlows.value = 1
        assertEquals("requestNetwork(cellular) while a flow is open", 2, shadowCm.networkCallbacks.size)
        assertTrue(driven.cellularRequested.value)
        openFlows.value = 2
        assertEquals(2, shadowCm.networkCallbacks.size)
        openFlows.value = 0
        assertEquals("released with the last flow", 1, shadowCm.networkCallbacks.size)
        assertFalse(driven.cellularRequested.value)
        openFlows.value = 1
        assertEquals(2, shadowCm.networkCallbacks.size)
        driven.close()
        assertEquals("close releases everything", 0, shadowCm.networkCallbacks.size)

        // The endpoint's own count: a real flow opens and closes.
        val (_, listener) = server()
        val bridge = AndroidNetworkBridge(context, keepCellular = true, scheduler = clock,
            onError = { fail("the bridge reported $it") }).closing()
        val client = Endpoint(key(10), config(loopback = true), bridge.socketBinder).closing()
        bridge.start(client)
        deliver(160, caps(NetworkCapabilities.TRANSPORT_WIFI), link("wlan0", "127.0.0.12"))
        clock.advance()
        assertFalse(bridge.cellularRequested.value)
        val (c, srv) = connect(client, listener)
        withTimeout(10_000) { bridge.cellularRequested.first { it } }
        assertEquals(2, shadowCm.networkCallbacks.size)
        val bytes = data(100_000, 6)
        val received = async(Dispatchers.IO) { receiveAll(srv) }
        c.send(bytes)
        c.finish()
        assertArrayEquals(sha256(bytes), sha256(received.await()))
        c.close()
        srv.close()
        withTimeout(10_000) { bridge.cellularRequested.first { !it } }
        assertEquals("released once no flow is open", 1, shadowCm.networkCallbacks.size)
    }

    @Test
    fun refusedRegistrationsAreTypedErrors() = runBlocking {
        val errors = mutableListOf<Throwable>()
        RefusingConnectivityManager.refuse = SecurityException("need ACCESS_NETWORK_STATE")
        val denied = AndroidNetworkBridge(context, scheduler = clock).closing()
        val phone = Endpoint(key(8), config(loopback = true), denied.socketBinder).closing()
        try {
            denied.start(phone)
            fail("start succeeded without the permission")
        } catch (e: NetworkBridgeException.PermissionDenied) {
            assertTrue(e.message, e.message!!.contains("registerNetworkCallback"))
        }
        assertEquals(0, shadowCm.networkCallbacks.size)
        if (Build.VERSION.SDK_INT >= 30) {
            val tooMany = Class.forName("android.net.ConnectivityManager\$TooManyRequestsException")
                .getDeclaredConstructor().apply { isAccessible = true }.newInstance() as RuntimeException
            RefusingConnectivityManager.refuse = tooMany
            try {
                AndroidNetworkBridge(context, scheduler = clock).closing().start(phone)
                fail("start succeeded with too many requests")
            } catch (e: NetworkBridgeException.TooManyRequests) {
                assertTrue(e.cause === tooMany)
            }
        }
        // A cellular request refused later is reported, never thrown on a platform thread.
        RefusingConnectivityManager.refuse = null
        val flows = MutableStateFlow(0)
        val later = AndroidNetworkBridge(context, keepCellular = true, onError = { errors += it },
            dispatcher = Dispatchers.Unconfined, scheduler = clock).closing()
        later.start(phone, flows)
        RefusingConnectivityManager.refuse = SecurityException("need CHANGE_NETWORK_STATE")
        flows.value = 1
        assertEquals(1, errors.size)
        assertTrue("${errors.single()}", errors.single() is NetworkBridgeException.PermissionDenied)
        assertFalse(later.cellularRequested.value)
    }

    @Test
    fun callbacksAfterCloseAreHarmless() = runBlocking {
        // The bridge's own timer thread: after close it is shut down, as on a device.
        val published = mutableListOf<Throwable>()
        val bridge = AndroidNetworkBridge(context, onError = { published += it }).closing()
        val phone = Endpoint(key(9), config(loopback = true), bridge.socketBinder).closing()
        bridge.start(phone)
        val cb = networkCallback()
        val network = ShadowNetwork.newInstance(150)
        cb.onAvailable(network)
        bridge.close()
        bridge.close()
        assertEquals(0, shadowCm.networkCallbacks.size)
        // Callbacks the platform had queued before unregistering arrive now.
        cb.onCapabilitiesChanged(network, caps(NetworkCapabilities.TRANSPORT_WIFI))
        cb.onLinkPropertiesChanged(network, link("wlan0", "127.0.0.11"))
        if (Build.VERSION.SDK_INT >= 29) cb.onBlockedStatusChanged(network, true)
        cb.onAvailable(ShadowNetwork.newInstance(151))
        cb.onLost(network)
        assertEquals(emptyList<Any>(), bridge.tracker.snapshot())
        assertEquals(emptyList<Throwable>(), published)
        try {
            bridge.start(phone)
            fail("a closed bridge started")
        } catch (e: NetworkBridgeException.IllegalState) {
            assertNotNull(e.message)
        }
    }
}
