// The identity key in the Keychain. The key is the identity an endpoint's peers pin: it
// must outlive the app's process and stay on this device, since a copy on another phone
// would be the same peer twice. A generic-password item that is accessible after the first
// unlock (so an app woken in the background can read it) and only on this device (so no
// backup restores it elsewhere) is what the Keychain offers for that.
//
// An item that holds something other than a 32-byte key is an error, never replaced by a
// new identity: a new key is a new peer to everyone who pinned the old one.

import Foundation
import Security

/// Why the Keychain could not give an identity key.
public enum IdentityKeychainError: Error, Equatable, CustomStringConvertible {
    /// The item holds `length` bytes, not a 32-byte key.
    case malformed(account: String, length: Int)
    /// A Keychain call failed with `status` (an `OSStatus`, e.g. `errSecInteractionNotAllowed`
    /// before the device's first unlock).
    case keychain(account: String, operation: String, status: Int32)

    public var description: String {
        switch self {
        case let .malformed(account, length):
            return "the Keychain item \(account) holds \(length) bytes, not a 32-byte key; delete it to make a new identity"
        case let .keychain(account, operation, status):
            let text = SecCopyErrorMessageString(status, nil).map { $0 as String } ?? "OSStatus \(status)"
            return "the Keychain could not \(operation) \(account): \(text)"
        }
    }
}

/// Identity keys kept in the Keychain, one item per `account`.
public enum IdentityKeychain {
    /// The account `loadOrCreate` uses unless told another.
    public static let defaultAccount = "msocket-identity"
    /// The items' service attribute.
    public static let service = "dev.msocket.identity"

    /// The key kept under `account`, or nil when there is none.
    public static func load(account: String = defaultAccount) throws -> Data? {
        var query = item(account)
        query[kSecReturnData as String] = true
        query[kSecMatchLimit as String] = kSecMatchLimitOne
        var found: CFTypeRef?
        let status = SecItemCopyMatching(query as CFDictionary, &found)
        if status == errSecItemNotFound { return nil }
        guard status == errSecSuccess else {
            throw IdentityKeychainError.keychain(account: account, operation: "read", status: status)
        }
        let key = (found as? Data) ?? Data()
        guard key.count == 32 else { throw IdentityKeychainError.malformed(account: account, length: key.count) }
        return key
    }

    /// The key kept under `account`; when there is none, a new one
    /// (`MSocketSDK.generateKey()`), stored before it is returned.
    public static func loadOrCreate(account: String = defaultAccount) throws -> Data {
        if let key = try load(account: account) { return key }
        let key = try MSocketSDK.generateKey()
        var add = item(account)
        add[kSecValueData as String] = key
        add[kSecAttrAccessible as String] = kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly
        let status = SecItemAdd(add as CFDictionary, nil)
        if status == errSecDuplicateItem, let stored = try load(account: account) {
            // Another thread stored one first: that one is the identity.
            return stored
        }
        guard status == errSecSuccess else {
            throw IdentityKeychainError.keychain(account: account, operation: "store", status: status)
        }
        return key
    }

    /// Forgets the key under `account` (the identity is gone for good).
    public static func delete(account: String = defaultAccount) throws {
        let status = SecItemDelete(item(account) as CFDictionary)
        guard status == errSecSuccess || status == errSecItemNotFound else {
            throw IdentityKeychainError.keychain(account: account, operation: "delete", status: status)
        }
    }

    private static func item(_ account: String) -> [String: Any] {
        var query: [String: Any] = [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrService as String: service,
            kSecAttrAccount as String: account,
        ]
        // macOS: the data-protection keychain, which behaves as iOS's does.
        query[kSecUseDataProtectionKeychain as String] = true
        return query
    }
}
