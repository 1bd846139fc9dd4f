"""The recall step of a reply: memory hits for the user's words, within a deadline."""

from __future__ import annotations

import asyncio
import logging

from convers.contracts.memory import ConversationMemory, MemoryHit
from convers.events import EventLog, TurnMetrics

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
        events.emit("recall_timeout", turn=metrics.turn)
        hits = []
    except Exception as error:
        log.warning("recall failed: %s", error)
        hits = []
    metrics.mark("recall_done", events.now())
    return hits
