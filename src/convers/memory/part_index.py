"""The part vectors in memory (memory/turn_parts.py), and how they raise their turns' cosines in a search.

A part (a sentence, a clause, a question with its answer) points at its turn. A search scores a
turn by its own vector or, where a part is nearer the question, by a blend towards that part:
cosine + weight x (part's cosine - cosine), the weight set per kind of part (RankingWeights). Only
the question's nearest parts are looked at (PART_CANDIDATES, and as many from a time span it
names): a part further down cannot lift its turn into the candidates anyway.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from convers.memory import part_table, ranking
from convers.memory.vectors import VectorIndex

log = logging.getLogger(__name__)

# How many of the question's nearest parts may lift their turns (and as many within a time span).
PART_CANDIDATES = 200


@dataclass
class PartIndex:
    """Part vectors by part id, with the turn (rowid) and kind of each; kept in step like the turn index."""

    index: VectorIndex = field(default_factory=VectorIndex)
    turn_of: dict[int, int] = field(default_factory=dict)
    kind_of: dict[int, str] = field(default_factory=dict)
    parts_of: dict[int, list[int]] = field(default_factory=dict)
    # Highest part id loaded; -1 until the first sync (nothing is kept in step before).
    loaded_to_id: int = -1

    def __len__(self) -> int:
        return len(self.index)

    def clear(self) -> None:
        """Forgets every part; the next sync loads them again."""
        self.index.clear()
        self.turn_of.clear()
        self.kind_of.clear()
        self.parts_of.clear()
        self.loaded_to_id = -1

    def add(self, ids: Sequence[int], turns: Sequence[int], kinds: Sequence[str], vectors: np.ndarray,
            times: Sequence[float]) -> None:
        """Adds committed parts once loaded (before, the first sync reads them); another width stays out."""
        if self.loaded_to_id < 0 or not ids:
            return
        self.index.add(list(ids), vectors, times)
        for part, turn, kind in zip(ids, turns, kinds, strict=True):
            self.turn_of[part] = turn
            self.kind_of[part] = kind
            self.parts_of.setdefault(turn, []).append(part)

    def remove(self, ids: Sequence[int]) -> None:
        self.index.remove(ids)
        for part in ids:
            turn = self.turn_of.pop(part, None)
            self.kind_of.pop(part, None)
            if turn is not None and turn in self.parts_of:
                self.parts_of[turn] = [p for p in self.parts_of[turn] if p != part]
                if not self.parts_of[turn]:
                    del self.parts_of[turn]

    def sync(self, conn: sqlite3.Connection, embedder_key: str | None, width: int | None) -> None:
        """Loads the parts stored since the last sync (of `embedder_key`, `width` wide)."""
        if self.loaded_to_id < 0:
            self.clear()
            self.loaded_to_id = 0
        last = part_table.last_id(conn)
        if last <= self.loaded_to_id:
            return
        rows = part_table.parts_after(conn, self.loaded_to_id, embedder_key)
        if rows:
            width = self.index.dimension or width or len(rows[0][3]) // 4
            good = [r for r in rows if len(r[3]) == width * 4]
            if good:
                matrix = np.frombuffer(b"".join(r[3] for r in good), dtype=np.float32).reshape(len(good), width)
                self.add([r[0] for r in good], [r[1] for r in good], [r[2] for r in good], matrix,
                         [ranking.seconds(r[4]) for r in good])
        # Past every row read, and past rows of another embedder up to `last` (they are never loaded).
        self.loaded_to_id = max(last, rows[-1][0]) if rows else last

    def lift(self, query: np.ndarray, scores: np.ndarray, position: Mapping[int, int],
             weights: Mapping[str, float], within: tuple[float, float] | None,
             centring: tuple[VectorIndex, np.ndarray, float] | None = None) -> None:
        """Raises `scores` (the turns' cosines, by column `position` of each turn rowid) in place where a
        part of the turn is nearer `query`: by weight x the difference, the weight of the part's kind.

        With `centring` (the turns' index, its mean vector, the centring weight; memory/centring.py),
        a part's cosine first loses weight x how much more it shares with the mean than its turn
        does: the search centres the turn's own vector later, so a part counts as if it were
        centred too. Small talk said in many turns ("it's been a hectic week") is near the mean,
        and would otherwise lift every turn that holds it.
        """
        if not len(self.index) or not any(weights.values()) or self.index.dimension != len(query):
            return
        found = self.index.query(query, PART_CANDIDATES, within)
        pairs = [(part, cosine) for part, cosine in dict((*found.nearest, *found.nearest_within)).items()
                 if weights.get(self.kind_of.get(part, ""), 0.0) and self.turn_of.get(part) in position]
        if not pairs:
            return
        cosines = np.asarray([c for _, c in pairs], dtype=np.float32)
        turns = [self.turn_of[p] for p, _ in pairs]
        if centring is not None and centring[2]:
            turn_index, mean, weight = centring
            cosines -= weight * (self.index.held_dots([p for p, _ in pairs], mean) - turn_index.held_dots(turns, mean))
        for (part, _), turn, cosine in zip(pairs, turns, cosines, strict=True):
            at = position[turn]
            if cosine > scores[at]:
                scores[at] += weights[self.kind_of[part]] * (cosine - scores[at])
