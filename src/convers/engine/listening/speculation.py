"""Speculative turn processing: transcribe (and recall, and optionally ask the LLM) during the end-of-turn silence.

The end-of-turn silence (`end_of_turn_silence_s`, 0.5 s by default) is dead time: the user has
stopped, and the session waits to be sure they are done. The `Speculator` spends it. When the
TurnTaker reports a pause and `post_roll_s` of it has passed, the audio the turn would end with is
fixed; STT and recall start on it as one cancellable task. If the silence confirms the end of the
turn, the session claims the work (the audio must be the same, so the transcript is exactly the
one a normal turn would get); if the user speaks again, the work is thrown away.

Optionally (`llm`) the LLM request starts too, and its tokens are buffered until the turn is
confirmed; and (`tts`) the first speakable chunk of those tokens is synthesised, its audio buffered
the same way. A confirmed turn's reply replays both (`PrefetchedLlm`, `PrefetchedVoice`), so the
first audio leaves as soon as the silence ends.

Cancelling an STT task does not stop a decode already running in a worker thread; the result is
simply dropped. On 2 cores that costs some CPU during a resumed pause, never a wrong transcript.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Generic, TypeVar

from convers.contracts.audio import AudioFrame
from convers.contracts.events import EventKind
from convers.contracts.llm import ChatMessage, LanguageModel, StreamItem
from convers.contracts.memory import MemoryHit
from convers.contracts.stt import SpeechToText, Transcript
from convers.contracts.tts import TextToSpeech
from convers.engine.listening.turn_taking import (
    SpeechPaused,
    SpeechResumed,
    TurnEvent,
    TurnTaker,
)
from convers.engine.reply.sentences import SentenceSplitter
from convers.events import EventLog, TurnMetrics
from convers.policies import SpeculationPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class SpeculativeResult:
    """What a speculation produced, with the monotonic times each part was ready."""

    audio: AudioFrame
    transcript: Transcript
    stt_started_at: float
    stt_done_at: float
    recalled: list[MemoryHit] | None = None
    recall_started_at: float | None = None
    recall_done_at: float | None = None
    prefetch: LlmPrefetch | None = None

    def language_model(self, llm: LanguageModel) -> LanguageModel:
        """`llm`, or a wrapper that answers the prefetched request from its buffer."""
        return llm if self.prefetch is None else PrefetchedLlm(llm, self.prefetch)

    def voice(self, tts: TextToSpeech) -> TextToSpeech:
        """`tts`, or a wrapper that answers the prefetched first chunk from its buffer.

        The first chunk may still be on its way when the reply starts (its tokens arrive after the
        end of turn), so the wrapper looks for its synthesis when the reply asks for it.
        """
        if self.prefetch is None or self.prefetch.voice is None:
            return tts
        return PrefetchedVoice(tts, self.prefetch)

    def mark_replayed(self, metrics: TurnMetrics) -> None:
        """The stage marks of what the reply replayed: the request and synthesis as they really ran, in the silence."""
        prefetch = self.prefetch
        if prefetch is None:
            return
        # Only a replay that gave text (audio): the reply's first token (first audio) then came from it.
        streams: tuple[tuple[BufferedStream[StreamItem] | BufferedStream[AudioFrame] | None, str, str], ...] = (
            (prefetch.deltas, "llm_request", "llm_first_delta"),
            (prefetch.speech, "tts_start", "tts_first_audio"),
        )
        for stream, start, first in streams:
            if stream is not None and stream.replayed and stream.opened_at is not None and stream.first_at is not None:
                metrics.mark(start, stream.opened_at, replace=True)
                metrics.mark(first, stream.first_at, replace=True)

    def discard(self) -> None:
        """Stops whatever is still running (an unclaimed LLM request or synthesis)."""
        if self.prefetch is not None:
            self.prefetch.discard()


Recall = Callable[[str], Awaitable[list[MemoryHit]]]
BuildMessages = Callable[[str, list[MemoryHit]], Sequence[ChatMessage]]


@dataclass
class _Running:
    audio: AudioFrame
    task: asyncio.Task[SpeculativeResult | None]


class Speculator:
    """Starts, discards and hands over the speculative work of one session's turns (see the module docstring)."""

    def __init__(
        self,
        stt: SpeechToText,
        events: EventLog,
        policy: SpeculationPolicy,
        *,
        post_roll_s: float,
        recall: Recall | None = None,
        build_messages: BuildMessages | None = None,
        llm: LanguageModel | None = None,
        tts: TextToSpeech | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        usable_text: Callable[[str], bool] = lambda text: bool(text.strip()),
        transcribe: Callable[[AudioFrame], Awaitable[Transcript]] | None = None,
        on_transcript: Callable[[str], None] | None = None,
    ) -> None:
        self.stt = stt
        # How to get the provisional transcript: a one-shot decode, or a live stream finished early.
        self.transcribe = transcribe or stt.transcribe
        live = transcribe is not None
        self.wait_for_post_roll = live if policy.wait_for_post_roll is None else policy.wait_for_post_roll
        self.events = events
        self.policy = policy
        self.post_roll_s = post_roll_s
        self.recall = recall
        self.build_messages = build_messages
        self.llm = llm
        self.tts = tts
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.usable_text = usable_text
        # Told each provisional transcript as soon as it is decoded (the end-of-turn judge reads it).
        self.on_transcript = on_transcript
        self._pausing = False
        self._running: _Running | None = None
        self.started = 0
        self.committed = 0
        self.discarded = 0

    def observe(self, events: Sequence[TurnEvent], turns: TurnTaker) -> None:
        """Called after every frame the TurnTaker scored, with the events that frame produced."""
        for event in events:
            if isinstance(event, SpeechPaused):
                self._pausing = True
            elif isinstance(event, SpeechResumed):
                self._pausing = False
                self.discard("speech_resumed")
        if turns.state != "pausing":
            self._pausing = False
            return
        if self._pausing and self._running is None:
            audio = turns.provisional_audio(with_post_roll=self.wait_for_post_roll)
            if audio is not None and audio.pcm:
                self._start(audio)

    def claim(self, audio: AudioFrame) -> asyncio.Task[SpeculativeResult | None] | None:
        """The turn ended with `audio`: the speculative work on it, or None (and any other work dropped)."""
        running, self._running = self._running, None
        self._pausing = False
        if running is None:
            return None
        if not self._same_turn(running.audio, audio):
            self._cancel(running, "audio_changed")
            return None
        self.committed += 1
        self.events.emit(EventKind.SPECULATION_COMMIT, audio_s=round(audio.duration_s, 3))
        return running.task

    def discard(self, reason: str) -> None:
        running, self._running = self._running, None
        if running is not None:
            self._cancel(running, reason)

    async def aclose(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)

    # ----------------------------------------------------------------- internals

    def _same_turn(self, provisional: AudioFrame, final: AudioFrame) -> bool:
        """Same speech: the final audio is the provisional one plus at most the post-roll of silence."""
        if provisional.sample_rate != final.sample_rate or not final.pcm.startswith(provisional.pcm):
            return False
        post_roll_bytes = round(self.post_roll_s * final.sample_rate) * 2
        return len(final.pcm) - len(provisional.pcm) <= post_roll_bytes

    def _start(self, audio: AudioFrame) -> None:
        self.started += 1
        self.events.emit(EventKind.SPECULATION_START, audio_s=round(audio.duration_s, 3))
        task = asyncio.create_task(self._work(audio))
        task.add_done_callback(_discard_result)
        self._running = _Running(audio, task)

    def _cancel(self, running: _Running, reason: str) -> None:
        self.discarded += 1
        self.events.emit(EventKind.SPECULATION_DISCARD, reason=reason)
        running.task.cancel()
        # A task that already finished may hold a started LLM request: close it too.
        if running.task.done() and not running.task.cancelled() and running.task.exception() is None:
            result = running.task.result()
            if result is not None:
                result.discard()

    async def _work(self, audio: AudioFrame) -> SpeculativeResult | None:
        started = self.events.now()
        try:
            transcript = await self.transcribe(audio)
        except Exception as error:  # the confirmed turn will transcribe again and report the failure
            log.info("speculative transcription failed: %s", error)
            return None
        result = SpeculativeResult(audio, transcript, started, self.events.now())
        if self.on_transcript is not None:
            self.on_transcript(transcript.text)
        if not self.usable_text(transcript.text):
            return result  # silence or a backchannel: nothing to recall or ask
        if self.recall is not None:
            result.recall_started_at = self.events.now()
            result.recalled = await self.recall(transcript.text)
            result.recall_done_at = self.events.now()
        if self.policy.llm and self.llm is not None and self.build_messages is not None:
            messages = self.build_messages(transcript.text, result.recalled or [])
            voice = self.tts if self.policy.tts else None
            result.prefetch = LlmPrefetch(self.llm, messages, self.max_tokens, self.temperature, voice, self.events.now)
        return result


