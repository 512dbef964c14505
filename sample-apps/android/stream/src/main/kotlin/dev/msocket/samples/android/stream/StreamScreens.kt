/*
 * The stream's screens: set-up (send or play, to or as whom, bitrate, buffer) and the live
 * panel (throughput, buffer, stalls, where the bytes go, the policy, energy). Each screen
 * is a function of what it shows and the callbacks it calls; only [StreamApp] knows the
 * ViewModel.
 */
package dev.msocket.samples.android.stream

import androidx.activity.compose.BackHandler
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.imePadding
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.size
import androidx.compose.foundation.layout.width
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.text.KeyboardOptions
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.CircularProgressIndicator
import androidx.compose.material3.ExperimentalMaterial3Api
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Scaffold
import androidx.compose.material3.SegmentedButton
import androidx.compose.material3.SegmentedButtonDefaults
import androidx.compose.material3.SingleChoiceSegmentedButtonRow
import androidx.compose.material3.Text
import androidx.compose.material3.TopAppBar
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.saveable.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.text.input.KeyboardType
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import androidx.lifecycle.viewmodel.compose.viewModel
import dev.msocket.PathPolicy
import dev.msocket.samples.fmt
import dev.msocket.samples.stream.PlayoutBuffer
import dev.msocket.samples.stream.Share
import dev.msocket.samples.stream.StreamFrame
import dev.msocket.samples.stream.StreamReport
import dev.msocket.samples.stream.StreamSummary

@Composable
fun StreamApp(vm: StreamViewModel = viewModel(), beforeStart: () -> Unit = {}) {
    val state by vm.state.collectAsStateWithLifecycle()
    if (state.phase == Phase.SETUP) {
        SetupScreen(initial = state.settings, error = state.setupError, onStart = { beforeStart(); vm.start(it) })
    } else {
        BackHandler(onBack = vm::stop)
        LiveScreen(state = state, onPolicy = vm::setPolicy, onStop = vm::stop)
    }
}

@OptIn(ExperimentalMaterial3Api::class)
@Composable
fun SetupScreen(initial: StreamSettings, error: String?, onStart: (StreamSettings) -> Unit) {
    var role by rememberSaveable { mutableStateOf(initial.role) }
    var name by rememberSaveable { mutableStateOf(initial.name) }
    var names by rememberSaveable { mutableStateOf(initial.namesUrl) }
    var relays by rememberSaveable { mutableStateOf(initial.relays) }
    var bitrate by rememberSaveable { mutableStateOf(initial.bitrateKbps) }
    var seconds by rememberSaveable { mutableStateOf(initial.seconds) }
    var buffer by rememberSaveable { mutableStateOf(initial.bufferMs) }
    var policy by rememberSaveable { mutableStateOf(initial.policy) }
    val number = KeyboardOptions(keyboardType = KeyboardType.Number)
    Scaffold(topBar = { TopAppBar(title = { Text("msocket stream") }) }) { padding ->
        Column(
            Modifier.padding(padding).padding(16.dp).fillMaxSize().imePadding().verticalScroll(rememberScrollState()),
            verticalArrangement = Arrangement.spacedBy(12.dp),
        ) {
            Choice(Role.entries, role, { if (it == Role.PLAY) "Play" else "Send" }, { role = it })
            when (role) {
                Role.PLAY -> {
                    Field("My name", name, { name = it }, supporting = "The sender connects to this name")
                    Field("Buffer (ms)", buffer, { buffer = it }, keyboard = number, supporting = "Media held before playing, and after a stall")
                }
                Role.SEND -> {
                    Field("To", name, { name = it }, supporting = "The player's NAME or NAME#FINGERPRINT")
                    Field("Bitrate (kbit/s)", bitrate, { bitrate = it }, keyboard = number)
                    Field("Length (s)", seconds, { seconds = it }, keyboard = number)
                    Text("Policy", style = MaterialTheme.typography.labelLarge)
                    PolicyChoice(policy) { policy = it }
                }
            }
            Field("Name service", names, { names = it }, keyboard = KeyboardOptions(keyboardType = KeyboardType.Uri), placeholder = "tcp://names.example:7450")
            Field("Relays (optional)", relays, { relays = it }, placeholder = "relay.example:7451, ...")
            error?.let { Text(it, color = MaterialTheme.colorScheme.error) }
            Button(onClick = { onStart(StreamSettings(role, name, names, relays, bitrate, seconds, buffer, policy)) }) {
                Text(if (role == Role.PLAY) "Wait for a stream" else "Start streaming")
            }
        }
    }
}

