"""Test doubles for memory tests: embedders that are fast, fail on demand, or are slow."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence

import numpy as np

from convers.contracts.embedder import EmbedderError


def _bucket(word: str, dimension: int) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") % dimension


class WordHashEmbedder:
    """Bag of (crudely stemmed) words hashed into buckets: texts sharing words get high cosine."""

    name = "word-hash"

    def __init__(self, dimension: int = 256) -> None:
        self.dimension = dimension
        self.calls = 0

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                out[row, _bucket(word[:5], self.dimension)] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.clip(norms, 1e-12, None)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_sync(texts)


class FlakyEmbedder(WordHashEmbedder):
    """Raises EmbedderError while `down` is True (an Ollama that is not running yet)."""

    name = "flaky"

    def __init__(self, down: bool = True) -> None:
        super().__init__()
        self.down = down
        self.failures = 0

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        if self.down:
            self.failures += 1
            raise EmbedderError("flaky embedder is down")
        return super().embed_sync(texts)


class BlockedEmbedder(WordHashEmbedder):
    """Blocks every call until `release` is set: a stuck or very slow embedder."""

    name = "blocked"

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.started = threading.Event()

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        self.started.set()
        self.release.wait(10)
        return super().embed_sync(texts)


class ListMemoryStore:
    """A MemoryStore that is not SQLite: turns in a Python list, searched by shared words (and vectors).

    Registered as a third-party `convers.memory` provider by tests, to show that the conversation
    memory needs nothing beyond the MemoryStore protocol.
    """

    def __init__(self, embedder=None) -> None:
        import threading

        self.embedder = embedder
        self.turns: list = []
        self.vectors: dict[str, np.ndarray | None] = {}
        self.sources: dict[str, str | None] = {}
        self.closed = False
        self.searches: list[str] = []
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings, embedder=None) -> ListMemoryStore:
        return cls(embedder)

    def add(self, turn, source_id=None, vector=None) -> str:
        with self._lock:
            if self.closed:
                raise RuntimeError("store closed")
            if turn.id not in self.vectors:
                self.turns.append(turn)
                self.vectors[turn.id] = vector
                self.sources[turn.id] = source_id
        return turn.id

    def search(self, query, k=5, *, vector=None, mode="fused", floor=None, exclude=()):
        from convers.contracts.memory import MemoryHit

        self.searches.append(mode)
        words = set(re.findall(r"[a-z]+", query.lower()))
        hits = []
        with self._lock:
            for turn in self.turns:
                if turn.id in set(exclude):
                    continue
                shared = words & set(re.findall(r"[a-z]+", turn.text.lower()))
                if shared:
                    hits.append(MemoryHit(turn.id, turn.text, len(shared) / len(words), turn))
        hits.sort(key=lambda h: -h.score)
        return [h for h in hits if floor is None or h.score >= floor][:k]

    def list(self, limit=50, offset=0, *, newest_first=True, kind=None, session=None, role=None):
        with self._lock:
            turns = [t for t in self.turns if (kind is None or t.kind == kind) and (session is None or t.session == session)
                     and (role is None or t.role == role)]
        if newest_first:
            turns.reverse()
        return turns[offset : offset + limit]

    def count(self) -> int:
        return len([t for t in self.turns if t.kind == "turn"])

    def backfill(self, limit=64) -> int:
        return 0

    def forget(self, turn_id) -> bool:
        with self._lock:
            before = len(self.turns)
            self.turns = [t for t in self.turns if t.id != turn_id and self.sources.get(t.id) != turn_id]
            return len(self.turns) < before

    def wipe(self) -> int:
        with self._lock:
            count, self.turns = len(self.turns), []
            return count

    def close(self) -> None:
        self.closed = True


class QueryPathEmbedder(WordHashEmbedder):
    """Has the faster path for one text the conversation waits for, and counts what goes through it."""

    name = "query-path"

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[str] = []

    def embed_query_sync(self, text: str) -> np.ndarray:
        self.queries.append(text)
        return self.embed_sync([text])[0]
