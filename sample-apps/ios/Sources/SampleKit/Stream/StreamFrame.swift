// The stream's records (the same bytes as StreamFrame.kt). Sender to receiver, binary:
//
//   [type u8][length u32][body]          big-endian, body at most maxBody bytes
//   type 1 CHUNK   seq u32, duration-ms u16, sent-at-ms u64, payload
//   type 2 POLICY  the path policy now in effect, in ASCII ("backup")
//   type 3 END     chunks sent u32, chunks skipped u32 (the sender fell behind)
//
// Receiver to sender, one line each: `POLICY <name>` asks the sender to switch (the
// connecting side decides a flow's policy).
//
// A chunk's payload is a pattern derived from its sequence number, so the receiver checks
// every byte it plays.

import Foundation
import MSocket

public enum StreamFrame: Equatable, Sendable {
    case chunk(seq: Int32, durationMs: Int, sentAt: Int64, payload: Data)
    case policy(PathPolicy)
    case end(chunks: Int32, skipped: Int32)

    public static let maxBody = 1 << 20
    /// Every policy, in the order the SDK declares them.
    public static let policies: [PathPolicy] = [.backup, .performance, .energy, .redundant]

    /// A chunk of `size` bytes for `seq`, with its pattern.
    public static func makeChunk(seq: Int32, durationMs: Int, sentAt: Int64, size: Int) -> StreamFrame {
        .chunk(seq: seq, durationMs: durationMs, sentAt: sentAt, payload: Data((0..<size).map { patternByte(seq, $0) }))
    }

    static func patternByte(_ seq: Int32, _ i: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: Int(seq) &* 31 &+ i &* 7 &+ (i >> 8))
    }

    /// Whether a chunk's payload is the pattern of its seq (true for other frames).
    public var intact: Bool {
        guard case let .chunk(seq, _, _, payload) = self else { return true }
        var i = 0
        for b in payload {
            if b != Self.patternByte(seq, i) { return false }
            i += 1
        }
        return true
    }

    public func encode() -> Data {
        var body = Data()
        let type: UInt8
        switch self {
        case let .chunk(seq, durationMs, sentAt, payload):
            type = 1
            body.appendBE(UInt32(bitPattern: seq))
            body.appendBE(UInt16(truncatingIfNeeded: durationMs))
            body.appendBE(UInt64(bitPattern: sentAt))
            body.append(payload)
        case let .policy(p):
            type = 2
            body.append(Data(Self.policyName(p).utf8))
        case let .end(chunks, skipped):
            type = 3
            body.appendBE(UInt32(bitPattern: chunks))
            body.appendBE(UInt32(bitPattern: skipped))
        }
        var out = Data([type])
        out.appendBE(UInt32(body.count))
        out.append(body)
        return out
    }

    /// The frame of `type` with `body`; `FormatError` if it is not one.
    public static func decode(type: UInt8, body: Data) throws -> StreamFrame {
        let b = [UInt8](body)
        switch type {
        case 1:
            if b.count < 14 { throw FormatError("a CHUNK of \(b.count) bytes") }
            let seq = Int32(bitPattern: be32(b, 0))
            let duration = Int(b[4]) << 8 | Int(b[5])
            let sentAt = Int64(bitPattern: UInt64(be32(b, 6)) << 32 | UInt64(be32(b, 10)))
            if seq < 0 || duration == 0 { throw FormatError("CHUNK \(seq) of \(duration) ms") }
            return .chunk(seq: seq, durationMs: duration, sentAt: sentAt, payload: Data(b[14...]))
        case 2:
            // As Java's US-ASCII decoder: bytes above 0x7f become U+FFFD.
            let text = String(String.UnicodeScalarView(b.map { $0 < 0x80 ? Unicode.Scalar($0) : "\u{FFFD}" }))
            return .policy(try parsePolicy(text))
        case 3:
            if b.count != 8 { throw FormatError("an END of \(b.count) bytes") }
            return .end(chunks: Int32(bitPattern: be32(b, 0)), skipped: Int32(bitPattern: be32(b, 4)))
        default:
            throw FormatError("unknown record type \(type)")
        }
    }

    public static func policyName(_ p: PathPolicy) -> String {
        switch p {
        case .backup: return "backup"
        case .performance: return "performance"
        case .energy: return "energy"
        case .redundant: return "redundant"
        }
    }

    /// The policy "backup", "performance", "energy" or "redundant" names (any case,
    /// surrounding white space ignored).
    public static func parsePolicy(_ name: String) throws -> PathPolicy {
        let wanted = name.trimmedLikeKotlin().lowercased()
        if let p = policies.first(where: { policyName($0) == wanted }) { return p }
        throw FormatError("\"\(name.prefixString(40))\" is not a policy (\(policies.map(policyName).joined(separator: ", ")))")
    }
}

func be32(_ b: [UInt8], _ at: Int) -> UInt32 {
    UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
}

extension Data {
    mutating func appendBE<T: FixedWidthInteger>(_ value: T) {
        var big = value.bigEndian
        Swift.withUnsafeBytes(of: &big) { append(contentsOf: $0) }
    }
}

/// Splits what `source` returns (nil: end of stream) into frames, holding at most one
/// frame's bytes. Used by one task at a time.
public final class FrameReader: @unchecked Sendable {
    private let source: () async throws -> Data?
    private var buf: [UInt8] = []
    private var ended = false

    public init(source: @escaping () async throws -> Data?) { self.source = source }

    /// The next frame; nil at a clean end of stream.
    public func next() async throws -> StreamFrame? {
        while true {
            if buf.count >= 5 {
                let type = buf[0]
                let len = Int(Int32(bitPattern: be32(buf, 1)))
                if len < 0 || len > StreamFrame.maxBody {
                    throw FormatError("a record of \(len) bytes (at most \(StreamFrame.maxBody))")
                }
                if buf.count >= 5 + len {
                    let body = Data(buf[5..<(5 + len)])
                    buf.removeFirst(5 + len)
                    return try StreamFrame.decode(type: type, body: body)
                }
            }
            if ended {
                if !buf.isEmpty { throw FormatError("the stream ended inside a record") }
                return nil
            }
            if let more = try await source() {
                buf.append(contentsOf: more)
            } else {
                ended = true
            }
        }
    }
}
