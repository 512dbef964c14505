// First screen: the name to listen on and the name service (and relays, for being
// reachable behind NAT).

import SwiftUI

struct SetupView: View {
    @EnvironmentObject private var model: ChatModel
    @State private var starting = false

    var body: some View {
        Form {
            Section("You") {
                TextField("your name (letters, digits, - . _)", text: $model.me)
                    .textInputAutocapitalization(.never)
                    .autocorrectionDisabled()
            }
            Section("Network") {
                TextField("name service tcp://HOST:PORT", text: $model.namesURL)
                    .textInputAutocapitalization(.never)
                    .autocorrectionDisabled()
                    .keyboardType(.URL)
                TextField("relays HOST:PORT, comma separated", text: $model.relays)
                    .textInputAutocapitalization(.never)
                    .autocorrectionDisabled()
            }
            if let problem = model.problem {
                Section { Text(problem).foregroundStyle(.red) }
            }
            Button(starting ? "Starting…" : "Start") {
                starting = true
                Task {
                    await model.start()
                    starting = false
                }
            }
            .disabled(starting || model.me.isEmpty)
        }
        .navigationTitle("msocket chat")
    }
}
