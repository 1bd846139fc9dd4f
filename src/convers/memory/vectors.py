"""The in-memory vector index behind recall, and a blocking way to call any Embedder from a thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convers.contracts.embedder import Embedder, EmbedderError


def embed_blocking(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Embeds from a worker thread: the provider's `embed_sync` when it has one, else its async `embed`.

    Any failure becomes EmbedderError, so callers have one thing to catch and can store the row without
    a vector. The result is re-normalised: the index relies on unit vectors for cosine = dot product.
    """
    sync = getattr(embedder, "embed_sync", None)
    if callable(sync):
        return _unit_vectors_of(embedder, lambda: sync(list(texts)))
    return _unit_vectors_of(embedder, lambda: asyncio.run(embedder.embed(list(texts))))


def embed_query_blocking(embedder: Embedder, text: str) -> np.ndarray:
    """One text the conversation waits for (a question to recall by, the user's words), from a worker
    thread: the provider's `embed_query_sync` when it has one (a faster path for a single text, on
    more threads while nothing else runs), else as `embed_blocking`. The vector is the same either way."""
    query = getattr(embedder, "embed_query_sync", None)
    if not callable(query):
        return embed_blocking(embedder, [text])[0]
    return _unit_vectors_of(embedder, lambda: query(text))[0]


def _unit_vectors_of(embedder: Embedder, compute: Callable[[], Any]) -> np.ndarray:
    """`compute()`'s vectors as unit rows; any failure of it as EmbedderError."""
    try:
        vectors = compute()
    except EmbedderError:
        raise
    except Exception as error:
        raise EmbedderError(f"embedder {getattr(embedder, 'name', embedder)!r} failed: {error!r}") from error
    return unit_rows(np.asarray(vectors, dtype=np.float32))


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero), as contiguous float32."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.clip(norms, 1e-12, None), dtype=np.float32)


# `held_dots` recomputes its dot products over the whole index only once the vector has moved this
# much (relative to its length) since they were computed: the store's mean moves by about 1/n a
# turn, and a centring dot product off by 1 % of the mean's length moves a score by a few thousandths.
HELD_DRIFT = 0.01


@dataclass
class VectorPass:
    """What one query's pass over the index found; valid until the index changes."""

    nearest: list[tuple[int, float]]
    nearest_within: list[tuple[int, float]]
    _scores: np.ndarray
    _position: dict[int, int]

    def cosines(self, rowids: Iterable[int]) -> dict[int, float]:
        """The query's cosine with each of `rowids` that has a vector (read off the pass, not recomputed)."""
        return {r: float(self._scores[self._position[r]]) for r in rowids if r in self._position}


