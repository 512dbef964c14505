/*
 * How registering with the platform's connectivity service fails, as a type the app can
 * handle. `ConnectivityManager` throws a SecurityException without ACCESS_NETWORK_STATE
 * (or CHANGE_NETWORK_STATE, for requestNetwork), and from API 30 a
 * `ConnectivityManager.TooManyRequestsException` (a hidden RuntimeException) once the app
 * holds 100 callbacks; both would otherwise surface as crashes.
 */
package dev.msocket.net

/** Why the network bridge could not start (or could not keep cellular up). */
sealed class NetworkBridgeException(message: String, cause: Throwable? = null) : Exception(message, cause) {
    /** A permission is missing; [message] names the call. */
    class PermissionDenied(message: String, cause: Throwable?) : NetworkBridgeException(message, cause)

    /** The app holds as many network callbacks as the platform allows. */
    class TooManyRequests(message: String, cause: Throwable?) : NetworkBridgeException(message, cause)

    /** The platform refused for another reason; [cause] says which. */
    class Refused(message: String, cause: Throwable?) : NetworkBridgeException(message, cause)

    /** [start][dev.msocket.android.AndroidNetworkBridge.start] on a bridge already started or closed. */
    class IllegalState(message: String) : NetworkBridgeException(message)

    companion object {
        /** The typed form of what the platform threw from [call]. */
        fun from(call: String, t: RuntimeException): NetworkBridgeException = when {
            t is SecurityException ->
                PermissionDenied("$call: permission denied (${t.message}); the app needs ACCESS_NETWORK_STATE and CHANGE_NETWORK_STATE", t)
            t.javaClass.simpleName == "TooManyRequestsException" ->
                TooManyRequests("$call: the app holds too many network callbacks (the platform allows 100); release some", t)
            else -> Refused("$call failed: $t", t)
        }
    }
}
