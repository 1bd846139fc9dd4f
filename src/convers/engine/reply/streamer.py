"""One agent turn: LLM tokens -> SentenceSplitter -> TTS per chunk -> outbound audio frames.

The LLM and TTS run as two tasks joined by a queue, so TTS of chunk N+1 overlaps the client's
playback of chunk N and the first audio leaves as soon as the first speakable chunk is synthesised.
Cancelling `ReplyStreamer.run` cancels both: the LLM iterator is closed (which closes its HTTP
stream) and the TTS generator is closed (which stops synthesis).

When the model calls tools (engine/reply/tool_calls.py), the words before the call are spoken at once,
the calls run inside the same task (so a barge-in cancels them like the rest of the reply), their
results go back to the model, and its next stream continues the same reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

from convers.audio import StreamResampler
from convers.contracts.audio import AudioFrame
from convers.contracts.events import EventKind, ReplyMessage
from convers.contracts.llm import ChatMessage, LanguageModel, ToolCall
from convers.contracts.transport import Transport
from convers.contracts.tts import TextToSpeech
from convers.engine.reply.sentences import SentenceSplitter
from convers.engine.reply.slow_model import SlowModelWatch
from convers.engine.reply.tool_calls import FAILURE, FILLER, Toolbox, ToolOutcome
from convers.events import EventLog, TurnMetrics
from convers.policies import LLM_SLOW_NOTICE_S

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
    # The turn's tool calls and their results, in order, for the history (calls carry no text:
    # the words around them are all in `text`).
    tool_messages: list[ChatMessage] = field(default_factory=list)
    filler_said: bool = False
    failure_said: bool = False

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
        tools: Toolbox | None = None,
        slow_notice_s: float = LLM_SLOW_NOTICE_S,
    ) -> None:
        self.llm = llm
        self.tts = tts
        self.transport = transport
        self.events = events
        self.max_tokens = max_tokens
        self.temperature = temperature
        # The tools the model's calls are run with; calls are ignored (and logged) without them.
        self.tools = tools
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
        await self.transport.send_event(ReplyMessage(progress.turn, text).to_wire())
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
        conversation = list(messages)
        rounds = 0
        slow = SlowModelWatch(self.transport.send_event, progress.turn, self.slow_notice_s)
        try:
            while True:
                text, calls = await self._stream_round(conversation, progress, metrics, splitter, chunks, slow)
                if not calls:
                    break
                if self.tools is None or rounds >= self.tools.timing.max_rounds:
                    self.events.emit(
                        EventKind.TOOL_CALLS_IGNORED, turn=progress.turn, names=[c.name for c in calls],
                        reason="no tools" if self.tools is None else "max_rounds",
                    )
                    break
                rounds += 1
                # The words before the call are spoken now, not held back until the tool answers.
                for chunk in splitter.flush():
                    self._chunk_ready(chunk, progress, metrics, chunks)
                slow.stop()  # a tool's wait is announced by the tool filler, not as a slow model
                outcomes = await self._run_tools(calls, progress, metrics, chunks)
                conversation.append(ChatMessage("assistant", text, tool_calls=tuple(calls)))
                conversation.extend(outcome.message() for outcome in outcomes)
                progress.tool_messages.append(ChatMessage("assistant", "", tool_calls=tuple(calls)))
                progress.tool_messages.extend(outcome.message() for outcome in outcomes)
            for chunk in splitter.flush():
                self._chunk_ready(chunk, progress, metrics, chunks)
            progress.generation_done = True
        finally:
            slow.stop()
            chunks.put_nowait(_END)

    async def _stream_round(
        self,
        messages: Sequence[ChatMessage],
        progress: ReplyProgress,
        metrics: TurnMetrics,
        splitter: SentenceSplitter,
        chunks: asyncio.Queue[object],
        slow: SlowModelWatch,
    ) -> tuple[str, list[ToolCall]]:
        """One request to the model: its text is streamed out, its tool calls are returned."""
        text = ""
        calls: list[ToolCall] = []
        # aclosing: a cancel while we await the transport must still close the HTTP stream now,
        # not whenever the generator is garbage-collected.
        requested = self.events.now()
        stream = self.llm.stream(messages, max_tokens=self.max_tokens, temperature=self.temperature)
        slow.restart()  # the wait for this request's first token starts now
        async with aclosing(stream):
            async for delta in stream:
                slow.restart()
                if isinstance(delta, ToolCall):
                    calls.append(delta)
                    continue
                if not delta:
                    continue
                if not progress.text:
                    metrics.mark("llm_request", requested)  # the request (round) the first token came from
                    metrics.mark("llm_first_token", self.events.now())
                    self.events.emit(EventKind.LLM_FIRST_TOKEN, turn=progress.turn)
                elif not text and not progress.text[-1].isspace() and not delta[0].isspace():
                    delta = " " + delta  # a reply going on after a tool call or a filler: keep words apart
                text += delta
                await self._add_text(delta, progress, splitter, metrics, chunks)
        return text, calls

    async def _add_text(
        self, delta: str, progress: ReplyProgress, splitter: SentenceSplitter, metrics: TurnMetrics,
        chunks: asyncio.Queue[object],
    ) -> None:
        progress.text += delta
        await self.transport.send_event(ReplyMessage(progress.turn, delta).to_wire())
        for chunk in splitter.push(delta):
            self._chunk_ready(chunk, progress, metrics, chunks)

    async def _say(self, text: str, progress: ReplyProgress, metrics: TurnMetrics, chunks: asyncio.Queue[object]) -> None:
        """Fixed words inside a reply (a filler, an apology), spoken as a chunk of their own."""
        delta = text if not progress.text or progress.text[-1].isspace() else " " + text
        progress.text += delta
        await self.transport.send_event(ReplyMessage(progress.turn, delta).to_wire())
        self._chunk_ready(text, progress, metrics, chunks)

    async def _run_tools(
        self, calls: list[ToolCall], progress: ReplyProgress, metrics: TurnMetrics, chunks: asyncio.Queue[object]
    ) -> list[ToolOutcome]:
        """Runs a round of calls side by side; a filler once if they are slow, an apology once if one fails.

        The calls are tasks of this reply task's group: cancelling the reply (a barge-in) cancels them.
        """
        assert self.tools is not None
        tools = self.tools
        started = self.events.now()
        for call in calls:
            self.events.emit(EventKind.TOOL_CALL, turn=progress.turn, id=call.id, name=call.name, arguments=call.arguments_json[:500])
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(tools.run(call)) for call in calls]
            _done, pending = await asyncio.wait(tasks, timeout=tools.timing.filler_after_s)
            if pending and not progress.filler_said:
                progress.filler_said = True
                await self._say(FILLER, progress, metrics, chunks)
        outcomes = [task.result() for task in tasks]
        metrics.durations_ms["tools_ms"] = metrics.durations_ms.get("tools_ms", 0.0) + (self.events.now() - started) * 1000
        for outcome in outcomes:
            if outcome.ok:
                self.events.emit(
                    EventKind.TOOL_RESULT, turn=progress.turn, id=outcome.call.id, name=outcome.call.name,
                    ms=round(outcome.elapsed_ms, 1), chars=len(outcome.text), truncated=outcome.truncated,
                )
            else:
                self.events.emit(
                    EventKind.TOOL_ERROR, turn=progress.turn, id=outcome.call.id, name=outcome.call.name,
                    ms=round(outcome.elapsed_ms, 1), error=outcome.text,
                )
        if any(not outcome.ok for outcome in outcomes) and not progress.failure_said:
            progress.failure_said = True
            await self._say(FAILURE, progress, metrics, chunks)
        return outcomes

    def _chunk_ready(
        self, chunk: str, progress: ReplyProgress, metrics: TurnMetrics, chunks: asyncio.Queue[object]
    ) -> None:
        if "first_chunk" not in metrics.marks:
            metrics.mark("first_chunk", self.events.now())
            self.events.emit(EventKind.FIRST_CHUNK, turn=progress.turn, text=chunk)
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
            if "tts_first_audio" not in metrics.marks:
                # Until audio comes, the chunk being synthesised is the one the first audio will be from.
                metrics.mark("tts_start", self.events.now(), replace=True)
            synthesis = self.tts.synthesize(text)
            # One resampler per chunk keeps its filter state across frames: no clicks at frame edges.
            resampler: StreamResampler | None = None
            async with aclosing(synthesis):
                async for frame in synthesis:
                    if not frame.pcm:
                        continue
                    if "tts_first_audio" not in metrics.marks:
                        metrics.mark("tts_first_audio", self.events.now())
                        self.events.emit(EventKind.TTS_FIRST_AUDIO, turn=progress.turn)
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
                self.events.emit(EventKind.FIRST_AUDIO_OUT, turn=progress.turn)
            progress.seq += 1
            duration_ms = piece.duration_s * 1000
            progress.audio_ms += duration_ms
            spoken.duration_ms += duration_ms
