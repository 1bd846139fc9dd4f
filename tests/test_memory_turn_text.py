"""What a stored turn is indexed as: local dates, speaker labels, the question it answers."""

from __future__ import annotations

from datetime import UTC, datetime, timezone
from zoneinfo import ZoneInfo

from convers.contracts.memory import MemoryTurn
from convers.memory.turn_text import (
    answered,
    local_zone,
    speaker_label,
    spoken_date,
    when_words,
)

NEW_YORK = ZoneInfo("America/New_York")
# Tuesday 3 March 2026, 20:30 in New York: already Wednesday in UTC.
EVENING = datetime(2026, 3, 4, 1, 30, tzinfo=UTC)


def turn(text: str, speaker: str = "Sam", role: str = "user", session: str = "s") -> MemoryTurn:
    return MemoryTurn("t", session, EVENING, speaker, role, text)  # type: ignore[arg-type]


def test_dates_are_spelled_in_the_local_zone_not_utc() -> None:
    assert spoken_date(EVENING, NEW_YORK) == "Tuesday 3 March 2026 evening"
    assert "wednesday" in when_words(EVENING, UTC)
    assert when_words(EVENING, NEW_YORK).startswith("tuesday 3 march 2026 evening")


def test_naive_times_are_taken_as_utc() -> None:
    assert spoken_date(EVENING.replace(tzinfo=None), UTC) == "Wednesday 4 March 2026 night"


def test_what_a_turn_answers_is_the_other_speakers_question_just_before() -> None:
    question = turn("Any news on the work front?", "Maya", "assistant")
    answer = turn("They hired me on Monday.")
    assert answered(answer, question) == "Any news on the work front?"
    assert answered(answer, turn("I like tea.", "Maya", "assistant")) == ""  # not a question
    assert answered(answer, turn("Did I say that?")) == ""  # the same speaker
    assert answered(answer, turn("Why?", "Maya", "assistant", session="other")) == ""
    assert answered(answer, None) == ""


def test_speaker_labels() -> None:
    assert speaker_label(turn("x")) == "Sam (user)"
    assert speaker_label(turn("x", "user", "user")) == "user"
    assert speaker_label(turn("x", "Juniper", "assistant")) == "Juniper (assistant)"


def test_local_zone_by_name_else_the_system(monkeypatch) -> None:
    assert local_zone("Asia/Tokyo") == ZoneInfo("Asia/Tokyo")
    monkeypatch.setenv("TZ", "Europe/Lisbon")
    assert local_zone(None) == ZoneInfo("Europe/Lisbon")
    monkeypatch.setenv("TZ", "Not/AZone")
    assert local_zone(None) is not None  # falls back to the system zone, never raises
