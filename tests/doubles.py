"""Test doubles for engine tests: a scripted LLM, a synthetic TTS, a recording transport, a memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from convers.contracts.audio import AudioFormat, AudioFrame
from convers.contracts.llm import ChatMessage, LlmError
from convers.contracts.memory import MemoryHit, MemoryTurn
from convers.contracts.transport import InboundAudio, InboundEvent, InboundPlayed

# A safety net only: a session that stops reading its transport fails the test instead of hanging it.
DELIVERY_TIMEOUT_S = 5.0


class ScriptedLlm:
    """Streams the given tokens with a delay between them; records prompts and whether it was closed."""

    name = "scripted"

    def __init__(self, tokens: Sequence[str], delay_s: float = 0.0, fail: str | None = None) -> None:
        self.tokens = list(tokens)
        self.delay_s = delay_s
        self.fail = fail
        self.prompts: list[list[ChatMessage]] = []
        self.closed_early = False
        self.sent = 0

    async def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, temperature: float | None = None
    ) -> AsyncIterator[str]:
        self.prompts.append(list(messages))
        if self.fail:
            raise LlmError(self.fail)
        finished = False
        try:
            for token in self.tokens:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                self.sent += 1
                yield token
            finished = True
        finally:
            if not finished:
                self.closed_early = True


class ToneTts:
    """Yields 10 ms of a tone per character, in 50 ms pieces: a real-time-shaped synthetic voice."""

    name = "tone"

    def __init__(self, sample_rate: int = 16000, delay_s: float = 0.0) -> None:
        self.sample_rate = sample_rate
        self.delay_s = delay_s
        self.texts: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        self.texts.append(text)
        total = int(self.sample_rate * 0.01 * len(text))
        piece = int(self.sample_rate * 0.05)
        for start in range(0, total, piece):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield AudioFrame(b"\x10\x00" * min(piece, total - start), self.sample_rate)


@dataclass
class RecordingTransport:
    """Feeds scripted inbound events and records everything the session sends, in order.

    `deliver` hands the running session one event and returns once the session has acted on it
    (its listen loop asked for the next one), so a test steps a session frame by frame.
    """

    output_format: AudioFormat = AudioFormat(sample_rate=16000)
    name: str = "recording"
    log: list[tuple[str, Any]] = field(default_factory=list)
    inbox: asyncio.Queue[InboundEvent | None] = field(default_factory=asyncio.Queue)
    handled: asyncio.Queue[InboundEvent] = field(default_factory=asyncio.Queue)
    # The session has started reading (its listen loop is up).
    reading: bool = False

    async def inbound(self) -> AsyncIterator[InboundEvent]:
        self.reading = True
        while True:
            event = await self.inbox.get()
            if event is None:
                return
            yield event
            self.handled.put_nowait(event)  # the session is back for more: it has acted on `event`

    async def deliver(self, event: InboundEvent) -> None:
        """One inbound event, acted on by the session's listen loop (which must be running)."""
        await self.inbox.put(event)
        await asyncio.wait_for(self.handled.get(), DELIVERY_TIMEOUT_S)

    async def send_audio(self, turn: int, seq: int, frame: AudioFrame) -> None:
        self.log.append(("audio", (turn, seq, frame)))

    async def send_event(self, event: dict[str, Any]) -> None:
        self.log.append(("event", event))

    async def flush(self, turn: int) -> None:
        self.log.append(("flush", turn))

    async def pause(self, turn: int) -> None:
        self.log.append(("pause", turn))

    async def resume(self, turn: int) -> None:
        self.log.append(("resume", turn))

    async def close(self) -> None:
        self.log.append(("close", None))

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for k, e in self.log if k == "event" and e.get("type") == kind]

    def reply_text(self, turn: int) -> str:
        return "".join(e.get("delta", "") for e in self.events("reply") if e.get("turn") == turn)

    def audio(self, turn: int | None = None) -> list[tuple[int, int, AudioFrame]]:
        return [a for k, a in self.log if k == "audio" and (turn is None or a[0] == turn)]


