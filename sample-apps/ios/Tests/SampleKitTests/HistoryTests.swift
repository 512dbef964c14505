// The history file: what a load keeps, drops and refuses, and the exact bytes a
// conversation writes, against the vectors the Kotlin side is tested with.

import Foundation
import XCTest
@testable import SampleKit

final class HistoryTests: XCTestCase {
    /// A conversation with alice loaded from `bytes`, and the file it was loaded from.
    private func load(_ bytes: Data) throws -> (Conversation, URL) {
        let dir = try Vectors.tempDir()
        let file = dir.appendingPathComponent("alice.log")
        try bytes.write(to: file)
        return (try History(dir: dir).with("alice"), file)
    }

    func testATornLastRecordIsDroppedAndCutOff() throws {
        let (c, file) = try load(try Vectors.data("history-torn.log"))
        var messages: [String] = []
        for line in try Vectors.words("history-torn.expect") {
            switch line[0] {
            case "length": XCTAssertEqual(try Data(contentsOf: file).count, Int(line[1]))
            case "lastSent": XCTAssertEqual(c.lastSent, Int64(line[1]))
            case "lastReceived": XCTAssertEqual(c.lastReceived, Int64(line[1]))
            case "delivered": XCTAssertEqual(c.delivered, Int64(line[1]))
            case "message": messages.append(line[1...].joined(separator: " "))
            default: XCTFail("unknown expectation \(line)")
            }
        }
        let loaded = c.all.map { "\($0.outgoing ? "out" : "in") \($0.seq) \($0.sentAt) \(Vectors.hex(Data($0.text.utf8)))" }
        XCTAssertEqual(loaded, messages)
        // What is appended after the cut starts on a line of its own.
        _ = try c.add("after", now: 1)
        c.close()
        let reloaded = try History(dir: file.deletingLastPathComponent()).with("alice")
        XCTAssertEqual(reloaded.own(3)?.text, "after")
    }

    func testLoadsAndRefusalsMatchTheVectors() throws {
        let rows = try Vectors.rows("history-cases.txt")
        XCTAssertGreaterThan(rows.count, 15)
        for r in rows {
            let bytes = Vectors.bytes(r[1])
            switch r[0] {
            case "loads":
                let (c, file) = try load(bytes)
                let want = r[2].components(separatedBy: " ").map { Int64($0)! }
                let got = [c.lastSent, c.lastReceived, c.delivered, Int64(c.all.count), Int64(try Data(contentsOf: file).count)]
                XCTAssertEqual(got, want, r[3])
            case "rejects":
                XCTAssertThrowsError(try load(bytes), r[2]) { error in
                    guard let h = error as? HistoryError, case .corrupt = h else { return XCTFail("\(r[2]): \(error)") }
                }
            default:
                XCTFail("unknown row kind \(r[0])")
            }
        }
    }

    func testAConversationWritesTheBytesOfTheVector() throws {
        let dir = try Vectors.tempDir()
        let c = try History(dir: dir).with("bob")
        for op in try Vectors.words("history-written.ops") {
            switch op[0] {
            case "add":
                XCTAssertEqual(try c.add(Vectors.text(op[1]), now: Int64(op[2])!).seq, Int64(op[3])!, op.joined(separator: " "))
            case "receive":
                let receipt = try c.receive(seq: Int64(op[1])!, sentAt: Int64(op[2])!, text: Vectors.text(op[3]))
                let names: [Receipt: String] = [.stored: "STORED", .duplicate: "DUPLICATE", .outOfOrder: "OUT_OF_ORDER"]
                XCTAssertEqual(names[receipt], op[4], op.joined(separator: " "))
            case "ack":
                let what = op.joined(separator: " ")
                if op[2] == "error" {
                    XCTAssertThrowsError(try c.acknowledge(Int64(op[1])!), what) { XCTAssertTrue($0 is FormatError, what) }
                } else {
                    let newly = try c.acknowledge(Int64(op[1])!)
                    XCTAssertEqual(newly.map { "\($0.lowerBound)-\($0.upperBound)" } ?? "-", op[2], what)
                }
            default:
                XCTFail("unknown operation \(op)")
            }
        }
        c.close()
        let written = try Data(contentsOf: dir.appendingPathComponent("bob.log"))
        XCTAssertEqual(written, try Vectors.data("history-written.log"))
    }

    func testAMessageTooLongIsRefusedBeforeAnythingIsWritten() throws {
        let dir = try Vectors.tempDir()
        let c = try History(dir: dir).with("bob")
        XCTAssertThrowsError(try c.add(String(repeating: "x", count: ChatFrame.maxText + 1), now: 0)) {
            XCTAssertEqual($0 as? HistoryError, .messageTooLong(max: ChatFrame.maxText))
        }
        XCTAssertEqual(c.lastSent, 0)
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("bob.log")), Data("# msocket-chat 1 bob\n".utf8))
    }

    func testTheContactBookPinsRefusesAChangedKeyAndReloads() throws {
        let dir = try Vectors.tempDir()
        let file = dir.appendingPathComponent("contacts")
        let book = try ContactBook(url: file)
        let bob = try Contact.parse("bob#3b6a27bcceb6a42d62a3a8d02a6f0d73")
        XCTAssertTrue(try book.pin(bob))
        XCTAssertFalse(try book.pin(bob))
        let other = Contact(name: "bob", fingerprint: String(repeating: "a", count: 32))
        XCTAssertThrowsError(try book.pin(other)) {
            XCTAssertEqual($0 as? ContactError, .keyMismatch(name: "bob", pinned: bob.fingerprint, presented: other.fingerprint))
        }
        XCTAssertEqual(String(decoding: try Data(contentsOf: file), as: UTF8.self),
                       "# msocket chat contacts: NAME FINGERPRINT\nbob 3b6a27bcceb6a42d62a3a8d02a6f0d73\n")
        XCTAssertEqual(try ContactBook(url: file).all, [bob])
        try Data("bob not-a-fingerprint\n".utf8).write(to: file)
        XCTAssertThrowsError(try ContactBook(url: file))
    }
}
