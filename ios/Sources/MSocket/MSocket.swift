// The Swift API of the msocket SDK, over the bindings UniFFI generates from
// udl/msocket.udl (module MSocketFFI).
//
// Why a layer: the bindings are faithful to the FFI — millisecond counts, a CancelToken
// argument on every waiting call, events pulled one call at a time, receive in two steps,
// `release()` beside deinit — while a Swift app wants TimeInterval timeouts, task
// cancellation, AsyncSequences and closures.
//
// Cancellation: UniFFI's generated async functions keep waiting when their task is
// cancelled, so each waiting call gets a CancelToken of its own that the task's
// cancellation handler trips; the call then fails with `.Cancelled` at once.
//
// Ownership: an `Endpoint` owns the network monitor it starts (`network: .system`) and
// stops it when it closes or is released; flows and listeners hold their endpoint.
//
// CI checks every use of the bindings here against freshly generated ones
// (ci/swift-symbols.py); generated types whose names the layer reuses are written
// `MSocketFFI.Name`.

import Foundation
import MSocketFFI
#if canImport(os)
import os
#endif

/// What went wrong: `.Timeout(message:)`, `.NameNotFound(message:)`, ... Trust failures:
/// `.KeyChanged` (a name's keys differ from its pin), `.WrongKey` (not the keys of
/// `NAME#FINGERPRINT`), `.StaleRecord`, `.NotAllowed` (the peer's allow-list lacks this
/// endpoint's key), `.PinStore` (the app's `PinStore` failed).
public typealias MsocketError = MSocketFFI.MsocketError
/// How a flow uses its paths.
public typealias PathPolicy = MSocketFFI.PathPolicy
/// What a path does for its flow now.
public typealias PathState = MSocketFFI.PathState
/// Why a path left a flow.
public typealias PathLossReason = MSocketFFI.PathLossReason
/// Why a flow failed.
public typealias FlowFailure = MSocketFFI.FlowFailure
/// The kind of link a network interface is.
public typealias InterfaceKind = MSocketFFI.InterfaceKind
/// One network interface as the platform reports it to `Endpoint.updateNetwork`.
public typealias NetworkInterface = MSocketFFI.NetworkInterface
/// A flow's byte counters.
public typealias FlowStats = MSocketFFI.FlowStats
/// How severe a log record is: `.error`, `.warn`, `.info`, `.debug`, `.trace`.
public typealias LogLevel = MSocketFFI.LogLevel
/// What a `PinStore` keeps of a name: the keys it was first seen with (`signingKey`,
/// `noiseKey`, 32 bytes each) and the highest record sequence number accepted (`seq`).
public typealias PinnedKeys = MSocketFFI.PinnedKeys

extension PinnedKeys {
    /// The fingerprint of these keys, as the peer's `Endpoint.fingerprint` prints it.
    public func fingerprint() throws -> String { try MSocketFFI.pinnedFingerprint(pin: self) }
}

/// Keys and version. (Not named `MSocket`: a type named like its module would shadow the
/// module in qualified names such as `MSocket.Flow`.)
public enum MSocketSDK {
    /// A new 32-byte secret key. Keep it in the Keychain to keep the identity.
    public static func generateKey() throws -> Data { try MSocketFFI.generateKey() }

    /// The public fingerprint of `key`'s identity.
    public static func fingerprint(of key: Data) throws -> String { try MSocketFFI.keyFingerprint(key: key) }

    /// The native library's version.
    public static var version: String { MSocketFFI.version() }

    /// The NAT64 prefix (`64:ff9b::/96`) of the network the system's resolver uses, found
    /// through DNS64 as RFC 7050 says; nil when the network has none. The system monitor
    /// calls it itself; an app reporting networks by hand passes the result as an
    /// IPv6-only interface's `nat64Prefix`.
    public static func discoverNat64Prefix(timeout: TimeInterval = 5) async throws -> String? {
        try await MSocketFFI.discoverNat64Prefix(timeoutMs: millis(timeout, "timeout"))
    }

    /// Sends msocket's log records, up to `level`, to `handler(level, target, message)`: on
    /// one msocket thread, in order (keep it quick). Replaces the previous destination.
    /// At most 1,024 records wait for a slow handler; how many were dropped beyond that is
    /// said in the next record. Throws `.Io` if another `tracing` subscriber already owns
    /// the process's Rust logs.
    public static func setLogHandler(level: LogLevel, _ handler: @escaping @Sendable (LogLevel, String, String) -> Void) throws {
        try MSocketFFI.setLogSink(sink: HandlerSink(handler), maxLevel: level)
    }

