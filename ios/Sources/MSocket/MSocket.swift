// The Swift API of the msocket SDK, over the bindings UniFFI generates from
// udl/msocket.udl (module MSocketFFI).
//
// Why a layer: the bindings are faithful to the FFI — blocking calls, millisecond
// counts, `release()` beside deinit — while a Swift app wants async functions that never
// block the cooperative thread pool, TimeInterval timeouts, events as an AsyncStream and
// callbacks as closures. Blocking calls run on a concurrent dispatch queue of their own;
// nothing here adds behaviour.
//
// Cancellation: a task cancelled while a call waits in native code (receive, accept)
// resumes when that call returns — at its timeout, or at once when the object is closed.
//
// Convention (checked in CI by ci/swift-symbols.py): generated types are written
// `MSocketFFI.Name`, and generated objects are held in properties named `ffi`, so every
// use of the bindings is visible to the check.

import Foundation
import MSocketFFI

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
}

/// Where blocking FFI calls wait: never on the Swift concurrency pool.
private let blockingQueue = DispatchQueue(label: "msocket.blocking", qos: .userInitiated, attributes: .concurrent)

private func offPool<T>(_ body: @escaping () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        blockingQueue.async { continuation.resume(with: Result { try body() }) }
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
    /// Local addresses to use until the platform reports its networks.
    public var localAddresses: [String] = []
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

/// One identity bound to a name service: listens on names and connects to them.
public final class Endpoint: @unchecked Sendable {
    let ffi: MSocketFFI.Endpoint

    /// An endpoint for the 32-byte `key`; `bindSocket` (see `PathMonitorBridge`) binds
    /// each subflow's socket to its interface; `pins` keeps the keys of the names it
    /// connects to (nil: in memory, forgotten with the endpoint).
    public init(key: Data, config: EndpointConfig, bindSocket: SocketBind? = nil, pins: PinStore? = nil) throws {
        ffi = try MSocketFFI.Endpoint(
            key: key,
            options: try config.ffiOptions(),
            binder: bindSocket.map { BinderAdapter($0) },
            pins: pins.map { PinStoreAdapter($0) }
        )
    }

    /// The public fingerprint of this endpoint's identity.
    public var fingerprint: String { ffi.fingerprint() }

    /// The addresses (`IP:PORT`) published for this endpoint's names.
    public var publishedAddresses: [String] { ffi.publishedAddresses() }

    /// Starts serving `name`.
    public func listen(_ name: String, timeout: TimeInterval = 10) async throws -> Listener {
        let ms = try millis(timeout, "timeout")
        let ffi = self.ffi
        return Listener(try await offPool { try ffi.listen(name: name, timeoutMs: ms) })
    }

    /// Opens a flow to whoever serves `name` with the right keys. A plain name: its keys are
    /// pinned (in the `PinStore`) the first time and must match from then on, else
    /// `.KeyChanged`. `NAME#FINGERPRINT` (the peer's `fingerprint`, 32 to 64 hex digits):
    /// the keys must have that fingerprint, else `.WrongKey`, and they replace the pin (how a
    /// user accepts a peer's new keys). A malformed name or fingerprint is
    /// `.InvalidArgument`; a peer that does not allow this endpoint's key answers
    /// `.NotAllowed`.
    public func connect(_ name: String, timeout: TimeInterval = 30) async throws -> Flow {
        let ms = try millis(timeout, "timeout")
        let ffi = self.ffi
        return Flow(try await offPool { try ffi.connect(name: name, timeoutMs: ms) })
    }

    /// The platform's networks, one full snapshot per change; returns whether it differed.
    @discardableResult
    public func updateNetwork(_ interfaces: [NetworkInterface]) throws -> Bool {
        try ffi.updateNetwork(interfaces: interfaces)
    }

    /// Stops listeners and name upkeep; open flows go on but cannot re-dial.
    public func close() { ffi.release() }
}

/// Accepts the flows peers open to one name.
public final class Listener: @unchecked Sendable {
    let ffi: MSocketFFI.Listener
    public let name: String

    init(_ ffi: MSocketFFI.Listener) {
        self.ffi = ffi
        name = ffi.name()
    }

    /// The next flow a peer opened; `.Timeout` if none came within `timeout` seconds.
    public func accept(timeout: TimeInterval = 60) async throws -> Flow {
        let ms = try millis(timeout, "timeout")
        let ffi = self.ffi
        return Flow(try await offPool { try ffi.accept(timeoutMs: ms) })
    }

    /// Stops listening; a waiting `accept` fails with `.Closed` at once.
    public func close() { ffi.release() }
}

/// A change in a flow's life.
public enum FlowEvent: Equatable, Sendable {
    case pathAdded(local: String, remote: String, relayed: Bool)
    /// A path died (`reason`; `detail` in words); its unacknowledged data goes out on another.
    case pathLost(local: String, remote: String, reason: PathLossReason, detail: String, energyJoules: Double?)
    /// Data flows again after `outage` seconds without a usable path.
    case resumed(outage: TimeInterval)
    case peerMoved(addresses: [String])
    case moved(addresses: [String])
    /// Hole punching found no direct path after `attempts` tries: the flow stays relayed.
    case staysRelayed(attempts: UInt32)
    /// The flow ended; `failure` (why) and `error` (in words) are nil after a clean finish
    /// of both sides.
    case closed(failure: FlowFailure?, error: String?, energyJoules: Double?)

    init(_ e: MSocketFFI.FlowEvent) {
        switch e {
        case let .pathAdded(local, remote, relayed): self = .pathAdded(local: local, remote: remote, relayed: relayed)
        case let .pathLost(local, remote, reason, detail, joules):
            self = .pathLost(local: local, remote: remote, reason: reason, detail: detail, energyJoules: joules)
        case let .resumed(outageMs): self = .resumed(outage: TimeInterval(outageMs) / 1000)
        case let .peerMoved(addresses): self = .peerMoved(addresses: addresses)
        case let .moved(addresses): self = .moved(addresses: addresses)
        case let .staysRelayed(attempts): self = .staysRelayed(attempts: attempts)
        case let .closed(failure, error, joules): self = .closed(failure: failure, error: error, energyJoules: joules)
        }
    }
}

/// One live path of a flow and its measurements.
public struct Path: Equatable, Sendable {
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
    }
}

