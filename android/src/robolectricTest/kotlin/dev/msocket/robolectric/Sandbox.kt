/*
 * What the Robolectric sandbox needs to run msocket's real native library.
 *
 * Robolectric loads each test (and everything it references) through a class loader of
 * its own per Android API level. The UniFFI bindings (dev.msocket.ffi) hold process-wide
 * state tied to the one loaded libmsocket_ffi.so — callback tables registered with the
 * native library once — so they, and kotlinx.coroutines that they share with the Kotlin
 * API, are loaded once from the application class path for every sandbox (JNA, under
 * com.sun., already is). The android.* classes, the bridge and the tests stay in the
 * sandbox.
 *
 * Two shadows fill gaps of Robolectric's: ParcelFileDescriptor.detachFd (not implemented
 * for an adopted descriptor), and a Network shadow that records, at the moment of
 * bindSocket, which socket the descriptor was (the descriptor number alone is reused).
 */
package dev.msocket.robolectric

import android.net.Network
import android.os.ParcelFileDescriptor
import java.io.FileDescriptor
import java.nio.file.Files
import java.nio.file.Paths
import java.util.concurrent.CopyOnWriteArrayList
import org.junit.runners.model.FrameworkMethod
import org.robolectric.RobolectricTestRunner
import org.robolectric.annotation.Implementation
import org.robolectric.annotation.Implements
import org.robolectric.annotation.RealObject
import org.robolectric.internal.bytecode.InstrumentationConfiguration
import org.robolectric.shadows.ShadowNetwork
import org.robolectric.shadows.ShadowParcelFileDescriptor
import org.robolectric.util.ReflectionHelpers

class MsocketTestRunner(testClass: Class<*>) : RobolectricTestRunner(testClass) {
    override fun createClassLoaderConfig(method: FrameworkMethod): InstrumentationConfiguration =
        InstrumentationConfiguration.Builder(super.createClassLoaderConfig(method))
            .doNotAcquirePackage("dev.msocket.ffi")
            .doNotAcquirePackage("kotlinx.")
            .build()
}

/** The descriptor number inside a java.io.FileDescriptor. */
internal fun FileDescriptor.number(): Int = ReflectionHelpers.getField(this, "fd")

/** `socket:[INODE]` for a descriptor open on a socket, else what it points to (or null). */
internal fun descriptorTarget(fd: Int): String? =
    runCatching { Files.readSymbolicLink(Paths.get("/proc/self/fd/$fd")).toString() }.getOrNull()

/** ParcelFileDescriptor.detachFd as Android does it: the number handed back, the object emptied. */
@Implements(ParcelFileDescriptor::class)
class DetachableParcelFileDescriptor : ShadowParcelFileDescriptor() {
    @RealObject
    lateinit var self: ParcelFileDescriptor

    @Implementation
    protected fun detachFd(): Int {
        val fd: FileDescriptor = ReflectionHelpers.getField(self, "mFd")
        val number = fd.number()
        ReflectionHelpers.setField(fd, "fd", -1)
        ReflectionHelpers.setField(self, "mClosed", true)
        ReflectionHelpers.getField<Any?>(self, "mGuard")?.let { ReflectionHelpers.callInstanceMethod<Any?>(it, "close") }
        return number
    }
}

/** One Network.bindSocket call: the network's id, the descriptor and what it was then. */
data class Bind(val netId: Int, val fd: Int, val target: String?)

@Implements(Network::class)
class RecordingNetwork : ShadowNetwork() {
    @Implementation
    override fun bindSocket(fd: FileDescriptor) {
        binds += Bind(netId, fd.number(), descriptorTarget(fd.number()))
        super.bindSocket(fd)
    }

    companion object {
        val binds = CopyOnWriteArrayList<Bind>()
    }
}
