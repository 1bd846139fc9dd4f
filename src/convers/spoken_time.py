"""How long ago a moment was, in the words a person would use ("3 days ago", "over a year ago")."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    """Naive times (imported without an offset) are taken as UTC so all times compare."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def how_long_ago(then: datetime, now: datetime) -> str:
    """'today', 'yesterday', '3 days ago', '2 weeks ago', '5 months ago', 'over a year ago'."""
    now = as_utc(now)
    days = (now.date() - as_utc(then).astimezone(now.tzinfo).date()).days
    if days <= 0:
        return "today"
    if days == 1:
        return "yesterday"
    if days < 14:
        return f"{days} days ago"
    if days < 60:
        return f"{days // 7} weeks ago"
    if days < 365:
        return f"{days // 30} months ago"
    return "over a year ago"
