/*
 * Keeping mobile data up only while it can serve a flow.
 *
 * Android tears cellular down while Wi-Fi works unless an app requests it, and a request
 * keeps the radio registered (and the cellular network's standby subflows ready for a
 * hand-off) for as long as it is held. [CellularDemand] holds the request only while the
 * endpoint has open flows: it follows the endpoint's count of open flows (a
 * kotlinx.coroutines Flow<Int>: the current count, then each change), requests when the
 * count leaves 0 and releases when it returns to 0. Android itself lingers a released
 * network for a while, so a flow opened right after the last one closed rarely waits.
 */
package dev.msocket.net

import java.io.Closeable
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Job
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.distinctUntilChanged
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.launch

/**
 * Calls [request] when [openFlows] rises above 0 and [release] when it drops back to 0
 * (and at [close] while held). A [request] that throws leaves the demand unmet and is
 * reported to [onError]; the next rise tries again. Thread-safe.
 */
class CellularDemand(
    private val openFlows: Flow<Int>,
    private val request: () -> Unit,
    private val release: () -> Unit,
    private val onError: (Throwable) -> Unit,
) : Closeable {
    private var job: Job? = null
    private val held = MutableStateFlow(false)
    private var closed = false

    /** Whether the cellular request is held: now, then each change. */
    val requested: StateFlow<Boolean> = held.asStateFlow()

    /** Starts following [openFlows] in [scope]. */
    @Synchronized
    fun start(scope: CoroutineScope) {
        check(job == null && !closed) { "CellularDemand started twice or after close" }
        job = scope.launch {
            openFlows.map { it > 0 }.distinctUntilChanged().collect { wanted -> set(wanted) }
        }
    }

    @Synchronized
    private fun set(wanted: Boolean) {
        if (closed || wanted == held.value) return
        try {
            if (wanted) request() else release()
            held.value = wanted
        } catch (t: Throwable) {
            if (!wanted) held.value = false
            onError(t)
        }
    }

    /** Stops following the count and releases a held request. Idempotent. */
    override fun close() {
        val running: Job?
        synchronized(this) {
            if (closed) return
            closed = true
            running = job
            job = null
            if (held.value) {
                held.value = false
                try {
                    release()
                } catch (t: Throwable) {
                    onError(t)
                }
            }
        }
        running?.cancel()
    }
}
