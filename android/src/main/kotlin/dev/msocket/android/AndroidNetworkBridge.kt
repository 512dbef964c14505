/*
 * The thin Android layer: ConnectivityManager callbacks in, Network.bindSocket out.
 *
 * Everything that can be decided without Android (which networks to report and whether
 * they are up, their kind and metered flag, VPNs, captive portals, the CLAT address, when
 * to publish, which network owns an address, when to hold the cellular request) lives in
 * dev.msocket.net and is tested on the host JVM; this file translates Android's objects
 * into those calls, and is itself tested under Robolectric (src/robolectricTest) at API
 * levels 23, 26, 29 and 34.
 */
package dev.msocket.android

import android.content.Context
import android.net.ConnectivityManager
import android.net.LinkProperties
import android.net.Network
import android.net.NetworkCapabilities
import android.net.NetworkRequest
import android.os.Build
import android.os.ParcelFileDescriptor
import dev.msocket.Endpoint
import dev.msocket.SocketBinder
import dev.msocket.net.Capabilities
import dev.msocket.net.CellularDemand
import dev.msocket.net.Clat
import dev.msocket.net.ExecutorScheduler
import dev.msocket.net.InterfaceAddresses
import dev.msocket.net.NetworkBridgeException
import dev.msocket.net.NetworkSocketBinder
import dev.msocket.net.NetworkTracker
import dev.msocket.net.Scheduler
import dev.msocket.net.Transport
import java.io.Closeable
import java.io.IOException
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.atomic.AtomicBoolean
import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow

/**
 * Feeds Android's view of the networks into an [Endpoint] and binds each subflow's socket
 * to the network that owns its address.
 *
 * ```
 * val bridge = AndroidNetworkBridge(context)
 * val endpoint = Endpoint(key, config, bridge.socketBinder)
 * bridge.start(endpoint)
 * ...
 * bridge.close(); endpoint.close()
 * ```
 *
 * Needs the `ACCESS_NETWORK_STATE` and `INTERNET` permissions, and `CHANGE_NETWORK_STATE`
 * with [keepCellular] (all declared by this library). Android tears mobile data down
 * while Wi-Fi works unless an app asks for it; with [keepCellular] the bridge asks while
 * the endpoint has open flows, so a standby path on cellular is ready for a hand-off.
 * Which networks are reported, and how VPNs, captive portals and IPv6-only cellular are
 * handled, is described under "Networks on Android" in the README.
 *
 * [onError] hears what goes wrong after [start] returned (a cellular request the platform
 * refused, a snapshot the endpoint did not take); nothing is thrown on the platform's
 * threads. [dispatcher] runs the cellular request logic; [scheduler] runs the settle
 * timer (null: a thread of the bridge's own; tests pass a virtual clock).
 */
