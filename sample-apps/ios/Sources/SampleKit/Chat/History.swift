// A conversation on disk: an append-only log, one record a line, synced
// (FileHandle.synchronize, fsync) before anything that depends on it happens. Our own
// message is written before it is sent (a restart resends what was never acknowledged); a
// peer's message is written before it is acknowledged (acknowledged means it survives a
// crash). The format is the console chat's (History.kt), so a history moves between them:
//
//   # msocket-chat 1 <contact>
//   out <seq> <sent-at-ms> <text>     a message of ours
//   in <seq> <sent-at-ms> <text>      a message of the peer's
//   delivered <seq>                   the peer stored ours up to seq
//
// A crash can leave a torn last line; loading drops it (whatever it held was not yet
// acknowledged to anyone, so it comes again or is resent).

import Foundation

/// One message of a conversation, ours (`outgoing`) or the peer's.
public struct Message: Equatable, Hashable, Sendable {
    public let outgoing: Bool
    public let seq: Int64
    public let sentAt: Int64
    public let text: String

    public init(outgoing: Bool, seq: Int64, sentAt: Int64, text: String) {
        self.outgoing = outgoing
        self.seq = seq
        self.sentAt = sentAt
        self.text = text
    }
}

/// What became of a peer's message handed to `Conversation.receive`.
public enum Receipt: Equatable, Sendable {
    /// New, and now on disk.
    case stored
    /// Stored before (a resend).
    case duplicate
    /// Not the next one: an earlier message is missing (it comes on the next flow).
    case outOfOrder
}

public enum HistoryError: Error, Equatable, CustomStringConvertible {
    /// A record of the file does not parse or does not follow from the ones before it.
    case corrupt(path: String, line: Int, reason: String)
    case tooLarge(path: String, max: Int)
    /// Reading, writing or syncing the file failed.
    case io(path: String, reason: String)
    /// A message longer than `ChatFrame.maxText`.
    case messageTooLong(max: Int)

    public var description: String {
        switch self {
        case let .corrupt(path, line, reason): return "history file \(path), line \(line): \(reason)"
        case let .tooLarge(path, max): return "history file \(path) is over \(max) bytes"
        case let .io(path, reason): return "history file \(path): \(reason)"
        case let .messageTooLong(max): return "a message is at most \(max) characters"
        }
    }
}

/// The conversation with one contact, in memory and in its log file. Thread-safe.
public final class Conversation: @unchecked Sendable {
    static let maxBytes = 256 << 20
    public let contact: String
    let url: URL
    private let lock = NSLock()
    private var messages: [Message] = []
    private var out: FileHandle?
    private var _lastSent: Int64 = 0
    private var _lastReceived: Int64 = 0
    private var _delivered: Int64 = 0

