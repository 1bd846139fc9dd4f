"""Speech to text: a finished utterance in, words out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from convers.contracts.audio import AudioFrame


@dataclass(frozen=True)
class Transcript:
    """What the recogniser heard, and how long decoding took."""

    text: str
    decode_s: float = 0.0
    language: str | None = None


@runtime_checkable
class SpeechToText(Protocol):
    """Transcribes audio at `sample_rate` (callers resample to it). Decoding must not block the loop."""

    name: str
    sample_rate: int

    async def transcribe(self, audio: AudioFrame) -> Transcript: ...


@runtime_checkable
class SpeechStream(Protocol):
    """One utterance decoded while it is spoken. `feed` returns at once; decoding runs in the background."""

    def feed(self, audio: AudioFrame) -> None: ...

    async def finish(self) -> Transcript:
        """The transcript of everything fed; only the decoder's last step is left to wait for."""
        ...

    async def cancel(self) -> None: ...


@runtime_checkable
class StreamingSpeechToText(SpeechToText, Protocol):
    """Optional: an STT that can decode during the utterance, so the end of a turn leaves little to do."""

    def open_stream(self) -> SpeechStream: ...
