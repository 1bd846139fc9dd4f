"""Echo cancellers: take the agent's own voice out of the microphone, given what the speaker played."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class EchoCanceller(Protocol):
    """Removes the echo of the far end (what the speaker played) from the near end (the microphone).

    Works on blocks of exactly `frame_samples` PCM16 mono samples at `sample_rate`, both ways, fed
    in the order they happen: each played block through `render` as it plays, each microphone block
    through `capture` as it is captured. The canceller finds and tracks the delay between the two.
    `convers.echo_cancelling.EchoCancelling` feeds one from streams of any rate and block size.
    """

    name: str
    sample_rate: int
    frame_samples: int

    def render(self, pcm: bytes) -> None:
        """One block of what the speaker played (the reference)."""
        ...

    def capture(self, pcm: bytes) -> bytes:
        """One block of the microphone; returns it with the echo removed (same length)."""
        ...
