/*
 * The logic of the Android network bridge, in plain Kotlin (no android.* import), so the
 * host JVM compiles and tests it.
 *
 * Android reports networks piecemeal: `onAvailable`, then capabilities and link
 * properties in separate callbacks, in an order that varies by release; a hand-off is an
 * `onLost` for one network and an `onAvailable` for another, in either order. The core
 * wants something simpler: a full snapshot of every interface each time anything changed.
 * [NetworkTracker] keeps the per-network pieces, reports a network only once both its
 * capabilities and its link properties are known, and builds the snapshot.
 *
 * Timing follows what a change costs. Losing an address (a network lost, blocked,
 * suspended, or an address removed) is published at once: every millisecond spent on a
 * dead path is a stalled flow. Gains and other changes wait a short settle time
 * (100 ms by default) so that the burst of callbacks a new network brings becomes one
 * snapshot, and the core does not open a subflow on a half-described network; waiting
 * costs nothing there, since the old paths still work. Snapshots are published in the
 * order the state changed (under one lock), and an unchanged snapshot is not published
 * again.
 *
 * Which networks are up in a snapshot (the policy "Networks on Android" in the README
 * describes):
 * - a captive portal is never up: it answers for everyone, so a subflow on it would
 *   connect to the portal, not the peer;
 * - a network the platform has not validated is up only while no validated network is:
 *   Android validates every new network within seconds, and one that stays unvalidated
 *   (no Internet behind the access point) would only hold dead paths; alone, it is all
 *   there is and may still reach the peer;
 * - while a VPN is among the networks, only VPN networks are reported and no socket is
 *   bound: the system routes this app's traffic into the VPN, and binding a socket to the
 *   underlying Wi-Fi or cellular network would silently bypass the user's VPN.
 *
 * After [NetworkTracker.close] every callback is ignored: the platform may still deliver
 * callbacks it had queued when the consumer went away.
 */
package dev.msocket.net

import dev.msocket.InterfaceKind
import dev.msocket.NetworkInterface
import java.io.Closeable
import java.net.InetAddress
import java.util.concurrent.Executors
import java.util.concurrent.RejectedExecutionException
import java.util.concurrent.ScheduledExecutorService
import java.util.concurrent.TimeUnit

/** A network transport, as `NetworkCapabilities.TRANSPORT_*` names them. */
enum class Transport { WIFI, CELLULAR, ETHERNET, USB, BLUETOOTH, VPN, OTHER }

/** What the platform says a network can do. */
data class Capabilities(
    val transports: Set<Transport>,
    /** `NET_CAPABILITY_NOT_METERED`. */
    val notMetered: Boolean,
    /** `NET_CAPABILITY_NOT_SUSPENDED` (false while the cellular link is suspended). */
    val notSuspended: Boolean = true,
    /** `NET_CAPABILITY_VALIDATED`: the platform reached the Internet through it. */
    val validated: Boolean = true,
    /** `NET_CAPABILITY_CAPTIVE_PORTAL`: a sign-in page intercepts its traffic. */
    val captivePortal: Boolean = false,
) {
    val isVpn: Boolean get() = Transport.VPN in transports
}

/** How a network's transports map onto the core's kinds and the metered flag. */
object Classify {
    /**
     * The kind of a network with [transports]. A VPN rides on another network, so it
     * ranks as "other" (after the real links); USB tethering is a wired link; Bluetooth
     * tethering rides on someone's cellular link, so it is "other" too.
     */
    fun kind(transports: Set<Transport>): InterfaceKind = when {
        Transport.VPN in transports -> InterfaceKind.OTHER
        Transport.WIFI in transports -> InterfaceKind.WIFI
        Transport.CELLULAR in transports -> InterfaceKind.CELLULAR
        Transport.ETHERNET in transports || Transport.USB in transports -> InterfaceKind.ETHERNET
        else -> InterfaceKind.OTHER
    }

