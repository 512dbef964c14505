/*
 * The Kotlin API of the msocket SDK, over the bindings UniFFI generates from
 * udl/msocket.udl (package dev.msocket.ffi).
 *
 * Why a layer over the generated code: the bindings are faithful to the FFI — unsigned
 * millisecond counts, a `release()` beside the generated `close()`, receive in two steps,
 * events pulled one by one — and an app wants kotlin.time durations, `Closeable` objects
 * that do the right thing in `use {}`, events as a Flow, streams for java.io code, and
 * callbacks that cannot throw into native code. Nothing here adds behaviour.
 *
 * Every waiting call is a real `suspend` function: it holds no thread while it waits, and
 * cancelling its coroutine cancels the native call at once (its work is dropped on
 * msocket's side; a cancelled receive loses no byte, a cancelled connect leaves no flow
 * open). A thousand flows may wait at once without a thousand threads.
 */
package dev.msocket

import java.io.Closeable
import kotlin.time.Duration
import kotlin.time.Duration.Companion.minutes
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow
import dev.msocket.ffi.CallbackException
import dev.msocket.ffi.MsocketException
import dev.msocket.ffi.Endpoint as FfiEndpoint
import dev.msocket.ffi.EndpointOptions
import dev.msocket.ffi.Listener as FfiListener
import dev.msocket.ffi.SocketBinder as FfiSocketBinder

/** How a flow uses its paths. */
typealias PathPolicy = dev.msocket.ffi.PathPolicy
/** What a path does for its flow now. */
typealias PathState = dev.msocket.ffi.PathState

/** Why a path left a flow. */
typealias PathLossReason = dev.msocket.ffi.PathLossReason

/** Why a flow failed. */
typealias FlowFailure = dev.msocket.ffi.FlowFailure
/** The kind of link a network interface is. */
typealias InterfaceKind = dev.msocket.ffi.InterfaceKind
/** One network interface as the platform reports it to [Endpoint.updateNetwork]. */
typealias NetworkInterface = dev.msocket.ffi.NetworkInterface
/** A flow's byte counters. */
typealias FlowStats = dev.msocket.ffi.FlowStats

/** Keys and version. */
object MSocket {
    /** A new 32-byte secret key. Store it (Android Keystore-wrapped) to keep the identity. */
    fun generateKey(): ByteArray = dev.msocket.ffi.generateKey()

    /** The public fingerprint of [key]'s identity. */
    fun fingerprint(key: ByteArray): String = dev.msocket.ffi.keyFingerprint(key)

    /** The native library's version. */
    val version: String get() = dev.msocket.ffi.version()
}

/** How an endpoint behaves; only [namesUrl] has no default. */
data class EndpointConfig(
    /** The name service: `tcp://HOST:PORT`. */
    val namesUrl: String,
    val nameTimeout: Duration = 5.seconds,
    /** How long `connect` keeps trying a name. */
    val connectTimeout: Duration = 20.seconds,
    /** How long a flow may have no path before it fails. */
    val flowDeadline: Duration = 5.minutes,
    /** The policy of flows this endpoint opens. */
    val policy: PathPolicy = PathPolicy.BACKUP,
    /** Keep a standby subflow on each other interface (cellular beside Wi-Fi). */
    val standbyPaths: Boolean = true,
    /** Count loopback addresses the platform reports (tests, same-device peers). */
    val useLoopback: Boolean = false,
    /**
     * Local addresses to use until the platform reports its networks. Not empty, they pin
     * the endpoint: [followSystemNetwork] is then ignored.
     */
    val localAddresses: List<String> = emptyList(),
    /**
     * Follow the operating system's networks with msocket's own watcher (netlink on Linux,
     * polling the interfaces elsewhere) from the first [Endpoint.listen] or
     * [Endpoint.connect] on, as msocket's Rust API and command line do. For desktop JVM
     * apps, which have no platform network monitor to call [Endpoint.updateNetwork];
     * interface kinds are then guessed from their names (`wl*`: Wi-Fi, `rmnet*`, `wwan*`:
     * cellular, `eth*`, `en*`: Ethernet). Ignored while [localAddresses] pins the endpoint.
     * A call to [Endpoint.updateNetwork] ends it for good: the pushed networks are followed
     * from then on. Keep it false on Android, where
     * [dev.msocket.android.AndroidNetworkBridge] reports the networks.
     */
    val followSystemNetwork: Boolean = false,
    /** Port to listen on (0: any). */
    val listenPort: Int = 0,
    /**
     * Which peers may open flows to this endpoint, by key fingerprint (32 to 64 hex digits,
     * as [Endpoint.fingerprint] prints them); null: anyone. Others fail with
     * [MsocketException.NotAllowed] and never reach [Listener.accept]; an empty list admits
     * nobody. A malformed fingerprint is [MsocketException.InvalidArgument] naming it.
     */
    val allowedPeers: List<String>? = null,
    /**
     * Relays to register at while listening (`HOST:PORT` of `msocketd relay` servers), so
     * that peers reach this endpoint behind NAT. Connecting needs none.
     */
    val relays: List<String> = emptyList(),
    /** Publish no address, only the relays: every flow to this endpoint is relayed. */
    val relayOnly: Boolean = false,
) {
    internal fun toFfi(): EndpointOptions {
        if (listenPort !in 0..65535) {
            throw MsocketException.InvalidArgument("listenPort $listenPort is not a port (0 to 65535)")
        }
        return EndpointOptions(
            namesUrl = namesUrl,
            nameTimeoutMs = nameTimeout.toMillisArg("nameTimeout"),
            connectTimeoutMs = connectTimeout.toMillisArg("connectTimeout"),
            flowDeadlineMs = flowDeadline.toMillisArg("flowDeadline"),
            policy = policy,
            standbyPaths = standbyPaths,
            useLoopback = useLoopback,
            localAddresses = localAddresses,
            followSystemNetwork = followSystemNetwork,
            listenPort = listenPort.toUShort(),
            allowedPeers = allowedPeers,
            relays = relays,
            relayOnly = relayOnly,
        )
    }
}

