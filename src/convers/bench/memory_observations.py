"""Observation keys for `convers bench memory --observations`: the model's notes on every turn worth one, cached.

The configured language model (on a fresh install, the packaged SmolLM2-135M) is asked about each
turn of the generated conversations that `needs_observations` (memory/observations.py), from both
people (the questions ask about both). Its raw answers are kept in one JSON file under the cache
folder, keyed by the model, the prompt and the turn, so a rerun asks nothing again; they are parsed
when read, so a change to the parsing needs no new answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from contextlib import aclosing
from pathlib import Path

from convers.contracts.llm import LanguageModel
from convers.contracts.memory import MemoryTurn
from convers.memory import observations

# Saved this often while asking, so an interrupted run keeps what it got.
SAVE_EVERY = 50


def answer_key(model: str, turn: MemoryTurn) -> str:
    """What identifies one answer: the model, the chat it was asked (prompt and examples) and the turn."""
    chat = json.dumps([m.as_dict() for m in observations.messages(turn.speaker, turn.text)])
    return hashlib.sha1(f"{model}\n{observations.MAX_TOKENS}\n{chat}".encode()).hexdigest()


async def _ask(llm: LanguageModel, turn: MemoryTurn) -> str:
    parts: list[str] = []
    async with aclosing(llm.stream(observations.messages(turn.speaker, turn.text), max_tokens=observations.MAX_TOKENS,
                                   temperature=0.0)) as stream:
        async for delta in stream:
            if isinstance(delta, str):
                parts.append(delta)
    return "".join(parts)


def model_answers(llm: LanguageModel, model: str, turns: Sequence[MemoryTurn], cache_file: Path,
                  progress: Callable[[str], None]) -> dict[str, str]:
    """Each turn's raw answer by turn id, from the cache file or asked now (greedy: a rerun is the same)."""
    cache: dict[str, str] = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    keys = {turn.id: answer_key(model, turn) for turn in turns}
    missing = list({keys[t.id]: t for t in turns if keys[t.id] not in cache}.items())
    if missing:
        progress(f"observations: asking {model} about {len(missing)} turns ({len(keys) - len(missing)} cached)...")

        async def ask_all() -> None:
            started = time.perf_counter()
            for n, (key, turn) in enumerate(missing, 1):
                try:
                    cache[key] = await _ask(llm, turn)
                except Exception as error:  # noqa: BLE001 - a failed answer is no notes, as in a conversation
                    progress(f"observations: no answer for {turn.id}: {error!r}")
                    cache[key] = ""
                if n % SAVE_EVERY == 0 or n == len(missing):
                    _save(cache, cache_file)
                    progress(f"observations: {n}/{len(missing)} in {time.perf_counter() - started:.0f} s")

        asyncio.run(ask_all())
    return {turn_id: cache[key] for turn_id, key in keys.items()}


def _save(cache: dict[str, str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(cache, indent=0, sort_keys=True))
    partial.replace(path)
