// The stream app's state for SwiftUI. The endpoint follows the phone's networks through
// MSocket's system monitor (`network: .system`); reports come once a second from
// SampleKit's StreamSender or StreamPlayer and are published on the main actor.

import Combine
import Foundation
import MSocket
import SampleKit

@MainActor
final class StreamModel: ObservableObject {
    enum Role: String, CaseIterable, Identifiable {
        case send, play
        var id: String { rawValue }
    }

    // The set-up, kept in UserDefaults between runs.
    @Published var role = Role(rawValue: UserDefaults.standard.string(forKey: "stream.role") ?? "") ?? .play
    @Published var me = UserDefaults.standard.string(forKey: "stream.me") ?? ""
    @Published var to = UserDefaults.standard.string(forKey: "stream.to") ?? ""
    @Published var namesURL = UserDefaults.standard.string(forKey: "stream.names") ?? "tcp://names.example:7450"
    @Published var relays = UserDefaults.standard.string(forKey: "stream.relays") ?? ""
    @Published var bitrateKbps = 2000
    @Published var seconds = 60
    @Published var bufferMs = 2000

    @Published private(set) var running = false
    @Published private(set) var status = ""
    @Published private(set) var report: StreamReport?
    @Published private(set) var summary: StreamSummary?
    @Published private(set) var notes: [String] = []
    /// The policy the flow uses now (as the sender reported it).
    @Published private(set) var policy: PathPolicy = .backup

    private var task: Task<Void, Never>?
    private var sender: StreamSender?
    private var player: StreamPlayer?

    private func makeEndpoint(policy: PathPolicy) throws -> Endpoint {
        let key = try IdentityKeychain.loadOrCreate(account: "stream-\(role.rawValue)")
        var config = EndpointConfig(namesURL: namesURL.trimmingCharacters(in: .whitespaces))
        config.policy = policy
        config.relays = relays.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return try Endpoint(key: key, config: config, network: .system)
    }

    func start() {
        guard task == nil else { return }
        for (key, value) in [("stream.role", role.rawValue), ("stream.me", me), ("stream.to", to), ("stream.names", namesURL), ("stream.relays", relays)] {
            UserDefaults.standard.set(value, forKey: key)
        }
        running = true
        report = nil
        summary = nil
        notes = []
        let role = self.role
        task = Task {
            do {
                switch role {
                case .send: try await send()
                case .play: try await play()
                }
            } catch is CancellationError {
                status = "stopped"
            } catch MsocketError.Cancelled(message: _) {
                status = "stopped"
            } catch {
                status = "failed: \(describeError(error))"
            }
            sender = nil
            player = nil
            running = false
            task = nil
        }
    }

    func stop() { task?.cancel() }

    /// Switches the policy: the sender applies it, the player asks the sender.
    func choose(_ wanted: PathPolicy) {
        policy = wanted
        Task {
            do {
                if let sender {
                    try await sender.setPolicy(wanted)
                    note("policy now \(StreamFrame.policyName(wanted))")
                } else if let player {
                    try await player.requestPolicy(wanted)
                    note("asked the sender for policy \(StreamFrame.policyName(wanted))")
                }
            } catch {
                note("could not switch the policy: \(describeError(error))")
            }
        }
    }

    private func note(_ text: String) {
        notes.append(text)
        if notes.count > 50 { notes.removeFirst(notes.count - 50) }
    }

    private var reportSink: @Sendable (StreamReport) -> Void {
        { [weak self] r in Task { @MainActor in self?.received(r) } }
    }

    private var noteSink: @Sendable (String) -> Void {
        { [weak self] text in Task { @MainActor in self?.note(text) } }
    }

    private func received(_ r: StreamReport) {
        report = r
        if let p = r.policy { policy = p }
    }

    private func send() async throws {
        let endpoint = try makeEndpoint(policy: policy)
        defer { endpoint.close() }
        status = "connecting to \(to)…"
        let flow = try await endpoint.connect(to.trimmingCharacters(in: .whitespaces))
        defer { flow.close() }
        status = "sending to \(to): \(seconds) s at \(bitrateKbps) kbit/s"
        let sender = try StreamSender(flow: flow, bitrateKbps: bitrateKbps, seconds: seconds, onReport: reportSink, onNote: noteSink)
        self.sender = sender
        summary = try await sender.run()
        status = "sent"
    }

    private func play() async throws {
        let endpoint = try makeEndpoint(policy: .backup)
        defer { endpoint.close() }
        let name = me.trimmingCharacters(in: .whitespaces)
        let listener = try await endpoint.listen(name)
        defer { listener.close() }
        status = "waiting for a stream on \(name)#\(endpoint.fingerprint)"
        let flow = try await listener.accept(timeout: 3600)
        defer { flow.close() }
        status = "playing from \(flow.peerFingerprint.prefix(16))…"
        let player = try StreamPlayer(flow: flow, bufferMs: Int64(bufferMs), onReport: reportSink, onNote: noteSink)
        self.player = player
        let result = try await player.run()
        summary = result
        try? await flow.finish(timeout: 10)
        status = result.corrupt == 0 ? "played" : "played, \(result.corrupt) chunks corrupt"
    }
}
