"""Recalled turns as prompt lines: when and who, oldest first (their framing: tests/test_prompt.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from convers.contracts.memory import MemoryHit, MemoryTurn
from convers.engine.reply.recall import recall_lines
from convers.spoken_time import how_long_ago

NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)


def _hit(text: str, days_ago: int, role: str = "user", kind: str = "turn") -> MemoryHit:
    turn = MemoryTurn("x", "s", NOW - timedelta(days=days_ago), "Sam", role, text, kind)  # type: ignore[arg-type]
    return MemoryHit("x", text, 0.8, turn)


def test_recall_lines_say_when_and_who_oldest_first() -> None:
    lines = recall_lines([_hit("I love tea", 1), _hit("Ana moved to Lisbon", 40), _hit("Sure!", 3, role="assistant"),
                          _hit("Sam said Ana is a nurse", 0, kind="digest")], now=NOW)
    assert lines == [
        "- 5 weeks ago, they said: Ana moved to Lisbon",
        "- 3 days ago, you said: Sure!",
        "- yesterday, they said: I love tea",
        "- today, in summary: Sam said Ana is a nurse",
    ]
    assert recall_lines([], now=NOW) == []


def test_how_long_ago() -> None:
    assert how_long_ago(NOW - timedelta(days=400), NOW) == "over a year ago"
    assert how_long_ago(NOW - timedelta(days=90), NOW) == "3 months ago"
    assert how_long_ago(NOW.replace(tzinfo=None), NOW) == "today"
