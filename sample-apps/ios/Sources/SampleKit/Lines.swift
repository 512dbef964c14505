// Reading a peer's records off a flow: bytes arrive in pieces of any size, records end at
// '\n', and a peer that never sends one must not make us buffer without end.

import Foundation
import MSocket

/// A line longer than the reader allows.
public struct LineTooLongError: Error, Equatable, CustomStringConvertible {
    public let max: Int
    public var description: String { "a line of over \(max) bytes" }
}

/// Splits what `source` returns (nil: end of stream) into lines of at most `maxLine` bytes
/// (without the '\n').
/// Used by one task at a time.
public final class LineReader: @unchecked Sendable {
    private let maxLine: Int
    private let source: () async throws -> Data?
    private var pending = Data()
    private var ended = false

    public init(maxLine: Int, source: @escaping () async throws -> Data?) {
        self.maxLine = maxLine
        self.source = source
    }

    /// Lines off `flow`, each receive waiting at most `timeout` seconds.
    public convenience init(flow: PeerFlow, maxLine: Int, timeout: TimeInterval) {
        self.init(maxLine: maxLine) { try await flow.receive(maxBytes: UInt32(maxLine + 1), timeout: timeout) }
    }

    /// The next line; nil at the end of the stream (a last line without '\n' is dropped).
    public func next() async throws -> String? {
        while true {
            if let nl = pending.firstIndex(of: 0x0A) {
                let length = nl - pending.startIndex
                if length > maxLine { throw LineTooLongError(max: maxLine) }
                let line = pending[pending.startIndex..<nl]
                pending = Data(pending[(nl + 1)...])
                return String(decoding: line, as: UTF8.self)
            }
            if pending.count > maxLine { throw LineTooLongError(max: maxLine) }
            if ended { return nil }
            if let more = try await source() {
                pending.append(more)
            } else {
                ended = true
            }
        }
    }
}
