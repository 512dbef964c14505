/*
 * The thin Android layer: ConnectivityManager callbacks in, Network.bindSocket out.
 *
 * Everything that can be decided without Android (which networks to report, their kind
 * and metered flag, when to publish, which network owns an address) lives in
 * dev.msocket.net and is tested on the host JVM; this file only translates Android's
 * objects into those calls. Keep it that way: whatever is added here cannot be tested
 * without a device.
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
import dev.msocket.net.ExecutorScheduler
import dev.msocket.net.NetworkSocketBinder
import dev.msocket.net.NetworkTracker
import dev.msocket.net.Transport
import java.io.Closeable
import java.io.IOException
import java.util.concurrent.ConcurrentHashMap

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
 * Needs the `ACCESS_NETWORK_STATE` and `INTERNET` permissions (declared by this library).
 * Android tears mobile data down while Wi-Fi works unless an app asks for it; with
 * [keepCellular] the bridge asks, so a standby path on cellular is ready for a hand-off —
 * at the cost of keeping the cellular radio registered.
 */
class AndroidNetworkBridge(
    context: Context,
    private val keepCellular: Boolean = false,
    settleMillis: Long = 100,
) : Closeable {
    private val connectivity = context.getSystemService(ConnectivityManager::class.java)
        ?: throw IllegalStateException("no ConnectivityManager on this device")
    private val networks = ConcurrentHashMap<Long, Network>()
    private val scheduler = ExecutorScheduler()

    @Volatile
    private var endpoint: Endpoint? = null

    /** The state and publishing logic (plain Kotlin). */
    val tracker = NetworkTracker(publish = { endpoint?.updateNetwork(it) }, scheduler = scheduler, settleMillis = settleMillis)

    /** Pass to [Endpoint]'s constructor: binds each subflow's socket to its [Network]. */
    val socketBinder: SocketBinder = NetworkSocketBinder(tracker) { handle, fd ->
        val network = networks[handle] ?: throw IOException("network $handle is gone")
        // fromFd duplicates the descriptor: binding the duplicate binds the socket, and
        // closing it leaves msocket's descriptor open.
        ParcelFileDescriptor.fromFd(fd).use { network.bindSocket(it.fileDescriptor) }
    }

    private val callback = object : ConnectivityManager.NetworkCallback() {
        override fun onAvailable(network: Network) {
            networks[network.networkHandle] = network
            tracker.onAvailable(network.networkHandle)
        }

        override fun onCapabilitiesChanged(network: Network, caps: NetworkCapabilities) =
            tracker.onCapabilitiesChanged(network.networkHandle, capabilities(caps))

        override fun onLinkPropertiesChanged(network: Network, lp: LinkProperties) {
            val name = lp.interfaceName
            val index = try {
                name?.let { java.net.NetworkInterface.getByName(it)?.index } ?: 0
            } catch (e: Exception) {
                0
            }
            tracker.onLinkPropertiesChanged(network.networkHandle, name, index, lp.linkAddresses.map { it.address })
        }

        override fun onBlockedStatusChanged(network: Network, blocked: Boolean) =
            tracker.onBlockedStatusChanged(network.networkHandle, blocked)

        override fun onLost(network: Network) {
            tracker.onLost(network.networkHandle)
            networks.remove(network.networkHandle)
        }
    }

    /** Keeps mobile data up beside Wi-Fi (see [keepCellular]); its networks arrive via [callback]. */
    private val cellularRequest = object : ConnectivityManager.NetworkCallback() {}

    /** Starts reporting to [endpoint]; the current networks are pushed at once. */
    fun start(endpoint: Endpoint) {
        this.endpoint = endpoint
        val all = NetworkRequest.Builder().addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET).build()
        connectivity.registerNetworkCallback(all, callback)
        if (keepCellular) {
            val cell = NetworkRequest.Builder()
                .addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
                .addTransportType(NetworkCapabilities.TRANSPORT_CELLULAR)
                .build()
            connectivity.requestNetwork(cell, cellularRequest)
        }
        tracker.republish()
    }

    override fun close() {
        endpoint = null
        runCatching { connectivity.unregisterNetworkCallback(callback) }
        if (keepCellular) runCatching { connectivity.unregisterNetworkCallback(cellularRequest) }
        scheduler.close()
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
        )
    }
}