    /** Whether traffic on the network costs: the platform's own judgement. */
    fun metered(caps: Capabilities): Boolean = !caps.notMetered
}

/** Something scheduled that may be called off. */
fun interface Cancellable {
    fun cancel()
}

/** Runs tasks later; injected so tests run on virtual time. */
fun interface Scheduler {
    fun schedule(delayMillis: Long, task: Runnable): Cancellable
}

/** A [Scheduler] on one daemon thread. */
class ExecutorScheduler(
    private val executor: ScheduledExecutorService = Executors.newSingleThreadScheduledExecutor { r ->
        Thread(r, "msocket-network").apply { isDaemon = true }
    },
) : Scheduler, Closeable {
    override fun schedule(delayMillis: Long, task: Runnable): Cancellable {
        val future = try {
            executor.schedule(task, delayMillis, TimeUnit.MILLISECONDS)
        } catch (e: RejectedExecutionException) {
            // Closed: a callback still in flight has nothing left to schedule for.
            return Cancellable {}
        }
        return Cancellable { future.cancel(false) }
    }

    override fun close() {
        executor.shutdownNow()
    }
}

/** An IP address literal as the core writes it, or null; never a DNS lookup. */
fun parseIpLiteral(text: String): InetAddress? {
    val t = text.trim()
    val looksLikeIp = t.isNotEmpty() &&
        (t.contains(':') && t.all { it.isLetterOrDigit() || it == ':' || it == '.' || it == '%' } ||
            t.all { it.isDigit() || it == '.' } && t.count { it == '.' } == 3)
    if (!looksLikeIp) return null
    return try {
        InetAddress.getByName(t)
    } catch (e: Exception) {
        null
    }
}

/** The text form the core parses: no IPv6 scope suffix. */
internal fun addressText(a: InetAddress): String = a.hostAddress.substringBefore('%')

/**
 * Keeps the platform's networks and publishes full snapshots (see the file's docs).
 * Thread-safe: callbacks may come from any thread.
 */
