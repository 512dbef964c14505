/*
 * How the samples name a path to a user: the kind of link it leaves from and whether it
 * goes through a relay, e.g. "wifi direct" or "cell relayed".
 */
package dev.msocket.samples

import dev.msocket.FlowPath
import dev.msocket.InterfaceKind

/** "wifi", "cell", "wired", or "other" for [kind] (null: not known). */
fun linkName(kind: InterfaceKind?): String = when (kind) {
    InterfaceKind.WIFI -> "wifi"
    InterfaceKind.CELLULAR -> "cell"
    InterfaceKind.ETHERNET -> "wired"
    InterfaceKind.OTHER, null -> "other"
}

/** "wifi direct", "cell relayed", ... */
fun FlowPath.label(): String = "${linkName(interfaceKind)} ${if (relayed) "relayed" else "direct"}"
