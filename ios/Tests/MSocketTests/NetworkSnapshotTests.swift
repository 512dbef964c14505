// The snapshot logic of the iOS bridge (plain Foundation; runs with any Swift toolchain
// once the XCFramework is built, see ios/README.md).

import XCTest
@testable import MSocket

final class NetworkSnapshotTests: XCTestCase {
    func testKindsMeteredAndAddresses() {
        let snapshot = NetworkSnapshot.build(
            interfaces: [
                PlatformInterface(name: "en0", index: 4, type: .wifi),
                PlatformInterface(name: "pdp_ip0", index: 9, type: .cellular),
                PlatformInterface(name: "lo0", index: 1, type: .loopback),
                PlatformInterface(name: "en0", index: 4, type: .wifi),
            ],
            addresses: ["en0": ["192.0.2.7"], "pdp_ip0": ["10.0.0.7", "2001:db8::7"]],
            expensive: false,
            constrained: false,
            satisfied: true
        )
        XCTAssertEqual(snapshot.map(\.name), ["en0", "pdp_ip0"], "loopback and duplicates are left out")
        XCTAssertEqual(snapshot[0].kind, .wifi)
        XCTAssertFalse(snapshot[0].metered)
        XCTAssertEqual(snapshot[1].kind, .cellular)
        XCTAssertTrue(snapshot[1].metered)
        XCTAssertEqual(snapshot[1].addresses, ["10.0.0.7", "2001:db8::7"])
        XCTAssertTrue(snapshot.allSatisfy(\.up))
    }

    func testExpensiveOrUnsatisfiedPaths() {
        let wifi = [PlatformInterface(name: "en0", index: 4, type: .wifi)]
        let hotspot = NetworkSnapshot.build(interfaces: wifi, addresses: [:], expensive: true, constrained: false, satisfied: true)
        XCTAssertTrue(hotspot[0].metered, "a personal hotspot is metered")
        let down = NetworkSnapshot.build(interfaces: wifi, addresses: [:], expensive: false, constrained: false, satisfied: false)
        XCTAssertFalse(down[0].up)
    }

    func testTimeoutsAreChecked() {
        XCTAssertEqual(try millis(1.5, "t"), 1500)
        XCTAssertEqual(try millis(1e12, "t"), UInt32.max)
        XCTAssertThrowsError(try millis(-1, "t"))
        XCTAssertThrowsError(try millis(.nan, "t"))
    }
}
