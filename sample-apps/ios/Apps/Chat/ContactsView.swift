// The contacts, the user's own NAME#FINGERPRINT to share, and adding a contact.

import SampleKit
import SwiftUI

struct ContactsView: View {
    @EnvironmentObject private var model: ChatModel
    @State private var spec = ""

    var body: some View {
        List {
            Section("Share this so others can add you") {
                Text(model.address).font(.footnote.monospaced()).textSelection(.enabled)
                ShareLink(item: model.address)
            }
            Section("Add a contact") {
                TextField("NAME#FINGERPRINT", text: $spec)
                    .textInputAutocapitalization(.never)
                    .autocorrectionDisabled()
                    .font(.footnote.monospaced())
                Button("Add") {
                    if model.add(spec) { spec = "" }
                }
                .disabled(spec.isEmpty)
            }
            Section("Contacts") {
                ForEach(model.contacts, id: \.name) { contact in
                    NavigationLink(value: contact.name) {
                        HStack {
                            Circle().fill(model.online.contains(contact.name) ? Color.green : Color.gray).frame(width: 8, height: 8)
                            Text(contact.name)
                            Spacer()
                            Text(String(contact.fingerprint.prefix(8))).font(.caption.monospaced()).foregroundStyle(.secondary)
                        }
                    }
                }
            }
            if let problem = model.problem {
                Section { Text(problem).foregroundStyle(.red).font(.footnote) }
            }
        }
        .navigationTitle(model.me)
        .navigationDestination(for: String.self) { name in ConversationView(contact: name) }
        .toolbar {
            Button("Stop") { Task { await model.stop() } }
        }
    }
}
