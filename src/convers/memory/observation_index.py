"""The observation keys' vectors in memory, kept in step with the database, and which of them a question is near.

An observation ("Maya enjoys the outdoors", memory/observations.py) is matched against the
question by its own vector; the turns it came from are then lifted like the turns of a topic
(memory/search.py). Observations are appended in the background and deleted only with their
turns, so the index appends new rows by id and reloads whole only after a deletion (a new
`observation_generation` in the meta table).
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass, field

import numpy as np

from convers.memory import key_table

GENERATION_KEY = "observation_generation"


def note_deletion(conn: sqlite3.Connection) -> None:
    """Records (inside the deleting transaction) that observations went: every index reloads."""
    conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                 (GENERATION_KEY, uuid.uuid4().hex))


@dataclass
class ObservationIndex:
    """Observation texts and their unit vectors (one row each), loaded from the table on first use."""

    keys: list[str] = field(default_factory=list)
    _matrix: np.ndarray | None = field(default=None, repr=False)
    _loaded_to: int = field(default=-1, repr=False)
    _generation: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.keys)

    def clear(self) -> None:
        self.keys = []
        self._matrix = None
        self._loaded_to = -1

    def sync(self, conn: sqlite3.Connection, embedder_key: str | None) -> None:
        """Loads what was added since the last call (everything again after a deletion); two small queries
        when nothing changed."""
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (GENERATION_KEY,)).fetchone()
        generation = row[0] if row else None
        if self._loaded_to < 0 or generation != self._generation:
            self.clear()
            self._loaded_to = 0
            self._generation = generation
        if key_table.last_observation_id(conn) <= self._loaded_to:
            return
        rows = key_table.observation_vectors(conn, self._loaded_to, embedder_key)
        if not rows:
            return
        width = self._matrix.shape[1] if self._matrix is not None else len(rows[0][2]) // 4
        good = [r for r in rows if len(r[2]) == width * 4]
        added = np.frombuffer(b"".join(r[2] for r in good), dtype=np.float32).reshape(len(good), width)
        # Appended a few at a time in a conversation: a copy per sync is small next to a search.
        self._matrix = added.copy() if self._matrix is None else np.vstack([self._matrix, added])
        self.keys.extend(r[1] for r in good)
        self._loaded_to = rows[-1][0]

    def near(self, vector: np.ndarray, top: int, min_cosine: float) -> list[tuple[str, float]]:
        """The `top` observations nearest `vector` that are at least `min_cosine` close, nearest first."""
        if self._matrix is None or not self.keys or np.ravel(vector).shape[0] != self._matrix.shape[1]:
            return []
        scores = self._matrix @ np.ravel(vector).astype(np.float32)
        count = min(top, len(scores))
        best = np.argpartition(-scores, count - 1)[:count]
        best = best[np.argsort(-scores[best])]
        return [(self.keys[i], float(scores[i])) for i in best if scores[i] >= min_cosine]
