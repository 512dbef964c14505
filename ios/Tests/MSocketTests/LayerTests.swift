// The Swift layer's own logic over the bindings: event mapping, the once-only event
// sequence guard, and values shared with @Sendable closures. Runs with `swift test` on a
// Mac (the package links the XCFramework). `MSocket.FlowEvent` is qualified: the bindings,
// imported here too, have a FlowEvent of their own.

import XCTest
import MSocketFFI
@testable import MSocket

final class LayerTests: XCTestCase {
    func testEventsMapToTheLayersNamesAndUnits() {
        XCTAssertEqual(MSocket.FlowEvent(MSocketFFI.FlowEvent.resumed(outageMs: 1500)), .resumed(outage: 1.5))
        XCTAssertEqual(MSocket.FlowEvent(MSocketFFI.FlowEvent.eventsDropped(count: 7)), .eventsDropped(count: 7))
        XCTAssertEqual(
            MSocket.FlowEvent(MSocketFFI.FlowEvent.pathAdded(local: "192.0.2.7:5000", remote: "198.51.100.1:443", relayed: true,
                                                             interfaceKind: .cellular)),
            .pathAdded(local: "192.0.2.7:5000", remote: "198.51.100.1:443", relayed: true, interfaceKind: .cellular)
        )
        XCTAssertEqual(
            MSocket.FlowEvent(MSocketFFI.FlowEvent.pathLost(local: "192.0.2.7:5000", remote: "198.51.100.1:443", reason: .dead,
                                                            detail: "no answer", energyJoules: nil, interfaceKind: .wifi)),
            .pathLost(local: "192.0.2.7:5000", remote: "198.51.100.1:443", reason: .dead, detail: "no answer", energyJoules: nil,
                      interfaceKind: .wifi)
        )
        XCTAssertEqual(
            MSocket.FlowEvent(MSocketFFI.FlowEvent.closed(failure: nil, error: nil, energyJoules: 0.25)),
            .closed(failure: nil, error: nil, energyJoules: 0.25)
        )
    }

    func testLockedExchangeReturnsTheValueItReplaced() {
        let taken = Locked(false)
        XCTAssertFalse(taken.exchange(true))
        XCTAssertTrue(taken.exchange(true))
        XCTAssertTrue(taken.value)
    }

    func testATaskCancelledBeforeAWaitingCallTripsItsToken() async throws {
        let task = Task { () -> Bool in
            withUnsafeCurrentTask { $0?.cancel() }
            return try await cancellable { token in token.isCancelled() }
        }
        let tripped = try await task.value
        XCTAssertTrue(tripped, "withTaskCancellationHandler runs onCancel at once for a cancelled task")
    }
}