    /// Changes the most verbose level sent to the log handler.
    public static func setLogLevel(_ level: LogLevel) { MSocketFFI.setLogLevel(maxLevel: level) }

    /// Stops sending log records anywhere.
    public static func stopLogging() throws { try MSocketFFI.setLogSink(sink: nil, maxLevel: .error) }

    #if canImport(os)
    /// Sends msocket's log records, up to `level`, to the unified log: `Logger` with
    /// subsystem "dev.msocket" and the record's target (`msocket::runtime`, ...) as the
    /// category; errors as `.error`, warnings as `.default`, info as `.info`, debug and
    /// trace as `.debug`. Messages hold peer names and IP addresses, so they are logged
    /// as private (redacted outside a debugger or without a logging profile) unless
    /// `revealMessages`.
    public static func logToOSLog(level: LogLevel = .info, revealMessages: Bool = false) throws {
        try MSocketFFI.setLogSink(sink: OSLogSink(reveal: revealMessages), maxLevel: level)
    }
    #endif
}

private final class HandlerSink: MSocketFFI.LogSink, @unchecked Sendable {
    let handler: @Sendable (LogLevel, String, String) -> Void
    init(_ handler: @escaping @Sendable (LogLevel, String, String) -> Void) { self.handler = handler }

    func log(level: LogLevel, target: String, message: String) throws { handler(level, target, message) }
}

#if canImport(os)
private final class OSLogSink: MSocketFFI.LogSink, @unchecked Sendable {
    let reveal: Bool
    private let lock = NSLock()
    private var loggers: [String: Logger] = [:]

    init(reveal: Bool) { self.reveal = reveal }

    func log(level: LogLevel, target: String, message: String) throws {
        lock.lock()
        let logger = loggers[target] ?? Logger(subsystem: "dev.msocket", category: target)
        loggers[target] = logger
        lock.unlock()
        let type: OSLogType
        switch level {
        case .error: type = .error
        case .warn: type = .default
        case .info: type = .info
        case .debug, .trace: type = .debug
        }
        if reveal {
            logger.log(level: type, "\(message, privacy: .public)")
        } else {
            logger.log(level: type, "\(message, privacy: .private)")
        }
    }
}
#endif

/// Runs one waiting FFI call with a CancelToken that the task's cancellation trips.
func cancellable<T>(_ call: (MSocketFFI.CancelToken) async throws -> T) async throws -> T {
    let token = MSocketFFI.CancelToken()
    return try await withTaskCancellationHandler {
        try await call(token)
    } onCancel: {
        token.cancel()
    }
}

/// A timeout as the FFI takes it: whole milliseconds, capped at about 49 days.
func millis(_ seconds: TimeInterval, _ what: String) throws -> UInt32 {
    guard seconds.isFinite, seconds >= 0 else {
        throw MSocketFFI.MsocketError.InvalidArgument(message: "\(what) must be a non-negative number of seconds (got \(seconds))")
    }
    let ms = (seconds * 1000).rounded(.down)
    return ms >= Double(UInt32.max) ? UInt32.max : UInt32(ms)
}

