"""A turn's time to first audio split into stages, from the marks the engine set (events.TurnMetrics).

The one definition of every stage, for both latency benches: the loopback run reads the marks of
the session it drives, the run over a served WebSocket reads the same marks from the server's
`metrics` message. Each stage runs from its start mark to its end mark; its critical-path share
is the part after the end of turn was confirmed (work done in the end-of-turn silence costs the
user nothing). Also the run's distributions and the latency goals. Fields: docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from convers.bench.latency_script import TurnPlan
from convers.events import TURN_MARKS

STAGES = ("end_of_turn", "stt", "recall", "llm_ttft", "first_chunk", "tts_first_audio", "transport")

# Start and end mark of each stage the engine times itself (end_of_turn and transport are measured
# against the benchmark's own clock: the true end of speech, and where the first audio arrived).
STAGE_MARKS: dict[str, tuple[str, str]] = {
    "stt": ("stt_start", "stt_final"),
    "recall": ("recall_start", "recall_done"),
    "llm_ttft": ("llm_request", "llm_first_token"),
    "first_chunk": ("llm_first_token", "first_chunk"),
    "tts_first_audio": ("tts_start", "tts_first_audio"),
}


def ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds to 0.1 ms (None stays None)."""
    return None if seconds is None else round(seconds * 1000, 1)


def marks_of_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The marks of a `metrics` wire message (ms from the turn start) as seconds on that timeline."""
    found = {}
    for name in TURN_MARKS:
        value = metrics.get(f"{name}_ms")
        if isinstance(value, int | float):
            found[name] = value / 1000
    found.setdefault("turn_start", 0.0)
    return found


def speculated(marks: Mapping[str, float]) -> bool:
    """The transcript came from an STT call that started before the end of turn was confirmed."""
    start, confirmed = marks.get("stt_start"), marks.get("turn_confirmed")
    return start is not None and confirmed is not None and start < confirmed


def turn_figures(
    plan: TurnPlan,
    marks: Mapping[str, float],
    sent_at: float,
    arrived_at: float,
    speculation: str,
    server_llm: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """TTFA, its stages (whole and on the critical path) and the overhead left over, for one turn.

    All times on one timeline: the marks, `plan.true_end`, `sent_at` (the first reply frame handed
    to the transport) and `arrived_at` (where the listener got it; the same on loopback).
    `server_llm` (received, first token written) is the reference server's own record of the
    request: the model's cost without HTTP; without it the LLM stage is the engine's request to
    its first token.
    """
    true_end = plan.true_end
    confirmed = marks.get("turn_confirmed", marks.get("speech_end", true_end))
    intervals: dict[str, tuple[float, float] | None] = {stage: None for stage in STAGES}
    intervals["end_of_turn"] = (true_end, confirmed)
    for stage, (start_mark, end_mark) in STAGE_MARKS.items():
        if start_mark in marks and end_mark in marks:
            intervals[stage] = (marks[start_mark], marks[end_mark])
    if server_llm is not None and "llm_first_token" in marks:
        intervals["llm_ttft"] = server_llm  # what the model cost, measured by the server
    if "first_chunk" not in marks:
        intervals["tts_first_audio"] = None  # a first audio without a chunk is not the reply's
    intervals["transport"] = (sent_at, arrived_at)

    ttfa = arrived_at - true_end
    stages_ms: dict[str, float | None] = {}
    critical_ms: dict[str, float | None] = {}
    for stage, span in intervals.items():
        if span is None:
            stages_ms[stage] = critical_ms[stage] = None
            continue
        start, end = span
        stages_ms[stage] = ms(end - start)
        floor = true_end if stage == "end_of_turn" else confirmed
        critical_ms[stage] = ms(max(0.0, end - max(start, floor)))
    overhead = ttfa * 1000 - sum(v for v in critical_ms.values() if v is not None)

    def gap(start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else ms(end - start)

    def edge(stage: str, which: int) -> float | None:
        span = intervals[stage]
        return None if span is None else span[which]

    stt_start, first_chunk, tts_start = edge("stt", 0), marks.get("first_chunk"), edge("tts_first_audio", 0)
    first_token = marks.get("llm_first_token")
    # Where the overhead goes: the hand-offs between consecutive stages on the critical path.
    gaps_ms = {
        "confirmed_to_stt": gap(confirmed, stt_start) if stt_start is not None and stt_start >= confirmed else None,
        "stt_to_recall": gap(edge("stt", 1), edge("recall", 0)),
        "recall_to_llm_request": gap(edge("recall", 1) or edge("stt", 1), edge("llm_ttft", 0)),
        "first_token_delivery": gap(edge("llm_ttft", 1), first_token),
        # None when the first chunk was synthesised in the silence, before the reply replayed it.
        "chunk_to_tts": gap(first_chunk, tts_start)
        if tts_start is not None and first_chunk is not None and tts_start >= first_chunk else None,
        "tts_to_send": gap(edge("tts_first_audio", 1), sent_at),
    }
    request = marks.get("llm_request")
    # The client's first delta: the reply's first token, or a replayed request's own first token.
    first_delta = marks.get("llm_first_delta", first_token)
    return {
        "index": plan.index,
        "turn": plan.turn,
        "text": plan.text,
        "transcript": plan.transcript,
        "barge_in": plan.barge_in,
        "speculation": speculation,
        "ttfa_ms": ms(ttfa),
        "stages_ms": stages_ms,
        "critical_ms": critical_ms,
        "overhead_ms": round(overhead, 1),
        "gaps_ms": gaps_ms,
        "vad_end_lag_ms": ms(marks["speech_end"] - true_end) if "speech_end" in marks else None,
        "llm_ttft_client_ms": ms(first_delta - request) if request is not None and first_delta is not None else None,
    }


# --------------------------------------------------------------------- a run's distributions


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
        # What the model had to read per turn (a model that reports it: llama.cpp, in process or served).
        "prompt_tokens": describe([t.get("prompt_tokens") for t in ok]),
        "read_tokens": describe([t.get("read_tokens") for t in ok]),
        "read_ms": describe([t.get("read_ms") for t in ok]),
        # Turns the person heard nothing within 5 s of finishing (or at all).
        "turns_silent_5s": len(turns) - sum(1 for t in ok if t["ttfa_ms"] <= 5000),
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
