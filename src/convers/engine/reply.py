"""One agent turn: LLM tokens -> SentenceSplitter -> TTS per chunk -> outbound audio frames.

The LLM and TTS run as two tasks joined by a queue, so TTS of chunk N+1 overlaps the client's
playback of chunk N and the first audio leaves as soon as the first speakable chunk is synthesised.
Cancelling `ReplyStreamer.run` cancels both: the LLM iterator is closed (which closes its HTTP
stream) and the TTS generator is closed (which stops synthesis).
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from collections.abc import Sequence
from dataclasses import dataclass, field

from convers.audio import StreamResampler
from convers.contracts.audio import AudioFrame
from convers.contracts.llm import ChatMessage, LanguageModel
from convers.contracts.transport import Transport
from convers.contracts.tts import TextToSpeech
from convers.engine.sentences import SentenceSplitter
from convers.engine.slow_model import SlowModelWatch
from convers.engine.timing import LLM_SLOW_NOTICE_S
from convers.events import EventLog, TurnMetrics

# Outbound audio is sent in frames of at most this length: short enough that a flush on the
# client drops little that was already decoded, long enough to keep message overhead negligible.
MAX_OUTBOUND_FRAME_S = 0.1

_END = object()


@dataclass
class SpokenChunk:
    """A chunk of reply text and where its audio sits in the turn's audio timeline."""

    text: str
    start_ms: float
    duration_ms: float = 0.0


@dataclass
class ReplyProgress:
    """What a reply has produced so far; survives cancellation so barge-in can cut the history."""

    turn: int
    text: str = ""
    chunks: list[SpokenChunk] = field(default_factory=list)
    audio_ms: float = 0.0
    generation_done: bool = False
    seq: int = 0

    def unspoken_text(self, played_ms: float) -> str:
        """Chunks whose audio had not finished playing at `played_ms` (for restarting a reply)."""
        return " ".join(c.text for c in self.chunks if c.start_ms + c.duration_ms > played_ms)


def heard_text(progress: ReplyProgress, played_ms: float) -> str:
    """The words the user actually heard: whole chunks played, plus the played share of the last one."""
    if not progress.chunks:
        return ""
    words: list[str] = []
    for chunk in progress.chunks:
        if played_ms >= chunk.start_ms + chunk.duration_ms:
            words.extend(chunk.text.split())
            continue
        if played_ms > chunk.start_ms and chunk.duration_ms > 0:
            share = (played_ms - chunk.start_ms) / chunk.duration_ms
            chunk_words = chunk.text.split()
            words.extend(chunk_words[: int(len(chunk_words) * share)])
        break
    return " ".join(words)