/// How an endpoint behaves; only `namesURL` has no default.
public struct EndpointConfig: Equatable {
    /// The name service: `tcp://HOST:PORT`.
    public var namesURL: String
    public var nameTimeout: TimeInterval = 5
    /// How long `connect` keeps trying a name.
    public var connectTimeout: TimeInterval = 20
    /// How long a flow may have no path before it fails.
    public var flowDeadline: TimeInterval = 300
    /// The policy of flows this endpoint opens.
    public var policy: PathPolicy = .backup
    /// Keep a standby subflow on each other interface (cellular beside Wi-Fi).
    public var standbyPaths = true
    /// Count loopback addresses the platform reports (tests, same-device peers).
    public var useLoopback = false
    /// Local addresses to use until the platform reports its networks. Not empty, they
    /// pin the endpoint: `followSystemNetwork` is then ignored.
    public var localAddresses: [String] = []
    /// Follow the operating system's networks with msocket's own watcher (netlink on
    /// Linux, polling the interfaces elsewhere) from the first `listen` or `connect` on,
    /// as msocket's Rust API and command line do: for an endpoint made with
    /// `network: .manual` that reports no networks itself (a command-line tool, a Linux
    /// build). Interface kinds are then guessed from their names (`wl*`: Wi-Fi, `en*`:
    /// Ethernet, so a Mac's Wi-Fi counts as Ethernet). Ignored while `localAddresses` pins
    /// the endpoint. A call to `Endpoint.updateNetwork` ends it for good, so with
    /// `network: .system` on Apple platforms the monitor's first report does.
    public var followSystemNetwork = false
    /// Port to listen on (0: any).
    public var listenPort: UInt16 = 0
    /// Which peers may open flows to this endpoint, by key fingerprint (32 to 64 hex
    /// digits, as `Endpoint.fingerprint` prints them); nil: anyone. Others fail with
    /// `.NotAllowed` and never reach `accept`; an empty list admits nobody.
    public var allowedPeers: [String]? = nil
    /// Relays to register at while listening (`HOST:PORT` of `msocketd relay` servers),
    /// so that peers reach this endpoint behind NAT. Connecting needs none.
    public var relays: [String] = []
    /// Publish no address, only the relays: every flow to this endpoint is relayed.
    public var relayOnly = false

    public init(namesURL: String) { self.namesURL = namesURL }

    func ffiOptions() throws -> MSocketFFI.EndpointOptions {
        MSocketFFI.EndpointOptions(
            namesUrl: namesURL,
            nameTimeoutMs: try millis(nameTimeout, "nameTimeout"),
            connectTimeoutMs: try millis(connectTimeout, "connectTimeout"),
            flowDeadlineMs: try millis(flowDeadline, "flowDeadline"),
            policy: policy,
            standbyPaths: standbyPaths,
            useLoopback: useLoopback,
            localAddresses: localAddresses,
            followSystemNetwork: followSystemNetwork,
            listenPort: listenPort,
            allowedPeers: allowedPeers,
            relays: relays,
            relayOnly: relayOnly
        )
    }
}

/// Turns whatever an app callback throws into the error the FFI expects.
private func fromApp<T>(_ what: String, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as MSocketFFI.CallbackError {
        throw error
    } catch {
        throw MSocketFFI.CallbackError.Failed(reason: "\(what): \(error)")
    }
}

/// Binds each subflow's socket (`fd`) to the network owning `localAddress` before it
/// connects; called on an msocket thread, must be quick; throwing fails that subflow.
public typealias SocketBind = @Sendable (_ fd: Int32, _ localAddress: String) throws -> Void

private final class BinderAdapter: MSocketFFI.SocketBinder, @unchecked Sendable {
    let bind: SocketBind
    init(_ bind: @escaping SocketBind) { self.bind = bind }

    func bindSocket(fd: Int32, localAddress: String) throws {
        try fromApp("socket binder") { try bind(fd, localAddress) }
    }
}

/// Keeps the keys each name this endpoint connects to was first seen with, so the name
/// service cannot hand the name to another key later (`.KeyChanged`). Implement it over
/// storage that outlives the app (the Keychain, a file); keep what `setPin` is given as is.
/// Called on msocket's threads while a connect waits: be quick, never call waiting SDK
/// methods. What it throws fails that connect with `.PinStore`.
public protocol PinStore: AnyObject, Sendable {
    /// The pin of `name`, or nil.
    func pin(for name: String) throws -> PinnedKeys?
    /// Pins `name` to `pin`, replacing its pin; stored before it returns.
    func setPin(_ pin: PinnedKeys, for name: String) throws
    /// Forgets the pin of `name`.
    func removePin(for name: String) throws
}

/// Pins in memory, forgotten with the process (what an endpoint without a store uses).
public final class MemoryPinStore: PinStore, @unchecked Sendable {
    private let lock = NSLock()
    private var pins: [String: PinnedKeys] = [:]

    public init() {}

    /// Every pin now, by name.
    public var entries: [String: PinnedKeys] {
        lock.lock()
        defer { lock.unlock() }
        return pins
    }

    public func pin(for name: String) -> PinnedKeys? {
        lock.lock()
        defer { lock.unlock() }
        return pins[name]
    }

    public func setPin(_ pin: PinnedKeys, for name: String) {
        lock.lock()
        pins[name] = pin
        lock.unlock()
    }

    public func removePin(for name: String) {
        lock.lock()
        pins[name] = nil
        lock.unlock()
    }
}

