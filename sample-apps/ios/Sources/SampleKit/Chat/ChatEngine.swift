// The chat: one user, listening on their name, with a conversation per contact. The same
// protocol and rules as the console chat (ChatEngine.kt), so either can talk to the other.
//
// Why it is built this way:
// - A contact is reached by `NAME#FINGERPRINT`, so the SDK refuses any other key; a peer
//   that dials us introduces itself (HELLO) and its name is pinned to the key the flow
//   authenticated.
// - A flow survives moves, outages and relays by itself; the app only handles what
//   outlives a flow: a restart, or a flow that failed. Each new flow starts with both
//   sides saying how far they have stored the other's messages (HELLO), and the sender
//   goes on from there. Sequence numbers make a resend recognisable (never shown twice);
//   one that arrives before its predecessor is left for the resend.
// - "Delivered" is the peer app's ACK, sent once the message is on its disk.
// - Both sides may dial at once; then two flows live side by side (at most `maxLinks`),
//   messages go on the newest, and sequence numbers sort the rest out.
//
// Concurrency: the engine is an actor (the contacts' links, the dialers); each flow is a
// `ChatLink` actor running a reader (the link's own task), a writer woken by kicks and an
// event watcher. Cancelling is closing: `close()` cancels every task and closes every flow.

import Foundation
import MSocket

/// Why the chat refused what the user asked.
public enum ChatError: Error, Equatable, CustomStringConvertible {
    /// A contact the user never added and who never introduced themselves.
    case unknownContact(String)
    /// The user tried to add themselves.
    case isMe(String)

    public var description: String {
        switch self {
        case let .unknownContact(name): return "\(name) is not a contact; add NAME#FINGERPRINT first"
        case let .isMe(name): return "\(name) is you"
        }
    }
}

