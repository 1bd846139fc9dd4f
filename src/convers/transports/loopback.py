"""A transport that behaves like a real client without one: a scripted microphone and a simulated speaker.

Tests and benchmarks use it to run a whole voice session in-process. The microphone streams 20 ms
frames in real time (or `speed` times faster): silence, and the utterances given to `say`. The
speaker plays what the session sends in real time, honours pause/resume/flush per turn like the
browser page, and reports `InboundPlayed(turn, ms)` as it goes. Everything is recorded with
timestamps on `clock` (time.monotonic by default, the clock the EventLog uses).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from convers.audio import read_wav, resample
from convers.config import ProviderOptions, provider_options
from convers.contracts.audio import AudioFormat, AudioFrame
from convers.contracts.provider import Availability
from convers.contracts.transport import (
    InboundAudio,
    InboundEvent,
    InboundPlayed,
    InboundText,
)

if TYPE_CHECKING:
    from convers.config import Settings

_END = object()


@dataclass(frozen=True)
class SentAudio:
    """One outbound frame as the session sent it; `dropped` when it arrived for a flushed turn."""

    turn: int
    seq: int
    frame: AudioFrame
    at: float
    dropped: bool = False


@dataclass(frozen=True)
class Record:
    """Something that happened on the transport: flush, pause, resume, event, say_start, play_start, ..."""

    kind: str
    at: float
    turn: int | None = None
    data: Any = None


@dataclass
class _Utterance:
    pcm: bytes
    done: asyncio.Future[float]
    position: int = 0  # bytes already streamed
    started: bool = False


@dataclass
class _Queued:
    turn: int
    pcm: bytes
    sample_rate: int
    position: int = 0  # bytes already played


@dataclass
class _TurnPlayback:
    played_ms: float = 0.0
    reported_ms: int = -1
    heard: bytearray = field(default_factory=bytearray)
    sample_rate: int = 0


class LoopbackTransport:
    """A scripted microphone and a real-time simulated speaker (see the module docstring)."""

    name = "loopback"

    def __init__(
        self,
        *,
        input_rate: int = 16000,
        output_format: AudioFormat | None = None,
        speed: float = 1.0,
        frame_ms: int = 20,
        report_every_ms: int = 100,
        noise_rms: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"loopback speed must be positive, got {speed!r}")
        self.input_rate = input_rate
        self.output_format = output_format or AudioFormat(sample_rate=16000)
        self.speed = speed
        self.frame_ms = frame_ms
        self.frame_samples = input_rate * frame_ms // 1000
        self.report_every_ms = report_every_ms
        # Gaussian hiss under the microphone (fraction of full scale), so energy VADs see a floor.
        self.noise_rms = noise_rms
        self.clock = clock
        self.sent: list[SentAudio] = []
        self.records: list[Record] = []
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.playback: dict[int, _TurnPlayback] = {}
        self.mic_started_at: float | None = None
        self._inbox: asyncio.Queue[object] = asyncio.Queue()
        self._utterances: deque[_Utterance] = deque()
        self._scheduled: list[tuple[float, _Utterance]] = []
        self._speaker: deque[_Queued] = deque()
        self._paused: set[int] = set()
        self._flushed_through = 0
        self._finish_after_s: float | None = None
        self._closed = False
        self._wake_speaker = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = np.random.default_rng(0)
        self._frames_sent = 0
        # Audio given before the event loop runs (from_settings); queued when inbound() starts.
        self._initial: list[AudioFrame | Path] = []

    # ----------------------------------------------------------------- provider convention

    class Options(ProviderOptions):
        """transport.options for the loopback transport."""

        wav: Path | None = None
        speed: float = Field(default=1.0, gt=0)
        noise_rms: float = Field(default=0.0, ge=0)
        finish_after_s: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LoopbackTransport:
        """Options (settings.transport.options): `wav` (played into the mic at start), `speed`, `noise_rms`,
        `finish_after_s` (end the conversation that long after the WAV, as a caller hanging up)."""
        options = provider_options(cls.Options, settings, "transport", "loopback")
        transport = cls(speed=options.speed, noise_rms=options.noise_rms)
        if options.wav:
            transport._initial.append(options.wav.expanduser())
        if options.finish_after_s is not None:
            transport.finish(options.finish_after_s)
        return transport

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        return Availability(True, "built in (simulated microphone and speaker, for tests and benchmarks)")

    # ----------------------------------------------------------------- scripting the microphone

    def say_nowait(self, audio: AudioFrame | Path | str, at_s: float | None = None) -> asyncio.Future[float]:
        """Queues audio into the mic stream (after what is queued, or at `at_s` of mic time).

        Returns a future set to the clock time when the last sample has been streamed.
        """
        frame = read_wav(audio) if isinstance(audio, (Path, str)) else audio
        frame = resample(frame, self.input_rate)
        utterance = _Utterance(frame.pcm, asyncio.get_running_loop().create_future())
        if at_s is None:
            self._utterances.append(utterance)
        else:
            self._scheduled.append((at_s, utterance))
            self._scheduled.sort(key=lambda item: item[0])
        return utterance.done

    async def say(self, audio: AudioFrame | Path | str, at_s: float | None = None) -> float:
        """Streams audio into the mic like a person speaking; returns when it has all been sent."""
        return await self.say_nowait(audio, at_s)

    def type_text(self, text: str) -> None:
        """Typed input, as the browser page's text box would send it."""
        self._inbox.put_nowait(InboundText(text))

    def finish(self, after_s: float = 0.0) -> None:
        """Ends the inbound stream once queued speech is sent and `after_s` more of silence has passed."""
        self._finish_after_s = after_s

    @property
    def mic_time_s(self) -> float:
        """Seconds of audio the microphone has streamed so far."""
        return self._frames_sent * self.frame_ms / 1000

    # ----------------------------------------------------------------- Transport

    async def inbound(self) -> AsyncIterator[InboundEvent]:
        if not self._tasks:
            for audio in self._initial:
                self.say_nowait(audio)
            self._initial.clear()
            self._tasks = [asyncio.create_task(self._run_mic()), asyncio.create_task(self._run_speaker())]
        while True:
            item = await self._inbox.get()
            if item is _END:
                return
            yield item  # type: ignore[misc]

    async def send_audio(self, turn: int, seq: int, frame: AudioFrame) -> None:
        dropped = turn <= self._flushed_through
        self.sent.append(SentAudio(turn, seq, frame, self.clock(), dropped))
        if dropped or not frame.pcm:
            return  # late frame of a flushed turn: a real client drops it too
        self._speaker.append(_Queued(turn, frame.pcm, frame.sample_rate))
        self._wake_speaker.set()

    async def send_event(self, event: dict[str, Any]) -> None:
        self.events.append((self.clock(), dict(event)))

    async def flush(self, turn: int) -> None:
        self._flushed_through = max(self._flushed_through, turn)
        self._speaker = deque(q for q in self._speaker if q.turn > turn)
        self._record("flush", turn)
        for number, playback in self.playback.items():
            if number <= turn:
                self._report(number, playback, force=True)
        self._wake_speaker.set()

    async def pause(self, turn: int) -> None:
        self._paused.add(turn)
        self._record("pause", turn)

    async def resume(self, turn: int) -> None:
        self._paused.discard(turn)
        self._record("resume", turn)
        self._wake_speaker.set()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._record("close", None)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, utterance in self._scheduled:
            utterance.done.cancel()
        for utterance in self._utterances:
            utterance.done.cancel()
        self._inbox.put_nowait(_END)

    # ----------------------------------------------------------------- what happened

    def played_ms(self, turn: int) -> float:
        playback = self.playback.get(turn)
        return playback.played_ms if playback else 0.0

    def heard(self, turn: int) -> AudioFrame:
        """The audio of `turn` the simulated listener actually heard."""
        playback = self.playback.get(turn)
        if playback is None:
            return AudioFrame(b"", self.output_format.sample_rate)
        return AudioFrame(bytes(playback.heard), playback.sample_rate)

    def records_of(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.kind == kind]

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e.get("type") == kind]

    def sent_audio(self, turn: int | None = None) -> list[SentAudio]:
        return [s for s in self.sent if turn is None or s.turn == turn]

    # ----------------------------------------------------------------- microphone task

    async def _run_mic(self) -> None:
        frame_s = self.frame_ms / 1000
        start = self.clock()
        self.mic_started_at = start
        index = 0
        idle_since: float | None = None
        while True:
            audio_t = index * frame_s
            while self._scheduled and self._scheduled[0][0] <= audio_t + 1e-9:
                self._utterances.append(self._scheduled.pop(0)[1])
            pcm = self._next_mic_pcm()
            # A frame exists once its last sample has been captured.
            deadline = start + (index + 1) * frame_s / self.speed
            delay = deadline - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            self._inbox.put_nowait(InboundAudio(AudioFrame(pcm, self.input_rate)))
            index += 1
            self._frames_sent = index
            self._complete_utterances()
            if self._finish_after_s is not None and not self._utterances and not self._scheduled:
                idle_since = audio_t if idle_since is None else idle_since
                if audio_t + frame_s - idle_since >= self._finish_after_s - 1e-9:
                    self._record("mic_end", None)
                    self._inbox.put_nowait(_END)
                    return
            else:
                idle_since = None

    def _next_mic_pcm(self) -> bytes:
        needed = self.frame_samples * 2
        out = bytearray()
        while len(out) < needed and self._utterances:
            utterance = self._utterances[0]
            if not utterance.started:
                utterance.started = True
                self._record("say_start", None, data={"duration_s": len(utterance.pcm) / 2 / self.input_rate})
            take = utterance.pcm[utterance.position : utterance.position + needed - len(out)]
            utterance.position += len(take)
            out.extend(take)
            if utterance.position >= len(utterance.pcm):
                break  # the rest of the frame is silence: the next utterance starts on a frame boundary
        out.extend(b"\x00" * (needed - len(out)))
        if self.noise_rms > 0:
            samples = np.frombuffer(bytes(out), dtype="<i2").astype(np.float32)
            samples += self._rng.normal(0.0, self.noise_rms * 32768.0, len(samples)).astype(np.float32)
            out = bytearray(np.clip(samples, -32768, 32767).astype("<i2").tobytes())
        return bytes(out)

    def _complete_utterances(self) -> None:
        while self._utterances and self._utterances[0].position >= len(self._utterances[0].pcm):
            utterance = self._utterances.popleft()
            at = self.clock()
            self._record("say_end", None)
            if not utterance.done.done():
                utterance.done.set_result(at)

    # ----------------------------------------------------------------- speaker task

    async def _run_speaker(self) -> None:
        tick_s = 0.01  # the simulated sound card plays in 10 ms periods
        while True:
            if not self._playable():
                self._wake_speaker.clear()
                await self._wake_speaker.wait()
                continue
            await asyncio.sleep(tick_s / self.speed)
            if self._playable():
                self._play(tick_s)

    def _playable(self) -> bool:
        return bool(self._speaker) and self._speaker[0].turn not in self._paused

    def _play(self, seconds: float) -> None:
        head = self._speaker[0]
        turn = head.turn
        playback = self.playback.setdefault(turn, _TurnPlayback(sample_rate=head.sample_rate))
        if playback.played_ms == 0.0 and not playback.heard:
            self._record("play_start", turn)
        remaining = round(seconds * head.sample_rate) * 2
        while remaining > 0 and self._speaker and self._speaker[0].turn == turn:
            item = self._speaker[0]
            piece = item.pcm[item.position : item.position + remaining]
            item.position += len(piece)
            remaining -= len(piece)
            playback.heard.extend(piece)
            playback.played_ms += len(piece) / 2 / item.sample_rate * 1000
            if item.position >= len(item.pcm):
                self._speaker.popleft()
        drained = not self._speaker or self._speaker[0].turn != turn
        self._report(turn, playback, force=drained)

    def _report(self, turn: int, playback: _TurnPlayback, force: bool) -> None:
        ms = round(playback.played_ms)
        due = ms - max(playback.reported_ms, 0) >= self.report_every_ms
        if ms != playback.reported_ms and (force or due):
            playback.reported_ms = ms
            self._inbox.put_nowait(InboundPlayed(turn=turn, ms=ms))
            self._record("played", turn, data=ms)

    def _record(self, kind: str, turn: int | None, data: Any = None) -> None:
        self.records.append(Record(kind, self.clock(), turn, data))
