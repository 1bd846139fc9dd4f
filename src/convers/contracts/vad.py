"""Voice activity detection: one speech probability per frame."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Vad(Protocol):
    """Scores fixed-size frames of PCM16 mono audio at `sample_rate`.

    `frame_samples` is the frame size the model wants; the caller re-chunks audio to it.
    The call is synchronous because it is cheap (well under a millisecond per frame).
    """

    sample_rate: int
    frame_samples: int

    def speech_probability(self, pcm: bytes) -> float:
        """Probability in [0, 1] that this frame holds speech."""
        ...

    def reset(self) -> None:
        """Forget any state carried between frames (new stream)."""
        ...


@runtime_checkable
class SharedModelVad(Vad, Protocol):
    """Optional: a VAD whose model can serve several audio streams, each with its own state.

    A server keeps one such VAD and gives every connection `new_stream()`, so the model is loaded
    once per process while the state carried between frames stays per stream.
    """

    def new_stream(self) -> Vad:
        """A VAD for another stream: the same model, fresh state."""
        ...
