"""The splitter and the voice's text on a case file of realistic replies, streamed token by token.

tests/data/sentence_cases.json: replies as an LLM writes them (lists, code, tables, numbers, quotes,
abbreviations, URLs, Chinese, Japanese, Hindi, Arabic) and the chunks the voice must say, in order.
Each reply is streamed as word tokens (the reference LLM's cut) and in slices of 1, 2, 3, 5, 8 and
13 characters: the chunks must not depend on the slicing. What they cost per token is measured by
`convers bench speech-cost`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from convers.bench.reference_llm import DEFAULT_REPLIES, tokens_of
from convers.engine.reply.sentences import SentenceSplitter
from convers.engine.reply.spoken_text import spoken_text

CASES = json.loads((Path(__file__).parent / "data" / "sentence_cases.json").read_text(encoding="utf-8"))


def _slices(text: str, step: int) -> list[str]:
    return [text[i : i + step] for i in range(0, len(text), step)]


def _stream(deltas: list[str]) -> tuple[list[str], int | None]:
    """The chunks, and how many deltas had been pushed when the first one came out."""
    splitter = SentenceSplitter()
    chunks: list[str] = []
    first_at: int | None = None
    for count, delta in enumerate(deltas, start=1):
        chunks.extend(splitter.push(delta))
        if chunks and first_at is None:
            first_at = count
    chunks.extend(splitter.flush())
    return chunks, first_at if first_at is not None else len(deltas)


def test_the_case_file_is_large_enough() -> None:
    assert len(CASES) >= 200


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["reply"][:40])
@pytest.mark.parametrize("cut", ["tokens", 1, 2, 3, 5, 8, 13])
def test_case_chunks(case: dict, cut: str | int) -> None:
    deltas = tokens_of(case["reply"]) if cut == "tokens" else _slices(case["reply"], int(cut))
    assert _stream(deltas)[0] == case["chunks"]


@pytest.mark.parametrize("case", CASES[::5], ids=lambda case: case["reply"][:40])
def test_no_chunk_ends_inside_a_word(case: dict) -> None:
    for chunk in case["chunks"]:
        assert not chunk.endswith((".com", "example.", "D.", "U.", "ext.", "Apt.", "al.")), chunk


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["reply"][:40])
def test_the_voice_says_no_markup(case: dict) -> None:
    for chunk in case["chunks"]:
        spoken = spoken_text(chunk)
        assert any(ch.isalnum() for ch in spoken), chunk
        assert not any(mark in spoken for mark in ("**", "`", "__", "|", "](", "\ufe0f")), spoken
        assert not spoken.lstrip().startswith(("#", "- ", "* ", "> ")), spoken


def _median_first_chunk_tokens(replies: list[str]) -> float:
    return statistics.median(_stream(tokens_of(reply))[1] for reply in replies)


def test_first_chunk_stays_early() -> None:
    # The voice starts after a median of at most 6 tokens (Pipecat's sentence rule: about 14).
    assert _median_first_chunk_tokens(list(DEFAULT_REPLIES)) <= 6
    assert _median_first_chunk_tokens([case["reply"] for case in CASES]) <= 6


def test_the_cost_benchmark_reports_the_goals(tmp_path: Path) -> None:
    # The cost itself is measured by `convers bench speech-cost`, not asserted in a test (no timed tests).
    from convers.bench.speech_cost import print_table, run_benchmark, write_result

    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(CASES[:20]), encoding="utf-8")
    result = run_benchmark(cases, rounds=1, progress=lambda _: None)
    assert result["replies"] == 4 + 20
    assert result["first_chunk_deltas"]["all_replies_tokens"]["median"] == _median_first_chunk_tokens(
        list(DEFAULT_REPLIES) + [case["reply"] for case in CASES[:20]]
    )
    assert set(result["cost"]) == {"tokens", "1", "3", "8", "tokens_one_long_reply"}
    assert result["cost"]["1"]["deltas"] > result["cost"]["tokens"]["deltas"]
    lines: list[str] = []
    print_table(result, lines.append)
    assert any(line.startswith("goal first_chunk_median_tokens") for line in lines)
    path = write_result(result, tmp_path / "cost.json")
    assert json.loads(path.read_text())["kind"] == "speech-cost"