@OptIn(ExperimentalMaterial3Api::class)
@Composable
fun LiveScreen(state: StreamUiState, onPolicy: (PathPolicy) -> Unit, onStop: () -> Unit) {
    val report = state.report
    val playing = state.settings.role == Role.PLAY
    Scaffold(topBar = { TopAppBar(title = { Text(if (playing) "Playing" else "Sending") }) }) { padding ->
        Column(
            Modifier.padding(padding).padding(16.dp).fillMaxSize().verticalScroll(rememberScrollState()),
            verticalArrangement = Arrangement.spacedBy(16.dp),
        ) {
            Row(verticalAlignment = Alignment.CenterVertically) {
                if (state.phase == Phase.CONNECTING) {
                    CircularProgressIndicator(Modifier.size(20.dp))
                    Spacer(Modifier.width(12.dp))
                }
                Text(state.status, style = MaterialTheme.typography.bodyMedium)
            }
            if (report != null) {
                Stat("Throughput", "${report.rateKbps} kbit/s")
                if (playing) {
                    BufferBar(report, state.settings.bufferMs.toLongOrNull() ?: 0)
                    Stat("Stalls", if (report.stalls == 0) "none" else "${report.stalls}, longest ${seconds(report.longestStallMs)}")
                } else {
                    Stat("Chunks", "${report.chunks} sent, ${report.skipped} skipped")
                }
                PathShares(report.paths)
                Stat("Energy so far", report.energyJoules?.let { fmt("%.2f J", it) } ?: "not known")
            }
            if (state.phase == Phase.RUNNING) {
                Text(if (playing) "Ask the sender for a policy" else "Policy", style = MaterialTheme.typography.labelLarge)
                PolicyChoice(report?.policy, onChoose = onPolicy)
            }
            state.summary?.let { SummaryCard(it) }
            state.notes.takeLast(8).forEach {
                Text(it, style = MaterialTheme.typography.labelSmall, color = Color.Gray)
            }
            OutlinedButton(onClick = onStop) { Text(if (state.phase == Phase.DONE) "New stream" else "Stop") }
        }
    }
}

/** Media held, against twice the target (the player starts once it holds the target). */
@Composable
private fun BufferBar(report: StreamReport, targetMs: Long) {
    val held = report.bufferMs ?: 0
    Column(verticalArrangement = Arrangement.spacedBy(4.dp)) {
        Stat("Buffer", "${seconds(held)} of ${seconds(targetMs)} target, ${report.playing?.words() ?: "?"}")
        LinearProgressIndicator(
            progress = { if (targetMs <= 0) 0f else (held.toFloat() / (2 * targetMs)).coerceIn(0f, 1f) },
            color = if (report.playing == PlayoutBuffer.State.STALLED) MaterialTheme.colorScheme.error else MaterialTheme.colorScheme.primary,
            modifier = Modifier.fillMaxWidth(),
        )
    }
}

/** Where the last second's bytes went: Wi-Fi or cellular, relayed or direct. */
@Composable
private fun PathShares(shares: List<Share>) {
    Column(verticalArrangement = Arrangement.spacedBy(4.dp)) {
        Text("Paths (last second)", style = MaterialTheme.typography.labelLarge)
        if (shares.isEmpty()) Text("no path", style = MaterialTheme.typography.bodySmall)
        for (s in shares) {
            Row(verticalAlignment = Alignment.CenterVertically) {
                Text(pathWords(s.path), Modifier.width(140.dp), style = MaterialTheme.typography.bodySmall)
                LinearProgressIndicator(progress = { s.percent / 100f }, modifier = Modifier.weight(1f))
                Text("${s.percent}%", Modifier.width(48.dp).padding(start = 8.dp), style = MaterialTheme.typography.bodySmall)
            }
        }
    }
}

