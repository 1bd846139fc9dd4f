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