def _discard_result(task: asyncio.Task[SpeculativeResult | None]) -> None:
    # Retrieve the exception so an abandoned failing task is not logged as "never retrieved".
    if not task.cancelled():
        task.exception()


class BufferedStream(Generic[T]):
    """Reads an async stream in a task of its own into a buffer, for one consumer to replay later.

    `on_item` sees each item as it arrives and `on_end` runs once the stream is done (both inside
    the reading task). An error of the stream is kept and raised to the consumer. `opened_at` and
    `first_at` (the first item `counts` accepts), on `clock`, are a replay's stage marks."""

    def __init__(
        self,
        open_stream: Callable[[], AsyncGenerator[T, None]],
        on_item: Callable[[T], None] = lambda _item: None,
        on_end: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        counts: Callable[[T], bool] = lambda _item: True,
    ) -> None:
        self.items: list[T] = []
        self.done = False
        self.error: BaseException | None = None
        self.claimed = False
        self.replayed = False
        self.opened_at: float | None = None
        self.first_at: float | None = None
        self._clock = clock
        self._counts = counts
        self._on_item = on_item
        self._on_end = on_end
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._pull(open_stream))

    async def _pull(self, open_stream: Callable[[], AsyncGenerator[T, None]]) -> None:
        try:
            self.opened_at = self._clock()
            stream = open_stream()
            async with aclosing(stream):
                async for item in stream:
                    if self.first_at is None and self._counts(item):
                        self.first_at = self._clock()
                    self.items.append(item)
                    self._changed.set()
                    self._on_item(item)
            self._on_end()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # handed to whoever replays the stream
            self.error = error
        finally:
            self.done = True
            self._changed.set()

    def cancel(self) -> None:
        """Closes the stream if it is still being read."""
        self._task.cancel()

    async def replay(self) -> AsyncGenerator[T, None]:
        """The items so far, then the rest as they arrive; closing it early closes the stream."""
        self.replayed = True
        index = 0
        try:
            while True:
                while index < len(self.items):
                    index += 1
                    yield self.items[index - 1]
                if self.done:
                    if self.error is not None:
                        raise self.error
                    return
                self._changed.clear()
                if index < len(self.items) or self.done:
                    continue
                await self._changed.wait()
        finally:
            self.cancel()


