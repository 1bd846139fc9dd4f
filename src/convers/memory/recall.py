"""Recalled turns rendered as a prompt section: background to understand, never to recite."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from convers.contracts.memory import MemoryHit

RECALL_HEADER = (
    "Background: things from earlier conversations that may relate to what they just said. "
    "It is for your understanding only: do not quote it, do not restate or list it, and do not say "
    "that you remembered or looked anything up. Use it only where it naturally helps, as a friend "
    "who simply knows these things would. If it does not fit the moment, ignore it."
)


def _utc(moment: datetime) -> datetime:
    """Naive times (imported without an offset) are taken as UTC so all times compare."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def how_long_ago(then: datetime, now: datetime) -> str:
    """'today', 'yesterday', '3 days ago', '2 weeks ago', '5 months ago', 'over a year ago'."""
    now = _utc(now)
    days = (now.date() - _utc(then).astimezone(now.tzinfo).date()).days
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


def recall_lines(hits: Sequence[MemoryHit], now: datetime | None = None, user_label: str = "they") -> list[str]:
    """One line per recalled turn, oldest first: when and who ("- 3 days ago, they said: ...").

    Saying who lets the model tell the user's own words from its earlier replies, and saying when
    keeps it from mistaking an old remark for today's news.
    """
    now = now or datetime.now(UTC)
    lines = []
    for hit in sorted(hits, key=lambda h: _utc(h.turn.time)):
        turn = hit.turn
        if turn.kind == "digest":
            who = "in summary"
        elif turn.role == "assistant":
            who = "you said"
        else:
            who = f"{user_label} said"
        lines.append(f"- {how_long_ago(turn.time, now)}, {who}: {' '.join(hit.text.split())}")
    return lines


def render_recall(hits: Sequence[MemoryHit], now: datetime | None = None, user_label: str = "they") -> str:
    """Recalled turns as one section under RECALL_HEADER ('' when there are none), oldest first."""
    if not hits:
        return ""
    return "\n".join([RECALL_HEADER, *recall_lines(hits, now, user_label)])
