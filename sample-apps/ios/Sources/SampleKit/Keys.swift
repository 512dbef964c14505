// The samples' identity: a 32-byte key kept in a file (64 hex digits), made on first run,
// the same file format as the console samples'. The key is the user's identity (peers
// pin its fingerprint), so it is never replaced silently: a file that holds something
// else is an error. On iOS the file lives in the app's container, protected until the
// user first unlocks the device after a restart.

import Foundation
import MSocket

public enum KeyFileError: Error, Equatable, CustomStringConvertible {
    case malformed(path: String)
    case unwritable(path: String, reason: String)

    public var description: String {
        switch self {
        case let .malformed(path): return "key file \(path) does not hold 64 hex digits; move it away to make a new identity"
        case let .unwritable(path, reason): return "could not write the key file \(path): \(reason)"
        }
    }
}

public enum KeyFile {
    /// The key in `url`; a new one (`make`), written there owner-only, if absent.
    public static func loadOrCreate(_ url: URL, make: () throws -> Data = { try MSocketSDK.generateKey() }) throws -> Data {
        if FileManager.default.fileExists(atPath: url.path) {
            let text = (try String(contentsOf: url, encoding: .utf8)).trimmedLikeKotlin()
            let scalars = Array(text.unicodeScalars)
            guard scalars.count == 64, scalars.allSatisfy({ Field.hexValue($0) != nil }) else {
                throw KeyFileError.malformed(path: url.path)
            }
            return Data((0..<32).map { UInt8(Field.hexValue(scalars[2 * $0])! * 16 + Field.hexValue(scalars[2 * $0 + 1])!) })
        }
        let key = try make()
        let dir = url.deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).tmp")
            try? FileManager.default.removeItem(at: tmp)
            let text = key.map { String(format: "%02x", $0) }.joined() + "\n"
            var attributes: [FileAttributeKey: Any] = [.posixPermissions: 0o600]
            #if os(iOS)
            attributes[.protectionKey] = FileProtectionType.completeUntilFirstUserAuthentication
            #endif
            guard FileManager.default.createFile(atPath: tmp.path, contents: Data(text.utf8), attributes: attributes) else {
                throw KeyFileError.unwritable(path: url.path, reason: "cannot create \(tmp.path)")
            }
            try FileManager.default.moveItem(at: tmp, to: url)
        } catch let error as KeyFileError {
            throw error
        } catch {
            throw KeyFileError.unwritable(path: url.path, reason: "\(error)")
        }
        return key
    }
}
