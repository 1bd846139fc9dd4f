"""RecentVectors: the embeddings of the latest texts, computed once for whoever asks first."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import numpy as np

from convers.contracts.embedder import Embedder
from convers.memory.vectors import embed_query_blocking


class RecentVectors:
    """Unit vectors of the last `keep` texts, each embedded once in a worker thread.

    Recall and the write of the same user turn both want the vector of what the user just said;
    computing it twice at once doubled recall's time on 2 cores (`convers bench latency`).
    A failed embedding is not kept: the next ask tries again.
    """

    def __init__(self, embedder: Embedder, keep: int = 16) -> None:
        self.embedder = embedder
        self.keep = keep
        self._futures: OrderedDict[str, asyncio.Future[np.ndarray]] = OrderedDict()

    def of(self, text: str) -> asyncio.Future[np.ndarray]:
        """The vector of `text`: a future that is done at once when it was asked for before."""
        future = self._futures.get(text)
        if future is None or (future.done() and future.exception() is not None):
            future = asyncio.ensure_future(self._embed(text))
            self._futures[text] = future
            while len(self._futures) > self.keep:
                self._futures.popitem(last=False)
        return future

    def clear(self) -> None:
        """Drops the futures (and, through their callbacks, what they refer to)."""
        self._futures.clear()

    async def _embed(self, text: str) -> np.ndarray:
        # The user's words: recall waits for this vector (the store's write reuses it).
        return await asyncio.to_thread(embed_query_blocking, self.embedder, text)
