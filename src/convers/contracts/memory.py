"""Long-term memory of past turns, searchable by meaning and by words."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from convers.contracts.embedder import Embedder

SearchMode = Literal["fused", "vector", "lexical"]


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
    """Durable store of turns: what the conversation memory, recall and the memory API use.

    Every method blocks (callers on the event loop use asyncio.to_thread) and must be safe to call
    from several threads at once: one store is shared by every session of a server. Failures of
    the store itself (disk full, locked, corrupt) raise MemoryStoreError naming what to do.
    """

    # The embedder whose vectors the store keeps (None: words only). A caller may hand `add` and
    # `search` a vector only from this embedder: vectors of two models are not comparable.
    embedder: Embedder | None

    def add(self, turn: MemoryTurn, source_id: str | None = None, vector: np.ndarray | None = None) -> str:
        """Stores `turn` (a digest names its raw turn in `source_id`); without `vector` the store embeds it
        itself, or stores it without one for `backfill` when the embedder fails. Returns its id."""
        ...

    def search(
        self,
        query: str,
        k: int = 5,
        *,
        vector: np.ndarray | None = None,
        mode: SearchMode = "fused",
        floor: float | None = None,
        exclude: Iterable[str] = (),
    ) -> list[MemoryHit]:
        """The `k` best turns for `query`, best first, scored as similarities in [0, 1].

        `vector` is the query's embedding when the caller has it; `mode="lexical"` searches by words
        alone (the caller had no vector in time: the store must not embed the query itself then).
        `floor` drops weaker hits (None: the store's own), `exclude` drops turns by id.
        """
        ...

    def list(
        self,
        limit: int = 50,
        offset: int = 0,
        *,
        newest_first: bool = True,
        kind: str | None = None,
        session: str | None = None,
        role: str | None = None,
    ) -> list[MemoryTurn]:
        """Stored turns, newest first by default, filtered by kind, session and role when given."""
        ...

    def count(self) -> int:
        """How many raw turns are stored (digests not counted)."""
        ...

    def backfill(self, limit: int = 64) -> int:
        """Embeds up to `limit` turns stored without a vector; returns how many (0: nothing to do)."""
        ...

    def forget(self, turn_id: str) -> bool: ...

    def wipe(self) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class VectorUpkeep(MemoryStore, Protocol):
    """What a MemoryStore may also offer so the conversation memory keeps vectors off the reply's path.

    With it, a turn is committed first and its vector attached when the embedder delivers it, and
    vectors of an older format are re-embedded in the background; without it, `add` does both.
    """

    # Turns this store object had to keep without a vector (the embedder failed them).
    embed_failures: int

    def add_many(self, turns: Sequence[MemoryTurn], *, vectors: np.ndarray | None = None, embed: bool = True,
                 source_ids: Sequence[str | None] | None = None) -> int:
        """Stores turns in one transaction; `embed=False` stores them without vectors. Returns how many were new."""
        ...

    def attach_vector(self, turn_id: str, vector: np.ndarray) -> bool:
        """Sets the vector of a turn stored without one; False when it has one or is gone."""
        ...

    def pending_vectors(self) -> int:
        """How many stored turns need a (new) vector."""
        ...

    def warm_up(self) -> None:
        """Loads what the first search needs, so it is as fast as the tenth."""
        ...


# The kinds of search key a store may derive from a turn (what the memory viewer lists and forgets):
# names and places, everyday topics, and notes the language model wrote about the speaker.
KEY_KINDS = ("entity", "topic", "observation")


@runtime_checkable
class ObservationKeys(Protocol):
    """What a MemoryStore may also offer to keep observations the language model wrote about a speaker
    ("Maya enjoys the outdoors") as search keys of the turns they came from."""

    def add_observations(self, turn_ids: Sequence[str], observations: Sequence[str]) -> int:
        """Ties each observation to every turn of `turn_ids`; how many (turn, observation) pairs are new.
        Forgetting a turn forgets its observations."""
        ...


@dataclass(frozen=True)
class MemoryStatus:
    """Whether long-term memory works in this process, and if not, why: what the page, the memory API
    and `convers doctor` report instead of going on silently without it."""

    # on: works; off: switched off in settings; unavailable: cannot be opened (nothing is stored or
    # recalled); degraded: open and recalling, but new turns cannot be stored now (they wait in memory).
    state: Literal["on", "off", "unavailable", "degraded"]
    # Why it is not "on" (what failed and what to do); for "on", where it lives.
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.state == "on"


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
