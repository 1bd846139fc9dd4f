"""The listen side of a session: inbound audio -> VAD rate -> VAD-sized frames -> TurnTaker events."""

from __future__ import annotations

from convers.audio import Rechunker, StreamResampler
from convers.contracts.audio import AudioFrame
from convers.contracts.vad import Vad
from convers.engine.listening.turn_taking import TurnEvent, TurnTaker
from convers.policies import TurnTiming


class Listener:
    """Scores every inbound frame with the VAD and feeds the TurnTaker; cheap enough for the event loop.

    Timestamps are wall-clock (the caller's `now` at arrival), spread back over the frames that one
    inbound message held, so "end of speech" is when the user stopped, not when a batch arrived.
    """

    def __init__(self, vad: Vad, timing: TurnTiming) -> None:
        self.vad = vad
        self.turns = TurnTaker(timing, sample_rate=vad.sample_rate)
        self._rechunker = Rechunker(vad.frame_samples, vad.sample_rate)
        self._resampler: StreamResampler | None = None
        # The VAD's score of the latest whole frame (0 before the first).
        self.last_probability = 0.0

    @property
    def voice_s(self) -> float:
        """How long the user's voice has lasted in the current utterance (0 when silent)."""
        return self.turns.voice_s

    def feed(self, frame: AudioFrame, now: float) -> list[TurnEvent]:
        rate = self.vad.sample_rate
        if frame.sample_rate != rate:
            if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
                self._resampler = StreamResampler(frame.sample_rate, rate)
            frame = self._resampler.push(frame)
        chunks = self._rechunker.push(frame)
        events: list[TurnEvent] = []
        step = self.vad.frame_samples
        for index, chunk in enumerate(chunks):
            later_samples = (len(chunks) - 1 - index) * step + self._rechunker.pending_samples
            at = now - later_samples / rate
            probability = self.last_probability = self.vad.speech_probability(chunk.pcm)
            events.extend(self.turns.feed(probability, at, chunk))
        # The part of a VAD frame that has arrived already tells, by loudness, whether the voice
        # goes on (the barge-in minimum) or the turn is over (the end-of-turn silence).
        self.turns.note_unscored(now, self._rechunker.pending)
        events.extend(self.turns.end_if_quiet(now, self._rechunker.pending))
        return events
