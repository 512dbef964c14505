/*
 * The streaming sample on a terminal: `play` waits for a stream on a name and plays it
 * from a small buffer; `send` streams chunks at a bitrate to a name. Both print a report
 * a second (`key=value` words) and a summary line at the end; see sample-apps/README.md.
 */
package dev.msocket.samples.console

import java.io.File
import kotlin.system.exitProcess
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import dev.msocket.PathPolicy
import dev.msocket.ffi.MsocketException
import dev.msocket.samples.FormatException
import dev.msocket.samples.stream.StreamFrame
import dev.msocket.samples.stream.StreamPlayer
import dev.msocket.samples.stream.StreamSender

private const val USAGE = """msocket stream: a live stream to a named player, across moves and outages.

usage: sample-apps/run stream play --me NAME [--buffer-ms 2000] [common options]
       sample-apps/run stream send --to NAME[#FINGERPRINT] [--bitrate-kbps 2000]
                                   [--seconds 30] [--policy backup] [common options]
common options: [--names tcp://HOST:PORT] [--relay HOST:PORT]... [--data DIR] [--log LEVEL]

  play             listen on NAME, play one stream from a buffer of --buffer-ms, exit
  send             stream --seconds of media at --bitrate-kbps to NAME, then exit
  --policy P       how the flow uses Wi-Fi and cellular: backup (default), performance,
                   energy, redundant
  --names URL      the name service (default: the environment variable MSOCKET_NAMES)
  --relay H:P      (play) a relay to be reachable through behind NAT; repeatable
  --data DIR       where the key and pins live (default ~/.msocket-stream/ROLE)
  --log LEVEL      msocket's own log on stderr: error, warn (default), info, debug, trace

While it runs, type `policy NAME` on either side to switch the policy (the player asks
the sender, which decides). Every second: t= rate= buffer= state= stalls= longest_stall=
paths= policy= energy= chunks= skipped=; at the end one `summary ...` line."""

fun main(args: Array<String>) = cli(USAGE, args) { argv ->
    val role = argv.firstOrNull() ?: throw UsageException("play or send?")
    val o = Options(argv.drop(1), repeatable = setOf("relay"))
    val data = File(o.opt("data") ?: "${System.getProperty("user.home")}/.msocket-stream/$role")
    when (role) {
        "play" -> {
            o.known("me", "buffer-ms", "names", "relay", "data", "log")
            val me = o.req("me")
            val buffer = o.int("buffer-ms", 2000, 100..60_000)
            val endpoint = openEndpoint(data, o.req("names", "MSOCKET_NAMES"), o.all("relay"), PathPolicy.BACKUP, o.opt("log"))
            play(endpoint, me, buffer.toLong())
        }
        "send" -> {
            o.known("to", "bitrate-kbps", "seconds", "policy", "names", "relay", "data", "log")
            val to = o.req("to")
            val bitrate = o.int("bitrate-kbps", 2000, 8..200_000)
            val seconds = o.int("seconds", 30, 1..86_400)
            val policy = o.policy("policy", PathPolicy.BACKUP)
            val endpoint = openEndpoint(data, o.req("names", "MSOCKET_NAMES"), o.all("relay"), policy, o.opt("log"))
            send(endpoint, to, bitrate, seconds)
        }
        else -> throw UsageException("\"$role\": play or send?")
    }
}

private fun play(endpoint: dev.msocket.Endpoint, me: String, bufferMs: Long): Unit = runBlocking {
    val listener = failing("listen on $me") { endpoint.listen(me) }
    say("ready     $me#${endpoint.fingerprint} waiting for a stream")
    val flow = failing("accept a stream") { listener.accept(timeout = 3600.seconds) }
    say("playing   from ${flow.peerFingerprint} flow ${flow.id} buffer ${bufferMs} ms")
    val player = StreamPlayer(flow, bufferMs, onReport = { say("report    ${it.describe()}") }, onNote = { say("note      $it") })
    val input = launch(Dispatchers.IO) {
        policyCommands("ask for the policy") {
            player.requestPolicy(it)
            "asked the sender for policy ${StreamFrame.policyName(it)}"
        }
    }
    val summary = failing("play the stream") { player.run() }
    input.cancel()
    say(summary.describe())
    try {
        flow.finish(10.seconds)
    } catch (e: MsocketException) {
        say("note      the flow did not close cleanly: ${e.message}")
    }
    flow.close()
    endpoint.close()
    exitProcess(if (summary.corrupt == 0) 0 else 1)
}

private fun send(endpoint: dev.msocket.Endpoint, to: String, bitrate: Int, seconds: Int): Unit = runBlocking {
    val flow = failing("connect to $to") { endpoint.connect(to) }
    say("sending   to $to flow ${flow.id}: $seconds s at $bitrate kbit/s")
    val sender = try {
        StreamSender(flow, bitrate, seconds, onReport = { say("report    ${it.describe()}") }, onNote = { say("note      $it") })
    } catch (e: IllegalArgumentException) {
        throw UsageException(e.message ?: "bad stream parameters")
    }
    val input = launch(Dispatchers.IO) {
        policyCommands("switch the policy") {
            sender.setPolicy(it)
            "policy now ${StreamFrame.policyName(it)}"
        }
    }
    val summary = failing("stream") { sender.run() }
    input.cancel()
    say(summary.describe())
    flow.close()
    endpoint.close()
    exitProcess(0)
}

/**
 * Carries out each `policy NAME` typed, until the end of input: [apply] returns the note
 * to print; a failure is printed as a problem ("could not [what]").
 */
private suspend fun policyCommands(what: String, apply: suspend (PathPolicy) -> String) {
    while (true) {
        val line = readlnOrNull()?.trim() ?: return
        val policy = policyCommand(line) ?: continue
        try {
            say("note      ${apply(policy)}")
        } catch (e: MsocketException) {
            say("problem   could not $what: ${e.message}")
        }
    }
}

/** The policy `policy NAME` asks for; null (and a line saying why) for anything else. */
private fun policyCommand(line: String): PathPolicy? {
    if (line.isEmpty()) return null
    if (!line.startsWith("policy ")) {
        say("problem   unknown command (try: policy backup|performance|energy|redundant)")
        return null
    }
    return try {
        StreamFrame.parsePolicy(line.removePrefix("policy "))
    } catch (e: FormatException) {
        say("problem   ${e.message}")
        null
    }
}

/** [block], or a message saying what failed and exit status 1. */
private inline fun <T> failing(what: String, block: () -> T): T = try {
    block()
} catch (e: MsocketException) {
    System.err.println("error: could not $what: ${e::class.simpleName}: ${e.message}")
    exitProcess(1)
} catch (e: FormatException) {
    System.err.println("error: could not $what: ${e.message}")
    exitProcess(1)
}
