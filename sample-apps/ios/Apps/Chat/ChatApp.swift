// The chat sample on iOS: set up a name, add contacts by NAME#FINGERPRINT, talk. The
// protocol, contacts and history are SampleKit's (the console chat's twins), so this app
// talks to `sample-apps/run chat` and to the Android app.

import SwiftUI

@main
struct ChatApp: App {
    @StateObject private var model = ChatModel()

    var body: some Scene {
        WindowGroup {
            NavigationStack {
                if model.running {
                    ContactsView()
                } else {
                    SetupView()
                }
            }
            .environmentObject(model)
        }
    }
}
