// Reads the golden vectors in sample-apps/testdata, which the Kotlin tests read too (the
// format is sample-apps/testdata/README.md).

import Foundation
import XCTest

enum Vectors {
    /// sample-apps/testdata, found from this file's place in the checkout.
    static let dir = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent() // SampleKitTests
        .deletingLastPathComponent() // Tests
        .deletingLastPathComponent() // ios
        .deletingLastPathComponent() // sample-apps
        .appendingPathComponent("testdata")

    static func url(_ name: String) -> URL { dir.appendingPathComponent(name) }

    static func data(_ name: String) throws -> Data { try Data(contentsOf: url(name)) }

    /// The tab-separated rows of `name`, without comments and blank lines.
    static func rows(_ name: String) throws -> [[String]] {
        let text = String(decoding: try data(name), as: UTF8.self)
        return text.split(separator: "\n", omittingEmptySubsequences: true)
            .map(String.init)
            .filter { !$0.hasPrefix("#") }
            .map { $0.components(separatedBy: "\t") }
    }

    /// The lines of `name` split at single spaces, without comments and blank lines.
    static func words(_ name: String) throws -> [[String]] {
        let text = String(decoding: try data(name), as: UTF8.self)
        return text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }.map { $0.components(separatedBy: " ") }
    }

    /// The bytes of a hex column (`-`: none).
    static func bytes(_ hex: String) -> Data {
        if hex == "-" { return Data() }
        let chars = Array(hex.utf8)
        precondition(chars.count % 2 == 0, "odd hex \(hex)")
        return Data(stride(from: 0, to: chars.count, by: 2).map { UInt8(String(decoding: chars[$0..<$0 + 2], as: UTF8.self), radix: 16)! })
    }

    /// The UTF-8 text of a hex column.
    static func text(_ hex: String) -> String { String(decoding: bytes(hex), as: UTF8.self) }

    static func hex(_ data: Data) -> String { data.isEmpty ? "-" : data.map { String(format: "%02x", $0) }.joined() }

    /// A new empty directory for one test.
    static func tempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("samplekit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}
