// The chat engine and the stream end to end on loopback, with real endpoints and a real
// name service (`msocketd name`): they run only when MSOCKET_TEST_NAMES names one
// (tcp://127.0.0.1:PORT), and are skipped, saying so, otherwise.

import CryptoKit
import Foundation
import MSocket
import XCTest
@testable import SampleKit

/// Every line an engine showed, and waiting for a condition on them without polling.
final class LineLog: @unchecked Sendable {
    typealias Condition = @Sendable ([ChatLine]) -> Bool
    private let lock = NSLock()
    private var lines: [ChatLine] = []
    private var nextWaiter = 0
    private var waiters: [Int: (Condition, CheckedContinuation<Void, Never>)] = [:]

    var all: [ChatLine] {
        lock.lock()
        defer { lock.unlock() }
        return lines
    }

    func append(_ line: ChatLine) {
        lock.lock()
        lines.append(line)
        var ready: [CheckedContinuation<Void, Never>] = []
        for (id, (condition, continuation)) in waiters where condition(lines) {
            waiters[id] = nil
            ready.append(continuation)
        }
        lock.unlock()
        for c in ready { c.resume() }
    }

    /// Returns once `condition` holds for the lines shown so far.
    func until(_ condition: @escaping Condition) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            lock.lock()
            if condition(lines) {
                lock.unlock()
                c.resume()
                return
            }
            nextWaiter += 1
            waiters[nextWaiter] = (condition, c)
            lock.unlock()
        }
    }
}

/// Returns once `condition` holds for `log`'s lines; fails naming `what` after `seconds`.
func within(_ seconds: TimeInterval, _ what: String, _ log: LineLog, _ condition: @escaping LineLog.Condition) async throws {
    let met = await withTaskGroup(of: Bool.self) { group in
        group.addTask {
            await log.until(condition)
            return true
        }
        group.addTask {
            try? await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            return false
        }
        let first = await group.next() ?? false
        group.cancelAll()
        return first
    }
    if !met { throw FormatError("no \(what) within \(seconds) s; lines: \(log.all.map { $0.describe() })") }
}

/// "SEQ TEXT" of every message received, in order.
func received(_ lines: [ChatLine]) -> [String] {
    lines.compactMap { line in
        guard case let .received(_, m) = line else { return nil }
        return "\(m.seq) \(m.text)"
    }
}

/// The sequence numbers marked delivered, in order.
func delivered(_ lines: [ChatLine]) -> [Int64] {
    lines.compactMap { line in
        guard case let .delivered(_, seq) = line else { return nil }
        return seq
    }
}

final class EngineTests: XCTestCase {
    private var names: String!

    override func setUpWithError() throws {
        guard let url = ProcessInfo.processInfo.environment["MSOCKET_TEST_NAMES"] else {
            throw XCTSkip("set MSOCKET_TEST_NAMES=tcp://127.0.0.1:PORT of a running `msocketd name` to run the end-to-end tests")
        }
        names = url
    }

    private func endpoint(_ dir: URL) throws -> Endpoint {
        var config = EndpointConfig(namesURL: names)
        config.connectTimeout = 10
        config.flowDeadline = 20
        config.localAddresses = ["127.0.0.1"]
        return try Endpoint(key: try KeyFile.loadOrCreate(dir.appendingPathComponent("key")), config: config, network: .manual(bindSocket: nil))
    }

    private func unique(_ what: String) -> String { "\(what)-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(8).lowercased()).test" }

    private func sha256(_ lines: [String]) -> String {
        SHA256.hash(data: Data(lines.joined(separator: "\n").utf8)).map { String(format: "%02x", $0) }.joined()
    }

    func testTwoUsersChatAndEveryMessageArrivesOnceInOrderAcrossARestart() async throws {
        let (aliceName, bobName) = (unique("alice"), unique("bob"))
        let (aliceDir, bobDir) = (try Vectors.tempDir(), try Vectors.tempDir())
        let aliceLog = LineLog()
        let aliceEndpoint = try endpoint(aliceDir)
        let alice = try ChatEngine(endpoint: aliceEndpoint, me: aliceName, dir: aliceDir, show: { aliceLog.append($0) }, maxBackoff: 1)
        var bobLog = LineLog()
        var bobEndpoint = try endpoint(bobDir)
        var bob = try ChatEngine(endpoint: bobEndpoint, me: bobName, dir: bobDir, show: { [bobLog] in bobLog.append($0) }, maxBackoff: 1)
        try await bob.start()
        try await alice.start()
        try alice.add(bob.address)
        for i in 1...20 { try await alice.send(to: bobName, text: "a-\(i) ✓ \u{1F44D}") }
        try await within(30, "bob pinning alice", bobLog) { lines in
            lines.contains { line in
                if case .pinned = line { return true }
                return false
            }
        }
        for i in 1...20 { try await bob.send(to: aliceName, text: "b-\(i)") }
        try await within(30, "all delivered", aliceLog) { delivered($0).count == 20 }
        try await within(30, "all delivered to alice", bobLog) { delivered($0).count == 20 }
        let firstRun = received(bobLog.all)

        await bob.close()
        bobEndpoint.close()
        for i in 21...30 { try await alice.send(to: bobName, text: "a-\(i) ✓ \u{1F44D}") }
        bobLog = LineLog()
        bobEndpoint = try endpoint(bobDir)
        bob = try ChatEngine(endpoint: bobEndpoint, me: bobName, dir: bobDir, show: { [bobLog] in bobLog.append($0) }, maxBackoff: 1)
        try await bob.start()
        let earlier = bobLog.all.filter { line in
            if case .earlier = line { return true }
            return false
        }
        XCTAssertEqual(earlier.count, 40, "the history shown after the restart")
        try await within(30, "the rest delivered after bob's restart", aliceLog) { delivered($0).count == 30 }

        let want = (1...30).map { "\($0) a-\($0) ✓ \u{1F44D}" }
        let got = firstRun + received(bobLog.all)
        XCTAssertEqual(got, want)
        XCTAssertEqual(sha256(got), sha256(want))
        XCTAssertEqual(delivered(aliceLog.all), Array(1...30))
        XCTAssertEqual(received(aliceLog.all), (1...20).map { "\($0) b-\($0)" })
        await alice.close()
        await bob.close()
        aliceEndpoint.close()
        bobEndpoint.close()
    }

    func testAStreamPlaysEveryChunkIntact() async throws {
        let (sendDir, playDir) = (try Vectors.tempDir(), try Vectors.tempDir())
        let player = try endpoint(playDir)
        let sender = try endpoint(sendDir)
        defer {
            player.close()
            sender.close()
        }
        let name = unique("tv")
        let listener = try await player.listen(name)
        async let accepted = listener.accept(timeout: 30)
        let out = try await sender.connect("\(name)#\(player.fingerprint)")
        let incoming = try await accepted
        let streamer = try StreamSender(flow: out, bitrateKbps: 400, seconds: 3, onReport: { _ in }, onNote: { _ in })
        let playing = try StreamPlayer(flow: incoming, bufferMs: 500, onReport: { _ in }, onNote: { _ in })
        async let played = playing.run()
        let sent = try await streamer.run()
        let summary = try await played
        XCTAssertEqual(sent.chunks, 30)
        XCTAssertEqual(summary.chunks, sent.chunks)
        XCTAssertEqual(summary.corrupt, 0, "every payload byte is checked against its chunk's pattern")
        XCTAssertEqual(summary.skipped, sent.skipped)
        XCTAssertEqual(summary.bytes, Int64(sent.chunks * 400 * 100 / 8))
        XCTAssertEqual(summary.policy, .backup)
    }
}
