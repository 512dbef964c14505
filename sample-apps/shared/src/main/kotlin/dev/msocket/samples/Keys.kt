/*
 * The samples' identity: a 32-byte key kept in a file (64 hex digits), made on first run.
 * The key is the user's identity (peers pin its fingerprint), so it is never replaced
 * silently: a file that holds something else is an error.
 */
package dev.msocket.samples

import java.io.File
import java.io.IOException
import dev.msocket.MSocket

object KeyFile {
    /** The key in [file]; a new one, written there readable by its owner only, if absent. */
    fun loadOrCreate(file: File): ByteArray {
        if (file.exists()) {
            val text = file.readText().trim()
            if (text.length != 64 || !text.all { Character.digit(it, 16) >= 0 }) {
                throw IOException("key file $file does not hold 64 hex digits; move it away to make a new identity")
            }
            return ByteArray(32) { text.substring(2 * it, 2 * it + 2).toInt(16).toByte() }
        }
        val key = MSocket.generateKey()
        file.absoluteFile.parentFile?.mkdirs()
        val tmp = File(file.absoluteFile.parentFile, ".${file.name}.tmp")
        tmp.delete()
        tmp.createNewFile()
        // Owner-only before the key is written (java.io, so that Android 7 has it too).
        val private = tmp.setReadable(false, false) && tmp.setReadable(true, true) && tmp.setWritable(false, false) && tmp.setWritable(true, true)
        if (!private) throw IOException("could not make $tmp readable by its owner only")
        tmp.writeText(key.joinToString("") { "%02x".format(it) } + "\n")
        if (!tmp.renameTo(file)) throw IOException("could not write the key file $file")
        return key
    }
}
