// The chat app's state for SwiftUI: the engine's lines, sorted per contact, on the main
// actor. The endpoint follows the phone's networks through MSocket's system monitor
// (`network: .system`, one NWPathMonitor per link type), so a flow moves between Wi-Fi
// and cellular by itself; the app only shows what happened.

import Combine
import Foundation
import MSocket
import SampleKit

/// One row of a conversation.
struct ChatRow: Identifiable, Equatable {
    enum Kind: Equatable {
        case mine(seq: Int64, delivered: Bool)
        case theirs
        case system
    }

    let id: Int
    let kind: Kind
    let text: String
    let at: Date
}

@MainActor
final class ChatModel: ObservableObject {
    // The set-up, kept in UserDefaults between runs.
    @Published var me = UserDefaults.standard.string(forKey: "chat.me") ?? ""
    @Published var namesURL = UserDefaults.standard.string(forKey: "chat.names") ?? "tcp://names.example:7450"
    @Published var relays = UserDefaults.standard.string(forKey: "chat.relays") ?? ""

    @Published private(set) var running = false
    @Published private(set) var address = ""
    @Published private(set) var contacts: [Contact] = []
    @Published private(set) var rows: [String: [ChatRow]] = [:]
    @Published private(set) var online: Set<String> = []
    @Published var problem: String?

    private var endpoint: Endpoint?
    private var engine: ChatEngine?
    private var nextRow = 0

    /// Where the key, contacts and history of `name` live.
    private func dataDir(_ name: String) throws -> URL {
        try FileManager.default.url(for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
            .appendingPathComponent("chat", isDirectory: true)
            .appendingPathComponent(name, isDirectory: true)
    }

    /// Opens the endpoint, listens on `me` and shows the history.
    func start() async {
        problem = nil
        UserDefaults.standard.set(me, forKey: "chat.me")
        UserDefaults.standard.set(namesURL, forKey: "chat.names")
        UserDefaults.standard.set(relays, forKey: "chat.relays")
        do {
            let name = try ChatFrame.checkName(me.trimmingCharacters(in: .whitespaces))
            let dir = try dataDir(name)
            let key = try IdentityKeychain.loadOrCreate(account: "chat-\(name)")
            var config = EndpointConfig(namesURL: namesURL.trimmingCharacters(in: .whitespaces))
            config.relays = relays.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            let opened = try Endpoint(key: key, config: config, network: .system)
            opened.onNetworkError { [weak self] error in
                Task { @MainActor in self?.problem = "network update refused: \(describeError(error))" }
            }
            endpoint = opened
            let chat = try ChatEngine(endpoint: opened, me: name, dir: dir, show: { [weak self] line in
                Task { @MainActor in self?.show(line) }
            })
            engine = chat
            contacts = chat.contacts.all
            try await chat.start()
            running = true
        } catch {
            problem = describeError(error)
            endpoint?.close()
            endpoint = nil
            engine = nil
        }
    }

    func stop() async {
        await engine?.close()
        endpoint?.close()
        engine = nil
        endpoint = nil
        running = false
        online = []
    }

    /// Adds the contact `NAME#FINGERPRINT`; returns whether it was taken.
    func add(_ spec: String) -> Bool {
        guard let engine else { return false }
        do {
            let c = try engine.add(spec)
            contacts = engine.contacts.all
            rows[c.name, default: []].append(row(.system, "contact \(c) added"))
            return true
        } catch {
            problem = "\(error)"
            return false
        }
    }

    func send(_ text: String, to contact: String) async {
        guard let engine, !text.isEmpty else { return }
        do {
            try await engine.send(to: contact, text: text)
        } catch {
            problem = "\(error)"
        }
    }

    private func row(_ kind: ChatRow.Kind, _ text: String, at: Date = Date()) -> ChatRow {
        nextRow += 1
        return ChatRow(id: nextRow, kind: kind, text: text, at: at)
    }

    private static func date(_ ms: Int64) -> Date { Date(timeIntervalSince1970: TimeInterval(ms) / 1000) }

    /// Turns an engine line into a bubble, a mark or a system line.
    private func show(_ line: ChatLine) {
        switch line {
        case let .ready(me):
            address = me
        case let .earlier(contact, m, delivered):
            rows[contact, default: []].append(row(m.outgoing ? .mine(seq: m.seq, delivered: delivered) : .theirs, m.text, at: Self.date(m.sentAt)))
        case let .sent(contact, m):
            rows[contact, default: []].append(row(.mine(seq: m.seq, delivered: false), m.text, at: Self.date(m.sentAt)))
        case let .delivered(contact, seq):
            if let i = rows[contact]?.lastIndex(where: { $0.kind == .mine(seq: seq, delivered: false) }), let r = rows[contact]?[i] {
                rows[contact]?[i] = ChatRow(id: r.id, kind: .mine(seq: seq, delivered: true), text: r.text, at: r.at)
            }
        case let .received(contact, m):
            rows[contact, default: []].append(row(.theirs, m.text, at: Self.date(m.sentAt)))
        case let .online(contact, _, dialed, paths):
            online.insert(contact)
            system(contact, "online \(dialed ? "(we dialed)" : "(they dialed)") via \(paths.isEmpty ? "no path yet" : paths.joined(separator: ", "))")
        case let .offline(contact, why):
            online.remove(contact)
            system(contact, "offline: \(why)")
        case let .pathAdded(contact, path):
            system(contact, "path added: \(path)")
        case let .pathLost(contact, path, why):
            system(contact, "path lost: \(path): \(why)")
        case let .peerMoved(contact, addresses):
            system(contact, "\(contact) moved to \(addresses.joined(separator: ", "))")
        case let .moved(contact, addresses):
            system(contact, "we moved to \(addresses.joined(separator: ", "))")
        case let .resumed(contact, outageMs):
            system(contact, "resumed after \(fixed(Double(outageMs) / 1000, 1)) s without a path")
        case let .staysRelayed(contact, attempts):
            system(contact, "no direct path after \(attempts) attempts: staying relayed")
        case let .pinned(contact):
            if let engine { contacts = engine.contacts.all }
            system(contact.name, "\(contact) pinned on first contact")
        case let .refused(why):
            problem = "refused: \(why)"
        case let .problem(contact, what):
            if let contact { system(contact, what) } else { problem = what }
        }
    }

    private func system(_ contact: String, _ text: String) {
        rows[contact, default: []].append(row(.system, text))
    }
}
