/*
 * The Kotlin API of the msocket SDK, over the bindings UniFFI generates from
 * udl/msocket.udl (package dev.msocket.ffi).
 *
 * Why a layer over the generated code: the bindings are faithful to the FFI — blocking
 * calls, unsigned millisecond counts, a `release()` beside the generated `close()` — and
 * an app wants suspend functions, kotlin.time durations, `Closeable` objects that do the
 * right thing in `use {}`, and events as a Flow. Nothing here adds behaviour; it only
 * moves the blocking calls to Dispatchers.IO, converts types and keeps app callbacks from
 * throwing into native code.
 *
 * Cancellation: a coroutine cancelled while a call waits in native code (receive, accept)
 * resumes only when that call returns — at its timeout, or at once when the object is
 * closed. Keep timeouts as short as the app can live with, or close the object.
 */
package dev.msocket

import java.io.Closeable
import java.io.File
import java.io.FileOutputStream
import java.io.IOException
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.time.Duration
import kotlin.time.Duration.Companion.microseconds
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.minutes
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.BufferOverflow
import kotlinx.coroutines.flow.MutableSharedFlow
import kotlinx.coroutines.flow.SharedFlow
import kotlinx.coroutines.flow.asSharedFlow
import kotlinx.coroutines.withContext
import dev.msocket.ffi.CallbackException
import dev.msocket.ffi.MsocketException
import dev.msocket.ffi.Endpoint as FfiEndpoint
import dev.msocket.ffi.EndpointOptions
import dev.msocket.ffi.Flow as FfiFlow
import dev.msocket.ffi.FlowEvent as FfiFlowEvent
import dev.msocket.ffi.FlowListener as FfiFlowListener
import dev.msocket.ffi.Listener as FfiListener
import dev.msocket.ffi.PinStore as FfiPinStore
import dev.msocket.ffi.PinnedKeys as FfiPinnedKeys
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
    /** Local addresses to use until the platform reports its networks. */
    val localAddresses: List<String> = emptyList(),
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

/** Runs a blocking FFI call off the caller's dispatcher. */
private suspend fun <T> io(block: () -> T): T = withContext(Dispatchers.IO) { block() }

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
private inline fun <T> fromApp(what: String, block: () -> T): T =
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
 * What a [PinStore] keeps of a name: the keys it was first seen with (32 bytes each) and
 * the highest sequence number of its records accepted since. Keep it as given: [encode]
 * makes it one line of text, [decode] reads that back.
 */
class PinnedKeys(signingKey: ByteArray, noiseKey: ByteArray, val seq: Long) {
    private val signing = signingKey.copyOf()
    private val noise = noiseKey.copyOf()

    /** The peer's Ed25519 key, which signs its name records. */
    val signingKey: ByteArray get() = signing.copyOf()

    /** The peer's X25519 key, which it proves in the handshake. */
    val noiseKey: ByteArray get() = noise.copyOf()

    /** The fingerprint of these keys, as the peer's [Endpoint.fingerprint] prints it. */
    val fingerprint: String get() = dev.msocket.ffi.pinnedFingerprint(toFfi())

    /** `SIGNING-KEY NOISE-KEY SEQ`: both keys in hex, the sequence number in decimal. */
    fun encode(): String = "${signing.toHex()} ${noise.toHex()} ${seq.toULong()}"

    internal fun toFfi() = FfiPinnedKeys(signingKey = signing.copyOf(), noiseKey = noise.copyOf(), seq = seq.toULong())

    override fun equals(other: Any?) =
        other is PinnedKeys && signing.contentEquals(other.signing) && noise.contentEquals(other.noise) && seq == other.seq

    override fun hashCode() = (signing.contentHashCode() * 31 + noise.contentHashCode()) * 31 + seq.hashCode()

    override fun toString() = "PinnedKeys(${signing.toHex()}, ${noise.toHex()}, seq ${seq.toULong()})"

    companion object {
        /** Reads what [encode] wrote; [IllegalArgumentException] if it is not that. */
        fun decode(text: String): PinnedKeys {
            val fields = text.trim().split(Regex("\\s+"))
            require(fields.size == 3) { "a pin is 3 fields (signing key, noise key, sequence number), got ${fields.size}" }
            val seq = fields[2].toULongOrNull() ?: throw IllegalArgumentException("the sequence number ${fields[2]} is not a number")
            return PinnedKeys(fields[0].fromHex("signing key"), fields[1].fromHex("noise key"), seq.toLong())
        }

        internal fun from(pin: FfiPinnedKeys) = PinnedKeys(pin.signingKey, pin.noiseKey, pin.seq.toLong())
    }
}

