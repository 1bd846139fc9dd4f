"""`convers bench speech-cost`: how early the first chunk comes and what splitting and spoken text cost per token.

Replies (the reference LLM's, and the case file's when it is there: tests/data/sentence_cases.json)
are streamed as word tokens (the reference LLM's cut) and as slices of 1, 3 and 8 characters. For
each reply: how many deltas had been pushed when the first chunk came out (goal: median <= 6 word
tokens). Then the CPU time of the SentenceSplitter alone, of `spoken_text` on its chunks alone, and of
both, per delta (goal: both under 0.2 ms per token), best of `rounds` passes so that another process
on a shared machine inflates the figure less. A long run-on reply (every reply joined into one) checks
that the cost per token does not grow with the length of the reply.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from convers.bench.reference_llm import DEFAULT_REPLIES, tokens_of
from convers.bench.results import write_json_result
from convers.engine.reply.sentences import SentenceSplitter
from convers.engine.reply.spoken_text import spoken_text

CASE_FILE = Path("tests") / "data" / "sentence_cases.json"
FIRST_CHUNK_GOAL_TOKENS = 6
COST_GOAL_MS_PER_TOKEN = 0.2
CUTS: tuple[str | int, ...] = ("tokens", 1, 3, 8)


def replies_from(path: Path | None) -> list[str]:
    """The reference replies, and those of a case file (a JSON list of {"reply": ...}) if there is one."""
    replies = list(DEFAULT_REPLIES)
    if path is None:
        return replies
    try:
        cases = json.loads(path.read_text(encoding="utf-8"))
        replies += [case["reply"] for case in cases]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"case file {path} cannot be read as a list of {{\"reply\": ...}} ({error}): "
                         f"pass --replies FILE or --no-replies") from None
    return replies


def deltas_of(reply: str, cut: str | int) -> list[str]:
    if cut == "tokens":
        return tokens_of(reply)
    step = int(cut)
    return [reply[i : i + step] for i in range(0, len(reply), step)]


def _stream(deltas: Sequence[str]) -> tuple[list[str], int]:
    splitter = SentenceSplitter()
    chunks: list[str] = []
    first_at = 0
    for count, delta in enumerate(deltas, start=1):
        chunks.extend(splitter.push(delta))
        if chunks and not first_at:
            first_at = count
    chunks.extend(splitter.flush())
    return chunks, first_at or len(deltas)


def first_chunk_deltas(replies: Sequence[str], cut: str | int) -> list[int]:
    """Per reply, the deltas pushed when the first chunk came out."""
    return [_stream(deltas_of(reply, cut))[1] for reply in replies]


def _split_seconds(streams: Sequence[Sequence[str]]) -> float:
    started = time.process_time()
    for deltas in streams:
        splitter = SentenceSplitter()
        for delta in deltas:
            splitter.push(delta)
        splitter.flush()
    return time.process_time() - started


def _speak_seconds(chunks: Sequence[str]) -> float:
    started = time.process_time()
    for chunk in chunks:
        spoken_text(chunk)
    return time.process_time() - started


def cost_per_delta(replies: Sequence[str], cut: str | int, rounds: int) -> dict[str, float]:
    """Milliseconds of CPU per delta: splitter, spoken text, both (best of `rounds`)."""
    streams = [deltas_of(reply, cut) for reply in replies]
    chunks = [chunk for deltas in streams for chunk in _stream(deltas)[0]]
    count = sum(len(deltas) for deltas in streams)
    split = min(_split_seconds(streams) for _ in range(rounds))
    speak = min(_speak_seconds(chunks) for _ in range(rounds))
    return {
        "deltas": count,
        "split_ms_per_delta": round(split * 1000 / count, 4),
        "spoken_text_ms_per_delta": round(speak * 1000 / count, 4),
        "both_ms_per_delta": round((split + speak) * 1000 / count, 4),
    }


def _summary(values: Sequence[int]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
    }


def run_benchmark(replies_file: Path | None, rounds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    replies = replies_from(replies_file)
    progress(f"{len(replies)} replies, {rounds} rounds")
    first = {
        "reference_replies_tokens": _summary(first_chunk_deltas(DEFAULT_REPLIES, "tokens")),
        **{f"all_replies_{cut if cut == 'tokens' else f'{cut}_chars'}": _summary(first_chunk_deltas(replies, cut))
           for cut in CUTS},
    }
    cost = {str(cut): cost_per_delta(replies, cut, rounds) for cut in CUTS}
    long_reply = " ".join(replies)
    cost["tokens_one_long_reply"] = cost_per_delta([long_reply], "tokens", rounds)
    tokens = cost["tokens"]["both_ms_per_delta"]
    return {
        "kind": "speech-cost",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "replies": len(replies),
        "replies_file": None if replies_file is None else str(replies_file),
        "rounds": rounds,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "first_chunk_deltas": first,
        "cost": cost,
        "long_reply_chars": len(long_reply),
        "goals": {
            "first_chunk_median_tokens": {"goal": FIRST_CHUNK_GOAL_TOKENS,
                                          "value": first["all_replies_tokens"]["median"],
                                          "met": first["all_replies_tokens"]["median"] <= FIRST_CHUNK_GOAL_TOKENS},
            "ms_per_token": {"goal": COST_GOAL_MS_PER_TOKEN, "value": tokens, "met": tokens <= COST_GOAL_MS_PER_TOKEN},
        },
    }


def print_table(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    echo(f"{result['replies']} replies, best of {result['rounds']} rounds, load {result['load_average']}")
    echo(f"{'first chunk after (deltas)':<34}{'median':>8}{'p90':>6}{'max':>6}")
    for name, row in result["first_chunk_deltas"].items():
        echo(f"{name:<34}{row['median']:>8}{row['p90']:>6}{row['max']:>6}")
    echo(f"{'CPU ms per delta':<34}{'deltas':>8}{'split':>9}{'spoken':>9}{'both':>9}")
    for name, row in result["cost"].items():
        echo(f"{name:<34}{row['deltas']:>8}{row['split_ms_per_delta']:>9.4f}{row['spoken_text_ms_per_delta']:>9.4f}"
             f"{row['both_ms_per_delta']:>9.4f}")
    for name, goal in result["goals"].items():
        echo(f"goal {name}: {goal['value']} (want <= {goal['goal']}): {'met' if goal['met'] else 'NOT MET'}")


def write_result(result: dict[str, Any], out: Path | None = None) -> Path:
    """The result as JSON at `out`, or under bench/results/."""
    return write_json_result(result, out, "speech-cost")
