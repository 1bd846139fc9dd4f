"""Text to speech: a speakable chunk of text in, audio chunks out as they are synthesised."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

from convers.contracts.audio import AudioFrame


@runtime_checkable
class TextToSpeech(Protocol):
    """Yields PCM16 frames at `sample_rate` while synthesis goes on, so playback can start early."""

    name: str
    sample_rate: int

    def synthesize(self, text: str) -> AsyncGenerator[AudioFrame, None]: ...
