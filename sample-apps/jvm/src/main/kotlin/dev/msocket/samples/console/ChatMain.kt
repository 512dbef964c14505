/*
 * The chat sample on a terminal. Its output is its interface: one line per thing that
 * happened, a time stamp, a fixed word (sent, delivered, received, path+, ...), the
 * contact, then details; see sample-apps/README.md.
 */
package dev.msocket.samples.console

import java.io.File
import kotlin.system.exitProcess
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import dev.msocket.PathPolicy
import dev.msocket.samples.FormatException
import dev.msocket.samples.chat.ChatEngine
import dev.msocket.samples.chat.ChatFrame
import dev.msocket.samples.chat.UnknownContactException

private const val USAGE = """msocket chat: talk to people by name, across moves, NATs and restarts.

usage: sample-apps/run chat --me NAME [--names tcp://HOST:PORT] [--relay HOST:PORT]...
                            [--add NAME#FINGERPRINT]... [--data DIR] [--log LEVEL]

  --me NAME        the name you listen on (others reach you as NAME#YOUR-FINGERPRINT,
                   printed on the "ready" line)
  --names URL      the name service (default: the environment variable MSOCKET_NAMES)
  --relay H:P      a relay (msocketd relay) to be reachable through behind NAT; repeatable
  --add N#FP       a contact, checked by key fingerprint; repeatable
  --data DIR       where your key, contacts and history live (default ~/.msocket-chat/NAME)
  --log LEVEL      msocket's own log on stderr: error, warn (default), info, debug, trace

Then type:
  @NAME text       send text to a contact
  /add NAME#FP     add a contact
  /contacts        list contacts
  /quit            leave (end of input too); undelivered messages go out on the next run

Lines printed: ready, earlier (history), sent, delivered, received, online, offline,
path+, path-, moved, resumed, relayed, contact, refused, problem."""

fun main(args: Array<String>) = cli(USAGE, args) { argv ->
    val o = Options(argv, repeatable = setOf("relay", "add"))
    o.known("me", "names", "relay", "add", "data", "log")
    val me = try {
        ChatFrame.checkName(o.req("me"))
    } catch (e: FormatException) {
        throw UsageException("--me: ${e.message}")
    }
    val data = File(o.opt("data") ?: "${System.getProperty("user.home")}/.msocket-chat/$me")
    val endpoint = openEndpoint(data, o.req("names", "MSOCKET_NAMES"), o.all("relay"), PathPolicy.BACKUP, o.opt("log"))
    runBlocking {
        val chat = ChatEngine(endpoint, me, data, this, show = { say(it.describe()) })
        for (spec in o.all("add")) {
            try {
                chat.add(spec)
            } catch (e: FormatException) {
                throw UsageException("--add: ${e.message}")
            }
        }
        try {
            chat.start()
        } catch (e: dev.msocket.ffi.MsocketException) {
            System.err.println("error: cannot listen on $me: ${e.message}")
            exitProcess(1)
        }
        while (true) {
            val line = withContext(Dispatchers.IO) { readlnOrNull() } ?: break
            if (!command(chat, line.trim())) break
        }
        chat.close()
        endpoint.close()
        exitProcess(0)
    }
}

/** Carries out one typed line; false to quit. */
private fun command(chat: ChatEngine, line: String): Boolean {
    try {
        when {
            line.isEmpty() -> {}
            line == "/quit" -> return false
            line == "/contacts" -> chat.contacts.all.forEach { say("contact   $it") }
            line.startsWith("/add ") -> say("contact   ${chat.add(line.removePrefix("/add "))} added")
            line.startsWith("@") -> {
                val to = line.substring(1).substringBefore(' ')
                val text = line.substringAfter(' ', "")
                if (text.isEmpty()) say("problem   usage: @NAME text") else chat.send(to, text)
            }
            else -> say("problem   unknown command (try @NAME text, /add NAME#FP, /contacts, /quit)")
        }
    } catch (e: FormatException) {
        say("problem   ${e.message}")
    } catch (e: UnknownContactException) {
        say("problem   ${e.message}")
    } catch (e: IllegalArgumentException) {
        say("problem   ${e.message}")
    }
    return true
}
