/*
 * The screens' handle on the process's stream ([StreamRunner]). The stream outlives this
 * ViewModel: when the user leaves the app and the ViewModel is cleared, the stream goes
 * on under its foreground service; Stop, here or in the notification, ends it.
 */
package dev.msocket.samples.android.stream

import android.app.Application
import kotlinx.coroutines.flow.StateFlow
import androidx.lifecycle.AndroidViewModel
import dev.msocket.PathPolicy

class StreamViewModel(application: Application) : AndroidViewModel(application) {
    private val runner = StreamRunner.of(application)
    val state: StateFlow<StreamUiState> = runner.state

    fun start(settings: StreamSettings) = runner.start(settings)

    /** Asks for [policy] now: the sender applies it, the player asks the sender. */
    fun setPolicy(policy: PathPolicy) = runner.setPolicy(policy)

    /** Ends the stream (if one runs) and goes back to the set-up screen. */
    fun stop() = runner.stop()
}
