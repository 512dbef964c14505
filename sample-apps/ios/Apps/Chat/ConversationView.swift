// One conversation: bubbles with a sent (✓) or delivered (✓✓) mark, and system lines for
// paths added and lost, moves and resumptions.

import SampleKit
import SwiftUI

struct ConversationView: View {
    @EnvironmentObject private var model: ChatModel
    let contact: String
    @State private var draft = ""

    var body: some View {
        VStack(spacing: 0) {
            ScrollViewReader { proxy in
                ScrollView {
                    LazyVStack(alignment: .leading, spacing: 6) {
                        ForEach(model.rows[contact] ?? []) { row in
                            RowView(row: row).id(row.id)
                        }
                    }
                    .padding()
                }
                .onChange(of: model.rows[contact]?.last?.id) { last in
                    if let last { withAnimation { proxy.scrollTo(last, anchor: .bottom) } }
                }
            }
            HStack {
                TextField("message", text: $draft, axis: .vertical)
                    .textFieldStyle(.roundedBorder)
                    .lineLimit(1...5)
                Button("Send") {
                    let text = draft
                    draft = ""
                    Task { await model.send(text, to: contact) }
                }
                .disabled(draft.isEmpty || draft.utf16.count > ChatFrame.maxText)
            }
            .padding()
        }
        .navigationTitle(contact)
        .navigationBarTitleDisplayMode(.inline)
    }
}

private struct RowView: View {
    let row: ChatRow

    var body: some View {
        switch row.kind {
        case .system:
            Text(row.text)
                .font(.caption)
                .foregroundStyle(.secondary)
                .frame(maxWidth: .infinity, alignment: .center)
        case let .mine(_, delivered):
            HStack(alignment: .bottom) {
                Spacer(minLength: 40)
                Text(row.text)
                    .padding(8)
                    .background(Color.accentColor.opacity(0.2), in: RoundedRectangle(cornerRadius: 10))
                Text(delivered ? "✓✓" : "✓")
                    .font(.caption2)
                    .foregroundStyle(delivered ? Color.accentColor : Color.secondary)
                    .accessibilityLabel(delivered ? "delivered" : "sent")
            }
        case .theirs:
            HStack {
                Text(row.text)
                    .padding(8)
                    .background(Color.secondary.opacity(0.15), in: RoundedRectangle(cornerRadius: 10))
                Spacer(minLength: 40)
            }
        }
    }
}
