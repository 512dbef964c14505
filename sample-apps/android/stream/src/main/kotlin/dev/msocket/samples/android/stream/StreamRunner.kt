/*
 * Runs this process's one stream, sending or playing, with the StreamSender and
 * StreamPlayer the console sample runs, and turns their once-a-second reports into
 * StreamUiState.
 *
 * A stream the user started outlives the screen that started it: leaving the app (or the
 * activity being recreated) does not stop it. While it runs, a StreamService in the
 * foreground keeps the process alive and keeps its network access when the phone dozes,
 * and shows the stream in a notification with a Stop action. So the runner belongs to the
 * process, not to a ViewModel; the screens find it again with [of].
 *
 * The stream runs on Dispatchers.Default: the sender makes and the player checks every
 * chunk's bytes, which is CPU work; the SDK's waiting calls are suspend functions and hold
 * no thread. Stopping cancels the stream's coroutine, which closes the flow and endpoint.
 */
package dev.msocket.samples.android.stream

import android.content.Context
import java.io.File
import java.io.IOException
import kotlin.time.Duration.Companion.hours
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch
import dev.msocket.Endpoint
import dev.msocket.EndpointConfig
import dev.msocket.FilePinStore
import dev.msocket.PathPolicy
import dev.msocket.PeerFlow
import dev.msocket.android.AndroidNetworkBridge
import dev.msocket.android.KeystoreKeys
import dev.msocket.ffi.MsocketException
import dev.msocket.net.NetworkBridgeException
import dev.msocket.samples.FormatException
import dev.msocket.samples.chat.describe
import dev.msocket.samples.stream.StreamFrame
import dev.msocket.samples.stream.StreamPlayer
import dev.msocket.samples.stream.StreamSender

class StreamRunner private constructor(private val app: Context) {
    private val files = app.filesDir
    private val prefs = app.getSharedPreferences("stream", Context.MODE_PRIVATE)
    private val _state = MutableStateFlow(StreamUiState(settings = savedSettings()))
    val state: StateFlow<StreamUiState> = _state.asStateFlow()

    private val scope = CoroutineScope(SupervisorJob() + Dispatchers.Default)
    private var stream: Job? = null

    /** Switches the running stream's policy (the sender's own, or the player's request). */
    @Volatile
    private var switchPolicy: (suspend (PathPolicy) -> Unit)? = null

    /** Starts a stream as [settings] say, unless one runs; a bad field is shown on the set-up screen. */
    @Synchronized
    fun start(settings: StreamSettings) {
        if (_state.value.running) return
        val params = try {
            settings.check()
        } catch (e: IllegalArgumentException) {
            _state.update { it.copy(settings = settings, setupError = e.message) }
            return
        }
        saveSettings(settings)
        _state.update { StreamUiState(phase = Phase.CONNECTING, settings = settings, status = "starting") }
        StreamService.start(app, settings.role)
        stream = scope.launch {
            val failure = try {
                run(settings, params)
                null
            } catch (e: MsocketException) {
                e.describe()
            } catch (e: NetworkBridgeException) {
                "the network bridge: ${e.message}"
            } catch (e: FormatException) {
                "the peer broke the stream format: ${e.message}"
            } catch (e: IOException) {
                "storage: ${e.message}"
            } catch (e: IllegalArgumentException) {
                e.message
            } finally {
                switchPolicy = null
            }
            _state.update {
                if (failure == null) it.copy(phase = Phase.DONE) else it.copy(phase = Phase.SETUP, setupError = failure)
            }
        }
    }

    /** Asks for [policy] now: the sender applies it, the player asks the sender. */
    fun setPolicy(policy: PathPolicy) {
        val switch = switchPolicy ?: return
        scope.launch {
            try {
                switch(policy)
            } catch (e: MsocketException) {
                note("could not switch to ${StreamFrame.policyName(policy)}: ${e.describe()}")
            }
        }
    }

    /** Ends the stream (if one runs) and goes back to the set-up screen. */
    @Synchronized
    fun stop() {
        stream?.cancel()
        stream = null
        _state.update { StreamUiState(settings = it.settings) }
    }

