// The player's buffer against the scenarios of sample-apps/testdata/playout.txt, and the
// ways the stream's helpers refuse bad input.

import Foundation
import XCTest
@testable import SampleKit

final class PlayoutTests: XCTestCase {
    func testScenariosMatchTheVectors() throws {
        var buffer: PlayoutBuffer?
        var name = ""
        var checked = 0
        for w in try Vectors.words("playout.txt") {
            switch w[0] {
            case "scenario":
                name = w[1]
                buffer = try PlayoutBuffer(targetMs: Int64(w[2])!)
            case "add":
                try buffer!.add(Int64(w[1])!, now: Int64(w[2])!)
            case "end":
                buffer!.end(Int64(w[1])!)
            case "expect":
                let now = Int64(w[1])!
                var b = buffer!
                let buffered = b.bufferedMs(now)
                let stall = b.currentStallMs(now)
                let longest = b.longestStallMs(now)
                buffer = b
                let got = "expect \(now) state=\(b.state.rawValue) buffered=\(buffered) stall=\(stall) longest=\(longest) "
                    + "played=\(b.playedMs) startup=\(b.startupMs.map(String.init) ?? "-") "
                    + "stalls=\(b.stalls.isEmpty ? "-" : b.stalls.map(String.init).joined(separator: ","))"
                XCTAssertEqual(got, w.joined(separator: " "), name)
                checked += 1
            default:
                XCTFail("unknown line \(w)")
            }
        }
        XCTAssertGreaterThan(checked, 20)
    }

    func testABufferOfNothingAndAnEmptyChunkAreRefused() throws {
        XCTAssertThrowsError(try PlayoutBuffer(targetMs: 0)) { XCTAssertEqual($0 as? PlayoutError, .empty) }
        var b = try PlayoutBuffer(targetMs: 100)
        XCTAssertThrowsError(try b.add(0, now: 0)) { XCTAssertEqual($0 as? PlayoutError, .empty) }
    }

    func testPathUseSumsByKindAndShares() {
        var use = PathUse(sending: true)
        let wifi = PathCounter(local: "192.0.2.2:1", remote: "198.51.100.1:2", kind: .wifi, relayed: false, bytesSent: 900, bytesReceived: 0)
        let cell = PathCounter(local: "10.0.0.2:1", remote: "198.51.100.9:3", kind: .cellular, relayed: true, bytesSent: 100, bytesReceived: 0)
        XCTAssertEqual(describeShares(use.sample([wifi, cell])), "wifi/direct:90%,cell/relayed:10%")
        let wifi2 = PathCounter(local: wifi.local, remote: wifi.remote, kind: .wifi, relayed: false, bytesSent: 1000, bytesReceived: 0)
        XCTAssertEqual(use.sample([wifi2, cell]), [Share(path: "wifi/direct", bytes: 100, percent: 100), Share(path: "cell/relayed", bytes: 0, percent: 0)])
        XCTAssertEqual(use.totals().map(\.bytes), [1000, 100])
        XCTAssertEqual(describeShares([]), "none")
    }

    func testReportsReadAsTheConsoleWritesThem() {
        let r = StreamReport(elapsedMs: 1250, rateKbps: 1996, bufferMs: 1950, playing: .playing, stalls: 1, longestStallMs: 420,
                             paths: [Share(path: "wifi/direct", bytes: 5, percent: 100)], policy: .energy, energyJoules: 0.125,
                             chunks: 12, skipped: 0)
        XCTAssertEqual(r.describe(), "t=1.3s rate=1996kbit/s buffer=2.0s state=playing stalls=1 longest_stall=420ms paths=wifi/direct:100% policy=energy energy=0.13J chunks=12 skipped=0")
    }
}