class ReplyStreamer:
    """Streams one reply to a transport; text only when `tts` is None."""

    def __init__(
        self,
        llm: LanguageModel,
        tts: TextToSpeech | None,
        transport: Transport,
        events: EventLog,
        max_tokens: int | None = None,
        temperature: float | None = None,
        slow_notice_s: float = LLM_SLOW_NOTICE_S,
    ) -> None:
        self.llm = llm
        self.tts = tts
        self.transport = transport
        self.events = events
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.slow_notice_s = slow_notice_s

    async def run(self, messages: Sequence[ChatMessage], progress: ReplyProgress, metrics: TurnMetrics) -> None:
        chunks: asyncio.Queue[object] = asyncio.Queue()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._generate(messages, progress, metrics, chunks))
            if self.tts is not None:
                group.create_task(self._speak(chunks, progress, metrics))

    async def speak_text(self, text: str, progress: ReplyProgress, metrics: TurnMetrics) -> None:
        """Says fixed text (a greeting, a restarted remainder) through the same path as a reply."""
        splitter = SentenceSplitter()
        chunks: asyncio.Queue[object] = asyncio.Queue()
        for chunk in [*splitter.push(text), *splitter.flush()]:
            chunks.put_nowait(chunk)
        chunks.put_nowait(_END)
        progress.text = text
        progress.generation_done = True
        await self.transport.send_event({"type": "reply", "turn": progress.turn, "delta": text})
        if self.tts is not None:
            await self._speak(chunks, progress, metrics)

    async def _generate(
        self,
        messages: Sequence[ChatMessage],
        progress: ReplyProgress,
        metrics: TurnMetrics,
        chunks: asyncio.Queue[object],
    ) -> None:
        splitter = SentenceSplitter()
        slow = SlowModelWatch(self.transport.send_event, progress.turn, self.slow_notice_s)
        try:
            # aclosing: a cancel while we await the transport must still close the HTTP stream now,
            # not whenever the generator is garbage-collected.
            stream = self.llm.stream(messages, max_tokens=self.max_tokens, temperature=self.temperature)
            slow.restart()
            async with aclosing(stream):
                async for delta in stream:
                    if not delta:
                        continue
                    slow.restart()
                    if not progress.text:
                        metrics.mark("llm_first_token", self.events.now())
                        self.events.emit("llm_first_token", turn=progress.turn)
                    progress.text += delta
                    await self.transport.send_event({"type": "reply", "turn": progress.turn, "delta": delta})
                    for chunk in splitter.push(delta):
                        self._chunk_ready(chunk, progress, metrics, chunks)
            for chunk in splitter.flush():
                self._chunk_ready(chunk, progress, metrics, chunks)
            progress.generation_done = True
        finally:
            slow.stop()
            chunks.put_nowait(_END)

    def _chunk_ready(
        self, chunk: str, progress: ReplyProgress, metrics: TurnMetrics, chunks: asyncio.Queue[object]
    ) -> None:
        if "first_chunk" not in metrics.marks:
            metrics.mark("first_chunk", self.events.now())
            self.events.emit("first_chunk", turn=progress.turn, text=chunk)
        chunks.put_nowait(chunk)

    async def _speak(self, chunks: asyncio.Queue[object], progress: ReplyProgress, metrics: TurnMetrics) -> None:
        assert self.tts is not None
        out_rate = self.transport.output_format.sample_rate
        while True:
            item = await chunks.get()
            if item is _END:
                return
            text = str(item)
            spoken = SpokenChunk(text=text, start_ms=progress.audio_ms)
            progress.chunks.append(spoken)
            synthesis = self.tts.synthesize(text)
            # One resampler per chunk keeps its filter state across frames: no clicks at frame edges.
            resampler: StreamResampler | None = None
            async with aclosing(synthesis):
                async for frame in synthesis:
                    if not frame.pcm:
                        continue
                    if "tts_first_audio" not in metrics.marks:
                        metrics.mark("tts_first_audio", self.events.now())
                        self.events.emit("tts_first_audio", turn=progress.turn)
                    if frame.sample_rate != out_rate:
                        if resampler is None or resampler.in_rate != frame.sample_rate:
                            resampler = StreamResampler(frame.sample_rate, out_rate)
                        frame = resampler.push(frame)
                    await self._send(frame, progress, spoken, metrics)
            if resampler is not None:
                tail = resampler.push(AudioFrame(b"", resampler.in_rate), last=True)
                await self._send(tail, progress, spoken, metrics)

    async def _send(
        self, frame: AudioFrame, progress: ReplyProgress, spoken: SpokenChunk, metrics: TurnMetrics
    ) -> None:
        """Sends audio in frames of at most MAX_OUTBOUND_FRAME_S, each tagged with the turn and a sequence number."""
        max_bytes = int(frame.sample_rate * MAX_OUTBOUND_FRAME_S) * 2
        for start in range(0, len(frame.pcm), max_bytes):
            piece = AudioFrame(frame.pcm[start : start + max_bytes], frame.sample_rate)
            await self.transport.send_audio(progress.turn, progress.seq, piece)
            if progress.seq == 0:
                metrics.mark("first_audio_out", self.events.now())
                self.events.emit("first_audio_out", turn=progress.turn)
            progress.seq += 1
            duration_ms = piece.duration_s * 1000
            progress.audio_ms += duration_ms
            spoken.duration_ms += duration_ms