private final class PinStoreAdapter: MSocketFFI.PinStore, @unchecked Sendable {
    let store: PinStore
    init(_ store: PinStore) { self.store = store }

    func get(name: String) throws -> MSocketFFI.PinnedKeys? {
        try fromApp("PinStore.pin(for:)") { try store.pin(for: name) }
    }

    func set(name: String, pin: MSocketFFI.PinnedKeys) throws {
        try fromApp("PinStore.setPin") { try store.setPin(pin, for: name) }
    }

    func remove(name: String) throws {
        try fromApp("PinStore.removePin") { try store.removePin(for: name) }
    }
}

/// Where an endpoint learns the device's networks from.
public enum NetworkSource: Sendable {
    /// One NWPathMonitor per link type and periodic address checks, owned by the endpoint
    /// (Apple platforms); each subflow's socket is bound to its interface. Elsewhere the
    /// same as `.manual`.
    case system
    /// The app reports networks with `Endpoint.updateNetwork` and may bind sockets itself.
    case manual(bindSocket: SocketBind?)
}

/// One identity bound to a name service: listens on names and connects to them.
///
/// It owns what it starts: with `network: .system` its network monitor runs until
/// `close()` or until the endpoint is released, and holds the endpoint only weakly.
public final class Endpoint: @unchecked Sendable {
    let ffi: MSocketFFI.Endpoint
    private let lock = NSLock()
    private var errorHandler: (@Sendable (MsocketError) -> Void)?
    #if canImport(Network)
    private let monitor: PathMonitorBridge?
    #endif

    /// An endpoint for the 32-byte `key`. `network` says where it learns the device's
    /// networks (default: the system, see `NetworkSource`); `pins` keeps the keys of the
    /// names it connects to (nil: in memory, forgotten with the endpoint).
    public init(key: Data, config: EndpointConfig, network: NetworkSource = .system, pins: PinStore? = nil) throws {
        var bind: SocketBind?
        #if canImport(Network)
        var monitor: PathMonitorBridge?
        if case .system = network {
            let bridge = PathMonitorBridge()
            monitor = bridge
            bind = bridge.bindSocket
        }
        self.monitor = monitor
        #endif
        if case let .manual(bindSocket) = network { bind = bindSocket }
        ffi = try MSocketFFI.Endpoint(
            key: key,
            options: try config.ffiOptions(),
            binder: bind.map { BinderAdapter($0) },
            pins: pins.map { PinStoreAdapter($0) }
        )
        #if canImport(Network)
        monitor?.start(self)
        #endif
    }

    deinit {
        #if canImport(Network)
        monitor?.stop()
        #endif
    }

    /// The public fingerprint of this endpoint's identity.
    public var fingerprint: String { ffi.fingerprint() }

    /// The addresses (`IP:PORT`) published for this endpoint's names.
    public var publishedAddresses: [String] { ffi.publishedAddresses() }

    /// Called with every error that the system network monitor's reports to the core
    /// cause (they are also logged, subsystem "dev.msocket", category "network"); the
    /// monitor carries on with the next change. Replaces the previous handler; nil: only
    /// log them.
    public func onNetworkError(_ handler: (@Sendable (MsocketError) -> Void)?) {
        lock.lock()
        errorHandler = handler
        lock.unlock()
    }

    /// Starts serving `name`.
    public func listen(_ name: String, timeout: TimeInterval = 10) async throws -> Listener {
        let ms = try millis(timeout, "timeout")
        let ffi = self.ffi
        return Listener(try await cancellable { try await ffi.listen(name: name, timeoutMs: ms, cancel: $0) }, endpoint: self)
    }

    /// Opens a flow to whoever serves `name` with the right keys. A plain name: its keys are
    /// pinned (in the `PinStore`) the first time and must match from then on, else
    /// `.KeyChanged`. `NAME#FINGERPRINT` (the peer's `fingerprint`, 32 to 64 hex digits):
    /// the keys must have that fingerprint, else `.WrongKey`, and they replace the pin (how a
    /// user accepts a peer's new keys). A malformed name or fingerprint is
    /// `.InvalidArgument`; a peer that does not allow this endpoint's key answers
    /// `.NotAllowed`.
    public func connect(_ name: String, timeout: TimeInterval = 30) async throws -> PeerFlow {
        let ms = try millis(timeout, "timeout")
        let ffi = self.ffi
        return PeerFlow(try await cancellable { try await ffi.connect(name: name, timeoutMs: ms, cancel: $0) }, endpoint: self)
    }

