/*
 * Reports read a flow's figures once a second, and the flow may fail or be closed between
 * two reports. A figure that cannot be read is shown as unknown: the failure itself is
 * for the call that sends or receives to report, with its reason.
 */
package dev.msocket.samples.stream

import dev.msocket.PathPolicy
import dev.msocket.PeerFlow
import dev.msocket.ffi.MsocketException

private inline fun <T> orNull(read: () -> T): T? = try {
    read()
} catch (e: MsocketException) {
    null
}

/** What each kind of path carried since the previous sample; nothing once the flow is gone. */
internal fun PathUse.sampleOf(flow: PeerFlow): List<Share> = orNull { sample(flow.paths()) } ?: emptyList()

internal fun PeerFlow.policyOrNull(): PathPolicy? = orNull { policy }

internal fun PeerFlow.energyOrNull(): Double? = orNull { energyJoules }

internal fun PeerFlow.bytesAckedOrNull(): Long? = orNull { stats().bytesAcked.toLong() }
