/* The player's buffer under virtual time: start-up, stalls measured exactly, the end. */
package dev.msocket.samples.test

import kotlin.test.assertEquals
import dev.msocket.samples.stream.PlayoutBuffer
import dev.msocket.samples.stream.PlayoutBuffer.State

fun playoutTests(s: Suite) {
    s.test("playback starts once the buffer is full and drains in real time") {
        val p = PlayoutBuffer(1000)
        for (i in 0 until 10) p.add(100, 100L * i)
        assertEquals(State.PLAYING, p.state)
        assertEquals(900, p.startupMs)
        assertEquals(1000, p.bufferedMs(900))
        for (i in 10 until 30) p.add(100, 100L * i)
        assertEquals(1000, p.bufferedMs(2900))
        assertEquals(emptyList(), p.stalls)
    }

    s.test("an outage longer than the buffer stalls from the moment it ran dry until it is full again") {
        val p = PlayoutBuffer(1000)
        for (i in 0 until 10) p.add(100, 0)
        // Nothing arrives for 3 s: dry at 1000, stalled until the backlog refills it at 3000.
        assertEquals(State.STALLED, p.also { it.bufferedMs(1500) }.state)
        assertEquals(700, p.currentStallMs(1700))
        for (i in 0 until 30) p.add(100, 3000)
        assertEquals(State.PLAYING, p.state)
        assertEquals(listOf(2000L), p.stalls)
        assertEquals(2000, p.longestStallMs(3000))
        assertEquals(3000, p.bufferedMs(3000))
    }

    s.test("an outage shorter than the buffer never stalls") {
        val p = PlayoutBuffer(2000)
        for (i in 0 until 20) p.add(100, 0)
        for (i in 0 until 15) p.add(100, 1500)
        assertEquals(State.PLAYING, p.state)
        assertEquals(emptyList(), p.stalls)
        assertEquals(2000, p.bufferedMs(1500))
    }

    s.test("the end plays out what is held, without waiting for a full buffer") {
        val p = PlayoutBuffer(1000)
        p.add(300, 0)
        p.end(50)
        assertEquals(State.PLAYING, p.state)
        assertEquals(50, p.startupMs)
        assertEquals(0, p.bufferedMs(400))
        assertEquals(State.DONE, p.state)
        assertEquals(emptyList(), p.stalls)
        assertEquals(300, p.playedMs)
    }
}
