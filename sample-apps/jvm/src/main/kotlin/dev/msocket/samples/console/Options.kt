/*
 * Command-line options of the console samples: `--name value` pairs (some repeatable),
 * every problem a message that says what to type instead, never a stack trace.
 */
package dev.msocket.samples.console

import java.io.File
import kotlin.system.exitProcess
import dev.msocket.Endpoint
import dev.msocket.EndpointConfig
import dev.msocket.FilePinStore
import dev.msocket.LogLevel
import dev.msocket.MSocketLog
import dev.msocket.PathPolicy
import dev.msocket.samples.KeyFile
import dev.msocket.samples.fmt

/** A command line that cannot be run: [message] says why. */
class UsageException(message: String) : Exception(message)

class Options(args: List<String>, private val repeatable: Set<String>, private val flags: Set<String> = emptySet()) {
    private val values = LinkedHashMap<String, MutableList<String>>()

    init {
        var i = 0
        while (i < args.size) {
            val a = args[i]
            if (!a.startsWith("--")) throw UsageException("unexpected argument \"$a\"")
            val key = a.removePrefix("--")
            if (key in flags) {
                values.getOrPut(key) { mutableListOf() } += "true"
                i++
                continue
            }
            val v = args.getOrNull(i + 1) ?: throw UsageException("$a needs a value")
            val list = values.getOrPut(key) { mutableListOf() }
            if (list.isNotEmpty() && key !in repeatable) throw UsageException("$a given twice")
            list += v
            i += 2
        }
    }

    fun known(vararg keys: String) {
        val unknown = values.keys - keys.toSet()
        if (unknown.isNotEmpty()) throw UsageException("unknown option --${unknown.first()}")
    }

    fun flag(key: String) = values.containsKey(key)
    fun opt(key: String): String? = values[key]?.single()
    fun all(key: String): List<String> = values[key] ?: emptyList()
    fun req(key: String, env: String? = null): String =
        opt(key) ?: env?.let { System.getenv(it) }?.takeIf { it.isNotBlank() }
            ?: throw UsageException("--$key is required${env?.let { " (or set $it)" } ?: ""}")

    fun int(key: String, default: Int, range: IntRange): Int {
        val v = opt(key) ?: return default
        val n = v.toIntOrNull() ?: throw UsageException("--$key $v is not a whole number")
        if (n !in range) throw UsageException("--$key $n is outside ${range.first} to ${range.last}")
        return n
    }

    fun policy(key: String, default: PathPolicy): PathPolicy = opt(key)?.let { parsePolicy(it) } ?: default
}

fun parsePolicy(name: String): PathPolicy =
    PathPolicy.entries.firstOrNull { it.name.equals(name.trim(), ignoreCase = true) }
        ?: throw UsageException("\"$name\" is not a policy: backup, performance, energy or redundant")

/** Runs [body], turning usage errors into a message and exit status 2. */
fun cli(usage: String, args: Array<String>, body: (List<String>) -> Unit) {
    if (args.any { it == "--help" || it == "-h" }) {
        println(usage)
        return
    }
    try {
        body(args.toList())
    } catch (e: UsageException) {
        System.err.println("error: ${e.message}\n\n$usage")
        exitProcess(2)
    }
}

/**
 * The endpoint every console sample uses: the key under [data], pins beside it, the
 * system's networks followed (Wi-Fi, cellular, wired, as the kernel reports them), and
 * msocket's own logs on stderr at [log] (default: warnings).
 */
fun openEndpoint(data: File, names: String, relays: List<String>, policy: PathPolicy, log: String?): Endpoint {
    val level = log?.let { l -> LogLevel.entries.firstOrNull { it.name.equals(l, ignoreCase = true) } ?: throw UsageException("--log $l: one of error, warn, info, debug, trace") }
    MSocketLog.setSink({ lvl, target, message -> System.err.println("${stamp()} ${lvl.name.lowercase()} $target: $message") }, level ?: LogLevel.WARN)
    val key = KeyFile.loadOrCreate(File(data, "key"))
    val config = EndpointConfig(namesUrl = names, relays = relays, policy = policy, followSystemNetwork = true)
    return Endpoint(key, config, pins = FilePinStore(File(data, "pins")))
}

/** `12:00:01.234`, the time of day every console line starts with. */
fun stamp(): String {
    val t = java.time.LocalTime.now()
    return fmt("%02d:%02d:%02d.%03d", t.hour, t.minute, t.second, t.nano / 1_000_000)
}

/** Prints [line] after a time stamp, whole, even when several threads print at once. */
fun say(line: String) = synchronized(System.out) {
    println("[${stamp()}] $line")
    System.out.flush()
}
