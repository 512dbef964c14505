/*
 * Which paths carry the stream: each path's byte counter sampled at every report, the
 * differences summed by kind of path ("wifi/direct", "cell/relayed"), so a report says
 * where the last second's bytes went and a summary where all of them went.
 */
package dev.msocket.samples.stream

import dev.msocket.FlowPath
import dev.msocket.samples.label

/** Bytes a kind of path carried, and their part of the whole. */
data class Share(val path: String, val bytes: Long, val percent: Int)

/** Samples of a flow's paths; [sending] counts bytes sent, else bytes received. */
class PathUse(private val sending: Boolean) {
    private val last = HashMap<String, Long>()
    private val total = LinkedHashMap<String, Long>()

    /** What each kind of path carried since the previous sample. */
    fun sample(paths: List<FlowPath>): List<Share> {
        val delta = LinkedHashMap<String, Long>()
        for (p in paths) {
            val key = "${p.local} ${p.remote}"
            val count = if (sending) p.bytesSent else p.bytesReceived
            val d = (count - (last[key] ?: 0)).coerceAtLeast(0)
            last[key] = count
            val kind = p.label().replace(' ', '/')
            delta.merge(kind, d, Long::plus)
            total.merge(kind, d, Long::plus)
        }
        return shares(delta)
    }

    /** What each kind of path carried over every sample. */
    fun totals(): List<Share> = shares(total)

    private fun shares(bytes: Map<String, Long>): List<Share> {
        val sum = bytes.values.sum()
        return bytes.map { (k, v) -> Share(k, v, if (sum == 0L) 0 else (v * 100 / sum).toInt()) }
    }
}

/** `wifi/direct:97%,cell/direct:3%` ("none" without paths). */
fun List<Share>.describe(): String = if (isEmpty()) "none" else joinToString(",") { "${it.path}:${it.percent}%" }