public actor ChatEngine {
    /// Flows kept to one contact at once (two when both dialed at the same time).
    public static let maxLinks = 2
    static let helloWait: TimeInterval = 20
    static let retryAfterRefusal: TimeInterval = 2
    static let receiveWait: TimeInterval = 60
    static let sendWait: TimeInterval = 60
    static let batch = 32 * 1024

    /// The name the user listens on.
    public nonisolated let me: String
    public nonisolated let contacts: ContactBook
    public nonisolated let history: History
    nonisolated let endpoint: Endpoint
    nonisolated let show: @Sendable (ChatLine) -> Void
    nonisolated let clock: @Sendable () -> Int64
    private let maxBackoff: TimeInterval
    private var links: [String: [ChatLink]] = [:]
    /// Contacts being dialed: from the first attempt until the flow joined or failed.
    private var dialing: Set<String> = []
    private var tasks: [Task<Void, Never>] = []
    private var listener: Listener?
    private var closed = false

    /// The chat of the user `me` on `endpoint`, keeping contacts and history under `dir`.
    /// Every line for the user goes to `show`, from any task, in the order things happened
    /// for each contact.
    public init(
        endpoint: Endpoint,
        me: String,
        dir: URL,
        show: @escaping @Sendable (ChatLine) -> Void,
        clock: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) },
        maxBackoff: TimeInterval = 8
    ) throws {
        self.me = try ChatFrame.checkName(me)
        self.endpoint = endpoint
        self.contacts = try ContactBook(url: dir.appendingPathComponent("contacts"))
        self.history = History(dir: dir.appendingPathComponent("history"))
        self.show = show
        self.clock = clock
        self.maxBackoff = maxBackoff
    }

    /// `NAME#FINGERPRINT` of this user: what others add as a contact.
    public nonisolated var address: String { "\(me)#\(endpoint.fingerprint)" }

    /// Shows the history, listens on `me` (then says `.ready`), and starts delivering what
    /// an earlier run left undelivered.
    public func start() async throws {
        for name in history.contacts() {
            let c = try history.with(name)
            let delivered = c.delivered
            for m in c.all { show(.earlier(contact: name, message: m, delivered: m.outgoing && m.seq <= delivered)) }
        }
        let l = try await endpoint.listen(me)
        listener = l
        show(.ready(me: address))
        spawn { await self.accept(l) }
        for name in history.contacts() { wake(name) }
    }

    /// Adds (or re-keys) the contact `NAME#FINGERPRINT` the user typed.
    @discardableResult
    public nonisolated func add(_ spec: String) throws -> Contact {
        let c = try Contact.parse(spec)
        if c.name == me { throw ChatError.isMe(me) }
        try contacts.pin(c, replace: true)
        return c
    }

    /// Stores `text` for `to` and sends it as soon as a flow is up.
    @discardableResult
    public func send(to: String, text: String) throws -> Message {
        if contacts.get(to) == nil { throw ChatError.unknownContact(to) }
        let m = try history.with(to).add(text, now: clock())
        show(.sent(contact: to, message: m))
        wake(to)
        return m
    }

    /// Stops listening and closes every flow; the history stays on disk.
    public func close() {
        closed = true
        listener?.close()
        for t in tasks { t.cancel() }
        tasks = []
        for (_, ls) in links { for l in ls { l.flow.close() } }
        links = [:]
        history.close()
    }

    // MARK: - links

    private func spawn(_ body: @escaping @Sendable () async -> Void) {
        guard !closed else { return }
        tasks.removeAll { $0.isCancelled }
        tasks.append(Task { await body() })
    }

    private func accept(_ l: Listener) async {
        while !Task.isCancelled {
            let flow: PeerFlow
            do {
                flow = try await l.accept(timeout: 3600)
            } catch MsocketError.Timeout(message: _) {
                continue
            } catch {
                if !Task.isCancelled && !closed { show(.problem(contact: nil, what: "no longer accepting: \(describeError(error))")) }
                return
            }
            let link = ChatLink(engine: self, flow: flow, dialed: false)
            spawn { await link.run(to: nil) }
        }
    }

    /// The newest link to `name`.
    func current(_ name: String) -> ChatLink? { links[name]?.last }

    /// Sends what waits on the newest flow, or dials if there is none and something waits.
    func wake(_ name: String) {
        if let link = current(name) {
            link.kick()
            return
        }
        guard let c = try? history.with(name), c.delivered < c.lastSent else { return }
        dial(name)
    }

    private func dial(_ name: String) {
        if dialing.contains(name) || closed { return }
        guard let contact = contacts.get(name) else {
            show(.problem(contact: name, what: "has undelivered messages but is not a contact"))
            return
        }
        dialing.insert(name)
        spawn { await self.dialLoop(name, contact) }
    }

    private func dialLoop(_ name: String, _ contact: Contact) async {
        var backoff: TimeInterval = 0.5
        while !Task.isCancelled && (links[name] ?? []).isEmpty && undelivered(name) {
            let flow: PeerFlow
            do {
                flow = try await endpoint.connect(contact.description, timeout: 30)
            } catch {
                if Task.isCancelled { return }
                show(.problem(contact: name, what: "cannot reach: \(describeError(error)); retrying in \(Int(backoff * 1000)) ms"))
                try? await Task.sleep(nanoseconds: UInt64(backoff * 1_000_000_000))
                backoff = min(backoff * 2, maxBackoff)
                continue
            }
            // Runs the flow to its end; it calls dialed(_:) once up (or failed before).
            await ChatLink(engine: self, flow: flow, dialed: true).run(to: name)
            return
        }
        dialed(name)
    }

    /// The dial of `name` ended: its flow is up, or it gave up. Another may start.
    func dialed(_ name: String) {
        dialing.remove(name)
    }

    private func undelivered(_ name: String) -> Bool {
        guard let c = try? history.with(name) else { return false }
        return c.delivered < c.lastSent
    }

    func joined(_ link: ChatLink, _ name: String) {
        var ls = links[name] ?? []
        ls.append(link)
        while ls.count > Self.maxLinks { ls.removeFirst().flow.close() }
        links[name] = ls
    }

    func left(_ link: ChatLink, _ name: String, why: String) {
        guard var ls = links[name], let i = ls.firstIndex(where: { $0 === link }) else { return }
        ls.remove(at: i)
        links[name] = ls
        if ls.isEmpty {
            show(.offline(contact: name, why: why))
            wake(name)
        }
    }

    /// A flow we dialed failed before HELLO: tries again a little later.
    func retryLater(_ name: String) {
        spawn {
            try? await Task.sleep(nanoseconds: UInt64(Self.retryAfterRefusal * 1_000_000_000))
            await self.wake(name)
        }
    }

    /// What became of the peer of an accepted flow introducing itself.
    enum Introduction {
        /// Accepted; `pinned`: it was new, pinned to the flow's key now.
        case accepted(pinned: Bool)
        /// Refused (our own name, or a key that does not match the pin); the flow is to be
        /// aborted with `reason`.
        case refused(reason: String)
    }

    /// The peer of an accepted flow introduced itself as `name` with `fingerprint`: pins
    /// it, or refuses.
    nonisolated func introduce(_ name: String, fingerprint: String) -> Introduction {
        let presented = Contact(name: name, fingerprint: fingerprint.lowercased())
        if name == me {
            show(.refused(why: "a peer introduced itself as \(me) (us)"))
            return .refused(reason: "that name is ours")
        }
        do {
            return .accepted(pinned: try contacts.pin(presented))
        } catch {
            show(.refused(why: "\(error)"))
            return .refused(reason: "key does not match the pinned one")
        }
    }
}

