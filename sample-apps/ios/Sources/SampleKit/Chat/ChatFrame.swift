// The chat's records on a flow, one a line (the same as sample-apps/shared's ChatFrame.kt,
// so a Swift chat and a Kotlin chat talk to each other):
//
//   HELLO 1 <name> <received>     first record each way: who I am (the name I listen on)
//                                 and the highest of your messages I have stored
//   MSG <seq> <sent-at-ms> <text> one of my messages; seq counts from 1 per conversation
//   ACK <seq>                     I stored all your messages up to seq (on disk)
//
// The flow delivers bytes once and in order while it lives; these records exist for what
// outlives a flow (a restart, a flow that failed, a second flow opened while the first
// still looked alive). Sequence numbers make a resent message recognisable, and ACK is
// written only once the message is on the peer's disk: that is what "delivered" means.

import Foundation

/// One record of the chat protocol.
public enum ChatFrame: Equatable, Sendable {
    case hello(name: String, received: Int64)
    case msg(seq: Int64, sentAt: Int64, text: String)
    case ack(seq: Int64)

    public static let version = 1
    /// The longest record a peer may send (a message of `maxText` escaped, with room).
    public static let maxLine = 16 * 1024
    /// The longest message, in UTF-16 code units (what Kotlin's `String.length` counts).
    public static let maxText = 2000

    /// The record as one line, '\n' included.
    public func encode() -> String {
        switch self {
        case let .hello(name, received): return "HELLO \(ChatFrame.version) \(name) \(received)\n"
        case let .msg(seq, sentAt, text): return "MSG \(seq) \(sentAt) \(Field.encode(text))\n"
        case let .ack(seq): return "ACK \(seq)\n"
        }
    }

    /// The record `line` holds; `FormatError` saying why if it holds none.
    public static func decode(_ line: String) throws -> ChatFrame {
        let f = line.splitScalars(" ")
        func num(_ i: Int, _ what: String, _ min: Int64) throws -> Int64 {
            guard i < f.count, let v = parseLong(f[i]) else {
                throw FormatError("\(what) is not a number in \"\(line.prefixString(80))\"")
            }
            if v < min { throw FormatError("\(what) \(v) is below \(min)") }
            return v
        }
        func arity(_ n: Int) throws {
            if f.count != n { throw FormatError("\(f[0]) takes \(n - 1) fields, got \(f.count - 1)") }
        }
        switch f[0] {
        case "HELLO":
            try arity(4)
            if f[1] != String(version) { throw FormatError("chat protocol version \(f[1]) is not \(version)") }
            return .hello(name: try checkName(f[2]), received: try num(3, "received", 0))
        case "MSG":
            try arity(4)
            let text = try Field.decode(f[3])
            if text.utf16.count > maxText { throw FormatError("a message of \(text.utf16.count) characters (at most \(maxText))") }
            return .msg(seq: try num(1, "seq", 1), sentAt: try num(2, "sent-at", 0), text: text)
        case "ACK":
            try arity(2)
            return .ack(seq: try num(1, "seq", 0))
        default:
            throw FormatError("unknown record \"\(f[0].prefixString(20))\"")
        }
    }

    /// `name` if it can be a chat name: ASCII letters, digits, '-', '.', '_', 1 to 253,
    /// not all dots.
    @discardableResult
    public static func checkName(_ name: String) throws -> String {
        let scalars = Array(name.unicodeScalars)
        let allowed = scalars.allSatisfy { s in
            (s.value < 128 && (("a"..."z").contains(s) || ("A"..."Z").contains(s) || ("0"..."9").contains(s))) || s == "-" || s == "." || s == "_"
        }
        if scalars.isEmpty || name.utf16.count > 253 || !allowed || scalars.allSatisfy({ $0 == "." }) {
            throw FormatError("\"\(name.prefixString(80))\" is not a name")
        }
        return name
    }
}

/// A decimal Int64 as Kotlin's `toLongOrNull` reads ASCII text: an optional sign, then
/// digits; nil for anything else or past the range.
func parseLong(_ text: String) -> Int64? {
    guard text.unicodeScalars.allSatisfy({ $0.isASCII }) else { return nil }
    return Int64(text)
}
