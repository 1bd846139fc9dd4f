"""Searching the memory on request: "what did I tell you about Maya's job?"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from convers.contracts.memory import ConversationMemory
from convers.contracts.provider import Availability
from convers.providers.tools.unavailable import ToolUnavailable
from convers.spoken_time import how_long_ago


class RecallTool:
    """Looks through past conversations for what the user said about something."""

    name = "recall"
    description = (
        "Search your memory of earlier conversations with this person. Use it when they ask what "
        "they told you before, or refer to something from a past conversation you do not see here."
    )
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "what to look for, in a few words"}},
        "required": ["query"],
        "additionalProperties": False,
    }

    def __init__(self, memory: ConversationMemory) -> None:
        self.memory = memory

    @classmethod
    def from_settings(cls, settings: Any, memory: ConversationMemory | None = None, **parts: Any) -> RecallTool:
        if memory is None:
            raise ToolUnavailable("recall needs memory, which is off for this session (memory.enabled)")
        return cls(memory)

    @classmethod
    def availability(cls, settings: Any) -> Availability:
        if not settings.memory.enabled:
            return Availability(False, "memory.enabled is false")
        return Availability(True, "searches this person's memory")

    async def call(self, query: str) -> str:
        if not query.strip():
            raise ValueError("recall needs a query: what to look for")
        # The same search the prompt's background uses: meaning and words, without this turn itself.
        hits = await self.memory.recall(query)
        if not hits:
            return f"Nothing found in memory about {query!r}."
        now = datetime.now(UTC)
        lines = []
        for hit in sorted(hits, key=lambda h: h.turn.time):
            who = "you said" if hit.turn.role == "assistant" else "they said"
            lines.append(f"{how_long_ago(hit.turn.time, now)}, {who}: {' '.join(hit.text.split())}")
        return "\n".join(lines)
