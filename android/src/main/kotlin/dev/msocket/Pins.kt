/*
 * Pin stores: the keys each name an endpoint connects to was first seen with, kept where
 * the app keeps its data, so a name service cannot hand a name to another key later.
 */
package dev.msocket

import java.io.File
import java.io.IOException
import java.util.concurrent.ConcurrentHashMap
import dev.msocket.ffi.PinStore as FfiPinStore
import dev.msocket.ffi.PinnedKeys as FfiPinnedKeys

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
        try {
            writeAtomically(file, text.toByteArray())
        } catch (e: IOException) {
            throw IOException("pin file $file: ${e.message}", e)
        }
    }

    private companion object {
        const val MAX_BYTES = 4L shl 20
    }
}

internal class PinStoreAdapter(private val store: PinStore) : FfiPinStore {
    override fun get(name: String): FfiPinnedKeys? = fromApp("PinStore.get") { store.get(name)?.toFfi() }
    override fun set(name: String, pin: FfiPinnedKeys) = fromApp("PinStore.set") { store.set(name, PinnedKeys.from(pin)) }
    override fun remove(name: String) = fromApp("PinStore.remove") { store.remove(name) }
}
