// The platform's networks, as the core wants them: one full snapshot per change.
//
// iOS reports paths, not interfaces: an NWPathMonitor says whether *a* route is usable,
// so one default-path monitor would call cellular down whenever the default route (say a
// Wi-Fi without Internet) is unsatisfied. Each link type gets its own monitor
// (`NWPathMonitor(requiredInterfaceType:)`) and each interface takes its state from its
// own type's monitor. NWPathMonitor does not fire when only an address changes (a DHCP
// renewal, a new IPv6 privacy address, a NAT64 prefix), so addresses are also re-read
// with getifaddrs on a timer: often while flows are open (a stale address there stalls a
// flow), rarely otherwise.
//
// What to publish and when is decided by `NetworkTracker` and `NetworkSnapshot`, plain
// Foundation and testable with any Swift toolchain; only `PathMonitorBridge` (behind
// `canImport(Network)`) touches Apple's Network framework.

import Foundation
#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#endif

/// One interface the platform lists on a path (`NWPath.availableInterfaces`).
public struct PlatformInterface: Equatable, Sendable {
    public enum LinkType: Sendable, CaseIterable {
        case wifi, cellular, wiredEthernet, loopback, other
    }

    public var name: String
    public var index: UInt32
    public var type: LinkType

    public init(name: String, index: UInt32, type: LinkType) {
        self.name = name
        self.index = index
        self.type = type
    }
}

/// What one link type's path monitor says now.
public struct LinkStatus: Equatable, Sendable {
    /// The path over this link type can carry traffic.
    public var satisfied: Bool
    /// The platform calls it expensive (cellular, a personal hotspot).
    public var expensive: Bool
    /// Low Data Mode is on for it.
    public var constrained: Bool
    /// The interfaces of this type the path lists.
    public var interfaces: [PlatformInterface]

    public init(satisfied: Bool, expensive: Bool, constrained: Bool, interfaces: [PlatformInterface]) {
        self.satisfied = satisfied
        self.expensive = expensive
        self.constrained = constrained
        self.interfaces = interfaces
    }
}

public enum NetworkSnapshot {
    /// The link types watched, in the order their interfaces are reported.
    public static let watched: [PlatformInterface.LinkType] = [.wifi, .wiredEthernet, .cellular]

    /// The snapshot of `links` (each type's own monitor) with `addresses` (by interface
    /// name). An interface is up when its own type's path is satisfied; cellular is
    /// metered, and so is any interface on a path the platform calls expensive or
    /// constrained. Loopback and duplicate names are left out; addresses are sorted. An
    /// interface with IPv6 addresses only is given `nat64Prefix` (the network's NAT64
    /// prefix, found with `discoverNat64Prefix`), so IPv4-only peers are reached through it.
    public static func build(
        links: [PlatformInterface.LinkType: LinkStatus],
        addresses: [String: [String]],
        nat64Prefix: String? = nil
    ) -> [NetworkInterface] {
        var seen = Set<String>()
        var out: [NetworkInterface] = []
        for type in watched {
            guard let status = links[type] else { continue }
            for i in status.interfaces where i.type == type && seen.insert(i.name).inserted {
                let kind: InterfaceKind
                switch type {
                case .wifi: kind = .wifi
                case .cellular: kind = .cellular
                case .wiredEthernet: kind = .ethernet
                case .loopback, .other: kind = .other
                }
                let own = Array(Set(addresses[i.name] ?? [])).sorted()
                let ipv6Only = !own.isEmpty && own.allSatisfy { $0.contains(":") }
                out.append(NetworkInterface(
                    name: i.name,
                    index: i.index,
                    kind: kind,
                    metered: kind == .cellular || status.expensive || status.constrained,
                    up: status.satisfied,
                    addresses: own,
                    nat64Prefix: ipv6Only ? nat64Prefix : nil
                ))
            }
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
            let address = String(cString: host).split(separator: "%").first.map(String.init) ?? ""
            if address.isEmpty || address.lowercased().hasPrefix("fe80:") || address.hasPrefix("169.254.") { continue }
            let name = String(cString: entry.pointee.ifa_name)
            result[name, default: []].append(address)
        }
        return result
    }
}

/// Decides when the platform's networks are published to the core: once every watched
/// link type has reported, then whenever the snapshot (states, kinds, addresses) differs
/// from the last one published. Not thread-safe: drive it from one queue.
public struct NetworkTracker: Sendable {
    /// How often addresses are re-read while the endpoint has open flows, and otherwise.
    public static let busyPollInterval: TimeInterval = 2
    public static let idlePollInterval: TimeInterval = 30

    public private(set) var links: [PlatformInterface.LinkType: LinkStatus] = [:]
    public private(set) var addresses: [String: [String]] = [:]
    public private(set) var published: [NetworkInterface]?
    /// The NAT64 prefix last discovered (nil: none, or not looked for).
    public private(set) var nat64Prefix: String?

    public init() {}

    /// Whether some interface has IPv6 addresses only: then the network may translate to
    /// IPv4 through a NAT64 whose prefix is worth discovering.
    public var wantsNat64Prefix: Bool {
        addresses.values.contains { !$0.isEmpty && $0.allSatisfy { $0.contains(":") } }
    }

    /// A NAT64 prefix was discovered (or found gone); returns the snapshot to publish, or nil.
    public mutating func nat64PrefixFound(_ prefix: String?) -> [NetworkInterface]? {
        nat64Prefix = prefix
        return next()
    }

