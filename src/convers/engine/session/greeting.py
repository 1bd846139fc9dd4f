"""The greeting: the memory's "welcome back" as the session's first agent turn."""

from __future__ import annotations

import logging
from typing import Protocol

from convers.contracts.events import EventKind
from convers.contracts.llm import ChatMessage
from convers.contracts.memory import ConversationMemory

log = logging.getLogger(__name__)


class Speaker(Protocol):
    """What a greeting needs of a session (engine/session/session.py Session)."""

    history: list[ChatMessage]

    async def say(self, text: str, kind: EventKind = EventKind.GREETING) -> None: ...


async def greet(session: Speaker, memory: ConversationMemory, agent_name: str) -> None:
    """Says the memory's greeting, unless the user spoke first; a failing memory costs only the greeting."""
    try:
        text = await memory.greeting(agent_name)
    except Exception as error:
        log.warning("greeting failed: %s", error)
        return
    if any(message.role == "user" for message in session.history):
        return  # the user spoke first; a late "welcome back" would talk over the conversation
    await session.say(text)
