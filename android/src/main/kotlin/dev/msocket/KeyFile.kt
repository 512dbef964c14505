/*
 * An endpoint's identity key at rest. The key is the identity its peers pin, so it must
 * outlive the process and stay on this device: a backup or a copied data directory must
 * not carry it to another phone, where it would be the same peer twice.
 *
 * [SealedKeyFile] keeps it in a file sealed with AES-256-GCM under a key the app never
 * holds: on Android, one made in the Keystore ([dev.msocket.android.KeystoreKeys]), which
 * the phone's secure hardware keeps if it has some, and which no backup takes along. A
 * copied file is useless elsewhere. A file that cannot be opened is an error saying why,
 * never silently replaced by a new identity: a new key is a new peer to everyone who
 * pinned the old one.
 *
 * The file is 66 bytes: "MSKEY" and a format byte (also the cipher's associated data),
 * the 12-byte nonce, the sealed 32-byte key and its 16-byte tag.
 */
package dev.msocket

import java.io.File
import java.io.IOException
import java.security.GeneralSecurityException
import java.security.ProviderException
import javax.crypto.AEADBadTagException
import javax.crypto.Cipher
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec

/** Why a [SealedKeyFile] could not give its key. */
class KeyFileException(val reason: Reason, message: String, cause: Throwable? = null) : IOException(message, cause) {
    enum class Reason {
        /** The file is not a sealed key (its length or header): something else wrote it, or it was cut short. */
        MALFORMED,
        /**
         * The sealing key does not open it: it was sealed on another device or by another
         * install (a restored or copied file), the sealing key was deleted, or the file was
         * altered.
         */
        NOT_OPENABLE,
        /** The platform's key store failed to make, find or use the sealing key. */
        SEALING_KEY,
        /** Reading or writing the file failed. */
        IO,
    }
}

/**
 * The identity key in [file], sealed under the AES key [sealingKey] gives (asked for on
 * each use; made on first use by the supplier, as [dev.msocket.android.KeystoreKeys] does).
 * Failures are [KeyFileException]s.
 */
class SealedKeyFile(val file: File, private val sealingKey: () -> SecretKey) {
    /** The key in the file, or null when there is no file. */
    fun load(): ByteArray? = synchronized(lock) {
        if (!file.exists()) return null
        // One byte more than a sealed key tells a longer file without reading all of it.
        val bytes = try {
            file.inputStream().use { input ->
                val buf = ByteArray(FILE_LEN + 1)
                var n = 0
                while (n < buf.size) {
                    val got = input.read(buf, n, buf.size - n)
                    if (got < 0) break
                    n += got
                }
                buf.copyOf(n)
            }
        } catch (e: IOException) {
            throw ioFailed(e)
        }
        if (bytes.size != FILE_LEN) malformed("is not $FILE_LEN bytes")
        if (!bytes.copyOf(HEADER.size).contentEquals(HEADER)) malformed("does not start with the sealed key header")
        val key = obtainSealingKey()
        crypto("open") {
            val cipher = Cipher.getInstance(TRANSFORMATION)
            cipher.init(Cipher.DECRYPT_MODE, key, GCMParameterSpec(TAG_BITS, bytes, HEADER.size, NONCE_LEN))
            cipher.updateAAD(HEADER)
            try {
                cipher.doFinal(bytes, HEADER.size + NONCE_LEN, KEY_LEN + TAG_BITS / 8)
            } catch (e: AEADBadTagException) {
                throw KeyFileException(
                    KeyFileException.Reason.NOT_OPENABLE,
                    "key file $file was sealed under another key (another device or install, a deleted sealing key, " +
                        "or an altered file); move it away to make a new identity",
                    e,
                )
            }
        }
    }

    /** The key in the file; when there is none, a new one, sealed and written before it is returned. */
    fun loadOrCreate(): ByteArray = synchronized(lock) {
        load() ?: MSocket.generateKey().also(::store)
    }

    /** Seals [key] (32 bytes) into the file, replacing what it held: to import an identity. */
    fun store(key: ByteArray): Unit = synchronized(lock) {
        require(key.size == KEY_LEN) { "an identity key is $KEY_LEN bytes, not ${key.size}" }
        val sealing = obtainSealingKey()
        val sealed = crypto("seal") {
            // The cipher picks the nonce: a Keystore key refuses one given by the caller.
            val cipher = Cipher.getInstance(TRANSFORMATION)
            cipher.init(Cipher.ENCRYPT_MODE, sealing)
            cipher.updateAAD(HEADER)
            val body = cipher.doFinal(key)
            val nonce = cipher.iv
            if (nonce == null || nonce.size != NONCE_LEN) throw GeneralSecurityException("the cipher chose a ${nonce?.size ?: 0}-byte nonce")
            HEADER + nonce + body
        }
        try {
            writeAtomically(file, sealed, ownerOnly = true)
        } catch (e: IOException) {
            throw ioFailed(e)
        }
    }

    private fun obtainSealingKey(): SecretKey = crypto("get") {
        try {
            sealingKey.invoke()
        } catch (e: IOException) {
            throw sealingFailed("get", e) // KeyStore.load
        }
    }

    /** Runs [body]; the JCE's and the key store's failures become SEALING_KEY, saying what was tried. */
    private inline fun <T> crypto(what: String, body: () -> T): T = try {
        body()
    } catch (e: GeneralSecurityException) {
        throw sealingFailed(what, e)
    } catch (e: ProviderException) {
        throw sealingFailed(what, e)
    }

    private fun sealingFailed(what: String, e: Exception) =
        KeyFileException(KeyFileException.Reason.SEALING_KEY, "key file $file: could not $what the sealing key: $e", e)

    private fun ioFailed(e: IOException) = KeyFileException(KeyFileException.Reason.IO, "key file $file: ${e.message}", e)

    private fun malformed(why: String): Nothing =
        throw KeyFileException(KeyFileException.Reason.MALFORMED, "key file $file $why; move it away to make a new identity")

    private val lock = Any()

    private companion object {
        const val TRANSFORMATION = "AES/GCM/NoPadding"
        val HEADER = "MSKEY".toByteArray(Charsets.US_ASCII) + byteArrayOf(1)
        const val NONCE_LEN = 12
        const val KEY_LEN = 32
        const val TAG_BITS = 128
        val FILE_LEN = HEADER.size + NONCE_LEN + KEY_LEN + TAG_BITS / 8
    }
}
