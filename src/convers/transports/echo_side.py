"""EchoSide: what a transport with an echo canceller tells the session about it (`EchoCancellingTransport`).

The local transport and the browser's WebSocket transport each hold an `EchoCancelling` (or None,
when echo cancellation is off or the client cancels its own echo); both answer the session's
questions about it the same way, from here.
"""

from __future__ import annotations

from convers.contracts.audio import AudioFrame
from convers.echo_cancelling import EchoCancelling


class EchoSide:
    """The `EchoCancellingTransport` side of a transport, read from its `echo` (None: no canceller here)."""

    echo: EchoCancelling | None

    @property
    def echo_learning(self) -> bool:
        """The echo canceller has not yet learnt the room (the barge-in arbiter waits a little longer)."""
        return self.echo is not None and self.echo.learning

    @property
    def echo_double_talk(self) -> bool:
        """Someone speaks over the agent, by what the canceller could not remove (the arbiter pauses sooner)."""
        return self.echo is not None and self.echo.double_talk

    def echo_removed_db(self, span_s: float, ago_s: float = 0.0) -> float | None:
        """How much of that stretch of the microphone the linear echo filter explained as the agent's echo (dB)."""
        return self.echo.witness_removed_db(span_s, ago_s) if self.echo is not None else None

    def echo_unsuppressed(self, audio: AudioFrame, since: AudioFrame | None = None) -> AudioFrame | None:
        """`audio` (from the start of `since`) through the linear echo filter alone (the transcript of a voice over the agent while the canceller learns)."""
        return self.echo.unsuppressed(audio, since) if self.echo is not None else None

    def echo_microphone(self, audio: AudioFrame, since: AudioFrame | None = None) -> AudioFrame | None:
        """`audio` (from the start of `since`) as the microphone heard it (a second reading of a voice over the agent while the canceller learns)."""
        return self.echo.microphone(audio, since) if self.echo is not None else None