private fun ByteArray.toHex() = joinToString("") { "%02x".format(it) }

private fun String.fromHex(what: String): ByteArray {
    require(length == 64 && all { Character.digit(it, 16) >= 0 }) { "the $what is not 64 hex digits" }
    return ByteArray(32) { ((Character.digit(this[2 * it], 16) shl 4) + Character.digit(this[2 * it + 1], 16)).toByte() }
}

/**
 * Keeps the keys each name this endpoint connects to was first seen with, so the name
 * service cannot hand the name to another key later ([MsocketException.KeyChanged]).
 * Implement it over storage that outlives the process — [FilePinStore] in the app's files
 * directory, or SharedPreferences with [PinnedKeys.encode] — and pass it to [Endpoint].
 * Called on msocket's threads while a connect (or a moving peer's lookup) waits: keep calls
 * quick and never call waiting SDK methods from them. What they throw fails that connect
 * with [MsocketException.PinStore].
 */
interface PinStore {
    /** The pin of [name], or null. */
    fun get(name: String): PinnedKeys?

    /** Pins [name] to [pin], replacing its pin; it must be stored before this returns. */
    fun set(name: String, pin: PinnedKeys)

    /** Forgets the pin of [name]. */
    fun remove(name: String)
}

/** Pins in memory, forgotten with the process (what an endpoint without a store uses). */
class MemoryPinStore : PinStore {
    private val pins = ConcurrentHashMap<String, PinnedKeys>()

    /** Every pin now, by name. */
    val entries: Map<String, PinnedKeys> get() = HashMap(pins)

    override fun get(name: String): PinnedKeys? = pins[name]
    override fun set(name: String, pin: PinnedKeys) { pins[name] = pin }
    override fun remove(name: String) { pins.remove(name) }
}

/**
 * Pins in a text file, one name a line (`NAME SIGNING-KEY NOISE-KEY SEQ`, the format of the
 * `msocket` CLI's pin file). Every change rewrites the file atomically (a temporary file
 * renamed over it); a line that is not a pin is an error naming it, never silently dropped.
 * On Android: `FilePinStore(File(context.filesDir, "msocket-pins"))`.
 */
class FilePinStore(val file: File) : PinStore {
    private val lock = Any()

    /** Every pin in the file, by name. */
    val entries: Map<String, PinnedKeys> get() = synchronized(lock) { read() }

    override fun get(name: String): PinnedKeys? = entries[name]
    override fun set(name: String, pin: PinnedKeys) = change { it[name] = pin }
    override fun remove(name: String) = change { it.remove(name) }

    private fun read(): MutableMap<String, PinnedKeys> {
        val pins = sortedMapOf<String, PinnedKeys>()
        if (!file.exists()) return pins
        if (file.length() > MAX_BYTES) throw IOException("pin file $file is over $MAX_BYTES bytes; refusing to read it")
        file.readLines().forEachIndexed { i, raw ->
            val line = raw.trim()
            if (line.isEmpty() || line.startsWith("#")) return@forEachIndexed
            val (name, rest) = line.split(Regex("\\s+"), limit = 2).let { it[0] to it.getOrElse(1) { "" } }
            pins[name] = try {
                PinnedKeys.decode(rest)
            } catch (e: IllegalArgumentException) {
                throw IOException("pin file $file, line ${i + 1}: ${e.message} (fix or delete the line)")
            }
        }
        return pins
    }

    private fun change(apply: (MutableMap<String, PinnedKeys>) -> Unit): Unit = synchronized(lock) {
        val pins = read()
        apply(pins)
        val text = buildString {
            append("# msocket pins: NAME SIGNING-KEY NOISE-KEY SEQ\n")
            for ((name, pin) in pins) append("$name ${pin.encode()}\n")
        }
        file.absoluteFile.parentFile?.mkdirs()
        val tmp = File(file.absoluteFile.parentFile, ".${file.name}.tmp")
        FileOutputStream(tmp).use {
            it.write(text.toByteArray())
            it.fd.sync()
        }
        if (!tmp.renameTo(file)) {
            tmp.delete()
            throw IOException("pin file $file: could not replace it with $tmp")
        }
    }

