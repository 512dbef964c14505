package dev.msocket.samples.android.stream

import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Assert.assertTrue
import org.junit.Test

class StreamSettingsTest {
    private val ok = StreamSettings(name = "tv", namesUrl = "tcp://names.example:7450")

    @Test
    fun defaultsAreAStreamThatCanStart() {
        assertEquals(StreamParams(bitrateKbps = 2000, seconds = 60, bufferMs = 2000), ok.check())
        assertEquals(StreamParams(64, 5, 100), ok.copy(bitrateKbps = " 64 ", seconds = "5", bufferMs = "100").check())
    }

    @Test
    fun eachBadFieldIsNamed() {
        fun error(s: StreamSettings) = assertThrows(IllegalArgumentException::class.java) { s.check() }.message!!
        assertTrue(error(ok.copy(bitrateKbps = "fast")).startsWith("Bitrate: \"fast\" is not a whole number"))
        assertEquals("Bitrate: 7 is outside 8 to 200000", error(ok.copy(bitrateKbps = "7")))
        assertEquals("Length: 0 is outside 1 to 86400", error(ok.copy(seconds = "0")))
        assertEquals("Buffer: 60001 is outside 100 to 60000", error(ok.copy(bufferMs = "60001")))
        assertEquals("Give the name to listen on", error(ok.copy(name = " ")))
        assertEquals("Give the player's name", error(ok.copy(role = Role.SEND, name = "")))
        assertEquals("Give the name service's URL", error(ok.copy(namesUrl = "")))
    }

    @Test
    fun relaysAreSplitOnCommasAndSpaces() {
        assertEquals(listOf("r1:7451", "r2:7451"), ok.copy(relays = "r1:7451,r2:7451").relayList)
    }
}
