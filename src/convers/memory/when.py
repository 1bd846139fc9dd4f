"""Time expressions in a question ("yesterday", "two weeks ago", "last May") as a span of local time.

Recall uses the span to prefer turns from that time: "what did I cook two weeks ago?" has a dozen
dinners to choose from, and only the date tells them apart. The parser knows the common English
relative and calendar expressions; anything else is no span, and recall searches as before.
Spans are a little wider than the words (people say "two weeks ago" of 11 to 17 days ago).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta

MONTHS = {name: n for n, name in enumerate(
    "january february march april may june july august september october november december".split(), start=1)}
MONTHS.update({name[:3]: n for name, n in list(MONTHS.items())})
MONTHS["sept"] = 9
# The month each season starts in, north of the equator (meteorological seasons).
SEASONS = {"spring": 3, "summer": 6, "autumn": 9, "winter": 12}
# Zones south of the equator, where the seasons are six months on.
_SOUTHERN_PREFIXES = ("Australia/", "Antarctica/", "America/Argentina/")
_SOUTHERN_ZONES = frozenset({"Pacific/Auckland", "America/Sao_Paulo", "America/Santiago", "America/Montevideo",
                             "America/Asuncion", "America/La_Paz", "America/Lima", "Africa/Johannesburg",
                             "Africa/Maputo", "Africa/Harare", "Africa/Windhoek", "Indian/Mauritius", "Pacific/Fiji",
                             "NZ"})
WEEKDAYS = {name: n for n, name in enumerate("monday tuesday wednesday thursday friday saturday sunday".split())}
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
           "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "a couple of": 2, "a few": 3, "couple of": 2,
           "few": 3}

_NUMBER = r"(\d{1,3}|a couple of|couple of|a few|few|an|a|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
_MONTH = r"(january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)"
_WEEKDAY = r"(monday|tuesday|wednesday|thursday|friday|saturday|sunday)"


@dataclass(frozen=True)
class TimeSpan:
    """A half-open span [start, end) of aware datetimes, and the words that named it."""

    start: datetime
    end: datetime
    words: str

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def _day(moment: datetime, days: int = 0) -> datetime:
    """Local midnight `days` after the day of `moment`."""
    return datetime.combine(moment.date() + timedelta(days=days), time(0), tzinfo=moment.tzinfo)


def _month_start(year: int, month: int, tz: object) -> datetime:
    return datetime(year, month, 1, tzinfo=tz)  # type: ignore[arg-type]


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _month_span(year: int, month: int, now: datetime, words: str) -> TimeSpan:
    start = _month_start(year, month, now.tzinfo)
    end = _month_start(*_next_month(year, month), now.tzinfo)
    return TimeSpan(start, end, words)


def _count(word: str) -> int:
    return int(word) if word.isdigit() else NUMBERS[word]


# Each rule: a pattern and a function (match, now) -> TimeSpan | None. Tried in order; the first wins.
def _ago(match: re.Match[str], now: datetime) -> TimeSpan | None:
    n, unit = _count(match.group(1)), match.group(2)
    if n <= 0 or n > 400:
        return None
    if unit.startswith("day"):
        return TimeSpan(_day(now, -n - 1), _day(now, -n + 2), match.group(0))
    if unit.startswith("week"):
        center = _day(now, -7 * n)
        return TimeSpan(center - timedelta(days=3), center + timedelta(days=4), match.group(0))
    if unit.startswith("month"):
        center = _day(now, -30 * n)
        return TimeSpan(center - timedelta(days=15), center + timedelta(days=16), match.group(0))
    center = _day(now, -365 * n)
    return TimeSpan(center - timedelta(days=183), center + timedelta(days=183), match.group(0))


def _relative_day(match: re.Match[str], now: datetime) -> TimeSpan:
    words = match.group(0)
    if "before" in words:
        return TimeSpan(_day(now, -2), _day(now, -1), words)
    if words.startswith(("yesterday", "last night")):
        return TimeSpan(_day(now, -1), _day(now), words)
    return TimeSpan(_day(now), _day(now, 1), words)


def _this_last(match: re.Match[str], now: datetime) -> TimeSpan | None:
    which, unit = match.group(1), match.group(2)
    last = which in ("last", "past", "previous")
    words = match.group(0)
    if unit == "week":
        monday = _day(now, -now.weekday())
        start = monday - timedelta(days=7) if last else monday
        # "Last week" is said of anything from about five to fourteen days back: two days of slack.
        return TimeSpan(start - timedelta(days=2 if last else 0), start + timedelta(days=9 if last else 7), words)
    if unit == "weekend":
        # The weekend now under way or just past; "last weekend" said on a weekend means the one before.
        saturday = _day(now, -((now.weekday() - 5) % 7))
        if last and now.weekday() >= 5:
            saturday -= timedelta(days=7)
        return TimeSpan(saturday - timedelta(days=1), saturday + timedelta(days=2), words)
    if unit == "month":
        year, month = now.year, now.month
        if last:
            year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        return _month_span(year, month, now, words)
    if unit == "year":
        year = now.year - 1 if last else now.year
        return TimeSpan(_month_start(year, 1, now.tzinfo), _month_start(year + 1, 1, now.tzinfo), words)
    return None


def _weekday(match: re.Match[str], now: datetime) -> TimeSpan:
    which, name = match.group(1), match.group(2)
    back = (now.weekday() - WEEKDAYS[name]) % 7
    if which == "last" and back == 0:
        back = 7
    day = _day(now, -back)
    return TimeSpan(day, day + timedelta(days=1), match.group(0))


def _month(match: re.Match[str], now: datetime) -> TimeSpan:
    which, name, year = match.group(1), match.group(2), match.group(3)
    month = MONTHS[name]
    if year:
        return _month_span(int(year), month, now, match.group(0))
    # "in May" / "last May": the latest May that has begun ("last May" in May means a year ago).
    chosen = now.year if month < now.month or (month == now.month and which != "last") else now.year - 1
    return _month_span(chosen, month, now, match.group(0))


def _month_day(match: re.Match[str], now: datetime) -> TimeSpan | None:
    groups = match.groupdict()
    month = MONTHS[groups["m1"] or groups["m2"]]
    day = int(groups["d1"] or groups["d2"])
    year = int(groups["y"]) if groups.get("y") else now.year
    try:
        start = datetime(year, month, day, tzinfo=now.tzinfo)
    except ValueError:
        return None
    if not groups.get("y") and start > now:
        start = start.replace(year=year - 1)
    return TimeSpan(start, start + timedelta(days=1), match.group(0))


def _southern(now: datetime) -> bool:
    """Whether `now`'s zone is in the southern hemisphere, where "summer" is December to February."""
    key = str(getattr(now.tzinfo, "key", ""))
    return key.startswith(_SOUTHERN_PREFIXES) or key in _SOUTHERN_ZONES


