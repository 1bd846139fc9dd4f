"""Transports carry audio and events between a client (browser, sound card, test) and a Session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from convers.contracts.audio import AudioFormat, AudioFrame


@dataclass(frozen=True)
class InboundAudio:
    """Microphone audio from the client."""

    frame: AudioFrame


@dataclass(frozen=True)
class InboundText:
    """Typed input from the client."""

    text: str


@dataclass(frozen=True)
class InboundPlayed:
    """The client reports how many milliseconds of agent turn `turn` it has actually played."""

    turn: int
    ms: int


InboundEvent = InboundAudio | InboundText | InboundPlayed


@runtime_checkable
class Transport(Protocol):
    """One connected client. Every outbound audio frame carries its turn id and sequence number."""

    name: str
    output_format: AudioFormat

    def inbound(self) -> AsyncIterator[InboundEvent]:
        """Events from the client; the iterator ends when the client goes away."""
        ...

    async def send_audio(self, turn: int, seq: int, frame: AudioFrame) -> None: ...

    async def send_event(self, event: dict[str, Any]) -> None:
        """JSON-able events: state, transcript, reply, metrics, error."""
        ...

    async def flush(self, turn: int) -> None:
        """Drop every queued or late frame of `turn` now (barge-in)."""
        ...

    async def pause(self, turn: int) -> None:
        """Stop the speaker but keep the buffer: the interruption may be a cough."""
        ...

    async def resume(self, turn: int) -> None:
        """Continue playback of `turn` where it paused."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class EchoCancellingTransport(Protocol):
    """A transport whose microphone audio has the agent's own voice cancelled out of it."""

    @property
    def echo_learning(self) -> bool:
        """The canceller is still learning the room: some of the agent's voice may get through."""
        ...

    @property
    def echo_double_talk(self) -> bool:
        """The canceller removed little of the latest microphone audio while the agent spoke: someone talks over it."""
        ...

    def echo_removed_db(self, span_s: float, ago_s: float = 0.0) -> float | None:
        """How much of the microphone's `span_s` of audio that ended `ago_s` ago a linear echo filter
        explained as the agent's echo, in dB (much for the agent's echo let through, little for a
        person); None when not known."""
        ...

    def echo_unsuppressed(self, audio: AudioFrame, since: AudioFrame | None = None) -> AudioFrame | None:
        """`audio`, a recent stretch of the cleaned microphone, with the echo only subtracted, not
        suppressed (a voice over the agent whole, some echo left); from the start of the earlier
        stretch `since` when given; None when not at hand."""
        ...

    def echo_microphone(self, audio: AudioFrame, since: AudioFrame | None = None) -> AudioFrame | None:
        """`audio`, a recent stretch of the cleaned microphone, as the microphone heard it (the agent's
        echo and all); from the start of the earlier stretch `since` when given; None when not at hand."""
        ...