@dataclass
class ListMemory:
    """Remembers in a list; recall returns fixed hits after an optional delay."""

    hits: list[MemoryHit] = field(default_factory=list)
    recall_delay_s: float = 0.0
    profile: str = ""
    greeting_text: str = "Hello! I'm Juniper. What's your name?"
    remembered: list[tuple[str, str, str]] = field(default_factory=list)

    def profile_text(self) -> str:
        return self.profile

    async def recall(self, query: str) -> list[MemoryHit]:
        await asyncio.sleep(self.recall_delay_s)
        return self.hits

    def remember(self, session: str, role: str, speaker: str, text: str) -> None:
        self.remembered.append((role, speaker, text))

    async def greeting(self, agent_name: str) -> str:
        return self.greeting_text

    async def aclose(self) -> None:
        return None


def hit(text: str, score: float = 0.9, speaker: str = "Sam", id: str = "t1") -> MemoryHit:
    turn = MemoryTurn(
        id=id, session="s0", time=datetime(2026, 1, 5, tzinfo=UTC), speaker=speaker, role="user", text=text
    )
    return MemoryHit(id=id, text=text, score=score, turn=turn)


MIC_RATE = 16000
MIC_FRAME_S = 0.02


class LoudnessVad:
    """Speech is anything loud: exact and instant, so tests are about the session, not the model."""

    sample_rate = MIC_RATE
    frame_samples = 320

    def speech_probability(self, pcm: bytes) -> float:
        return 1.0 if np.abs(np.frombuffer(pcm, dtype="<i2")).max(initial=0) > 1000 else 0.0

    def reset(self) -> None:
        return None


class FakeClock:
    """A monotonic clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def mic_frame(loud: bool) -> AudioFrame:
    """20 ms of microphone audio: a loud constant (speech to LoudnessVad) or silence."""
    return AudioFrame(np.full(int(MIC_RATE * MIC_FRAME_S), 8000 if loud else 0, dtype="<i2").tobytes(), MIC_RATE)


class RunningSession:
    """A session's `run()` as a task, stepped through its transport; `stop` ends it like a client leaving."""

    def __init__(self, session: Any, transport: RecordingTransport) -> None:
        self.session = session
        self.transport = transport
        self.task: asyncio.Task[None] = asyncio.create_task(session.run())

    @classmethod
    async def start(cls, session: Any, transport: RecordingTransport) -> RunningSession:
        """Starts `session.run()` and returns once its listen loop reads the transport."""
        running = cls(session, transport)
        for _ in range(100):
            if transport.reading:
                return running
            await asyncio.sleep(0)
        raise AssertionError("the session never started reading its transport")

    async def hear(self, frame: AudioFrame) -> None:
        await self.transport.deliver(InboundAudio(frame))

    async def played(self, turn: int, ms: float) -> None:
        await self.transport.deliver(InboundPlayed(turn=turn, ms=int(ms)))

    async def settle(self) -> None:
        """Until every task but the listen loop is done: transcriptions, replies, background sends."""
        await quiesce(self.task)

    async def stop(self) -> None:
        await self.transport.inbox.put(None)
        await asyncio.wait_for(self.task, DELIVERY_TIMEOUT_S)


async def quiesce(*waiting: asyncio.Task[Any]) -> None:
    """Runs the loop until no task is left but the caller and `waiting` (tasks that wait for input).

    A task that finishes may start another (a transcript starts a reply), so it looks again until
    none is left; no wall-clock sleep, so a test on a fake clock stays exact.
    """
    me = asyncio.current_task()
    for _ in range(1000):
        for _ in range(3):
            await asyncio.sleep(0)  # let callbacks scheduled by the last step create their tasks
        others = [t for t in asyncio.all_tasks() if t is not me and t not in waiting and not t.done()]
        if not others:
            return
        _done, pending = await asyncio.wait(others, timeout=DELIVERY_TIMEOUT_S)
        if pending:
            raise AssertionError(f"session tasks still running after {DELIVERY_TIMEOUT_S} s: {pending}")
    raise AssertionError("tasks kept starting other tasks: the session never settled")
