"""The recall step of a reply: memory hits for the user's words within a deadline, and their lines in the prompt."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from convers.contracts.events import EventKind
from convers.contracts.memory import ConversationMemory, MemoryHit
from convers.events import EventLog, TurnMetrics
from convers.spoken_time import as_utc, how_long_ago

log = logging.getLogger(__name__)


async def recall_within(
    memory: ConversationMemory | None, text: str, timeout_s: float, events: EventLog, metrics: TurnMetrics
) -> list[MemoryHit]:
    """Hits for `text`, or none: recall is context, so a slow or failing memory costs it, never the reply."""
    if memory is None:
        return []
    metrics.mark("recall_start", events.now())
    try:
        hits = await asyncio.wait_for(memory.recall(text), timeout_s)
    except TimeoutError:
        events.emit(EventKind.RECALL_TIMEOUT, turn=metrics.turn)
        hits = []
    except Exception as error:
        log.warning("recall failed: %s", error)
        hits = []
    metrics.mark("recall_done", events.now())
    return hits


def recall_lines(hits: Sequence[MemoryHit], now: datetime | None = None, user_label: str = "they") -> list[str]:
    """One line per recalled turn, oldest first: when and who ("- 3 days ago, they said: ...").

    Saying who lets the model tell the user's own words from its earlier replies, and saying when
    keeps it from mistaking an old remark for today's news.
    """
    now = now or datetime.now(UTC)
    lines = []
    for hit in sorted(hits, key=lambda h: as_utc(h.turn.time)):
        turn = hit.turn
        if turn.kind == "digest":
            who = "in summary"
        elif turn.role == "assistant":
            who = "you said"
        else:
            who = f"{user_label} said"
        lines.append(f"- {how_long_ago(turn.time, now)}, {who}: {' '.join(hit.text.split())}")
    return lines
