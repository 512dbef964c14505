/*
 * A plain test runner for the host JVM (no Gradle, no JUnit runner here): each test is a
 * named function; one line per test; a closing "kotlin: N passed, N failed" line; exit
 * status 1 if any failed. ci/mobile compiles and runs it against the real native library
 * and a real msocketd name service (its URL in the system property `msocket.names`).
 */
package dev.msocket.test

import kotlin.system.exitProcess
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.runBlocking
import kotlin.time.TimeSource

class TestCase(val name: String, val body: () -> Unit)

/** Collects tests in declaration order. */
class Suite {
    val cases = mutableListOf<TestCase>()

    fun test(name: String, body: () -> Unit) {
        cases += TestCase(name, body)
    }

    /** A test that runs in a coroutine (the SDK's suspend API). */
    fun testBlocking(name: String, body: suspend CoroutineScope.() -> Unit) = test(name) { runBlocking(block = body) }
}

fun main(args: Array<String>) {
    val suite = Suite()
    trackerTests(suite)
    apiTests(suite)
    asyncTests(suite)
    trustTests(suite)
    keyFileTests(suite)
    val only = args.toSet()
    var passed = 0
    var failed = 0
    for (case in suite.cases) {
        if (only.isNotEmpty() && case.name !in only) continue
        val started = TimeSource.Monotonic.markNow()
        try {
            case.body()
            passed++
            println("ok      ${case.name} (${started.elapsedNow().inWholeMilliseconds} ms)")
        } catch (t: Throwable) {
            failed++
            println("FAILED  ${case.name} (${started.elapsedNow().inWholeMilliseconds} ms): $t")
            t.printStackTrace(System.out)
        }
        System.out.flush()
    }
    println("kotlin: $passed passed, $failed failed")
    System.out.flush()
    // Native threads (the SDK's runtime) must not keep a failed run alive.
    exitProcess(if (failed == 0 && passed > 0) 0 else 1)
}
