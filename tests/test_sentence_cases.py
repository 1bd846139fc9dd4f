"""The splitter and the voice's text on a case file of realistic replies, streamed token by token.

tests/data/sentence_cases.json: replies as an LLM writes them (lists, code, tables, numbers, quotes,
abbreviations, URLs, Chinese, Japanese, Hindi, Arabic) and the chunks the voice must say, in order.
Each reply is streamed as word tokens (the reference LLM's cut) and in slices of 1, 3 and 8
characters: the chunks must not depend on the slicing.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from convers.bench.reference_llm import DEFAULT_REPLIES, tokens_of
from convers.engine.sentences import SentenceSplitter
from convers.engine.spoken_text import spoken_text

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
@pytest.mark.parametrize("cut", ["tokens", 1, 3, 8])
def test_case_chunks(case: dict, cut: str | int) -> None:
    deltas = tokens_of(case["reply"]) if cut == "tokens" else _slices(case["reply"], int(cut))
    assert _stream(deltas)[0] == case["chunks"]


@pytest.mark.parametrize("case", CASES[::5], ids=lambda case: case["reply"][:40])
def test_no_chunk_ends_inside_a_word(case: dict) -> None:
    for chunk in case["chunks"]:
        assert not chunk.endswith((".com", "example.", "D.", "U.", "ext.", "Apt.", "al.")), chunk


def _median_first_chunk_tokens(replies: list[str]) -> float:
    return statistics.median(_stream(tokens_of(reply))[1] for reply in replies)


def test_first_chunk_stays_early() -> None:
    # The voice starts after a median of at most 6 tokens (Pipecat's sentence rule: about 14).
    assert _median_first_chunk_tokens(list(DEFAULT_REPLIES)) <= 6
    assert _median_first_chunk_tokens([case["reply"] for case in CASES]) <= 6


def test_splitter_and_voice_text_are_cheap_per_token() -> None:
    tokens = [token for case in CASES for token in tokens_of(case["reply"])]
    started = time.perf_counter()
    for case in CASES:
        for chunk in _stream(tokens_of(case["reply"]))[0]:
            spoken_text(chunk)
    per_token_ms = (time.perf_counter() - started) * 1000 / len(tokens)
    # Goal 0.2 ms per token; the bound leaves room for a slow shared CI machine.
    assert per_token_ms < 1.0, per_token_ms
