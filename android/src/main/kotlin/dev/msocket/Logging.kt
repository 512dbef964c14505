/*
 * msocket's own logs, handed to the app: on Android to logcat
 * ([dev.msocket.android.LogcatSink]), elsewhere wherever the app's [LogSink] puts them.
 * Records arrive in order on one msocket thread; a sink too slow for them loses the
 * excess, and the next record says how many were dropped.
 */
package dev.msocket

import dev.msocket.ffi.LogSink as FfiLogSink

/** How severe a log record is: ERROR, WARN, INFO, DEBUG, TRACE. */
typealias LogLevel = dev.msocket.ffi.LogLevel

/** Receives msocket's log records; keep it quick. What it throws is ignored. */
fun interface LogSink {
    fun log(level: LogLevel, target: String, message: String)
}

private class LogSinkAdapter(private val sink: LogSink) : FfiLogSink {
    override fun log(level: LogLevel, target: String, message: String) = fromApp("log sink") { sink.log(level, target, message) }
}

/** Where msocket's logs go. */
object MSocketLog {
    /** Sends records up to [maxLevel] to [sink] (null: stop logging). */
    fun setSink(sink: LogSink?, maxLevel: LogLevel = LogLevel.INFO) =
        dev.msocket.ffi.setLogSink(sink?.let { LogSinkAdapter(it) }, maxLevel)

    /** Changes the most verbose level sent to the sink. */
    fun setLevel(maxLevel: LogLevel) = dev.msocket.ffi.setLogLevel(maxLevel)
}
