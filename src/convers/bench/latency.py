"""`convers bench latency`: mouth-to-ear latency of the real voice pipeline, turn by turn.

espeak-ng speaks questions into a loopback microphone in real time; a real Session (VAD, STT,
memory, LLM, TTS from settings) answers through the loopback speaker, which plays in real time and
reports what it played. Every turn yields:

- time to first audio (TTFA): the true end of the user's speech in the input stream (known from
  the WAV, not from the VAD) to the first agent audio frame sent, and its stages;
- on barge-in turns: speech onset over the agent -> flush sent -> last frame of the old turn, and
  the number of old-turn frames sent after the flush (must be 0);
- pipeline overhead: TTFA minus the stages it is made of (what the engine itself costs).

Stage times come from the providers themselves (timing wrappers around STT, recall, LLM and TTS,
and the reference LLM's own record of when it received a request and wrote its first token), so
the overhead is what is left: event-loop hops, HTTP, SSE parsing, queues, resampling and sends.
With `url` the same script runs against a `convers serve` WebSocket (bench/latency_ws.py).
Every JSON field is described in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from convers.audio import read_wav, resample
from convers.bench.results import write_json_result
from convers.contracts.audio import AudioFrame
from convers.contracts.events import EventKind
from convers.contracts.llm import ChatMessage
from convers.contracts.memory import MemoryHit
from convers.contracts.stt import StreamingSpeechToText, Transcript

SCHEMA_VERSION = 1
MIC_RATE = 16000
FRAME_S = 0.02

# Short everyday questions; the reference LLM answers each with two short sentences.
QUESTIONS: tuple[str, ...] = (
    "What should I cook for dinner tonight?",
    "Can you remind me what we talked about yesterday?",
    "How long does it take to walk to the station?",
    "What is a good book to read on holiday?",
    "Do you think it will rain this afternoon?",
    "How do I keep my plants alive in winter?",
    "What time should I go to bed tonight?",
    "Tell me something interesting about the moon.",
    "Which coat should I wear for the party?",
    "How can I learn to play the guitar?",
)
# Spoken over the agent on barge-in turns: real questions, so they become the next turn.
INTERRUPTIONS: tuple[str, ...] = (
    "Wait, what about tomorrow morning?",
    "Hold on, can you say that again?",
    "Sorry, what did you mean by that?",
)


@dataclass
class LatencyConfig:
    """What one `convers bench latency` run does."""

    turns: int = 20
    # Every Nth user turn is spoken over the agent's reply (0: never).
    barge_in_every: int = 4
    # How much of the reply plays before the interruption starts.
    barge_after_ms: float = 800.0
    # Reference LLM (True) or whatever settings.llm points at (False).
    reference_llm: bool = True
    ttft_s: float = 0.15
    tokens_per_s: float = 30.0
    # Silence between the end of the agent's reply and the next question.
    gap_s: float = 0.8
    words_per_minute: int = 160
    memory: bool = True
    speculate_llm: bool = False
    turn_timeout_s: float = 25.0


@dataclass(frozen=True)
class Utterance:
    """A spoken question as 16 kHz PCM, with where the speech itself starts and ends in it."""

    text: str
    frame: AudioFrame
    speech_start_s: float
    speech_end_s: float


def speech_span(frame: AudioFrame, threshold_dbfs: float = -45.0, window_s: float = 0.005) -> tuple[float, float]:
    """First and last moment a 5 ms window is louder than `threshold_dbfs`: the true speech span."""
    samples = np.frombuffer(frame.pcm, dtype="<i2").astype(np.float32) / 32768.0
    step = max(1, round(window_s * frame.sample_rate))
    count = len(samples) // step
    if count == 0:
        raise ValueError("speech_span needs audio; got an empty frame")
    windows = samples[: count * step].reshape(count, step)
    levels = 20 * np.log10(np.sqrt(np.mean(windows**2, axis=1)) + 1e-12)
    loud = np.flatnonzero(levels > threshold_dbfs)
    if len(loud) == 0:
        raise ValueError(f"no speech above {threshold_dbfs} dBFS in the utterance")
    return loud[0] * window_s, (loud[-1] + 1) * window_s


def speak(text: str, directory: Path, words_per_minute: int = 160, voice: str = "en-us") -> Utterance:
    """Says `text` with espeak-ng (the user's voice in the benchmark)."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng (it speaks the benchmark's questions)")
    path = directory / f"q{abs(hash((text, words_per_minute, voice))) % 10**12}.wav"
    if not path.exists():
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text],
            check=True,
            capture_output=True,
        )
    frame = resample(read_wav(path), MIC_RATE)
    start, end = speech_span(frame)
    return Utterance(text, frame, start, end)


