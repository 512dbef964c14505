package dev.msocket.samples.android.stream

import org.junit.Assert.assertEquals
import org.junit.Test
import dev.msocket.PathPolicy
import dev.msocket.samples.stream.PlayoutBuffer
import dev.msocket.samples.stream.Share
import dev.msocket.samples.stream.StreamReport

class StreamUiStateTest {
    private val playing = StreamUiState(
        phase = Phase.RUNNING,
        settings = StreamSettings(role = Role.PLAY, name = " tv "),
        status = "playing from ab12",
    )

    @Test
    fun theServiceRunsWhileAStreamStartsOrRuns() {
        assertEquals(
            listOf(false, true, true, false),
            listOf(Phase.SETUP, Phase.CONNECTING, Phase.RUNNING, Phase.DONE).map { StreamUiState(phase = it).running },
        )
    }

    @Test
    fun theNotificationShowsTheStatusUntilTheFirstReportThenTheReport() {
        assertEquals("Playing as tv" to "playing from ab12", playing.notification())
        val report = StreamReport(
            elapsedMs = 3000, rateKbps = 1984, bufferMs = 1500, playing = PlayoutBuffer.State.PLAYING, stalls = 2,
            longestStallMs = 400, paths = listOf(Share("wifi/direct", 900, 90), Share("cell/relayed", 100, 10)),
            policy = PathPolicy.BACKUP, energyJoules = 1.5, chunks = 30, skipped = 0,
        )
        assertEquals(
            "Playing as tv" to "1984 kbit/s, buffer 1.5 s, 2 stalls, wifi/direct:90%,cell/relayed:10%, backup",
            playing.copy(report = report).notification(),
        )
        val sending = StreamUiState(phase = Phase.RUNNING, settings = StreamSettings(role = Role.SEND, name = "tv#ab12"))
        assertEquals(
            "Sending to tv#ab12" to "500 kbit/s, none",
            sending.copy(report = report.copy(rateKbps = 500, bufferMs = null, stalls = 0, paths = emptyList(), policy = null))
                .notification(),
        )
    }
}