/// The HELLO did not come in time.
struct HelloTimeout: Error {}

/// One flow to a contact and the three things it runs: reader, writer, events.
actor ChatLink {
    nonisolated let flow: PeerFlow
    nonisolated let dialed: Bool
    private let engine: ChatEngine
    private let kicks: AsyncStream<Void>
    private nonisolated let kicker: AsyncStream<Void>.Continuation
    private var ackDue = false
    private var sentUpTo: Int64 = 0
    private var peer: String?

    init(engine: ChatEngine, flow: PeerFlow, dialed: Bool) {
        self.engine = engine
        self.flow = flow
        self.dialed = dialed
        // Conflated: one pending kick covers any number.
        var continuation: AsyncStream<Void>.Continuation?
        kicks = AsyncStream(bufferingPolicy: .bufferingNewest(1)) { continuation = $0 }
        kicker = continuation!
    }

    nonisolated func kick() { kicker.yield() }

    /// Runs the flow to its end; `to` is the contact dialed (nil: accepted).
    func run(to: String?) async {
        let lines = LineReader(flow: flow, maxLine: ChatFrame.maxLine, timeout: ChatEngine.receiveWait)
        let me = engine.me
        var why = "the flow ended"
        var helpers: [Task<Void, Never>] = []
        do {
            if let to { try await send(.hello(name: me, received: try engine.history.with(to).lastReceived)) }
            let first = try await withDeadline(ChatEngine.helloWait) { try await lines.next() }
            guard let first, case let .hello(name, received) = try ChatFrame.decode(first) else {
                throw FormatError("the peer did not start with HELLO")
            }
            if let to, name != to { throw FormatError("\(to) introduced itself as \(name)") }
            var newContact = false
            if to == nil {
                switch engine.introduce(name, fingerprint: flow.peerFingerprint) {
                case let .accepted(pinned):
                    newContact = pinned
                case let .refused(reason):
                    try? flow.abort(reason)
                    kicker.finish()
                    flow.close()
                    return
                }
            }
            peer = name
            let conversation = try engine.history.with(name)
            if to == nil { try await send(.hello(name: me, received: conversation.lastReceived)) }
            try acknowledged(received, conversation)
            sentUpTo = received
            await engine.joined(self, name)
            if let to { await engine.dialed(to) }
            if newContact, let c = engine.contacts.get(name) { engine.show(.pinned(contact: c)) }
            engine.show(.online(contact: name, flowId: flow.id, dialed: dialed, paths: pathNames()))
            helpers.append(Task { await self.events(name) })
            helpers.append(Task { await self.writer(name, conversation) })
            kick()
            while true {
                let line: String?
                do {
                    line = try await lines.next()
                } catch MsocketError.Timeout(message: _) {
                    continue
                }
                guard let line else { break }
                switch try ChatFrame.decode(line) {
                case let .msg(seq, sentAt, text):
                    if try conversation.receive(seq: seq, sentAt: sentAt, text: text) == .stored {
                        engine.show(.received(contact: name, message: Message(outgoing: false, seq: seq, sentAt: sentAt, text: text)))
                    }
                    ackDue = true
                    kick()
                case let .ack(seq):
                    try acknowledged(seq, conversation)
                case .hello:
                    throw FormatError("a second HELLO")
                }
            }
            why = "the peer closed the flow"
        } catch let e as FormatError {
            why = "protocol error: \(e.message)"
            try? flow.abort("chat protocol error")
        } catch let e as LineTooLongError {
            why = "protocol error: \(e)"
            try? flow.abort("chat protocol error")
        } catch is HelloTimeout {
            why = "no HELLO within \(Int(ChatEngine.helloWait)) s"
        } catch let e as HistoryError {
            // The history could not be written: acknowledge nothing more, say why.
            why = "history file: \(e)"
            engine.show(.problem(contact: peer, what: why))
            try? flow.abort("the peer could not store messages")
        } catch {
            why = describeError(error)
        }
        kicker.finish()
        for h in helpers { h.cancel() }
        flow.close()
        if let peer {
            await engine.left(self, peer, why: why)
        } else if let to {
            await engine.dialed(to)
            engine.show(.problem(contact: to, what: "flow failed before HELLO: \(why)"))
            await engine.retryLater(to)
        }
    }

    private func acknowledged(_ upTo: Int64, _ conversation: Conversation) throws {
        guard let peer, let newly = try conversation.acknowledge(upTo) else { return }
        for seq in newly { engine.show(.delivered(contact: peer, seq: seq)) }
    }

    private func writer(_ name: String, _ conversation: Conversation) async {
        do {
            for await _ in kicks {
                var out = ""
                if ackDue {
                    ackDue = false
                    out += ChatFrame.ack(seq: conversation.lastReceived).encode()
                }
                if await engine.current(name) === self {
                    for m in conversation.ownAfter(sentUpTo) {
                        out += ChatFrame.msg(seq: m.seq, sentAt: m.sentAt, text: m.text).encode()
                        sentUpTo = m.seq
                        if out.utf8.count > ChatEngine.batch { break }
                    }
                    if conversation.lastSent > sentUpTo { kick() }
                }
                if !out.isEmpty { try await flow.send(Data(out.utf8), timeout: ChatEngine.sendWait) }
            }
        } catch {
            // The reader sees the same failure and ends the link.
        }
    }

    private func events(_ name: String) async {
        do {
            for try await e in try flow.events() {
                let line: ChatLine?
                switch e {
                case let .pathAdded(local, remote, relayed, kind):
                    line = .pathAdded(contact: name, path: describePath(kind, local, remote, relayed))
                case let .pathLost(local, remote, _, detail, _, kind):
                    line = .pathLost(contact: name, path: describePath(kind, local, remote, nil), why: detail)
                case let .peerMoved(addresses): line = .peerMoved(contact: name, addresses: addresses)
                case let .moved(addresses): line = .moved(contact: name, addresses: addresses)
                case let .resumed(outage): line = .resumed(contact: name, outageMs: Int64(outage * 1000))
                case let .staysRelayed(attempts): line = .staysRelayed(contact: name, attempts: attempts)
                case .closed, .eventsDropped: line = nil
                }
                if let line { engine.show(line) }
            }
        } catch {
            // The flow is gone; the reader says why.
        }
    }

    /// The flow's paths now, each as "wifi relayed 192.168.1.2:40312 -> 172.16.100.11:443".
    private func pathNames() -> [String] {
        ((try? flow.paths()) ?? []).map { p in "\(p.label) \(p.local) -> \(p.remote)" }
    }

    /// "wifi 192.168.1.2:40312 -> 172.16.100.11:443 relayed" (a lost path: without how).
    private func describePath(_ kind: InterfaceKind?, _ local: String, _ remote: String, _ relayed: Bool?) -> String {
        let how = relayed.map { $0 ? " relayed" : " direct" } ?? ""
        return "\(linkName(kind)) \(local) -> \(remote)\(how)"
    }

    private func send(_ frame: ChatFrame) async throws {
        try await flow.send(Data(frame.encode().utf8), timeout: ChatEngine.sendWait)
    }
}

