"""Time expressions in questions as spans of the user's local time (memory/when.py), as a table."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from convers.memory.when import find_time_span, without_time_words

BERLIN = ZoneInfo("Europe/Berlin")
# A Wednesday afternoon.
NOW = datetime(2026, 5, 20, 15, 0, tzinfo=BERLIN)

CASES = [
    # question, first day of the span, last day of the span (inclusive)
    ("What did I cook yesterday?", "2026-05-19", "2026-05-19"),
    ("what happened last night", "2026-05-19", "2026-05-19"),
    ("What did I say today?", "2026-05-20", "2026-05-20"),
    ("the day before yesterday", "2026-05-18", "2026-05-18"),
    ("What did I cook three days ago?", "2026-05-16", "2026-05-18"),
    ("What did Maya say 3 days ago?", "2026-05-16", "2026-05-18"),
    ("What did I cook two weeks ago?", "2026-05-03", "2026-05-09"),
    ("a couple of weeks ago", "2026-05-03", "2026-05-09"),
    ("a month ago", "2026-04-05", "2026-05-05"),
    ("What did we talk about last week?", "2026-05-09", "2026-05-19"),
    ("this week", "2026-05-18", "2026-05-24"),
    ("last month", "2026-04-01", "2026-04-30"),
    ("Which film did I see last May?", "2025-05-01", "2025-05-31"),
    ("What did I cook in March?", "2026-03-01", "2026-03-31"),
    ("what did Leo say in May 2025", "2025-05-01", "2025-05-31"),
    ("What did I do last Tuesday?", "2026-05-19", "2026-05-19"),
    ("Who did I see on Friday?", "2026-05-15", "2026-05-15"),
    ("What did I say on March 3?", "2026-03-03", "2026-03-03"),
    ("what did I buy on the 3rd of March 2025", "2025-03-03", "2025-03-03"),
    ("Where did we go in 2024?", "2024-01-01", "2024-12-31"),
    ("Which movie did Maya catch last November?", "2025-11-01", "2025-11-30"),
    ("What did we do last summer?", "2025-06-01", "2025-08-31"),
    ("where did I go in the spring", "2026-03-01", "2026-05-31"),  # the spring under way
    ("what happened last spring", "2025-03-01", "2025-05-31"),
    ("what did I do over the winter", "2025-12-01", "2026-02-28"),
    ("Where did Leo travel last fall?", "2025-09-01", "2025-11-30"),
]


@pytest.mark.parametrize(("question", "first", "last"), CASES)
def test_time_expressions_become_local_spans(question: str, first: str, last: str) -> None:
    span = find_time_span(question, NOW)
    assert span is not None
    assert span.start.tzinfo is BERLIN
    assert span.start == datetime.fromisoformat(first).replace(tzinfo=BERLIN)
    # Half-open: the span ends at midnight after its last day.
    assert (span.end - span.start).days == (datetime.fromisoformat(last) - datetime.fromisoformat(first)).days + 1


@pytest.mark.parametrize(
    "question",
    [
        "When did I adopt the dog?",  # asks for a date, names none
        "When did I fall off my bike?",  # a bare season word is no season
        "Did I buy a spring onion?",
        "May I ask you something?",  # "may" the verb
        "Where am I going on holiday in September?",  # a plan, not when it was said
        "",
        "Что я готовил вчера?",  # another language: no span, no error
        "x" * 4000,
    ],
)
def test_no_span_where_no_past_time_is_named(question: str) -> None:
    assert find_time_span(question, NOW) is None


def test_last_month_name_in_that_month_means_a_year_ago() -> None:
    span = find_time_span("what did I cook last May", NOW)
    assert span is not None and span.start.year == 2025


def test_seasons_are_six_months_on_south_of_the_equator() -> None:
    sydney = ZoneInfo("Australia/Sydney")
    span = find_time_span("what did we do last summer", NOW.astimezone(sydney))
    assert span is not None
    assert (span.start, span.end) == (datetime(2025, 12, 1, tzinfo=sydney), datetime(2026, 3, 1, tzinfo=sydney))


def test_the_time_words_leave_the_word_query() -> None:
    question = "What did I cook two weeks ago?"
    span = find_time_span(question, NOW)
    assert "weeks" not in without_time_words(question, span)
    assert "cook" in without_time_words(question, span)
    assert without_time_words("unchanged", None) == "unchanged"
