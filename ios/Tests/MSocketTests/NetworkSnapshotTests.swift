// The decisions of the iOS network bridge (plain Foundation: which interfaces are up,
// metered, with which addresses, and when the core is told), and timeouts.

import XCTest
@testable import MSocket

final class NetworkSnapshotTests: XCTestCase {
    private let en0 = PlatformInterface(name: "en0", index: 4, type: .wifi)
    private let pdp = PlatformInterface(name: "pdp_ip0", index: 9, type: .cellular)

    private func link(_ interfaces: [PlatformInterface], satisfied: Bool = true, expensive: Bool = false) -> LinkStatus {
        LinkStatus(satisfied: satisfied, expensive: expensive, constrained: false, interfaces: interfaces)
    }

    func testEachInterfaceTakesItsOwnLinksState() {
        // Wi-Fi without Internet (its path unsatisfied) must not take cellular down.
        let snapshot = NetworkSnapshot.build(
            links: [.wifi: link([en0], satisfied: false), .cellular: link([pdp], expensive: true), .wiredEthernet: link([])],
            addresses: ["en0": ["192.0.2.7"], "pdp_ip0": ["2001:db8::7", "10.0.0.7", "10.0.0.7"]]
        )
        XCTAssertEqual(snapshot.map(\.name), ["en0", "pdp_ip0"])
        XCTAssertEqual(snapshot[0].kind, .wifi)
        XCTAssertFalse(snapshot[0].up)
        XCTAssertFalse(snapshot[0].metered)
        XCTAssertEqual(snapshot[1].kind, .cellular)
        XCTAssertTrue(snapshot[1].up)
        XCTAssertTrue(snapshot[1].metered)
        XCTAssertEqual(snapshot[1].addresses, ["10.0.0.7", "2001:db8::7"], "sorted, duplicates dropped")
    }

    func testInterfacesOfOtherTypesOnAPathAreIgnored() {
        let lo = PlatformInterface(name: "lo0", index: 1, type: .loopback)
        let snapshot = NetworkSnapshot.build(links: [.wifi: link([en0, lo, en0])], addresses: [:])
        XCTAssertEqual(snapshot.map(\.name), ["en0"])
    }

    func testAHotspotIsMetered() {
        let snapshot = NetworkSnapshot.build(links: [.wifi: link([en0], expensive: true)], addresses: [:])
        XCTAssertTrue(snapshot[0].metered)
    }

    func testTrackerWaitsForEveryLinkThenPublishesChangesOnly() {
        var tracker = NetworkTracker()
        let addresses = ["en0": ["192.0.2.7"]]
        XCTAssertNil(tracker.linkChanged(.wifi, link([en0]), addresses: addresses))
        XCTAssertNil(tracker.linkChanged(.cellular, link([]), addresses: addresses))
        let first = tracker.linkChanged(.wiredEthernet, link([]), addresses: addresses)
        XCTAssertEqual(first?.map(\.addresses), [["192.0.2.7"]])
        XCTAssertNil(tracker.linkChanged(.cellular, link([]), addresses: addresses), "nothing changed")
        XCTAssertNil(tracker.addressesRead(addresses), "nothing changed")
    }

    func testAnAddressOnlyChangeIsPublished() {
        var tracker = NetworkTracker()
        for type in NetworkSnapshot.watched {
            _ = tracker.linkChanged(type, link(type == .wifi ? [en0] : []), addresses: ["en0": ["192.0.2.7"]])
        }
        let moved = tracker.addressesRead(["en0": ["192.0.2.99"]])
        XCTAssertEqual(moved?.first?.addresses, ["192.0.2.99"])
        XCTAssertEqual(tracker.published?.first?.addresses, ["192.0.2.99"])
    }

    func testAddressesArePolledOftenOnlyWhileFlowsAreOpen() {
        XCTAssertEqual(NetworkTracker.pollInterval(openFlows: 3), NetworkTracker.busyPollInterval)
        XCTAssertEqual(NetworkTracker.pollInterval(openFlows: 0), NetworkTracker.idlePollInterval)
        XCTAssertLessThan(NetworkTracker.busyPollInterval, NetworkTracker.idlePollInterval)
    }

    func testTimeoutsAreChecked() {
        XCTAssertEqual(try millis(1.5, "t"), 1500)
        XCTAssertEqual(try millis(1e12, "t"), UInt32.max)
        XCTAssertThrowsError(try millis(-1, "t"))
        XCTAssertThrowsError(try millis(.nan, "t"))
    }
}