    /// The platform's networks, one full snapshot per change (with `network: .manual`);
    /// returns whether it differed from the previous one. Throws what the core refused.
    @discardableResult
    public func updateNetwork(_ interfaces: [NetworkInterface]) throws -> Bool {
        try ffi.updateNetwork(interfaces: interfaces)
    }

    /// Reports the system monitor's snapshot; errors go to the handler and the log.
    func publishNetwork(_ interfaces: [NetworkInterface]) {
        do {
            _ = try ffi.updateNetwork(interfaces: interfaces)
        } catch {
            let e = error as? MsocketError ?? .Internal(message: "\(error)")
            #if canImport(os)
            Logger(subsystem: "dev.msocket", category: "network").error("network update refused: \(String(describing: e), privacy: .public)")
            #endif
            lock.lock()
            let handler = errorHandler
            lock.unlock()
            handler?(e)
        }
    }

    /// How many flows of this endpoint are open: opened or accepted, and neither closed
    /// nor released.
    public var openFlows: UInt32 { ffi.openFlows() }

    /// The number of open flows now, then each time it changes; the sequence ends when
    /// the endpoint closes or the iterating task is cancelled.
    public func openFlowsUpdates() -> AsyncThrowingStream<UInt32, Error> {
        let ffi = self.ffi
        let last = Locked<UInt32?>(nil)
        return AsyncThrowingStream(unfolding: {
            guard let seen = last.value else {
                let now = ffi.openFlows()
                last.value = now
                return now
            }
            do {
                let now = try await cancellable { try await ffi.openFlowsChanged(seen: seen, cancel: $0) }
                last.value = now
                return now
            } catch {
                if endsSequence(error) { return nil }
                throw error
            }
        })
    }

    /// Stops listeners, name upkeep and the network monitor; open flows go on but cannot
    /// re-dial after a move.
    public func close() {
        #if canImport(Network)
        monitor?.stop()
        #endif
        ffi.release()
    }
}

/// Accepts the flows peers open to one name.
public final class Listener: @unchecked Sendable {
    let ffi: MSocketFFI.Listener
    private let endpoint: Endpoint
    public let name: String

    init(_ ffi: MSocketFFI.Listener, endpoint: Endpoint) {
        self.ffi = ffi
        self.endpoint = endpoint
        name = ffi.name()
    }

    /// The next flow a peer opened; `.Timeout` if none came within `timeout` seconds.
    public func accept(timeout: TimeInterval = 60) async throws -> PeerFlow {
        let ms = try millis(timeout, "timeout")
        let ffi = self.ffi
        return PeerFlow(try await cancellable { try await ffi.accept(timeoutMs: ms, cancel: $0) }, endpoint: endpoint)
    }

    /// Stops listening; a waiting `accept` fails with `.Closed` at once.
    public func close() { ffi.release() }
}

/// A change in a flow's life.
public enum FlowEvent: Equatable, Sendable {
    /// A path joined the flow; `interfaceKind` is the kind of interface it leaves from (nil:
    /// no followed network holds `local`).
    case pathAdded(local: String, remote: String, relayed: Bool, interfaceKind: InterfaceKind?)
    /// A path died (`reason`; `detail` in words); its unacknowledged data goes out on another.
    /// `interfaceKind` is the kind of interface it left from, as when it was added.
    case pathLost(local: String, remote: String, reason: PathLossReason, detail: String, energyJoules: Double?,
                  interfaceKind: InterfaceKind?)
    /// Data flows again after `outage` seconds without a usable path.
    case resumed(outage: TimeInterval)
    case peerMoved(addresses: [String])
    case moved(addresses: [String])
    /// Hole punching found no direct path after `attempts` tries: the flow stays relayed.
    case staysRelayed(attempts: UInt32)
    /// The app fell behind taking events and the `count` oldest it had not taken were
    /// dropped (`.closed` never is).
    case eventsDropped(count: UInt64)
    /// The flow ended; `failure` (why) and `error` (in words) are nil after a clean finish
    /// of both sides. Always the last event.
    case closed(failure: FlowFailure?, error: String?, energyJoules: Double?)

