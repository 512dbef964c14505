// Text on the samples' wire and in their files: one record a line, fields separated by
// single spaces, free text percent-escaped so that it fits in one field. This is the
// Swift twin of sample-apps/shared (Text.kt); both are held to sample-apps/testdata.

import Foundation

/// A record that does not parse: `message` says which and why.
public struct FormatError: Error, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Percent-escaping of free text for one space-separated field (UTF-8).
public enum Field {
    private static let hex = Array("0123456789ABCDEF".utf8)

    /// `text` with `%`, `#`, spaces and control characters escaped as `%XX`; `%` alone if empty.
    public static func encode(_ text: String) -> String {
        if text.isEmpty { return "%" }
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count + 8)
        for scalar in text.unicodeScalars {
            let c = scalar.value
            if c <= 0x20 || c == 0x25 || c == 0x23 || c == 0x7f {
                out.append(0x25)
                out.append(hex[Int(c >> 4)])
                out.append(hex[Int(c & 15)])
            } else {
                out.append(contentsOf: Array(String(scalar).utf8))
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The text `field` encodes; `FormatError` if it is not what `encode` writes. Bytes
    /// that are not UTF-8 become U+FFFD.
    public static func decode(_ field: String) throws -> String {
        if field == "%" { return "" }
        let chars = Array(field.unicodeScalars)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(chars.count)
        var i = 0
        while i < chars.count {
            let ch = chars[i]
            if ch == "%" {
                if i + 2 >= chars.count { throw FormatError("truncated escape in \"\(field)\"") }
                guard let hi = hexValue(chars[i + 1]), let lo = hexValue(chars[i + 2]) else {
                    throw FormatError("bad escape in \"\(field)\"")
                }
                bytes.append(UInt8(hi * 16 + lo))
                i += 3
            } else {
                if ch.value <= 0x20 { throw FormatError("unescaped space or control character in a field") }
                bytes.append(contentsOf: Array(String(ch).utf8))
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// An ASCII hex digit's value.
    static func hexValue(_ s: Unicode.Scalar) -> Int? {
        switch s.value {
        case 0x30...0x39: return Int(s.value - 0x30)
        case 0x41...0x46: return Int(s.value - 0x41 + 10)
        case 0x61...0x66: return Int(s.value - 0x61 + 10)
        default: return nil
        }
    }
}

/// The characters Kotlin's `trim()` drops from ASCII text, so that both sides trim alike.
func isKotlinWhitespace(_ s: Unicode.Scalar) -> Bool {
    switch s.value {
    case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: return true
    default: return false
    }
}

extension String {
    /// The string without leading and trailing white space, as Kotlin's `trim()` has it.
    func trimmedLikeKotlin() -> String {
        let scalars = Array(unicodeScalars)
        var start = 0
        var end = scalars.count
        while start < end && isKotlinWhitespace(scalars[start]) { start += 1 }
        while end > start && isKotlinWhitespace(scalars[end - 1]) { end -= 1 }
        var out = String.UnicodeScalarView()
        out.append(contentsOf: scalars[start..<end])
        return String(out)
    }

    /// The pieces between each `separator`, empty ones kept (Kotlin's `split`): split by
    /// Unicode scalar, not by Character, so a combining mark after a separator does not
    /// glue two fields together.
    func splitScalars(_ separator: Unicode.Scalar) -> [String] {
        var out: [String] = []
        var current = String.UnicodeScalarView()
        for s in unicodeScalars {
            if s == separator {
                out.append(String(current))
                current = String.UnicodeScalarView()
            } else {
                current.append(s)
            }
        }
        out.append(String(current))
        return out
    }

    /// Whether the first Unicode scalar is `s` (not the first Character).
    func startsWithScalar(_ s: Unicode.Scalar) -> Bool { unicodeScalars.first == s }

    /// The first `n` characters (for messages quoting bad input).
    func prefixString(_ n: Int) -> String { String(prefix(n)) }
}

/// `value` with `digits` decimals, rounded half up from its shortest decimal form: what
/// Java's `String.format(Locale.ROOT, "%.Nf")` prints, so reports read the same on
/// both platforms (C's printf rounds 0.15 to 0.1, Java to 0.2).
public func fixed(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return value.isNaN ? "NaN" : (value < 0 ? "-Infinity" : "Infinity") }
    guard var decimal = Decimal(string: "\(value)", locale: Locale(identifier: "en_US_POSIX")) else {
        return String(format: "%.\(digits)f", locale: Locale(identifier: "en_US_POSIX"), value)
    }
    var rounded = Decimal()
    NSDecimalRound(&rounded, &decimal, digits, .plain)
    let negative = rounded < 0
    let magnitude = negative ? -rounded : rounded
    // Scaled to an integer, then printed with the decimal point put back.
    var scaled = magnitude
    for _ in 0..<digits { scaled *= 10 }
    var digitsText = NSDecimalNumber(decimal: scaled).stringValue
    if let dot = digitsText.firstIndex(of: ".") { digitsText = String(digitsText[..<dot]) }
    while digitsText.count <= digits { digitsText = "0" + digitsText }
    let cut = digitsText.index(digitsText.endIndex, offsetBy: -digits)
    let body = digits == 0 ? digitsText : String(digitsText[..<cut]) + "." + String(digitsText[cut...])
    return (negative ? "-" : "") + body
}
