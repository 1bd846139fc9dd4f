"""Rolling buffer keeps whole recent turns; recalled turns are framed as background not to be restated."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from convers.contracts.memory import MemoryHit, MemoryTurn
from convers.memory.recall import how_long_ago, render_recall
from convers.memory.rolling import RollingBuffer

NOW = datetime(2025, 6, 10, 12, 0, tzinfo=timezone.utc)


def test_rolling_buffer_drops_oldest_whole_turns() -> None:
    buffer = RollingBuffer(max_chars=25)
    buffer.add("user", "a" * 10)
    buffer.add("assistant", "b" * 10)
    assert [m.content for m in buffer.messages()] == ["a" * 10, "b" * 10]
    buffer.add("user", "c" * 10)
    # "a" dropped first; then "b" would open the history with an unanswered assistant line.
    assert [m.content for m in buffer.messages()] == ["c" * 10]
    assert buffer.chars == 10
    buffer.add("assistant", "d" * 100)
    assert [m.content for m in buffer.messages()] == ["d" * 100]  # the newest turn always stays


def _hit(text: str, days_ago: int, role: str = "user", kind: str = "turn") -> MemoryHit:
    turn = MemoryTurn("x", "s", NOW - timedelta(days=days_ago), "Sam", role, text, kind)  # type: ignore[arg-type]
    return MemoryHit("x", text, 0.8, turn)


def test_render_recall_frames_hits_as_background_oldest_first() -> None:
    text = render_recall([_hit("I love tea", 1), _hit("Ana moved to Lisbon", 40), _hit("Sure!", 3, role="assistant"),
                          _hit("Sam said Ana is a nurse", 0, kind="digest")], now=NOW)
    lines = text.splitlines()
    assert "do not quote" in lines[0] and "do not restate" in lines[0]
    assert lines[1:] == [
        "- 5 weeks ago, they said: Ana moved to Lisbon",
        "- 3 days ago, you said: Sure!",
        "- yesterday, they said: I love tea",
        "- today, in summary: Sam said Ana is a nurse",
    ]
    assert render_recall([], now=NOW) == ""


def test_how_long_ago() -> None:
    assert how_long_ago(NOW - timedelta(days=400), NOW) == "over a year ago"
    assert how_long_ago(NOW - timedelta(days=90), NOW) == "3 months ago"
    assert how_long_ago(NOW.replace(tzinfo=None), NOW) == "today"