def _season(match: re.Match[str], now: datetime) -> TimeSpan:
    """'last summer', 'this winter', 'in the spring': three calendar months in the zone's hemisphere.

    A bare season word is no span: "when did I fall?" is not about autumn.
    """
    which, name = match.group(1), match.group(2)
    first = SEASONS["autumn" if name == "fall" else name]
    if _southern(now):
        first = (first + 5) % 12 + 1
    # The latest season of that name that has begun (the one under way counts, except for "last").
    year = now.year if first <= now.month else now.year - 1
    start = _month_start(year, first, now.tzinfo)
    end_year, end_month = year + (first + 2) // 12, (first + 2) % 12 + 1
    end = _month_start(end_year, end_month, now.tzinfo)
    if which == "last" and start <= now < end:
        start, end = _month_start(year - 1, first, now.tzinfo), _month_start(end_year - 1, end_month, now.tzinfo)
    return TimeSpan(start, end, match.group(0))


def _year(match: re.Match[str], now: datetime) -> TimeSpan:
    year = int(match.group(1))
    return TimeSpan(_month_start(year, 1, now.tzinfo), _month_start(year + 1, 1, now.tzinfo), match.group(0))


_RULES = [
    (re.compile(rf"\b{_NUMBER} (days?|weeks?|months?|years?) ago\b"), _ago),
    (re.compile(r"\b(the day before yesterday|yesterday( morning| afternoon| evening)?|last night|today|tonight|"
                r"this (morning|afternoon|evening))\b"), _relative_day),
    (re.compile(r"\b(last|this|past|previous) (week|weekend|month|year)\b"), _this_last),
    (re.compile(rf"\b(last|this|on)? ?{_WEEKDAY}\b"), _weekday),
    (re.compile(rf"\b(?:on )?(?:(?P<m1>{_MONTH}) (?P<d1>\d{{1,2}})(?:st|nd|rd|th)?|(?P<d2>\d{{1,2}})(?:st|nd|rd|th)? "
                rf"(?:of )?(?P<m2>{_MONTH}))(?:,? (?P<y>(?:19|20)\d\d))?\b"), _month_day),
    (re.compile(rf"\b(in|last|this|during|back in)? ?{_MONTH}(?: ((?:19|20)\d\d))?\b"), _month),
    (re.compile(r"\bin ((?:19|20)\d\d)\b"), _year),
    (re.compile(r"\b(last|this|in the|over the|during the|in|during) (spring|summer|autumn|fall|winter)\b"), _season),
]
# "may" is also a verb: as a month it needs a preposition or a year ("in May", "last May", "May 2025").
_MAY_AS_MONTH = re.compile(r"\b(in|last|this|during|back in|of) may\b|\bmay (\d{1,2}(st|nd|rd|th)?|(19|20)\d\d)\b|"
                           r"\b\d{1,2}(st|nd|rd|th)? (of )?may\b")


# A calendar name without "last" ("in September", "on the 3rd of May") may be a plan ("where am I
# going in September?"): it steers the search only when the question is about the past.
_PAST = re.compile(r"\b(did|was|were|had|said|told|went|got|made|saw|ago|before)\b|\b\w{3,}ed\b")
_CALENDAR_RULES = ("_month", "_month_day", "_year")


def find_time_span(question: str, now: datetime) -> TimeSpan | None:
    """The span of local time the question points at, or None. `now` must be aware (the user's zone)."""
    text = " ".join(question.lower().replace("’", "'").split())
    text = re.sub(r"[?!.,;:]+(\s|$)", r" ", text).strip()
    past = bool(_PAST.search(text))
    for pattern, rule in _RULES:
        for match in pattern.finditer(text):
            if "may" in match.group(0).split() and not _MAY_AS_MONTH.search(match.group(0)):
                continue
            if rule.__name__ in _CALENDAR_RULES and not past and not match.group(0).startswith("last"):
                continue
            span = rule(match, now)
            if span is not None:
                return span
    return None


def without_time_words(question: str, span: TimeSpan | None) -> str:
    """The question without the words that named the span ("ago", "weeks" would match unrelated turns).

    Day and month names stay: the word index holds every turn's local date spelled out.
    """
    if span is None:
        return question
    pattern = re.compile(r"\b" + r"\W+".join(re.escape(w) for w in span.words.split()) + r"\b", re.IGNORECASE)
    kept = [w for w in span.words.split() if w in MONTHS or w in WEEKDAYS]
    return pattern.sub(" " + " ".join(kept) + " ", question, count=1)