@OptIn(ExperimentalMaterial3Api::class)
@Composable
private fun PolicyChoice(selected: PathPolicy?, onChoose: (PathPolicy) -> Unit) {
    SingleChoiceSegmentedButtonRow(Modifier.fillMaxWidth()) {
        PathPolicy.entries.forEachIndexed { i, p ->
            SegmentedButton(
                selected = p == selected,
                onClick = { onChoose(p) },
                shape = SegmentedButtonDefaults.itemShape(i, PathPolicy.entries.size),
                label = { Text(StreamFrame.policyName(p), maxLines = 1, style = MaterialTheme.typography.labelSmall) },
            )
        }
    }
}

@OptIn(ExperimentalMaterial3Api::class)
@Composable
private fun <T> Choice(options: List<T>, selected: T, label: (T) -> String, onChoose: (T) -> Unit) {
    SingleChoiceSegmentedButtonRow(Modifier.fillMaxWidth()) {
        options.forEachIndexed { i, o ->
            SegmentedButton(
                selected = o == selected,
                onClick = { onChoose(o) },
                shape = SegmentedButtonDefaults.itemShape(i, options.size),
                label = { Text(label(o)) },
            )
        }
    }
}

@Composable
private fun SummaryCard(s: StreamSummary) {
    Card(Modifier.fillMaxWidth()) {
        Column(Modifier.padding(12.dp), verticalArrangement = Arrangement.spacedBy(4.dp)) {
            Text("Done", style = MaterialTheme.typography.titleMedium)
            Text("${s.chunks} chunks, ${s.skipped} skipped${if (s.corrupt > 0) ", ${s.corrupt} CORRUPT" else ""}, ${s.bytes / 1024} KiB")
            if (s.role == "play") {
                Text("Startup ${s.startupMs?.let(::seconds) ?: "?"}, ${s.stalls.size} stalls, ${seconds(s.stalls.sum())} stalled in all")
            }
            Text(s.paths.joinToString(", ") { "${pathWords(it.path)} ${it.percent}%" }.ifEmpty { "no path carried data" })
            Text("Energy ${s.energyJoules?.let { fmt("%.2f J", it) } ?: "not known"}")
        }
    }
}

@Composable
private fun Stat(label: String, value: String) {
    Row {
        Text(label, Modifier.width(120.dp), style = MaterialTheme.typography.labelLarge)
        Text(value, style = MaterialTheme.typography.bodyMedium)
    }
}

@Composable
private fun Field(
    label: String,
    value: String,
    onChange: (String) -> Unit,
    supporting: String? = null,
    placeholder: String? = null,
    keyboard: KeyboardOptions = KeyboardOptions.Default,
) {
    OutlinedTextField(
        value = value, onValueChange = onChange, label = { Text(label) }, singleLine = true,
        supportingText = supporting?.let { { Text(it) } },
        placeholder = placeholder?.let { { Text(it) } },
        keyboardOptions = keyboard, modifier = Modifier.fillMaxWidth(),
    )
}

private fun seconds(ms: Long) = fmt("%.1f s", ms / 1000.0)

/** "wifi/direct" as "Wi-Fi, direct". */
private fun pathWords(kind: String): String {
    val (link, how) = kind.split('/').let { it[0] to it.getOrElse(1) { "" } }
    val linkWords = when (link) {
        "wifi" -> "Wi-Fi"
        "cell" -> "Cellular"
        "wired" -> "Wired"
        else -> "Other"
    }
    return if (how.isEmpty()) linkWords else "$linkWords, $how"
}

private fun PlayoutBuffer.State.words() = when (this) {
    PlayoutBuffer.State.STARTING -> "filling"
    PlayoutBuffer.State.PLAYING -> "playing"
    PlayoutBuffer.State.STALLED -> "stalled"
    PlayoutBuffer.State.DONE -> "done"
}
