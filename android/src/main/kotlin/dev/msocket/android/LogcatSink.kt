/*
 * msocket's logs in logcat.
 */
package dev.msocket.android

import android.util.Log
import dev.msocket.LogLevel
import dev.msocket.LogSink

/**
 * Writes msocket's records to logcat under [tag] (`adb logcat -s msocket`), each message
 * prefixed with the Rust module that logged it. Install it with
 * `MSocketLog.setSink(LogcatSink(), LogLevel.INFO)`.
 */
class LogcatSink(private val tag: String = "msocket") : LogSink {
    override fun log(level: LogLevel, target: String, message: String) {
        val priority = when (level) {
            LogLevel.ERROR -> Log.ERROR
            LogLevel.WARN -> Log.WARN
            LogLevel.INFO -> Log.INFO
            LogLevel.DEBUG -> Log.DEBUG
            LogLevel.TRACE -> Log.VERBOSE
        }
        // logcat cuts an entry at about 4 KB; msocket's records are cut at 4 KB too.
        Log.println(priority, tag, "$target: $message")
    }
}
