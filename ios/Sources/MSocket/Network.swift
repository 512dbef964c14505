// The platform's networks, as the core wants them: one full snapshot per change.
//
// iOS reports paths (NWPathMonitor: which interfaces are usable, of which type, whether
// the path is expensive or constrained) but not their addresses; those come from
// getifaddrs. `NetworkSnapshot.build` joins the two and is plain Foundation, so it is
// testable with any Swift toolchain; only `PathMonitorBridge` (below, behind
// `canImport(Network)`) touches Apple's Network framework.
//
// No debounce is needed here, unlike on Android: NWPathMonitor already delivers each
// change as one coherent path.

import Foundation
#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#endif

/// One interface the platform says is usable (from `NWPath.availableInterfaces`).
public struct PlatformInterface: Equatable, Sendable {
    public enum LinkType: Sendable { case wifi, cellular, wiredEthernet, loopback, other }

    public var name: String
    public var index: UInt32
    public var type: LinkType

    public init(name: String, index: UInt32, type: LinkType) {
        self.name = name
        self.index = index
        self.type = type
    }
}

public enum NetworkSnapshot {
    /// The snapshot for `interfaces` (in the platform's preference order) with the
    /// addresses in `addresses` (by interface name). Cellular counts as metered, and so
    /// does any interface on a path the platform calls expensive (a hotspot) or
    /// constrained (Low Data Mode). With `satisfied` false every interface is down.
    public static func build(
        interfaces: [PlatformInterface],
        addresses: [String: [String]],
        expensive: Bool,
        constrained: Bool,
        satisfied: Bool
    ) -> [NetworkInterface] {
        var seen = Set<String>()
        var out: [NetworkInterface] = []
        for i in interfaces where i.type != .loopback && seen.insert(i.name).inserted {
            let kind: InterfaceKind
            switch i.type {
            case .wifi: kind = .wifi
            case .cellular: kind = .cellular
            case .wiredEthernet: kind = .ethernet
            case .loopback, .other: kind = .other
            }
            out.append(NetworkInterface(
                name: i.name,
                index: i.index,
                kind: kind,
                metered: kind == .cellular || expensive || constrained,
                up: satisfied,
                addresses: addresses[i.name] ?? []
            ))
        }
        return out
    }

    /// The addresses of every interface (getifaddrs), by name: IPv4 and IPv6, without
    /// link-local ones (they only reach the same link) or IPv6 scope suffixes.
    public static func currentAddresses() -> [String: [String]] {
        var result: [String: [String]] = [:]
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0, let first = head else { return result }
        defer { freeifaddrs(head) }
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let sa = entry.pointee.ifa_addr else { continue }
            let family = Int32(sa.pointee.sa_family)
            guard family == AF_INET || family == AF_INET6 else { continue }
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let len = socklen_t(family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
            guard getnameinfo(sa, len, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 else { continue }
            let text = String(cString: host).split(separator: "%").first.map(String.init) ?? ""
            if text.isEmpty || text.lowercased().hasPrefix("fe80:") || text.hasPrefix("169.254.") { continue }
            let name = String(cString: entry.pointee.ifa_name)
            result[name, default: []].append(text)
        }
        return result
    }
}

#if canImport(Network)
import Network

/// Feeds NWPathMonitor's view of the networks into an `Endpoint`, and binds each
/// subflow's socket to its interface (`IP_BOUND_IF` / `IPV6_BOUND_IF`).
///
/// ```
/// let bridge = PathMonitorBridge()
/// let endpoint = try Endpoint(key: key, config: config, bindSocket: bridge.bindSocket)
/// bridge.start(endpoint)
/// ```
public final class PathMonitorBridge: @unchecked Sendable {
    private let monitor = NWPathMonitor()
    private let queue = DispatchQueue(label: "msocket.path-monitor")
    private let lock = NSLock()
    private var indexByAddress: [String: UInt32] = [:]
    private weak var endpoint: Endpoint?

    public init() {}

    /// Pass to `Endpoint`'s initialiser: binds a socket to the interface owning its
    /// local address (left unbound when no interface does).
    public var bindSocket: SocketBind {
        { [weak self] fd, localAddress in
            guard let self else { return }
            self.lock.lock()
            let index = self.indexByAddress[localAddress]
            self.lock.unlock()
            guard var ifIndex = index else { return }
            let v6 = localAddress.contains(":")
            let rc = setsockopt(fd, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_BOUND_IF : IP_BOUND_IF,
                                &ifIndex, socklen_t(MemoryLayout<UInt32>.size))
            if rc != 0 {
                throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EINVAL)
            }
        }
    }

    /// Starts reporting to `endpoint`; the current path arrives at once.
    public func start(_ endpoint: Endpoint) {
        self.endpoint = endpoint
        monitor.pathUpdateHandler = { [weak self] path in self?.update(path) }
        monitor.start(queue: queue)
    }

    public func stop() { monitor.cancel() }

    private func update(_ path: NWPath) {
        let interfaces = path.availableInterfaces.map { i -> PlatformInterface in
            let type: PlatformInterface.LinkType
            switch i.type {
            case .wifi: type = .wifi
            case .cellular: type = .cellular
            case .wiredEthernet: type = .wiredEthernet
            case .loopback: type = .loopback
            default: type = .other
            }
            return PlatformInterface(name: i.name, index: UInt32(i.index), type: type)
        }
        let addresses = NetworkSnapshot.currentAddresses()
        let snapshot = NetworkSnapshot.build(
            interfaces: interfaces,
            addresses: addresses,
            expensive: path.isExpensive,
            constrained: path.isConstrained,
            satisfied: path.status == .satisfied
        )
        var byAddress: [String: UInt32] = [:]
        for i in snapshot { for a in i.addresses { byAddress[a] = i.index } }
        lock.lock()
        indexByAddress = byAddress
        lock.unlock()
        _ = try? endpoint?.updateNetwork(snapshot)
    }
}
#endif
