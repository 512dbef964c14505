/*
 * The shared sample logic's tests on the host JVM, in the plain runner the SDK's host
 * tests use (one line per test, a closing "kotlin: N passed, N failed" line). ci/samples
 * compiles and runs them against the real native library and a real `msocketd name`
 * (its URL in the system property `msocket.names`).
 */
package dev.msocket.samples.test

import kotlin.system.exitProcess
import kotlin.time.TimeSource
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.runBlocking

class Suite {
    val cases = mutableListOf<Pair<String, () -> Unit>>()

    fun test(name: String, body: () -> Unit) {
        cases += name to body
    }

    fun testBlocking(name: String, body: suspend CoroutineScope.() -> Unit) = test(name) { runBlocking(block = body) }
}

fun main(args: Array<String>) {
    val suite = Suite()
    formatTests(suite)
    historyTests(suite)
    playoutTests(suite)
    goldenTests(suite)
    engineTests(suite)
    val only = args.toSet()
    var passed = 0
    var failed = 0
    for ((name, body) in suite.cases) {
        if (only.isNotEmpty() && name !in only) continue
        val started = TimeSource.Monotonic.markNow()
        try {
            body()
            passed++
            println("ok      $name (${started.elapsedNow().inWholeMilliseconds} ms)")
        } catch (t: Throwable) {
            failed++
            println("FAILED  $name (${started.elapsedNow().inWholeMilliseconds} ms): $t")
            t.printStackTrace(System.out)
        }
        System.out.flush()
    }
    println("kotlin: $passed passed, $failed failed")
    System.out.flush()
    exitProcess(if (failed == 0 && passed > 0) 0 else 1)
}
