/*
 * How the SDK's stores write their files: whole or not at all. A temporary file beside the
 * target is written, synced and renamed over it, so a crash leaves the old file or the new
 * one, never half of one.
 */
package dev.msocket

import java.io.File
import java.io.FileOutputStream
import java.io.IOException

/**
 * Replaces [file] with [bytes] atomically; [ownerOnly] makes the new file readable and
 * writable by its owner only before anything is written to it (java.io, so Android 7 has it).
 */
internal fun writeAtomically(file: File, bytes: ByteArray, ownerOnly: Boolean = false) {
    val dir = file.absoluteFile.parentFile
    dir?.mkdirs()
    val tmp = File(dir, ".${file.name}.tmp")
    try {
        tmp.delete()
        if (!tmp.createNewFile()) throw IOException("could not create $tmp")
        if (ownerOnly) {
            val private = tmp.setReadable(false, false) && tmp.setReadable(true, true) &&
                tmp.setWritable(false, false) && tmp.setWritable(true, true)
            if (!private) throw IOException("could not make $tmp readable by its owner only")
        }
        FileOutputStream(tmp).use {
            it.write(bytes)
            it.fd.sync()
        }
        if (!tmp.renameTo(file)) throw IOException("could not replace $file with $tmp")
    } catch (e: IOException) {
        tmp.delete()
        throw e
    }
}