    init(_ e: MSocketFFI.FlowEvent) {
        switch e {
        case let .pathAdded(local, remote, relayed, kind):
            self = .pathAdded(local: local, remote: remote, relayed: relayed, interfaceKind: kind)
        case let .pathLost(local, remote, reason, detail, joules, kind):
            self = .pathLost(local: local, remote: remote, reason: reason, detail: detail, energyJoules: joules,
                             interfaceKind: kind)
        case let .resumed(outageMs): self = .resumed(outage: TimeInterval(outageMs) / 1000)
        case let .peerMoved(addresses): self = .peerMoved(addresses: addresses)
        case let .moved(addresses): self = .moved(addresses: addresses)
        case let .staysRelayed(attempts): self = .staysRelayed(attempts: attempts)
        case let .eventsDropped(count): self = .eventsDropped(count: count)
        case let .closed(failure, error, joules): self = .closed(failure: failure, error: error, energyJoules: joules)
        }
    }
}

/// One live path of a flow and its measurements.
public struct FlowPath: Equatable, Sendable {
    public let local: String
    public let remote: String
    public let state: PathState
    public let standby: Bool
    /// It runs through a relay (`remote` is the relay's address).
    public let relayed: Bool
    /// Smoothed round-trip time in seconds, once measured.
    public let srtt: TimeInterval?
    /// Bytes per second the peer acknowledged from this path, once measured.
    public let deliveryRate: UInt64?
    public let inFlight: UInt64
    public let bytesDelivered: UInt64
    public let bytesSent: UInt64
    public let bytesReceived: UInt64
    /// Modelled radio energy so far (nil: the interface's kind is unknown).
    public let energyJoules: Double?
    /// The kind of the local interface this path leaves from (Wi-Fi or cellular, for
    /// showing which one carries the flow), as reported when the path came up; nil when
    /// the endpoint knows no interface with `local`'s address. The host's own loopback
    /// interface is `.other`.
    public let interfaceKind: InterfaceKind?

    init(_ p: MSocketFFI.PathInfo) {
        local = p.local
        remote = p.remote
        state = p.state
        standby = p.standby
        relayed = p.relayed
        srtt = p.srttUs.map { TimeInterval($0) / 1_000_000 }
        deliveryRate = p.deliveryRate
        inFlight = p.inFlight
        bytesDelivered = p.bytesDelivered
        bytesSent = p.bytesSent
        bytesReceived = p.bytesReceived
        energyJoules = p.energyJoules
        interfaceKind = p.interfaceKind
    }
}

/// Whether `error` ends a sequence rather than failing it: the endpoint closed, or the
/// iterating task was cancelled.
private func endsSequence(_ error: Error) -> Bool {
    guard let e = error as? MsocketError else { return false }
    switch e {
    case .Closed, .Cancelled: return true
    default: return false
    }
}

/// A value behind a lock, for state shared with `@Sendable` closures.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value

    init(_ value: Value) { stored = value }

    var value: Value {
        get {
            lock.lock()
            defer { lock.unlock() }
            return stored
        }
        set {
            lock.lock()
            stored = newValue
            lock.unlock()
        }
    }

    /// Stores `newValue` and returns the value it replaced, in one step.
    func exchange(_ newValue: Value) -> Value {
        lock.lock()
        defer { lock.unlock() }
        let old = stored
        stored = newValue
        return old
    }
}

/// One encrypted, ordered byte stream to a named peer that survives moves of either end.
/// `send` and `receive` may run at the same time from different tasks.
public final class PeerFlow: @unchecked Sendable {
    let ffi: MSocketFFI.Flow
    private let endpoint: Endpoint
    public let name: String
    /// The flow's identifier, the same at both ends.
    public let id: String
    /// The fingerprint of the peer's keys, authenticated by the handshake: on an accepted
    /// flow, who connected.
    public let peerFingerprint: String
    private let eventsTaken = Locked(false)

    init(_ ffi: MSocketFFI.Flow, endpoint: Endpoint) {
        self.ffi = ffi
        self.endpoint = endpoint
        name = ffi.name()
        id = ffi.id()
        peerFingerprint = ffi.peerFingerprint()
    }