class VectorIndex:
    """Unit vectors keyed by database rowid; brute-force cosine search over one float32 matrix.

    Brute force is the right tool at this scale: 100k turns x 384 dims is 154 MB and one
    matrix-vector product over it takes a few milliseconds on one core, with no index to build,
    tune or keep in sync with the database.

    The matrix holds one vector per *column* (dimension x capacity): on one thread OpenBLAS
    computes `query @ columns` 3-4 times faster than `rows @ query` over the same numbers
    (10k x 384: 0.6 vs 2.3 ms; 100k: 11 vs 22 ms, measured here), and the search is bound by it.
    """

    def __init__(self, dimension: int | None = None) -> None:
        self.dimension = dimension
        self._matrix = np.zeros((dimension or 0, 0), dtype=np.float32)
        self._rowids = np.zeros(0, dtype=np.int64)
        # When each turn was said (POSIX seconds), for searches narrowed to a span of time.
        self._times = np.zeros(0, dtype=np.float64)
        self._size = 0
        self._position: dict[int, int] = {}
        # The sum of the stored vectors (float64, kept in step by add and remove), for `mean`.
        self._sum = np.zeros(dimension or 0, dtype=np.float64)
        # `held_dots`: one vector and every column's dot product with it (kept in step by add and remove).
        self._held: np.ndarray | None = None
        self._held_dots = np.zeros(0, dtype=np.float32)

    def __len__(self) -> int:
        return self._size

    @property
    def max_rowid(self) -> int:
        return int(self._rowids[: self._size].max()) if self._size else 0

    def clear(self) -> None:
        # The width is forgotten too: after a wipe the store may be refilled by another embedder.
        self.__init__()  # type: ignore[misc]

    def add(self, rowids: Sequence[int], vectors: np.ndarray, times: Sequence[float] | None = None) -> None:
        """Adds or replaces vectors for `rowids` (rows must already be unit length), said at `times`."""
        if len(rowids) == 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.dimension is None or self._matrix.shape[0] != vectors.shape[1]:
            if self._size and self.dimension != vectors.shape[1]:
                raise ValueError(f"vector width {vectors.shape[1]} does not match the index width {self.dimension}")
            self.dimension = int(vectors.shape[1])
            self._matrix = np.zeros((self.dimension, 0), dtype=np.float32)
            self._sum = np.zeros(self.dimension, dtype=np.float64)
            self._held, self._held_dots = None, np.zeros(0, dtype=np.float32)
        stamps = np.zeros(len(rowids)) if times is None else np.asarray(times, dtype=np.float64)
        fresh: list[int] = []
        for i, rowid in enumerate(rowids):
            at = self._position.get(int(rowid))
            if at is None:
                fresh.append(i)
            else:
                self._sum += vectors[i].astype(np.float64) - self._matrix[:, at]
                self._matrix[:, at] = vectors[i]
                if self._held is not None:
                    self._held_dots[at] = vectors[i] @ self._held
                if times is not None:
                    self._times[at] = stamps[i]
        if not fresh:
            return
        need = self._size + len(fresh)
        capacity = self._matrix.shape[1]
        if need > capacity:
            # Doubling keeps appends amortised O(1) while a conversation grows the store turn by turn.
            grown = np.zeros((self.dimension, max(need, 2 * capacity, 64)), dtype=np.float32)
            grown[:, : self._size] = self._matrix[:, : self._size]
            ids = np.zeros(grown.shape[1], dtype=np.int64)
            ids[: self._size] = self._rowids[: self._size]
            stamps_grown = np.zeros(grown.shape[1], dtype=np.float64)
            stamps_grown[: self._size] = self._times[: self._size]
            self._matrix, self._rowids, self._times = grown, ids, stamps_grown
            if self._held is not None:
                held = np.zeros(grown.shape[1], dtype=np.float32)
                held[: self._size] = self._held_dots[: self._size]
                self._held_dots = held
        end = self._size + len(fresh)
        self._matrix[:, self._size : end] = vectors[fresh].T
        if self._held is not None:
            self._held_dots[self._size : end] = vectors[fresh] @ self._held
        self._sum += vectors[fresh].sum(axis=0, dtype=np.float64)
        self._rowids[self._size : end] = [int(rowids[i]) for i in fresh]
        self._times[self._size : end] = stamps[fresh]
        for offset, i in enumerate(fresh):
            self._position[int(rowids[i])] = self._size + offset
        self._size = end

    def remove(self, rowids: Sequence[int]) -> None:
        """Drops rowids (missing ones are ignored) by moving the last row into each hole."""
        for rowid in rowids:
            at = self._position.pop(int(rowid), None)
            if at is None:
                continue
            last = self._size - 1
            self._sum -= self._matrix[:, at]
            if at != last:
                moved = int(self._rowids[last])
                self._matrix[:, at] = self._matrix[:, last]
                if self._held is not None:
                    self._held_dots[at] = self._held_dots[last]
                self._rowids[at] = moved
                self._times[at] = self._times[last]
                self._position[moved] = at
            self._size = last

    def mean(self) -> np.ndarray | None:
        """The mean of the stored vectors (float32), or None when there are none."""
        if self._size == 0:
            return None
        return (self._sum / self._size).astype(np.float32)

    def query(self, query: np.ndarray, k: int, within: tuple[float, float] | None = None,
              adjust: Callable[[np.ndarray, Mapping[int, int]], None] | None = None) -> VectorPass:
        """One pass over the matrix: the `k` nearest rowids, the `k` nearest said `within` [start, end)
        seconds (when given), and the cosine of every stored vector for later look-ups.

        `adjust(scores, position)` may change the scores in place before anything is picked (the
        part vectors raise their turns', memory/part_index.py); `position` maps a rowid to its column."""
        if self._size == 0 or k <= 0:
            return VectorPass([], [], np.zeros(0, dtype=np.float32), {})
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.dimension:
            raise ValueError(f"query width {query.shape[0]} does not match the index width {self.dimension}")
        scores = query @ self._matrix[:, : self._size]
        if adjust is not None:
            adjust(scores, self._position)
        nearest_within: list[tuple[int, float]] = []
        if within is not None:
            times = self._times[: self._size]
            # All columns, then the span's: gathering the span's columns first costs 20 times more.
            positions = np.flatnonzero((times >= within[0]) & (times < within[1]))
            nearest_within = self._top(scores[positions], positions, k)
        return VectorPass(self._top(scores, None, k), nearest_within, scores, self._position)

    def _top(self, scores: np.ndarray, positions: np.ndarray | None, k: int) -> list[tuple[int, float]]:
        """The best `k` of `scores`, best first; `positions` are their columns (None: scores of every column)."""
        if len(scores) == 0:
            return []
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        at = top if positions is None else positions[top]
        return [(int(self._rowids[i]), float(s)) for i, s in zip(at, scores[top], strict=True)]

    def mean_dots(self, rowids: Iterable[int]) -> dict[int, float]:
        """Each stored one of `rowids`' dot product with the index's mean (for centring), as `held_dots`."""
        mean = self.mean()
        known = [r for r in rowids if r in self._position]
        if mean is None or not known:
            return {}
        return dict(zip(known, self.held_dots(known, mean).tolist(), strict=True))

    def held_dots(self, rowids: Sequence[int], vector: np.ndarray) -> np.ndarray:
        """Each of `rowids`' stored vector's dot product with `vector` (0 for a rowid not stored), for a
        vector that changes little between calls (a store's mean): every column's dot product with it
        is kept, and recomputed in one pass only when `vector` has moved more than HELD_DRIFT since.
        Reading a search's few hundred columns one by one cost ~0.7 ms a call: the matrix holds a
        vector per column, so each is spread over the whole matrix."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        held = self._held
        if (held is None or held.shape != vector.shape
                or float(np.linalg.norm(vector - held)) > HELD_DRIFT * max(float(np.linalg.norm(held)), 1e-12)):
            self._held = vector.copy()
            dots = np.zeros(self._matrix.shape[1], dtype=np.float32)
            dots[: self._size] = vector @ self._matrix[:, : self._size]
            self._held_dots = dots
        at = [self._position.get(int(r), -1) for r in rowids]
        out = np.zeros(len(at), dtype=np.float32)
        known = [i for i, a in enumerate(at) if a >= 0]
        if known:
            out[known] = self._held_dots[[at[i] for i in known]]
        return out

    def vector(self, rowid: int) -> np.ndarray | None:
        """The stored vector of `rowid` (a copy), or None."""
        at = self._position.get(rowid)
        return None if at is None else self._matrix[:, at].copy()

    def vectors_for(self, rowids: Iterable[int]) -> dict[int, np.ndarray]:
        """The stored vectors of those rowids that have one (a column copy each: for a handful of rows)."""
        return {r: v for r in rowids if (v := self.vector(r)) is not None}