    init(contact: String, url: URL) throws {
        self.contact = contact
        self.url = url
        let path = url.path
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            if FileManager.default.fileExists(atPath: path) {
                try load()
            } else {
                try writeSynced(Data("# msocket-chat 1 \(contact)\n".utf8), to: url)
            }
            let handle = try FileHandle(forWritingTo: url)
            try handle.seekToEnd()
            out = handle
        } catch let e as HistoryError {
            throw e
        } catch {
            throw HistoryError.io(path: path, reason: "\(error)")
        }
    }

    /// The highest sequence number of our messages.
    public var lastSent: Int64 { locked { _lastSent } }
    /// The highest sequence number of the peer's messages stored (all below it are too).
    public var lastReceived: Int64 { locked { _lastReceived } }
    /// Our messages up to this one are on the peer's disk.
    public var delivered: Int64 { locked { _delivered } }
    /// Every message, in the order this side stored them.
    public var all: [Message] { locked { messages } }

    /// Our message `seq`.
    public func own(_ seq: Int64) -> Message? { locked { messages.first { $0.outgoing && $0.seq == seq } } }

    /// Our messages after `seq`, in order.
    public func ownAfter(_ seq: Int64) -> [Message] { locked { messages.filter { $0.outgoing && $0.seq > seq } } }

    /// Stores a new message of ours (on disk before this returns).
    public func add(_ text: String, now: Int64) throws -> Message {
        try locked { () throws -> Message in
            if text.utf16.count > ChatFrame.maxText { throw HistoryError.messageTooLong(max: ChatFrame.maxText) }
            let m = Message(outgoing: true, seq: _lastSent + 1, sentAt: now, text: text)
            try append("out \(m.seq) \(m.sentAt) \(Field.encode(text))")
            messages.append(m)
            _lastSent = m.seq
            return m
        }
    }

    /// Stores the peer's message `seq` if it is the next one.
    public func receive(seq: Int64, sentAt: Int64, text: String) throws -> Receipt {
        try locked { () throws -> Receipt in
            if seq <= _lastReceived { return .duplicate }
            if seq != _lastReceived + 1 { return .outOfOrder }
            try append("in \(seq) \(sentAt) \(Field.encode(text))")
            messages.append(Message(outgoing: false, seq: seq, sentAt: sentAt, text: text))
            _lastReceived = seq
            return .stored
        }
    }

    /// The peer acknowledged ours up to `upTo`: returns the sequence numbers newly
    /// delivered. `FormatError` if it acknowledges one we never sent.
    public func acknowledge(_ upTo: Int64) throws -> ClosedRange<Int64>? {
        try locked { () throws -> ClosedRange<Int64>? in
            if upTo > _lastSent { throw FormatError("the peer acknowledged message \(upTo); the last sent is \(_lastSent)") }
            if upTo <= _delivered { return nil }
            try append("delivered \(upTo)")
            let newly = (_delivered + 1)...upTo
            _delivered = upTo
            return newly
        }
    }

    public func close() {
        locked {
            try? out?.close()
            out = nil
        }
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    private func append(_ record: String) throws {
        guard let out else { throw HistoryError.io(path: url.path, reason: "closed") }
        do {
            try out.write(contentsOf: Data("\(record)\n".utf8))
            try out.synchronize()
        } catch {
            throw HistoryError.io(path: url.path, reason: "\(error)")
        }
    }

    private func load() throws {
        let path = url.path
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        if let size = attributes[.size] as? NSNumber, size.intValue > Self.maxBytes {
            throw HistoryError.tooLarge(path: path, max: Self.maxBytes)
        }
        let bytes = try Data(contentsOf: url)
        let end = (bytes.lastIndex(of: 0x0A).map { $0 - bytes.startIndex + 1 }) ?? 0
        if end < bytes.count {
            // A torn last record (a crash while writing it): drop it.
            let handle = try FileHandle(forWritingTo: url)
            try handle.truncate(atOffset: UInt64(end))
            try handle.synchronize()
            try handle.close()
        }
        let text = String(decoding: bytes.prefix(end), as: UTF8.self)
        for (i, line) in kotlinLines(text).enumerated() {
            if line.isEmpty || line.startsWithScalar("#") { continue }
            do {
                try apply(line.splitScalars(" "))
            } catch let e as FormatError {
                throw HistoryError.corrupt(path: path, line: i + 1, reason: e.message)
            }
        }
    }

    private func apply(_ f: [String]) throws {
        func num(_ i: Int) throws -> Int64 {
            guard i < f.count, let v = parseLong(f[i]) else { throw FormatError("field \(i + 1) is not a number") }
            return v
        }
        switch f[0] {
        case "out", "in":
            if f.count != 4 { throw FormatError("\(f[0]) takes 3 fields") }
            let m = Message(outgoing: f[0] == "out", seq: try num(1), sentAt: try num(2), text: try Field.decode(f[3]))
            let last = m.outgoing ? _lastSent : _lastReceived
            if m.seq != last + 1 { throw FormatError("message \(m.seq) follows \(last)") }
            messages.append(m)
            if m.outgoing { _lastSent = m.seq } else { _lastReceived = m.seq }
        case "delivered":
            if f.count != 2 { throw FormatError("delivered takes 1 field") }
            let upTo = try num(1)
            if upTo > _lastSent || upTo < _delivered { throw FormatError("delivered \(upTo) out of range") }
            _delivered = upTo
        default:
            throw FormatError("unknown record \"\(f[0].prefixString(20))\"")
        }
    }
}

/// Every conversation of one user, a file each under `dir`. Thread-safe.
public final class History: @unchecked Sendable {
    private let dir: URL
    private let lock = NSLock()
    private var open: [String: Conversation] = [:]

    public init(dir: URL) { self.dir = dir }

    /// The conversation with `contact` (created empty if new).
    public func with(_ contact: String) throws -> Conversation {
        lock.lock()
        defer { lock.unlock() }
        if let c = open[contact] { return c }
        let c = try Conversation(contact: try ChatFrame.checkName(contact), url: dir.appendingPathComponent("\(contact).log"))
        open[contact] = c
        return c
    }

    /// The contacts with a conversation on disk.
    public func contacts() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix(".log") }.map { String($0.dropLast(4)) }.sorted()
    }

    public func close() {
        lock.lock()
        let all = Array(open.values)
        lock.unlock()
        for c in all { c.close() }
    }
}