    /// The flow's events since it opened, in order; the sequence finishes after `.closed`
    /// (or when the iterating task is cancelled). Events wait in msocket until taken; if
    /// more than it keeps pile up, the oldest are dropped and `.eventsDropped(count:)` says
    /// how many. A flow has one event sequence: a second call throws `.InvalidArgument`.
    public func events() throws -> AsyncThrowingStream<FlowEvent, Error> {
        if eventsTaken.exchange(true) {
            throw MsocketError.InvalidArgument(message: "events() was already called on this flow; its events go to that sequence")
        }
        let ffi = self.ffi
        return AsyncThrowingStream(unfolding: {
            do {
                guard let event = try await cancellable({ try await ffi.nextEvent(cancel: $0) }) else { return nil }
                return FlowEvent(event)
            } catch {
                if endsSequence(error) { return nil }
                throw error
            }
        })
    }

    /// Sends all of `data`; returns once the flow took it (see `finish` for delivery). On a
    /// timeout or cancellation the error says how many bytes were taken: the stream holds
    /// those, so retry only the rest.
    public func send(_ data: Data, timeout: TimeInterval = 30) async throws {
        let ms = try millis(timeout, "timeout")
        let ffi = self.ffi
        try await cancellable { try await ffi.send(data: data, timeoutMs: ms, cancel: $0) }
    }

    /// Up to `maxBytes` bytes (at least one), or nil once the peer finished and everything
    /// was read. Cancelling it loses no data: what arrived stays for the next call.
    public func receive(maxBytes: UInt32 = 64 * 1024, timeout: TimeInterval = 30) async throws -> Data? {
        let ms = try millis(timeout, "timeout")
        let ffi = self.ffi
        let start = DispatchTime.now().uptimeNanoseconds
        var left = ms
        while true {
            let ready = try await cancellable { try await ffi.awaitReceived(maxBytes: maxBytes, timeoutMs: left, cancel: $0) }
            if ready == 0 { return nil }
            let data = try ffi.takeReceived(maxBytes: ready)
            if !data.isEmpty { return data }
            // Another receive took them first: wait again for what is left of the timeout.
            let spent = (DispatchTime.now().uptimeNanoseconds - start) / 1_000_000
            guard spent < UInt64(ms) else {
                throw MsocketError.Timeout(message: "no bytes to receive within \(ms) ms")
            }
            left = ms - UInt32(spent)
        }
    }

    /// The bytes the peer sends, one at a time, until it finishes its stream; each wait for
    /// more is bounded by `timeout` (then the sequence throws `.Timeout`).
    public func bytes(timeout: TimeInterval = 30) -> Bytes { Bytes(flow: self, timeout: timeout) }

    /// Ends our stream and waits until the peer acknowledged every byte.
    public func finish(timeout: TimeInterval = 30) async throws {
        let ms = try millis(timeout, "timeout")
        let ffi = self.ffi
        try await cancellable { try await ffi.finish(timeoutMs: ms, cancel: $0) }
    }

    /// Ends the flow at once; the peer's calls fail with `reason`.
    public func abort(_ reason: String) throws { try ffi.abort(reason: reason) }

    /// How this flow uses its paths (set it on the connecting side).
    public func policy() throws -> PathPolicy { try ffi.policy() }
    public func setPolicy(_ policy: PathPolicy) throws { try ffi.setPolicy(policy: policy) }

    /// The live paths and their measurements.
    public func paths() throws -> [FlowPath] { try ffi.paths().map(FlowPath.init) }

    /// Modelled radio energy of the flow so far, in joules.
    public func energyJoules() throws -> Double? { try ffi.energyJoules() }

    /// Byte counters.
    public func stats() throws -> FlowStats { try ffi.stats() }

    /// Lets go of the flow; waiting and later calls fail with `.Closed`.
    public func close() { ffi.release() }

    /// A flow's received bytes as an `AsyncSequence` of `UInt8` (read in chunks).
    public struct Bytes: AsyncSequence, Sendable {
        public typealias Element = UInt8
        let flow: PeerFlow
        let timeout: TimeInterval

        public func makeAsyncIterator() -> Iterator { Iterator(flow: flow, timeout: timeout) }

        public struct Iterator: AsyncIteratorProtocol {
            let flow: PeerFlow
            let timeout: TimeInterval
            var chunk = Data()
            var offset = 0
            var finished = false

            public mutating func next() async throws -> UInt8? {
                while offset >= chunk.count {
                    if finished { return nil }
                    guard let more = try await flow.receive(timeout: timeout) else {
                        finished = true
                        return nil
                    }
                    chunk = more
                    offset = 0
                }
                let byte = chunk[chunk.startIndex + offset]
                offset += 1
                return byte
            }
        }
    }
}
