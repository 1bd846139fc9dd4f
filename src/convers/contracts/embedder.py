"""Sentence embeddings for semantic recall."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


class EmbedderError(RuntimeError):
    """The embedder is missing or unreachable; callers store the row without a vector and retry later."""


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised float32 vectors of `dimension` (shape: len(texts) x dimension)."""

    name: str
    dimension: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...