/// `body`'s result, or `HelloTimeout` after `seconds` (then `body` is cancelled).
func withDeadline<T: Sendable>(_ seconds: TimeInterval, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(nanoseconds: UInt64(seconds * 1_000_000_000))
            throw HelloTimeout()
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw HelloTimeout() }
        return first
    }
}

/// An error in the words a user reads: an SDK error as `Case: message`.
public func describeError(_ error: Error) -> String {
    guard let e = error as? MsocketError else { return "\(error)" }
    switch e {
    case let .InvalidArgument(m): return "InvalidArgument: \(m)"
    case let .BadUrl(m): return "BadUrl: \(m)"
    case let .NameNotFound(m): return "NameNotFound: \(m)"
    case let .NameService(m): return "NameService: \(m)"
    case let .KeyChanged(m): return "KeyChanged: \(m)"
    case let .WrongKey(m): return "WrongKey: \(m)"
    case let .StaleRecord(m): return "StaleRecord: \(m)"
    case let .NotAllowed(m): return "NotAllowed: \(m)"
    case let .PinStore(m): return "PinStore: \(m)"
    case let .Unreachable(m): return "Unreachable: \(m)"
    case let .AlreadyListening(m): return "AlreadyListening: \(m)"
    case let .Timeout(m): return "Timeout: \(m)"
    case let .Closed(m): return "Closed: \(m)"
    case let .FlowFailed(m): return "FlowFailed: \(m)"
    case let .PeerAborted(m): return "PeerAborted: \(m)"
    case let .PeerForgotFlow(m): return "PeerForgotFlow: \(m)"
    case let .NoPath(m): return "NoPath: \(m)"
    case let .Io(m): return "Io: \(m)"
    case let .Cancelled(m): return "Cancelled: \(m)"
    case let .Internal(m): return "Internal: \(m)"
    }
}
