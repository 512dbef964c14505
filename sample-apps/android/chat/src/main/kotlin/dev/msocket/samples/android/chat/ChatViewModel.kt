/*
 * Owns the chat for as long as the activity's task lives: the endpoint, the network
 * bridge that feeds it Android's networks, and the ChatEngine. The engine reports what
 * happens as ChatLines, from its own threads; each becomes a new ChatUiState in one atomic
 * update, so the screens only ever read one consistent value.
 *
 * The engine writes its history with fsync, so everything that may touch the disk runs on
 * Dispatchers.IO; the SDK's waiting calls are suspend functions and hold no thread.
 */
package dev.msocket.samples.android.chat

import android.app.Application
import android.content.Context
import java.io.Closeable
import java.io.File
import java.io.IOException
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import dev.msocket.Endpoint
import dev.msocket.EndpointConfig
import dev.msocket.FilePinStore
import dev.msocket.android.AndroidNetworkBridge
import dev.msocket.android.KeystoreKeys
import dev.msocket.ffi.MsocketException
import dev.msocket.net.NetworkBridgeException
import dev.msocket.samples.FormatException
import dev.msocket.samples.chat.ChatEngine
import dev.msocket.samples.chat.ChatFrame
import dev.msocket.samples.chat.UnknownContactException
import dev.msocket.samples.chat.describe

class ChatViewModel(application: Application) : AndroidViewModel(application) {
    private val files = application.filesDir
    private val prefs = application.getSharedPreferences("chat", Context.MODE_PRIVATE)
    private val _state = MutableStateFlow(ChatUiState(settings = savedSettings()))
    val state: StateFlow<ChatUiState> = _state.asStateFlow()

    /** The engine's work runs off the main thread and ends with this ViewModel. */
    private val io = CoroutineScope(viewModelScope.coroutineContext + Dispatchers.IO)
    private var session: Session? = null

    private class Session(val bridge: AndroidNetworkBridge, val endpoint: Endpoint, val engine: ChatEngine) : Closeable {
        override fun close() {
            engine.close()
            bridge.close()
            endpoint.close()
        }
    }

    init {
        // Someone who chatted before is back in their conversations at once.
        if (_state.value.settings.me.isNotEmpty()) start(_state.value.settings)
    }

    /** Opens the endpoint as [settings] say, listens on the name, shows the history. */
    fun start(settings: ChatSettings) {
        if (_state.value.phase != Phase.SETUP) return
        _state.update { it.copy(phase = Phase.STARTING, settings = settings, setupError = null) }
        viewModelScope.launch {
            val failure = try {
                withContext(Dispatchers.IO) { open(settings) }
                null
            } catch (e: MsocketException) {
                e.describe()
            } catch (e: NetworkBridgeException) {
                "the network bridge: ${e.message}"
            } catch (e: FormatException) {
                e.message
            } catch (e: IOException) {
                "storage: ${e.message}"
            }
            if (failure != null) {
                stopSession()
                _state.update { it.copy(phase = Phase.SETUP, setupError = failure) }
            } else {
                saveSettings(settings)
            }
        }
    }

    /** Adds the contact `NAME#FINGERPRINT`; says why not if it is not one. */
    fun addContact(spec: String) = withEngine { engine ->
        val contact = try {
            engine.add(spec)
        } catch (e: FormatException) {
            return@withEngine say(e.message)
        }
        _state.update { it.copy(contacts = it.withContact(contact)) }
    }

    /** Stores [text] for [to]; the engine sends it as soon as a flow is up. */
    fun send(to: String, text: String) = withEngine { engine ->
        try {
            engine.send(to, text)
        } catch (e: UnknownContactException) {
            say(e.message)
        } catch (e: IllegalArgumentException) {
            say(e.message)
        }
    }

    /** Closes the endpoint and goes back to the set-up screen (the history stays). */
    fun stop() {
        viewModelScope.launch {
            withContext(Dispatchers.IO) { stopSession() }
            _state.update { ChatUiState(settings = it.settings) }
        }
    }

    fun messageShown() = _state.update { it.copy(message = null) }

    override fun onCleared() = stopSession()

    private suspend fun open(settings: ChatSettings) {
        // The name is also a directory name: checked before anything is made of it.
        val me = ChatFrame.checkName(settings.me.trim())
        // One directory a user, laid out as the console sample's --data: key, pins, contacts, history.
        val dir = File(files, "chat/$me")
        val key = KeystoreKeys.identityKeyFile(File(dir, "key.sealed")).loadOrCreate()
        val config = EndpointConfig(namesUrl = settings.namesUrl.trim(), relays = settings.relayList)
        val bridge = AndroidNetworkBridge(
            getApplication(),
            keepCellular = true,
            onError = { e -> say("network bridge: ${e.message}") },
        )
        val endpoint = try {
            Endpoint(key, config, bridge.socketBinder, FilePinStore(File(dir, "pins")))
        } catch (e: MsocketException) {
            bridge.close()
            throw e
        }
        val engine = try {
            bridge.start(endpoint)
            ChatEngine(endpoint, me, dir, io, show = { line -> _state.update { it.after(line) } })
        } catch (e: Exception) {
            bridge.close()
            endpoint.close()
            throw e
        }
        val session = Session(bridge, endpoint, engine)
        synchronized(this) { this.session = session }
        // Listens, then replays the history as ChatLine.Earlier before anything new.
        engine.start()
        _state.update { it.copy(phase = Phase.RUNNING, contacts = engine.contacts.all) }
    }

    private fun stopSession() {
        val s = synchronized(this) { session.also { session = null } }
        s?.close()
    }

    /** Runs [body] with the running engine on Dispatchers.IO; storage failures become a message. */
    private fun withEngine(body: (ChatEngine) -> Unit) {
        val engine = synchronized(this) { session?.engine } ?: return
        io.launch {
            try {
                body(engine)
            } catch (e: IOException) {
                say("storage: ${e.message}")
            }
        }
    }

    private fun say(text: String?) = _state.update { it.copy(message = text ?: "something went wrong") }

    private fun savedSettings() = ChatSettings(
        me = prefs.getString("me", null).orEmpty(),
        namesUrl = prefs.getString("names", null).orEmpty(),
        relays = prefs.getString("relays", null).orEmpty(),
    )

    private fun saveSettings(s: ChatSettings) {
        prefs.edit().putString("me", s.me.trim()).putString("names", s.namesUrl.trim()).putString("relays", s.relays.trim()).apply()
    }
}
