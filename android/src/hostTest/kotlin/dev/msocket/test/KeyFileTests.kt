/*
 * The sealed identity key file, with a software AES key standing in for the Keystore's
 * (the host JVM has no Keystore; the sealing is the same JCE cipher either way): the key
 * survives a reload, never appears in the file, and every file that cannot give it back
 * (another device's, cut short, altered, in the old hex form) is an error saying which,
 * with the file left as it was.
 */
package dev.msocket.test

import dev.msocket.KeyFileException
import dev.msocket.MSocket
import dev.msocket.SealedKeyFile
import java.io.File
import java.nio.file.Files
import java.nio.file.attribute.PosixFilePermission
import java.security.GeneralSecurityException
import java.security.KeyStoreException
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertNull
import kotlin.test.assertTrue

private fun aesKey(): SecretKey = KeyGenerator.getInstance("AES").apply { init(256) }.generateKey()

private fun tempFile(): File = File(Files.createTempDirectory("msocket-key").toFile(), "identity")

private fun ByteArray.contains(part: ByteArray) = (0..size - part.size).any { at -> part.indices.all { this[at + it] == part[it] } }

fun keyFileTests(s: Suite) {
    s.test("key file: made once, sealed, owner-only, the same key on every load") {
        val sealing = aesKey()
        val file = tempFile()
        val keys = SealedKeyFile(file) { sealing }
        assertNull(keys.load(), "no file, no key")
        val key = keys.loadOrCreate()
        assertEquals(32, key.size)
        assertEquals(66, file.length())
        assertFalse(file.readBytes().contains(key), "the key is in the file in the clear")
        assertEquals(setOf(PosixFilePermission.OWNER_READ, PosixFilePermission.OWNER_WRITE), Files.getPosixFilePermissions(file.toPath()))
        // Another instance (a restarted app) gets the same identity.
        val again = SealedKeyFile(file) { sealing }
        assertContentEquals(key, again.loadOrCreate())
        assertContentEquals(key, again.load())
        assertEquals(MSocket.fingerprint(key), MSocket.fingerprint(again.loadOrCreate()))
        assertEquals(listOf("identity"), file.parentFile.list()!!.toList(), "no temporary file is left")
    }

    s.test("key file: another device's file, or an altered one, is refused and left alone") {
        val file = tempFile()
        SealedKeyFile(file) { aesKey() }.loadOrCreate()
        val before = file.readBytes()
        val elsewhere = assertFailsWith<KeyFileException> { SealedKeyFile(file) { aesKey() }.loadOrCreate() }
        assertEquals(KeyFileException.Reason.NOT_OPENABLE, elsewhere.reason)
        assertTrue("move it away" in elsewhere.message!!, elsewhere.message)
        assertContentEquals(before, file.readBytes(), "a file that does not open is never replaced")

        val sealing = aesKey()
        val mine = SealedKeyFile(file) { sealing }
        file.delete()
        mine.loadOrCreate()
        for (at in listOf(6, 20, 65)) { // the nonce, the sealed key, the tag
            val bytes = file.readBytes()
            bytes[at] = (bytes[at].toInt() xor 1).toByte()
            val altered = tempFile().apply { writeBytes(bytes) }
            val e = assertFailsWith<KeyFileException> { SealedKeyFile(altered) { sealing }.load() }
            assertEquals(KeyFileException.Reason.NOT_OPENABLE, e.reason, "a bit flipped at $at")
        }
    }

    s.test("key file: a file of another form is named malformed, not opened") {
        val sealing = aesKey()
        val good = tempFile().also { SealedKeyFile(it) { sealing }.loadOrCreate() }.readBytes()
        val cases = mapOf(
            "empty" to ByteArray(0),
            "cut short" to good.copyOf(65),
            "one byte more" to good + 0,
            "another format byte" to good.copyOf().also { it[5] = 2 },
            "the console samples' hex key" to ("ab".repeat(32) + "\n").toByteArray(),
        )
        for ((what, bytes) in cases) {
            val file = tempFile().apply { writeBytes(bytes) }
            val e = assertFailsWith<KeyFileException>(what) { SealedKeyFile(file) { sealing }.loadOrCreate() }
            assertEquals(KeyFileException.Reason.MALFORMED, e.reason, what)
            assertContentEquals(bytes, file.readBytes(), "$what: the file was changed")
        }
    }

    s.test("key file: a key store that fails is SEALING_KEY and no key is made; a wrong key is refused") {
        val file = tempFile()
        val broken = SealedKeyFile(file) { throw KeyStoreException("the Keystore is locked") }
        val e = assertFailsWith<KeyFileException> { broken.loadOrCreate() }
        assertEquals(KeyFileException.Reason.SEALING_KEY, e.reason)
        assertTrue("the Keystore is locked" in e.message!!, e.message)
        assertFalse(file.exists(), "no key without its seal")
        val wrongKind = SealedKeyFile(file) { KeyGenerator.getInstance("HmacSHA256").generateKey() }
        assertEquals(KeyFileException.Reason.SEALING_KEY, assertFailsWith<KeyFileException> { wrongKind.loadOrCreate() }.reason)
        assertFalse(file.exists())
        assertFailsWith<GeneralSecurityException>("a test of the test: the stand-in is a real failure") {
            javax.crypto.Cipher.getInstance("AES/GCM/NoPadding").init(javax.crypto.Cipher.ENCRYPT_MODE, KeyGenerator.getInstance("HmacSHA256").generateKey())
        }
    }

    s.test("key file: an identity is imported by store, and only a 32-byte one") {
        val sealing = aesKey()
        val keys = SealedKeyFile(tempFile()) { sealing }
        val key = MSocket.generateKey()
        keys.store(key)
        assertContentEquals(key, keys.loadOrCreate())
        assertFailsWith<IllegalArgumentException> { keys.store(ByteArray(31)) }
        assertContentEquals(key, keys.load(), "a refused store leaves the key")
    }
}
