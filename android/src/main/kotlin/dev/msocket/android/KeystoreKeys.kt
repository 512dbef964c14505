/*
 * Sealing keys in Android's Keystore, for [SealedKeyFile]. The Keystore makes an AES-256 key
 * that the app can use but never read: it lives in the phone's secure hardware where there
 * is some (a TEE or StrongBox), and backups do not take it along. So the identity key
 * sealed under it opens on this install of the app only.
 */
package dev.msocket.android

import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import java.io.File
import java.security.KeyStore
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import dev.msocket.SealedKeyFile

object KeystoreKeys {
    /** The alias [identityKeyFile] seals under unless told another. */
    const val DEFAULT_ALIAS = "msocket-identity"

    private const val PROVIDER = "AndroidKeyStore"

    /**
     * The identity key file [file] (in the app's files directory), sealed under the
     * Keystore key [alias]: `KeystoreKeys.identityKeyFile(File(filesDir, "msocket-key")).loadOrCreate()`
     * gives the key to pass to [dev.msocket.Endpoint], made and stored on first use. Keep
     * one alias per identity. Call it off the main thread: the Keystore may take a while.
     */
    fun identityKeyFile(file: File, alias: String = DEFAULT_ALIAS): SealedKeyFile = SealedKeyFile(file) { sealingKey(alias) }

    /** The AES-256-GCM key [alias] in the Keystore, made on first use; usable without the user's authentication. */
    @Synchronized
    fun sealingKey(alias: String): SecretKey {
        val store = KeyStore.getInstance(PROVIDER).apply { load(null) }
        (store.getKey(alias, null) as? SecretKey)?.let { return it }
        val spec = KeyGenParameterSpec.Builder(alias, KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT)
            .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
            .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
            .setKeySize(256)
            .build()
        return KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, PROVIDER).run {
            init(spec)
            generateKey()
        }
    }
}