class AndroidNetworkBridge(
    context: Context,
    private val keepCellular: Boolean = false,
    settleMillis: Long = 100,
    private val onError: (Throwable) -> Unit = { System.err.println("msocket: network bridge: $it") },
    private val interfaces: InterfaceAddresses = InterfaceAddresses.SYSTEM,
    dispatcher: CoroutineDispatcher = Dispatchers.Default,
    scheduler: Scheduler? = null,
) : Closeable {
    private val connectivity = context.getSystemService(Context.CONNECTIVITY_SERVICE) as? ConnectivityManager
        ?: throw IllegalStateException("no ConnectivityManager on this device")
    private val networks = ConcurrentHashMap<Long, Network>()
    private val ownScheduler = if (scheduler == null) ExecutorScheduler() else null
    private val scope = CoroutineScope(SupervisorJob() + dispatcher)
    private val started = AtomicBoolean(false)
    private val closed = AtomicBoolean(false)
    private var demand: CellularDemand? = null

    @Volatile
    private var endpoint: Endpoint? = null

    /** The state and publishing logic (plain Kotlin). */
    val tracker = NetworkTracker(publish = { endpoint?.updateNetwork(it) }, scheduler = scheduler ?: ownScheduler!!, settleMillis = settleMillis, onError = onError)

    /** Pass to [Endpoint]'s constructor: binds each subflow's socket to its [Network]. */
    val socketBinder: SocketBinder = NetworkSocketBinder(tracker) { handle, fd ->
        val network = networks[handle] ?: throw IOException("network $handle is gone")
        // adoptFd wraps the descriptor without a copy; detachFd hands it back unclosed, so
        // msocket's socket stays open and owned by msocket.
        val wrapped = ParcelFileDescriptor.adoptFd(fd)
        try {
            network.bindSocket(wrapped.fileDescriptor)
        } finally {
            wrapped.detachFd()
        }
    }

    private val notRequested = MutableStateFlow(false).asStateFlow()

    /** Whether the cellular request is held (only with [keepCellular]): now, then each change. */
    val cellularRequested: StateFlow<Boolean> get() = synchronized(this) { demand }?.requested ?: notRequested

    private val callback = object : ConnectivityManager.NetworkCallback() {
        override fun onAvailable(network: Network) = guard {
            networks[network.networkHandle] = network
            tracker.onAvailable(network.networkHandle)
            // Before Android O the capabilities and link properties of a network that was
            // already up when the callback registered are not delivered: ask for them.
            if (Build.VERSION.SDK_INT < Build.VERSION_CODES.O) {
                connectivity.getNetworkCapabilities(network)?.let { onCapabilitiesChanged(network, it) }
                connectivity.getLinkProperties(network)?.let { onLinkPropertiesChanged(network, it) }
            }
        }

        override fun onCapabilitiesChanged(network: Network, caps: NetworkCapabilities) = guard {
            tracker.onCapabilitiesChanged(network.networkHandle, capabilities(caps))
        }

        override fun onLinkPropertiesChanged(network: Network, lp: LinkProperties) = guard {
            val name = lp.interfaceName
            val index = try {
                name?.let { java.net.NetworkInterface.getByName(it)?.index } ?: 0
            } catch (e: Exception) {
                0
            }
            val addresses = Clat.withClat(name, lp.linkAddresses.map { it.address }, interfaces)
            // The network's NAT64 prefix (API 30+), so IPv4-only peers are reached from its
            // IPv6 addresses even where no CLAT gives an IPv4 one.
            val nat64 = if (Build.VERSION.SDK_INT >= 30) {
                lp.nat64Prefix?.let { "${it.address.hostAddress?.substringBefore('%')}/${it.prefixLength}" }
            } else {
                null
            }
            tracker.onLinkPropertiesChanged(network.networkHandle, name, index, addresses, nat64)
        }

        override fun onBlockedStatusChanged(network: Network, blocked: Boolean) = guard {
            tracker.onBlockedStatusChanged(network.networkHandle, blocked)
        }

        override fun onLost(network: Network) = guard {
            tracker.onLost(network.networkHandle)
            networks.remove(network.networkHandle)
        }
    }

    /** Runs a platform callback: ignored after [close], and never throws into the platform. */
    private inline fun guard(body: () -> Unit) {
        if (closed.get()) return
        try {
            body()
        } catch (t: Throwable) {
            onError(t)
        }
    }

    /**
     * Starts reporting to [endpoint]; the current networks are pushed as they arrive.
     * With [keepCellular], cellular is requested while [openFlows] (the endpoint's count
     * of open flows) is above 0.
     *
     * @throws NetworkBridgeException.PermissionDenied without ACCESS_NETWORK_STATE
     * @throws NetworkBridgeException.TooManyRequests the app holds too many network callbacks
     * @throws NetworkBridgeException.Refused the platform refused otherwise
     * @throws NetworkBridgeException.IllegalState started before, or closed
     */
    fun start(endpoint: Endpoint, openFlows: Flow<Int> = endpoint.openFlows) {
        if (closed.get()) throw NetworkBridgeException.IllegalState("the network bridge is closed")
        if (!started.compareAndSet(false, true)) throw NetworkBridgeException.IllegalState("the network bridge was started already")
        this.endpoint = endpoint
        // Without NOT_VPN: a VPN that carries this app's traffic must be seen (see the README).
        val all = NetworkRequest.Builder()
            .addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
            .removeCapability(NetworkCapabilities.NET_CAPABILITY_NOT_VPN)
            .build()
        try {
            connectivity.registerNetworkCallback(all, callback)
        } catch (e: RuntimeException) {
            this.endpoint = null
            started.set(false)
            throw NetworkBridgeException.from("registerNetworkCallback", e)
        }
        if (keepCellular) {
            val cell = NetworkRequest.Builder()
                .addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
                .addTransportType(NetworkCapabilities.TRANSPORT_CELLULAR)
                .build()
            var held: ConnectivityManager.NetworkCallback? = null
            val d = CellularDemand(
                openFlows = openFlows,
                request = {
                    // A callback object per request: one is registered at most once at a time.
                    val request = object : ConnectivityManager.NetworkCallback() {}
                    try {
                        connectivity.requestNetwork(cell, request)
                    } catch (e: RuntimeException) {
                        throw NetworkBridgeException.from("requestNetwork(cellular)", e)
                    }
                    held = request
                },
                release = {
                    held?.let { connectivity.unregisterNetworkCallback(it) }
                    held = null
                },
                onError = onError,
            )
            synchronized(this) { demand = d }
            d.start(scope)
        }
        tracker.republish()
    }

    /**
     * Stops reporting, releases the cellular request and unregisters from the platform.
     * Callbacks the platform delivers afterwards are ignored. Idempotent.
     */
    override fun close() {
        if (!closed.compareAndSet(false, true)) return
        endpoint = null
        tracker.close()
        if (started.get()) runCatching { connectivity.unregisterNetworkCallback(callback) }
        synchronized(this) { demand }?.close()
        scope.cancel()
        ownScheduler?.close()
        networks.clear()
    }

    private fun capabilities(caps: NetworkCapabilities): Capabilities {
        val transports = buildSet {
            if (caps.hasTransport(NetworkCapabilities.TRANSPORT_WIFI)) add(Transport.WIFI)
            if (caps.hasTransport(NetworkCapabilities.TRANSPORT_CELLULAR)) add(Transport.CELLULAR)
            if (caps.hasTransport(NetworkCapabilities.TRANSPORT_ETHERNET)) add(Transport.ETHERNET)
            if (caps.hasTransport(NetworkCapabilities.TRANSPORT_BLUETOOTH)) add(Transport.BLUETOOTH)
            if (caps.hasTransport(NetworkCapabilities.TRANSPORT_VPN)) add(Transport.VPN)
            if (Build.VERSION.SDK_INT >= 31 && caps.hasTransport(NetworkCapabilities.TRANSPORT_USB)) add(Transport.USB)
            if (isEmpty()) add(Transport.OTHER)
        }
        val notSuspended = Build.VERSION.SDK_INT < 28 ||
            caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_NOT_SUSPENDED)
        return Capabilities(
            transports = transports,
            notMetered = caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_NOT_METERED),
            notSuspended = notSuspended,
            validated = caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED),
            captivePortal = caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_CAPTIVE_PORTAL),
        )
    }
}