# --------------------------------------------------------------------- timing wrappers


@dataclass
class Call:
    """One provider call: when it started, produced its first output, and ended (monotonic seconds)."""

    start: float
    end: float | None = None
    first: float | None = None


class TimedStt:
    """Wraps an STT provider and records each transcription's start and end."""

    def __init__(self, inner: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.name = inner.name
        self.sample_rate = inner.sample_rate
        self.clock = clock
        self.calls: list[Call] = []

    async def transcribe(self, audio: AudioFrame) -> Transcript:
        call = Call(self.clock())
        self.calls.append(call)
        try:
            return await self.inner.transcribe(audio)
        finally:
            call.end = call.first = self.clock()


class TimedStream:
    """A live STT stream whose `finish` (what the end of a turn waits for) is recorded as the STT call."""

    def __init__(self, inner: Any, calls: list[Call], clock: Callable[[], float]) -> None:
        self.inner = inner
        self.calls = calls
        self.clock = clock

    def feed(self, audio: AudioFrame) -> None:
        self.inner.feed(audio)

    async def finish(self) -> Transcript:
        call = Call(self.clock())
        self.calls.append(call)
        try:
            return await self.inner.finish()
        finally:
            call.end = call.first = self.clock()

    async def cancel(self) -> None:
        await self.inner.cancel()


class TimedStreamingStt(TimedStt):
    """TimedStt for a provider that can decode live (so the session still sees a streaming STT)."""

    def open_stream(self) -> TimedStream:
        return TimedStream(self.inner.open_stream(), self.calls, self.clock)


def timed_stt(inner: Any) -> TimedStt:
    return TimedStreamingStt(inner) if isinstance(inner, StreamingSpeechToText) else TimedStt(inner)


class TimedTts:
    """Wraps a TTS provider and records, per chunk, the call and its first audio."""

    def __init__(self, inner: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.name = inner.name
        self.clock = clock
        self.calls: list[Call] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        call = Call(self.clock())
        self.calls.append(call)
        stream = self.inner.synthesize(text)
        try:
            async for frame in stream:
                if call.first is None and frame.pcm:
                    call.first = self.clock()
                yield frame
        finally:
            call.end = self.clock()
            await stream.aclose()


class TimedLlm:
    """Wraps a LanguageModel and records, per request, the call and its first delta (client side)."""

    def __init__(self, inner: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.name = inner.name
        self.clock = clock
        self.calls: list[Call] = []

    async def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, temperature: float | None = None
    ) -> AsyncIterator[str]:
        call = Call(self.clock())
        self.calls.append(call)
        stream = self.inner.stream(messages, max_tokens=max_tokens, temperature=temperature)
        try:
            async for delta in stream:
                if call.first is None and delta:
                    call.first = self.clock()
                yield delta
        finally:
            call.end = self.clock()
            await stream.aclose()


class TimedMemory:
    """Wraps a ConversationMemory and records each recall; everything else passes through."""

    def __init__(self, inner: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.clock = clock
        self.calls: list[Call] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def recall(self, query: str) -> list[MemoryHit]:
        call = Call(self.clock())
        self.calls.append(call)
        try:
            return await self.inner.recall(query)
        finally:
            call.end = call.first = self.clock()


# --------------------------------------------------------------------- per-turn figures


@dataclass
class TurnPlan:
    """A user turn the benchmark spoke, and what the session made of it."""

    index: int
    text: str
    barge_in: bool
    true_start: float
    true_end: float
    old_turn: int | None = None
    turn: int | None = None
    transcript: str = ""
    error: str | None = None


STAGES = ("end_of_turn", "stt", "recall", "llm_ttft", "first_chunk", "tts_first_audio", "transport")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _last(calls: Sequence[Call], before: float, after: float = -math.inf) -> Call | None:
    """The call that ended last at or before `before` (the one whose result a mark reports)."""
    found = [c for c in calls if c.end is not None and c.end <= before + 1e-4 and c.start >= after - 1e-4]
    return max(found, key=lambda c: c.end or 0.0) if found else None


def _speaking(calls: Sequence[Call], first_sent_at: float) -> Call | None:
    """The TTS call whose audio was the first sent: the latest to start of those with audio by then.

    With speculation it started in the end-of-turn silence, before the reply's first chunk was
    marked (the reply replays it); later chunks start only after the first one is sent.
    """
    found = [c for c in calls if c.first is not None and c.first <= first_sent_at + 1e-4]
    return max(found, key=lambda c: c.start) if found else None


def turn_figures(
    plan: TurnPlan,
    marks: dict[str, float],
    first_sent_at: float,
    stt_calls: Sequence[Call],
    recall_calls: Sequence[Call],
    llm_calls: Sequence[Call],
    tts_calls: Sequence[Call],
    server_llm: tuple[float, float] | None,
    speculation: str,
) -> dict[str, Any]:
    """TTFA, its stages (whole and on the critical path) and the overhead left over, for one turn.

    A stage's critical-path share is the part of it after the end of turn was confirmed: work done
    during the end-of-turn silence (speculation) costs the user nothing.
    """
    confirmed = marks.get("turn_confirmed", marks.get("speech_end", plan.true_end))
    intervals: dict[str, tuple[float, float] | None] = {stage: None for stage in STAGES}
    intervals["end_of_turn"] = (plan.true_end, confirmed)
    stt = _last(stt_calls, marks["stt_final"]) if "stt_final" in marks else None
    if stt is not None and stt.end is not None:
        intervals["stt"] = (stt.start, stt.end)
    recall = _last(recall_calls, marks["recall_done"], after=stt.start if stt else -math.inf) if "recall_done" in marks else None
    if recall is not None and recall.end is not None:
        intervals["recall"] = (recall.start, recall.end)
    first_token = marks.get("llm_first_token")
    llm_client = None
    if first_token is not None:
        answered = [c for c in llm_calls if c.first is not None and c.first <= first_token + 1e-4]
        llm_client = max(answered, key=lambda c: c.first or 0.0) if answered else None
        if server_llm is not None:
            intervals["llm_ttft"] = server_llm  # what the model cost, measured by the server
        elif llm_client is not None:
            intervals["llm_ttft"] = (llm_client.start, first_token)
    if first_token is not None and "first_chunk" in marks:
        intervals["first_chunk"] = (first_token, marks["first_chunk"])
    tts = _speaking(tts_calls, first_sent_at) if "first_chunk" in marks else None
    if tts is not None and tts.first is not None:
        intervals["tts_first_audio"] = (tts.start, tts.first)
    intervals["transport"] = (first_sent_at, first_sent_at)  # in-process loopback: handed over in the call

    ttfa = first_sent_at - plan.true_end
    stages_ms: dict[str, float | None] = {}
    critical_ms: dict[str, float | None] = {}
    for stage, span in intervals.items():
        if span is None:
            stages_ms[stage] = critical_ms[stage] = None
            continue
        start, end = span
        stages_ms[stage] = _ms(end - start)
        floor = plan.true_end if stage == "end_of_turn" else confirmed
        critical_ms[stage] = _ms(max(0.0, end - max(start, floor)))
    overhead = ttfa * 1000 - sum(v for v in critical_ms.values() if v is not None)

    def gap(start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else _ms(end - start)

    def edge(stage: str, which: int) -> float | None:
        span = intervals[stage]
        return None if span is None else span[which]

    # Where the overhead goes: the hand-offs between consecutive stages on the critical path.
    gaps_ms = {
        "confirmed_to_stt": gap(confirmed, edge("stt", 0)) if stt and stt.start >= confirmed else None,
        "stt_to_recall": gap(edge("stt", 1), edge("recall", 0)),
        "recall_to_llm_request": gap(edge("recall", 1) or edge("stt", 1), edge("llm_ttft", 0)),
        "first_token_delivery": gap(edge("llm_ttft", 1), first_token),
        # None when the first chunk was synthesised in the silence, before the reply replayed it.
        "chunk_to_tts": gap(marks.get("first_chunk"), edge("tts_first_audio", 0))
        if tts and tts.start >= marks.get("first_chunk", -math.inf) else None,
        "tts_to_send": gap(edge("tts_first_audio", 1), first_sent_at),
    }
    return {
        "index": plan.index,
        "turn": plan.turn,
        "text": plan.text,
        "transcript": plan.transcript,
        "barge_in": plan.barge_in,
        "speculation": speculation,
        "ttfa_ms": _ms(ttfa),
        "stages_ms": stages_ms,
        "critical_ms": critical_ms,
        "overhead_ms": round(overhead, 1),
        "gaps_ms": gaps_ms,
        "vad_end_lag_ms": _ms(marks["speech_end"] - plan.true_end) if "speech_end" in marks else None,
        "llm_ttft_client_ms": _ms(llm_client.first - llm_client.start) if llm_client and llm_client.first else None,
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in 0..100."""
    return round(float(np.percentile(np.asarray(values, dtype=float), q)), 1)


def describe(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """n, p50, p95, mean, min, max of the non-missing values."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return {"n": 0, "p50": None, "p95": None, "mean": None, "min": None, "max": None}
    return {
        "n": len(present),
        "p50": percentile(present, 50),
        "p95": percentile(present, 95),
        "mean": round(sum(present) / len(present), 1),
        "min": round(min(present), 1),
        "max": round(max(present), 1),
    }


def summarize(turns: Sequence[dict[str, Any]], barge_ins: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Distribution of every per-turn and per-barge-in figure."""
    ok = [t for t in turns if t.get("ttfa_ms") is not None]
    summary: dict[str, Any] = {
        "turns_measured": len(ok),
        "turns_failed": len(turns) - len(ok),
        "ttfa_ms": describe([t["ttfa_ms"] for t in ok]),
        "overhead_ms": describe([t["overhead_ms"] for t in ok]),
        "vad_end_lag_ms": describe([t["vad_end_lag_ms"] for t in ok]),
        "stages_ms": {s: describe([t["stages_ms"][s] for t in ok]) for s in STAGES},
        "critical_ms": {s: describe([t["critical_ms"][s] for t in ok]) for s in STAGES},
        "gaps_ms": {g: describe([t["gaps_ms"][g] for t in ok]) for g in (ok[0]["gaps_ms"] if ok else {})},
        "speculation_hits": sum(1 for t in ok if t["speculation"] == "hit"),
    }
    summary["barge_in"] = {
        "count": len(barge_ins),
        "onset_to_pause_ms": describe([b["onset_to_pause_ms"] for b in barge_ins]),
        "onset_to_flush_ms": describe([b["onset_to_flush_ms"] for b in barge_ins]),
        "onset_to_last_frame_ms": describe([b["onset_to_last_frame_ms"] for b in barge_ins]),
        "frames_after_flush_total": sum(b["frames_after_flush"] for b in barge_ins),
    }
    return summary


# The latency contract for the real pipeline (faster-whisper + Piper by default), in ms.
TTFA_P50_GOAL_MS = 700.0
TTFA_P95_GOAL_MS = 850.0
OVERHEAD_P50_GOAL_MS = 30.0
FLUSH_MARGIN_MS = 50.0


def check_goals(summary: dict[str, Any], min_barge_in_speech_s: float) -> dict[str, bool | None]:
    """The latency contract (docs/benchmarks.md): True/False per goal, None where not measured."""
    overhead = summary["overhead_ms"]["p50"]
    ttfa_p50, ttfa_p95 = summary["ttfa_ms"]["p50"], summary["ttfa_ms"]["p95"]
    flush = summary["barge_in"]["onset_to_flush_ms"]["p95"]
    return {
        "overhead_p50_under_30ms": None if overhead is None else overhead < OVERHEAD_P50_GOAL_MS,
        "ttfa_p50_within_700ms": None if ttfa_p50 is None else ttfa_p50 <= TTFA_P50_GOAL_MS,
        "ttfa_p95_within_850ms": None if ttfa_p95 is None else ttfa_p95 <= TTFA_P95_GOAL_MS,
        "barge_in_flush_p95_within_min_speech_plus_50ms": None
        if flush is None
        else flush <= min_barge_in_speech_s * 1000 + FLUSH_MARGIN_MS,
        "zero_frames_after_flush": summary["barge_in"]["frames_after_flush_total"] == 0
        if summary["barge_in"]["count"]
        else None,
    }


# --------------------------------------------------------------------- the run


async def wait_until(condition: Callable[[], bool], timeout_s: float, step_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step_s)
    return True


def _frame_index(at_s: float) -> int:
    return math.ceil(at_s / FRAME_S - 1e-6)


async def run_loopback(
    settings: Any,
    config: LatencyConfig,
    speculation: bool,
    utterances: Sequence[Utterance],
    interruptions: Sequence[Utterance],
    reference: Any | None,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """One benchmark run through the loopback transport; returns its turns, barge-ins and summary."""
    from convers.cli import wiring
    from convers.engine.session import SessionParts
    from convers.transports.loopback import LoopbackTransport

    settings = settings.model_copy(deep=True)
    # Only on/off and the LLM come from the run; the rest (post-roll wait, first-chunk TTS) from settings.
    settings.speculation = dataclasses.replace(
        settings.speculation, enabled=speculation, llm=speculation and config.speculate_llm
    )
    llm_inner = wiring.build("llm", settings)
    vad, stt_inner, tts_inner = wiring.build_voice(settings)
    memory_inner = wiring.build_memory(settings, llm_inner) if config.memory else None
    turn_end = wiring.build_turn_end(settings)
    warm = await wiring.warm_up(llm_inner, stt_inner, tts_inner, vad, memory_inner, turn_end)
    built = describe_built({"vad": vad, "stt": stt_inner, "tts": tts_inner, "llm": llm_inner, "turn_end": turn_end})
    llm, stt, tts = TimedLlm(llm_inner), timed_stt(stt_inner), TimedTts(tts_inner)
    memory = TimedMemory(memory_inner) if memory_inner is not None else None
    transport = LoopbackTransport(input_rate=MIC_RATE)
    parts = SessionParts(llm=llm, tts=tts, stt=stt, vad=vad, memory=memory, turn_end=turn_end)
    session = wiring.make_session(settings, transport, parts, session_id=f"bench-{int(time.time())}", greet=False)

    metrics_by_turn: dict[int, Any] = {}
    user_turns: list[tuple[int, str]] = []
    speculation_events: dict[str, int] = {
        EventKind.SPECULATION_START: 0, EventKind.SPECULATION_COMMIT: 0, EventKind.SPECULATION_DISCARD: 0
    }
    session_barge: dict[int, dict[str, Any]] = {}

    def on_event(event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == EventKind.USER_TURN:
            user_turns.append((int(event["turn"]), str(event["text"])))
        elif kind in (EventKind.LLM_FIRST_TOKEN, EventKind.FIRST_CHUNK, EventKind.FIRST_AUDIO_OUT):
            current = session.current
            if current is not None and current.turn == event.get("turn"):
                metrics_by_turn.setdefault(current.turn, current.metrics)
        elif kind == EventKind.BARGE_IN:
            session_barge[int(event["turn"])] = event
        elif kind in speculation_events:
            speculation_events[kind] += 1

    session.events.listeners.append(on_event)
    runner = asyncio.create_task(session.run())
    plans: list[TurnPlan] = []
    try:
        await wait_until(lambda: transport.mic_started_at is not None, 10)
        await asyncio.sleep(0.5)  # let the VAD see some silence first
        previous: int | None = None
        for index in range(config.turns):
            barge = bool(
                previous is not None and config.barge_in_every and index % config.barge_in_every == config.barge_in_every - 1
            )
            if barge:
                utterance = interruptions[(index // max(config.barge_in_every, 1)) % len(interruptions)]

                def into_reply(turn: int = previous) -> bool:  # type: ignore[assignment]
                    current = session.current
                    if current is None or current.turn != turn or current.settled:
                        return True
                    return transport.played_ms(turn) >= config.barge_after_ms

                await wait_until(into_reply, config.turn_timeout_s)
                current = session.current
                barge = current is not None and current.turn == previous and not current.settled
                at_s = transport.mic_time_s + FRAME_S
            else:
                utterance = utterances[index % len(utterances)]
                if previous is not None:

                    def reply_over(turn: int = previous) -> bool:  # type: ignore[assignment]
                        current = session.current
                        return current is None or current.turn != turn or current.settled

                    await wait_until(reply_over, config.turn_timeout_s)
                at_s = transport.mic_time_s + config.gap_s
            frame_index = _frame_index(at_s)
            assert transport.mic_started_at is not None
            begins = transport.mic_started_at + frame_index * FRAME_S
            plan = TurnPlan(
                index=index,
                text=utterance.text,
                barge_in=barge,
                true_start=begins + utterance.speech_start_s,
                true_end=begins + utterance.speech_end_s,
                old_turn=previous if barge else None,
            )
            plans.append(plan)
            seen = len(user_turns)
            await transport.say_nowait(utterance.frame, at_s=frame_index * FRAME_S)

            def answered() -> bool:
                if len(user_turns) <= seen:
                    return False
                turn = user_turns[-1][0]
                return any(s.turn == turn for s in transport.sent)

            if await wait_until(answered, config.turn_timeout_s):
                plan.turn, plan.transcript = user_turns[-1]
                previous = plan.turn
            else:
                plan.error = "no reply" if len(user_turns) > seen else "no user turn (STT heard nothing?)"
                if len(user_turns) > seen:
                    plan.turn, plan.transcript = user_turns[-1]
            progress(
                f"  turn {index + 1}/{config.turns}{' (barge-in)' if barge else ''}: "
                f"{plan.transcript or plan.error!s}"
            )
        if previous is not None:
            await wait_until(lambda: session.current is None or session.current.settled, config.turn_timeout_s)
    finally:
        transport.finish(0.1)
        try:
            await asyncio.wait_for(runner, 15)
        except TimeoutError:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        if memory_inner is not None:
            await memory_inner.aclose()

    server_requests = list(reference.requests) if reference is not None else []
    turns = []
    for plan in plans:
        marks = metrics_by_turn[plan.turn].marks if plan.turn in metrics_by_turn else {}
        sent = [s.at for s in transport.sent if s.turn == plan.turn]
        if plan.error or not sent or "first_audio_out" not in marks:
            turns.append({"index": plan.index, "text": plan.text, "transcript": plan.transcript, "turn": plan.turn,
                          "barge_in": plan.barge_in, "error": plan.error or "no audio", "ttfa_ms": None})
            continue
        server_llm = None
        first_token = marks.get("llm_first_token")
        if first_token is not None:
            served = [r for r in server_requests if r.first_token_at is not None and r.first_token_at <= first_token]
            if served:
                request = max(served, key=lambda r: r.first_token_at)
                server_llm = (request.received_at, request.first_token_at)
        spec = "off"
        if speculation:
            spec = "hit" if _speculated(stt.calls, marks) else "miss"
        figures = turn_figures(
            plan, marks, min(sent), stt.calls, memory.calls if memory else [], llm.calls, tts.calls, server_llm, spec
        )
        turns.append(figures)

    barge_ins = []
    for plan in plans:
        if not plan.barge_in or plan.old_turn is None:
            continue
        old = plan.old_turn
        flushes = [r.at for r in transport.records_of("flush") if r.turn == old]
        pauses = [r.at for r in transport.records_of("pause") if r.turn == old]
        frames = [s for s in transport.sent if s.turn == old]
        if not flushes:
            barge_ins.append({"turn": old, "error": "no flush", "onset_to_pause_ms": None, "onset_to_flush_ms": None,
                              "onset_to_last_frame_ms": None, "frames_after_flush": 0})
            continue
        flush_at = flushes[0]
        event = session_barge.get(old, {})
        barge_ins.append({
            "turn": old,
            "onset_to_pause_ms": _ms(pauses[0] - plan.true_start) if pauses else None,
            "onset_to_flush_ms": _ms(flush_at - plan.true_start),
            "onset_to_last_frame_ms": _ms(max(s.at for s in frames) - plan.true_start) if frames else None,
            "frames_after_flush": sum(1 for s in frames if s.at > flush_at),
            "session_onset_to_flush_ms": event.get("onset_to_flush_ms"),
            "played_ms": event.get("played_ms"),
        })

    summary = summarize(turns, barge_ins)
    summary["goals"] = check_goals(summary, settings.barge_in.min_barge_in_speech_s)
    return {
        "speculation": speculation,
        "built": built,
        "warm_up_s": {name: round(s, 3) for name, s in warm.items()},
        "speculation_events": speculation_events,
        "summary": summary,
        "turns": turns,
        "barge_ins": barge_ins,
    }


def _speculated(stt_calls: Sequence[Call], marks: dict[str, float]) -> bool:
    """The transcript came from an STT call that started before the end of turn was confirmed."""
    stt = _last(stt_calls, marks.get("stt_final", -math.inf))
    return stt is not None and stt.start < marks.get("turn_confirmed", -math.inf)


# --------------------------------------------------------------------- the artifact


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu or platform.processor(),
        "cpu_count": os.cpu_count(),
        "load_average": load,
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }


def model_of(provider: Any) -> str | None:
    """The model a built provider runs, as the provider itself names it (not re-derived from settings)."""
    if provider is None:
        return None
    if getattr(provider, "name", None) == "pocketsphinx":
        return "bundled en-us"
    label = getattr(provider, "model_name", None)  # faster-whisper: "packaged Whisper tiny.en (...)" etc.
    if label:
        return str(label)
    path = getattr(provider, "model_path", None)  # Piper, Kokoro, llama.cpp: the model file
    if path:
        voice = getattr(provider, "voice", None)
        return f"{Path(path).name} ({voice})" if voice and getattr(provider, "name", None) == "kokoro" else Path(path).name
    for attribute in ("voice", "model"):  # espeak-ng: its voice; an OpenAI-compatible server: the model asked for
        value = getattr(provider, attribute, None)
        if value:
            return str(value)
    return None


def model_file_of(provider: Any) -> str | None:
    """Where the model a built provider runs lies on disk (a folder or a file), if it has one."""
    for attribute in ("model_dir", "model_path"):
        value = getattr(provider, attribute, None)
        if value:
            return str(value)
    return None


def describe_built(built: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """Name, model and model file of each built provider (kind -> provider object)."""
    return {
        kind: {"provider": getattr(provider, "name", None), "model": model_of(provider), "file": model_file_of(provider)}
        for kind, provider in built.items()
    }


def provider_info(
    settings: Any, reference: Any | None, built: dict[str, dict[str, str | None]] | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Which providers and models ran: (providers, models, model_files).

    `built` (from describe_built, in a loopback run) says what really ran; without it (a run over
    --url, where the server built them) the providers are what these settings select and the STT
    and TTS models are unknown (None).
    """
    from convers.cli import wiring

    built = built or {}

    def name(kind: str) -> str:
        if kind in built and built[kind]["provider"]:
            return str(built[kind]["provider"])
        return wiring.provider_name(kind, settings)

    providers = {kind: name(kind) for kind in ("vad", "turn_end", "stt", "tts", "embedder")}
    providers["memory"] = settings.memory.provider if settings.memory.enabled else None
    providers["llm"] = "reference" if reference is not None else name("llm")
    models = {
        "stt": built.get("stt", {}).get("model"),
        "tts": built.get("tts", {}).get("model"),
        "llm": "convers-reference" if reference is not None
        else built.get("llm", {}).get("model") or settings.llm.model or str(settings.llm.model_path or ""),
        "embedder": "all-MiniLM-L6-v2" if providers["embedder"] == "minilm" else settings.embedder.ollama_model,
    }
    files = {kind: built[kind]["file"] for kind in ("stt", "tts", "turn_end") if kind in built}
    return providers, models, files


def run_benchmark(
    settings: Any,
    config: LatencyConfig,
    modes: Sequence[bool] = (False, True),
    progress: Callable[[str], None] = lambda _text: None,
    url: str | None = None,
) -> dict[str, Any]:
    """Every mode (speculation off/on) in turn; the whole artifact as a dict."""
    from convers.bench.reference_llm import ReferenceLlmServer, ReferenceTiming

    with tempfile.TemporaryDirectory(prefix="convers-bench-") as scratch:
        scratch_path = Path(scratch)
        utterances = [speak(q, scratch_path, config.words_per_minute) for q in QUESTIONS]
        interruptions = [speak(q, scratch_path, config.words_per_minute) for q in INTERRUPTIONS]
        runs = []
        reference = None
        for speculation in modes:
            run_settings = settings.model_copy(deep=True)
            run_settings.data_dir = scratch_path / f"data-{'spec' if speculation else 'plain'}"
            run_settings.events.enabled = False
            run_settings.memory.enabled = config.memory
            label = "as the server is set" if url else ("on" if speculation else "off")
            progress(f"speculation {label}: {config.turns} turns")
            if url is not None:
                from convers.bench.latency_ws import run_websocket

                # The server's own settings decide speculation: one run, whatever `modes` says.
                runs.append(asyncio.run(run_websocket(
                    url, config, speculation, utterances, interruptions, progress, settings.barge_in.min_barge_in_speech_s
                )))
                break
            if config.reference_llm:
                reference = ReferenceLlmServer(ReferenceTiming(config.ttft_s, config.tokens_per_s))
                with reference.running_in_thread():
                    run_settings.llm.provider = "openai"
                    run_settings.llm.base_url = reference.base_url
                    run_settings.llm.model = None
                    runs.append(asyncio.run(
                        run_loopback(run_settings, config, speculation, utterances, interruptions, reference, progress)
                    ))
            else:
                runs.append(asyncio.run(
                    run_loopback(run_settings, config, speculation, utterances, interruptions, None, progress)
                ))
    # What the loopback runs built (the same settings each time): reported once, at the top.
    built = next((b for b in [run.pop("built", None) for run in runs] if b), None)
    providers, models, model_files = provider_info(settings, reference if config.reference_llm and url is None else None, built)
    result: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "kind": "latency",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "transport": "websocket" if url else "loopback",
        "machine": machine_info(),
        "providers": providers,
        "models": models,
        "model_files": model_files,
        "config": asdict(config),
        "settings": {
            "turns": asdict(settings.turns),
            "barge_in": asdict(settings.barge_in),
            "speculation": asdict(settings.speculation),
            "threads": {k: getattr(settings, k).threads for k in ("llm", "stt", "tts", "vad", "embedder")},
            "tts_words_per_minute": settings.tts.words_per_minute,
        },
        "runs": runs,
    }
    result["comparison"] = compare(runs)
    return result


def compare(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """What speculation saved: p50/p95 TTFA without minus with (positive = faster with it)."""
    plain = next((r for r in runs if r["speculation"] is False), None)
    spec = next((r for r in runs if r["speculation"]), None)
    if plain is None or spec is None:
        return None
    saved: dict[str, Any] = {}
    for q in ("p50", "p95"):
        a, b = plain["summary"]["ttfa_ms"][q], spec["summary"]["ttfa_ms"][q]
        saved[f"ttfa_{q}_saved_ms"] = None if a is None or b is None else round(a - b, 1)
    return saved


def print_table(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    echo(f"machine: {result['machine']['cpu']} x{result['machine']['cpu_count']}, load {result['machine']['load_average']}")
    echo("providers: " + ", ".join(f"{k}={v}" for k, v in result["providers"].items()))
    echo("models: " + ", ".join(f"{k}={v}" for k, v in result["models"].items() if v))
    for run in result["runs"]:
        summary = run["summary"]
        echo("")
        mode = "server setting" if run["speculation"] is None else ("on" if run["speculation"] else "off")
        echo(f"speculation {mode}: {summary['turns_measured']} turns measured, "
             f"{summary['turns_failed']} failed, {summary['speculation_hits']} speculation hits")
        echo(f"  {'figure (ms)':<28}{'p50':>8}{'p95':>8}{'mean':>8}")
        rows = [("time to first audio", summary["ttfa_ms"])]
        rows += [(f"  {stage} (critical path)", summary["critical_ms"][stage]) for stage in STAGES]
        rows += [("pipeline overhead", summary["overhead_ms"]), ("VAD end-of-speech lag", summary["vad_end_lag_ms"])]
        barge = summary["barge_in"]
        rows += [("barge-in onset->pause", barge["onset_to_pause_ms"]), ("barge-in onset->flush", barge["onset_to_flush_ms"]),
                 ("barge-in onset->last frame", barge["onset_to_last_frame_ms"])]
        for label, stats in rows:
            echo(f"  {label:<28}{_fmt(stats['p50']):>8}{_fmt(stats['p95']):>8}{_fmt(stats['mean']):>8}")
        echo(f"  barge-ins: {barge['count']}, old-turn frames after flush: {barge['frames_after_flush_total']}")
        echo("  goals: " + ", ".join(f"{k}={v}" for k, v in summary["goals"].items()))
    if result.get("comparison"):
        echo("")
        echo("speculation saved: " + ", ".join(f"{k}={v}" for k, v in result["comparison"].items()))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def write_result(result: dict[str, Any], out: Path | None = None) -> Path:
    """The result as JSON at `out`, or under bench/results/."""
    return write_json_result(result, out, "latency")