/** A timeout as the FFI takes it: whole milliseconds, capped at about 49 days. */
internal fun Duration.toMillisArg(what: String): UInt {
    if (isNegative()) throw MsocketException.InvalidArgument("$what must not be negative (got $this)")
    val ms = inWholeMilliseconds
    return if (ms >= UInt.MAX_VALUE.toLong()) UInt.MAX_VALUE else ms.toUInt()
}

/**
 * Binds each subflow's socket to the network owning [localAddress] before it connects.
 * Called on one of msocket's runtime threads while the subflow waits: it must be quick and
 * must not block (no waiting SDK call, no `runBlocking`). Throwing fails that one subflow. On Android, [dev.msocket.android.AndroidNetworkBridge]
 * provides one.
 */
fun interface SocketBinder {
    fun bind(fd: Int, localAddress: String)
}

/** Turns anything an app callback throws into the error type the FFI expects. */
internal inline fun <T> fromApp(what: String, block: () -> T): T =
    try {
        block()
    } catch (e: CallbackException) {
        throw e
    } catch (t: Throwable) {
        throw CallbackException.Failed("$what: $t")
    }

private class BinderAdapter(private val binder: SocketBinder) : FfiSocketBinder {
    override fun bindSocket(fd: Int, localAddress: String) = fromApp("socket binder") { binder.bind(fd, localAddress) }
}

/**
 * One identity bound to a name service: listens on names and connects to them.
 * Report the platform's networks with [updateNetwork] (or let
 * [dev.msocket.android.AndroidNetworkBridge] do it) so flows follow moves at once.
 * [pins] keeps the keys of the names it connects to (null: in memory, forgotten with the
 * endpoint); give it a store that outlives the process, such as a [FilePinStore].
 */
class Endpoint(
    key: ByteArray,
    config: EndpointConfig,
    socketBinder: SocketBinder? = null,
    pins: PinStore? = null,
) : Closeable {
    private val ffi = FfiEndpoint(key, config.toFfi(), socketBinder?.let { BinderAdapter(it) }, pins?.let { PinStoreAdapter(it) })

    /** The public fingerprint of this endpoint's identity. */
    val fingerprint: String get() = ffi.fingerprint()

    /** The addresses (`IP:PORT`) published for this endpoint's names. */
    val publishedAddresses: List<String> get() = ffi.publishedAddresses()

    /** Starts serving [name]. */
    suspend fun listen(name: String, timeout: Duration = 10.seconds): Listener =
        Listener(ffi.listen(name, timeout.toMillisArg("timeout")))

    /**
     * Opens a flow to whoever serves [name] with the right keys. A plain name: its keys are
     * pinned (in the [PinStore]) the first time and must match from then on, else
     * [MsocketException.KeyChanged]. `NAME#FINGERPRINT` (the peer's [fingerprint], 32 to 64
     * hex digits): the keys must have that fingerprint, else [MsocketException.WrongKey],
     * and they replace the pin (how a user accepts a peer's new keys). A malformed name or
     * fingerprint is [MsocketException.InvalidArgument]; a peer that does not allow this
     * endpoint's key answers [MsocketException.NotAllowed]. Cancelled after the flow
     * opened, the flow is closed (the peer sees its stream end).
     */
    suspend fun connect(name: String, timeout: Duration = 30.seconds): PeerFlow =
        PeerFlow(ffi.connect(name, timeout.toMillisArg("timeout")))

    /**
     * How many of this endpoint's flows are open (opened or accepted, and neither closed
     * nor let go of): the count now, then each change; completes when the endpoint is
     * closed. Hold what flows need (a cellular network request) only while it is above 0.
     */
    val openFlows: Flow<Int>
        get() = flow {
            var seen = ffi.openFlows()
            emit(seen.toInt())
            while (true) {
                seen = try {
                    ffi.openFlowsChanged(seen)
                } catch (e: MsocketException.Closed) {
                    return@flow
                }
                emit(seen.toInt())
            }
        }

    /**
     * The platform's networks, as one full snapshot, on every change. Returns whether it
     * differed from the previous one. Never waits.
     */
    fun updateNetwork(interfaces: List<NetworkInterface>): Boolean = ffi.updateNetwork(interfaces)

    /**
     * Stops listeners and name upkeep; open flows go on but cannot re-dial. Later calls
     * fail with [MsocketException.Closed]; the native handle is freed when this object is
     * collected.
     */
    override fun close() = ffi.release()
}

/** Accepts the flows peers open to one name. */
class Listener internal constructor(private val ffi: FfiListener) : Closeable {
    val name: String = ffi.name()

    /** The next flow a peer opened; [MsocketException.Timeout] if none came in [timeout]. */
    suspend fun accept(timeout: Duration = 1.minutes): PeerFlow = PeerFlow(ffi.accept(timeout.toMillisArg("timeout")))

    /** Stops listening; a waiting [accept] fails with [MsocketException.Closed] at once. */
    override fun close() = ffi.release()
}

