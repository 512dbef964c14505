/*
 * Runs the Robolectric tests with JUnit 4 (no Gradle here): one line per test and API
 * level, a closing "robolectric: N passed, N failed, N skipped" line, exit status 1 if any
 * failed or none ran. Arguments: only the test methods whose names contain one of them.
 */
package dev.msocket.robolectric

import kotlin.system.exitProcess
import org.junit.runner.Description
import org.junit.runner.JUnitCore
import org.junit.runner.Request
import org.junit.runner.Result
import org.junit.runner.manipulation.Filter
import org.junit.runner.notification.Failure
import org.junit.runner.notification.RunListener

fun main(args: Array<String>) {
    val core = JUnitCore()
    val started = HashMap<Description, Long>()
    val failed = HashSet<Description>()
    core.addListener(object : RunListener() {
        override fun testStarted(d: Description) {
            started[d] = System.nanoTime()
        }

        override fun testFailure(f: Failure) {
            failed += f.description
            println("FAILED  ${f.description.displayName}: ${f.message}")
            println(f.trace)
        }

        override fun testAssumptionFailure(f: Failure) {
            println("skipped ${f.description.displayName}: ${f.message}")
        }

        override fun testIgnored(d: Description) {
            println("skipped ${d.displayName}")
        }

        override fun testFinished(d: Description) {
            val ms = (System.nanoTime() - (started[d] ?: System.nanoTime())) / 1_000_000
            if (d !in failed) println("ok      ${d.displayName} ($ms ms)")
            System.out.flush()
        }
    })
    var request = Request.aClass(BridgeTest::class.java)
    if (args.isNotEmpty()) {
        request = request.filterWith(object : Filter() {
            override fun shouldRun(d: Description): Boolean =
                d.methodName == null || args.any { d.methodName.contains(it) }

            override fun describe() = "methods containing one of ${args.toList()}"
        })
    }
    val result: Result = core.run(request)
    val skipped = result.ignoreCount + result.assumptionFailureCount
    val passed = result.runCount - result.failureCount - result.assumptionFailureCount
    println("robolectric: $passed passed, ${result.failureCount} failed, $skipped skipped")
    System.out.flush()
    // The native library's threads must not keep the JVM alive.
    exitProcess(if (result.failureCount == 0 && passed > 0) 0 else 1)
}
