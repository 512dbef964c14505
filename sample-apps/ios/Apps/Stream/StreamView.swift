// Set-up before a stream; while it runs: throughput, the buffer, stalls, the share of
// each kind of path (Wi-Fi or cellular, relayed or direct), energy, and a policy picker
// that works while the stream runs.

import MSocket
import SampleKit
import SwiftUI

struct StreamView: View {
    @EnvironmentObject private var model: StreamModel

    var body: some View {
        Form {
            if !model.running {
                setup
            }
            Section("Status") {
                Text(model.status.isEmpty ? "idle" : model.status).font(.footnote)
                Button(model.running ? "Stop" : "Start") {
                    if model.running { model.stop() } else { model.start() }
                }
            }
            Section("Path policy") {
                Picker("Policy", selection: Binding(get: { model.policy }, set: { model.choose($0) })) {
                    ForEach(StreamFrame.policies, id: \.self) { p in
                        Text(StreamFrame.policyName(p)).tag(p)
                    }
                }
                .pickerStyle(.segmented)
            }
            if let r = model.report {
                live(r)
            }
            if let s = model.summary {
                Section("Summary") { Text(s.describe()).font(.caption.monospaced()).textSelection(.enabled) }
            }
            if !model.notes.isEmpty {
                Section("Notes") {
                    ForEach(Array(model.notes.enumerated()), id: \.offset) { _, n in Text(n).font(.caption) }
                }
            }
        }
        .navigationTitle("msocket stream")
    }

    @ViewBuilder private var setup: some View {
        Section("Role") {
            Picker("Role", selection: $model.role) {
                ForEach(StreamModel.Role.allCases) { r in Text(r.rawValue).tag(r) }
            }
            .pickerStyle(.segmented)
            if model.role == .play {
                TextField("your name", text: $model.me).textInputAutocapitalization(.never).autocorrectionDisabled()
                Stepper("buffer \(model.bufferMs) ms", value: $model.bufferMs, in: 100...60_000, step: 100)
            } else {
                TextField("player NAME or NAME#FINGERPRINT", text: $model.to).textInputAutocapitalization(.never).autocorrectionDisabled()
                Stepper("\(model.bitrateKbps) kbit/s", value: $model.bitrateKbps, in: 8...200_000, step: 250)
                Stepper("\(model.seconds) s", value: $model.seconds, in: 1...86_400, step: 10)
            }
        }
        Section("Network") {
            TextField("name service tcp://HOST:PORT", text: $model.namesURL).textInputAutocapitalization(.never).autocorrectionDisabled()
            TextField("relays HOST:PORT, comma separated", text: $model.relays).textInputAutocapitalization(.never).autocorrectionDisabled()
        }
    }

    @ViewBuilder private func live(_ r: StreamReport) -> some View {
        Section("Live") {
            LabeledContent("time", value: "\(fixed(Double(r.elapsedMs) / 1000, 1)) s")
            LabeledContent("throughput", value: "\(r.rateKbps) kbit/s")
            if let buffered = r.bufferMs {
                VStack(alignment: .leading) {
                    Text("buffer \(fixed(Double(buffered) / 1000, 1)) s of \(fixed(Double(model.bufferMs) / 1000, 1)) s")
                    ProgressView(value: Double(min(buffered, Int64(model.bufferMs))), total: Double(max(model.bufferMs, 1)))
                        .tint(r.playing == .stalled ? .red : .green)
                }
                LabeledContent("state", value: r.playing?.rawValue ?? "?")
                LabeledContent("stalls", value: "\(r.stalls), longest \(r.longestStallMs) ms")
            }
            LabeledContent("chunks", value: "\(r.chunks) (\(r.skipped) skipped)")
            LabeledContent("energy", value: r.energyJoules.map { "\(fixed($0, 2)) J" } ?? "?")
        }
        Section("Paths, last second") {
            if r.paths.isEmpty {
                Text("none").foregroundStyle(.secondary)
            }
            ForEach(r.paths, id: \.path) { share in
                VStack(alignment: .leading) {
                    Text("\(share.path.replacingOccurrences(of: "/", with: " ")) \(share.percent)%")
                    ProgressView(value: Double(share.percent), total: 100)
                }
            }
        }
    }
}
