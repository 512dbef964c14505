// The streaming sample on iOS: send a live stream to a named player, or play one, and
// watch what the network does to it (throughput, buffer, stalls, which paths carry it)
// while switching the flow's path policy. The wire is SampleKit's (the console stream's
// twin), so this app plays `sample-apps/run stream send` and sends to `... stream play`.

import SwiftUI

@main
struct StreamApp: App {
    @StateObject private var model = StreamModel()

    var body: some Scene {
        WindowGroup {
            NavigationStack {
                StreamView().environmentObject(model)
            }
        }
    }
}