/// Fans a flow's events out to closures and streams (one native listener per flow).
private final class EventHub: MSocketFFI.FlowListener, @unchecked Sendable {
    private let lock = NSLock()
    private var handlers: [UUID: (FlowEvent) -> Void] = [:]

    func add(_ handler: @escaping (FlowEvent) -> Void) -> UUID {
        let id = UUID()
        lock.lock()
        handlers[id] = handler
        lock.unlock()
        return id
    }

    func remove(_ id: UUID) {
        lock.lock()
        handlers[id] = nil
        lock.unlock()
    }

    func onEvent(event: MSocketFFI.FlowEvent) throws {
        let e = FlowEvent(event)
        lock.lock()
        let all = Array(handlers.values)
        lock.unlock()
        for h in all { h(e) }
    }
}

/// One encrypted, ordered byte stream to a named peer that survives moves of either end.
/// `send` and `receive` may run at the same time from different tasks.
public final class Flow: @unchecked Sendable {
    let ffi: MSocketFFI.Flow
    public let name: String
    /// The flow's identifier, the same at both ends.
    public let id: String
    /// The fingerprint of the peer's keys, authenticated by the handshake: on an accepted
    /// flow, who connected.
    public let peerFingerprint: String
    private let hub = EventHub()
    private let hubStarted = NSLock()
    private var listening = false

    init(_ ffi: MSocketFFI.Flow) {
        self.ffi = ffi
        name = ffi.name()
        id = ffi.id()
        peerFingerprint = ffi.peerFingerprint()
    }

    private func startEvents() throws {
        hubStarted.lock()
        defer { hubStarted.unlock() }
        if !listening {
            try ffi.setListener(listener: hub)
            listening = true
        }
    }

    /// Calls `handler` with every event from now on, in order, on msocket's event thread
    /// (keep it quick). Returns a token; pass it to `removeHandler` to stop.
    @discardableResult
    public func onEvent(_ handler: @escaping (FlowEvent) -> Void) throws -> UUID {
        let id = hub.add(handler)
        try startEvents()
        return id
    }

    public func removeHandler(_ token: UUID) { hub.remove(token) }

    /// Events from now on, as a stream that ends after `.closed`.
    public func events() throws -> AsyncStream<FlowEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: FlowEvent.self, bufferingPolicy: .bufferingNewest(256))
        let token = hub.add { event in
            continuation.yield(event)
            if case .closed = event { continuation.finish() }
        }
        continuation.onTermination = { [hub] _ in hub.remove(token) }
        try startEvents()
        return stream
    }

    /// Sends all of `data`; returns once the flow took it (see `finish` for delivery).
    public func send(_ data: Data, timeout: TimeInterval = 30) async throws {
        let ms = try millis(timeout, "timeout")
        let ffi = self.ffi
        try await offPool { try ffi.send(data: data, timeoutMs: ms) }
    }

    /// Up to `maxBytes` bytes, or nil once the peer finished and everything was read.
    public func receive(maxBytes: UInt32 = 64 * 1024, timeout: TimeInterval = 30) async throws -> Data? {
        let ms = try millis(timeout, "timeout")
        let ffi = self.ffi
        return try await offPool { try ffi.receive(maxBytes: maxBytes, timeoutMs: ms) }
    }

    /// Ends our stream and waits until the peer acknowledged every byte.
    public func finish(timeout: TimeInterval = 30) async throws {
        let ms = try millis(timeout, "timeout")
        let ffi = self.ffi
        try await offPool { try ffi.finish(timeoutMs: ms) }
    }

    /// Ends the flow at once; the peer's calls fail with `reason`.
    public func abort(_ reason: String) throws { try ffi.abort(reason: reason) }

    /// How this flow uses its paths (set it on the connecting side).
    public func policy() throws -> PathPolicy { try ffi.policy() }
    public func setPolicy(_ policy: PathPolicy) throws { try ffi.setPolicy(policy: policy) }

    /// The live paths and their measurements.
    public func paths() throws -> [Path] { try ffi.paths().map(Path.init) }

    /// Modelled radio energy of the flow so far, in joules.
    public func energyJoules() throws -> Double? { try ffi.energyJoules() }

    /// Byte counters.
    public func stats() throws -> FlowStats { try ffi.stats() }

    /// Lets go of the flow; waiting and later calls fail with `.Closed`.
    public func close() { ffi.release() }
}