class NetworkTracker(
    private val publish: (List<NetworkInterface>) -> Unit,
    private val scheduler: Scheduler,
    private val settleMillis: Long = 100,
    private val onError: (Throwable) -> Unit = { System.err.println("msocket: publishing a network snapshot failed: $it") },
) {
    private class Link(val interfaceName: String, val index: Int, val addresses: List<InetAddress>, val nat64Prefix: String?)

    private class Entry(var caps: Capabilities? = null, var link: Link? = null, var blocked: Boolean = false) {
        val complete: Boolean get() = caps != null && link != null
        val vpn: Boolean get() = complete && caps!!.isVpn
    }

    private val networks = LinkedHashMap<Long, Entry>()
    private var pending: Cancellable? = null
    /** The last snapshot published (null: publish the next one whatever it is). */
    private var published: List<NetworkInterface>? = emptyList()
    private var closed = false

    /** A network appeared (its details follow in other callbacks). */
    @Synchronized
    fun onAvailable(network: Long) = update { networks.getOrPut(network) { Entry() } }

    @Synchronized
    fun onCapabilitiesChanged(network: Long, caps: Capabilities) = update {
        networks.getOrPut(network) { Entry() }.caps = caps
    }

    /** Link properties: the interface's name and index, and its addresses. */
    @Synchronized
    fun onLinkPropertiesChanged(
        network: Long,
        interfaceName: String?,
        index: Int,
        addresses: List<InetAddress>,
        nat64Prefix: String? = null,
    ) = update {
        val usable = addresses.filter { !it.isLinkLocalAddress && !it.isAnyLocalAddress && !it.isMulticastAddress }.distinct()
        networks.getOrPut(network) { Entry() }.link =
            Link(interfaceName?.takeIf { it.isNotBlank() } ?: "net$network", maxOf(index, 0), usable, nat64Prefix)
    }

    @Synchronized
    fun onBlockedStatusChanged(network: Long, blocked: Boolean) = update {
        networks.getOrPut(network) { Entry() }.blocked = blocked
    }

    @Synchronized
    fun onLost(network: Long) = update { networks.remove(network) }

    /** Publishes the current snapshot now (for a new consumer), even if unchanged. */
    @Synchronized
    fun republish() {
        if (closed) return
        published = null
        flush()
    }

    /** Stops publishing; later callbacks are ignored. Idempotent. */
    @Synchronized
    fun close() {
        closed = true
        pending?.cancel()
        pending = null
    }

    /** Whether a VPN network is up: sockets then follow the system's routing (into the VPN). */
    @Synchronized
    fun vpnActive(): Boolean = networks.values.any { it.vpn }

    /**
     * The snapshot of every fully described network, in the order they appeared; only the
     * VPN networks while one is present (see the file's docs).
     */
    @Synchronized
    fun snapshot(): List<NetworkInterface> {
        val vpn = vpnActive()
        val shown = networks.values.filter { it.complete && (!vpn || it.vpn) }
        val anyValidatedUp = shown.any { usable(it) && it.caps!!.validated }
        return shown.map { e ->
            val caps = e.caps!!
            val link = e.link!!
            NetworkInterface(
                name = link.interfaceName,
                index = link.index.toUInt(),
                kind = Classify.kind(caps.transports),
                metered = Classify.metered(caps),
                up = usable(e) && (caps.validated || !anyValidatedUp),
                addresses = link.addresses.map(::addressText),
                nat64Prefix = link.nat64Prefix,
            )
        }
    }

    /** Up as far as the network itself says: not blocked, not suspended, no captive portal. */
    private fun usable(e: Entry): Boolean = !e.blocked && e.caps!!.notSuspended && !e.caps!!.captivePortal

    /**
     * The network that owns [localAddress] (in any text form), or null: no network owns it,
     * or a VPN is up (the socket must follow the system's routing into it).
     */
    @Synchronized
    fun networkFor(localAddress: String): Long? {
        if (vpnActive()) return null
        val wanted = parseIpLiteral(localAddress) ?: return null
        return networks.entries.firstOrNull { (_, e) ->
            e.link?.addresses?.any { sameAddress(it, wanted) } == true
        }?.key
    }

    /** Same address whatever its text form (`2001:db8::1` and `2001:db8:0:0:0:0:0:1`). */
    private fun sameAddress(a: InetAddress, b: InetAddress): Boolean = a.address.contentEquals(b.address)

    /** Whether [next] lost an address that [prev] could use. */
    private fun losesAddress(prev: List<NetworkInterface>?, next: List<NetworkInterface>): Boolean {
        if (prev == null) return false
        val now = next.filter { it.up }.flatMap { it.addresses }.toSet()
        return prev.filter { it.up }.flatMap { it.addresses }.any { it !in now }
    }

    private inline fun update(change: () -> Unit) {
        if (closed) return
        change()
        changed()
    }

    private fun changed() {
        val next = snapshot()
        if (next == published) {
            pending?.cancel()
            pending = null
            return
        }
        if (losesAddress(published, next)) {
            flush()
        } else if (pending == null) {
            pending = scheduler.schedule(settleMillis) { synchronized(this) { if (!closed) flush() } }
        }
    }

    private fun flush() {
        pending?.cancel()
        pending = null
        val next = snapshot()
        if (next == published) return
        published = next
        try {
            publish(next)
        } catch (t: Throwable) {
            onError(t)
        }
    }
}

/**
 * The platform-neutral half of per-network socket binding: finds the network that owns
 * the subflow's local address and hands the socket to [bind] (Android: `Network.bindSocket`).
 * An address no network owns is left unbound (routing by source address still applies).
 */
class NetworkSocketBinder(
    private val tracker: NetworkTracker,
    private val bind: (network: Long, fd: Int) -> Unit,
) : dev.msocket.SocketBinder {
    override fun bind(fd: Int, localAddress: String) {
        val network = tracker.networkFor(localAddress) ?: return
        bind(network, fd)
    }
}
