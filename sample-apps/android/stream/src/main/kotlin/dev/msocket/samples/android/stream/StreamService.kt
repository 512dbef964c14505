/*
 * Keeps a running stream going while the user is elsewhere. Once an app is in the
 * background, Android cuts its network when the phone dozes and may kill its process; a
 * foreground service, with a notification the user sees, is how an app says that the user
 * is doing this now. Its type says what: mediaPlayback for the player, dataSync for the
 * sender (its source is synthetic; a camera app's would be camera).
 *
 * The service runs exactly while the runner's stream does: the runner starts it with the
 * stream, it stops itself when the stream ends, and its notification's Stop action ends
 * the stream. The notification shows the stream's latest report once a second.
 */
package dev.msocket.samples.android.stream

import android.Manifest
import android.app.Notification
import android.app.PendingIntent
import android.app.Service
import android.content.Context
import android.content.Intent
import android.content.pm.PackageManager
import android.content.pm.ServiceInfo
import android.os.Build
import android.os.IBinder
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.takeWhile
import kotlinx.coroutines.launch
import androidx.core.app.NotificationChannelCompat
import androidx.core.app.NotificationCompat
import androidx.core.app.NotificationManagerCompat
import androidx.core.app.ServiceCompat
import androidx.core.content.ContextCompat

class StreamService : Service() {
    private val scope = CoroutineScope(SupervisorJob() + Dispatchers.Main.immediate)
    private var watching: Job? = null

    override fun onBind(intent: Intent?): IBinder? = null

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        val runner = StreamRunner.of(this)
        if (intent?.action == ACTION_STOP) {
            // The watcher sees the stream end and takes the service down.
            runner.stop()
            if (watching == null) stopSelf()
            return START_NOT_STICKY
        }
        val role = intent?.getStringExtra(EXTRA_ROLE)?.let { r -> Role.entries.firstOrNull { it.name == r } } ?: Role.PLAY
        // Called at once, even for a stream that ended meanwhile: a service started with
        // startForegroundService that does not call it within seconds is an error.
        try {
            ServiceCompat.startForeground(this, NOTIFICATION_ID, notification(runner.state.value), serviceType(role))
        } catch (e: IllegalStateException) {
            // ForegroundServiceStartNotAllowedException (Android 12+): the app was in the
            // background when the stream started. The stream runs while the app is in view.
            runner.note("cannot keep the stream going in the background: ${e.message}")
            stopSelf()
            return START_NOT_STICKY
        }
        if (watching == null) {
            watching = scope.launch {
                runner.state.takeWhile { it.running }.collect { show(notification(it)) }
                ServiceCompat.stopForeground(this@StreamService, ServiceCompat.STOP_FOREGROUND_REMOVE)
                stopSelf()
            }
        }
        // A process killed with its stream has no stream to come back to.
        return START_NOT_STICKY
    }

    /** Android 15+: a dataSync service ran out of its time for the day; the stream ends with it. */
    override fun onTimeout(startId: Int, fgsType: Int) {
        val runner = StreamRunner.of(this)
        runner.note("Android stopped the background stream: its time for background transfers is used up")
        runner.stop()
        stopSelf()
    }

    override fun onDestroy() {
        scope.cancel()
        super.onDestroy()
    }

    private fun notification(state: StreamUiState): Notification {
        val (title, text) = state.notification()
        val open = PendingIntent.getActivity(
            this, 0,
            Intent(this, StreamActivity::class.java).addFlags(Intent.FLAG_ACTIVITY_SINGLE_TOP),
            PendingIntent.FLAG_IMMUTABLE,
        )
        val stop = PendingIntent.getService(
            this, 0,
            Intent(this, StreamService::class.java).setAction(ACTION_STOP),
            PendingIntent.FLAG_IMMUTABLE,
        )
        val icon = if (state.settings.role == Role.PLAY) android.R.drawable.ic_media_play else android.R.drawable.stat_sys_upload
        return NotificationCompat.Builder(this, channel(this))
            .setSmallIcon(icon)
            .setContentTitle(title)
            .setContentText(text)
            .setContentIntent(open)
            .addAction(android.R.drawable.ic_menu_close_clear_cancel, "Stop", stop)
            .setOngoing(true)
            .setOnlyAlertOnce(true)
            .setSilent(true)
            .setCategory(NotificationCompat.CATEGORY_SERVICE)
            .setForegroundServiceBehavior(NotificationCompat.FOREGROUND_SERVICE_IMMEDIATE)
            .build()
    }

    /** Updates the notification, if the user lets the app post them (Android 13+ asks). */
    private fun show(n: Notification) {
        val allowed = Build.VERSION.SDK_INT < 33 ||
            ContextCompat.checkSelfPermission(this, Manifest.permission.POST_NOTIFICATIONS) == PackageManager.PERMISSION_GRANTED
        if (allowed) NotificationManagerCompat.from(this).notify(NOTIFICATION_ID, n)
    }

    companion object {
        private const val NOTIFICATION_ID = 1
        private const val CHANNEL_ID = "stream"
        private const val ACTION_STOP = "dev.msocket.samples.stream.STOP"
        private const val EXTRA_ROLE = "role"

        /** Brings the service up for a stream the user just started (the app is in view). */
        fun start(context: Context, role: Role) {
            val intent = Intent(context, StreamService::class.java).putExtra(EXTRA_ROLE, role.name)
            try {
                ContextCompat.startForegroundService(context, intent)
            } catch (e: IllegalStateException) {
                StreamRunner.of(context).note("cannot keep the stream going in the background: ${e.message}")
            }
        }

        private fun serviceType(role: Role): Int = when (role) {
            Role.PLAY -> ServiceInfo.FOREGROUND_SERVICE_TYPE_MEDIA_PLAYBACK
            Role.SEND -> ServiceInfo.FOREGROUND_SERVICE_TYPE_DATA_SYNC
        }

        private fun channel(context: Context): String {
            val channel = NotificationChannelCompat.Builder(CHANNEL_ID, NotificationManagerCompat.IMPORTANCE_LOW)
                .setName("Streams")
                .setDescription("A stream that runs while the app is in the background")
                .build()
            NotificationManagerCompat.from(context).createNotificationChannel(channel)
            return CHANNEL_ID
        }
    }
}
