/*
 * 464XLAT on IPv6-only cellular networks.
 *
 * An IPv6-only mobile network gives the phone no IPv4 address; Android's CLAT daemon
 * translates IPv4 packets to IPv6 (and the carrier's NAT64 back), through a stacked
 * interface named `v4-<interface>` that carries a private IPv4 address (192.0.0.4 and
 * neighbours). LinkProperties lists that address only among its hidden stacked links,
 * but java.net.NetworkInterface sees the interface. Reporting its address with the
 * network lets the core open IPv4 subflows (to peers that publish only IPv4) through the
 * CLAT; the socket is bound to the cellular network like any other of its subflows.
 */
package dev.msocket.net

import java.net.Inet4Address
import java.net.InetAddress

/** The addresses of a named interface of this device, or null if it does not exist. */
fun interface InterfaceAddresses {
    fun of(interfaceName: String): List<InetAddress>?

    companion object {
        /** The system's interfaces, through java.net.NetworkInterface. */
        val SYSTEM = InterfaceAddresses { name ->
            try {
                java.net.NetworkInterface.getByName(name)?.inetAddresses?.toList()
            } catch (e: Exception) {
                null
            }
        }
    }
}

object Clat {
    /** The name Android gives the stacked CLAT interface of [interfaceName]. */
    fun stackedName(interfaceName: String): String = "v4-$interfaceName"

    /**
     * [addresses] of [interfaceName], plus the IPv4 addresses of its CLAT interface when
     * the link itself has no IPv4 address (an IPv6-only network); unchanged otherwise.
     */
    fun withClat(interfaceName: String?, addresses: List<InetAddress>, interfaces: InterfaceAddresses): List<InetAddress> {
        if (interfaceName.isNullOrBlank()) return addresses
        if (addresses.any { it is Inet4Address && !it.isLinkLocalAddress }) return addresses
        if (addresses.none { !it.isLinkLocalAddress }) return addresses
        val stacked = interfaces.of(stackedName(interfaceName)) ?: return addresses
        val v4 = stacked.filter { it is Inet4Address && !it.isLinkLocalAddress && it !in addresses }
        return addresses + v4
    }
}
