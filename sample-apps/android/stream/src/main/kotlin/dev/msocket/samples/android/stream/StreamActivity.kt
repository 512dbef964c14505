package dev.msocket.samples.android.stream

import android.Manifest
import android.content.pm.PackageManager
import android.os.Build
import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.activity.enableEdgeToEdge
import androidx.activity.result.contract.ActivityResultContracts
import androidx.core.content.ContextCompat

/**
 * The one activity: the screens are Compose, the stream lives in [StreamRunner] (and goes
 * on under [StreamService] while the user is elsewhere).
 */
class StreamActivity : ComponentActivity() {
    /** The stream runs either way; without the permission its notification is not shown. */
    private val askToNotify = registerForActivityResult(ActivityResultContracts.RequestPermission()) {}

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        enableEdgeToEdge()
        setContent {
            SampleTheme {
                StreamApp(beforeStart = ::askToNotifyOnce)
            }
        }
    }

    /** Android 13+: asks, when the first stream starts, to show the running stream's notification. */
    private fun askToNotifyOnce() {
        if (Build.VERSION.SDK_INT < 33) return
        if (ContextCompat.checkSelfPermission(this, Manifest.permission.POST_NOTIFICATIONS) == PackageManager.PERMISSION_GRANTED) return
        val prefs = getSharedPreferences("stream", MODE_PRIVATE)
        if (prefs.getBoolean("asked-to-notify", false)) return
        prefs.edit().putBoolean("asked-to-notify", true).apply()
        askToNotify.launch(Manifest.permission.POST_NOTIFICATIONS)
    }
}