    /// A link type's monitor reported `status`; `addresses` is getifaddrs now. Returns the
    /// snapshot to publish, or nil.
    public mutating func linkChanged(
        _ type: PlatformInterface.LinkType, _ status: LinkStatus, addresses: [String: [String]]
    ) -> [NetworkInterface]? {
        links[type] = status
        self.addresses = addresses
        return next()
    }

    /// Addresses were re-read; returns the snapshot to publish if they changed what the
    /// core was told, or nil.
    public mutating func addressesRead(_ addresses: [String: [String]]) -> [NetworkInterface]? {
        self.addresses = addresses
        return next()
    }

    /// The interval until the next address check.
    public static func pollInterval(openFlows: UInt32) -> TimeInterval {
        openFlows > 0 ? busyPollInterval : idlePollInterval
    }

    private mutating func next() -> [NetworkInterface]? {
        guard NetworkSnapshot.watched.allSatisfy({ links[$0] != nil }) else { return nil }
        let snapshot = NetworkSnapshot.build(links: links, addresses: addresses, nat64Prefix: nat64Prefix)
        if snapshot == published { return nil }
        published = snapshot
        return snapshot
    }
}

#if canImport(Network)
import Network
import MSocketFFI

/// Feeds one `NWPathMonitor` per link type, and the interfaces' addresses, into the
/// endpoint that owns it, and binds each subflow's socket to its interface
/// (`IP_BOUND_IF` / `IPV6_BOUND_IF`). Made and owned by `Endpoint` (`network: .system`);
/// it holds the endpoint weakly and stops when the endpoint closes or is released.
final class PathMonitorBridge: @unchecked Sendable {
    private let queue = DispatchQueue(label: "dev.msocket.network")
    private var monitors: [NWPathMonitor] = []
    private var timer: DispatchSourceTimer?
    private var flowWatch: Task<Void, Never>?
    private var tracker = NetworkTracker()
    private let lock = NSLock()
    private var indexByAddress: [String: UInt32] = [:]
    private weak var endpoint: Endpoint?

    init() {}

    /// Binds a socket to the interface owning its local address (left unbound when no
    /// interface does).
    var bindSocket: SocketBind {
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

    func start(_ endpoint: Endpoint) {
        queue.sync {
            self.endpoint = endpoint
            for type in NetworkSnapshot.watched {
                let monitor = NWPathMonitor(requiredInterfaceType: Self.nwType(type))
                monitor.pathUpdateHandler = { [weak self] path in self?.pathChanged(type, path) }
                monitor.start(queue: queue)
                monitors.append(monitor)
            }
            let timer = DispatchSource.makeTimerSource(queue: queue)
            timer.setEventHandler { [weak self] in self?.recheckAddresses() }
            timer.schedule(deadline: .now() + NetworkTracker.pollInterval(openFlows: endpoint.openFlows))
            timer.resume()
            self.timer = timer
            // The first flow shortens the interval at once, not at the next idle check.
            let updates = endpoint.openFlowsUpdates()
            flowWatch = Task { [weak self] in
                do {
                    for try await count in updates {
                        self?.queue.async { self?.timer?.schedule(deadline: .now() + NetworkTracker.pollInterval(openFlows: count)) }
                    }
                } catch {
                    // The watch ends; each address check still reads the count itself.
                }
            }
        }
    }

    func stop() {
        queue.async {
            self.flowWatch?.cancel()
            self.flowWatch = nil
            for m in self.monitors { m.cancel() }
            self.monitors = []
            self.timer?.cancel()
            self.timer = nil
        }
    }

    private static func nwType(_ type: PlatformInterface.LinkType) -> NWInterface.InterfaceType {
        switch type {
        case .wifi: return .wifi
        case .cellular: return .cellular
        case .wiredEthernet: return .wiredEthernet
        case .loopback: return .loopback
        case .other: return .other
        }
    }

    private func pathChanged(_ type: PlatformInterface.LinkType, _ path: NWPath) {
        let interfaces = path.availableInterfaces
            .filter { $0.type == Self.nwType(type) }
            .map { PlatformInterface(name: $0.name, index: UInt32($0.index), type: type) }
        let status = LinkStatus(
            satisfied: path.status == .satisfied,
            expensive: path.isExpensive,
            constrained: path.isConstrained,
            interfaces: interfaces
        )
        publish(tracker.linkChanged(type, status, addresses: NetworkSnapshot.currentAddresses()))
        discoverNat64Prefix()
    }

    /// iOS does not tell a network's NAT64 prefix; it is found through DNS64 (RFC 7050)
    /// whenever a path changes while some interface has IPv6 addresses only.
    private func discoverNat64Prefix() {
        guard tracker.wantsNat64Prefix else {
            if tracker.nat64Prefix != nil { publish(tracker.nat64PrefixFound(nil)) }
            return
        }
        Task { [weak self] in
            let prefix = try? await MSocketSDK.discoverNat64Prefix()
            self?.queue.async {
                guard let self else { return }
                self.publish(self.tracker.nat64PrefixFound(prefix))
            }
        }
    }

    private func recheckAddresses() {
        guard let endpoint else { return }
        publish(tracker.addressesRead(NetworkSnapshot.currentAddresses()))
        let interval = NetworkTracker.pollInterval(openFlows: endpoint.openFlows)
        timer?.schedule(deadline: .now() + interval)
    }

    private func publish(_ snapshot: [NetworkInterface]?) {
        guard let snapshot else { return }
        var byAddress: [String: UInt32] = [:]
        for i in snapshot { for a in i.addresses { byAddress[a] = i.index } }
        lock.lock()
        indexByAddress = byAddress
        lock.unlock()
        endpoint?.publishNetwork(snapshot)
    }
}
#endif
