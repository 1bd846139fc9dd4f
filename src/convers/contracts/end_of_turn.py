"""End of turn: how likely the user has finished speaking, judged from their utterance so far."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from convers.contracts.audio import AudioFrame


@runtime_checkable
class TurnEndModel(Protocol):
    """Judges, during a pause, whether the user's turn is complete.

    `audio` is the current utterance up to now (its pause included), at any sample rate: the
    provider resamples to what its model wants. `transcript` is the live or speculative transcript
    of that audio where one is known (None otherwise); a model that only hears may ignore it.
    The answer is the probability in [0, 1] that the turn is complete, or None for no opinion (the
    silence rule then decides alone). Blocking inference runs off the event loop.
    """

    name: str

    async def done_probability(self, audio: AudioFrame, transcript: str | None = None) -> float | None: ...