    private companion object {
        const val MAX_BYTES = 4L shl 20
    }
}

private class PinStoreAdapter(private val store: PinStore) : FfiPinStore {
    override fun get(name: String): FfiPinnedKeys? = fromApp("PinStore.get") { store.get(name)?.toFfi() }
    override fun set(name: String, pin: FfiPinnedKeys) = fromApp("PinStore.set") { store.set(name, PinnedKeys.from(pin)) }
    override fun remove(name: String) = fromApp("PinStore.remove") { store.remove(name) }
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
        io { Listener(ffi.listen(name, timeout.toMillisArg("timeout"))) }

    /**
     * Opens a flow to whoever serves [name] with the right keys. A plain name: its keys are
     * pinned (in the [PinStore]) the first time and must match from then on, else
     * [MsocketException.KeyChanged]. `NAME#FINGERPRINT` (the peer's [fingerprint], 32 to 64
     * hex digits): the keys must have that fingerprint, else [MsocketException.WrongKey],
     * and they replace the pin (how a user accepts a peer's new keys). A malformed name or
     * fingerprint is [MsocketException.InvalidArgument]; a peer that does not allow this
     * endpoint's key answers [MsocketException.NotAllowed].
     */
    suspend fun connect(name: String, timeout: Duration = 30.seconds): Flow =
        io { Flow(ffi.connect(name, timeout.toMillisArg("timeout"))) }

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
    suspend fun accept(timeout: Duration = 1.minutes): Flow = io { Flow(ffi.accept(timeout.toMillisArg("timeout"))) }

    /** Stops listening; a waiting [accept] fails with [MsocketException.Closed] at once. */
    override fun close() = ffi.release()
}

/** A change in a flow's life. */
sealed class FlowEvent {
    /** A path (a TCP subflow on one interface) joined the flow. */
    data class PathAdded(val local: String, val remote: String, val relayed: Boolean) : FlowEvent()
    /** A path died ([reason]; [detail] in words); its unacknowledged data goes out on another. */
    data class PathLost(
        val local: String,
        val remote: String,
        val reason: PathLossReason,
        val detail: String,
        val energyJoules: Double?,
    ) : FlowEvent()
    /** Data flows again after [outage] without a usable path. */
    data class Resumed(val outage: Duration) : FlowEvent()
    /** The peer moved to [addresses]. */
    data class PeerMoved(val addresses: List<String>) : FlowEvent()
    /** This device's usable addresses are now [addresses]. */
    data class Moved(val addresses: List<String>) : FlowEvent()
    /** Hole punching found no direct path after [attempts] tries: the flow stays relayed. */
    data class StaysRelayed(val attempts: Int) : FlowEvent()
    /**
     * The flow ended; [failure] (why) and [error] (in words) are null after a clean finish
     * of both sides.
     */
    data class Closed(val failure: FlowFailure?, val error: String?, val energyJoules: Double?) : FlowEvent()

    internal companion object {
        fun from(e: FfiFlowEvent): FlowEvent = when (e) {
            is FfiFlowEvent.PathAdded -> PathAdded(e.local, e.remote, e.relayed)
            is FfiFlowEvent.PathLost -> PathLost(e.local, e.remote, e.reason, e.detail, e.energyJoules)
            is FfiFlowEvent.Resumed -> Resumed(e.outageMs.toLong().milliseconds)
            is FfiFlowEvent.PeerMoved -> PeerMoved(e.addresses)
            is FfiFlowEvent.Moved -> Moved(e.addresses)
            is FfiFlowEvent.StaysRelayed -> StaysRelayed(e.attempts.toInt())
            is FfiFlowEvent.Closed -> Closed(e.failure, e.error, e.energyJoules)
        }
    }
}

/** One live path of a flow and its measurements. */
data class Path(
    val local: String,
    val remote: String,
    val state: PathState,
    val standby: Boolean,
    /** It runs through a relay ([remote] is the relay's address). */
    val relayed: Boolean,
    val srtt: Duration?,
    /** Bytes per second the peer acknowledged from this path, once measured. */
    val deliveryRate: Long?,
    val inFlight: Long,
    val bytesDelivered: Long,
    val bytesSent: Long,
    val bytesReceived: Long,
    /** Modelled radio energy so far (null: the interface's kind is unknown). */
    val energyJoules: Double?,
)

