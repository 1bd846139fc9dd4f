"""Long-term memory of past turns, searchable by meaning and by words."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class MemoryTurn:
    """One stored turn; `id` is stable so exports and imports round-trip."""

    id: str
    session: str
    time: datetime
    speaker: str
    role: Literal["user", "assistant"]
    text: str
    # "digest": a short third-person summary of a long user turn, stored beside the raw turn.
    kind: Literal["turn", "digest"] = "turn"


class MemoryStoreError(RuntimeError):
    """The memory database cannot be used (corrupt, locked, newer schema); names the file and what to do."""


@dataclass(frozen=True)
class MemoryHit:
    """A recalled turn and how well it matched (higher is better)."""

    id: str
    text: str
    score: float
    turn: MemoryTurn


@runtime_checkable
class MemoryStore(Protocol):
    """Durable store of turns. Writes never wait on the embedder; search fuses meaning and words."""

    def add(self, turn: MemoryTurn) -> str: ...

    def search(self, query: str, k: int = 5) -> list[MemoryHit]: ...

    def forget(self, turn_id: str) -> bool: ...

    def wipe(self) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class ConversationMemory(Protocol):
    """What a Session needs from memory: who the user is, what is related, and somewhere to write.

    Every method must be safe to call on the event loop: slow work (embedding, SQLite) happens in
    worker threads, and a failing embedder or store degrades to less context, never to an exception.
    """

    def profile_text(self) -> str:
        """The curated profile, ready to go into the system prompt ('' when there is none)."""
        ...

    async def recall(self, query: str) -> list[MemoryHit]:
        """Past turns related to `query`, already filtered by the floor and cut to top-k."""
        ...

    def remember(
        self, session: str, role: Literal["user", "assistant"], speaker: str, text: str
    ) -> Awaitable[bool] | None:
        """Queue a finished turn for storage after the turn; returns at once.

        What it returns, where the memory can say: an awaitable that becomes True once the turn is
        committed durably (it survives kill -9), False once this write failed or was refused. The
        session acknowledges a user turn to the client only then (docs/protocol.md, `transcript`).
        """
        ...

    async def greeting(self, agent_name: str) -> str:
        """What the agent says first: an introduction on a first visit, a welcome back by name after."""
        ...

    async def aclose(self) -> None:
        """Finish queued writes and background jobs, then release the store."""
        ...
