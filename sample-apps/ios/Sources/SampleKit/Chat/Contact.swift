// Who a user talks to: a name and the fingerprint of the keys behind it. A contact is
// added as `NAME#FINGERPRINT` (checked on every flow from then on) or pinned the first
// time a peer introduces itself, like ssh's known_hosts; a changed key is refused, never
// accepted quietly. The contacts file is the one the console chat keeps.

import Foundation

/// A peer: the name it listens on and its key's fingerprint (lower-case hex).
public struct Contact: Equatable, Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public let fingerprint: String

    public init(name: String, fingerprint: String) {
        self.name = name
        self.fingerprint = fingerprint
    }

    /// `NAME#FINGERPRINT`, what to connect to so that only this key is accepted.
    public var description: String { "\(name)#\(fingerprint)" }

    /// The contact `NAME#FINGERPRINT` names; `FormatError` saying why if none.
    public static func parse(_ spec: String) throws -> Contact {
        let parts = spec.trimmedLikeKotlin().splitScalars("#")
        if parts.count != 2 { throw FormatError("\"\(spec.prefixString(80))\" is not NAME#FINGERPRINT") }
        return Contact(name: try ChatFrame.checkName(parts[0]), fingerprint: try checkFingerprint(parts[1]))
    }

    /// `fp` in lower case if it is 32 to 64 hex digits.
    public static func checkFingerprint(_ fp: String) throws -> String {
        let scalars = Array(fp.unicodeScalars)
        if !(32...64).contains(scalars.count) || !scalars.allSatisfy({ Field.hexValue($0) != nil }) {
            throw FormatError("\"\(fp.prefixString(80))\" is not a key fingerprint (32 to 64 hex digits)")
        }
        return fp.lowercased()
    }
}

/// Why the contact book refused or failed.
public enum ContactError: Error, Equatable, CustomStringConvertible {
    /// A peer claimed a name that is pinned to another key.
    case keyMismatch(name: String, pinned: String, presented: String)
    /// The contacts file cannot be read or written.
    case file(path: String, reason: String)

    public var description: String {
        switch self {
        case let .keyMismatch(name, pinned, presented): return "\(name) is pinned to key \(pinned), but this peer holds \(presented): refused"
        case let .file(path, reason): return "contacts file \(path): \(reason)"
        }
    }
}

/// The contacts file (`NAME FINGERPRINT` a line), rewritten atomically on each change. A
/// line that does not parse is an error naming it. Thread-safe.
public final class ContactBook: @unchecked Sendable {
    static let maxBytes = 1 << 20
    private let url: URL
    private let lock = NSLock()
    private var contacts: [String: Contact] = [:]

    public init(url: URL) throws {
        self.url = url
        guard FileManager.default.fileExists(atPath: url.path) else { return }
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw ContactError.file(path: url.path, reason: "\(error)")
        }
        if data.count > Self.maxBytes { throw ContactError.file(path: url.path, reason: "over \(Self.maxBytes) bytes") }
        for (i, raw) in kotlinLines(String(decoding: data, as: UTF8.self)).enumerated() {
            let line = raw.trimmedLikeKotlin()
            if line.isEmpty || line.startsWithScalar("#") { continue }
            do {
                let f = line.splitScalars(" ")
                if f.count != 2 { throw FormatError("expected NAME FINGERPRINT") }
                let c = Contact(name: try ChatFrame.checkName(f[0]), fingerprint: try Contact.checkFingerprint(f[1]))
                contacts[c.name] = c
            } catch let e as FormatError {
                throw ContactError.file(path: url.path, reason: "line \(i + 1): \(e.message)")
            }
        }
    }

    /// Every contact, by name.
    public var all: [Contact] {
        lock.lock()
        defer { lock.unlock() }
        return contacts.keys.sorted().compactMap { contacts[$0] }
    }

    public func get(_ name: String) -> Contact? {
        lock.lock()
        defer { lock.unlock() }
        return contacts[name]
    }

    /// Adds `contact`, or confirms it; true if it changed the book. A name pinned to
    /// another key: `.keyMismatch`, unless `replace` (the user typed the new fingerprint).
    @discardableResult
    public func pin(_ contact: Contact, replace: Bool = false) throws -> Bool {
        lock.lock()
        defer { lock.unlock() }
        let old = contacts[contact.name]
        if old == contact { return false }
        if let old, !replace {
            throw ContactError.keyMismatch(name: contact.name, pinned: old.fingerprint, presented: contact.fingerprint)
        }
        var next = contacts
        next[contact.name] = contact
        try save(next)
        contacts = next
        return true
    }

    private func save(_ book: [String: Contact]) throws {
        var text = "# msocket chat contacts: NAME FINGERPRINT\n"
        for name in book.keys.sorted() { text += "\(name) \(book[name]!.fingerprint)\n" }
        do {
            try writeSynced(Data(text.utf8), to: url)
        } catch {
            throw ContactError.file(path: url.path, reason: "\(error)")
        }
    }
}

/// Writes `data` to a temporary file beside `url`, syncs it, and renames it over `url`.
func writeSynced(_ data: Data, to url: URL) throws {
    let dir = url.deletingLastPathComponent()
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).tmp")
    try? FileManager.default.removeItem(at: tmp)
    guard FileManager.default.createFile(atPath: tmp.path, contents: nil) else {
        throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: tmp.path])
    }
    let handle = try FileHandle(forWritingTo: tmp)
    do {
        try handle.write(contentsOf: data)
        try handle.synchronize()
        try handle.close()
    } catch {
        try? handle.close()
        throw error
    }
    if rename(tmp.path, url.path) != 0 {
        throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: url.path])
    }
}

/// `text` split into lines the way Kotlin's `lines()` splits: at "\r\n", "\n" and "\r".
func kotlinLines(_ text: String) -> [String] {
    var out: [String] = []
    var current = String.UnicodeScalarView()
    var previousCR = false
    for s in text.unicodeScalars {
        if s == "\n" {
            if previousCR {
                previousCR = false
                continue
            }
            out.append(String(current))
            current = String.UnicodeScalarView()
        } else if s == "\r" {
            out.append(String(current))
            current = String.UnicodeScalarView()
            previousCR = true
            continue
        } else {
            current.append(s)
        }
        previousCR = false
    }
    out.append(String(current))
    return out
}