    private suspend fun run(settings: StreamSettings, params: StreamParams) {
        // A key and pins a role, as the console sample keeps them (--data).
        val dir = File(files, "stream/${settings.role.name.lowercase()}")
        val key = KeystoreKeys.identityKeyFile(File(dir, "key.sealed")).loadOrCreate()
        val config = EndpointConfig(namesUrl = settings.namesUrl.trim(), relays = settings.relayList, policy = settings.policy)
        val bridge = AndroidNetworkBridge(app, keepCellular = true, onError = { note("network bridge: ${it.message}") })
        try {
            Endpoint(key, config, bridge.socketBinder, FilePinStore(File(dir, "pins"))).use { endpoint ->
                bridge.start(endpoint)
                when (settings.role) {
                    Role.PLAY -> play(endpoint, settings.name.trim(), params.bufferMs)
                    Role.SEND -> send(endpoint, settings.name.trim(), params)
                }
            }
        } finally {
            bridge.close()
        }
    }

    private suspend fun play(endpoint: Endpoint, me: String, bufferMs: Long) {
        val flow = endpoint.listen(me).use { listener ->
            _state.update { it.copy(status = "waiting for a stream as $me#${endpoint.fingerprint}") }
            listener.accept(timeout = 1.hours)
        }
        flow.use {
            _state.update { it.copy(phase = Phase.RUNNING, status = "playing from ${flow.peerFingerprint}") }
            val player = StreamPlayer(flow, bufferMs, onReport = ::report, onNote = ::note)
            switchPolicy = { policy ->
                player.requestPolicy(policy)
                note("asked the sender for ${StreamFrame.policyName(policy)}")
            }
            val summary = player.run()
            _state.update { it.copy(summary = summary) }
            try {
                flow.finish(10.seconds)
            } catch (e: MsocketException) {
                note("the flow did not close cleanly: ${e.describe()}")
            }
        }
    }

    private suspend fun send(endpoint: Endpoint, to: String, params: StreamParams) {
        _state.update { it.copy(status = "connecting to $to") }
        endpoint.connect(to).use { flow: PeerFlow ->
            _state.update { it.copy(phase = Phase.RUNNING, status = "sending to $to, ${params.seconds} s at ${params.bitrateKbps} kbit/s") }
            val sender = StreamSender(flow, params.bitrateKbps, params.seconds, onReport = ::report, onNote = ::note)
            switchPolicy = { policy ->
                sender.setPolicy(policy)
                note("policy now ${StreamFrame.policyName(policy)}")
            }
            val summary = sender.run()
            _state.update { it.copy(summary = summary) }
        }
    }

    private fun report(r: dev.msocket.samples.stream.StreamReport) = _state.update { it.copy(report = r) }

    fun note(text: String) = _state.update { it.copy(notes = (it.notes + text).takeLast(MAX_NOTES)) }

    private fun savedSettings(): StreamSettings {
        val d = StreamSettings()
        return StreamSettings(
            role = prefs.getString("role", null)?.let { r -> Role.entries.firstOrNull { it.name == r } } ?: d.role,
            name = prefs.getString("name", null) ?: d.name,
            namesUrl = prefs.getString("names", null) ?: d.namesUrl,
            relays = prefs.getString("relays", null) ?: d.relays,
            bitrateKbps = prefs.getString("bitrate", null) ?: d.bitrateKbps,
            seconds = prefs.getString("seconds", null) ?: d.seconds,
            bufferMs = prefs.getString("buffer", null) ?: d.bufferMs,
            policy = prefs.getString("policy", null)?.let { p -> PathPolicy.entries.firstOrNull { it.name == p } } ?: d.policy,
        )
    }

    private fun saveSettings(s: StreamSettings) {
        prefs.edit()
            .putString("role", s.role.name).putString("name", s.name).putString("names", s.namesUrl)
            .putString("relays", s.relays).putString("bitrate", s.bitrateKbps).putString("seconds", s.seconds)
            .putString("buffer", s.bufferMs).putString("policy", s.policy.name)
            .apply()
    }

    companion object {
        private const val MAX_NOTES = 50

        @Volatile
        private var instance: StreamRunner? = null

        /** The process's runner. */
        fun of(context: Context): StreamRunner =
            instance ?: synchronized(this) { instance ?: StreamRunner(context.applicationContext).also { instance = it } }
    }
}
