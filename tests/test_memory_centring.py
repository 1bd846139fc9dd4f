"""Centring (memory/centring.py) and the store mean it needs (VectorIndex.mean)."""

from __future__ import annotations

import numpy as np
import pytest

from convers.memory.centring import centre
from convers.memory.ranking import Candidate
from convers.memory.vectors import VectorIndex


def _unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_index_mean_follows_add_replace_and_remove() -> None:
    index = VectorIndex()
    assert index.mean() is None
    a, b, c = _unit(1, 0, 0), _unit(0, 1, 0), _unit(0, 0, 1)
    index.add([1, 2], np.stack([a, b]))
    np.testing.assert_allclose(index.mean(), (a + b) / 2, atol=1e-6)
    index.add([2], np.stack([c]))  # replaces rowid 2's vector
    np.testing.assert_allclose(index.mean(), (a + c) / 2, atol=1e-6)
    index.add([3], np.stack([b]))
    index.remove([1])
    np.testing.assert_allclose(index.mean(), (c + b) / 2, atol=1e-6)
    index.remove([2, 3])
    assert index.mean() is None
    index.clear()
    index.add([4], np.stack([a]))
    np.testing.assert_allclose(index.mean(), a, atol=1e-6)


def test_centring_sinks_the_turn_nearest_the_store_mean() -> None:
    mean = _unit(1, 0, 0)
    vectors = {1: _unit(1, 0.2, 0), 2: _unit(0, 1, 0.2)}  # 1: chatter near the mean; 2: a distinct fact
    chatter, fact = Candidate(1, cosine=0.60), Candidate(2, cosine=0.55)
    centre([chatter, fact], vectors, mean, 0.6)
    assert chatter.cosine is not None and fact.cosine is not None
    assert fact.cosine > chatter.cosine
    # Measured against the candidates' average: one goes down as much as the other goes up.
    assert chatter.cosine + fact.cosine == pytest.approx(1.15, abs=1e-6)


def test_centring_leaves_candidates_without_a_vector_or_cosine_and_is_off_at_zero() -> None:
    mean = _unit(1, 0, 0)
    vectors = {1: _unit(1, 0, 0), 2: _unit(0, 1, 0)}
    words_only, no_vector = Candidate(1), Candidate(3, cosine=0.5)
    kept = Candidate(2, cosine=0.4)
    centre([words_only, no_vector, kept], vectors, mean, 0.6)
    assert words_only.cosine is None and no_vector.cosine == 0.5
    assert kept.cosine == pytest.approx(0.4)  # alone, it is its own average
    pair = [Candidate(1, cosine=0.5), Candidate(2, cosine=0.5)]
    centre(pair, vectors, mean, 0.0)
    centre(pair, vectors, None, 0.6)
    assert [c.cosine for c in pair] == [0.5, 0.5]