class LlmPrefetch:
    """An LLM request started early, its deltas buffered; and, with a voice, its first chunk synthesised early."""

    def __init__(
        self,
        llm: LanguageModel,
        messages: Sequence[ChatMessage],
        max_tokens: int | None,
        temperature: float | None,
        voice: TextToSpeech | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.messages = list(messages)
        self._clock = clock
        # Synthesises the reply's first speakable chunk once the deltas make one (None: no TTS, or
        # the reply has already spoken without it).
        self.voice = voice
        self.speech: BufferedStream[AudioFrame] | None = None
        self.speech_text: str | None = None
        # The same splitter the reply runs, fed the same deltas, so its first chunk is the reply's.
        self._splitter = SentenceSplitter() if voice is not None else None
        self.deltas = BufferedStream(
            lambda: llm.stream(self.messages, max_tokens=max_tokens, temperature=temperature),
            on_item=lambda delta: self._first_chunk(
                self._splitter.push(delta) if self._splitter and isinstance(delta, str) and delta else []
            ),  # a ToolCall item is not text to speak
            on_end=lambda: self._first_chunk(self._splitter.flush() if self._splitter else []),
            clock=clock,
            counts=lambda delta: isinstance(delta, str) and bool(delta),
        )

    def _first_chunk(self, chunks: list[str]) -> None:
        if not chunks or self._splitter is None:
            return
        self._splitter = None
        voice = self.voice
        if voice is not None:
            text = self.speech_text = chunks[0]
            self.speech = BufferedStream(lambda: voice.synthesize(text), clock=self._clock, counts=lambda f: bool(f.pcm))

    def cancel(self) -> None:
        """Closes the request (and its HTTP stream) if it is still running."""
        self.deltas.cancel()

    def discard(self) -> None:
        """Closes the request and stops the first chunk's synthesis: nobody will replay them."""
        self.cancel()
        if self.speech is not None:
            self.speech.cancel()


class PrefetchedLlm:
    """A LanguageModel that answers the prefetched messages from the buffer, anything else from `llm`."""

    def __init__(self, llm: LanguageModel, prefetch: LlmPrefetch) -> None:
        self.llm = llm
        self.prefetch = prefetch
        self.name = llm.name

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, temperature: float | None = None
    ) -> AsyncGenerator[StreamItem, None]:
        prefetch = self.prefetch
        if not prefetch.deltas.claimed and list(messages) == prefetch.messages:
            prefetch.deltas.claimed = True
            return prefetch.deltas.replay()
        # The prompt changed since the speculation (history moved on): its answer is for another question.
        prefetch.cancel()
        return self.llm.stream(messages, max_tokens=max_tokens, temperature=temperature)


class PrefetchedVoice:
    """A TextToSpeech that answers the prefetched first chunk from its buffer, any other text from `tts`."""

    def __init__(self, tts: TextToSpeech, prefetch: LlmPrefetch) -> None:
        self.tts = tts
        self.prefetch = prefetch
        self.name = tts.name
        self.sample_rate = tts.sample_rate

    def synthesize(self, text: str) -> AsyncGenerator[AudioFrame, None]:
        speech = self.prefetch.speech
        if speech is None:
            # Nothing was synthesised for this reply (its first chunk came from another prompt):
            # none may start now, or the same chunk would be synthesised twice at once.
            self.prefetch.voice = None
        elif not speech.claimed:
            speech.claimed = True
            if text == self.prefetch.speech_text:
                return speech.replay()
            speech.cancel()  # the reply's first chunk is not the one synthesised: drop it
        return self.tts.synthesize(text)
