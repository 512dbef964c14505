/*
 * Who a user talks to: a name and the fingerprint of the keys behind it. A contact is
 * added as `NAME#FINGERPRINT` (checked on every flow from then on) or pinned the first
 * time a peer introduces itself, like ssh's known_hosts; a changed key is refused, never
 * accepted quietly.
 */
package dev.msocket.samples.chat

import java.io.File
import java.io.FileOutputStream
import java.io.IOException
import dev.msocket.samples.FormatException

/** A peer: the name it listens on and its key's fingerprint (lower-case hex). */
data class Contact(val name: String, val fingerprint: String) {
    /** `NAME#FINGERPRINT`, what to connect to so that only this key is accepted. */
    override fun toString() = "$name#$fingerprint"

    companion object {
        /** The contact `NAME#FINGERPRINT` names; [FormatException] saying why if none. */
        fun parse(spec: String): Contact {
            val parts = spec.trim().split('#')
            if (parts.size != 2) throw FormatException("\"${spec.take(80)}\" is not NAME#FINGERPRINT")
            return Contact(ChatFrame.checkName(parts[0]), checkFingerprint(parts[1]))
        }

        /** [fp] in lower case if it is 32 to 64 hex digits. */
        fun checkFingerprint(fp: String): String {
            if (fp.length !in 32..64 || !fp.all { Character.digit(it, 16) >= 0 }) {
                throw FormatException("\"${fp.take(80)}\" is not a key fingerprint (32 to 64 hex digits)")
            }
            return fp.lowercase()
        }
    }
}

/** A peer claimed a name that is pinned to another key. */
class KeyMismatchException(val name: String, val pinned: String, val presented: String) :
    Exception("$name is pinned to key $pinned, but this peer holds $presented: refused")

/**
 * The contacts file (`NAME FINGERPRINT` a line), rewritten atomically on each change. A
 * line that does not parse is an error naming it.
 */
class ContactBook(private val file: File) {
    private val contacts = sortedMapOf<String, Contact>()

    init {
        if (file.exists()) {
            if (file.length() > MAX_BYTES) throw IOException("contacts file $file is over $MAX_BYTES bytes")
            file.readLines().forEachIndexed { i, raw ->
                val line = raw.trim()
                if (line.isEmpty() || line.startsWith("#")) return@forEachIndexed
                val c = try {
                    val f = line.split(' ')
                    if (f.size != 2) throw FormatException("expected NAME FINGERPRINT")
                    Contact(ChatFrame.checkName(f[0]), Contact.checkFingerprint(f[1]))
                } catch (e: FormatException) {
                    throw IOException("contacts file $file, line ${i + 1}: ${e.message}")
                }
                contacts[c.name] = c
            }
        }
    }

    @get:Synchronized
    val all: List<Contact> get() = contacts.values.toList()

    @Synchronized
    fun get(name: String): Contact? = contacts[name]

    /**
     * Adds [contact], or confirms it. A name pinned to another key: [KeyMismatchException],
     * unless [replace] (the user typed the new fingerprint).
     */
    @Synchronized
    fun pin(contact: Contact, replace: Boolean = false): Boolean {
        val old = contacts[contact.name]
        if (old == contact) return false
        if (old != null && !replace) throw KeyMismatchException(contact.name, old.fingerprint, contact.fingerprint)
        contacts[contact.name] = contact
        save()
        return true
    }

    private fun save() {
        val text = buildString {
            append("# msocket chat contacts: NAME FINGERPRINT\n")
            for (c in contacts.values) append("${c.name} ${c.fingerprint}\n")
        }
        file.absoluteFile.parentFile?.mkdirs()
        val tmp = File(file.absoluteFile.parentFile, ".${file.name}.tmp")
        FileOutputStream(tmp).use {
            it.write(text.toByteArray())
            it.fd.sync()
        }
        if (!tmp.renameTo(file)) throw IOException("could not replace the contacts file $file")
    }

    private companion object {
        const val MAX_BYTES = 1L shl 20
    }
}