/**
 * One encrypted, ordered byte stream to a named peer that survives moves of either end.
 * [send] and [receive] may run at the same time from different coroutines.
 */
class Flow internal constructor(private val ffi: FfiFlow) : Closeable {
    val name: String = ffi.name()

    /** The flow's identifier, the same at both ends. */
    val id: String = ffi.id()

    /**
     * The fingerprint of the peer's keys, authenticated by the handshake: on an accepted
     * flow, who connected.
     */
    val peerFingerprint: String = ffi.peerFingerprint()

    private val listeners = CopyOnWriteArrayList<(FlowEvent) -> Unit>()
    private val shared = MutableSharedFlow<FlowEvent>(extraBufferCapacity = 256, onBufferOverflow = BufferOverflow.DROP_OLDEST)

    /** Registers with the FFI once, on first use: one native thread per flow. */
    private val dispatch by lazy {
        ffi.setListener(object : FfiFlowListener {
            override fun onEvent(event: FfiFlowEvent) {
                val e = FlowEvent.from(event)
                shared.tryEmit(e)
                for (l in listeners) {
                    try {
                        l(e)
                    } catch (t: Throwable) {
                        System.err.println("msocket: a flow event listener threw: $t")
                    }
                }
            }
        })
    }

    /** Events from the moment of collection on (earlier ones are not replayed). */
    val events: SharedFlow<FlowEvent>
        get() {
            dispatch
            return shared.asSharedFlow()
        }

    /**
     * Calls [listener] with every event from now on, in order, on this flow's event
     * thread: keep it quick (the flow's later events wait for it) and do not block in it.
     * What it throws is logged and ignored. Close the result to stop.
     */
    fun onEvent(listener: (FlowEvent) -> Unit): Closeable {
        listeners.add(listener)
        dispatch
        return Closeable { listeners.remove(listener) }
    }

    /** Sends all of [data]; returns once the flow took it (see [finish] for delivery). */
    suspend fun send(data: ByteArray, timeout: Duration = 30.seconds) = io { ffi.send(data, timeout.toMillisArg("timeout")) }

    /** Up to [maxBytes] bytes, or null once the peer finished and everything was read. */
    suspend fun receive(maxBytes: Int = 64 * 1024, timeout: Duration = 30.seconds): ByteArray? {
        if (maxBytes < 1) throw MsocketException.InvalidArgument("receive: maxBytes must be at least 1 (got $maxBytes)")
        return io { ffi.receive(maxBytes.toUInt(), timeout.toMillisArg("timeout")) }
    }

    /** Ends our stream and waits until the peer acknowledged every byte: success means delivered. */
    suspend fun finish(timeout: Duration = 30.seconds) = io { ffi.finish(timeout.toMillisArg("timeout")) }

    /** Ends the flow at once; the peer's calls fail with [reason]. */
    fun abort(reason: String) = ffi.abort(reason)

    /** How this flow uses its paths (set it on the connecting side). */
    var policy: PathPolicy
        get() = ffi.policy()
        set(value) = ffi.setPolicy(value)

    /** The live paths and their measurements. */
    fun paths(): List<Path> = ffi.paths().map {
        Path(
            local = it.local,
            remote = it.remote,
            state = it.state,
            standby = it.standby,
            relayed = it.relayed,
            srtt = it.srttUs?.toLong()?.microseconds,
            deliveryRate = it.deliveryRate?.toLong(),
            inFlight = it.inFlight.toLong(),
            bytesDelivered = it.bytesDelivered.toLong(),
            bytesSent = it.bytesSent.toLong(),
            bytesReceived = it.bytesReceived.toLong(),
            energyJoules = it.energyJoules,
        )
    }

    /** Modelled radio energy of the flow so far, in joules (null: no interface of known kind). */
    val energyJoules: Double? get() = ffi.energyJoules()

    /** Byte counters. */
    fun stats(): FlowStats = ffi.stats()

    /**
     * Lets go of the flow: our stream ends, what still arrives is discarded, and waiting
     * and later calls fail with [MsocketException.Closed]. Events keep coming until the
     * flow's [FlowEvent.Closed].
     */
    override fun close() = ffi.release()
}
