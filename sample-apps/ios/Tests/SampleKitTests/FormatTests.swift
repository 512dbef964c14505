// Field escaping, chat records, contacts and stream frames against the vectors the Kotlin
// side is tested with: the same text must make the same bytes and the same values.

import Foundation
import XCTest
import MSocket
@testable import SampleKit

final class FormatTests: XCTestCase {
    func testFieldEscapingMatchesTheVectors() throws {
        let rows = try Vectors.rows("field-escape.txt")
        XCTAssertGreaterThan(rows.count, 30)
        for r in rows {
            switch r[0] {
            case "ok":
                let text = Vectors.text(r[1])
                XCTAssertEqual(Field.encode(text), r[2], r[3])
                XCTAssertEqual(try Field.decode(r[2]), text, r[3])
            case "decode":
                XCTAssertEqual(try Field.decode(Vectors.text(r[1])), Vectors.text(r[2]), r[3])
            case "rejects":
                XCTAssertThrowsError(try Field.decode(Vectors.text(r[1])), r[2]) { XCTAssertTrue($0 is FormatError, r[2]) }
            default:
                XCTFail("unknown row kind \(r[0])")
            }
        }
    }

    /// `HELLO name n`, `MSG seq at text-hex`, `ACK seq` as a frame.
    private func frame(_ value: String) throws -> ChatFrame {
        let f = value.components(separatedBy: " ")
        switch f[0] {
        case "HELLO": return .hello(name: f[1], received: Int64(f[2])!)
        case "MSG": return .msg(seq: Int64(f[1])!, sentAt: Int64(f[2])!, text: Vectors.text(f[3]))
        case "ACK": return .ack(seq: Int64(f[1])!)
        default: throw FormatError("unknown value \(value)")
        }
    }

    func testChatFramesMatchTheVectors() throws {
        let rows = try Vectors.rows("chat-frames.txt")
        XCTAssertGreaterThan(rows.count, 30)
        for r in rows {
            switch r[0] {
            case "frame":
                let want = try frame(r[2])
                XCTAssertEqual(try ChatFrame.decode(r[1]), want, r[3])
                XCTAssertEqual(want.encode(), r[1] + "\n", r[3])
            case "decodes":
                XCTAssertEqual(try ChatFrame.decode(r[1]), try frame(r[2]), r[3])
            case "rejects":
                XCTAssertThrowsError(try ChatFrame.decode(r[1]), r[2]) { XCTAssertTrue($0 is FormatError, r[2]) }
            default:
                XCTFail("unknown row kind \(r[0])")
            }
        }
    }

    func testContactsMatchTheVectors() throws {
        for r in try Vectors.rows("contacts.txt") {
            switch r[0] {
            case "ok":
                let c = try Contact.parse(r[1])
                XCTAssertEqual(c, Contact(name: r[2], fingerprint: r[3]), r[4])
                XCTAssertEqual(c.description, "\(r[2])#\(r[3])", r[4])
            case "rejects":
                XCTAssertThrowsError(try Contact.parse(r[1]), r[2]) { XCTAssertTrue($0 is FormatError, r[2]) }
            default:
                XCTFail("unknown row kind \(r[0])")
            }
        }
    }

    /// `CHUNK seq ms at size intact|corrupt`, `POLICY name`, `END chunks skipped` against a frame.
    private func assertFrame(_ f: StreamFrame, _ value: String, _ what: String) throws {
        let v = value.components(separatedBy: " ")
        switch (f, v[0]) {
        case let (.chunk(seq, ms, at, payload), "CHUNK"):
            XCTAssertEqual([String(seq), String(ms), String(at), String(payload.count)], Array(v[1...4]), what)
            XCTAssertEqual(f.intact, v[5] == "intact", what)
        case let (.policy(p), "POLICY"):
            XCTAssertEqual(StreamFrame.policyName(p), v[1], what)
        case let (.end(chunks, skipped), "END"):
            XCTAssertEqual([String(chunks), String(skipped)], Array(v[1...2]), what)
        default:
            XCTFail("\(what): decoded \(f), expected \(value)")
        }
    }

    /// Every frame of `data`, the reader fed `piece` bytes at a time.
    private func readAll(_ data: Data, piece: Int) async throws -> [StreamFrame] {
        var offset = 0
        let reader = FrameReader {
            if offset >= data.count { return nil }
            let end = min(offset + piece, data.count)
            defer { offset = end }
            return data.subdata(in: offset..<end)
        }
        var out: [StreamFrame] = []
        while let f = try await reader.next() { out.append(f) }
        return out
    }

    func testStreamFramesMatchTheVectors() async throws {
        let rows = try Vectors.rows("stream-frames.txt")
        var all = Data()
        var expected: [String] = []
        for r in rows {
            let bytes = Vectors.bytes(r[1])
            switch r[0] {
            case "frame", "decodes":
                let frames = try await readAll(bytes, piece: bytes.count)
                XCTAssertEqual(frames.count, 1, r[3])
                try assertFrame(frames[0], r[2], r[3])
                if r[0] == "frame" {
                    XCTAssertEqual(Vectors.hex(frames[0].encode()), r[1], r[3])
                    all.append(bytes)
                    expected.append(r[2])
                }
            case "rejects":
                do {
                    _ = try await readAll(bytes, piece: max(bytes.count, 1))
                    XCTFail("\(r[2]): decoded")
                } catch {
                    XCTAssertTrue(error is FormatError, "\(r[2]): \(error)")
                }
            default:
                XCTFail("unknown row kind \(r[0])")
            }
        }
        // The same frames back to back, arriving a byte at a time.
        let frames = try await readAll(all, piece: 1)
        XCTAssertEqual(frames.count, expected.count)
        for (f, v) in zip(frames, expected) { try assertFrame(f, v, "in a stream of every frame") }
    }

    func testReportNumbersAreFormattedAsJavaFormatsThem() throws {
        for r in try Vectors.rows("number-format.txt") {
            XCTAssertEqual(fixed(Double(r[0])!, Int(r[1])!), r[2], "\(r[0]) to \(r[1]) digits")
        }
    }

    func testPoliciesRoundTripByName() throws {
        for p in StreamFrame.policies {
            XCTAssertEqual(try StreamFrame.parsePolicy(StreamFrame.policyName(p)), p)
        }
        XCTAssertThrowsError(try StreamFrame.parsePolicy("fastest"))
    }

    func testLineReaderSplitsPiecesAndBoundsLines() async throws {
        var pieces = [Data("HELLO 1 al".utf8), Data("ice 0\nACK".utf8), Data(" 1\nMSG".utf8)]
        let reader = LineReader(maxLine: 16) { pieces.isEmpty ? nil : pieces.removeFirst() }
        let first = try await reader.next()
        let second = try await reader.next()
        let third = try await reader.next()
        XCTAssertEqual(first, "HELLO 1 alice 0")
        XCTAssertEqual(second, "ACK 1")
        XCTAssertNil(third, "a last line without a newline is dropped")

        var endless = [Data(repeating: 0x41, count: 10), Data(repeating: 0x41, count: 10)]
        let bounded = LineReader(maxLine: 16) { endless.isEmpty ? nil : endless.removeFirst() }
        do {
            _ = try await bounded.next()
            XCTFail("a line of 20 bytes passed a reader of at most 16")
        } catch {
            XCTAssertEqual(error as? LineTooLongError, LineTooLongError(max: 16))
        }
    }
}
